//! Server-sent events for the dashboard (and anything else that speaks `text/event-stream`):
//!
//! * `GET /v1/stream?events=N`: the last N events (`event: event`), then every new one as it
//!   happens, and a `event: status` snapshot (the `/v1/status` body) at once, every second, and
//!   right after each event, so a state change shows without waiting for the next tick.
//! * `GET /v1/stream/logs?app=A&slot=S&lines=N`: the last N lines of each log of A (or A/S),
//!   then every new line (`event: log`, a `LogLine`).
//!
//! `/v1/events` (NDJSON) stays the CLI's stream.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};
use tokio::time::MissedTickBehavior;

use crate::control::ApiRequest;
use crate::http::routes::{ApiError, ApiState, ask};

/// How often a status snapshot is sent when nothing happens.
const STATUS_EVERY: Duration = Duration::from_secs(1);

#[derive(serde::Deserialize)]
pub struct StreamQuery {
    /// Past events sent first.
    #[serde(default = "default_events")]
    events: usize,
}

fn default_events() -> usize {
    50
}

#[derive(serde::Deserialize)]
pub struct LogStreamQuery {
    app: String,
    slot: Option<u32>,
    #[serde(default = "default_lines")]
    lines: usize,
}

fn default_lines() -> usize {
    100
}

fn sse_response(rx: mpsc::Receiver<SseEvent>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn json_event<T: serde::Serialize>(name: &str, value: &T) -> Option<SseEvent> {
    SseEvent::default().event(name).json_data(value).ok()
}

/// `GET /v1/stream`.
pub(crate) async fn stream(
    State(st): State<ApiState>,
    Query(q): Query<StreamQuery>,
) -> Result<Response, ApiError> {
    // Subscribe first so nothing falls between the history and the live events.
    let mut live = st.events.subscribe();
    let history = crate::http::routes::event_history(&st, q.events).await?;
    let (tx, rx) = mpsc::channel::<SseEvent>(64);
    tokio::spawn(async move {
        let mut last = 0;
        for e in history {
            last = e.id;
            let Some(ev) = json_event("event", &e) else {
                continue;
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        let mut tick = tokio::time::interval(STATUS_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let Ok(mut report) = ask(&st.tx, |reply| ApiRequest::Status { reply }).await else {
                        return;
                    };
                    report.cluster = st.cluster.status().await;
                    let Some(ev) = json_event("status", &report) else { continue };
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
                got = live.recv() => match got {
                    Ok(e) if e.id > last => {
                        last = e.id;
                        let Some(ev) = json_event("event", &e) else { continue };
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                        tick.reset_immediately();
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = tx.closed() => return,
            }
        }
    });
    Ok(sse_response(rx))
}

/// `GET /v1/stream/logs`.
pub(crate) async fn logs(
    State(st): State<ApiState>,
    Query(q): Query<LogStreamQuery>,
) -> Result<Response, ApiError> {
    let slots = crate::http::routes::log_slots(&st, &q.app, q.slot).await?;
    let mut lines = super::logtail::spawn(st.dirs.clone(), q.app, slots, q.lines, true);
    let (tx, rx) = mpsc::channel::<SseEvent>(256);
    tokio::spawn(async move {
        loop {
            // Watch for the client leaving too: a quiet log would otherwise keep its follower.
            let line = tokio::select! {
                line = lines.recv() => line,
                _ = tx.closed() => return,
            };
            let Some(line) = line else { return };
            let Some(ev) = json_event("log", &line) else {
                continue;
            };
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    });
    Ok(sse_response(rx))
}
