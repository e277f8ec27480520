//! Messages between the daemon and a shim, and the launch file the daemon writes for it.

use std::path::PathBuf;

use jarfleet_core::Millis;
use jarfleet_core::instance::ExitInfo;
use serde::{Deserialize, Serialize};

/// Everything a shim needs to start its JVM: written by the daemon to `launch.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    /// `argv[0]` is the `java` binary; never run through a shell.
    pub argv: Vec<String>,
    /// The complete environment of the JVM.
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdout_log: PathBuf,
    pub stderr_log: PathBuf,
    pub log_max_size: u64,
    pub log_keep: u32,
    /// Where the JVM writes `hs_err_pid<pid>.log` (`-XX:ErrorFile`).
    pub hs_err_dir: PathBuf,
    /// `jcmd` of the JDK, for a thread dump before SIGKILL.
    pub jcmd: Option<PathBuf>,
    /// Where thread dumps go.
    pub dump_dir: PathBuf,
    /// Run the JVM as this user (the shim runs as root).
    #[serde(default)]
    pub run_as: Option<RunAs>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

/// Shim → daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ShimMessage {
    /// Sent on every new connection.
    Hello {
        shim_pid: u32,
        pid: u32,
        started_at: Millis,
        exited: Option<ExitInfo>,
    },
    /// The JVM ended (and every process it forked is gone).
    Exited { exit: ExitInfo },
    /// The JVM could not be started at all. `errno`: the OS error of the failed spawn, so the
    /// daemon can tell a shortage of its own (no memory, process limit) from a missing `java`.
    SpawnFailed {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        errno: Option<i32>,
    },
}

/// Daemon → shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum ShimCommand {
    /// SIGTERM the group, wait `grace_ms`, thread dump, SIGKILL the group.
    Stop { grace_ms: u64 },
    /// The exit was recorded: the shim may go.
    Ack,
    /// Send the JVM (not its group) `signal` (`HUP`, `USR1` or `USR2`): a config refresh.
    Signal { signal: String },
}

/// Files inside a shim's run dir.
pub mod run_dir {
    pub const LAUNCH: &str = "launch.json";
    pub const SOCKET: &str = "s.sock";
    pub const EXIT: &str = "exit.json";
    pub const SHIM_LOG: &str = "shim.log";
}
