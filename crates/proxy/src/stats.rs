//! Per-backend counters (atomics on the hot path) and the plain-data view of them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Upper bounds of the latency histogram buckets, in microseconds; a last bucket catches the rest.
pub const LATENCY_BOUNDS_US: [u64; 18] = [
    100, 250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

#[derive(Default)]
pub(crate) struct Counters {
    /// Responses by status class 1xx..5xx (index 0..4); in tcp mode, connections go to `conns`.
    pub by_class: [AtomicU64; 5],
    pub conns: AtomicU64,
    pub errors: AtomicU64,
    pub retries: AtomicU64,
    pub stale_retries: AtomicU64,
    pub ejections: AtomicU64,
    pub timeouts: AtomicU64,
    pub stall_probes: AtomicU64,
    pub latency: [AtomicU64; BUCKETS],
    pub latency_sum_us: AtomicU64,
}

impl Counters {
    pub fn record_response(&self, status: u16, latency: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].fetch_add(1, Relaxed);
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        let bucket = LATENCY_BOUNDS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS - 1);
        self.latency[bucket].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
    }

    pub fn view(&self) -> CounterView {
        let latency: Vec<u64> = self.latency.iter().map(|c| c.load(Relaxed)).collect();
        let requests = std::array::from_fn(|i| self.by_class[i].load(Relaxed));
        CounterView {
            requests,
            connections: self.conns.load(Relaxed),
            errors: self.errors.load(Relaxed),
            retries: self.retries.load(Relaxed),
            stale_retries: self.stale_retries.load(Relaxed),
            ejections: self.ejections.load(Relaxed),
            timeouts: self.timeouts.load(Relaxed),
            stall_probes: self.stall_probes.load(Relaxed),
            p50_us: quantile(&latency, 0.50),
            p99_us: quantile(&latency, 0.99),
            latency_sum_us: self.latency_sum_us.load(Relaxed),
            latency_buckets: latency,
        }
    }
}

/// The bucket upper bound at which the cumulative count reaches `q` (the last bucket reports
/// the last finite bound). `None` without samples.
pub fn quantile(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(
                LATENCY_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1]),
            );
        }
    }
    None
}

/// A snapshot of counters (per backend, or summed for a listener's totals).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterView {
    /// Responses by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`, 502s made by the proxy included.
    pub requests: [u64; 5],
    /// tcp mode: connections proxied.
    pub connections: u64,
    /// Failed attempts: connect errors, connections lost before or during a response.
    pub errors: u64,
    /// Requests that failed on this backend before any response byte and went to another one.
    pub retries: u64,
    /// Requests that failed on a stale pooled connection and were sent again on a fresh one to
    /// the same backend (not errors: the backend closed an idle connection).
    pub stale_retries: u64,
    /// Times this backend was passively ejected (connect error, failures in a row, response
    /// timeout, stalled).
    pub ejections: u64,
    /// Requests answered `504` because no response head came within the response timeout.
    pub timeouts: u64,
    /// Stall probes sent to this backend (it had requests waiting and sent nothing).
    pub stall_probes: u64,
    /// Time to response head, estimated from the histogram (bucket upper bound), microseconds.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub latency_sum_us: u64,
    /// Counts per bucket of [`LATENCY_BOUNDS_US`], plus one for everything slower.
    pub latency_buckets: Vec<u64>,
}

impl CounterView {
    /// Adds `o`'s counts to these (a listener's totals; counts carried across processes).
    pub fn add(&mut self, o: &CounterView) {
        for i in 0..5 {
            self.requests[i] += o.requests[i];
        }
        self.connections += o.connections;
        self.errors += o.errors;
        self.retries += o.retries;
        self.stale_retries += o.stale_retries;
        self.ejections += o.ejections;
        self.timeouts += o.timeouts;
        self.stall_probes += o.stall_probes;
        self.latency_sum_us += o.latency_sum_us;
        if self.latency_buckets.len() < o.latency_buckets.len() {
            self.latency_buckets.resize(o.latency_buckets.len(), 0);
        }
        for (a, b) in self.latency_buckets.iter_mut().zip(&o.latency_buckets) {
            *a += b;
        }
        self.p50_us = quantile(&self.latency_buckets, 0.50);
        self.p99_us = quantile(&self.latency_buckets, 0.99);
    }

    /// All responses, every class.
    pub fn total_requests(&self) -> u64 {
        self.requests.iter().sum()
    }
}

