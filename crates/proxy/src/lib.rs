//! jarfleet's load balancer: the data plane only.
//!
//! The proxy knows nothing about processes, specs or the store. The control loop hands each
//! [`Listener`] an immutable [`Snapshot`] of the ready backends; the proxy moves bytes, picks
//! backends, retries, ejects and counts.
//!
//! # How a request flows (`Mode::Http`)
//!
//! 1. The listener accepts a connection (TCP_NODELAY) while its connection cap and the
//!    process-wide budget allow (`conns`), and hands it to one of the data-plane worker
//!    threads (`workers`), which serves it to its end: HTTP/1.1 with keep-alive, heads parsed
//!    with `httparse`, checked strictly and rewritten in one pass, bodies copied through a
//!    fixed buffer (`h1`). Every phase has a deadline (`Timeouts`): the head (from the accept
//!    or from its first byte, never restarted by a trickle of bytes), the client's body and
//!    reads, the connect, the response.
//! 2. A request body up to `request_buffer` is read whole first (a chunked one decoded and
//!    sent on with its length), so a slow upload holds no instance and a broken body reaches
//!    none. Larger bodies stream; a chunked one is decoded and re-chunked by the proxy.
//! 3. For each request the handler loads the current table (one atomic `Arc` load) and picks a
//!    backend: smooth weighted round-robin or power-of-two-choices least-request over the
//!    backends that are not ejected (all of them if every one is), with each weight ramped by
//!    slow start. No backend at all: `503` naming the app.
//! 4. Hop-by-hop headers are stripped, the framing is written by the proxy,
//!    `X-Forwarded-For` is appended to, `X-Forwarded-Proto` (`http`) and `X-Forwarded-Host`
//!    (the client's `Host`) are set; `Host` is kept.
//! 5. The request goes out on an idle keep-alive connection of that backend opened by the same
//!    worker (LIFO, capped at `max_idle_per_backend`) or a fresh one, while the response is
//!    read at the same time: an instance that answers before it read the whole body (a 401 or
//!    413 to an upload) has its answer relayed, not turned into a 502.
//! 6. Failures before any response byte:
//!    - connect error: the backend is ejected for `eject_for`, and the request, which was never
//!      sent, goes to another backend once, whatever its method;
//!    - a pooled connection that turns out closed: the request is sent again on a fresh
//!      connection to the same backend (not an error: backends close idle connections) when it
//!      was not written yet or is replayable;
//!    - the backend took the request and then failed (reset, closed before the status line): a
//!      *replayable* request — idempotent method (RFC 9110: GET, HEAD, OPTIONS, PUT, DELETE)
//!      with no body or a buffered one — is retried once on another backend; anything else
//!      gets `502`; such failures in a row eject the backend;
//!    - no response head within the response timeout: `504`, and the backend is ejected;
//!    - a local shortage of file descriptors or memory: `503`, never held against a backend.
//! 7. The response head is counted (status class, latency to the head) and the response body is
//!    streamed back. When it ends, the backend connection returns to the pool. A `101` to a
//!    WebSocket offer turns the connection into a tunnel.
//!
//! # Snapshots
//!
//! [`Listener::update`] builds a new table (backends, base weights, the round-robin state) and
//! swaps it in with one atomic store (`arc-swap`). A request picks from the table it loaded,
//! enters the backend (in-flight + 1) and then checks the backend's `removed` flag, which
//! `update` sets before it looks at in-flight counts (both `SeqCst`): a request that raced an
//! update re-picks on the new table. So once `update` has returned, a removed backend gets no
//! new request, and `drained` cannot miss one that was about to start. Per-backend state
//! (counters, in-flight, ejection, the connection pool) lives in a registry keyed by
//! [`BackendId`] and survives snapshots, so counters and ejections carry over and a removed
//! backend still reports its in-flight requests. A new generation of an instance has a new id,
//! so it starts clean.
//!
//! # Drain
//!
//! Every attempt holds an in-flight guard; it is released once the backend's whole response has
//! been read (or the exchange failed): from then on the backend has nothing more to do for the
//! request. In tcp mode and for a WebSocket tunnel the guard lives as long as the proxied
//! connection. [`Listener::drained`] waits on a `Notify` that the guard fires when a backend's
//! in-flight count reaches zero while someone waits: no polling. It also returns when the
//! backend is found hung (see below): its requests cannot finish. The control loop's stop
//! sequence is `update` (without the instance) → `drained` → SIGTERM.
//!
//! # Passive outlier detection
//!
//! A refused or timed-out connect, a response timeout, or `failures` gateway failures in a row
//! eject a backend for `eject_for` regardless of snapshots: the control loop's readiness probe
//! runs on its own period and may still list a killed instance, and a restarted instance comes
//! back under a new id, which starts un-ejected. A request that has waited `stall` for its
//! response head while nothing at all came from its backend triggers a stall probe: a request
//! for `probe_path` on a fresh connection; no status line within `probe_timeout` ejects the
//! backend and marks it hung (a JVM under `SIGSTOP`, deadlocked, or with every thread busy):
//! replayable requests waiting on it move to another backend at once. Ejected backends are
//! skipped unless all of them are ejected.
//!
//! # `Mode::Tcp`
//!
//! One backend per client connection, bytes copied both ways until either side closes or the
//! connection is idle for `tcp_idle`; a connect failure ejects the backend and tries another
//! once; no backend: the client connection is closed.

