//! The command line, defined once (clap derive).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "jarfleet",
    version,
    about = "Run Java services on your own servers with high availability"
)]
pub struct Cli {
    /// State directory of the daemon to talk to (default: the spec's `state_dir`, else `.jarfleet`).
    #[arg(long, global = true, env = "JARFLEET_STATE", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// A daemon's TCP API instead of the local socket: http://HOST:PORT or https://HOST:PORT.
    #[arg(long, global = true, env = "JARFLEET_API", value_name = "URL")]
    pub api: Option<String>,
    /// With --api: the file holding the daemon's API token (mode 0600).
    #[arg(long, global = true, env = "JARFLEET_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// With an https --api: trust only this CA's PEM certificate (a private CA).
    #[arg(long, global = true, env = "JARFLEET_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// `--grace`: a duration with a unit, at most an hour.
fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    let d = jarfleet_core::units::parse_duration(text)?;
    if d > std::time::Duration::from_secs(3600) {
        return Err("at most 1h".into());
    }
    Ok(d)
}

/// `--interval`: a duration with a unit, at least 100 ms.
fn parse_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = jarfleet_core::units::parse_duration(text)?;
    if d < std::time::Duration::from_millis(100) {
        return Err("at least 100ms".into());
    }
    Ok(d)
}

/// `cluster drain --deadline`: a duration with a unit, from 1 s to 7 days.
fn parse_drain_deadline(text: &str) -> Result<std::time::Duration, String> {
    let d = jarfleet_core::units::parse_duration(text)?;
    if d < std::time::Duration::from_secs(1) {
        return Err("at least 1s: the instances need time to start elsewhere".into());
    }
    if d > std::time::Duration::from_secs(7 * 24 * 3600) {
        return Err("at most 7d".into());
    }
    Ok(d)
}

/// `deploy --strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    Rolling,
    Canary,
    BlueGreen,
}

