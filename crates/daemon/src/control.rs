//! The control loop: the one owner of mutable state. Fed by a closed [`Event`] enum, it steps the
//! pure instance state machines from `jarfleet_core` and carries out the effects they return.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jarfleet_api::{
    Ack, Action, ActionRequest, AppStatus, ApplyResponse, DaemonStatus, ErrorBody, ErrorKind,
    EventRecord, InstanceStatus, ScaleRequest, StatusReport,
};
use jarfleet_core::instance::{
    AfterStop, Effect, ExitInfo, Input, Instance, Note, NoteKind, Phase, ProcessRef,
};
use jarfleet_core::reconcile::{self, AppChange, AppState};
use jarfleet_core::spec::AppSpec;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::clock::now_ms;
use crate::launch::{self, JavaRuntime, LaunchInput};
use crate::paths::StateDir;
use crate::shim::client::{self as shim_client, ShimEvent};
use crate::shim::protocol::ShimCommand;
use crate::store::{AppRecord, InstanceRecord, Store};
use crate::{ports, probe, procinfo};

pub type Reply<T> = oneshot::Sender<Result<T, ErrorBody>>;

/// An app as `apply` hands it to the loop, after the IO checks (artifact, JDK, release id).
#[derive(Debug, Clone)]
pub struct PreparedApp {
    pub spec: AppSpec,
    pub release: String,
    pub runtime: JavaRuntime,
    pub release_record: serde_json::Value,
}

pub enum Event {
    Apply {
        apps: BTreeMap<String, PreparedApp>,
        source: PathBuf,
        dry_run: bool,
        reply: Reply<ApplyResponse>,
    },
    Action {
        req: ActionRequest,
        reply: Reply<Ack>,
    },
    Scale {
        req: ScaleRequest,
        reply: Reply<Ack>,
    },
    Status {
        reply: oneshot::Sender<StatusReport>,
    },
    Shutdown {
        stop_instances: bool,
        reply: oneshot::Sender<Ack>,
    },
    Shim {
        app: String,
        slot: u32,
        generation: u64,
        event: ShimEvent,
    },
    Probe {
        app: String,
        slot: u32,
        generation: u64,
        result: Result<(), String>,
    },
}

struct Slot {
    record: InstanceRecord,
    commands: Option<mpsc::UnboundedSender<ShimCommand>>,
    cpu: Option<(u64, Instant, f64)>,
}

struct AppRuntime {
    rec: AppRecord,
    slots: BTreeMap<u32, Slot>,
    removing: bool,
}

pub struct Control {
    dirs: StateDir,
    store: Store,
    apps: BTreeMap<String, AppRuntime>,
    tx: mpsc::Sender<Event>,
    events: broadcast::Sender<EventRecord>,
    next_generation: u64,
    exe: PathBuf,
    base_env: Arc<Vec<(String, String)>>,
    started: Instant,
    spec_source: Option<String>,
    shutdown: Option<(bool, Vec<oneshot::Sender<Ack>>)>,
    rng: rand::rngs::StdRng,
}

fn usage(message: impl Into<String>, hint: Option<&str>) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Usage,
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

fn failed(message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Failed,
        message: message.into(),
        hint: None,
    }
}

