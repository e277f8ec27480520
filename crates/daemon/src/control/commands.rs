//! API commands: apply (plan, pre-flight, change), start/stop/restart, scale, shutdown.

use jarfleet_core::during;
use jarfleet_core::events::EventKind;

use super::*;

impl Control {
    pub(super) fn apply(
        &mut self,
        mut desired: BTreeMap<String, PreparedApp>,
        daemon: &jarfleet_core::spec::DaemonSpec,
        source: PathBuf,
        dry_run: bool,
    ) -> Result<ApplyResponse, ErrorBody> {
        for (app, p) in desired.iter_mut() {
            self.adopt_stored_id(app, p);
        }
        let mut plan = self.plan_apply(&desired);
        self.spec_behind_deployments(&mut plan);
        self.during_deployments(&plan)?;
        self.preflight(&plan, &desired)?;
        if !dry_run {
            self.store_daemon_settings(daemon)?;
            self.set_metrics_enabled(daemon.metrics);
        }
        if dry_run || plan.is_empty() {
            return Ok(ApplyResponse {
                plan,
                applied: !dry_run,
            });
        }
        self.spec_source = Some(source.display().to_string());
        self.write(Write::Meta {
            key: "spec_source".into(),
            value: source.display().to_string(),
        });
        let now = self.now_ms();
        for change in &plan.changes {
            self.apply_change(change, &desired, now)?;
        }
        Ok(ApplyResponse {
            plan,
            applied: true,
        })
    }

    /// Cluster mode: runs the apps the cluster assigned this node (each with as many instances
    /// as slots assigned here) through `apply`'s plan, checks and changes; the spec file and
    /// the `[daemon]` settings are not this path's.
    pub(super) fn apply_apps(
        &mut self,
        mut desired: BTreeMap<String, PreparedApp>,
    ) -> Result<reconcile::Plan, ErrorBody> {
        for (app, p) in desired.iter_mut() {
            self.adopt_stored_id(app, p);
        }
        let mut plan = self.plan_apply(&desired);
        self.spec_behind_deployments(&mut plan);
        self.during_deployments(&plan)?;
        self.preflight(&plan, &desired)?;
        let now = self.now_ms();
        for change in &plan.changes {
            self.apply_change(change, &desired, now)?;
        }
        Ok(plan)
    }

    /// What `apply` would change: every app's current state (where a deployment under way
    /// takes it) against the desired one.
    fn plan_apply(&self, desired: &BTreeMap<String, PreparedApp>) -> reconcile::Plan {
        // An app with a deployment under way is compared with where the deployment takes it
        // (its release, with the live settings as they are), so the plan is what `apply` does.
        let heading: BTreeMap<String, (AppSpec, String, String)> = self
            .apps
            .iter()
            .filter(|(_, a)| !a.removing)
            .map(|(n, a)| {
                let (spec, release) = match &a.deployment {
                    Some(d) => {
                        let release = d.target().to_string();
                        let mut spec = a.rec.release(&release).0.clone();
                        reconcile::keep_live_settings(&mut spec, &a.rec.spec);
                        (spec, release)
                    }
                    None => (a.rec.spec.clone(), a.rec.release.clone()),
                };
                let jdk = jdk_key(a.rec.release(&release).1);
                (n.clone(), (spec, release, jdk))
            })
            .collect();
        let current: BTreeMap<String, AppState> = heading
            .iter()
            .map(|(n, (spec, release, jdk))| (n.clone(), AppState { spec, release, jdk }))
            .collect();
        let wanted_jdks: BTreeMap<&String, String> = desired
            .iter()
            .map(|(n, p)| (n, jdk_key(&p.runtime)))
            .collect();
        let wanted: BTreeMap<String, AppState> = desired
            .iter()
            .filter_map(|(n, p)| {
                Some((
                    n.clone(),
                    AppState {
                        spec: &p.spec,
                        release: &p.release,
                        jdk: wanted_jdks.get(n)?,
                    },
                ))
            })
            .collect();
        reconcile::plan(&current, &wanted)
    }

