//! A new release across the cluster, one node after the other.
//!
//! `apply` writes the app's new release together with a [`RolloutRecord`] that clears no
//! node, so every node keeps the release before it ([`runs_previous`]). The scheduler then
//! clears the nodes that run the app's slots one at a time ([`next`]): a node cleared runs
//! its own deployment of the release (the app's strategy and health checks, on its own
//! instances), and the next node is cleared once every slot placed on it is ready on the new
//! release. The whole cluster never has more than one node's instances changing at once, so
//! the others carry the traffic.
//!
//! - A node whose deployment of the release fails rolls back by itself and says so in its
//!   instances' status (`rolled_back`); the rollout is then rolled back: every node runs the
//!   release before it again (the nodes already cleared deploy it back).
//! - A cleared node that is lost counts as done: its slots are placed elsewhere, and run the
//!   new release there once that node is cleared.
//! - The record is the whole state: a scheduler elected after the last one died carries on
//!   where it stood, and each write is fenced like a placement's.

use std::collections::{BTreeMap, BTreeSet};

use super::records::{AllocRecord, InstanceState, RolloutRecord, RolloutState, StatusRecord};
use crate::Millis;

/// What the scheduler knows of one app's rollout.
#[derive(Debug, Clone)]
pub struct Seen<'a> {
    pub app: &'a str,
    pub rollout: &'a RolloutRecord,
    /// The app's placements: slot → where.
    pub allocs: BTreeMap<u32, &'a AllocRecord>,
    /// Every node's instances: (node, app, slot).
    pub statuses: &'a BTreeMap<(String, String, u32), StatusRecord>,
    /// Nodes that are up (registered).
    pub up: &'a BTreeSet<String>,
}

/// The rollout's next record, and what to say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub record: RolloutRecord,
    pub said: String,
}

/// Whether `node` runs the release before the app's current one: a rollout of the app's
/// release is under way and has not cleared it, or was rolled back.
pub fn runs_previous(node: &str, release: &str, rollout: Option<&RolloutRecord>) -> bool {
    rollout.is_some_and(|r| r.release == release && !r.runs_new(node))
}

