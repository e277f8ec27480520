//! The TCP API against hostile clients (`[daemon] http_header_timeout`, `http_idle_timeout`,
//! `http_max_connections`, `http_hosts`): slow request heads are closed at their deadline,
//! idle kept-alive connections after the idle timeout while streams go on, the connection cap
//! closes waiting connections first and never shuts the operator out, and reads without the
//! token answer only the daemon's own host names. Real daemon, raw sockets: these clients
//! misbehave on purpose, which no HTTP library does.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::remote_api::{agent, api_spec, call, new_token, test_pki};

/// The start of a request head that never ends (a slowloris client).
const SLOW_HEAD: &[u8] = b"GET /v1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

/// A fleet of one fixture app with the TCP API on a port of its own, and its token.
struct ApiFleet {
    fleet: Fleet,
    port: u16,
    token: String,
}

fn api_fleet(daemon: &str) -> ApiFleet {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let port = free_ports(1).0;
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        port,
        &format!(
            "token_file = {:?}\n{daemon}",
            token_file.display().to_string()
        ),
    ));
    fleet.up();
    fleet.wait_ready("fx", 1, Duration::from_secs(60));
    ApiFleet { fleet, port, token }
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("connecting to the TCP API on {port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s
}

/// A GET with the protocol header; `host: None` sends no `Host` (HTTP/1.0).
fn get(path: &str, host: Option<&str>, token: Option<&str>, close: bool) -> String {
    let mut head = match host {
        Some(h) => format!("GET {path} HTTP/1.1\r\nHost: {h}\r\n"),
        None => format!("GET {path} HTTP/1.0\r\n"),
    };
    head.push_str(&format!(
        "x-jarfleet-protocol: {}\r\n",
        jarfleet_api::PROTOCOL
    ));
    if let Some(t) = token {
        head.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    head
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: String,
}

/// Reads one response framed by `Content-Length` (what the API's JSON answers carry).
fn read_answer(s: &mut TcpStream) -> Result<Answer, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed before a whole head: {buf:?}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the answer: {e}")),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .ok_or_else(|| format!("no content-length in {head:?}"))?;
    while buf.len() < head_end + length {
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed before the whole body".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("reading the body: {e}")),
        }
    }
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned(),
    })
}

/// One request on a new connection.
fn ask(port: u16, path: &str, host: Option<&str>, token: Option<&str>) -> Answer {
    let mut s = connect(port);
    s.write_all(get(path, host, token, true).as_bytes())
        .expect("sending the request");
    read_answer(&mut s).unwrap_or_else(|e| panic!("GET {path} (Host {host:?}): {e}"))
}

/// Whether the server has closed `s` (end of stream or reset), without consuming anything
/// (for sockets no other thread reads: it switches `s` to non-blocking for a moment).
fn closed(s: &TcpStream) -> bool {
    s.set_nonblocking(true).expect("nonblocking");
    let mut byte = [0u8; 1];
    let gone = match s.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) if e.kind() == ErrorKind::WouldBlock => false,
        Err(_) => true,
    };
    s.set_nonblocking(false).expect("blocking");
    gone
}

/// A connection that sent a request head and was answered, and stays open (keep-alive).
fn kept_alive(port: u16, token: &str) -> TcpStream {
    let mut s = connect(port);
    s.write_all(get("/v1/version", Some("127.0.0.1"), Some(token), false).as_bytes())
        .expect("sending the request");
    let a = read_answer(&mut s).expect("the answer on a kept-alive connection");
    assert_eq!(a.status, 200, "{}", a.body);
    s
}

/// A stream (`path` answered for as long as the client stays) read line by line by a thread:
/// each line with when it came.
fn stream_lines(
    port: u16,
    path: &str,
    token: Option<&str>,
) -> (TcpStream, Receiver<(Instant, String)>) {
    let mut s = connect(port);
    s.write_all(get(path, Some("127.0.0.1"), token, false).as_bytes())
        .expect("sending the request");
    let mut reader = BufReader::new(s.try_clone().expect("clone"));
    let mut status_line = String::new();
    reader
        .read_line(&mut status_line)
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert!(
        status_line.starts_with("HTTP/1.1 200"),
        "GET {path}: {status_line:?}"
    );
    s.set_read_timeout(None).expect("no read timeout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                return;
            }
        }
    });
    (s, rx)
}

