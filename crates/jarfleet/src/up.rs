//! `jarfleet up` (foreground daemon + progress) and `jarfleet daemon`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jarfleet_api::{ApplyRequest, ApplyResponse, Client, EventRecord, StatusReport, VersionInfo};
use jarfleet_core::spec::FleetSpec;
use jarfleet_daemon::{DaemonConfig, Stop};
use tokio::signal::unix::{SignalKind, signal};

use crate::context::{self, CliError};
use crate::render;

fn exe() -> Result<PathBuf, CliError> {
    std::env::current_exe()
        .map_err(|e| CliError::failed(format!("cannot find the jarfleet binary: {e}")))
}

/// Resolves on SIGINT or SIGTERM.
async fn terminated() {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
}

/// `jarfleet daemon`: SIGTERM/SIGINT stop the daemon only; the JVMs keep running. With `--spec`
/// the daemon applies it when its store holds no fleet (and reads it itself, with its own
/// environment: a broken spec does not keep a daemon with a stored fleet from starting).
pub async fn daemon(
    state_flag: Option<&Path>,
    spec_arg: Option<&Path>,
    new_store: bool,
) -> Result<(), CliError> {
    let spec = spec_arg.map(|s| context::absolute(&context::spec_path(Some(s))));
    if let Some(path) = &spec
        && !path.is_file()
    {
        return Err(CliError::usage(
            format!("no spec file at {}", path.display()),
            Some("pass the spec file (or its directory) with --spec"),
        ));
    }
    let state = match (&spec, state_flag) {
        (Some(path), None) => context::state_dir(None, Some(&context::load_spec(Some(path))?)),
        _ => context::state_dir(state_flag, None),
    };
    let config = DaemonConfig {
        state_dir: state,
        exe: exe()?,
        spec,
        new_store,
        // `jarfleet upgrade` starts the new binary with the same arguments.
        reexec: Ok(std::env::args_os().skip(1).collect()),
    };
    jarfleet_daemon::run(config, async {
        terminated().await;
        Stop::DaemonOnly
    })
    .await
    .map_err(|e| CliError {
        code: context::EXIT_USAGE,
        message: format!("{e:#}"),
        hint: None,
    })
}

/// Checks the spec against the host (artifacts, JDKs, ports) before a new daemon starts. Ports
/// held by the fleet's own JVMs (shims of this state dir that survived a daemon crash: the new
/// daemon re-adopts them) are not in the way.
async fn preflight(spec: &FleetSpec, state: &Path) -> Result<(), CliError> {
    let checked = spec.clone();
    tokio::task::spawn_blocking(move || jarfleet_host::prepare::prepare(&checked))
        .await
        .map_err(|e| CliError::failed(e.to_string()))?
        .map(|_| ())
        .map_err(|e| CliError::usage(e.message, e.hint.as_deref()))?;
    let root = state.to_path_buf();
    let ours: std::collections::BTreeSet<u16> = tokio::task::spawn_blocking(move || {
        jarfleet_host::survivors::find(&root)
            .alive
            .into_iter()
            .filter_map(|s| s.port)
            .collect()
    })
    .await
    .unwrap_or_default();
    let errors = crate::commands::port_errors(spec, &ours);
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::usage(
            errors.join("\n"),
            Some("free those ports or widen `ports`; nothing was started"),
        ))
    }
}

