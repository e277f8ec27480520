//! The proxy against hostile clients and hung backends: smuggling through `Connection`,
//! slowloris, stalled uploads, backends that never answer or freeze, early answers, connection
//! caps, idle timeouts, WebSocket tunnels. Timeouts are configured short so every test runs
//! in a second or two; none asserts on elapsed time — each shows an outcome today's code could
//! not produce (a 408 while the head still trickles, a 504 instead of waiting forever, …).

mod helper;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use helper::*;
use jarfleet_proxy::{Backend, Mode, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const MS: fn(u64) -> Duration = Duration::from_millis;

async fn connect(addr: std::net::SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .expect("connect to the proxy")
}

#[tokio::test]
async fn connection_content_length_cannot_smuggle_a_second_request() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let smuggled = "POST /SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 150\r\n\r\n";
    for conn in [
        "Content-Length",
        "content-length",
        "keep-alive, Content-Length",
    ] {
        let mut s = connect(l.local_addr()).await;
        let raw = format!(
            "POST /innocent HTTP/1.1\r\nHost: shop\r\nConnection: {conn}\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        s.write_all(raw.as_bytes()).await.expect("write");
        let resp = read_until(&mut s, "\r\n\r\na").await;
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        // Other clients, on connections the pooled backend connection is shared with.
        for _ in 0..3 {
            let r = get(l.local_addr(), "/after").await;
            assert_eq!((r.status, r.body.as_str()), (200, "a"));
        }
    }
    let seen = a.seen();
    assert!(
        seen.iter()
            .all(|r| r == "POST /innocent" || r == "GET /after"),
        "the backend saw a request no client sent: {seen:?}"
    );
    assert_eq!(seen.len(), 12, "{seen:?}");
}

#[tokio::test]
async fn connection_transfer_encoding_and_host_cannot_be_stripped() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let mut s = connect(l.local_addr()).await;
    s.write_all(
        b"POST /sink HTTP/1.1\r\nHost: shop\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n\
          20\r\nGET /SMUGGLED HTTP/1.1\r\nX: y\r\n\r\n\r\n0\r\n\r\n",
    )
    .await
    .expect("write");
    let resp = read_until(&mut s, "\r\n\r\n32").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"GET /headers HTTP/1.1\r\nHost: shop\r\nConnection: Host\r\n\r\n")
        .await
        .expect("write");
    let resp = read_until(&mut s, "x-forwarded-proto").await;
    assert!(resp.contains("\nhost: shop"), "Host was stripped: {resp}");
    assert_eq!(a.seen(), ["POST /sink", "GET /headers"]);
}

#[tokio::test]
async fn slowloris_heads_are_cut_at_the_deadline_from_the_first_byte() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.timeouts.head = MS(800)).await;
    l.update(snapshot(&[&a]));
    let head = b"GET / HTTP/1.1\r\nHost: shop\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let addr = l.local_addr();
        tasks.push(tokio::spawn(async move {
            let mut s = connect(addr).await;
            // One byte every 100 ms: the whole head would take ~10 s, each byte well within
            // any per-read timeout.
            for b in head {
                if s.write_all(&[*b]).await.is_err() {
                    break;
                }
                let mut one = [0u8; 1];
                match tokio::time::timeout(MS(100), s.peek(&mut one)).await {
                    Ok(Ok(_)) => break, // the proxy answered (or closed)
                    Ok(Err(_)) => break,
                    Err(_) => {}
                }
            }
            read_to_close(&mut s).await
        }));
    }
    // Meanwhile ordinary clients are served.
    for _ in 0..5 {
        assert_eq!(get(l.local_addr(), "/").await.status, 200);
    }
    for t in tasks {
        let resp = t.await.expect("join");
        assert!(resp.starts_with("HTTP/1.1 408 "), "{resp:?}");
    }
    assert_eq!(l.stats().front.head_timeouts, 20);
    assert_eq!(a.hits(), 5, "no slow head reached the backend");
}