/// Whether the stream read into `rx` has ended (the server closed it). Its socket must not be
/// given to [`closed`], which would make the reading thread's socket non-blocking.
fn ended(rx: &Receiver<(Instant, String)>) -> bool {
    loop {
        match rx.try_recv() {
            Ok(_) => {}
            Err(std::sync::mpsc::TryRecvError::Empty) => return false,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => return true,
        }
    }
}

/// Waits (at most `timeout`) for a line that came after `after` and that `pred` accepts;
/// returns when it came.
fn next_line(
    rx: &Receiver<(Instant, String)>,
    after: Instant,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&str) -> bool,
) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, line)) if at > after && pred(&line) => return at,
            Ok(_) => {}
            Err(_) => panic!("timed out after {timeout:?} waiting for {what}"),
        }
    }
}

fn events_of(fleet: &Fleet, kind: &str) -> Vec<Value> {
    fleet
        .events()
        .into_iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[test]
fn slow_request_heads_are_closed_at_the_header_deadline_while_the_token_holder_is_served() {
    let f = api_fleet("http_header_timeout = \"2s\"\nhttp_idle_timeout = \"30s\"");
    let header_timeout = Duration::from_secs(2);

    // 60 clients that send the start of a head and then one more byte every 200 ms, forever.
    let mut slow: Vec<(TcpStream, Instant, Option<Duration>)> = (0..60)
        .map(|_| {
            let started = Instant::now();
            let mut s = connect(f.port);
            s.write_all(SLOW_HEAD).expect("the start of a head");
            (s, started, None)
        })
        .collect();
    // Meanwhile the operator is served at once.
    let a = ask(f.port, "/v1/status", Some("127.0.0.1"), Some(&f.token));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        slow.iter().any(|(s, _, _)| !closed(s)),
        "the slow clients must still be trickling while the operator is served"
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    while slow.iter().any(|(_, _, gone)| gone.is_none()) && Instant::now() < deadline {
        for (s, started, gone) in slow.iter_mut().filter(|(_, _, g)| g.is_none()) {
            if s.write_all(b"a").is_err() || closed(s) {
                *gone = Some(started.elapsed());
            }
        }
        // The slow clients' pace (not a wait for the daemon: the loop above observes it).
        std::thread::sleep(Duration::from_millis(200));
    }
    let open = slow.iter().filter(|(_, _, g)| g.is_none()).count();
    assert_eq!(
        open, 0,
        "{open} of 60 connections trickling a request head were still open after 15 s (header timeout {header_timeout:?})"
    );
    for (_, _, gone) in &slow {
        let after = gone.unwrap_or_default();
        assert!(
            after >= header_timeout,
            "a slow head was closed after {after:?}, before its deadline ({header_timeout:?} from the accept)"
        );
        assert!(
            after < header_timeout + Duration::from_secs(6),
            "a slow head was closed only after {after:?} (header timeout {header_timeout:?})"
        );
    }

    // Reported, and not once per connection.
    let reported = events_of(&f.fleet, "security.slow-request");
    assert!(
        (1..=3).contains(&reported.len()),
        "want 1 to 3 security.slow-request events for 60 slow heads within seconds: {reported:?}"
    );
    assert!(
        reported[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("http_header_timeout")),
        "{reported:?}"
    );
    // The daemon still answers over TCP.
    let a = ask(f.port, "/v1/status", Some("127.0.0.1"), Some(&f.token));
    assert_eq!(a.status, 200, "{}", a.body);
}

#[test]
fn the_header_deadline_covers_the_tls_handshake() {
    let fleet = Fleet::new(5);
    let (token_file, token) = new_token(&fleet, "api-token");
    let (ca, cert, key) = test_pki(fleet.dir.path());
    let port = free_ports(1).0;
    fleet.write_spec(&api_spec(
        &fleet,
        &AppDef::default(),
        port,
        &format!(
            "token_file = {:?}\ntls = {{ cert = {:?}, key = {:?} }}\nhttp_header_timeout = \"1s\"",
            token_file.display().to_string(),
            cert.display().to_string(),
            key.display().to_string()
        ),
    ));
    fleet.up();
    fleet.wait_ready("fx", 1, Duration::from_secs(60));

    // Half say nothing; half start a TLS record (a ClientHello of 512 bytes) and send one byte
    // of it every 200 ms. The handshake alone may take 10 s; the header deadline (1 s from
    // the accept) comes first.
    let mut slow: Vec<(TcpStream, Instant, bool, Option<Duration>)> = (0..20)
        .map(|i| {
            let started = Instant::now();
            let mut s = connect(port);
            let trickles = i % 2 == 1;
            if trickles {
                s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                    .expect("a TLS record header");
            }
            (s, started, trickles, None)
        })
        .collect();
    let trusting = agent(Some(&ca));
    let url = format!("https://127.0.0.1:{port}/v1/status");
    let r = call(&trusting, "GET", &url, Some(&token), None).expect("GET over TLS");
    assert_eq!(r.status, 200, "{}", r.body);

    let deadline = Instant::now() + Duration::from_secs(15);
    while slow.iter().any(|c| c.3.is_none()) && Instant::now() < deadline {
        for (s, started, trickles, gone) in slow.iter_mut().filter(|c| c.3.is_none()) {
            if (*trickles && s.write_all(&[0x01]).is_err()) || closed(s) {
                *gone = Some(started.elapsed());
            }
        }
        // The slow clients' pace; the loop above observes the daemon.
        std::thread::sleep(Duration::from_millis(200));
    }
    for (_, _, trickles, gone) in &slow {
        let what = if *trickles { "trickling" } else { "silent" };
        let after = gone.unwrap_or_else(|| panic!("a {what} TLS client was still open after 15 s"));
        assert!(
            after >= Duration::from_secs(1) && after < Duration::from_secs(8),
            "a {what} TLS client was closed after {after:?}: want the 1 s header deadline, not the 10 s handshake timeout"
        );
    }
    let r = call(&trusting, "GET", &url, Some(&token), None).expect("GET over TLS");
    assert_eq!(r.status, 200, "{}", r.body);
}

#[test]
fn at_the_connection_cap_waiting_connections_make_room_and_the_unix_socket_always_answers() {
    let f = api_fleet(
        "http_max_connections = 6\nhttp_header_timeout = \"30s\"\nhttp_idle_timeout = \"60s\"",
    );
    let cap = 6;
    let status_over_unix_socket = || {
        let out = f.fleet.ok(&["status", "-o", "json"]);
        assert!(out.contains("\"fx\""), "{out}");
    };

    // The cap filled with idle kept-alive connections, oldest first.
    let idle: Vec<TcpStream> = (0..cap).map(|_| kept_alive(f.port, &f.token)).collect();
    status_over_unix_socket();
    // A new client is served, and the connection idle the longest made room for it.
    let a = ask(f.port, "/v1/status", Some("127.0.0.1"), Some(&f.token));
    assert_eq!(a.status, 200, "{}", a.body);
    wait_until(
        "the oldest idle connection to be closed to make room",
        Duration::from_secs(10),
        || closed(&idle[0]).then_some(()),
    );
    let still_open: Vec<usize> = (1..cap).filter(|i| !closed(&idle[*i])).collect();
    assert_eq!(
        still_open,
        (1..cap).collect::<Vec<_>>(),
        "only the oldest idle connection was to be closed"
    );

    // An attacker fills the cap with heads that never end (30 s header timeout): they push
    // the idle connections out, then each other, and the operator still gets in at once.
    let slow: Vec<TcpStream> = (0..cap)
        .map(|_| {
            let mut s = connect(f.port);
            s.write_all(SLOW_HEAD).expect("the start of a head");
            s
        })
        .collect();
    wait_until(
        "the slow heads to push out the idle connections",
        Duration::from_secs(10),
        || idle.iter().all(closed).then_some(()),
    );
    status_over_unix_socket();
    let asked = Instant::now();
    let a = ask(f.port, "/v1/status", Some("127.0.0.1"), Some(&f.token));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the operator waited {:?} behind slow heads (header timeout 30 s)",
        asked.elapsed()
    );
    wait_until(
        "the oldest slow head to be closed to make room",
        Duration::from_secs(10),
        || closed(&slow[0]).then_some(()),
    );
    drop(slow);

    // Every slot answering a stream for a token holder: nothing may be closed, so the next
    // connection waits in the backlog until a stream ends; the unix socket answers meanwhile.
    let mut streams: Vec<(TcpStream, Receiver<(Instant, String)>)> = (0..cap)
        .map(|_| stream_lines(f.port, "/v1/stream?events=0", Some(&f.token)))
        .collect();
    let mut waiting = connect(f.port);
    waiting
        .write_all(get("/v1/version", Some("127.0.0.1"), Some(&f.token), true).as_bytes())
        .expect("sending the request");
    waiting
        .set_read_timeout(Some(Duration::from_millis(1500)))
        .expect("read timeout");
    let mut byte = [0u8; 1];
    match waiting.peek(&mut byte) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!(
            "a connection beyond the cap was answered while every slot streamed to a token holder: {other:?}"
        ),
    }
    status_over_unix_socket();
    let full = Instant::now();
    for (_, rx) in &streams {
        next_line(
            rx,
            full,
            "a status event on every stream",
            Duration::from_secs(10),
            |l| l == "event: status",
        );
    }
    let (first, _) = streams.remove(0);
    first
        .shutdown(std::net::Shutdown::Both)
        .expect("closing a stream");
    drop(first);
    waiting
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("read timeout");
    let a = read_answer(&mut waiting).expect("the waiting connection's answer once a stream ended");
    assert_eq!(a.status, 200, "{}", a.body);
    let answered = Instant::now();
    for (_, rx) in &streams {
        next_line(
            rx,
            answered,
            "the other streams to go on",
            Duration::from_secs(10),
            |l| l == "event: status",
        );
    }

    let at_limit = events_of(&f.fleet, "security.connection-limit");
    assert!(!at_limit.is_empty(), "no security.connection-limit event");
    assert!(
        at_limit.iter().all(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit of 6 connections ([daemon] http_max_connections)"))),
        "{at_limit:?}"
    );
    assert!(
        at_limit.len() <= 4,
        "security.connection-limit is reported at most once per 10 s: {at_limit:?}"
    );
}

