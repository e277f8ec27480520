//! The API routes (HTTP/1.1 + JSON), served on the unix socket as they are and on the TCP
//! address behind the token layer (`http`). Handlers only translate: every state change is a
//! command sent to the control loop with a reply channel.
//!
//! `/metrics` (Prometheus text format) is outside the versioned API: scrapers send no protocol
//! header.

use jarfleet_core::events::EventKind;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use jarfleet_api::{
    Ack, ActionRequest, ApplyRequest, DeployRequest, DeploymentRecord, ErrorBody, ErrorKind,
    EventsQuery, HistoryReport, LogsQuery, PROTOCOL, PROTOCOL_HEADER, RollbackRequest,
    ScaleRequest, ShutdownRequest, VersionInfo,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::control::{ApiRequest, Event, Notice};
use crate::http::RemoteApi;
use jarfleet_host::paths::StateDir;

#[derive(Clone)]
pub struct ApiState {
    pub tx: mpsc::Sender<Event>,
    pub events: broadcast::Sender<jarfleet_api::EventRecord>,
    pub dirs: StateDir,
    /// The TCP listener, re-configured by every applied spec's `[daemon]` settings.
    pub remote: Arc<RemoteApi>,
    /// `jarfleet upgrade`: whether and how this daemon replaces itself.
    pub upgrade: Arc<crate::upgrade::Upgrade>,
    /// Cluster mode: this daemon as a node of a cluster, once it joined one.
    pub cluster: Arc<crate::cluster_link::ClusterLink>,
}

pub fn router(state: ApiState) -> Router {
    let api = Router::new()
        .route("/v1/version", get(version))
        .route("/v1/cluster/nodes", get(cluster_nodes))
        .route("/v1/cluster/eligibility", post(cluster_eligibility))
        .route("/v1/cluster/drain", post(cluster_drain))
        .route("/v1/apply", post(apply))
        .route("/v1/status", get(status))
        .route("/v1/action", post(action))
        .route("/v1/scale", post(scale))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/upgrade", post(upgrade))
        .route("/v1/strays/stop", post(stop_strays))
        .route("/v1/logs", get(logs))
        .route("/v1/events", get(events))
        .route("/v1/deploy", post(deploy))
        .route("/v1/rollback", post(rollback))
        .route("/v1/canary", post(canary))
        .route("/v1/history", get(history))
        .route("/v1/stream", get(crate::http::sse::stream))
        .route("/v1/stream/logs", get(crate::http::sse::logs))
        .layer(axum::middleware::from_fn(check_protocol));
    api.route(jarfleet_api::METRICS_PATH, get(metrics))
        .with_state(state)
}

pub(crate) struct ApiError(StatusCode, ErrorBody);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> ApiError {
        let status = match body.kind {
            ErrorKind::Usage => StatusCode::BAD_REQUEST,
            ErrorKind::Protocol => StatusCode::UPGRADE_REQUIRED,
            ErrorKind::Failed => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, body)
    }
}

fn loop_gone() -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorBody {
            kind: ErrorKind::Failed,
            message: "the daemon is shutting down".into(),
            hint: None,
        },
    )
}

/// The versioned API (`/v1/…`) needs the client's protocol version; other routes (`/metrics`,
/// scraped by Prometheus) are not part of that protocol.
async fn check_protocol(req: Request, next: Next) -> Response {
    if !req.uri().path().starts_with("/v1/") {
        return next.run(req).await;
    }
    let theirs = req
        .headers()
        .get(PROTOCOL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    if theirs != Some(PROTOCOL) {
        let message = match theirs {
            Some(v) => format!(
                "this client speaks jarfleet API protocol {v}, but the daemon (version {}) speaks protocol {PROTOCOL}",
                env!("CARGO_PKG_VERSION")
            ),
            None => {
                format!("missing {PROTOCOL_HEADER} header; the daemon speaks protocol {PROTOCOL}")
            }
        };
        let body = ErrorBody {
            kind: ErrorKind::Protocol,
            message,
            hint: Some("use the jarfleet binary of the same version as the running daemon, or restart the daemon with this one".into()),
        };
        return ApiError::from(body).into_response();
    }
    next.run(req).await
}

/// Runs blocking work (jar hashing, file copies, store reads) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError::from(ErrorBody {
            kind: ErrorKind::Failed,
            message: format!("a background task failed: {e}"),
            hint: None,
        })
    })
}