/// The rollout's next step at `now`, if it has one.
pub fn next(seen: &Seen<'_>, now: Millis) -> Option<Step> {
    let r = seen.rollout;
    if r.state != RolloutState::Rolling {
        return None;
    }
    let app = seen.app;
    let release = r.release.as_str();
    // A cleared node whose deployment of the release failed: back everywhere.
    let failed = seen
        .statuses
        .iter()
        .filter(|((node, a, _), s)| {
            a == app && s.rolled_back.as_deref() == Some(release) && r.cleared.contains(node)
        })
        .map(|((node, _, _), _)| node.clone())
        .next();
    if let Some(node) = failed {
        let why = format!(
            "node {node}'s deployment of release {release} failed and rolled back: every node runs release {} again",
            r.from
        );
        let mut record = r.clone();
        record.state = RolloutState::RolledBack;
        record.why = Some(why.clone());
        record.ended_ms = Some(now);
        return Some(Step {
            record,
            said: format!("{app}: rollout of release {release} rolled back: {why}"),
        });
    }
    let ready_on = |node: &str| {
        seen.allocs
            .iter()
            .filter(|(_, a)| a.node == node)
            .all(|(slot, a)| {
                seen.statuses
                    .get(&(node.to_string(), app.to_string(), *slot))
                    .is_some_and(|s| {
                        s.state == InstanceState::Ready
                            && s.release == release
                            && s.generation == a.generation
                    })
            })
    };
    if let Some(current) = r.cleared.last()
        && seen.up.contains(current)
        && !ready_on(current)
    {
        return None;
    }
    let holding: BTreeSet<&str> = seen
        .allocs
        .values()
        .map(|a| a.node.as_str())
        .filter(|n| seen.up.contains(*n))
        .collect();
    let waiting: Vec<&str> = holding
        .iter()
        .copied()
        .filter(|n| !r.cleared.iter().any(|c| c == n))
        .collect();
    if let Some(node) = waiting.first() {
        let mut record = r.clone();
        record.cleared.push(node.to_string());
        record.cleared_ms.resize(r.cleared.len(), 0);
        record.cleared_ms.push(now);
        let done = holding.len() - waiting.len();
        return Some(Step {
            record,
            said: format!(
                "{app}: release {release} goes out on node {node} ({} of {} nodes)",
                done + 1,
                holding.len()
            ),
        });
    }
    // Every node that holds a slot was cleared: done once every slot is ready on the release.
    if holding.iter().all(|n| ready_on(n)) {
        let mut record = r.clone();
        record.state = RolloutState::Done;
        record.ended_ms = Some(now);
        return Some(Step {
            record,
            said: format!(
                "{app}: release {release} runs on every node ({} instance(s) on {} node(s))",
                seen.allocs.len(),
                holding.len()
            ),
        });
    }
    None
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

    fn status(release: &str, state: InstanceState, generation: u64) -> StatusRecord {
        StatusRecord {
            generation,
            state,
            address: Some("10.0.0.1".into()),
            port: Some(9000),
            release: release.into(),
            pid: Some(1),
            restarts: 0,
            rolled_back: None,
        }
    }

    fn rolling() -> RolloutRecord {
        RolloutRecord {
            release: "r2".into(),
            from: "r1".into(),
            state: RolloutState::Rolling,
            cleared: Vec::new(),
            cleared_ms: Vec::new(),
            why: None,
            started_ms: 1,
            ended_ms: None,
        }
    }

    struct World {
        allocs: BTreeMap<u32, AllocRecord>,
        statuses: BTreeMap<(String, String, u32), StatusRecord>,
        up: BTreeSet<String>,
    }

    impl World {
        /// Six slots, two on each of a, b and c, all ready on r1.
        fn new() -> World {
            let mut w = World {
                allocs: BTreeMap::new(),
                statuses: BTreeMap::new(),
                up: ["a", "b", "c"].iter().map(|s| s.to_string()).collect(),
            };
            for slot in 0..6u32 {
                let node = ["a", "b", "c"][slot as usize % 3];
                w.allocs.insert(slot, alloc(node, 1));
                w.set(node, slot, "r1", InstanceState::Ready);
            }
            w
        }

        fn set(&mut self, node: &str, slot: u32, release: &str, state: InstanceState) {
            self.statuses.insert(
                (node.into(), "web".into(), slot),
                status(release, state, self.allocs[&slot].generation),
            );
        }

        fn all_on(&mut self, node: &str, release: &str) {
            let slots: Vec<u32> = self
                .allocs
                .iter()
                .filter(|(_, a)| a.node == node)
                .map(|(s, _)| *s)
                .collect();
            for slot in slots {
                self.set(node, slot, release, InstanceState::Ready);
            }
        }

        fn next(&self, r: &RolloutRecord, now: Millis) -> Option<Step> {
            next(
                &Seen {
                    app: "web",
                    rollout: r,
                    allocs: self.allocs.iter().map(|(s, a)| (*s, a)).collect(),
                    statuses: &self.statuses,
                    up: &self.up,
                },
                now,
            )
        }
    }

    #[test]
    fn nodes_are_cleared_one_after_the_other_each_once_its_instances_are_ready() {
        let mut w = World::new();
        let mut r = rolling();
        let step = w.next(&r, 10).expect("the first node is cleared");
        assert_eq!(step.record.cleared, ["a"]);
        assert_eq!(step.record.cleared_ms, [10]);
        assert!(step.said.contains("node a (1 of 3 nodes)"), "{}", step.said);
        r = step.record;
        // a is still on its way: nothing more.
        assert_eq!(w.next(&r, 11), None);
        w.set("a", 0, "r2", InstanceState::Ready);
        w.set("a", 3, "r2", InstanceState::Starting);
        assert_eq!(
            w.next(&r, 12),
            None,
            "one of a's instances is not ready yet"
        );
        w.all_on("a", "r2");
        r = w.next(&r, 13).expect("b next").record;
        assert_eq!(r.cleared, ["a", "b"]);
        w.all_on("b", "r2");
        r = w.next(&r, 14).expect("c next").record;
        assert_eq!(r.cleared, ["a", "b", "c"]);
        assert_eq!(w.next(&r, 15), None);
        w.all_on("c", "r2");
        let done = w.next(&r, 16).expect("done");
        assert_eq!(done.record.state, RolloutState::Done);
        assert_eq!(done.record.ended_ms, Some(16));
        assert_eq!(w.next(&done.record, 17), None, "a done rollout has no step");
    }

    #[test]
    fn a_ready_copy_of_an_older_placement_does_not_count() {
        let mut w = World::new();
        let mut r = rolling();
        r.cleared = vec!["a".into()];
        w.all_on("a", "r2");
        w.allocs.insert(0, alloc("a", 2));
        assert_eq!(w.next(&r, 1), None, "slot 0's generation 2 is not ready");
        w.set("a", 0, "r2", InstanceState::Ready);
        assert!(w.next(&r, 2).is_some());
    }

    #[test]
    fn a_failed_deployment_on_a_cleared_node_rolls_back_everywhere() {
        let mut w = World::new();
        let mut r = rolling();
        r.cleared = vec!["a".into(), "b".into()];
        w.all_on("a", "r2");
        // A node not cleared saying so (an old rollout of the same release) is not taken.
        let mut other = status("r1", InstanceState::Ready, 1);
        other.rolled_back = Some("r2".into());
        w.statuses
            .insert(("c".into(), "web".into(), 2), other.clone());
        assert_eq!(w.next(&r, 1), None);
        w.statuses.insert(("b".into(), "web".into(), 1), other);
        let step = w.next(&r, 2).expect("rolled back");
        assert_eq!(step.record.state, RolloutState::RolledBack);
        assert!(
            step.record
                .why
                .as_deref()
                .unwrap_or_default()
                .contains("node b"),
            "{:?}",
            step.record.why
        );
        for node in ["a", "b", "c", "d"] {
            assert!(runs_previous(node, "r2", Some(&step.record)));
        }
    }

    #[test]
    fn a_lost_cleared_node_counts_as_done_and_its_slots_go_with_the_rest() {
        let mut w = World::new();
        let mut r = rolling();
        r.cleared = vec!["a".into()];
        w.up.remove("a");
        // a's slots were placed on b and c anew.
        w.allocs.insert(0, alloc("b", 2));
        w.allocs.insert(3, alloc("c", 2));
        r = w.next(&r, 1).expect("b is next").record;
        assert_eq!(r.cleared, ["a", "b"]);
        w.all_on("b", "r2");
        r = w.next(&r, 2).expect("c").record;
        w.all_on("c", "r2");
        assert_eq!(
            w.next(&r, 3).expect("done").record.state,
            RolloutState::Done
        );
    }

    #[test]
    fn who_runs_which_release() {
        let mut r = rolling();
        r.cleared = vec!["a".into()];
        assert!(!runs_previous("a", "r2", Some(&r)));
        assert!(runs_previous("b", "r2", Some(&r)));
        // A rollout of another release, or none, holds nobody back.
        assert!(!runs_previous("b", "r3", Some(&r)));
        assert!(!runs_previous("b", "r2", None));
        r.state = RolloutState::Done;
        assert!(!runs_previous("b", "r2", Some(&r)));
    }

    #[test]
    fn an_app_with_no_slot_is_done_at_once() {
        let mut w = World::new();
        w.allocs.clear();
        let step = w.next(&rolling(), 5).expect("done");
        assert_eq!(step.record.state, RolloutState::Done);
    }
}
