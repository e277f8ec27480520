//! `/metrics`: the fleet in the Prometheus text exposition format (version 0.0.4), encoded with
//! `prometheus-client`. Every name, label and unit is listed in `docs/metrics.md`.
//!
//! Three steps, so that the control loop only copies figures:
//! 1. the loop hands out a [`Snapshot`]: plain data (what it counted, what every instance is
//!    now) and the load balancer's data plane to ask for its listeners' counters
//!    (`control/metrics.rs`);
//! 2. [`collect`] adds what costs IO, off the loop: procfs of every JVM and of the daemon, the
//!    listeners' counters (atomics the proxy keeps anyway, for `status` and canary judging);
//! 3. [`render`] encodes the result, without IO.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_proxy::{LATENCY_BOUNDS_US, ListenerStats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
    NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use jarfleet_shim::procinfo;

/// The `Content-Type` of the exposition.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the health-check latency buckets, in seconds (a last bucket, `+Inf`,
/// catches the rest).
pub const HEALTH_BOUNDS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with [`HEALTH_BOUNDS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: [u64; HEALTH_BOUNDS.len() + 1],
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, took: Duration) {
        let secs = took.as_secs_f64();
        let i = HEALTH_BOUNDS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(HEALTH_BOUNDS.len());
        self.counts[i] += 1;
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// `(upper bound, count in that bucket)`, not cumulative (the encoder sums them up).
    fn buckets(&self) -> Vec<(f64, u64)> {
        HEALTH_BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.counts.iter().copied())
            .collect()
    }
}

/// The labels of everything said about one instance.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    pub app: String,
    pub slot: u32,
    pub release: String,
}

/// What the control loop counted for one instance (app, slot, release) since the daemon
/// started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InstanceTally {
    /// Restarts after a crash or a failure (user restarts are not counted).
    pub restarts: u64,
    /// JVM exits by `ExitClass::label`.
    pub exits: BTreeMap<&'static str, u64>,
    pub health_ok: Option<Histogram>,
    pub health_failed: Option<Histogram>,
}

/// An instance as it is at the snapshot.
#[derive(Debug, Clone)]
pub struct InstanceNow {
    pub key: InstanceKey,
    /// A JVM process is running.
    pub up: bool,
    pub ready: bool,
    pub pid: Option<u32>,
    /// Unix time (ms) the JVM was started.
    pub started_at_ms: Option<u64>,
}

/// An app as it is at the snapshot, with its deployment counts.
#[derive(Debug, Clone)]
pub struct AppNow {
    pub name: String,
    pub desired: u32,
    pub deploying: bool,
    /// Ended deployments by (strategy, outcome).
    pub deployments: BTreeMap<(String, String), u64>,
    /// Its load balancer listener is bound (none without `listen`).
    pub listener_up: Option<bool>,
    /// Failed attempts to bind that listener since the daemon started.
    pub listener_bind_failures: u64,
}

/// The control loop's own figures.
#[derive(Debug, Clone, Default)]
pub struct LoopFigures {
    /// Events handled, by kind.
    pub events: BTreeMap<&'static str, u64>,
    /// Time spent handling events (by kind) and timers (`timers`), not waiting.
    pub busy: BTreeMap<&'static str, Duration>,
    /// Events waiting in its queue.
    pub queued: usize,
    /// Unix time (ms) the daemon started.
    pub started_at_ms: u64,
    /// Its writes: the store's and its log's (a full disk).
    pub store: jarfleet_api::StoreHealth,
}

/// What the control loop hands out for one scrape.
pub struct Snapshot {
    pub instances: Vec<InstanceNow>,
    pub tallies: Vec<(InstanceKey, InstanceTally)>,
    pub apps: Vec<AppNow>,
    /// The apps that have a load balancer listener, and the data plane that counts for them.
    pub listeners: (Vec<String>, Arc<dyn crate::control::data_plane::DataPlane>),
    /// This node runs a relay for the other nodes' balancers (cluster mode with TLS).
    pub relay: bool,
    pub control: LoopFigures,
}

/// A process's CPU time and memory, from procfs.
#[derive(Debug, Clone, Copy, Default)]
struct ProcFigures {
    cpu_seconds: Option<f64>,
    rss_bytes: Option<u64>,
}

impl ProcFigures {
    /// An instance's figures: all its processes (a launcher's forked JVM, helpers).
    fn of_instance(procs: &procinfo::ProcTable, pid: u32) -> ProcFigures {
        ProcFigures {
            cpu_seconds: procs
                .cpu_ticks(pid)
                .map(|t| t as f64 / procinfo::CLOCK_TICKS_PER_SEC as f64),
            rss_bytes: procs.rss_bytes(pid),
        }
    }

    fn of(pid: u32) -> ProcFigures {
        ProcFigures {
            cpu_seconds: procinfo::cpu_ticks(pid)
                .map(|t| t as f64 / procinfo::CLOCK_TICKS_PER_SEC as f64),
            rss_bytes: procinfo::rss_bytes(pid),
        }
    }
}

/// Cluster mode's figures, as this node sees them (read off the loop, from the agent).
#[derive(Debug, Clone, Default)]
pub struct ClusterFigures {
    pub cluster: String,
    pub node: String,
    pub scheduler: bool,
    pub registered: bool,
    pub etcd_reachable: bool,
    /// Nodes by state (`ready`, `suspect`, `down`, `draining`, `ineligible`).
    pub nodes: Vec<(String, u64)>,
    /// Ready instances on other nodes this node's balancers send to, per app.
    pub remote: Vec<(String, u64)>,
    /// Slots placed on this node.
    pub placed_here: u64,
    /// Slots placed on each node of the cluster, per (node, app).
    pub placements: Vec<((String, String), u64)>,
}

/// Everything one exposition shows: the snapshot, completed with what costs IO.
#[derive(Debug)]
pub struct Scrape {
    cluster: Option<ClusterFigures>,
    instances: Vec<(InstanceNow, ProcFigures)>,
    tallies: Vec<(InstanceKey, InstanceTally)>,
    apps: Vec<AppNow>,
    listeners: Vec<(String, ListenerStats)>,
    relay: Option<ListenerStats>,
    control: LoopFigures,
    daemon: ProcFigures,
    daemon_fds: Option<u64>,
}

/// Reads what the snapshot only points at (blocking IO: run it off the async threads).
pub fn collect(snapshot: Snapshot, cluster: Option<ClusterFigures>) -> Scrape {
    let procs = procinfo::ProcTable::scan();
    let instances = snapshot
        .instances
        .into_iter()
        .map(|i| {
            let figures = i
                .pid
                .map(|pid| ProcFigures::of_instance(&procs, pid))
                .unwrap_or_default();
            (i, figures)
        })
        .collect();
    let (apps, data_plane) = snapshot.listeners;
    let relay = snapshot
        .relay
        .then(|| data_plane.stats(crate::control::relay::RELAY))
        .flatten();
    let listeners = apps
        .into_iter()
        .filter_map(|app| {
            let stats = data_plane.stats(&app)?;
            Some((app, stats))
        })
        .collect();
    Scrape {
        cluster,
        instances,
        tallies: snapshot.tallies,
        apps: snapshot.apps,
        listeners,
        relay,
        control: snapshot.control,
        daemon: ProcFigures::of(std::process::id()),
        daemon_fds: procinfo::open_fds(std::process::id()),
    }
}

/// The exposition text of `scrape`.
pub fn render(scrape: Scrape) -> String {
    let mut registry = Registry::with_prefix("jarfleet");
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail, and every family is well-formed by construction.
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
        tracing::error!(error = %e, "encoding /metrics");
    }
    out
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_instances(&mut enc)?;
        self.encode_apps(&mut enc)?;
        self.encode_proxy(&mut enc)?;
        self.encode_cluster(&mut enc)?;
        self.encode_daemon(&mut enc)
    }
}

/// `[app, slot, release]`, borrowed.
type InstanceLabels<'a> = [(&'static str, &'a str); 3];

fn instance_labels<'a>(k: &'a InstanceKey, slot: &'a str) -> InstanceLabels<'a> {
    [
        ("app", k.app.as_str()),
        ("slot", slot),
        ("release", k.release.as_str()),
    ]
}

impl Scrape {
    fn encode_instances(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let slots: Vec<String> = self
            .instances
            .iter()
            .map(|(i, _)| i.key.slot.to_string())
            .collect();
        let now: Vec<(InstanceLabels, &InstanceNow, &ProcFigures)> = self
            .instances
            .iter()
            .zip(&slots)
            .map(|((i, p), slot)| (instance_labels(&i.key, slot), i, p))
            .collect();
        gauges(
            enc,
            "instance_up",
            "1 while the instance has a running JVM.",
            None,
            now.iter().map(|(l, i, _)| (*l, u64::from(i.up))),
        )?;
        gauges(
            enc,
            "instance_ready",
            "1 while the instance passes its readiness check (it gets traffic).",
            None,
            now.iter().map(|(l, i, _)| (*l, u64::from(i.ready))),
        )?;
        gauges(
            enc,
            "instance_start_time",
            "Unix time the instance's JVM was started.",
            Some(&Unit::Seconds),
            now.iter()
                .filter_map(|(l, i, _)| i.started_at_ms.map(|ms| (*l, ms as f64 / 1000.0))),
        )?;
        counters(
            enc,
            "instance_cpu",
            "CPU time (user + system) of the instance's JVM since it started.",
            Some(&Unit::Seconds),
            now.iter()
                .filter_map(|(l, _, p)| p.cpu_seconds.map(|v| (*l, v))),
        )?;
        gauges(
            enc,
            "instance_resident_memory",
            "Resident memory of the instance's JVM.",
            Some(&Unit::Bytes),
            now.iter()
                .filter_map(|(l, _, p)| p.rss_bytes.map(|v| (*l, v))),
        )?;

        let tally_slots: Vec<String> = self
            .tallies
            .iter()
            .map(|(k, _)| k.slot.to_string())
            .collect();
        let tallies: Vec<(InstanceLabels, &InstanceTally)> = self
            .tallies
            .iter()
            .zip(&tally_slots)
            .map(|((k, t), slot)| (instance_labels(k, slot), t))
            .collect();
        counters(
            enc,
            "instance_restarts",
            "Restarts of the instance after a crash or a failed start or health (not user restarts), since the daemon started.",
            None,
            tallies.iter().map(|(l, t)| (*l, t.restarts)),
        )?;
        counters(
            enc,
            "instance_exits",
            "JVM exits by class (clean, killed-after-timeout, completed, error, signal, out-of-memory, jvm-crash), since the daemon started.",
            None,
            tallies.iter().flat_map(|(l, t)| {
                t.exits
                    .iter()
                    .map(move |(class, n)| ((*l, [("class", *class)]), *n))
            }),
        )?;
        histograms(
            enc,
            "health_check_duration",
            "Health-check latency by result (ok, failed; a timeout is failed), since the daemon started.",
            Some(&Unit::Seconds),
            tallies.iter().flat_map(|(l, t)| {
                [("ok", &t.health_ok), ("failed", &t.health_failed)]
                    .into_iter()
                    .filter_map(move |(result, h)| {
                        let h = h.as_ref()?;
                        Some(((*l, [("result", result)]), h.sum, h.count(), h.buckets()))
                    })
            }),
        )
    }

    fn encode_apps(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        gauges(
            enc,
            "app_instances_desired",
            "Instances the spec asks for.",
            None,
            self.apps
                .iter()
                .map(|a| ([("app", a.name.as_str())], a.desired)),
        )?;
        gauges(
            enc,
            "deployment_in_progress",
            "1 while a deployment (rolling, canary, blue-green, rollback) of the app runs.",
            None,
            self.apps
                .iter()
                .map(|a| ([("app", a.name.as_str())], u64::from(a.deploying))),
        )?;
        gauges(
            enc,
            "listener_up",
            "1 while the app's load balancer listener is bound, 0 while it is not (it is retried by itself).",
            None,
            self.apps.iter().filter_map(|a| {
                a.listener_up
                    .map(|up| ([("app", a.name.as_str())], u64::from(up)))
            }),
        )?;
        counters(
            enc,
            "listener_bind_failures",
            "Failed attempts to bind the app's load balancer listener, since the daemon started.",
            None,
            self.apps
                .iter()
                .filter(|a| a.listener_up.is_some() || a.listener_bind_failures > 0)
                .map(|a| ([("app", a.name.as_str())], a.listener_bind_failures)),
        )?;
        counters(
            enc,
            "deployments",
            "Ended deployments by strategy and outcome (succeeded, rolled-back, failed), since the daemon started.",
            None,
            self.apps.iter().flat_map(|a| {
                a.deployments.iter().map(|((strategy, outcome), n)| {
                    (
                        [
                            ("app", a.name.as_str()),
                            ("strategy", strategy.as_str()),
                            ("outcome", outcome.as_str()),
                        ],
                        *n,
                    )
                })
            }),
        )
    }

    fn encode_proxy(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let label = |b: &'_ jarfleet_proxy::BackendStats, key: &str| -> String {
            b.labels.get(key).cloned().unwrap_or_default()
        };
        // (labels, backend) for every backend of every listener.
        let owned: Vec<(&str, &jarfleet_proxy::BackendStats, String, String)> = self
            .listeners
            .iter()
            .flat_map(|(app, l)| {
                l.backends
                    .iter()
                    .map(move |b| (app.as_str(), b, label(b, "slot"), label(b, "release")))
            })
            .collect();
        let backends: Vec<([(&'static str, &str); 4], &jarfleet_proxy::BackendStats)> = owned
            .iter()
            .map(|(app, b, slot, release)| {
                (
                    [
                        ("app", *app),
                        ("backend", b.id.as_str()),
                        ("slot", slot.as_str()),
                        ("release", release.as_str()),
                    ],
                    *b,
                )
            })
            .collect();
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        counters(
            enc,
            "proxy_requests",
            "Responses the load balancer sent, by backend and status class (502s it made itself included).",
            None,
            backends.iter().flat_map(|(l, b)| {
                CLASSES
                    .iter()
                    .zip(b.counters.requests)
                    .map(move |(code, n)| ((*l, [("code", *code)]), n))
            }),
        )?;
        histograms(
            enc,
            "proxy_request_duration",
            "Time from sending a request to a backend to receiving its response head.",
            Some(&Unit::Seconds),
            backends.iter().map(|(l, b)| {
                let c = &b.counters;
                let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
                    .iter()
                    .map(|us| *us as f64 / 1e6)
                    .chain([f64::INFINITY])
                    .zip(c.latency_buckets.iter().copied())
                    .collect();
                let count = c.latency_buckets.iter().sum();
                (*l, c.latency_sum_us as f64 / 1e6, count, buckets)
            }),
        )?;
        gauges(
            enc,
            "proxy_in_flight_requests",
            "Requests (tcp mode: connections) running on the backend now.",
            None,
            backends.iter().map(|(l, b)| (*l, b.in_flight)),
        )?;
        counters(
            enc,
            "proxy_retries",
            "Requests that failed on the backend before any response byte and were sent to another backend.",
            None,
            backends.iter().map(|(l, b)| (*l, b.counters.retries)),
        )?;
        counters(
            enc,
            "proxy_stale_retries",
            "Requests sent again to the same backend on a fresh connection after a pooled one turned out closed.",
            None,
            backends.iter().map(|(l, b)| (*l, b.counters.stale_retries)),
        )?;
        counters(
            enc,
            "proxy_connection_errors",
            "Failed attempts on the backend: connect errors, connections lost before or during a response.",
            None,
            backends.iter().map(|(l, b)| (*l, b.counters.errors)),
        )?;
        counters(
            enc,
            "proxy_timeouts",
            "Requests answered 504 because the backend sent no response head within the response timeout.",
            None,
            backends.iter().map(|(l, b)| (*l, b.counters.timeouts)),
        )?;
        counters(
            enc,
            "proxy_stall_probes",
            "Stall probes sent to the backend (it had requests waiting and sent nothing for the stall timeout).",
            None,
            backends.iter().map(|(l, b)| (*l, b.counters.stall_probes)),
        )?;
        counters(
            enc,
            "proxy_ejections",
            "Times the backend was passively ejected (connect error, failures in a row, response timeout, stalled).",
            None,
            backends.iter().map(|(l, b)| (*l, b.counters.ejections)),
        )?;
        gauges(
            enc,
            "proxy_backend_ejected",
            "1 while the backend is passively ejected.",
            None,
            backends.iter().map(|(l, b)| (*l, u64::from(b.ejected))),
        )?;
        counters(
            enc,
            "proxy_connections",
            "Connections proxied to the backend (tcp mode).",
            None,
            backends
                .iter()
                .filter(|(_, b)| b.counters.connections > 0)
                .map(|(l, b)| (*l, b.counters.connections)),
        )?;
        counters(
            enc,
            "proxy_no_backend",
            "Requests answered 503 (tcp: connections closed) because no backend was ready.",
            None,
            self.listeners
                .iter()
                .map(|(app, l)| ([("app", app.as_str())], l.no_backend)),
        )?;
        gauges(
            enc,
            "proxy_client_connections",
            "Client connections the listener holds now.",
            None,
            self.listeners
                .iter()
                .map(|(app, l)| ([("app", app.as_str())], l.connections as u64)),
        )?;
        counters(
            enc,
            "proxy_refused",
            "Client exchanges the balancer ended itself, by reason: bad_request (400/405/431/501), head_timeout (408 or a silent close), client_timeout (body or response stalled at the client), local_error (503: the balancer was out of file descriptors or memory).",
            None,
            self.listeners.iter().flat_map(|(app, l)| {
                let f = &l.front;
                [
                    ("bad_request", f.bad_requests),
                    ("head_timeout", f.head_timeouts),
                    ("client_timeout", f.client_timeouts),
                    ("local_error", f.local_errors),
                ]
                .into_iter()
                .map(move |(reason, n)| ([("app", app.as_str()), ("reason", reason)], n))
            }),
        )?;
        counters(
            enc,
            "proxy_reclaimed_connections",
            "Idle client connections closed to make room at a connection cap.",
            None,
            self.listeners
                .iter()
                .map(|(app, l)| ([("app", app.as_str())], l.front.reclaimed)),
        )?;
        counters(
            enc,
            "proxy_accept_pauses",
            "Times the listener stopped accepting at its connection cap or the process budget.",
            None,
            self.listeners
                .iter()
                .map(|(app, l)| ([("app", app.as_str())], l.front.paused)),
        )?;
        counters(
            enc,
            "proxy_tunnels",
            "WebSocket tunnels opened.",
            None,
            self.listeners
                .iter()
                .map(|(app, l)| ([("app", app.as_str())], l.front.tunnels)),
        )?;
        gauges(
            enc,
            "proxy_open_tunnels",
            "WebSocket tunnels open now.",
            None,
            self.listeners
                .iter()
                .map(|(app, l)| ([("app", app.as_str())], l.front.tunnels_open)),
        )
    }

    fn encode_cluster(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        let none: [(&str, &str); 0] = [];
        let mut info = enc.encode_descriptor(
            "cluster_node",
            "This daemon as a node of a cluster; always 1.",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[("cluster", c.cluster.clone()), ("node", c.node.clone())])?;
        gauges(
            enc,
            "cluster_registered",
            "1 while this node is registered on a live lease.",
            None,
            [(none, u64::from(c.registered))],
        )?;
        gauges(
            enc,
            "cluster_scheduler",
            "1 while this node is the cluster's scheduler.",
            None,
            [(none, u64::from(c.scheduler))],
        )?;
        gauges(
            enc,
            "cluster_etcd_reachable",
            "1 while this node reads the cluster's state from etcd, 0 while it cannot (nothing stops or restarts meanwhile).",
            None,
            [(none, u64::from(c.etcd_reachable))],
        )?;
        gauges(
            enc,
            "cluster_nodes",
            "The cluster's nodes by state, as this node sees them.",
            None,
            c.nodes.iter().map(|(s, n)| ([("state", s.as_str())], *n)),
        )?;
        gauges(
            enc,
            "cluster_slots_here",
            "Slots the cluster placed on this node.",
            None,
            [(none, c.placed_here)],
        )?;
        gauges(
            enc,
            "cluster_placements",
            "Slots of each app the cluster placed on each node.",
            None,
            c.placements
                .iter()
                .map(|((node, app), n)| ([("node", node.as_str()), ("app", app.as_str())], *n)),
        )?;
        gauges(
            enc,
            "cluster_remote_instances",
            "Ready instances on other nodes that this node's balancers send to, per app.",
            None,
            c.remote.iter().map(|(a, n)| ([("app", a.as_str())], *n)),
        )?;
        let traffic = self.cross_node_traffic();
        counters(
            enc,
            "cluster_remote_requests",
            "Responses this node's balancers got from instances on another node, by app and node.",
            None,
            traffic.iter().map(|((app, node), (n, _))| {
                ([("app", app.as_str()), ("node", node.as_str())], *n)
            }),
        )?;
        gauges(
            enc,
            "cluster_remote_in_flight_requests",
            "Requests this node's balancers have running on instances on another node now.",
            None,
            traffic.iter().map(|((app, node), (_, n))| {
                ([("app", app.as_str()), ("node", node.as_str())], *n)
            }),
        )?;
        let Some(relay) = &self.relay else {
            return Ok(());
        };
        counters(
            enc,
            "cluster_relay_connections",
            "Connections the other nodes' balancers opened to this node's instances through its relay.",
            None,
            [(none, relay.totals.connections)],
        )?;
        gauges(
            enc,
            "cluster_relay_open_connections",
            "Connections through this node's relay open now.",
            None,
            [(
                none,
                relay.backends.iter().map(|b| b.in_flight).sum::<u64>(),
            )],
        )?;
        counters(
            enc,
            "cluster_relay_refused",
            "Connections this node's relay refused: tls (no certificate of the cluster's CA), request (not a relay request), instance (not an instance of this node, or it refused the relay's connect).",
            None,
            [
                ([("reason", "tls")], relay.front.tls_refused),
                ([("reason", "request")], relay.front.bad_requests),
                (
                    [("reason", "instance")],
                    relay.no_backend + relay.totals.errors,
                ),
            ],
        )
    }

    /// Per (app, node): responses from and requests in flight on that node's instances, summed
    /// over the balancer's backends that run there (ids `APP/SLOT@NODE#GENERATION`).
    fn cross_node_traffic(&self) -> BTreeMap<(String, String), (u64, u64)> {
        let mut out: BTreeMap<(String, String), (u64, u64)> = BTreeMap::new();
        for (app, l) in &self.listeners {
            for b in &l.backends {
                let Some(node) =
                    b.id.split_once('@')
                        .and_then(|(_, rest)| rest.rsplit_once('#'))
                        .map(|(node, _)| node)
                else {
                    continue;
                };
                let e = out.entry((app.clone(), node.to_string())).or_default();
                e.0 += b.counters.requests.iter().sum::<u64>();
                e.1 += b.in_flight;
            }
        }
        out
    }

    fn encode_daemon(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let mut info = enc.encode_descriptor(
            "build",
            "The daemon's version; always 1.",
            None,
            MetricType::Info,
        )?;
        info.encode_info(&[
            ("version", env!("CARGO_PKG_VERSION").to_string()),
            ("protocol", jarfleet_api::PROTOCOL.to_string()),
        ])?;
        let none: [(&str, &str); 0] = [];
        counters(
            enc,
            "daemon_cpu",
            "CPU time (user + system) of the daemon process (its load balancer threads included).",
            Some(&Unit::Seconds),
            self.daemon.cpu_seconds.map(|v| (none, v)),
        )?;
        gauges(
            enc,
            "daemon_resident_memory",
            "Resident memory of the daemon process.",
            Some(&Unit::Bytes),
            self.daemon.rss_bytes.map(|v| (none, v)),
        )?;
        gauges(
            enc,
            "daemon_open_fds",
            "Open file descriptors of the daemon process.",
            None,
            self.daemon_fds.map(|v| (none, v)),
        )?;
        gauges(
            enc,
            "daemon_start_time",
            "Unix time the daemon started.",
            Some(&Unit::Seconds),
            [(none, self.control.started_at_ms as f64 / 1000.0)],
        )?;
        let store = &self.control.store;
        gauges(
            enc,
            "disk_free",
            "Free space on the state dir's file system.",
            Some(&Unit::Bytes),
            store.disk_free_bytes.map(|v| (none, v)),
        )?;
        gauges(
            enc,
            "disk_full",
            "1 while the state dir's file system has less than 1 MiB free.",
            None,
            [(none, u64::from(store.disk_full))],
        )?;
        gauges(
            enc,
            "store_writable",
            "1 while the store (state.db) takes writes, 0 while they fail (a full disk: records and events are kept in memory meanwhile).",
            None,
            [(none, u64::from(store.writable))],
        )?;
        gauges(
            enc,
            "store_pending_writes",
            "Writes kept in memory because the store did not take them, waiting to be written.",
            None,
            [(none, store.pending_writes)],
        )?;
        counters(
            enc,
            "store_write_errors",
            "Store writes (and retries of kept writes) that failed.",
            None,
            [(none, store.write_errors)],
        )?;
        counters(
            enc,
            "events_dropped",
            "Events never stored: dropped from the full in-memory queue while the store could not be written.",
            None,
            [(none, store.events_dropped)],
        )?;
        counters(
            enc,
            "daemon_log_dropped_lines",
            "Lines of the daemon's own log that could not be written (a full disk, a closed stderr).",
            None,
            [(none, store.log_lines_dropped)],
        )?;
        counters(
            enc,
            "control_events",
            "Events the control loop handled, by kind.",
            None,
            self.control
                .events
                .iter()
                .map(|(kind, n)| ([("event", *kind)], *n)),
        )?;
        counters(
            enc,
            "control_busy",
            "Time the control loop spent handling events, by kind (timers: its own work between events), not waiting for them.",
            Some(&Unit::Seconds),
            self.control
                .busy
                .iter()
                .map(|(kind, t)| ([("event", *kind)], t.as_secs_f64())),
        )?;
        gauges(
            enc,
            "control_queued_events",
            "Events waiting in the control loop's queue.",
            None,
            [(none, self.control.queued as u64)],
        )
    }
}