    /// Carries out one change of an applied plan.
    fn apply_change(
        &mut self,
        change: &AppChange,
        desired: &BTreeMap<String, PreparedApp>,
        now: u64,
    ) -> Result<(), ErrorBody> {
        match change {
            AppChange::Add { app, instances } => {
                if let Some(p) = desired.get(app) {
                    self.add_app(app, *instances, p, now);
                }
            }
            AppChange::Remove { app } => {
                self.mark_removing(app);
                self.emit(
                    EventKind::AppRemoving,
                    Some(app),
                    None,
                    "removing app: stopping its instances".to_string(),
                );
                let slots: Vec<u32> = self
                    .apps
                    .get(app)
                    .map(|a| a.slots.keys().copied().collect())
                    .unwrap_or_default();
                for slot in slots {
                    self.step(
                        app,
                        slot,
                        Input::Stop {
                            then: AfterStop::Remove,
                        },
                    );
                }
                self.remove_app_if_done(app);
            }
            AppChange::Scale { app, from, to } => {
                self.update_spec(app, desired);
                self.emit(
                    EventKind::AppScaled,
                    Some(app),
                    None,
                    format!("scaled from {from} to {to}"),
                );
                self.scale_to(app, *to);
            }
            AppChange::Roll { app, from, to, .. } if from == to => {
                // The same release on another JDK of this host: its instances restart on
                // it, rolling and health-gated, like `jarfleet restart`.
                self.remember_current_release(app);
                if let (Some(p), Some(rt)) = (desired.get(app), self.apps.get_mut(app)) {
                    if let Some(r) = rt.rec.releases.get_mut(to) {
                        r.runtime = p.runtime.clone();
                    }
                    rt.rec.restart_generation += 1;
                }
                self.update_spec(app, desired);
                self.emit(
                    EventKind::AppUpdated,
                    Some(app),
                    None,
                    format!("release {to} moves to another JDK: {}", self.java_of(app)),
                );
                self.start_deployment(app, to, "restart")?;
            }
            AppChange::Roll {
                app,
                from: _,
                to,
                why,
            } => {
                // The old release keeps running from its own record; the new one is
                // rolled out by a deployment, health-gated, with rollback.
                self.remember_current_release(app);
                if let Some(p) = desired.get(app) {
                    self.write(Write::Release {
                        app: app.clone(),
                        id: p.release.clone(),
                        record: p.release_record.clone(),
                        now,
                    });
                    self.remember_release(
                        app,
                        to,
                        crate::store::ReleaseRecord {
                            spec: p.spec.clone(),
                            runtime: p.runtime.clone(),
                            version: None,
                            created_at: now,
                        },
                    );
                }
                self.update_spec(app, desired);
                self.start_deployment(app, to, &format!("{} changed", why.join(", ")))?;
            }
            AppChange::Update { app, fields } => {
                self.update_spec(app, desired);
                self.ensure_listener(app);
                self.emit(
                    EventKind::AppUpdated,
                    Some(app),
                    None,
                    format!("updated live: {}", fields.join(", ")),
                );
            }
            // The deployment carries on; nothing to do.
            AppChange::Deploying { .. } => {}
        }
        Ok(())
    }

    /// A new app (or one being removed that comes back): its record, its slots, its listener.
    fn add_app(&mut self, app: &str, instances: u32, p: &PreparedApp, now: u64) {
        let rec = AppRecord {
            spec: p.spec.clone(),
            release: p.release.clone(),
            runtime: p.runtime.clone(),
            restart_generation: 0,
            removing: false,
            releases: BTreeMap::from([(
                p.release.clone(),
                crate::store::ReleaseRecord {
                    spec: p.spec.clone(),
                    runtime: p.runtime.clone(),
                    version: None,
                    created_at: now,
                },
            )]),
        };
        self.write(Write::Release {
            app: app.to_string(),
            id: p.release.clone(),
            record: p.release_record.clone(),
            now,
        });
        self.write(Write::App {
            name: app.to_string(),
            record: Box::new(rec.clone()),
            now,
        });
        // An app that was being removed comes back: keep its slots, update the spec.
        let rt = self.apps.entry(app.to_string()).or_insert(AppRuntime {
            rec: rec.clone(),
            slots: BTreeMap::new(),
            removing: false,
            deployment: None,
        });
        rt.rec = rec;
        rt.removing = false;
        self.emit(
            EventKind::AppAdded,
            Some(app),
            None,
            format!("added with {instances} instance(s), release {}", p.release),
        );
        self.ensure_slots(app, instances);
        self.ensure_listener(app);
    }

