//! A deployment as a pure state machine: moving an app from one release to another by a rolling
//! walk, a blue-green switch (with the old set kept warm, `keep_old`), a canary (traffic steps,
//! pauses, promote/abort, judged by [`crate::canary`]) or a live config refresh (falling back
//! to a rolling restart), rolling back on failure, and recording every step.
//!
//! Like [`crate::instance::Instance`]: the daemon feeds [`Input`]s with the time as a
//! parameter, and carries out the [`Effect`]s the machine answers with (start and stop slots,
//! set balancer weights, persist, emit events). The stored and wire record is a projection of
//! the machine's fields; [`Deployment::resume`] rebuilds a machine from it after a daemon crash.

mod canary_run;
mod plan;
mod refresh;
#[cfg(test)]
mod tests;
mod types;

pub use canary_run::{CanaryRun, Counters, OBSERVE_MS as CANARY_OBSERVE_MS};
pub use plan::Plan;
pub use refresh::RefreshRun;
pub use types::{Kind, Outcome, Phase, Progress, Step};

use crate::Millis;
use crate::canary::SetFigures;
use crate::events::EventKind;
use crate::spec::CanarySpec;
use std::collections::BTreeMap;

/// One deployment of one app.
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Its number in the store (0 until stored).
    pub id: i64,
    pub app: String,
    /// The release the app ran when it began.
    pub from: String,
    /// The release it moves to.
    pub to: String,
    pub kind: Kind,
    /// How the planner walks it: the target release's strategy. The same as `kind`, except for
    /// a live refresh, which walks so when it falls back to a restart (a canary's steps for a
    /// canary app).
    pub walks_as: Kind,
    pub phase: Phase,
    /// Why it rolled back, failed or was aborted.
    pub reason: Option<String>,
    pub started_at: Millis,
    pub ended_at: Option<Millis>,
    pub steps: Vec<Step>,
    /// A canary's progress as last recorded (kept in the record so that a restarted daemon
    /// resumes the canary where it was).
    pub progress: Option<Progress>,
    /// The canary run, while it is one (and judged or waiting for its first step).
    pub canary: Option<CanaryRun>,
    /// The live refresh, while it is one and has not fallen back to a rolling restart.
    pub refresh: Option<RefreshRun>,
    /// A canary or blue-green this node runs as its part of a cluster-wide rollout: the
    /// cluster's scheduler sets the new set's share, releases the old set and rolls back.
    pub lead: Option<Lead>,
}

/// A deployment led by the cluster ([`Deployment::lead`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lead {
    /// The whole new set is ready and has been healthy for `min_healthy`.
    pub ready: bool,
    /// The cluster released it: the old set goes (a passed canary, a blue-green's switch).
    pub released: bool,
}

/// What the daemon feeds the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input<'a> {
    /// Where the instances stand: the rolling planner's next moves.
    Plan(&'a Plan<'a>),
    /// The canary backends' cumulative counters: their warm-up ([`crate::canary::WarmUp`]).
    CanaryObserve {
        backends: &'a [(String, SetFigures)],
        warmup_requests: u64,
    },
    /// The canary step's time is up: judge it with the balancer's counters now.
    CanaryJudge {
        counters: &'a Counters,
        spec: &'a CanarySpec,
        bounds: &'a [u64],
    },
    /// `jarfleet promote`: on a paused step the next steps follow; otherwise (or `full`) the
    /// remaining steps are skipped.
    Promote {
        full: bool,
        counters: &'a Counters,
        spec: &'a CanarySpec,
    },
    /// `jarfleet abort` of a judged canary: it fails now.
    CanaryAbort,
    /// Led by the cluster: the new set's share is `percent` at canary step `step` (a new
    /// judging window when either changed).
    LeadShare {
        step: u32,
        percent: u8,
        counters: &'a Counters,
    },
    /// Led by the cluster: the old set goes.
    LeadRelease,
    /// Led by the cluster: the rollout was rolled back across the cluster.
    LeadRollBack { reason: String },
    /// `jarfleet abort` of a rolling or blue-green deployment (or a canary not judged yet):
    /// walks back to the old release.
    RollBack { reason: String },
    /// `jarfleet abort` of a restart: it ends where it stands.
    End { reason: String },
    /// Another command supersedes the deployment (`stop`, a removal, …): it ends as aborted.
    Supersede { by: String },
    /// A live refresh begins: `slots` in turn, told by `on_change` (in words).
    RefreshStart {
        slots: Vec<u32>,
        on_change: String,
        instances: &'a BTreeMap<u32, Option<u64>>,
    },
    /// An instance's answer to its refresh. `instances`: each slot's generation when it
    /// runs (`None` when it does not), for the next one.
    Refreshed {
        slot: u32,
        generation: u64,
        still_there: bool,
        result: Result<String, String>,
        instances: &'a BTreeMap<u32, Option<u64>>,
    },
    /// The refresh of `slot` could not even be sent (its config did not render, …).
    RefreshFailed { slot: u32, error: String },
}

