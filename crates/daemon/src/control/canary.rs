//! Canary deployments: the whole new set starts (like blue-green), then the load balancer gives
//! it `steps` % of the traffic, one step at a time; each step is judged after `step_time` from
//! the balancer's own counters (`jarfleet_core::canary`). Pass: the next step, and after the last
//! the old set goes. Fail: the canary's weight drops to 0 at once and the deployment rolls back,
//! with the figures that failed it in the record.
//!
//! Latency is judged on the canary's warm responses only: while a canary instance serves its
//! first `warmup_requests`, the loop looks at its counters a few times a second
//! ([`CANARY_OBSERVE_MS`]) and marks where its warm-up ended (`jarfleet_core::canary::WarmUp`).
//!
//! The run's progress (step, share, pause) is kept in the deployment record with every step, so
//! a daemon restarted mid-canary gives the canary its share again at once and resumes at the
//! step it was in, with a new window (the figures of the old one are gone with the old daemon).

use jarfleet_core::events::EventKind;
use std::collections::BTreeMap;

use jarfleet_core::canary::{self, SetFigures, StepFigures, Verdict, WarmUp};
use jarfleet_core::spec::Strategy;

use super::deploy::RUNNING;
use super::*;

/// How often the loop looks at a warming canary instance's counters.
const CANARY_OBSERVE_MS: u64 = 250;

pub(super) struct CanaryRun {
    /// The release under test.
    pub release: String,
    /// Index of the current step in `canary.steps`.
    step: usize,
    /// The canary's share of the traffic now (0 once it failed).
    pub percent: u8,
    /// When the current step began; `None` until the whole canary set is ready.
    started: Option<u64>,
    /// Canary and stable counters when the step began.
    baseline: (SetFigures, SetFigures),
    /// Every step passed: the old set may go.
    pub passed: bool,
    /// Judged good at a `pause` step: waits for `jarfleet promote` (still judged meanwhile).
    pub paused: bool,
    /// The latest verdict, with its figures.
    last: Option<String>,
    /// Each canary backend's warm-up, by backend id.
    warm: BTreeMap<String, WarmUp>,
    /// Each canary backend's counters when the step began.
    warm_base: BTreeMap<String, SetFigures>,
}

impl CanaryRun {
    pub(super) fn progress(&self) -> jarfleet_api::CanaryProgress {
        jarfleet_api::CanaryProgress {
            step: self.step as u32,
            percent: self.percent,
            paused: self.paused,
            passed: self.passed,
        }
    }

    /// The run of a deployment record left by an earlier daemon; its window starts anew.
    pub(super) fn resumed(release: &str, p: &jarfleet_api::CanaryProgress) -> CanaryRun {
        CanaryRun {
            release: release.to_string(),
            step: p.step as usize,
            percent: p.percent,
            started: None,
            baseline: Default::default(),
            passed: p.passed,
            paused: p.paused,
            last: None,
            warm: BTreeMap::new(),
            warm_base: BTreeMap::new(),
        }
    }
}

impl Control {
    /// Whether `app`'s running deployment is a canary whose steps are not all through.
    pub(super) fn canary_holds(&self, app: &str) -> bool {
        let Some(rt) = self.apps.get(app) else {
            return false;
        };
        let Some(d) = &rt.deployment else {
            return false;
        };
        d.outcome == RUNNING
            && rt.rec.release(&d.to).0.deploy.strategy == Strategy::Canary
            && !rt.canary.as_ref().is_some_and(|c| c.passed)
    }

