//! The daemon's open files:
//!
//! - its soft limit raised at start, while shims start with the one it was given (and JVMs
//!   raise their own);
//! - the review's reproducer: a daemon held to 512 descriptors (soft and hard, so raising cannot
//!   help) flooded with 1,100 slow clients on an app's `listen` address. Its health checks cannot
//!   run, and that must cost no instance anything;
//! - a JVM that crashes in that flood: its restart cannot be made while the daemon has no
//!   descriptor, and must be postponed — not counted, not backed off, no port "in use".
//!
//! The daemon is started under util-linux's `prlimit`, so only it and its children have the low
//! limit. Whether clients are still *served* during the flood is the balancer's connection cap's
//! business (`jarfleet_proxy::set_connection_budget`); these tests hold whether it caps or not.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;

const START: Duration = Duration::from_secs(60);
/// The daemon's open-file limit in the flood test: soft and hard.
const LIMIT: u64 = 512;
/// The review's reproducer: more slow clients than the daemon has descriptors.
const CLIENTS: usize = 1_100;

/// `jarfleet ARGS` under `prlimit --nofile=SOFT:HARD`, as the fleet's own commands run.
fn run_limited(fleet: &Fleet, soft: u64, hard: u64, args: &[&str]) -> Output {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("prlimit is missing: install util-linux (apt-get install -y util-linux)")
        });
    let out = run_with_deadline(
        Command::new(prlimit)
            .arg(format!("--nofile={soft}:{hard}"))
            .arg("--")
            .arg(jarfleet_bin())
            .args(args)
            .current_dir(fleet.dir.path())
            .env("JARFLEET_STATE", &fleet.state)
            .env("NO_COLOR", "1"),
        Duration::from_secs(180),
    )
    .expect("running jarfleet under prlimit");
    assert!(
        out.status.success(),
        "prlimit --nofile={soft}:{hard} jarfleet {args:?} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `Max open files` line of `/proc/PID/limits`: (soft, hard).
fn open_file_limits(pid: u64) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("/proc/PID/limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    assert_eq!(nums.len(), 2, "{line}");
    (nums[0], nums[1])
}

fn open_count(pid: u32) -> Option<usize> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()
        .map(|d| d.count())
}

/// (slot, pid, restarts) of every instance of `fx`.
fn pids_and_restarts(status: &Value) -> Vec<(u64, u64, u64)> {
    status["apps"][0]["instances"]
        .as_array()
        .expect("instances")
        .iter()
        .map(|i| {
            (
                i["slot"].as_u64().expect("slot"),
                i["pid"].as_u64().expect("a running instance has a pid"),
                i["restarts"].as_u64().expect("restarts"),
            )
        })
        .collect()
}