/// What the daemon carries out, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start an instance of `release` in this (free) slot.
    Start { slot: u32, release: String },
    /// A warm standby instance goes back into the balancer.
    Activate { slot: u32 },
    /// A ready instance leaves the balancer but keeps running until `until`.
    Standby { slot: u32, until: Millis },
    /// Persist the instances changed by `Activate`/`Standby` (one snapshot for the switch).
    PersistInstances,
    /// Drain and stop the instance, and remove the slot.
    Retire { slot: u32 },
    /// The balancer's backends or weights change: set them again.
    SyncLb,
    /// The record changed: write it.
    Record,
    Emit {
        kind: EventKind,
        slot: Option<u32>,
        message: String,
    },
    /// Canary: a new judging window begins; the daemon feeds [`Input::CanaryObserve`] after
    /// taking the counters (the machine has already taken them as the window's start).
    Observe,
    /// Feed the machine a [`Plan`] again now (the canary passed or failed, a refresh fell back).
    Drive,
    /// Tell the instance in `slot` (this generation) to re-read its config.
    Refresh { slot: u32, generation: u64 },
    /// The instance in `slot` runs `release` from now on (refreshed, or it will start with it).
    MoveToRelease { slot: u32, release: String },
    /// The deployment ended: write the app's release (`current`, unless it failed), the
    /// record, announce `message` as the end's event, count it, prune old releases.
    Ended {
        outcome: Outcome,
        current: String,
        message: String,
    },
}

impl Deployment {
    /// A new deployment of `app` from `from` to `to`, with its first step.
    pub fn new(app: &str, from: &str, to: &str, kind: Kind, why: &str, now: Millis) -> Self {
        Deployment {
            id: 0,
            app: app.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            kind,
            walks_as: kind,
            phase: Phase::Running,
            reason: None,
            started_at: now,
            ended_at: None,
            steps: vec![Step {
                at: now,
                message: format!("deploying {from} → {to} ({why})"),
            }],
            progress: None,
            canary: None,
            refresh: None,
            lead: None,
        }
    }

    /// The machine of a stored deployment after a daemon restart: `None` when it has ended. A
    /// canary carries on at its step with a new window (the old figures are gone with the old
    /// daemon); a live refresh carries on as a rolling restart.
    pub fn resume(stored: Deployment) -> Option<Deployment> {
        if !stored.is_active() {
            return None;
        }
        let canary = match (&stored.phase, &stored.progress) {
            (Phase::Running, Some(p)) => Some(CanaryRun::resumed(&stored.to, p)),
            _ => None,
        };
        Some(Deployment {
            canary,
            refresh: None,
            ..stored
        })
    }

    pub fn is_active(&self) -> bool {
        matches!(self.phase, Phase::Running | Phase::RollingBack)
    }

    /// A restart: a deployment to the release the app runs.
    pub fn is_restart(&self) -> bool {
        self.from == self.to
    }

    /// The release the deployment currently moves towards.
    pub fn target(&self) -> &str {
        if self.phase == Phase::RollingBack {
            &self.from
        } else {
            &self.to
        }
    }

    /// The table of [`crate::during`]'s view of this deployment.
    pub fn during(&self) -> crate::during::Deployment {
        use crate::during::Kind as K;
        let kind = match self.kind {
            Kind::Refresh => K::Refresh,
            Kind::Canary => K::Canary,
            Kind::BlueGreen => K::BlueGreen,
            Kind::Rolling if self.is_restart() => K::Restart,
            Kind::Rolling => K::Rolling,
        };
        crate::during::Deployment {
            kind,
            rolling_back: self.phase == Phase::RollingBack,
        }
    }

    /// A canary whose steps are not all through: the old set stays.
    pub fn canary_holds(&self) -> bool {
        self.phase == Phase::Running
            && self.walks_as == Kind::Canary
            && !self.canary.as_ref().is_some_and(|c| c.passed)
    }

    /// Led by the cluster and not released yet: the old set stays (and a blue-green's new set
    /// takes no traffic).
    pub fn held_by_cluster(&self) -> bool {
        self.phase == Phase::Running && self.lead.as_ref().is_some_and(|l| !l.released)
    }