pub(crate) async fn ask<T>(
    tx: &mpsc::Sender<Event>,
    make: impl FnOnce(oneshot::Sender<T>) -> ApiRequest,
) -> Result<T, ApiError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply).into()).await.map_err(|_| loop_gone())?;
    rx.await.map_err(|_| loop_gone())
}

async fn version(State(st): State<ApiState>) -> Json<VersionInfo> {
    Json(VersionInfo {
        protocol: PROTOCOL,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        state_dir: st.dirs.root().display().to_string(),
        build: jarfleet_host::build::own().id.clone().unwrap_or_default(),
    })
}

async fn cluster_nodes(
    State(st): State<ApiState>,
) -> Result<Json<jarfleet_api::ClusterNodes>, ApiError> {
    Ok(Json(st.cluster.nodes().await?))
}

async fn cluster_eligibility(
    State(st): State<ApiState>,
    Json(req): Json<jarfleet_api::EligibilityRequest>,
) -> Result<Json<Ack>, ApiError> {
    st.cluster.set_eligible(&req.node, req.eligible).await?;
    Ok(Json(Ack {
        message: format!(
            "node {} is {}",
            req.node,
            if req.eligible {
                "eligible: new instances may be placed on it"
            } else {
                "ineligible: nothing new is placed on it, what runs there stays"
            }
        ),
    }))
}

/// The longest drain deadline taken (a week): longer is a typo, not a plan.
const MAX_DRAIN_DEADLINE_SECS: u64 = 7 * 24 * 3600;

async fn cluster_drain(
    State(st): State<ApiState>,
    Json(req): Json<jarfleet_api::DrainRequest>,
) -> Result<Json<Ack>, ApiError> {
    let deadline = match (req.drain, req.deadline_secs) {
        (false, _) => None,
        (true, Some(0)) => {
            return Err(ErrorBody {
                kind: ErrorKind::Usage,
                message: "a drain deadline of 0 s would stop every instance before any moved"
                    .into(),
                hint: Some("give the instances time to start elsewhere, e.g. --deadline 5m".into()),
            }
            .into());
        }
        (true, Some(s)) if s > MAX_DRAIN_DEADLINE_SECS => {
            return Err(ErrorBody {
                kind: ErrorKind::Usage,
                message: format!("a drain deadline of {s} s is more than a week"),
                hint: Some("give a deadline of at most 7d".into()),
            }
            .into());
        }
        (true, s) => Some(std::time::Duration::from_secs(
            s.unwrap_or(DEFAULT_DRAIN_DEADLINE_SECS),
        )),
    };
    let at = st.cluster.set_draining(&req.node, deadline).await?;
    let message = match at {
        Some(_) => format!(
            "node {} is draining: its instances move elsewhere, each new one ready before the old one is drained and stopped; whatever still runs there in {} s is stopped",
            req.node,
            deadline.map_or(0, |d| d.as_secs())
        ),
        None => format!(
            "node {} is no longer draining: new instances may be placed on it (what moved away stays where it is)",
            req.node
        ),
    };
    Ok(Json(Ack { message }))
}

/// A drain's deadline when none is given: an hour.
pub const DEFAULT_DRAIN_DEADLINE_SECS: u64 = 3600;

async fn apply(
    State(st): State<ApiState>,
    Json(req): Json<ApplyRequest>,
) -> Result<Response, ApiError> {
    let source: PathBuf = req.spec.source.clone();
    let result = crate::reload::apply(
        &st.tx,
        &st.dirs,
        &st.remote,
        &st.cluster,
        req.spec,
        &source,
        req.dry_run,
    )
    .await?;
    Ok(Json(result).into_response())
}

