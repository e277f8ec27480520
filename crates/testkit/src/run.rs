//! External commands with a deadline: a hung child is killed and the test fails naming it.

use std::io::Read;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `cmd` to completion like [`Command::output`] (stdin is `/dev/null`, stdout and stderr
/// are captured while it runs), but if it has not finished after `timeout` it is killed
/// (SIGKILL) and this panics naming the command. An error starting it (a missing tool) is
/// returned for the caller to explain.
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    Ok(wait_with_deadline(child, &format!("{cmd:?}"), timeout))
}

/// Waits for a spawned `child` like [`Child::wait_with_output`] (its piped stdout and stderr are
/// collected while it runs; unpiped ones come back empty), killing it and panicking with `what`
/// if it has not finished, or its output has not closed, after `timeout`.
pub fn wait_with_deadline(child: Child, what: &str, timeout: Duration) -> Output {
    try_wait_with_deadline(child, what, timeout).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`run_with_deadline`], but says what went wrong instead of panicking: for `Drop`
/// impls (a panic while unwinding aborts the test binary) and best-effort cleanup.
pub fn try_run_with_deadline(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {cmd:?}: {e}"))?;
    try_wait_with_deadline(child, &format!("{cmd:?}"), timeout)
}

/// Like [`wait_with_deadline`], but says what went wrong instead of panicking.
pub fn try_wait_with_deadline(
    mut child: Child,
    what: &str,
    timeout: Duration,
) -> Result<Output, String> {
    let deadline = Instant::now() + timeout;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not finish within {timeout:?}; it was killed"
                ));
            }
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    let output = |rx: mpsc::Receiver<Vec<u8>>, name: &str| {
        rx.recv_timeout(left).map_err(|_| {
            format!(
                "{what} exited ({status}) but its {name} stayed open past {timeout:?} \
                 (a process it started holds it)"
            )
        })
    };
    Ok(Output {
        status,
        stdout: output(stdout, "stdout")?,
        stderr: output(stderr, "stderr")?,
    })
}

/// Reads `pipe` to its end on a thread; the bytes arrive on the channel (empty for no pipe).
fn collect(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_command_gives_its_status_and_output() {
        let out = run_with_deadline(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .expect("sh runs");
        assert_eq!(out.status.code(), Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
    }

    #[test]
    fn a_hung_command_is_killed_and_named() {
        let started = std::panic::catch_unwind(|| {
            run_with_deadline(Command::new("sleep").arg("600"), Duration::from_millis(200))
        });
        let msg = started.expect_err("the deadline fails the run");
        let msg = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            msg.contains("sleep") && msg.contains("did not finish"),
            "{msg}"
        );
    }

    #[test]
    fn a_hung_command_is_gone_when_the_deadline_fails_it() {
        let dir = std::env::temp_dir().join(format!("testkit-run-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pid_file = dir.join("pid");
        let script = format!("echo $$ > {}; exec sleep 600", pid_file.display());
        let err = try_run_with_deadline(
            Command::new("sh").args(["-c", &script]),
            Duration::from_millis(500),
        )
        .expect_err("the deadline fails the run");
        assert!(
            err.contains("did not finish") && err.contains("sh"),
            "{err}"
        );
        let pid = std::fs::read_to_string(&pid_file).expect("the child wrote its pid");
        let _ = std::fs::remove_dir_all(&dir);
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()));
        // Killed and reaped: gone, or (pid reused) no longer our `sleep`.
        assert!(
            stat.map_or(true, |s| !s.contains("(sleep)")),
            "the hung child {pid} still runs"
        );
    }

    #[test]
    fn a_missing_tool_is_an_error_for_the_caller() {
        let e = run_with_deadline(
            &mut Command::new("/nonexistent/tool"),
            Duration::from_secs(5),
        )
        .expect_err("no such tool");
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