    /// A spec that still names the release a deployment started from (the spec was not
    /// changed by `jarfleet deploy`; `up -d` after a daemon restart applies it) leaves the
    /// release to the deployment, and the plan says so instead of a release change.
    fn spec_behind_deployments(&self, plan: &mut reconcile::Plan) {
        for change in plan.changes.iter_mut() {
            let AppChange::Roll {
                app, to: wanted, ..
            } = change
            else {
                continue;
            };
            let Some(d) = self
                .apps
                .get(app.as_str())
                .and_then(|a| a.deployment.as_ref())
            else {
                continue;
            };
            if d.phase == jarfleet_core::deployment::Phase::Running
                && d.from != d.to
                && *wanted == d.from
            {
                *change = AppChange::Deploying {
                    app: app.clone(),
                    id: d.id,
                    from: d.from.clone(),
                    to: d.to.clone(),
                };
            }
        }
    }

    /// Each change to an app with a deployment under way, by the table of
    /// `jarfleet_core::during`: every refusal at once, and then nothing is applied.
    fn during_deployments(&self, plan: &reconcile::Plan) -> Result<(), ErrorBody> {
        let mut refused = Vec::new();
        let mut hint = None;
        for change in &plan.changes {
            let (app, command, what) = match change {
                AppChange::Add { .. } | AppChange::Deploying { .. } => continue,
                AppChange::Remove { app } => (app, during::Command::Remove, "removing the app"),
                AppChange::Scale { app, .. } => {
                    (app, during::Command::Scale, "apply (instance count)")
                }
                AppChange::Roll { app, .. } => {
                    (app, during::Command::ApplyRelease, "apply (new release)")
                }
                AppChange::Update { app, .. } => {
                    (app, during::Command::ApplyLive, "apply (live settings)")
                }
            };
            if let Err(e) = self.guard(app, command, what) {
                refused.push(e.message);
                hint = hint.or(e.hint);
            }
        }
        if refused.is_empty() {
            return Ok(());
        }
        refused.push("nothing was applied".into());
        Err(usage(refused.join("\n"), hint.as_deref()))
    }

    /// A node spec's `[daemon]` settings and where it came from (cluster mode: its apps are
    /// the cluster's).
    pub(super) fn keep_daemon_settings(
        &mut self,
        daemon: &jarfleet_core::spec::DaemonSpec,
        source: PathBuf,
    ) -> Result<(), ErrorBody> {
        self.store_daemon_settings(daemon)?;
        self.set_metrics_enabled(daemon.metrics);
        self.spec_source = Some(source.display().to_string());
        self.write(Write::Meta {
            key: "spec_source".into(),
            value: source.display().to_string(),
        });
        Ok(())
    }

    fn store_daemon_settings(
        &self,
        daemon: &jarfleet_core::spec::DaemonSpec,
    ) -> Result<(), ErrorBody> {
        let value = serde_json::to_string(daemon)
            .map_err(|e| failed(format!("storing the [daemon] settings: {e}")))?;
        crate::daemonlog::set_rotation(daemon.log_max_size, daemon.log_keep);
        self.write(Write::Meta {
            key: crate::store::DAEMON_SETTINGS.into(),
            value,
        });
        Ok(())
    }

