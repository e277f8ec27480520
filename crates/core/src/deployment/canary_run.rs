//! A canary: once the whole new set is ready the balancer gives it `steps` % of the traffic,
//! one step at a time; each step is judged after `step_time` ([`crate::canary::judge`]). Pass:
//! the next step (or a pause for `jarfleet promote`), and after the last the old set goes.
//! Fail: the canary's share drops to 0 at once and the deployment rolls back.

use std::collections::BTreeMap;

use super::{Deployment, Effect, Progress};
use crate::Millis;
use crate::canary::{self, SetFigures, StepFigures, Verdict, WarmUp};
use crate::events::EventKind;
use crate::spec::CanarySpec;

/// How often the daemon looks at a warming canary instance's counters.
pub const OBSERVE_MS: Millis = 250;

/// The balancer's cumulative counters: (canary set, stable set), and each canary backend's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub sets: (SetFigures, SetFigures),
    pub backends: Vec<(String, SetFigures)>,
}

/// A canary run's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryRun {
    /// The release under test.
    pub release: String,
    /// Index of the current step in `canary.steps`.
    pub step: usize,
    /// The canary's share of the traffic now (0 once it failed).
    pub percent: u8,
    /// When the current step began; `None` until the whole canary set is ready.
    pub started: Option<Millis>,
    /// Canary and stable counters when the step began.
    pub baseline: (SetFigures, SetFigures),
    /// Every step passed: the old set may go.
    pub passed: bool,
    /// Judged good at a `pause` step: waits for `jarfleet promote` (still judged meanwhile).
    pub paused: bool,
    /// The latest verdict, with its figures.
    pub last: Option<String>,
    /// Each canary backend's warm-up, by backend id.
    pub warm: BTreeMap<String, WarmUp>,
    /// Each canary backend's counters when the step began.
    pub warm_base: BTreeMap<String, SetFigures>,
}

impl CanaryRun {
    fn new(release: &str) -> CanaryRun {
        CanaryRun {
            release: release.to_string(),
            step: 0,
            percent: 0,
            started: None,
            baseline: Default::default(),
            passed: false,
            paused: false,
            last: None,
            warm: BTreeMap::new(),
            warm_base: BTreeMap::new(),
        }
    }

    pub fn progress(&self) -> Progress {
        Progress {
            step: self.step as u32,
            percent: self.percent,
            paused: self.paused,
            passed: self.passed,
        }
    }

    /// The run of a record left by an earlier daemon; its window starts anew.
    pub fn resumed(release: &str, p: &Progress) -> CanaryRun {
        CanaryRun {
            step: p.step as usize,
            percent: p.percent,
            passed: p.passed,
            paused: p.paused,
            ..CanaryRun::new(release)
        }
    }

    /// Judged now and then: it has a share and its steps are not through.
    pub fn judging(&self) -> bool {
        !self.passed && self.percent > 0 && self.started.is_some()
    }

    /// When the current step is due to be judged; sooner (every [`OBSERVE_MS`]) while a
    /// canary instance warms up.
    pub fn wakeup(&self, step_time_ms: Millis, now: Millis) -> Option<Millis> {
        if self.passed || self.percent == 0 {
            return None;
        }
        let due = self.started? + step_time_ms;
        let warming = self.warm.is_empty() || self.warm.values().any(|w| !w.is_warm());
        Some(if warming {
            due.min(now + OBSERVE_MS)
        } else {
            due
        })
    }

    /// Whether the current step's time is up.
    pub fn due(&self, step_time_ms: Millis, now: Millis) -> bool {
        !self.passed && self.percent > 0 && self.started.is_some_and(|s| now >= s + step_time_ms)
    }

    pub(super) fn observe(&mut self, backends: &[(String, SetFigures)], warmup_requests: u64) {
        for (id, figures) in backends {
            self.warm
                .entry(id.clone())
                .or_default()
                .observe(figures, warmup_requests);
        }
    }

