//! The invariants, judged against the ground truth (etcd's store and the hosts' real
//! instances), never against what a node believes:
//!
//! 1. **Fencing**: an alloc write lands only while the writer holds the leader key (its node,
//!    its current lease, the epoch it wrote under).
//! 2. **No needless stop**: a ready instance on a node that is up and reaches etcd is stopped
//!    only when its slot or app was removed, or its slot is placed on another node whose copy
//!    really is ready at the placement's generation.
//! 3. **Liveness**: once faults stop and the cluster had time to settle, every wanted slot has
//!    exactly one copy, ready, on the node it is placed on, at its generation; nothing else
//!    runs; every node is registered; one leader; every status key tells the truth.
//! 4. **Cut off, hands off**: a node that cannot reach etcd starts and stops nothing.
//! 5. **One leader**: at most one node believes it leads while its lease is alive in etcd (at
//!    every step, and so at every write).

use std::collections::BTreeMap;

use jarfleet_core::cluster::keys::Key;
use jarfleet_core::cluster::records::InstanceState;

use crate::etcd::Value;
use crate::world::{RACE_WINDOW, World};

/// Which invariant broke, with the finer cause where the seeds once found a bug there (each
/// replayed by a regression test in `main.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Fencing,
    /// A copy stopped for a replacement that is not really ready (its node died, or never
    /// ran it, while its status key still says ready).
    StoppedForGhost,
    /// The same, for a replacement whose host died within [`RACE_WINDOW`] of the stop: the
    /// one violation no protocol that decides on reports avoids, tolerated.
    StoppedInRace,
    /// A ready copy stopped although nothing said so: it was not in the daemon's assignment
    /// (say one decided before the daemon reported the copies it kept).
    StoppedUnassigned,
    /// Any other stop of a ready copy that nothing justified.
    NeedlessStop,
    ActedWhileCutOff,
    TwoLeaders,
    /// A status key that does not tell what the node runs.
    LyingStatus,
    /// A wanted slot left unplaced although the cluster has room for it spread out (the
    /// demand always fits): earlier placements packed the nodes, and nothing moves.
    Stranded,
    NotLive,
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub kind: Kind,
    pub message: String,
}

impl World {
    fn violated(&mut self, kind: Kind, message: String) {
        self.say("CHECK", &format!("{kind:?}: {message}"));
        let v = Violation { kind, message };
        if self.tolerated.contains(&kind) {
            self.known.push(v);
        } else {
            self.violations.push(v);
        }
    }

    /// Invariants 2 and 4, at the stop of `key` on node `n` (before it goes).
    pub fn check_stop(&mut self, n: usize, key: &(String, u32), reason: Option<&str>) {
        let node = &self.nodes[n];
        let Some(instance) = node.instances.get(key) else {
            return;
        };
        let me = node.name.clone();
        let id = instance.id;
        if node.partitioned {
            let message = format!(
                "{me} stops {}/{} #{id} while cut off from etcd",
                key.0, key.1
            );
            self.violated(Kind::ActedWhileCutOff, message);
            return;
        }
        if !instance.ready {
            return;
        }
        let Some(m) = node.process.as_ref().and_then(|p| p.mirror.as_ref()) else {
            return;
        };
        let alloc = m.allocs.get(key).map(|p| p.record.clone());
        let removed = !m.apps.contains_key(&key.0) || alloc.is_none();
        let Some(alloc) = alloc.filter(|_| !removed) else {
            return;
        };
        if !self.wanted(key) {
            // Removed since the node's mirror was read: its stop is what is wanted anyway.
            return;
        }
        let there = self
            .nodes
            .iter()
            .find(|x| x.name == alloc.node)
            .and_then(|x| x.instances.get(key));
        // A copy there that is ready at this placement's generation or a later one (the slot
        // may have been placed on that node again since) serves the slot.
        if there.is_some_and(|i| i.ready && i.generation >= alloc.generation) {
            return;
        }
        let died = self
            .nodes
            .iter()
            .find(|x| x.name == alloc.node)
            .and_then(|x| x.crashed_at)
            .filter(|_| there.is_none())
            .map(|at| self.now - at);
        let truth = match there {
            None => match died {
                Some(ms) => format!("there is no copy there (its host died {ms} ms before)"),
                None => "there is no copy there".to_string(),
            },
            Some(i) if !i.ready => format!("its copy #{} is still starting", i.id),
            Some(i) => format!("its copy #{} is ready at gen {}", i.id, i.generation),
        };
        let status = m
            .statuses
            .get(&(alloc.node.clone(), key.0.clone(), key.1))
            .map_or("none".to_string(), |s| {
                format!("{} gen {} #{}", s.state, s.generation, s.pid.unwrap_or(0))
            });
        let kind = match reason {
            Some(r) if r.starts_with("replaced") && died.is_some_and(|ms| ms < RACE_WINDOW) => {
                Kind::StoppedInRace
            }
            Some(r) if r.starts_with("replaced") => Kind::StoppedForGhost,
            None => Kind::StoppedUnassigned,
            Some(_) => Kind::NeedlessStop,
        };
        let message = format!(
            "{me} stops its ready copy #{id} of {}/{} ({}); its mirror (r{}) places the slot on {} gen {} with status {status}, but on {}: {truth}",
            key.0,
            key.1,
            reason.unwrap_or("not in its assignment"),
            m.revision,
            alloc.node,
            alloc.generation,
            alloc.node,
        );
        self.violated(kind, message);
    }