    /// Checks that need the live state (ports) before anything changes.
    pub(super) fn preflight(
        &self,
        plan: &reconcile::Plan,
        desired: &BTreeMap<String, PreparedApp>,
    ) -> Result<(), ErrorBody> {
        let ours = self.ports_in_use();
        let mut errors = Vec::new();
        // A check failed for the daemon's own shortage (the hint says so).
        let mut short = false;
        for change in &plan.changes {
            let app = match change {
                AppChange::Add { app, .. } | AppChange::Update { app, .. } => app,
                _ => continue,
            };
            if let Some(listen) = desired.get(app).and_then(|p| p.spec.listen.as_deref())
                && let Err(e) = self.listen_free(app, listen)
            {
                short = short || e.shortage.is_some();
                errors.push(format!("apps.{app}.{}", e.message));
            }
        }
        for change in &plan.changes {
            let (app, need) = match change {
                AppChange::Add { app, instances } => (app, *instances),
                AppChange::Scale { app, to, from } if to > from => (app, *to),
                // A rolling deploy runs up to `max_surge` extra instances for a while.
                AppChange::Roll { app, .. } => match desired.get(app) {
                    Some(p) => (app, p.spec.instances + p.spec.deploy.max_surge),
                    None => continue,
                },
                _ => continue,
            };
            let Some(p) = desired.get(app) else { continue };
            let range = p.spec.ports;
            let held_by_app: BTreeSet<u16> = self
                .apps
                .get(app)
                .map(|a| {
                    a.slots
                        .values()
                        .filter_map(|s| s.record.instance.process.as_ref().map(|p| p.port))
                        .collect()
                })
                .unwrap_or_default();
            let spelled = format!("apps.{app}.ports = \"{}-{}\"", range.first, range.last);
            let mut usable = 0;
            let mut unchecked = None;
            for port in range.first..=range.last {
                if held_by_app.contains(&port) {
                    usable += 1;
                    continue;
                }
                if ours.contains(&port) {
                    continue;
                }
                match ports::free_as(port, self.host.port_state(port)) {
                    Ok(true) => usable += 1,
                    Ok(false) => {}
                    // The daemon is short of something itself: nothing is known about the range.
                    Err(u) if u.shortage.is_some() => {
                        unchecked = Some(u);
                        break;
                    }
                    Err(_) => {}
                }
            }
            if let Some(u) = unchecked {
                short = true;
                errors.push(format!("{spelled}: {u}"));
                continue;
            }
            if usable < need as usize {
                let host = self.host.clone();
                let taken = match ports::taken_by_others_by(range, &ours, |p| host.port_state(p)) {
                    Ok(taken) => taken,
                    Err(u) => {
                        short = short || u.shortage.is_some();
                        errors.push(format!("{spelled}: {u}"));
                        continue;
                    }
                };
                let shown: Vec<String> = taken.iter().take(8).map(u16::to_string).collect();
                errors.push(format!(
                    "apps.{app}.ports = \"{}-{}\": {need} instance(s) need {need} free port(s), only {usable} available (in use by other processes: {})",
                    range.first,
                    range.last,
                    if shown.is_empty() { "none".to_string() } else { shown.join(", ") }
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else if short {
            Err(usage(
                errors.join("\n"),
                Some(
                    "the daemon is out of file descriptors (or memory): raise its open-file limit (LimitNOFILE= in its unit, `ulimit -n`) or wait for connections to close, then apply again; nothing was applied",
                ),
            ))
        } else {
            Err(usage(
                errors.join("\n"),
                Some("free those ports or widen the `ports` range; nothing was applied"),
            ))
        }
    }

    /// A release prepared by this jarfleet that a store written by an older one names by its
    /// old id (which hashed the JDK's home too): the stored id is kept while it still describes
    /// exactly what is to run (the same content, the same JDK), so an upgrade restarts nothing.
    pub(super) fn adopt_stored_id(&self, app: &str, p: &mut PreparedApp) {
        let (Some(rt), Some(legacy)) = (self.apps.get(app), p.legacy_release.as_deref()) else {
            return;
        };
        let known = |id: &str| id == rt.rec.release || rt.rec.releases.contains_key(id);
        if legacy != p.release && !known(&p.release) && known(legacy) {
            p.release = legacy.to_string();
        }
    }

    /// The JDK `app` runs on, as `status` shows it.
    fn java_of(&self, app: &str) -> String {
        self.apps
            .get(app)
            .map(|a| java_label(&a.rec.runtime))
            .unwrap_or_default()
    }

    pub(super) fn update_spec(&mut self, app: &str, desired: &BTreeMap<String, PreparedApp>) {
        let (Some(p), Some(rt)) = (desired.get(app), self.apps.get_mut(app)) else {
            return;
        };
        // The desired spec; the running release changes only when a deployment finishes.
        rt.rec.spec = p.spec.clone();
        rt.rec.runtime = p.runtime.clone();
        self.write_app(app);
    }

    /// `scale` (or an `apply` that changes `instances`): the app's slots, and the blue-green set
    /// kept warm after a switch (`keep_old`), to `n` each — a switch back runs no more than the
    /// app's count (found by the simulation, seed 9018: after a scale down, the warm set of the
    /// old count ran beside both sets of the next deployment).
    pub(super) fn scale_to(&mut self, app: &str, n: u32) {
        let warm: Vec<u32> = self
            .apps
            .get(app)
            .map(|rt| {
                rt.slots
                    .iter()
                    .filter(|(_, s)| {
                        s.record.standby_until.is_some()
                            && !matches!(s.record.instance.phase, Phase::Stopping { .. })
                    })
                    .map(|(k, _)| *k)
                    .collect()
            })
            .unwrap_or_default();
        for slot in warm.into_iter().skip(n as usize) {
            self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Remove,
                },
            );
        }
        self.ensure_slots(app, n);
    }

    /// Creates or removes slots so that exactly `n` instances run (lowest slot numbers kept);
    /// in cluster mode, exactly the slots the cluster assigned this node.
    pub(super) fn ensure_slots(&mut self, app: &str, n: u32) {
        if let Some(wanted) = self.assigned_slots(app) {
            self.ensure_slot_set(app, &wanted);
            return;
        }
        let now = self.now_ms();
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let release = rt.rec.release.clone();
        let restart_generation = rt.rec.restart_generation;
        let live: Vec<u32> = rt
            .slots
            .iter()
            .filter(|(_, s)| s.record.standby_until.is_none() && !s.being_removed())
            .map(|(k, _)| *k)
            .collect();
        let mut to_remove = Vec::new();
        let mut revive = Vec::new();
        if live.len() > n as usize {
            to_remove = live
                .iter()
                .rev()
                .take(live.len() - n as usize)
                .copied()
                .collect();
        } else {
            let mut missing = n as usize - live.len();
            let mut slot = 0;
            while missing > 0 {
                match rt.slots.entry(slot) {
                    std::collections::btree_map::Entry::Vacant(e) => {
                        e.insert(Slot::new(app, slot, &release, restart_generation, now));
                        missing -= 1;
                    }
                    std::collections::btree_map::Entry::Occupied(e) => {
                        if e.get().being_removed() {
                            // Being removed but wanted again: it comes back once stopped.
                            revive.push(slot);
                            missing -= 1;
                        }
                    }
                }
                slot += 1;
            }
        }
        self.revive_and_remove(app, revive, to_remove);
    }

    /// The slots of `app` being removed that are wanted again come back once stopped; the
    /// `to_remove` ones are drained, stopped and removed.
    pub(super) fn revive_and_remove(&mut self, app: &str, revive: Vec<u32>, to_remove: Vec<u32>) {
        for slot in revive {
            self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Restart,
                },
            );
        }
        for slot in to_remove {
            self.step(
                app,
                slot,
                Input::Stop {
                    then: AfterStop::Remove,
                },
            );
        }
    }

