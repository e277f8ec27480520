//! A listener's settings: balancing, timeouts for every phase of an exchange, connection limits
//! and passive outlier ejection. Defaults are chosen next to nginx's and HAProxy's (see
//! docs/load-balancer.md for the table).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    Http,
    Tcp,
    /// The node's relay: other nodes' balancers reach this node's instances through it, over
    /// mutual TLS ([`crate::relay`]). Its snapshot is the set of instances they may reach.
    Relay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Balance {
    /// Smooth weighted round-robin.
    RoundRobin,
    /// Least in-flight requests per unit of weight, of two random backends.
    LeastRequest,
}

/// How long each phase may take. Every one of them is a deadline that ends the phase with a
/// definite answer to the client (408, 504, a closed connection): nothing waits forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// A request head must be complete this long after its first byte; on a new connection,
    /// after the accept (a client that connects and says nothing). → `408`, closed.
    /// Default 10 s (HAProxy's `timeout http-request`; nginx's `client_header_timeout` is 60 s).
    pub head: Duration,
    /// A keep-alive connection with no request for this long is closed. Default 75 s
    /// (nginx's `keepalive_timeout`).
    pub keep_alive: Duration,
    /// The client side of an exchange stalls: no byte of the request body arrives, or no byte of
    /// the response is taken, for this long. → `408` if nothing was forwarded yet, else the
    /// connection is closed. Default 30 s (HAProxy's `timeout client`; nginx's
    /// `client_body_timeout` and `send_timeout` are 60 s).
    pub body: Duration,
    /// A TCP connect to an instance. → the next instance, or `502`. Default 2 s (loopback;
    /// HAProxy's usual `timeout connect` is 5 s).
    pub connect: Duration,
    /// From the request sent to the response head, and between two reads of the response body.
    /// → `504` (head), closed (body); the instance is ejected. Default 60 s (nginx's
    /// `proxy_read_timeout`).
    pub response: Duration,
    /// A pooled keep-alive connection to an instance idle longer than this is closed rather than
    /// reused. Default 20 s (below the usual 30 s+ server idle timeouts).
    pub backend_idle: Duration,
    /// tcp mode and WebSocket tunnels: no byte either way for this long closes both sides.
    /// Default 10 min (nginx's stream `proxy_timeout`; HAProxy's `timeout tunnel` is typically
    /// 1 h).
    pub tcp_idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            head: Duration::from_secs(10),
            keep_alive: Duration::from_secs(75),
            body: Duration::from_secs(30),
            connect: Duration::from_secs(2),
            response: Duration::from_secs(60),
            backend_idle: Duration::from_secs(20),
            tcp_idle: Duration::from_secs(600),
        }
    }
}

/// Connection and buffer limits of one listener. The process-wide budget (from the open-file
/// limit) is set once with [`crate::set_connection_budget`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Client connections this listener holds at once. Beyond it the listener stops accepting
    /// (new connections wait in the kernel's backlog) after closing idle keep-alive connections
    /// to make room. Default 10,000.
    pub max_connections: usize,
    /// Idle keep-alive connections kept per instance (default 128; the JDK's built-in HTTP
    /// server keeps at most 200 and closes every connection beyond that after one response).
    pub max_idle_per_backend: usize,
    /// A request body up to this size is read whole before an instance is chosen, so a slow or
    /// stalled upload holds no instance thread, a broken body never reaches one, and the
    /// request can be replayed on another instance. Larger bodies stream. Default 64 KiB
    /// (nginx buffers every body; HAProxy's `option http-buffer-request` buffers one buffer).
    pub request_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_idle_per_backend: 128,
            request_buffer: 64 * 1024,
        }
    }
}

/// Passive outlier detection: instances that fail at the transport level are taken out of
/// rotation without waiting for the health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outlier {
    /// How long an ejected instance gets no new request (default 5 s).
    pub eject_for: Duration,
    /// Consecutive gateway failures (reset or closed before a response, a bad response head)
    /// that eject an instance (default 3). A refused or timed-out connect and a response
    /// timeout eject at once.
    pub failures: u32,
    /// An instance that has requests waiting and sends no byte at all for this long is asked
    /// for `probe_path` on a fresh connection; no answer within [`Outlier::probe_timeout`]:
    /// ejected (a frozen or saturated JVM). Default 3 s. Zero turns stall detection off.
    pub stall: Duration,
    /// Bound on the stall probe (default 1 s).
    pub probe_timeout: Duration,
    /// The path the stall probe asks for (the app's health path, else `/`); any status line
    /// counts as alive.
    pub probe_path: String,
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            eject_for: Duration::from_secs(5),
            failures: 3,
            stall: Duration::from_secs(3),
            probe_timeout: Duration::from_secs(1),
            probe_path: "/".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerConfig {
    /// The app's name: in the 503 body and in stats.
    pub name: String,
    pub listen: SocketAddr,
    pub mode: Mode,
    pub balance: Balance,
    /// Weight ramp from `ready_at` (default 30 s).
    pub slow_start: Duration,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub outlier: Outlier,
    /// This node's certificate, key and the cluster's CA: the relay's TLS (`Mode::Relay`),
    /// and the one every listener of the process presents to other nodes' relays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_tls: Option<crate::relay::RelayTls>,
}

impl ListenerConfig {
    pub fn new(name: impl Into<String>, listen: SocketAddr, mode: Mode) -> ListenerConfig {
        ListenerConfig {
            name: name.into(),
            listen,
            mode,
            balance: Balance::RoundRobin,
            slow_start: Duration::from_secs(30),
            timeouts: Timeouts::default(),
            limits: Limits::default(),
            outlier: Outlier::default(),
            relay_tls: None,
        }
    }
}
