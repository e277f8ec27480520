//! Table tests of the deployment machine: every transition, with time as a parameter.

use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::rollout::{Member, MemberState, RolloutParams};

const T0: Millis = 1_700_000_000_000;
const MIN_HEALTHY: Millis = 2_000;

fn d(kind: Kind) -> Deployment {
    let mut d = Deployment::new("web", "old", "new", kind, "test", T0);
    d.id = 7;
    d
}

fn restart() -> Deployment {
    let mut d = Deployment::new("web", "old", "old", Kind::Rolling, "restart", T0);
    d.id = 7;
    d
}

fn params(n: u32, surge: u32, unavailable: u32) -> RolloutParams {
    RolloutParams {
        instances: n,
        max_surge: surge,
        max_unavailable: unavailable,
        min_healthy: Duration::from_millis(MIN_HEALTHY),
        switch: false,
        keep_old: false,
        hold: false,
        in_place: false,
    }
}

/// Members from a compact picture, "new" meaning on the deployment's target release (the old
/// one while it rolls back): `o` old ready, `n` new healthy, `y` new ready but not for
/// `min_healthy` yet, `s` new starting, `f` new failed, `l` old leaving, `w` new warm standby,
/// `b` old standby; slot = position.
fn members(picture: &str) -> Vec<Member> {
    picture
        .chars()
        .enumerate()
        .map(|(slot, c)| {
            let (target, state) = match c {
                'o' => (false, MemberState::Ready { since: 0 }),
                'n' => (true, MemberState::Ready { since: 0 }),
                'y' => (true, MemberState::Ready { since: T0 + 9_500 }),
                's' => (true, MemberState::Starting),
                'f' => (true, MemberState::Failed),
                'l' => (false, MemberState::Leaving),
                'w' => (true, MemberState::Standby),
                'b' => (false, MemberState::Standby),
                other => panic!("no member {other}"),
            };
            Member {
                slot: slot as u32,
                target,
                state,
            }
        })
        .collect()
}

struct World {
    members: Vec<Member>,
    params: RolloutParams,
    failures: BTreeMap<u32, String>,
    counters: Counters,
    steps: Vec<u8>,
    auto_rollback: bool,
}

impl World {
    fn new(picture: &str, params: RolloutParams) -> World {
        World {
            members: members(picture),
            params,
            failures: BTreeMap::new(),
            counters: Counters::default(),
            steps: vec![10, 50, 100],
            auto_rollback: true,
        }
    }

    fn drive(&self, d: &mut Deployment, now: Millis) -> Vec<Effect> {
        let plan = Plan {
            params: self.params,
            members: &self.members,
            keep_old_ms: 30_000,
            auto_rollback: self.auto_rollback,
            canary_steps: &self.steps,
            failures: &self.failures,
            counters: &self.counters,
            preferred_slots: &[],
        };
        d.step(Input::Plan(&plan), now)
    }
}

