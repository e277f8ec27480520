//! Client connections: how many each listener and the whole process hold, the caps, and the
//! reclaim of idle connections when a cap is reached.
//!
//! Every accepted connection holds a [`ConnToken`] counted against its listener's
//! `max_connections` and against the process-wide budget ([`crate::set_connection_budget`]).
//! At a cap the accept loop stops accepting — new connections wait in the kernel's backlog —
//! and asks idle connections (waiting for their first or next request, with nothing buffered)
//! to close, the oldest-idle first in effect: only those idle for at least
//! [`RECLAIM_MIN_IDLE`] go, so a busy keep-alive client between two requests is spared. As
//! nginx does with its "reusable" connections: a flood of idle connections can delay new
//! clients by a moment, never lock them out, and never takes the descriptors the control
//! plane needs.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::{Notify, watch};

/// The stop levels, in order (a listener's level only ever rises).
pub(crate) const RUNNING: u8 = 0;
/// Handing the address over to another listener on the same socket: no more accepts; each open
/// connection's next response says `Connection: close` and the connection ends after it. Idle
/// keep-alive connections are *not* closed — a client may be sending on one right now — but
/// answered once more.
pub(crate) const HANDOVER: u8 = 1;
/// Shutting down: no more accepts, idle connections close, busy ones after their exchange.
pub(crate) const GRACEFUL: u8 = 2;
pub(crate) const HARD: u8 = 3;

/// A connection idle for less than this is not reclaimed.
pub(crate) const RECLAIM_MIN_IDLE: Duration = Duration::from_millis(500);

/// What a listener tells its connections: stop (graceful or hard), or close if idle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    pub stop: u8,
    /// Bumped when idle connections should close to make room.
    pub reclaim: u64,
}

/// One listener's client connections.
pub(crate) struct Conns {
    live: AtomicUsize,
    zero: Notify,
    pub signal: watch::Sender<Signal>,
    /// Idle connections closed to make room.
    pub reclaimed: AtomicU64,
    /// Times the listener stopped accepting at a cap.
    pub paused: AtomicU64,
}

static GLOBAL_LIVE: AtomicUsize = AtomicUsize::new(0);
static CLOSE_WAITERS: AtomicUsize = AtomicUsize::new(0);
static CLOSED: Notify = Notify::const_new();
static LISTENERS: Mutex<Vec<Weak<Conns>>> = Mutex::new(Vec::new());

/// Which cap stops a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    Free,
    ListenerFull,
    ProcessFull,
}

impl Conns {
    pub fn new() -> Arc<Conns> {
        let (signal, _) = watch::channel(Signal::default());
        let c = Arc::new(Conns {
            live: AtomicUsize::new(0),
            zero: Notify::new(),
            signal,
            reclaimed: AtomicU64::new(0),
            paused: AtomicU64::new(0),
        });
        let mut all = LISTENERS.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&c));
        c
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    pub fn room(&self, max_connections: usize) -> Room {
        if self.live() >= max_connections {
            Room::ListenerFull
        } else if GLOBAL_LIVE.load(Ordering::SeqCst) >= crate::connection_budget() {
            Room::ProcessFull
        } else {
            Room::Free
        }
    }

    /// Asks this listener's idle connections to close.
    pub fn reclaim(&self) {
        self.signal
            .send_modify(|s| s.reclaim = s.reclaim.wrapping_add(1));
    }

    /// Asks every listener's idle connections to close (the process is at its budget, or out
    /// of descriptors).
    pub fn reclaim_everywhere() {
        let all: Vec<Arc<Conns>> = LISTENERS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for c in all {
            c.reclaim();
        }
    }

    pub fn set_stop(&self, stop: u8) {
        self.signal.send_modify(|s| s.stop = s.stop.max(stop));
    }

    /// The room for one more connection; when there is none, waits (for at most `timeout`)
    /// until some client connection of the process closes, and says which cap was hit.
    pub async fn wait_for_room(&self, max_connections: usize, timeout: Duration) -> Room {
        CLOSE_WAITERS.fetch_add(1, Ordering::SeqCst);
        let notified = CLOSED.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let room = self.room(max_connections);
        if room != Room::Free {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
        CLOSE_WAITERS.fetch_sub(1, Ordering::SeqCst);
        room
    }

    /// Waits until this listener has no connection left; `false` if `timeout` came first.
    pub async fn wait_zero(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.zero.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.live() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.live() == 0;
            }
        }
    }
}

/// One live client connection, counted until dropped.
pub(crate) struct ConnToken(Arc<Conns>);

impl ConnToken {
    pub fn new(c: &Arc<Conns>) -> ConnToken {
        c.live.fetch_add(1, Ordering::SeqCst);
        GLOBAL_LIVE.fetch_add(1, Ordering::SeqCst);
        ConnToken(c.clone())
    }

    pub fn signal(&self) -> watch::Receiver<Signal> {
        self.0.signal.subscribe()
    }

    /// This connection closes to make room (counted).
    pub fn reclaimed(&self) {
        self.0.reclaimed.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for ConnToken {
    fn drop(&mut self) {
        GLOBAL_LIVE.fetch_sub(1, Ordering::SeqCst);
        if self.0.live.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.zero.notify_waiters();
        }
        if CLOSE_WAITERS.load(Ordering::SeqCst) > 0 {
            CLOSED.notify_waiters();
        }
    }
}

/// Client connections held by every listener of the process.
pub fn process_connections() -> usize {
    GLOBAL_LIVE.load(Ordering::SeqCst)
}
