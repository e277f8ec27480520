//! The TCP API's connection limits as pure decisions, time passed in: when a connection is
//! closed for taking too long (its request head, or its silence between two requests), and which
//! connections to close when the cap is reached. `serve` does the IO.
//!
//! A connection is always in one [`Phase`]:
//!
//! ```text
//!  accept ──▶ Head ──(head parsed)──▶ Busy ──(response sent)──▶ Idle ──(a byte)──▶ Head ─▶ …
//!             └ closed at since + header_timeout                 └ closed at since + idle_timeout
//! ```
//!
//! `Busy` has no deadline: a stream (`/v1/stream`, `?follow=true`) is a request being answered,
//! however long it lasts.

use std::time::Duration;

use jarfleet_core::spec::{
    DEFAULT_HTTP_HEADER_TIMEOUT, DEFAULT_HTTP_IDLE_TIMEOUT, DEFAULT_HTTP_MAX_CONNECTIONS,
    DaemonSpec,
};
use tokio::time::Instant;

/// `[daemon] http_max_connections`, `http_header_timeout`, `http_idle_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn of(daemon: &DaemonSpec) -> Limits {
        Limits {
            max_connections: daemon.http_max_connections.max(1) as usize,
            header_timeout: daemon.http_header_timeout,
            idle_timeout: daemon.http_idle_timeout,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_HTTP_MAX_CONNECTIONS as usize,
            header_timeout: DEFAULT_HTTP_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_HTTP_IDLE_TIMEOUT,
        }
    }
}

/// Where a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a whole request head: since the accept (the first request; a TLS handshake
    /// counts), or since the first byte of a later request. `started`: bytes of it arrived.
    Head { since: Instant, started: bool },
    /// A response was sent and no byte of the next request has come.
    Idle { since: Instant },
    /// A request is being answered (a stream too). `token`: it came with the right token;
    /// any other (a read let through by `open_reads`, the dashboard's files, a refusal being
    /// written to a client that does not read) may be closed to make room.
    Busy { since: Instant, token: bool },
}

/// Why a connection's time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// No whole request head within the header timeout; `started`: some of it had come.
    Head { started: bool },
    /// No request within the idle timeout after the last response.
    Idle,
}

impl Phase {
    pub fn accepted(now: Instant) -> Phase {
        Phase::Head {
            since: now,
            started: false,
        }
    }

    /// Bytes came in: the first ones after a response start the next head's clock.
    pub fn on_bytes(self, now: Instant) -> Phase {
        match self {
            Phase::Idle { .. } => Phase::Head {
                since: now,
                started: true,
            },
            Phase::Head { since, .. } => Phase::Head {
                since,
                started: true,
            },
            busy @ Phase::Busy { .. } => busy,
        }
    }

    /// A whole request head was read; its answer begins.
    pub fn on_request(self, now: Instant) -> Phase {
        Phase::Busy {
            since: now,
            token: false,
        }
    }

    /// The request in progress came with the right token.
    pub fn on_token(self) -> Phase {
        match self {
            Phase::Busy { since, .. } => Phase::Busy { since, token: true },
            other => other,
        }
    }

    /// The response was sent (or abandoned).
    pub fn on_response_end(self, now: Instant) -> Phase {
        Phase::Idle { since: now }
    }

    /// When the connection is to be closed if nothing happens first (`None`: never).
    pub fn deadline(&self, limits: &Limits) -> Option<Instant> {
        match *self {
            Phase::Head { since, .. } => Some(since + limits.header_timeout),
            Phase::Idle { since } => Some(since + limits.idle_timeout),
            Phase::Busy { .. } => None,
        }
    }

    /// Whether its time ran out at `now`, and how.
    pub fn expired(&self, limits: &Limits, now: Instant) -> Option<Expired> {
        if self.deadline(limits).is_none_or(|d| now < d) {
            return None;
        }
        match *self {
            Phase::Head { started, .. } => Some(Expired::Head { started }),
            Phase::Idle { .. } => Some(Expired::Idle),
            Phase::Busy { .. } => None,
        }
    }

    /// Whether it may be closed to make room, and how early: lower first.
    fn reclaim_rank(&self) -> Option<(u8, Instant)> {
        match *self {
            Phase::Head { since, .. } | Phase::Idle { since } => Some((0, since)),
            Phase::Busy {
                since,
                token: false,
            } => Some((1, since)),
            Phase::Busy { token: true, .. } => None,
        }
    }

    /// Whether it may be closed to make room.
    pub fn closable(&self) -> bool {
        self.reclaim_rank().is_some()
    }

    /// What it is doing, for messages.
    pub fn describe(&self, now: Instant) -> String {
        let age = |since: Instant| {
            let d = now.saturating_duration_since(since);
            format!("{:.1} s", d.as_secs_f64())
        };
        match *self {
            Phase::Head {
                since,
                started: false,
            } => format!("no request in {}", age(since)),
            Phase::Head {
                since,
                started: true,
            } => format!("sending a request head for {}", age(since)),
            Phase::Idle { since } => format!("idle for {}", age(since)),
            Phase::Busy { since, token } => {
                let who = if token {
                    "a request with the token"
                } else {
                    "a request without the token"
                };
                format!("{who} answered for {}", age(since))
            }
        }
    }
}