impl From<StrategyArg> for jarfleet_core::spec::Strategy {
    fn from(s: StrategyArg) -> Self {
        match s {
            StrategyArg::Rolling => jarfleet_core::spec::Strategy::Rolling,
            StrategyArg::Canary => jarfleet_core::spec::Strategy::Canary,
            StrategyArg::BlueGreen => jarfleet_core::spec::Strategy::BlueGreen,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the daemon, apply the spec and show progress until every app is ready; Ctrl-C stops everything.
    Up {
        /// Spec file, or a directory holding jarfleet.toml (default ./jarfleet.toml).
        spec: Option<PathBuf>,
        /// Run the daemon in the background and return once the spec is applied.
        #[arg(short = 'd', long)]
        detach: bool,
        /// With -d: also wait until every instance is ready.
        #[arg(long)]
        wait: bool,
        /// In the foreground: apply the spec again whenever its file changes (the plan is shown;
        /// a spec with errors changes nothing).
        #[arg(long, conflicts_with = "detach")]
        watch: bool,
        /// From a self-contained installer: install its bundle under DIR first (verified, as one
        /// transaction), then run DIR/jarfleet.toml.
        #[arg(long, value_name = "DIR")]
        prefix: Option<PathBuf>,
        /// With --prefix: a trusted key for the installer's signature; repeatable.
        #[arg(long = "trust", requires = "prefix")]
        trust: Vec<PathBuf>,
        /// When the store holds no fleet while shims still run JVMs, or cannot be read: move it
        /// aside and start with a new, empty store; those JVMs are left running as strays
        /// (`status` lists them, `down --strays` stops them).
        #[arg(long)]
        new_store: bool,
    },
    /// Run the daemon in the foreground (for a systemd unit). SIGTERM leaves the JVMs running.
    Daemon {
        /// Apply this spec at start when the store holds no fleet (first start, or after
        /// `down`); a stored fleet is carried on as it is. SIGHUP applies the spec again.
        #[arg(long, value_name = "SPEC")]
        spec: Option<PathBuf>,
        /// Write the daemon's log to FILE, rotated by size (`[daemon] log_max_size`,
        /// `log_keep`), instead of stderr. `up -d` uses STATE/daemon.log.
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
        /// When the store holds no fleet while shims still run JVMs, or cannot be read: move it
        /// aside and start with a new, empty store; those JVMs are left running as strays
        /// (`status` lists them, `down --strays` stops them).
        #[arg(long)]
        new_store: bool,
    },
    /// Replace the running daemon and its load balancer by another jarfleet binary, with no
    /// failed request: the new load balancer takes over the listening sockets, the old one
    /// finishes what it holds, and the daemon restarts in place as the new binary (its JVMs
    /// keep running). A binary that cannot take over is refused before anything changes.
    Upgrade {
        /// The new binary (default: this one, the `jarfleet` you run `upgrade` with).
        #[arg(long, value_name = "PATH")]
        binary: Option<PathBuf>,
        /// How long the old load balancer may finish its requests and keep-alive connections.
        #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_grace)]
        grace: std::time::Duration,
    },
    /// Print this binary's version and build (`--json`: also the protocols it speaks).
    Version {
        #[arg(long)]
        json: bool,
    },
    /// Stop every app (gracefully) and then the daemon.
    Down {
        /// Stop only the stray JVMs (shims no instance accounts for, listed by `status`); the
        /// fleet and the daemon keep running.
        #[arg(long)]
        strays: bool,
    },
    /// Send a spec to the running daemon: print the plan and apply it.
    Apply {
        spec: Option<PathBuf>,
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Check a spec (syntax, values, artifacts, Java, ports) without changing anything.
    Validate {
        spec: Option<PathBuf>,
        /// Check only the file, not artifacts, JDKs or ports.
        #[arg(long)]
        offline: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Apps and instances.
    Status {
        app: Option<String>,
        /// Redraw every --interval until Ctrl-C (with -o json: one JSON document per line).
        #[arg(short, long)]
        watch: bool,
        /// How often --watch redraws, e.g. 500ms, 2s.
        #[arg(long, default_value = "2s", value_parser = parse_interval)]
        interval: std::time::Duration,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Start a stopped app or instance (APP or APP/N).
    Start {
        target: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Stop an app or instance (APP or APP/N); it stays down until started.
    Stop {
        target: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Restart an app (rolling, one instance at a time) or one instance (APP/N).
    Restart {
        target: String,
        /// Wait for the restart to finish: an app's rolling restart (a deployment) to its end,
        /// an instance until it is ready again; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Roll out a new jar as a new release of APP (rolling, health-gated, automatic rollback).
    Deploy {
        app: String,
        /// The new jar.
        artifact: PathBuf,
        /// A version label shown in `history` (and usable with `rollback --to`).
        #[arg(long)]
        version: Option<String>,
        /// This deployment's strategy instead of the app's `deploy.strategy` (with the app's
        /// canary and blue-green settings).
        #[arg(long, value_enum)]
        strategy: Option<StrategyArg>,
        /// Wait for the deployment to finish (or a canary to pause); exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Go back to the previous release (or `--to` a release id or version), health-gated.
    Rollback {
        app: String,
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Move a canary on: from a paused step to the next step; otherwise (or with --full) skip
    /// the remaining steps and give the new release all the traffic.
    Promote {
        app: String,
        /// Skip every remaining step, even from a paused one.
        #[arg(long)]
        full: bool,
        /// Wait for the deployment to finish (or pause again); exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Turn a deployment around: a rolling or blue-green one walks back to the old release
    /// (what is new goes, the old release returns to the full count), a canary's traffic goes
    /// back to the stable release at once, a restart ends where it stands.
    Abort {
        app: String,
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Releases and deployments of an app, with their outcomes.
    History {
        app: String,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Change the number of instances of an app.
    Scale {
        app: String,
        instances: u32,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Instance output (stdout and stderr), prefixed with APP/N.
    Logs {
        /// APP or APP/N.
        target: String,
        #[arg(short, long)]
        follow: bool,
        /// Lines from the end of each log.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Lifecycle, health and deployment events.
    Events {
        #[arg(short, long)]
        follow: bool,
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// The daemon's Prometheus metrics (`GET /metrics`), printed as the text exposition format.
    Metrics,
    /// Installed JDKs, the state dir, and whether a daemon runs.
    Doctor {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Build a release bundle NAME-VERSION.jfb (jar, config templates, hooks, optional JRE);
    /// with --installer also a self-contained installer.
    Pack {
        /// The app's jar.
        jar: PathBuf,
        #[arg(long)]
        version: String,
        /// Default: the jar's file name without `.jar`.
        #[arg(long)]
        name: Option<String>,
        /// Config templates (`${VAR}`, `${VAR:default}`, `${VAR:?message}`), rendered per release.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Hooks: executables named pre_install, post_install, pre_start.
        #[arg(long)]
        hooks: Option<PathBuf>,
        /// A JRE directory to bundle (e.g. made with jlink): the app runs on it.
        #[arg(long)]
        jre: Option<PathBuf>,
        /// The default app spec: a TOML file with the keys of one [apps.NAME] table (no artifact).
        #[arg(long)]
        app_spec: Option<PathBuf>,
        /// The Java requirement, e.g. ">=17".
        #[arg(long)]
        java: Option<String>,
        /// Where to write the bundle (and installer).
        #[arg(short, long, default_value = ".")]
        out_dir: PathBuf,
        /// Also write NAME-VERSION-installer: this binary with the bundle appended.
        #[arg(long)]
        installer: bool,
    },
    /// Verify and install a bundle as one transaction, then start it (or roll it out).
    Install {
        /// The bundle; none: the one embedded in this binary (a self-contained installer).
        bundle: Option<PathBuf>,
        /// Install root: jarfleet.toml, state/, releases/, bin/.
        #[arg(long, default_value = "/opt/jarfleet")]
        prefix: PathBuf,
        /// Verify and show what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// A trusted key (minisign .pub or OpenPGP keyring); repeatable. With keys, an unsigned
        /// or badly signed bundle is refused.
        #[arg(long = "trust")]
        trust: Vec<PathBuf>,
        /// The signature (default: BUNDLE.minisig, .sig or .asc beside it).
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Install only; do not start the app.
        #[arg(long)]
        no_start: bool,
    },
    /// Make a minisign-compatible key pair: PATH.key (secret, 0600) and PATH.pub.
    Keygen {
        #[arg(short, long, default_value = "jarfleet")]
        out: PathBuf,
        /// Leave the secret key unencrypted.
        #[arg(long)]
        no_password: bool,
        /// Read the password from this file instead of the terminal.
        #[arg(long)]
        password_file: Option<PathBuf>,
        #[arg(long)]
        force: bool,
    },
    /// Sign a file (bundle, installer, jar): writes FILE.minisig.
    Sign {
        file: PathBuf,
        /// The secret key (from `jarfleet keygen` or `minisign -G`).
        #[arg(short, long)]
        key: PathBuf,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The trusted comment (default: timestamp and file name).
        #[arg(long)]
        comment: Option<String>,
    },
    /// Check a file's signature against trusted keys (minisign .pub files, OpenPGP keyrings).
    Verify {
        file: PathBuf,
        /// A trusted key; repeatable.
        #[arg(short, long = "key")]
        keys: Vec<PathBuf>,
        /// The signature (default: FILE.minisig, .sig or .asc beside it).
        #[arg(long)]
        signature: Option<PathBuf>,
    },
    /// Write config for the host: a systemd unit for the daemon, or nginx/HAProxy upstreams
    /// from the running fleet.
    Export {
        #[command(subcommand)]
        target: crate::export::Target,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff), or write one page per subcommand into a directory.
    Man {
        /// Write jarfleet.1, jarfleet-up.1 and so on into DIR instead.
        #[arg(short = 'o', long = "out-dir", value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// The cluster this daemon is a node of: its nodes, and which may take new instances.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// API tokens for the daemon's TCP API (`[daemon] token_file`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Internal: the per-instance supervisor process started by the daemon.
    #[command(hide = true)]
    Shim { run_dir: PathBuf },
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Every node: its state (ready, suspect, down, draining, ineligible), address, version,
    /// memory, instances and last heartbeat.
    Nodes {
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Let the scheduler place new instances on NODE again.
    Eligible { node: String },
    /// Place nothing new on NODE; what runs there stays.
    Ineligible { node: String },
    /// Move every instance off NODE (each new one ready before the old one is drained and
    /// stopped) and place nothing new there; waits until NODE runs nothing.
    Drain {
        node: String,
        /// How long the instances may take to move; whatever still runs on NODE then is
        /// drained and stopped anyway (e.g. 90s, 10m, 1h).
        #[arg(long, default_value = "1h", value_parser = parse_drain_deadline)]
        deadline: std::time::Duration,
        /// Return once the drain is started, without waiting for it.
        #[arg(long)]
        detach: bool,
    },
    /// Stop draining NODE: new instances may be placed on it again.
    Undrain { node: String },
    /// Make the cluster's certificate authority for mutual TLS between nodes: OUT/ca.pem and
    /// OUT/ca.key (keep ca.key off the nodes; it only issues certificates).
    Ca {
        /// The cluster's name (`[cluster] name`), written into the CA's name.
        #[arg(long)]
        name: String,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// How long the CA is valid, in days.
        #[arg(long, default_value_t = 3650, value_parser = clap::value_parser!(u32).range(1..=36500))]
        days: u32,
    },
    /// Issue NODE its certificate, signed by the cluster's CA: OUT/NODE.pem and OUT/NODE.key,
    /// valid for the node's name and each --address.
    Cert {
        node: String,
        /// The directory holding ca.pem and ca.key (`cluster ca --out`).
        #[arg(long = "ca-dir", value_name = "DIR")]
        ca_dir: PathBuf,
        /// An address other nodes reach NODE on (`[cluster] advertise`); repeat for several.
        #[arg(long = "address", required = true)]
        addresses: Vec<std::net::IpAddr>,
        /// Where to write the files.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=3650))]
        days: u32,
    },
}

impl ClusterCommand {
    /// Whether it runs here, without a daemon (making certificates).
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ClusterCommand::Ca { .. } | ClusterCommand::Cert { .. }
        )
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new random token to FILE (mode 0600); nothing is printed to stdout.
    New {
        file: PathBuf,
        /// Replace an existing FILE.
        #[arg(long)]
        force: bool,
    },
}