/// One backend as `stats()` sees it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackendStats {
    pub id: String,
    pub addr: SocketAddr,
    pub labels: BTreeMap<String, String>,
    /// Still in the current snapshot (false: removed, shown while it drains).
    pub in_snapshot: bool,
    pub weight: u32,
    /// Weight after the slow-start ramp, now.
    pub effective_weight: u64,
    /// Passively ejected now.
    pub ejected: bool,
    /// Why it was last ejected: `connect`, `failures`, `timeout` or `stalled`.
    pub ejected_reason: Option<String>,
    /// Found frozen by a stall probe, and silent since.
    pub hung: bool,
    pub in_flight: u64,
    pub idle_connections: usize,
    /// Another node's instance, reached through its relay at `addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<crate::relay::Via>,
    #[serde(flatten)]
    pub counters: CounterView,
}

/// Everything `stats()` reports for one listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListenerStats {
    pub name: String,
    pub listen: SocketAddr,
    /// Requests answered 503 (or tcp connections closed) because no backend was ready.
    pub no_backend: u64,
    /// Client connections open now.
    pub connections: usize,
    /// What happened at the client side: refused requests, timeouts, reclaimed connections.
    pub front: FrontView,
    pub totals: CounterView,
    pub backends: Vec<BackendStats>,
}

/// Listener-wide counters of the client side.
#[derive(Default)]
pub(crate) struct FrontCounters {
    pub bad_requests: AtomicU64,
    pub head_timeouts: AtomicU64,
    pub client_timeouts: AtomicU64,
    pub local_errors: AtomicU64,
    pub tunnels: AtomicU64,
    pub tunnels_open: AtomicU64,
    pub accept_restarts: AtomicU64,
    pub tls_refused: AtomicU64,
}

impl FrontCounters {
    pub fn view(&self, reclaimed: u64, paused: u64) -> FrontView {
        FrontView {
            bad_requests: self.bad_requests.load(Relaxed),
            head_timeouts: self.head_timeouts.load(Relaxed),
            client_timeouts: self.client_timeouts.load(Relaxed),
            local_errors: self.local_errors.load(Relaxed),
            reclaimed,
            paused,
            tunnels: self.tunnels.load(Relaxed),
            tunnels_open: self.tunnels_open.load(Relaxed),
            accept_restarts: self.accept_restarts.load(Relaxed),
            tls_refused: self.tls_refused.load(Relaxed),
        }
    }
}

/// The client side of a listener, counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontView {
    /// Requests refused before reaching an instance (400, 405, 431, 501).
    pub bad_requests: u64,
    /// Connections closed (`408`, or silently when nothing was sent) because a request head was
    /// not complete in time.
    pub head_timeouts: u64,
    /// Exchanges ended because the client stopped sending its body or reading the response.
    pub client_timeouts: u64,
    /// Requests answered `503` because the proxy itself was out of file descriptors or memory.
    pub local_errors: u64,
    /// Idle connections closed to make room at a connection cap.
    pub reclaimed: u64,
    /// Times the listener stopped accepting at a connection cap.
    pub paused: u64,
    /// WebSocket tunnels opened, and open now.
    pub tunnels: u64,
    pub tunnels_open: u64,
    /// Times the accept loop panicked and was started again (0 unless jarfleet has a bug).
    pub accept_restarts: u64,
    /// A relay's clients whose TLS handshake failed (no certificate of the cluster's CA).
    #[serde(default)]
    pub tls_refused: u64,
}

impl FrontView {
    /// Adds `o`'s counts to these (counts carried across processes). `tunnels_open` is a
    /// level, not a count: it stays.
    pub fn add(&mut self, o: &FrontView) {
        self.bad_requests += o.bad_requests;
        self.head_timeouts += o.head_timeouts;
        self.client_timeouts += o.client_timeouts;
        self.local_errors += o.local_errors;
        self.reclaimed += o.reclaimed;
        self.paused += o.paused;
        self.tunnels += o.tunnels;
        self.accept_restarts += o.accept_restarts;
        self.tls_refused += o.tls_refused;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_from_buckets() {
        let c = Counters::default();
        for ms in [1u64, 1, 1, 1, 1, 1, 1, 1, 1, 40] {
            c.record_response(200, Duration::from_millis(ms));
        }
        c.record_response(503, Duration::from_secs(60));
        let v = c.view();
        assert_eq!(v.requests, [0, 10, 0, 0, 1]);
        assert_eq!(v.p50_us, Some(1_000));
        assert_eq!(v.p99_us, Some(10_000_000));
        assert_eq!(v.latency_buckets.iter().sum::<u64>(), 11);
        assert_eq!(quantile(&[0, 0], 0.5), None);
        let mut total = CounterView::default();
        total.add(&v);
        total.add(&v);
        assert_eq!(total.total_requests(), 22);
        assert_eq!(total.p50_us, Some(1_000));
    }
}
