//! The data-plane process (`jarfleet data-plane DIR`): the proxy's listeners on sockets the
//! daemon hands in, serving the last snapshot whether or not a daemon is connected.
//!
//! Threads: the main thread drives a small runtime (timers for drains and hand-overs; the
//! listeners run on the proxy's own workers), one thread accepts connections on the control
//! socket (inherited as fd 3, bound by the daemon), and one thread serves each connection.
//! A new connection of a role replaces the old one: only one daemon runs per state dir, so an
//! older connection is a daemon that is gone.

use std::collections::BTreeMap;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jarfleet_proxy::{Backend, BackendId, Listener, ListenerConfig, Snapshot};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::protocol::{Carry, Channel, Note, PROTOCOL, Reply, Request, Role, WireBackend};

/// How long a close lets a listener's in-flight requests finish.
const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Runs the data plane until it is told to exit or hand over.
pub fn run() -> Result<()> {
    let control = jarfleet_shim::spawn::inherited_listener()
        .context("the data plane is started by the daemon, with its control socket as fd 3")?;
    let limits = jarfleet_shim::fdlimit::raise();
    jarfleet_proxy::set_connection_budget(usize::try_from(limits.budget).unwrap_or(usize::MAX));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .thread_name("jarfleet-lb")
        .enable_all()
        .build()
        .context("starting the data plane's runtime")?;
    let (exit_tx, mut exit_rx) = mpsc::unbounded_channel::<i32>();
    let served = Arc::new(Served {
        handle: runtime.handle().clone(),
        inner: Mutex::new(Inner::default()),
        exit: exit_tx,
    });
    let accepting = served.clone();
    std::thread::Builder::new()
        .name("jarfleet-lb-ctl".into())
        .spawn(move || accept_loop(control, accepting))
        .context("starting the control thread")?;
    tracing::info!(pid = std::process::id(), "data plane running");
    let code = runtime.block_on(async move { exit_rx.recv().await.unwrap_or(0) });
    tracing::info!(code, "data plane exiting");
    std::process::exit(code);
}

struct Served {
    handle: Handle,
    inner: Mutex<Inner>,
    exit: mpsc::UnboundedSender<i32>,
}

#[derive(Default)]
struct Inner {
    listeners: BTreeMap<String, Held>,
    /// The daemon's notes connection, if one is open.
    notes: Option<Arc<Mutex<Channel>>>,
    /// Set by a hand-over or exit: nothing new is taken on.
    leaving: bool,
}

struct Held {
    listener: Arc<Listener>,
    cfg: ListenerConfig,
    carry: Option<Box<Carry>>,
    /// The last snapshot, with when each backend became ready (for `List`).
    backends: Vec<(WireBackend, Instant)>,
}

impl Served {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn listener(&self, app: &str) -> Option<Arc<Listener>> {
        self.lock().listeners.get(app).map(|h| h.listener.clone())
    }

    fn note(&self, note: &Note) {
        let notes = self.lock().notes.clone();
        if let Some(ch) = notes {
            let ch = ch.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = ch.send(note, None) {
                tracing::debug!("a note to the daemon was lost: {e}");
            }
        }
    }

    /// Stops `listener` gracefully, off the caller's thread; a listener still borrowed by
    /// another task (a stats reader) is dropped, which stops it at once.
    fn shut(&self, listener: Arc<Listener>, grace: Duration) {
        self.handle.spawn(async move {
            if let Some(l) = owned(listener).await {
                l.shutdown(grace).await;
            }
        });
    }
}

/// The listener itself, once no request thread borrows it any more (they hold it for the
/// length of one request); `None` if one still does after a second (it is then dropped, which
/// stops it at once).
async fn owned(mut listener: Arc<Listener>) -> Option<Listener> {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        match Arc::try_unwrap(listener) {
            Ok(l) => return Some(l),
            Err(shared) if Instant::now() < deadline => {
                listener = shared;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Err(_) => return None,
        }
    }
}

