//! Typed, validated fleet spec. Built only by [`super::load`]; serialisable so the CLI can send it
//! to the daemon and the daemon can persist it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::javaver::VersionReq;

/// Placeholders resolved per instance at start (never from the environment at load time).
/// `JARFLEET_CONFIG_DIR` is the instance's rendered config directory
/// (`STATE/config/APP/SLOT`).
pub const INSTANCE_VARS: [&str; 4] = [
    "PORT",
    "JARFLEET_SLOT",
    "JARFLEET_INSTANCE",
    "JARFLEET_CONFIG_DIR",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetSpec {
    /// The spec file this came from (absolute when loaded from disk).
    pub source: PathBuf,
    pub daemon: DaemonSpec,
    /// Keys that artifacts must be signed with (none: signatures are not required).
    #[serde(default)]
    pub trust: TrustSpec,
    /// Apps by name; names are `[a-z0-9][a-z0-9_-]*`, at most 40 chars.
    pub apps: BTreeMap<String, AppSpec>,
    /// `[cluster]`: this host is a node of a cluster whose shared state is in etcd (apps are
    /// then applied to the cluster, and a node's spec may name none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSpec>,
}

/// `[cluster]`: what a node needs to join a cluster. Everything but `name`, `etcd` and
/// `advertise` has a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    /// The cluster's name: every key it has in etcd is under `/jarfleet/<name>/`.
    pub name: String,
    /// etcd client URLs (`http://host:port`); any one that answers will do.
    pub etcd: Vec<String>,
    /// This node's name, unique in the cluster; `None` = the host name.
    pub node: Option<String>,
    /// The address other nodes reach this node and its instances on (an IP address or a
    /// host name, no port).
    pub advertise: String,
    /// The port of this node's peer endpoint on `advertise` (peers probe it; a node's
    /// instances leave every balancer when it stops answering).
    pub peer_port: u16,
    /// With `tls`: the port of this node's relay on `advertise`, through which the other
    /// nodes' balancers reach its instances (which may then listen on loopback only).
    pub relay_port: u16,
    /// Labels apps can require (`[apps.NAME.placement] node_labels`).
    pub labels: BTreeMap<String, String>,
    /// Memory this node offers to instances; `None` = the machine's memory less 10 %.
    pub memory: Option<u64>,
    /// The node's membership lease: a node silent for this long is down and its instances
    /// are placed elsewhere.
    pub lease_ttl: Duration,
    /// How often each node probes every peer's endpoint…
    pub probe_interval: Duration,
    /// …and how long one probe may take before it counts as a miss.
    pub probe_timeout: Duration,
    /// Mutual TLS between the nodes (`tls = { ca, cert, key }`): the peer endpoint (probes,
    /// artifact transfers) speaks TLS and takes only clients with a certificate of the
    /// cluster's CA.
    pub tls: Option<ClusterTlsSpec>,
}

/// `[cluster] tls`: the cluster's CA certificate, this node's certificate and its key (PEM
/// files, resolved against the spec's dir; made by `jarfleet cluster ca` and `cluster cert`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterTlsSpec {
    pub ca: std::path::PathBuf,
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// Default of `[cluster] peer_port`.
pub const DEFAULT_PEER_PORT: u16 = 9901;
/// Default of `[cluster] relay_port`.
pub const DEFAULT_RELAY_PORT: u16 = 9902;
/// Default of `[cluster] lease_ttl`: a lost host is noticed within this, and an etcd leader
/// change (about 1-2 s) costs at most two of its once-a-second keep-alives.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(6);
/// Default of `[cluster] probe_interval`.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Default of `[cluster] probe_timeout`.
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_millis(300);

/// `[apps.NAME.placement]`: where a cluster may run the app's instances (ignored on one host).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementSpec {
    /// Memory one instance needs; `None` = the JVM's `-Xmx` plus a quarter, or
    /// [`DEFAULT_INSTANCE_MEMORY`] without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// At most this many of the app's instances on one node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_node: Option<u32>,
    /// Only nodes with every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_labels: BTreeMap<String, String>,
}

/// What one instance is counted for when it has no `placement.memory` and no `-Xmx`.
pub const DEFAULT_INSTANCE_MEMORY: u64 = 512 * 1024 * 1024;

