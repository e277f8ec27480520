//! The daemon's control loop against a simulated host.
//!
//! The real [`Control`] (with the real [`Store`], in a temporary directory) runs with a
//! [`ManualClock`] and a [`SimHost`] instead of the machine: "starting a shim" makes a fake
//! process that says hello, becomes ready after a while (or never: hung), crashes when the
//! schedule says so, and obeys or ignores SIGTERM (then it is killed after the grace the loop
//! gave). Health checks are answered from the fake process's state. One schedule is a seeded
//! sequence of steps — time passing, faults (crashes, failed checks, failed starts, a daemon
//! crash and restart from the same store, store writes failing: `store_faults.rs`) and commands
//! arriving at any moment (deploy, rollback, abort, restart, scale, stop, start; the strategy's
//! own and etcd changes: `strategies.rs`) — followed by a quiet phase without faults.
//! The invariants are checked after every step ([`run_schedule`]).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::{Arc, Mutex, MutexGuard};

use jarfleet_api::{Action, ActionRequest, EventRecord, ScaleRequest, StatusReport};
use jarfleet_core::instance::ExitInfo;
use jarfleet_core::spec::EtcdSource;
use jarfleet_daemon::clock::{Clock, ManualClock};
use jarfleet_daemon::control::host::{
    Commands, ConfigRequest, Host, ProbeRequest, RefreshCall, TrainRequest, Watch,
};
use jarfleet_daemon::control::{ApiRequest, Control, Event, PreparedApp, World};
use jarfleet_daemon::probe::{Outcome, ProbeResult};
use jarfleet_daemon::shim_client::{ShimEvent, ShimNote, Unattached};
use jarfleet_daemon::store::Store;
use jarfleet_host::launch::JavaRuntime;
use jarfleet_host::paths::StateDir;
use jarfleet_host::ports::PortState;
use jarfleet_shim::procinfo::{ProcEntry, ProcTable};
use jarfleet_shim::protocol::{Launch, ShimCommand};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::balancer::{ProcView, SimBalancer};
#[path = "availability.rs"]
mod availability;
#[path = "store_faults.rs"]
mod store_faults;
#[path = "strategies.rs"]
mod strategies;
use std::path::PathBuf;

