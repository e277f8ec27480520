//! The proxy over real sockets on 127.0.0.1, with backends written here.

mod helper;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use helper::*;
use jarfleet_proxy::{Backend, BackendId, Balance, Listener, ListenerConfig, Mode, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test]
async fn round_robin_follows_weights_exactly() {
    let (a, b, c) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    );
    let l = listener(Mode::Http, |_| {}).await;
    let mut snap = snapshot(&[&a, &b, &c]);
    snap.backends[0].weight = 500;
    l.update(snap);
    let mut client = Client::connect(l.local_addr()).await.expect("connect");
    let mut seq = String::new();
    for _ in 0..14 {
        seq.push_str(&client.get("/").await.expect("get").backend());
    }
    assert_eq!(seq, "aabacaaaabacaa");
}

#[tokio::test]
async fn only_snapshot_backends_get_traffic_and_update_applies_to_new_requests() {
    let (a, b, c) = (
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    );
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a, &b]));
    let mut client = Client::connect(l.local_addr()).await.expect("connect");
    for _ in 0..20 {
        assert_eq!(client.get("/").await.expect("get").status, 200);
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 0));
    l.update(snapshot(&[&c]));
    for _ in 0..10 {
        assert_eq!(client.get("/").await.expect("get").backend(), "c");
    }
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));
    let stats = l.stats();
    let ids: Vec<(&str, bool)> = stats
        .backends
        .iter()
        .map(|s| (s.id.as_str(), s.in_snapshot))
        .collect();
    assert_eq!(
        ids,
        vec![("c", true)],
        "drained removed backends are forgotten"
    );
    assert_eq!(
        stats.totals.requests,
        [0, 30, 0, 0, 0],
        "totals never go down: forgotten backends still count"
    );
}

#[tokio::test]
async fn no_backend_is_503_naming_the_app() {
    let l = listener(Mode::Http, |_| {}).await;
    let r = get(l.local_addr(), "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "no ready backend for app shop\n");
    assert_eq!(l.stats().no_backend, 1);
}

#[tokio::test]
async fn headers_are_forwarded() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    let r = c.get("/headers").await.expect("get");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        "host: shop.test\nx-forwarded-for: 127.0.0.1\nx-forwarded-host: shop.test\nx-forwarded-proto: http"
    );
    // A forwarded-for chain is appended to, hop-by-hop headers go.
    let s = TcpStream::connect(l.local_addr()).await.expect("connect");
    let mut s = s;
    s.write_all(b"GET /headers HTTP/1.1\r\nhost: h\r\nx-forwarded-for: 10.1.1.1\r\nconnection: x-secret\r\nx-secret: 1\r\nte: trailers\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("x-forwarded-proto: http") {
        let n = s.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    assert_eq!(
        body,
        "host: h\nx-forwarded-for: 10.1.1.1, 127.0.0.1\nx-forwarded-host: h\nx-forwarded-proto: http"
    );
}

#[tokio::test]
async fn least_request_prefers_the_less_loaded() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let l = Arc::new(listener(Mode::Http, |c| c.balance = Balance::LeastRequest).await);
    l.update(snapshot(&[&a]));
    let addr = l.local_addr();
    let held: Vec<_> = (0..3)
        .map(|_| tokio::spawn(async move { get(addr, "/hold").await }))
        .collect();
    wait_until("3 requests in flight on a", || l.in_flight(&a.id()) == 3).await;
    l.update(snapshot(&[&a, &b]));
    let mut c = Client::connect(addr).await.expect("connect");
    for _ in 0..20 {
        assert_eq!(c.get("/").await.expect("get").backend(), "b");
    }
    a.open_gate();
    for h in held {
        assert_eq!(h.await.expect("join").body, "a");
    }
    // Both idle now: P2C spreads again.
    for _ in 0..40 {
        c.get("/").await.expect("get");
    }
    assert!(a.hits() > 3 + 5, "a got {} of 40 when idle", a.hits() - 3);
}