/// The test process itself needs a descriptor per slow client.
fn raise_own_limit(need: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft >= need {
        return;
    }
    assert!(
        hard >= need,
        "this test opens {need} connections, and its hard open-file limit is {hard}: raise it (ulimit -Hn)"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raising the test's own limit");
}

/// A fleet of `fx` behind `listen`, its daemon held to [`LIMIT`] descriptors (soft and hard),
/// with strict health settings: on a daemon that takes its own shortage for failed checks, an
/// instance turns unhealthy within 0.6 s and is restarted 1 s later. (fleet, listen port, daemon
/// pid, status before)
fn limited_fleet(instances: u32) -> (Fleet, u16, u32, Value) {
    raise_own_limit(CLIENTS as u64 + 256);
    let fleet = Fleet::new(8);
    let lb = free_port();
    let listen = format!("listen = \"127.0.0.1:{lb}\"");
    fleet.write_spec(&fleet.app_toml(&AppDef {
        instances,
        extra: &listen,
        health: "http = \"/health\"\ninterval = \"300ms\"\ntimeout = \"1s\"\nfailures = 2\nunhealthy_restart_after = \"1s\"",
        ..Default::default()
    }));
    run_limited(&fleet, LIMIT, LIMIT, &["up", "-d", "--wait"]);
    fleet.wait_ready("fx", instances as usize, START);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    assert_eq!(
        open_file_limits(u64::from(daemon)),
        (LIMIT, LIMIT),
        "the daemon runs with the limit it was given (the hard one cannot be raised)"
    );
    wait_until("the balancer to serve", START, || {
        http_get(lb, "/version").ok().filter(|(c, _)| *c == 200)
    });
    let status = fleet.status();
    (fleet, lb, daemon, status)
}

/// Slow clients on the balancer, each sending a request head that never ends, a byte at a time.
struct Flood {
    clients: Vec<TcpStream>,
    refused: usize,
    round: usize,
    next_byte: Instant,
}

impl Flood {
    fn open(lb: u16, n: usize) -> Flood {
        let addr = SocketAddr::from(([127, 0, 0, 1], lb));
        let mut clients: Vec<TcpStream> = Vec::with_capacity(n);
        for _ in 0..n {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(mut s) => {
                    let _ = s.write_all(b"G");
                    clients.push(s);
                }
                Err(e) => {
                    // The listen backlog is full (a host with a small somaxconn): the daemon
                    // is saturated already, and every further connect would wait as long.
                    eprintln!(
                        "connect {} failed ({e}): no more clients",
                        clients.len() + 1
                    );
                    break;
                }
            }
        }
        Flood {
            refused: n - clients.len(),
            clients,
            round: 0,
            next_byte: Instant::now(),
        }
    }

    /// The next byte of the head to every client, every 500 ms (call it often).
    fn trickle(&mut self) {
        const HEAD: &[u8] = b"ET /slow HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        if Instant::now() < self.next_byte {
            return;
        }
        let byte = HEAD.get(self.round).copied().unwrap_or(b'a');
        for c in self.clients.iter_mut() {
            let _ = c.write_all(&[byte]);
        }
        self.round += 1;
        self.next_byte = Instant::now() + Duration::from_millis(500);
    }
}

/// Whether the daemon holds (nearly) every descriptor it may.
fn exhausted(daemon: u32) -> bool {
    open_count(daemon).is_some_and(|n| n as u64 >= LIMIT - 4)
}

/// A `daemon.shortage` event among `events` about `doing` names the limit, and so does the log.
fn assert_shortage_named(fleet: &Fleet, events: &[&Value], doing: &str) {
    let shortage = events
        .iter()
        .find(|e| {
            e["kind"] == "daemon.shortage"
                && e["message"].as_str().is_some_and(|m| m.contains(doing))
        })
        .unwrap_or_else(|| panic!("no daemon.shortage event about {doing:?} among {events:#?}"));
    let message = shortage["message"].as_str().unwrap_or("");
    eprintln!("the shortage, as reported: {message}");
    assert!(
        message.contains(&format!("out of file descriptors (limit {LIMIT})")),
        "{message}"
    );
    assert!(
        daemon_log(fleet).contains(&format!("out of file descriptors (limit {LIMIT})")),
        "the daemon's log does not name the shortage:\n{}",
        daemon_log_tail(fleet)
    );
}

