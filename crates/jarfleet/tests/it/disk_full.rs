//! A full disk under the state dir: the daemon keeps supervising and balancing, says so, and
//! recovers by itself once there is room again. The state dir is a small tmpfs of its own,
//! filled by the test; the jars live outside it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const START: Duration = Duration::from_secs(90);

/// A fleet whose state dir is a tmpfs of its own. The fleet is dropped (daemon and instances
/// stopped) before the tmpfs is unmounted.
struct DiskFleet {
    fleet: Fleet,
    _mount: Tmpfs,
    lb: u16,
}

/// A tmpfs mounted for the test; unmounted on drop (lazily if something still holds it).
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).expect("creating the mount point");
        let out = run_with_deadline(
            Command::new("mount")
                .args([
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={size},mode=0755"),
                    "tmpfs",
                ])
                .arg(path),
            HOST_COMMAND,
        )
        .unwrap_or_else(|e| panic!("running mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs at {} failed ({}): {}\nthis test needs root (or CAP_SYS_ADMIN) to mount a small tmpfs as a full disk",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // No panic here (a Drop while unwinding would abort): a failed or hung umount falls
        // back to a lazy one.
        let out = try_run_with_deadline(Command::new("umount").arg(&self.path), HOST_COMMAND);
        if !out.is_ok_and(|o| o.status.success()) {
            let _ = try_run_with_deadline(
                Command::new("umount").arg("-l").arg(&self.path),
                HOST_COMMAND,
            );
        }
    }
}

/// How long a host command (mount, umount) may take.
const HOST_COMMAND: Duration = Duration::from_secs(30);

/// Two `fx` instances behind the load balancer, state on a 64 MiB tmpfs.
fn disk_fleet() -> DiskFleet {
    let fleet = Fleet::new(12);
    let mount = Tmpfs::mount(&fleet.state, "64m");
    let lb = free_port();
    let listen = format!("listen = \"127.0.0.1:{lb}\"\nlogs = {{ max_size = \"1MB\", keep = 1 }}");
    fleet.write_spec(&fleet.app_toml(&AppDef {
        instances: 2,
        extra: &listen,
        health: "http = \"/health\"\ninterval = \"500ms\"\nstart_timeout = \"30s\"",
        ..Default::default()
    }));
    fleet.up();
    fleet.wait_ready("fx", 2, START);
    wait_until("requests spread over both instances", START, || {
        let pids: std::collections::BTreeSet<String> = (0..12)
            .filter_map(|_| http_get(lb, "/pid").ok())
            .map(|(_, p)| p)
            .collect();
        (pids.len() == 2).then_some(())
    });
    DiskFleet {
        fleet,
        _mount: mount,
        lb,
    }
}

/// Writes `dir/filler` until the file system says it is full; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("creating the filler");
    let mut wrote = 0u64;
    for chunk in [1 << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        loop {
            match f.write_all(&buf) {
                Ok(()) => wrote += chunk as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", path.display()),
            }
            assert!(wrote < 1 << 30, "{} never filled up", dir.display());
        }
    }
    let _ = f.sync_all();
    path
}

/// Clients that keep their connections alive, each sending `GET /version` in a loop and
/// counting what fails (then reconnecting).
struct KeepAliveLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl KeepAliveLoad {
    fn start(port: u16, clients: usize) -> KeepAliveLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed, errors) =
                    (stop.clone(), ok.clone(), failed.clone(), errors.clone());
                std::thread::spawn(move || {
                    let mut conn: Option<BufReader<TcpStream>> = None;
                    while !stop.load(Ordering::SeqCst) {
                        match one_request(port, &mut conn) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                conn = None;
                                failed.fetch_add(1, Ordering::SeqCst);
                                if let Ok(mut all) = errors.lock() {
                                    all.push(e);
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        KeepAliveLoad {
            stop,
            ok,
            failed,
            errors,
            threads,
        }
    }

    fn answered(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    /// Waits until `n` more requests were answered.
    fn wait_more(&self, n: u64) {
        let from = self.answered();
        wait_until("more requests answered", Duration::from_secs(60), || {
            (self.answered() >= from + n).then_some(())
        });
    }

    fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (self.answered(), self.failed(), errors)
    }
}

/// One `GET /version` on the kept connection (opened if there is none); the answer must be 200.
fn one_request(port: u16, conn: &mut Option<BufReader<TcpStream>>) -> Result<(), String> {
    if conn.is_none() {
        let s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        *conn = Some(BufReader::new(s));
    }
    let Some(r) = conn.as_mut() else {
        return Err("no connection".into());
    };
    r.get_mut()
        .write_all(b"GET /version HTTP/1.1\r\nHost: fx\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut status = String::new();
    r.read_line(&mut status)
        .map_err(|e| format!("status line: {e}"))?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(format!("status line {status:?}"));
    }
    let mut length = None;
    loop {
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| format!("header: {e}"))?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse::<usize>().ok();
        }
    }
    let mut body = vec![0u8; length.ok_or("no content-length")?];
    r.read_exact(&mut body).map_err(|e| format!("body: {e}"))?;
    Ok(())
}

