//! The simulated cluster: etcd, the hosts, the operator, the fake clock and its agenda. One
//! event at a time: a node's task doing one step, an instance becoming ready, a fault. After
//! each, the step-wise invariants are checked (`check.rs`); at the end, liveness.
//!
//! A node's events carry its daemon's incarnation (those of a crashed process are dropped) and
//! wait while the daemon is frozen: when it resumes they run in a shuffled order, so a resumed
//! scheduler may well write with the view it had before the pause.

use std::collections::{BTreeMap, BTreeSet};

use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::schedule::Demand;

use crate::check::Violation;
use crate::etcd::{Etcd, Ms};
use crate::faults::{Fault, Plan};
use crate::mirror::Mirror;
use crate::node::{Instance, Node, PeerView, Process};
use crate::queue::Queue;
use crate::rng::Rng;
use crate::trace::Trace;

/// Timing, as in the real agent with the default `[cluster]` table.
pub const LEASE_TTL: Ms = 6_000;
pub const KEEPALIVE: Ms = 1_000;
pub const SCHEDULER_TICK: Ms = 2_000;
pub const PROBE_INTERVAL: Ms = 500;
/// How long a peer's answer counts for `decide` (`probe_interval + probe_timeout`).
pub const PROBE_FRESH: Ms = PROBE_INTERVAL + 300;
pub const PUBLISH_RETRY: Ms = 300;
/// An instance is ready this long after its start.
pub const START_TIME: (Ms, Ms) = (1_500, 12_000);
pub const MIB: u64 = 1024 * 1024;
/// A replacement that died less than this before a copy stopped for it died in a window no
/// protocol that decides on reports closes (a probe interval and a watch's latency): such a
/// stop is a race, counted apart from the stops for replacements dead for longer.
pub const RACE_WINDOW: Ms = PROBE_INTERVAL + 500;

/// What happens next.
#[derive(Debug, Clone)]
pub enum Happening {
    /// A step of node `node`'s daemon, incarnation `incarnation`.
    Node {
        node: usize,
        incarnation: u64,
        step: Step,
    },
    /// Instance `id` on `node` passed its health check.
    InstanceReady {
        node: usize,
        id: u64,
    },
    Fault(Fault),
    /// Faults are over and the cluster had time to settle: liveness is judged.
    Judge,
}

/// One step of a daemon's tasks.
#[derive(Debug, Clone)]
pub enum Step {
    /// The daemon's first report of its instances (`ClusterNote::Attach`, sent as soon as
    /// the agent is started).
    Attach,
    Register,
    KeepAlive,
    /// The watch delivers every change up to this entry of etcd's log.
    Deliver {
        through: usize,
    },
    SchedulerTick,
    SchedulerWrite,
    Probe,
    PublishRetry,
    /// The daemon's instances changed: the agent decides again and publishes.
    LocalChanged,
}

