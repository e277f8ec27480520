//! jarfleet's load balancer: the data plane only.
//!
//! The proxy knows nothing about processes, specs or the store. The control loop hands each
//! [`Listener`] an immutable [`Snapshot`] of the ready backends; the proxy moves bytes, picks
//! backends, retries, ejects and counts.
//!
//! # How a request flows (`Mode::Http`)
//!
//! 1. The listener accepts a connection (TCP_NODELAY) and hands it to one of the data-plane
//!    worker threads (`workers`), which serves it to its end: HTTP/1.1 with keep-alive, heads
//!    parsed with `httparse` and rewritten in one pass, bodies copied through a fixed buffer
//!    (`h1`).
//! 2. For each request the handler loads the current table (one atomic `Arc` load) and picks a
//!    backend: smooth weighted round-robin or power-of-two-choices least-request over the
//!    backends that are not ejected (all of them if every one is), with each weight ramped by
//!    slow start. No backend at all: `503` naming the app.
//! 3. Hop-by-hop headers are stripped, `X-Forwarded-For` is appended to, `X-Forwarded-Proto`
//!    (`http`) and `X-Forwarded-Host` (the client's `Host`) are set; `Host` is kept.
//! 4. The request goes out on an idle keep-alive connection of that backend opened by the same
//!    worker (LIFO, capped at `max_idle_per_backend`) or a fresh one. The request body is
//!    *streamed* (never buffered).
//! 5. Failures before any response byte:
//!    - connect error: the backend is ejected for `eject_for`, and the request, which was never
//!      sent, goes to another backend once, whatever its method;
//!    - a pooled connection that turns out closed: the request is sent again on a fresh
//!      connection to the same backend (not an error: backends close idle connections) when it
//!      was not written yet or is replayable;
//!    - the backend took the request and then failed (reset, closed before the status line): a
//!      *replayable* request — idempotent method (RFC 9110: GET, HEAD, OPTIONS, PUT, DELETE,
//!      TRACE) and no body — is retried once on another backend; anything else gets `502`.
//!      Requests with a body are not retried after they were sent: the body was streamed and
//!      is gone.
//! 6. The response head is counted (status class, latency to the head) and the response body is
//!    streamed back. When it ends, the backend connection returns to the pool.
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
//! request. In tcp mode the guard lives as
//! long as the proxied connection. [`Listener::drained`] waits on a `Notify` that the guard
//! fires when a backend's in-flight count reaches zero while someone waits: no polling. The
//! control loop's stop sequence is `update` (without the instance) → `drained` → SIGTERM.
//!
//! # Ejection
//!
//! A connect error ejects a backend for `eject_for` (5 s by default) regardless of snapshots:
//! the control loop's readiness probe runs on its own period and may still list a killed
//! instance, and a restarted instance comes back under a new id, which starts un-ejected.
//! Ejected backends are skipped unless all of them are ejected.
//!
//! # `Mode::Tcp`
//!
//! One backend per client connection, `copy_bidirectional`; a connect failure ejects the
//! backend and tries another once; no backend: the client connection is closed.

mod balance;
mod config;
mod h1;
mod limits;
mod pool;
mod stats;
mod tcp;
mod workers;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpSocket;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use balance::{is_idempotent, p2c, slow_start_weight, swrr};
pub use config::{Balance, Limits, ListenerConfig, Mode, Outlier, Timeouts};
pub use limits::{connection_budget, set_connection_budget};
pub use stats::{BackendStats, CounterView, LATENCY_BOUNDS_US, ListenerStats};
pub use workers::set_worker_threads;

/// The HTTP/1 wire pieces on their own (pure: bytes in, decisions and bytes out), public for the
/// fuzz targets and for tests: request and response heads, the chunked decoder.
pub mod http1 {
    pub use crate::h1::chunked::{ChunkError, Chunked};
    pub use crate::h1::head::{
        Framing, HeadError, MAX_HEAD, MAX_HEADERS, RequestHead, ResponseHead, local_response,
        parse_request, parse_response,
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
        }
    }
}

/// The ready backends of one listener, replaced whole by [`Listener::update`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub backends: Vec<Backend>,
}

/// Per-backend state that outlives snapshots.
pub(crate) struct BackendState {
    pub id: BackendId,
    pub addr: SocketAddr,
    pub labels: BTreeMap<String, String>,
    pub counters: stats::Counters,
    pub in_flight: AtomicU64,
    drain_waiters: AtomicUsize,
    drained: Notify,
    /// Nanoseconds since the listener's epoch until which the backend is ejected.
    ejected_until: AtomicU64,
    /// Not in the current snapshot: its connections are not pooled any more.
    pub removed: AtomicBool,
    pub pool: pool::Pool,
}

