//! What the proxy knows about one backend across snapshots: counters, in-flight requests and
//! the drain that waits for them, the keep-alive pool, and passive outlier detection —
//! ejection after a refused or timed-out connect, after consecutive gateway failures, after a
//! response timeout, and when a stall probe finds the instance frozen.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::relay::Via;
use crate::upstream::Upstream;
use crate::{BackendId, Shared, pool, stats};

/// Why an instance was last taken out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EjectReason {
    /// It refused a connection, or the connect timed out.
    Connect = 1,
    /// Several exchanges in a row failed before a response (reset, closed, bad head).
    Failures = 2,
    /// A request got no response head within the response timeout.
    Timeout = 3,
    /// It had requests waiting, sent nothing, and did not answer the stall probe.
    Stalled = 4,
}

impl EjectReason {
    fn from_u8(v: u8) -> Option<EjectReason> {
        match v {
            1 => Some(EjectReason::Connect),
            2 => Some(EjectReason::Failures),
            3 => Some(EjectReason::Timeout),
            4 => Some(EjectReason::Stalled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EjectReason::Connect => "connect",
            EjectReason::Failures => "failures",
            EjectReason::Timeout => "timeout",
            EjectReason::Stalled => "stalled",
        }
    }
}

/// Per-backend state that outlives snapshots.
pub(crate) struct BackendState {
    pub id: BackendId,
    pub addr: SocketAddr,
    /// Another node's instance, reached through its relay at `addr`.
    pub via: Option<Via>,
    pub labels: BTreeMap<String, String>,
    pub counters: stats::Counters,
    pub in_flight: AtomicU64,
    drain_waiters: AtomicUsize,
    drained: Notify,
    /// Nanoseconds since the listener's epoch until which the backend is ejected.
    ejected_until: AtomicU64,
    last_reason: AtomicU8,
    /// Gateway failures in a row; reset by any response head.
    consecutive_failures: AtomicU32,
    /// Nanoseconds since the listener's epoch of the last byte read from this backend (or of a
    /// stall probe it answered).
    last_progress: AtomicU64,
    /// A stall probe is running.
    probing: AtomicBool,
    /// The stall probe found it frozen, and nothing came from it since.
    hung: AtomicBool,
    /// Fired when `hung` is set: waiting requests that can be replayed move on, and a drain
    /// stops waiting for requests that cannot finish.
    hung_notify: Notify,
    /// Not in the current snapshot: its connections are not pooled any more.
    pub removed: AtomicBool,
    pub pool: pool::Pool,
}

impl BackendState {
    pub fn new(
        id: BackendId,
        addr: SocketAddr,
        via: Option<Via>,
        labels: BTreeMap<String, String>,
        workers: usize,
    ) -> BackendState {
        BackendState {
            id,
            addr,
            via,
            labels,
            counters: stats::Counters::default(),
            in_flight: AtomicU64::new(0),
            drain_waiters: AtomicUsize::new(0),
            drained: Notify::new(),
            ejected_until: AtomicU64::new(0),
            last_reason: AtomicU8::new(0),
            consecutive_failures: AtomicU32::new(0),
            last_progress: AtomicU64::new(0),
            probing: AtomicBool::new(false),
            hung: AtomicBool::new(false),
            hung_notify: Notify::new(),
            removed: AtomicBool::new(false),
            pool: pool::Pool::new(workers),
        }
    }

    /// Ejects for the listener's `eject_for` from `now`; counted (and logged) once per
    /// ejection, however many concurrent requests saw the failure.
    pub fn eject(&self, sh: &Shared, now: Instant, reason: EjectReason) {
        let until = sh.nanos(now + sh.config().outlier.eject_for);
        let prev = self.ejected_until.swap(until, Ordering::Relaxed);
        self.last_reason.store(reason as u8, Ordering::Relaxed);
        self.pool.clear();
        if prev > sh.nanos(now) {
            return;
        }
        self.counters.ejections.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(listener = %sh.name, backend = %self.id, addr = %self.addr, reason = reason.as_str(), "backend ejected");
    }

