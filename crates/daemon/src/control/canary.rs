//! Canary deployments: the whole new set starts (like blue-green), then the load balancer gives
//! it `steps` % of the traffic, one step at a time; each step is judged after `step_time` from
//! the balancer's own counters (`jarfleet_core::canary`). Pass: the next step, and after the last
//! the old set goes. Fail: the canary's weight drops to 0 at once and the deployment rolls back,
//! with the figures that failed it in the record. The decisions are the deployment machine's
//! (`jarfleet_core::deployment`); this module hands it the balancer's counters.
//!
//! Latency is judged on the canary's warm responses only: while a canary instance serves its
//! first `warmup_requests`, the loop looks at its counters a few times a second
//! (`jarfleet_core::deployment::CANARY_OBSERVE_MS`) and marks where its warm-up ended
//! (`jarfleet_core::canary::WarmUp`).
//!
//! The run's progress (step, share, pause) is kept in the deployment record with every step, so
//! a daemon restarted mid-canary gives the canary its share again at once and resumes at the
//! step it was in, with a new window (the figures of the old one are gone with the old daemon).

use jarfleet_core::canary::SetFigures;
use jarfleet_core::deployment::{Counters, Input};

use super::*;

impl Control {
    /// Whether `app`'s running deployment is a canary whose steps are not all through.
    pub(super) fn canary_holds(&self, app: &str) -> bool {
        self.apps
            .get(app)
            .and_then(|rt| rt.deployment.as_ref())
            .is_some_and(|d| d.canary_holds())
    }

    /// The canaries' deadlines, for the loop's wake-up.
    pub(super) fn canary_wakeup(&self) -> Option<u64> {
        let now = self.now_ms();
        self.apps
            .values()
            .filter_map(|rt| {
                let run = rt.canary()?;
                let step_time = rt.rec.release(&run.release).0.deploy.canary.step_time;
                run.wakeup(step_time.as_millis() as u64, now)
            })
            .min()
    }

    /// The counters of the canary instances of `app` (or of every app) being judged, for
    /// their warm-up.
    pub(super) fn canary_observe(&mut self, only: Option<&str>) {
        let apps: Vec<String> = self
            .apps
            .iter()
            .filter(|(name, rt)| {
                only.is_none_or(|o| o == name.as_str()) && rt.canary().is_some_and(|r| r.judging())
            })
            .map(|(name, _)| name.clone())
            .collect();
        let now = self.now_ms();
        for app in apps {
            let backends = self.canary_counters(&app).backends;
            let Some(rt) = self.apps.get(&app) else {
                continue;
            };
            let Some(run) = rt.canary() else { continue };
            let warmup_requests = rt.rec.release(&run.release).0.deploy.canary.warmup_requests;
            let input = Input::CanaryObserve {
                backends: &backends,
                warmup_requests,
            };
            self.feed(&app, input, now);
        }
    }

    /// Judges every canary step whose time is up.
    pub(super) fn canary_tick(&mut self, now: u64) {
        self.canary_observe(None);
        let due: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, rt)| {
                rt.canary().is_some_and(|r| {
                    let step_time = rt.rec.release(&r.release).0.deploy.canary.step_time;
                    r.due(step_time.as_millis() as u64, now)
                })
            })
            .map(|(name, _)| name.clone())
            .collect();
        for app in due {
            let counters = self.canary_counters(&app);
            let Some(spec) = self.apps.get(&app).and_then(|rt| {
                Some(
                    rt.rec
                        .release(&rt.canary()?.release)
                        .0
                        .deploy
                        .canary
                        .clone(),
                )
            }) else {
                continue;
            };
            let input = Input::CanaryJudge {
                counters: &counters,
                spec: &spec,
                bounds: &jarfleet_proxy::LATENCY_BOUNDS_US,
            };
            self.feed(&app, input, now);
        }
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
        let Some(rt) = self.apps.get(app) else {
            return Err(self.unknown_app(app));
        };
        if rt.deployment.as_ref().is_some_and(|d| d.lead.is_some()) {
            return Err(usage(
                format!(
                    "{app}'s canary goes out across the cluster: its steps are judged by the cluster's scheduler on every node's figures"
                ),
                Some(
                    "`jarfleet status` shows its steps; applying the release before it rolls it back on every node",
                ),
            ));
        }
        let Some(run) = rt.canary() else {
            return Err(usage(format!("{app}'s canary has not started yet"), None));
        };
        if promote {
            let spec = rt.rec.release(&run.release).0.deploy.canary.clone();
            let counters = self.canary_counters(app);
            let input = Input::Promote {
                full,
                counters: &counters,
                spec: &spec,
            };
            self.feed(app, input, now);
        } else {
            self.feed(app, Input::CanaryAbort, now);
        }
        self.apps
            .get(app)
            .and_then(|a| a.deployment.as_ref())
            .map(super::deploy::record)
            .ok_or_else(|| usage(format!("{app}'s deployment ended"), None))
    }

    /// The balancer's counters of `app`'s canary set, of its stable set, and of each canary
    /// backend (by backend id).
    pub(super) fn canary_counters(&self, app: &str) -> Counters {
        let mut counters = Counters::default();
        let Some(release) = self
            .apps
            .get(app)
            .and_then(|a| a.deployment.as_ref())
            .map(|d| d.to.clone())
        else {
            return counters;
        };
        let Some(stats) = self.lb_counters(app) else {
            return counters;
        };
        for b in &stats.backends {
            let f = backend_figures(&b.counters);
            if b.labels.get("release") == Some(&release) {
                counters.sets.0.add(&f);
                counters.backends.push((b.id.clone(), f));
            } else {
                counters.sets.1.add(&f);
            }
        }
        counters
    }

    /// `status`'s view of `app`'s canary.
    pub(super) fn canary_status(&self, app: &str, now: u64) -> Option<jarfleet_api::CanaryStatus> {
        let rt = self.apps.get(app)?;
        let run = rt.canary()?;
        let spec = &rt.rec.release(&run.release).0.deploy.canary;
        let (canary_now, stable_now) = self.canary_counters(app).sets;
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
        let run = self.apps.get(app)?.canary()?;
        if run.passed {
            return None;
        }
        let (ws, wc) = jarfleet_core::canary::weights(run.percent, stable, canary_n);
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
