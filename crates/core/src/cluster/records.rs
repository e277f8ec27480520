//! The values the cluster keeps in etcd, as JSON. Unknown fields are ignored (a newer node may
//! write more), but every record is checked after decoding ([`Record::check`]): a value that
//! does not decode or does not hold is reported with its key, never taken half.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::spec::node_name;

/// A stored value: checked after decoding.
pub trait Record: Serialize + DeserializeOwned {
    /// What is wrong with a decoded value, if anything.
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Decodes and checks a stored value; the error names the key.
pub fn decode<T: Record>(key: &str, value: &str) -> Result<T, String> {
    let record: T = serde_json::from_str(value).map_err(|e| format!("{key}: {e}"))?;
    record.check().map_err(|e| format!("{key}: {e}"))?;
    Ok(record)
}

/// Encodes a value to store.
pub fn encode<T: Record>(record: &T) -> String {
    // Our records are plain data (strings, numbers, maps with string keys): serialising them
    // cannot fail.
    serde_json::to_string(record).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// `nodes/<node>` (on the node's lease) and `known/<node>` (kept): a node's registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub name: String,
    /// Where other nodes reach it and its instances (`[cluster] advertise`).
    pub address: String,
    /// Its peer endpoint's port on `address`.
    pub peer_port: u16,
    /// Its relay's port on `address` (nodes with mutual TLS): other nodes' balancers reach
    /// its instances through it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_port: Option<u16>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Memory it offers to instances, in bytes.
    pub memory: u64,
    /// jarfleet's version and build id.
    pub version: String,
    #[serde(default)]
    pub build: Option<String>,
    /// New at every registration: a node that comes back after its lease expired is told
    /// from the one that went.
    pub boot_id: String,
    /// When it registered (ms since the epoch).
    pub registered_ms: u64,
}

impl Record for NodeRecord {
    fn check(&self) -> Result<(), String> {
        node_name(&self.name)?;
        if self.address.is_empty() {
            return Err("the node has no address".into());
        }
        if self.peer_port == 0 {
            return Err("the node's peer port is 0".into());
        }
        if self.relay_port == Some(0) {
            return Err("the node's relay port is 0".into());
        }
        Ok(())
    }
}

/// `admin/<node>`: what an operator said of a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminRecord {
    /// `cluster ineligible NODE`: nothing new is placed on it (what runs there stays).
    #[serde(default)]
    pub ineligible: bool,
    /// `cluster drain NODE`: its instances are moved elsewhere (each new copy ready before
    /// the old one is drained and stopped), and nothing new goes there.
    #[serde(default)]
    pub draining: bool,
    /// When the drain's deadline passes (ms since the epoch, by the clock of the node that
    /// took the `drain`): whatever still runs on the node is then drained and stopped, moved
    /// or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline_ms: Option<u64>,
}

impl AdminRecord {
    /// Whether the node is draining and its deadline has passed at `now_ms`.
    pub fn drain_overdue(&self, now_ms: u64) -> bool {
        self.draining && self.drain_deadline_ms.is_some_and(|d| now_ms >= d)
    }
}

impl Record for AdminRecord {
    fn check(&self) -> Result<(), String> {
        if self.drain_deadline_ms.is_some() && !self.draining {
            return Err("a drain deadline on a node that is not draining".into());
        }
        Ok(())
    }
}

/// `leader`: the scheduler, on its lease. The key's create revision is its fencing epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    pub node: String,
    pub boot_id: String,
    pub since_ms: u64,
}

impl Record for LeaderRecord {
    fn check(&self) -> Result<(), String> {
        node_name(&self.node)
    }
}

/// `alloc/<app>/<slot>`: where a slot runs, written by the scheduler only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocRecord {
    pub node: String,
    /// Raised every time the slot is placed anew: a node's copy of an older generation is a
    /// leftover (drained once the new one is ready).
    pub generation: u64,
    /// Why it was placed (first placement, node lost, failing on a node, …): shown and kept
    /// in events.
    #[serde(default)]
    pub reason: String,
    /// When it was placed (ms since the epoch).
    #[serde(default)]
    pub placed_ms: u64,
}

impl Record for AllocRecord {
    fn check(&self) -> Result<(), String> {
        node_name(&self.node)?;
        if self.generation == 0 {
            return Err("generation 0".into());
        }
        Ok(())
    }
}