#[tokio::test]
async fn removed_backend_finishes_in_flight_and_drains() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let l = Arc::new(listener(Mode::Http, |_| {}).await);
    l.update(snapshot(&[&a]));
    let addr = l.local_addr();
    let held = tokio::spawn(async move { get(addr, "/hold").await });
    wait_until("a request in flight on a", || l.in_flight(&a.id()) == 1).await;
    l.update(snapshot(&[&b]));
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.backend(), "b");
    }
    assert!(
        !l.drained(&a.id(), Duration::from_millis(50)).await,
        "a still has a request"
    );
    let st = l.stats();
    let ra = st
        .backends
        .iter()
        .find(|s| s.id == "a")
        .expect("a still in stats");
    assert_eq!((ra.in_snapshot, ra.in_flight), (false, 1));
    let l2 = l.clone();
    let id = a.id();
    let waiter = tokio::spawn(async move {
        let t = Instant::now();
        (l2.drained(&id, Duration::from_secs(10)).await, t.elapsed())
    });
    a.open_gate();
    let r = held.await.expect("join");
    assert_eq!((r.status, r.body.as_str()), (200, "a"));
    let (drained, took) = waiter.await.expect("join");
    assert!(
        drained && took < Duration::from_secs(5),
        "drained {drained} after {took:?}"
    );
    assert_eq!(l.in_flight(&a.id()), 0);
    assert!(
        l.drained(&BackendId("never-seen".into()), Duration::ZERO)
            .await
    );
}

#[tokio::test]
async fn killed_backend_under_get_load_loses_nothing() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a, &b]));
    let addr = l.local_addr();
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..8 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await.expect("connect");
            let deadline = Instant::now() + DEADLINE;
            while !stop.load(SeqCst) && Instant::now() < deadline {
                match c.get("/").await {
                    Ok(r) if r.status == 200 => ok.fetch_add(1, SeqCst),
                    Ok(r) => {
                        eprintln!("status {} {}", r.status, r.body);
                        failed.fetch_add(1, SeqCst)
                    }
                    Err(e) => {
                        eprintln!("client error {e}");
                        failed.fetch_add(1, SeqCst);
                        c = Client::connect(addr).await.expect("reconnect");
                        0
                    }
                };
            }
        }));
    }
    wait_until("load on both backends", || a.hits() > 200 && b.hits() > 200).await;
    // Requests that are inside `a` when it dies (b answers /hold at once, a never does).
    b.open_gate();
    // The balancer decides where each one goes, so send them one at a time until two are held
    // inside `a`; those that land on `b` come back at once.
    let mut held = Vec::new();
    while a.holding.load(SeqCst) < 2 {
        assert!(held.len() < 64, "no /hold request reached a in 64 tries");
        let before = a.holding.load(SeqCst);
        let h = tokio::spawn(async move { get(addr, "/hold").await });
        wait_until("a /hold request to be held in a or answered by b", || {
            h.is_finished() || a.holding.load(SeqCst) > before
        })
        .await;
        held.push(h);
    }
    let sent_hold = held.len() as u64;
    a.kill();
    let at_kill = ok.load(SeqCst);
    wait_until("load after the kill", || ok.load(SeqCst) > at_kill + 1000).await;
    stop.store(true, SeqCst);
    for h in held {
        let r = h.await.expect("join");
        assert_eq!(
            (r.status, r.body.as_str()),
            (200, "b"),
            "held GET retried on b"
        );
    }
    for w in workers {
        w.await.expect("join");
    }
    assert_eq!(failed.load(SeqCst), 0, "failed requests");
    let st = l.stats();
    let sa = st.backends.iter().find(|s| s.id == "a").expect("a");
    assert_eq!(sa.counters.ejections, 1, "a ejected once: {sa:?}");
    assert!(sa.ejected);
    assert_eq!(st.totals.requests[4], 0);
    assert_eq!(st.totals.total_requests(), ok.load(SeqCst) + sent_hold);
}

