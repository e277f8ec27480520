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

use super::records::{
    AllocRecord, InstanceState, RolloutRecord, RolloutState, RolloutStrategy, SetStatsRecord,
    StatusRecord, StepVerdict,
};
use crate::Millis;
use crate::canary::{self, StepFigures, Verdict};
use crate::spec::CanarySpec;

/// How long past a canary step's time the scheduler waits for a node's figures of that step
/// before it judges on the figures of the nodes that sent theirs.
pub const LATE_FIGURES_MS: Millis = 5_000;

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
    /// The app's canary settings (a canary rollout's steps and judgement).
    pub canary: &'a CanarySpec,
    /// Each node's figures of the app's new set (`stats/<node>/<app>`).
    pub stats: BTreeMap<&'a str, &'a SetStatsRecord>,
    /// The latency histogram bounds (µs) the step is judged with: figures with other bounds
    /// (a node of another version) are not summed with them.
    pub bounds: &'a [u64],
    /// Memory one of the app's instances is counted for.
    pub instance_memory: u64,
    /// The app's `max_surge`: the extra instances a node's rolling deployment starts.
    pub max_surge: u32,
    /// Each node's memory free beyond every slot placed on it ([`free_memory`]): a canary or
    /// blue-green starts a second set beside the first only where it fits.
    pub room: BTreeMap<&'a str, u64>,
}

/// Each node's memory (`[cluster] memory`) less what every slot placed on it is counted for.
pub fn free_memory<'a>(
    nodes: impl IntoIterator<Item = (&'a str, u64)>,
    placed: impl IntoIterator<Item = (&'a str, u64)>,
) -> BTreeMap<&'a str, u64> {
    let mut room: BTreeMap<&str, u64> = nodes.into_iter().collect();
    for (node, memory) in placed {
        if let Some(free) = room.get_mut(node) {
            *free = free.saturating_sub(memory);
        }
    }
    room
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
    if r.leads_sets() {
        return sets_next(seen, now);
    }
    if let Some(current) = r.cleared.last()
        && seen.up.contains(current)
        && !ready_on(seen, current)
    {
        return None;
    }
    let holding = holding(seen);
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
        let mut said = format!(
            "{app}: release {release} goes out on node {node} ({} of {} nodes)",
            done + 1,
            holding.len()
        );
        if let Some(short) = no_room_for_surge(seen, node) {
            record.in_place.push(node.to_string());
            said.push_str(&format!(
                ", in place: {short}, so its instances are replaced one at a time with no extra one (the other nodes carry the traffic)"
            ));
        }
        return Some(Step { record, said });
    }
    // Every node that holds a slot was cleared: done once every slot is ready on the release.
    if let Some(done) = done_when_ready(seen, &holding, now) {
        return Some(done);
    }
    None
}

/// Whether every slot the app has placed on `node` is ready on the rollout's release.
fn ready_on(seen: &Seen<'_>, node: &str) -> bool {
    let release = seen.rollout.release.as_str();
    seen.allocs
        .iter()
        .filter(|(_, a)| a.node == node)
        .all(|(slot, a)| {
            seen.statuses
                .get(&(node.to_string(), seen.app.to_string(), *slot))
                .is_some_and(|s| {
                    s.state == InstanceState::Ready
                        && s.release == release
                        && s.generation == a.generation
                })
        })
}

/// The rollout done, once every slot on the nodes `holding` the app is ready on its release.
fn done_when_ready(seen: &Seen<'_>, holding: &BTreeSet<&str>, now: Millis) -> Option<Step> {
    if !holding.iter().all(|n| ready_on(seen, n)) {
        return None;
    }
    let mut record = seen.rollout.clone();
    record.state = RolloutState::Done;
    record.ended_ms = Some(now);
    Some(Step {
        said: format!(
            "{}: release {} runs on every node ({} instance(s) on {} node(s))",
            seen.app,
            record.release,
            seen.allocs.len(),
            holding.len()
        ),
        record,
    })
}

/// The nodes that are up and hold a slot of the app.
fn holding<'a>(seen: &Seen<'a>) -> BTreeSet<&'a str> {
    seen.allocs
        .values()
        .map(|a| a.node.as_str())
        .filter(|n| seen.up.contains(*n))
        .collect()
}

