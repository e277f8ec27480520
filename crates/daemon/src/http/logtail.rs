//! Instance logs as a channel of [`LogLine`]s: the last lines of each log, then (when
//! following) every new line as it is written. Encoded as NDJSON by `/v1/logs` and as
//! server-sent events by `/v1/stream/logs`.

use std::time::Duration;

use jarfleet_api::LogLine;
use tokio::sync::mpsc;

use jarfleet_host::paths::StateDir;
use jarfleet_shim::logfile::{Follower, tail_lines};

/// How often followed logs are polled when nothing new was written.
const POLL: Duration = Duration::from_millis(150);

/// Starts a producer (on a blocking thread) for `app`'s `slots`; it stops when the receiver is
/// dropped.
pub fn spawn(
    dirs: StateDir,
    app: String,
    slots: Vec<u32>,
    lines: usize,
    follow: bool,
) -> mpsc::Receiver<LogLine> {
    let (tx, rx) = mpsc::channel::<LogLine>(256);
    tokio::task::spawn_blocking(move || {
        let line_of = |slot: u32, stream: &str, line: String| LogLine {
            app: app.clone(),
            slot,
            stream: stream.into(),
            line,
        };
        let mut followers = Vec::new();
        for slot in &slots {
            for stream in ["stdout", "stderr"] {
                let path = dirs.log_dir(&app, *slot).join(format!("{stream}.log"));
                if let Ok(tail) = tail_lines(&path, lines) {
                    for line in tail {
                        if tx.blocking_send(line_of(*slot, stream, line)).is_err() {
                            return;
                        }
                    }
                }
                if follow {
                    followers.push((*slot, stream, Follower::new(&path, true)));
                }
            }
        }
        while follow && !tx.is_closed() {
            let mut any = false;
            for (slot, stream, f) in followers.iter_mut() {
                if let Ok(new) = f.poll_lines() {
                    for line in new {
                        any = true;
                        if tx.blocking_send(line_of(*slot, stream, line)).is_err() {
                            return;
                        }
                    }
                }
            }
            if !any {
                std::thread::sleep(POLL);
            }
        }
    });
    rx
}
