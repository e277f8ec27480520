//! `jarfleet export`: config that fits jarfleet into the host. A systemd unit for the daemon
//! (`systemd`), and nginx / HAProxy upstreams from the running fleet (`lb`). The renderers are
//! pure; this file gathers their inputs and writes the result.

mod lb;
mod systemd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use jarfleet_api::StatusReport;

use crate::context::{self, CliError};

#[derive(Debug, Subcommand)]
pub enum Target {
    /// A systemd unit for the daemon (Type=notify, watchdog). Stopping the unit leaves the
    /// instances running for the next daemon to adopt, unless --stop-instances.
    Systemd {
        /// The spec the daemon applies at its first start (and on `systemctl reload`).
        #[arg(long, value_name = "SPEC")]
        spec: Option<PathBuf>,
        /// Stopping the unit stops every instance gracefully (`jarfleet down`) and forgets the
        /// fleet; the next start applies --spec again.
        #[arg(long, requires = "spec")]
        stop_instances: bool,
        /// Run the daemon as this user (default: root). Its state dir must be the user's.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Write the unit to FILE instead of stdout.
        #[arg(short = 'o', long = "out", value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// nginx upstreams (and servers) for the ready instances of the running fleet.
    Nginx(LbArgs),
    /// HAProxy backends (and frontends) for the ready instances of the running fleet.
    Haproxy(LbArgs),
}

#[derive(Debug, Args)]
pub struct LbArgs {
    /// Only this app (default: every app).
    pub app: Option<String>,
    /// Listen on HOST:PORT (tcp://HOST:PORT for raw tcp) instead of the app's `listen`.
    #[arg(long, requires = "app", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Write the config to FILE instead of stdout.
    #[arg(short = 'o', long = "out", value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn run(state: Option<&Path>, target: Target) -> Result<(), CliError> {
    match target {
        Target::Systemd {
            spec,
            stop_instances,
            user,
            out,
        } => {
            let text = systemd_unit(state, spec.as_deref(), stop_instances, user.as_deref())?;
            write_out(out.as_deref(), &text)
        }
        Target::Nginx(args) => {
            let backends = live_backends(state, &args).await?;
            let (text, skipped) = lb::nginx(&backends);
            for app in skipped {
                eprintln!(
                    "warning: {app} is a tcp app: left out (nginx needs it in a stream {{ }} block; `jarfleet export haproxy` covers it)"
                );
            }
            write_out(args.out.as_deref(), &text)
        }
        Target::Haproxy(args) => {
            let backends = live_backends(state, &args).await?;
            write_out(args.out.as_deref(), &lb::haproxy(&backends))
        }
    }
}

async fn live_backends(state: Option<&Path>, args: &LbArgs) -> Result<Vec<lb::Backend>, CliError> {
    let report: StatusReport = context::client(state, None).get("/v1/status").await?;
    lb::backends(&report, args.app.as_deref(), args.listen.as_deref()).map_err(|e| match e {
        lb::ExportError::Usage(message, hint) => CliError::usage(message, Some(&hint)),
        lb::ExportError::Failed(message, hint) => CliError {
            code: context::EXIT_FAILED,
            message,
            hint,
        },
    })
}

fn systemd_unit(
    state_flag: Option<&Path>,
    spec_arg: Option<&Path>,
    stop_instances: bool,
    user: Option<&str>,
) -> Result<String, CliError> {
    let spec = spec_arg.map(|s| context::load_spec(Some(s))).transpose()?;
    let state = context::state_dir(state_flag, spec.as_ref());
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| CliError::failed(format!("cannot find the jarfleet binary: {e}")))?;
    if let Some(user) = user {
        check_user(user, &state, spec.as_ref())?;
    }
    // Stopping every instance takes a drain and a graceful stop, all at once.
    let stop_timeout = spec.as_ref().map(|s| {
        s.apps
            .values()
            .map(|a| a.stop.drain_timeout + a.stop.stop_timeout)
            .max()
            .unwrap_or_default()
            + Duration::from_secs(30)
    });
    let writable: Vec<PathBuf> = spec
        .iter()
        .flat_map(|s| s.apps.values())
        .filter_map(|a| a.workdir.clone())
        .collect();
    systemd::render(&systemd::Unit {
        exe: &exe,
        state_dir: &state,
        spec: spec.as_ref().map(|s| s.source.as_path()),
        user,
        stop_instances: stop_timeout.filter(|_| stop_instances),
        writable: &writable,
    })
    .map_err(|e| CliError::usage(e, Some("use paths without blanks or control characters")))
}

/// The daemon runs as `user`: it must exist, own the state dir (if there is one yet), and not
/// be asked to switch to other users (that needs root).
fn check_user(
    user: &str,
    state: &Path,
    spec: Option<&jarfleet_core::spec::FleetSpec>,
) -> Result<(), CliError> {
    let found = nix::unistd::User::from_name(user)
        .map_err(|e| CliError::failed(format!("looking up user {user}: {e}")))?
        .ok_or_else(|| {
            CliError::usage(
                format!("no user {user:?} on this host"),
                Some("create it (e.g. `useradd --system jarfleet`), or leave out --user"),
            )
        })?;
    if let Ok(meta) = std::fs::metadata(state) {
        use std::os::unix::fs::MetadataExt;
        if meta.uid() != found.uid.as_raw() {
            return Err(CliError::usage(
                format!(
                    "state dir {} is not owned by {user}: the daemon could not write it",
                    state.display()
                ),
                Some(&format!("chown -R {user} {}", state.display())),
            ));
        }
    }
    for app in spec.iter().flat_map(|s| s.apps.values()) {
        if let Some(other) = app.user.as_deref().filter(|u| *u != user) {
            return Err(CliError::usage(
                format!(
                    "app {} runs as user {other}: only a daemon running as root can switch users",
                    app.name
                ),
                Some("leave out --user, or remove `user` from the app"),
            ));
        }
    }
    Ok(())
}

/// stdout, or FILE written whole (a temp file renamed into place).
fn write_out(out: Option<&Path>, text: &str) -> Result<(), CliError> {
    let Some(path) = out else {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(text.as_bytes())
            .and_then(|_| stdout.flush())
            .map_err(|e| CliError::failed(format!("writing to stdout: {e}")));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |e: std::io::Error| CliError::failed(format!("writing {}: {e}", path.display()));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o644))
            .map_err(fail)?;
    }
    tmp.persist(path).map_err(|e| fail(e.error))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
