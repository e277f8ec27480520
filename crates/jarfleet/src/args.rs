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
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
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
    },
    /// Run the daemon in the foreground (for a systemd unit). SIGTERM leaves the JVMs running.
    Daemon,
    /// Stop every app (gracefully) and then the daemon.
    Down,
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
    },
    /// Apps and instances.
    Status {
        app: Option<String>,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Start a stopped app or instance (APP or APP/N).
    Start { target: String },
    /// Stop an app or instance (APP or APP/N); it stays down until started.
    Stop { target: String },
    /// Restart an app (rolling, one instance at a time) or one instance (APP/N).
    Restart { target: String },
    /// Roll out a new jar as a new release of APP (rolling, health-gated, automatic rollback).
    Deploy {
        app: String,
        /// The new jar.
        artifact: PathBuf,
        /// A version label shown in `history` (and usable with `rollback --to`).
        #[arg(long)]
        version: Option<String>,
        /// Wait for the deployment to finish; exit 1 unless it succeeded.
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
    /// Skip a canary's remaining steps: the new release takes all the traffic.
    Promote {
        app: String,
        /// Wait for the deployment to finish; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Stop a canary now: all traffic back to the stable release, the canary set stopped.
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
    Scale { app: String, instances: u32 },
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
    /// Internal: the per-instance supervisor process started by the daemon.
    #[command(hide = true)]
    Shim { run_dir: PathBuf },
}
