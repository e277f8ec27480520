//! The data plane's own threads: each runs a single-threaded tokio runtime, and every client
//! connection lives on one of them for its whole life.
//!
//! A connection's task then never migrates between threads, its wake-ups never cross a
//! thread, and an idle worker sleeps in its own `epoll_wait` instead of parking and being
//! unparked by a work-stealing scheduler. On the 2-core benchmark machine this took the proxy
//! from ~0.5 to ~0.35 context switches per request and from below nginx's throughput to above
//! it (docs/BENCHMARKS.md). Each listener accepts on one worker and hands connections to the
//! workers in turn; the listening socket is bound once, without `SO_REUSEPORT`, so a second
//! process can never silently share a listen address.
//!
//! The workers start with the first listener (none for a daemon without load balancers) and
//! live as long as the process. Their number is [`set_worker_threads`] if called before, else
//! the number of CPUs (at most 8).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;

pub(crate) struct Workers {
    handles: Vec<Handle>,
    next: AtomicUsize,
}

static WORKERS: OnceLock<Workers> = OnceLock::new();
static WANTED: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's worker index (0 on threads that are not workers).
    static CURRENT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The index of the worker running the caller.
pub(crate) fn current() -> usize {
    CURRENT.with(std::cell::Cell::get)
}

/// Sets the number of data-plane threads; only effective before the first listener is bound.
/// Returns `false` when the workers run already.
pub fn set_worker_threads(n: usize) -> bool {
    WANTED.store(n.max(1), Ordering::SeqCst);
    WORKERS.get().is_none()
}

/// The data-plane threads, started on first use.
pub(crate) fn workers() -> std::io::Result<&'static Workers> {
    if let Some(w) = WORKERS.get() {
        return Ok(w);
    }
    let n = match WANTED.load(Ordering::SeqCst) {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get().min(8)),
        n => n,
    };
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name(format!("jarfleet-proxy-{i}"))
            .spawn(move || {
                CURRENT.with(|c| c.set(i));
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(std::future::pending::<()>());
            })?;
        let handle = rx
            .recv()
            .map_err(|_| std::io::Error::other("a proxy worker thread died at start"))??;
        handles.push(handle);
    }
    // Another thread may have won the race: its workers are used, these idle forever (the
    // race needs two first binds at once, and costs two sleeping threads).
    Ok(WORKERS.get_or_init(|| Workers {
        handles,
        next: AtomicUsize::new(0),
    }))
}

impl Workers {
    /// The worker that takes the next connection (round robin).
    pub fn next(&self) -> &Handle {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len();
        &self.handles[i]
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }
}