fn accept_loop(control: UnixListener, served: Arc<Served>) {
    for conn in control.incoming() {
        match conn {
            Ok(stream) => {
                let served = served.clone();
                let spawned = std::thread::Builder::new()
                    .name("jarfleet-lb-conn".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(stream, &served) {
                            tracing::warn!("daemon connection ended: {e:#}");
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!("cannot serve a daemon connection: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("accepting a daemon connection: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve_connection(stream: UnixStream, served: &Arc<Served>) -> Result<()> {
    let mut ch = Channel::new(stream);
    let role = match ch.recv::<Request>()? {
        Some(Request::Hello { protocol, role }) if protocol == PROTOCOL => role,
        Some(Request::Hello { protocol, .. }) => {
            let message = format!(
                "this data plane speaks protocol {PROTOCOL}, the daemon {protocol}: start a daemon of the same jarfleet build (`jarfleet upgrade` replaces both)"
            );
            ch.send(
                &Reply::Error {
                    message: message.clone(),
                },
                None,
            )?;
            anyhow::bail!("{message}");
        }
        Some(other) => anyhow::bail!("a connection that did not say hello: {other:?}"),
        None => return Ok(()),
    };
    ch.send(
        &Reply::Hello {
            protocol: PROTOCOL,
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        },
        None,
    )?;
    match role {
        Role::Notes => {
            // Keep a clone for writing notes; read here only to see the daemon go.
            // A daemon that stopped reading must not hold up a drain's end for long.
            ch.socket()
                .set_write_timeout(Some(Duration::from_secs(1)))?;
            let reader = ch.socket().try_clone()?;
            served.lock().notes = Some(Arc::new(Mutex::new(ch)));
            let mut buf = [0u8; 64];
            while matches!(std::io::Read::read(&mut &reader, &mut buf), Ok(n) if n > 0) {}
            Ok(())
        }
        Role::Control => {
            while let Some(req) = ch.recv::<Request>()? {
                let reply = handle(served, &mut ch, req);
                match reply {
                    Answer::One(reply) => ch.send(&*reply, None)?,
                    Answer::Listed(held) => {
                        ch.send(&Reply::Listed { count: held.len() }, None)?;
                        for (reply, socket) in held {
                            ch.send(&reply, Some(&socket))?;
                        }
                    }
                }
            }
            Ok(())
        }
    }
}

enum Answer {
    One(Box<Reply>),
    Listed(Vec<(Reply, std::net::TcpListener)>),
}

fn one(reply: Reply) -> Answer {
    Answer::One(Box::new(reply))
}

fn error(message: impl Into<String>) -> Answer {
    one(Reply::Error {
        message: message.into(),
    })
}

fn handle(served: &Arc<Served>, ch: &mut Channel, req: Request) -> Answer {
    match req {
        Request::Hello { .. } => error("hello was said already"),
        Request::Adopt {
            app,
            cfg,
            carry,
            backends,
        } => {
            let socket = match ch.take_fd() {
                Ok(fd) => std::net::TcpListener::from(fd),
                Err(e) => return error(e.to_string()),
            };
            if served.lock().leaving {
                return error("this data plane is handing over and takes on nothing new");
            }
            let (snapshot, timed) = snapshot_of(backends);
            let listener = match served.handle.block_on(Listener::adopt_serving(
                (*cfg).clone(),
                socket,
                snapshot,
            )) {
                Ok(l) => Arc::new(l),
                Err(e) => return error(e.to_string()),
            };
            let old = served.lock().listeners.insert(
                app,
                Held {
                    listener,
                    cfg: *cfg,
                    carry,
                    backends: timed,
                },
            );
            if let Some(old) = old {
                served.shut(old.listener, CLOSE_GRACE);
            }
            one(Reply::Ok)
        }
        Request::Configure { app, cfg } => {
            let mut inner = served.lock();
            match inner.listeners.get_mut(&app) {
                Some(h) => {
                    h.listener.configure(&cfg);
                    h.cfg = *cfg;
                    one(Reply::Ok)
                }
                None => error(format!("no listener for {app}")),
            }
        }
        Request::Close { app } => {
            let gone = served.lock().listeners.remove(&app);
            if let Some(h) = gone {
                served.shut(h.listener, CLOSE_GRACE);
            }
            one(Reply::Ok)
        }
        Request::Update { app, backends } => {
            let mut inner = served.lock();
            let Some(h) = inner.listeners.get_mut(&app) else {
                return error(format!("no listener for {app}"));
            };
            let (snapshot, timed) = snapshot_of(backends);
            h.listener.update(snapshot);
            h.backends = timed;
            one(Reply::Ok)
        }
        Request::InFlight { app, backend } => {
            let n = served
                .listener(&app)
                .map_or(0, |l| l.in_flight(&BackendId(backend)));
            one(Reply::InFlight { n })
        }
        Request::WatchDrain {
            app,
            backend,
            timeout_ms,
            token,
        } => {
            let watch = served
                .listener(&app)
                .map(|l| l.drain_watch(&BackendId(backend), Duration::from_millis(timeout_ms)));
            // Told on the notes connection open when it ends (a daemon that took over since
            // watches it again anyway).
            let told = served.clone();
            served.handle.spawn(async move {
                if let Some(w) = watch {
                    w.await;
                }
                told.note(&Note::Drained { token });
            });
            one(Reply::Ok)
        }
        Request::Stats { app } => {
            let inner = served.lock();
            let stats = inner.listeners.get(&app).map(|h| {
                let mut stats = h.listener.stats();
                if let Some(carry) = &h.carry {
                    carry.add_to(&mut stats);
                }
                Box::new(stats)
            });
            one(Reply::Stats { stats })
        }
        Request::List => {
            let now = Instant::now();
            let inner = served.lock();
            let mut held = Vec::new();
            for (app, h) in &inner.listeners {
                let socket = match h.listener.socket() {
                    Ok(s) => s,
                    Err(e) => return error(format!("{app}'s socket: {e}")),
                };
                let mut stats = h.listener.stats();
                if let Some(carry) = &h.carry {
                    carry.add_to(&mut stats);
                }
                let backends = h
                    .backends
                    .iter()
                    .map(|(b, ready_at)| WireBackend {
                        ready_for_ms: now.saturating_duration_since(*ready_at).as_millis() as u64,
                        ..b.clone()
                    })
                    .collect();
                let reply = Reply::Held {
                    app: app.clone(),
                    cfg: Box::new(h.cfg.clone()),
                    carry: Some(Box::new(Carry::of(&stats))),
                    backends,
                };
                held.push((reply, socket));
            }
            Answer::Listed(held)
        }
        Request::HandOver { grace_ms } => leave(served, grace_ms, true),
        Request::Exit { grace_ms } => leave(served, grace_ms, false),
    }
}

/// The proxy's snapshot of `backends`, and each with when it became ready (kept for `List`).
fn snapshot_of(backends: Vec<WireBackend>) -> (Snapshot, Vec<(WireBackend, Instant)>) {
    let now = Instant::now();
    let timed: Vec<(WireBackend, Instant)> = backends
        .into_iter()
        .map(|b| {
            let ready_at = now
                .checked_sub(Duration::from_millis(b.ready_for_ms))
                .unwrap_or(now);
            (b, ready_at)
        })
        .collect();
    let snapshot = Snapshot {
        backends: timed
            .iter()
            .map(|(b, ready_at)| {
                let mut backend = Backend::new(b.id.clone(), b.addr);
                backend.weight = b.weight;
                backend.ready_at = *ready_at;
                backend.labels = b.labels.clone();
                backend.via = b.via.clone();
                backend
            })
            .collect(),
    };
    (snapshot, timed)
}

/// Hands every listener over (or shuts it down), then exits once they are all done.
fn leave(served: &Served, grace_ms: u64, hand_over: bool) -> Answer {
    let listeners: Vec<(String, Arc<Listener>)> = {
        let mut inner = served.lock();
        inner.leaving = true;
        std::mem::take(&mut inner.listeners)
            .into_iter()
            .map(|(app, h)| (app, h.listener))
            .collect()
    };
    let grace = Duration::from_millis(grace_ms);
    let exit = served.exit.clone();
    served.handle.spawn(async move {
        let mut tasks = Vec::new();
        for (app, l) in listeners {
            tasks.push(tokio::spawn(async move {
                let Some(l) = owned(l).await else {
                    return;
                };
                if hand_over {
                    let done = l.hand_over(grace).await;
                    if !done.finished {
                        tracing::warn!(
                            app,
                            cut = done.cut,
                            "hand-over grace ran out; connections still open were closed"
                        );
                    }
                } else {
                    l.shutdown(grace).await;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        let _ = exit.send(0);
    });
    one(Reply::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// A data plane served on one end of a socket pair, as the daemon would reach it.
    fn served() -> (Arc<Served>, tokio::runtime::Runtime) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (exit, _) = mpsc::unbounded_channel();
        let served = Arc::new(Served {
            handle: runtime.handle().clone(),
            inner: Mutex::new(Inner::default()),
            exit,
        });
        (served, runtime)
    }

    fn connect(served: &Arc<Served>, protocol: u32) -> (Channel, Option<Reply>) {
        let (a, b) = UnixStream::pair().expect("pair");
        let s = served.clone();
        std::thread::spawn(move || serve_connection(b, &s));
        a.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut ch = Channel::new(a);
        ch.send(
            &Request::Hello {
                protocol,
                role: Role::Control,
            },
            None,
        )
        .expect("hello");
        let reply = ch.recv::<Reply>().expect("an answer");
        (ch, reply)
    }

    fn ask(ch: &mut Channel, req: &Request, fd: Option<&TcpListener>) -> Reply {
        ch.send(req, fd.map(|f| f as &dyn std::os::fd::AsFd))
            .expect("send");
        ch.recv::<Reply>().expect("recv").expect("a reply")
    }

    #[test]
    fn another_protocol_is_refused_naming_both_versions() {
        let (served, _rt) = served();
        let (_, reply) = connect(&served, PROTOCOL + 1);
        match reply {
            Some(Reply::Error { message }) => {
                assert!(
                    message.contains(&format!("protocol {PROTOCOL}")),
                    "{message}"
                );
                assert!(message.contains(&format!("{}", PROTOCOL + 1)), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_socket_handed_in_serves_its_snapshot_counts_with_what_is_carried_and_is_listed_back() {
        let (served, _rt) = served();
        let (mut ch, hello) = connect(&served, PROTOCOL);
        assert!(matches!(hello, Some(Reply::Hello { .. })), "{hello:?}");
        // A backend: answers one request per connection.
        let backend = TcpListener::bind("127.0.0.1:0").expect("bind");
        let backend_addr = backend.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in backend.incoming().take(4) {
                let Ok(mut c) = conn else { continue };
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            }
        });
        let socket =
            jarfleet_proxy::bind_listening("127.0.0.1:0".parse().expect("addr")).expect("listen");
        let addr = socket.local_addr().expect("addr");
        let mut cfg = ListenerConfig::new("app", addr, jarfleet_proxy::Mode::Http);
        cfg.slow_start = Duration::ZERO;
        let mut carry = Carry::default();
        carry.totals.requests = [0, 40, 0, 0, 2];
        carry.backends.insert(
            "app/0#1".into(),
            jarfleet_proxy::CounterView {
                requests: [0, 40, 0, 0, 0],
                ..Default::default()
            },
        );
        let backends = vec![WireBackend {
            id: "app/0#1".into(),
            addr: backend_addr,
            weight: 100,
            ready_for_ms: 60_000,
            labels: BTreeMap::new(),
            via: None,
        }];
        let adopt = Request::Adopt {
            app: "app".into(),
            cfg: Box::new(cfg),
            carry: Some(Box::new(carry)),
            backends,
        };
        assert!(matches!(ask(&mut ch, &adopt, Some(&socket)), Reply::Ok));
        drop(socket);
        // Served at once, from the snapshot that came with the socket.
        let mut client = TcpStream::connect(addr).expect("connect");
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        client.read_to_string(&mut answer).expect("read");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // Its own request, plus what was carried.
        let stats = match ask(&mut ch, &Request::Stats { app: "app".into() }, None) {
            Reply::Stats { stats: Some(s) } => s,
            other => panic!("{other:?}"),
        };
        assert_eq!(stats.totals.requests, [0, 41, 0, 0, 2]);
        assert_eq!(stats.backends[0].counters.requests[1], 41);
        // Listed back with a duplicate of the same socket.
        ch.send(&Request::List, None).expect("list");
        assert!(matches!(
            ch.recv::<Reply>().expect("recv"),
            Some(Reply::Listed { count: 1 })
        ));
        match ch.recv::<Reply>().expect("recv") {
            Some(Reply::Held { app, backends, .. }) => {
                assert_eq!(app, "app");
                assert_eq!(backends.len(), 1);
                assert!(backends[0].ready_for_ms >= 60_000);
            }
            other => panic!("{other:?}"),
        }
        let dup = TcpListener::from(ch.take_fd().expect("the socket"));
        assert_eq!(dup.local_addr().expect("addr"), addr);
    }
}