/// The effects in short: `+3` start, `-1` retire, `~2` standby, `^2` activate, and the rest
/// by name.
fn short(fx: &[Effect]) -> String {
    fx.iter()
        .map(|e| match e {
            Effect::Start { slot, .. } => format!("+{slot}"),
            Effect::Retire { slot } => format!("-{slot}"),
            Effect::Standby { slot, .. } => format!("~{slot}"),
            Effect::Activate { slot } => format!("^{slot}"),
            Effect::PersistInstances => "persist".into(),
            Effect::SyncLb => "lb".into(),
            Effect::Record => "record".into(),
            Effect::Emit { kind, .. } => format!("emit:{}", kind.as_str()),
            Effect::Observe => "observe".into(),
            Effect::Drive => "drive".into(),
            Effect::Refresh { slot, generation } => format!("refresh:{slot}@{generation}"),
            Effect::MoveToRelease { slot, .. } => format!("move:{slot}"),
            Effect::Ended { outcome, .. } => format!("end:{}", outcome.as_str()),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn rolling_respects_every_surge_and_unavailable_bound() {
    let now = T0 + 10_000;
    // (instances, max_surge, max_unavailable, members, effects)
    let table: &[(u32, u32, u32, &str, &str)] = &[
        // surge 1, unavailable 0: one new at a time, no old goes before a new one is healthy.
        (3, 1, 0, "ooo", "+3 record"),
        (3, 1, 0, "ooos", ""),
        (3, 1, 0, "oooy", ""),
        (3, 1, 0, "ooon", "+4 -0 record"),
        (3, 1, 0, "lnon", "+4 record"),
        (3, 1, 0, "lnonn", "-2 record"),
        // surge 0, unavailable 1: an old one goes, and its replacement starts in its stead.
        (3, 0, 1, "ooo", "+3 -0 record"),
        (3, 0, 1, "loos", ""),
        (3, 0, 1, "noo", "+3 -1 record"),
        // surge 2, unavailable 0: two new at once.
        (3, 2, 0, "ooo", "+3 +4 record"),
        (3, 2, 0, "ooonn", "+5 -0 -1 record"),
        // surge 2, unavailable 2: two old go and two new start at once.
        (3, 2, 2, "ooo", "+3 +4 +5 -0 -1 record"),
        // surge 0, unavailable 0: nothing can move (the spec loader refuses it; the planner
        // stands still rather than break a bound).
        (3, 0, 0, "ooo", ""),
        // surge 1, unavailable 2 on one instance: never below zero.
        (1, 1, 2, "o", "+1 -0 record"),
        // a new instance still starting counts towards the surge.
        (2, 1, 0, "os", "+2 record"),
        (2, 1, 0, "ossl", ""),
    ];
    for (n, surge, unavailable, picture, want) in table {
        let mut dep = d(Kind::Rolling);
        let w = World::new(picture, params(*n, *surge, *unavailable));
        let got = short(&w.drive(&mut dep, now));
        assert_eq!(
            &got, want,
            "n={n} surge={surge} unavailable={unavailable} {picture}"
        );
        assert_eq!(dep.phase, Phase::Running);
    }
}

#[test]
fn rolling_records_each_move_as_a_step() {
    let mut dep = d(Kind::Rolling);
    let w = World::new("ooon", params(3, 1, 0));
    w.drive(&mut dep, T0 + 10_000);
    let messages: Vec<&str> = dep.steps.iter().map(|s| s.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "deploying old → new (test)",
            "start web/4 on new",
            "retire web/0"
        ]
    );
}

#[test]
fn the_end_of_the_walk_is_its_outcome() {
    let now = T0 + 10_000;
    // (phase before, members, outcome, release the app runs after)
    let table: &[(Phase, &str, Outcome, &str)] = &[
        (Phase::Running, "nnn", Outcome::Succeeded, "new"),
        (Phase::RollingBack, "nnn", Outcome::RolledBack, "old"),
    ];
    for (phase, picture, outcome, current) in table {
        let mut dep = d(Kind::Rolling);
        dep.phase = *phase;
        let w = World::new(picture, params(3, 1, 0));
        let fx = w.drive(&mut dep, now);
        assert_eq!(
            fx,
            [Effect::Ended {
                outcome: *outcome,
                current: current.to_string(),
                message: format!("deployment #7 {}: web runs {current}", outcome.as_str()),
            }]
        );
        assert_eq!(dep.phase, Phase::Ended(*outcome));
        assert_eq!(dep.ended_at, Some(now));
        assert_eq!(
            dep.steps.last().map(|s| s.message.as_str()),
            Some(format!("{} after 10.0 s", outcome.as_str()).as_str())
        );
        // An ended deployment takes no more input.
        assert!(w.drive(&mut dep, now + 1).is_empty());
    }
}

#[test]
fn a_failed_new_instance_rolls_back_or_fails() {
    let now = T0 + 10_000;
    // (deployment, auto_rollback, phase after, effects)
    let cases: Vec<(Deployment, bool, Phase, &str)> = vec![
        (
            d(Kind::Rolling),
            true,
            Phase::RollingBack,
            "record emit:deploy.rolling-back",
        ),
        (
            d(Kind::Rolling),
            false,
            Phase::Ended(Outcome::Failed),
            "end:failed",
        ),
        (restart(), true, Phase::Ended(Outcome::Failed), "end:failed"),
        (
            Deployment {
                phase: Phase::RollingBack,
                reason: Some("first".into()),
                ..d(Kind::BlueGreen)
            },
            true,
            Phase::Ended(Outcome::Failed),
            "end:failed",
        ),
    ];
    for (mut dep, auto_rollback, phase, want) in cases {
        let before = dep.phase;
        let mut w = World::new("oof", params(3, 1, 0));
        w.auto_rollback = auto_rollback;
        w.failures.insert(2, "web/2 crashed".into());
        let fx = w.drive(&mut dep, now);
        assert_eq!(short(&fx), want, "{before:?} auto_rollback={auto_rollback}");
        assert_eq!(dep.phase, phase);
        let reason = dep.reason.clone().unwrap_or_default();
        assert!(reason.ends_with("web/2 crashed"), "{reason}");
        if before == Phase::RollingBack {
            assert_eq!(reason, "first; then web/2 crashed");
        }
        if let Some(Effect::Ended { current, .. }) = fx.last() {
            assert_eq!(
                current, "old",
                "a failed deployment leaves the app where it was"
            );
        }
    }
    // Without words for the failure, the slot is named.
    let mut dep = d(Kind::Rolling);
    World::new("oof", params(3, 1, 0)).drive(&mut dep, now);
    assert_eq!(dep.reason.as_deref(), Some("web/2 failed"));
}

#[test]
fn blue_green_switches_once_and_keeps_the_old_set_warm() {
    let now = T0 + 10_000;
    let bg = |keep_old| RolloutParams {
        switch: true,
        keep_old,
        ..params(2, 1, 0)
    };
    // (params, members, effects)
    let table: &[(RolloutParams, &str, &str)] = &[
        (bg(false), "oo", "+2 +3 record"),
        (bg(false), "oons", ""),
        (bg(false), "oonn", "-0 -1 record"),
        (bg(true), "oonn", "~0 ~1 persist lb record"),
        (bg(true), "bbnn", "end:succeeded"),
        // Switching back (a rollback) to the warm old set: into the balancer, no JVM start.
        (bg(true), "wwoo", "^0 ^1 persist lb record"),
    ];
    for (p, picture, want) in table {
        let mut dep = d(Kind::BlueGreen);
        let fx = World::new(picture, *p).drive(&mut dep, now);
        assert_eq!(&short(&fx), want, "{p:?} {picture}");
    }
    let mut dep = d(Kind::BlueGreen);
    let fx = World::new("oonn", bg(true)).drive(&mut dep, now);
    assert!(fx.contains(&Effect::Standby {
        slot: 0,
        until: now + 30_000
    }));
    assert!(
        dep.steps
            .iter()
            .any(|s| s.message == "web/0 out of traffic, kept warm for 30 s")
    );
}

fn canary_params() -> RolloutParams {
    RolloutParams {
        switch: true,
        ..params(2, 1, 0)
    }
}

fn spec(pause: &[u8]) -> CanarySpec {
    CanarySpec {
        steps: vec![10, 50, 100],
        step_time: Duration::from_secs(60),
        pause: pause.to_vec(),
        ..CanarySpec::default()
    }
}

fn figures(requests: u64, failures: u64) -> SetFigures {
    SetFigures {
        requests,
        failures,
        buckets: vec![requests, 0],
    }
}

fn counters(requests: u64, failures: u64) -> Counters {
    Counters {
        sets: (figures(requests, failures), SetFigures::default()),
        backends: vec![("web/2".into(), figures(requests, failures))],
    }
}

/// A canary at its first step (10 %), begun at `T0 + 10_000`.
fn canary_at_step_one() -> Deployment {
    let mut dep = d(Kind::Canary);
    World::new("oonn", canary_params()).drive(&mut dep, T0 + 10_000);
    dep
}

/// A canary paused at its first step, waiting for `promote`.
fn paused_canary() -> Deployment {
    let mut dep = canary_at_step_one();
    let input = Input::CanaryJudge {
        counters: &counters(100, 0),
        spec: &spec(&[10]),
        bounds: &[1_000],
    };
    dep.step(input, T0 + 70_000);
    assert!(dep.canary.as_ref().is_some_and(|r| r.paused));
    dep
}

/// A canary whose steps are all through (promoted): the old set goes.
fn passed_canary() -> Deployment {
    let mut dep = canary_at_step_one();
    let input = Input::Promote {
        full: true,
        counters: &counters(100, 0),
        spec: &spec(&[]),
    };
    dep.step(input, T0 + 20_000);
    assert!(!dep.canary_holds());
    dep
}

#[test]
fn a_canary_holds_the_old_set_and_begins_when_the_new_set_is_healthy() {
    let mut dep = d(Kind::Canary);
    // Not all healthy yet: the set starts, no step yet.
    let fx = World::new("oo", canary_params()).drive(&mut dep, T0);
    assert_eq!(short(&fx), "+2 +3 record");
    let fx = World::new("oony", canary_params()).drive(&mut dep, T0 + 1);
    assert_eq!(short(&fx), "");
    assert_eq!(dep.canary.as_ref().map(|c| c.percent), Some(0));
    // All healthy: step 1, and the old set stays (held).
    let mut w = World::new("oonn", canary_params());
    w.counters = counters(5, 0);
    let fx = w.drive(&mut dep, T0 + 10_000);
    assert_eq!(short(&fx), "lb observe record");
    let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
    assert_eq!(
        (run.step, run.percent, run.started),
        (0, 10, Some(T0 + 10_000))
    );
    assert_eq!(run.baseline.0.requests, 5);
    assert_eq!(
        dep.steps.last().map(|s| s.message.as_str()),
        Some("canary step 1 of 3: 10 % of the traffic")
    );
    assert_eq!(dep.progress.map(|p| p.percent), Some(10));
    // Driven again: nothing more.
    assert_eq!(short(&w.drive(&mut dep, T0 + 20_000)), "");
}

#[test]
fn canary_steps_are_judged_when_due() {
    let begun = T0 + 10_000;
    let due = begun + 60_000;
    // (counters at judgement, pause steps, effects, step after, percent after, paused, phase)
    type Case<'a> = (Counters, &'a [u8], &'a str, usize, u8, bool, Phase);
    let table: &[Case] = &[
        // Too few requests: waits a little.
        (counters(5, 0), &[], "", 0, 10, false, Phase::Running),
        // Good: the next step.
        (
            counters(100, 0),
            &[],
            "record record observe lb",
            1,
            50,
            false,
            Phase::Running,
        ),
        // Good at a pause step: waits for the operator.
        (
            counters(100, 0),
            &[10],
            "record observe record emit:deploy.paused",
            0,
            10,
            true,
            Phase::Running,
        ),
        // Bad: rolls back, the share drops to 0.
        (
            counters(100, 60),
            &[],
            "record emit:deploy.rolling-back lb drive",
            0,
            0,
            false,
            Phase::RollingBack,
        ),
    ];
    for (c, pause, want, step, percent, paused, phase) in table {
        let mut dep = canary_at_step_one();
        let s = spec(pause);
        // Not due yet: nothing.
        let early = Input::CanaryJudge {
            counters: c,
            spec: &s,
            bounds: &[1_000],
        };
        assert!(dep.step(early, due - 1).is_empty());
        let fx = dep.step(
            Input::CanaryJudge {
                counters: c,
                spec: &s,
                bounds: &[1_000],
            },
            due,
        );
        assert_eq!(&short(&fx), want, "{c:?} pause={pause:?}");
        let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
        assert_eq!(
            (run.step, run.percent, run.paused),
            (*step, *percent, *paused)
        );
        assert_eq!(dep.phase, *phase);
        if *percent == 10 && !paused {
            // Waiting: judged again 500 ms later.
            assert_eq!(run.started, Some(begun + 500));
        }
    }
}

#[test]
fn a_paused_canary_is_judged_on_and_waits_for_promote() {
    let mut dep = canary_at_step_one();
    let s = spec(&[10]);
    let c = counters(100, 0);
    // The balancer's counters only grow: each window sees 100 more good requests.
    let judge = |dep: &mut Deployment, now: Millis| {
        let c = counters(100 * (now - T0) / 60_000, 0);
        dep.step(
            Input::CanaryJudge {
                counters: &c,
                spec: &s,
                bounds: &[1_000],
            },
            now,
        )
    };
    judge(&mut dep, T0 + 70_000);
    // Still good while paused: a new window, no step.
    let fx = judge(&mut dep, T0 + 130_000);
    assert_eq!(short(&fx), "observe");
    let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
    assert!(run.paused);
    assert_eq!(run.started, Some(T0 + 130_000));
    // Promote: the next step.
    let fx = dep.step(
        Input::Promote {
            full: false,
            counters: &c,
            spec: &s,
        },
        T0 + 140_000,
    );
    assert_eq!(short(&fx), "record record observe lb");
    let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
    assert_eq!((run.step, run.percent, run.paused), (1, 50, false));
}

#[test]
fn promote_and_abort_of_a_canary() {
    let c = counters(100, 0);
    let s = spec(&[]);
    // (input, effects, passed, phase)
    let table: Vec<(Input<'_>, &str, bool, Phase)> = vec![
        (
            Input::Promote {
                full: false,
                counters: &c,
                spec: &s,
            },
            "record drive lb",
            true,
            Phase::Running,
        ),
        (
            Input::Promote {
                full: true,
                counters: &c,
                spec: &s,
            },
            "record drive lb",
            true,
            Phase::Running,
        ),
        (
            Input::CanaryAbort,
            "record emit:deploy.rolling-back lb drive",
            false,
            Phase::RollingBack,
        ),
    ];
    for (input, want, passed, phase) in table {
        let mut dep = canary_at_step_one();
        let fx = dep.step(input.clone(), T0 + 20_000);
        assert_eq!(short(&fx), want, "{input:?}");
        assert_eq!(dep.canary.as_ref().map(|r| r.passed), Some(passed));
        assert_eq!(dep.phase, phase);
        assert_eq!(dep.canary_holds(), !passed && phase == Phase::Running);
    }
    // The last step passed: the old set goes, and the walk ends.
    let mut dep = canary_at_step_one();
    for (now, requests) in [(T0 + 70_000, 100), (T0 + 130_000, 200)] {
        dep.step(
            Input::CanaryJudge {
                counters: &counters(requests, 0),
                spec: &s,
                bounds: &[1_000],
            },
            now,
        );
    }
    let fx = dep.step(
        Input::CanaryJudge {
            counters: &counters(300, 0),
            spec: &s,
            bounds: &[1_000],
        },
        T0 + 190_000,
    );
    assert_eq!(short(&fx), "record record drive lb");
    assert!(!dep.canary_holds());
    let fx = World::new("oonn", canary_params()).drive(&mut dep, T0 + 190_001);
    assert_eq!(short(&fx), "-0 -1 record");
    let fx = World::new("llnn", canary_params()).drive(&mut dep, T0 + 190_002);
    assert_eq!(short(&fx), "");
    let fx = World::new("nn", canary_params()).drive(&mut dep, T0 + 190_003);
    assert_eq!(short(&fx), "end:succeeded");
    // A promote of a canary that is not held is nothing.
    let mut dep = d(Kind::Rolling);
    let input = Input::Promote {
        full: true,
        counters: &c,
        spec: &s,
    };
    assert!(dep.step(input, T0).is_empty());
}

#[test]
fn a_canary_warms_up_before_its_latency_counts() {
    let mut dep = canary_at_step_one();
    let backends = vec![("web/2".to_string(), figures(0, 0))];
    dep.step(
        Input::CanaryObserve {
            backends: &backends,
            warmup_requests: 10,
        },
        T0 + 10_001,
    );
    let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
    assert_eq!(run.wakeup(60_000, T0 + 10_001), Some(T0 + 10_001 + 250));
    let backends = vec![("web/2".to_string(), figures(10, 0))];
    dep.step(
        Input::CanaryObserve {
            backends: &backends,
            warmup_requests: 10,
        },
        T0 + 10_002,
    );
    let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
    assert_eq!(run.wakeup(60_000, T0 + 10_002), Some(T0 + 70_000));
    assert!(run.judging());
}

#[test]
fn abort_rolls_back_or_ends_from_each_phase() {
    let now = T0 + 5_000;
    let back = || Input::RollBack {
        reason: "aborted by the operator".into(),
    };
    // (deployment, input, effects, phase after)
    let cases: Vec<(Deployment, Input<'_>, &str, Phase)> = vec![
        (
            d(Kind::Rolling),
            back(),
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            d(Kind::BlueGreen),
            back(),
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            d(Kind::Canary),
            back(),
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            canary_at_step_one(),
            Input::CanaryAbort,
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            paused_canary(),
            Input::CanaryAbort,
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            passed_canary(),
            back(),
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            refreshing(&BTreeMap::from([(0, Some(1))])).0,
            back(),
            "record emit:deploy.rolling-back lb drive",
            Phase::RollingBack,
        ),
        (
            restart(),
            Input::End {
                reason: "aborted by the operator".into(),
            },
            "end:aborted",
            Phase::Ended(Outcome::Aborted),
        ),
    ];
    for (mut dep, input, want, phase) in cases {
        let kind = dep.kind;
        let fx = dep.step(input, now);
        assert_eq!(short(&fx), want, "{kind:?}");
        assert_eq!(dep.phase, phase);
        assert!(dep.refresh.is_none() && !dep.canary_holds());
        if phase == Phase::RollingBack {
            // The planner walks back (its target is the old release now: `n` in the
            // pictures): the new set (`o`) goes.
            let fx = World::new("nnoo", canary_params()).drive(&mut dep, now + 1);
            assert_eq!(short(&fx), "-2 -3 record", "{kind:?}");
            let fx = World::new("nn", canary_params()).drive(&mut dep, now + 2);
            assert_eq!(short(&fx), "end:rolled-back", "{kind:?}");
            continue;
        }
        assert_eq!(dep.reason.as_deref(), Some("aborted by the operator"));
        if phase == Phase::RollingBack {
            assert_eq!(dep.target(), "old");
            assert_eq!(
                dep.steps.last().map(|s| s.message.as_str()),
                Some("rolling back: aborted by the operator")
            );
        }
    }
}

#[test]
fn supersede_ends_every_phase_as_aborted() {
    let mut refreshing = d(Kind::Refresh);
    let instances = BTreeMap::from([(0, Some(1))]);
    refreshing.step(
        Input::RefreshStart {
            slots: vec![0],
            on_change: "signal:HUP".into(),
            instances: &instances,
        },
        T0,
    );
    let rolling_back = Deployment {
        phase: Phase::RollingBack,
        reason: Some("web/1 crashed".into()),
        ..d(Kind::Rolling)
    };
    let cases = [
        (d(Kind::Rolling), "superseded by `jarfleet stop`"),
        (canary_at_step_one(), "superseded by `jarfleet stop`"),
        (refreshing, "superseded by `jarfleet stop`"),
        (
            rolling_back,
            "web/1 crashed; then superseded by `jarfleet stop`",
        ),
    ];
    for (mut dep, reason) in cases {
        let fx = dep.step(
            Input::Supersede {
                by: "`jarfleet stop`".into(),
            },
            T0 + 1_000,
        );
        assert_eq!(
            fx,
            [Effect::Ended {
                outcome: Outcome::Aborted,
                current: "old".into(),
                message: format!("deployment #7 aborted: {reason}"),
            }]
        );
        assert_eq!(dep.reason.as_deref(), Some(reason));
        assert!(dep.refresh.is_none() && dep.canary.is_none());
    }
}

fn refreshing(instances: &BTreeMap<u32, Option<u64>>) -> (Deployment, Vec<Effect>) {
    let mut dep = d(Kind::Refresh);
    let fx = dep.step(
        Input::RefreshStart {
            slots: instances.keys().copied().collect(),
            on_change: "signal:HUP".into(),
            instances,
        },
        T0,
    );
    (dep, fx)
}

#[test]
fn a_refresh_tells_each_instance_in_turn() {
    // Slot 0 is not running, 1 and 2 are.
    let instances = BTreeMap::from([(0, None), (1, Some(4)), (2, Some(9))]);
    let (mut dep, fx) = refreshing(&instances);
    assert_eq!(short(&fx), "record move:0 refresh:1@4");
    // The planner leaves a refresh alone.
    let fx = World::new("ooo", params(3, 1, 0)).drive(&mut dep, T0 + 1);
    assert!(fx.is_empty());
    // A stale answer (another generation) is nothing.
    let answer = |generation, still_there, result| Input::Refreshed {
        slot: 1,
        generation,
        still_there,
        result,
        instances: &instances,
    };
    assert!(
        dep.step(answer(3, true, Ok("sent SIGHUP".into())), T0 + 2)
            .is_empty()
    );
    let fx = dep.step(answer(4, true, Ok("sent SIGHUP".into())), T0 + 3);
    assert_eq!(short(&fx), "move:1 record refresh:2@9");
    assert_eq!(
        dep.steps.last().map(|s| s.message.as_str()),
        Some("web/1 refreshed: sent SIGHUP")
    );
    let fx = dep.step(
        Input::Refreshed {
            slot: 2,
            generation: 9,
            still_there: true,
            result: Ok("POST /reload answered 204".into()),
            instances: &instances,
        },
        T0 + 4,
    );
    assert_eq!(short(&fx), "move:2 record lb end:succeeded");
    assert_eq!(dep.phase, Phase::Ended(Outcome::Succeeded));
}

#[test]
fn a_refresh_that_fails_falls_back_to_a_rolling_restart() {
    let instances = BTreeMap::from([(0, Some(1)), (1, Some(1))]);
    // (the failure, words in the step)
    let cases: Vec<(Input<'_>, &str)> = vec![
        (
            Input::Refreshed {
                slot: 0,
                generation: 1,
                still_there: true,
                result: Err("POST /reload answered 500".into()),
                instances: &instances,
            },
            "POST /reload answered 500",
        ),
        (
            Input::Refreshed {
                slot: 0,
                generation: 1,
                still_there: false,
                result: Ok("sent SIGHUP".into()),
                instances: &instances,
            },
            "it restarted meanwhile",
        ),
        (
            Input::RefreshFailed {
                slot: 0,
                error: "the release has no config files".into(),
            },
            "the release has no config files",
        ),
    ];
    for (input, words) in cases {
        let (mut dep, _) = refreshing(&instances);
        let fx = dep.step(input, T0 + 1);
        assert_eq!(short(&fx), "record emit:config.refresh-failed drive");
        assert!(dep.refresh.is_none());
        assert_eq!(dep.phase, Phase::Running);
        let step = dep
            .steps
            .last()
            .map(|s| s.message.clone())
            .unwrap_or_default();
        assert!(
            step == format!(
                "web/0 could not be refreshed ({words}): a rolling restart brings the new config instead"
            ),
            "{step}"
        );
        // The planner takes over: the instances not on the new release are replaced.
        let fx = World::new("oo", params(2, 1, 0)).drive(&mut dep, T0 + 2);
        assert_eq!(short(&fx), "+2 record");
    }
}

#[test]
fn a_refresh_of_a_canary_app_that_falls_back_walks_as_a_canary() {
    let instances = BTreeMap::from([(0, Some(1)), (1, Some(1))]);
    // As the daemon makes it: a deployment of the canary release, then marked a refresh.
    let mut dep = d(Kind::Canary);
    dep.kind = Kind::Refresh;
    dep.step(
        Input::RefreshStart {
            slots: vec![0, 1],
            on_change: "signal:HUP".into(),
            instances: &instances,
        },
        T0,
    );
    dep.step(
        Input::RefreshFailed {
            slot: 0,
            error: "the release has no config files".into(),
        },
        T0 + 1,
    );
    // The restart that brings the config holds the old set for the canary's steps, as a
    // deployment of the release would; a refresh of a rolling app does not.
    assert!(dep.canary_holds());
    let (mut rolling, _) = refreshing(&instances);
    rolling.step(
        Input::RefreshFailed {
            slot: 0,
            error: "the release has no config files".into(),
        },
        T0 + 1,
    );
    assert!(!rolling.canary_holds());
}

#[test]
fn resume_is_a_function_of_the_stored_record() {
    let progress = Progress {
        step: 1,
        percent: 50,
        paused: true,
        passed: false,
    };
    let stored = |kind, phase, progress| Deployment {
        phase,
        progress,
        ..d(kind)
    };
    // (stored, resumes, canary run after)
    let cases = [
        (stored(Kind::Rolling, Phase::Running, None), true, None),
        (
            stored(Kind::BlueGreen, Phase::RollingBack, None),
            true,
            None,
        ),
        (
            stored(Kind::Canary, Phase::Running, Some(progress)),
            true,
            Some(progress),
        ),
        // A canary that failed rolls back without a run (its share is 0).
        (
            stored(Kind::Canary, Phase::RollingBack, Some(progress)),
            true,
            None,
        ),
        (stored(Kind::Canary, Phase::Running, None), true, None),
        // A refresh goes on as a rolling restart.
        (stored(Kind::Refresh, Phase::Running, None), true, None),
    ];
    for (record, resumes, run) in cases {
        let label = format!("{:?} {:?}", record.kind, record.phase);
        let resumed = Deployment::resume(record.clone());
        assert_eq!(resumed.is_some(), resumes, "{label}");
        let Some(m) = resumed else { continue };
        assert_eq!(m.canary.as_ref().map(|c| c.progress()), run, "{label}");
        assert!(m.refresh.is_none());
        assert!(m.canary.as_ref().is_none_or(|c| c.started.is_none()));
        // Everything stored stays as it was.
        assert_eq!(
            (m.id, &m.steps, m.progress, m.phase),
            (record.id, &record.steps, record.progress, record.phase)
        );
    }
    for o in Outcome::ALL {
        assert!(Deployment::resume(stored(Kind::Rolling, Phase::Ended(o), None)).is_none());
    }
    // A resumed canary carries on at its step once the set is ready.
    let mut m = Deployment::resume(stored(Kind::Canary, Phase::Running, Some(progress)))
        .unwrap_or_else(|| panic!("not resumed"));
    let fx = World::new("oonn", canary_params()).drive(&mut m, T0 + 1_000);
    assert_eq!(short(&fx), "lb observe record");
    assert_eq!(
        m.steps.last().map(|s| s.message.as_str()),
        Some("canary resumed by a new daemon at step 2 of 3: 50 % of the traffic")
    );
}

#[test]
fn kinds_phases_and_outcomes_read_back_as_stored() {
    for k in [Kind::Rolling, Kind::BlueGreen, Kind::Canary, Kind::Refresh] {
        assert_eq!(Kind::parse(k.as_str()), k);
    }
    assert_eq!(Kind::parse("something-newer"), Kind::Rolling);
    let phases = [Phase::Running, Phase::RollingBack]
        .into_iter()
        .chain(Outcome::ALL.map(Phase::Ended));
    for p in phases {
        assert_eq!(Phase::parse(p.as_str()), Some(p));
    }
    assert_eq!(Phase::parse("sideways"), None);
    for o in Outcome::ALL {
        assert_eq!(
            crate::events::EventKind::of_deployment_end(o.as_str()),
            Some(o.event())
        );
    }
}

#[test]
fn the_during_table_sees_the_kind() {
    use crate::during::Kind as K;
    let cases = [
        (d(Kind::Rolling), K::Rolling),
        (restart(), K::Restart),
        (d(Kind::BlueGreen), K::BlueGreen),
        (d(Kind::Canary), K::Canary),
        (d(Kind::Refresh), K::Refresh),
    ];
    for (dep, kind) in cases {
        assert_eq!(dep.during().kind, kind);
        assert!(!dep.during().rolling_back);
    }
}

/// A deployment that is this node's part of a cluster-wide rollout.
fn led(kind: Kind) -> Deployment {
    let mut dep = d(kind);
    dep.lead = Some(Lead::default());
    dep
}

#[test]
fn a_led_canary_takes_its_steps_from_the_cluster_and_never_judges_itself() {
    let mut dep = led(Kind::Canary);
    World::new("oo", canary_params()).drive(&mut dep, T0);
    assert_eq!(dep.lead.as_ref().map(|l| l.ready), Some(false));
    // The whole new set is healthy: ready for the cluster, but no share of its own.
    let mut w = World::new("oonn", canary_params());
    w.counters = counters(5, 0);
    let fx = w.drive(&mut dep, T0 + 10_000);
    assert_eq!(short(&fx), "");
    assert_eq!(dep.lead.as_ref().map(|l| l.ready), Some(true));
    assert_eq!(dep.canary.as_ref().map(|c| c.percent), Some(0));
    // The cluster's first step: a share and a new window.
    let share = |dep: &mut Deployment, step, percent, at| {
        dep.step(
            Input::LeadShare {
                step,
                percent,
                counters: &counters(5, 0),
            },
            at,
        )
    };
    let fx = share(&mut dep, 0, 20, T0 + 11_000);
    assert_eq!(short(&fx), "record observe lb");
    let run = dep.canary.clone().unwrap_or_else(|| panic!("no run"));
    assert_eq!((run.percent, run.started), (20, Some(T0 + 11_000)));
    assert_eq!(
        short(&share(&mut dep, 0, 20, T0 + 12_000)),
        "",
        "the same step"
    );
    // Its own judgement never runs, however bad its figures.
    let fx = dep.step(
        Input::CanaryJudge {
            counters: &counters(1_000, 900),
            spec: &spec(&[]),
            bounds: &[1_000],
        },
        T0 + 200_000,
    );
    assert_eq!(short(&fx), "");
    assert_eq!(dep.phase, Phase::Running);
    // Its figures of the step, for the cluster.
    let f = run.step_figures(&counters(25, 1));
    assert_eq!((f.canary.requests, f.canary.failures), (20, 1));
    // Nor does the operator's promote.
    assert!(dep.canary_holds());
    // Released: the old set goes.
    let fx = dep.step(Input::LeadRelease, T0 + 30_000);
    assert_eq!(short(&fx), "record drive lb");
    assert!(!dep.canary_holds() && !dep.held_by_cluster());
    let fx = World::new("oonn", canary_params()).drive(&mut dep, T0 + 30_001);
    assert_eq!(short(&fx), "-0 -1 record");
}

#[test]
fn a_led_deployment_rolled_back_by_the_cluster_walks_back() {
    let mut dep = led(Kind::Canary);
    World::new("oonn", canary_params()).drive(&mut dep, T0 + 10_000);
    dep.step(
        Input::LeadShare {
            step: 0,
            percent: 20,
            counters: &counters(0, 0),
        },
        T0 + 11_000,
    );
    let fx = dep.step(
        Input::LeadRollBack {
            reason: "canary step 1 (20 %) failed on the whole cluster's figures".into(),
        },
        T0 + 20_000,
    );
    assert!(
        short(&fx).contains("emit:deploy.rolling-back"),
        "{}",
        short(&fx)
    );
    assert_eq!(dep.phase, Phase::RollingBack);
    assert_eq!(dep.canary.as_ref().map(|c| c.percent), Some(0));
    // A blue-green led by the cluster holds its switch, and keeps no old set warm.
    let mut bg = led(Kind::BlueGreen);
    let bg_params = RolloutParams {
        switch: true,
        keep_old: true,
        ..params(2, 2, 0)
    };
    let fx = World::new("oonn", bg_params).drive(&mut bg, T0 + 10_000);
    assert_eq!(short(&fx), "", "held until the cluster switches");
    assert!(bg.held_by_cluster());
    bg.step(Input::LeadRelease, T0 + 11_000);
    let fx = World::new("oonn", bg_params).drive(&mut bg, T0 + 11_001);
    assert_eq!(short(&fx), "-0 -1 record");
}