#[tokio::test]
async fn a_connection_that_says_nothing_is_closed_at_the_head_deadline() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.timeouts.head = MS(300)).await;
    l.update(snapshot(&[&a]));
    let mut s = connect(l.local_addr()).await;
    assert_eq!(read_to_close(&mut s).await, "", "closed without a word");
    wait_until("the silent connection counted", || {
        l.stats().front.head_timeouts == 1
    })
    .await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.timeouts.keep_alive = MS(300)).await;
    l.update(snapshot(&[&a]));
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .expect("write");
    let first = read_until(&mut s, "\r\n\r\na").await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert_eq!(read_to_close(&mut s).await, "");
}

#[tokio::test]
async fn a_stalled_small_upload_gets_408_and_never_reaches_an_instance() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.timeouts.body = MS(300)).await;
    l.update(snapshot(&[&a]));
    let mut stalled = Vec::new();
    for _ in 0..12 {
        let mut s = connect(l.local_addr()).await;
        s.write_all(b"POST /sink HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\n0123456789")
            .await
            .expect("write");
        stalled.push(s);
    }
    // The instance is free for everyone else meanwhile.
    assert_eq!(get(l.local_addr(), "/").await.status, 200);
    for mut s in stalled {
        let resp = read_to_close(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 408 "), "{resp}");
    }
    assert_eq!(
        a.seen(),
        ["GET /"],
        "no stalled upload reached the instance"
    );
    assert_eq!(l.stats().front.client_timeouts, 12);
}

#[tokio::test]
async fn a_stalled_large_upload_is_cut_and_frees_the_instance() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| {
        c.timeouts.body = MS(300);
        c.limits.request_buffer = 1024;
    })
    .await;
    l.update(snapshot(&[&a]));
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: shop\r\nContent-Length: 1000000\r\n\r\n")
        .await
        .expect("write");
    s.write_all(&[b'x'; 100_000]).await.expect("body");
    wait_until("the upload streams to the instance", || {
        a.consumed.load(SeqCst) >= 100_000
    })
    .await;
    let resp = read_to_close(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 408 "), "{resp}");
    wait_until("the instance is free again", || l.in_flight(&a.id()) == 0).await;
}

#[tokio::test]
async fn a_backend_that_never_answers_gets_504_at_the_response_timeout_and_is_ejected() {
    let frozen = FrozenBackend::start();
    let l = listener(Mode::Http, |c| {
        c.timeouts.response = MS(500);
        c.outlier.stall = Duration::ZERO;
    })
    .await;
    l.update(Snapshot {
        backends: vec![Backend::new("frozen", frozen.addr)],
    });
    let mut c = Client::connect(l.local_addr()).await.expect("connect");
    let r = c.request("POST", "/order", "{}").await.expect("an answer");
    assert_eq!(r.status, 504, "{}", r.body);
    let stats = l.stats();
    let b = &stats.backends[0];
    assert!(b.ejected, "{b:?}");
    assert_eq!(b.ejected_reason.as_deref(), Some("timeout"));
    assert_eq!(b.counters.timeouts, 1);
    assert_eq!(b.counters.requests[4], 1, "the 504 is counted as a 5xx");
}

#[tokio::test]
async fn a_frozen_backend_is_ejected_by_the_stall_probe_and_waiting_gets_move_on() {
    let frozen = FrozenBackend::start();
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| {
        c.timeouts.response = Duration::from_secs(30);
        c.outlier.stall = MS(300);
        c.outlier.probe_timeout = MS(200);
    })
    .await;
    l.update(Snapshot {
        backends: vec![Backend::new("frozen", frozen.addr), a.backend()],
    });
    // Round robin sends half of these to the frozen one.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let addr = l.local_addr();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr).await.expect("connect");
            c.get("/").await
        }));
    }
    for t in tasks {
        let r = t.await.expect("join").expect("an answer");
        assert_eq!((r.status, r.body.as_str()), (200, "a"));
    }
    let stats = l.stats();
    let f = &stats.backends[0];
    assert!(f.ejected && f.hung, "{f:?}");
    assert_eq!(f.ejected_reason.as_deref(), Some("stalled"));
    assert!(f.counters.stall_probes >= 1);
    assert_eq!(f.counters.retries, 3, "{f:?}");
    // New requests go elsewhere at once; a drain of the hung instance does not wait.
    assert_eq!(get(l.local_addr(), "/").await.body, "a");
    assert!(l.drained(&"frozen".into(), MS(50)).await);
}