/// Why `node` cannot start the app's surge beside its instances (`max_surge` of them, at most
/// as many as it runs), said; `None` when it can (or its memory is not known).
fn no_room_for_surge(seen: &Seen<'_>, node: &str) -> Option<String> {
    let free = *seen.room.get(node)?;
    let here = seen.allocs.values().filter(|a| a.node == node).count() as u64;
    let surge = u64::from(seen.max_surge).min(here);
    let need = surge.saturating_mul(seen.instance_memory);
    (need > free).then(|| {
        format!(
            "its {surge} surge instance(s) need {} and it has {} free",
            crate::units::format_size(need),
            crate::units::format_size(free)
        )
    })
}

/// The nodes among `nodes` whose free memory cannot hold a second set of their slots of the
/// app, said; `None` when every one can (a node whose memory is not known is not judged).
fn no_room(seen: &Seen<'_>, nodes: &[&str]) -> Option<String> {
    let short: Vec<String> = nodes
        .iter()
        .filter_map(|n| {
            let free = *seen.room.get(n)?;
            let count = seen.allocs.values().filter(|a| a.node == *n).count() as u64;
            let need = count.saturating_mul(seen.instance_memory);
            (need > free).then(|| {
                format!(
                    "node {n} needs {} for {count} more instance(s) and has {} free",
                    crate::units::format_size(need),
                    crate::units::format_size(free)
                )
            })
        })
        .collect();
    (!short.is_empty()).then(|| short.join("; "))
}

/// A canary or blue-green rollout: every node at once, led by the record.
fn sets_next(seen: &Seen<'_>, now: Millis) -> Option<Step> {
    let r = seen.rollout;
    let app = seen.app;
    let release = r.release.as_str();
    let holding = holding(seen);
    let mut record = r.clone();
    // Every node that holds a slot starts its new set beside the old one at once (a node
    // given a slot later joins in).
    let waiting: Vec<&str> = holding
        .iter()
        .copied()
        .filter(|n| !r.cleared.iter().any(|c| c == n))
        .collect();
    if !waiting.is_empty() {
        if let Some(short) = no_room(seen, &waiting) {
            let why = format!(
                "no room for the new set beside the old one: {short}. Nothing was started; give those nodes more `[cluster] memory` (or free some), or deploy with strategy = \"rolling\" (one extra instance at a time)"
            );
            record.state = RolloutState::RolledBack;
            record.why = Some(why.clone());
            record.ended_ms = Some(now);
            return Some(Step {
                record,
                said: format!(
                    "{app}: {} of release {release} not started: {why}",
                    r.strategy
                ),
            });
        }
        record.cleared_ms.resize(r.cleared.len(), 0);
        for node in &waiting {
            record.cleared.push(node.to_string());
            record.cleared_ms.push(now);
        }
        let how = match r.strategy {
            RolloutStrategy::BlueGreen => "out of traffic until every node's is ready",
            _ => "with no traffic until every node's is ready",
        };
        return Some(Step {
            record,
            said: format!(
                "{app}: release {release} goes out as a {} on node(s) {}: each starts its new set beside the old one, {how}",
                r.strategy,
                waiting.join(", ")
            ),
        });
    }
    if r.released {
        // Every node let its old set go: done once every slot is ready on the release.
        return done_when_ready(seen, &holding, now);
    }
    let of_release = |n: &str| seen.stats.get(n).filter(|s| s.release == release);
    if r.percent == 0 {
        // Ready: its new set, or (a node given the app's slots after the rollout began, which
        // starts them on the new release without a deployment) every slot on it.
        let unready: Vec<&str> = holding
            .iter()
            .copied()
            .filter(|n| !of_release(n).is_some_and(|s| s.ready) && !ready_on(seen, n))
            .collect();
        if !unready.is_empty() || holding.is_empty() {
            return None;
        }
        if r.strategy == RolloutStrategy::BlueGreen {
            record.released = true;
            record.percent = 100;
            return Some(Step {
                record,
                said: format!(
                    "{app}: every node's new set of release {release} is ready: every balancer switches to it"
                ),
            });
        }
        let first = seen.canary.steps.first().copied().unwrap_or(100);
        record.step = 0;
        record.percent = first;
        record.step_started_ms = Some(now);
        return Some(Step {
            record,
            said: format!(
                "{app}: every node's new set of release {release} is ready: canary step 1 of {}, {first} % of every node's traffic",
                seen.canary.steps.len()
            ),
        });
    }
    // A canary step: judged once its time is up, on the sum of every node's figures of it.
    let started = r.step_started_ms?;
    let due = started + seen.canary.step_time.as_millis() as Millis;
    if now < due {
        return None;
    }
    let of_step: BTreeMap<&str, &StepFigures> = holding
        .iter()
        .filter_map(|n| {
            of_release(n)
                .filter(|s| s.step == r.step && s.percent == r.percent && s.bounds == seen.bounds)
                .map(|s| (*n, &s.figures))
        })
        .collect();
    if of_step.len() < holding.len() && now < due + LATE_FIGURES_MS {
        return None;
    }
    let mut sum = StepFigures::default();
    for f in of_step.values() {
        sum.canary.add(&f.canary);
        sum.canary_warm.add(&f.canary_warm);
        sum.stable.add(&f.stable);
    }
    let nodes: BTreeMap<String, String> = of_step
        .iter()
        .map(|(n, f)| (n.to_string(), node_figures(f)))
        .collect();
    let step_no = r.step + 1;
    let percent = r.percent;
    let (passed, figures, why) = match canary::judge(seen.canary, &sum, seen.bounds) {
        // Too few requests across the cluster yet: the step goes on.
        Verdict::Wait { .. } => return None,
        // Paused and still good: it waits on for the operator.
        Verdict::Pass { .. } if r.paused => return None,
        Verdict::Pass { figures } => (true, figures, None),
        Verdict::Fail { figures, why } => (false, figures, Some(why)),
    };
    record.verdicts.push(StepVerdict {
        step: r.step,
        percent,
        passed,
        figures: match &why {
            Some(why) => format!("{why} ({figures})"),
            None => figures.clone(),
        },
        nodes,
        at_ms: now,
    });
    if let Some(why) = why {
        let why = format!(
            "canary step {step_no} ({percent} %) failed on the whole cluster's figures: {why} ({figures})"
        );
        record.state = RolloutState::RolledBack;
        record.percent = 0;
        record.why = Some(why.clone());
        record.ended_ms = Some(now);
        return Some(Step {
            record,
            said: format!(
                "{app}: rollout of release {release} rolled back: {why}; every node runs release {} again",
                r.from
            ),
        });
    }
    let steps = &seen.canary.steps;
    let next = r.step as usize + 1;
    if seen.canary.pause.contains(&percent) {
        record.paused = true;
        return Some(Step {
            record,
            said: format!(
                "{app}: canary step {step_no} ({percent} %) passed on the whole cluster's figures ({figures}): paused, waiting for `jarfleet promote {app}` (or `abort`), judged on meanwhile"
            ),
        });
    }
    if next >= steps.len() {
        record.released = true;
        record.percent = 100;
        return Some(Step {
            record,
            said: format!(
                "{app}: canary step {step_no} ({percent} %) passed on the whole cluster's figures ({figures}): every step passed, every node lets its old set go"
            ),
        });
    }
    record.step = next as u32;
    record.percent = steps[next];
    record.step_started_ms = Some(now);
    Some(Step {
        record,
        said: format!(
            "{app}: canary step {step_no} ({percent} %) passed on the whole cluster's figures ({figures}); step {} of {}: {} % of every node's traffic",
            next + 1,
            steps.len(),
            steps[next]
        ),
    })
}