mod accept;
mod backend;
mod balance;
mod config;
mod conns;
mod h1;
mod limits;
mod pool;
pub mod relay;
mod stats;
mod table;
mod tcp;
mod throttle;
mod tunnel;
mod upstream;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use backend::BackendState;
use conns::{Conns, GRACEFUL, HANDOVER, HARD};
use table::{Entry, Table};

pub use backend::EjectReason;
pub use balance::{is_idempotent, p2c, slow_start_weight, swrr};
pub use config::{Balance, Limits, ListenerConfig, Mode, Outlier, Timeouts};
pub use conns::process_connections;
pub use limits::{connection_budget, set_connection_budget};
pub use stats::{BackendStats, CounterView, FrontView, LATENCY_BOUNDS_US, ListenerStats};
pub use workers::set_worker_threads;

/// The HTTP/1 wire pieces on their own (pure: bytes in, decisions and bytes out), public for the
/// fuzz targets and for tests: request and response heads, the chunked decoder.
pub mod http1 {
    pub use crate::h1::chunked::{ChunkError, Chunked, encode_chunk};
    pub use crate::h1::head::{
        Framing, HeadError, MAX_HEAD, MAX_HEADERS, RequestHead, ResponseHead, local_response,
        parse_request, parse_response, reframe,
    };
}

/// Opaque identity of a backend, e.g. `orders/1#7` (app/slot#generation).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub String);

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for BackendId {
    fn from(s: &str) -> Self {
        BackendId(s.to_owned())
    }
}

/// One ready instance.
#[derive(Debug, Clone)]
pub struct Backend {
    pub id: BackendId,
    pub addr: SocketAddr,
    /// Base weight, e.g. 100. 0 means: no new traffic.
    pub weight: u32,
    /// When the instance became ready: the start of its slow-start ramp.
    pub ready_at: Instant,
    /// Shown in stats, e.g. `release`.
    pub labels: BTreeMap<String, String>,
    /// An instance of another node reached through that node's relay (`addr` is the relay's).
    pub via: Option<relay::Via>,
}

impl Backend {
    /// A backend with weight 100, ready long ago (no slow start), no labels.
    pub fn new(id: impl Into<String>, addr: SocketAddr) -> Backend {
        let now = Instant::now();
        Backend {
            id: BackendId(id.into()),
            addr,
            weight: 100,
            ready_at: now.checked_sub(Duration::from_secs(86_400)).unwrap_or(now),
            labels: BTreeMap::new(),
            via: None,
        }
    }
}