impl Control {
    pub fn new(
        dirs: StateDir,
        store: Store,
        tx: mpsc::Sender<Event>,
        events: broadcast::Sender<EventRecord>,
        exe: PathBuf,
    ) -> anyhow::Result<Control> {
        use rand::SeedableRng;
        let next_generation = store.max_generation()? + 1;
        let spec_source = store.meta("spec_source")?;
        let base_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| !k.starts_with("JARFLEET_"))
            .collect();
        Ok(Control {
            dirs,
            store,
            apps: BTreeMap::new(),
            tx,
            events,
            next_generation,
            exe,
            base_env: Arc::new(base_env),
            started: Instant::now(),
            spec_source,
            shutdown: None,
            rng: rand::rngs::StdRng::from_os_rng(),
        })
    }

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
                },
            );
        }
        let mut adopted = 0;
        for record in self.store.instances()? {
            let (app, slot, generation) = (
                record.instance.app.clone(),
                record.instance.slot,
                record.generation,
            );
            let Some(rt) = self.apps.get_mut(&app) else {
                self.store.delete_instance(&app, slot)?;
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
            rt.slots.insert(
                slot,
                Slot {
                    record,
                    commands: None,
                    cpu: None,
                },
            );
            if has_process {
                let run_dir = self.dirs.run_dir(&app, slot, generation);
                match shim_client::attach(&run_dir, app.clone(), slot, generation, self.tx.clone())
                    .await
                {
                    Ok(commands) => {
                        adopted += 1;
                        if stopping {
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
                            .send(Event::Shim {
                                app,
                                slot,
                                generation,
                                event,
                            })
                            .await;
                    }
                }
            }
        }
        self.stop_strays().await;
        self.emit(
            "daemon.started",
            None,
            None,
            format!(
                "daemon started (pid {}); re-adopted {adopted} running instance(s)",
                std::process::id()
            ),
        );
        Ok(())
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        loop {
            self.tick_all();
            self.roll_all();
            self.persist_dirty();
            if self.shutdown_complete() {
                break;
            }
            let wake = self.next_wakeup();
            let sleep = wake
                .map(|at| Duration::from_millis(at.saturating_sub(now_ms())))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => self.handle(ev),
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        if let Some((_, waiters)) = self.shutdown.take() {
            for w in waiters {
                let _ = w.send(Ack {
                    message: "daemon stopped".into(),
                });
            }
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Apply {
                apps,
                source,
                dry_run,
                reply,
            } => {
                let _ = reply.send(self.apply(apps, source, dry_run));
            }
            Event::Action { req, reply } => {
                let _ = reply.send(self.action(req));
            }
            Event::Scale { req, reply } => {
                let _ = reply.send(self.scale(req));
            }
            Event::Status { reply } => {
                let _ = reply.send(self.status());
            }
            Event::Shutdown {
                stop_instances,
                reply,
            } => self.begin_shutdown(stop_instances, reply),
            Event::Shim {
                app,
                slot,
                generation,
                event,
            } => self.on_shim(app, slot, generation, event),
            Event::Probe {
                app,
                slot,
                generation,
                result,
            } => {
                if self.current_generation(&app, slot) == Some(generation) {
                    let (ok, error) = match result {
                        Ok(()) => (true, None),
                        Err(e) => (false, Some(e)),
                    };
                    self.step(&app, slot, Input::Probe { ok, error });
                }
            }
        }
    }

    fn current_generation(&self, app: &str, slot: u32) -> Option<u64> {
        self.apps
            .get(app)?
            .slots
            .get(&slot)
            .map(|s| s.record.generation)
    }

    fn on_shim(&mut self, app: String, slot: u32, generation: u64, event: ShimEvent) {
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
                        "instance.adopted",
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
                        at: now_ms(),
                    }
                });
                self.finish_exit(&app, slot, generation, exit);
            }
            ShimEvent::SpawnFailed(error) => {
                if let Some(s) = self.slot_mut(&app, slot) {
                    s.commands = None;
                }
                self.step(&app, slot, Input::SpawnFailed { error });
                self.cleanup_run_dir(&app, slot, generation);
            }
        }
    }

    fn finish_exit(&mut self, app: &str, slot: u32, generation: u64, exit: ExitInfo) {
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

    fn cleanup_run_dir(&self, app: &str, slot: u32, generation: u64) {
        let _ = std::fs::remove_dir_all(self.dirs.run_dir(app, slot, generation));
    }

    fn slot_mut(&mut self, app: &str, slot: u32) -> Option<&mut Slot> {
        self.apps.get_mut(app)?.slots.get_mut(&slot)
    }

    fn pending_port(&self, app: &str, slot: u32) -> u16 {
        self.apps
            .get(app)
            .and_then(|a| a.slots.get(&slot))
            .and_then(|s| {
                s.record
                    .instance
                    .process
                    .as_ref()
                    .map(|p| p.port)
                    .or(s.record.pending_port)
            })
            .unwrap_or(0)
    }

    /// Steps one instance and carries out the effects.
    fn step(&mut self, app: &str, slot: u32, input: Input) {
        let jitter: f64 = rand::Rng::random(&mut self.rng);
        let now = now_ms();
        let Some(AppRuntime { rec, slots, .. }) = self.apps.get_mut(app) else {
            return;
        };
        let Some(s) = slots.get_mut(&slot) else {
            return;
        };
        let before = durable_view(&s.record.instance);
        let effects = s.record.instance.step(input, now, &rec.spec, jitter);
        if s.record.instance.process.is_some()
            || !matches!(
                s.record.instance.phase,
                Phase::Waiting { spawning: true, .. } | Phase::Stopping { .. }
            )
        {
            s.record.pending_port = None;
        }
        // Probe timestamps change every few seconds; only what a restarted daemon needs is
        // written (a probe result alone costs no disk write).
        if durable_view(&s.record.instance) != before {
            s.record.dirty = true;
        }
        for effect in effects {
            self.execute(app, slot, effect);
        }
    }

    fn execute(&mut self, app: &str, slot: u32, effect: Effect) {
        match effect {
            Effect::Spawn => self.spawn(app, slot),
            Effect::StopProcess { grace } => {
                if let Some(s) = self.slot_mut(app, slot)
                    && let Some(cmds) = &s.commands
                {
                    let _ = cmds.send(ShimCommand::Stop {
                        grace_ms: grace.as_millis() as u64,
                    });
                }
            }
            Effect::Probe => self.probe(app, slot),
            Effect::Notify(Note { kind, message }) => {
                let message = if kind == NoteKind::CrashLoop {
                    // An app that dies at once often says why in its last lines.
                    format!(
                        "{message}; last output:\n{}",
                        self.last_output(app, slot, 8)
                    )
                } else {
                    message
                };
                let kind = serde_json::to_value(&kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                self.emit(&format!("instance.{kind}"), Some(app), Some(slot), message);
            }
            Effect::Forget => {
                if let Some(rt) = self.apps.get_mut(app) {
                    rt.slots.remove(&slot);
                }
                let _ = self.store.delete_instance(app, slot);
                self.remove_app_if_done(app);
            }
        }
    }

    /// The last lines an instance wrote (stderr first, else stdout), for crash reports.
    fn last_output(&self, app: &str, slot: u32, n: usize) -> String {
        let dir = self.dirs.log_dir(app, slot);
        for stream in ["stderr.log", "stdout.log"] {
            if let Ok(lines) = crate::logfile::tail_lines(&dir.join(stream), n)
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

    /// Shims in `run/` that no instance refers to (left by a daemon that died at a bad moment):
    /// each is asked to stop its JVM, so nothing runs unsupervised.
    async fn stop_strays(&mut self) -> usize {
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
        let Ok(entries) = std::fs::read_dir(self.dirs.root().join("run")) else {
            return 0;
        };
        let mut stopped = 0;
        for dir in entries.flatten().map(|e| e.path()) {
            if known.contains(&dir) {
                continue;
            }
            match shim_client::stop_stray(&dir).await {
                Some(pid) => {
                    stopped += 1;
                    self.emit(
                        "daemon.stray-stopped",
                        None,
                        None,
                        format!("stopped JVM {pid} of stray shim {}", dir.display()),
                    );
                }
                None => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        stopped
    }

    /// Records (durably, so a daemon restart keeps going) that `app` is being removed.
    fn mark_removing(&mut self, app: &str) {
        if let Some(rt) = self.apps.get_mut(app) {
            rt.removing = true;
            rt.rec.removing = true;
            let _ = self.store.put_app(app, &rt.rec, now_ms());
        }
    }

    fn remove_app_if_done(&mut self, app: &str) {
        if self
            .apps
            .get(app)
            .is_some_and(|a| a.removing && a.slots.is_empty())
        {
            self.apps.remove(app);
            let _ = self.store.delete_app(app);
            self.emit("app.removed", Some(app), None, "app removed".to_string());
        }
    }

    /// Ports held (or being taken) by our instances, except `skip`'s own.
    fn ports_in_use_except(&self, skip: Option<(&str, u32)>) -> BTreeSet<u16> {
        self.apps
            .iter()
            .flat_map(|(name, a)| {
                a.slots
                    .iter()
                    .map(move |(slot, s)| (name.as_str(), *slot, s))
            })
            .filter(|(name, slot, _)| skip != Some((*name, *slot)))
            .filter_map(|(_, _, s)| {
                s.record
                    .instance
                    .process
                    .as_ref()
                    .map(|p| p.port)
                    .or(s.record.pending_port)
            })
            .collect()
    }

    fn ports_in_use(&self) -> BTreeSet<u16> {
        self.ports_in_use_except(None)
    }

    fn spawn(&mut self, app: &str, slot: u32) {
        let generation = self.next_generation;
        self.next_generation += 1;
        let ours = self.ports_in_use_except(Some((app, slot)));
        let Some(rt) = self.apps.get(app) else { return };
        let Some(s) = rt.slots.get(&slot) else { return };
        let preferred = s.record.last_port;
        let spec = rt.rec.spec.clone();
        let runtime = rt.rec.runtime.clone();
        let release = s.record.instance.release.clone();
        let port = match ports::pick(spec.ports, preferred, &ours) {
            Ok(p) => p,
            Err(error) => {
                self.step(app, slot, Input::SpawnFailed { error });
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
            Err(error) => {
                self.step(app, slot, Input::SpawnFailed { error });
                return;
            }
        };
        if let Some(s) = self.slot_mut(app, slot) {
            s.record.generation = generation;
            s.record.pending_port = Some(port);
            s.record.last_port = Some(port);
            s.record.dirty = true;
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
            && let Err(e) =
                shim_client::hand_over_dirs(&launch, u.uid, u.gid, spec.workdir.is_none())
        {
            self.step(
                app,
                slot,
                Input::SpawnFailed {
                    error: format!("{e:#}"),
                },
            );
            return;
        }
        match shim_client::start(
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
            Err(error) => self.step(
                app,
                slot,
                Input::SpawnFailed {
                    error: format!("{error:#}"),
                },
            ),
        }
    }

    fn probe(&mut self, app: &str, slot: u32) {
        let Some(rt) = self.apps.get(app) else { return };
        let Some(s) = rt.slots.get(&slot) else { return };
        let Some(port) = s.record.instance.process.as_ref().map(|p| p.port) else {
            return;
        };
        let check = rt.rec.spec.health.check.clone();
        let timeout = rt.rec.spec.health.timeout;
        let generation = s.record.generation;
        let vars = launch::instance_vars(app, slot, port);
        let tx = self.tx.clone();
        let app = app.to_string();
        tokio::spawn(async move {
            let result = probe::check(&check, port, timeout, &vars).await;
            let _ = tx
                .send(Event::Probe {
                    app,
                    slot,
                    generation,
                    result,
                })
                .await;
        });
    }

    fn tick_all(&mut self) {
        let now = now_ms();
        let due: Vec<(String, u32)> = self
            .apps
            .iter()
            .flat_map(|(name, rt)| {
                rt.slots
                    .iter()
                    .filter(|(_, s)| {
                        s.record
                            .instance
                            .next_wakeup(&rt.rec.spec)
                            .is_some_and(|t| t <= now)
                    })
                    .map(move |(slot, _)| (name.clone(), *slot))
            })
            .collect();
        for (app, slot) in due {
            self.step(&app, slot, Input::Tick);
        }
    }

    fn next_wakeup(&self) -> Option<u64> {
        self.apps
            .values()
            .flat_map(|rt| {
                rt.slots
                    .values()
                    .filter_map(|s| s.record.instance.next_wakeup(&rt.rec.spec))
            })
            .min()
    }

    /// Moves rolling restarts forward (config change, `restart APP`).
    fn roll_all(&mut self) {
        if self.shutdown.is_some() {
            return;
        }
        let mut moves = Vec::new();
        for (name, rt) in &self.apps {
            if rt.removing {
                continue;
            }
            let view: Vec<(&Instance, bool)> = rt
                .slots
                .values()
                .map(|s| {
                    let outdated = s.record.instance.release != rt.rec.release
                        || s.record.restart_generation < rt.rec.restart_generation;
                    (&s.record.instance, outdated)
                })
                .collect();
            for slot in reconcile::next_to_roll(&view) {
                moves.push((name.clone(), slot));
            }
        }
        for (app, slot) in moves {
            let Some(rt) = self.apps.get_mut(&app) else {
                continue;
            };
            let (release, generation) = (rt.rec.release.clone(), rt.rec.restart_generation);
            if let Some(s) = rt.slots.get_mut(&slot) {
                s.record.instance.release = release;
                s.record.restart_generation = generation;
                s.record.dirty = true;
            }
            self.emit(
                "instance.rolling",
                Some(&app),
                Some(slot),
                "replacing with the current release".to_string(),
            );
            self.step(
                &app,
                slot,
                Input::Stop {
                    then: AfterStop::Restart,
                },
            );
        }
    }

    fn persist_dirty(&mut self) {
        for rt in self.apps.values_mut() {
            for s in rt.slots.values_mut() {
                if s.record.dirty {
                    s.record.dirty = false;
                    if let Err(e) = self.store.put_instance(&s.record) {
                        tracing::error!(error = %e, "persisting instance");
                    }
                }
            }
        }
    }

    pub fn emit(&self, kind: &str, app: Option<&str>, slot: Option<u32>, message: String) {
        tracing::info!(kind, app, slot, "{message}");
        match self.store.add_event(now_ms(), kind, app, slot, &message) {
            Ok(rec) => {
                let _ = self.events.send(rec);
            }
            Err(e) => tracing::error!(error = %e, "recording event"),
        }
    }

    // ---- API commands ----

    fn apply(
        &mut self,
        desired: BTreeMap<String, PreparedApp>,
        source: PathBuf,
        dry_run: bool,
    ) -> Result<ApplyResponse, ErrorBody> {
        let current: BTreeMap<String, AppState> = self
            .apps
            .iter()
            .filter(|(_, a)| !a.removing)
            .map(|(n, a)| {
                (
                    n.clone(),
                    AppState {
                        spec: &a.rec.spec,
                        release: &a.rec.release,
                    },
                )
            })
            .collect();
        let wanted: BTreeMap<String, AppState> = desired
            .iter()
            .map(|(n, p)| {
                (
                    n.clone(),
                    AppState {
                        spec: &p.spec,
                        release: &p.release,
                    },
                )
            })
            .collect();
        let plan = reconcile::plan(&current, &wanted);
        self.preflight(&plan, &desired)?;
        if dry_run || plan.is_empty() {
            return Ok(ApplyResponse {
                plan,
                applied: !dry_run,
            });
        }
        self.spec_source = Some(source.display().to_string());
        let _ = self
            .store
            .set_meta("spec_source", &source.display().to_string());
        let now = now_ms();
        for change in &plan.changes {
            match change {
                AppChange::Add { app, instances } => {
                    let Some(p) = desired.get(app) else { continue };
                    let rec = AppRecord {
                        spec: p.spec.clone(),
                        release: p.release.clone(),
                        runtime: p.runtime.clone(),
                        restart_generation: 0,
                        removing: false,
                    };
                    let _ = self
                        .store
                        .put_release(app, &p.release, &p.release_record, now);
                    if let Err(e) = self.store.put_app(app, &rec, now) {
                        return Err(failed(format!("saving app {app}: {e:#}")));
                    }
                    // An app that was being removed comes back: keep its slots, update the spec.
                    let rt = self.apps.entry(app.clone()).or_insert(AppRuntime {
                        rec: rec.clone(),
                        slots: BTreeMap::new(),
                        removing: false,
                    });
                    rt.rec = rec;
                    rt.removing = false;
                    self.emit(
                        "app.added",
                        Some(app),
                        None,
                        format!("added with {instances} instance(s), release {}", p.release),
                    );
                    self.ensure_slots(app, *instances);
                }
                AppChange::Remove { app } => {
                    self.mark_removing(app);
                    self.emit(
                        "app.removing",
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
                    self.update_spec(app, &desired);
                    self.emit(
                        "app.scaled",
                        Some(app),
                        None,
                        format!("scaled from {from} to {to}"),
                    );
                    self.ensure_slots(app, *to);
                }
                AppChange::Roll { app, from, to, why } => {
                    self.update_spec(app, &desired);
                    if let Some(p) = desired.get(app) {
                        let _ = self
                            .store
                            .put_release(app, &p.release, &p.release_record, now);
                    }
                    self.emit(
                        "app.rolling",
                        Some(app),
                        None,
                        format!("rolling restart {from} → {to} ({} changed)", why.join(", ")),
                    );
                }
                AppChange::Update { app, fields } => {
                    self.update_spec(app, &desired);
                    self.emit(
                        "app.updated",
                        Some(app),
                        None,
                        format!("updated live: {}", fields.join(", ")),
                    );
                }
            }
        }
        Ok(ApplyResponse {
            plan,
            applied: true,
        })
    }

    /// Checks that need the live state (ports) before anything changes.
    fn preflight(
        &self,
        plan: &reconcile::Plan,
        desired: &BTreeMap<String, PreparedApp>,
    ) -> Result<(), ErrorBody> {
        let ours = self.ports_in_use();
        let mut errors = Vec::new();
        for change in &plan.changes {
            let (app, need) = match change {
                AppChange::Add { app, instances } => (app, *instances),
                AppChange::Scale { app, to, from } if to > from => (app, *to),
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
            let usable = (range.first..=range.last)
                .filter(|port| {
                    held_by_app.contains(port) || (!ours.contains(port) && ports::is_free(*port))
                })
                .count();
            if usable < need as usize {
                let taken = ports::taken_by_others(range, &ours);
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
        } else {
            Err(usage(
                errors.join("\n"),
                Some("free those ports or widen the `ports` range; nothing was applied"),
            ))
        }
    }

    fn update_spec(&mut self, app: &str, desired: &BTreeMap<String, PreparedApp>) {
        let (Some(p), Some(rt)) = (desired.get(app), self.apps.get_mut(app)) else {
            return;
        };
        rt.rec.spec = p.spec.clone();
        rt.rec.release = p.release.clone();
        rt.rec.runtime = p.runtime.clone();
        let _ = self.store.put_app(app, &rt.rec, now_ms());
    }

    /// Creates or removes slots so that exactly `n` instances run (lowest slot numbers kept).
    fn ensure_slots(&mut self, app: &str, n: u32) {
        let now = now_ms();
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let release = rt.rec.release.clone();
        let restart_generation = rt.rec.restart_generation;
        let live: Vec<u32> = rt
            .slots
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
                        let record = InstanceRecord {
                            instance: Instance::new(app, slot, &release, now),
                            generation: 0,
                            restart_generation,
                            pending_port: None,
                            last_port: None,
                            dirty: true,
                        };
                        e.insert(Slot {
                            record,
                            commands: None,
                            cpu: None,
                        });
                        missing -= 1;
                    }
                    std::collections::btree_map::Entry::Occupied(e) => {
                        if matches!(
                            e.get().record.instance.phase,
                            Phase::Stopping {
                                then: AfterStop::Remove,
                                ..
                            }
                        ) {
                            // Being removed but wanted again: it comes back once stopped.
                            revive.push(slot);
                            missing -= 1;
                        }
                    }
                }
                slot += 1;
            }
        }
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

    fn action(&mut self, req: ActionRequest) -> Result<Ack, ErrorBody> {
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
        let target = match req.slot {
            Some(s) => format!("{}/{s}", req.app),
            None => req.app.clone(),
        };
        match req.action {
            Action::Start => {
                for slot in slots {
                    self.step(&req.app, slot, Input::Start);
                }
                self.emit(
                    "app.start",
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
                    "app.stop",
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
                    "app.restart",
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
                    let _ = self.store.put_app(&req.app, &rt.rec, now_ms());
                }
                // Stopped instances come back as part of the restart.
                for slot in slots {
                    self.step(&req.app, slot, Input::Start);
                }
                self.emit(
                    "app.restart",
                    Some(&req.app),
                    None,
                    format!("rolling restart of {target}"),
                );
                Ok(Ack {
                    message: format!("rolling restart of {target} (one instance at a time)"),
                })
            }
        }
    }

    fn scale(&mut self, req: ScaleRequest) -> Result<Ack, ErrorBody> {
        let Some(rt) = self.apps.get(&req.app).filter(|a| !a.removing) else {
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
            "app.scaled",
            Some(&req.app),
            None,
            format!("scaled from {from} to {}", req.instances),
        );
        self.ensure_slots(&req.app, req.instances);
        Ok(Ack {
            message: format!("scaling {} from {from} to {}", req.app, req.instances),
        })
    }

    fn unknown_app(&self, app: &str) -> ErrorBody {
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

    fn begin_shutdown(&mut self, stop_instances: bool, reply: oneshot::Sender<Ack>) {
        match &mut self.shutdown {
            Some((_, waiters)) => waiters.push(reply),
            None => self.shutdown = Some((stop_instances, vec![reply])),
        }
        if stop_instances {
            self.emit(
                "daemon.stopping",
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
                "daemon.stopping",
                None,
                None,
                "daemon stopping; instances keep running under their shims".to_string(),
            );
        }
    }

    fn shutdown_complete(&self) -> bool {
        match &self.shutdown {
            None => false,
            Some((false, _)) => true,
            Some((true, _)) => self.apps.is_empty(),
        }
    }

    fn status(&mut self) -> StatusReport {
        let now = now_ms();
        let mut apps = Vec::new();
        for (name, rt) in self.apps.iter_mut() {
            let mut instances = Vec::new();
            for s in rt.slots.values_mut() {
                let i = &s.record.instance;
                let pid = i.process.as_ref().map(|p| p.pid);
                let (cpu_percent, rss_bytes) = match pid {
                    Some(pid) => (sample_cpu(&mut s.cpu, pid), procinfo::rss_bytes(pid)),
                    None => (None, None),
                };
                instances.push(InstanceStatus {
                    app: name.clone(),
                    slot: i.slot,
                    state: i.state_word().to_string(),
                    ready: i.is_ready(),
                    release: i.release.clone(),
                    pid,
                    shim_pid: i.process.as_ref().map(|p| p.shim_pid),
                    port: i.process.as_ref().map(|p| p.port),
                    uptime_secs: i
                        .process
                        .as_ref()
                        .map(|p| now.saturating_sub(p.started_at) / 1000),
                    restarts: i.restarts,
                    cpu_percent,
                    rss_bytes,
                    last_exit: i.last_exit.as_ref().map(|(_, class)| class.describe()),
                    health_error: i.probes.last_error.clone(),
                });
            }
            let ready = instances.iter().filter(|i| i.ready).count() as u32;
            let rolling = rt.slots.values().any(|s| {
                s.record.instance.release != rt.rec.release
                    || s.record.restart_generation < rt.rec.restart_generation
            });
            apps.push(AppStatus {
                name: name.clone(),
                release: rt.rec.release.clone(),
                desired: if rt.removing {
                    0
                } else {
                    rt.rec.spec.instances
                },
                ready,
                rolling,
                java: Some(format!(
                    "{} ({})",
                    rt.rec.runtime.version,
                    rt.rec.runtime.home.display()
                )),
                instances,
            });
        }
        StatusReport {
            daemon: DaemonStatus {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                state_dir: self.dirs.root().display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
                spec: self.spec_source.clone(),
            },
            apps,
        }
    }
}

/// The part of an instance that must survive a daemon restart.
fn durable_view(i: &Instance) -> (Phase, Option<ProcessRef>, String, u32, u32, bool) {
    (
        i.phase.clone(),
        i.process.clone(),
        i.release.clone(),
        i.restarts,
        i.consecutive_crashes,
        i.last_exit.is_some(),
    )
}

/// CPU % since the previous sample (first call: since process start is not known, so none).
fn sample_cpu(prev: &mut Option<(u64, Instant, f64)>, pid: u32) -> Option<f64> {
    let ticks = procinfo::cpu_ticks(pid)?;
    let now = Instant::now();
    let result = match prev {
        Some((t0, at, last)) => {
            let dt = now.duration_since(*at).as_secs_f64();
            if dt < 0.5 {
                Some(*last)
            } else {
                let pct =
                    (ticks.saturating_sub(*t0)) as f64 / procinfo::CLOCK_TICKS_PER_SEC as f64 / dt
                        * 100.0;
                *prev = Some((ticks, now, pct));
                return Some((pct * 10.0).round() / 10.0);
            }
        }
        None => None,
    };
    if result.is_none() {
        *prev = Some((ticks, now, 0.0));
    }
    result
}
