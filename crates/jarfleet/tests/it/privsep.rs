//! Confinement: an app that runs as its own user (`user = "nobody"`) cannot make root read or
//! write anything through its directories; its code (JVM, `exec` checks) runs as that user with
//! `NoNewPrivs`; the state dir keeps its secrets from other users; instance logs survive a
//! deleted log directory and a full disk.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::harness::{
    AppDef, Fleet, http_get, kill9, pid_alive, run_with_deadline, try_run_with_deadline,
    wait_until, wait_with_deadline,
};

const START: Duration = Duration::from_secs(90);

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI and the dev machines run as root)"
    );
}

/// Runs `argv` as `nobody` (setpriv, from util-linux), bounded.
fn as_nobody(argv: &[&str]) -> Output {
    let child = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running setpriv: install util-linux (apt-get install -y util-linux)");
    wait_with_deadline(
        child,
        &format!("{argv:?} as nobody"),
        Duration::from_secs(120),
    )
}

/// `Uid:` and `NoNewPrivs:` of a /proc status text.
fn uid_and_nnp(status: &str) -> (Vec<u32>, Option<String>) {
    let uids = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|u| u.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let nnp = status
        .lines()
        .find(|l| l.starts_with("NoNewPrivs:"))
        .map(|l| l.trim_start_matches("NoNewPrivs:").trim().to_string());
    (uids, nnp)
}

fn nobody_uid() -> u32 {
    nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody")
        .uid
        .as_raw()
}

