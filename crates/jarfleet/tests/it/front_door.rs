//! The front door never closes: with real JVMs behind an app's `listen` address and clients on
//! it (keep-alive clients sending GETs and POSTs, and clients opening a new connection for each
//! request), the daemon is killed, restarted, upgraded, and the data plane itself is killed.
//!
//! The clients behave as HTTP clients do: a keep-alive connection the server has closed is
//! seen closed before it is used again (nothing is sent on it), and a response that says
//! `Connection: close` ends its connection. Every other failure counts, and is printed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::balancer::{START, fleet_behind_lb};
use crate::harness::*;

/// What the clients saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub ok: u64,
    pub failed: u64,
    pub refused: u64,
    pub errors: Vec<String>,
}

/// Clients running against one address until [`FrontLoad::finish`].
pub(crate) struct FrontLoad {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    /// Every request: when it was sent, when it ended, whether it was answered.
    log: Arc<std::sync::Mutex<Vec<(Instant, Instant, bool)>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

/// One response read off `stream`: the status, and whether the connection may be used again.
fn exchange(stream: &mut BufReader<TcpStream>, post: bool, close: bool) -> Result<bool, String> {
    let connection = if close { "close" } else { "keep-alive" };
    let request = if post {
        format!(
            "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
        )
    } else {
        format!("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\r\n")
    };
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .map_err(|e| format!("sending: {e}"))?;
    let mut line = String::new();
    stream
        .read_line(&mut line)
        .map_err(|e| format!("reading the status line: {e}"))?;
    if line.is_empty() {
        return Err("the connection closed before any response byte".into());
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {line:?}"))?;
    let mut length = 0usize;
    let mut reusable = !close;
    loop {
        let mut header = String::new();
        stream
            .read_line(&mut header)
            .map_err(|e| format!("reading the head: {e}"))?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        if let Some((k, v)) = header.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "content-length" {
                length = v.parse().map_err(|_| format!("bad length {v:?}"))?;
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                reusable = false;
            }
        }
    }
    let mut body = vec![0u8; length];
    stream
        .read_exact(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    if status != 200 || !body.starts_with(b"hello from") {
        return Err(format!(
            "{status} {:?}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(reusable)
}

/// Whether a kept-alive connection is still open: not closed by the server while idle (what a
/// client checks before reusing one).
fn still_open(stream: &BufReader<TcpStream>) -> bool {
    if !stream.buffer().is_empty() {
        return false; // bytes nobody asked for: not a connection to reuse
    }
    let s = stream.get_ref();
    if s.set_nonblocking(true).is_err() {
        return false;
    }
    let mut b = [0u8; 1];
    let open = matches!(s.peek(&mut b), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    open && s.set_nonblocking(false).is_ok()
}

impl FrontLoad {
    /// `keep_alive` clients on kept-alive connections (GET and POST in turn) and `fresh`
    /// clients with a new connection per request.
    pub(crate) fn start(port: u16, keep_alive: usize, fresh: usize) -> FrontLoad {
        FrontLoad::start_at(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            keep_alive,
            fresh,
            true,
        )
    }

    /// [`FrontLoad::start`] against any address; without `posts`, GETs only (every request
    /// replayable).
    pub(crate) fn start_at(
        addr: std::net::SocketAddr,
        keep_alive: usize,
        fresh: usize,
        posts: bool,
    ) -> FrontLoad {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut handles = Vec::new();
        for i in 0..keep_alive + fresh {
            let reuse = i < keep_alive;
            let (stop, ok, failed, refused, in_flight, errors, log) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                refused.clone(),
                in_flight.clone(),
                errors.clone(),
                log.clone(),
            );
            handles.push(std::thread::spawn(move || {
                let mut conn: Option<BufReader<TcpStream>> = None;
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) && n < 2_000_000 {
                    n += 1;
                    if conn.as_ref().is_some_and(|c| !still_open(c)) {
                        conn = None;
                    }
                    // A request on a new connection starts at its connect.
                    let opened = Instant::now();
                    let fresh = conn.is_none();
                    let stream = match conn.take() {
                        Some(c) => c,
                        None => match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
                            Ok(s) => {
                                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                                let _ = s.set_nodelay(true);
                                BufReader::new(s)
                            }
                            Err(e) => {
                                if e.kind() == std::io::ErrorKind::ConnectionRefused {
                                    refused.fetch_add(1, Ordering::SeqCst);
                                }
                                failed.fetch_add(1, Ordering::SeqCst);
                                if let Ok(mut v) = errors.lock() {
                                    v.push(format!("connecting: {e}"));
                                }
                                std::thread::sleep(Duration::from_millis(5));
                                continue;
                            }
                        },
                    };
                    let mut stream = stream;
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let sent = if fresh { opened } else { Instant::now() };
                    let answer = exchange(&mut stream, posts && n.is_multiple_of(2), !reuse);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    if let Ok(mut l) = log.lock() {
                        l.push((sent, Instant::now(), answer.is_ok()));
                    }
                    match answer {
                        Ok(reusable) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                            if reusable {
                                conn = Some(stream);
                            }
                        }
                        Err(e) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut v) = errors.lock() {
                                v.push(e);
                            }
                        }
                    }
                }
            }));
        }
        FrontLoad {
            stop,
            ok,
            failed,
            refused,
            in_flight,
            errors,
            log,
            handles,
        }
    }