#[test]
fn idle_kept_alive_connections_close_after_the_idle_timeout_but_streams_stay_open() {
    let f = api_fleet("http_header_timeout = \"1s\"\nhttp_idle_timeout = \"5s\"");
    let idle_timeout = Duration::from_secs(5);
    let instance_port = f.fleet.instances("fx")[0]["port"]
        .as_u64()
        .expect("instance port") as u16;

    // Two streams opened first: server-sent events (a status every second), and a log follow
    // that stays silent until the app logs.
    let (_sse, sse) = stream_lines(f.port, "/v1/stream?events=0", Some(&f.token));
    let (_follow, follow) = stream_lines(
        f.port,
        "/v1/logs?app=fx&slot=0&lines=0&follow=true",
        Some(&f.token),
    );

    // A kept-alive connection that asks nothing more is closed after the idle timeout, not
    // the (shorter) header timeout.
    let quiet = kept_alive(f.port, &f.token);
    let answered = Instant::now();
    // One that starts its next request after a pause: from its first byte, the head has the
    // header timeout, not what is left of the idle timeout.
    let mut slow_next = kept_alive(f.port, &f.token);
    let slow_answered = Instant::now();
    // The client's pause between two requests (longer than the header timeout).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !closed(&slow_next),
        "a kept-alive connection was closed after {:?} of idleness (idle timeout {idle_timeout:?})",
        slow_answered.elapsed()
    );
    let first_byte = Instant::now();
    slow_next
        .write_all(b"GET /v1/version HTTP/1.1\r\n")
        .expect("the start of the next head");
    let mut slow_closed = None;
    let mut quiet_closed = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while (slow_closed.is_none() || quiet_closed.is_none()) && Instant::now() < deadline {
        if slow_closed.is_none() && (slow_next.write_all(b"X").is_err() || closed(&slow_next)) {
            slow_closed = Some(Instant::now());
        }
        if quiet_closed.is_none() && closed(&quiet) {
            quiet_closed = Some(Instant::now());
        }
        // The trickling client's pace; the loop observes the daemon.
        std::thread::sleep(Duration::from_millis(100));
    }
    let quiet_closed = quiet_closed.expect("the idle kept-alive connection was never closed");
    let idle_for = quiet_closed - answered;
    assert!(
        idle_for >= idle_timeout - Duration::from_millis(300) && idle_for < idle_timeout * 3,
        "an idle connection was closed after {idle_for:?} (idle timeout {idle_timeout:?}, header timeout 1 s)"
    );
    let slow_closed = slow_closed.expect("the trickled second request was never closed");
    assert!(
        slow_closed - first_byte >= Duration::from_secs(1),
        "a head was closed {:?} after its first byte, before the header timeout (1 s)",
        slow_closed - first_byte
    );
    assert!(
        slow_closed - slow_answered < idle_timeout - Duration::from_millis(500),
        "the trickled head was closed {:?} after the previous answer: by the idle timeout ({idle_timeout:?}), not 1 s after its first byte",
        slow_closed - slow_answered
    );

    // The streams outlived the idle timeout: the events stream still delivers, and the log
    // follow, silent all along, still passes a new line on.
    next_line(
        &sse,
        quiet_closed,
        "a status event after the idle connection closed",
        Duration::from_secs(10),
        |l| l == "event: status",
    );
    let early: Vec<String> = follow
        .try_iter()
        .map(|(_, l)| l)
        .filter(|l| l.contains("\"line\""))
        .collect();
    assert!(early.is_empty(), "the follow was to be silent: {early:?}");
    let logged = Instant::now();
    let (code, _) = http_get(instance_port, "/log?lines=1").expect("GET /log on the instance");
    assert_eq!(code, 200);
    next_line(
        &follow,
        logged,
        "the new log line on a follow silent for longer than the idle timeout",
        Duration::from_secs(10),
        |l| l.contains("\"line\":\"line "),
    );
}