/// An instance's state as its node sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Starting,
    /// Passing its health check: every node's balancer sends it requests.
    Ready,
    /// On its way out: no balancer sends it anything new.
    Draining,
    /// Its node gave up on it (restarts exhausted, or it cannot start there).
    Failed,
}

impl std::fmt::Display for InstanceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstanceState::Starting => "starting",
            InstanceState::Ready => "ready",
            InstanceState::Draining => "draining",
            InstanceState::Failed => "failed",
        })
    }
}

/// `status/<node>/<app>/<slot>` (on the node's lease): an instance as its node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusRecord {
    /// The placement's generation this copy runs for.
    pub generation: u64,
    pub state: InstanceState,
    /// Where it answers: the node's address and the instance's port.
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
    /// The release this node's last deployment of the app rolled back from (its instances
    /// did not become healthy on it here): the cluster's rollout of that release stops.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
}

impl Record for StatusRecord {
    fn check(&self) -> Result<(), String> {
        if self.state == InstanceState::Ready && (self.address.is_none() || self.port.is_none()) {
            return Err("a ready instance without an address".into());
        }
        if self.port == Some(0) {
            return Err("port 0".into());
        }
        Ok(())
    }
}

/// Where a cluster-wide rollout of a release stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Node by node: the nodes in `cleared` run the new release, the others the one before.
    Rolling,
    /// Every node runs the new release.
    Done,
    /// A node's deployment of it failed: every node runs the release before it again.
    RolledBack,
}

impl std::fmt::Display for RolloutState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutState::Rolling => "rolling",
            RolloutState::Done => "done",
            RolloutState::RolledBack => "rolled-back",
        })
    }
}

/// How a rollout takes the new release across the cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutStrategy {
    /// One node after the other, each with its own deployment.
    #[default]
    Rolling,
    /// Every node starts its new set beside the old at once; the scheduler gives the new
    /// release each step's share of every balancer's traffic and judges the step on the sum of
    /// every node's figures.
    Canary,
    /// Every node starts its new set beside the old at once (out of traffic); once every new
    /// set is ready, one write switches every balancer.
    BlueGreen,
}

impl std::fmt::Display for RolloutStrategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RolloutStrategy::Rolling => "rolling",
            RolloutStrategy::Canary => "canary",
            RolloutStrategy::BlueGreen => "blue-green",
        })
    }
}

/// A judged canary step of a cluster-wide rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepVerdict {
    /// The step's index in the app's `canary.steps`.
    pub step: u32,
    pub percent: u8,
    pub passed: bool,
    /// The whole cluster's figures, in words (and why it failed).
    pub figures: String,
    /// Each node's own figures, in words.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
    pub at_ms: u64,
}

/// `stats/<node>/<app>` (on the node's lease): a node's part of a canary or blue-green rollout:
/// whether its new set is ready, and its balancer's figures for the canary and the stable set
/// since it began the current step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetStatsRecord {
    /// The release of its new set.
    pub release: String,
    /// Its whole new set is ready (and healthy for `min_healthy`).
    pub ready: bool,
    /// The step these figures are of, and the share it gave the new release.
    pub step: u32,
    pub percent: u8,
    #[serde(default)]
    pub figures: crate::canary::StepFigures,
    /// The upper bounds (µs) of the figures' latency buckets.
    #[serde(default)]
    pub bounds: Vec<u64>,
}

impl Record for SetStatsRecord {
    fn check(&self) -> Result<(), String> {
        if self.release.is_empty() {
            return Err("figures without their release".into());
        }
        if self.percent > 100 {
            return Err(format!("a share of {} %", self.percent));
        }
        let f = &self.figures;
        for (name, set) in [
            ("canary", &f.canary),
            ("canary_warm", &f.canary_warm),
            ("stable", &f.stable),
        ] {
            if set.failures > set.requests {
                return Err(format!("{name}: more failures than requests"));
            }
            if set.buckets.len() > self.bounds.len() + 1 {
                return Err(format!(
                    "{name}: {} latency buckets for {} bounds",
                    set.buckets.len(),
                    self.bounds.len()
                ));
            }
        }
        if self.bounds.len() >= crate::canary::SetFigures::MAX_BUCKETS {
            return Err(format!("{} latency bounds", self.bounds.len()));
        }
        if self.bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Err("latency bounds that do not increase".into());
        }
        Ok(())
    }
}