#[test]
fn fd_shortage_a_flood_of_slow_clients_costs_no_instance_a_restart() {
    let (fleet, lb, daemon, before) = limited_fleet(2);
    let files = &before["daemon"]["open_files"];
    assert_eq!(files["limit"], LIMIT, "{files}");
    assert_eq!(files["hard_limit"], LIMIT, "{files}");
    // 512 − 256 for the control plane, halved: 128 client connections for the balancer.
    assert_eq!(files["reserve"], 256, "{files}");
    assert_eq!(files["balancer_budget"], 128, "{files}");
    let instances = pids_and_restarts(&before);
    assert_eq!(instances.len(), 2);
    let events_before = fleet.events().len();

    let mut flood = Flood::open(lb, CLIENTS);
    let status_asked = Instant::now();
    let mut status_during = {
        let mut cmd = fleet.command(&["status", "-o", "json"]);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().expect("jarfleet status during the flood")
    };
    // Held for several times what an instance needs to be restarted for failed checks; the
    // daemon's probes run all along, every 300 ms.
    let hold = Duration::from_secs(8);
    let started = Instant::now();
    let mut was_exhausted = false;
    let mut answered_during = None;
    while started.elapsed() < hold {
        flood.trickle();
        was_exhausted = was_exhausted || exhausted(daemon);
        if answered_during.is_none()
            && let Ok(Some(_)) = status_during.try_wait()
        {
            answered_during = Some(status_asked.elapsed());
        }
        for (slot, pid, _) in &instances {
            assert!(
                pid_alive(*pid as u32),
                "fx/{slot} (pid {pid}) died {:?} into the flood:\n{}",
                started.elapsed(),
                daemon_log_tail(&fleet)
            );
        }
        assert!(pid_alive(daemon), "the daemon died in the flood");
        std::thread::sleep(Duration::from_millis(25));
    }
    eprintln!(
        "flood: {} clients connected ({} not), the daemon exhausted: {was_exhausted}, status answered during it after {answered_during:?}",
        flood.clients.len(),
        flood.refused
    );
    // The balancer keeps to its budget: the control plane never runs out, and the operator is
    // answered while the flood goes on.
    assert!(
        !was_exhausted,
        "the daemon ran out of descriptors: the balancer took the control plane's reserve"
    );
    assert!(
        answered_during.is_some(),
        "jarfleet status was not answered during the flood:\n{}",
        daemon_log_tail(&fleet)
    );
    drop(flood);

    // The status asked for during the flood succeeded, and so does a new one.
    wait_until("the status asked for during the flood", START, || {
        status_during.try_wait().ok().flatten()
    });
    let during = status_during
        .wait_with_output()
        .expect("status during the flood");
    assert!(
        during.status.success(),
        "jarfleet status asked during the flood failed: {}",
        String::from_utf8_lossy(&during.stderr)
    );
    let after = fleet.status();

    // Nothing happened to any instance: same processes, no restart, all ready.
    assert_eq!(
        pids_and_restarts(&after),
        instances,
        "the instances were restarted:\n{}",
        daemon_log_tail(&fleet)
    );
    fleet.wait_ready("fx", 2, Duration::from_secs(10));
    let events = fleet.events();
    let new: Vec<&Value> = events.iter().skip(events_before).collect();
    for e in &new {
        let kind = e["kind"].as_str().unwrap_or("");
        assert!(
            !matches!(
                kind,
                "instance.unhealthy"
                    | "instance.unhealthy-restart"
                    | "instance.stopping"
                    | "instance.exited"
                    | "instance.restart-scheduled"
                    | "instance.spawn-failed"
            ),
            "{kind} during the flood: {e}"
        );
    }
    // The shortage (if the daemon ran out at all) is named, with the limit.
    if was_exhausted {
        assert_shortage_named(&fleet, &new, "could not be run");
        let files = &after["daemon"]["open_files"];
        assert!(
            files["shortages"].as_u64().is_some_and(|n| n > 0),
            "{files}"
        );
    }
    // And the balancer serves again.
    wait_until("the balancer to serve after the flood", START, || {
        http_get(lb, "/version").ok().filter(|(c, _)| *c == 200)
    });
}

