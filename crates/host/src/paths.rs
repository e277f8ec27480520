//! The state directory layout (DESIGN §5). Every path the daemon writes is named here.

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
    /// Per-spawn directory of one shim: launch file, control socket, exit record.
    pub fn run_dir(&self, app: &str, slot: u32, generation: u64) -> PathBuf {
        self.root
            .join("run")
            .join(format!("{app}.{slot}.{generation}"))
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

/// Files inside a shim's run dir.
pub mod run {
    pub const LAUNCH: &str = "launch.json";
    pub const SOCKET: &str = "s.sock";
    pub const EXIT: &str = "exit.json";
    pub const SHIM_LOG: &str = "shim.log";
}

/// Writes `bytes` to `path` atomically: temp file (0600: launch files hold the app's
/// environment), fsync, rename, fsync the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    {
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(crate::privfs::PRIVATE_FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
