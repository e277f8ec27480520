//! Request and response bodies (JSON).

use serde::{Deserialize, Serialize};

use jarfleet_core::reconcile::Plan;
use jarfleet_core::spec::FleetSpec;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionInfo {
    pub protocol: u32,
    pub version: String,
    pub pid: u32,
    pub state_dir: String,
    /// The binary's build id (two builds of one version differ here); empty if unknown.
    #[serde(default)]
    pub build: String,
}

/// What a `jarfleet` binary says of itself (`jarfleet version --json`): what `jarfleet upgrade`
/// checks before a running daemon hands over to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    #[serde(default)]
    pub build: String,
    /// The API protocol it speaks.
    pub protocol: u32,
    /// The protocol its daemon speaks to its load balancer's data plane.
    pub data_plane_protocol: u32,
}

/// `POST /v1/upgrade` (`jarfleet upgrade`): the daemon and its data plane hand over to another
/// binary.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpgradeRequest {
    /// The new binary (absolute path).
    pub binary: String,
    /// How long the old data plane may finish the requests and connections it holds.
    pub grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub spec: FleetSpec,
    pub dry_run: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub plan: Plan,
    pub applied: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Start,
    Stop,
    Restart,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ActionRequest {
    pub app: String,
    /// `None` = every instance of the app (restart is then rolling).
    pub slot: Option<u32>,
    pub action: Action,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleRequest {
    pub app: String,
    pub instances: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShutdownRequest {
    /// Stop every instance (drained, graceful) before the daemon exits. `false` leaves the JVMs
    /// running under their shims for the next daemon to adopt.
    pub stop_instances: bool,
}

/// Reply to state-changing calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ack {
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// `usage` (the request was wrong: exit 2) or `failed` (the operation failed: exit 1).
    pub kind: ErrorKind,
    pub message: String,
    #[serde(default)]
    pub hint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorKind {
    Usage,
    Failed,
    Protocol,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusReport {
    pub daemon: DaemonStatus,
    pub apps: Vec<AppStatus>,
    /// Shims whose JVM runs but which no instance accounts for (their records were lost):
    /// left running, never stopped unasked; `jarfleet down --strays` stops them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub strays: Vec<StrayStatus>,
    /// In cluster mode: every app's instances on every node, as this node sees the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
}

/// `status` in cluster mode: the instances of the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    /// The node answering (its own instances are in `apps`, in full).
    pub me: String,
    /// Every slot placed, and every copy a node reports, by app and slot.
    pub instances: Vec<ClusterInstance>,
    /// Each app's last rollout of a new release across the nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<ClusterRollout>,
}

/// A new release of an app going out across the cluster, one node at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRollout {
    pub app: String,
    pub release: String,
    /// The release it replaces (what the nodes not reached yet run).
    pub from: String,
    /// `rolling`, `done` or `rolled-back`.
    pub state: String,
    /// The nodes cleared to run it, in order, with when (ms since the epoch).
    pub steps: Vec<RolloutStep>,
    /// Why it was rolled back.
    #[serde(default)]
    pub why: Option<String>,
    pub started_ms: u64,
    #[serde(default)]
    pub ended_ms: Option<u64>,
    /// `rolling` (node by node), `canary` or `blue-green` (every node at once, led by the
    /// scheduler).
    #[serde(default)]
    pub strategy: String,
    /// Canary: the new release's share of every balancer's traffic now.
    #[serde(default)]
    pub percent: u8,
    /// Canary: a `pause` step passed; it waits for `jarfleet promote` (or `abort`).
    #[serde(default)]
    pub paused: bool,
    /// Canary: each judged step, on the whole cluster's figures and each node's.
    #[serde(default)]
    pub verdicts: Vec<RolloutVerdict>,
}

/// A canary step of a cluster-wide rollout, judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutVerdict {
    /// 1-based.
    pub step: u32,
    pub percent: u8,
    pub passed: bool,
    /// The whole cluster's figures (and why it failed).
    pub figures: String,
    /// Each node's figures.
    pub nodes: std::collections::BTreeMap<String, String>,
    pub at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStep {
    pub node: String,
    pub at_ms: u64,
}

/// One instance of the cluster: where it is placed and what its node reports of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInstance {
    pub app: String,
    pub slot: u32,
    /// The node running this copy.
    pub node: String,
    /// The placement's generation this copy runs for.
    pub generation: u64,
    /// `starting`, `ready`, `draining`, `failed`, or `placed` (its node has not reported it).
    pub state: String,
    /// Where the slot is placed now; differs from `node` for a copy handing over.
    pub placed_on: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub release: String,
    #[serde(default)]
    pub pid: Option<u32>,
    #[serde(default)]
    pub restarts: u32,
}

