//! A node's own side: the agent's `decide` (`jarfleet_core::cluster::assign` on the mirror and
//! on the instances the daemon reported), the daemon doing what it was assigned (start what is
//! missing, stop what is not in the assignment, a kept copy taking its new generation), and
//! the publisher (`crates/cluster/src/publish.rs`): status keys on the node's lease, written
//! when they change, all again under a new lease, tried again after a failure.
//!
//! The daemon reports its instances only for the slots it was assigned, and nothing before
//! its first assignment (`publish_cluster_view` in `crates/daemon/src/control/cluster.rs`).

use std::collections::{BTreeMap, BTreeSet};

use jarfleet_core::cluster::assign::{Assignment, Seen, assign};
use jarfleet_core::cluster::keys::Key;
use jarfleet_core::cluster::records::{InstanceState, StatusRecord};

use crate::etcd::Ms;
use crate::etcd::Value;
use crate::node::Run;
use crate::world::{PROBE_INTERVAL, PUBLISH_RETRY, Step, World};

/// With [`Fixes::probed_replacement`](crate::world::Fixes): how long a peer's last answer
/// vouches for its statuses.
const TRUSTED_FOR: Ms = 2 * PROBE_INTERVAL;

/// The daemon's report of its instances: (app, slot) → (generation, state, instance id).
pub type LocalView = BTreeMap<(String, u32), (u64, InstanceState, u64)>;

/// The decision and the daemon's doing of it are repeated until the daemon's report stops
/// changing (each report is a change the agent decides on again); a few rounds always do.
const ROUNDS: usize = 4;

impl World {
    /// What the daemon tells the agent it runs.
    pub fn local_view(&self, n: usize) -> LocalView {
        let node = &self.nodes[n];
        let Some(p) = node.process.as_ref() else {
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
            None if self.fixes.wait_for_local_view => node
                .instances
                .iter()
                .filter_map(|(key, i)| instance(key, i.generation))
                .collect(),
            None => LocalView::new(),
        }
    }

    /// The agent decides on its mirror and the daemon carries it out; then the publisher runs.
    pub fn decide(&mut self, n: usize) {
        for _ in 0..ROUNDS {
            if self.nodes[n]
                .process
                .as_ref()
                .and_then(|p| p.mirror.as_ref())
                .is_none()
            {
                return;
            }
            let before = self.local_view(n);
            let me = self.nodes[n].name.clone();
            let statuses = self.statuses_to_trust(n);
            let Some(m) = self.nodes[n]
                .process
                .as_ref()
                .and_then(|p| p.mirror.as_ref())
            else {
                return;
            };
            let seen = Seen {
                me: &me,
                apps: m.apps.keys().cloned().collect(),
                allocs: m
                    .allocs
                    .iter()
                    .map(|(k, p)| (k.clone(), p.record.clone()))
                    .collect(),
                statuses,
                local: before
                    .iter()
                    .map(|(k, (g, _, _))| (k.clone(), *g))
                    .collect(),
            };
            let decided = assign(&seen);
            self.carry_out(n, decided);
            if self.local_view(n) == before {
                break;
            }
        }
        self.publish(n);
    }

    /// The peers whose last answer to this node's probes is recent (and that are not
    /// ejected): with [`Fixes::probed_replacement`](crate::world::Fixes), only their statuses
    /// count. A status outlives its node by up to the lease's TTL; a probe notices within an
    /// interval; a daemon that just started or resumed from a pause knows nothing yet.
    pub fn trusted_peers(&self, n: usize) -> BTreeSet<String> {
        let Some(p) = self.nodes[n].process.as_ref() else {
            return BTreeSet::new();
        };
        p.answered_at
            .iter()
            .filter(|(peer, at)| **at + TRUSTED_FOR >= self.now && !p.ejected.contains(*peer))
            .map(|(peer, _)| peer.clone())
            .collect()
    }

    /// The statuses the node decides on; with [`Fixes::probed_replacement`] only the
    /// trusted peers', and the set trusted is kept: the probes decide again as soon as it
    /// differs from the one the last decision used.
    fn statuses_to_trust(&mut self, n: usize) -> BTreeMap<(String, String, u32), StatusRecord> {
        let trusted = self.trusted_peers(n);
        let fix = self.fixes.probed_replacement;
        let Some(p) = self.nodes[n].process.as_mut() else {
            return BTreeMap::new();
        };
        let Some(m) = p.mirror.as_ref() else {
            return BTreeMap::new();
        };
        if !fix {
            return m.statuses.clone();
        }
        let behind = p.mirror_behind;
        let statuses = m
            .statuses
            .iter()
            .filter(|((node, _, _), _)| !behind && trusted.contains(node))
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        p.trusted = trusted;
        statuses
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
        let fresh = {
            let Some(p) = self.nodes[n].process.as_mut() else {
                return;
            };
            if p.publisher.under != Some(lease) {
                // A new lease: nothing of ours is there any more (as far as this process
                // knows).
                p.publisher.written.clear();
                p.publisher.under = Some(lease);
                true
            } else {
                false
            }
        };
        if fresh && self.fixes.publisher_clears_leftovers && reaches {
            let prefix = self.keys.node_statuses(&name);
            let leftovers: Vec<String> = self
                .etcd
                .range(&prefix)
                .filter(|kv| match self.keys.parse(&kv.key) {
                    Some(Key::Status { app, slot, .. }) => !want.contains_key(&(app, slot)),
                    _ => false,
                })
                .map(|kv| kv.key.clone())
                .collect();
            for key in leftovers {
                self.etcd.delete(&key);
            }
        }
        for (key, record) in &want {
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
