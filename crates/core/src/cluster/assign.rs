//! A node's side of the placements: which slots it runs, which copies it keeps until their
//! replacement elsewhere is ready, and which it stops.
//!
//! - A slot placed on this node runs here. If this node already runs it (say it was placed
//!   elsewhere during a partition and has come back), the running instance is kept and takes
//!   the new generation: a healthy instance is never restarted.
//! - A copy whose slot is now placed on another node is kept, serving, until that node
//!   reports its instance of the current generation ready; then it is drained and stopped.
//!   (During a partition both run: over-capacity for a while is the price of availability.)
//! - A copy whose slot is no longer placed anywhere (scaled down, app removed) is drained and
//!   stopped.
//! - On a node being drained, copies hand over like any moved copy; once the drain's deadline
//!   has passed, whatever still runs there is drained and stopped, replacement ready or not
//!   (and a slot that could not be moved runs nowhere until room appears).
//! - When the cluster's state holds no app and no placement at all while this node runs
//!   instances, nothing is stopped: an emptied or replaced etcd is not an order to stop the
//!   fleet. The node holds what it runs and says why.

use std::collections::{BTreeMap, BTreeSet};

use super::records::{AllocRecord, InstanceState, StatusRecord};

/// What this node sees of the cluster.
#[derive(Debug, Clone, Default)]
pub struct Seen<'a> {
    /// This node's name.
    pub me: &'a str,
    /// Apps whose spec is in the cluster.
    pub apps: BTreeSet<String>,
    pub allocs: BTreeMap<(String, u32), AllocRecord>,
    /// Every node's instances: (node, app, slot).
    pub statuses: BTreeMap<(String, String, u32), StatusRecord>,
    /// The copies this node runs: (app, slot) → the generation it runs for.
    pub local: BTreeMap<(String, u32), u64>,
    /// This node is being drained and the drain's deadline has passed.
    pub drain_overdue: bool,
}

/// What this node should run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// Per app: slot → generation, for every slot this node runs (placed here, or kept until
    /// its replacement is ready).
    pub run: BTreeMap<String, BTreeMap<u32, u64>>,
    /// Copies kept only until their replacement elsewhere is ready: (app, slot) → the node
    /// it moved to.
    pub handing_over: BTreeMap<(String, u32), String>,
    /// Copies to drain and stop, with why.
    pub stop: Vec<((String, u32), String)>,
    /// Set when nothing may be stopped because the cluster's state looks emptied.
    pub holding: Option<String>,
}