    /// Called by `drive`: starts the first step once the whole canary set is ready.
    pub(super) fn canary_begin(&mut self, app: &str, target_healthy: bool, now: u64) {
        if !self.canary_holds(app) {
            return;
        }
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(d) = rt.deployment.clone() else {
            return;
        };
        let run = rt.canary.get_or_insert_with(|| CanaryRun {
            release: d.to.clone(),
            step: 0,
            percent: 0,
            started: None,
            baseline: Default::default(),
            passed: false,
            paused: false,
            last: None,
            warm: BTreeMap::new(),
            warm_base: BTreeMap::new(),
        });
        if run.started.is_some() || !target_healthy {
            return;
        }
        let steps = rt.rec.release(&d.to).0.deploy.canary.steps.clone();
        let Some(first) = steps.first().copied() else {
            return;
        };
        // A run resumed from the record carries on at its step; a new one begins at the first.
        let resumed = run.percent > 0;
        if !resumed {
            run.percent = first;
        }
        run.started = Some(now);
        let (step, percent) = (run.step + 1, run.percent);
        let baseline = self.canary_figures(app);
        if let Some(run) = self.apps.get_mut(app).and_then(|a| a.canary.as_mut()) {
            run.baseline = baseline;
        }
        self.sync_lb(app);
        self.canary_new_window(app);
        let message = if resumed {
            format!(
                "canary resumed by a new daemon at step {step} of {}: {percent} % of the traffic",
                steps.len()
            )
        } else {
            format!("canary step 1 of {}: {first} % of the traffic", steps.len())
        };
        self.record_step(app, message, now);
    }

    /// The canary's deadline, for the loop's wake-up.
    pub(super) fn canary_wakeup(&self) -> Option<u64> {
        self.apps
            .values()
            .filter_map(|rt| {
                let run = rt.canary.as_ref().filter(|r| !r.passed && r.percent > 0)?;
                let step_time = rt.rec.release(&run.release).0.deploy.canary.step_time;
                let due = run.started? + step_time.as_millis() as u64;
                // A canary instance still warming up is looked at again soon.
                let warming = run.warm.is_empty() || run.warm.values().any(|w| !w.is_warm());
                Some(if warming {
                    due.min(self.now_ms() + CANARY_OBSERVE_MS)
                } else {
                    due
                })
            })
            .min()
    }

