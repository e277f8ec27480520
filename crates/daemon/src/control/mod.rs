//! The control loop: the one owner of mutable state. Fed by a closed [`Event`] enum, it steps the
//! pure instance state machines from `jarfleet_core` and carries out the effects they return.

use jarfleet_core::events::EventKind;
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

use crate::clock::Clock;
use crate::persist::{Change, Persist};
use crate::probe;
use crate::shim_client::{self as shim_client, ShimEvent, ShimNote};
use crate::store::{AppRecord, InstanceRecord, Store, Write};
use jarfleet_host::launch::{self, LaunchInput};
use jarfleet_host::paths::StateDir;
use jarfleet_host::ports;
use jarfleet_shim::procinfo;
use jarfleet_shim::protocol::ShimCommand;

pub type Reply<T> = oneshot::Sender<Result<T, ErrorBody>>;

pub use jarfleet_host::prepare::PreparedApp;

use crate::etcd_watch::EtcdNote;
use data_plane::BalancerNote;
pub use event::{ApiRequest, Event, Notice};

struct Slot {
    record: InstanceRecord,
    commands: Option<mpsc::UnboundedSender<ShimCommand>>,
    cpu: Option<(u64, Instant, f64)>,
}

impl Slot {
    /// Stopping for good: removed once its process is gone (a scale down, a deployment's
    /// leftover), not restarted.
    fn being_removed(&self) -> bool {
        matches!(
            self.record.instance.phase,
            Phase::Stopping {
                then: AfterStop::Remove,
                ..
            }
        )
    }

    /// A slot for a stored instance, not attached to its shim yet.
    fn of(record: InstanceRecord) -> Slot {
        Slot {
            record,
            commands: None,
            cpu: None,
        }
    }

    /// A new slot whose instance of `release` has not started yet (to be stored).
    fn new(app: &str, slot: u32, release: &str, restart_generation: u64, now: u64) -> Slot {
        Slot::of(InstanceRecord {
            instance: Instance::new(app, slot, release, now),
            generation: 0,
            restart_generation,
            pending_port: None,
            last_port: None,
            standby_until: None,
            dirty: true,
        })
    }
}

struct AppRuntime {
    rec: AppRecord,
    slots: BTreeMap<u32, Slot>,
    removing: bool,
    /// The deployment under way, if any (its canary run and live refresh with it).
    deployment: Option<jarfleet_core::deployment::Deployment>,
}