    /// Of the requests logged: those in flight at some moment of `window` (sent before its end,
    /// ended after its start), and how many of them failed; and the failures that were in
    /// flight in none of `windows` (what a kill must not cause).
    pub(crate) fn judge(&self, windows: &[(Instant, Instant)]) -> (Vec<(u64, u64)>, Vec<String>) {
        let log = self.log.lock().map(|l| l.clone()).unwrap_or_default();
        let inside = |(from, to): (Instant, Instant), sent: Instant, ended: Instant| {
            sent <= to && ended >= from
        };
        let per_window = windows
            .iter()
            .map(|w| {
                let at: Vec<_> = log.iter().filter(|(s, e, _)| inside(*w, *s, *e)).collect();
                (
                    at.len() as u64,
                    at.iter().filter(|(_, _, ok)| !ok).count() as u64,
                )
            })
            .collect();
        let stray = log
            .iter()
            .filter(|(s, e, ok)| !ok && !windows.iter().any(|w| inside(*w, *s, *e)))
            .map(|(s, e, _)| format!("sent {s:?}, failed {e:?}"))
            .collect();
        (per_window, stray)
    }

    pub(crate) fn answered(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits for `n` more answers.
    pub(crate) fn wait_more(&self, n: u64) {
        let from = self.answered();
        wait_until("more requests answered", Duration::from_secs(60), || {
            (self.answered() >= from + n).then_some(())
        });
    }

    pub(crate) fn finish(self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        for h in self.handles {
            let _ = h.join();
        }
        Tally {
            ok: self.ok.load(Ordering::SeqCst),
            failed: self.failed.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            errors: self.errors.lock().map(|e| e.clone()).unwrap_or_default(),
        }
    }
}

/// The pid of the data plane serving `fleet`'s listeners.
pub(crate) fn data_plane_pid(fleet: &Fleet) -> u32 {
    let path = fleet.dirs().data_plane().join("pid");
    let pid = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid");
    assert!(pid_alive(pid), "the data plane {pid} runs");
    pid
}

/// `jarfleet up -d` with the stored fleet, until the new daemon answers.
fn start_daemon_again(fleet: &Fleet) {
    fleet.ok(&["up", "-d"]);
    wait_until("the new daemon answering", START, || {
        fleet
            .run(&["status", "-o", "json"])
            .status
            .success()
            .then_some(())
    });
}

fn assert_none_failed(what: &str, tally: &Tally) {
    eprintln!(
        "{what}: {} answered, {} failed ({} refused)",
        tally.ok, tally.failed, tally.refused
    );
    assert_eq!(
        tally.failed,
        0,
        "{what}: failed requests: {:?}",
        &tally.errors[..tally.errors.len().min(20)]
    );
}

#[test]
fn daemon_kill9_and_a_new_daemon_a_second_later_fail_no_request() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let load = FrontLoad::start(lb, 4, 2);
    load.wait_more(300);
    let dp = data_plane_pid(&fleet);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon gone", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    // No daemon: the data plane serves on.
    load.wait_more(300);
    std::thread::sleep(Duration::from_secs(1)); // the bar: a new daemon one second later
    start_daemon_again(&fleet);
    load.wait_more(300);
    let tally = load.finish();
    assert_eq!(
        data_plane_pid(&fleet),
        dp,
        "the new daemon took the data plane back rather than starting another"
    );
    assert_none_failed("daemon kill -9", &tally);
    // The new daemon sees the data plane's counters, the requests served while it was away
    // included.
    let totals = &fleet.status()["apps"][0]["balancer"]["totals"];
    let counted: u64 = totals["requests"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_u64()).sum())
        .unwrap_or(0);
    assert!(
        counted >= tally.ok,
        "the balancer counted {counted} responses, the clients got {}",
        tally.ok
    );
}

