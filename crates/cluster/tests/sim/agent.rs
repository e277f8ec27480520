//! A node's own side: the agent's `decide` (`jarfleet_core::cluster::assign` on the mirror and
//! on the instances the daemon reported), the daemon doing what it was assigned (start what is
//! missing, stop what is not in the assignment, a kept copy taking its new generation), and
//! the publisher (`crates/cluster/src/publish.rs`): status keys on the node's lease, written
//! when they change; under a new lease (a restarted daemon's renewed one too) the keys
//! already on it are listed first and taken as written, so that what is not wanted goes; a
//! failure is tried again a little later.
//!
//! As `decide` in `crates/cluster/src/agent.rs`: nothing is decided before the daemon's first
//! report of its instances, nor while the sync cannot read etcd (the last assignment holds);
//! the statuses decided on are this node's own and those of the peers that answered their
//! last probe and are not ejected. (The balancers are not modelled: that the other nodes'
//! instances go to the daemon before the assignment does not show here.)
//!
//! The daemon (`cluster_view` in `crates/daemon/src/control/cluster.rs`) reports every slot
//! it runs, generation 0 (unknown), until its first assignment; then only the assigned slots,
//! with their placement's generation.

use std::collections::BTreeMap;

use jarfleet_core::cluster::assign::{Assignment, Seen, assign};
use jarfleet_core::cluster::keys::Key;
use jarfleet_core::cluster::records::{InstanceState, StatusRecord};

use crate::etcd::Value;
use crate::node::Run;
use crate::world::{PROBE_FRESH, PUBLISH_RETRY, Step, World};

/// The daemon's report of its instances: (app, slot) → (generation, state, instance id).
pub type LocalView = BTreeMap<(String, u32), (u64, InstanceState, u64)>;

/// The decision and the daemon's doing of it are repeated until the daemon's report stops
/// changing (each report is a change the agent decides on again); a few rounds always do.
const ROUNDS: usize = 4;

impl World {
    /// What the daemon tells the agent it runs (nothing before it attached).
    pub fn local_view(&self, n: usize) -> LocalView {
        let node = &self.nodes[n];
        let Some(p) = node.process.as_ref().filter(|p| p.attached) else {
            return LocalView::new();
        };
        let instance = |key: &(String, u32), generation: u64| {
            node.instances
                .get(key)
                .map(|i| (key.clone(), (generation, i.state(), i.id)))
        };
        match &p.assigned {
            Some(run) => run
                .iter()
                .flat_map(|(app, slots)| slots.iter().map(move |(s, g)| ((app.clone(), *s), *g)))
                .filter_map(|(key, generation)| instance(&key, generation))
                .collect(),
            None => node
                .instances
                .keys()
                .filter_map(|key| instance(key, 0))
                .collect(),
        }
    }

    /// The agent decides on its mirror and the daemon carries it out (unless the daemon has
    /// not attached yet, the cluster was never read, or etcd cannot be read: then the last
    /// assignment holds); then the publisher runs.
    pub fn decide(&mut self, n: usize) {
        for _ in 0..ROUNDS {
            let Some(p) = self.nodes[n].process.as_ref() else {
                return;
            };
            if !p.attached || p.unreachable {
                break;
            }
            let Some(m) = p.mirror.as_ref() else {
                break;
            };
            let before = self.local_view(n);
            let me = self.nodes[n].name.as_str();
            // `PeerView::answering`: a peer's answer counts while it is fresh (a probe round
            // and the time the round may take); a daemon resumed from a pause finds its
            // answers from before the pause old.
            let now = self.now;
            let trusted = |node: &str| {
                node == me
                    || (!p.peers.ejected.contains(node)
                        && p.peers
                            .answered_at
                            .get(node)
                            .is_some_and(|at| now.saturating_sub(*at) <= PROBE_FRESH))
            };
            let seen = Seen {
                me,
                apps: m.apps.keys().cloned().collect(),
                allocs: m
                    .allocs
                    .iter()
                    .map(|(k, p)| (k.clone(), p.record.clone()))
                    .collect(),
                statuses: m
                    .statuses
                    .iter()
                    .filter(|((node, _, _), _)| trusted(node))
                    .map(|(k, s)| (k.clone(), s.clone()))
                    .collect(),
                local: before
                    .iter()
                    .map(|(k, (g, _, _))| (k.clone(), *g))
                    .collect(),
                // Operators' drains are not part of the simulated histories.
                drain_overdue: false,
            };
            let decided = assign(&seen);
            self.carry_out(n, decided);
            if self.local_view(n) == before {
                break;
            }
        }
        self.publish(n);
    }

