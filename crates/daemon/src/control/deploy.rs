//! Deployments: moving an app from one release to another. The decisions are the pure machine
//! `jarfleet_core::deployment::Deployment`; this module feeds it where the instances stand and
//! carries out its effects (start and retire slots, switch the balancer, persist, announce).
//!
//! A deployment is persisted on every change, so a daemon that dies mid-way is followed by one
//! that resumes it: the stored record is a projection of the machine, and the machine is
//! rebuilt from it (`resume`); the planner is stateless and reads where things stand from the
//! instances.

use std::collections::BTreeMap;

use jarfleet_api::{CanaryProgress, DeployStep, DeploymentRecord, HistoryReport, ReleaseInfo};
use jarfleet_core::deployment::{self as machine, Counters, Deployment, Kind, Outcome, Plan};
use jarfleet_core::during;
use jarfleet_core::events::EventKind;
use jarfleet_core::instance::AfterStop;
use jarfleet_core::rollout::{Member, MemberState, RolloutParams};
use jarfleet_core::spec::Launch;

use super::*;
use crate::store::ReleaseRecord;

/// The stored and wire record of a deployment: a projection of the machine.
pub(super) fn record(d: &Deployment) -> DeploymentRecord {
    DeploymentRecord {
        id: d.id,
        app: d.app.clone(),
        from: d.from.clone(),
        to: d.to.clone(),
        strategy: d.kind.as_str().to_string(),
        outcome: d.phase.as_str().to_string(),
        reason: d.reason.clone(),
        started_at: d.started_at,
        ended_at: d.ended_at,
        steps: d
            .steps
            .iter()
            .map(|s| DeployStep {
                at: s.at,
                message: s.message.clone(),
            })
            .collect(),
        canary: d.progress.map(|p| CanaryProgress {
            step: p.step,
            percent: p.percent,
            paused: p.paused,
            passed: p.passed,
        }),
    }
}

