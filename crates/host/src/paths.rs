//! The state directory layout. Every path the daemon, the CLI and the shim write under the state
//! dir is named here (the files inside a shim's run dir by `jarfleet-shim`, re-exported as [`run`]).

use std::path::{Path, PathBuf};

/// Unix socket paths longer than this do not fit `sockaddr_un`.
pub const MAX_SOCKET_PATH: usize = 104;

#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn socket(&self) -> PathBuf {
        self.root.join(jarfleet_api::SOCKET_NAME)
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("state.db")
    }
    pub fn lock(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }
    pub fn daemon_log(&self) -> PathBuf {
        self.root.join("daemon.log")
    }
    /// The load balancer's data plane: its control socket, pid and log (`jarfleet_dataplane`).
    pub fn data_plane(&self) -> PathBuf {
        self.root.join("lb")
    }
    /// Where the shims' run dirs are (`APP.SLOT.GENERATION` each).
    pub fn run_root(&self) -> PathBuf {
        self.root.join("run")
    }
    /// Per-spawn directory of one shim: launch file, control socket, exit record.
    pub fn run_dir(&self, app: &str, slot: u32, generation: u64) -> PathBuf {
        self.run_root().join(format!("{app}.{slot}.{generation}"))
    }
    /// One release of an app: its verified artifact, rendered config (`etc/`), extracted
    /// layout (`boot/`).
    pub fn release_dir(&self, app: &str, release: &str) -> PathBuf {
        self.root.join("releases").join(app).join(release)
    }
    /// Remote artifacts, downloaded and kept by digest.
    pub fn download_cache(&self) -> PathBuf {
        self.root.join("cache")
    }
    /// Install transactions' journals (`TX.journal` each).
    pub fn install_journals(&self) -> PathBuf {
        self.root.join("journal")
    }
    /// Class data archives, per app (`APP/KEY.jsa`, `.aot`).
    pub fn cds_root(&self) -> PathBuf {
        self.root.join("cds")
    }
    pub fn cds_dir(&self, app: &str) -> PathBuf {
        self.cds_root().join(app)
    }
    /// An instance's log directory: root's own (`stdout.log`, `stderr.log`, rotated files),
    /// readable by the app's group.
    pub fn log_dir(&self, app: &str, slot: u32) -> PathBuf {
        self.root.join("logs").join(app).join(slot.to_string())
    }
    /// Where the JVM itself writes (GC log, `hs_err_pid*.log`): its user's, inside the log dir.
    pub fn jvm_log_dir(&self, app: &str, slot: u32) -> PathBuf {
        self.log_dir(app, slot).join("jvm")
    }
    pub fn app_log_dir(&self, app: &str) -> PathBuf {
        self.root.join("logs").join(app)
    }
    pub fn dumps_dir(&self, app: &str) -> PathBuf {
        self.root.join("dumps").join(app)
    }
    /// Rendered config of an app's instances (`N/` each): root's, readable by the app's group,
    /// outside the working directory its user owns.
    pub fn config_dir(&self, app: &str) -> PathBuf {
        self.root.join("config").join(app)
    }
    /// Default working directory of an instance.
    pub fn instance_dir(&self, app: &str, slot: u32) -> PathBuf {
        self.root.join("instances").join(app).join(slot.to_string())
    }
}

/// Writes a private file atomically (`jarfleet-shim`'s `privfs`).
pub use jarfleet_shim::privfs::write_atomic;
/// Files inside a shim's run dir (the shim's own protocol, named by `jarfleet-shim`).
pub use jarfleet_shim::protocol::run_dir as run;