/// `rollout/<app>`: a new release of an app going out across the cluster one node at a time.
/// `apply` writes it (state `rolling`, no node cleared) in the same transaction as the app's
/// new release, so no node runs the release before the scheduler clears it; the scheduler
/// (fenced) clears one node after the other once the last one's instances are ready on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The release going out.
    pub release: String,
    /// The release the app ran before it (what nodes not cleared run).
    pub from: String,
    pub state: RolloutState,
    /// The nodes cleared to run the new release, in the order they were.
    #[serde(default)]
    pub cleared: Vec<String>,
    /// Per step: when each node was cleared (ms since the epoch), for `history`.
    #[serde(default)]
    pub cleared_ms: Vec<u64>,
    /// Why it was rolled back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_ms: Option<u64>,
    /// How it goes out (the new release's `[deploy] strategy`).
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Canary: the current step's index in `canary.steps`.
    #[serde(default)]
    pub step: u32,
    /// Canary: the new release's share of every balancer's traffic (0 until every node's new
    /// set is ready).
    #[serde(default)]
    pub percent: u8,
    /// Canary: when the current step began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_ms: Option<u64>,
    /// Canary passed, or blue-green switched: every node lets its old set go.
    #[serde(default)]
    pub released: bool,
    /// Canary: a `pause` step passed; it waits for `jarfleet promote` (judged on meanwhile).
    #[serde(default)]
    pub paused: bool,
    /// Canary: each judged step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<StepVerdict>,
    /// Rolling: the cleared nodes without the memory free for the app's surge, whose
    /// deployment of the release replaces its instances in place (no extra instance: one
    /// stopped, then started on the release, at a time).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_place: Vec<String>,
}

impl RolloutRecord {
    /// A new rollout of `release` (from `from`), no node cleared yet.
    pub fn new(release: &str, from: &str, strategy: RolloutStrategy, now: u64) -> RolloutRecord {
        RolloutRecord {
            release: release.to_string(),
            from: from.to_string(),
            state: RolloutState::Rolling,
            cleared: Vec::new(),
            cleared_ms: Vec::new(),
            why: None,
            started_ms: now,
            ended_ms: None,
            strategy,
            step: 0,
            percent: 0,
            step_started_ms: None,
            released: false,
            paused: false,
            verdicts: Vec::new(),
            in_place: Vec::new(),
        }
    }

    /// Whether every node moves at once, led by this record (canary, blue-green).
    pub fn leads_sets(&self) -> bool {
        self.strategy != RolloutStrategy::Rolling
    }

    /// Whether `node` runs the new release now, or the one before it.
    pub fn runs_new(&self, node: &str) -> bool {
        match self.state {
            RolloutState::Done => true,
            RolloutState::RolledBack => false,
            RolloutState::Rolling => self.cleared.iter().any(|n| n == node),
        }
    }
}

impl Record for RolloutRecord {
    fn check(&self) -> Result<(), String> {
        if self.release.is_empty() || self.from.is_empty() {
            return Err("a rollout without its releases".into());
        }
        if self.release == self.from {
            return Err("a rollout from a release to itself".into());
        }
        for n in &self.cleared {
            node_name(n)?;
        }
        if self.cleared_ms.len() > self.cleared.len() {
            return Err("more clearing times than cleared nodes".into());
        }
        if self.percent > 100 {
            return Err(format!("a share of {} %", self.percent));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_refused_naming_the_key() {
        let alloc = AllocRecord {
            node: "web-1".into(),
            generation: 3,
            reason: "node web-2 lost".into(),
            placed_ms: 1,
        };
        let back: AllocRecord = decode("k", &encode(&alloc)).expect("decodes");
        assert_eq!(back, alloc);

        let err = decode::<AllocRecord>("/x/alloc/a/1", r#"{"node":"Web","generation":1}"#)
            .expect_err("a bad node name");
        assert!(err.starts_with("/x/alloc/a/1: "), "{err}");
        assert!(decode::<AllocRecord>("k", r#"{"node":"a","generation":0}"#).is_err());
        assert!(decode::<AllocRecord>("k", "not json").is_err());
        // A newer node's extra fields are ignored.
        let newer: AllocRecord =
            decode("k", r#"{"node":"a","generation":1,"release":"r9"}"#).expect("decodes");
        assert_eq!(newer.generation, 1);

        let ready_without_port = r#"{"generation":1,"state":"ready","address":"10.0.0.1"}"#;
        assert!(decode::<StatusRecord>("k", ready_without_port).is_err());
    }
}
