//! The shim process itself: plain threads and blocking IO, so it stays small.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

/// Shim threads only pump bytes and parse one-line commands: small stacks suffice.
const THREAD_STACK: usize = 128 * 1024;

fn spawn_thread<F: FnOnce() + Send + 'static>(f: F) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new().stack_size(THREAD_STACK).spawn(f)
}
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use jarfleet_core::instance::ExitInfo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::logfile::RotatingWriter;
use crate::privfs::write_atomic;
use crate::protocol::run_dir as run;
use crate::protocol::{Launch, ShimCommand, ShimMessage};
use crate::spawn;

/// How long the shim waits for the daemon to acknowledge an exit before it leaves anyway (the
/// exit stays recorded in `exit.json` for the next daemon).
const ACK_WAIT: Duration = Duration::from_secs(5);
const THREAD_DUMP_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest pause between two attempts to write `exit.json`.
const EXIT_RETRY_MAX: Duration = Duration::from_secs(5);

struct Shared {
    pid: u32,
    started_at: u64,
    stop_requested: AtomicBool,
    killed_after_timeout: AtomicBool,
    oom: AtomicBool,
    exit: Mutex<Option<ExitInfo>>,
    exited: Condvar,
    clients: Mutex<Vec<UnixStream>>,
    acked: (Mutex<bool>, Condvar),
}

/// Entry point of `jarfleet shim RUN_DIR`. Returns when the JVM has ended and the exit is
/// recorded.
pub fn run_shim(run_dir: &Path) -> Result<()> {
    let listener = spawn::inherited_listener()?;
    nix::sys::prctl::set_child_subreaper(true).context("becoming a child subreaper")?;
    let launch_path = run_dir.join(run::LAUNCH);
    let launch: Launch = serde_json::from_slice(
        &std::fs::read(&launch_path)
            .with_context(|| format!("reading {}", launch_path.display()))?,
    )
    .with_context(|| format!("parsing {}", launch_path.display()))?;

    let Some(argv0) = launch.argv.first() else {
        anyhow::bail!("{}: empty argv", launch_path.display());
    };
    // The logs are opened (as root, in a directory only root writes) before the JVM exists: a
    // log that cannot be opened is a start that failed, said as such.
    let group = launch.run_as.map(|u| u.gid);
    let writers = [&launch.stdout_log, &launch.stderr_log].map(|path| {
        RotatingWriter::open_for_group(path, launch.log_max_size, launch.log_keep, group)
            .map_err(|e| (format!("cannot open the log {}: {e}", path.display()), e))
    });
    let [out_log, err_log] = match writers {
        [Ok(out), Ok(err)] => [out, err],
        [Err((error, e)), _] | [_, Err((error, e))] => {
            report_spawn_failure(&listener, &error, e.raw_os_error());
            anyhow::bail!(error);
        }
    };
    let mut cmd = spawn::jvm_command(argv0, launch.run_as);
    cmd.args(&launch.argv[1..])
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            let error = format!("cannot run {argv0}: {e}");
            report_spawn_failure(&listener, &error, e.raw_os_error());
            anyhow::bail!(error);
        }
    };
    let pid = child.id();
    let shared = Arc::new(Shared {
        pid,
        started_at: now_ms(),
        stop_requested: AtomicBool::new(false),
        killed_after_timeout: AtomicBool::new(false),
        oom: AtomicBool::new(false),
        exit: Mutex::new(None),
        exited: Condvar::new(),
        clients: Mutex::new(Vec::new()),
        acked: (Mutex::new(false), Condvar::new()),
    });

    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(pump(out, out_log, shared.clone())?);
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(pump(err, err_log, shared.clone())?);
    }

    {
        let shared = shared.clone();
        let launch = launch.clone();
        spawn_thread(move || accept_loop(listener, shared, launch))
            .context("starting the accept thread")?;
    }

    // From here the shim only waits. Once the JVM's start-up output and the daemon's first
    // exchange are over, hand back the code and heap they needed (crate::footprint).
    let _ = spawn_thread(|| {
        thread::sleep(crate::footprint::QUIET);
        crate::footprint::trim();
    });
    let status = child.wait().context("waiting for the JVM")?;
    // The JVM is gone: nothing it forked may outlive it (its group, and anything that escaped
    // the group and was re-parented to us as subreaper).
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    kill_adopted_children();
    reap_all();
    for p in pumps {
        let _ = p.join();
    }

    let exit = exit_info(&shared, status, &launch.hs_err_dir);
    let exit_path = run_dir.join(run::EXIT);
    let exit_bytes = serde_json::to_vec(&exit).unwrap_or_default();
    let mut recorded = write_exit(&exit_path, &exit_bytes);
    {
        let mut slot = shared.exit.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(exit.clone());
        shared.exited.notify_all();
    }
    let delivered = broadcast(&shared, &ShimMessage::Exited { exit });
    if delivered && wait_ack(&shared, ACK_WAIT) {
        return Ok(());
    }
    // Nobody took the exit: `exit.json` is how the next daemon learns it. Until it is written
    // (a full or failing disk), the shim stays, and answers the exit to any daemon that
    // connects (its `hello` carries it).
    let mut pause = Duration::from_millis(250);
    while !recorded {
        if wait_ack(&shared, pause) {
            return Ok(());
        }
        recorded = write_exit(&exit_path, &exit_bytes);
        pause = (pause * 2).min(EXIT_RETRY_MAX);
    }
    Ok(())
}