impl AppRuntime {
    /// The canary run of the deployment under way, when it is a canary.
    fn canary(&self) -> Option<&jarfleet_core::deployment::CanaryRun> {
        self.deployment.as_ref()?.canary.as_ref()
    }
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
    /// Where the loop reads the time ([`Control::now_ms`]).
    clock: Arc<dyn Clock>,
    /// Shims and health checks ([`host::Host`]).
    host: Arc<dyn host::Host>,
    /// The load balancer's listeners ([`data_plane::DataPlane`]).
    data_plane: Arc<dyn data_plane::DataPlane>,
    lb: lb::Balancer,
    /// Releases whose class data archive is being trained (app, release).
    training: std::collections::BTreeSet<(String, String)>,
    /// One etcd watch per app with an etcd config source.
    etcd_watches: BTreeMap<String, (jarfleet_core::spec::EtcdSource, host::Watch)>,
    /// The latest etcd values of an app, while they are not yet what it runs.
    etcd_pending: BTreeMap<String, BTreeMap<String, String>>,
    /// What `/metrics` shows that needs history (`metrics.rs`).
    metrics: metrics::Tally,
    /// `/metrics` is served (`[daemon] metrics`).
    metrics_on: bool,
    /// Unix time (ms) the daemon started.
    started_at_ms: u64,
    /// When to hand back the code and heap pages the last piece of work needed.
    trimmer: jarfleet_shim::footprint::Trimmer,
    /// The daemon's own shortages (file descriptors, memory, …): counted, reported at a rate.
    shortages: jarfleet_shim::fdlimit::Alerts,
    /// Writes to the store: at once, or kept and written again while it fails (`persist`).
    persist: std::cell::RefCell<Persist>,
    /// Store writes refused on purpose (a simulation's full disk; none in the daemon).
    store_faults: Option<Arc<dyn crate::persist::Faults>>,
    /// The id of the latest event (events get their ids here, so one kept in memory while the
    /// store fails is streamed with the id it is stored under later).
    last_event_id: std::cell::Cell<i64>,
    /// Shims whose JVM runs but which no instance accounts for: left running, reported.
    strays: Vec<jarfleet_host::survivors::Survivor>,
    /// Cluster mode: what the cluster assigned this node, and the other nodes' instances.
    cluster: Option<cluster::ClusterState>,
    /// A restarted node's balancers: the other nodes' instances its data plane was sending to
    /// when the last daemon went, kept in every snapshot until the agent tells the loop what
    /// the cluster runs now (else the first snapshot after a restart would leave only this
    /// node's own instances, or none).
    carried_remote: BTreeMap<String, Vec<data_plane::BackendEntry>>,
    /// This node's relay (cluster nodes with TLS).
    relay: Option<relay::Relay>,
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

mod canary;
mod cluster;
mod cluster_lead;
mod commands;
pub mod data_plane;
mod deploy;
mod during;
mod event;
pub mod host;
mod lb;
mod metrics;
mod refresh;
pub mod relay;
mod shims;
mod status;

/// What the loop reaches outside itself that a simulation stands in for: the clock, the host
/// (shims, their stop commands, health checks, ports, refresh requests, etcd watches, archive
/// training), the load balancer's data plane and the seed of its randomness (restart jitter).
/// The store is the real [`Store`] (a simulation opens one in a temporary directory and may make
/// its writes fail: `store_faults`). The real daemon passes [`World::real`].
pub struct World {
    pub clock: Arc<dyn Clock>,
    /// Shims and health checks.
    pub host: Arc<dyn host::Host>,
    /// The load balancer's listeners.
    pub data_plane: Arc<dyn data_plane::DataPlane>,
    /// `None`: seeded from the OS.
    pub seed: Option<u64>,
    /// Store writes to refuse as a full disk would (a simulation's); `None` in the daemon.
    pub store_faults: Option<Arc<dyn crate::persist::Faults>>,
}

impl World {
    /// The host's clock, shims and randomness, with `data_plane` for the listeners.
    pub fn real(data_plane: Arc<dyn data_plane::DataPlane>) -> World {
        World {
            clock: Arc::new(crate::clock::SystemClock),
            host: Arc::new(host::RealHost),
            data_plane,
            seed: None,
            store_faults: None,
        }
    }
}

impl Control {
    /// A loop that reads the time and its randomness from `world`.
    pub fn with_world(
        dirs: StateDir,
        store: Store,
        tx: mpsc::Sender<Event>,
        events: broadcast::Sender<EventRecord>,
        exe: PathBuf,
        degraded: Option<String>,
        world: World,
    ) -> anyhow::Result<Control> {
        use rand::SeedableRng;
        let now = world.clock.now_ms();
        let rng = match world.seed {
            Some(seed) => rand::rngs::StdRng::seed_from_u64(seed),
            None => rand::rngs::StdRng::from_os_rng(),
        };
        let next_generation = store.max_generation()? + 1;
        let last_event_id = store.last_event_id()?;
        let spec_source = store.meta("spec_source")?;
        let metrics_on = store.meta("metrics")?.as_deref() != Some("off");
        let base_env: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| {
                !k.starts_with("JARFLEET_") && !crate::sd_notify::PRIVATE_VARS.contains(&k.as_str())
            })
            .collect();
        let failing = degraded.clone();
        let control = Control {
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
            rng,
            clock: world.clock,
            host: world.host,
            data_plane: world.data_plane,
            lb: lb::Balancer::default(),
            training: Default::default(),
            etcd_watches: BTreeMap::new(),
            etcd_pending: BTreeMap::new(),
            metrics: metrics::Tally::default(),
            metrics_on,
            started_at_ms: now,
            trimmer: Default::default(),
            shortages: Default::default(),
            persist: std::cell::RefCell::new(Persist::new(degraded, now)),
            store_faults: world.store_faults,
            last_event_id: std::cell::Cell::new(last_event_id),
            strays: Vec::new(),
            cluster: None,
            carried_remote: BTreeMap::new(),
            relay: None,
        };
        if let Some(error) = failing {
            control.store_changed(Change::Failing { error });
        }
        Ok(control)
    }