/// `jarfleet promote` of a canary across the cluster: on a paused step (unless `full`) the next
/// step, on every node; otherwise the remaining steps are skipped and every node lets its old
/// set go. The record it writes (compare-and-swap on the one it read), or why not.
pub fn promote(
    r: &RolloutRecord,
    canary: &CanarySpec,
    full: bool,
    now: Millis,
) -> Result<RolloutRecord, String> {
    under_way(r)?;
    let mut record = r.clone();
    let next = r.step as usize + 1;
    if r.paused && !full && next < canary.steps.len() {
        record.paused = false;
        record.step = next as u32;
        record.percent = canary.steps[next];
        record.step_started_ms = Some(now);
    } else {
        record.paused = false;
        record.released = true;
        record.percent = 100;
    }
    Ok(record)
}

/// `jarfleet abort` of a canary or blue-green across the cluster: rolled back on every node.
pub fn abort(r: &RolloutRecord, now: Millis) -> Result<RolloutRecord, String> {
    under_way(r)?;
    let mut record = r.clone();
    record.state = RolloutState::RolledBack;
    record.percent = 0;
    record.paused = false;
    record.why = Some("aborted by the operator".into());
    record.ended_ms = Some(now);
    Ok(record)
}

/// A canary or blue-green whose new sets have not been released yet.
fn under_way(r: &RolloutRecord) -> Result<(), String> {
    if r.state != RolloutState::Rolling {
        return Err(format!(
            "the rollout of release {} across the cluster is {} already",
            r.release, r.state
        ));
    }
    if !r.leads_sets() {
        return Err(format!(
            "release {} goes out node by node: only a canary or blue-green across the cluster is promoted or aborted",
            r.release
        ));
    }
    if r.released {
        return Err(format!(
            "release {} was released on every node already: its old sets are going",
            r.release
        ));
    }
    Ok(())
}

