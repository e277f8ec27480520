//! Operator commands while a deployment runs: each asks `jarfleet_core::during::decide` and
//! goes ahead, supersedes the deployment (ends it as `aborted`, then acts), turns it around
//! (`abort`), or is refused with the deployment named.

use jarfleet_api::DeploymentRecord;
use jarfleet_core::deployment::{self as machine, Deployment};
use jarfleet_core::during::{self, Command, Outcome, Refusal};
use jarfleet_core::instance::AfterStop;
use jarfleet_core::rollout::MemberState;

use super::deploy::{member, record};
use super::*;

impl Control {
    /// What `command` does to `app` now; a refusal is an error naming the deployment.
    pub(super) fn guard(
        &self,
        app: &str,
        command: Command,
        what: &str,
    ) -> Result<Outcome, ErrorBody> {
        let d = self.apps.get(app).and_then(|a| a.deployment.as_ref());
        match during::decide(command, d.map(Deployment::during)) {
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
        let towards = d.target();
        let ready = rt
            .slots
            .values()
            .map(|s| member(s, towards, rt.rec.restart_generation))
            .filter(|m| m.target && matches!(m.state, MemberState::Ready { .. }))
            .count();
        let short = |r: &str| r.chars().take(12).collect::<String>();
        let state = if d.phase == machine::Phase::Running {
            "is running"
        } else {
            "is rolling back"
        };
        usage(
            format!(
                "{what} refused: app {app}: deployment #{} ({} {} → {}, {ready} of {} instance(s) on {} ready) {state}",
                d.id,
                d.kind.as_str(),
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
        let by = by.to_string();
        self.feed(app, machine::Input::Supersede { by }, self.now_ms());
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
                    .filter(|(_, s)| !s.being_removed())
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
                    && self.apps.get(app).is_some_and(|a| a.canary().is_some()) =>
            {
                return self.canary_decide(app, false, false);
            }
            Outcome::CanaryAbort | Outcome::RollBack => {
                self.feed(app, machine::Input::RollBack { reason }, now);
            }
            Outcome::End => {
                let ended = self.end_restart(app, reason, now);
                let id = ended.map(|d| d.id);
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
            .and_then(|a| a.deployment.as_ref())
            .map(record)
            .ok_or_else(|| usage(format!("{app}'s deployment ended"), None))
    }

    /// A restart aborted: the new instances that are not ready yet go, the app keeps its count
    /// (every instance runs the same release either way). The deployment it ended.
    fn end_restart(&mut self, app: &str, reason: String, now: u64) -> Option<DeploymentRecord> {
        let rt = self.apps.get(app)?;
        let ended = rt.deployment.as_ref().map(record);
        let generation = rt.rec.restart_generation;
        let count = rt.rec.spec.instances;
        let unready: Vec<u32> = rt
            .slots
            .iter()
            .filter(|(_, s)| {
                s.record.restart_generation >= generation
                    && !matches!(s.record.instance.phase, Phase::Ready { .. })
            })
            .map(|(slot, _)| *slot)
            .collect();
        self.feed(app, machine::Input::End { reason }, now);
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
        ended
    }
}