/// Each `fx` instance's (slot, pid, restarts), for slots 0 and 1 (the first two).
fn pids_and_restarts(fleet: &Fleet) -> Vec<(u64, u64, u64)> {
    fleet
        .instances("fx")
        .iter()
        .filter(|i| i["slot"].as_u64().is_some_and(|s| s < 2))
        .map(|i| {
            (
                i["slot"].as_u64().unwrap_or(0),
                i["pid"].as_u64().unwrap_or(0),
                i["restarts"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

fn store_of(status: &Value) -> Value {
    status["daemon"]["store"].clone()
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn daemon_log_tail(state: &Path) -> String {
    let log = std::fs::read_to_string(state.join("daemon.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[test]
fn a_full_disk_costs_no_request_no_restart_and_clears_by_itself() {
    let df = disk_fleet();
    let fleet = &df.fleet;
    let daemon = fleet.daemon_pid().expect("daemon pid");
    let before = pids_and_restarts(fleet);
    assert_eq!(before.len(), 2, "{before:?}");
    let load = KeepAliveLoad::start(df.lb, 4);
    load.wait_more(200);

    let filler = fill(&fleet.state);
    // Writes while the disk is full: a scale (events, records, a start that cannot write its
    // files), and output of the instances (their logs).
    fleet.ok(&["scale", "fx", "3"]);
    for _ in 0..20 {
        let _ = http_get(df.lb, "/log?lines=50&size=200");
    }
    let full = wait_until(
        "status to report the full disk",
        Duration::from_secs(30),
        || {
            let s = fleet.status();
            let store = store_of(&s);
            (store["writable"] == false && store["disk_full"] == true).then_some(s)
        },
    );
    let warnings = full["daemon"]["warnings"].to_string();
    assert!(
        warnings.contains("is full") && warnings.contains("the store cannot be written"),
        "{warnings}"
    );
    let table = fleet.ok(&["status"]);
    assert!(
        table.contains("warning: the store cannot be written"),
        "{table}"
    );
    let metrics = fleet.ok(&["metrics"]);
    assert_eq!(
        metric(&metrics, "jarfleet_store_writable"),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "jarfleet_disk_full"),
        Some(1.0),
        "{metrics}"
    );
    assert!(metric(&metrics, "jarfleet_store_write_errors_total").is_some_and(|n| n >= 1.0));
    // The daemon's log fills the room left in its last page first: more commands (each logs
    // its events) until a line is dropped.
    let mut more = ["4", "3"].iter().cycle();
    wait_until("a daemon log line dropped", Duration::from_secs(90), || {
        fleet.ok(&["scale", "fx", more.next().unwrap_or(&"3")]);
        let m = fleet.ok(&["metrics"]);
        metric(&m, "jarfleet_daemon_log_dropped_lines_total")
            .filter(|n| *n >= 1.0)
            .map(|_| ())
    });
    fleet.ok(&["scale", "fx", "3"]);
    let log_warning = fleet.status()["daemon"]["warnings"].to_string();
    assert!(
        log_warning.contains("the daemon's log cannot be written"),
        "{log_warning}"
    );
    let doctor = fleet.ok(&["doctor"]);
    assert!(
        doctor.contains("NOT writable") && doctor.contains("store writes failing"),
        "{doctor}"
    );

    // Keep the load on (and the store retrying) for a while.
    load.wait_more(3000);
    assert!(
        pid_alive(daemon),
        "the daemon died:\n{}",
        daemon_log_tail(&fleet.state)
    );
    assert_eq!(load.failed(), 0, "requests failed while the disk was full");

    std::fs::remove_file(&filler).expect("removing the filler");
    let freed = Instant::now();
    wait_until(
        "the store to be written again",
        Duration::from_secs(60),
        || {
            let store = store_of(&fleet.status());
            (store["writable"] == true
                && store["disk_full"] == false
                && store["pending_writes"] == 0
                && store["log_failing"].is_null())
            .then_some(())
        },
    );
    let recovery = freed.elapsed();
    // The figure for docs/BENCHMARKS.md (goal: within 5 s).
    eprintln!(
        "disk full: recovered {:.2} s after space returned",
        recovery.as_secs_f64()
    );
    // The instance that could not start meanwhile starts now.
    fleet.wait_ready("fx", 3, START);
    let (answered, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} failed of {answered}: {:?}",
        &errors[..errors.len().min(5)]
    );

    assert_eq!(fleet.daemon_pid(), Some(daemon), "the daemon was restarted");
    assert!(pid_alive(daemon));
    assert_eq!(
        pids_and_restarts(fleet),
        before,
        "an instance was restarted"
    );
    // What happened is on record, in order: the kept events were written when room returned.
    let kinds: Vec<String> = fleet
        .events()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    let pos = |k: &str| kinds.iter().position(|x| x == k);
    let (scaled, failing, recovered) = (
        pos("app.scaled"),
        pos("daemon.store-failing"),
        pos("daemon.store-recovered"),
    );
    assert!(
        scaled.is_some() && failing.is_some() && recovered.is_some() && failing < recovered,
        "{kinds:?}"
    );
    let status = fleet.status();
    assert!(status["daemon"]["warnings"].is_null(), "{status}");
    let log = std::fs::read_to_string(fleet.state.join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("daemon log line(s) could not be written"),
        "{log}"
    );
}

#[test]
fn a_daemon_started_on_a_full_disk_readopts_and_balances() {
    let df = disk_fleet();
    let fleet = &df.fleet;
    let before = pids_and_restarts(fleet);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    // A daemon stopped cleanly (its JVMs stay) leaves no WAL index behind: the next start has
    // to make one, which a full disk refuses.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM to the daemon");
    wait_until("the daemon to stop", Duration::from_secs(30), || {
        (!pid_alive(daemon)).then_some(())
    });
    let filler = fill(&fleet.state);

    // Started as `up -d` starts it: stdout and stderr on daemon.log.
    let log_path = fleet.state.join("daemon.log");
    let log = std::fs::OpenOptions::new()
        .append(true)
        .open(&log_path)
        .expect("daemon.log");
    let err = log.try_clone().expect("dup");
    let mut child = fleet
        .command(&["daemon", "--state-dir"])
        .arg(&fleet.state)
        .arg("--log")
        .arg(&log_path)
        .stdout(log)
        .stderr(err)
        .spawn()
        .expect("starting the daemon");
    let pid = child.id();
    fleet.remember(pid);
    let load = wait_until("the daemon to re-adopt both instances", START, || {
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the daemon exited ({status}) on a full disk:\n{}",
                daemon_log_tail(&fleet.state)
            );
        }
        let out = fleet.run(&["status", "-o", "json"]);
        let s: Value = serde_json::from_slice(&out.stdout).ok()?;
        let ready = s["apps"][0]["ready"].as_u64()?;
        (ready == 2).then_some(s)
    });
    assert_eq!(pids_and_restarts(fleet), before, "not the same JVMs");
    let store = store_of(&load);
    assert_eq!(store["writable"], false, "{store}");
    assert_eq!(store["exclusive"], true, "{store}");
    assert_eq!(store["disk_full"], true, "{store}");

    let clients = KeepAliveLoad::start(df.lb, 4);
    clients.wait_more(2000);
    assert_eq!(clients.failed(), 0);

    std::fs::remove_file(&filler).expect("removing the filler");
    let freed = Instant::now();
    wait_until(
        "the store opened normally again",
        Duration::from_secs(60),
        || {
            let store = store_of(&fleet.status());
            (store["writable"] == true && store["exclusive"] == false).then_some(())
        },
    );
    eprintln!(
        "disk full at start: store open normally {:.2} s after space returned",
        freed.elapsed().as_secs_f64()
    );
    clients.wait_more(500);
    let (answered, failed, errors) = clients.finish();
    assert_eq!(
        failed,
        0,
        "{failed} failed of {answered}: {:?}",
        &errors[..errors.len().min(5)]
    );
    // Event listings read the store again, with what was kept while it could not be written.
    let kinds: Vec<String> = fleet
        .events()
        .iter()
        .filter_map(|e| e["kind"].as_str().map(str::to_string))
        .collect();
    assert!(
        kinds.iter().any(|k| k == "daemon.store-recovered"),
        "{kinds:?}"
    );
    assert!(pid_alive(pid));
    assert_eq!(pids_and_restarts(fleet), before);
    let _ = child.try_wait();
}

#[test]
fn the_daemon_log_rotates_by_size_and_its_stderr_follows() {
    let fleet = Fleet::new(6);
    let app = fleet.app_toml(&AppDef::default());
    fleet.write_spec(&format!(
        "[daemon]\nlog_max_size = \"4KB\"\nlog_keep = 2\n\n{app}"
    ));
    fleet.up();
    fleet.wait_ready("fx", 1, START);
    let log = fleet.state.join("daemon.log");
    let rotated = |n: u32| fleet.state.join(format!("daemon.log.{n}"));
    // Each scale logs its events: enough of them rotate the log more than twice.
    let mut count = ["2", "1"].iter().cycle();
    wait_until(
        "the daemon log rotated twice",
        Duration::from_secs(120),
        || {
            fleet.ok(&["scale", "fx", count.next().unwrap_or(&"1")]);
            rotated(2).exists().then_some(())
        },
    );
    for _ in 0..10 {
        fleet.ok(&["scale", "fx", count.next().unwrap_or(&"1")]);
    }
    assert!(!rotated(3).exists(), "only 2 rotated files are kept");
    for path in [log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0 && size <= 4000, "{}: {size} bytes", path.display());
    }
    // The daemon's stderr (and stdout) are the current file, not a rotated or deleted one.
    let daemon = fleet.daemon_pid().expect("daemon pid");
    for fd in [1, 2] {
        let target = std::fs::read_link(format!("/proc/{daemon}/fd/{fd}")).expect("fd link");
        assert_eq!(target, log, "fd {fd} of the daemon");
    }
}