    /// The current step's figures so far, from the balancer's counters now: both sets' since
    /// the step began, and the canary's warm responses only.
    pub fn step_figures(&self, counters: &Counters) -> StepFigures {
        let mut canary_warm = SetFigures::default();
        for (id, now_b) in &counters.backends {
            if let Some(w) = self.warm.get(id) {
                let start = self.warm_base.get(id).cloned().unwrap_or_default();
                canary_warm.add(&w.warm_since(now_b, &start));
            }
        }
        StepFigures {
            canary: counters.sets.0.since(&self.baseline.0),
            canary_warm,
            stable: counters.sets.1.since(&self.baseline.1),
        }
    }

    /// A new judging window from the counters now.
    fn window(&mut self, counters: &Counters, now: Millis) {
        self.started = Some(now);
        self.baseline = counters.sets.clone();
        self.warm_base = counters.backends.iter().cloned().collect();
    }
}

impl Deployment {
    /// Starts the first step (or the recorded one, after a restart) once the whole canary set
    /// is ready.
    pub(super) fn canary_begin(
        &mut self,
        target_healthy: bool,
        steps: &[u8],
        counters: &Counters,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let to = self.to.clone();
        let led = self.lead.is_some();
        let run = self.canary.get_or_insert_with(|| CanaryRun::new(&to));
        // Led by the cluster, the steps come from its scheduler ([`Deployment::lead_share`]).
        if led || run.started.is_some() || !target_healthy {
            return;
        }
        let Some(first) = steps.first().copied() else {
            return;
        };
        // A run resumed from the record carries on at its step; a new one begins at the first.
        let resumed = run.percent > 0;
        if !resumed {
            run.percent = first;
        }
        run.window(counters, now);
        let (step, percent) = (run.step + 1, run.percent);
        fx.push(Effect::SyncLb);
        fx.push(Effect::Observe);
        let message = if resumed {
            format!(
                "canary resumed by a new daemon at step {step} of {}: {percent} % of the traffic",
                steps.len()
            )
        } else {
            format!("canary step 1 of {}: {first} % of the traffic", steps.len())
        };
        self.log(now, message);
        fx.push(Effect::Record);
    }

    pub(super) fn canary_judge(
        &mut self,
        counters: &Counters,
        spec: &CanarySpec,
        bounds: &[u64],
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let step_time = spec.step_time.as_millis() as Millis;
        if self.lead.is_some() {
            // The cluster's scheduler judges, on every node's figures.
            return;
        }
        let Some(run) = self.canary.as_mut().filter(|r| r.due(step_time, now)) else {
            return;
        };
        let figures = run.step_figures(counters);
        let step_no = run.step + 1;
        let percent = run.percent;
        match canary::judge(spec, &figures, bounds) {
            Verdict::Wait { figures: f } => {
                // Too few requests yet: the step goes on a little.
                run.started = Some(now.saturating_sub(step_time) + 500);
                run.last = Some(format!(
                    "waiting for {} requests ({} warm ones for latency): {f}",
                    spec.min_requests, spec.min_requests
                ));
            }
            Verdict::Pass { figures: f } if run.paused => {
                // Still good while it waits for the operator: a new window begins.
                run.window(counters, now);
                run.last = Some(format!("good while paused: {f}"));
                fx.push(Effect::Observe);
            }
            Verdict::Pass { figures: f } => {
                run.last = Some(format!("step {step_no} passed: {f}"));
                self.log(
                    now,
                    format!("canary step {step_no} ({percent} %) passed: {f}"),
                );
                fx.push(Effect::Record);
                if spec.pause.contains(&percent) {
                    self.canary_pause(counters, now, fx);
                } else {
                    self.canary_advance(counters, &spec.steps, now, fx);
                }
            }
            Verdict::Fail { figures: f, why } => {
                let reason = format!("canary step {step_no} ({percent} %) failed: {why} ({f})");
                self.canary_fail(reason, now, fx);
            }
        }
    }