/// A shim no instance accounts for, and its JVM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StrayStatus {
    /// Its run dir (`STATE/run/<app>.<slot>.<generation>`).
    pub run_dir: String,
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub shim_pid: u32,
    pub pid: u32,
    /// The port its launch file gave the JVM.
    #[serde(default)]
    pub port: Option<u16>,
}

/// `POST /v1/strays/stop` (`jarfleet down --strays`): stops every stray shim's JVM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StopStraysRequest {}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    /// The daemon binary's build id (see [`VersionInfo::build`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub build: String,
    /// The load balancer's data-plane process, when one runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_plane: Option<DataPlaneStatus>,
    pub state_dir: String,
    pub uptime_secs: u64,
    pub spec: Option<String>,
    /// The daemon's open files: its limit, the load balancer's share, shortages met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_files: Option<OpenFiles>,
    /// Whether the daemon can write its state and its log (a full disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreHealth>,
    /// Daemon-level trouble, one line each (e.g. the store cannot be written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The load balancer's own process (it outlives the daemon).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPlaneStatus {
    pub pid: Option<u32>,
    /// Times this daemon replaced it (it died or stopped answering).
    pub replaced: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_replaced_because: Option<String>,
}

/// The daemon's writes: its store (state.db) and its log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreHealth {
    /// The store takes writes (false while they fail, e.g. on a full disk).
    pub writable: bool,
    /// Since when writes fail (epoch ms).
    pub failing_since: Option<u64>,
    pub last_error: Option<String>,
    /// Writes kept in memory, to be written when the store takes them again.
    pub pending_writes: u64,
    /// Failed store writes (and retries) since the daemon started.
    pub write_errors: u64,
    /// Events dropped from the full in-memory queue since the daemon started.
    pub events_dropped: u64,
    /// The store was opened for the daemon alone (a start on a full disk): event listings wait.
    pub exclusive: bool,
    /// Lines of the daemon's own log that could not be written since it started.
    pub log_lines_dropped: u64,
    /// Why the daemon's log cannot be written now, if it cannot.
    pub log_failing: Option<String>,
    /// Free space on the state dir's file system (for the daemon; none if it cannot be read).
    #[serde(default)]
    pub disk_free_bytes: Option<u64>,
    /// That space is all but gone (under 1 MiB): writes of the store, the logs and new
    /// instances' files fail.
    #[serde(default)]
    pub disk_full: bool,
}

/// The daemon's open-file limit and what it does with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFiles {
    /// The soft limit in force (raised to the hard limit at start).
    pub limit: u64,
    pub hard_limit: u64,
    /// The soft limit the daemon was started with; shims, JVMs and exec checks start with it.
    pub started_with: u64,
    /// Kept for the control plane: health checks, the API, the store, shims.
    pub reserve: u64,
    /// Client connections the load balancer's listeners may hold together.
    pub balancer_budget: u64,
    /// Descriptors open now (none when they could not be counted).
    pub open: Option<u64>,
    /// Times the daemon was short of descriptors (or memory, local ports, …) since it started;
    /// none of them was held against an instance.
    pub shortages: u64,
    /// The latest of them.
    pub last_shortage: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppStatus {
    pub name: String,
    pub release: String,
    pub desired: u32,
    pub ready: u32,
    /// A deployment (deploy, rollback, rolling restart) in progress.
    pub rolling: bool,
    /// That deployment, e.g. `#4 3f2a9c1b7d00 → 9e8d7c6b5a41 running`.
    #[serde(default)]
    pub deployment: Option<String>,
    /// The built-in load balancer's address, if the app has one.
    #[serde(default)]
    pub listen: Option<String>,
    /// Whether that listener serves, or why it is not bound (it is retried by itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<ListenerState>,
    /// How its instances are health-checked (what `jarfleet export nginx|haproxy` writes).
    #[serde(default)]
    pub health: Option<HealthInfo>,
    /// Its figures: totals and per backend (requests by status class, errors, retries,
    /// in-flight, latency).
    #[serde(default)]
    pub balancer: Option<serde_json::Value>,
    pub java: Option<String>,
    /// The canary under way, with the figures of its current step so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    pub instances: Vec<InstanceStatus>,
}

