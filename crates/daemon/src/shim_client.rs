//! The daemon's side of a shim: start one, or re-attach to one that outlived a daemon.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use anyhow::{Context, Result};
use jarfleet_core::Millis;
use jarfleet_core::instance::ExitInfo;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use jarfleet_host::paths::{MAX_SOCKET_PATH, run, write_atomic};
use jarfleet_shim::protocol::{Launch, ShimCommand, ShimMessage};
use jarfleet_shim::spawn;

/// A shim connection's report, with the instance it is about, as the control loop gets it.
#[derive(Debug, Clone)]
pub struct ShimNote {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub event: ShimEvent,
}

/// What a shim connection reports to the control loop.
#[derive(Debug, Clone)]
pub enum ShimEvent {
    Hello {
        shim_pid: u32,
        pid: u32,
        started_at: Millis,
    },
    Exited(ExitInfo),
    /// The connection ended without an exit report (the shim was killed).
    Lost,
    /// The shim could not start the JVM; `shortage` when that was for want of a resource on
    /// the host rather than a problem of the app (a missing `java`).
    SpawnFailed(jarfleet_shim::fdlimit::Failure),
}

/// Writes the launch file, starts `jarfleet shim` for it and connects. The control socket is
/// bound here and inherited by the shim, so connecting never races the shim's start.
pub fn start<E: From<ShimNote> + Send + 'static>(
    exe: &Path,
    run_dir: &Path,
    launch: &Launch,
    app: String,
    slot: u32,
    generation: u64,
    tx: mpsc::Sender<E>,
) -> Result<mpsc::UnboundedSender<ShimCommand>> {
    std::fs::create_dir_all(run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    std::fs::set_permissions(run_dir, std::fs::Permissions::from_mode(0o700))?;
    for dir in [&launch.cwd, &launch.dump_dir, &launch.hs_err_dir] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    write_atomic(
        &run_dir.join(run::LAUNCH),
        &serde_json::to_vec_pretty(launch)?,
    )?;
    let socket = run_dir.join(run::SOCKET);
    check_socket_path(&socket)?;
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(jarfleet_shim::privfs::PRIVATE_FILE_MODE)
        .open(run_dir.join(run::SHIM_LOG))?;
    let mut child =
        spawn::spawn_shim(exe, run_dir, &listener, log).context("starting the instance shim")?;
    // Connect while the listener is still open here too: the connection waits in its backlog.
    let connected = std::os::unix::net::UnixStream::connect(&socket)
        .and_then(|stream| {
            stream.set_nonblocking(true)?;
            UnixStream::from_std(stream)
        })
        .with_context(|| format!("connecting to {}", socket.display()));
    drop(listener);
    if connected.is_err() {
        // A shim the daemon cannot talk to must not go on alone: killed (its JVM, if it got
        // that far, follows by PDEATHSIG) before the start is reported as failed.
        let _ = child.start_kill();
    }
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let stream = connected.context("the shim was started and stopped again")?;
    Ok(connect_task(stream, app, slot, generation, tx))
}

/// Gives the instance's own directories (its JVM's own log directory, dumps, working dir) to
/// the user the JVM runs as: the JVM itself writes GC logs, hs_err files and heap dumps there.
/// The log directory itself (`stdout.log`, `stderr.log`) is root's, readable by the app's group:
/// it is taken back first when an older jarfleet had handed it over. The working directory is
/// handed over only when it is jarfleet's own (`own_cwd`), never a `workdir` the spec names.
/// `state` gets the search bit for others (0711) so the JVM can reach these by their paths; it
/// lists nothing.
pub fn hand_over_dirs(
    state: &Path,
    launch: &Launch,
    uid: u32,
    gid: u32,
    own_cwd: bool,
) -> Result<()> {
    use jarfleet_shim::privfs;
    if let Ok(meta) = std::fs::metadata(state)
        && meta.permissions().mode() & 0o001 == 0
    {
        let mode = (meta.permissions().mode() & 0o700) | 0o011;
        std::fs::set_permissions(state, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("letting uid {uid} reach {}", state.display()))?;
    }
    if let Some(log_dir) = launch.stdout_log.parent()
        && let Some(note) = privfs::own_dir(log_dir, privfs::LOG_DIR_MODE, Some(gid))
            .with_context(|| format!("making {} root's own", log_dir.display()))?
    {
        tracing::warn!("{note}");
    }
    let mut dirs = vec![&launch.hs_err_dir, &launch.dump_dir];
    if own_cwd {
        dirs.push(&launch.cwd);
    }
    for dir in dirs {
        privfs::hand_dir(dir, 0o750, uid, gid)
            .with_context(|| format!("giving {} to uid {uid}", dir.display()))?;
    }
    Ok(())
}

/// Why a shim could not be re-attached.
#[derive(Debug)]
pub enum Unattached {
    /// The shim is gone, and left its exit record (or none).
    Gone(Option<ExitInfo>),
    /// Its socket could not even be tried: the daemon is short of something itself. The shim
    /// may well be running; nothing is to be concluded.
    Short(jarfleet_shim::fdlimit::Failure),
}

/// Re-attaches to a running shim.
pub async fn attach<E: From<ShimNote> + Send + 'static>(
    run_dir: &Path,
    app: String,
    slot: u32,
    generation: u64,
    tx: mpsc::Sender<E>,
) -> Result<mpsc::UnboundedSender<ShimCommand>, Unattached> {
    let socket = run_dir.join(run::SOCKET);
    match UnixStream::connect(&socket).await {
        Ok(stream) => Ok(connect_task(stream, app, slot, generation, tx)),
        Err(e) => {
            let failure = jarfleet_shim::fdlimit::Failure::io(
                format_args!("connecting to {}", socket.display()),
                &e,
                jarfleet_shim::fdlimit::Op::Connect,
            );
            match failure.shortage {
                Some(_) => Err(Unattached::Short(failure)),
                None => Err(Unattached::Gone(read_exit(run_dir))),
            }
        }
    }
}

