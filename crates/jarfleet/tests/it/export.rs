//! Fitting the host: the systemd unit (checked by systemd-analyze) and the daemon's sd_notify
//! (READY, watchdog, STOPPING), nginx and HAProxy configs from a live fleet (checked by the
//! real tools, and served through by them), shell completions and man pages.

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::harness::*;

const START: Duration = Duration::from_secs(90);

/// An external tool the test needs, or a failure saying which package to install.
fn tool(name: &str, package: &str) -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    found
        .unwrap_or_else(|| panic!("`{name}` is missing: install it (apt-get install -y {package})"))
}

fn run_tool(cmd: &mut Command) -> Output {
    run_with_deadline(cmd, Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A process we started (nginx, HAProxy, a daemon), stopped by pid when dropped: SIGTERM
/// first (an nginx master then stops its workers, which a SIGKILL would orphan), SIGKILL
/// after 10 s.
struct Started(Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The live children of `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit(')')
                        .next()?
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(pid)
        })
        .filter(|p| pid_alive(*p))
        .collect()
}

/// Waits (bounded) for a child to exit; its status.
fn wait_exit(child: &mut Child, what: &str) -> std::process::ExitStatus {
    wait_until(what, Duration::from_secs(30), || {
        child.try_wait().ok().flatten()
    })
}

#[test]
fn systemd_unit_passes_systemd_analyze() {
    let analyze = tool("systemd-analyze", "systemd");
    let fleet = Fleet::new(2);
    fleet.write_app(&AppDef::default());
    let spec = fleet.spec_path();
    let spec_arg = spec.display().to_string();
    let units = tempfile::tempdir().expect("temp dir");
    let bin = jarfleet_bin().canonicalize().expect("the binary's path");

    for (name, extra) in [
        ("jarfleet.service", &[][..]),
        ("jarfleet-stop.service", &["--stop-instances"][..]),
    ] {
        let unit = units.path().join(name);
        let out = unit.display().to_string();
        let mut args = vec!["export", "systemd", "--spec", &spec_arg, "-o", &out];
        args.extend_from_slice(extra);
        fleet.ok(&args);
        let verify = run_tool(Command::new(&analyze).arg("verify").arg(&unit));
        assert!(
            verify.status.success(),
            "systemd-analyze verify {name}: {}",
            text(&verify)
        );
        assert!(
            !String::from_utf8_lossy(&verify.stderr).contains(name),
            "systemd-analyze has remarks on {name}: {}",
            text(&verify)
        );
        // The hardening holds: an exposure of at most 6.0 of 10 (systemd's own scale).
        let security = run_tool(
            Command::new(&analyze)
                .args(["security", "--offline=true", "--threshold=60", "--no-pager"])
                .arg(&unit),
        );
        assert!(
            security.status.success(),
            "exposure above 6.0: {}",
            text(&security)
        );

        let unit_text = std::fs::read_to_string(&unit).expect("the unit");
        let lines: BTreeSet<&str> = unit_text.lines().collect();
        let start = format!(
            "ExecStart={} daemon --state-dir {} --spec {}",
            bin.display(),
            fleet.state.display(),
            spec.display()
        );
        for want in [
            start.as_str(),
            "Type=notify",
            "WatchdogSec=30s",
            "Restart=on-failure",
        ] {
            assert!(lines.contains(want), "{name} lacks {want:?}:\n{unit_text}");
        }
        // Only the daemon is ever signalled by systemd: a crash never takes a JVM with it.
        assert!(lines.contains("KillMode=process"), "{unit_text}");
        if extra.is_empty() {
            assert!(!unit_text.contains("ExecStop="), "{unit_text}");
        } else {
            let stop = format!(
                "ExecStop={} down --state-dir {}",
                bin.display(),
                fleet.state.display()
            );
            assert!(lines.contains(stop.as_str()), "{unit_text}");
            // The fixture app's default drain (30 s) and stop timeout (30 s), plus 30 s.
            assert!(lines.contains("TimeoutStopSec=90s"), "{unit_text}");
        }
    }

    // Bad input: nothing written, a clear error.
    let refused = fleet.run(&["export", "systemd", "--user", "no-such-user-jf"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("no user \"no-such-user-jf\""));
    let refused = fleet.run(&["export", "systemd", "--stop-instances"]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "--stop-instances needs --spec"
    );
}

/// Every datagram the daemon sent to our NOTIFY_SOCKET so far.
struct Notifications {
    socket: UnixDatagram,
    path: PathBuf,
    seen: Vec<String>,
}

impl Notifications {
    fn bind(dir: &Path) -> Notifications {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        socket.set_nonblocking(true).expect("non-blocking");
        Notifications {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    fn drain(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.socket.recv(&mut buf) {
            self.seen
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }

    fn count(&self, line: &str) -> usize {
        self.seen
            .iter()
            .filter(|m| m.lines().any(|l| l == line))
            .count()
    }

    /// Waits until `line` has come `n` times; returns the messages seen.
    fn wait_for(&mut self, line: &str, n: usize, timeout: Duration) {
        let what = format!("{n}× {line} on NOTIFY_SOCKET");
        wait_until(&what, timeout, || {
            self.drain();
            (self.count(line) >= n).then_some(())
        });
    }

    fn statuses(&self) -> Vec<&str> {
        self.seen
            .iter()
            .flat_map(|m| m.lines())
            .filter_map(|l| l.strip_prefix("STATUS="))
            .collect()
    }
}

fn start_daemon(fleet: &Fleet, notify: &Notifications, watchdog_usec: &str) -> Child {
    let spec = fleet.spec_path().display().to_string();
    let child = fleet
        .command(&["daemon", "--spec", &spec])
        .env("NOTIFY_SOCKET", &notify.path)
        .env("WATCHDOG_USEC", watchdog_usec)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting the daemon");
    fleet.remember(child.id());
    child
}

#[test]
fn daemon_speaks_sd_notify() {
    let fleet = Fleet::new(4);
    fleet.write_app(&AppDef::default());
    let mut notify = Notifications::bind(fleet.dir.path());

    // First start: the store is empty, so the daemon applies --spec before READY=1.
    let mut daemon = start_daemon(&fleet, &notify, "400000");
    notify.wait_for("READY=1", 1, Duration::from_secs(60));
    let first = notify.seen.first().cloned().unwrap_or_default();
    assert!(
        first.lines().any(|l| l == "READY=1"),
        "READY=1 comes first, got {:?}",
        notify.seen
    );
    // Once READY=1 is out, the API answers and the spec's app is there.
    let status = fleet.status();
    assert_eq!(status["apps"][0]["name"], "fx", "{status}");
    assert!(
        notify.statuses().iter().any(|s| s.contains("applied")),
        "{:?}",
        notify.seen
    );

    // The watchdog is pinged (every 200 ms for WATCHDOG_USEC=400000), with STATUS lines.
    notify.wait_for("WATCHDOG=1", 3, Duration::from_secs(10));
    let ready = fleet.wait_ready("fx", 1, START);
    let jvm = ready[0]["pid"].as_u64().expect("JVM pid");
    let shim = ready[0]["shim_pid"].as_u64().expect("shim pid");
    notify.wait_for("WATCHDOG=1", 6, Duration::from_secs(10));
    wait_until(
        "a STATUS line counting the ready instance",
        Duration::from_secs(10),
        || {
            notify.drain();
            notify
                .statuses()
                .iter()
                .any(|s| s.contains("1/1 instance ready"))
                .then_some(())
        },
    );
    // systemd's variables are the daemon's own: neither the shim nor the JVM gets them.
    for pid in [jvm, shim] {
        let env = environ(pid);
        assert!(!env.is_empty(), "no environment read for {pid}");
        for (k, _) in env {
            assert!(
                !["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"].contains(&k.as_str()),
                "process {pid} inherited {k}"
            );
        }
    }

    // SIGTERM (what `systemctl stop` sends with KillMode=process): STOPPING=1, the daemon ends,
    // the JVM keeps running.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    notify.wait_for("STOPPING=1", 1, Duration::from_secs(10));
    let code = wait_exit(&mut daemon, "the daemon to exit after SIGTERM");
    assert!(code.success(), "the daemon exited with {code}");
    assert!(pid_alive(jvm as u32), "the JVM died with the daemon");

    // Second start: the store holds the fleet, so it is re-adopted as it was (not re-applied).
    notify.seen.clear();
    let _daemon = Started(start_daemon(&fleet, &notify, "400000"));
    notify.wait_for("READY=1", 1, Duration::from_secs(60));
    assert!(
        notify
            .statuses()
            .iter()
            .any(|s| s.contains("carrying on with it")),
        "{:?}",
        notify.seen
    );
    let again = fleet.wait_ready("fx", 1, START);
    assert_eq!(
        again[0]["pid"].as_u64(),
        Some(jvm),
        "the same JVM, re-adopted"
    );
}

#[test]
fn daemon_refuses_a_spec_it_cannot_apply() {
    let fleet = Fleet::new(1);
    let out = fleet.run(&["daemon", "--spec", "nowhere.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no spec file at"));

    // A spec whose jar is missing: exit 2 at the first start, no READY=1, nothing running.
    let spec = fleet.app_toml(&AppDef::default()).replace(
        &crate::fixture::fixture_jar().display().to_string(),
        &fleet.path("missing.jar").display().to_string(),
    );
    fleet.write_spec(&spec);
    let mut notify = Notifications::bind(fleet.dir.path());
    let mut daemon = start_daemon(&fleet, &notify, "400000");
    let code = wait_exit(&mut daemon, "the daemon to give up");
    assert_eq!(
        code.code(),
        Some(2),
        "a spec that cannot be applied is a usage error"
    );
    notify.drain();
    assert_eq!(notify.count("READY=1"), 0, "{:?}", notify.seen);
    assert!(
        !fleet.state.join("jarfleet.sock").exists(),
        "the API socket is left behind"
    );
    let status = fleet.run(&["status"]);
    assert_eq!(
        status.status.code(),
        Some(3),
        "no daemon answers: {}",
        text(&status)
    );
}

/// A fleet of two `fx` instances (no `listen`: the outside balancer takes the address).
fn two_instances() -> (Fleet, BTreeSet<u16>) {
    let fleet = Fleet::new(6);
    fleet.write_app(&AppDef {
        instances: 2,
        health: "http = \"/health\"\ninterval = \"500ms\"",
        ..Default::default()
    });
    fleet.up();
    let ready = fleet.wait_ready("fx", 2, START);
    let ports = ready
        .iter()
        .filter_map(|i| i["port"].as_u64())
        .map(|p| p as u16)
        .collect();
    (fleet, ports)
}

/// Requests through `port` until every instance port has answered (`hello from v1 on port N`).
fn served_by_all(port: u16, ports: &BTreeSet<u16>, through: &str) {
    let mut seen = BTreeSet::new();
    wait_until(
        &format!("{through} to reach every instance"),
        Duration::from_secs(30),
        || {
            if let Ok((200, body)) = http_get(port, "/") {
                let from = body
                    .trim()
                    .rsplit(' ')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok());
                assert!(
                    body.starts_with("hello from v1") && from.is_some_and(|p| ports.contains(&p)),
                    "unexpected answer through {through}: {body:?}"
                );
                seen.extend(from);
            }
            (seen == *ports).then_some(())
        },
    );
}

#[test]
fn nginx_export_checks_and_serves() {
    let nginx = tool("nginx", "nginx");
    let (fleet, ports) = two_instances();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let conf = dir.path().join("fx.conf");
    fleet.ok(&[
        "export",
        "nginx",
        "fx",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "-o",
        &conf.display().to_string(),
    ]);
    let exported = std::fs::read_to_string(&conf).expect("the export");
    for p in &ports {
        assert!(
            exported.contains(&format!("server 127.0.0.1:{p} ")),
            "{exported}"
        );
    }
    // A whole nginx.conf around it, everything in the temp dir (runs without root too).
    let d = dir.path().display();
    let user = if nix::unistd::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    let main = dir.path().join("nginx.conf");
    std::fs::write(
        &main,
        format!(
            "{user}pid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  include {};\n}}\n",
            conf.display()
        ),
    )
    .expect("nginx.conf");
    let prefix = format!("{d}/");
    let check = run_tool(
        Command::new(&nginx)
            .args(["-t", "-p", &prefix, "-c"])
            .arg(&main),
    );
    assert!(check.status.success(), "nginx -t: {}", text(&check));

    let nginx = Started(
        Command::new(&nginx)
            .args(["-p", &prefix, "-g", "daemon off;", "-c"])
            .arg(&main)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nginx"),
    );
    served_by_all(listen, &ports, "nginx");
    // Stopped with its workers: none is left behind.
    let workers = children_of(nginx.0.id());
    assert!(!workers.is_empty(), "nginx has no worker processes");
    drop(nginx);
    wait_until("nginx's workers to exit", Duration::from_secs(10), || {
        workers.iter().all(|p| !pid_alive(*p)).then_some(())
    });

    // Wrong input: a clear error, exit 2; nothing written.
    let out = fleet.run(&["export", "nginx", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("its apps: fx"),
        "{}",
        text(&out)
    );
}

#[test]
fn haproxy_export_checks_and_serves() {
    let haproxy = tool("haproxy", "haproxy");
    let (fleet, ports) = two_instances();
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = free_port();
    let cfg = dir.path().join("fx.cfg");
    fleet.ok(&[
        "export",
        "haproxy",
        "fx",
        "--listen",
        &format!("127.0.0.1:{listen}"),
        "-o",
        &cfg.display().to_string(),
    ]);
    let exported = std::fs::read_to_string(&cfg).expect("the export");
    assert!(
        exported.contains("http-check send meth GET uri /health"),
        "{exported}"
    );
    assert!(
        exported.contains("check inter 500ms fall 3 rise 1"),
        "{exported}"
    );
    let check = run_tool(Command::new(&haproxy).arg("-c").arg("-f").arg(&cfg));
    assert!(check.status.success(), "haproxy -c: {}", text(&check));
    assert!(
        !String::from_utf8_lossy(&check.stderr).contains("WARNING")
            && !String::from_utf8_lossy(&check.stdout).contains("WARNING"),
        "haproxy -c warns: {}",
        text(&check)
    );

    let _haproxy = Started(
        Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting haproxy"),
    );
    served_by_all(listen, &ports, "HAProxy");
}

#[test]
fn export_without_a_daemon_says_so() {
    let fleet = Fleet::new(1);
    let out = fleet.run(&["export", "haproxy"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

/// The visible subcommands, as `jarfleet --help` lists them.
fn subcommands(fleet: &Fleet) -> Vec<String> {
    let help = fleet.ok(&["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn bash_completion_loads_and_completes() {
    let bash = tool("bash", "bash");
    let fleet = Fleet::new(1);
    let script = fleet.path("jarfleet.bash");
    std::fs::write(&script, fleet.ok(&["completions", "bash"])).expect("writing the script");
    let complete = |words: &str| -> String {
        let cmd = format!(
            "source {} && complete -p jarfleet && COMP_WORDS=({words}) && COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)) && COMP_LINE=\"{words}\" && COMP_POINT=${{#COMP_LINE}} && _jarfleet jarfleet \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\" && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = run_tool(Command::new(&bash).args(["--norc", "--noprofile", "-c", &cmd]));
        assert!(out.status.success(), "bash completion: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let first = complete("jarfleet ''");
    assert!(first.contains("-F _jarfleet jarfleet"), "{first}");
    for sub in subcommands(&fleet) {
        assert!(
            first.lines().any(|l| l == sub),
            "`jarfleet <TAB>` lacks {sub}:\n{first}"
        );
    }
    assert!(
        !first.lines().any(|l| l == "shim"),
        "the internal `shim` is offered:\n{first}"
    );
    let export = complete("jarfleet export ''");
    for target in ["systemd", "nginx", "haproxy"] {
        assert!(export.lines().any(|l| l == target), "{export}");
    }
    // Every other shell gets a script naming the commands too.
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let script = fleet.ok(&["completions", shell]);
        assert!(
            script.contains("export") && script.contains("rollback"),
            "{shell}: {script}"
        );
    }
    let out = fleet.run(&["completions", "tcsh"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_pages_render() {
    let man = tool("man", "man-db");
    let groff = tool("groff", "groff-base");
    let fleet = Fleet::new(1);
    let page = fleet.path("jarfleet.1");
    std::fs::write(&page, fleet.ok(&["man"])).expect("writing the page");
    let roff = std::fs::read_to_string(&page).expect("the page");
    assert!(roff.contains(".TH jarfleet 1"), "{roff}");

    let rendered = run_tool(
        Command::new(&man)
            .args(["-l", "-P", "cat"])
            .arg(&page)
            .env("MANWIDTH", "100")
            .env("LANG", "C.UTF-8"),
    );
    assert!(rendered.status.success(), "man -l: {}", text(&rendered));
    let shown = String::from_utf8_lossy(&rendered.stdout);
    for section in [
        "NAME",
        "SYNOPSIS",
        "SUBCOMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
    ] {
        assert!(
            shown.lines().any(|l| l == section),
            "no {section} section:\n{shown}"
        );
    }
    let subs = subcommands(&fleet);
    assert!(subs.len() > 20, "{subs:?}");
    for sub in &subs {
        assert!(
            shown.contains(&format!("jarfleet-{sub}(1)")),
            "{sub} is not listed:\n{shown}"
        );
    }

    // One page per subcommand, each clean under groff's warnings.
    let dir = fleet.path("man1");
    fleet.ok(&["man", "-o", &dir.display().to_string()]);
    let mut pages: Vec<String> = subs.iter().map(|s| format!("jarfleet-{s}.1")).collect();
    pages.extend(
        [
            "jarfleet.1",
            "jarfleet-export-systemd.1",
            "jarfleet-export-nginx.1",
        ]
        .map(String::from),
    );
    for name in pages {
        let path = dir.join(&name);
        assert!(path.is_file(), "{name} was not written");
        let out = run_tool(
            Command::new(&groff)
                .args(["-k", "-man", "-ww", "-z"])
                .arg(&path),
        );
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff on {name}: {}",
            text(&out)
        );
    }
}