/// A fleet whose JVMs (as nobody) can reach their state dir and jar.
fn confined_fleet(ports: u16) -> (Fleet, PathBuf) {
    let fleet = Fleet::new(ports);
    std::fs::set_permissions(fleet.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fleet dir");
    let jar = fleet.path("fx.jar");
    std::fs::copy(crate::fixture::fixture_jar(), &jar).expect("copy the fixture jar");
    (fleet, jar)
}

fn spec_with_jar(fleet: &Fleet, app: &AppDef, jar: &Path) -> String {
    fleet.app_toml(app).replace(
        &crate::fixture::fixture_jar().display().to_string(),
        &jar.display().to_string(),
    )
}

#[test]
fn privsep_links_planted_by_the_app_user_are_never_followed() {
    require_root();
    let (fleet, jar) = confined_fleet(5);
    let nobody = nobody_uid();
    // Where the exec check (as the app's user) leaves its credentials.
    let probe_dir = fleet.path("probe");
    std::fs::create_dir(&probe_dir).expect("mkdir probe");
    std::fs::set_permissions(&probe_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let probe_out = probe_dir.join("status");
    let check = format!(
        "exec = [\"/bin/sh\", \"-c\", \"grep -E '^(Uid|NoNewPrivs)' /proc/self/status > {0}.tmp && mv {0}.tmp {0}\"]",
        probe_out.display()
    );
    let health = format!("{check}\ninterval = \"300ms\"");
    // Config templates, rendered by root for each instance.
    std::fs::create_dir(fleet.path("conf")).expect("mkdir conf");
    std::fs::write(fleet.path("conf/app.properties"), "port=${PORT}\n").expect("template");
    fleet.write_spec(&spec_with_jar(
        &fleet,
        &AppDef {
            args: &["--ignore-sigterm"],
            extra: "user = \"nobody\"\nconfig = \"conf\"",
            health: &health,
            tables: "[apps.fx.stop]\nstop_timeout = \"2s\"\n",
            ..Default::default()
        },
        &jar,
    ));
    fleet.up();
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let pid = i["pid"].as_u64().expect("pid");
    let port = i["port"].as_u64().expect("port") as u16;
    wait_until("the JVM to answer", START, || http_get(port, "/pid").ok());

    // The JVM and the exec check run as nobody, with NoNewPrivs.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("JVM status");
    let (uids, nnp) = uid_and_nnp(&status);
    assert!(uids.iter().all(|u| *u == nobody), "JVM runs as {uids:?}");
    assert_eq!(nnp.as_deref(), Some("1"), "JVM NoNewPrivs");
    let probe = wait_until("the exec check's credentials", START, || {
        std::fs::read_to_string(&probe_out).ok()
    });
    let (uids, nnp) = uid_and_nnp(&probe);
    assert!(
        !uids.is_empty() && uids.iter().all(|u| *u == nobody),
        "exec check runs as {probe}"
    );
    assert_eq!(nnp.as_deref(), Some("1"), "exec check NoNewPrivs: {probe}");

    // Its rendered config is root's, readable by the app (and not by others), and outside the
    // working directory the app's user owns.
    let (code, config) = http_get(port, "/config?file=app.properties").expect("GET /config");
    assert_eq!(
        (code, config.trim()),
        (200, format!("port={port}").as_str())
    );
    let config_dir = std::fs::metadata(fleet.state.join("config/fx")).expect("config dir");
    assert_eq!(config_dir.uid(), 0);
    assert_eq!(config_dir.mode() & 0o777, 0o750);
    assert!(!fleet.state.join("instances/fx/0/etc").exists());

    // A root-only file the app must never reach through root.
    let shadow = fleet.path("shadow");
    std::fs::write(&shadow, "root:SECRET-HASH-jf:19000::::::\n").expect("write shadow");
    std::fs::set_permissions(&shadow, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = std::fs::read(&shadow).expect("read shadow");

    // The log directory is root's: the app's user cannot plant anything in it.
    let log_dir = fleet.log_dir("fx", 0);
    let meta = std::fs::metadata(&log_dir).expect("log dir");
    assert_eq!(meta.uid(), 0, "log dir owner");
    assert_eq!(meta.mode() & 0o7777, 0o750, "log dir mode");
    let shadow_s = shadow.display().to_string();
    let planted = log_dir.join("stdout.log.planted");
    let out = as_nobody(&["ln", "-s", &shadow_s, &planted.display().to_string()]);
    assert!(
        !out.status.success(),
        "nobody could plant a link in the log dir"
    );

    // A state dir left by an older jarfleet had handed the log dir to the app's user, who
    // planted links there: stdout.log, stderr.log and the rotated stderr.log.1.
    std::os::unix::fs::chown(&log_dir, Some(nobody), None).expect("chown the log dir");
    for name in ["stdout.log", "stderr.log", "stderr.log.1"] {
        let link = log_dir.join(name).display().to_string();
        let out = as_nobody(&["ln", "-sfn", &shadow_s, &link]);
        assert!(
            out.status.success(),
            "planting {name} as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `jarfleet logs` does not serve the planted rotated file.
    let logs = fleet.ok(&["logs", "fx", "-n", "1000"]);
    assert!(
        !logs.contains("SECRET-HASH"),
        "logs served the link: {logs}"
    );
    // The JVM dies; its new shim must not append to the link.
    kill9(pid as u32);
    let i = wait_until("fx/0 restarted", START, || {
        let i = fleet.instance("fx", 0);
        (i["ready"] == true && i["pid"].as_u64() != Some(pid)).then_some(i)
    });
    let pid = i["pid"].as_u64().expect("pid") as u32;
    let port = i["port"].as_u64().expect("port") as u16;
    wait_until("the new JVM to log", START, || {
        http_get(port, "/log?lines=3").ok()
    });
    let logs = wait_until("the new lines in `jarfleet logs`", START, || {
        let logs = fleet.ok(&["logs", "fx", "-n", "1000"]);
        logs.contains("line ").then_some(logs)
    });
    assert!(
        !logs.contains("SECRET-HASH"),
        "logs served the link: {logs}"
    );
    assert!(
        logs.contains("was a symbolic link: removed, not followed"),
        "the refusal is said in the log: {logs}"
    );
    assert_eq!(
        std::fs::read(&shadow).expect("shadow"),
        before,
        "shadow written"
    );
    let meta = std::fs::metadata(&log_dir).expect("log dir");
    assert_eq!(meta.uid(), 0, "the log dir was not taken back");
    for name in ["stdout.log", "stderr.log"] {
        let meta = std::fs::symlink_metadata(log_dir.join(name)).expect("log file");
        assert!(meta.is_file(), "{name} is not a plain file");
        assert_eq!(meta.uid(), 0, "{name} owner");
        assert_eq!(meta.mode() & 0o777, 0o640, "{name} mode");
    }

    // The thread dump before a SIGKILL: the app's user plants links at every name it could get
    // over the next minute; root must not write through any of them.
    let dumps = fleet.state.join("dumps/fx");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis();
    let script = format!(
        "import os\nfor ms in range({now}, {end}):\n    os.symlink({shadow:?}, os.path.join({dir:?}, 'threads-{pid}-%d.txt' % ms))\n",
        end = now + 60_000,
        shadow = shadow_s,
        dir = dumps.display().to_string(),
    );
    let out = as_nobody(&["/usr/bin/python3", "-c", &script]);
    assert!(
        out.status.success(),
        "planting dump links as nobody (needs /usr/bin/python3: apt-get install -y python3): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fleet.ok(&["stop", "fx"]);
    wait_until("fx/0 stopped", START, || {
        (fleet.instance("fx", 0)["state"] == "stopped").then_some(())
    });
    assert!(!pid_alive(pid));
    assert_eq!(
        std::fs::read(&shadow).expect("shadow"),
        before,
        "shadow written"
    );
    // The dump was still taken, into a file of its own.
    let dump = std::fs::read_dir(&dumps)
        .expect("dumps dir")
        .flatten()
        .find(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .expect("a thread dump that is a plain file");
    let text = std::fs::read_to_string(&dump).expect("dump");
    assert!(
        text.contains("Full thread dump"),
        "{}: {text}",
        dump.display()
    );
}

#[test]
fn privsep_state_is_private_and_secrets_stay_out_of_output() {
    require_root();
    let fleet = Fleet::new(5);
    std::fs::set_permissions(fleet.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fleet dir");
    let secret = format!("pw-{}-s3cr3t", std::process::id());
    let extra = format!("env = {{ DB_PASSWORD = \"{secret}\" }}");
    fleet.write_app(&AppDef {
        extra: &extra,
        ..Default::default()
    });
    let up = fleet.run(&["up", "-d", "--wait"]);
    assert!(up.status.success(), "up: {up:?}");
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let port = i["port"].as_u64().expect("port") as u16;
    let (_, env) = http_get(port, "/env").expect("GET /env");
    assert!(env.contains(&secret), "the JVM has its env");
    // The store holds it (the fleet is recorded), but nobody else can read it. (A file nobody
    // may read shows the search itself works.)
    let control = fleet.path("control.txt");
    std::fs::write(&control, &secret).expect("write control");
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let state = fleet.state.display().to_string();
    let control_s = control.display().to_string();
    let out = as_nobody(&["grep", "-r", "-a", "-l", &secret, &state, &control_s]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        control_s,
        "nobody can read secrets in the state dir (or the search did not run: {})",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_nobody(&["grep", "-r", "-a", "-l", "DB_PASSWORD", &state]);
    assert!(
        out.stdout.is_empty(),
        "nobody can read: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let mode = |p: &Path| std::fs::metadata(p).map(|m| m.mode() & 0o7777).ok();
    assert_eq!(mode(&fleet.state), Some(0o700), "state dir");
    for name in ["state.db", "state.db-wal", "state.db-shm", "daemon.log"] {
        if let Some(m) = mode(&fleet.state.join(name)) {
            assert_eq!(m, 0o600, "{name}");
        }
    }
    assert_eq!(mode(&fleet.state.join("state.db")), Some(0o600));
    // What the CLI and the daemon print does not carry the value.
    for args in [
        &["status", "-o", "json"][..],
        &["events", "-n", "1000"][..],
        &["history", "fx"][..],
        &["apply", "--dry-run"][..],
    ] {
        let out = fleet.run(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains(&secret),
            "{args:?} prints the secret: {text}"
        );
    }
    let upped = format!(
        "{}{}",
        String::from_utf8_lossy(&up.stdout),
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(!upped.contains(&secret), "up prints the secret");
    let log = std::fs::read_to_string(fleet.state.join("daemon.log")).unwrap_or_default();
    assert!(!log.contains(&secret), "daemon.log holds the secret");

    // An app that prints its secret as it dies: the crash report (an event, and a line of the
    // daemon's log) quotes its output with the value redacted.
    let crashing = Fleet::new(5);
    let arg = format!("unexpected-{secret}");
    crashing.write_app(&AppDef {
        args: &[arg.as_str()],
        extra: &extra,
        ..Default::default()
    });
    crashing.ok(&["up", "-d"]);
    let event = wait_until("the crash-loop report", START, || {
        crashing
            .events_of("instance.crash-loop", "fx", None)
            .into_iter()
            .next()
    });
    let message = event["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("unexpected-<redacted:DB_PASSWORD>"),
        "the report quotes the output, redacted: {message}"
    );
    let events = crashing.ok(&["events", "-n", "1000"]);
    assert!(
        !events.contains(&secret),
        "events print the secret: {events}"
    );
    let log = std::fs::read_to_string(crashing.state.join("daemon.log")).unwrap_or_default();
    assert!(!log.contains(&secret), "daemon.log holds the secret: {log}");
    drop(crashing);

    // A state dir an older jarfleet left open is tightened when the daemon starts.
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon gone", START, || {
        (!pid_alive(daemon)).then_some(())
    });
    for (path, m) in [
        (fleet.state.clone(), 0o755),
        (fleet.state.join("state.db"), 0o644),
        (fleet.state.join("daemon.log"), 0o644),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).expect("chmod");
    }
    fleet.ok(&["up", "-d"]);
    wait_until("the daemon back", START, || {
        fleet.daemon_pid().filter(|p| *p != daemon)
    });
    fleet.wait_ready("fx", 1, START);
    // Group and others keep only the search bit (a confined app's JVM may need it).
    assert_eq!(mode(&fleet.state), Some(0o711), "state dir tightened");
    assert_eq!(mode(&fleet.state.join("state.db")), Some(0o600));
    assert_eq!(mode(&fleet.state.join("daemon.log")), Some(0o600));
    let log = std::fs::read_to_string(fleet.state.join("daemon.log")).unwrap_or_default();
    assert!(log.contains("was readable by others"), "no note: {log}");
}

/// A small tmpfs mounted at `at` for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mkdir the mount point");
        let out = run_with_deadline(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size},mode=0755"))
                .arg("tmpfs")
                .arg(at),
            Duration::from_secs(30),
        )
        .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs at {} was refused (the test needs root and mount): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a JVM or shim still holding a file there must not keep the mount.
        let _ = try_run_with_deadline(
            Command::new("umount").arg("-l").arg(&self.0),
            Duration::from_secs(30),
        );
    }
}

#[test]
fn privsep_instance_logs_survive_a_deleted_log_dir_and_a_full_disk() {
    require_root();
    // A deleted logs dir is made again, and `jarfleet logs` shows what came after.
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef::default());
    fleet.up();
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let port = i["port"].as_u64().expect("port") as u16;
    std::fs::remove_dir_all(fleet.state.join("logs")).expect("rm -rf logs");
    let (_, _) = http_get(port, "/log?lines=5").expect("GET /log");
    let logs = wait_until("lines after the deletion", START, || {
        let logs = fleet.ok(&["logs", "fx", "-n", "100"]);
        (logs.matches("line ").count() >= 5).then_some(logs)
    });
    assert!(
        logs.contains("was deleted while the instance ran: created again"),
        "{logs}"
    );
    drop(fleet);

    // A full disk under the logs: the JVM keeps serving, the shim keeps running, and once
    // there is room again the log says what was lost.
    let fleet = Fleet::new(5);
    let mount = Tmpfs::mount(&fleet.state.join("logs"), "2m");
    fleet.write_app(&AppDef::default());
    fleet.up();
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let port = i["port"].as_u64().expect("port") as u16;
    let shim = i["shim_pid"].as_u64().expect("shim pid") as u32;
    let fill = mount.0.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).expect("create fill");
        let block = vec![b'x'; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
    let (code, _) = http_get(port, "/log?lines=300&size=200").expect("GET /log on a full disk");
    assert_eq!(code, 200);
    let (code, _) = http_get(port, "/").expect("GET / on a full disk");
    assert_eq!(code, 200, "the JVM stopped serving");
    assert!(pid_alive(shim), "the shim died on a full disk");
    std::fs::remove_file(&fill).expect("free the space");
    let (_, _) = http_get(port, "/log?lines=1").expect("GET /log");
    let stdout = fleet.log_dir("fx", 0).join("stdout.log");
    let text = wait_until("the dropped-lines note", START, || {
        let text = std::fs::read_to_string(&stdout).ok()?;
        text.contains("dropped: no space left on device")
            .then_some(text)
    });
    let note = text
        .lines()
        .find(|l| l.contains("dropped: no space left on device"))
        .expect("note line");
    let count: u64 = note
        .trim_start_matches("[jarfleet] ")
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count in the note");
    assert!(count > 0, "{note}");
    assert!(pid_alive(shim), "the shim died");
    let (code, _) = http_get(port, "/").expect("GET /");
    assert_eq!(code, 200);
    drop(fleet);
    drop(mount);
}

/// The first line a shim's control socket says (its `hello`), as JSON.
fn shim_hello(socket: &Path) -> Option<serde_json::Value> {
    use std::io::BufRead;
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut line = String::new();
    std::io::BufReader::new(stream).read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

#[test]
fn privsep_a_shim_that_cannot_write_its_exit_keeps_it_for_the_next_daemon() {
    require_root();
    let fleet = Fleet::new(5);
    let run = Tmpfs::mount(&fleet.state.join("run"), "1m");
    fleet.write_app(&AppDef::default());
    fleet.up();
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let pid = i["pid"].as_u64().expect("pid") as u32;
    let shim = i["shim_pid"].as_u64().expect("shim pid") as u32;
    let run_dir = std::fs::read_dir(&run.0)
        .expect("run dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("fx.0."))
        })
        .expect("the shim's run dir");
    // No daemon to tell, and no room for exit.json.
    let fill = run.0.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).expect("create fill");
        let block = vec![b'x'; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon gone", START, || {
        (!pid_alive(daemon)).then_some(())
    });
    kill9(pid);
    wait_until("the JVM gone", START, || (!pid_alive(pid)).then_some(()));
    // The shim stays, and answers the exit on its socket.
    let hello = wait_until("the shim to answer its JVM's exit", START, || {
        shim_hello(&run_dir.join("s.sock")).filter(|h| h["exited"].is_object())
    });
    assert_eq!(hello["exited"]["signal"], 9, "{hello}");
    assert!(!run_dir.join("exit.json").exists());
    assert!(pid_alive(shim), "the shim left without recording the exit");
    // Room again: the retry writes exit.json, and the next daemon learns the exit from it.
    std::fs::remove_file(&fill).expect("free the space");
    wait_until("exit.json written by a retry", START, || {
        run_dir.join("exit.json").exists().then_some(())
    });
    fleet.ok(&["up", "-d"]);
    wait_until("fx/0 restarted with a new pid", START, || {
        let i = fleet.instance("fx", 0);
        (i["ready"] == true && i["pid"].as_u64() != Some(pid as u64)).then_some(())
    });
    let exits = fleet.events_of("instance.exited", "fx", Some(0));
    assert!(
        exits.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("pid {pid} killed by signal 9")))),
        "the exit was learnt: {exits:?}"
    );
    drop(fleet);
    drop(run);
}

