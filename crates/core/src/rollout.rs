//! The rolling-deploy planner: which instances to start and which to retire next, so that an
//! app moves from one release to another without ever having fewer than
//! `instances - max_unavailable` ready instances nor more than `instances + max_surge` running.
//! Pure: the daemon describes the members, the planner answers with steps.
//!
//! A rollback is the same walk with the target swapped: the planner does not care which
//! release is "old", only which one is the target.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// How the rollout may move (from `[apps.NAME.deploy]` and `[apps.NAME.health]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RolloutParams {
    /// Desired instance count.
    pub instances: u32,
    pub max_surge: u32,
    pub max_unavailable: u32,
    /// A new instance counts as healthy only after being ready this long.
    pub min_healthy: Duration,
    /// Blue-green: start the whole new set at once (`max_surge` aside), and retire the whole
    /// old set together once every new instance is healthy — one switch of the traffic.
    pub switch: bool,
    /// Blue-green: after the switch the old set stays running out of traffic (`standby`)
    /// instead of being retired, so that switching back needs no JVM start.
    pub keep_old: bool,
    /// Canary: the old set stays until the canary steps are through (`switch` starts the whole
    /// new set; the traffic split is the daemon's business).
    pub hold: bool,
    /// In place (a cluster node without room for a surge): never more processes than
    /// `instances`, those still stopping included — a replacement starts once the instance it
    /// replaces has gone (and takes its slot number when it is preferred).
    pub in_place: bool,
}

/// What the planner needs to know about one instance of the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub slot: u32,
    /// Runs the target release.
    pub target: bool,
    pub state: MemberState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Not yet spawned, or spawned and not ready yet.
    Starting,
    /// Ready (in the load balancer) since this time.
    Ready { since: Millis },
    /// Ready, but out of the load balancer: a blue-green set kept warm after a switch.
    Standby,
    /// Crashed, not ready by `start_timeout`, or unhealthy: it will not become healthy soon.
    Failed,
    /// Being stopped (retired) or stopped.
    Leaving,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Steps {
    /// Slots in which to start an instance of the target release.
    pub start: Vec<u32>,
    /// Slots whose instance to drain and stop.
    pub retire: Vec<u32>,
    /// Slots whose (ready) instance leaves the load balancer but keeps running.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub standby: Vec<u32>,
    /// Slots whose warm standby instance of the target release goes back into the load balancer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activate: Vec<u32>,
    pub outcome: Option<Outcome>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every instance runs the target release and is healthy; nothing else runs.
    Done,
    /// A target instance failed; `slot` says which and `why` how.
    Failed { slot: u32, why: String },
}

/// The next steps of a rollout. Call again whenever a member changes; steps already under way
/// show up as members (`Starting`, `Leaving`), so the answer never repeats itself.
pub fn next_steps(params: &RolloutParams, members: &[Member], now: Millis) -> Steps {
    next_steps_in(params, members, &[], now)
}