#[test]
fn fd_shortage_a_crash_in_the_flood_is_restarted_once_without_a_backoff_or_a_port_in_use() {
    let (fleet, lb, daemon, before) = limited_fleet(1);
    let instances = pids_and_restarts(&before);
    let (_, jvm, restarts) = instances[0];
    assert_eq!(restarts, 0);
    let events_before = fleet.events().len();

    let mut flood = Flood::open(lb, CLIENTS);
    // Out of descriptors soon, unless the balancer keeps its connection budget (then the
    // restart below must simply work).
    let flooded = Instant::now();
    let mut short = exhausted(daemon);
    while !short && flooded.elapsed() < Duration::from_secs(5) {
        flood.trickle();
        std::thread::sleep(Duration::from_millis(25));
        short = exhausted(daemon);
    }
    // The JVM crashes while the daemon (maybe) has no descriptor to start another with.
    kill9(jvm as u32);
    let killed = Instant::now();
    while killed.elapsed() < Duration::from_secs(6) {
        flood.trickle();
        short = short && exhausted(daemon);
        assert!(pid_alive(daemon), "the daemon died in the flood");
        std::thread::sleep(Duration::from_millis(25));
    }
    eprintln!("flood: the daemon out of descriptors from before the crash to the end: {short}");
    drop(flood);

    // Once descriptors are back, the instance is restarted: one restart, for the one crash.
    let ready = fleet.wait_ready("fx", 1, START);
    assert_ne!(ready[0]["pid"].as_u64(), Some(jvm), "{ready:?}");
    assert_eq!(
        ready[0]["restarts"],
        1,
        "{ready:?}\n{}",
        daemon_log_tail(&fleet)
    );
    let events = fleet.events();
    let new: Vec<&Value> = events.iter().skip(events_before).collect();
    let kinds: Vec<&str> = new.iter().filter_map(|e| e["kind"].as_str()).collect();
    for kind in ["instance.spawn-failed", "instance.crash-loop"] {
        assert!(!kinds.contains(&kind), "{kind} in {new:#?}");
    }
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == "instance.restart-scheduled")
            .count(),
        1,
        "{new:#?}"
    );
    for e in &new {
        let message = e["message"].as_str().unwrap_or("");
        assert!(
            !message.contains("in use by other processes"),
            "a shortage taken for ports in use: {e}"
        );
    }
    if !short {
        return;
    }
    // It was out of descriptors all along: the start was postponed, saying why.
    let postponed = new
        .iter()
        .find(|e| e["kind"] == "instance.spawn-postponed")
        .unwrap_or_else(|| panic!("no instance.spawn-postponed among {new:#?}"));
    let message = postponed["message"].as_str().unwrap_or("");
    eprintln!("the postponed start, as reported: {message}");
    assert!(
        message.contains(&format!("out of file descriptors (limit {LIMIT})"))
            && message.contains("no restart counted"),
        "{message}"
    );
    // (Reported at most every 10 s: the one about the checks may have come first.)
    assert_shortage_named(&fleet, &new, "");
}

fn daemon_log(fleet: &Fleet) -> String {
    std::fs::read_to_string(fleet.state.join("daemon.log")).unwrap_or_default()
}

/// The daemon's last log lines, without the balancer's accept errors (one every 20 ms while it
/// is out of descriptors).
fn daemon_log_tail(fleet: &Fleet) -> String {
    let log = daemon_log(fleet);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("accept failed"))
        .collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn fd_shortage_the_daemon_raises_its_limit_and_the_jvms_start_with_the_one_it_was_given() {
    let fleet = Fleet::new(4);
    fleet.write_app(&AppDef::default());
    run_limited(&fleet, 256, 4096, &["up", "-d", "--wait"]);
    let ready = fleet.wait_ready("fx", 1, START);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    assert_eq!(
        open_file_limits(u64::from(daemon)),
        (4096, 4096),
        "the daemon raised its soft limit to the hard one"
    );
    let shim = ready[0]["shim_pid"].as_u64().expect("shim pid");
    let jvm = ready[0]["pid"].as_u64().expect("jvm pid");
    assert_eq!(
        open_file_limits(shim),
        (256, 4096),
        "a shim starts with the limit the daemon was given"
    );
    // The JVM raises its own soft limit to the hard one (-XX:+MaxFDLimit, on by default).
    assert_eq!(open_file_limits(jvm), (4096, 4096));

    let status = fleet.status();
    let files = &status["daemon"]["open_files"];
    assert_eq!(files["limit"], 4096, "{files}");
    assert_eq!(files["started_with"], 256, "{files}");
    assert_eq!(files["reserve"], 409, "{files}");
    assert_eq!(files["balancer_budget"], 1843, "{files}");
    assert!(
        files["open"].as_u64().is_some_and(|n| n > 0 && n < 256),
        "{files}"
    );
    assert_eq!(files["shortages"], 0, "{files}");
    assert!(
        daemon_log(&fleet)
            .contains("open files: soft limit raised from 256 to 4096 (the hard limit)"),
        "{}",
        daemon_log_tail(&fleet)
    );
    let doctor = fleet.ok(&["doctor"]);
    assert!(
        doctor.contains("daemon open files: limit 4096 (raised from 256; hard 4096)")
            && doctor.contains("load balancer budget 1843 client connections"),
        "{doctor}"
    );
}