#[test]
fn a_graceful_daemon_restart_fails_no_request() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let load = FrontLoad::start(lb, 4, 2);
    load.wait_more(300);
    let dp = data_plane_pid(&fleet);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    wait_until("the daemon gone", Duration::from_secs(30), || {
        (!pid_alive(daemon)).then_some(())
    });
    load.wait_more(200);
    start_daemon_again(&fleet);
    load.wait_more(300);
    let tally = load.finish();
    assert_eq!(
        data_plane_pid(&fleet),
        dp,
        "the data plane outlived the restart"
    );
    assert_none_failed("graceful restart", &tally);
}

#[test]
fn data_plane_kill9_fails_at_most_what_was_in_flight_and_refuses_no_connection() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let load = FrontLoad::start(lb, 4, 2);
    load.wait_more(300);
    let mut windows = Vec::new();
    // Three kills in a row: each new data plane is found and killed in turn.
    for round in 0..3 {
        let dp = data_plane_pid(&fleet);
        let before = load.answered();
        let killed = Instant::now();
        kill9(dp);
        // From the kill to the instant it is dead, its sockets closed: gone, or a zombie whose
        // every thread has exited (the leader shows `Z` while the others still close its
        // files). Polled without a pause: the window must be the real one.
        let deadline = killed + Duration::from_secs(10);
        loop {
            let threads = std::fs::read_dir(format!("/proc/{dp}/task")).map_or(0, |d| d.count());
            if !pid_alive(dp) && threads <= 1 {
                break;
            }
            assert!(Instant::now() < deadline, "data plane {dp} did not die");
        }
        windows.push((killed, Instant::now()));
        wait_until("a new data plane", Duration::from_secs(10), || {
            let path = fleet.dirs().data_plane().join("pid");
            let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
            (pid != dp && pid_alive(pid)).then_some(())
        });
        load.wait_more(200);
        assert!(load.answered() > before, "round {round}: serving again");
    }
    let (per_kill, stray) = load.judge(&windows);
    for (round, (in_flight, failed)) in per_kill.iter().enumerate() {
        eprintln!("round {round}: {failed} failed of {in_flight} in flight while it died");
    }
    let tally = load.finish();
    eprintln!(
        "data plane kill -9 ×3: {} answered, {} failed ({} refused)",
        tally.ok, tally.failed, tally.refused
    );
    // Only requests in flight while a data plane died may fail: none before, none after.
    assert!(
        stray.is_empty(),
        "failed outside the kills: {stray:?}; errors: {:?}",
        tally.errors
    );
    assert_eq!(tally.refused, 0, "refused: {:?}", tally.errors);
    // The daemon says it replaced its data plane, and why.
    let events = fleet.events();
    assert!(
        events.iter().filter(|e| e["kind"] == "lb.replaced").count() >= 3,
        "{events:?}"
    );
}

