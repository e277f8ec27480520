//! The instance side of the loop: re-adoption, spawning shims, their reports, probes.

use super::*;
use jarfleet_core::events::EventKind;
use jarfleet_host::survivors;
use jarfleet_shim::fdlimit::{Failure, Op};

impl Control {
    /// Loads apps and instances from the store and re-attaches to every shim that still runs.
    pub async fn adopt(&mut self) -> anyhow::Result<()> {
        for (name, rec) in self.store.apps()? {
            let removing = rec.removing;
            self.apps.insert(
                name,
                AppRuntime {
                    rec,
                    slots: BTreeMap::new(),
                    removing,
                    deployment: None,
                },
            );
        }
        // Deployments that were under way when the last daemon stopped carry on.
        for d in self
            .store
            .deployments(None)?
            .into_iter()
            .filter(|d| d.is_active())
        {
            if let Some(rt) = self.apps.get_mut(&d.app) {
                let strategy = rt.rec.release(&d.to).0.deploy.strategy;
                rt.deployment = super::deploy::resume(
                    d,
                    jarfleet_core::deployment::Kind::of_strategy(strategy),
                );
            }
        }
        self.lead_resumed();
        let mut adopted = 0;
        let mut redrain = Vec::new();
        for record in self.store.instances()? {
            let (app, slot, generation) = (
                record.instance.app.clone(),
                record.instance.slot,
                record.generation,
            );
            let Some(rt) = self.apps.get_mut(&app) else {
                self.write(Write::DeleteInstance { app, slot });
                continue;
            };
            let mut record = record;
            // A probe that was running when the last daemon died will never answer.
            record.instance.probe_in_flight = false;
            let stopping = matches!(record.instance.phase, Phase::Stopping { .. });
            let has_process = record.instance.process.is_some()
                || matches!(
                    record.instance.phase,
                    Phase::Waiting { spawning: true, .. } | Phase::Stopping { .. }
                );
            rt.slots.insert(slot, Slot::of(record));
            if has_process {
                let run_dir = self.dirs.run_dir(&app, slot, generation);
                match attach_patiently(&*self.host, &run_dir, &app, slot, generation, &self.tx)
                    .await?
                {
                    Ok(commands) => {
                        adopted += 1;
                        let signalled = self
                            .apps
                            .get(&app)
                            .and_then(|a| a.slots.get(&slot))
                            .is_some_and(|s| s.record.instance.signalled);
                        if stopping && signalled {
                            // The stop may not have reached the shim before the daemon died;
                            // a repeated stop is ignored by the shim.
                            let grace = self
                                .apps
                                .get(&app)
                                .map(|a| a.rec.spec.stop.stop_timeout)
                                .unwrap_or_default();
                            let _ = commands.send(ShimCommand::Stop {
                                grace_ms: grace.as_millis() as u64,
                            });
                        }
                        if let Some(s) =
                            self.apps.get_mut(&app).and_then(|a| a.slots.get_mut(&slot))
                        {
                            s.commands = Some(commands);
                        }
                        if stopping && !signalled {
                            // A drain under way when the last daemon went: the data plane
                            // outlived it, so the drain is watched again once the listeners
                            // are back (the instance's own drain deadline still holds).
                            redrain.push((app.clone(), slot));
                        }
                    }
                    Err(exit) => {
                        // The shim is gone while we were away: the exit it recorded (or an
                        // unknown one) is handled now.
                        let event = match exit {
                            Some(exit) => ShimEvent::Exited(exit),
                            None => ShimEvent::Lost,
                        };
                        let _ = self
                            .tx
                            .send(Event::Shim(ShimNote {
                                app,
                                slot,
                                generation,
                                event,
                            }))
                            .await;
                    }
                }
            }
        }
        // The app's count as stored, outside a deployment: a daemon that died while store writes
        // failed may have stored a scale's new count but not its instances' removal.
        let settled: Vec<(String, u32)> = self
            .apps
            .iter()
            .filter(|(_, rt)| !rt.removing && rt.deployment.is_none())
            .map(|(name, rt)| (name.clone(), rt.rec.spec.instances))
            .collect();
        for (app, n) in settled {
            self.ensure_slots(&app, n);
        }
        let names: Vec<String> = self.apps.keys().cloned().collect();
        if crate::cluster_link::was_joined(&self.dirs) {
            self.carry_remote_backends(&names);
        }
        for app in &names {
            self.ensure_listener(app);
        }
        // What a data plane that outlived the last daemon serves for apps that are gone stops
        // (a cluster node's relay stays: the cluster's link binds it again, in place).
        let mut keep = names.clone();
        if crate::cluster_link::was_joined(&self.dirs) {
            keep.push(super::relay::RELAY.to_string());
        }
        self.data_plane.retain(&keep);
        for (app, slot) in redrain {
            let timeout = self
                .apps
                .get(&app)
                .map(|a| a.rec.spec.stop.drain_timeout)
                .unwrap_or_default();
            self.drain(&app, slot, timeout);
        }
        self.find_strays().await;
        let names: Vec<String> = self.apps.keys().cloned().collect();
        for app in &names {
            self.ensure_etcd_watch(app);
        }
        for pid in self.host.stop_stray_trainings(&self.dirs) {
            self.emit(
                EventKind::DaemonStrayStopped,
                None,
                None,
                format!("killed training JVM {pid} left by an earlier daemon"),
            );
        }
        self.emit(
            EventKind::DaemonStarted,
            None,
            None,
            format!(
                "daemon started (pid {}); re-adopted {adopted} running instance(s){}",
                std::process::id(),
                jarfleet_shim::fdlimit::limits()
                    .map(|l| format!(
                        "; open files: limit {}{}, load balancer budget {} client connections",
                        l.soft,
                        if l.raised() {
                            format!(" (raised from {})", l.started_with)
                        } else {
                            String::new()
                        },
                        l.budget
                    ))
                    .unwrap_or_default()
            ),
        );
        Ok(())
    }