/// The ready backends of one listener, replaced whole by [`Listener::update`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub backends: Vec<Backend>,
}

/// Whether an io error is this process running out of something (descriptors, memory,
/// buffers, local ports) rather than a fault of the peer: never held against a backend.
pub fn is_local_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc_codes::EMFILE
                | libc_codes::ENFILE
                | libc_codes::ENOBUFS
                | libc_codes::ENOMEM
                | libc_codes::EADDRNOTAVAIL
        )
    ) || e.kind() == io::ErrorKind::OutOfMemory
}

/// Linux errno values (the proxy has no libc dependency for four constants).
mod libc_codes {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
    /// On a connect: no local port left.
    pub const EADDRNOTAVAIL: i32 = 99;
}

/// What the accept loop and every connection task share.
pub(crate) struct Shared {
    pub name: String,
    pub mode: Mode,
    epoch: Instant,
    /// Settings in force; replaced whole by [`Listener::configure`].
    cfg: ArcSwap<ListenerConfig>,
    pub table: ArcSwap<Table>,
    registry: Mutex<HashMap<BackendId, Arc<BackendState>>>,
    /// Counters of backends forgotten since, so totals never go down.
    retired: Mutex<CounterView>,
    pub no_backend: AtomicU64,
    pub front: stats::FrontCounters,
    /// Warnings that could come thousands of times a second, logged at most once a second.
    pub warnings: throttle::Warnings,
    pub conns: Arc<Conns>,
    /// The snapshot in force, to rebuild the table when the balancing settings change.
    last: Mutex<Snapshot>,
    /// A relay listener's TLS acceptor.
    pub relay: arc_swap::ArcSwapOption<tokio_rustls::TlsAcceptor>,
}

impl Shared {
    pub fn config(&self) -> arc_swap::Guard<Arc<ListenerConfig>> {
        self.cfg.load()
    }

    fn balancing(&self) -> (Balance, Duration) {
        let c = self.cfg.load();
        (c.balance, c.slow_start)
    }

    pub fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    fn build_table(&self, snapshot: &Snapshot) -> Table {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut backends = Vec::with_capacity(snapshot.backends.len());
        for b in &snapshot.backends {
            let state = match registry.get(&b.id) {
                Some(s) if s.addr == b.addr && s.via == b.via => s.clone(),
                _ => {
                    let s = Arc::new(BackendState::new(
                        b.id.clone(),
                        b.addr,
                        b.via.clone(),
                        b.labels.clone(),
                        workers::workers().map_or(1, |w| w.len()),
                    ));
                    registry.insert(b.id.clone(), s.clone());
                    s
                }
            };
            state.removed.store(false, Ordering::SeqCst);
            backends.push(Entry {
                state,
                weight: b.weight,
                ready_at: b.ready_at,
            });
        }
        // Backends no longer listed: no pooled connections; forgotten once drained.
        registry.retain(|id, s| {
            if snapshot
                .backends
                .iter()
                .any(|b| &b.id == id && b.addr == s.addr && b.via == s.via)
            {
                return true;
            }
            s.removed.store(true, Ordering::SeqCst);
            s.pool.clear();
            let keep = s.in_flight.load(Ordering::SeqCst) > 0;
            if !keep {
                self.retired
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(&s.counters.view());
            }
            keep
        });
        let slow_start = self.balancing().1;
        let ramp_until = snapshot
            .backends
            .iter()
            .map(|b| b.ready_at + slow_start)
            .max();
        Table {
            base_weights: backends.iter().map(|e| u64::from(e.weight)).collect(),
            swrr: Mutex::new(vec![0; backends.len()]),
            backends,
            ramp_until,
        }
    }
}

/// A running listener: accepts on its address until shut down or dropped.
pub struct Listener {
    shared: Arc<Shared>,
    local: SocketAddr,
    accept: JoinHandle<()>,
    /// A duplicate of the listening socket, for a hand-over ([`Listener::socket`]); given up
    /// when the listener stops, so that a stopped address refuses rather than queues.
    socket: Option<std::net::TcpListener>,
}