async fn deploy(
    State(st): State<ApiState>,
    Json(req): Json<DeployRequest>,
) -> Result<Json<DeploymentRecord>, ApiError> {
    let app = req.app.clone();
    let Some(spec) = ask(&st.tx, |reply| ApiRequest::CurrentSpec {
        app: app.clone(),
        reply,
    })
    .await?
    else {
        return Err(ErrorBody {
            kind: ErrorKind::Usage,
            message: format!("no app named {app:?}"),
            hint: Some(
                "deploy to an app of the applied spec (`jarfleet status` lists them)".into(),
            ),
        }
        .into());
    };
    let mut spec = spec;
    if let Some(strategy) = req.strategy {
        if strategy == jarfleet_core::spec::Strategy::Canary && spec.listen.is_none() {
            return Err(ErrorBody {
                kind: ErrorKind::Usage,
                message: format!(
                    "a canary of {app} needs its load balancer: the app has no `listen` address"
                ),
                hint: Some("set `listen` for the app, or deploy with another strategy".into()),
            }
            .into());
        }
        // This release goes out by `strategy`; the app's own setting is kept for later ones.
        spec.deploy.strategy = strategy;
    }
    let dirs = st.dirs.clone();
    let artifact = PathBuf::from(&req.artifact);
    let prepared =
        blocking(move || jarfleet_host::prepare::prepare_release(&spec, &artifact, &dirs))
            .await??;
    let record = ask(&st.tx, |reply| ApiRequest::Deploy {
        app,
        prepared: Box::new(prepared),
        version: req.version,
        reply,
    })
    .await??;
    Ok(Json(record))
}

async fn rollback(
    State(st): State<ApiState>,
    Json(req): Json<RollbackRequest>,
) -> Result<Json<DeploymentRecord>, ApiError> {
    Ok(Json(
        ask(&st.tx, |reply| ApiRequest::Rollback { req, reply }).await??,
    ))
}

async fn canary(
    State(st): State<ApiState>,
    Json(req): Json<jarfleet_api::CanaryRequest>,
) -> Result<Json<DeploymentRecord>, ApiError> {
    // A canary or blue-green across the cluster is decided in its record (every node follows
    // it); the answer is this node's deployment of it.
    if let Some(decided) = st
        .cluster
        .decide_rollout(&req.app, req.promote, req.full)
        .await
    {
        let record = decided?;
        let app = req.app.clone();
        let history = ask(&st.tx, |reply| ApiRequest::History { app, reply }).await??;
        let mine = history
            .deployments
            .into_iter()
            .rev()
            .find(|d| d.to == record.release);
        // A node that runs none of the app's instances has no deployment of it: the answer
        // is the rollout, as one step.
        let said = if req.promote {
            "promoted across the cluster by the operator"
        } else {
            "aborted across the cluster by the operator: every node rolls back"
        };
        return Ok(Json(mine.unwrap_or_else(|| DeploymentRecord {
            id: 0,
            app: req.app.clone(),
            from: record.from.clone(),
            to: record.release.clone(),
            strategy: record.strategy.to_string(),
            outcome: "running".into(),
            reason: record.why.clone(),
            started_at: record.started_ms,
            ended_at: None,
            steps: vec![jarfleet_api::DeployStep {
                at: record.ended_ms.unwrap_or(record.started_ms),
                message: said.into(),
            }],
            canary: None,
        })));
    }
    Ok(Json(
        ask(&st.tx, |reply| ApiRequest::Canary { req, reply }).await??,
    ))
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    app: String,
}

async fn history(
    State(st): State<ApiState>,
    Query(q): Query<HistoryQuery>,
) -> Result<Json<HistoryReport>, ApiError> {
    let app = q.app.clone();
    let mut report = ask(&st.tx, |reply| ApiRequest::History { app: q.app, reply }).await??;
    report.cluster_rollout = st
        .cluster
        .status()
        .await
        .and_then(|c| c.rollouts.into_iter().find(|r| r.app == app));
    Ok(Json(report))
}

async fn status(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let mut report = ask(&st.tx, |reply| ApiRequest::Status { reply }).await?;
    report.cluster = st.cluster.status().await;
    Ok(Json(report).into_response())
}

/// `GET /metrics`: the loop copies its figures; procfs reads and encoding run off it.
async fn metrics(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let Some(snapshot) = ask(&st.tx, |reply| ApiRequest::Metrics { reply }).await? else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            ErrorBody {
                kind: ErrorKind::Usage,
                message: "metrics are switched off ([daemon] metrics = false in the applied spec)"
                    .into(),
                hint: Some(
                    "set `metrics = true` under [daemon] (or remove the line) and `jarfleet apply`"
                        .into(),
                ),
            },
        ));
    };
    let cluster = st.cluster.figures().await;
    let text = blocking(move || crate::metrics::render(crate::metrics::collect(snapshot, cluster)))
        .await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