    pub(super) fn on_shim(&mut self, app: String, slot: u32, generation: u64, event: ShimEvent) {
        if self.current_generation(&app, slot) != Some(generation) {
            return; // a message from a process we have already moved on from
        }
        match event {
            ShimEvent::Hello {
                shim_pid,
                pid,
                started_at,
            } => {
                let waiting = self
                    .apps
                    .get(&app)
                    .and_then(|a| a.slots.get(&slot))
                    .is_some_and(|s| {
                        matches!(
                            s.record.instance.phase,
                            Phase::Waiting { spawning: true, .. } | Phase::Stopping { .. }
                        ) && s.record.instance.process.is_none()
                    });
                if waiting {
                    let port = self.pending_port(&app, slot);
                    let stopping = self
                        .apps
                        .get(&app)
                        .and_then(|a| a.slots.get(&slot))
                        .map(|s| s.record.instance.phase.clone());
                    if let Some(Phase::Stopping { then, .. }) = stopping {
                        // Asked to stop while spawning: record the process, then stop it.
                        if let Some(s) = self.slot_mut(&app, slot) {
                            s.record.instance.process = Some(ProcessRef {
                                shim_pid,
                                pid,
                                port,
                                started_at,
                            });
                            s.record.instance.phase = Phase::Starting { since: started_at };
                        }
                        self.step(&app, slot, Input::Stop { then });
                    } else {
                        self.step(
                            &app,
                            slot,
                            Input::Spawned {
                                process: ProcessRef {
                                    shim_pid,
                                    pid,
                                    port,
                                    started_at,
                                },
                            },
                        );
                    }
                } else {
                    self.emit(
                        EventKind::InstanceAdopted,
                        Some(&app),
                        Some(slot),
                        format!("re-adopted pid {pid} (shim {shim_pid})"),
                    );
                }
            }
            ShimEvent::Exited(exit) => {
                if let Some(s) = self.slot_mut(&app, slot)
                    && let Some(cmds) = &s.commands
                {
                    let _ = cmds.send(ShimCommand::Ack);
                }
                if let Some(s) = self.slot_mut(&app, slot) {
                    s.commands = None;
                }
                self.finish_exit(&app, slot, generation, exit);
            }
            ShimEvent::Lost => {
                if let Some(s) = self.slot_mut(&app, slot) {
                    s.commands = None;
                }
                let run_dir = self.dirs.run_dir(&app, slot, generation);
                let exit = shim_client::read_exit(&run_dir).unwrap_or_else(|| {
                    // The shim died without a word (killed): its JVM died with it (PDEATHSIG).
                    ExitInfo {
                        code: None,
                        signal: None,
                        stop_requested: false,
                        killed_after_timeout: false,
                        oom: false,
                        hs_err: None,
                        at: self.now_ms(),
                    }
                });
                self.finish_exit(&app, slot, generation, exit);
            }
            ShimEvent::SpawnFailed(failure) => {
                if let Some(s) = self.slot_mut(&app, slot) {
                    s.commands = None;
                }
                self.start_failed(&app, slot, failure);
                self.cleanup_run_dir(&app, slot, generation);
            }
        }
    }