impl AppSpec {
    /// Memory one instance is counted for by placement: `placement.memory`, else the last
    /// `-Xmx` in the JVM options plus a quarter (metaspace, threads, code cache), else
    /// [`DEFAULT_INSTANCE_MEMORY`].
    pub fn instance_memory(&self) -> u64 {
        if let Some(m) = self.placement.memory {
            return m;
        }
        self.java
            .opts
            .iter()
            .rev()
            .find_map(|o| o.strip_prefix("-Xmx").and_then(parse_jvm_size))
            .map(|heap| heap.saturating_add(heap / 4))
            .unwrap_or(DEFAULT_INSTANCE_MEMORY)
    }
}

/// A JVM size such as `512m`, `2G` or `1048576` (bytes).
fn parse_jvm_size(text: &str) -> Option<u64> {
    let (digits, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let factor: u64 = match unit {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        "t" | "T" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(factor)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdSource {
    /// `http://host:port` client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, e.g. `/config/orders/`; each key below it is one variable.
    pub prefix: String,
}

/// `[apps.NAME.config] on_change`: what an etcd change does to running instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OnChange {
    /// A new release, rolled out by the app's strategy (default).
    #[default]
    Restart,
    /// The instances' config files are rendered anew, then each instance in turn gets this
    /// signal (e.g. `HUP`).
    Signal { signal: String },
    /// The config files are rendered anew, then each instance in turn gets this request
    /// (e.g. `POST /actuator/refresh`), which must answer 2xx.
    Http { method: String, path: String },
}

impl std::fmt::Display for OnChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OnChange::Restart => write!(f, "restart"),
            OnChange::Signal { signal } => write!(f, "signal:{signal}"),
            OnChange::Http { method, path } => write!(f, "http:{method} {path}"),
        }
    }
}

/// `[trust]`: with keys listed, every artifact needs a signature by one of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustSpec {
    /// minisign public key files or OpenPGP keyrings (absolute after loading).
    pub keys: Vec<PathBuf>,
    /// A PEM file of CA certificates trusted for `https://` artifacts besides the usual roots.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DaemonSpec {
    /// Resolved against the spec file's directory. Default `.jarfleet` (after `${JARFLEET_STATE:...}`).
    pub state_dir: PathBuf,
    /// Optional TCP address for dashboard + API + /metrics, e.g. `127.0.0.1:9900`.
    pub http: Option<String>,
    /// The bearer token of the TCP API: a file of mode 0600 (resolved like `state_dir`).
    /// Without it, nothing that changes state is accepted over TCP.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Reads (GET: status, history, events, logs, /metrics) over TCP without the token.
    #[serde(default)]
    pub open_reads: bool,
    /// HTTPS for the TCP API: PEM certificate chain and private key.
    #[serde(default)]
    pub tls: Option<TlsSpec>,
    /// Serve `/metrics` (Prometheus text format). Default on.
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// Host names under which reads without the token (`open_reads`) are answered, besides
    /// `localhost` and IP addresses (a guard against DNS rebinding). Lower case, no port.
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Open TCP API connections at most; at the cap idle ones are closed to make room.
    #[serde(default = "default_http_max_connections")]
    pub http_max_connections: u32,
    /// Time a client has to send a whole request head (from the accept, or from the first
    /// byte of a request on a kept-alive connection).
    #[serde(default = "default_http_header_timeout")]
    pub http_header_timeout: Duration,
    /// A kept-alive connection with no request for this long is closed.
    #[serde(default = "default_http_idle_timeout")]
    pub http_idle_timeout: Duration,
    /// The daemon's own log file (`daemon --log`, `up -d`) is rotated past this size…
    #[serde(default = "default_daemon_log_max_size")]
    pub log_max_size: u64,
    /// …keeping this many rotated files.
    #[serde(default = "default_daemon_log_keep")]
    pub log_keep: u32,
}

/// Default of `[daemon] log_max_size`.
pub const DEFAULT_DAEMON_LOG_MAX_SIZE: u64 = 10_000_000;
/// Default of `[daemon] log_keep`.
pub const DEFAULT_DAEMON_LOG_KEEP: u32 = 5;

fn default_daemon_log_max_size() -> u64 {
    DEFAULT_DAEMON_LOG_MAX_SIZE
}

fn default_daemon_log_keep() -> u32 {
    DEFAULT_DAEMON_LOG_KEEP
}