#[tokio::test]
async fn post_lost_after_sending_is_502_not_retried_but_get_is_retried() {
    let raw = RawBackend::start(1).await; // reads each request, closes without answering
    let b = TestBackend::start("b").await;
    let l = listener(Mode::Http, |_| {}).await;
    let snap = Snapshot {
        backends: vec![Backend::new("raw", raw.addr), b.backend()],
    };
    l.update(snap.clone());
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    // SWRR with equal weights starts at the first backend.
    let r = c.get("/").await.expect("get");
    assert_eq!(
        (r.status, r.backend().as_str()),
        (200, "b"),
        "GET retried on b"
    );
    assert_eq!((raw.requests.load(SeqCst), b.hits()), (1, 1));
    l.update(snap);
    let r = c.request("POST", "/", "order=1").await.expect("post");
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(
        (raw.requests.load(SeqCst), b.hits()),
        (2, 1),
        "POST not retried"
    );
    let st = l.stats();
    let sr = st.backends.iter().find(|s| s.id == "raw").expect("raw");
    assert_eq!(
        (
            sr.counters.errors,
            sr.counters.retries,
            sr.counters.ejections,
            sr.counters.requests[4]
        ),
        (2, 1, 0, 1),
        "{sr:?}"
    );
}

#[tokio::test]
async fn connect_error_ejects_and_even_a_post_moves_on_since_nothing_was_sent() {
    let dead = dead_addr().await;
    let b = TestBackend::start("b").await;
    let l = listener(Mode::Http, |c| {
        c.outlier.eject_for = Duration::from_millis(300)
    })
    .await;
    l.update(Snapshot {
        backends: vec![Backend::new("dead", dead), b.backend()],
    });
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    let r = c.request("POST", "/", "x").await.expect("post");
    assert_eq!((r.status, r.backend().as_str()), (200, "b"));
    for _ in 0..10 {
        assert_eq!(c.get("/").await.expect("get").backend(), "b");
    }
    let dead_stats = |l: &Listener| {
        l.stats()
            .backends
            .into_iter()
            .find(|s| s.id == "dead")
            .expect("dead")
    };
    let d = dead_stats(&l);
    assert_eq!(
        (
            d.counters.errors,
            d.counters.ejections,
            d.ejected,
            d.counters.retries
        ),
        (1, 1, true, 1),
        "skipped while ejected"
    );
    wait_until("ejection to end", || !dead_stats(&l).ejected).await;
    for _ in 0..2 {
        assert_eq!(c.get("/").await.expect("get").backend(), "b");
    }
    let d = dead_stats(&l);
    assert_eq!(
        (d.counters.errors, d.counters.ejections),
        (2, 2),
        "tried again after the ejection"
    );
    // Only dead backends: 502 (each tried once).
    l.update(Snapshot {
        backends: vec![Backend::new("dead2", dead_addr().await)],
    });
    assert_eq!(c.get("/").await.expect("get").status, 502);
}

#[tokio::test]
async fn stale_pooled_connection_is_retried_fresh_on_the_same_backend() {
    let raw = RawBackend::start(2).await; // answers once per connection, then closes on the 2nd
    let l = listener(Mode::Http, |_| {}).await;
    l.update(Snapshot {
        backends: vec![Backend::new("raw", raw.addr)],
    });
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    for _ in 0..3 {
        assert_eq!(c.get("/").await.expect("get").body, "raw");
    }
    let s = &l.stats().backends[0];
    assert_eq!(
        (
            s.counters.stale_retries,
            s.counters.errors,
            s.counters.ejections
        ),
        (2, 0, 0),
        "{s:?}"
    );
    assert_eq!(raw.connections.load(SeqCst), 3);
}

#[tokio::test]
async fn slow_start_ramps_weight() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let l = listener(Mode::Http, |c| c.slow_start = Duration::from_secs(3600)).await;
    let now = Instant::now();
    let mut snap = snapshot(&[&a, &b]);
    snap.backends[0].ready_at = now - Duration::from_secs(7200);
    snap.backends[1].ready_at = now;
    l.update(snap.clone());
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    for _ in 0..110 {
        c.get("/").await.expect("get");
    }
    assert_eq!((a.hits(), b.hits()), (100, 10), "fresh backend at 10%");
    snap.backends[1].ready_at = now - Duration::from_secs(1800);
    l.update(snap);
    for _ in 0..155 {
        c.get("/").await.expect("get");
    }
    assert_eq!((a.hits(), b.hits()), (200, 65), "half-way backend at 55%");
    let st = l.stats();
    assert_eq!(
        (st.backends[1].weight, st.backends[1].effective_weight),
        (100, 55)
    );
}

