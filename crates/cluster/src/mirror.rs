//! The node's copy of the cluster's state in etcd: loaded from one read of the cluster's
//! prefix at a revision, then kept current by the watch from the next revision on.
//!
//! A value that does not decode or does not hold is left out and named in `bad` (with its
//! key), never taken half: one bad record must not hide the rest of the cluster.

use std::collections::{BTreeMap, BTreeSet};

use jarfleet_core::cluster::keys::{Key, Keys};
use jarfleet_core::cluster::records::{
    AdminRecord, AllocRecord, LeaderRecord, NodeRecord, Record, RolloutRecord, SetStatsRecord,
    StatusRecord, decode,
};
use jarfleet_core::cluster::schedule::{Demand, Placed, View};
use jarfleet_etcd::{Event, EventKind, KeyValue};
use serde::{Deserialize, Serialize};

/// `apps/<app>`: an app as applied to the cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterApp {
    pub spec: jarfleet_core::spec::AppSpec,
    /// The release id the applying node prepared (the same on every host for the same
    /// artifact, settings and JDK).
    pub release: String,
    /// The node it was applied through, and when (ms since the epoch).
    #[serde(default)]
    pub applied_by: String,
    #[serde(default)]
    pub applied_ms: u64,
    /// The jar, by digest: the applying node keeps it in its artifact cache and every node
    /// fetches it from a node that has it (`None`: an app without a jar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<crate::artifacts::ArtifactRef>,
    /// The release the app ran before this one: what the nodes a rollout has not reached yet
    /// run (`rollout/<app>`), and what it rolls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Box<PreviousRelease>>,
}

/// [`ClusterApp::previous`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviousRelease {
    pub spec: jarfleet_core::spec::AppSpec,
    pub release: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<crate::artifacts::ArtifactRef>,
}

impl ClusterApp {
    /// The app as it ran before this release (with no release before that).
    pub fn before(&self) -> Option<ClusterApp> {
        let p = self.previous.as_ref()?;
        Some(ClusterApp {
            spec: p.spec.clone(),
            release: p.release.clone(),
            applied_by: self.applied_by.clone(),
            applied_ms: self.applied_ms,
            artifact: p.artifact.clone(),
            previous: None,
        })
    }

    /// This release, to be kept as the one before the next.
    pub fn as_previous(&self) -> PreviousRelease {
        PreviousRelease {
            spec: self.spec.clone(),
            release: self.release.clone(),
            artifact: self.artifact.clone(),
        }
    }
}

impl Record for ClusterApp {
    fn check(&self) -> Result<(), String> {
        jarfleet_core::spec::app_name(&self.spec.name)?;
        if let Some(a) = &self.artifact {
            a.check()?;
        }
        if let Some(p) = &self.previous {
            if p.spec.name != self.spec.name {
                return Err(format!("its previous release is of app {:?}", p.spec.name));
            }
            if let Some(a) = &p.artifact {
                a.check()?;
            }
        }
        Ok(())
    }
}

/// The leader key as read: its record and the revision that created it (the fencing epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub record: LeaderRecord,
    pub epoch: i64,
    pub lease: i64,
}

/// A node's registration as read, with the lease it rides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub record: NodeRecord,
    pub lease: i64,
}

/// Everything of one cluster under `/jarfleet/<cluster>/`, as of `revision`.
#[derive(Debug, Clone, Default)]
pub struct Mirror {
    /// Every change up to this revision is in.
    pub revision: i64,
    pub apps: BTreeMap<String, (ClusterApp, i64)>,
    pub nodes: BTreeMap<String, Registered>,
    pub known: BTreeMap<String, NodeRecord>,
    pub admin: BTreeMap<String, AdminRecord>,
    pub leader: Option<Leader>,
    pub allocs: BTreeMap<(String, u32), Placed>,
    pub statuses: BTreeMap<(String, String, u32), StatusRecord>,
    /// Each app's rollout of a new release, with the revision it was last written at.
    pub rollouts: BTreeMap<String, (RolloutRecord, i64)>,
    /// Each node's figures of an app's new set during a canary or blue-green rollout:
    /// (node, app) → figures.
    pub stats: BTreeMap<(String, String), SetStatsRecord>,
    /// Keys under the prefix whose value was refused, with why.
    pub bad: BTreeMap<String, String>,
    /// Every key read or watched, with the revision of its last change: what a fresh read is
    /// compared with ([`Mirror::same_keys`]).
    seen: BTreeMap<String, i64>,
}

impl Mirror {
    /// The state read at `revision`.
    pub fn load(keys: &Keys, kvs: &[KeyValue], revision: i64) -> Mirror {
        let mut m = Mirror {
            revision,
            ..Mirror::default()
        };
        for kv in kvs {
            m.put(keys, kv);
        }
        m
    }

    /// Applies one watch event.
    pub fn apply(&mut self, keys: &Keys, event: &Event) {
        match event.kind {
            EventKind::Put => self.put(keys, &event.kv),
            EventKind::Delete => self.delete(keys, &event.kv.key),
        }
        self.revision = self.revision.max(event.kv.mod_revision);
    }