    pub fn is_ejected(&self, now_ns: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ns
    }

    pub fn eject_reason(&self) -> Option<EjectReason> {
        EjectReason::from_u8(self.last_reason.load(Ordering::Relaxed))
    }

    /// A response head came: the backend works.
    pub fn succeeded(&self) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
    }

    /// An exchange failed at the gateway level before a response (reset, closed, bad head);
    /// ejects once `failures` happened in a row.
    pub fn failed(&self, sh: &Shared, now: Instant) {
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let limit = sh.config().outlier.failures;
        if limit > 0 && n >= limit {
            self.eject(sh, now, EjectReason::Failures);
        }
    }

    /// Bytes came from the backend at `now_ns`.
    pub fn progress(&self, now_ns: u64) {
        self.last_progress.store(now_ns, Ordering::Relaxed);
        if self.hung.load(Ordering::Relaxed) {
            self.hung.store(false, Ordering::Relaxed);
        }
    }

    pub fn is_hung(&self) -> bool {
        self.hung.load(Ordering::SeqCst)
    }

    /// Waits until the backend is found hung (returns at once if it is).
    pub async fn wait_hung(&self) {
        loop {
            let notified = self.hung_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_hung() {
                return;
            }
            notified.await;
        }
    }

    /// A request has waited `stall` for its response head: when nothing at all came from the
    /// backend for as long, a probe on a fresh connection decides whether it is frozen.
    pub fn suspect(self: &Arc<Self>, sh: &Arc<Shared>, now: Instant) {
        let outlier = &sh.config().outlier;
        if outlier.stall.is_zero() {
            return;
        }
        let last = self.last_progress.load(Ordering::Relaxed);
        if sh.nanos(now).saturating_sub(last) < duration_ns(outlier.stall) {
            return;
        }
        if self.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let b = self.clone();
        let sh = sh.clone();
        tokio::spawn(async move {
            let (path, timeout) = {
                let cfg = sh.config();
                (cfg.outlier.probe_path.clone(), cfg.outlier.probe_timeout)
            };
            b.counters.stall_probes.fetch_add(1, Ordering::Relaxed);
            let alive = tokio::time::timeout(timeout, probe(&b, &path, timeout)).await;
            let now = Instant::now();
            match alive {
                Ok(Ok(())) => b.progress(sh.nanos(now)),
                Ok(Err(e)) if crate::is_local_exhaustion(&e) => {}
                _ => {
                    b.eject(&sh, now, EjectReason::Stalled);
                    b.hung.store(true, Ordering::SeqCst);
                    b.hung_notify.notify_waiters();
                    if b.drain_waiters.load(Ordering::SeqCst) > 0 {
                        b.drained.notify_waiters();
                    }
                }
            }
            b.probing.store(false, Ordering::SeqCst);
        });
    }

    /// Waits until nothing runs on this backend any more, or what runs cannot finish (it is
    /// hung); `false` if `timeout` came first.
    pub async fn drained(&self, timeout: Duration) -> bool {
        self.drain_waiters.fetch_add(1, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        let done = loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 || self.is_hung() {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break self.in_flight.load(Ordering::SeqCst) == 0 || self.is_hung();
            }
        };
        self.drain_waiters.fetch_sub(1, Ordering::SeqCst);
        done
    }
}

fn duration_ns(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// The stall probe: any status line on a fresh connection means the instance still answers.
async fn probe(b: &BackendState, path: &str, timeout: Duration) -> io::Result<()> {
    let addr = b.addr;
    let mut s = Upstream::connect(b, timeout).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: jarfleet-stall-probe\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = [0u8; 16];
    let mut got = 0;
    while got < 9 {
        let n = s.read(&mut buf[got..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a status line",
            ));
        }
        got += n;
    }
    if buf.starts_with(b"HTTP/1.") {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an HTTP response",
        ))
    }
}

/// Holds one in-flight request (or tcp connection, or tunnel) on a backend.
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