    /// Every running canary's instances' counters, for their warm-up.
    fn canary_observe(&mut self) {
        let apps: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, rt)| {
                rt.canary
                    .as_ref()
                    .is_some_and(|r| !r.passed && r.percent > 0 && r.started.is_some())
            })
            .map(|(name, _)| name.clone())
            .collect();
        for app in apps {
            let backends = self.canary_backends(&app);
            let Some(rt) = self.apps.get_mut(&app) else {
                continue;
            };
            let Some(run) = rt.canary.as_mut() else {
                continue;
            };
            let n = rt.rec.release(&run.release).0.deploy.canary.warmup_requests;
            for (id, figures) in backends {
                run.warm.entry(id).or_default().observe(&figures, n);
            }
        }
    }

    /// A new judging window begins: each canary backend's counters now are its start.
    fn canary_new_window(&mut self, app: &str) {
        let backends = self.canary_backends(app);
        if let Some(run) = self.apps.get_mut(app).and_then(|a| a.canary.as_mut()) {
            run.warm_base = backends.into_iter().collect();
        }
        self.canary_observe();
    }

    /// Judges every canary step whose time is up.
    pub(super) fn canary_tick(&mut self, now: u64) {
        self.canary_observe();
        let due: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, rt)| {
                rt.canary.as_ref().is_some_and(|r| {
                    let step_time = rt.rec.release(&r.release).0.deploy.canary.step_time;
                    !r.passed
                        && r.percent > 0
                        && r.started
                            .is_some_and(|s| now >= s + step_time.as_millis() as u64)
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for app in due {
            self.canary_judge(&app, now);
        }
    }

    fn canary_judge(&mut self, app: &str, now: u64) {
        let figures = self.canary_figures(app);
        let backends = self.canary_backends(app);
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(run) = rt.canary.as_mut() else {
            return;
        };
        let spec = rt.rec.release(&run.release).0.deploy.canary.clone();
        let mut canary_warm = SetFigures::default();
        for (id, now_b) in &backends {
            if let Some(w) = run.warm.get(id) {
                let start = run.warm_base.get(id).cloned().unwrap_or_default();
                canary_warm.add(&w.warm_since(now_b, &start));
            }
        }
        let step = StepFigures {
            canary: figures.0.since(&run.baseline.0),
            canary_warm,
            stable: figures.1.since(&run.baseline.1),
        };
        let step_no = run.step + 1;
        let percent = run.percent;
        match canary::judge(&spec, &step, &jarfleet_proxy::LATENCY_BOUNDS_US) {
            Verdict::Wait { figures: f } => {
                // Too few requests yet: the step goes on a little.
                run.started = Some(now.saturating_sub(spec.step_time.as_millis() as u64) + 500);
                run.last = Some(format!(
                    "waiting for {} requests ({} warm ones for latency): {f}",
                    spec.min_requests, spec.min_requests
                ));
            }
            Verdict::Pass { figures: f } if run.paused => {
                // Still good while it waits for the operator: a new window begins.
                run.started = Some(now);
                run.baseline = figures;
                run.last = Some(format!("good while paused: {f}"));
                self.canary_new_window(app);
            }
            Verdict::Pass { figures: f } => {
                run.last = Some(format!("step {step_no} passed: {f}"));
                self.record_step(
                    app,
                    format!("canary step {step_no} ({percent} %) passed: {f}"),
                    now,
                );
                if spec.pause.contains(&percent) {
                    self.canary_pause(app, figures, now);
                } else {
                    self.canary_advance(app, figures, now);
                }
            }
            Verdict::Fail { figures: f, why } => {
                let reason = format!("canary step {step_no} ({percent} %) failed: {why} ({f})");
                self.canary_fail(app, reason, now);
            }
        }
    }

    /// A passed `pause` step: the canary keeps its share and is judged on, until the operator
    /// promotes or aborts it (or it fails).
    fn canary_pause(&mut self, app: &str, figures: (SetFigures, SetFigures), now: u64) {
        let Some(run) = self.apps.get_mut(app).and_then(|a| a.canary.as_mut()) else {
            return;
        };
        run.paused = true;
        run.started = Some(now);
        run.baseline = figures;
        let message = format!(
            "paused at {} %: waiting for `jarfleet promote {app}` (or `abort`)",
            run.percent
        );
        self.canary_new_window(app);
        self.record_step(app, message.clone(), now);
        self.emit(EventKind::DeployPaused, Some(app), None, message);
    }

    /// The next step, or after the last one the old set goes.
    fn canary_advance(&mut self, app: &str, figures: (SetFigures, SetFigures), now: u64) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(run) = rt.canary.as_mut() else {
            return;
        };
        let steps = rt.rec.release(&run.release).0.deploy.canary.steps.clone();
        run.paused = false;
        if run.step + 1 >= steps.len() {
            run.passed = true;
            self.record_step(
                app,
                "every canary step passed: the old set goes".into(),
                now,
            );
            // The old set leaves first, then everyone left weighs the same.
            self.drive(app);
        } else {
            run.step += 1;
            run.percent = steps[run.step];
            run.started = Some(now);
            run.baseline = figures;
            let message = format!(
                "canary step {} of {}: {} % of the traffic",
                run.step + 1,
                steps.len(),
                run.percent
            );
            self.record_step(app, message, now);
            self.canary_new_window(app);
        }
        self.sync_lb(app);
    }

    /// `jarfleet promote` / `abort`. Promote on a paused step goes on with the next steps;
    /// otherwise (or `full`) it skips the remaining ones. Abort fails the canary now.
    pub(super) fn canary_decide(
        &mut self,
        app: &str,
        promote: bool,
        full: bool,
    ) -> Result<jarfleet_api::DeploymentRecord, ErrorBody> {
        if !self.canary_holds(app) {
            return Err(usage(
                format!("{app} has no canary deployment under way"),
                Some("`jarfleet history APP` shows its deployments"),
            ));
        }
        let now = self.now_ms();
        let Some(rt) = self.apps.get_mut(app) else {
            return Err(self.unknown_app(app));
        };
        let Some(run) = rt.canary.as_mut() else {
            return Err(usage(format!("{app}'s canary has not started yet"), None));
        };
        let paused = run.paused;
        if promote && paused && !full {
            self.record_step(app, "promoted by the operator".into(), now);
            let figures = self.canary_figures(app);
            self.canary_advance(app, figures, now);
        } else if promote {
            run.passed = true;
            self.record_step(
                app,
                "promoted by the operator: the old set goes".into(),
                now,
            );
            self.drive(app);
            self.sync_lb(app);
        } else {
            self.canary_fail(app, "aborted by the operator".into(), now);
        }
        self.apps
            .get(app)
            .and_then(|a| a.deployment.clone())
            .ok_or_else(|| usage(format!("{app}'s deployment ended"), None))
    }

    /// The canary fails: its weight drops to 0 at once (no new request reaches it), and the
    /// deployment rolls back with `reason`.
    fn canary_fail(&mut self, app: &str, reason: String, now: u64) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        if let Some(run) = rt.canary.as_mut() {
            run.percent = 0;
        }
        self.mark_rolling_back(app, &reason, now);
        self.sync_lb(app);
        self.drive(app);
    }

    /// The balancer's counters of the canary set and of the stable set.
    fn canary_figures(&self, app: &str) -> (SetFigures, SetFigures) {
        let mut canary = SetFigures::default();
        let mut stable = SetFigures::default();
        let Some(release) = self
            .apps
            .get(app)
            .and_then(|a| a.canary.as_ref())
            .map(|r| r.release.clone())
        else {
            return (canary, stable);
        };
        let Some(stats) = self.lb_counters(app) else {
            return (canary, stable);
        };
        for b in &stats.backends {
            let f = backend_figures(&b.counters);
            if b.labels.get("release") == Some(&release) {
                canary.add(&f);
            } else {
                stable.add(&f);
            }
        }
        (canary, stable)
    }

    /// The cumulative counters of each backend of `app`'s canary set, by backend id.
    fn canary_backends(&self, app: &str) -> Vec<(String, SetFigures)> {
        let Some(release) = self
            .apps
            .get(app)
            .and_then(|a| a.canary.as_ref())
            .map(|r| r.release.clone())
        else {
            return Vec::new();
        };
        let Some(stats) = self.lb_counters(app) else {
            return Vec::new();
        };
        stats
            .backends
            .iter()
            .filter(|b| b.labels.get("release") == Some(&release))
            .map(|b| (b.id.clone(), backend_figures(&b.counters)))
            .collect()
    }

    /// `status`'s view of `app`'s canary.
    pub(super) fn canary_status(&self, app: &str, now: u64) -> Option<jarfleet_api::CanaryStatus> {
        let rt = self.apps.get(app)?;
        let run = rt.canary.as_ref()?;
        let spec = &rt.rec.release(&run.release).0.deploy.canary;
        let (canary_now, stable_now) = self.canary_figures(app);
        let bounds = &jarfleet_proxy::LATENCY_BOUNDS_US;
        let summary = |now: &SetFigures, before: &SetFigures| {
            let d = now.since(before);
            jarfleet_api::SetSummary {
                requests: d.requests,
                failures: d.failures,
                error_rate: d.error_rate(),
                p99_ms: d.quantile_us(0.99, bounds).map(|us| us as f64 / 1000.0),
            }
        };
        Some(jarfleet_api::CanaryStatus {
            release: run.release.clone(),
            step: if run.started.is_some() {
                run.step as u32 + 1
            } else {
                0
            },
            steps: spec.steps.clone(),
            percent: run.percent,
            paused: run.paused,
            passed: run.passed,
            step_elapsed_ms: run.started.map(|s| now.saturating_sub(s)),
            step_time_ms: spec.step_time.as_millis() as u64,
            canary_figures: summary(&canary_now, &run.baseline.0),
            stable_figures: summary(&stable_now, &run.baseline.1),
            last_verdict: run.last.clone(),
        })
    }

    /// The traffic share the load balancer gives a backend of `release` of `app`, if a canary
    /// splits it: (each stable, each canary) weights.
    pub(super) fn canary_weights(
        &self,
        app: &str,
        stable: usize,
        canary_n: usize,
    ) -> Option<(String, u32, u32)> {
        let run = self.apps.get(app)?.canary.as_ref()?;
        if run.passed {
            return None;
        }
        let (ws, wc) = canary::weights(run.percent, stable, canary_n);
        Some((run.release.clone(), ws, wc))
    }
}

fn backend_figures(c: &jarfleet_proxy::CounterView) -> SetFigures {
    SetFigures {
        requests: c.requests.iter().sum(),
        failures: c.requests[4] + c.errors,
        buckets: c.latency_buckets.clone(),
    }
}