/// An app's load balancer listener: serving, or not bound (with the error) and retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerState {
    pub bound: bool,
    /// Why the last attempt to bind failed.
    #[serde(default)]
    pub error: Option<String>,
    /// Failed attempts in a row.
    #[serde(default)]
    pub failures: u32,
    /// When the next attempt is due, from now.
    #[serde(default)]
    pub retry_in_ms: Option<u64>,
}

/// A canary deployment's progress as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryStatus {
    /// The release under test.
    pub release: String,
    /// The current step (1-based) of `steps`; 0 until the whole canary set is ready.
    pub step: u32,
    /// Traffic percentages of every step.
    pub steps: Vec<u8>,
    /// The canary's share of the traffic now (0 once it failed).
    pub percent: u8,
    /// Judged good at a `pause` step: waiting for `jarfleet promote`.
    pub paused: bool,
    /// Every step passed: the old set is going.
    pub passed: bool,
    /// How long the current step has run, and how long it runs before it is judged.
    pub step_elapsed_ms: Option<u64>,
    pub step_time_ms: u64,
    /// Both sets' figures over the current step so far.
    pub canary_figures: SetSummary,
    pub stable_figures: SetSummary,
    /// The latest verdict and its figures, e.g. `step 1 passed: canary 40 requests, ...`.
    pub last_verdict: Option<String>,
}

/// One set's traffic over a canary step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SetSummary {
    pub requests: u64,
    /// 5xx responses and connection failures.
    pub failures: u64,
    pub error_rate: f64,
    pub p99_ms: Option<f64>,
}

/// An app's health check, as a load balancer outside jarfleet needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthInfo {
    /// `http`, `tcp` or `exec`.
    pub check: String,
    /// The HTTP check's path (2xx or 3xx = healthy).
    #[serde(default)]
    pub path: Option<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failed checks before an instance is unhealthy.
    pub failures: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub app: String,
    pub slot: u32,
    /// `pending`, `starting`, `ready`, `unhealthy`, `backoff`, `crash-loop`, `stopping`,
    /// `stopped`, `failed`.
    pub state: String,
    pub ready: bool,
    pub release: String,
    /// PID of the JVM.
    pub pid: Option<u32>,
    pub shim_pid: Option<u32>,
    pub port: Option<u16>,
    pub uptime_secs: Option<u64>,
    pub restarts: u32,
    pub cpu_percent: Option<f64>,
    pub rss_bytes: Option<u64>,
    pub last_exit: Option<String>,
    pub health_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub ts: u64,
    /// Stable dotted kind, e.g. `instance.ready`, `instance.exited`, `app.added`.
    pub kind: String,
    pub app: Option<String>,
    pub slot: Option<u32>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub app: String,
    pub slot: u32,
    /// `stdout` or `stderr`.
    pub stream: String,
    pub line: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogsQuery {
    pub app: String,
    pub slot: Option<u32>,
    pub lines: usize,
    pub follow: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventsQuery {
    pub lines: usize,
    pub follow: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    pub app: String,
    /// Absolute path of the new jar.
    pub artifact: String,
    pub version: Option<String>,
    /// This deployment's strategy instead of the app's (`deploy --strategy`).
    #[serde(default)]
    pub strategy: Option<jarfleet_core::spec::Strategy>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackRequest {
    pub app: String,
    /// A release id (or its prefix) or a version; `None` = the release before the current one.
    pub to: Option<String>,
}

/// `promote` or `abort` a canary. Promote on a paused step goes on with the next steps;
/// otherwise (or with `full`) the remaining steps are skipped and the new set takes all
/// traffic. Abort fails the canary now and rolls back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRequest {
    pub app: String,
    pub promote: bool,
    #[serde(default)]
    pub full: bool,
}

/// A deployment: the move of an app from one release to another.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeploymentRecord {
    #[serde(default)]
    pub id: i64,
    pub app: String,
    pub from: String,
    pub to: String,
    pub strategy: String,
    /// `running`, `rolling-back`, `succeeded`, `rolled-back`, `failed`.
    pub outcome: String,
    pub reason: Option<String>,
    pub started_at: u64,
    pub ended_at: Option<u64>,
    pub steps: Vec<DeployStep>,
    /// A canary's progress, kept so that a restarted daemon resumes it where it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryProgress>,
}

