//! A node's copy of the cluster, as `crates/cluster/src/mirror.rs` keeps it: loaded from one
//! read at a revision, then every change of the watch applied in revision order. It is what
//! the node decides on, so it may be as stale as its watch: frozen while the node is cut off,
//! behind by the watch's latency otherwise, but always the state at *some* revision.

use std::collections::{BTreeMap, BTreeSet};

use jarfleet_core::cluster::keys::{Key, Keys};
use jarfleet_core::cluster::records::{
    AdminRecord, InstanceState, LeaderRecord, NodeRecord, StatusRecord,
};
use jarfleet_core::cluster::schedule::{Demand, Placed, View};

use crate::etcd::{Change, Etcd, Kv, LeaseId, Revision, Value};

/// The leader key as read: its record, its create revision (the epoch) and its lease.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader {
    pub record: LeaderRecord,
    pub epoch: Revision,
    pub lease: LeaseId,
}

#[derive(Debug, Clone, Default)]
pub struct Mirror {
    /// Every change up to this revision is in.
    pub revision: Revision,
    /// How many entries of etcd's log have been applied.
    pub applied: usize,
    pub apps: BTreeMap<String, Demand>,
    pub nodes: BTreeMap<String, (NodeRecord, LeaseId)>,
    pub admin: BTreeMap<String, AdminRecord>,
    pub leader: Option<Leader>,
    pub allocs: BTreeMap<(String, u32), Placed>,
    pub statuses: BTreeMap<(String, String, u32), StatusRecord>,
}

impl Mirror {
    /// One read of everything, at etcd's current revision.
    pub fn load(keys: &Keys, etcd: &Etcd) -> Mirror {
        let mut m = Mirror {
            revision: etcd.revision(),
            applied: etcd.log().len(),
            ..Mirror::default()
        };
        for kv in etcd.range(keys.root()) {
            m.put(keys, kv);
        }
        m
    }

    /// Applies the log's entries from where this mirror is up to `through` (an index into
    /// the log); `false` if there was nothing new.
    pub fn catch_up(&mut self, keys: &Keys, log: &[Change], through: usize) -> bool {
        let through = through.min(log.len());
        if through <= self.applied {
            return false;
        }
        for change in &log[self.applied..through] {
            match change {
                Change::Put(kv) => self.put(keys, kv),
                Change::Delete { key, .. } => self.delete(keys, key),
            }
            self.revision = self.revision.max(change.revision());
        }
        self.applied = through;
        true
    }

    fn put(&mut self, keys: &Keys, kv: &Kv) {
        match (keys.parse(&kv.key), &kv.value) {
            (Some(Key::App(app)), Value::App(d)) => {
                self.apps.insert(app, d.clone());
            }
            (Some(Key::Node(node)), Value::Node(r)) => {
                self.nodes.insert(node, (r.clone(), kv.lease));
            }
            (Some(Key::Admin(node)), Value::Admin(r)) => {
                self.admin.insert(node, r.clone());
            }
            (Some(Key::Leader), Value::Leader(r)) => {
                self.leader = Some(Leader {
                    record: r.clone(),
                    epoch: kv.create_revision,
                    lease: kv.lease,
                });
            }
            (Some(Key::Alloc { app, slot }), Value::Alloc(r)) => {
                self.allocs.insert(
                    (app, slot),
                    Placed {
                        record: r.clone(),
                        mod_revision: kv.mod_revision,
                    },
                );
            }
            (Some(Key::Status { node, app, slot }), Value::Status(r)) => {
                self.statuses.insert((node, app, slot), r.clone());
            }
            _ => {}
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        match keys.parse(key) {
            Some(Key::App(app)) => {
                self.apps.remove(&app);
            }
            Some(Key::Node(node)) => {
                self.nodes.remove(&node);
            }
            Some(Key::Admin(node)) => {
                self.admin.remove(&node);
            }
            Some(Key::Leader) => self.leader = None,
            Some(Key::Alloc { app, slot }) => {
                self.allocs.remove(&(app, slot));
            }
            Some(Key::Status { node, app, slot }) => {
                self.statuses.remove(&(node, app, slot));
            }
            Some(Key::Known(_)) | Some(Key::Rollout(_)) | Some(Key::Stats { .. }) | None => {}
        }
    }

    /// What the scheduler reconciles, built as `Mirror::view` in `crates/cluster/src/mirror.rs`
    /// builds it (failed slots: a Failed status from the node the slot is placed on).
    pub fn view(&self) -> View {
        let failed: BTreeSet<(String, u32, u64)> = self
            .statuses
            .iter()
            .filter(|((node, app, slot), s)| {
                s.state == InstanceState::Failed
                    && self
                        .allocs
                        .get(&(app.clone(), *slot))
                        .is_some_and(|p| p.record.node == *node)
            })
            .map(|((_, app, slot), s)| (app.clone(), *slot, s.generation))
            .collect();
        View {
            apps: self.apps.clone(),
            nodes: self
                .nodes
                .iter()
                .map(|(n, (r, _))| (n.clone(), r.clone()))
                .collect(),
            admin: self.admin.clone(),
            allocs: self.allocs.clone(),
            failed,
            returning: BTreeSet::new(),
        }
    }
}