impl BackendState {
    /// Ejects for `eject_for` from `now`; counted (and logged) once per ejection, however many
    /// concurrent requests saw the connect error.
    pub fn eject(&self, sh: &Shared, now: Instant) {
        let until = sh.nanos(now + sh.cfg.outlier.eject_for);
        let prev = self.ejected_until.swap(until, Ordering::Relaxed);
        self.pool.clear();
        if prev > sh.nanos(now) {
            return;
        }
        self.counters.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(listener = %sh.cfg.name, backend = %self.id, addr = %self.addr, "backend ejected after a connect error");
    }

    fn is_ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ns
    }
}

/// Holds one in-flight request (or tcp connection) on a backend.
pub(crate) struct InFlight(Arc<BackendState>);

impl InFlight {
    pub fn enter(b: &Arc<BackendState>) -> InFlight {
        b.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(b.clone())
    }

    pub fn backend(&self) -> &Arc<BackendState> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.drain_waiters.load(Ordering::SeqCst) > 0
        {
            self.0.drained.notify_waiters();
        }
    }
}

pub(crate) struct Entry {
    pub state: Arc<BackendState>,
    pub weight: u32,
    pub ready_at: Instant,
}

/// One snapshot, as the data plane uses it.
pub(crate) struct Table {
    pub backends: Vec<Entry>,
    base_weights: Vec<u64>,
    /// When the last slow-start ramp ends (`None`: no ramp running).
    ramp_until: Option<Instant>,
    swrr: Mutex<Vec<i64>>,
}

impl Table {
    /// The next backend, `exclude` aside (the one that just failed).
    pub fn pick(&self, sh: &Shared, now: Instant, exclude: Option<usize>) -> Option<usize> {
        let n = self.backends.len();
        let now_ns = sh.nanos(now);
        let allowed = |i: usize| Some(i) != exclude && self.backends[i].weight > 0;
        let any_healthy = (0..n).any(|i| allowed(i) && !self.backends[i].state.is_ejected(now_ns));
        let eligible =
            |i: usize| allowed(i) && (!any_healthy || !self.backends[i].state.is_ejected(now_ns));
        let ramping = self.ramp_until.is_some_and(|t| now < t);
        let weights: std::borrow::Cow<'_, [u64]> = if ramping {
            self.backends
                .iter()
                .map(|b| {
                    slow_start_weight(
                        b.weight,
                        now.saturating_duration_since(b.ready_at),
                        sh.slow_start(),
                    )
                })
                .collect::<Vec<_>>()
                .into()
        } else {
            (&self.base_weights[..]).into()
        };
        match sh.balance() {
            Balance::RoundRobin => {
                let mut current = self.swrr.lock().unwrap_or_else(|p| p.into_inner());
                swrr(&mut current, &weights, eligible)
            }
            Balance::LeastRequest => {
                let candidates: Vec<usize> = (0..n).filter(|&i| eligible(i)).collect();
                let load = |i: usize| {
                    (
                        self.backends[i].state.in_flight.load(Ordering::Relaxed),
                        weights[i],
                    )
                };
                p2c(&candidates, load, rand_u64(), rand_u64())
            }
        }
    }
}

fn rand_u64() -> u64 {
    use std::cell::Cell;
    use std::hash::{BuildHasher, RandomState};
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(std::thread::current().id()) | 1);
    }
    STATE.with(|s| {
        // xorshift64*
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    })
}

/// Picks a backend and enters it (in-flight + 1). Should `update` have removed the backend
/// between our table load and the enter, the enter is undone and the pick is redone on the
/// current table: once `update` has returned, a removed backend gets no new request, and
/// `drained` cannot miss one that was about to start. `exclude` is remapped to the new table.
pub(crate) fn enter(
    sh: &Shared,
    table: &mut Arc<Table>,
    exclude: &mut Option<usize>,
) -> Option<(usize, InFlight)> {
    for _ in 0..8 {
        let idx = table.pick(sh, Instant::now(), *exclude)?;
        let guard = InFlight::enter(&table.backends[idx].state);
        if !guard.backend().removed.load(Ordering::SeqCst) {
            return Some((idx, guard));
        }
        drop(guard);
        let excluded = exclude
            .and_then(|i| table.backends.get(i))
            .map(|e| e.state.clone());
        *table = sh.table.load_full();
        *exclude = excluded.and_then(|x| {
            table
                .backends
                .iter()
                .position(|e| Arc::ptr_eq(&e.state, &x))
        });
    }
    None
}