#[tokio::test]
async fn a_non_replayable_request_on_a_frozen_backend_does_not_hold_its_drain() {
    let frozen = FrozenBackend::start();
    let l = listener(Mode::Http, |c| {
        c.timeouts.response = Duration::from_secs(30);
        c.outlier.stall = MS(200);
        c.outlier.probe_timeout = MS(200);
    })
    .await;
    l.update(Snapshot {
        backends: vec![Backend::new("frozen", frozen.addr)],
    });
    let addr = l.local_addr();
    let post = tokio::spawn(async move {
        let mut c = Client::connect(addr).await.expect("connect");
        c.request("POST", "/order", "{}").await
    });
    wait_until("the POST waits on the frozen backend", || {
        l.in_flight(&"frozen".into()) == 1
    })
    .await;
    // Out of the snapshot, the stop sequence drains: it ends once the probe finds it hung,
    // not after the drain timeout.
    l.update(Snapshot::default());
    assert!(l.drained(&"frozen".into(), DEADLINE).await);
    assert!(l.stats().backends[0].hung);
    post.abort();
}

#[tokio::test]
async fn a_slow_backend_that_answers_its_probe_is_not_ejected() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| {
        c.outlier.stall = MS(200);
        c.outlier.probe_timeout = MS(500);
    })
    .await;
    l.update(snapshot(&[&a]));
    let addr = l.local_addr();
    let held = tokio::spawn(async move { get(addr, "/hold").await });
    wait_until("the stall probe went out", || {
        l.stats().backends[0].counters.stall_probes >= 1
    })
    .await;
    wait_until("the probe was answered", || a.hits() >= 2).await;
    a.open_gate();
    let r = held.await.expect("join");
    assert_eq!(r.status, 200);
    let stats = l.stats();
    assert!(!stats.backends[0].ejected, "{:?}", stats.backends[0]);
    assert_eq!(stats.backends[0].counters.ejections, 0);
}

#[tokio::test]
async fn failures_in_a_row_eject_the_backend() {
    // Every request is read and the connection closed without a response.
    let raw = RawBackend::start(1).await;
    let l = listener(Mode::Http, |c| c.outlier.failures = 3).await;
    l.update(Snapshot {
        backends: vec![Backend::new("raw", raw.addr)],
    });
    for i in 1..=3 {
        let mut c = Client::connect(l.local_addr()).await.expect("connect");
        let r = c.request("POST", "/p", "x").await.expect("an answer");
        assert_eq!(r.status, 502);
        let ejected = l.stats().backends[0].ejected;
        assert_eq!(ejected, i == 3, "after {i} failures");
    }
    assert_eq!(
        l.stats().backends[0].ejected_reason.as_deref(),
        Some("failures")
    );
}

/// A raw backend: reads the first request head of each connection, then hands the connection
/// to `then`.
async fn raw_backend<F, Fut>(then: F) -> std::net::SocketAddr
where
    F: Fn(TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let then = then.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                then(s).await;
            });
        }
    });
    addr
}

