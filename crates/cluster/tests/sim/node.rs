//! A simulated host: its network standing, its instances (which outlive the daemon when it is
//! restarted with `down --keep`, and die with the host), and the daemon's process with the
//! agent's state — session, mirror, scheduler, assignment, publisher, peer probes. A process
//! that crashes is dropped whole; its successor starts from what the daemon keeps on disk
//! (the lease it held).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use jarfleet_core::cluster::peers::PeerProbe;
use jarfleet_core::cluster::records::{InstanceState, StatusRecord};
use jarfleet_core::cluster::schedule::Write;

use crate::etcd::{LeaseId, Ms, Revision};
use crate::mirror::Mirror;

/// Slot → generation, per app: what an assignment says the node runs.
pub type Run = BTreeMap<String, BTreeMap<u32, u64>>;

pub struct Node {
    pub name: String,
    /// Memory offered to instances.
    pub memory: u64,
    /// The daemon, when it runs.
    pub process: Option<Process>,
    /// Bumped at every start of the daemon: events of an earlier process are dropped.
    pub incarnation: u64,
    /// Cut off from etcd and from every peer.
    pub partitioned: bool,
    /// The daemon is frozen (a long pause) until then: it does nothing, its events wait.
    pub frozen_until: Ms,
    /// The JVMs on the host.
    pub instances: BTreeMap<(String, u32), Instance>,
    /// When the host last went down (its instances with it).
    pub crashed_at: Option<Ms>,
    /// The lease and boot id the daemon keeps on disk (`previous_lease` at its next start).
    pub saved_lease: Option<(LeaseId, String)>,
}

impl Node {
    pub fn new(name: String, memory: u64) -> Node {
        Node {
            name,
            memory,
            process: None,
            incarnation: 0,
            partitioned: false,
            frozen_until: 0,
            instances: BTreeMap::new(),
            crashed_at: None,
            saved_lease: None,
        }
    }

    /// Whether the daemon runs and reaches etcd.
    pub fn reaches_etcd(&self) -> bool {
        self.process.is_some() && !self.partitioned
    }

    /// Whether the daemon can act at `now` (runs, not frozen).
    pub fn awake(&self, now: Ms) -> bool {
        self.process.is_some() && self.frozen_until <= now
    }
}

/// One JVM.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Unique in the whole run: a start is told from the next one.
    pub id: u64,
    pub ready: bool,
    /// The generation of the placement the daemon last ran it for.
    pub generation: u64,
}

impl Instance {
    pub fn state(&self) -> InstanceState {
        if self.ready {
            InstanceState::Ready
        } else {
            InstanceState::Starting
        }
    }
}

/// The daemon's process and the agent in it.
#[derive(Default)]
pub struct Process {
    /// The lease the daemon kept on disk, tried at its first registration only.
    pub previous_lease: Option<(LeaseId, String)>,
    /// The daemon has made its first report of its instances (`ClusterNote::Attach`): the
    /// agent decides nothing before.
    pub attached: bool,
    pub session: Session,
    /// `None` until the first read.
    pub mirror: Option<Mirror>,
    /// The latest time a watch delivery was scheduled for: deliveries keep revision order.
    pub delivery_at: Ms,
    /// The sync's `reachable` is false: a read failed (here: a delivery was lost to a cut,
    /// the watch broke and reading again failed), and no full read succeeded since. The
    /// agent holds its last assignment meanwhile, and no watch delivers anything.
    pub unreachable: bool,
    pub scheduler: Scheduler,
    /// The daemon's last assignment (`None` before the first: it then reports every slot it
    /// runs, generation 0, as `cluster_view` in the daemon does).
    pub assigned: Option<Run>,
    pub publisher: Publisher,
    pub probes: BTreeMap<String, PeerProbe>,
    /// Whether each registered peer answered its last probe.
    pub last_answer: BTreeMap<String, bool>,
    /// When each peer last answered a probe.
    pub answered_at: BTreeMap<String, Ms>,
    /// What the probes last said (`peers::PeerView`): every change is a decision.
    pub peers: PeerView,
}

/// `peers::PeerView`: what this node's probes say of its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Out of this node's balancers (3 misses in a row, not yet 2 answers).
    pub ejected: BTreeSet<String>,
    /// When each peer not ejected last answered: only the statuses of peers whose answer is
    /// fresh at the decision (and this node's own) count when `decide` stops a copy for its
    /// replacement.
    pub answered_at: BTreeMap<String, Ms>,
}

/// The registration in force, as `session::run` keeps it.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub info: Option<SessionInfo>,
    /// The keeper's own deadline: the last good keep-alive's send time plus the TTL.
    pub expires: Ms,
    /// The wait before the next attempt to register, doubling to 2 s.
    pub backoff: Ms,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub lease: LeaseId,
    pub boot_id: String,
}

/// The scheduler task: whether it believes it leads, and the pass whose writes are in flight
/// (sent one after the other, as `schedule_once` awaits each).
#[derive(Debug, Default)]
pub struct Scheduler {
    /// The epoch it believes it leads at, and the lease it saw the leader key on (its own
    /// session's at the time).
    pub leading: Option<(Revision, LeaseId)>,
    /// The boot id of the lease the daemon kept on disk (`config.previous_lease`): a
    /// registration that renewed it is not new.
    pub kept_boot: Option<String>,
    /// The registration in force as the scheduler saw it (its boot id), and until when it
    /// is new: a lease's TTL after the scheduler first saw it, unless it renewed the kept
    /// lease (the real code dates that one a TTL back).
    pub registered: Option<(String, Ms)>,
    pub pending: VecDeque<Write>,
    /// The epoch the pass in flight writes under.
    pub pass_epoch: Option<Revision>,
    /// The mirror or session changed while a pass was in flight: another pass follows.
    pub dirty: bool,
}

/// The publisher task's memory of what etcd holds of this node's instances.
#[derive(Debug, Default)]
pub struct Publisher {
    pub written: BTreeMap<(String, u32), StatusRecord>,
    pub under: Option<LeaseId>,
    pub retry_due: bool,
}