/// [`next_steps`], new instances taking the free slot numbers of `preferred` first (a cluster
/// node's assigned slots: an instance replaced in place keeps its number), then the lowest
/// free ones.
pub fn next_steps_in(
    params: &RolloutParams,
    members: &[Member],
    preferred: &[u32],
    now: Millis,
) -> Steps {
    let n = params.instances;
    let min_healthy = params.min_healthy.as_millis() as Millis;
    let mut steps = Steps::default();

    if let Some(failed) = members
        .iter()
        .find(|m| m.target && m.state == MemberState::Failed)
    {
        steps.outcome = Some(Outcome::Failed {
            slot: failed.slot,
            why: "a new instance failed".into(),
        });
        return steps;
    }

    let healthy =
        |m: &Member| matches!(m.state, MemberState::Ready { since } if now >= since + min_healthy);
    let is_ready = |m: &Member| matches!(m.state, MemberState::Ready { .. });

    let gone = |m: &Member| matches!(m.state, MemberState::Leaving | MemberState::Standby);
    let target_alive: Vec<&Member> = members.iter().filter(|m| m.target && !gone(m)).collect();
    // A warm standby set of the target (blue-green, switching back): it goes back into traffic
    // instead of new instances being started.
    let mut standby_targets: Vec<u32> = members
        .iter()
        .filter(|m| m.target && m.state == MemberState::Standby)
        .map(|m| m.slot)
        .collect();
    standby_targets.sort_unstable();
    let wanted = n.saturating_sub(target_alive.len() as u32) as usize;
    if wanted > 0 && !standby_targets.is_empty() {
        steps.activate = standby_targets.into_iter().take(wanted).collect();
        return steps;
    }
    let target_healthy = target_alive.iter().filter(|m| healthy(m)).count() as u32;
    let old_alive: Vec<&Member> = members.iter().filter(|m| !m.target && !gone(m)).collect();
    let old_ready = old_alive.iter().filter(|m| is_ready(m)).count() as u32;

    // Old instances that serve nothing go at once: they hold no capacity.
    let mut retire: Vec<u32> = old_alive
        .iter()
        .filter(|m| !is_ready(m))
        .map(|m| m.slot)
        .collect();

    // Blue-green: the old set goes all at once, and only when the new set is complete.
    if params.switch && !params.hold && target_healthy >= n {
        let ready_old = old_alive.iter().filter(|m| is_ready(m)).map(|m| m.slot);
        if params.keep_old {
            steps.standby = ready_old.collect();
            steps.standby.sort_unstable();
        } else {
            retire.extend(ready_old);
        }
    }
    // Blue-green and canary keep the old set whole until the switch — but no more of it than
    // `instances`: a surplus (left by an earlier deployment that failed, or old only because a
    // `restart` came since) would hold the new set under the `2 × instances` ceiling for good.
    // The newest slots go first, as in a scale down.
    if params.switch {
        let mut old_ready: Vec<u32> = old_alive
            .iter()
            .filter(|m| is_ready(m) && !retire.contains(&m.slot))
            .map(|m| m.slot)
            .collect();
        old_ready.sort_unstable();
        let surplus = old_ready.len().saturating_sub(n as usize);
        retire.extend(old_ready.iter().rev().take(surplus));
    }
    // Ready old instances go one at a time while the ready count stays above the floor. Only
    // target instances healthy for `min_healthy` count as replacements.
    let floor = if params.switch {
        u32::MAX
    } else {
        n.saturating_sub(params.max_unavailable)
    };
    let mut available = old_ready + target_healthy;
    let mut old_ready_slots: Vec<u32> = old_alive
        .iter()
        .filter(|m| is_ready(m))
        .map(|m| m.slot)
        .collect();
    old_ready_slots.sort_unstable();
    for slot in old_ready_slots {
        if available > floor {
            retire.push(slot);
            available -= 1;
        } else {
            break;
        }
    }

    // Start target instances while under `n` of them and under the surge ceiling.
    let running = if params.in_place {
        // Every process still there holds its memory, the ones stopping included.
        let stopping = members
            .iter()
            .filter(|m| !m.target && m.state == MemberState::Leaving)
            .count();
        (old_alive.len() + stopping + target_alive.len()) as u32
    } else {
        (old_alive.len() - retire.len().min(old_alive.len())) as u32 + target_alive.len() as u32
    };
    let ceiling = if params.switch {
        2 * n
    } else {
        n + params.max_surge
    };
    let mut to_start = n
        .saturating_sub(target_alive.len() as u32)
        .min(ceiling.saturating_sub(running));
    let taken: Vec<u32> = members.iter().map(|m| m.slot).collect();
    let mut free_preferred: Vec<u32> = preferred
        .iter()
        .copied()
        .filter(|s| !taken.contains(s))
        .collect();
    free_preferred.sort_unstable();
    free_preferred.dedup();
    for slot in free_preferred {
        if to_start == 0 {
            break;
        }
        steps.start.push(slot);
        to_start -= 1;
    }
    let mut slot = 0;
    while to_start > 0 {
        if !taken.contains(&slot) && !steps.start.contains(&slot) {
            steps.start.push(slot);
            to_start -= 1;
        }
        slot += 1;
    }

    // More target instances than wanted (one replaced by its supervisor while the deployment
    // also started one; a daemon restart in the middle of a step): once the old set is gone, the
    // surplus goes before the end — the least useful first: not healthy before healthy, then
    // the newest slots.
    if old_alive.is_empty() && target_alive.len() > n as usize {
        let mut surplus = target_alive.clone();
        surplus.sort_by_key(|m| (healthy(m), std::cmp::Reverse(m.slot)));
        let extra = target_alive.len() - n as usize;
        retire.extend(surplus.iter().take(extra).map(|m| m.slot));
    }
    retire.sort_unstable();
    steps.retire = retire;
    if steps.start.is_empty()
        && steps.retire.is_empty()
        && steps.standby.is_empty()
        && old_alive.is_empty()
        && target_healthy >= n
        && !members.iter().any(|m| m.state == MemberState::Leaving)
    {
        steps.outcome = Some(Outcome::Done);
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN_HEALTHY: Millis = 10_000;

    fn params(instances: u32, max_surge: u32, max_unavailable: u32) -> RolloutParams {
        RolloutParams {
            instances,
            max_surge,
            max_unavailable,
            min_healthy: Duration::from_millis(MIN_HEALTHY),
            switch: false,
            keep_old: false,
            hold: false,
            in_place: false,
        }
    }

    #[test]
    fn a_surplus_of_target_instances_is_retired_before_the_end() {
        let p = params(3, 1, 0);
        let ready = |slot| m(slot, true, MemberState::Ready { since: 0 });
        // Found in simulation: a rollback ended with four instances of three wanted.
        let s = next_steps(&p, &[ready(0), ready(1), ready(2), ready(6)], 100_000);
        assert_eq!((s.retire, s.outcome), (vec![6], None));
        // Not healthy before healthy, whatever the slot.
        let starting = m(1, true, MemberState::Starting);
        let s = next_steps(&p, &[ready(0), starting, ready(2), ready(3)], 100_000);
        assert_eq!((s.retire, s.start), (vec![1], vec![]));
        // While old instances remain, nothing of the target goes.
        let s = next_steps(
            &p,
            &[
                ready(0),
                ready(1),
                ready(2),
                ready(3),
                m(4, false, MemberState::Ready { since: 0 }),
            ],
            100_000,
        );
        assert_eq!(s.retire, vec![4]);
    }

    #[test]
    fn a_switch_retires_old_instances_beyond_instances_so_the_new_set_can_start() {
        // Found in simulation (seed 762): a canary rolling back to r1 had five ready instances
        // counted as old (two of r1 from before a `restart`, three of r2) and three of r1 on
        // the new restart generation; eight running of a ceiling of eight, so the fourth target
        // never started and the old set never went: rolling back for good.
        let p = RolloutParams {
            switch: true,
            ..params(4, 1, 0)
        };
        let old = |slot| m(slot, false, MemberState::Ready { since: 0 });
        let new = |slot| m(slot, true, MemberState::Ready { since: 0 });
        let members = [
            new(0),
            new(1),
            old(2),
            old(3),
            old(4),
            old(5),
            old(7),
            new(8),
        ];
        let s = next_steps(&p, &members, 100_000);
        assert_eq!((s.retire, s.start), (vec![7], vec![6]));
        // At most `instances` old ones: the whole old set stays until the switch.
        let members = [old(0), old(1), old(2), old(3), new(4), new(5)];
        let s = next_steps(&p, &members, 100_000);
        assert_eq!((s.retire, s.start), (vec![], vec![6, 7]));
    }

    #[test]
    fn blue_green_keeps_the_old_set_warm_and_switches_back_to_it() {
        let p = RolloutParams {
            switch: true,
            keep_old: true,
            ..params(2, 1, 0)
        };
        let ready = |slot, target| m(slot, target, MemberState::Ready { since: 0 });
        // The new set is healthy: the old set goes to standby, not away.
        let s = next_steps(
            &p,
            &[
                ready(0, false),
                ready(1, false),
                ready(2, true),
                ready(3, true),
            ],
            100_000,
        );
        assert_eq!((s.standby, s.retire), (vec![0, 1], vec![]));
        assert_eq!(s.outcome, None);
        let after = [
            m(0, false, MemberState::Standby),
            m(1, false, MemberState::Standby),
            ready(2, true),
            ready(3, true),
        ];
        assert_eq!(next_steps(&p, &after, 100_000).outcome, Some(Outcome::Done));
        // Switching back: the standby set is the target now; it is activated, nothing starts.
        let back = [
            m(0, true, MemberState::Standby),
            m(1, true, MemberState::Standby),
            ready(2, false),
            ready(3, false),
        ];
        let s = next_steps(&p, &back, 100_000);
        assert_eq!((s.activate, s.start), (vec![0, 1], vec![]));
        // Once active, the other set goes to standby in one step.
        let s = next_steps(
            &p,
            &[
                ready(0, true),
                ready(1, true),
                ready(2, false),
                ready(3, false),
            ],
            100_000,
        );
        assert_eq!(s.standby, vec![2, 3]);
    }

    #[test]
    fn blue_green_starts_the_whole_new_set_then_switches_at_once() {
        let p = RolloutParams {
            switch: true,
            ..params(3, 1, 0)
        };
        let old = |slot| m(slot, false, MemberState::Ready { since: 0 });
        // The whole new set starts at once, surge or not.
        let s = next_steps(&p, &[old(0), old(1), old(2)], 100_000);
        assert_eq!((s.start, s.retire), (vec![3, 4, 5], vec![]));
        // Two of three new ones healthy: nobody old goes yet.
        let new_ready = |slot, since| m(slot, true, MemberState::Ready { since });
        let members = [
            old(0),
            old(1),
            old(2),
            new_ready(3, 0),
            new_ready(4, 0),
            m(5, true, MemberState::Starting),
        ];
        let s = next_steps(&p, &members, 100_000);
        assert_eq!((s.start.len(), s.retire.len()), (0, 0));
        // All three healthy: the old set goes in one step.
        let members = [
            old(0),
            old(1),
            old(2),
            new_ready(3, 0),
            new_ready(4, 0),
            new_ready(5, 0),
        ];
        let s = next_steps(&p, &members, 100_000);
        assert_eq!(s.retire, vec![0, 1, 2]);
        assert!(s.start.is_empty());
        // A new one failing fails the deployment before any switch.
        let members = [old(0), new_ready(3, 0), m(4, true, MemberState::Failed)];
        assert!(matches!(
            next_steps(&p, &members, 100_000).outcome,
            Some(Outcome::Failed { slot: 4, .. })
        ));
    }

    #[test]
    fn in_place_a_replacement_starts_once_the_old_one_has_gone_and_takes_its_number() {
        // Slots 2 and 3 (a cluster node's), replaced in place: no surge, one unavailable.
        let p = RolloutParams {
            in_place: true,
            ..params(2, 0, 1)
        };
        let old = |slot| m(slot, false, MemberState::Ready { since: 0 });
        let leaving = |slot| m(slot, false, MemberState::Leaving);
        let steps = next_steps_in(&p, &[old(2), old(3)], &[2, 3], 10_000);
        assert_eq!(
            (steps.start.clone(), steps.retire.clone()),
            (vec![], vec![2])
        );
        let steps = next_steps_in(&p, &[leaving(2), old(3)], &[2, 3], 10_000);
        assert_eq!(steps.start, Vec::<u32>::new(), "2 still holds its memory");
        // 2 gone: its replacement takes 2 again, not the lowest free slot.
        let steps = next_steps_in(&p, &[old(3)], &[2, 3], 10_000);
        assert_eq!(steps.start, vec![2]);
        // Not in place, the replacement starts at once, in the lowest free slot.
        let steps = next_steps_in(&params(2, 0, 1), &[leaving(2), old(3)], &[2, 3], 10_000);
        assert_eq!(steps.start, vec![0]);
        // With none of them free, the lowest free ones, never one twice.
        let steps = next_steps_in(&params(3, 2, 0), &[old(2), old(3), old(4)], &[2, 3], 10_000);
        assert_eq!(steps.start, vec![0, 1]);
    }

    fn m(slot: u32, target: bool, state: MemberState) -> Member {
        Member {
            slot,
            target,
            state,
        }
    }

    fn ready(since: Millis) -> MemberState {
        MemberState::Ready { since }
    }

    /// Drives a whole rollout: every started instance becomes ready at once and healthy after
    /// `min_healthy`; every retired one leaves at once. Checks the capacity bounds at each step.
    fn simulate(p: &RolloutParams, old: u32) -> (Vec<Steps>, Vec<Member>) {
        let mut members: Vec<Member> = (0..old).map(|s| m(s, false, ready(0))).collect();
        let mut now = 100_000;
        let mut log = Vec::new();
        for _ in 0..100 {
            let steps = next_steps(p, &members, now);
            log.push(steps.clone());
            if steps.outcome.is_some() {
                return (log, members);
            }
            for slot in &steps.retire {
                members.retain(|x| x.slot != *slot);
            }
            for slot in &steps.start {
                members.push(m(*slot, true, ready(now)));
            }
            let running = members.len() as u32;
            assert!(
                running <= p.instances + p.max_surge,
                "over the surge ceiling: {members:?}"
            );
            let serving = members
                .iter()
                .filter(|x| {
                    !x.target || matches!(x.state, MemberState::Ready { since } if now >= since)
                })
                .count() as u32;
            assert!(
                serving >= p.instances - p.max_unavailable,
                "under the floor: {members:?}"
            );
            now += MIN_HEALTHY;
        }
        panic!("rollout did not finish: {log:?}");
    }

    #[test]
    fn default_rolling_replaces_one_at_a_time_with_one_surge() {
        let p = params(3, 1, 0);
        let (log, members) = simulate(&p, 3);
        let shape: Vec<(Vec<u32>, Vec<u32>)> = log
            .iter()
            .map(|s| (s.start.clone(), s.retire.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                (vec![3], vec![]),  // surge: a 4th instance in a free slot
                (vec![4], vec![0]), // healthy → old 0 goes (its slot is busy until it has left)
                (vec![0], vec![1]), // … and is reused once free
                (vec![], vec![2]),
                (vec![], vec![]),
            ]
        );
        assert_eq!(
            log.last().and_then(|s| s.outcome.clone()),
            Some(Outcome::Done)
        );
        let mut slots: Vec<u32> = members.iter().map(|x| x.slot).collect();
        slots.sort_unstable();
        assert_eq!(slots, vec![0, 3, 4]);
        assert!(members.iter().all(|x| x.target));
    }

    #[test]
    fn bounds_hold_for_every_combination() {
        for n in 1..=5 {
            for surge in 0..=2 {
                for unavailable in 0..=2 {
                    if surge + unavailable == 0 || unavailable > n {
                        continue;
                    }
                    let (log, members) = simulate(&params(n, surge, unavailable), n);
                    assert_eq!(
                        log.last().and_then(|s| s.outcome.clone()),
                        Some(Outcome::Done),
                        "n={n} surge={surge} unavailable={unavailable}"
                    );
                    assert_eq!(members.len() as u32, n);
                }
            }
        }
    }

    #[test]
    fn an_old_instance_is_not_retired_before_min_healthy() {
        let p = params(2, 1, 0);
        let members = [
            m(0, false, ready(0)),
            m(1, false, ready(0)),
            m(2, true, ready(50_000)),
        ];
        let early = next_steps(&p, &members, 59_999);
        assert!(
            early.retire.is_empty() && early.start.is_empty(),
            "{early:?}"
        );
        let later = next_steps(&p, &members, 60_000);
        assert_eq!(later.retire, vec![0]);
    }

    #[test]
    fn old_instances_that_serve_nothing_go_at_once() {
        let p = params(2, 1, 0);
        let members = [m(0, false, MemberState::Failed), m(1, false, ready(0))];
        let steps = next_steps(&p, &members, 1_000);
        assert_eq!(steps.retire, vec![0]);
        // the freed capacity is used: two new instances may start (2 running ≤ 3)
        assert_eq!(steps.start, vec![2, 3]);
    }

    #[test]
    fn a_failed_new_instance_fails_the_rollout() {
        let p = params(3, 1, 0);
        let members = [
            m(0, false, ready(0)),
            m(1, false, ready(0)),
            m(2, false, ready(0)),
            m(3, true, MemberState::Failed),
        ];
        let steps = next_steps(&p, &members, 1_000);
        assert_eq!(
            steps.outcome,
            Some(Outcome::Failed {
                slot: 3,
                why: "a new instance failed".into()
            })
        );
        assert!(steps.start.is_empty() && steps.retire.is_empty());
    }

    #[test]
    fn a_rollback_is_the_same_walk_towards_the_old_release() {
        // v2 was half rolled out (slot 3 healthy, old slot 0 retired) when slot 0's v2 failed:
        // the target becomes v1 again, so v1 members are `target` now.
        let p = params(3, 1, 0);
        let members = [
            m(1, true, ready(0)),
            m(2, true, ready(0)),
            m(3, false, ready(10_000)),
            m(0, false, MemberState::Failed),
        ];
        let steps = next_steps(&p, &members, 50_000);
        assert_eq!(steps.retire, vec![0], "the failed v2 goes at once");
        assert_eq!(steps.start, vec![4], "a v1 instance comes back");
        assert_eq!(steps.outcome, None);
        let members = [
            m(1, true, ready(0)),
            m(2, true, ready(0)),
            m(3, false, ready(10_000)),
            m(4, true, ready(50_000)),
        ];
        assert_eq!(next_steps(&p, &members, 60_000).retire, vec![3]);
        let members = [
            m(1, true, ready(0)),
            m(2, true, ready(0)),
            m(4, true, ready(50_000)),
        ];
        assert_eq!(
            next_steps(&p, &members, 60_000).outcome,
            Some(Outcome::Done)
        );
    }

    #[test]
    fn done_waits_for_leaving_instances() {
        let p = params(1, 1, 0);
        let members = [m(0, false, MemberState::Leaving), m(1, true, ready(0))];
        assert_eq!(next_steps(&p, &members, 50_000).outcome, None);
    }
}