/// A backend that answers `413` as soon as it has the head, without reading the body, and
/// closes.
async fn early_answer_backend() -> std::net::SocketAddr {
    raw_backend(|mut s: TcpStream| async move {
        let _ = s
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo large")
            .await;
        let _ = s.shutdown().await;
        // Closing with the body unread would reset the connection; read a little so the
        // answer gets out first, as servers that linger do.
        let mut chunk = [0u8; 4096];
        let _ = tokio::time::timeout(MS(500), async {
            while let Ok(n) = s.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    })
    .await
}

#[tokio::test]
async fn an_early_answer_to_an_upload_is_relayed_not_turned_into_502() {
    let addr = early_answer_backend().await;
    let l = listener(Mode::Http, |c| c.limits.request_buffer = 1024).await;
    l.update(Snapshot {
        backends: vec![Backend::new("early", addr)],
    });
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"PUT /upload HTTP/1.1\r\nHost: shop\r\nContent-Length: 4000000\r\n\r\n")
        .await
        .expect("head");
    let writer = tokio::spawn(async move {
        let block = vec![b'x'; 64 * 1024];
        for _ in 0..60 {
            if s.write_all(&block).await.is_err() {
                break;
            }
        }
        s
    });
    let mut s = writer.await.expect("join");
    let resp = read_to_close(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 413 "), "{resp}");
    assert!(resp.ends_with("too large"), "{resp}");
    let stats = l.stats();
    assert_eq!(stats.totals.requests, [0, 0, 0, 1, 0], "{stats:?}");
    assert_eq!(stats.totals.errors, 0);
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_framed_by_the_proxy() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.limits.request_buffer = 64).await;
    l.update(snapshot(&[&a]));
    // Small: arrives with a length.
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"POST /headers HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n")
        .await
        .expect("write");
    let resp = read_until(&mut s, "x-forwarded-proto").await;
    assert!(resp.contains("content-length: 11"), "{resp}");
    assert!(!resp.contains("transfer-encoding"), "{resp}");
    // Large: streamed, re-chunked; the instance gets every payload byte.
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"POST /sink HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    for _ in 0..100 {
        s.write_all(b"3e8;x=y\r\n").await.expect("size");
        s.write_all(&[b'z'; 1000]).await.expect("data");
        s.write_all(b"\r\n").await.expect("crlf");
    }
    s.write_all(b"0\r\n\r\n").await.expect("end");
    let resp = read_until(&mut s, "\r\n\r\n100000").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn malformed_chunked_bodies_get_400_and_reach_no_instance() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    for body in [
        "ffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        "-5\r\nhello\r\n0\r\n\r\n",
        "5\nhello\r\n0\r\n\r\n",
        "0000000000000000005\r\nhello\r\n0\r\n\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
        "5\r\nhelloXX0\r\n\r\n",
        "5;a\0b\r\nhello\r\n0\r\n\r\n",
    ] {
        let mut s = connect(l.local_addr()).await;
        let raw = format!(
            "POST /sink HTTP/1.1\r\nHost: shop\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        s.write_all(raw.as_bytes()).await.expect("write");
        let resp = read_to_close(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{body:?} → {resp}");
    }
    assert_eq!(a.hits(), 0, "nothing reached the instance");
    assert_eq!(l.stats().front.bad_requests, 7);
}

#[tokio::test]
async fn at_the_connection_cap_idle_connections_make_room() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.limits.max_connections = 4).await;
    l.update(snapshot(&[&a]));
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut c = Client::connect(l.local_addr()).await.expect("connect");
        assert_eq!(c.get("/").await.expect("answer").status, 200);
        idle.push(c);
    }
    wait_until("four connections held", || l.stats().connections == 4).await;
    // A fifth client gets in: idle connections are closed to make room.
    assert_eq!(get(l.local_addr(), "/").await.status, 200);
    let stats = l.stats();
    assert!(stats.front.reclaimed >= 1, "{:?}", stats.front);
    assert!(stats.front.paused >= 1, "{:?}", stats.front);
}