async fn action(
    State(st): State<ApiState>,
    Json(req): Json<ActionRequest>,
) -> Result<Json<Ack>, ApiError> {
    Ok(Json(
        ask(&st.tx, |reply| ApiRequest::Action { req, reply }).await??,
    ))
}

async fn scale(
    State(st): State<ApiState>,
    Json(req): Json<ScaleRequest>,
) -> Result<Json<Ack>, ApiError> {
    Ok(Json(
        ask(&st.tx, |reply| ApiRequest::Scale { req, reply }).await??,
    ))
}

async fn shutdown(
    State(st): State<ApiState>,
    Json(req): Json<ShutdownRequest>,
) -> Result<Json<Ack>, ApiError> {
    Ok(Json(
        ask(&st.tx, |reply| ApiRequest::Shutdown {
            stop_instances: req.stop_instances,
            reply,
        })
        .await?,
    ))
}

/// `jarfleet upgrade`: the new binary checked, the data plane handed over to it, then the daemon
/// stops and `exec`s it (`crate::upgrade`). Answered before the daemon goes.
async fn upgrade(
    State(st): State<ApiState>,
    Json(req): Json<jarfleet_api::UpgradeRequest>,
) -> Result<Json<Ack>, ApiError> {
    st.upgrade.possible()?;
    let (binary, info) = crate::upgrade::check(&PathBuf::from(&req.binary)).await?;
    let grace = std::time::Duration::from_millis(req.grace_ms);
    let handed = ask(&st.tx, |reply| ApiRequest::HandOver {
        binary: binary.clone(),
        grace,
        reply,
    })
    .await??;
    st.upgrade.decide(binary.clone());
    let tx = st.tx.clone();
    tokio::spawn(async move {
        let _ = ask(&tx, |reply| ApiRequest::Shutdown {
            stop_instances: false,
            reply,
        })
        .await;
    });
    let build = if info.build.is_empty() {
        String::new()
    } else {
        format!(" (build {})", &info.build[..info.build.len().min(12)])
    };
    Ok(Json(Ack {
        message: format!(
            "{}; the daemon now becomes {} {}{build}",
            handed.message,
            binary.display(),
            info.version
        ),
    }))
}

/// `jarfleet down --strays`: the loop hands its strays over and they are stopped here, off the
/// loop (a stop waits for the JVM's exit); each stop is recorded as an event.
async fn stop_strays(
    State(st): State<ApiState>,
    Json(_): Json<jarfleet_api::StopStraysRequest>,
) -> Result<Json<Ack>, ApiError> {
    let strays = ask(&st.tx, |reply| ApiRequest::TakeStrays { reply }).await?;
    let mut stopped = Vec::new();
    let mut left = Vec::new();
    for stray in strays {
        match crate::shim_client::stop_stray(&stray.run_dir).await {
            Ok(Some(shim)) => {
                let _ = std::fs::remove_dir_all(&stray.run_dir);
                let _ = st
                    .tx
                    .send(
                        Notice {
                            kind: EventKind::DaemonStrayStopped,
                            app: Some(stray.app.clone()),
                            message: format!(
                                "stopped JVM {} of stray shim {} (asked by `down --strays`)",
                                shim.pid,
                                stray.run_dir.display()
                            ),
                        }
                        .into(),
                    )
                    .await;
                stopped.push(shim.pid.to_string());
            }
            Ok(None) => {
                let _ = std::fs::remove_dir_all(&stray.run_dir);
            }
            Err(failure) => left.push(format!(
                "{}: {}",
                stray.run_dir.display(),
                failure.explained()
            )),
        }
    }
    if !left.is_empty() {
        return Err(ApiError::from(ErrorBody {
            kind: ErrorKind::Failed,
            message: format!(
                "stopped {} stray JVM(s); could not reach: {}",
                stopped.len(),
                left.join("; ")
            ),
            hint: Some(
                "run `jarfleet down --strays` again once the daemon has descriptors to spare"
                    .into(),
            ),
        }));
    }
    Ok(Json(Ack {
        message: if stopped.is_empty() {
            "no stray JVM was running".to_string()
        } else {
            format!(
                "stopped {} stray JVM(s): pid {}",
                stopped.len(),
                stopped.join(", ")
            )
        },
    }))
}

