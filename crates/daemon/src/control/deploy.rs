//! Deployments: moving an app from one release to another with the rolling planner
//! (`jarfleet_core::rollout`), rolling back on failure, and recording every step.
//!
//! A deployment is persisted on every change, so a daemon that dies mid-way is followed by one
//! that resumes it: the planner is stateless and reads where things stand from the instances.

use jarfleet_api::{DeployStep, DeploymentRecord, HistoryReport, ReleaseInfo};
use jarfleet_core::during;
use jarfleet_core::events::EventKind;
use jarfleet_core::instance::AfterStop;
use jarfleet_core::rollout::{self, Member, MemberState, Outcome, RolloutParams};
use jarfleet_core::spec::Launch;

use super::*;
use crate::store::ReleaseRecord;

/// Outcomes of a deployment record.
pub(super) const RUNNING: &str = "running";
pub(super) const ROLLING_BACK: &str = "rolling-back";
pub(super) const SUCCEEDED: &str = "succeeded";
pub(super) const ROLLED_BACK: &str = "rolled-back";
const FAILED: &str = "failed";
/// Ended by an operator command: `abort` of a restart, or superseded by `stop` or a removal.
pub(super) const ABORTED: &str = "aborted";

/// The release a deployment currently moves towards.
pub(super) fn target(d: &DeploymentRecord) -> &str {
    if d.outcome == ROLLING_BACK {
        &d.from
    } else {
        &d.to
    }
}

/// How the planner sees an instance: on the target release and, for a restart, started since
/// the restart was asked for (`restart_generation`).
pub(super) fn member(s: &Slot, target: &str, restart_generation: u64) -> Member {
    let i = &s.record.instance;
    let is_target = i.release == target && s.record.restart_generation >= restart_generation;
    let state = match &i.phase {
        Phase::Ready { .. } if s.record.standby_until.is_some() => MemberState::Standby,
        Phase::Ready { since } => MemberState::Ready { since: *since },
        Phase::Unhealthy { .. } | Phase::Failed { .. } => MemberState::Failed,
        Phase::Stopping {
            then: AfterStop::RestartAfterFailure,
            ..
        } => MemberState::Failed,
        Phase::Stopping { .. } => MemberState::Leaving,
        // A stopped old instance is replaced like a crashed one (and removed); a stopped new
        // one fails the deployment (nothing restarts it, so waiting for it would never end).
        Phase::Stopped => MemberState::Failed,
        Phase::Waiting { .. } if i.consecutive_crashes > 0 => MemberState::Failed,
        Phase::Waiting { .. } | Phase::Starting { .. } => MemberState::Starting,
    };
    Member {
        slot: i.slot,
        target: is_target,
        state,
    }
}

/// Why an instance counts as failed, in words.
fn failure_reason(s: &Slot) -> String {
    let i = &s.record.instance;
    let name = i.name();
    match (&i.phase, &i.last_exit, &i.probes.last_error) {
        (Phase::Unhealthy { .. }, _, Some(err)) => format!("{name} turned unhealthy: {err}"),
        (Phase::Stopping { .. }, _, err) => format!(
            "{name} did not pass its health checks in time (start_timeout or unhealthy_restart_after){}",
            err.as_ref()
                .map(|e| format!("; last check: {e}"))
                .unwrap_or_default()
        ),
        (Phase::Stopped, _, _) => format!("{name} was stopped"),
        (_, Some((_, class)), _) => format!("{name} {}", class.describe()),
        (_, _, Some(err)) => format!("{name} failed its health checks: {err}"),
        _ => format!("{name} failed"),
    }
}