/// Decides what this node runs.
pub fn assign(seen: &Seen<'_>) -> Assignment {
    let mut out = Assignment::default();
    let emptied = seen.apps.is_empty() && seen.allocs.is_empty() && !seen.local.is_empty();
    if emptied {
        out.holding = Some(format!(
            "the cluster's state in etcd holds no app and no placement, yet this node runs {} instance(s): kept running until an app is applied again",
            seen.local.len()
        ));
    }
    let overdue = seen.drain_overdue && !emptied;
    for ((app, slot), alloc) in &seen.allocs {
        if alloc.node == seen.me && seen.apps.contains(app) && !overdue {
            out.run
                .entry(app.clone())
                .or_default()
                .insert(*slot, alloc.generation);
        }
    }
    for ((app, slot), generation) in &seen.local {
        let key = (app.clone(), *slot);
        if emptied {
            out.run
                .entry(app.clone())
                .or_default()
                .insert(*slot, *generation);
            continue;
        }
        if !seen.apps.contains(app) {
            out.stop.push((key, "the app was removed".into()));
            continue;
        }
        if overdue {
            let why = match seen.allocs.get(&key) {
                Some(alloc) if alloc.node != seen.me => format!(
                    "the node's drain deadline passed before its replacement on node {} was ready",
                    alloc.node
                ),
                _ => "the node's drain deadline passed with nowhere else for it to go".into(),
            };
            out.stop.push((key, why));
            continue;
        }
        match seen.allocs.get(&key) {
            None => out.stop.push((key, "the slot is no longer placed".into())),
            Some(alloc) if alloc.node == seen.me => {}
            Some(alloc) => {
                let replacement = seen.statuses.get(&(alloc.node.clone(), app.clone(), *slot));
                let ready = replacement.is_some_and(|s| {
                    s.state == InstanceState::Ready && s.generation == alloc.generation
                });
                if ready {
                    out.stop.push((
                        key,
                        format!("replaced by its instance on node {}", alloc.node),
                    ));
                } else {
                    out.run
                        .entry(app.clone())
                        .or_default()
                        .insert(*slot, *generation);
                    out.handing_over.insert(key, alloc.node.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(node: &str, generation: u64) -> AllocRecord {
        AllocRecord {
            node: node.into(),
            generation,
            reason: String::new(),
            placed_ms: 0,
        }
    }

    fn status(state: InstanceState, generation: u64) -> StatusRecord {
        StatusRecord {
            generation,
            state,
            address: Some("10.0.0.2".into()),
            port: Some(9100),
            release: "r1".into(),
            pid: Some(1),
            restarts: 0,
            rolled_back: None,
        }
    }

    fn seen<'a>() -> Seen<'a> {
        Seen {
            me: "a",
            apps: BTreeSet::from(["web".to_string()]),
            ..Seen::default()
        }
    }

    fn key(slot: u32) -> (String, u32) {
        ("web".to_string(), slot)
    }

    #[test]
    fn runs_what_is_placed_here_and_keeps_a_running_copy_without_restart() {
        let mut s = seen();
        s.allocs.insert(key(0), alloc("a", 1));
        s.allocs.insert(key(1), alloc("b", 1));
        s.allocs.insert(key(2), alloc("a", 5));
        s.local.insert(key(2), 3);
        let got = assign(&s);
        assert_eq!(got.run["web"], BTreeMap::from([(0, 1), (2, 5)]));
        assert!(got.stop.is_empty());
        assert!(got.handing_over.is_empty());
    }

    #[test]
    fn a_moved_copy_serves_until_its_replacement_is_ready_then_stops() {
        let mut s = seen();
        s.allocs.insert(key(0), alloc("b", 2));
        s.local.insert(key(0), 1);
        let got = assign(&s);
        assert_eq!(got.run["web"], BTreeMap::from([(0, 1)]));
        assert_eq!(got.handing_over[&key(0)], "b");

        // Starting, or ready for an older generation, is not a replacement.
        s.statuses.insert(
            ("b".into(), "web".into(), 0),
            status(InstanceState::Starting, 2),
        );
        assert!(assign(&s).stop.is_empty());
        s.statuses.insert(
            ("b".into(), "web".into(), 0),
            status(InstanceState::Ready, 1),
        );
        assert!(assign(&s).stop.is_empty());

        s.statuses.insert(
            ("b".into(), "web".into(), 0),
            status(InstanceState::Ready, 2),
        );
        let got = assign(&s);
        assert_eq!(
            got.stop,
            vec![(key(0), "replaced by its instance on node b".to_string())]
        );
        assert!(!got.run.contains_key("web"));
    }

    #[test]
    fn unplaced_slots_and_removed_apps_stop() {
        let mut s = seen();
        s.allocs.insert(key(0), alloc("a", 1));
        s.local.insert(key(0), 1);
        s.local.insert(key(1), 1);
        s.local.insert(("gone".into(), 0), 1);
        let got = assign(&s);
        assert_eq!(
            got.stop,
            vec![
                (("gone".into(), 0), "the app was removed".to_string()),
                (key(1), "the slot is no longer placed".to_string()),
            ]
        );
    }

    #[test]
    fn past_a_drain_s_deadline_everything_here_stops_ready_replacement_or_not() {
        let mut s = seen();
        s.allocs.insert(key(0), alloc("b", 2));
        s.allocs.insert(key(1), alloc("a", 1));
        s.local.insert(key(0), 1);
        s.local.insert(key(1), 1);
        let before = assign(&s);
        assert_eq!(before.run["web"], BTreeMap::from([(0, 1), (1, 1)]));
        assert!(before.stop.is_empty());

        s.drain_overdue = true;
        let got = assign(&s);
        assert!(got.run.is_empty(), "{got:?}");
        assert!(got.handing_over.is_empty());
        assert_eq!(
            got.stop,
            vec![
                (
                    key(0),
                    "the node's drain deadline passed before its replacement on node b was ready"
                        .to_string()
                ),
                (
                    key(1),
                    "the node's drain deadline passed with nowhere else for it to go".to_string()
                ),
            ]
        );
        // An emptied store still stops nothing.
        s.apps.clear();
        s.allocs.clear();
        let got = assign(&s);
        assert!(got.stop.is_empty());
        assert!(got.holding.is_some());
    }

    #[test]
    fn an_emptied_cluster_state_stops_nothing() {
        let mut s = seen();
        s.apps.clear();
        s.local.insert(key(0), 1);
        s.local.insert(key(1), 4);
        let got = assign(&s);
        assert!(got.stop.is_empty());
        assert_eq!(got.run["web"], BTreeMap::from([(0, 1), (1, 4)]));
        assert!(got.holding.is_some());
    }
}
