//! jarfleet's cluster mode, the node's side: the agent every node of a cluster runs beside its
//! control loop. etcd is the only shared state; the decisions are `jarfleet_core::cluster`'s,
//! and this crate does their IO.
//!
//! - [`sync`]: the node's copy of the cluster ([`mirror::Mirror`]): one read of the prefix,
//!   then its watch, read again when the watch breaks or falls silent.
//! - [`session`]: membership: the node's registration on its lease, kept alive across etcd
//!   endpoints; a lease that is lost is replaced by a new registration.
//! - [`scheduler`]: one node at a time, elected on its lease, places every app's instances;
//!   each of its writes is fenced by its epoch and the key's revision.
//! - [`publish`]: this node's instances' state, on its lease, for every balancer.
//! - [`peers`]: the node's peer endpoint, and its probes of every peer (a peer that stops
//!   answering leaves this node's balancers within a second or two).
//! - [`apply`]: apps applied to the cluster, all of them in one compare-and-swap transaction.
//! - [`agent`]: the tasks above tied together, speaking to the daemon in [`Note`]s and reading
//!   its instances from a [`LocalView`].
//!
//! Nothing here stops or starts a JVM: the daemon does, from the [`Note::Assignment`]s it is
//! sent. An etcd that cannot be reached only pauses decisions.

pub mod agent;
pub mod apply;
pub mod artifacts;
pub mod logs;
pub mod mirror;
pub mod peers;
pub mod pki;
pub mod publish;
pub mod scheduler;
pub mod session;
pub mod sync;
pub mod tls;

use std::collections::BTreeMap;
use std::time::Duration;

use jarfleet_core::cluster::records::InstanceState;
use jarfleet_core::events::EventKind;
use serde::{Deserialize, Serialize};

pub use agent::Agent;
pub use mirror::ClusterApp;

/// Who this node is and how it keeps in touch.
#[derive(Debug, Clone)]
pub struct Config {
    pub spec: jarfleet_core::spec::ClusterSpec,
    /// The node's name (`[cluster] node`, else the host name).
    pub node: String,
    /// Memory offered to instances (`[cluster] memory`, else the machine's less 10 %).
    pub memory: u64,
    /// jarfleet's version and build id, registered with the node.
    pub version: String,
    pub build: Option<String>,
    /// A lease this node held before (a restarted daemon keeps its registration if it is
    /// still alive), and the boot id registered with it.
    pub previous_lease: Option<(i64, String)>,
    /// The node's artifact cache (`sha256/<hex>` below it), served to its peers; `None`: it
    /// serves none.
    pub artifacts: Option<std::path::PathBuf>,
}

impl Config {
    /// How often the lease is renewed: six times per TTL, at most once a second.
    pub fn keepalive_interval(&self) -> Duration {
        (self.spec.lease_ttl / 6).min(Duration::from_secs(1))
    }
}

/// One of this node's instances as the daemon sees it, for the cluster to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalInstance {
    /// The placement's generation it runs for.
    pub generation: u64,
    pub state: InstanceState,
    pub port: Option<u16>,
    pub pid: Option<u32>,
    pub release: String,
    pub restarts: u32,
    /// A copy no longer assigned here, on its way out (its stop under way): published, so the
    /// cluster sees the node is not done with it, but not one of the copies this node runs for
    /// the node's own decisions.
    #[serde(default)]
    pub leaving: bool,
    /// The release this node's last deployment of the app rolled back from, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<String>,
}

/// Every instance this node runs: (app, slot) → its state.
pub type LocalView = BTreeMap<(String, u32), LocalInstance>;

/// An instance on another node that this node's balancers send to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteInstance {
    pub node: String,
    pub slot: u32,
    pub generation: u64,
    pub address: String,
    pub port: u16,
    pub release: String,
    /// The port of its node's relay on `address` (nodes with mutual TLS).
    pub relay_port: Option<u16>,
}

/// What the agent tells the daemon.
#[derive(Debug, Clone, PartialEq)]
pub enum Note {
    /// What this node should run now: every app of the cluster (a node serves every app's
    /// `listen`, whether or not it runs instances of it) and, per app, the slots it runs with
    /// their generation. Sent whenever it changes.
    Assignment(Assignment),
    /// The ready instances on other nodes, per app, that this node's balancers send to.
    Remote(BTreeMap<String, Vec<RemoteInstance>>),
    /// Something to record as an event.
    Event {
        kind: EventKind,
        app: Option<String>,
        message: String,
    },
}

/// [`Note::Assignment`]'s content.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub apps: BTreeMap<String, ClusterApp>,
    /// Per app: slot → generation of every slot this node runs.
    pub run: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Copies to drain and stop, with why.
    pub stop: Vec<((String, u32), String)>,
    /// Per app: its canary or blue-green rollout, which this node's deployment of the release
    /// follows (the new set's share, its release, or its rollback).
    pub leads: BTreeMap<String, jarfleet_core::cluster::records::RolloutRecord>,
    /// The apps whose rolling release this node replaces in place: it has no room for their
    /// surge.
    pub in_place: std::collections::BTreeSet<String>,
}

/// The agent's errors: what failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Etcd(#[from] jarfleet_etcd::Error),
    #[error("{message}")]
    Refused {
        message: String,
        hint: Option<String>,
    },
    #[error("the cluster agent has stopped")]
    Stopped,
}

pub type Result<T> = std::result::Result<T, Error>;

/// Unix time in ms (records carry wall-clock times for people to read; decisions never use
/// them).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