pub struct World {
    pub now: Ms,
    pub rng: Rng,
    pub etcd: Etcd,
    pub keys: Keys,
    pub nodes: Vec<Node>,
    pub trace: Trace,
    /// Violations that end the history.
    pub violations: Vec<Violation>,
    /// Kinds of violation that are recorded in `known` and let the history go on (the race
    /// no protocol closes).
    pub tolerated: Vec<crate::check::Kind>,
    pub known: Vec<Violation>,
    queue: Queue<Happening>,
    next_instance: u64,
    next_boot: u64,
    /// The log's length when deliveries were last scheduled.
    delivered_log: usize,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = Rng::new(seed);
        let count = rng.between(3, 5) as usize;
        let nodes = (1..=count)
            .map(|i| Node::new(format!("node-{i}"), rng.between(4, 6) * 1024 * MIB))
            .collect();
        World {
            now: 0,
            rng,
            etcd: Etcd::default(),
            keys: Keys::new("sim"),
            nodes,
            trace: Trace::default(),
            violations: Vec::new(),
            tolerated: Vec::new(),
            known: Vec::new(),
            queue: Queue::default(),
            next_instance: 0,
            next_boot: 0,
            delivered_log: 0,
        }
    }

    pub fn at(&mut self, at: Ms, event: Happening) {
        self.queue.push(at, event);
    }

    /// Schedules a step of node `n`'s current daemon.
    pub fn step_at(&mut self, n: usize, at: Ms, step: Step) {
        let incarnation = self.nodes[n].incarnation;
        self.queue.push(
            at,
            Happening::Node {
                node: n,
                incarnation,
                step,
            },
        );
    }

    pub fn say(&mut self, who: &str, what: &str) {
        let revision = self.etcd.revision();
        self.trace.say(self.now, revision, who, what);
    }

    pub fn say_node(&mut self, n: usize, what: &str) {
        let who = self.nodes[n].name.clone();
        self.say(&who, what);
    }

    pub fn new_boot_id(&mut self, n: usize) -> String {
        self.next_boot += 1;
        format!("{}-boot{}", self.nodes[n].name, self.next_boot)
    }

    /// A small round trip to etcd.
    pub fn rtt(&mut self) -> Ms {
        self.rng.between(1, 5)
    }

    /// Runs the history to its end (or its first violation not tolerated); the violations
    /// found, tolerated ones included, and the trace's tail.
    pub fn run(mut self, plan: &Plan) -> (Vec<Violation>, String) {
        for (at, fault) in &plan.faults {
            self.at(*at, Happening::Fault(fault.clone()));
        }
        self.at(plan.judge_at, Happening::Judge);
        while let Some((at, event)) = self.queue.pop() {
            self.now = at;
            self.expire_leases();
            let judged = matches!(event, Happening::Judge);
            self.handle(event);
            self.commit();
            self.check_step();
            if judged || !self.violations.is_empty() {
                break;
            }
        }
        let tail = self.trace.tail();
        self.known.extend(self.violations);
        (self.known, tail)
    }

    fn handle(&mut self, event: Happening) {
        match event {
            Happening::Node {
                node,
                incarnation,
                step,
            } => {
                let n = &self.nodes[node];
                if n.process.is_none() || n.incarnation != incarnation {
                    return;
                }
                if n.frozen_until > self.now {
                    // Frozen: it happens after the pause, in an order of its own.
                    let at = n.frozen_until + self.rng.between(0, 30);
                    self.at(
                        at,
                        Happening::Node {
                            node,
                            incarnation,
                            step,
                        },
                    );
                    return;
                }
                self.node_step(node, step);
            }
            Happening::InstanceReady { node, id } => {
                let Some(i) = self.nodes[node]
                    .instances
                    .values_mut()
                    .find(|i| i.id == id && !i.ready)
                else {
                    return;
                };
                i.ready = true;
                let what = format!("instance #{id} ready");
                self.say_node(node, &what);
                if self.nodes[node].process.is_some() {
                    let now = self.now;
                    self.step_at(node, now, Step::LocalChanged);
                }
            }
            Happening::Fault(fault) => self.fault(fault),
            Happening::Judge => self.judge(),
        }
    }

    fn node_step(&mut self, n: usize, step: Step) {
        match step {
            Step::Attach => {
                if let Some(p) = self.nodes[n].process.as_mut() {
                    p.attached = true;
                }
                self.decide(n);
            }
            Step::Register => self.register(n),
            Step::KeepAlive => self.keep_alive(n),
            Step::Deliver { through } => self.deliver(n, through),
            Step::SchedulerTick => {
                self.scheduler_wake(n);
                let at = self.now + SCHEDULER_TICK;
                self.step_at(n, at, Step::SchedulerTick);
            }
            Step::SchedulerWrite => self.scheduler_write(n),
            Step::Probe => {
                self.probe(n);
                let at = self.now + PROBE_INTERVAL;
                self.step_at(n, at, Step::Probe);
            }
            Step::PublishRetry => {
                if let Some(p) = self.nodes[n].process.as_mut() {
                    p.publisher.retry_due = false;
                }
                self.publish(n);
            }
            Step::LocalChanged => self.decide(n),
        }
    }

    /// Lets etcd expire the leases whose time is up.
    fn expire_leases(&mut self) {
        for lease in self.etcd.expire(self.now) {
            let owner = self
                .nodes
                .iter()
                .position(|n| {
                    n.process
                        .as_ref()
                        .and_then(|p| p.session.info.as_ref())
                        .is_some_and(|s| s.lease == lease)
                        || n.saved_lease.as_ref().is_some_and(|(l, _)| *l == lease)
                })
                .map_or("?".to_string(), |i| self.nodes[i].name.clone());
            self.say("etcd", &format!("lease {lease:x} of {owner} expired"));
        }
    }

    /// Schedules the watch's delivery of etcd's new changes to every daemon, each after a
    /// latency of its own but in revision order.
    fn commit(&mut self) {
        let through = self.etcd.log().len();
        if through == self.delivered_log {
            return;
        }
        for change in &self.etcd.log()[self.delivered_log..through] {
            let what = match change {
                crate::etcd::Change::Put(kv) => {
                    format!(
                        "put {} = {}",
                        short(&kv.key),
                        crate::check::describe(&kv.value)
                    )
                }
                crate::etcd::Change::Delete { key, .. } => format!("delete {}", short(key)),
            };
            self.trace.say(self.now, change.revision(), "etcd", &what);
        }
        self.delivered_log = through;
        for n in 0..self.nodes.len() {
            if self.nodes[n].process.is_none() {
                continue;
            }
            let latency = if self.rng.percent(5) {
                self.rng.between(50, 1_500)
            } else {
                self.rng.between(1, 40)
            };
            let Some(p) = self.nodes[n].process.as_mut() else {
                continue;
            };
            let at = (self.now + latency).max(p.delivery_at);
            p.delivery_at = at;
            self.step_at(n, at, Step::Deliver { through });
        }
    }

    /// The watch's delivery (or, for a daemon that has not read the cluster yet, its first
    /// read). Nothing gets through to a node that is cut off: its watch breaks and its sync
    /// fails to read again (`reachable` goes false); it is caught up by a read after the heal,
    /// and until then no watch is open to deliver anything.
    fn deliver(&mut self, n: usize, through: usize) {
        let read = through == usize::MAX;
        if self.nodes[n].partitioned {
            if let Some(p) = self.nodes[n].process.as_mut()
                && !p.unreachable
            {
                p.unreachable = true;
                self.say_node(n, "cannot read etcd: holds its assignment");
            }
            return;
        }
        let (changed, back) = {
            let keys = &self.keys;
            let etcd = &self.etcd;
            let Some(p) = self.nodes[n].process.as_mut() else {
                return;
            };
            if p.unreachable && !read {
                return;
            }
            let back = std::mem::take(&mut p.unreachable);
            let changed = match p.mirror.as_mut() {
                None => {
                    p.mirror = Some(Mirror::load(keys, etcd));
                    true
                }
                Some(m) => m.catch_up(keys, etcd.log(), through),
            };
            (changed, back)
        };
        if back {
            self.say_node(n, "reads etcd again");
        }
        if changed {
            self.scheduler_wake(n);
        }
        if changed || back {
            self.decide(n);
        }
    }

    /// Schedules a read of everything etcd has that the node's mirror lacks (after a heal,
    /// a start: the real sync reads the prefix again when its watch broke).
    pub fn catch_up_later(&mut self, n: usize) {
        let latency = if self.rng.percent(10) {
            self.rng.between(2_000, 10_000)
        } else {
            self.rng.between(5, 2_000)
        };
        let at = self.now + latency;
        if let Some(p) = self.nodes[n].process.as_mut() {
            p.delivery_at = p.delivery_at.max(at);
        }
        // Everything etcd has by then: a read, not a replay of what was missed.
        self.step_at(
            n,
            at,
            Step::Deliver {
                through: usize::MAX,
            },
        );
    }

    /// One round of this node's peer probes (`peers::probe_peers`): a peer answers when both
    /// ends are connected and its daemon runs and is not frozen. Peers no longer registered
    /// are forgotten; a change of what the probes say is a decision.
    fn probe(&mut self, n: usize) {
        let peers: Vec<String> = match self.nodes[n]
            .process
            .as_ref()
            .and_then(|p| p.mirror.as_ref())
        {
            Some(m) => m
                .nodes
                .keys()
                .filter(|p| **p != self.nodes[n].name)
                .cloned()
                .collect(),
            None => return,
        };
        let now = self.now;
        let mut answers = BTreeMap::new();
        for peer in &peers {
            let answered = !self.nodes[n].partitioned
                && self
                    .nodes
                    .iter()
                    .find(|x| x.name == *peer)
                    .is_some_and(|x| x.awake(now) && !x.partitioned);
            answers.insert(peer.clone(), answered);
        }
        let Some(p) = self.nodes[n].process.as_mut() else {
            return;
        };
        p.probes.retain(|name, _| answers.contains_key(name));
        p.last_answer.retain(|name, _| answers.contains_key(name));
        for (peer, answered) in answers {
            p.last_answer.insert(peer.clone(), answered);
            if answered {
                p.answered_at.insert(peer.clone(), now);
            }
            p.probes.entry(peer).or_default().observe(answered);
        }
        let known = p.last_answer.clone();
        p.answered_at.retain(|name, _| known.contains_key(name));
        let ejected: BTreeSet<String> = p
            .probes
            .iter()
            .filter(|(_, probe)| probe.ejected())
            .map(|(name, _)| name.clone())
            .collect();
        let answered_at = p
            .answered_at
            .iter()
            .filter(|(name, _)| !ejected.contains(*name))
            .map(|(name, at)| (name.clone(), *at))
            .collect();
        let view = PeerView {
            ejected,
            answered_at,
        };
        if p.peers != view {
            p.peers = view;
            self.decide(n);
        }
    }

    /// Starts node `n`'s daemon: a new process with what the daemon keeps on disk.
    pub fn start_daemon(&mut self, n: usize) {
        if self.nodes[n].process.is_some() {
            return;
        }
        self.nodes[n].incarnation += 1;
        self.nodes[n].frozen_until = 0;
        let previous_lease = self.nodes[n].saved_lease.clone();
        let mut process = Process {
            previous_lease: previous_lease.clone(),
            ..Process::default()
        };
        process.scheduler.kept_boot = previous_lease.map(|(_, boot)| boot);
        self.nodes[n].process = Some(process);
        let kept = self.nodes[n].instances.len();
        self.say_node(n, &format!("daemon starts ({kept} instance(s) running)"));
        let now = self.now;
        // The daemon attaches as soon as the agent started, before any round trip to etcd.
        self.step_at(n, now, Step::Attach);
        self.step_at(n, now, Step::Register);
        self.catch_up_later(n);
        let tick = now + self.rng.between(0, SCHEDULER_TICK);
        self.step_at(n, tick, Step::SchedulerTick);
        let probe = now + self.rng.between(0, PROBE_INTERVAL);
        self.step_at(n, probe, Step::Probe);
    }

    /// Starts an instance of `(app, slot)` for `generation` on node `n`.
    pub fn start_instance(&mut self, n: usize, app: &str, slot: u32, generation: u64) {
        self.next_instance += 1;
        let id = self.next_instance;
        self.nodes[n].instances.insert(
            (app.to_string(), slot),
            Instance {
                id,
                ready: false,
                generation,
            },
        );
        let ready_at = self.now + self.rng.between(START_TIME.0, START_TIME.1);
        self.at(ready_at, Happening::InstanceReady { node: n, id });
    }

    /// The operator's apply of one app (`None`: removed).
    pub fn apply_app(&mut self, app: &str, demand: Option<Demand>) {
        let key = self.keys.app(app);
        match demand {
            Some(d) => {
                self.say(
                    "operator",
                    &format!("apply {app}: {} instance(s)", d.instances),
                );
                let _ = self.etcd.put(&key, crate::etcd::Value::App(d), 0);
            }
            None => {
                self.say("operator", &format!("remove {app}"));
                self.etcd.delete(&key);
            }
        }
    }
}

/// A key without the cluster's root, for the trace.
pub fn short(key: &str) -> &str {
    key.strip_prefix("/jarfleet/sim/").unwrap_or(key)
}