    /// Whether `other` holds the same keys at the same revisions (a fresh read of a mirror
    /// that missed nothing).
    pub fn same_keys(&self, other: &Mirror) -> bool {
        self.seen == other.seen
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        self.seen.insert(kv.key.clone(), kv.mod_revision);
        let Some(key) = keys.parse(&kv.key) else {
            return;
        };
        self.bad.remove(&kv.key);
        let result = match key {
            Key::App(app) => decode::<ClusterApp>(&kv.key, &kv.value).and_then(|a| {
                if a.spec.name == app {
                    self.apps.insert(app, (a, kv.mod_revision));
                    Ok(())
                } else {
                    Err(format!("{}: holds app {:?}", kv.key, a.spec.name))
                }
            }),
            Key::Node(node) => decode::<NodeRecord>(&kv.key, &kv.value).and_then(|r| {
                named(&kv.key, &r.name, &node)?;
                self.nodes.insert(
                    node,
                    Registered {
                        record: r,
                        lease: kv.lease,
                    },
                );
                Ok(())
            }),
            Key::Known(node) => decode::<NodeRecord>(&kv.key, &kv.value).and_then(|r| {
                named(&kv.key, &r.name, &node)?;
                self.known.insert(node, r);
                Ok(())
            }),
            Key::Admin(node) => decode::<AdminRecord>(&kv.key, &kv.value).map(|r| {
                self.admin.insert(node, r);
            }),
            Key::Leader => decode::<LeaderRecord>(&kv.key, &kv.value).map(|r| {
                self.leader = Some(Leader {
                    record: r,
                    epoch: kv.create_revision,
                    lease: kv.lease,
                });
            }),
            Key::Alloc { app, slot } => decode::<AllocRecord>(&kv.key, &kv.value).map(|r| {
                self.allocs.insert(
                    (app, slot),
                    Placed {
                        record: r,
                        mod_revision: kv.mod_revision,
                    },
                );
            }),
            Key::Status { node, app, slot } => {
                decode::<StatusRecord>(&kv.key, &kv.value).map(|r| {
                    self.statuses.insert((node, app, slot), r);
                })
            }
            Key::Rollout(app) => decode::<RolloutRecord>(&kv.key, &kv.value).map(|r| {
                self.rollouts.insert(app, (r, kv.mod_revision));
            }),
            Key::Stats { node, app } => decode::<SetStatsRecord>(&kv.key, &kv.value).map(|r| {
                self.stats.insert((node, app), r);
            }),
        };
        if let Err(why) = result {
            // What was there before stays out too: a key is what it holds now, or nothing.
            self.delete(keys, &kv.key);
            self.seen.insert(kv.key.clone(), kv.mod_revision);
            self.bad.insert(kv.key.clone(), why);
        }
    }

    fn delete(&mut self, keys: &Keys, key: &str) {
        self.seen.remove(key);
        self.bad.remove(key);
        match keys.parse(key) {
            Some(Key::App(app)) => {
                self.apps.remove(&app);
            }
            Some(Key::Node(node)) => {
                self.nodes.remove(&node);
            }
            Some(Key::Known(node)) => {
                self.known.remove(&node);
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
            Some(Key::Rollout(app)) => {
                self.rollouts.remove(&app);
            }
            Some(Key::Stats { node, app }) => {
                self.stats.remove(&(node, app));
            }
            None => {}
        }
    }

    /// The app as `node` runs it: its release, or the one before it while a rollout has not
    /// reached the node (or was rolled back).
    pub fn app_for(&self, node: &str, app: &str) -> Option<ClusterApp> {
        let (a, _) = self.apps.get(app)?;
        let rollout = self.rollouts.get(app).map(|(r, _)| r);
        if jarfleet_core::cluster::rollout::runs_previous(node, &a.release, rollout)
            && let Some(before) = a.before()
            && rollout.is_some_and(|r| r.from == before.release)
        {
            return Some(before);
        }
        Some(a.clone())
    }

    /// What the scheduler reconciles: the apps' demands, the nodes that are up, what
    /// operators said, the placements, and the slots whose node reports them failed.
    pub fn view(&self) -> View {
        let failed: BTreeSet<(String, u32, u64)> = self
            .statuses
            .iter()
            .filter(|((node, app, slot), s)| {
                s.state == jarfleet_core::cluster::records::InstanceState::Failed
                    && self
                        .allocs
                        .get(&(app.clone(), *slot))
                        .is_some_and(|p| p.record.node == *node)
            })
            .map(|((_, app, slot), s)| (app.clone(), *slot, s.generation))
            .collect();
        View {
            apps: self
                .apps
                .iter()
                .map(|(name, (a, _))| (name.clone(), Demand::of(&a.spec)))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|(n, r)| (n.clone(), r.record.clone()))
                .collect(),
            admin: self.admin.clone(),
            allocs: self.allocs.clone(),
            failed,
            returning: BTreeSet::new(),
        }
    }
}

fn named(key: &str, inside: &str, named: &str) -> Result<(), String> {
    if inside == named {
        Ok(())
    } else {
        Err(format!("{key}: holds node {inside:?}"))
    }
}