    /// Whether etcd wants `key` run now: its app asks for it and it is placed.
    fn wanted(&self, key: &(String, u32)) -> bool {
        let asked = matches!(
            self.etcd.get(&self.keys.app(&key.0)).map(|kv| &kv.value),
            Some(Value::App(d)) if key.1 < d.instances
        );
        asked && self.etcd.get(&self.keys.alloc(&key.0, key.1)).is_some()
    }

    /// Invariant 4, at the start of `key` on node `n`.
    pub fn check_start(&mut self, n: usize, key: &(String, u32)) {
        if self.nodes[n].partitioned {
            let message = format!(
                "{} starts {}/{} while cut off from etcd",
                self.nodes[n].name, key.0, key.1
            );
            self.violated(Kind::ActedWhileCutOff, message);
        }
    }

    /// The nodes that believe they lead while their lease is alive in etcd.
    fn believers(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|x| {
                x.process.as_ref().is_some_and(|p| {
                    p.scheduler
                        .leading
                        .is_some_and(|(_, lease)| self.etcd.lease_alive(lease))
                })
            })
            .map(|x| x.name.clone())
            .collect()
    }

    /// Invariant 5, as node `n` writes.
    pub fn check_one_leader_at_write(&mut self, n: usize) {
        let believers = self.believers();
        if believers.len() > 1 {
            let message = format!(
                "{} writes while {} all believe they lead on live leases",
                self.nodes[n].name,
                believers.join(", ")
            );
            self.violated(Kind::TwoLeaders, message);
        }
    }

    /// Invariant 1, after a write of node `n` under `epoch` landed.
    pub fn check_landed_write(&mut self, n: usize, epoch: i64) {
        let me = self.nodes[n].name.clone();
        let session = self.session_of(n);
        let holder = self.etcd.get(&self.keys.leader()).map(|kv| {
            let node = match &kv.value {
                Value::Leader(r) => r.node.clone(),
                _ => "?".into(),
            };
            (node, kv.lease, kv.create_revision)
        });
        let ok = holder.as_ref().is_some_and(|(node, lease, created)| {
            *node == me
                && *created == epoch
                && session.as_ref().is_some_and(|s| s.lease == *lease)
                && self.etcd.lease_alive(*lease)
        });
        if !ok {
            let message = format!(
                "a write of {me} under epoch {epoch} landed while the leader key is {holder:?} and {me}'s session is {session:?}"
            );
            self.violated(Kind::Fencing, message);
        }
    }

    /// What is checked after every event.
    pub fn check_step(&mut self) {
        let believers = self.believers();
        if believers.len() > 1 {
            let message = format!(
                "{} all believe they lead on live leases",
                believers.join(", ")
            );
            self.violated(Kind::TwoLeaders, message);
        }
    }

    /// Invariant 3, once the faults are over and the cluster had time to settle.
    pub fn judge(&mut self) {
        let mut wrong: Vec<(Kind, String)> = Vec::new();
        for x in &self.nodes {
            let registered = x
                .process
                .as_ref()
                .and_then(|p| p.session.info.as_ref())
                .zip(self.etcd.get(&self.keys.node(&x.name)))
                .is_some_and(|(s, kv)| kv.lease == s.lease);
            if !registered {
                wrong.push((Kind::NotLive, format!("{} is not registered", x.name)));
            }
        }
        let leader = self
            .etcd
            .get(&self.keys.leader())
            .and_then(|kv| match &kv.value {
                Value::Leader(r) => Some(r.node.clone()),
                _ => None,
            });
        if leader.is_none() {
            wrong.push((Kind::NotLive, "no leader".into()));
        }
        let mut wanted: BTreeMap<(String, u32), Option<(String, u64)>> = BTreeMap::new();
        for kv in self.etcd.range(&self.keys.apps()) {
            if let (Some(Key::App(app)), Value::App(d)) = (self.keys.parse(&kv.key), &kv.value) {
                for slot in 0..d.instances {
                    let alloc = match self
                        .etcd
                        .get(&self.keys.alloc(&app, slot))
                        .map(|kv| &kv.value)
                    {
                        Some(Value::Alloc(a)) => Some((a.node.clone(), a.generation)),
                        _ => None,
                    };
                    wanted.insert((app.clone(), slot), alloc);
                }
            }
        }
        for (key, alloc) in &wanted {
            let copies: Vec<(String, u64, bool, u64)> = self
                .nodes
                .iter()
                .filter_map(|x| {
                    x.instances
                        .get(key)
                        .map(|i| (x.name.clone(), i.id, i.ready, i.generation))
                })
                .collect();
            let Some((node, generation)) = alloc else {
                wrong.push((Kind::Stranded, format!("{}/{} is not placed", key.0, key.1)));
                continue;
            };
            let right = copies.len() == 1
                && copies[0].0 == *node
                && copies[0].2
                && copies[0].3 == *generation;
            if !right {
                wrong.push((
                    Kind::NotLive,
                    format!(
                        "{}/{} is placed on {node} gen {generation}, but the copies are {copies:?} (node, id, ready, gen)",
                        key.0, key.1
                    ),
                ));
            }
        }
        for x in &self.nodes {
            for (key, i) in &x.instances {
                if !wanted.contains_key(key) {
                    wrong.push((
                        Kind::NotLive,
                        format!(
                            "{} still runs {}/{} #{}, which is not wanted",
                            x.name, key.0, key.1, i.id
                        ),
                    ));
                }
            }
        }
        for kv in self.etcd.range(&self.keys.statuses()) {
            let (Some(Key::Status { node, app, slot }), Value::Status(s)) =
                (self.keys.parse(&kv.key), &kv.value)
            else {
                continue;
            };
            let runs = self
                .nodes
                .iter()
                .find(|x| x.name == node)
                .and_then(|x| x.instances.get(&(app.clone(), slot)));
            let state = |i: &crate::node::Instance| {
                if i.ready {
                    InstanceState::Ready
                } else {
                    InstanceState::Starting
                }
            };
            let truthful = runs.is_some_and(|i| {
                Some(i.id as u32) == s.pid && state(i) == s.state && i.generation == s.generation
            });
            if !truthful {
                wrong.push((
                    Kind::LyingStatus,
                    format!(
                        "status/{node}/{app}/{slot} says {} gen {} #{}, but {node} runs {:?}",
                        s.state,
                        s.generation,
                        s.pid.unwrap_or(0),
                        runs.map(|i| (i.id, i.ready, i.generation))
                    ),
                ));
            }
        }
        // Report the most telling first: a lying status explains what follows from it.
        wrong.sort_by_key(|(k, _)| std::cmp::Reverse(*k == Kind::LyingStatus));
        for (kind, message) in wrong {
            self.violated(kind, message);
        }
    }
}

/// A stored value in a few words, for the trace.
pub fn describe(value: &Value) -> String {
    match value {
        Value::App(d) => format!("{} instance(s)", d.instances),
        Value::Node(r) => format!("node {} ({})", r.name, r.boot_id),
        Value::Known(r) => format!("known {}", r.name),
        Value::Admin(r) => format!("{r:?}"),
        Value::Leader(r) => format!("leader {} ({})", r.node, r.boot_id),
        Value::Alloc(r) => format!("{} gen {} ({})", r.node, r.generation, r.reason),
        Value::Status(r) => format!("{} gen {} #{}", r.state, r.generation, r.pid.unwrap_or(0)),
    }
}