#[test]
fn reads_without_the_token_answer_only_the_daemons_own_host_names() {
    let f = api_fleet("open_reads = true\nhttp_hosts = [\"dash.example.com\"]");
    let port = f.port;

    // A DNS-rebinding page: its own name, resolved to 127.0.0.1.
    let evil = format!("evil.example:{port}");
    for path in [
        "/v1/status",
        "/v1/events?lines=5",
        "/v1/logs?app=fx&lines=5",
        "/v1/history?app=fx",
        "/metrics",
    ] {
        let a = ask(port, path, Some(&evil), None);
        assert_eq!(a.status, 403, "GET {path} with Host {evil}: {}", a.body);
        let body: Value =
            serde_json::from_str(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.body));
        assert_eq!(body["kind"], "usage", "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains(&evil) && m.contains("DNS rebinding")),
            "{body}"
        );
        assert!(
            body["hint"]
                .as_str()
                .is_some_and(|h| h.contains("http_hosts = [\"evil.example\"]")),
            "{body}"
        );
    }
    // No Host at all is no name of the daemon's either.
    let a = ask(port, "/v1/status", None, None);
    assert_eq!(a.status, 403, "{}", a.body);

    // The daemon's own names, with or without the port, and the configured one.
    for host in [
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "dash.example.com".to_string(),
        "DASH.example.com:443".to_string(),
    ] {
        let a = ask(port, "/v1/status", Some(&host), None);
        assert_eq!(a.status, 200, "GET /v1/status with Host {host}: {}", a.body);
    }
    // The token is accepted whatever the host.
    let a = ask(port, "/v1/status", Some(&evil), Some(&f.token));
    assert_eq!(a.status, 200, "{}", a.body);
    // The dashboard's files hold no data: served to any host.
    let mut s = connect(port);
    s.write_all(get("/", Some(&evil), None, true).as_bytes())
        .expect("GET /");
    let a = read_answer(&mut s).expect("GET /");
    assert_eq!(a.status, 200);

    let refused = events_of(&f.fleet, "security.foreign-host");
    assert_eq!(
        refused.len(),
        1,
        "one event for the refusals of the last 10 s: {refused:?}"
    );
    assert!(
        refused[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("(403)") && m.contains(&evil)),
        "{refused:?}"
    );
}

#[test]
fn streams_read_without_the_token_cannot_hold_every_connection() {
    let f = api_fleet("open_reads = true\nhttp_max_connections = 4");
    // Every slot streams events to a reader without the token.
    let streams: Vec<(TcpStream, Receiver<(Instant, String)>)> = (0..4)
        .map(|_| stream_lines(f.port, "/v1/stream?events=0", None))
        .collect();
    let full = Instant::now();
    for (_, rx) in &streams {
        next_line(rx, full, "a status event", Duration::from_secs(10), |l| {
            l == "event: status"
        });
    }
    // The operator gets in: the oldest of those streams makes room.
    let asked = Instant::now();
    let a = ask(f.port, "/v1/status", Some("127.0.0.1"), Some(&f.token));
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the operator waited {:?} behind streams read without the token",
        asked.elapsed()
    );
    wait_until(
        "the oldest stream read without the token to end",
        Duration::from_secs(10),
        || ended(&streams[0].1).then_some(()),
    );
    let answered = Instant::now();
    for (_, rx) in &streams[1..] {
        next_line(
            rx,
            answered,
            "the other streams to go on",
            Duration::from_secs(10),
            |l| l == "event: status",
        );
    }
}
