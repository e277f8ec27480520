//! Keep-alive connections to one backend: per data-plane worker, a capped LIFO of idle
//! HTTP/1.1 connections.
//!
//! A connection is registered with the reactor of the worker that opened it, so it is only
//! ever reused by that worker: a connection used from another thread would have every one of
//! its readiness events cross threads (an eventfd write and a wake-up per request).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::h1::BackendConn;
use crate::workers;

type Idle = Mutex<VecDeque<(BackendConn, Instant)>>;

pub(crate) struct Pool {
    /// One per worker thread.
    idle: Vec<Idle>,
}

impl Pool {
    pub fn new(workers: usize) -> Pool {
        Pool {
            idle: (0..workers.max(1))
                .map(|_| Mutex::new(VecDeque::new()))
                .collect(),
        }
    }

    fn mine(&self) -> &Idle {
        &self.idle[workers::current() % self.idle.len()]
    }

    /// The most recently used idle connection of this worker that is still open. Connections
    /// idle longer than `idle_timeout` are dropped (closed) on the way; backends close idle ones
    /// on their own timers, and a fresher connection is less likely to be half-closed.
    pub fn checkout(&self, now: Instant, idle_timeout: Duration) -> Option<BackendConn> {
        let mut idle = self.mine().lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, since)) = idle.front() {
            if now.saturating_duration_since(*since) > idle_timeout {
                idle.pop_front();
            } else {
                break;
            }
        }
        while let Some((s, _)) = idle.pop_back() {
            if s.is_open() {
                return Some(s);
            }
        }
        None
    }

    /// Back into this worker's pool after its response ended; dropped (closed) beyond
    /// `max_idle` (in all, split evenly between the workers).
    pub fn checkin(&self, s: BackendConn, now: Instant, max_idle: usize) {
        let per_worker = max_idle.div_ceil(self.idle.len());
        let mut idle = self.mine().lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < per_worker {
            idle.push_back((s, now));
        }
    }

    pub fn clear(&self) {
        for idle in &self.idle {
            idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn idle_len(&self) -> usize {
        self.idle
            .iter()
            .map(|i| i.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}