#[tokio::test]
async fn busy_connections_are_never_reclaimed_newcomers_wait_in_the_backlog() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.limits.max_connections = 3).await;
    l.update(snapshot(&[&a]));
    let mut held = Vec::new();
    for _ in 0..3 {
        let addr = l.local_addr();
        held.push(tokio::spawn(async move { get(addr, "/hold").await }));
    }
    wait_until("three requests held", || a.holding.load(SeqCst) == 3).await;
    let addr = l.local_addr();
    let newcomer = tokio::spawn(async move { get(addr, "/").await });
    wait_until("the listener stops accepting", || {
        l.stats().front.paused >= 1
    })
    .await;
    assert_eq!(a.hits(), 3, "the newcomer waits");
    a.open_gate();
    for h in held {
        assert_eq!(
            h.await.expect("join").status,
            200,
            "a busy connection was cut"
        );
    }
    assert_eq!(newcomer.await.expect("join").status, 200);
    assert_eq!(l.stats().front.reclaimed, 0);
}

#[tokio::test]
async fn the_process_budget_spans_every_listener() {
    jarfleet_proxy::set_connection_budget(3);
    let a = TestBackend::start("a").await;
    let one = listener(Mode::Http, |_| {}).await;
    let two = listener(Mode::Http, |_| {}).await;
    one.update(snapshot(&[&a]));
    two.update(snapshot(&[&a]));
    let mut idle = Vec::new();
    for addr in [one.local_addr(), one.local_addr(), two.local_addr()] {
        let mut c = Client::connect(addr).await.expect("connect");
        assert_eq!(c.get("/").await.expect("answer").status, 200);
        idle.push(c);
    }
    wait_until("three connections held", || {
        jarfleet_proxy::process_connections() == 3
    })
    .await;
    assert_eq!(get(two.local_addr(), "/").await.status, 200);
    assert!(one.stats().front.reclaimed + two.stats().front.reclaimed >= 1);
}

#[tokio::test]
async fn tcp_mode_closes_idle_connections() {
    let (echo, _) = echo_server().await;
    let l = listener(Mode::Tcp, |c| c.timeouts.tcp_idle = MS(300)).await;
    l.update(Snapshot {
        backends: vec![Backend::new("echo", echo)],
    });
    let mut s = connect(l.local_addr()).await;
    s.write_all(b"ping").await.expect("write");
    let mut got = [0u8; 4];
    s.read_exact(&mut got).await.expect("echo");
    assert_eq!(&got, b"ping");
    // Then nothing: the proxy closes it.
    let mut rest = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut rest))
        .await
        .expect("closed by the proxy")
        .expect("read");
    assert!(rest.is_empty());
    wait_until("the backend is released", || {
        l.in_flight(&"echo".into()) == 0
    })
    .await;
}

async fn echo_server() -> (std::net::SocketAddr, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let conns = Arc::new(AtomicU64::new(0));
    let c2 = conns.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            c2.fetch_add(1, SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, conns)
}

/// A WebSocket echo server (tungstenite), counting its sessions.
async fn websocket_echo() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.to_text().is_ok_and(|t| t == "bye") {
                        return; // the server ends the session: the TCP connection closes
                    }
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_and_a_drain_waits_for_them() {
    let ws_backend = websocket_echo().await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(Snapshot {
        backends: vec![Backend::new("ws", ws_backend)],
    });
    let url = format!("ws://{}/chat", l.local_addr());
    let stream = connect(l.local_addr()).await;
    let (mut ws, resp) =
        tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(url, stream))
            .await
            .expect("handshake in time")
            .expect("the WebSocket handshake goes through the proxy");
    assert_eq!(resp.status(), 101);
    for text in ["hello", "through", "the balancer"] {
        ws.send(Message::text(text)).await.expect("send");
        let echo = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("echo in time")
            .expect("a message")
            .expect("valid");
        assert_eq!(echo.into_text().expect("text"), text);
    }
    let stats = l.stats();
    assert_eq!((stats.front.tunnels, stats.front.tunnels_open), (1, 1));
    // The open tunnel is in flight: a drain waits for it, and ends when it closes.
    assert_eq!(l.in_flight(&"ws".into()), 1);
    l.update(Snapshot::default());
    assert!(!l.drained(&"ws".into(), MS(200)).await);
    ws.close(None).await.expect("close");
    drop(ws);
    assert!(l.drained(&"ws".into(), DEADLINE).await);
    wait_until("the tunnel is gone", || l.stats().front.tunnels_open == 0).await;
}

