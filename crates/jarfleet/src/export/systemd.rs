//! The systemd unit for the daemon (pure: text from its inputs).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the unit is made of.
#[derive(Debug)]
pub struct Unit<'a> {
    /// The jarfleet binary (absolute).
    pub exe: &'a Path,
    pub state_dir: &'a Path,
    /// Applied at the daemon's first start (`daemon --spec`).
    pub spec: Option<&'a Path>,
    /// `User=`; `None`: root.
    pub user: Option<&'a str>,
    /// `Some(timeout)`: stopping the unit stops every instance (`jarfleet down`), given this long.
    pub stop_instances: Option<Duration>,
    /// Paths the daemon and its instances write besides the state dir (apps' `workdir`).
    pub writable: &'a [PathBuf],
}

/// systemd's watchdog: the daemon pings every half of it while its control loop answers.
pub const WATCHDOG: &str = "30s";

/// One argument of an `Exec*=` line: `%` and `$` escaped, quoted when it has blanks, quotes or
/// backslashes. Paths with control characters cannot be written (`Err`).
pub fn exec_arg(arg: &str) -> Result<String, String> {
    if arg.chars().any(char::is_control) {
        return Err(format!(
            "{arg:?} has a control character: it cannot be written into a unit"
        ));
    }
    let escaped = arg.replace('%', "%%").replace('$', "$$");
    let plain = !escaped.is_empty()
        && !escaped
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '\\' | ';'));
    Ok(if plain {
        escaped
    } else {
        format!("\"{}\"", escaped.replace('\\', "\\\\").replace('"', "\\\""))
    })
}

/// A path in a setting that takes a plain path (`ReadWritePaths=`): only `%` is special, and a
/// blank would split it.
fn path_setting(p: &Path) -> Result<String, String> {
    let s = p.display().to_string();
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{s:?} has a blank or control character: it cannot be written into ReadWritePaths="
        ));
    }
    Ok(s.replace('%', "%%"))
}

fn exec_line(args: &[&str]) -> Result<String, String> {
    Ok(args
        .iter()
        .map(|a| exec_arg(a))
        .collect::<Result<Vec<_>, _>>()?
        .join(" "))
}