/// Writes `exit.json`; a failure is said in the shim's own log (its stderr).
fn write_exit(path: &Path, bytes: &[u8]) -> bool {
    match write_atomic(path, bytes) {
        Ok(()) => true,
        Err(e) => {
            // Never `eprintln!`: it panics when the shim's log cannot be written either.
            let _ = writeln!(
                std::io::stderr(),
                "jarfleet shim: writing {}: {e}; the exit stays in memory and is answered on the control socket, and the write is retried",
                path.display()
            );
            false
        }
    }
}

/// Waits up to `timeout` for the daemon's acknowledgement of the exit.
fn wait_ack(shared: &Shared, timeout: Duration) -> bool {
    let (lock, cv) = &shared.acked;
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = cv
        .wait_timeout_while(guard, timeout, |acked| !*acked)
        .unwrap_or_else(|e| e.into_inner());
    *guard
}

fn report_spawn_failure(
    listener: &std::os::unix::net::UnixListener,
    error: &str,
    errno: Option<i32>,
) {
    // Tell the daemon, which connected before we started.
    let _ = listener.set_nonblocking(false);
    if let Ok((mut conn, _)) = listener.accept() {
        let msg = ShimMessage::SpawnFailed {
            error: error.to_string(),
            errno,
        };
        let _ = writeln!(conn, "{}", serde_json::to_string(&msg).unwrap_or_default());
        let _ = conn.flush();
    }
}

const OOM_MARKER: &[u8] = b"java.lang.OutOfMemoryError";
/// Thread dumps: the app's user (who owns them) and its group may read them.
const DUMP_MODE: u32 = 0o640;

