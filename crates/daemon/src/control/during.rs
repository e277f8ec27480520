//! Operator commands while a deployment runs: each asks `jarfleet_core::during::decide` and
//! goes ahead, supersedes the deployment (ends it as `aborted`, then acts), turns it around
//! (`abort`), or is refused with the deployment named.

use jarfleet_api::DeploymentRecord;
use jarfleet_core::during::{self, Command, Kind, Outcome, Refusal};
use jarfleet_core::instance::AfterStop;
use jarfleet_core::rollout::MemberState;

use super::deploy::{ABORTED, ROLLING_BACK, RUNNING, member, target};
use super::*;

/// The table's view of a deployment record.
fn view(d: &DeploymentRecord) -> during::Deployment {
    let kind = match d.strategy.as_str() {
        "refresh" => Kind::Refresh,
        "canary" => Kind::Canary,
        "blue-green" => Kind::BlueGreen,
        _ if d.from == d.to => Kind::Restart,
        _ => Kind::Rolling,
    };
    during::Deployment {
        kind,
        rolling_back: d.outcome == ROLLING_BACK,
    }
}

impl Control {
    /// What `command` does to `app` now; a refusal is an error naming the deployment.
    pub(super) fn guard(
        &self,
        app: &str,
        command: Command,
        what: &str,
    ) -> Result<Outcome, ErrorBody> {
        let d = self.apps.get(app).and_then(|a| a.deployment.as_ref());
        match during::decide(command, d.map(view)) {
            Outcome::Refuse(why) => Err(self.refused(app, what, why)),
            outcome => Ok(outcome),
        }
    }

    /// The error of a refused command: which deployment, how far it is, what to do.
    pub(super) fn refused(&self, app: &str, what: &str, why: Refusal) -> ErrorBody {
        let hint = why.hint(app);
        let Some((rt, d)) = self
            .apps
            .get(app)
            .and_then(|a| a.deployment.as_ref().map(|d| (a, d)))
        else {
            return usage(format!("{what} {app}: nothing to do"), Some(&hint));
        };
        let towards = target(d);
        let ready = rt
            .slots
            .values()
            .map(|s| member(s, towards, rt.rec.restart_generation))
            .filter(|m| m.target && matches!(m.state, MemberState::Ready { .. }))
            .count();
        let short = |r: &str| r.chars().take(12).collect::<String>();
        let state = if d.outcome == RUNNING {
            "is running"
        } else {
            "is rolling back"
        };
        usage(
            format!(
                "{what} refused: app {app}: deployment #{} ({} {} → {}, {ready} of {} instance(s) on {} ready) {state}",
                d.id,
                d.strategy,
                short(&d.from),
                short(&d.to),
                rt.rec.spec.instances,
                short(towards),
            ),
            Some(&hint),
        )
    }

    /// Ends `app`'s deployment because `by` supersedes it: recorded as `aborted` with that
    /// reason; the app stays on the release it came from. Nothing runs on from here.
    pub(super) fn supersede(&mut self, app: &str, by: &str) {
        let now = self.now_ms();
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(d) = rt.deployment.as_mut() else {
            return;
        };
        let reason = format!("superseded by {by}");
        d.reason = Some(match d.reason.take() {
            Some(r) => format!("{r}; then {reason}"),
            None => reason.clone(),
        });
        let from = d.from.clone();
        rt.refresh = None;
        self.record_step(app, reason, now);
        self.finish(app, ABORTED, &from, now);
    }

    /// `jarfleet stop APP` during a deployment: the deployment ends, the instances of the new
    /// release go, the app keeps its count of stopped instances of the release it came from.
    pub(super) fn stop_superseding(&mut self, app: &str) {
        self.supersede(app, "`jarfleet stop`");
        let Some(rt) = self.apps.get(app) else { return };
        let release = rt.rec.release.clone();
        let count = rt.rec.spec.instances;
        let new: Vec<u32> = rt
            .slots
            .iter()
            .filter(|(_, s)| s.record.instance.release != release)
            .map(|(slot, _)| *slot)
            .collect();
        for slot in new {
            self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Remove,
                },
            );
        }
        // The count the app had (a restart's extra instances go, retired ones come back), then
        // every one of them stopped.
        self.ensure_slots(app, count);
        let keep: Vec<u32> = self
            .apps
            .get(app)
            .map(|a| {
                a.slots
                    .iter()
                    .filter(|(_, s)| {
                        !matches!(
                            s.record.instance.phase,
                            Phase::Stopping {
                                then: AfterStop::Remove,
                                ..
                            }
                        )
                    })
                    .map(|(slot, _)| *slot)
                    .collect()
            })
            .unwrap_or_default();
        for slot in keep {
            self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Halt,
                },
            );
        }
    }

    /// `jarfleet abort APP`: a canary's own abort; a rolling or blue-green deployment walks
    /// back to the old release; a restart ends where it stands.
    pub(super) fn abort(&mut self, app: &str) -> Result<DeploymentRecord, ErrorBody> {
        if self.apps.get(app).is_none_or(|a| a.removing) {
            return Err(self.unknown_app(app));
        }
        let now = self.now_ms();
        let reason = "aborted by the operator".to_string();
        match self.guard(app, Command::Abort, "abort")? {
            Outcome::CanaryAbort
                if self.canary_holds(app)
                    && self.apps.get(app).is_some_and(|a| a.canary.is_some()) =>
            {
                return self.canary_decide(app, false, false);
            }
            Outcome::CanaryAbort | Outcome::RollBack => {
                let Some(rt) = self.apps.get_mut(app) else {
                    return Err(self.unknown_app(app));
                };
                // A canary not judged yet (or already through) rolls back like a blue-green.
                rt.canary = None;
                self.mark_rolling_back(app, &reason, now);
                self.sync_lb(app);
                self.drive(app);
            }
            Outcome::End => {
                let record = self.apps.get(app).and_then(|a| a.deployment.clone());
                self.end_restart(app, &reason, now);
                let id = record.map(|d| d.id);
                return self
                    .store
                    .deployments(Some(app))
                    .ok()
                    .and_then(|all| all.into_iter().find(|d| Some(d.id) == id))
                    .ok_or_else(|| usage(format!("{app}'s deployment ended"), None));
            }
            Outcome::Alongside | Outcome::Supersede | Outcome::Refuse(_) => {}
        }
        self.apps
            .get(app)
            .and_then(|a| a.deployment.clone())
            .ok_or_else(|| usage(format!("{app}'s deployment ended"), None))
    }

    /// A restart aborted: the new instances that are not ready yet go, the app keeps its count
    /// (every instance runs the same release either way).
    fn end_restart(&mut self, app: &str, reason: &str, now: u64) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        if let Some(d) = rt.deployment.as_mut() {
            d.reason = Some(reason.to_string());
        }
        let generation = rt.rec.restart_generation;
        let count = rt.rec.spec.instances;
        let release = rt.rec.release.clone();
        let unready: Vec<u32> = rt
            .slots
            .iter()
            .filter(|(_, s)| {
                s.record.restart_generation >= generation
                    && !matches!(s.record.instance.phase, Phase::Ready { .. })
            })
            .map(|(slot, _)| *slot)
            .collect();
        self.record_step(app, reason.to_string(), now);
        self.finish(app, ABORTED, &release, now);
        for slot in unready {
            self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Remove,
                },
            );
        }
        self.ensure_slots(app, count);
    }
}