/// How a [`Listener::hand_over`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandedOver {
    /// Every connection ended by itself within the grace.
    pub finished: bool,
    /// Connections still open at the end of the grace, closed then.
    pub cut: usize,
}

impl Listener {
    /// Binds now (an error names the listener and the address) and starts accepting with an
    /// empty snapshot (every request gets 503 until [`Listener::update`]).
    pub async fn bind(cfg: ListenerConfig) -> io::Result<Listener> {
        let addr = cfg.listen;
        let listener = bind_socket(addr).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {}: cannot listen on {addr}: {e}", cfg.name),
            )
        })?;
        Listener::start(cfg, listener.into_std()?, Snapshot::default())
    }

    /// Starts accepting on a socket that is already listening — one handed over by the
    /// listener that bound it (in this process or another: [`Listener::socket`]) — so the
    /// address is never closed in between. Connections wait in the socket's backlog until one
    /// of the listeners on it accepts them.
    pub async fn adopt(cfg: ListenerConfig, socket: std::net::TcpListener) -> io::Result<Listener> {
        Listener::adopt_serving(cfg, socket, Snapshot::default()).await
    }

    /// [`Listener::adopt`] with the backends to serve from its first accepted connection (a
    /// listener taking over from another: not one request may find it without backends).
    pub async fn adopt_serving(
        cfg: ListenerConfig,
        socket: std::net::TcpListener,
        snapshot: Snapshot,
    ) -> io::Result<Listener> {
        let local = socket.local_addr()?;
        // Port 0 (tests): any port, but the address must still be the one asked for.
        let same = if cfg.listen.port() == 0 {
            cfg.listen.ip() == local.ip()
        } else {
            cfg.listen == local
        };
        if !same {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "listener {}: the socket handed over listens on {local}, not on {}",
                    cfg.name, cfg.listen
                ),
            ));
        }
        if !is_listening(&socket)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "listener {}: the socket handed over for {local} is not listening",
                    cfg.name
                ),
            ));
        }
        socket.set_nonblocking(true)?;
        Listener::start(cfg, socket, snapshot)
    }

    fn start(
        cfg: ListenerConfig,
        listener: std::net::TcpListener,
        snapshot: Snapshot,
    ) -> io::Result<Listener> {
        let local = listener.local_addr()?;
        let relay = match cfg.mode {
            Mode::Relay => {
                let (acceptor, mutual) = relay::acceptor(cfg.relay_tls.as_ref())?;
                relay::install_client(mutual.client);
                Some(Arc::new(acceptor))
            }
            _ => None,
        };
        let socket = listener.try_clone()?;
        let shared = Arc::new(Shared {
            name: cfg.name.clone(),
            mode: cfg.mode,
            epoch: Instant::now(),
            table: ArcSwap::from_pointee(Table::empty()),
            registry: Mutex::new(HashMap::new()),
            retired: Mutex::new(CounterView::default()),
            no_backend: AtomicU64::new(0),
            front: stats::FrontCounters::default(),
            warnings: throttle::Warnings::default(),
            conns: Conns::new(),
            last: Mutex::new(Snapshot::default()),
            relay: arc_swap::ArcSwapOption::new(relay),
            cfg: ArcSwap::from_pointee(cfg),
        });
        if !snapshot.backends.is_empty() {
            let table = shared.build_table(&snapshot);
            shared.table.store(Arc::new(table));
            *shared.last.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        }
        let workers = workers::workers()?;
        let accept = workers
            .next()
            .spawn(accept::supervise(listener, shared.clone()));
        Ok(Listener {
            shared,
            local,
            accept,
            socket: Some(socket),
        })
    }

    /// A duplicate of the listening socket, for the listener that takes the address over
    /// ([`Listener::adopt`], in this process or, passed as a file descriptor, in another).
    pub fn socket(&self) -> io::Result<std::net::TcpListener> {
        match &self.socket {
            Some(s) => s.try_clone(),
            None => Err(io::Error::other("the listener is stopping")),
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Swaps in a new set of backends. Once this returns, a backend not in `snapshot` gets no
    /// new request; its in-flight ones run to completion.
    pub fn update(&self, snapshot: Snapshot) {
        let mut last = self.shared.last.lock().unwrap_or_else(|p| p.into_inner());
        let table = self.shared.build_table(&snapshot);
        self.shared.table.store(Arc::new(table));
        *last = snapshot;
    }

    /// Applies a listener's settings live (everything but `name`, `listen` and `mode`, which
    /// stay those it was bound with): new connections and new requests use them at once;
    /// nothing is re-bound and no connection is touched.
    pub fn configure(&self, cfg: &ListenerConfig) {
        let sh = &self.shared;
        let old = sh.cfg.load_full();
        let mut new = cfg.clone();
        new.name = old.name.clone();
        new.listen = old.listen;
        new.mode = old.mode;
        let rebuild = old.balance != new.balance || old.slow_start != new.slow_start;
        let raised = new.limits.max_connections > old.limits.max_connections;
        if new.mode == Mode::Relay && new.relay_tls != old.relay_tls {
            // New certificates: new connections use them; a bad set keeps the old ones.
            match relay::acceptor(new.relay_tls.as_ref()) {
                Ok((acceptor, mutual)) => {
                    relay::install_client(mutual.client);
                    sh.relay.store(Some(Arc::new(acceptor)));
                }
                Err(e) => {
                    tracing::warn!(listener = %sh.name, error = %e, "relay: new certificates refused, the old ones stay");
                    new.relay_tls = old.relay_tls.clone();
                }
            }
        }
        sh.cfg.store(Arc::new(new));
        if rebuild {
            let last = sh.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            self.update(last);
        }
        if raised {
            // The accept loop may be waiting at the old cap.
            sh.conns.reclaim();
        }
    }

    /// Changes the balancing method and the slow-start ramp of a running listener (see
    /// [`Listener::configure`]).
    pub fn set_balancing(&self, balance: Balance, slow_start: Duration) {
        let mut cfg = (*self.shared.cfg.load_full()).clone();
        cfg.balance = balance;
        cfg.slow_start = slow_start;
        self.configure(&cfg);
    }

    fn state(&self, id: &BackendId) -> Option<Arc<BackendState>> {
        self.shared
            .registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Requests (tcp: connections) still running on a backend, also after its removal.
    pub fn in_flight(&self, id: &BackendId) -> u64 {
        self.state(id)
            .map_or(0, |s| s.in_flight.load(Ordering::SeqCst))
    }

    /// Waits until nothing runs on `id` any more, or what runs cannot finish because the
    /// backend is hung; `false` if `timeout` came first. Event-driven: woken by the last
    /// in-flight request's end or by the stall probe's verdict.
    pub async fn drained(&self, id: &BackendId, timeout: Duration) -> bool {
        match self.state(id) {
            Some(s) => s.drained(timeout).await,
            None => true,
        }
    }

    /// [`Listener::drained`] as a future that does not borrow the listener (a watcher that
    /// must not keep the listener from being shut down meanwhile).
    pub fn drain_watch(
        &self,
        id: &BackendId,
        timeout: Duration,
    ) -> impl std::future::Future<Output = bool> + Send + use<> {
        let state = self.state(id);
        async move {
            match state {
                Some(s) => s.drained(timeout).await,
                None => true,
            }
        }
    }

    /// Counters per backend (current ones first, in snapshot order, then removed ones still
    /// known) and their totals.
    pub fn stats(&self) -> ListenerStats {
        let sh = &self.shared;
        let now = Instant::now();
        let now_ns = sh.nanos(now);
        let slow_start = sh.balancing().1;
        let table = sh.table.load();
        let mut backends = Vec::new();
        let mut totals = sh.retired.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut push = |s: &BackendState, in_snapshot: bool, weight: u32, effective_weight: u64| {
            let counters = s.counters.view();
            totals.add(&counters);
            let ejected = s.is_ejected(now_ns);
            backends.push(BackendStats {
                id: s.id.0.clone(),
                addr: s.addr,
                labels: s.labels.clone(),
                in_snapshot,
                weight,
                effective_weight,
                ejected,
                ejected_reason: s.eject_reason().map(|r| r.as_str().to_string()),
                hung: s.is_hung(),
                in_flight: s.in_flight.load(Ordering::SeqCst),
                idle_connections: s.pool.idle_len(),
                via: s.via.clone(),
                counters,
            });
        };
        for e in &table.backends {
            let eff = slow_start_weight(
                e.weight,
                now.saturating_duration_since(e.ready_at),
                slow_start,
            );
            push(&e.state, true, e.weight, eff);
        }
        let registry = sh.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut removed: Vec<_> = registry
            .values()
            .filter(|s| s.removed.load(Ordering::SeqCst))
            .collect();
        removed.sort_by(|a, b| a.id.cmp(&b.id));
        for s in removed {
            push(s, false, 0, 0);
        }
        ListenerStats {
            name: sh.name.clone(),
            listen: self.local,
            no_backend: sh.no_backend.load(Ordering::Relaxed),
            connections: sh.conns.live(),
            front: sh.front.view(
                sh.conns.reclaimed.load(Ordering::Relaxed),
                sh.conns.paused.load(Ordering::Relaxed),
            ),
            totals,
            backends,
        }
    }

    /// Hands the address over to the listener(s) holding a duplicate of its socket: stops
    /// accepting (the socket stays open in them, so no connection is refused), answers the
    /// next request on each open connection with `Connection: close` — idle keep-alive
    /// connections included: a client may be sending on one at this very moment — and
    /// returns once every connection has ended, or after `grace` (then what is left is
    /// closed). tcp-mode connections run until they end or the grace does.
    pub async fn hand_over(mut self, grace: Duration) -> HandedOver {
        self.socket = None;
        self.shared.conns.set_stop(HANDOVER);
        if self.shared.conns.wait_zero(grace).await {
            return HandedOver {
                finished: true,
                cut: 0,
            };
        }
        let cut = self.shared.conns.live();
        self.shared.conns.set_stop(HARD);
        self.shared.conns.wait_zero(Duration::from_secs(1)).await;
        HandedOver {
            finished: false,
            cut,
        }
    }

    /// Stops accepting, lets open connections finish their in-flight requests (idle keep-alive
    /// connections are closed at once) for up to `grace`, then closes what is left.
    pub async fn shutdown(mut self, grace: Duration) {
        self.socket = None;
        self.shared.conns.set_stop(GRACEFUL);
        if !self.shared.conns.wait_zero(grace).await {
            self.shared.conns.set_stop(HARD);
            self.shared.conns.wait_zero(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.shared.conns.set_stop(HARD);
        self.accept.abort();
    }
}

/// Whether `socket` is in the listening state (`SO_ACCEPTCONN`).
fn is_listening(socket: &std::net::TcpListener) -> io::Result<bool> {
    nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::AcceptConn)
        .map_err(io::Error::from)
}

/// A listening socket on `addr` as every listener binds it (`SO_REUSEADDR`, backlog 1024), for
/// a process that binds an address and hands the socket to the one that serves it
/// ([`Listener::adopt`]). The error names the address.
pub fn bind_listening(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use nix::sys::socket::{
        AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt,
        socket, sockopt,
    };
    let named = |e: nix::Error| {
        let e = io::Error::from(e);
        io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
    };
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).map_err(named)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(named)?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(named)?;
    listen(&fd, Backlog::new(1024).map_err(named)?).map_err(named)?;
    Ok(std::net::TcpListener::from(fd))
}

fn bind_socket(addr: SocketAddr) -> io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}