/// The machine of a stored deployment that was under way when the last daemon stopped (`None`
/// when it has ended). `walks_as`: the target release's strategy (a refresh that falls back to a
/// restart walks so).
pub(super) fn resume(r: DeploymentRecord, walks_as: Kind) -> Option<Deployment> {
    // An outcome this version does not know is not resumed.
    let phase = machine::Phase::parse(&r.outcome)?;
    Deployment::resume(Deployment {
        id: r.id,
        kind: Kind::parse(&r.strategy),
        walks_as,
        phase,
        reason: r.reason,
        started_at: r.started_at,
        ended_at: r.ended_at,
        steps: r
            .steps
            .into_iter()
            .map(|s| machine::Step {
                at: s.at,
                message: s.message,
            })
            .collect(),
        progress: r.canary.map(|p| machine::Progress {
            step: p.step,
            percent: p.percent,
            paused: p.paused,
            passed: p.passed,
        }),
        canary: None,
        refresh: None,
        lead: None,
        app: r.app,
        from: r.from,
        to: r.to,
    })
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
        // Stopped to start again at once (`start` while it was being stopped): it comes back in
        // its slot, so it counts as starting, not as gone — or the planner starts another one
        // beside it and the deployment runs more than `instances + max_surge`.
        Phase::Stopping {
            then: AfterStop::Restart,
            ..
        } => MemberState::Starting,
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
        let kind = Kind::of_strategy(rt.rec.release(to).0.deploy.strategy);
        let now = self.now_ms();
        let mut d = Deployment::new(app, &from, to, kind, why, now);
        if self.led_by_cluster(app, &from, to) {
            d.lead = Some(Default::default());
        }
        // Its id comes from the store, so it is written at once — after the writes kept while
        // the store failed, or the store could hold it beside an older deployment still open.
        self.flush_kept()
            .map_err(|e| failed(format!("recording the deployment: {e}")))?;
        let inserted = self.store_target().insert_deployment(&record(&d));
        d.id = match inserted {
            Ok(id) => id,
            Err(e) => {
                let error = format!("{e:#}");
                // What waits for the store (an etcd change) is told when it takes writes again.
                let change = self.persist.borrow_mut().refused(error.clone(), now);
                if let Some(change) = change {
                    self.store_changed(change);
                }
                return Err(failed(format!("recording the deployment: {error}")));
            }
        };
        self.emit(
            EventKind::DeployStarted,
            Some(app),
            None,
            format!(
                "deployment #{}: {from} → {to} ({why}), {}",
                d.id,
                kind.as_str()
            ),
        );
        let rec = record(&d);
        if let Some(rt) = self.apps.get_mut(app) {
            rt.deployment = Some(d);
        }
        Ok(rec)
    }

    /// Records `release` of `app` (spec + JDK) so its instances can be started at any time.
    pub(super) fn remember_release(&mut self, app: &str, release: &str, rec: ReleaseRecord) {
        if let Some(rt) = self.apps.get_mut(app) {
            if rt.rec.releases.contains_key(release) {
                // Already recorded (a release is immutable): nothing to write.
                return;
            }
            rt.rec.releases.insert(release.to_string(), rec);
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

    /// Feeds `app`'s deployment where its instances stand, and carries out what it answers.
    pub(super) fn drive(&mut self, app: &str) {
        if self.refreshing(app) {
            // A live config refresh moves the instances itself (see `refresh`).
            return;
        }
        let now = self.now_ms();
        let Some(rt) = self.apps.get(app) else { return };
        let Some(d) = rt.deployment.as_ref() else {
            return;
        };
        let target = d.target().to_string();
        let spec = rt.rec.release(&target).0;
        // A cluster node without room for the surge replaces its instances in place.
        let in_place = self
            .cluster
            .as_ref()
            .is_some_and(|c| c.in_place.contains(app));
        let params = RolloutParams {
            instances: rt.rec.spec.instances,
            max_surge: if in_place { 0 } else { spec.deploy.max_surge },
            max_unavailable: if in_place {
                spec.deploy.max_unavailable.max(1)
            } else {
                spec.deploy.max_unavailable
            },
            min_healthy: spec.deploy.min_healthy,
            switch: matches!(
                spec.deploy.strategy,
                jarfleet_core::spec::Strategy::BlueGreen | jarfleet_core::spec::Strategy::Canary
            ),
            keep_old: spec.deploy.strategy == jarfleet_core::spec::Strategy::BlueGreen
                && !spec.deploy.keep_old.is_zero(),
            // The machine's own.
            hold: false,
            in_place,
        };
        let keep_old_ms = spec.deploy.keep_old.as_millis() as u64;
        let auto_rollback = spec.deploy.auto_rollback;
        let canary_steps = rt.rec.release(&d.to).0.deploy.canary.steps.clone();
        let generation = rt.rec.restart_generation;
        let members: Vec<Member> = rt
            .slots
            .values()
            .map(|s| member(s, &target, generation))
            .collect();
        let failures: BTreeMap<u32, String> = members
            .iter()
            .filter(|m| m.state == MemberState::Failed)
            .filter_map(|m| rt.slots.get(&m.slot).map(|s| (m.slot, failure_reason(s))))
            .collect();
        let counters = if d.canary_holds() {
            self.canary_counters(app)
        } else {
            Counters::default()
        };
        // A cluster node's new instances take its assigned slot numbers first: one replaced
        // in place keeps its number, and fewer are started again at the end to get them back.
        let preferred_slots: Vec<u32> = self
            .assigned_slots(app)
            .map(|s| s.into_iter().collect())
            .unwrap_or_default();
        let plan = Plan {
            params,
            members: &members,
            keep_old_ms,
            auto_rollback,
            canary_steps: &canary_steps,
            failures: &failures,
            counters: &counters,
            preferred_slots: &preferred_slots,
        };
        self.feed(app, machine::Input::Plan(&plan), now);
    }

    /// Feeds `input` to `app`'s deployment and carries out its effects.
    pub(super) fn feed(&mut self, app: &str, input: machine::Input<'_>, now: u64) {
        let Some(d) = self.apps.get_mut(app).and_then(|a| a.deployment.as_mut()) else {
            return;
        };
        let effects = d.step(input, now);
        for effect in effects {
            self.carry_out(app, effect, now);
        }
    }

    fn carry_out(&mut self, app: &str, effect: machine::Effect, now: u64) {
        use machine::Effect as E;
        match effect {
            E::Start { slot, release } => {
                if let Some(rt) = self.apps.get_mut(app) {
                    let generation = rt.rec.restart_generation;
                    rt.slots
                        .insert(slot, Slot::new(app, slot, &release, generation, now));
                }
            }
            E::Activate { slot } => {
                if let Some(s) = self.slot_mut(app, slot) {
                    s.record.standby_until = None;
                    s.record.dirty = true;
                }
            }
            E::Standby { slot, until } => {
                if let Some(s) = self.slot_mut(app, slot) {
                    s.record.standby_until = Some(until);
                    s.record.dirty = true;
                }
            }
            // One snapshot for the whole switch.
            E::PersistInstances => self.persist_dirty(),
            E::Retire { slot } => self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Remove,
                },
            ),
            E::SyncLb => self.sync_lb(app),
            E::Record => {
                if let Some(d) = self.apps.get(app).and_then(|a| a.deployment.as_ref()) {
                    let w = Write::Deployment(Box::new(record(d)));
                    self.write(w);
                }
            }
            E::Emit {
                kind,
                slot,
                message,
            } => self.emit(kind, Some(app), slot, message),
            E::Observe => self.canary_observe(Some(app)),
            E::Drive => self.drive(app),
            E::Refresh { slot, generation } => self.refresh_send(app, slot, generation),
            E::MoveToRelease { slot, release } => self.move_to_release(app, slot, &release),
            E::Ended {
                outcome,
                current,
                message,
            } => self.finish(app, outcome, &current, message, now),
        }
    }

    /// The app's deployment ended with `outcome`; `current` is the release the app now runs.
    fn finish(&mut self, app: &str, outcome: Outcome, current: &str, message: String, now: u64) {
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let Some(d) = rt.deployment.take() else {
            return;
        };
        if outcome != Outcome::Failed {
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
        self.write(Write::Deployment(Box::new(record(&d))));
        self.emit(outcome.event(), Some(app), None, message);
        if current == d.to || matches!(outcome, Outcome::RolledBack | Outcome::Failed) {
            self.cluster_deployment_ended(app, &d.to, current == d.to);
        }
        self.count_deployment(app, d.kind.as_str(), outcome.as_str());
        self.prune_releases(app, current, &d.from);
        self.prune_metrics(app);
        self.etcd_after_deployment(app);
        if outcome == Outcome::Failed {
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
            let dir = self.dirs.release_dir(app, id);
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
        let mut prepared = prepared;
        self.adopt_stored_id(app, &mut prepared);
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
                    .find(|d| d.outcome == Outcome::Succeeded.as_str() && d.to == current)
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
                jdk: Some(super::commands::java_label(&r.runtime)),
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
            cluster_rollout: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as daemons before the machine stored them (JSON in the store's `deployments`).
    const STORED: [&str; 3] = [
        r#"{"id":3,"app":"web","from":"r1","to":"r2","strategy":"canary","outcome":"running","reason":null,"started_at":1000,"ended_at":null,"steps":[{"at":1000,"message":"deploying r1 → r2 (new artifact)"},{"at":2000,"message":"canary step 2 of 4: 25 % of the traffic"}],"canary":{"step":1,"percent":25,"paused":true,"passed":false}}"#,
        r#"{"id":4,"app":"web","from":"r1","to":"r2","strategy":"blue-green","outcome":"rolling-back","reason":"web/3 exited with status 9","started_at":1000,"ended_at":null,"steps":[{"at":1000,"message":"deploying r1 → r2 (version 2)"}]}"#,
        r#"{"id":5,"app":"web","from":"r2","to":"r3","strategy":"refresh","outcome":"running","reason":null,"started_at":1000,"ended_at":null,"steps":[]}"#,
    ];

    #[test]
    fn a_stored_record_resumes_and_projects_back_to_the_same_json() {
        for json in STORED {
            let stored: DeploymentRecord =
                serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            let m = resume(stored.clone(), Kind::Rolling)
                .unwrap_or_else(|| panic!("{json} did not resume"));
            let back = serde_json::to_string(&record(&m)).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(back, json);
        }
    }

    #[test]
    fn a_resumed_canary_carries_on_at_its_step_and_a_refresh_as_a_rolling_restart() {
        let canary = resume(
            serde_json::from_str(STORED[0]).unwrap_or_else(|e| panic!("{e}")),
            Kind::Canary,
        );
        let run = canary.as_ref().and_then(|d| d.canary.as_ref());
        assert_eq!(
            run.map(|r| (r.step, r.percent, r.paused)),
            Some((1, 25, true))
        );
        let refresh = resume(
            serde_json::from_str(STORED[2]).unwrap_or_else(|e| panic!("{e}")),
            Kind::Rolling,
        );
        assert!(refresh.is_some_and(|d| d.refresh.is_none() && d.kind == Kind::Refresh));
    }

    #[test]
    fn ended_or_unknown_records_are_not_resumed() {
        for outcome in ["succeeded", "rolled-back", "failed", "aborted", "sideways"] {
            let json = STORED[1].replace("rolling-back", outcome);
            let stored: DeploymentRecord =
                serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            assert!(resume(stored, Kind::Rolling).is_none(), "{outcome}");
        }
    }
}