    /// The time now (Unix ms), from the loop's clock.
    pub(super) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Event>) {
        self.trimmer.worked(self.now_ms());
        loop {
            let busy = Instant::now();
            let Some(wake) = self.tick() else {
                break;
            };
            let sleep = wake
                .map(|at| Duration::from_millis(at.saturating_sub(self.now_ms())))
                .unwrap_or(Duration::from_secs(3600));
            self.metrics.busy("timers", busy.elapsed());
            tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => {
                        let busy = Instant::now();
                        let kind = ev.kind();
                        if ev.is_work() {
                            self.trimmer.worked(self.now_ms());
                        }
                        self.handle(ev);
                        self.metrics.event(kind, busy.elapsed());
                    }
                    None => break,
                },
                _ = tokio::time::sleep(sleep) => {}
            }
        }
        if let Some((everything, waiters)) = self.shutdown.take() {
            // `down`: the listeners went with their apps, and the data plane goes now; a
            // restart leaves it serving for the next daemon.
            self.data_plane.leave(everything);
            for w in waiters {
                let _ = w.send(Ack {
                    message: "daemon stopped".into(),
                });
            }
        }
    }

    /// The loop's own work at a wake-up, as `run` does it before it waits: deadlines, deployments,
    /// the balancer's snapshots, store writes. `None` once a shutdown is complete; otherwise
    /// when the loop next needs waking (Unix ms; `Some(None)`: only for a message).
    pub fn tick(&mut self) -> Option<Option<u64>> {
        self.tick_all();
        self.trim_when_quiet();
        self.follow_leads();
        self.drive_deployments();
        self.settle_cluster_slots();
        self.sync_all_lbs();
        self.publish_cluster_view();
        self.publish_set_stats();
        self.persist_dirty();
        self.retry_store();
        if self.shutdown_complete() {
            return None;
        }
        Some(self.next_wakeup())
    }

    /// Handles one event (what `run` does for each message it receives).
    pub fn handle(&mut self, ev: Event) {
        match ev {
            Event::Api(req) => self.handle_api(req),
            Event::Shim(ShimNote {
                app,
                slot,
                generation,
                event,
            }) => self.on_shim(app, slot, generation, event),
            Event::Notice(Notice { kind, app, message }) => {
                self.emit(kind, app.as_deref(), None, message)
            }
            Event::Etcd(EtcdNote::Values { app, values }) => self.on_etcd_values(&app, values),
            Event::Cluster(note) => self.on_cluster(note),
            Event::ConfigRelease { app, prepared } => {
                let values = prepared.spec.etcd_env.clone();
                let busy = self.apps.get(&app).is_some_and(|a| a.deployment.is_some());
                if busy {
                    // A deployment began meanwhile: the change goes out when it ends.
                    self.etcd_pending.insert(app, values);
                    return;
                }
                self.config_release(&app, *prepared);
            }
            Event::Refreshed(host::Refreshed {
                app,
                slot,
                generation,
                result,
            }) => self.on_refreshed(&app, slot, generation, result),
            Event::Trained(host::Trained {
                app,
                release,
                result,
            }) => {
                self.training.remove(&(app.clone(), release));
                match result {
                    Ok(message) => self.emit(EventKind::CdsTrained, Some(&app), None, message),
                    Err(e) => self.emit(
                        EventKind::CdsFailed,
                        Some(&app),
                        None,
                        format!(
                            "no class data archive for this release (its instances start without one; not tried again — delete STATE/cds/{app}/*.attempt to retry): {e}"
                        ),
                    ),
                }
            }
            Event::Balancer(BalancerNote::Drained {
                app,
                slot,
                generation,
            }) => {
                if self.current_generation(&app, slot) == Some(generation) {
                    self.step(&app, slot, Input::Drained);
                }
            }
            Event::Probe(probe::ProbeResult {
                app,
                slot,
                generation,
                outcome,
                took,
            }) => {
                if self.current_generation(&app, slot) == Some(generation) {
                    let input = match outcome {
                        probe::Outcome::Pass => {
                            self.count_probe(&app, slot, true, took);
                            Input::Probe {
                                ok: true,
                                error: None,
                            }
                        }
                        probe::Outcome::Fail(e) => {
                            self.count_probe(&app, slot, false, took);
                            Input::Probe {
                                ok: false,
                                error: Some(e),
                            }
                        }
                        probe::Outcome::Inconclusive { shortage, error } => {
                            self.note_shortage(
                                shortage,
                                &format!(
                                    "The health check of {app}/{slot} could not be run ({error}); not counted against the instance, tried again within {} s",
                                    jarfleet_core::health::INCONCLUSIVE_RETRY_MS / 1000
                                ),
                            );
                            Input::ProbeInconclusive { reason: error }
                        }
                    };
                    self.step(&app, slot, input);
                }
            }
        }
    }

    /// Answers one API request.
    fn handle_api(&mut self, req: ApiRequest) {
        match req {
            ApiRequest::DaemonSettings {
                daemon,
                source,
                reply,
            } => {
                let _ = reply.send(self.keep_daemon_settings(&daemon, source));
            }
            ApiRequest::Apply {
                apps,
                daemon,
                source,
                dry_run,
                reply,
            } => {
                let _ = reply.send(self.apply(apps, &daemon, source, dry_run));
                let names: Vec<String> = self.apps.keys().cloned().collect();
                for app in names {
                    self.ensure_etcd_watch(&app);
                }
                let gone: Vec<String> = self
                    .etcd_watches
                    .keys()
                    .filter(|a| !self.apps.contains_key(*a))
                    .cloned()
                    .collect();
                for app in gone {
                    // Dropping the watch stops it.
                    self.etcd_watches.remove(&app);
                }
            }
            ApiRequest::Action { req, reply } => {
                let _ = reply.send(self.action(req));
            }
            ApiRequest::Scale { req, reply } => {
                let _ = reply.send(self.scale(req));
            }
            ApiRequest::Status { reply } => {
                let _ = reply.send(self.status());
            }
            ApiRequest::Metrics { reply } => {
                let _ = reply.send(self.metrics_snapshot());
            }
            ApiRequest::CurrentSpec { app, reply } => {
                let spec = self
                    .apps
                    .get(&app)
                    .filter(|a| !a.removing)
                    .map(|a| a.rec.spec.clone());
                let _ = reply.send(spec);
            }
            ApiRequest::Deploy {
                app,
                prepared,
                version,
                reply,
            } => {
                let _ = reply.send(self.deploy(&app, *prepared, version));
            }
            ApiRequest::Rollback { req, reply } => {
                let _ = reply.send(self.rollback(&req.app, req.to.as_deref()));
            }
            ApiRequest::Canary { req, reply } => {
                let _ = reply.send(if req.promote {
                    self.canary_decide(&req.app, req.promote, req.full)
                } else {
                    // `abort` works on every deployment (a canary's is its own).
                    self.abort(&req.app)
                });
            }
            ApiRequest::History { app, reply } => {
                let _ = reply.send(self.history(&app));
            }
            ApiRequest::Shutdown {
                stop_instances,
                reply,
            } => self.begin_shutdown(stop_instances, reply),
            ApiRequest::HandOver {
                binary,
                grace,
                reply,
            } => {
                let answer = if self.shutdown.is_some() {
                    Err(usage("the daemon is stopping", None))
                } else {
                    self.data_plane
                        .hand_over_to(&binary, grace)
                        .map(|message| Ack { message })
                        .map_err(failed)
                };
                let _ = reply.send(answer);
            }
            ApiRequest::TakeStrays { reply } => {
                let _ = reply.send(self.take_strays());
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

    fn slot_mut(&mut self, app: &str, slot: u32) -> Option<&mut Slot> {
        self.apps.get_mut(app)?.slots.get_mut(&slot)
    }

    /// Steps one instance and carries out the effects.
    fn step(&mut self, app: &str, slot: u32, input: Input) {
        let jitter: f64 = rand::Rng::random(&mut self.rng);
        let now = self.now_ms();
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
            Effect::Drain { timeout } => self.drain(app, slot, timeout),
            Effect::Notify(Note { kind, message }) => {
                self.count_note(app, slot, &kind);
                let message = if kind == NoteKind::CrashLoop {
                    // An app that dies at once often says why in its last lines.
                    format!(
                        "{message}; last output:\n{}",
                        self.last_output(app, slot, 8)
                    )
                } else {
                    message
                };
                let ready = kind == NoteKind::Ready;
                self.emit(EventKind::of_note(kind), Some(app), Some(slot), message);
                if ready {
                    self.train_if_needed(app, slot);
                }
            }
            Effect::Forget => {
                if let Some(rt) = self.apps.get_mut(app) {
                    rt.slots.remove(&slot);
                }
                self.write(Write::DeleteInstance {
                    app: app.to_string(),
                    slot,
                });
                self.remove_app_if_done(app);
                self.prune_metrics(app);
            }
        }
    }

    fn tick_all(&mut self) {
        let now = self.now_ms();
        self.canary_tick(now);
        self.retry_listeners(now);
        // Warm blue-green sets whose `keep_old` ran out are stopped.
        let expired: Vec<(String, u32)> = self
            .apps
            .iter()
            .flat_map(|(name, rt)| {
                rt.slots
                    .iter()
                    .filter(|(_, s)| {
                        s.record.standby_until.is_some_and(|t| t <= now)
                            && !matches!(
                                s.record.instance.phase,
                                Phase::Stopping { .. } | Phase::Stopped
                            )
                    })
                    .map(move |(slot, _)| (name.clone(), *slot))
            })
            .collect();
        for (app, slot) in expired {
            self.emit(
                EventKind::InstanceStandbyEnded,
                Some(&app),
                Some(slot),
                "keep_old is over: stopping the warm old instance".into(),
            );
            self.step(
                &app,
                slot,
                Input::Stop {
                    then: jarfleet_core::instance::AfterStop::Remove,
                },
            );
        }
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
                rt.slots.values().filter_map(|s| {
                    let own = s.record.instance.next_wakeup(&rt.rec.spec);
                    // A standby deadline counts until its stop has begun (no spinning after).
                    let standby = s.record.standby_until.filter(|_| {
                        !matches!(
                            s.record.instance.phase,
                            Phase::Stopping { .. } | Phase::Stopped
                        )
                    });
                    match (own, standby) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                })
            })
            .chain(self.canary_wakeup())
            .chain(self.lead_wakeup())
            .chain(self.listener_wakeup())
            .chain(self.trimmer.due_at())
            .chain(self.persist.borrow().next_retry())
            .min()
    }

    /// Once the daemon has been quiet for a while after some work (start-up, a deploy, a crash
    /// and restart), it hands back the code and heap pages that work needed (see
    /// [`jarfleet_shim::footprint`]).
    fn trim_when_quiet(&mut self) {
        if self.trimmer.take_due(self.now_ms()) {
            let trimmed = jarfleet_shim::footprint::trim();
            tracing::debug!(
                code_kib = trimmed.code_kib,
                heap = trimmed.heap,
                "handed back memory after quiet"
            );
        }
    }

    fn persist_dirty(&mut self) {
        let mut dirty = Vec::new();
        for rt in self.apps.values_mut() {
            for s in rt.slots.values_mut() {
                if s.record.dirty {
                    s.record.dirty = false;
                    dirty.push(s.record.clone());
                }
            }
        }
        for rec in dirty {
            self.write(Write::Instance(Box::new(rec)));
        }
    }

    /// Writes to the store, or keeps the write to be written again when the store does not
    /// take it (a full disk); never fails.
    pub(super) fn write(&self, w: Write) {
        let change = self
            .persist
            .borrow_mut()
            .write(&self.store_target(), w, self.now_ms());
        if let Some(change) = change {
            self.store_changed(change);
        }
    }

    /// The store, behind the fault hook of a simulation.
    pub(super) fn store_target(&self) -> crate::persist::Guarded<'_> {
        crate::persist::Guarded {
            store: &self.store,
            faults: self.store_faults.as_deref(),
        }
    }

    /// Writes the app's record as it is now.
    pub(super) fn write_app(&self, app: &str) {
        if let Some(rt) = self.apps.get(app) {
            self.write(Write::App {
                name: app.to_string(),
                record: Box::new(rt.rec.clone()),
                now: self.now_ms(),
            });
        }
    }

    /// While store writes fail: everything kept is written again every second, and a store
    /// opened for the daemon alone (a start on a full disk) is opened normally again.
    fn retry_store(&mut self) {
        let now = self.now_ms();
        if !self.persist.borrow().due(now) {
            return;
        }
        let flushed = self.persist.borrow_mut().flush(&self.store_target(), now);
        let Ok(written) = flushed else { return };
        if self.persist.borrow().degraded() {
            match self.reopen_store() {
                Ok(()) => self.persist.borrow_mut().reopened(),
                Err(e) => {
                    self.persist
                        .borrow_mut()
                        .still_degraded(format!("{e:#}"), now);
                    return;
                }
            }
        }
        let change = self.persist.borrow_mut().recovered(written, now);
        if let Some(change) = change {
            self.store_changed(change);
            // etcd changes refused while the store failed go out now.
            let waiting: Vec<String> = self
                .etcd_pending
                .keys()
                .filter(|a| self.apps.get(*a).is_some_and(|rt| rt.deployment.is_none()))
                .cloned()
                .collect();
            for app in waiting {
                self.etcd_after_deployment(&app);
            }
        }
    }

    /// Writes what was kept while the store failed now, for a write that cannot wait (it must
    /// not reach the store before them). `Err` while the store still fails.
    pub(super) fn flush_kept(&mut self) -> Result<(), String> {
        if self.persist.borrow().next_retry().is_none() {
            return Ok(());
        }
        let now = self.now_ms();
        let flushed = self.persist.borrow_mut().flush(&self.store_target(), now);
        let written = flushed.map_err(|e| {
            format!(
                "the store cannot be written ({e}); try again once it is (event daemon.store-recovered)"
            )
        })?;
        let change = self.persist.borrow_mut().recovered(written, now);
        if let Some(change) = change {
            self.store_changed(change);
        }
        Ok(())
    }

    /// Closes the store opened for the daemon alone and opens it normally (readers can use it
    /// again); when that fails, it is opened for the daemon alone again.
    fn reopen_store(&mut self) -> anyhow::Result<()> {
        let db = self.dirs.db();
        // The exclusive lock goes with the old connection.
        drop(std::mem::replace(&mut self.store, Store::unavailable()?));
        match Store::open(&db) {
            Ok(store) => {
                self.store = store;
                Ok(())
            }
            Err(e) => {
                if let Ok(store) = Store::open_exclusive(&db) {
                    self.store = store;
                }
                Err(e)
            }
        }
    }

    fn store_changed(&self, change: Change) {
        match change {
            Change::Failing { error } => {
                let message = format!(
                    "the store ({}) cannot be written: {error}. Instances are supervised and balanced as before; their records and events are kept in memory and written when it can be again (tried every {} s). To do: free space on that disk (df -h {}).",
                    self.dirs.db().display(),
                    crate::persist::RETRY_MS / 1000,
                    self.dirs.root().display()
                );
                self.emit(EventKind::DaemonStoreFailing, None, None, message);
            }
            Change::Recovered {
                failed_for_ms,
                written,
                events_dropped,
            } => {
                let mut message = format!(
                    "the store is written again after {:.1} s: {written} kept write(s) written",
                    failed_for_ms as f64 / 1000.0
                );
                if events_dropped > 0 {
                    message.push_str(&format!(
                        "; {events_dropped} event(s) were dropped (more than {} waited)",
                        crate::persist::EVENT_QUEUE
                    ));
                }
                self.emit(EventKind::DaemonStoreRecovered, None, None, message);
            }
        }
    }

    /// The store's and the daemon log's health, for `status` and `/metrics`.
    pub(super) fn store_report(&self) -> jarfleet_api::StoreHealth {
        let h = self.persist.borrow().health();
        let log = crate::daemonlog::stats();
        let free = crate::persist::free_bytes(self.dirs.root());
        jarfleet_api::StoreHealth {
            disk_free_bytes: free,
            disk_full: free.is_some_and(|b| b < crate::persist::DISK_FULL_BELOW),
            writable: h.failing_since.is_none(),
            failing_since: h.failing_since,
            last_error: h.last_error,
            pending_writes: h.pending as u64,
            write_errors: h.write_errors,
            events_dropped: h.events_dropped,
            exclusive: h.degraded,
            log_lines_dropped: log.dropped_lines,
            log_failing: log.failing,
        }
    }

    /// Starts, keeps or stops the app's etcd watch to match its spec.
    pub(super) fn ensure_etcd_watch(&mut self, app: &str) {
        let source = self
            .apps
            .get(app)
            .filter(|a| !a.removing)
            .and_then(|a| a.rec.spec.config_etcd.clone());
        match (source, self.etcd_watches.get(app)) {
            (Some(s), Some((running, _))) if *running == s => {}
            (Some(s), _) => {
                // The old watch (if any) stops as it is dropped.
                self.etcd_watches.remove(app);
                let watch = self
                    .host
                    .watch_etcd(app.to_string(), s.clone(), self.tx.clone());
                self.etcd_watches.insert(app.to_string(), (s, watch));
            }
            (None, Some(_)) => {
                self.etcd_watches.remove(app);
            }
            (None, None) => {}
        }
    }

    /// New etcd values: a new release with them, prepared off the loop, then rolled out.
    fn on_etcd_values(&mut self, app: &str, values: BTreeMap<String, String>) {
        let Some(rt) = self.apps.get(app).filter(|a| !a.removing) else {
            return;
        };
        if rt.rec.spec.etcd_env == values {
            self.etcd_pending.remove(app);
            return;
        }
        if rt.deployment.is_some() {
            // Rolled out when the running deployment ends.
            self.etcd_pending.insert(app.to_string(), values);
            return;
        }
        self.etcd_pending.remove(app);
        // The running spec: the current release's, with the live settings as the user last
        // set them (on_change among them).
        let mut spec = rt.rec.spec.clone();
        spec.etcd_env = values;
        let req = host::ConfigRequest {
            app: app.to_string(),
            spec,
            dirs: self.dirs.clone(),
        };
        self.host.prepare_config(req, self.tx.clone());
    }

    /// After a deployment ends: an etcd change that waited for it goes out now.
    pub(super) fn etcd_after_deployment(&mut self, app: &str) {
        if let Some(values) = self.etcd_pending.remove(app) {
            self.on_etcd_values(app, values);
        }
    }

    /// Once an instance of a release is ready: if the release has no archive and its one dump
    /// was not tried yet, that instance dumps it in the background (`faststart::dump`). An
    /// instance started without the recording flag (e.g. by an older jarfleet) is passed over:
    /// the next one that has it is asked.
    fn train_if_needed(&mut self, app: &str, slot: u32) {
        let Some(rt) = self.apps.get(app) else { return };
        let Some(s) = rt.slots.get(&slot) else { return };
        let release = s.record.instance.release.clone();
        let Some(pid) = s.record.instance.process.as_ref().map(|p| p.pid) else {
            return;
        };
        let (spec, runtime) = rt.rec.release(&release);
        let key = (app.to_string(), release.clone());
        if self.training.contains(&key)
            || !jarfleet_host::faststart::needs_dump(spec, runtime, &release, &self.dirs)
            || !(self.host.records_dump_info(pid)
                || jarfleet_java::cds::dump_blocked_by(&spec.java.opts).is_some())
        {
            return;
        }
        let run_as = match spec
            .user
            .as_deref()
            .map(|name| jarfleet_host::launch::resolve_user(app, name))
            .transpose()
        {
            Ok(u) => u.map(|u| jarfleet_shim::protocol::RunAs {
                uid: u.uid,
                gid: u.gid,
            }),
            Err(_) => return, // the instance could not have started either
        };
        self.training.insert(key);
        let req = host::TrainRequest {
            app: app.to_string(),
            release,
            spec: spec.clone(),
            runtime: runtime.clone(),
            dirs: self.dirs.clone(),
            pid,
            run_as,
        };
        self.host.train(req, self.tx.clone());
    }

    /// The daemon was short of something itself while doing `what`: counted, and reported as a
    /// `daemon.shortage` event at most every 10 s (the next one says how many came between).
    pub(super) fn note_shortage(&mut self, shortage: jarfleet_shim::fdlimit::Shortage, what: &str) {
        let described = shortage.describe_here();
        let line = format!("{described}: {what}");
        let Some(held) = self.shortages.note(self.now_ms(), &line) else {
            tracing::debug!("{line}");
            return;
        };
        let mut message = format!("short of resources: {described}. {what}.");
        if held > 0 {
            message.push_str(&format!(
                " {held} more shortage(s) in the {} s before.",
                jarfleet_shim::fdlimit::ALERT_EVERY_MS / 1000
            ));
        }
        message.push_str(&format!(" To do: {}.", shortage.hint()));
        // `emit` logs it too.
        self.emit(EventKind::DaemonShortage, None, None, message);
    }

    /// Records an event (kept in memory while the store cannot be written), streams it and
    /// logs it.
    pub fn emit(&self, kind: EventKind, app: Option<&str>, slot: Option<u32>, message: String) {
        let kind = kind.as_str();
        // An app's secrets never reach an event, its stream or the daemon's log (a crash report
        // quotes the app's own output).
        let message = match app.and_then(|a| self.apps.get(a)) {
            Some(rt) => jarfleet_core::redact::Redactor::for_app(&rt.rec.spec).redact(&message),
            None => message,
        };
        tracing::info!(kind, app, slot, "{message}");
        let id = self.last_event_id.get() + 1;
        self.last_event_id.set(id);
        let rec = EventRecord {
            id,
            ts: self.now_ms(),
            kind: kind.to_string(),
            app: app.map(str::to_string),
            slot,
            message,
        };
        // Streamed before it is written: a write that fails emits `daemon.store-failing` (the
        // next id), which must not reach the stream before this one.
        let _ = self.events.send(rec.clone());
        self.write(Write::Event(rec));
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