/// A copy of the jarfleet binary that is another build: the same code with another build id
/// (the linker's `NT_GNU_BUILD_ID` note), which is what `status` and `upgrade` tell builds by.
pub(crate) fn another_build(fleet: &Fleet) -> (std::path::PathBuf, String) {
    let src = jarfleet_bin();
    let id = jarfleet_host::build::build_id(&src).expect("the binary has a build id");
    let raw: Vec<u8> = (0..id.len() / 2)
        .map(|i| u8::from_str_radix(&id[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    let mut bytes = std::fs::read(&src).expect("read the binary");
    let at = bytes
        .windows(raw.len())
        .position(|w| w == raw.as_slice())
        .expect("the build id is in the file");
    bytes[at] ^= 0x5a;
    let path = fleet.path("jarfleet-next");
    std::fs::write(&path, &bytes).expect("write the new build");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let new_id = jarfleet_host::build::build_id(&path).expect("an id");
    assert_ne!(new_id, id);
    (path, new_id)
}

fn exe_of(pid: u32) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

#[test]
fn an_upgrade_to_another_build_under_load_fails_no_request_and_leaves_no_old_process() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let (next, next_id) = another_build(&fleet);
    let load = FrontLoad::start(lb, 4, 2);
    load.wait_more(300);
    let old_dp = data_plane_pid(&fleet);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    let out = fleet.ok(&[
        "upgrade",
        "--binary",
        &next.display().to_string(),
        "--grace",
        "10s",
    ]);
    eprintln!("{out}");
    load.wait_more(300);
    // The old data plane finishes what it held and exits by itself.
    wait_until("the old data plane gone", Duration::from_secs(30), || {
        (!pid_alive(old_dp)).then_some(())
    });
    load.wait_more(100);
    let tally = load.finish();
    assert_none_failed("upgrade", &tally);
    let status = fleet.status();
    let d = &status["daemon"];
    assert_eq!(
        d["pid"].as_u64(),
        Some(u64::from(daemon)),
        "upgraded in place"
    );
    assert_eq!(d["build"], next_id.as_str(), "{d}");
    assert_eq!(exe_of(daemon), next);
    let new_dp = data_plane_pid(&fleet);
    assert_ne!(new_dp, old_dp);
    assert_eq!(
        exe_of(new_dp),
        next,
        "the data plane runs the new build too"
    );
    assert_eq!(d["data_plane"]["pid"].as_u64(), Some(u64::from(new_dp)));
    // The JVMs were never touched.
    assert_eq!(fleet.wait_ready("fx", 2, START).len(), 2);
}

#[test]
fn an_upgrade_to_a_binary_that_cannot_take_over_is_refused_and_changes_nothing() {
    let (fleet, lb) = fleet_behind_lb(1, None, "round-robin");
    let dp = data_plane_pid(&fleet);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    let build = fleet.status()["daemon"]["build"].clone();
    let other_protocol = fleet.path("speaks-another-protocol");
    std::fs::write(
        &other_protocol,
        "#!/bin/sh\necho '{\"version\":\"9.0.0\",\"build\":\"ff\",\"protocol\":1,\"data_plane_protocol\":999}'\n",
    )
    .expect("write");
    let not_jarfleet = fleet.path("not-jarfleet");
    std::fs::write(&not_jarfleet, "#!/bin/sh\necho hello\n").expect("write");
    for f in [&other_protocol, &not_jarfleet] {
        std::fs::set_permissions(f, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
    }
    // Says the right things, but its data plane does not start.
    let broken = fleet.path("broken-data-plane");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\nif [ \"$1\" = version ]; then exec {} \"$@\"; fi\nexit 1\n",
            jarfleet_bin().display()
        ),
    )
    .expect("write");
    let missing = fleet.path("no-such-binary");
    // Where another user could swap it between the check and the start.
    let open_dir = fleet.path("open-to-all");
    std::fs::create_dir(&open_dir).expect("mkdir");
    std::fs::set_permissions(
        &open_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let swappable = open_dir.join("jarfleet");
    std::fs::copy(&broken, &swappable).expect("copy");
    std::fs::set_permissions(&broken, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    for (binary, says) in [
        (&other_protocol, "data-plane protocol 999"),
        (&not_jarfleet, "is not a jarfleet binary"),
        (&missing, "no-such-binary"),
        (&broken, "did not start serving"),
        (&swappable, "another user could replace the binary"),
    ] {
        let out = fleet.run(&["upgrade", "--binary", &binary.display().to_string()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{binary:?} was taken: {stderr}");
        assert!(stderr.contains(says), "{binary:?}: {stderr}");
        if binary == &other_protocol || binary == &not_jarfleet || binary == &swappable {
            assert!(stderr.contains("nothing was changed"), "{stderr}");
        }
        if binary == &broken {
            assert!(stderr.contains("the old one serves on"), "{stderr}");
        }
        // Nothing changed: the same daemon, build and data plane, serving.
        assert_eq!(fleet.daemon_pid(), Some(daemon));
        assert_eq!(fleet.status()["daemon"]["build"], build);
        assert_eq!(data_plane_pid(&fleet), dp);
        assert_eq!(http_get(lb, "/pid").map(|(c, _)| c), Ok(200));
    }
}

#[test]
fn a_stopped_data_plane_is_replaced() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let load = FrontLoad::start(lb, 4, 2);
    load.wait_more(300);
    let dp = data_plane_pid(&fleet);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dp as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    let in_flight = load.in_flight();
    // The daemon finds it silent (it asks every second, waits 5 s) and replaces it.
    wait_until("a new data plane", Duration::from_secs(20), || {
        let path = fleet.dirs().data_plane().join("pid");
        let pid: u32 = std::fs::read_to_string(path).ok()?.trim().parse().ok()?;
        (pid != dp && pid_alive(pid)).then_some(())
    });
    wait_until("the stopped one killed", Duration::from_secs(10), || {
        (!pid_alive(dp)).then_some(())
    });
    load.wait_more(300);
    let tally = load.finish();
    eprintln!(
        "data plane SIGSTOP: {} answered, {} failed ({} refused), {in_flight} in flight at the stop",
        tally.ok, tally.failed, tally.refused
    );
    assert_eq!(tally.refused, 0, "{:?}", tally.errors);
    assert!(tally.failed <= in_flight, "{:?}", tally.errors);
    let replaced = fleet
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "lb.replaced")
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect::<Vec<_>>();
    assert!(
        replaced.iter().any(|m| m.contains("did not answer")),
        "{replaced:?}"
    );
}

#[test]
fn with_no_daemon_an_instance_that_dies_is_ejected_and_no_request_fails() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let victim = fleet.instances("fx")[0]["pid"]
        .as_u64()
        .expect("an instance's pid") as u32;
    let load = FrontLoad::start(lb, 4, 2);
    load.wait_more(300);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon gone", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    load.wait_more(200);
    // No daemon to see it or start another: the data plane alone takes it out of rotation.
    // Only requests inside the JVM when it died may fail (a POST there cannot be sent again);
    // every one after is served by the other instance.
    kill9(victim);
    let in_flight = load.in_flight();
    load.wait_more(200);
    let failed_at_the_kill = load.failed();
    load.wait_more(1000);
    let tally = load.finish();
    eprintln!(
        "an instance killed while no daemon runs: {} answered, {} failed at the kill ({in_flight} in flight), {} after",
        tally.ok,
        failed_at_the_kill,
        tally.failed - failed_at_the_kill
    );
    assert!(failed_at_the_kill <= in_flight, "{:?}", tally.errors);
    assert_eq!(
        tally.failed, failed_at_the_kill,
        "failed after the kill: {:?}",
        tally.errors
    );
    assert_eq!(tally.refused, 0);
}