    /// A passed `pause` step: the canary keeps its share and is judged on, until the operator
    /// promotes or aborts it (or it fails).
    fn canary_pause(&mut self, counters: &Counters, now: Millis, fx: &mut Vec<Effect>) {
        let Some(run) = self.canary.as_mut() else {
            return;
        };
        run.paused = true;
        run.window(counters, now);
        let message = format!(
            "paused at {} %: waiting for `jarfleet promote {}` (or `abort`)",
            run.percent, self.app
        );
        fx.push(Effect::Observe);
        self.log(now, message.clone());
        fx.push(Effect::Record);
        fx.push(Effect::Emit {
            kind: EventKind::DeployPaused,
            slot: None,
            message,
        });
    }

    /// The next step, or after the last one the old set goes.
    fn canary_advance(
        &mut self,
        counters: &Counters,
        steps: &[u8],
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let Some(run) = self.canary.as_mut() else {
            return;
        };
        run.paused = false;
        if run.step + 1 >= steps.len() {
            run.passed = true;
            self.log(now, "every canary step passed: the old set goes".into());
            fx.push(Effect::Record);
            // The old set leaves first, then everyone left weighs the same.
            fx.push(Effect::Drive);
        } else {
            run.step += 1;
            run.percent = steps[run.step];
            run.window(counters, now);
            let message = format!(
                "canary step {} of {}: {} % of the traffic",
                run.step + 1,
                steps.len(),
                run.percent
            );
            self.log(now, message);
            fx.push(Effect::Record);
            fx.push(Effect::Observe);
        }
        fx.push(Effect::SyncLb);
    }

    pub(super) fn promote(
        &mut self,
        full: bool,
        counters: &Counters,
        spec: &CanarySpec,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if !self.canary_holds() {
            return;
        }
        let Some(run) = self.canary.as_mut() else {
            return;
        };
        if run.paused && !full {
            self.log(now, "promoted by the operator".into());
            fx.push(Effect::Record);
            self.canary_advance(counters, &spec.steps, now, fx);
        } else {
            run.passed = true;
            self.log(now, "promoted by the operator: the old set goes".into());
            fx.push(Effect::Record);
            fx.push(Effect::Drive);
            fx.push(Effect::SyncLb);
        }
    }

    /// Led by the cluster: its scheduler gives the new set `percent` % at step `step`. A new
    /// step (or a first one) opens a new window of figures.
    pub(super) fn lead_share(
        &mut self,
        step: u32,
        percent: u8,
        counters: &Counters,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if self.lead.is_none() || !self.canary_holds() {
            return;
        }
        let to = self.to.clone();
        let run = self.canary.get_or_insert_with(|| CanaryRun::new(&to));
        if run.started.is_some() && run.step == step as usize && run.percent == percent {
            return;
        }
        run.step = step as usize;
        run.percent = percent;
        run.window(counters, now);
        self.log(
            now,
            format!(
                "canary step {}: {percent} % of the traffic (the cluster's step)",
                step + 1
            ),
        );
        fx.push(Effect::Record);
        fx.push(Effect::Observe);
        fx.push(Effect::SyncLb);
    }

    /// Led by the cluster: released by its scheduler (every canary step passed on the whole
    /// cluster's figures, or every node's blue-green set is ready): the old set goes.
    pub(super) fn lead_release(&mut self, now: Millis, fx: &mut Vec<Effect>) {
        if !self.held_by_cluster() {
            return;
        }
        if let Some(lead) = self.lead.as_mut() {
            lead.released = true;
        }
        if let Some(run) = self.canary.as_mut() {
            run.passed = true;
        }
        self.log(
            now,
            "released by the cluster: the new set takes the traffic and the old set goes".into(),
        );
        fx.push(Effect::Record);
        fx.push(Effect::Drive);
        fx.push(Effect::SyncLb);
    }

    /// The canary fails: its share drops to 0 at once (no new request reaches it), and the
    /// deployment rolls back with `reason`.
    pub(super) fn canary_fail(&mut self, reason: String, now: Millis, fx: &mut Vec<Effect>) {
        if let Some(run) = self.canary.as_mut() {
            run.percent = 0;
        }
        self.roll_back(&reason, now, fx);
        fx.push(Effect::SyncLb);
        fx.push(Effect::Drive);
    }
}
