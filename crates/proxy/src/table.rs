//! One snapshot as the data plane uses it, and the pick of a backend for a request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::backend::{BackendState, InFlight};
use crate::{Balance, Shared, p2c, slow_start_weight, swrr};

pub(crate) struct Entry {
    pub state: Arc<BackendState>,
    pub weight: u32,
    pub ready_at: Instant,
}

pub(crate) struct Table {
    pub backends: Vec<Entry>,
    pub base_weights: Vec<u64>,
    /// When the last slow-start ramp ends (`None`: no ramp running).
    pub ramp_until: Option<Instant>,
    pub swrr: Mutex<Vec<i64>>,
}

impl Table {
    pub fn empty() -> Table {
        Table {
            backends: Vec::new(),
            base_weights: Vec::new(),
            ramp_until: None,
            swrr: Mutex::new(Vec::new()),
        }
    }

    /// The next backend, `exclude` aside (those that failed this request).
    pub fn pick(&self, sh: &Shared, now: Instant, exclude: &[usize]) -> Option<usize> {
        let n = self.backends.len();
        let now_ns = sh.nanos(now);
        let allowed = |i: usize| !exclude.contains(&i) && self.backends[i].weight > 0;
        let any_healthy = (0..n).any(|i| allowed(i) && !self.backends[i].state.is_ejected(now_ns));
        let eligible =
            |i: usize| allowed(i) && (!any_healthy || !self.backends[i].state.is_ejected(now_ns));
        let (balance, slow_start) = sh.balancing();
        let ramping = self.ramp_until.is_some_and(|t| now < t);
        let weights: std::borrow::Cow<'_, [u64]> = if ramping {
            self.backends
                .iter()
                .map(|b| {
                    slow_start_weight(
                        b.weight,
                        now.saturating_duration_since(b.ready_at),
                        slow_start,
                    )
                })
                .collect::<Vec<_>>()
                .into()
        } else {
            (&self.base_weights[..]).into()
        };
        match balance {
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

/// Tries one request (or tcp connection) gets: the first and up to three more, each on an
/// instance that has not failed it (HAProxy's `retries 3` with `option redispatch`; nginx's
/// `proxy_next_upstream` goes through every server). Two instances going down together — a
/// host lost with its instances — still leave a request a live one to go to.
pub(crate) const ATTEMPTS: usize = 4;

/// Picks a backend and enters it (in-flight + 1). Should `update` have removed the backend
/// between our table load and the enter, the enter is undone and the pick is redone on the
/// current table: once `update` has returned, a removed backend gets no new request, and
/// `drained` cannot miss one that was about to start. `exclude` is remapped to the new table.
pub(crate) fn enter(
    sh: &Shared,
    table: &mut Arc<Table>,
    exclude: &mut Vec<usize>,
) -> Option<(usize, InFlight)> {
    for _ in 0..8 {
        let idx = table.pick(sh, Instant::now(), exclude)?;
        let guard = InFlight::enter(&table.backends[idx].state);
        if !guard.backend().removed.load(Ordering::SeqCst) {
            return Some((idx, guard));
        }
        drop(guard);
        let excluded: Vec<_> = exclude
            .iter()
            .filter_map(|i| table.backends.get(*i))
            .map(|e| e.state.clone())
            .collect();
        *table = sh.table.load_full();
        *exclude = excluded
            .iter()
            .filter_map(|x| table.backends.iter().position(|e| Arc::ptr_eq(&e.state, x)))
            .collect();
    }
    None
}