impl Control {
    /// Starts moving `app` to `release` (which must be recorded in the app's releases).
    pub(super) fn start_deployment(
        &mut self,
        app: &str,
        to: &str,
        why: &str,
    ) -> Result<DeploymentRecord, ErrorBody> {
        let Some(rt) = self.apps.get(app).filter(|a| !a.removing) else {
            return Err(self.unknown_app(app));
        };
        if rt.deployment.is_some() {
            // Every caller asked `during::decide` first; this is the net under them.
            return Err(self.refused(app, "a new deployment", during::Refusal::WaitOrAbort));
        }
        let from = rt.rec.release.clone();
        if from == to && why != "restart" {
            return Err(usage(format!("{app} already runs release {to}"), None));
        }
        let strategy = rt.rec.release(to).0.deploy.strategy;
        let now = self.now_ms();
        let mut rec = DeploymentRecord {
            id: 0,
            app: app.to_string(),
            from: from.clone(),
            to: to.to_string(),
            strategy: serde_json::to_value(strategy)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "rolling".into()),
            outcome: RUNNING.into(),
            reason: None,
            started_at: now,
            ended_at: None,
            steps: vec![DeployStep {
                at: now,
                message: format!("deploying {from} → {to} ({why})"),
            }],
            canary: None,
        };
        rec.id = self
            .store
            .put_deployment(&rec)
            .map_err(|e| failed(format!("recording the deployment: {e:#}")))?;
        self.emit(
            EventKind::DeployStarted,
            Some(app),
            None,
            format!(
                "deployment #{}: {from} → {to} ({why}), {}",
                rec.id, rec.strategy
            ),
        );
        if let Some(rt) = self.apps.get_mut(app) {
            rt.deployment = Some(rec.clone());
        }
        Ok(rec)
    }

    /// Records `release` of `app` (spec + JDK) so its instances can be started at any time.
    pub(super) fn remember_release(&mut self, app: &str, release: &str, rec: ReleaseRecord) {
        if let Some(rt) = self.apps.get_mut(app) {
            rt.rec.releases.entry(release.to_string()).or_insert(rec);
            let w = Write::App {
                name: app.to_string(),
                record: Box::new(rt.rec.clone()),
                now: self.now_ms(),
            };
            self.write(w);
        }
    }

    /// Records the app's current release from its current spec, if it is not recorded yet (apps
    /// created before releases were kept, or before the spec changes).
    pub(super) fn remember_current_release(&mut self, app: &str) {
        let Some(rt) = self.apps.get(app) else { return };
        if rt.rec.releases.contains_key(&rt.rec.release) {
            return;
        }
        let rec = ReleaseRecord {
            spec: rt.rec.spec.clone(),
            runtime: rt.rec.runtime.clone(),
            version: None,
            created_at: self.now_ms(),
        };
        let release = rt.rec.release.clone();
        self.remember_release(app, &release, rec);
    }

    /// Moves every running deployment one planner step forward.
    pub(super) fn drive_deployments(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let active: Vec<String> = self
            .apps
            .iter()
            .filter(|(_, a)| a.deployment.is_some() && !a.removing)
            .map(|(n, _)| n.clone())
            .collect();
        for app in active {
            self.drive(&app);
        }
    }

    pub(super) fn drive(&mut self, app: &str) {
        if self.refreshing(app) {
            // A live config refresh moves the instances itself (see `refresh`).
            return;
        }
        let now = self.now_ms();
        let Some(rt) = self.apps.get(app) else { return };
        let Some(d) = rt.deployment.clone() else {
            return;
        };
        let target = target(&d).to_string();
        let spec = rt.rec.release(&target).0;
        let params = RolloutParams {
            instances: rt.rec.spec.instances,
            max_surge: spec.deploy.max_surge,
            max_unavailable: spec.deploy.max_unavailable,
            min_healthy: spec.deploy.min_healthy,
            switch: matches!(
                spec.deploy.strategy,
                jarfleet_core::spec::Strategy::BlueGreen | jarfleet_core::spec::Strategy::Canary
            ),
            keep_old: spec.deploy.strategy == jarfleet_core::spec::Strategy::BlueGreen
                && !spec.deploy.keep_old.is_zero(),
            hold: self.canary_holds(app),
        };
        let keep_old_ms = spec.deploy.keep_old.as_millis() as u64;
        let auto_rollback = spec.deploy.auto_rollback;
        let generation = rt.rec.restart_generation;
        let members: Vec<Member> = rt
            .slots
            .values()
            .map(|s| member(s, &target, generation))
            .collect();
        let steps = rollout::next_steps(&params, &members, now);
        let restart_generation = rt.rec.restart_generation;
        if params.hold {
            let min_healthy = spec.deploy.min_healthy.as_millis() as u64;
            let healthy = members
                .iter()
                .filter(|m| {
                    m.target
                        && matches!(m.state, MemberState::Ready { since } if now >= since + min_healthy)
                })
                .count() as u32;
            self.canary_begin(app, healthy >= params.instances, now);
        }
        let mut log = Vec::new();
        for slot in &steps.start {
            if let Some(rt) = self.apps.get_mut(app) {
                let record = InstanceRecord {
                    instance: Instance::new(app, *slot, &target, now),
                    generation: 0,
                    restart_generation,
                    pending_port: None,
                    last_port: None,
                    standby_until: None,
                    dirty: true,
                };
                rt.slots.insert(
                    *slot,
                    Slot {
                        record,
                        commands: None,
                        cpu: None,
                    },
                );
            }
            log.push(format!("start {app}/{slot} on {target}"));
        }
        let switched = !steps.standby.is_empty() || !steps.activate.is_empty();
        for slot in &steps.activate {
            if let Some(s) = self.slot_mut(app, *slot) {
                s.record.standby_until = None;
                s.record.dirty = true;
            }
            log.push(format!("switch back to the warm {app}/{slot}"));
        }
        for slot in &steps.standby {
            if let Some(s) = self.slot_mut(app, *slot) {
                s.record.standby_until = Some(now + keep_old_ms);
                s.record.dirty = true;
            }
            log.push(format!(
                "{app}/{slot} out of traffic, kept warm for {} s",
                keep_old_ms / 1000
            ));
        }
        if switched {
            // One snapshot for the whole switch.
            self.persist_dirty();
            self.sync_lb(app);
        }
        for slot in &steps.retire {
            log.push(format!("retire {app}/{slot}"));
            self.step(
                app,
                *slot,
                Input::Stop {
                    then: AfterStop::Remove,
                },
            );
        }
        match steps.outcome {
            None => {}
            Some(Outcome::Done) => {
                let rolled_back = d.outcome == ROLLING_BACK;
                self.finish(
                    app,
                    if rolled_back { ROLLED_BACK } else { SUCCEEDED },
                    &target,
                    now,
                );
                return;
            }
            Some(Outcome::Failed { slot, .. }) => {
                let reason = self
                    .apps
                    .get(app)
                    .and_then(|a| a.slots.get(&slot))
                    .map(failure_reason)
                    .unwrap_or_else(|| format!("{app}/{slot} failed"));
                // A restart has nothing to roll back to; the supervisor keeps restarting.
                if d.outcome == ROLLING_BACK || !auto_rollback || d.from == d.to {
                    self.record_step(app, format!("failed: {reason}"), now);
                    if let Some(rt) = self.apps.get_mut(app)
                        && let Some(d) = rt.deployment.as_mut()
                    {
                        d.reason = Some(
                            d.reason
                                .clone()
                                .map_or(reason.clone(), |r| format!("{r}; then {reason}")),
                        );
                    }
                    self.finish(app, FAILED, &d.from, now);
                    return;
                }
                self.mark_rolling_back(app, &reason, now);
                return;
            }
        }
        for message in log {
            self.record_step(app, message, now);
        }
    }

    pub(super) fn record_step(&mut self, app: &str, message: String, now: u64) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(d) = rt.deployment.as_mut() else {
            return;
        };
        d.steps.push(DeployStep { at: now, message });
        // Every change of a canary's state is recorded as a step: its progress goes with it.
        if let Some(run) = &rt.canary {
            d.canary = Some(run.progress());
        }
        let w = Write::Deployment(Box::new(d.clone()));
        self.write(w);
    }

    /// Ends the app's deployment with `outcome`; `current` is the release the app now runs.
    /// `app`'s deployment turns to rolling back with `reason`: kept in its record, recorded
    /// as a step and announced.
    pub(super) fn mark_rolling_back(&mut self, app: &str, reason: &str, now: u64) {
        if let Some(d) = self.apps.get_mut(app).and_then(|rt| rt.deployment.as_mut()) {
            d.outcome = ROLLING_BACK.into();
            d.reason = Some(reason.to_string());
        }
        let step = format!("rolling back: {reason}");
        self.record_step(app, step.clone(), now);
        self.emit(EventKind::DeployRollingBack, Some(app), None, step);
    }

    pub(super) fn finish(&mut self, app: &str, outcome: &str, current: &str, now: u64) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(mut d) = rt.deployment.take() else {
            return;
        };
        rt.canary = None;
        if outcome != FAILED {
            rt.rec.release = current.to_string();
            let (spec, runtime) = rt.rec.release(current);
            let (mut spec, runtime) = (spec.clone(), runtime.clone());
            // The desired count and live settings stay as the user set them.
            jarfleet_core::reconcile::keep_live_settings(&mut spec, &rt.rec.spec);
            rt.rec.spec = spec;
            rt.rec.runtime = runtime;
            let w = Write::App {
                name: app.to_string(),
                record: Box::new(rt.rec.clone()),
                now,
            };
            self.write(w);
        }
        d.outcome = outcome.to_string();
        d.ended_at = Some(now);
        d.steps.push(DeployStep {
            at: now,
            message: format!(
                "{outcome} after {:.1} s",
                now.saturating_sub(d.started_at) as f64 / 1000.0
            ),
        });
        self.write(Write::Deployment(Box::new(d.clone())));
        let message = match &d.reason {
            Some(r) => format!("deployment #{} {outcome}: {r}", d.id),
            None => format!("deployment #{} {outcome}: {app} runs {current}", d.id),
        };
        // `finish` is only given the four ends (the constants above).
        debug_assert!(EventKind::of_deployment_end(outcome).is_some(), "{outcome}");
        let kind = EventKind::of_deployment_end(outcome).unwrap_or(EventKind::DeployFailed);
        self.emit(kind, Some(app), None, message);
        self.count_deployment(app, &d.strategy, outcome);
        let previous = d.from.clone();
        self.prune_releases(app, current, &previous);
        self.prune_metrics(app);
        self.etcd_after_deployment(app);
        if outcome == FAILED {
            // A failed rollout stops where it is: the instances it started beyond `instances`
            // are stopped (the newest slots, as in a scale down), or the app keeps them forever.
            let wanted = self.apps.get(app).map(|a| a.rec.spec.instances);
            if let Some(n) = wanted {
                self.ensure_slots(app, n);
            }
        }
        // Without a canary, every backend weighs the same again.
        self.sync_lb(app);
    }

    /// Keeps the newest `keep_releases` releases of `app` (never `current` nor `previous`) and
    /// deletes the others' records and jar copies.
    fn prune_releases(&mut self, app: &str, current: &str, previous: &str) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let keep = rt.rec.spec.deploy.keep_releases.max(2) as usize;
        let mut by_age: Vec<(u64, String)> = rt
            .rec
            .releases
            .iter()
            .map(|(id, r)| (r.created_at, id.clone()))
            .collect();
        by_age.sort();
        let in_use: std::collections::BTreeSet<&str> = rt
            .slots
            .values()
            .map(|s| s.record.instance.release.as_str())
            .chain([current, previous])
            .collect();
        let excess = by_age.len().saturating_sub(keep);
        let doomed: Vec<String> = by_age
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| !in_use.contains(id.as_str()))
            .take(excess)
            .collect();
        if doomed.is_empty() {
            return;
        }
        for id in &doomed {
            rt.rec.releases.remove(id);
        }
        let w = Write::App {
            name: app.to_string(),
            record: Box::new(rt.rec.clone()),
            now: self.now_ms(),
        };
        self.write(w);
        for id in &doomed {
            let dir = self.dirs.root().join("releases").join(app).join(id);
            let _ = std::fs::remove_dir_all(dir);
        }
        self.emit(
            EventKind::ReleasePruned,
            Some(app),
            None,
            format!(
                "pruned {} old release(s): {}",
                doomed.len(),
                doomed.join(", ")
            ),
        );
    }

    /// `jarfleet deploy`: a prepared release of a new artifact.
    pub(super) fn deploy(
        &mut self,
        app: &str,
        prepared: PreparedApp,
        version: Option<String>,
    ) -> Result<DeploymentRecord, ErrorBody> {
        if self.apps.get(app).is_none_or(|a| a.removing) {
            return Err(self.unknown_app(app));
        }
        self.guard(app, during::Command::Deploy, "deploy")?;
        let why = match &version {
            Some(v) => format!("version {v}"),
            None => "new artifact".to_string(),
        };
        let release = self.record_release(app, prepared, version);
        self.start_deployment(app, &release, &why)
    }

    /// Stores a prepared release of `app` (and the current one, if it is not yet): it can be
    /// started, deployed and rolled back to from now on. Its id.
    pub(super) fn record_release(
        &mut self,
        app: &str,
        prepared: PreparedApp,
        version: Option<String>,
    ) -> String {
        self.remember_current_release(app);
        let now = self.now_ms();
        self.write(Write::Release {
            app: app.to_string(),
            id: prepared.release.clone(),
            record: prepared.release_record.clone(),
            now,
        });
        let release = prepared.release.clone();
        self.remember_release(
            app,
            &release,
            ReleaseRecord {
                spec: prepared.spec,
                runtime: prepared.runtime,
                version,
                created_at: now,
            },
        );
        release
    }

    /// `jarfleet rollback`: back to the previous release, or to `to` (release id prefix or
    /// version), through the same health-gated path.
    pub(super) fn rollback(
        &mut self,
        app: &str,
        to: Option<&str>,
    ) -> Result<DeploymentRecord, ErrorBody> {
        if self.apps.get(app).is_none_or(|a| a.removing) {
            return Err(self.unknown_app(app));
        }
        self.guard(app, during::Command::Rollback, "rollback")?;
        let Some(rt) = self.apps.get(app) else {
            return Err(self.unknown_app(app));
        };
        let current = rt.rec.release.clone();
        let target = match to {
            Some(want) => {
                let found: Vec<&String> = rt
                    .rec
                    .releases
                    .iter()
                    .filter(|(id, r)| id.starts_with(want) || r.version.as_deref() == Some(want))
                    .map(|(id, _)| id)
                    .collect();
                match found.as_slice() {
                    [one] => (*one).clone(),
                    [] => {
                        return Err(usage(
                            format!("{app} has no release {want:?}"),
                            Some("`jarfleet history APP` lists its releases"),
                        ));
                    }
                    _ => {
                        return Err(usage(
                            format!(
                                "{want:?} matches several releases of {app}; give more of the id"
                            ),
                            None,
                        ));
                    }
                }
            }
            None => {
                let deployments = self.store.deployments(Some(app)).unwrap_or_default();
                let previous = deployments
                    .iter()
                    .rev()
                    .find(|d| d.outcome == SUCCEEDED && d.to == current)
                    .map(|d| d.from.clone());
                match previous {
                    Some(p) if rt.rec.releases.contains_key(&p) => p,
                    _ => {
                        return Err(usage(
                            format!("{app} has no previous release to go back to"),
                            Some(
                                "`jarfleet rollback APP --to RELEASE` names one; `jarfleet history APP` lists them",
                            ),
                        ));
                    }
                }
            }
        };
        self.start_deployment(app, &target, "rollback")
    }

    /// `jarfleet history`: releases and deployments.
    pub(super) fn history(&self, app: &str) -> Result<HistoryReport, ErrorBody> {
        let Some(rt) = self.apps.get(app) else {
            return Err(self.unknown_app(app));
        };
        let mut releases: Vec<ReleaseInfo> = rt
            .rec
            .releases
            .iter()
            .map(|(id, r)| ReleaseInfo {
                id: id.clone(),
                version: r.version.clone(),
                created_at: r.created_at,
                current: *id == rt.rec.release,
                artifact: match &r.spec.launch {
                    Launch::Jar { path, .. } => path.display().to_string(),
                    Launch::MainClass { main_class, .. } => main_class.clone(),
                },
            })
            .collect();
        releases.sort_by_key(|r| r.created_at);
        let deployments = self
            .store
            .deployments(Some(app))
            .map_err(|e| failed(format!("reading deployments: {e:#}")))?;
        Ok(HistoryReport {
            app: app.to_string(),
            current: rt.rec.release.clone(),
            releases,
            deployments,
        })
    }
}