#[tokio::test]
async fn stats_count_by_class_and_latency() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    let mut snap = snapshot(&[&a]);
    snap.backends[0].labels = labels();
    l.update(snap);
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    for _ in 0..7 {
        c.get("/").await.expect("get");
    }
    // The connection goes back to the pool just after the client has its response.
    wait_until("the backend connection is pooled", || {
        l.stats().backends[0].idle_connections == 1
    })
    .await;
    let st = l.stats();
    let s = &st.backends[0];
    assert_eq!(s.counters.requests, [0, 7, 0, 0, 0]);
    assert_eq!(s.counters.latency_buckets.iter().sum::<u64>(), 7);
    assert!(s.counters.p50_us.is_some() && s.counters.p99_us >= s.counters.p50_us);
    assert_eq!(
        (s.in_flight, s.idle_connections),
        (0, 1),
        "one pooled connection reused"
    );
    assert_eq!(s.labels.get("release").map(String::as_str), Some("r1"));
    let json = serde_json::to_value(&st).expect("json");
    assert_eq!(json["backends"][0]["requests"][1], 7);
}

const BIG: u64 = 50 * 1000 * 1000;
/// What the proxy may hold in its own memory (bytes between its socket reads and writes).
const HELD_BOUND: u64 = 4 << 20;