/// One family of counters; nothing at all (not even its HELP) without rows.
fn counters<L: EncodeLabelSet, V: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(enc, name, help, unit, MetricType::Counter, rows, |v, m| {
        ConstCounter::new(v).encode(m)
    })
}

fn gauges<L: EncodeLabelSet, V: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, V)>,
) -> fmt::Result {
    family(enc, name, help, unit, MetricType::Gauge, rows, |v, m| {
        ConstGauge::new(v).encode(m)
    })
}

/// Histograms as `(labels, sum, count, [(upper bound, count in that bucket)])`.
fn histograms<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    rows: impl IntoIterator<Item = (L, f64, u64, Vec<(f64, u64)>)>,
) -> fmt::Result {
    family(
        enc,
        name,
        help,
        unit,
        MetricType::Histogram,
        rows.into_iter()
            .map(|(l, sum, count, b)| (l, (sum, count, b))),
        |(sum, count, buckets), mut m| m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None),
    )
}

fn family<L: EncodeLabelSet, V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    metric_type: MetricType,
    rows: impl IntoIterator<Item = (L, V)>,
    mut write: impl FnMut(V, prometheus_client::encoding::MetricEncoder) -> fmt::Result,
) -> fmt::Result {
    let mut rows = rows.into_iter().peekable();
    if rows.peek().is_none() {
        return Ok(());
    }
    let mut m = enc.encode_descriptor(name, help, unit, metric_type)?;
    for (labels, v) in rows {
        write(v, m.encode_family(&labels)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn key(app: &str, slot: u32, release: &str) -> InstanceKey {
        InstanceKey {
            app: app.into(),
            slot,
            release: release.into(),
        }
    }

    fn scrape() -> Scrape {
        let mut health = Histogram::default();
        health.observe(Duration::from_micros(1_500));
        health.observe(Duration::from_millis(30));
        let tally = InstanceTally {
            restarts: 2,
            exits: BTreeMap::from([("signal", 2), ("clean", 1)]),
            health_ok: Some(health),
            health_failed: None,
        };
        Scrape {
            cluster: Some(ClusterFigures {
                cluster: "prod".into(),
                node: "web-1".into(),
                scheduler: true,
                registered: true,
                etcd_reachable: true,
                nodes: vec![("ready".into(), 3), ("down".into(), 0)],
                remote: vec![("web".into(), 2)],
                placed_here: 1,
                placements: vec![
                    (("web-1".into(), "web".into()), 1),
                    (("web-2".into(), "web".into()), 2),
                ],
            }),
            relay: None,
            instances: vec![(
                InstanceNow {
                    key: key("web", 1, "r1"),
                    up: true,
                    ready: false,
                    pid: Some(42),
                    started_at_ms: Some(1_700_000_000_500),
                },
                ProcFigures {
                    cpu_seconds: Some(1.25),
                    rss_bytes: Some(4096),
                },
            )],
            tallies: vec![(key("web", 1, "r1"), tally)],
            apps: vec![AppNow {
                name: "web".into(),
                desired: 2,
                deploying: true,
                deployments: BTreeMap::from([(("rolling".into(), "succeeded".into()), 3)]),
                listener_up: Some(false),
                listener_bind_failures: 4,
            }],
            listeners: vec![],
            control: LoopFigures {
                events: BTreeMap::from([("probe", 7)]),
                busy: BTreeMap::from([
                    ("probe", Duration::from_millis(1500)),
                    ("timers", Duration::from_millis(250)),
                ]),
                queued: 0,
                started_at_ms: 1_700_000_000_000,
                store: jarfleet_api::StoreHealth {
                    writable: false,
                    pending_writes: 3,
                    write_errors: 4,
                    events_dropped: 1,
                    log_lines_dropped: 12,
                    disk_free_bytes: Some(4096),
                    disk_full: true,
                    ..Default::default()
                },
            },
            daemon: ProcFigures::default(),
            daemon_fds: Some(9),
        }
    }

    #[test]
    fn families_names_and_values() {
        let text = render(scrape());
        for line in [
            "# TYPE jarfleet_instance_up gauge",
            "jarfleet_instance_up{app=\"web\",slot=\"1\",release=\"r1\"} 1",
            "jarfleet_instance_ready{app=\"web\",slot=\"1\",release=\"r1\"} 0",
            "jarfleet_instance_start_time_seconds{app=\"web\",slot=\"1\",release=\"r1\"} 1700000000.5",
            "# TYPE jarfleet_instance_cpu_seconds_total counter",
            "jarfleet_instance_cpu_seconds_total{app=\"web\",slot=\"1\",release=\"r1\"} 1.25",
            "jarfleet_instance_resident_memory_bytes{app=\"web\",slot=\"1\",release=\"r1\"} 4096",
            "jarfleet_instance_restarts_total{app=\"web\",slot=\"1\",release=\"r1\"} 2",
            "jarfleet_instance_exits_total{app=\"web\",slot=\"1\",release=\"r1\",class=\"signal\"} 2",
            "jarfleet_instance_exits_total{app=\"web\",slot=\"1\",release=\"r1\",class=\"clean\"} 1",
            "# TYPE jarfleet_health_check_duration_seconds histogram",
            "jarfleet_health_check_duration_seconds_bucket{app=\"web\",slot=\"1\",release=\"r1\",result=\"ok\",le=\"0.001\"} 0",
            "jarfleet_health_check_duration_seconds_bucket{app=\"web\",slot=\"1\",release=\"r1\",result=\"ok\",le=\"0.0025\"} 1",
            "jarfleet_health_check_duration_seconds_bucket{app=\"web\",slot=\"1\",release=\"r1\",result=\"ok\",le=\"0.05\"} 2",
            "jarfleet_health_check_duration_seconds_bucket{app=\"web\",slot=\"1\",release=\"r1\",result=\"ok\",le=\"+Inf\"} 2",
            "jarfleet_health_check_duration_seconds_count{app=\"web\",slot=\"1\",release=\"r1\",result=\"ok\"} 2",
            "jarfleet_app_instances_desired{app=\"web\"} 2",
            "jarfleet_deployment_in_progress{app=\"web\"} 1",
            "jarfleet_deployments_total{app=\"web\",strategy=\"rolling\",outcome=\"succeeded\"} 3",
            "# TYPE jarfleet_listener_up gauge",
            "jarfleet_listener_up{app=\"web\"} 0",
            "# TYPE jarfleet_listener_bind_failures_total counter",
            "jarfleet_listener_bind_failures_total{app=\"web\"} 4",
            "# TYPE jarfleet_build_info gauge",
            "jarfleet_daemon_open_fds 9",
            "# TYPE jarfleet_store_writable gauge",
            "jarfleet_store_writable 0",
            "jarfleet_disk_free_bytes 4096",
            "jarfleet_disk_full 1",
            "jarfleet_store_pending_writes 3",
            "# TYPE jarfleet_store_write_errors_total counter",
            "jarfleet_store_write_errors_total 4",
            "jarfleet_events_dropped_total 1",
            "jarfleet_daemon_log_dropped_lines_total 12",
            "jarfleet_daemon_start_time_seconds 1700000000.0",
            "jarfleet_control_events_total{event=\"probe\"} 7",
            "jarfleet_control_busy_seconds_total{event=\"probe\"} 1.5",
            "jarfleet_control_busy_seconds_total{event=\"timers\"} 0.25",
            "jarfleet_control_queued_events 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing line {line:?} in:\n{text}"
            );
        }
        assert!(text.contains(&format!(
            "jarfleet_build_info{{version=\"{}\",protocol=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            jarfleet_api::PROTOCOL
        )));
        // A family without rows is left out whole (no failed health checks, no listener).
        assert!(!text.contains("result=\"failed\""), "{text}");
        assert!(!text.contains("jarfleet_proxy_"), "{text}");
        assert!(!text.contains("jarfleet_daemon_cpu"), "{text}");
    }

    /// A scrape in which every family has a row.
    fn full_scrape() -> Scrape {
        let mut s = scrape();
        s.tallies[0].1.health_failed = s.tallies[0].1.health_ok.clone();
        s.daemon = ProcFigures {
            cpu_seconds: Some(0.5),
            rss_bytes: Some(1 << 20),
        };
        let mut counters = jarfleet_proxy::CounterView {
            requests: [0, 7, 0, 1, 2],
            connections: 3,
            latency_sum_us: 12_000,
            latency_buckets: vec![0; LATENCY_BOUNDS_US.len() + 1],
            ..Default::default()
        };
        counters.latency_buckets[3] = 10;
        let backend = jarfleet_proxy::BackendStats {
            id: "web/1#4".into(),
            addr: ([127, 0, 0, 1], 9000).into(),
            labels: BTreeMap::from([
                ("release".to_string(), "r1".to_string()),
                ("slot".to_string(), "1".to_string()),
            ]),
            in_snapshot: true,
            weight: 100,
            effective_weight: 100,
            ejected: false,
            ejected_reason: None,
            hung: false,
            in_flight: 1,
            idle_connections: 0,
            via: None,
            counters: counters.clone(),
        };
        s.listeners = vec![(
            "web".into(),
            ListenerStats {
                name: "web".into(),
                listen: ([127, 0, 0, 1], 8080).into(),
                no_backend: 0,
                connections: 2,
                front: jarfleet_proxy::FrontView::default(),
                totals: counters,
                // This node's instance, and one on node n2 (cluster mode).
                backends: vec![
                    backend.clone(),
                    jarfleet_proxy::BackendStats {
                        id: "web/2@n2#7".into(),
                        addr: ([10, 0, 0, 2], 9000).into(),
                        ..backend.clone()
                    },
                ],
            },
        )];
        // This node's relay, with one connection from another node open.
        s.relay = Some(ListenerStats {
            name: "relay".into(),
            listen: ([10, 0, 0, 1], 9902).into(),
            no_backend: 1,
            connections: 1,
            front: jarfleet_proxy::FrontView {
                tls_refused: 2,
                ..Default::default()
            },
            totals: jarfleet_proxy::CounterView {
                connections: 5,
                ..Default::default()
            },
            backends: vec![backend],
        });
        s
    }

    /// The metric names of the exposition (`# TYPE` lines).
    fn families(text: &str) -> BTreeMap<String, String> {
        text.lines()
            .filter_map(|l| {
                let mut w = l.strip_prefix("# TYPE ")?.split_whitespace();
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    }

    /// `jarfleet_…` names in `text`, histogram series names folded into their family.
    fn names_in(text: &str, families: &BTreeMap<String, String>) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        let mut rest = text;
        while let Some(i) = rest.find("jarfleet_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let name = &tail[..end];
            let folded = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    (families.get(base).map(String::as_str) == Some("histogram"))
                        .then(|| base.to_string())
                })
                .unwrap_or_else(|| name.to_string());
            names.insert(folded);
            rest = &tail[end..];
        }
        names
    }

    fn doc(path: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(path);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    #[test]
    fn every_family_is_documented_and_the_dashboard_uses_only_real_ones() {
        let text = render(full_scrape());
        let families = families(&text);
        let exposed: BTreeSet<String> = families.keys().cloned().collect();
        assert_eq!(exposed.len(), 59, "{exposed:#?}");

        // docs/metrics.md: its tables name exactly what is exposed.
        let docs = doc("docs/metrics.md");
        let table_rows: String = docs
            .lines()
            .filter(|l| l.starts_with("| `jarfleet_"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(names_in(&table_rows, &families), exposed);
        // Every name the page mentions anywhere (queries included) exists.
        let unknown: Vec<String> = names_in(&docs, &families)
            .difference(&exposed)
            .cloned()
            .collect();
        assert!(
            unknown.is_empty(),
            "docs/metrics.md names unknown metrics: {unknown:?}"
        );

        let dashboard = doc("docs/grafana-jarfleet.json");
        let used = names_in(&dashboard, &families);
        let unknown: Vec<&String> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "the dashboard queries unknown metrics: {unknown:?}"
        );
        assert!(used.len() >= 15, "{used:?}");
    }

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let mut h = Histogram::default();
        for ms in [0, 1, 2, 10, 10_000, 60_000] {
            h.observe(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 6);
        let b = h.buckets();
        assert_eq!(b.len(), HEALTH_BOUNDS.len() + 1);
        // 0 ms and exactly 1 ms fall in le=0.001; 60 s only in +Inf.
        assert_eq!(b[0], (0.001, 2));
        assert_eq!(b[1], (0.0025, 1));
        assert_eq!(b[3], (0.01, 1));
        assert_eq!(b[12], (10.0, 1));
        assert_eq!(b[13], (f64::INFINITY, 1));
        assert!((h.sum - 70.013).abs() < 1e-9);
    }
}
