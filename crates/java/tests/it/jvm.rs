//! Running a JVM under test: own process group, output to a file, deadlines everywhere.

use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::http;

/// How long a fixture JVM may take to answer /health (generous: CI machines are shared).
pub const START: Duration = Duration::from_secs(60);

/// A JVM started by a test; its process group is killed when dropped.
pub struct Jvm {
    child: Child,
    pub pid: u32,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    started: Instant,
}

impl Jvm {
    /// `java FLAGS TARGET_ARGS` with `PORT` set to a free port and `env` added.
    pub fn start(
        java: &Path,
        flags: &[String],
        target: Vec<OsString>,
        env: &[(&str, &str)],
    ) -> Jvm {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("output.log");
        let out = File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let port = http::free_port();
        let mut cmd = Command::new(java);
        cmd.args(flags)
            .args(target)
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", java.display()));
        Jvm {
            pid: child.id(),
            child,
            port,
            log,
            _dir: dir,
            started,
        }
    }

    /// Polls /health every 10 ms until it answers 200: the time from spawn. Panics with the
    /// output when the JVM exits first or `START` passes.
    pub fn wait_healthy(&mut self) -> Duration {
        let deadline = self.started + START;
        loop {
            if http::ok(self.port, "/health") {
                return self.started.elapsed();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "JVM exited ({status}) before /health answered:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "/health not 200 within {START:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits (30 s at most) for the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        let _ = kill(self.nix_pid(), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = killpg(self.nix_pid(), Signal::SIGKILL);
                panic!(
                    "JVM did not stop within 30 s of SIGTERM:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn output(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.pid).expect("pid fits i32"))
    }
}

impl Drop for Jvm {
    fn drop(&mut self) {
        let _ = killpg(self.nix_pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Whether process `pid` is gone (no such process, or a zombie nobody reaped yet).
pub fn is_gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Waits (10 s at most) until `pid` is gone.
pub fn assert_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_gone(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Lines of a `-Xlog:class+load` log saying `class` came from the CDS archive / AOT cache.
pub fn loaded_from_archive(log: &str, class: &str) -> bool {
    let needle = format!(" {class} source: shared objects file");
    log.lines().any(|l| l.contains(&needle))
}

/// How many classes of `package_prefix` were loaded, and how many of them from the archive.
pub fn class_sources(log: &str, package_prefix: &str) -> (usize, usize) {
    let mut total = 0;
    let mut shared = 0;
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("[class,load] ") else {
            continue;
        };
        if !rest.starts_with(package_prefix) {
            continue;
        }
        total += 1;
        if rest.contains("source: shared objects file") {
            shared += 1;
        }
    }
    (total, shared)
}