/// What the accept loop and every connection task share.
pub(crate) struct Shared {
    pub cfg: ListenerConfig,
    epoch: Instant,
    pub table: ArcSwap<Table>,
    registry: Mutex<HashMap<BackendId, Arc<BackendState>>>,
    /// Counters of backends forgotten since, so totals never go down.
    retired: Mutex<CounterView>,
    pub no_backend: AtomicU64,
    /// `Balance` as 0 (round-robin) or 1 (least-request); changed live by `set_balancing`.
    balance: std::sync::atomic::AtomicU8,
    slow_start_ms: AtomicU64,
    /// The snapshot in force, to rebuild the table when the balancing settings change.
    last: Mutex<Snapshot>,
}

impl Shared {
    fn balance(&self) -> Balance {
        match self.balance.load(Ordering::Relaxed) {
            1 => Balance::LeastRequest,
            _ => Balance::RoundRobin,
        }
    }

    fn slow_start(&self) -> Duration {
        Duration::from_millis(self.slow_start_ms.load(Ordering::Relaxed))
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch)
            .as_nanos()
            .min(u128::from(u64::MAX)) as u64
    }

    fn build_table(&self, snapshot: &Snapshot) -> Table {
        let mut registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        let mut backends = Vec::with_capacity(snapshot.backends.len());
        for b in &snapshot.backends {
            let state = match registry.get(&b.id) {
                Some(s) if s.addr == b.addr => s.clone(),
                _ => {
                    let s = Arc::new(BackendState {
                        id: b.id.clone(),
                        addr: b.addr,
                        labels: b.labels.clone(),
                        counters: stats::Counters::default(),
                        in_flight: AtomicU64::new(0),
                        drain_waiters: AtomicUsize::new(0),
                        drained: Notify::new(),
                        ejected_until: AtomicU64::new(0),
                        removed: AtomicBool::new(false),
                        pool: pool::Pool::new(
                            self.cfg.limits.max_idle_per_backend,
                            self.cfg.timeouts.backend_idle,
                            workers::workers().map_or(1, |w| w.len()),
                        ),
                    });
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
                .any(|b| &b.id == id && b.addr == s.addr)
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
        let ramp_until = snapshot
            .backends
            .iter()
            .map(|b| b.ready_at + self.slow_start())
            .max();
        Table {
            base_weights: backends.iter().map(|e| u64::from(e.weight)).collect(),
            swrr: Mutex::new(vec![0; backends.len()]),
            backends,
            ramp_until,
        }
    }
}

const RUNNING: u8 = 0;
const GRACEFUL: u8 = 1;
const HARD: u8 = 2;

/// Counts live client connections; `zero` fires when the last one ends.
#[derive(Default)]
pub(crate) struct Conns {
    live: AtomicUsize,
    zero: Notify,
}

pub(crate) struct ConnToken(Arc<Conns>);

impl ConnToken {
    fn new(c: &Arc<Conns>) -> ConnToken {
        c.live.fetch_add(1, Ordering::SeqCst);
        ConnToken(c.clone())
    }
}

impl Drop for ConnToken {
    fn drop(&mut self) {
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl Conns {
    async fn wait_zero(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live.load(Ordering::SeqCst) == 0;
            }
        }
    }
}

/// A running listener: accepts on its address until shut down or dropped.
pub struct Listener {
    shared: Arc<Shared>,
    local: SocketAddr,
    stop: watch::Sender<u8>,
    conns: Arc<Conns>,
    accept: JoinHandle<()>,
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
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            epoch: Instant::now(),
            table: ArcSwap::from_pointee(Table {
                backends: Vec::new(),
                base_weights: Vec::new(),
                ramp_until: None,
                swrr: Mutex::new(Vec::new()),
            }),
            registry: Mutex::new(HashMap::new()),
            retired: Mutex::new(CounterView::default()),
            no_backend: AtomicU64::new(0),
            balance: std::sync::atomic::AtomicU8::new(balance_code(cfg.balance)),
            slow_start_ms: AtomicU64::new(
                cfg.slow_start.as_millis().min(u128::from(u64::MAX)) as u64
            ),
            last: Mutex::new(Snapshot::default()),
            cfg,
        });
        let (stop, stop_rx) = watch::channel(RUNNING);
        let conns = Arc::new(Conns::default());
        let workers = workers::workers()?;
        let listener = listener.into_std()?;
        let accept = workers.next().spawn(accept_loop(
            listener,
            shared.clone(),
            stop_rx,
            conns.clone(),
        ));
        Ok(Listener {
            shared,
            local,
            stop,
            conns,
            accept,
        })
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

    /// Changes the balancing method and the slow-start ramp of a running listener: new requests
    /// use them at once, nothing is re-bound and no connection is touched.
    pub fn set_balancing(&self, balance: Balance, slow_start: Duration) {
        let sh = &self.shared;
        let same = sh.balance() == balance && sh.slow_start() == slow_start;
        if same {
            return;
        }
        sh.balance.store(balance_code(balance), Ordering::Relaxed);
        sh.slow_start_ms.store(
            slow_start.as_millis().min(u128::from(u64::MAX)) as u64,
            Ordering::Relaxed,
        );
        let last = sh.last.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.update(last);
    }

    /// Applies a listener's settings live (everything but `listen` and `mode`, which need a new
    /// listener): new connections and new requests use them at once; nothing is re-bound.
    pub fn configure(&self, cfg: &ListenerConfig) {
        self.set_balancing(cfg.balance, cfg.slow_start);
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

    /// Waits until nothing runs on `id` any more; `false` if `timeout` came first.
    /// Event-driven: woken by the last in-flight request's end.
    pub async fn drained(&self, id: &BackendId, timeout: Duration) -> bool {
        let Some(s) = self.state(id) else { return true };
        s.drain_waiters.fetch_add(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        let done = loop {
            let notified = s.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if s.in_flight.load(Ordering::SeqCst) == 0 {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break s.in_flight.load(Ordering::SeqCst) == 0;
            }
        };
        s.drain_waiters.fetch_sub(1, Ordering::SeqCst);
        done
    }

    /// Counters per backend (current ones first, in snapshot order, then removed ones still
    /// known) and their totals.
    pub fn stats(&self) -> ListenerStats {
        let sh = &self.shared;
        let now = Instant::now();
        let now_ns = sh.nanos(now);
        let table = sh.table.load();
        let mut backends = Vec::new();
        let mut totals = sh.retired.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut push = |s: &BackendState, in_snapshot: bool, weight: u32, effective_weight: u64| {
            let counters = s.counters.view();
            totals.add(&counters);
            backends.push(BackendStats {
                id: s.id.0.clone(),
                addr: s.addr,
                labels: s.labels.clone(),
                in_snapshot,
                weight,
                effective_weight,
                ejected: s.is_ejected(now_ns),
                in_flight: s.in_flight.load(Ordering::SeqCst),
                idle_connections: s.pool.idle_len(),
                counters,
            });
        };
        for e in &table.backends {
            let eff = slow_start_weight(
                e.weight,
                now.saturating_duration_since(e.ready_at),
                sh.slow_start(),
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
            name: sh.cfg.name.clone(),
            listen: self.local,
            no_backend: sh.no_backend.load(Ordering::Relaxed),
            totals,
            backends,
        }
    }

    /// Stops accepting, lets open connections finish their in-flight requests (idle keep-alive
    /// connections are closed at once) for up to `grace`, then closes what is left.
    pub async fn shutdown(self, grace: Duration) {
        self.stop.send_replace(GRACEFUL);
        if !self.conns.wait_zero(grace).await {
            self.stop.send_replace(HARD);
            self.conns.wait_zero(Duration::from_secs(1)).await;
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.send_replace(HARD);
        self.accept.abort();
    }
}

fn balance_code(b: Balance) -> u8 {
    match b {
        Balance::RoundRobin => 0,
        Balance::LeastRequest => 1,
    }
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

/// Accepts on one worker and hands each connection to the next worker, where it is registered
/// with that worker's reactor and served to its end.
async fn accept_loop(
    listener: std::net::TcpListener,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<u8>,
    conns: Arc<Conns>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listener = %sh.cfg.name, error = %e, "cannot accept");
            return;
        }
    };
    let Ok(workers) = workers::workers() else {
        return;
    };
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let token = ConnToken::new(&conns);
                    let sh = sh.clone();
                    let stop = stop.clone();
                    let Ok(stream) = stream.into_std() else { continue };
                    workers.next().spawn(async move {
                        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { return };
                        match sh.cfg.mode {
                            Mode::Http => h1::serve(sh, stream, peer, stop, token).await,
                            Mode::Tcp => tcp::serve(sh, stream, stop, token).await,
                        }
                    });
                }
                Err(e) => {
                    // EMFILE and friends: back off a little instead of spinning.
                    tracing::warn!(listener = %sh.cfg.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() != RUNNING {
                    return;
                }
            }
        }
    }
}