/// Default of `[daemon] http_max_connections`.
pub const DEFAULT_HTTP_MAX_CONNECTIONS: u32 = 256;
/// Default of `[daemon] http_header_timeout` (nginx's `client_header_timeout` defaults to 60 s;
/// HAProxy's `timeout http-request` has no default and is commonly set to 5-10 s).
pub const DEFAULT_HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `[daemon] http_idle_timeout` (nginx's `keepalive_timeout`).
pub const DEFAULT_HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

fn default_true() -> bool {
    true
}

fn default_http_max_connections() -> u32 {
    DEFAULT_HTTP_MAX_CONNECTIONS
}

fn default_http_header_timeout() -> Duration {
    DEFAULT_HTTP_HEADER_TIMEOUT
}

fn default_http_idle_timeout() -> Duration {
    DEFAULT_HTTP_IDLE_TIMEOUT
}

/// `[daemon] tls = { cert = "...", key = "..." }` (PEM files, resolved against the spec's dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSpec {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    pub launch: Launch,
    /// Working directory of each instance; `None` = the instance's own dir in the state dir.
    pub workdir: Option<PathBuf>,
    /// Unix user the JVMs run as (the daemon must run as root to switch); `None` = the
    /// daemon's own user.
    #[serde(default)]
    pub user: Option<String>,
    pub instances: u32,
    pub ports: PortRange,
    /// Program arguments (after the jar / main class). May contain `${PORT}` etc.
    pub args: Vec<String>,
    /// Extra environment. Values may contain `${PORT}` etc.
    pub env: BTreeMap<String, String>,
    pub java: JavaSpec,
    /// Built-in load balancer listen address (used once the proxy exists).
    pub listen: Option<String>,
    pub health: HealthSpec,
    /// The fleet's `[trust]` keys, copied to each app so that a later `deploy` checks its
    /// artifact against them too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_keys: Vec<PathBuf>,
    /// `config = "config/"`: a directory of config templates next to the spec, rendered into
    /// each release and then for each instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<PathBuf>,
    /// The templates of `config` rendered with the environment of whoever loaded the spec
    /// (relative path → text; per-instance values still `${PORT}` etc.). Filled by the CLI.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_rendered: BTreeMap<String, String>,
    /// `[apps.NAME.config] etcd = { endpoints, prefix }`: keys under the prefix become the
    /// app's environment (`etcd_env`), kept current by a watch; a change is a new release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_etcd: Option<EtcdSource>,
    /// The values read from etcd for this release (key under the prefix → value); they win
    /// over `env`. Filled when the release is prepared.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub etcd_env: BTreeMap<String, String>,
    /// With an etcd source: the `config` templates as written (relative path → text), rendered
    /// by the daemon with the etcd values into `config_rendered` for each release. Filled by
    /// the CLI.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_templates: BTreeMap<String, String>,
    /// With an etcd source: the loading environment's values of the variables those templates
    /// use (etcd's values win over them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config_values: BTreeMap<String, String>,
    /// What an etcd change does to running instances (a new release, or a live refresh).
    #[serde(default)]
    pub config_on_change: OnChange,
    pub restart: RestartSpec,
    pub stop: StopSpec,
    pub logs: LogSpec,
    /// How the built-in load balancer spreads requests (when `listen` is set).
    #[serde(default)]
    pub balancer: BalancerSpec,
    /// `[apps.X.deploy]`: how a new release replaces the running one.
    #[serde(default)]
    pub deploy: DeploySpec,
    /// `[apps.X.placement]`: where a cluster may run the instances.
    #[serde(default)]
    pub placement: PlacementSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Launch {
    /// `java -jar <path>`; path resolved against the spec file's directory. For a remote
    /// artifact, `url` is where it comes from and `path` is empty until it is downloaded.
    Jar {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// Expected sha256 (64 hex digits) of the jar, local or remote.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    /// `java -cp <classpath> <main_class>`; entries resolved against the spec dir, globs kept.
    MainClass {
        main_class: String,
        classpath: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JavaSpec {
    /// `java = { version = ">=17" }`; `None` = any JDK that can run the jar.
    pub version: Option<VersionReq>,
    /// Explicit JDK home; overrides discovery.
    pub home: Option<PathBuf>,
    /// JVM options, before `-jar`/`-cp`. May contain `${PORT}` etc.
    pub opts: Vec<String>,
    /// `-XX:+ExitOnOutOfMemoryError` (default on).
    pub exit_on_oom: bool,
    /// `-XX:+HeapDumpOnOutOfMemoryError` into `dumps/<app>/` (default on).
    pub heap_dump_on_oom: bool,
    /// `-Xlog:gc*` into the instance log dir with rotation (default on).
    pub gc_log: bool,
    /// Spring Boot jars run from an extracted layout, and every release gets a trained class
    /// data archive (AppCDS / AOT cache) its instances start with (default on).
    #[serde(default = "yes")]
    pub fast_start: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum HealthCheck {
    /// GET `http://127.0.0.1:PORT{path}`; 2xx/3xx = healthy.
    Http { path: String },
    /// TCP connect to `127.0.0.1:PORT`.
    Tcp,
    /// Run a command (no shell); exit 0 = healthy. `${PORT}` etc. are resolved.
    Exec { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSpec {
    pub check: HealthCheck,
    /// Default 5 s.
    pub interval: Duration,
    /// Default 2 s.
    pub timeout: Duration,
    /// Consecutive failures to turn unhealthy. Default 3.
    pub failures: u32,
    /// How long a starting JVM gets to become ready (polled every 250 ms). Default 120 s.
    pub start_timeout: Duration,
    /// An instance still unhealthy after this long is restarted. Default 45 s.
    pub unhealthy_restart_after: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestartSpec {
    /// First delay after the immediate restart. Default 1 s.
    pub backoff_initial: Duration,
    /// Cap. Default 5 min.
    pub backoff_max: Duration,
    /// Healthy this long resets the backoff. Default 60 s.
    pub reset_after: Duration,
    /// `None` = never give up.
    pub max_restarts: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StopSpec {
    /// Default 30 s.
    pub drain_timeout: Duration,
    /// SIGTERM → SIGKILL grace. Default 30 s.
    pub stop_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogSpec {
    /// Rotate a stream's file when it reaches this size. Default 50 MB.
    pub max_size: u64,
    /// Rotated files kept per stream. Default 10.
    pub keep: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Replace instances a few at a time (default).
    Rolling,
    /// Shift `canary.steps`% of traffic to the new release, judged at each step.
    Canary,
    /// Start a full new set, then switch the load balancer atomically.
    BlueGreen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploySpec {
    /// Default rolling.
    pub strategy: Strategy,
    /// Extra instances started above `instances` during a rollout. Default 1.
    pub max_surge: u32,
    /// Instances that may be missing from the LB during a rollout. Default 0.
    /// `max_surge + max_unavailable >= 1` always holds.
    pub max_unavailable: u32,
    /// A new instance must stay healthy this long after ready before it counts. Default 10 s.
    pub min_healthy: Duration,
    /// Roll back automatically on failure. Default true.
    pub auto_rollback: bool,
    /// Blue-green: how long the old set is kept warm for an instant rollback. Default 5 min.
    pub keep_old: Duration,
    /// Releases kept for rollback; older ones are pruned (never the current or the previous).
    /// Default 5.
    #[serde(default = "default_keep_releases")]
    pub keep_releases: u32,
    /// Canary parameters (used when `strategy` is canary; defaults otherwise).
    pub canary: CanarySpec,
}

fn default_keep_releases() -> u32 {
    5
}

impl Default for DeploySpec {
    fn default() -> Self {
        DeploySpec {
            strategy: Strategy::Rolling,
            max_surge: 1,
            max_unavailable: 0,
            min_healthy: Duration::from_secs(10),
            auto_rollback: true,
            keep_old: Duration::from_secs(300),
            keep_releases: default_keep_releases(),
            canary: CanarySpec::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanarySpec {
    /// Traffic percentages, strictly increasing, each 1..=100. Default `[5, 25, 50, 100]`.
    pub steps: Vec<u8>,
    /// Time spent at each step before it is judged. Default 60 s.
    pub step_time: Duration,
    /// Highest tolerated canary error rate (5xx + connection failures), 0..=1. Default 0.01.
    pub max_error_rate: f64,
    /// How many times the stable set's median the canary's must exceed (besides
    /// `latency_floor`, and a significant rank test) to be slower (>= 1; the name is kept from
    /// when the p99 was compared). Default 1.5.
    pub max_p99_ratio: f64,
    /// How far (absolute) the canary's median must be above the stable set's to be slower.
    /// Default 5 ms.
    #[serde(default = "default_latency_floor")]
    pub latency_floor: Duration,
    /// The first responses of each canary instance that are not judged for latency (a fresh JVM
    /// warming up). Default 200.
    #[serde(default = "default_warmup_requests")]
    pub warmup_requests: u64,
    /// A step is judged only once the canary served this many requests in it (until then the
    /// step goes on). Default 20.
    #[serde(default = "default_min_requests")]
    pub min_requests: u64,
    /// Steps (from `steps`) after which the canary waits for `jarfleet promote` once judged
    /// good; it keeps its share and keeps being judged meanwhile. Default none.
    #[serde(default)]
    pub pause: Vec<u8>,
}

fn default_min_requests() -> u64 {
    20
}

fn default_latency_floor() -> Duration {
    Duration::from_millis(5)
}

fn default_warmup_requests() -> u64 {
    200
}

impl Default for CanarySpec {
    fn default() -> Self {
        CanarySpec {
            steps: vec![5, 25, 50, 100],
            step_time: Duration::from_secs(60),
            max_error_rate: 0.01,
            max_p99_ratio: 1.5,
            latency_floor: default_latency_floor(),
            warmup_requests: default_warmup_requests(),
            min_requests: default_min_requests(),
            pause: Vec::new(),
        }
    }
}

/// `[apps.NAME.balancer]`: the built-in load balancer's settings for the app's listener. The
/// defaults are the proxy's own (`jarfleet_proxy::ListenerConfig`; a daemon test keeps them
/// equal). Every one of them changes live on `apply`. Records stored before a key existed read
/// its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BalancerSpec {
    pub balance: Balance,
    /// A new instance's weight ramps up over this long after it is ready. Default 30 s.
    pub slow_start: Duration,
    /// A request head must be complete this long after its first byte (on a new connection,
    /// after the accept). Default 10 s.
    pub head_timeout: Duration,
    /// A keep-alive client connection with no request for this long is closed. Default 75 s.
    pub keepalive_timeout: Duration,
    /// The client stalls mid-body (sending the request, or taking the response) this long.
    /// Default 30 s.
    pub body_timeout: Duration,
    /// A connect to an instance. Default 2 s.
    pub connect_timeout: Duration,
    /// From the request sent to the response head, and between two reads of the response
    /// body. Default 60 s.
    pub response_timeout: Duration,
    /// A pooled connection to an instance idle longer than this is not reused. Default 20 s.
    pub backend_idle_timeout: Duration,
    /// tcp mode and upgraded connections: no byte either way for this long. Default 10 min.
    pub tcp_idle_timeout: Duration,
    /// Client connections the app's listener holds at once. Default 10,000.
    pub max_connections: u32,
    /// Idle keep-alive connections kept per instance. Default 128.
    pub max_idle_per_backend: u32,
    /// Request bodies up to this size are read whole before an instance is picked. Default
    /// 64 KiB.
    pub request_buffer: u64,
    /// How long an ejected instance gets no new request. Default 5 s.
    pub eject_for: Duration,
    /// Consecutive gateway failures that eject an instance. Default 3.
    pub eject_after: u32,
    /// An instance with requests waiting that sends no byte this long is probed (zero: off).
    /// Default 3 s.
    pub stall_timeout: Duration,
    /// Bound on that probe. Default 1 s.
    pub stall_probe_timeout: Duration,
}

impl Default for BalancerSpec {
    fn default() -> Self {
        BalancerSpec {
            balance: Balance::RoundRobin,
            slow_start: Duration::from_secs(30),
            head_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(75),
            body_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(60),
            backend_idle_timeout: Duration::from_secs(20),
            tcp_idle_timeout: Duration::from_secs(600),
            max_connections: 10_000,
            max_idle_per_backend: 128,
            request_buffer: 64 * 1024,
            eject_for: Duration::from_secs(5),
            eject_after: 3,
            stall_timeout: Duration::from_secs(3),
            stall_probe_timeout: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    /// Smooth weighted round-robin (default).
    #[default]
    RoundRobin,
    /// The less loaded of two random instances (power of two choices).
    LeastRequest,
}