async fn wait_reachable(
    client: &Client,
    deadline: Duration,
    mut alive: impl FnMut() -> Result<(), CliError>,
) -> Result<VersionInfo, CliError> {
    let until = Instant::now() + deadline;
    loop {
        if let Ok(v) = client.get::<VersionInfo>("/v1/version").await {
            return Ok(v);
        }
        alive()?;
        if Instant::now() > until {
            return Err(CliError::failed(format!(
                "the daemon did not answer on {} in time",
                client.target()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `jarfleet up`: starts a daemon (or joins the one running), which carries on with the fleet
/// its store holds, and applies the spec through the normal path. Nothing the store already
/// held is ever stopped because of this command: a refused apply leaves everything running.
/// Only a daemon this invocation started for an empty store is stopped again on a refusal.
pub async fn up(
    state_flag: Option<&Path>,
    spec_arg: Option<&Path>,
    detach: bool,
    wait: bool,
    watch: bool,
    new_store: bool,
) -> Result<(), CliError> {
    let spec = context::load_spec(spec_arg)?;
    let state = context::state_dir(state_flag, Some(&spec));
    let client = Client::for_state_dir(&state);
    let running = client.get::<VersionInfo>("/v1/version").await.ok();
    if detach {
        let started_here = running.is_none();
        if started_here {
            preflight(&spec, &state).await?;
            start_detached(&state, &client, new_store).await?;
        }
        let held = held_apps(&client).await?;
        if let Err(e) = apply(&client, spec.clone()).await {
            if held.is_empty() {
                if started_here {
                    // A daemon started for this spec alone runs nothing: it goes again.
                    let _ = crate::commands::down(&client).await;
                }
                return Err(e);
            }
            return Err(refused(e, &held));
        }
        if wait {
            wait_ready(&client, &spec).await?;
        }
        return Ok(());
    }
    if let Some(v) = running {
        return Err(CliError::usage(
            format!(
                "a jarfleet daemon (pid {}) already runs for state dir {}",
                v.pid,
                state.display()
            ),
            Some(
                "use `jarfleet apply` to change it, `jarfleet status` to look at it, or `jarfleet down` to stop it",
            ),
        ));
    }
    preflight(&spec, &state).await?;
    let config = DaemonConfig {
        state_dir: state.clone(),
        exe: exe()?,
        spec: None,
        new_store,
        reexec: Err(
            "it runs in the foreground of `jarfleet up`, which stops the fleet on Ctrl-C".into(),
        ),
    };
    let daemon = tokio::spawn(jarfleet_daemon::run(config, async {
        terminated().await;
        // Not `eprintln!`: it panics when stderr cannot be written (a full disk, a closed pipe).
        let _ = writeln!(
            std::io::stderr(),
            "stopping every instance (Ctrl-C again to leave the rest running)…"
        );
        tokio::spawn(async {
            terminated().await;
            // The JVMs stay under their shims; the next `jarfleet up` re-adopts them.
            let _ = writeln!(
                std::io::stderr(),
                "leaving the remaining instances running; `jarfleet up -d` re-adopts them"
            );
            std::process::exit(130);
        });
        Stop::Everything
    }));
    let reach = wait_reachable(&client, Duration::from_secs(30), || {
        if daemon.is_finished() {
            Err(CliError::failed("the daemon stopped while starting"))
        } else {
            Ok(())
        }
    })
    .await;
    if let Err(e) = reach {
        return match daemon.await {
            Ok(Err(err)) => Err(CliError::usage(format!("{err:#}"), None)),
            _ => Err(e),
        };
    }
    let held = held_apps(&client).await.unwrap_or_default();
    let progress = tokio::spawn(show_progress(client.clone(), spec.clone()));
    let spec_path = spec.source.clone();
    if let Err(e) = apply(&client, spec).await {
        if held.is_empty() {
            // Nothing ran before this `up`, and nothing was applied: the daemon goes again.
            let _ = client
                .post::<_, jarfleet_api::Ack>(
                    "/v1/shutdown",
                    &jarfleet_api::ShutdownRequest {
                        stop_instances: true,
                    },
                )
                .await;
            let _ = daemon.await;
            progress.abort();
            return Err(e);
        }
        // The fleet the store held runs on under this daemon; the refusal is reported.
        refused(e, &held).print();
        eprintln!("carrying on with the stored fleet — Ctrl-C stops everything");
    }
    let watcher = watch.then(|| tokio::spawn(watch_spec(client.clone(), spec_path)));
    let result = daemon.await;
    progress.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    match result {
        Ok(Ok(())) => {
            eprintln!("jarfleet stopped");
            Ok(())
        }
        Ok(Err(e)) => Err(CliError::failed(format!("{e:#}"))),
        Err(e) => Err(CliError::failed(format!("daemon task failed: {e}"))),
    }
}

/// The apps the daemon runs before this `up` applies anything (what its store held).
async fn held_apps(client: &Client) -> Result<Vec<String>, CliError> {
    let report: StatusReport = client.get("/v1/status").await?;
    Ok(report.apps.into_iter().map(|a| a.name).collect())
}

/// A refused apply while the daemon runs a stored fleet: what was refused, and that nothing
/// was stopped.
fn refused(e: CliError, held: &[String]) -> CliError {
    let kept = format!(
        "the spec was not applied; nothing was stopped: the daemon carries on with the {} app(s) its store holds ({})",
        held.len(),
        held.join(", ")
    );
    CliError {
        code: e.code,
        message: e.message,
        hint: Some(match e.hint {
            Some(h) => format!("{h}\n  {kept}"),
            None => format!("{kept}; `jarfleet status` shows it, `jarfleet apply` tries again"),
        }),
    }
}

/// `up --watch`: the spec file is checked twice a second; a changed one is loaded and applied
/// (its plan shown), a broken one reported with nothing changed.
async fn watch_spec(client: Client, path: PathBuf) {
    let read = |p: &Path| std::fs::read(p).ok();
    let mut last = read(&path);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = read(&path);
        if now == last {
            continue;
        }
        last = now;
        eprintln!("{} changed: applying", path.display());
        let result = match context::load_spec(Some(&path)) {
            Ok(spec) => apply(&client, spec).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            e.print();
            eprintln!("nothing changed; fix the spec and save it again");
        }
    }
}

async fn apply(client: &Client, spec: FleetSpec) -> Result<(), CliError> {
    let resp: ApplyResponse = client
        .post(
            "/v1/apply",
            &ApplyRequest {
                spec,
                dry_run: false,
            },
        )
        .await?;
    eprint!("{}", render::plan(&resp.plan));
    Ok(())
}

async fn start_detached(state: &Path, client: &Client, new_store: bool) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Private from the start: the daemon keeps every app's environment here.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(state)
        .map_err(|e| CliError::failed(format!("creating {}: {e}", state.display())))?;
    let log_path = jarfleet_host::paths::StateDir::new(state).daemon_log();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        // The daemon's log may name secrets: root's alone.
        .mode(0o600)
        .open(&log_path)
        .map_err(|e| CliError::failed(format!("opening {}: {e}", log_path.display())))?;
    let err = log
        .try_clone()
        .map_err(|e| CliError::failed(e.to_string()))?;
    let mut cmd = std::process::Command::new(exe()?);
    // The daemon writes and rotates daemon.log itself; its stdout and stderr (what comes before
    // its log is set up, a panic) go to the same file and follow it when it rotates.
    cmd.arg("daemon")
        .arg("--state-dir")
        .arg(state)
        .arg("--log")
        .arg(&log_path)
        .args(new_store.then_some("--new-store"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    let mut child = jarfleet_shim::spawn::spawn_detached(cmd)
        .map_err(|e| CliError::failed(format!("starting the daemon: {e}")))?;
    let v = wait_reachable(client, Duration::from_secs(30), || match child.try_wait() {
        Ok(Some(status)) => {
            let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
            let last: Vec<&str> = tail.lines().rev().take(5).collect();
            Err(CliError::failed(format!(
                "the daemon exited ({status}) while starting:\n{}",
                last.into_iter().rev().collect::<Vec<_>>().join("\n")
            )))
        }
        _ => Ok(()),
    })
    .await?;
    // Reap it if it exits later; we do not wait for it.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    eprintln!(
        "daemon started (pid {}), state dir {}",
        v.pid,
        state.display()
    );
    Ok(())
}

fn all_ready(report: &StatusReport) -> bool {
    report
        .apps
        .iter()
        .all(|a| a.ready >= a.desired && !a.rolling)
}

fn summary(report: &StatusReport) -> String {
    let apps = report.apps.len();
    let ready: u32 = report.apps.iter().map(|a| a.ready).sum();
    format!("{ready} instance(s) of {apps} app(s) ready")
}

/// Seconds since `epoch_ms` (a record's timestamp).
pub fn elapsed_secs(epoch_ms: u64) -> f64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(epoch_ms);
    now.saturating_sub(epoch_ms) as f64 / 1000.0
}

async fn wait_ready(client: &Client, spec: &FleetSpec) -> Result<(), CliError> {
    let longest = spec
        .apps
        .values()
        .map(|a| a.health.start_timeout)
        .max()
        .unwrap_or_default();
    let until = Instant::now() + longest + Duration::from_secs(30);
    let spinner = crate::term::Spinner::start("waiting for every instance to be ready");
    loop {
        let report: StatusReport = client.get("/v1/status").await?;
        if all_ready(&report) {
            drop(spinner);
            eprintln!("{}", summary(&report));
            return Ok(());
        }
        spinner.set(&format!("waiting: {}", summary(&report)));
        if Instant::now() > until {
            return Err(CliError::failed(format!(
                "not every instance became ready in time: {}",
                summary(&report)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Live progress for the foreground `up`: every event, then a line once everything is ready.
async fn show_progress(client: Client, _spec: FleetSpec) {
    let events = {
        let client = client.clone();
        tokio::spawn(async move {
            let Ok(mut stream) = client
                .stream::<EventRecord>("/v1/events?lines=0&follow=true")
                .await
            else {
                return;
            };
            while let Ok(Some(e)) = stream.next().await {
                eprintln!("{}", render::event(&e));
            }
        })
    };
    let mut announced = false;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(report) = client.get::<StatusReport>("/v1/status").await else {
            break;
        };
        let ready = all_ready(&report) && !report.apps.is_empty();
        if ready && !announced {
            eprintln!("✔ {} — Ctrl-C stops everything", summary(&report));
        }
        announced = ready;
    }
    events.abort();
}
