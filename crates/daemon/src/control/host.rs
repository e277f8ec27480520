//! The outside world the loop acts on — starting a shim, re-attaching to one, running a health
//! check, asking whether a port is taken, stopping stray training JVMs, a live refresh's
//! request, an etcd watch and the preparation of its changes, training a class data archive —
//! behind one small interface, so a simulated host can stand in for the real one. The real
//! daemon uses [`RealHost`]; stop signals travel on the command channel `start` and `attach`
//! hand back, and answers come back to the loop as the producers' own messages: `ShimNote`s,
//! `ProbeResult`s, [`Refreshed`], `EtcdNote`s, [`ConfigPrepared`], [`Trained`].

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use jarfleet_core::events::EventKind;
use jarfleet_core::spec::{AppSpec, EtcdSource, HealthCheck};
use jarfleet_host::launch::JavaRuntime;
use jarfleet_host::paths::StateDir;
use jarfleet_host::ports::{self, PortState};
use tokio::sync::mpsc;

use super::{Event, Notice, PreparedApp};
use crate::probe::{self, ProbeResult};
use crate::shim_client::{self, Unattached};
use jarfleet_shim::procinfo::ProcTable;
use jarfleet_shim::protocol::{Launch, RunAs, ShimCommand};

/// Where an instance's shim reports go, and where its commands (stop) are sent.
pub type Commands = mpsc::UnboundedSender<ShimCommand>;

/// One health check to run; its result goes to the loop as a [`ProbeResult`].
pub struct ProbeRequest {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub check: HealthCheck,
    pub port: u16,
    pub timeout: Duration,
    pub vars: BTreeMap<&'static str, String>,
    pub run_as: Option<RunAs>,
}

pub trait Host: Send + Sync {
    /// Starts a shim for `launch` in `run_dir`; its reports reach the loop on `tx`.
    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        exe: &Path,
        run_dir: &Path,
        launch: &Launch,
        app: String,
        slot: u32,
        generation: u64,
        tx: mpsc::Sender<Event>,
    ) -> anyhow::Result<Commands>;

    /// Re-attaches to the shim of a run dir (a daemon start).
    fn attach<'a>(
        &'a self,
        run_dir: &'a Path,
        app: String,
        slot: u32,
        generation: u64,
        tx: mpsc::Sender<Event>,
    ) -> Pin<Box<dyn Future<Output = Result<Commands, Unattached>> + Send + 'a>>;

    /// Runs a health check off the loop; the result reaches the loop on `tx`.
    fn probe(&self, req: ProbeRequest, tx: mpsc::Sender<Event>);

    /// Every process of the host, read once (for the instances' CPU and memory in `status`).
    fn processes(&self) -> ProcTable;

    /// Whether something else listens on `port` (checked before an instance is given it).
    fn port_state(&self, port: u16) -> PortState;

    /// Kills the class-data training JVMs an earlier daemon left behind; their pids.
    fn stop_stray_trainings(&self, dirs: &StateDir) -> Vec<i32>;

    /// Sends a live refresh's request to an instance (`on_change = "http:…"`) off the loop; the
    /// answer (or its absence within `timeout`) reaches the loop on `tx` as a [`Refreshed`].
    fn refresh_call(&self, call: RefreshCall, tx: mpsc::Sender<Event>);

    /// Watches an app's etcd prefix until the returned [`Watch`] is dropped; values reach the
    /// loop on `tx` as `EtcdNote`s, outages as `Notice`s.
    fn watch_etcd(&self, app: String, source: EtcdSource, tx: mpsc::Sender<Event>) -> Watch;

    /// Prepares the release of an etcd config change off the loop (`prepare_changed`); it
    /// reaches the loop on `tx` as a [`ConfigPrepared`], or a `config.failed` `Notice`.
    fn prepare_config(&self, req: ConfigRequest, tx: mpsc::Sender<Event>);

    /// Whether the JVM `pid` records what a class data archive is dumped from
    /// (`faststart::records_dump_info`).
    fn records_dump_info(&self, pid: u32) -> bool;

    /// Trains a release's class data archive from a ready instance off the loop (the training
    /// JVM, `faststart::dump`); the outcome reaches the loop on `tx` as a [`Trained`].
    fn train(&self, req: TrainRequest, tx: mpsc::Sender<Event>);
}

/// A live refresh's HTTP request to an instance.
pub struct RefreshCall {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub port: u16,
    pub method: String,
    pub path: String,
    pub timeout: Duration,
}

/// An instance's answer to its live refresh: what it said (`Ok`), or why it was not refreshed.
#[derive(Debug, Clone)]
pub struct Refreshed {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub result: Result<String, String>,
}

/// A change of an app's etcd values, to be prepared as a release from its running spec.
pub struct ConfigRequest {
    pub app: String,
    /// The running spec with the new values in `etcd_env`.
    pub spec: AppSpec,
    pub dirs: StateDir,
}

/// The release of an etcd config change, prepared (it reaches the loop as
/// `Event::ConfigRelease`).
pub struct ConfigPrepared {
    pub app: String,
    pub prepared: Box<PreparedApp>,
}