/// Waits until `counter` has not moved for 300 ms (the pipeline is full), bounded by DEADLINE.
async fn settle(counter: &AtomicU64) -> u64 {
    let deadline = Instant::now() + DEADLINE;
    let mut last = counter.load(SeqCst);
    let mut still_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = counter.load(SeqCst);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() > Duration::from_millis(300) {
            return now;
        }
        assert!(Instant::now() < deadline, "never settled");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_body_is_streamed_to_a_slow_reader() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(64 * 1024).expect("rcvbuf");
    let mut s = sock.connect(l.local_addr()).await.expect("connect");
    s.write_all(format!("GET /big?{BIG} HTTP/1.1\r\nhost: h\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0u8; 64 * 1024];
    let mut read = s.read(&mut buf).await.expect("read") as u64;
    let produced = settle(&a.produced).await;
    let in_kernel = kernel_queued(&[l.local_addr().port(), a.addr.port()]);
    let ahead = produced.saturating_sub(read);
    assert!(
        ahead > HELD_BOUND,
        "the test needs the pipeline to fill: only {ahead} bytes ahead"
    );
    let held = ahead.saturating_sub(in_kernel);
    assert!(
        held < HELD_BOUND,
        "{held} bytes held in user space (backend {produced} ahead of a paused client at {read}, {in_kernel} in socket buffers)"
    );
    while read < BIG {
        let n = s.read(&mut buf).await.expect("read") as u64;
        assert!(n > 0, "closed after {read}");
        read += n;
    }
    assert_eq!(a.produced.load(SeqCst), BIG);
    assert!((BIG..BIG + 1024).contains(&read), "read {read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_body_is_streamed_to_a_slow_backend() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    s.write_all(
        format!("POST /sink HTTP/1.1\r\nhost: h\r\ncontent-length: {BIG}\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let (mut rd, mut wr) = s.into_split();
    let sent = Arc::new(AtomicU64::new(0));
    let sent2 = sent.clone();
    let writer = tokio::spawn(async move {
        let chunk = vec![b'y'; 64 * 1024];
        let mut left = BIG;
        while left > 0 {
            let n = left.min(chunk.len() as u64);
            wr.write_all(&chunk[..n as usize])
                .await
                .expect("write body");
            left -= n;
            sent2.fetch_add(n, SeqCst);
        }
        wr
    });
    wait_until("the backend paused after 1 MiB", || {
        a.consumed.load(SeqCst) >= 1 << 20
    })
    .await;
    let ahead = settle(&sent).await - a.consumed.load(SeqCst);
    let in_kernel = kernel_queued(&[l.local_addr().port(), a.addr.port()]);
    let held = ahead.saturating_sub(in_kernel);
    assert!(
        ahead > HELD_BOUND,
        "the test needs the pipeline to fill: only {ahead} bytes ahead"
    );
    assert!(
        held < HELD_BOUND,
        "{held} bytes held in user space ({ahead} ahead of a paused backend, {in_kernel} in socket buffers)"
    );
    a.open_gate();
    let _wr = writer.await.expect("join");
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with(&BIG.to_string()) {
        let n = rd.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
}

/// A raw echo server for tcp mode; returns its address and its accepted-connection count.
async fn echo_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            n2.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, n)
}

#[tokio::test]
async fn tcp_mode_echo_failover_and_drain() {
    let (echo, accepted) = echo_server().await;
    let dead = dead_addr().await;
    let l = listener(Mode::Tcp, |_| {}).await;
    // No backend: the connection is closed.
    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).await.expect("read"), 0);
    l.update(Snapshot {
        backends: vec![Backend::new("dead", dead), Backend::new("echo", echo)],
    });
    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    s.write_all(b"hello").await.expect("write");
    s.read_exact(&mut buf[..5]).await.expect("echo");
    assert_eq!(&buf[..5], b"hello");
    let echo_id = BackendId("echo".into());
    assert_eq!(l.in_flight(&echo_id), 1);
    assert!(!l.drained(&echo_id, Duration::from_millis(20)).await);
    drop(s);
    assert!(l.drained(&echo_id, DEADLINE).await);
    let st = l.stats();
    let d = st.backends.iter().find(|b| b.id == "dead").expect("dead");
    assert_eq!(
        (d.counters.errors, d.counters.ejections, d.counters.retries),
        (1, 1, 1)
    );
    assert_eq!(
        st.backends
            .iter()
            .find(|b| b.id == "echo")
            .map(|b| b.counters.connections),
        Some(1)
    );
    assert_eq!(accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn bind_error_names_listener_and_address() {
    let taken = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = taken.local_addr().expect("addr");
    let err = match Listener::bind(ListenerConfig::new("orders", addr, Mode::Http)).await {
        Ok(_) => panic!("bound a taken address"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.starts_with(&format!("listener orders: cannot listen on {addr}: ")),
        "{err}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting_and_lets_in_flight_finish() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let addr = l.local_addr();
    let id = a.id();
    let held = tokio::spawn(async move { get(addr, "/hold").await });
    wait_until("held request", || l.in_flight(&id) == 1).await;
    let shut = tokio::spawn(l.shutdown(DEADLINE));
    wait_until("listener closed", || {
        std::net::TcpStream::connect(addr).is_err()
    })
    .await;
    assert!(!shut.is_finished());
    a.open_gate();
    assert_eq!(held.await.expect("join").body, "a");
    shut.await.expect("join");
}

#[tokio::test]
async fn backend_ids_are_opaque_and_new_generation_starts_clean() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    let mut be = Backend::new("orders/1#7", a.addr);
    l.update(Snapshot {
        backends: vec![be.clone()],
    });
    get(l.local_addr(), "/").await;
    be.id = BackendId("orders/1#8".into());
    l.update(Snapshot { backends: vec![be] });
    get(l.local_addr(), "/").await;
    let st = l.stats();
    let got: Vec<(String, u64)> = st
        .backends
        .iter()
        .map(|b| (b.id.clone(), b.counters.requests[1]))
        .collect();
    assert_eq!(got, vec![("orders/1#8".to_owned(), 1)]);
}

#[tokio::test]
async fn balancing_settings_change_live_without_a_rebind() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    let mut be = a.backend();
    be.ready_at = Instant::now();
    l.update(Snapshot { backends: vec![be] });
    assert_eq!(l.stats().backends[0].effective_weight, 100, "no ramp");
    let addr = l.local_addr();
    l.set_balancing(Balance::LeastRequest, Duration::from_secs(600));
    let eff = l.stats().backends[0].effective_weight;
    assert!(eff < 100, "a 10-minute ramp has just begun: {eff}");
    assert_eq!(l.local_addr(), addr);
    // Still serving, on the same listener.
    assert_eq!(get(addr, "/").await.body, "a");
}