    pub(super) fn finish_exit(&mut self, app: &str, slot: u32, generation: u64, exit: ExitInfo) {
        let had_process = self
            .apps
            .get(app)
            .and_then(|a| a.slots.get(&slot))
            .is_some_and(|s| {
                s.record.instance.process.is_some()
                    || matches!(
                        s.record.instance.phase,
                        Phase::Waiting { spawning: true, .. } | Phase::Stopping { .. }
                    )
            });
        if had_process {
            if let Some(s) = self.slot_mut(app, slot)
                && s.record.instance.process.is_none()
                && matches!(
                    s.record.instance.phase,
                    Phase::Waiting { spawning: true, .. }
                )
            {
                // Died before it said hello: a failed start.
                s.record.instance.phase = Phase::Starting { since: exit.at };
            }
            self.step(app, slot, Input::Exited { exit });
        }
        self.cleanup_run_dir(app, slot, generation);
    }

    pub(super) fn cleanup_run_dir(&self, app: &str, slot: u32, generation: u64) {
        let _ = std::fs::remove_dir_all(self.dirs.run_dir(app, slot, generation));
    }

    /// The last lines an instance wrote (stderr first, else stdout), for crash reports.
    pub(super) fn last_output(&self, app: &str, slot: u32, n: usize) -> String {
        let dir = self.dirs.log_dir(app, slot);
        for stream in ["stderr.log", "stdout.log"] {
            if let Ok(lines) = jarfleet_shim::logfile::tail_lines(&dir.join(stream), n)
                && !lines.is_empty()
            {
                return lines
                    .iter()
                    .map(|l| format!("  | {l}"))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
        }
        "  (no output)".to_string()
    }

    /// Shims in `run/` that no instance refers to (left by a daemon that died at a bad moment,
    /// or whose records the store lost): each whose JVM runs is left running and reported
    /// (event, `status`, `doctor`) — never stopped without being asked (`jarfleet down
    /// --strays`); those whose JVM has exited are acknowledged and their run dirs removed.
    pub(super) async fn find_strays(&mut self) -> usize {
        let dirs = &self.dirs;
        let known: BTreeSet<std::path::PathBuf> = self
            .apps
            .iter()
            .flat_map(|(name, a)| {
                a.slots
                    .iter()
                    .map(move |(slot, s)| dirs.run_dir(name, *slot, s.record.generation))
            })
            .collect();
        let Ok(entries) = std::fs::read_dir(self.dirs.run_root()) else {
            return 0;
        };
        let mut dirs: Vec<std::path::PathBuf> = entries.flatten().map(|e| e.path()).collect();
        dirs.sort();
        self.strays.clear();
        for dir in dirs {
            if known.contains(&dir) {
                continue;
            }
            match shim_client::look_at_stray(&dir).await {
                Err(failure) => {
                    // Its shim may be running: nothing is removed on the strength of it.
                    tracing::warn!(
                        "left {} alone for now: {}",
                        dir.display(),
                        failure.explained()
                    );
                }
                Ok(Some(shim)) => {
                    let (app, slot, generation) = dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .and_then(survivors::parse_run_dir_name)
                        .unwrap_or_default();
                    let stray = survivors::Survivor {
                        port: survivors::launch_port(&dir),
                        run_dir: dir,
                        app,
                        slot,
                        generation,
                        shim_pid: shim.shim_pid,
                        pid: shim.pid,
                    };
                    let app = stray.app.clone();
                    self.emit(
                        EventKind::DaemonStrayFound,
                        Some(&app),
                        None,
                        format!(
                            "stray shim {}: JVM {} runs but no instance in the store accounts for it; left running (`jarfleet down --strays` stops it)",
                            stray.run_dir.display(),
                            stray.describe()
                        ),
                    );
                    self.strays.push(stray);
                }
                Ok(None) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        self.strays.len()
    }

    /// New spawns get generations above every run dir's, so none reuses a stray's run dir.
    pub fn spawn_generations_above(&mut self, generation: u64) {
        self.next_generation = self.next_generation.max(generation.saturating_add(1));
    }

    /// The strays, handed over to be stopped (`jarfleet down --strays`): the list is emptied.
    pub(super) fn take_strays(&mut self) -> Vec<survivors::Survivor> {
        std::mem::take(&mut self.strays)
    }

    /// Ports held (or being taken) by our instances, except `skip`'s own.
    pub(super) fn ports_in_use_except(&self, skip: Option<(&str, u32)>) -> BTreeSet<u16> {
        self.apps
            .iter()
            .flat_map(|(name, a)| {
                a.slots
                    .iter()
                    .map(move |(slot, s)| (name.as_str(), *slot, s))
            })
            .filter(|(name, slot, _)| skip != Some((*name, *slot)))
            .filter_map(|(_, _, s)| s.record.port())
            .collect()
    }

    pub(super) fn ports_in_use(&self) -> BTreeSet<u16> {
        self.ports_in_use_except(None)
    }

    pub(super) fn spawn(&mut self, app: &str, slot: u32) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let ours = self.ports_in_use_except(Some((app, slot)));
        let Some(rt) = self.apps.get(app) else { return };
        let Some(s) = rt.slots.get(&slot) else { return };
        let preferred = s.record.last_port;
        let release = s.record.instance.release.clone();
        // Each instance runs its own release (old and new side by side during a deploy); the
        // port range, health and stop settings are the app's current ones.
        let (release_spec, runtime) = rt.rec.release(&release);
        let mut spec = release_spec.clone();
        let runtime = runtime.clone();
        spec.ports = rt.rec.spec.ports;
        spec.stop = rt.rec.spec.stop.clone();
        spec.logs = rt.rec.spec.logs.clone();
        let host = self.host.clone();
        let port = match ports::pick_by(spec.ports, preferred, &ours, |p| host.port_state(p)) {
            Ok(p) => p,
            Err(ports::PickError::Exhausted(error)) => {
                self.step(app, slot, Input::SpawnFailed { error });
                return;
            }
            Err(ports::PickError::Unchecked(u)) => {
                let failure = Failure {
                    message: format!(
                        "checking whether port {} is free: {}",
                        u.port,
                        std::io::Error::from_raw_os_error(u.errno)
                    ),
                    shortage: u.shortage,
                };
                self.start_failed(app, slot, failure);
                return;
            }
        };
        let user = match spec
            .user
            .as_deref()
            .map(|name| launch::resolve_user(app, name))
            .transpose()
        {
            Ok(u) => u,
            Err(failure) => {
                self.start_failed(app, slot, failure);
                return;
            }
        };
        if let Some(s) = self.slot_mut(app, slot) {
            s.record.generation = generation;
            s.record.pending_port = Some(port);
            s.record.last_port = Some(port);
            s.record.dirty = true;
        }
        if let Some(templates) = spec.env.get(jarfleet_host::templates::TEMPLATES_ENV) {
            // Root's directory, readable by the app's group only (the config may hold secrets).
            let config_dir = self.dirs.config_dir(app);
            if let Err(e) =
                jarfleet_shim::privfs::own_dir(&config_dir, 0o750, user.as_ref().map(|u| u.gid))
            {
                let what = format!("preparing {}", config_dir.display());
                self.start_failed(app, slot, Failure::io(what, &e, Op::File));
                return;
            }
            let dest = launch::instance_config_dir(&self.dirs, app, slot);
            let vars = launch::instance_vars(&self.dirs, app, slot, port);
            if let Err(failure) = jarfleet_host::templates::render_instance(
                std::path::Path::new(templates),
                &dest,
                &vars,
            ) {
                self.start_failed(app, slot, failure);
                return;
            }
        }
        let launch = launch::build(&LaunchInput {
            spec: &spec,
            runtime: &runtime,
            release: &release,
            slot,
            port,
            dirs: &self.dirs,
            base_env: &self.base_env,
            user: user.as_ref(),
        });
        let run_dir = self.dirs.run_dir(app, slot, generation);
        // Persist the generation before the process exists, so a crash right now still finds it.
        self.persist_dirty();
        if let Some(u) = &user
            && let Err(e) = shim_client::hand_over_dirs(
                self.dirs.root(),
                &launch,
                u.uid,
                u.gid,
                spec.workdir.is_none(),
            )
        {
            self.start_failed(app, slot, Failure::chain(&e, Op::File));
            return;
        }
        match self.host.start(
            &self.exe,
            &run_dir,
            &launch,
            app.to_string(),
            slot,
            generation,
            self.tx.clone(),
        ) {
            Ok(commands) => {
                if let Some(s) = self.slot_mut(app, slot) {
                    s.commands = Some(commands);
                }
            }
            Err(error) => {
                // Nothing runs from a start that failed half way: no half-made run dir is left.
                self.cleanup_run_dir(app, slot, generation);
                self.start_failed(app, slot, Failure::chain(&error, Op::Spawn));
            }
        }
    }

    /// A start that did not happen: the app's failure (counted, with backoff), or — when the
    /// daemon was short of something itself — postponed for a short fixed delay, not counted,
    /// and reported as the daemon's shortage.
    pub(super) fn start_failed(&mut self, app: &str, slot: u32, failure: Failure) {
        match failure.shortage {
            Some(shortage) => {
                self.note_shortage(
                    shortage,
                    &format!(
                        "{app}/{slot} could not be started ({}); postponed, not counted against it",
                        failure.message
                    ),
                );
                self.step(
                    app,
                    slot,
                    Input::SpawnPostponed {
                        reason: failure.explained(),
                    },
                );
            }
            None => self.step(
                app,
                slot,
                Input::SpawnFailed {
                    error: failure.message,
                },
            ),
        }
    }

    pub(super) fn probe(&mut self, app: &str, slot: u32) {
        let Some(rt) = self.apps.get(app) else { return };
        let Some(s) = rt.slots.get(&slot) else { return };
        let Some(port) = s.record.instance.process.as_ref().map(|p| p.port) else {
            return;
        };
        let check = rt.rec.spec.health.check.clone();
        let timeout = rt.rec.spec.health.timeout;
        let generation = s.record.generation;
        let vars = launch::instance_vars(&self.dirs, app, slot, port);
        // An exec check is the app's code: it runs as the app's user, like its JVMs.
        let run_as = match (&check, rt.rec.spec.user.as_deref()) {
            (jarfleet_core::spec::HealthCheck::Exec { .. }, Some(name)) => {
                match launch::resolve_user(app, name) {
                    Ok(u) => Some(jarfleet_shim::protocol::RunAs {
                        uid: u.uid,
                        gid: u.gid,
                    }),
                    Err(failure) => {
                        let outcome = match failure.shortage {
                            Some(shortage) => probe::Outcome::Inconclusive {
                                shortage,
                                error: failure.message,
                            },
                            None => probe::Outcome::Fail(failure.message),
                        };
                        let tx = self.tx.clone();
                        let app = app.to_string();
                        tokio::spawn(async move {
                            let took = std::time::Duration::ZERO;
                            let _ = tx
                                .send(Event::Probe(probe::ProbeResult {
                                    app,
                                    slot,
                                    generation,
                                    outcome,
                                    took,
                                }))
                                .await;
                        });
                        return;
                    }
                }
            }
            _ => None,
        };
        self.host.probe(
            host::ProbeRequest {
                app: app.to_string(),
                slot,
                generation,
                check,
                port,
                timeout,
                vars,
                run_as,
            },
            self.tx.clone(),
        );
    }

    pub(super) fn pending_port(&self, app: &str, slot: u32) -> u16 {
        self.apps
            .get(app)
            .and_then(|a| a.slots.get(&slot))
            .and_then(|s| s.record.port())
            .unwrap_or(0)
    }
}

/// Re-attaches to a shim at daemon start. A socket that cannot even be tried because the daemon
/// is short of something (out of file descriptors) says nothing about the shim: tried again for
/// a while, and if the shortage lasts, the daemon does not start (the JVMs keep running under
/// their shims) rather than take a running instance for lost.
async fn attach_patiently(
    host: &dyn host::Host,
    run_dir: &std::path::Path,
    app: &str,
    slot: u32,
    generation: u64,
    tx: &mpsc::Sender<Event>,
) -> anyhow::Result<Result<mpsc::UnboundedSender<ShimCommand>, Option<ExitInfo>>> {
    const TRIES: u32 = 50;
    let mut last = None;
    for _ in 0..TRIES {
        match host
            .attach(run_dir, app.to_string(), slot, generation, tx.clone())
            .await
        {
            Ok(commands) => return Ok(Ok(commands)),
            Err(shim_client::Unattached::Gone(exit)) => return Ok(Err(exit)),
            Err(shim_client::Unattached::Short(failure)) => {
                tracing::warn!("re-adopting {app}/{slot}: {}", failure.explained());
                last = Some(failure);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let (why, hint) = match last.as_ref().and_then(|f| f.shortage.map(|s| (f, s))) {
        Some((f, s)) => (f.explained(), s.hint()),
        None => (
            "short of resources".to_string(),
            "free resources on the host",
        ),
    };
    anyhow::bail!(
        "cannot re-adopt {app}/{slot} for {} s: {why}. Its JVM keeps running under its shim; {hint}, then start the daemon again",
        TRIES / 10
    )
}
