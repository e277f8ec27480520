//! SIGHUP: the daemon reloads the spec file its fleet was last applied from, with its own
//! environment, and applies it like `jarfleet apply` (only what changed moves). A spec that does
//! not load, or fails preparation, changes nothing; either way an event says what happened
//! (`config.reloaded` with the plan, or `config.reload-failed` with every error).

use jarfleet_core::events::EventKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jarfleet_api::{ApplyResponse, ErrorBody, StatusReport};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot};

use crate::cluster_link::ClusterLink;
use crate::control::{ApiRequest, Event, Notice};
use crate::http::RemoteApi;
use jarfleet_host::paths::StateDir;

/// Runs until the process ends: one reload per SIGHUP.
pub async fn on_sighup(
    tx: mpsc::Sender<Event>,
    dirs: StateDir,
    remote: Arc<RemoteApi>,
    cluster: Arc<ClusterLink>,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: reloads only through `jarfleet apply`");
        return;
    };
    while hup.recv().await.is_some() {
        let (kind, message) = match reload(&tx, &dirs, &remote, &cluster).await {
            Ok(message) => (EventKind::ConfigReloaded, message),
            Err(error) => (EventKind::ConfigReloadFailed, error),
        };
        if tx
            .send(
                Notice {
                    kind,
                    app: None,
                    message,
                }
                .into(),
            )
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn reload(
    tx: &mpsc::Sender<Event>,
    dirs: &StateDir,
    remote: &RemoteApi,
    cluster: &ClusterLink,
) -> Result<String, String> {
    let (reply, rx) = oneshot::channel::<StatusReport>();
    tx.send(ApiRequest::Status { reply }.into())
        .await
        .map_err(|_| "the daemon is stopping".to_string())?;
    let report = rx.await.map_err(|_| "the daemon is stopping".to_string())?;
    let source = report
        .daemon
        .spec
        .ok_or("no spec was applied yet: nothing to reload (use `jarfleet apply SPEC`)")?;
    let path = PathBuf::from(&source);
    let spec = load(&path).map_err(|e| format!("{e}\nnothing changed"))?;
    let resp = apply(tx, dirs, remote, cluster, spec, &path, false)
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

/// Reads a spec file with the daemon's own environment; every error at once.
fn load(path: &Path) -> Result<jarfleet_core::spec::FleetSpec, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let env = |k: &str| std::env::var(k).ok();
    let mut spec =
        jarfleet_core::spec::load_bytes(&bytes, path, &env).map_err(|e| e.to_string())?;
    jarfleet_host::templates::render_spec_config(&mut spec, &env)
        .map_err(|errors| errors.join("\n"))?;
    Ok(spec)
}

/// `jarfleet daemon --spec PATH`: applies the spec when the store holds no fleet (first start,
/// or after `down`). A stored fleet wins: a restarted daemon re-adopts it as it was (a `deploy`
/// since the spec was applied is not undone); SIGHUP applies the spec. Returns what was done.
pub async fn apply_at_start(
    tx: &mpsc::Sender<Event>,
    dirs: &StateDir,
    remote: &Arc<RemoteApi>,
    cluster: &ClusterLink,
    path: &Path,
) -> anyhow::Result<String> {
    let (reply, rx) = oneshot::channel::<StatusReport>();
    let gone = || anyhow::anyhow!("the control loop stopped while starting");
    tx.send(ApiRequest::Status { reply }.into())
        .await
        .map_err(|_| gone())?;
    let report = rx.await.map_err(|_| gone())?;
    if !report.apps.is_empty() {
        return Ok(format!(
            "the store holds a fleet of {} app(s): carrying on with it; {} is applied on SIGHUP \
             (`systemctl reload`) or with `jarfleet apply`",
            report.apps.len(),
            path.display()
        ));
    }
    let spec = load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let resp = apply(tx, dirs, remote, cluster, spec, path, false)
        .await
        .map_err(|e| {
            let hint = e.hint.map(|h| format!("\n  hint: {h}")).unwrap_or_default();
            anyhow::anyhow!("applying {}: {}{hint}", path.display(), e.message)
        })?;
    Ok(format!(
        "{} applied: {} change(s)",
        path.display(),
        resp.plan.changes.len()
    ))
}

/// Prepare (off the loop) and apply (or only plan), for `POST /v1/apply` and reloads.
///
/// The `[daemon]` settings of the TCP API are staged with the apps (files read, a new address
/// bound) and put in force only when the apps' part applied: an error in either changes nothing.
pub async fn apply(
    tx: &mpsc::Sender<Event>,
    dirs: &StateDir,
    remote: &RemoteApi,
    cluster: &ClusterLink,
    spec: jarfleet_core::spec::FleetSpec,
    source: &Path,
    dry_run: bool,
) -> Result<ApplyResponse, ErrorBody> {
    if let Some(table) = &spec.cluster
        && !dry_run
    {
        cluster
            .join(table.clone(), spec.daemon.clone(), tx, dirs)
            .await?;
    }
    if cluster.joined().await || spec.cluster.is_some() {
        return apply_to_cluster(tx, remote, cluster, spec, source, dry_run).await;
    }
    let dirs = dirs.clone();
    let daemon = spec.daemon.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let mut prepared = jarfleet_host::prepare::prepare(&spec)?;
        for p in prepared.values_mut() {
            jarfleet_host::prepare::fast_start_layout(p, &dirs)?;
        }
        Ok::<_, ErrorBody>(prepared)
    })
    .await
    .map_err(|e| ErrorBody {
        kind: jarfleet_api::ErrorKind::Failed,
        message: format!("a background task failed: {e}"),
        hint: None,
    })??;
    let change = remote.begin().await;
    let staged = change.stage(&daemon).await?;
    let (reply, rx) = oneshot::channel();
    tx.send(
        ApiRequest::Apply {
            apps: prepared,
            daemon: Box::new(daemon),
            source: source.to_path_buf(),
            dry_run,
            reply,
        }
        .into(),
    )
    .await
    .map_err(|_| stopping())?;
    let resp = rx.await.map_err(|_| stopping())??;
    if !dry_run && let Some(news) = change.commit(staged).await {
        let _ = tx.send(crate::control::Notice::from(news).into()).await;
    }
    Ok(resp)
}

