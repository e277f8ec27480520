//! Keep-alive connections to one backend: a capped LIFO of idle HTTP/1.1 connections.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::h1::BackendConn as Sender;

pub(crate) struct Pool {
    idle: Mutex<VecDeque<(Sender, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used idle connection that is still open. Connections idle longer than
    /// `idle_timeout` are dropped (closed) on the way; backends close idle ones on their own
    /// timers, and a fresher connection is less likely to be half-closed.
    pub fn checkout(&self, now: Instant) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, since)) = idle.front() {
            if now.saturating_duration_since(*since) > self.idle_timeout {
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

    /// Back into the pool after its response ended; dropped (and so closed) beyond the cap.
    pub fn checkin(&self, s: Sender, now: Instant) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push_back((s, now));
        }
    }

    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn idle_len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
