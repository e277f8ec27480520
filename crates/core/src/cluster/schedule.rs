//! The scheduler's reconciliation: from the apps the cluster should run, the nodes that are up
//! and the placements in etcd, the writes that make the placements right.
//!
//! - A slot whose node is up stays where it is, whatever else changed: a healthy instance is
//!   never moved to balance the cluster.
//! - A slot whose node is down (its lease expired: the node key is gone) is placed anew at
//!   once, with the next generation: a node loss is not a crash, so there is no back-off.
//! - A slot whose node reports it failed (restarts exhausted there) moves to another node that
//!   fits; if none does, it stays and says why.
//! - A slot on a node an operator drains moves to another node that fits, all of the node's
//!   slots at once (the node keeps each copy serving until its replacement is ready); one that
//!   fits nowhere stays, and says why, until room appears or the drain's deadline passes.
//! - Slots beyond an app's count, and every slot of an app that is gone, are deleted (their
//!   node drains and stops them).
//!
//! Every write names the revision it was decided on (`expect`): the caller sends it as a
//! compare-and-swap together with the fencing check, so a write decided on stale data, or by a
//! deposed scheduler, changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use super::placement::{Need, NodeUse, Usage};
use super::records::{AdminRecord, AllocRecord, NodeRecord};
use crate::Millis;

/// What an app asks of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub instances: u32,
    /// Memory one instance is counted for.
    pub memory: u64,
    pub max_per_node: Option<u32>,
    pub node_labels: BTreeMap<String, String>,
}

impl Demand {
    pub fn of(spec: &crate::spec::AppSpec) -> Demand {
        Demand {
            instances: spec.instances,
            memory: spec.instance_memory(),
            max_per_node: spec.placement.max_per_node,
            node_labels: spec.placement.node_labels.clone(),
        }
    }
}

/// A placement as stored, with the revision it was last written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    pub record: AllocRecord,
    pub mod_revision: i64,
}

/// What the scheduler knows when it reconciles.
#[derive(Debug, Clone, Default)]
pub struct View {
    pub apps: BTreeMap<String, Demand>,
    /// Nodes that are up: their registration is there (it rides their lease).
    pub nodes: BTreeMap<String, NodeRecord>,
    pub admin: BTreeMap<String, AdminRecord>,
    pub allocs: BTreeMap<(String, u32), Placed>,
    /// Slots whose node says their instance failed, at that placement's generation.
    pub failed: BTreeSet<(String, u32, u64)>,
    /// Nodes not registered now that may well be on their way back: their slots stay where
    /// they are for now, and nothing new goes to them. (A scheduler whose own registration is
    /// new — every node lost its lease to an etcd cut off from them all — gives the others
    /// one lease's time to register again, or the first node back would get everything.)
    pub returning: BTreeSet<String>,
}

/// One write to `alloc/<app>/<slot>`, valid only if the key is still at `expect`
/// (0: the key must not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    Put {
        app: String,
        slot: u32,
        record: AllocRecord,
        expect: i64,
    },
    Delete {
        app: String,
        slot: u32,
        expect: i64,
    },
}

/// A slot that has no node to go to, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub app: String,
    pub slot: u32,
    pub why: String,
}

/// The outcome of one pass.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    pub writes: Vec<Write>,
    pub unplaced: Vec<Unplaced>,
}

/// One reconciliation pass at `now`.
pub fn reconcile(view: &View, now: Millis) -> Pass {
    let mut usage = usage_of(view);
    let mut pass = Pass::default();
    let up = |node: &str| view.nodes.contains_key(node) || view.returning.contains(node);
    let draining = |node: &str| view.admin.get(node).is_some_and(|a| a.draining);

    // What stays counts first, so what is placed next sees it.
    for ((app, slot), placed) in &view.allocs {
        let kept = view
            .apps
            .get(app)
            .filter(|d| *slot < d.instances && up(&placed.record.node));
        if let Some(demand) = kept {
            usage.take(&placed.record.node, app, demand.memory);
        }
    }
    for ((app, slot), placed) in &view.allocs {
        let wanted = view.apps.get(app).is_some_and(|d| *slot < d.instances);
        if !wanted {
            pass.writes.push(Write::Delete {
                app: app.clone(),
                slot: *slot,
                expect: placed.mod_revision,
            });
        }
    }

    for (app, demand) in &view.apps {
        for slot in 0..demand.instances {
            let current = view.allocs.get(&(app.clone(), slot));
            let (avoid, reason, next_generation) = match current {
                None => (None, "placed".to_string(), 1),
                Some(p) if !up(&p.record.node) => (
                    None,
                    format!("node {} lost", p.record.node),
                    p.record.generation + 1,
                ),
                Some(p)
                    if view
                        .failed
                        .contains(&(app.clone(), slot, p.record.generation)) =>
                {
                    (
                        Some(p.record.node.as_str()),
                        format!("failed on node {}", p.record.node),
                        p.record.generation + 1,
                    )
                }
                Some(p) if draining(&p.record.node) => (
                    Some(p.record.node.as_str()),
                    format!("node {} drained", p.record.node),
                    p.record.generation + 1,
                ),
                Some(_) => continue,
            };
            let need = Need {
                app,
                slot,
                memory: demand.memory,
                max_per_node: demand.max_per_node,
                node_labels: &demand.node_labels,
            };
            match usage.choose(&need, avoid) {
                Ok(node) => {
                    if avoid.is_some() {
                        // Leaving a node it failed on: no longer counted there.
                        untake(&mut usage, avoid, app, demand.memory);
                    }
                    usage.take(&node, app, demand.memory);
                    pass.writes.push(Write::Put {
                        app: app.clone(),
                        slot,
                        record: AllocRecord {
                            node,
                            generation: next_generation,
                            reason,
                            placed_ms: now,
                        },
                        expect: current.map_or(0, |p| p.mod_revision),
                    });
                }
                Err(why) => pass.unplaced.push(Unplaced {
                    app: app.clone(),
                    slot,
                    why: match avoid {
                        Some(node) if draining(node) => {
                            format!("it stays on draining node {node} for now: {why}")
                        }
                        _ => why,
                    },
                }),
            }
        }
    }
    pass
}

/// Every node that is up, as placement sees it (nothing placed yet).
fn usage_of(view: &View) -> Usage {
    let nodes = view
        .nodes
        .values()
        .map(|n| {
            let admin = view.admin.get(&n.name).cloned().unwrap_or_default();
            NodeUse {
                name: n.name.clone(),
                labels: n.labels.clone(),
                memory: n.memory,
                closed: if admin.draining {
                    Some("draining")
                } else if admin.ineligible {
                    Some("ineligible")
                } else {
                    None
                },
                used: 0,
                per_app: BTreeMap::new(),
            }
        })
        .collect();
    Usage { nodes }
}

fn untake(usage: &mut Usage, node: Option<&str>, app: &str, memory: u64) {
    let Some(n) = usage
        .nodes
        .iter_mut()
        .find(|n| Some(n.name.as_str()) == node)
    else {
        return;
    };
    n.used = n.used.saturating_sub(memory);
    if let Some(c) = n.per_app.get_mut(app) {
        *c = c.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests;