/// A release's class data archive to dump from the ready instance `pid`.
pub struct TrainRequest {
    pub app: String,
    pub release: String,
    pub spec: AppSpec,
    pub runtime: JavaRuntime,
    pub dirs: StateDir,
    pub pid: u32,
    pub run_as: Option<RunAs>,
}

/// A release's class data archive was trained (`Ok`: what was made), or could not be.
#[derive(Debug, Clone)]
pub struct Trained {
    pub app: String,
    pub release: String,
    pub result: Result<String, String>,
}

/// A running watch; dropping it stops the watch.
pub struct Watch(Option<Box<dyn FnOnce() + Send>>);

impl Watch {
    /// A watch that `stop` ends.
    pub fn new(stop: impl FnOnce() + Send + 'static) -> Watch {
        Watch(Some(Box::new(stop)))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(stop) = self.0.take() {
            stop();
        }
    }
}

/// The host itself: `jarfleet shim` processes and real checks.
pub struct RealHost;

impl Host for RealHost {
    fn start(
        &self,
        exe: &Path,
        run_dir: &Path,
        launch: &Launch,
        app: String,
        slot: u32,
        generation: u64,
        tx: mpsc::Sender<Event>,
    ) -> anyhow::Result<Commands> {
        shim_client::start(exe, run_dir, launch, app, slot, generation, tx)
    }

    fn attach<'a>(
        &'a self,
        run_dir: &'a Path,
        app: String,
        slot: u32,
        generation: u64,
        tx: mpsc::Sender<Event>,
    ) -> Pin<Box<dyn Future<Output = Result<Commands, Unattached>> + Send + 'a>> {
        Box::pin(shim_client::attach(run_dir, app, slot, generation, tx))
    }

    fn probe(&self, req: ProbeRequest, tx: mpsc::Sender<Event>) {
        tokio::spawn(async move {
            let started = Instant::now();
            let outcome =
                probe::check(&req.check, req.port, req.timeout, &req.vars, req.run_as).await;
            let _ = tx
                .send(Event::Probe(ProbeResult {
                    app: req.app,
                    slot: req.slot,
                    generation: req.generation,
                    outcome,
                    took: started.elapsed(),
                }))
                .await;
        });
    }
    fn processes(&self) -> ProcTable {
        ProcTable::scan()
    }

    fn port_state(&self, port: u16) -> PortState {
        ports::state(port)
    }

    fn stop_stray_trainings(&self, dirs: &StateDir) -> Vec<i32> {
        jarfleet_host::faststart::kill_stray_trainings(dirs)
    }

    fn refresh_call(&self, call: RefreshCall, tx: mpsc::Sender<Event>) {
        tokio::spawn(async move {
            let RefreshCall {
                app,
                slot,
                generation,
                port,
                method,
                path,
                timeout,
            } = call;
            let sent = probe::http_call(port, &method, &path);
            let result = match tokio::time::timeout(timeout, sent).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {
                    Ok(format!("{method} {path} answered {status}"))
                }
                Ok(Ok(status)) => Err(format!("{method} {path} answered {status}")),
                Ok(Err(e)) => Err(match e.shortage {
                    // Not the instance's answer: said as such (the fallback, a rolling
                    // restart, waits for new instances to be ready).
                    Some(s) => format!(
                        "{method} {path} could not be sent ({}): {e}",
                        s.describe_here()
                    ),
                    None => format!("{method} {path}: {e}"),
                }),
                Err(_) => Err(format!(
                    "{method} {path}: no answer within {} s",
                    timeout.as_secs()
                )),
            };
            let answer = Refreshed {
                app,
                slot,
                generation,
                result,
            };
            let _ = tx.send(answer.into()).await;
        });
    }

    fn watch_etcd(&self, app: String, source: EtcdSource, tx: mpsc::Sender<Event>) -> Watch {
        let task = tokio::spawn(crate::etcd_watch::watch(app, source, tx));
        Watch::new(move || task.abort())
    }

    fn prepare_config(&self, req: ConfigRequest, tx: mpsc::Sender<Event>) {
        tokio::task::spawn_blocking(move || {
            let ConfigRequest { app, spec, dirs } = req;
            let event = match jarfleet_host::prepare::prepare_changed(&spec, &dirs) {
                Ok(prepared) => ConfigPrepared {
                    app,
                    prepared: Box::new(prepared),
                }
                .into(),
                Err(e) => Notice {
                    kind: EventKind::ConfigFailed,
                    app: Some(app),
                    message: format!("the new etcd config cannot be prepared: {}", e.message),
                }
                .into(),
            };
            let _ = tx.blocking_send(event);
        });
    }

    fn records_dump_info(&self, pid: u32) -> bool {
        jarfleet_host::faststart::records_dump_info(pid)
    }

    fn train(&self, req: TrainRequest, tx: mpsc::Sender<Event>) {
        tokio::task::spawn_blocking(move || {
            let TrainRequest {
                app,
                release,
                spec,
                runtime,
                dirs,
                pid,
                run_as,
            } = req;
            let result =
                jarfleet_host::faststart::dump(&spec, &runtime, &release, &dirs, pid, run_as);
            let _ = tx.blocking_send(
                Trained {
                    app,
                    release,
                    result,
                }
                .into(),
            );
        });
    }
}