/// Opens `/dev/null` until the process is out of file descriptors; dropping the files gives
/// them back.
fn exhaust_fds() -> Vec<std::fs::File> {
    let mut held = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(24), "expected EMFILE, got {e}");
                return held;
            }
        }
    }
}

#[tokio::test]
async fn running_out_of_descriptors_is_not_held_against_an_instance() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |c| c.outlier.failures = 1).await;
    l.update(snapshot(&[&a]));
    let mut s = connect(l.local_addr()).await;
    wait_until("the connection is accepted", || l.stats().connections == 1).await;
    let held = exhaust_fds();
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .expect("write");
    let resp = read_until(&mut s, "retry shortly").await;
    drop(held);
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    let stats = l.stats();
    assert_eq!(stats.front.local_errors, 1);
    let b = &stats.backends[0];
    assert!(!b.ejected, "{b:?}");
    assert_eq!((b.counters.errors, b.counters.ejections), (0, 0), "{b:?}");
    // With descriptors back, the same connection is served.
    s.write_all(b"GET / HTTP/1.1\r\nHost: shop\r\n\r\n")
        .await
        .expect("write");
    let resp = read_until(&mut s, "\r\n\r\na").await;
    assert!(resp.contains("HTTP/1.1 200"), "{resp}");
}

#[tokio::test]
async fn a_tunnel_the_instance_closed_ends_even_if_the_client_stays() {
    let ws_backend = websocket_echo().await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(Snapshot {
        backends: vec![Backend::new("ws", ws_backend)],
    });
    let stream = connect(l.local_addr()).await;
    let url = format!("ws://{}/chat", l.local_addr());
    let (mut ws, _) = tokio::time::timeout(DEADLINE, tokio_tungstenite::client_async(url, stream))
        .await
        .expect("handshake in time")
        .expect("handshake");
    ws.send(Message::text("bye")).await.expect("send");
    // The client keeps its socket; the instance is done: the tunnel ends and releases it.
    assert!(l.drained(&"ws".into(), DEADLINE).await);
    wait_until("the tunnel is gone", || l.stats().front.tunnels_open == 0).await;
    let end = tokio::time::timeout(DEADLINE, ws.next())
        .await
        .expect("the close reaches the client");
    assert!(
        end.is_none() || end.is_some_and(|m| m.is_err()),
        "the session is over"
    );
}

/// A backend that answers every request with a head promising a body, then dies before the
/// body (as a JVM killed between its two writes does).
async fn head_then_death_backend() -> std::net::SocketAddr {
    raw_backend(|mut s: TcpStream| async move {
        let _ = s
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
            .await;
    })
    .await
}

#[tokio::test]
async fn an_instance_dying_between_head_and_body_costs_a_get_nothing() {
    let dying = head_then_death_backend().await;
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(Snapshot {
        backends: vec![Backend::new("dying", dying), a.backend()],
    });
    // Round robin: every other request meets the dying instance first.
    for _ in 0..4 {
        let r = get(l.local_addr(), "/").await;
        assert_eq!((r.status, r.body.as_str()), (200, "a"));
    }
    let stats = l.stats();
    assert!(
        stats.backends[0].counters.retries >= 1,
        "{:?}",
        stats.backends[0]
    );
    // A POST cannot be sent twice: it gets 502, and nothing of the broken answer.
    let mut s = connect(l.local_addr()).await;
    l.update(Snapshot {
        backends: vec![Backend::new("dying", dying)],
    });
    s.write_all(b"POST / HTTP/1.1\r\nHost: shop\r\nContent-Length: 1\r\n\r\nx")
        .await
        .expect("write");
    let resp = read_to_close(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 502 "), "{resp}");
}