    pub(super) fn action(&mut self, req: ActionRequest) -> Result<Ack, ErrorBody> {
        let Some(rt) = self.apps.get(&req.app).filter(|a| !a.removing) else {
            return Err(self.unknown_app(&req.app));
        };
        let slots: Vec<u32> = match req.slot {
            Some(slot) if rt.slots.contains_key(&slot) => vec![slot],
            Some(slot) => {
                let have: Vec<String> = rt
                    .slots
                    .keys()
                    .map(|s| format!("{}/{s}", req.app))
                    .collect();
                return Err(usage(
                    format!("{}/{slot} does not exist", req.app),
                    Some(&format!("instances of {}: {}", req.app, have.join(", "))),
                ));
            }
            None => rt.slots.keys().copied().collect(),
        };
        // An instance on its way out (scale down, a retired deploy slot) stays on its way out:
        // a stop or restart would turn its removal into a halt or a restart, and the app would
        // keep one instance too many.
        let slots: Vec<u32> = slots
            .into_iter()
            .filter(|slot| {
                !rt.slots.get(slot).is_some_and(|s| {
                    matches!(
                        s.record.instance.phase,
                        Phase::Stopping {
                            then: AfterStop::Remove,
                            ..
                        }
                    )
                })
            })
            .collect();
        let target = match req.slot {
            Some(s) => format!("{}/{s}", req.app),
            None => req.app.clone(),
        };
        let command = match (req.action, req.slot) {
            (Action::Start, _) => during::Command::Start,
            (Action::Stop, None) => during::Command::Stop,
            (Action::Stop, Some(_)) => during::Command::StopInstance,
            (Action::Restart, None) => during::Command::Restart,
            (Action::Restart, Some(_)) => during::Command::RestartInstance,
        };
        let verb = match req.action {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Restart => "restart",
        };
        if self.guard(&req.app, command, verb)? == during::Outcome::Supersede {
            // `stop APP`: the deployment ends and the app stops on the release it came from.
            self.stop_superseding(&req.app);
            self.emit(
                EventKind::AppStop,
                Some(&req.app),
                req.slot,
                format!("stop {target} (its deployment ended: superseded)"),
            );
            return Ok(Ack {
                message: format!("stopping {target}; its deployment was ended (aborted)"),
            });
        }
        match req.action {
            Action::Start => {
                for slot in slots {
                    self.step(&req.app, slot, Input::Start);
                }
                self.emit(
                    EventKind::AppStart,
                    Some(&req.app),
                    req.slot,
                    format!("start {target}"),
                );
                Ok(Ack {
                    message: format!("starting {target}"),
                })
            }
            Action::Stop => {
                for slot in slots {
                    self.step(
                        &req.app,
                        slot,
                        Input::Stop {
                            then: AfterStop::Halt,
                        },
                    );
                }
                self.emit(
                    EventKind::AppStop,
                    Some(&req.app),
                    req.slot,
                    format!("stop {target}"),
                );
                Ok(Ack {
                    message: format!("stopping {target}"),
                })
            }
            Action::Restart if req.slot.is_some() => {
                for slot in slots {
                    self.step(
                        &req.app,
                        slot,
                        Input::Stop {
                            then: AfterStop::Restart,
                        },
                    );
                }
                self.emit(
                    EventKind::AppRestart,
                    Some(&req.app),
                    req.slot,
                    format!("restart {target}"),
                );
                Ok(Ack {
                    message: format!("restarting {target}"),
                })
            }
            Action::Restart => {
                if let Some(rt) = self.apps.get_mut(&req.app) {
                    rt.rec.restart_generation += 1;
                    self.write_app(&req.app);
                }
                // A restart is a deployment to the same release: new instances start next to the
                // old ones and each old one goes once a new one is healthy (no capacity lost).
                let release = self
                    .apps
                    .get(&req.app)
                    .map(|a| a.rec.release.clone())
                    .unwrap_or_default();
                let _ = slots;
                let d = self.start_deployment(&req.app, &release, "restart")?;
                Ok(Ack {
                    message: format!("rolling restart of {target} (deployment #{})", d.id),
                })
            }
        }
    }