/// The unit file's text.
pub fn render(u: &Unit) -> Result<String, String> {
    let exe = u.exe.display().to_string();
    let state = u.state_dir.display().to_string();
    let mut start = vec![exe.as_str(), "daemon", "--state-dir", state.as_str()];
    let spec = u.spec.map(|s| s.display().to_string());
    if let Some(spec) = &spec {
        start.extend(["--spec", spec.as_str()]);
    }
    let mut out = String::new();
    let mut line = |s: &str| {
        out.push_str(s);
        out.push('\n');
    };
    line(&format!(
        "# The jarfleet daemon of state dir {state}, written by `jarfleet export systemd`."
    ));
    line("# Install: copy to /etc/systemd/system/jarfleet.service, then");
    line("#   systemctl daemon-reload && systemctl enable --now jarfleet");
    line("# What it does: docs/host.md, `man jarfleet-daemon`.");
    line("[Unit]");
    line("Description=jarfleet: Java services with high availability");
    line("Wants=network-online.target");
    line("After=network-online.target");
    line("");
    line("[Service]");
    line("# The daemon says READY=1 once its API answers and the spec or its stored fleet is");
    line("# loaded, and pings the watchdog while its control loop answers.");
    line("Type=notify");
    line(&format!("ExecStart={}", exec_line(&start)?));
    line("# Applies the spec again: only what changed moves.");
    line("ExecReload=/bin/kill -HUP $MAINPID");
    match u.stop_instances {
        None => {
            line("# Stopping (or restarting) the daemon leaves every instance running under its");
            line("# shim; the next daemon re-adopts them. Only the daemon gets SIGTERM.");
            line("KillMode=process");
        }
        Some(timeout) => {
            line(
                "# Stopping the unit stops every instance first (drained, then SIGTERM), then the",
            );
            line("# daemon; the fleet is forgotten and --spec starts it again at the next start.");
            line(&format!(
                "ExecStop={}",
                exec_line(&[exe.as_str(), "down", "--state-dir", state.as_str()])?
            ));
            line(&format!("TimeoutStopSec={}s", timeout.as_secs().max(1)));
            line("# Should `down` fail (the daemon crashed or is wedged), only the daemon is");
            line("# killed: the instances keep running and the next daemon re-adopts them.");
            line("KillMode=process");
        }
    }
    line("Restart=on-failure");
    line("RestartSec=2s");
    line("# A spec or usage error (exit 2) is not mended by restarting.");
    line("RestartPreventExitStatus=2");
    line(&format!("WatchdogSec={WATCHDOG}"));
    line("# The first start may download artifacts and check jars.");
    line("TimeoutStartSec=5min");
    line("# The load balancer and the JVMs hold many connections: the daemon raises its soft");
    line(
        "# limit to the hard one; shims, JVMs and checks start with soft 1024 (a JVM raises its own).",
    );
    line("LimitNOFILE=1024:524288");
    if let Some(user) = u.user {
        line(&format!("User={user}"));
    }
    line("# Variables the spec uses (${NAME}) come from here, e.g.:");
    line("#EnvironmentFile=-/etc/default/jarfleet");
    line("");
    line("# Hardening that leaves the JVMs working: no MemoryDenyWriteExecute (the JIT needs");
    line("# it), no PrivateTmp (jcmd and jstack find JVMs through /tmp).");
    line("NoNewPrivileges=yes");
    line("ProtectSystem=full");
    let mut writable = vec![path_setting(u.state_dir)?];
    for p in u.writable {
        let p = path_setting(p)?;
        if !writable.contains(&p) {
            writable.push(p);
        }
    }
    let writable: Vec<String> = writable.into_iter().map(|p| format!("-{p}")).collect();
    line(&format!("ReadWritePaths={}", writable.join(" ")));
    for setting in [
        "PrivateDevices=yes",
        "PrivateMounts=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectControlGroups=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "RestrictSUIDSGID=yes",
        "RestrictRealtime=yes",
        "RestrictNamespaces=yes",
        "LockPersonality=yes",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ] {
        line(setting);
    }
    line("");
    line("[Install]");
    line("WantedBy=multi-user.target");
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_args_are_escaped_and_quoted() {
        let cases = [
            ("/usr/bin/jarfleet", "/usr/bin/jarfleet"),
            ("/srv/my state", "\"/srv/my state\""),
            ("/srv/100%", "/srv/100%%"),
            ("/srv/$HOME", "/srv/$$HOME"),
            ("/srv/a\"b", "\"/srv/a\\\"b\""),
            ("/srv/a\\b", "\"/srv/a\\\\b\""),
            ("/srv/a;b", "\"/srv/a;b\""),
            ("", "\"\""),
        ];
        for (arg, want) in cases {
            assert_eq!(exec_arg(arg).as_deref(), Ok(want), "{arg:?}");
        }
        assert!(exec_arg("/srv/a\nb").is_err());
    }

    #[test]
    fn default_unit_leaves_instances_running() {
        let unit = render(&Unit {
            exe: Path::new("/usr/local/bin/jarfleet"),
            state_dir: Path::new("/srv/fleet/state"),
            spec: Some(Path::new("/srv/fleet/jarfleet.toml")),
            user: None,
            stop_instances: None,
            writable: &[],
        })
        .expect("renders");
        insta::assert_snapshot!(unit);
    }

    #[test]
    fn stop_instances_unit_runs_down() {
        let unit = render(&Unit {
            exe: Path::new("/opt/jar fleet/jarfleet"),
            state_dir: Path::new("/var/lib/jarfleet"),
            spec: Some(Path::new("/etc/jarfleet/jarfleet.toml")),
            user: Some("svc"),
            stop_instances: Some(Duration::from_secs(90)),
            writable: &[
                PathBuf::from("/srv/orders"),
                PathBuf::from("/var/lib/jarfleet"),
            ],
        })
        .expect("renders");
        insta::assert_snapshot!(unit);
    }

    #[test]
    fn unwritable_paths_are_refused() {
        let err = render(&Unit {
            exe: Path::new("/usr/bin/jarfleet"),
            state_dir: Path::new("/srv/my state"),
            spec: None,
            user: None,
            stop_instances: None,
            writable: &[],
        })
        .expect_err("a blank in ReadWritePaths is refused");
        assert!(err.contains("ReadWritePaths"), "{err}");
    }
}