/// One node's figures of a step, in words.
fn node_figures(f: &StepFigures) -> String {
    format!(
        "canary {} requests ({} failed), stable {} requests ({} failed)",
        f.canary.requests, f.canary.failures, f.stable.requests, f.stable.failures
    )
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
        RolloutRecord::new("r2", "r1", RolloutStrategy::Rolling, 1)
    }

    const BOUNDS: [u64; 4] = [1_000, 2_000, 5_000, 10_000];
    const MIB: u64 = 1 << 20;

    fn blue_green() -> RolloutRecord {
        RolloutRecord::new("r2", "r1", RolloutStrategy::BlueGreen, 1)
    }

    struct World {
        allocs: BTreeMap<u32, AllocRecord>,
        statuses: BTreeMap<(String, String, u32), StatusRecord>,
        up: BTreeSet<String>,
        canary: CanarySpec,
        stats: BTreeMap<String, SetStatsRecord>,
        room: BTreeMap<String, u64>,
    }

    impl World {
        /// Six slots, two on each of a, b and c, all ready on r1.
        fn new() -> World {
            let mut w = World {
                allocs: BTreeMap::new(),
                statuses: BTreeMap::new(),
                up: ["a", "b", "c"].iter().map(|s| s.to_string()).collect(),
                canary: CanarySpec {
                    steps: vec![10, 50],
                    step_time: std::time::Duration::from_secs(8),
                    ..CanarySpec::default()
                },
                stats: BTreeMap::new(),
                room: BTreeMap::new(),
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
                    canary: &self.canary,
                    stats: self.stats.iter().map(|(n, s)| (n.as_str(), s)).collect(),
                    bounds: &BOUNDS,
                    instance_memory: 512 * MIB,
                    max_surge: 1,
                    room: self.room.iter().map(|(n, m)| (n.as_str(), *m)).collect(),
                },
                now,
            )
        }

        /// Node `node`'s figures of step `step` at `percent`: canary and stable requests, and
        /// how many of the canary's failed (every response took about 1.5 ms).
        fn figures(&mut self, node: &str, step: u32, percent: u8, canary: (u64, u64), stable: u64) {
            let set = |requests: u64, failures: u64| crate::canary::SetFigures {
                requests,
                failures,
                buckets: vec![0, requests, 0, 0, 0],
            };
            self.stats.insert(
                node.into(),
                SetStatsRecord {
                    release: "r2".into(),
                    ready: true,
                    step,
                    percent,
                    figures: StepFigures {
                        canary: set(canary.0, canary.1),
                        canary_warm: set(canary.0, canary.1),
                        stable: set(stable, 0),
                    },
                    bounds: BOUNDS.to_vec(),
                },
            );
        }

        fn ready(&mut self, node: &str) {
            self.stats.insert(
                node.into(),
                SetStatsRecord {
                    release: "r2".into(),
                    ready: true,
                    step: 0,
                    percent: 0,
                    figures: StepFigures::default(),
                    bounds: BOUNDS.to_vec(),
                },
            );
        }
    }

    fn canary() -> RolloutRecord {
        RolloutRecord::new("r2", "r1", RolloutStrategy::Canary, 1)
    }

    /// A canary on every node (a, b, c) at its first step, 10 %, begun at 1 000.
    fn canary_at_step_one() -> RolloutRecord {
        let mut r = canary();
        r.cleared = vec!["a".into(), "b".into(), "c".into()];
        r.percent = 10;
        r.step_started_ms = Some(1_000);
        r
    }

    #[test]
    fn a_canary_clears_every_node_at_once_and_waits_for_every_new_set() {
        let mut w = World::new();
        let step = w.next(&canary(), 10).expect("every node at once");
        assert_eq!(step.record.cleared, ["a", "b", "c"]);
        assert_eq!(
            step.record.percent, 0,
            "no traffic before every set is ready"
        );
        let r = step.record;
        assert_eq!(w.next(&r, 11), None);
        w.ready("a");
        w.ready("b");
        assert_eq!(w.next(&r, 12), None, "c's new set is not ready");
        // Figures of another release do not count.
        w.ready("c");
        w.stats.get_mut("c").expect("c").release = "r9".into();
        assert_eq!(w.next(&r, 13), None);
        w.ready("c");
        let step = w.next(&r, 14).expect("the first step");
        assert_eq!((step.record.step, step.record.percent), (0, 10));
        assert_eq!(step.record.step_started_ms, Some(14));
        assert!(
            step.said.contains("10 % of every node's traffic"),
            "{}",
            step.said
        );
    }

    #[test]
    fn a_rolling_release_goes_in_place_on_a_node_without_room_for_its_surge() {
        let mut w = World::new();
        w.room = [("a", 600 * MIB), ("b", 100 * MIB), ("c", 512 * MIB)]
            .iter()
            .map(|(n, m)| (n.to_string(), *m))
            .collect();
        let step = w.next(&rolling(), 10).expect("a cleared");
        assert_eq!(step.record.cleared, ["a"]);
        assert!(step.record.in_place.is_empty(), "a has room for one more");
        let mut r = step.record;
        w.all_on("a", "r2");
        let step = w.next(&r, 20).expect("b cleared");
        assert_eq!(step.record.cleared, ["a", "b"]);
        assert_eq!(step.record.in_place, ["b"]);
        assert!(
            step.said
                .contains("in place: its 1 surge instance(s) need 512MiB and it has 100MiB free"),
            "{}",
            step.said
        );
        r = step.record;
        w.all_on("b", "r2");
        let step = w.next(&r, 30).expect("c cleared");
        assert_eq!(step.record.in_place, ["b"], "c has just the room for one");
    }

    #[test]
    fn a_canary_or_blue_green_without_room_for_a_second_set_starts_nowhere_and_says_which_node() {
        const GIB: u64 = 1 << 30;
        let mut w = World::new();
        // Two slots of 512 MiB each per node: a and c have room for two more, b for one.
        w.room = [("a", 2 * GIB), ("b", 700 * MIB), ("c", GIB)]
            .iter()
            .map(|(n, m)| (n.to_string(), *m))
            .collect();
        for r in [canary(), blue_green()] {
            let step = w.next(&r, 10).expect("decided");
            assert_eq!(step.record.state, RolloutState::RolledBack);
            assert!(step.record.cleared.is_empty(), "nothing was started");
            let why = step.record.why.expect("why");
            assert!(
                why.contains("node b needs 1GiB for 2 more instance(s) and has 700MiB free"),
                "{why}"
            );
            assert!(!why.contains("node a") && !why.contains("node c"), "{why}");
        }
        // With room on every node, every node starts at once.
        w.room.insert("b".into(), GIB);
        let step = w.next(&canary(), 10).expect("every node");
        assert_eq!(step.record.cleared, ["a", "b", "c"]);
    }

    #[test]
    fn a_canary_step_is_judged_on_the_sum_of_every_node_s_figures() {
        let mut w = World::new();
        let mut r = canary_at_step_one();
        // Each node alone has too few canary requests to judge (min_requests 20): together
        // they have enough.
        for n in ["a", "b", "c"] {
            w.figures(n, 0, 10, (8, 0), 80);
        }
        assert_eq!(w.next(&r, 8_999), None, "the step's time is not up");
        let step = w.next(&r, 9_000).expect("judged");
        assert_eq!((step.record.step, step.record.percent), (1, 50));
        let v = &step.record.verdicts[0];
        assert!(
            v.passed && v.figures.contains("canary 24 requests"),
            "{v:?}"
        );
        assert_eq!(v.nodes.len(), 3);
        // The last step passed: every node lets its old set go.
        r = step.record;
        for n in ["a", "b", "c"] {
            w.figures(n, 1, 50, (40, 0), 40);
        }
        let step = w.next(&r, 20_000).expect("passed");
        assert!(step.record.released);
        assert_eq!(step.record.state, RolloutState::Rolling);
        r = step.record;
        assert_eq!(w.next(&r, 20_001), None, "the slots are not on r2 yet");
        for n in ["a", "b", "c"] {
            w.all_on(n, "r2");
        }
        assert_eq!(
            w.next(&r, 20_002).expect("done").record.state,
            RolloutState::Done
        );
    }

    #[test]
    fn a_failing_canary_rolls_back_everywhere_and_a_late_node_is_waited_for_a_while() {
        let mut w = World::new();
        let r = canary_at_step_one();
        // 30 % of the canary's answers fail on a and b; c still sends figures of no step.
        w.figures("a", 0, 10, (50, 15), 500);
        w.figures("b", 0, 10, (50, 15), 500);
        w.ready("c");
        assert_eq!(
            w.next(&r, 9_000),
            None,
            "c's figures of the step are awaited"
        );
        let step = w
            .next(&r, 9_000 + LATE_FIGURES_MS)
            .expect("judged without c");
        assert_eq!(step.record.state, RolloutState::RolledBack);
        assert_eq!(step.record.percent, 0);
        let why = step.record.why.clone().unwrap_or_default();
        assert!(why.contains("canary step 1 (10 %) failed"), "{why}");
        assert!(!step.record.verdicts[0].passed);
        assert_eq!(
            step.record.verdicts[0].nodes.keys().collect::<Vec<_>>(),
            ["a", "b"]
        );
        for node in ["a", "b", "c"] {
            assert!(runs_previous(node, "r2", Some(&step.record)));
        }
        // Too few requests across the cluster: the step goes on.
        w.figures("a", 0, 10, (3, 0), 30);
        w.figures("b", 0, 10, (3, 0), 30);
        w.figures("c", 0, 10, (3, 0), 30);
        assert_eq!(w.next(&r, 9_000), None);
    }

    #[test]
    fn a_pause_step_waits_for_promote_and_abort_rolls_back_everywhere() {
        let mut w = World::new();
        w.canary.pause = vec![10];
        let mut r = canary_at_step_one();
        for n in ["a", "b", "c"] {
            w.figures(n, 0, 10, (8, 0), 80);
        }
        let step = w.next(&r, 9_000).expect("passed, paused");
        assert!(step.record.paused && step.record.percent == 10, "{step:?}");
        assert!(step.said.contains("jarfleet promote web"), "{}", step.said);
        r = step.record;
        // Still good while paused: nothing to write; turning bad: rolled back.
        assert_eq!(w.next(&r, 20_000), None);
        for n in ["a", "b", "c"] {
            w.figures(n, 0, 10, (50, 20), 500);
        }
        assert_eq!(
            w.next(&r, 21_000).map(|s| s.record.state),
            Some(RolloutState::RolledBack)
        );
        // Promote: the next step on every node; promote --full (or at the last step):
        // released.
        let next = promote(&r, &w.canary, false, 30_000).expect("promoted");
        assert_eq!((next.step, next.percent, next.paused), (1, 50, false));
        assert_eq!(next.step_started_ms, Some(30_000));
        let full = promote(&r, &w.canary, true, 30_000).expect("promoted");
        assert!(full.released && !full.paused);
        let aborted = abort(&r, 31_000).expect("aborted");
        assert_eq!(aborted.state, RolloutState::RolledBack);
        assert_eq!(aborted.why.as_deref(), Some("aborted by the operator"));
        // Nothing to promote or abort once it ended, was released, or goes node by node.
        assert!(promote(&aborted, &w.canary, false, 1).is_err());
        assert!(abort(&full, 1).is_err());
        assert!(abort(&rolling(), 1).is_err());
    }

    #[test]
    fn a_node_given_slots_mid_rollout_counts_once_they_run_the_release() {
        let mut w = World::new();
        let mut r = canary();
        r.cleared = vec!["a".into(), "b".into(), "c".into()];
        w.ready("a");
        w.ready("b");
        // c has no deployment of its own (its slots were placed after the rollout began) and
        // publishes no figures: it counts once its slots are ready on r2.
        assert_eq!(w.next(&r, 1), None);
        w.all_on("c", "r2");
        let step = w.next(&r, 2).expect("the first step");
        assert_eq!(step.record.percent, 10);
    }

    #[test]
    fn a_blue_green_switches_every_node_in_one_write_once_every_new_set_is_ready() {
        let mut w = World::new();
        let r = RolloutRecord::new("r2", "r1", RolloutStrategy::BlueGreen, 1);
        let r = w.next(&r, 1).expect("every node at once").record;
        assert_eq!(r.cleared.len(), 3);
        w.ready("a");
        w.ready("b");
        assert_eq!(w.next(&r, 2), None);
        w.ready("c");
        let step = w.next(&r, 3).expect("switched");
        assert!(step.record.released);
        assert!(step.said.contains("switches"), "{}", step.said);
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
