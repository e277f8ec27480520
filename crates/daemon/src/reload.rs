//! SIGHUP: the daemon reloads the spec file its fleet was last applied from, with its own
//! environment, and applies it like `jarfleet apply` (only what changed moves). A spec that does
//! not load, or fails preparation, changes nothing; either way an event says what happened
//! (`config.reloaded` with the plan, or `config.reload-failed` with every error).

use std::path::{Path, PathBuf};

use jarfleet_api::{ApplyResponse, ErrorBody, StatusReport};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::control::Event;
use crate::paths::StateDir;

/// Runs until the process ends: one reload per SIGHUP.
pub async fn on_sighup(tx: mpsc::Sender<Event>, dirs: StateDir) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reloads only through `jarfleet apply`");
        return;
    };
    while hup.recv().await.is_some() {
        let (kind, message) = match reload(&tx, &dirs).await {
            Ok(message) => ("config.reloaded", message),
            Err(error) => ("config.reload-failed", error),
        };
        if tx
            .send(Event::Emit {
                kind: kind.to_string(),
                app: None,
                message,
            })
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn reload(tx: &mpsc::Sender<Event>, dirs: &StateDir) -> Result<String, String> {
    let (reply, rx) = oneshot::channel::<StatusReport>();
    tx.send(Event::Status { reply })
        .await
        .map_err(|_| "the daemon is stopping".to_string())?;
    let report = rx.await.map_err(|_| "the daemon is stopping".to_string())?;
    let source = report
        .daemon
        .spec
        .ok_or("no spec was applied yet: nothing to reload (use `jarfleet apply SPEC`)")?;
    let path = PathBuf::from(&source);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading {}: {e}; nothing changed", path.display()))?;
    let env = |k: &str| std::env::var(k).ok();
    let mut spec = jarfleet_core::spec::load(&text, &path, &env)
        .map_err(|errors| format!("{errors}\nnothing changed"))?;
    crate::config::render_spec_config(&mut spec, &env)
        .map_err(|errors| format!("{}\nnothing changed", errors.join("\n")))?;
    let resp = apply(tx, dirs, spec, &path, false)
        .await
        .map_err(|e| format!("{}; nothing changed", e.message))?;
    let changes: Vec<String> = resp
        .plan
        .changes
        .iter()
        .map(|c| serde_json::to_string(c).unwrap_or_default())
        .collect();
    Ok(if changes.is_empty() {
        format!("{source} reloaded: no change")
    } else {
        format!("{source} reloaded: {}", changes.join("; "))
    })
}

/// Prepare (off the loop) and apply (or only plan), for `POST /v1/apply` and reloads.
pub async fn apply(
    tx: &mpsc::Sender<Event>,
    dirs: &StateDir,
    spec: jarfleet_core::spec::FleetSpec,
    source: &Path,
    dry_run: bool,
) -> Result<ApplyResponse, ErrorBody> {
    let dirs = dirs.clone();
    let metrics = spec.daemon.metrics;
    let prepared = tokio::task::spawn_blocking(move || {
        let mut prepared = crate::prepare::prepare(&spec)?;
        for p in prepared.values_mut() {
            crate::prepare::fast_start_layout(p, &dirs)?;
        }
        Ok::<_, ErrorBody>(prepared)
    })
    .await
    .map_err(|e| ErrorBody {
        kind: jarfleet_api::ErrorKind::Failed,
        message: format!("a background task failed: {e}"),
        hint: None,
    })??;
    let (reply, rx) = oneshot::channel();
    tx.send(Event::Apply {
        apps: prepared,
        source: source.to_path_buf(),
        dry_run,
        metrics,
        reply,
    })
    .await
    .map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())?
}

fn stopping() -> ErrorBody {
    ErrorBody {
        kind: jarfleet_api::ErrorKind::Failed,
        message: "the daemon is stopping".into(),
        hint: None,
    }
}