    pub(super) fn scale(&mut self, req: ScaleRequest) -> Result<Ack, ErrorBody> {
        if self.apps.get(&req.app).is_none_or(|a| a.removing) {
            return Err(self.unknown_app(&req.app));
        }
        self.guard(&req.app, during::Command::Scale, "scale")?;
        let Some(rt) = self.apps.get(&req.app) else {
            return Err(self.unknown_app(&req.app));
        };
        if req.instances > 1000 {
            return Err(usage(
                format!(
                    "cannot scale {} to {}: at most 1000 instances",
                    req.app, req.instances
                ),
                None,
            ));
        }
        let from = rt.rec.spec.instances;
        let range = rt.rec.spec.ports;
        let capacity = (range.last - range.first) as u32 + 1;
        if req.instances > capacity {
            return Err(usage(
                format!(
                    "cannot scale {} to {}: its port range {}-{} holds only {capacity} ports",
                    req.app, req.instances, range.first, range.last
                ),
                Some("widen `ports` in the spec and apply it"),
            ));
        }
        let mut prepared = PreparedApp {
            spec: rt.rec.spec.clone(),
            release: rt.rec.release.clone(),
            legacy_release: None,
            runtime: rt.rec.runtime.clone(),
            release_record: serde_json::Value::Null,
        };
        prepared.spec.instances = req.instances;
        let desired = BTreeMap::from([(req.app.clone(), prepared)]);
        let plan = reconcile::Plan {
            changes: vec![AppChange::Scale {
                app: req.app.clone(),
                from,
                to: req.instances,
            }],
            unchanged: vec![],
        };
        self.preflight(&plan, &desired)?;
        self.update_spec(&req.app, &desired);
        self.emit(
            EventKind::AppScaled,
            Some(&req.app),
            None,
            format!("scaled from {from} to {}", req.instances),
        );
        self.scale_to(&req.app, req.instances);
        Ok(Ack {
            message: format!("scaling {} from {from} to {}", req.app, req.instances),
        })
    }