/// Copies one stream of the JVM into its log, watching for the OOM marker (HotSpot prints
/// "Terminating due to java.lang.OutOfMemoryError" on stdout, stack traces go to stderr).
fn pump(
    mut src: impl Read + Send + 'static,
    mut dst: RotatingWriter,
    shared: Arc<Shared>,
) -> std::io::Result<thread::JoinHandle<()>> {
    spawn_thread(move || {
        let mut buf = vec![0u8; 16 * 1024];
        // The end of the previous chunk, so a marker split across two reads is still seen.
        let mut carry: Vec<u8> = Vec::with_capacity(OOM_MARKER.len() * 2);
        loop {
            match src.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let chunk = &buf[..n];
                    carry.extend_from_slice(&chunk[..chunk.len().min(OOM_MARKER.len())]);
                    if contains(chunk, OOM_MARKER) || contains(&carry, OOM_MARKER) {
                        shared.oom.store(true, Ordering::SeqCst);
                    }
                    carry.clear();
                    carry.extend_from_slice(&chunk[chunk.len().saturating_sub(OOM_MARKER.len())..]);
                    if dst.write_chunk(chunk).is_err() {
                        // Disk trouble: keep draining so the JVM never blocks on a full pipe.
                        continue;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = dst.finish();
    })
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn accept_loop(listener: std::os::unix::net::UnixListener, shared: Arc<Shared>, launch: Launch) {
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let exited = shared
            .exit
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let hello = ShimMessage::Hello {
            shim_pid: std::process::id(),
            pid: shared.pid,
            started_at: shared.started_at,
            exited,
        };
        if writeln!(
            conn,
            "{}",
            serde_json::to_string(&hello).unwrap_or_default()
        )
        .is_err()
        {
            continue;
        }
        if let Ok(writer) = conn.try_clone() {
            shared
                .clients
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(writer);
        }
        let shared = shared.clone();
        let launch = launch.clone();
        let _ = spawn_thread(move || serve_client(conn, shared, launch));
    }
}

fn serve_client(conn: UnixStream, shared: Arc<Shared>, launch: Launch) {
    let reader = BufReader::new(conn);
    for line in reader.lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ShimCommand>(&line) {
            Ok(ShimCommand::Stop { grace_ms }) => {
                if !shared.stop_requested.swap(true, Ordering::SeqCst) {
                    let shared = shared.clone();
                    let launch = launch.clone();
                    let _ = spawn_thread(move || {
                        stop_sequence(&shared, Duration::from_millis(grace_ms), &launch)
                    });
                }
            }
            Ok(ShimCommand::Signal { signal }) => signal_jvm(&shared, &signal),
            Ok(ShimCommand::Ack) => {
                let (lock, cv) = &shared.acked;
                *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
                cv.notify_all();
            }
            Err(_) => {}
        }
    }
}

/// A refresh signal for the JVM, unless it has exited (its pid may be reused by then).
fn signal_jvm(shared: &Shared, name: &str) {
    let signal = match name {
        "HUP" => Signal::SIGHUP,
        "USR1" => Signal::SIGUSR1,
        "USR2" => Signal::SIGUSR2,
        _ => return,
    };
    let exit = shared.exit.lock().unwrap_or_else(|e| e.into_inner());
    if exit.is_none() {
        let _ = nix::sys::signal::kill(Pid::from_raw(shared.pid as i32), signal);
    }
}

/// SIGTERM the group → wait `grace` → thread dump → SIGKILL the group. A SIGCONT follows the
/// SIGTERM (as systemd does): a JVM someone stopped (`SIGSTOP`, a debugger, Ctrl-Z) runs again
/// and shuts down cleanly instead of sitting out `grace` and the thread dump's timeout.
fn stop_sequence(shared: &Shared, grace: Duration, launch: &Launch) {
    let group = Pid::from_raw(shared.pid as i32);
    let _ = killpg(group, Signal::SIGTERM);
    let _ = killpg(group, Signal::SIGCONT);
    if wait_exit(shared, grace) {
        return;
    }
    if let Some(jcmd) = &launch.jcmd {
        thread_dump(jcmd, shared.pid, launch);
    }
    shared.killed_after_timeout.store(true, Ordering::SeqCst);
    let _ = killpg(group, Signal::SIGKILL);
}

fn wait_exit(shared: &Shared, timeout: Duration) -> bool {
    let guard = shared.exit.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = shared
        .exited
        .wait_timeout_while(guard, timeout, |exit| exit.is_none())
        .unwrap_or_else(|e| e.into_inner());
    guard.is_some()
}

/// A thread dump into the app's dump directory (which its user owns): the file is created new
/// through a descriptor of that directory, never through a planted link
/// (`crate::privfs::create_new_in`), and `jcmd` runs as the app's user.
fn thread_dump(jcmd: &Path, pid: u32, launch: &Launch) {
    let dir = &launch.dump_dir;
    let name = format!("threads-{pid}-{}.txt", now_ms());
    let owner = launch.run_as.map(|u| u.uid);
    // A name planted in advance is refused; one other, unguessable name is tried.
    let file = match crate::privfs::create_new_in(dir, &name, DUMP_MODE, owner).or_else(|e| {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let other = format!("threads-{pid}-{}-{nanos:09}.txt", now_ms());
        crate::privfs::create_new_in(dir, &other, DUMP_MODE, owner)
    }) {
        Ok(file) => file,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "jarfleet shim: no thread dump of pid {pid}: creating {} in {}: {e}",
                name,
                dir.display()
            );
            return;
        }
    };
    if let Some(user) = launch.run_as {
        let _ = std::os::unix::fs::fchown(&file, Some(user.uid), Some(user.gid));
    }
    let Ok(mut child) = spawn::jcmd_command(jcmd, launch.run_as)
        .arg(pid.to_string())
        .arg("Thread.print")
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
    else {
        return;
    };
    let deadline = Instant::now() + THREAD_DUMP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Processes re-parented to us (we are a subreaper) that escaped the JVM's group.
fn kill_adopted_children() {
    let me = std::process::id();
    for pid in crate::procinfo::children_of(me) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
}

fn reap_all() {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                if Instant::now() > deadline {
                    return;
                }
                thread::sleep(Duration::from_millis(2));
            }
            Ok(_) => continue,
            Err(_) => return, // ECHILD: nothing left
        }
    }
}

fn exit_info(shared: &Shared, status: ExitStatus, hs_err_dir: &Path) -> ExitInfo {
    use std::os::unix::process::ExitStatusExt;
    // Only named, never opened (the directory is the app's user's).
    let hs_err: Option<PathBuf> = Some(hs_err_dir.join(format!("hs_err_pid{}.log", shared.pid)))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()));
    ExitInfo {
        code: status.code(),
        signal: status.signal(),
        stop_requested: shared.stop_requested.load(Ordering::SeqCst),
        killed_after_timeout: shared.killed_after_timeout.load(Ordering::SeqCst),
        oom: shared.oom.load(Ordering::SeqCst),
        hs_err: hs_err.map(|p| p.display().to_string()),
        at: now_ms(),
    }
}

fn broadcast(shared: &Shared, msg: &ShimMessage) -> bool {
    let line = serde_json::to_string(msg).unwrap_or_default();
    let mut clients = shared.clients.lock().unwrap_or_else(|e| e.into_inner());
    clients.retain_mut(|c| writeln!(c, "{line}").is_ok());
    !clients.is_empty()
}

/// Wall-clock milliseconds for the shim's records (the daemon's `clock` is not the shim's).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