/// Where a canary is: enough to resume it after a daemon restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryProgress {
    /// Index of the current step in the release's `canary.steps`.
    pub step: u32,
    /// The canary's share of the traffic (0 before the first step and once it failed).
    pub percent: u8,
    pub paused: bool,
    pub passed: bool,
}

impl DeploymentRecord {
    pub fn is_active(&self) -> bool {
        self.outcome == "running" || self.outcome == "rolling-back"
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployStep {
    pub at: u64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseInfo {
    pub id: String,
    pub version: Option<String>,
    pub created_at: u64,
    pub current: bool,
    pub artifact: String,
    /// The JDK this host runs the release on, e.g. `17.0.15 (/usr/lib/jvm/java-17-openjdk-amd64)`
    /// (not part of the release id: the same release has the same id on every host).
    #[serde(default)]
    pub jdk: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryReport {
    pub app: String,
    pub current: String,
    pub releases: Vec<ReleaseInfo>,
    pub deployments: Vec<DeploymentRecord>,
    /// In cluster mode: the app's last release across the cluster, with each node it reached
    /// and each canary step judged (this node's own deployments are in `deployments`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_rollout: Option<ClusterRollout>,
}

/// `GET /v1/cluster/nodes`: every node of the cluster this daemon belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNodes {
    pub cluster: String,
    /// The node answering.
    pub me: String,
    /// The scheduler's node, if one is elected.
    pub leader: Option<String>,
    pub nodes: Vec<ClusterNode>,
    /// Why the answer may be stale (etcd not read yet, or not reachable), if it may be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

/// One node in [`ClusterNodes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    pub name: String,
    /// `ready`, `suspect`, `down`, `draining` or `ineligible`.
    pub state: String,
    pub address: String,
    pub peer_port: u16,
    /// Its relay's port (nodes with `[cluster] tls`): other nodes' balancers reach its
    /// instances through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_port: Option<u16>,
    pub version: String,
    /// Memory offered to instances, in bytes, and how much of it placements take.
    pub memory: u64,
    pub memory_used: u64,
    /// Slots placed on it.
    pub instances: u32,
    /// Its instances that are ready.
    pub ready: u32,
    /// Seconds since its lease was last renewed (`None` when down or not known).
    pub heartbeat_secs_ago: Option<u64>,
    /// Instances its daemon runs now, whatever their state (a node being drained is done
    /// when this and `instances` are 0).
    #[serde(default)]
    pub running: u32,
    /// When its drain's deadline passes (ms since the epoch), while it is being drained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// `POST /v1/cluster/drain`: `cluster drain|undrain NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainRequest {
    pub node: String,
    /// `false`: `undrain`.
    pub drain: bool,
    /// How long the instances may take to move before whatever still runs there is stopped.
    #[serde(default)]
    pub deadline_secs: Option<u64>,
}

/// `POST /v1/cluster/eligibility`: `cluster eligible|ineligible NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EligibilityRequest {
    pub node: String,
    pub eligible: bool,
}