    pub(super) fn unknown_app(&self, app: &str) -> ErrorBody {
        let names: Vec<&str> = self.apps.keys().map(String::as_str).collect();
        usage(
            format!("no app named {app:?}"),
            Some(&if names.is_empty() {
                "no apps are running; apply a spec first".to_string()
            } else {
                format!("apps: {}", names.join(", "))
            }),
        )
    }

    pub(super) fn begin_shutdown(&mut self, stop_instances: bool, reply: oneshot::Sender<Ack>) {
        match &mut self.shutdown {
            Some((_, waiters)) => waiters.push(reply),
            None => self.shutdown = Some((stop_instances, vec![reply])),
        }
        if stop_instances {
            self.emit(
                EventKind::DaemonStopping,
                None,
                None,
                "stopping every instance, then the daemon".to_string(),
            );
            let all: Vec<(String, u32)> = self
                .apps
                .iter()
                .flat_map(|(n, a)| a.slots.keys().map(move |s| (n.clone(), *s)))
                .collect();
            for name in self.apps.keys().cloned().collect::<Vec<_>>() {
                self.mark_removing(&name);
            }
            for (app, slot) in all {
                self.step(
                    &app,
                    slot,
                    Input::Stop {
                        then: AfterStop::Remove,
                    },
                );
            }
            for name in self.apps.keys().cloned().collect::<Vec<_>>() {
                self.remove_app_if_done(&name);
            }
        } else {
            self.emit(
                EventKind::DaemonStopping,
                None,
                None,
                "daemon stopping; instances keep running under their shims".to_string(),
            );
        }
    }

    pub(super) fn shutdown_complete(&self) -> bool {
        match &self.shutdown {
            None => false,
            Some((false, _)) => true,
            Some((true, _)) => self.apps.is_empty(),
        }
    }

    /// Records (durably, so a daemon restart keeps going) that `app` is being removed.
    pub(super) fn mark_removing(&mut self, app: &str) {
        if let Some(rt) = self.apps.get_mut(app) {
            rt.removing = true;
            rt.rec.removing = true;
            self.write_app(app);
        }
        // A removed app's deployment ends here (a removing app's is never driven on).
        self.supersede(app, "removing the app");
    }

    pub(super) fn remove_app_if_done(&mut self, app: &str) {
        if self
            .apps
            .get(app)
            .is_some_and(|a| a.removing && a.slots.is_empty())
        {
            self.apps.remove(app);
            self.drop_listener(app);
            self.write(Write::DeleteApp(app.to_string()));
            self.emit(
                EventKind::AppRemoved,
                Some(app),
                None,
                "app removed".to_string(),
            );
        }
    }
}

/// Which JDK a release runs on, for comparing: its home and version.
fn jdk_key(rt: &jarfleet_host::launch::JavaRuntime) -> String {
    format!("{} {}", rt.home.display(), rt.version)
}

/// A JDK as `status` and `history` show it: `17.0.15 (/usr/lib/jvm/…)`.
pub(super) fn java_label(rt: &jarfleet_host::launch::JavaRuntime) -> String {
    format!("{} ({})", rt.version, rt.home.display())
}