/// A streaming NDJSON body fed by a channel; the producer stops when the client goes away.
fn ndjson_stream(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .header("content-type", "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line_of<T: serde::Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// The slots whose logs `app` (or `app/slot`) names; a usage error naming what exists otherwise.
pub(crate) async fn log_slots(
    st: &ApiState,
    app: &str,
    slot: Option<u32>,
) -> Result<Vec<u32>, ApiError> {
    let report = ask(&st.tx, |reply| ApiRequest::Status { reply }).await?;
    let Some(found) = report.apps.iter().find(|a| a.name == app) else {
        let names: Vec<String> = report.apps.iter().map(|a| a.name.clone()).collect();
        return Err(ErrorBody {
            kind: ErrorKind::Usage,
            message: format!("no app named {app:?}"),
            hint: Some(format!(
                "apps: {}",
                if names.is_empty() {
                    "none".into()
                } else {
                    names.join(", ")
                }
            )),
        }
        .into());
    };
    match slot {
        Some(s) if found.instances.iter().any(|i| i.slot == s) => Ok(vec![s]),
        Some(s) => Err(ErrorBody {
            kind: ErrorKind::Usage,
            message: format!("{app}/{s} does not exist"),
            hint: None,
        }
        .into()),
        None => Ok(found.instances.iter().map(|i| i.slot).collect()),
    }
}

async fn logs(
    State(st): State<ApiState>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let slots = match log_slots(&st, &q.app, q.slot).await {
        Ok(slots) => slots,
        Err(e) => {
            // An instance on another node of the cluster: its node serves its logs.
            let Some(slot) = q.slot else { return Err(e) };
            match st
                .cluster
                .follow_logs(&q.app, slot, q.lines, q.follow)
                .await?
            {
                Some(remote) => return Ok(ndjson_lines(remote)),
                None => return Err(e),
            }
        }
    };
    let lines = crate::http::logtail::spawn(st.dirs.clone(), q.app, slots, q.lines, q.follow);
    Ok(ndjson_lines(lines))
}

/// Every value `lines` yields, one JSON line each, until it ends or the client goes. (Another
/// node's log lines come as `jarfleet_cluster::logs::LogLine`, written as the same JSON as this
/// node's `jarfleet_api::LogLine`.)
fn ndjson_lines<T: serde::Serialize + Send + 'static>(mut lines: mpsc::Receiver<T>) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        loop {
            let line = tokio::select! {
                line = lines.recv() => line,
                _ = tx.closed() => return,
            };
            let Some(line) = line else { return };
            if tx.send(line_of(&line)).await.is_err() {
                return;
            }
        }
    });
    ndjson_stream(rx)
}

async fn events(
    State(st): State<ApiState>,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    // Subscribe first so nothing falls between the history and the live stream.
    let mut live = st.events.subscribe();
    let history = event_history(&st, q.lines).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let follow = q.follow;
    tokio::spawn(async move {
        let mut last = 0;
        for e in history {
            last = e.id;
            if tx.send(line_of(&e)).await.is_err() {
                return;
            }
        }
        if !follow {
            return;
        }
        loop {
            match live.recv().await {
                Ok(e) if e.id > last => {
                    last = e.id;
                    if tx.send(line_of(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    Ok(ndjson_stream(rx))
}

/// The latest `lines` events from the store (read off the runtime's threads).
pub(crate) async fn event_history(
    st: &ApiState,
    lines: usize,
) -> Result<Vec<jarfleet_api::EventRecord>, ApiError> {
    if lines == 0 {
        // Nothing to read (a follower of new events only): the store is not even opened.
        return Ok(Vec::new());
    }
    let db = st.dirs.db();
    blocking(move || crate::store::read_events(&db, 0, lines))
        .await?
        .map_err(|e| {
            ApiError::from(ErrorBody {
                kind: ErrorKind::Failed,
                message: format!("{e:#}"),
                hint: None,
            })
        })
}
