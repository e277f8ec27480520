//! The shims found in `run/` from their run dirs alone, without the store: which still run a
//! JVM, with its pid and port. Used where the store cannot be trusted or is not open: the
//! daemon's start-up check of its store, `up`'s port pre-flight, `doctor`.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::paths::run;
use jarfleet_shim::protocol::{Launch, ShimMessage};

/// A shim that answered and whose JVM still runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survivor {
    pub run_dir: PathBuf,
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub shim_pid: u32,
    pub pid: u32,
    /// The instance's port (`PORT` of its launch file), when it can be read.
    pub port: Option<u16>,
}

impl Survivor {
    pub fn describe(&self) -> String {
        format!(
            "{}/{} (JVM pid {}, shim pid {}{})",
            self.app,
            self.slot,
            self.pid,
            self.shim_pid,
            self.port.map(|p| format!(", port {p}")).unwrap_or_default()
        )
    }
}

/// What `run/` holds.
#[derive(Debug, Default)]
pub struct Found {
    pub alive: Vec<Survivor>,
    /// Run dirs whose shim could not be asked (the daemon short of descriptors, a socket that
    /// does not answer in time): they may run a JVM, so they count as running.
    pub unclear: Vec<(PathBuf, String)>,
    /// The highest generation of any run dir (a new spawn must not reuse one).
    pub max_generation: u64,
}

impl Found {
    pub fn running(&self) -> usize {
        self.alive.len() + self.unclear.len()
    }
}

/// `<app>.<slot>.<generation>` → its parts.
pub fn parse_run_dir_name(name: &str) -> Option<(String, u32, u64)> {
    let mut parts = name.rsplitn(3, '.');
    let generation = parts.next()?.parse().ok()?;
    let slot = parts.next()?.parse().ok()?;
    let app = parts.next().filter(|a| !a.is_empty())?;
    Some((app.to_string(), slot, generation))
}

/// Asks every shim in `STATE/run/` whether its JVM runs (blocking: a connect and one line each,
/// at most 2 s per shim). Nothing is sent to a shim but the connection itself.
pub fn find(state_root: &Path) -> Found {
    let mut found = Found::default();
    let Ok(entries) = std::fs::read_dir(crate::paths::StateDir::new(state_root).run_root()) else {
        return found;
    };
    for dir in entries.flatten().map(|e| e.path()) {
        let Some((app, slot, generation)) = dir
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_run_dir_name)
        else {
            continue;
        };
        found.max_generation = found.max_generation.max(generation);
        match hello(&dir.join(run::SOCKET)) {
            Answer::Running { shim_pid, pid } => found.alive.push(Survivor {
                port: launch_port(&dir),
                run_dir: dir,
                app,
                slot,
                generation,
                shim_pid,
                pid,
            }),
            Answer::Gone => {}
            Answer::Unclear(why) => found.unclear.push((dir, why)),
        }
    }
    found.alive.sort_by(|a, b| a.run_dir.cmp(&b.run_dir));
    found
}

enum Answer {
    Running { shim_pid: u32, pid: u32 },
    Gone,
    Unclear(String),
}

fn hello(socket: &Path) -> Answer {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            return match e.raw_os_error() {
                // No socket, or nobody listening on it: that shim is gone.
                Some(code) if code == libc::ENOENT => Answer::Gone,
                Some(code) if code == libc::ECONNREFUSED => Answer::Gone,
                _ => Answer::Unclear(format!("connecting to {}: {e}", socket.display())),
            };
        }
    };
    if let Err(e) = stream.set_read_timeout(Some(Duration::from_secs(2))) {
        return Answer::Unclear(format!("{}: {e}", socket.display()));
    }
    let mut line = String::new();
    match BufReader::new(&stream).read_line(&mut line) {
        Ok(0) => Answer::Gone,
        Ok(_) => match serde_json::from_str::<ShimMessage>(&line) {
            Ok(ShimMessage::Hello {
                shim_pid,
                pid,
                exited: None,
                ..
            }) => Answer::Running { shim_pid, pid },
            Ok(_) => Answer::Gone,
            Err(e) => Answer::Unclear(format!("{} answered {line:?}: {e}", socket.display())),
        },
        Err(e) => Answer::Unclear(format!("{} did not answer: {e}", socket.display())),
    }
}

pub fn launch_port(run_dir: &Path) -> Option<u16> {
    let bytes = std::fs::read(run_dir.join(run::LAUNCH)).ok()?;
    let launch: Launch = serde_json::from_slice(&bytes).ok()?;
    launch
        .env
        .iter()
        .find(|(k, _)| k == "PORT")
        .and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_dir_names() {
        let table = [
            ("web.0.12", Some(("web", 0, 12))),
            ("my-app_2.3.4", Some(("my-app_2", 3, 4))),
            ("web.x.1", None),
            ("web.1", None),
            (".1.2", None),
            ("web.1.18446744073709551616", None),
            (".sock-12", None),
        ];
        for (name, want) in table {
            let got = parse_run_dir_name(name);
            let want = want.map(|(a, s, g)| (a.to_string(), s, g));
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn an_empty_or_missing_run_dir_holds_no_shim() {
        let dir = std::env::temp_dir().join(format!("jf-survivors-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(find(&dir).running(), 0);
        let stale = dir.join("run").join("web.0.7");
        std::fs::create_dir_all(&stale).expect("temp dir");
        let found = find(&dir);
        assert_eq!((found.running(), found.max_generation), (0, 7));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
