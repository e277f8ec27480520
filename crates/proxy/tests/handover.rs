//! Handing a listening address over from one listener to another on the same socket (the
//! mechanism behind a data-plane restart and a self-upgrade): under keep-alive load with GETs
//! and POSTs, and with requests in flight inside the old listener, no request fails and no
//! connection is refused.

mod helper;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use helper::*;
use jarfleet_proxy::{Listener, ListenerConfig, Mode};

/// Counts of a load run.
#[derive(Default)]
struct Load {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Connections the proxy ended after a response that said `Connection: close`.
    reconnects: AtomicU64,
    /// Fresh connections that could not be made (refused or reset at connect).
    refused: AtomicU64,
}

/// `clients` keep-alive clients, alternating GET and POST, until `stop`. A request counts as
/// failed when it was sent and got no 200; a connection closed after a response that said so is
/// reconnected without counting anything.
fn start_load(
    addr: std::net::SocketAddr,
    clients: usize,
    load: &Arc<Load>,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|i| {
            let (load, stop) = (load.clone(), stop.clone());
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(60);
                let mut client: Option<Client> = None;
                let mut n = 0u64;
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    let c = match client.as_mut() {
                        Some(c) => {
                            if !c.usable().await {
                                load.reconnects.fetch_add(1, SeqCst);
                                client = None;
                                continue;
                            }
                            c
                        }
                        None => match Client::connect(addr).await {
                            Ok(c) => client.insert(c),
                            Err(e) => {
                                eprintln!("client {i}: connect: {e}");
                                load.refused.fetch_add(1, SeqCst);
                                tokio::time::sleep(Duration::from_millis(5)).await;
                                continue;
                            }
                        },
                    };
                    n += 1;
                    // Odd clients think for a moment between requests, as real ones do: their
                    // connections are idle now and then, which is when a proxy that closes idle
                    // keep-alive connections on its way out fails the request being sent.
                    if i % 2 == 1 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let r = if n.is_multiple_of(2) {
                        c.request("POST", "/sink", "an order").await
                    } else {
                        c.get("/").await
                    };
                    match r {
                        Ok(r) if r.status == 200 => {
                            load.ok.fetch_add(1, SeqCst);
                        }
                        Ok(r) => {
                            eprintln!("client {i}: status {} {}", r.status, r.body);
                            load.failed.fetch_add(1, SeqCst);
                        }
                        Err(e) => {
                            eprintln!("client {i}: {e}");
                            load.failed.fetch_add(1, SeqCst);
                            client = None;
                        }
                    }
                }
            })
        })
        .collect()
}

fn config(addr: std::net::SocketAddr) -> ListenerConfig {
    let mut cfg = ListenerConfig::new("shop", addr, Mode::Http);
    cfg.slow_start = Duration::ZERO;
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_over_under_keep_alive_load_fails_no_request_and_refuses_no_connection() {
    let (a, b) = (TestBackend::start("a").await, TestBackend::start("b").await);
    let old = listener(Mode::Http, |_| {}).await;
    old.update(snapshot(&[&a, &b]));
    let addr = old.local_addr();

    let load = Arc::new(Load::default());
    let stop = Arc::new(AtomicBool::new(false));
    let clients = start_load(addr, 6, &load, &stop);
    wait_until("load through the old listener", || {
        load.ok.load(SeqCst) > 500
    })
    .await;

    // Two requests in flight inside the old listener when it hands over: both backends hold
    // `/hold` until their gate opens.
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(async move { get(addr, "/hold").await }))
        .collect();
    wait_until("two requests held in the backends", || {
        a.holding.load(SeqCst) + b.holding.load(SeqCst) >= 2
    })
    .await;

    // The new listener starts on a duplicate of the same socket, then the old one hands over.
    let socket = old.socket().expect("a duplicate of the listening socket");
    let new = Listener::adopt(config(addr), socket)
        .await
        .expect("adopt the socket");
    new.update(snapshot(&[&a, &b]));
    assert_eq!(new.local_addr(), addr);
    let old_before = old.stats().totals.total_requests();
    let handing = tokio::spawn(old.hand_over(Duration::from_secs(20)));

    // The old listener accepts nothing more: fresh connections reach the new one.
    wait_until("the new listener serving", || {
        new.stats().totals.total_requests() > 200
    })
    .await;
    assert!(
        !handing.is_finished(),
        "the hand-over waits for the held requests"
    );
    a.open_gate();
    b.open_gate();
    for h in held {
        let r = h.await.expect("join");
        assert_eq!(
            r.status, 200,
            "a request held across the hand-over: {}",
            r.body
        );
    }
    let done = tokio::time::timeout(DEADLINE, handing)
        .await
        .expect("the hand-over ends once its connections have")
        .expect("join");
    assert!(
        done.finished,
        "every old connection ended by itself: {done:?}"
    );
    assert_eq!(done.cut, 0);

    let at_end = load.ok.load(SeqCst);
    wait_until("load after the hand-over", || {
        load.ok.load(SeqCst) > at_end + 500
    })
    .await;
    stop.store(true, SeqCst);
    for c in clients {
        c.await.expect("join");
    }
    assert_eq!(load.failed.load(SeqCst), 0, "failed requests");
    assert_eq!(load.refused.load(SeqCst), 0, "refused connections");
    // Every keep-alive client was told to reconnect once by the old listener (and the held
    // requests' connections closed with it).
    assert!(
        load.reconnects.load(SeqCst) >= 6,
        "each client's old connection ended after a `Connection: close` answer: {}",
        load.reconnects.load(SeqCst)
    );
    assert!(old_before > 500);
    let new_total = new.stats().totals.total_requests();
    assert!(
        new_total > 700,
        "the new listener took the traffic over: {new_total}"
    );
}

#[tokio::test]
async fn adopting_a_socket_that_is_not_the_listen_address_or_not_listening_is_refused() {
    let old = listener(Mode::Http, |_| {}).await;
    let other = dead_addr().await;
    let err = Listener::adopt(config(other), old.socket().expect("dup"))
        .await
        .err()
        .expect("a socket on another address is refused");
    assert!(
        err.to_string().contains("listens on") && err.to_string().contains(&other.to_string()),
        "{err}"
    );

    // A socket that is bound but does not listen.
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, bind, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(fd.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind");
    let bound_only = std::net::TcpListener::from(fd);
    let addr = bound_only.local_addr().expect("addr");
    let err = Listener::adopt(config(addr), bound_only)
        .await
        .err()
        .expect("a socket that does not listen is refused");
    assert!(err.to_string().contains("is not listening"), "{err}");
}