/// Which of `conns` to close so that `needed` slots free up: first those waiting for a request
/// (a head, or idle between requests), then requests answered without the token, each group
/// oldest first; never a request made with the token. Fewer than `needed` when no more can be
/// closed.
pub fn to_reclaim<K: Copy>(conns: &[(K, Phase)], needed: usize) -> Vec<K> {
    let mut closable: Vec<((u8, Instant), K)> = conns
        .iter()
        .filter_map(|(k, p)| p.reclaim_rank().map(|rank| (rank, *k)))
        .collect();
    closable.sort_by_key(|(rank, _)| *rank);
    closable.into_iter().take(needed).map(|(_, k)| k).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_connections: 4,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(75),
        }
    }

    #[test]
    fn the_head_deadline_runs_from_the_accept_and_is_not_moved_by_more_bytes() {
        let l = limits();
        let t0 = Instant::now();
        let s = |n: u64| Duration::from_secs(n);
        let mut p = Phase::accepted(t0);
        assert_eq!(p.deadline(&l), Some(t0 + s(10)));
        // A byte every second: the deadline stays where the accept put it.
        for i in 1..10 {
            p = p.on_bytes(t0 + s(i));
            assert_eq!(p.deadline(&l), Some(t0 + s(10)), "after the byte at {i} s");
            assert_eq!(p.expired(&l, t0 + s(i)), None);
        }
        assert_eq!(
            p.expired(&l, t0 + s(10)),
            Some(Expired::Head { started: true })
        );
        assert_eq!(
            Phase::accepted(t0).expired(&l, t0 + s(11)),
            Some(Expired::Head { started: false })
        );
    }

    #[test]
    fn keep_alive_idles_then_times_the_next_head_from_its_first_byte() {
        let l = limits();
        let t0 = Instant::now();
        let s = |n: u64| Duration::from_secs(n);
        let busy = Phase::accepted(t0)
            .on_bytes(t0)
            .on_request(t0 + s(1))
            .on_token();
        assert_eq!(
            busy.deadline(&l),
            None,
            "a request being answered has no deadline"
        );
        // A stream answered for an hour is not idle.
        assert_eq!(busy.expired(&l, t0 + s(3600)), None);
        let idle = busy.on_response_end(t0 + s(3600));
        assert_eq!(idle.deadline(&l), Some(t0 + s(3675)));
        assert_eq!(idle.expired(&l, t0 + s(3674)), None);
        assert_eq!(idle.expired(&l, t0 + s(3675)), Some(Expired::Idle));
        // The first byte of the next request, 70 s later: 10 s from that byte.
        let head = idle.on_bytes(t0 + s(3670));
        assert_eq!(head.deadline(&l), Some(t0 + s(3680)));
        assert_eq!(head.on_bytes(t0 + s(3679)).deadline(&l), Some(t0 + s(3680)));
        // Bytes while a request is answered (a pipelined one) change nothing.
        assert_eq!(busy.on_bytes(t0 + s(5)), busy);
    }

    #[test]
    fn at_the_cap_waiting_and_idle_go_first_then_requests_without_the_token_never_token_holders() {
        let t0 = Instant::now();
        let at = |n: u64| t0 + Duration::from_secs(n);
        let conns = [
            (
                "token-stream",
                Phase::accepted(at(0)).on_request(at(1)).on_token(),
            ),
            ("open-stream", Phase::accepted(at(0)).on_request(at(2))),
            (
                "idle",
                Phase::accepted(at(0))
                    .on_request(at(3))
                    .on_response_end(at(5)),
            ),
            ("trickling", Phase::accepted(at(4)).on_bytes(at(9))),
            ("silent", Phase::accepted(at(7))),
            (
                "older-open-stream",
                Phase::accepted(at(0)).on_request(at(1)),
            ),
        ];
        let cases: &[(usize, &[&str])] = &[
            (0, &[]),
            (1, &["trickling"]),
            (2, &["trickling", "idle"]),
            (3, &["trickling", "idle", "silent"]),
            (4, &["trickling", "idle", "silent", "older-open-stream"]),
            (
                6,
                &[
                    "trickling",
                    "idle",
                    "silent",
                    "older-open-stream",
                    "open-stream",
                ],
            ),
        ];
        for (needed, want) in cases {
            assert_eq!(&to_reclaim(&conns, *needed), want, "needed {needed}");
        }
        let only_token = [("a", Phase::accepted(at(0)).on_request(at(1)).on_token())];
        assert!(to_reclaim(&only_token, 1).is_empty());
        assert!(!only_token[0].1.closable());
    }

    #[test]
    fn descriptions_say_what_the_connection_is_doing() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let cases = [
            (Phase::accepted(t0), "no request in 2.5 s"),
            (
                Phase::accepted(t0).on_bytes(at(1)),
                "sending a request head for 2.5 s",
            ),
            (Phase::Idle { since: at(500) }, "idle for 2.0 s"),
            (
                Phase::accepted(t0).on_request(at(1500)),
                "a request without the token answered for 1.0 s",
            ),
            (
                Phase::accepted(t0).on_request(at(1500)).on_token(),
                "a request with the token answered for 1.0 s",
            ),
        ];
        for (phase, want) in cases {
            assert_eq!(phase.describe(at(2500)), want);
        }
    }
}