    /// The daemon runs exactly the assigned slots.
    fn carry_out(&mut self, n: usize, decided: Assignment) {
        let run: Run = decided.run;
        let why: BTreeMap<(String, u32), String> = decided.stop.into_iter().collect();
        let assigned = |key: &(String, u32)| run.get(&key.0).and_then(|s| s.get(&key.1)).copied();
        let doomed: Vec<(String, u32)> = self.nodes[n]
            .instances
            .keys()
            .filter(|k| assigned(k).is_none())
            .cloned()
            .collect();
        for key in doomed {
            let reason = why.get(&key).cloned();
            self.check_stop(n, &key, reason.as_deref());
            if let Some(i) = self.nodes[n].instances.remove(&key) {
                let what = format!(
                    "stops {}/{} #{} ({})",
                    key.0,
                    key.1,
                    i.id,
                    reason.as_deref().unwrap_or("not in its assignment")
                );
                self.say_node(n, &what);
            }
        }
        for (app, slots) in &run {
            for (slot, generation) in slots {
                let key = (app.clone(), *slot);
                match self.nodes[n].instances.get_mut(&key) {
                    Some(i) => i.generation = *generation,
                    None => {
                        self.check_start(n, &key);
                        self.start_instance(n, app, *slot, *generation);
                        let id = self.nodes[n].instances[&key].id;
                        self.say_node(n, &format!("starts {app}/{slot} gen {generation} #{id}"));
                    }
                }
            }
        }
        if let Some(p) = self.nodes[n].process.as_mut() {
            p.assigned = Some(run);
        }
    }

    /// The publisher's loop body: what changed is written on the current lease, what went is
    /// deleted; a failure is tried again a little later.
    pub fn publish(&mut self, n: usize) {
        let want: BTreeMap<(String, u32), StatusRecord> = self
            .local_view(n)
            .into_iter()
            .map(|((app, slot), (generation, state, id))| {
                let record = StatusRecord {
                    generation,
                    state,
                    address: Some(format!("10.0.0.{}", n + 1)),
                    port: Some(9000 + slot as u16),
                    release: "r1".into(),
                    pid: Some(id as u32),
                    restarts: 0,
                    rolled_back: None,
                };
                ((app, slot), record)
            })
            .collect();
        let Some(lease) = self.session_of(n).map(|s| s.lease) else {
            return;
        };
        let reaches = self.nodes[n].reaches_etcd();
        let name = self.nodes[n].name.clone();
        let mut failed = false;
        let under = self.nodes[n]
            .process
            .as_ref()
            .and_then(|p| p.publisher.under);
        if under != Some(lease) {
            // A new lease (the first too, a renewed one as well): what is already on it is
            // taken as written, so that what is not wanted goes.
            if reaches {
                let prefix = self.keys.node_statuses(&name);
                let there: BTreeMap<(String, u32), StatusRecord> = self
                    .etcd
                    .range(&prefix)
                    .filter(|kv| kv.lease == lease)
                    .filter_map(|kv| match (self.keys.parse(&kv.key), &kv.value) {
                        (Some(Key::Status { app, slot, .. }), Value::Status(s)) => {
                            Some(((app, slot), s.clone()))
                        }
                        _ => None,
                    })
                    .collect();
                if let Some(p) = self.nodes[n].process.as_mut() {
                    p.publisher.written = there;
                    p.publisher.under = Some(lease);
                }
            } else {
                failed = true;
            }
        }
        for (key, record) in want.iter().filter(|_| !failed) {
            let written = self.nodes[n]
                .process
                .as_ref()
                .and_then(|p| p.publisher.written.get(key));
            if written == Some(record) {
                continue;
            }
            let k = self.keys.status(&name, &key.0, key.1);
            if !reaches
                || self
                    .etcd
                    .put(&k, Value::Status(record.clone()), lease)
                    .is_err()
            {
                failed = true;
                break;
            }
            if let Some(p) = self.nodes[n].process.as_mut() {
                p.publisher.written.insert(key.clone(), record.clone());
            }
        }
        let gone: Vec<(String, u32)> = self.nodes[n]
            .process
            .as_ref()
            .map(|p| {
                p.publisher
                    .written
                    .keys()
                    .filter(|k| !want.contains_key(*k))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        for key in gone {
            if failed || !reaches {
                failed = true;
                break;
            }
            self.etcd.delete(&self.keys.status(&name, &key.0, key.1));
            if let Some(p) = self.nodes[n].process.as_mut() {
                p.publisher.written.remove(&key);
            }
        }
        if failed
            && let Some(p) = self.nodes[n].process.as_mut()
            && !p.publisher.retry_due
        {
            p.publisher.retry_due = true;
            let at = self.now + PUBLISH_RETRY;
            self.step_at(n, at, Step::PublishRetry);
        }
    }
}