#[test]
fn privsep_install_hooks_run_as_the_app_user_with_no_new_privs() {
    require_root();
    let fleet = Fleet::new(4);
    std::fs::set_permissions(fleet.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fleet dir");
    let nobody = nobody_uid();
    let out_dir = fleet.path("hook-out");
    std::fs::create_dir(&out_dir).expect("mkdir");
    std::fs::set_permissions(&out_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let hooks = fleet.path("hooks");
    std::fs::create_dir(&hooks).expect("mkdir hooks");
    for name in ["pre_install", "post_install"] {
        let p = hooks.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\ngrep -E '^(Uid|NoNewPrivs)' /proc/self/status > {}\n",
                out_dir.join(name).display()
            ),
        )
        .expect("hook");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let spec = fleet.path("app-spec.toml");
    std::fs::write(
        &spec,
        format!(
            "user = \"nobody\"\ninstances = 1\nports = \"{}-{}\"\n\n[health]\nhttp = \"/health\"\n",
            fleet.ports.0, fleet.ports.1
        ),
    )
    .expect("app spec");
    let jar = fleet.path("fx.jar");
    std::fs::copy(crate::fixture::fixture_jar(), &jar).expect("copy the fixture jar");
    let out = fleet.path("out");
    let s = |p: &Path| p.display().to_string();
    fleet.ok(&[
        "pack",
        &s(&jar),
        "--name",
        "fx",
        "--version",
        "1.0.0",
        "--app-spec",
        &s(&spec),
        "--hooks",
        &s(&hooks),
        "-o",
        &s(&out),
    ]);
    let prefix = fleet.path("srv");
    fleet.ok(&[
        "install",
        &s(&out.join("fx-1.0.0.jfb")),
        "--prefix",
        &s(&prefix),
        "--no-start",
    ]);
    for name in ["pre_install", "post_install"] {
        let text = std::fs::read_to_string(out_dir.join(name))
            .unwrap_or_else(|e| panic!("the {name} hook left nothing: {e}"));
        let (uids, nnp) = uid_and_nnp(&text);
        assert!(
            !uids.is_empty() && uids.iter().all(|u| *u == nobody),
            "{name} ran as {text}"
        );
        assert_eq!(nnp.as_deref(), Some("1"), "{name}: {text}");
    }
}