/// A small deterministic generator (splitmix64): the same seed, the same schedule.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p` percent.
    pub fn chance(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

/// One fake JVM (with its shim).
#[derive(Debug)]
struct Proc {
    app: String,
    slot: u32,
    generation: u64,
    pid: u32,
    alive: bool,
    /// It said hello to the current daemon.
    greeted: bool,
    /// Its exit was reported (to some daemon, or recorded for the next one).
    reported: bool,
    ready_at: u64,
    hung: bool,
    ignores_term: bool,
    stop_requested: bool,
    kill_at: Option<u64>,
    exit: Option<ExitInfo>,
    commands: Option<mpsc::UnboundedReceiver<ShimCommand>>,
}

struct HostState {
    procs: Vec<Proc>,
    probes: Vec<ProbeRequest>,
    rng: Rng,
    faults: bool,
    next_pid: u32,
    violations: Vec<String>,
    /// Stop commands received in the last host round (app, slot, generation).
    stops: Vec<(String, u32, u64)>,
    /// Refresh requests, etcd watches, config preparations, archive training.
    outside: strategies::Outside,
}

/// The simulated host: fake processes and health checks answered from their state.
#[derive(Clone)]
pub struct SimHost {
    state: Arc<Mutex<HostState>>,
    clock: Arc<ManualClock>,
}

impl SimHost {
    fn new(seed: u64, clock: Arc<ManualClock>) -> SimHost {
        SimHost {
            state: Arc::new(Mutex::new(HostState {
                procs: Vec::new(),
                probes: Vec::new(),
                rng: Rng::new(seed ^ 0x005E_ED0F_4057),
                faults: true,
                // Far above any pid the kernel hands out: nothing real is ever looked at.
                next_pid: 1 << 30,
                violations: Vec::new(),
                stops: Vec::new(),
                outside: Default::default(),
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every fake process so far, as the simulated balancer sees it.
    fn views(&self) -> Vec<ProcView> {
        let st = self.lock();
        st.procs
            .iter()
            .map(|p| ProcView {
                app: p.app.clone(),
                slot: p.slot,
                generation: p.generation,
                pid: p.pid,
                alive: p.alive,
                reported: p.reported,
            })
            .collect()
    }
}

impl Host for SimHost {
    fn start(
        &self,
        _exe: &Path,
        _run_dir: &Path,
        _launch: &Launch,
        app: String,
        slot: u32,
        generation: u64,
        _tx: mpsc::Sender<Event>,
    ) -> anyhow::Result<Commands> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if let Some(other) = st
            .procs
            .iter()
            .find(|p| p.alive && p.app == app && p.slot == slot)
        {
            let line = format!(
                "two live processes in {app}/{slot}: generation {} (pid {}) still runs while generation {generation} starts",
                other.generation, other.pid
            );
            st.violations.push(line);
        }
        let faults = st.faults;
        if faults && st.rng.chance(3) {
            anyhow::bail!("simulated: the shim could not be started");
        }
        let ready_in = st.rng.below(if faults { 6_000 } else { 2_000 });
        let hung = faults && st.rng.chance(4);
        let ignores_term = st.rng.chance(20);
        let pid = st.next_pid;
        st.next_pid += 1;
        let (tx, rx) = mpsc::unbounded_channel();
        st.procs.push(Proc {
            app,
            slot,
            generation,
            pid,
            alive: true,
            greeted: false,
            reported: false,
            ready_at: now + ready_in,
            hung,
            ignores_term,
            stop_requested: false,
            kill_at: None,
            exit: None,
            commands: Some(rx),
        });
        Ok(tx)
    }

    fn attach<'a>(
        &'a self,
        _run_dir: &'a Path,
        app: String,
        slot: u32,
        generation: u64,
        _tx: mpsc::Sender<Event>,
    ) -> Pin<Box<dyn Future<Output = Result<Commands, Unattached>> + Send + 'a>> {
        let mut st = self.lock();
        // The newest one of that name (a run dir holds one shim at a time).
        let found = st
            .procs
            .iter_mut()
            .rev()
            .find(|p| p.app == app && p.slot == slot && p.generation == generation);
        let answer = match found {
            Some(p) if p.alive => {
                let (tx, rx) = mpsc::unbounded_channel();
                p.commands = Some(rx);
                // A re-attached shim says hello again (with the same pid).
                p.greeted = false;
                Ok(tx)
            }
            Some(p) => {
                // Its exit record is read by the new daemon: reported now.
                p.reported = true;
                Err(Unattached::Gone(p.exit.clone()))
            }
            None => Err(Unattached::Gone(None)),
        };
        Box::pin(std::future::ready(answer))
    }

    fn probe(&self, req: ProbeRequest, _tx: mpsc::Sender<Event>) {
        self.lock().probes.push(req);
    }
    fn refresh_call(&self, call: RefreshCall, _tx: mpsc::Sender<Event>) {
        let now = self.clock.now_ms();
        self.lock().outside.refresh_call(call, now);
    }

    fn watch_etcd(&self, app: String, _source: EtcdSource, _tx: mpsc::Sender<Event>) -> Watch {
        self.lock().outside.watch_etcd(app)
    }

    fn prepare_config(&self, req: ConfigRequest, _tx: mpsc::Sender<Event>) {
        self.lock().outside.prepare_config(req);
    }

    fn records_dump_info(&self, _pid: u32) -> bool {
        true
    }

    fn train(&self, req: TrainRequest, _tx: mpsc::Sender<Event>) {
        self.lock().outside.train(req);
    }

    /// The live fake processes, each its own process group, idle.
    fn processes(&self) -> ProcTable {
        let entries = self
            .lock()
            .procs
            .iter()
            .filter(|p| p.alive)
            .map(|p| ProcEntry {
                pid: p.pid,
                ppid: 1,
                pgrp: p.pid,
                ticks: 0,
                rss_bytes: Some(256 << 20),
            })
            .collect();
        ProcTable::from_entries(entries)
    }

    /// Now and then (while faults run) another process holds a port of the range.
    fn port_state(&self, _port: u16) -> PortState {
        let mut st = self.lock();
        if st.faults && st.rng.chance(2) {
            PortState::InUse
        } else {
            PortState::Free
        }
    }

    /// The simulated host trains no class data.
    fn stop_stray_trainings(&self, _dirs: &StateDir) -> Vec<i32> {
        Vec::new()
    }
}

/// What made a schedule fail: the seed, the step, and what was seen.
#[derive(Debug)]
pub struct Failure {
    pub seed: u64,
    pub step: usize,
    pub message: String,
    /// The steps taken, for reading.
    pub trace: Vec<String>,
    /// The command that replays it (set by [`run`]).
    pub replay: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "simulation seed {} failed at step {}: {}",
            self.seed, self.step, self.message
        )?;
        writeln!(
            f,
            "replay: {} cargo nextest run -p jarfleet-daemon --test sim --no-capture -E 'test(seeded)'",
            self.replay
        )?;
        for line in self.trace.iter().rev().take(400).rev() {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// How a schedule went (for the summary).
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub steps: usize,
    pub restarts: usize,
    pub crashes: usize,
    pub deploys: usize,
    pub events: usize,
    /// Clock hops, and hops where the loop's next wake-up was already due.
    pub hops: usize,
    pub early_wakes: usize,
    /// The simulated balancer's requests and drains.
    pub traffic: crate::balancer::Traffic,
    /// Store writes refused, events lost with a daemon that crashed while writes failed, and
    /// the stray shims that left behind.
    pub refused_writes: u64,
    pub lost_events: usize,
    pub lossy_crashes: usize,
    pub strays: usize,
    /// Ready instances a deployment took out, each judged against `max_unavailable`.
    pub take_outs: usize,
    /// Deployments by "strategy outcome", and live refreshes that fell back to a restart.
    pub outcomes: BTreeMap<String, usize>,
}

impl Stats {
    pub fn add(&mut self, s: &Stats) {
        self.steps += s.steps;
        self.restarts += s.restarts;
        self.crashes += s.crashes;
        self.deploys += s.deploys;
        self.events += s.events;
        self.hops += s.hops;
        self.early_wakes += s.early_wakes;
        self.traffic.add(&s.traffic);
        self.refused_writes += s.refused_writes;
        self.lost_events += s.lost_events;
        self.lossy_crashes += s.lossy_crashes;
        self.strays += s.strays;
        self.take_outs += s.take_outs;
        for (k, n) in &s.outcomes {
            *self.outcomes.entry(k.clone()).or_default() += n;
        }
    }
}

const APP: &str = "web";
pub const START_MS: u64 = 1_700_000_000_000;

struct Sim {
    seed: u64,
    rng: Rng,
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    host: SimHost,
    /// The load balancer's data plane (used when the app has a `listen` address).
    balancer: SimBalancer,
    listen: bool,
    disk: store_faults::Disk,
    /// The simulation's connection to the store (`Sim::store`).
    reader: Option<Rc<Store>>,
    control: Option<Control>,
    rx: Option<mpsc::Receiver<Event>>,
    events_tx: broadcast::Sender<EventRecord>,
    events_rx: broadcast::Receiver<EventRecord>,
    /// Every event any daemon of this schedule emitted.
    emitted: Vec<EventRecord>,
    /// How many of `emitted` were found in the store, in order, at the last check.
    events_verified: usize,
    spec: jarfleet_core::spec::AppSpec,
    daemon: jarfleet_core::spec::DaemonSpec,
    releases: u32,
    /// The app's deployment strategy, and the generator of the operator's and etcd's part.
    strategy: strategies::Strategy,
    mix: Rng,
    /// A scale command was taken while a deployment ran (the surge bound moves with it).
    scaled_during_deploy: bool,
    /// The loop's ready instances as its events tell them (`max_unavailable`).
    availability: availability::Availability,
    trace: Vec<String>,
    step: usize,
    stats: Stats,
}

fn runtime() -> JavaRuntime {
    JavaRuntime {
        java: "/sim/jdk/bin/java".into(),
        jcmd: None,
        home: "/sim/jdk".into(),
        version: "17.0.1".into(),
        feature: 17,
        vendor: "sim".into(),
    }
}

/// The simulated spec. Odd seeds give the app a `listen` address (with a drain timeout of
/// their own), so its stops drain through the simulated balancer; even ones run without.
fn fleet(
    seed: &mut Rng,
    listen: Option<&mut Rng>,
    strategy: &strategies::Strategy,
    templates: &Path,
) -> anyhow::Result<jarfleet_core::spec::FleetSpec> {
    let instances = 1 + seed.below(4);
    let (surge, unavailable) = match seed.below(3) {
        0 => (1, 0),
        1 => (0, 1),
        _ => (2, 1),
    };
    let mut text = format!(
        "[apps.{APP}]\nartifact = \"web.jar\"\ninstances = {instances}\nports = \"47100-47199\"\n\n[apps.{APP}.deploy]\nmax_surge = {surge}\nmax_unavailable = {unavailable}\n{}",
        strategy.spec_lines(templates)
    );
    if let Some(rng) = listen {
        let drain = crate::balancer::drain_timeout(rng).as_secs();
        // Never bound: the simulated data plane takes it without a socket.
        text = text.replacen("ports =", "listen = \"127.0.0.1:47080\"\nports =", 1);
        text.push_str(&format!(
            "\n[apps.{APP}.stop]\ndrain_timeout = \"{drain}s\"\n"
        ));
    }
    jarfleet_core::spec::load(&text, Path::new("/sim/jarfleet.toml"), &|_| None)
        .map_err(|e| anyhow::anyhow!("the simulation's spec does not load: {e:?}"))
}

impl Sim {
    /// `mixed`: with a picked strategy and failing store writes (else rolling, and a disk
    /// that never fails: the schedules as they were before those came).
    fn new(seed: u64, mixed: bool) -> anyhow::Result<Sim> {
        let mut rng = Rng::new(seed);
        let listen = seed % 2 == 1;
        let mut balancer_rng = Rng::new(seed ^ 0x0D4A_1400);
        let strategy = if mixed {
            strategies::Strategy::pick(seed)
        } else {
            strategies::Strategy::Rolling
        };
        let base = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")?
        } else {
            tempfile::tempdir()?
        };
        let templates = base.path().join("sim-etc");
        std::fs::create_dir_all(&templates)?;
        std::fs::write(templates.join("app.conf"), "greeting=${SIM_CONFIG}\n")?;
        let fleet = fleet(
            &mut rng,
            listen.then_some(&mut balancer_rng),
            &strategy,
            &templates,
        )?;
        let spec = fleet
            .apps
            .get(APP)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no app in the simulation's spec"))?;
        let clock = Arc::new(ManualClock::new(START_MS));
        let host = SimHost::new(seed, clock.clone());
        host.lock().outside.templates = templates;
        let disk = store_faults::Disk::new(seed, clock.clone(), mixed);
        let balancer = SimBalancer::new(balancer_rng.next_u64(), clock.clone());
        // Read after every round of the loop: a few hundred slots are plenty.
        let (events_tx, events_rx) = broadcast::channel(1 << 10);
        Ok(Sim {
            seed,
            rng,
            dir: base,
            clock,
            host,
            balancer,
            listen,
            disk,
            reader: None,
            control: None,
            rx: None,
            events_tx,
            events_rx,
            emitted: Vec::new(),
            events_verified: 0,
            spec,
            daemon: fleet.daemon,
            releases: 1,
            strategy,
            mix: Rng::new(seed ^ 0x0313_5EED),
            scaled_during_deploy: false,
            availability: availability::Availability::default(),
            trace: Vec::new(),
            step: 0,
            stats: Stats::default(),
        })
    }

    fn dirs(&self) -> StateDir {
        StateDir::new(self.dir.path())
    }

    fn now(&self) -> u64 {
        self.clock.now_ms()
    }

    fn fail(&self, message: impl Into<String>) -> Failure {
        let mut trace = self.trace.clone();
        if std::env::var_os("JARFLEET_SIM_SEED").is_some() {
            // Replaying one seed: the loop's events too.
            trace.push("events:".into());
            for e in &self.emitted {
                let at = e.ts.saturating_sub(START_MS) as f64 / 1000.0;
                trace.push(format!(
                    "  t={at:.1}s {} {:?} {}",
                    e.kind,
                    e.slot,
                    e.message.lines().next().unwrap_or("")
                ));
            }
        }
        Failure {
            seed: self.seed,
            step: self.step,
            message: message.into(),
            trace,
            replay: String::new(),
        }
    }

    fn note(&mut self, line: String) {
        let at = (self.now() - START_MS) as f64 / 1000.0;
        self.trace.push(format!("#{} t={at:.1}s {line}", self.step));
    }

    /// A daemon starts from the store in the state dir (the first one, or one after a crash).
    async fn boot(&mut self) -> Result<(), Failure> {
        let dirs = self.dirs();
        let store = Store::open(&dirs.db()).map_err(|e| self.fail(format!("store: {e:#}")))?;
        let (tx, rx) = mpsc::channel(1 << 14);
        let world = World {
            clock: self.clock.clone(),
            host: Arc::new(self.host.clone()),
            data_plane: Arc::new(self.balancer.clone()),
            seed: Some(self.rng.next_u64()),
            store_faults: Some(Arc::new(self.disk.clone())),
        };
        let mut control = Control::with_world(
            dirs,
            store,
            tx,
            self.events_tx.clone(),
            "/sim/jarfleet".into(),
            None,
            world,
        )
        .map_err(|e| self.fail(format!("Control::with_world: {e:#}")))?;
        // As the daemon does: no generation of a shim still running is handed out again. After
        // a crash that lost writes, not those of the strays stopped meanwhile either (the
        // simulation names a process by its generation).
        let lossy = self.stats.lossy_crashes > 0;
        let live_max = self
            .host
            .lock()
            .procs
            .iter()
            .filter(|p| p.alive || lossy)
            .map(|p| p.generation)
            .max()
            .unwrap_or(0);
        control.spawn_generations_above(live_max);
        control
            .adopt()
            .await
            .map_err(|e| self.fail(format!("adopt: {e:#}")))?;
        self.control = Some(control);
        self.rx = Some(rx);
        self.reseed_availability()
    }

    /// The loop's view of its ready instances taken afresh from its status (after a boot, and
    /// after each step), once what it emitted before is followed.
    fn reseed_availability(&mut self) -> Result<(), Failure> {
        if let Err(v) = self.collect_events() {
            return Err(self.fail(v));
        }
        let status = self.status_quiet()?;
        self.availability.seed(APP, &status);
        Ok(())
    }

    fn control(&mut self) -> Result<&mut Control, Failure> {
        match self.control.as_mut() {
            Some(c) => Ok(c),
            None => Err(Failure {
                seed: self.seed,
                step: self.step,
                message: "no daemon running".into(),
                trace: self.trace.clone(),
                replay: String::new(),
            }),
        }
    }

    fn ask<T>(
        &mut self,
        make: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
    ) -> Result<Option<T>, Failure> {
        let (reply, mut rx) = oneshot::channel();
        self.control()?.handle(make(reply).into());
        self.pump()?;
        Ok(rx.try_recv().ok())
    }

    /// The loop's status as it is now, without delivering anything after it (so it matches
    /// what the loop last pushed to the balancer).
    fn peek_status(&mut self) -> Result<StatusReport, Failure> {
        let (reply, mut rx) = oneshot::channel();
        self.control()?.handle(ApiRequest::Status { reply }.into());
        rx.try_recv().map_err(|_| self.fail("status got no answer"))
    }

    fn status(&mut self) -> Result<StatusReport, Failure> {
        match self.ask(|reply| ApiRequest::Status { reply })? {
            Some(r) => Ok(r),
            None => Err(self.fail("status got no answer")),
        }
    }

    fn prepared(&self, release: &str) -> PreparedApp {
        PreparedApp {
            spec: self.spec.clone(),
            release: release.to_string(),
            legacy_release: None,
            runtime: runtime(),
            release_record: serde_json::json!({ "release": release }),
        }
    }

    fn apply_first(&mut self) -> Result<(), Failure> {
        let apps = BTreeMap::from([(APP.to_string(), self.prepared("r1"))]);
        let daemon = Box::new(self.daemon.clone());
        let answer = self.ask(|reply| ApiRequest::Apply {
            apps,
            daemon,
            source: "/sim/jarfleet.toml".into(),
            dry_run: false,
            reply,
        })?;
        match answer {
            Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.fail(format!("apply refused: {}", e.message))),
            None => Err(self.fail("apply got no answer")),
        }
    }

    /// Delivers everything the host has to say and lets the loop do its own work, until quiet.
    fn pump(&mut self) -> Result<(), Failure> {
        for _ in 0..10_000 {
            let mut delivered = 0;
            let now = self.now();
            let mut notes = self.host_round(now);
            let stops = std::mem::take(&mut self.host.lock().stops);
            if self.listen {
                let procs = self.host.views();
                match self.balancer.round(now, &stops, &procs) {
                    Ok(drained) => notes.extend(drained),
                    Err(v) => return Err(self.fail(v)),
                }
            }
            for ev in notes {
                delivered += 1;
                self.control()?.handle(ev);
            }
            if let Some(rx) = self.rx.as_mut() {
                let mut queued = Vec::new();
                while let Ok(ev) = rx.try_recv() {
                    queued.push(ev);
                }
                for ev in queued {
                    delivered += 1;
                    self.control()?.handle(ev);
                }
            }
            let _ = self.control()?.tick();
            if let Err(v) = self.collect_events() {
                return Err(self.fail(v));
            }
            let violations = std::mem::take(&mut self.host.lock().violations);
            if let Some(v) = violations.into_iter().next() {
                return Err(self.fail(v));
            }
            if delivered == 0 {
                return Ok(());
            }
        }
        Err(self.fail("the loop never settles (10,000 rounds at one instant)"))
    }

    /// Takes in what the loop emitted, following its view of the ready instances in order
    /// (`max_unavailable` is judged at each take-out: an error says how it was broken).
    fn collect_events(&mut self) -> Result<(), String> {
        let mut broken = Ok(());
        while let Ok(e) = self.events_rx.try_recv() {
            if broken.is_ok() && !self.scaled_during_deploy {
                broken = self
                    .availability
                    .follow(APP, &e, self.spec.deploy.max_unavailable);
            }
            self.emitted.push(e);
        }
        broken
    }

    /// What the fake processes and checks have to tell the loop at `now`.
    fn host_round(&mut self, now: u64) -> Vec<Event> {
        let mut st = self.host.lock();
        let mut out: Vec<Event> = Vec::new();
        let faults = st.faults;
        let HostState {
            procs,
            probes,
            rng,
            stops,
            ..
        } = &mut *st;
        for p in procs.iter_mut() {
            if p.alive && !p.greeted && p.commands.is_some() {
                p.greeted = true;
                out.push(note(
                    p,
                    ShimEvent::Hello {
                        shim_pid: p.pid + 1_000_000,
                        pid: p.pid,
                        started_at: now,
                    },
                ));
            }
            let mut stop = None;
            if let Some(rx) = p.commands.as_mut() {
                while let Ok(cmd) = rx.try_recv() {
                    if let ShimCommand::Stop { grace_ms } = cmd {
                        stop = Some(grace_ms);
                    }
                }
            }
            if let Some(grace_ms) = stop
                && p.alive
                && !p.stop_requested
            {
                p.stop_requested = true;
                stops.push((p.app.clone(), p.slot, p.generation));
                if p.ignores_term || p.hung {
                    p.kill_at = Some(now + grace_ms);
                } else {
                    p.kill_at = Some(now);
                }
            }
            if p.alive && p.kill_at.is_some_and(|t| t <= now) {
                let killed = p.ignores_term || p.hung;
                p.alive = false;
                p.exit = Some(ExitInfo {
                    code: if killed { None } else { Some(143) },
                    signal: Some(if killed { 9 } else { 15 }),
                    stop_requested: true,
                    killed_after_timeout: killed,
                    oom: false,
                    hs_err: None,
                    at: now,
                });
            }
            if !p.alive && !p.reported && p.commands.is_some() {
                p.reported = true;
                if let Some(exit) = p.exit.clone() {
                    out.push(note(p, ShimEvent::Exited(exit)));
                }
            }
        }
        for req in std::mem::take(probes) {
            // The newest of that name: a generation is handed out again once no record holds
            // it (a daemon starts above the stored ones and the running shims').
            let proc = procs
                .iter()
                .rev()
                .find(|p| p.app == req.app && p.slot == req.slot && p.generation == req.generation);
            let outcome = match proc {
                Some(p) if p.alive && !p.hung && now >= p.ready_at => {
                    if faults && rng.chance(8) {
                        Outcome::Fail("simulated: the check failed".into())
                    } else {
                        Outcome::Pass
                    }
                }
                _ => Outcome::Fail("simulated: not answering".into()),
            };
            out.push(
                ProbeResult {
                    app: req.app,
                    slot: req.slot,
                    generation: req.generation,
                    outcome,
                    took: std::time::Duration::from_millis(1),
                }
                .into(),
            );
        }
        st.outside_round(now, &mut out);
        out
    }
}

fn note(p: &Proc, event: ShimEvent) -> Event {
    ShimNote {
        app: p.app.clone(),
        slot: p.slot,
        generation: p.generation,
        event,
    }
    .into()
}

impl Sim {
    /// The invariants, against `status`: a status taken with nothing delivered after it, so
    /// the loop's state now.
    fn check_invariants(&mut self, status: &StatusReport) -> Result<(), Failure> {
        if let Err(v) = self.collect_events() {
            return Err(self.fail(v));
        }
        self.availability.seed(APP, status);
        let st = self.host.lock();
        let mut live: BTreeMap<(String, u32), Vec<u64>> = BTreeMap::new();
        for p in st.procs.iter().filter(|p| p.alive) {
            live.entry((p.app.clone(), p.slot))
                .or_default()
                .push(p.generation);
        }
        drop(st);
        // The balancer's snapshot against the loop's state at this very moment (`status` is
        // taken with nothing delivered after it).
        if self.listen {
            let procs = self.host.views();
            if let Err(v) = self.balancer.check_snapshot(status, &procs) {
                return Err(self.fail(v));
            }
        }
        if let Some(((app, slot), gens)) = live.iter().find(|(_, g)| g.len() > 1) {
            return Err(self.fail(format!(
                "two live processes in {app}/{slot}: generations {gens:?}"
            )));
        }
        // A deployment never runs more instances than `instances + max_surge` (those asked to
        // stop are on their way out, and so are those draining before their stop signal).
        for app in &status.apps {
            let Some(deployment) = &app.deployment else {
                continue;
            };
            let draining = |pid: u32| {
                app.instances
                    .iter()
                    .any(|i| i.pid == Some(pid) && i.state == "stopping")
            };
            // "#ID FROM → TO PHASE": instances of other releases are a blue-green set kept
            // warm out of traffic (`keep_old`), not part of this deployment.
            let mut words = deployment.split(' ');
            let from = words.nth(1).unwrap_or_default();
            let to = words.nth(1).unwrap_or_default();
            let release_of = |slot: u32| {
                app.instances
                    .iter()
                    .find(|i| i.slot == slot)
                    .map(|i| i.release.as_str())
            };
            let running: Vec<String> = self
                .host
                .lock()
                .procs
                .iter()
                .filter(|p| p.alive && !p.stop_requested && p.app == app.name && !draining(p.pid))
                .filter(|p| release_of(p.slot).is_none_or(|r| r == from || r == to))
                .map(|p| format!("{}/{} gen {}", p.app, p.slot, p.generation))
                .collect();
            let bound = self.surge_bound(app.desired);
            if running.len() as u32 > bound && !self.scaled_during_deploy {
                return Err(self.fail(format!(
                    "{} runs {} instances during a deployment, more than {bound} (instances {}, max_surge {}, {:?}): {} (the loop: {deployment}; {:?})",
                    app.name,
                    running.len(),
                    app.desired,
                    self.spec.deploy.max_surge,
                    self.strategy,
                    running.join(", "),
                    app.instances
                        .iter()
                        .map(|i| format!("{}:{}:{}:{:?}", i.slot, i.release, i.state, i.pid))
                        .collect::<Vec<_>>()
                )));
            }
        }
        Ok(())
    }

    /// The daemon dies (no goodbye) and a new one starts from the same store.
    async fn crash_daemon(&mut self) -> Result<(), Failure> {
        let lost = self.before_crash()?;
        let before = self.status_quiet()?;
        self.control = None;
        self.rx = None;
        // The balancer runs inside the daemon: it dies with it.
        self.balancer.crash();
        {
            let mut st = self.host.lock();
            for p in st.procs.iter_mut() {
                // The old connections are gone; messages not read yet die with them.
                p.commands = None;
                p.greeted = false;
            }
        }
        self.stats.restarts += 1;
        if lost {
            self.stop_strays()?;
        }
        self.boot().await?;
        // What the new daemon loaded, before it does anything with it.
        let after = self.status_quiet()?;
        self.pump()?;
        let slots = |r: &StatusReport| -> Vec<(String, u32)> {
            r.apps
                .iter()
                .flat_map(|a| a.instances.iter())
                .filter(|i| i.state != "stopping")
                .map(|i| (i.app.clone(), i.slot))
                .collect()
        };
        let (b, a) = (slots(&before), slots(&after));
        if !lost
            && b.iter().any(|s| !a.contains(s))
            && before.apps.iter().all(|x| x.deployment.is_none())
        {
            let states = |r: &StatusReport| -> Vec<String> {
                r.apps
                    .iter()
                    .flat_map(|a| a.instances.iter())
                    .map(|i| format!("{}:{}:{}", i.slot, i.release, i.state))
                    .collect()
            };
            return Err(self.fail(format!(
                "instance records lost across a daemon restart: before {b:?}, after {a:?} (before {:?}, after {:?})",
                states(&before),
                states(&after)
            )));
        }
        self.check_events().map(|_| ())
    }

    fn crash_instance(&mut self) {
        let now = self.now();
        let mut st = self.host.lock();
        let alive: Vec<usize> = (0..st.procs.len()).filter(|i| st.procs[*i].alive).collect();
        if alive.is_empty() {
            return;
        }
        let i = alive[st.rng.below(alive.len() as u64) as usize];
        let p = &mut st.procs[i];
        p.alive = false;
        p.exit = Some(ExitInfo {
            code: Some(1),
            signal: None,
            stop_requested: p.stop_requested,
            killed_after_timeout: false,
            oom: false,
            hs_err: None,
            at: now,
        });
        let line = format!("crash {}/{} gen {}", p.app, p.slot, p.generation);
        drop(st);
        self.stats.crashes += 1;
        self.note(line);
    }

    fn command(&mut self) -> Result<(), Failure> {
        let line = match self.rng.below(8) {
            0 | 1 => {
                self.releases += 1;
                let release = format!("r{}", self.releases);
                let mut prepared = self.prepared(&release);
                prepared
                    .spec
                    .env
                    .insert("SIM_RELEASE".into(), release.clone());
                let r = self.ask(|reply| ApiRequest::Deploy {
                    app: APP.into(),
                    prepared: Box::new(prepared),
                    version: Some(release.clone()),
                    reply,
                })?;
                self.stats.deploys += 1;
                format!("deploy {release}: {}", answer(&r))
            }
            2 => {
                let r = self.ask(|reply| ApiRequest::Rollback {
                    req: jarfleet_api::RollbackRequest {
                        app: APP.into(),
                        to: None,
                    },
                    reply,
                })?;
                format!("rollback: {}", answer(&r))
            }
            3 => {
                let r = self.ask(|reply| ApiRequest::Canary {
                    req: jarfleet_api::CanaryRequest {
                        app: APP.into(),
                        promote: false,
                        full: false,
                    },
                    reply,
                })?;
                format!("abort: {}", answer(&r))
            }
            4 => self.action(Action::Restart)?,
            5 => self.action(Action::Stop)?,
            6 => self.action(Action::Start)?,
            _ => {
                let to = 1 + self.rng.below(4) as u32;
                let deploying = self.status()?.apps.iter().any(|a| a.deployment.is_some());
                let r = self.scale(to)?;
                if deploying && matches!(r, Some(Ok(_))) {
                    self.scaled_during_deploy = true;
                }
                format!("scale to {to}: {}", answer(&r))
            }
        };
        self.note(line);
        Ok(())
    }

    /// `jarfleet scale web TO`.
    pub(super) fn scale(
        &mut self,
        to: u32,
    ) -> Result<Option<Result<jarfleet_api::Ack, jarfleet_api::ErrorBody>>, Failure> {
        self.ask(|reply| ApiRequest::Scale {
            req: ScaleRequest {
                app: APP.into(),
                instances: to,
            },
            reply,
        })
    }

    fn action(&mut self, action: Action) -> Result<String, Failure> {
        let slot = match self.rng.below(3) {
            0 => None,
            n => Some(n as u32 - 1),
        };
        self.action_on(action, slot)
    }

    fn action_on(&mut self, action: Action, slot: Option<u32>) -> Result<String, Failure> {
        let what = format!("{action:?} {slot:?}");
        let r = self.ask(|reply| ApiRequest::Action {
            req: ActionRequest {
                app: APP.into(),
                slot,
                action,
            },
            reply,
        })?;
        Ok(format!("{what}: {}", answer(&r)))
    }

    fn advance(&mut self, ms: u64) -> Result<(), Failure> {
        // Time moves in small hops so deadlines are met near their time.
        let end = self.now() + ms;
        let mut in_the_past = 0u32;
        while self.now() < end {
            let wake = self.control()?.tick().flatten().unwrap_or(u64::MAX);
            self.stats.hops += 1;
            if wake <= self.now() {
                self.stats.early_wakes += 1;
            }
            if wake < self.now() {
                in_the_past += 1;
                if in_the_past > 1_000 {
                    return Err(self.fail(format!(
                        "the loop keeps asking to be woken in the past ({} ms ago): the real loop would spin",
                        self.now() - wake
                    )));
                }
            } else {
                in_the_past = 0;
            }
            let next = wake
                .min(self.next_host_deadline())
                .clamp(self.now() + 1, end);
            self.clock.set(next);
            self.pump()?;
        }
        Ok(())
    }

    fn next_host_deadline(&self) -> u64 {
        let st = self.host.lock();
        st.procs
            .iter()
            .filter(|p| p.alive)
            .filter_map(|p| p.kill_at)
            .chain(st.outside.next_deadline())
            .min()
            .unwrap_or(u64::MAX)
            .min(self.balancer.next_deadline())
    }

    /// Whether the fleet is settled: the store takes writes, no deployment, every instance
    /// ready, one process each.
    fn settled(&mut self) -> Result<Option<String>, Failure> {
        // Everything delivered first, then the state as it is (a status answered before the
        // pump that follows it may miss a deployment that pump starts).
        self.pump()?;
        let status = self.status_quiet()?;
        if status.daemon.store.as_ref().is_some_and(|s| !s.writable) {
            return Ok(Some("the store does not take writes yet".into()));
        }
        for app in &status.apps {
            if let Some(d) = &app.deployment {
                let states: Vec<String> = app
                    .instances
                    .iter()
                    .map(|i| format!("{}:{}:{}", i.slot, i.release, i.state))
                    .collect();
                return Ok(Some(format!(
                    "deployment still running: {d} (instances {states:?}, canary {:?})",
                    app.canary
                )));
            }
            let ready = app.instances.iter().filter(|i| i.ready).count() as u32;
            if ready != app.desired || app.instances.len() as u32 != app.desired {
                let states: Vec<String> = app
                    .instances
                    .iter()
                    .map(|i| format!("{}:{}", i.slot, i.state))
                    .collect();
                return Ok(Some(format!(
                    "{} ready of {} wanted ({} instances: {states:?})",
                    ready,
                    app.desired,
                    app.instances.len()
                )));
            }
            let alive = self
                .host
                .lock()
                .procs
                .iter()
                .filter(|p| p.alive && p.app == app.name)
                .count() as u32;
            if alive != app.desired {
                return Ok(Some(format!(
                    "{alive} processes alive for {} instances",
                    app.desired
                )));
            }
        }
        Ok(None)
    }
}

fn answer<T>(r: &Option<Result<T, jarfleet_api::ErrorBody>>) -> String {
    match r {
        Some(Ok(_)) => "ok".into(),
        Some(Err(e)) => format!("refused ({})", e.message),
        None => "no answer".into(),
    }
}

/// Runs one seeded schedule of `steps` steps, then a quiet phase; checks the invariants after
/// every step.
pub async fn run_schedule(seed: u64, steps: usize) -> Result<Stats, Failure> {
    run(seed, steps, true).await
}

/// A schedule as it was before strategies and failing store writes came into the simulation
/// (rolling, a disk that never fails), for the seeds that found bugs then.
pub async fn run_plain_schedule(seed: u64, steps: usize) -> Result<Stats, Failure> {
    run(seed, steps, false).await
}

async fn run(seed: u64, steps: usize, mixed: bool) -> Result<Stats, Failure> {
    run_steps(seed, steps, mixed).await.map_err(|mut f| {
        f.replay = format!(
            "JARFLEET_SIM_SEED={seed} JARFLEET_SIM_STEPS={steps}{}",
            if mixed { "" } else { " JARFLEET_SIM_PLAIN=1" }
        );
        f
    })
}

async fn run_steps(seed: u64, steps: usize, mixed: bool) -> Result<Stats, Failure> {
    let mut sim = Sim::new(seed, mixed).map_err(|e| Failure {
        seed,
        step: 0,
        message: format!("setting up: {e:#}"),
        trace: Vec::new(),
        replay: String::new(),
    })?;
    sim.boot().await?;
    sim.apply_first()?;
    sim.note(format!(
        "applied {} instances, max_surge {}, max_unavailable {}, {:?}",
        sim.spec.instances,
        sim.spec.deploy.max_surge,
        sim.spec.deploy.max_unavailable,
        sim.strategy
    ));
    for step in 1..=steps {
        sim.step = step;
        if let Some(line) = sim.disk.maybe_fail() {
            sim.note(line);
        }
        sim.strategy_step()?;
        match sim.rng.below(10) {
            0..=3 => {
                let ms = sim.rng.below(4_000);
                sim.note(format!("wait {ms} ms"));
                sim.advance(ms)?;
            }
            4 => sim.crash_instance(),
            5 | 6 => sim.command()?,
            7 => {
                sim.note("daemon crash and restart".into());
                sim.crash_daemon().await?;
            }
            _ => {
                let ms = sim.rng.below(20_000);
                sim.note(format!("wait {ms} ms"));
                sim.advance(ms)?;
            }
        }
        sim.pump()?;
        // Taken with nothing delivered after it, so it is the state the host is in now.
        let status = sim.status_quiet()?;
        sim.check_invariants(&status)?;
        if status.apps.iter().all(|a| a.deployment.is_none()) {
            sim.scaled_during_deploy = false;
        }
    }
    // Faults stop: everything must settle (deployments end, every instance ready).
    sim.step = steps + 1;
    sim.host.lock().faults = false;
    sim.disk.fail_for(0, 0, false);
    sim.note("faults stop".into());
    // Instances stopped by a command are started again, as an operator would.
    let line = sim.action_on(Action::Start, None)?;
    sim.note(format!("start all: {line}"));
    let mut waited = 0;
    let mut why = sim.settled()?;
    while let Some(reason) = why {
        if waited > 30 * 60_000 {
            return Err(sim.fail(format!(
                "not settled 30 min after the faults stopped: {reason}"
            )));
        }
        sim.promote_waiting_canary()?;
        sim.advance(5_000)?;
        waited += 5_000;
        let status = sim.status_quiet()?;
        sim.check_invariants(&status)?;
        // `start` waits for a deployment: once none runs, what is still stopped is started.
        let stopped = status
            .apps
            .iter()
            .any(|a| a.deployment.is_none() && a.instances.iter().any(|i| i.state == "stopped"));
        if stopped {
            let line = sim.action_on(Action::Start, None)?;
            sim.note(format!("start all: {line}"));
        }
        why = sim.settled()?;
    }
    let status = sim.peek_status()?;
    let procs = sim.host.views();
    if let Err(v) = sim.balancer.check_settled(&status, &procs, sim.listen) {
        return Err(sim.fail(v));
    }
    sim.check_release()?;
    sim.quiet_outage().await?;
    sim.crash_daemon().await?;
    sim.check_events()?;
    sim.stats.steps = steps;
    sim.stats.refused_writes = sim.disk.refused();
    sim.tally_outcomes()?;
    sim.stats.events = sim.emitted.len();
    sim.stats.take_outs = sim.availability.checked;
    sim.stats.traffic = sim.balancer.traffic();
    Ok(sim.stats)
}
