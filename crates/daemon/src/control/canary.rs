//! Canary deployments: the whole new set starts (like blue-green), then the load balancer gives
//! it `steps` % of the traffic, one step at a time; each step is judged after `step_time` from
//! the balancer's own counters (`jarfleet_core::canary`). Pass: the next step, and after the last
//! the old set goes. Fail: the canary's weight drops to 0 at once and the deployment rolls back,
//! with the figures that failed it in the record.
//!
//! The run lives in memory: a daemon restarted mid-canary starts the steps again from the
//! first (the canary set keeps running meanwhile, at the weight the new daemon gives it).

use jarfleet_core::canary::{self, SetFigures, Verdict};
use jarfleet_core::spec::Strategy;

use super::deploy::{ROLLING_BACK, RUNNING};
use super::*;

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
        });
        if run.started.is_some() || !target_healthy {
            return;
        }
        let steps = rt.rec.release(&d.to).0.deploy.canary.steps.clone();
        let Some(first) = steps.first().copied() else {
            return;
        };
        run.percent = first;
        run.started = Some(now);
        let baseline = self.canary_figures(app);
        if let Some(run) = self.apps.get_mut(app).and_then(|a| a.canary.as_mut()) {
            run.baseline = baseline;
        }
        self.sync_lb(app);
        self.record_step(
            app,
            format!("canary step 1 of {}: {first} % of the traffic", steps.len()),
            now,
        );
    }

    /// The canary's deadline, for the loop's wake-up.
    pub(super) fn canary_wakeup(&self) -> Option<u64> {
        self.apps
            .values()
            .filter_map(|rt| {
                let run = rt.canary.as_ref().filter(|r| !r.passed && r.percent > 0)?;
                let step_time = rt.rec.release(&run.release).0.deploy.canary.step_time;
                Some(run.started? + step_time.as_millis() as u64)
            })
            .min()
    }

    /// Judges every canary step whose time is up.
    pub(super) fn canary_tick(&mut self, now: u64) {
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
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(run) = rt.canary.as_mut() else {
            return;
        };
        let spec = rt.rec.release(&run.release).0.deploy.canary.clone();
        let canary_now = figures.0.since(&run.baseline.0);
        let stable_now = figures.1.since(&run.baseline.1);
        let step_no = run.step + 1;
        let percent = run.percent;
        match canary::judge(
            &spec,
            &canary_now,
            &stable_now,
            &jarfleet_proxy::LATENCY_BOUNDS_US,
        ) {
            Verdict::Wait { .. } => {
                // Too few requests yet: the step goes on a little.
                run.started = Some(now.saturating_sub(spec.step_time.as_millis() as u64) + 500);
            }
            Verdict::Pass { figures: f } => {
                let last = run.step + 1 >= spec.steps.len();
                if last {
                    run.passed = true;
                } else {
                    run.step += 1;
                    run.percent = spec.steps[run.step];
                    run.started = Some(now);
                    run.baseline = figures;
                }
                let next = run.percent;
                self.record_step(
                    app,
                    format!("canary step {step_no} ({percent} %) passed: {f}"),
                    now,
                );
                if last {
                    self.record_step(
                        app,
                        "every canary step passed: the old set goes".into(),
                        now,
                    );
                } else {
                    self.record_step(
                        app,
                        format!(
                            "canary step {} of {}: {next} % of the traffic",
                            step_no + 1,
                            spec.steps.len()
                        ),
                        now,
                    );
                }
                if last {
                    // The old set leaves first, then everyone left weighs the same.
                    self.drive(app);
                    self.sync_lb(app);
                } else {
                    self.sync_lb(app);
                }
            }
            Verdict::Fail { figures: f, why } => {
                let reason = format!("canary step {step_no} ({percent} %) failed: {why} ({f})");
                self.canary_fail(app, reason, now);
            }
        }
    }

    /// `jarfleet promote` / `abort`: ends the canary's steps now, one way or the other.
    pub(super) fn canary_decide(
        &mut self,
        app: &str,
        promote: bool,
    ) -> Result<jarfleet_api::DeploymentRecord, ErrorBody> {
        if !self.canary_holds(app) {
            return Err(usage(
                format!("{app} has no canary deployment under way"),
                Some("`jarfleet history APP` shows its deployments"),
            ));
        }
        let now = now_ms();
        let Some(rt) = self.apps.get_mut(app) else {
            return Err(self.unknown_app(app));
        };
        let Some(run) = rt.canary.as_mut() else {
            return Err(usage(format!("{app}'s canary has not started yet"), None));
        };
        if promote {
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
        if let Some(d) = rt.deployment.as_mut() {
            d.outcome = ROLLING_BACK.into();
            d.reason = Some(reason.clone());
        }
        self.sync_lb(app);
        self.record_step(app, format!("rolling back: {reason}"), now);
        self.emit(
            "deploy.rolling-back",
            Some(app),
            None,
            format!("rolling back: {reason}"),
        );
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
            let c = &b.counters;
            let f = SetFigures {
                requests: c.requests.iter().sum(),
                failures: c.requests[4] + c.errors,
                buckets: c.latency_buckets.clone(),
            };
            if b.labels.get("release") == Some(&release) {
                canary.add(&f);
            } else {
                stable.add(&f);
            }
        }
        (canary, stable)
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