/// A shim no instance accounts for, as its socket answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StrayShim {
    pub shim_pid: u32,
    pub pid: u32,
}

/// Asks the shim in `run_dir` (if one answers) to stop its JVM and waits for the exit; returns
/// it. `Err`: its socket could not even be tried (the daemon is short of something): leave it.
pub async fn stop_stray(
    run_dir: &Path,
) -> Result<Option<StrayShim>, jarfleet_shim::fdlimit::Failure> {
    stray(run_dir, true).await
}

/// Looks at the shim in `run_dir` without stopping anything: `Some` while its JVM runs; a shim
/// whose JVM has exited is acknowledged (so it goes) and `None` returned, as for no shim.
pub async fn look_at_stray(
    run_dir: &Path,
) -> Result<Option<StrayShim>, jarfleet_shim::fdlimit::Failure> {
    stray(run_dir, false).await
}

async fn stray(
    run_dir: &Path,
    stop: bool,
) -> Result<Option<StrayShim>, jarfleet_shim::fdlimit::Failure> {
    let socket = run_dir.join(run::SOCKET);
    match UnixStream::connect(&socket).await {
        Ok(stream) => Ok(stray_on(stream, stop).await),
        Err(e) => {
            let failure = jarfleet_shim::fdlimit::Failure::io(
                format_args!("connecting to {}", socket.display()),
                &e,
                jarfleet_shim::fdlimit::Op::Connect,
            );
            match failure.shortage {
                Some(_) => Err(failure),
                None => Ok(None),
            }
        }
    }
}

async fn stray_on(stream: UnixStream, stop: bool) -> Option<StrayShim> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    let hello = tokio::time::timeout(std::time::Duration::from_secs(2), lines.next_line())
        .await
        .ok()?
        .ok()??;
    let ShimMessage::Hello {
        pid,
        shim_pid,
        exited: None,
        ..
    } = serde_json::from_str(&hello).ok()?
    else {
        let _ = write
            .write_all(format!("{}\n", serde_json::to_string(&ShimCommand::Ack).ok()?).as_bytes())
            .await;
        return None;
    };
    let found = StrayShim { shim_pid, pid };
    if !stop {
        return Some(found);
    }
    let stop = serde_json::to_string(&ShimCommand::Stop { grace_ms: 30_000 }).ok()?;
    write.write_all(format!("{stop}\n").as_bytes()).await.ok()?;
    // Wait for the exit report, then acknowledge it so the shim goes at once.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Ok(ShimMessage::Exited { .. }) = serde_json::from_str(&line) {
            let ack = serde_json::to_string(&ShimCommand::Ack).ok()?;
            let _ = write.write_all(format!("{ack}\n").as_bytes()).await;
            break;
        }
    }
    Some(found)
}

pub fn read_exit(run_dir: &Path) -> Option<ExitInfo> {
    let bytes = std::fs::read(run_dir.join(run::EXIT)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn check_socket_path(socket: &Path) -> Result<()> {
    let len = socket.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        anyhow::bail!(
            "socket path {} is {len} bytes, longer than unix sockets allow ({MAX_SOCKET_PATH}); use a shorter state_dir",
            socket.display()
        );
    }
    Ok(())
}

fn connect_task<E: From<ShimNote> + Send + 'static>(
    stream: UnixStream,
    app: String,
    slot: u32,
    generation: u64,
    tx: mpsc::Sender<E>,
) -> mpsc::UnboundedSender<ShimCommand> {
    let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<ShimCommand>();
    tokio::spawn(async move {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut finished = false;
        let mut commands_open = true;
        let send = |event: ShimEvent| {
            let tx = tx.clone();
            let app = app.clone();
            async move {
                let _ = tx
                    .send(
                        ShimNote {
                            app,
                            slot,
                            generation,
                            event,
                        }
                        .into(),
                    )
                    .await;
            }
        };
        loop {
            tokio::select! {
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        let Ok(msg) = serde_json::from_str::<ShimMessage>(&line) else { continue };
                        match msg {
                            ShimMessage::Hello { shim_pid, pid, started_at, exited } => {
                                send(ShimEvent::Hello { shim_pid, pid, started_at }).await;
                                if let Some(exit) = exited {
                                    finished = true;
                                    send(ShimEvent::Exited(exit)).await;
                                }
                            }
                            ShimMessage::Exited { exit } => {
                                finished = true;
                                send(ShimEvent::Exited(exit)).await;
                            }
                            ShimMessage::SpawnFailed { error, errno } => {
                                finished = true;
                                let shortage = errno.and_then(|e| {
                                    jarfleet_shim::fdlimit::classify(e, jarfleet_shim::fdlimit::Op::Spawn)
                                });
                                let failure = jarfleet_shim::fdlimit::Failure { message: error, shortage };
                                send(ShimEvent::SpawnFailed(failure)).await;
                            }
                        }
                    }
                    _ => {
                        if !finished {
                            send(ShimEvent::Lost).await;
                        }
                        break;
                    }
                },
                cmd = cmd_rx.recv(), if commands_open => match cmd {
                    Some(cmd) => {
                        let mut line = serde_json::to_string(&cmd).unwrap_or_default();
                        line.push('\n');
                        if write.write_all(line.as_bytes()).await.is_err() {
                            continue;
                        }
                    }
                    None => {
                        // The loop dropped us (the exit was handled); nothing more to say.
                        commands_open = false;
                        if finished { break; }
                    }
                }
            }
        }
    });
    cmd_tx
}