/// A node of a cluster: the spec's apps go to the cluster (a node spec that names none
/// changes no app), its `[daemon]` settings to this daemon, as on one host.
async fn apply_to_cluster(
    tx: &mpsc::Sender<Event>,
    remote: &RemoteApi,
    cluster: &ClusterLink,
    spec: jarfleet_core::spec::FleetSpec,
    source: &Path,
    dry_run: bool,
) -> Result<ApplyResponse, ErrorBody> {
    let daemon = spec.daemon.clone();
    // Only a node's own spec (with `[cluster]`) speaks for this daemon's `[daemon]` settings:
    // an apps file applied to the cluster from here leaves them alone.
    let node_spec = spec.cluster.is_some();
    let node_spec_only = node_spec && spec.apps.is_empty();
    let change = remote.begin().await;
    let staged = if node_spec {
        Some(change.stage(&daemon).await?)
    } else {
        None
    };
    let resp = if node_spec_only || !cluster.joined().await {
        ApplyResponse {
            plan: Default::default(),
            applied: !dry_run,
        }
    } else {
        cluster.apply(spec, dry_run).await?
    };
    let Some(staged) = staged.filter(|_| !dry_run) else {
        return Ok(resp);
    };
    let (reply, rx) = oneshot::channel();
    tx.send(
        ApiRequest::DaemonSettings {
            daemon: Box::new(daemon),
            source: source.to_path_buf(),
            reply,
        }
        .into(),
    )
    .await
    .map_err(|_| stopping())?;
    rx.await.map_err(|_| stopping())??;
    if let Some(news) = change.commit(staged).await {
        let _ = tx.send(crate::control::Notice::from(news).into()).await;
    }
    Ok(resp)
}

fn stopping() -> ErrorBody {
    ErrorBody {
        kind: jarfleet_api::ErrorKind::Failed,
        message: "the daemon is stopping".into(),
        hint: None,
    }
}
