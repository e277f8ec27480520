//! The outside world the loop acts on — starting a shim, re-attaching to one, running a health
//! check, asking whether a port is taken, stopping stray training JVMs — behind one small
//! interface, so a simulated host can stand in for the real one. The real daemon uses
//! [`RealHost`]; stop signals travel on the command channel `start` and `attach` hand back, and
//! answers come back to the loop as `ShimNote`s and `ProbeResult`s.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use jarfleet_core::spec::HealthCheck;
use jarfleet_host::paths::StateDir;
use jarfleet_host::ports::{self, PortState};
use tokio::sync::mpsc;

use super::Event;
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
}