    /// Moves the machine on; the effects say what the daemon does, in order.
    pub fn step(&mut self, input: Input<'_>, now: Millis) -> Vec<Effect> {
        if !self.is_active() {
            return Vec::new();
        }
        let mut fx = Vec::new();
        match input {
            Input::Plan(plan) => self.drive(plan, now, &mut fx),
            Input::CanaryObserve {
                backends,
                warmup_requests,
            } => {
                if let Some(run) = self.canary.as_mut() {
                    run.observe(backends, warmup_requests);
                }
            }
            Input::CanaryJudge {
                counters,
                spec,
                bounds,
            } => self.canary_judge(counters, spec, bounds, now, &mut fx),
            Input::Promote {
                full,
                counters,
                spec,
            } => self.promote(full, counters, spec, now, &mut fx),
            Input::CanaryAbort => {
                if self.canary.is_some() {
                    self.canary_fail("aborted by the operator".into(), now, &mut fx);
                }
            }
            Input::LeadShare {
                step,
                percent,
                counters,
            } => self.lead_share(step, percent, counters, now, &mut fx),
            Input::LeadRelease => self.lead_release(now, &mut fx),
            Input::LeadRollBack { reason } => {
                if self.phase != Phase::Running || self.lead.is_none() {
                    return fx;
                }
                if self.canary.is_some() {
                    self.canary_fail(reason, now, &mut fx);
                } else {
                    self.roll_back(&reason, now, &mut fx);
                    fx.push(Effect::SyncLb);
                    fx.push(Effect::Drive);
                }
            }
            Input::RollBack { reason } => {
                // A canary not judged yet (or already through) rolls back like a blue-green;
                // a live refresh (which `during` does not abort) would stop refreshing.
                self.canary = None;
                self.refresh = None;
                self.roll_back(&reason, now, &mut fx);
                fx.push(Effect::SyncLb);
                fx.push(Effect::Drive);
            }
            Input::End { reason } => {
                self.reason = Some(reason.clone());
                self.log(now, reason);
                let from = self.from.clone();
                self.finish(Outcome::Aborted, &from, now, &mut fx);
            }
            Input::Supersede { by } => {
                let reason = format!("superseded by {by}");
                self.reason = Some(match self.reason.take() {
                    Some(r) => format!("{r}; then {reason}"),
                    None => reason.clone(),
                });
                self.refresh = None;
                self.log(now, reason);
                let from = self.from.clone();
                self.finish(Outcome::Aborted, &from, now, &mut fx);
            }
            Input::RefreshStart {
                slots,
                on_change,
                instances,
            } => self.refresh_start(slots, &on_change, instances, now, &mut fx),
            Input::Refreshed {
                slot,
                generation,
                still_there,
                result,
                instances,
            } => self.refreshed(
                slot,
                generation,
                still_there,
                result,
                instances,
                now,
                &mut fx,
            ),
            Input::RefreshFailed { slot, error } => self.refresh_failed(slot, error, now, &mut fx),
        }
        fx
    }

    /// Records a step (with the canary's progress, which goes with every step).
    fn log(&mut self, now: Millis, message: String) {
        self.steps.push(Step { at: now, message });
        if let Some(run) = &self.canary {
            self.progress = Some(run.progress());
        }
    }

    /// Turns to rolling back with `reason`: kept, recorded as a step and announced.
    fn roll_back(&mut self, reason: &str, now: Millis, fx: &mut Vec<Effect>) {
        self.phase = Phase::RollingBack;
        self.reason = Some(reason.to_string());
        let step = format!("rolling back: {reason}");
        self.log(now, step.clone());
        fx.push(Effect::Record);
        fx.push(Effect::Emit {
            kind: EventKind::DeployRollingBack,
            slot: None,
            message: step,
        });
    }

    /// Ends with `outcome`; `current` is the release the app runs from now on.
    fn finish(&mut self, outcome: Outcome, current: &str, now: Millis, fx: &mut Vec<Effect>) {
        self.canary = None;
        self.refresh = None;
        self.phase = Phase::Ended(outcome);
        self.ended_at = Some(now);
        self.steps.push(Step {
            at: now,
            message: format!(
                "{} after {:.1} s",
                outcome.as_str(),
                now.saturating_sub(self.started_at) as f64 / 1000.0
            ),
        });
        let message = match &self.reason {
            Some(r) => format!("deployment #{} {}: {r}", self.id, outcome.as_str()),
            None => format!(
                "deployment #{} {}: {} runs {current}",
                self.id,
                outcome.as_str(),
                self.app
            ),
        };
        fx.push(Effect::Ended {
            outcome,
            current: current.to_string(),
            message,
        });
    }
}
