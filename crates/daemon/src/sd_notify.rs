//! systemd's service notifications (`sd_notify(3)`), for a daemon run by a `Type=notify` unit:
//! `READY=1` once the API answers and the spec or the stored fleet is loaded, `STATUS=` lines,
//! `WATCHDOG=1` pings while the control loop answers (a wedged loop stops them, and systemd
//! restarts the daemon), and `STOPPING=1`. Nothing is sent unless `NOTIFY_SOCKET` is set.

use jarfleet_core::events::EventKind;
use std::time::Duration;

use jarfleet_api::{EventRecord, StatusReport};
use sd_notify::NotifyState;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::control::{ApiRequest, Event};

/// The daemon's own variables from systemd, never passed on to shims or JVMs (`jarfleet-shim`
/// removes them from every child it spawns).
pub use jarfleet_shim::spawn::PRIVATE_VARS;

/// `STATUS=` is refreshed this often when there is no watchdog to ping.
const STATUS_EVERY: Duration = Duration::from_secs(10);

/// Whether a service manager listens.
pub fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when the watchdog is meant for this
/// process (`WATCHDOG_PID` unset or ours). `None`: no watchdog.
pub fn ping_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|u| *u > 0)?;
    match pid {
        Some(p) if p.trim().parse::<u32>().ok() != Some(me) => None,
        _ => Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1))),
    }
}

/// The `STATUS=` line for a fleet, e.g. `2 apps, 5/6 instances ready, deploying orders`.
pub fn status_line(report: &StatusReport) -> String {
    let ready: u32 = report.apps.iter().map(|a| a.ready).sum();
    let desired: u32 = report.apps.iter().map(|a| a.desired).sum();
    let mut line = format!(
        "{} app{}, {ready}/{desired} instance{} ready",
        report.apps.len(),
        if report.apps.len() == 1 { "" } else { "s" },
        if desired == 1 { "" } else { "s" },
    );
    let rolling: Vec<&str> = report
        .apps
        .iter()
        .filter(|a| a.rolling)
        .map(|a| a.name.as_str())
        .collect();
    if !rolling.is_empty() {
        line.push_str(&format!(", deploying {}", rolling.join(" ")));
    }
    line
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// `READY=1` with a first status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// `STOPPING=1`; sent when a stop begins and again when the daemon ends (systemd ignores the
/// repeat).
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Asks the control loop for its status; `None` when it does not answer within `timeout`
/// (wedged, or gone). Only an answer earns a watchdog ping.
pub async fn heartbeat(tx: &mpsc::Sender<Event>, timeout: Duration) -> Option<StatusReport> {
    let (reply, rx) = oneshot::channel();
    let asked = async {
        tx.send(ApiRequest::Status { reply }.into()).await.ok()?;
        rx.await.ok()
    };
    tokio::time::timeout(timeout, asked).await.ok().flatten()
}

/// Runs for the daemon's life once `READY=1` is sent: `STATUS=` and `WATCHDOG=1` from the control
/// loop's answers, `STOPPING=1` when a stop begins.
pub async fn supervise(tx: mpsc::Sender<Event>, mut events: broadcast::Receiver<EventRecord>) {
    let env = |k: &str| std::env::var(k).ok();
    let watchdog = ping_interval(
        env("WATCHDOG_USEC").as_deref(),
        env("WATCHDOG_PID").as_deref(),
        std::process::id(),
    );
    let period = watchdog.unwrap_or(STATUS_EVERY);
    if let Some(p) = watchdog {
        tracing::info!("systemd watchdog: pinging every {p:?} while the control loop answers");
    }
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => match heartbeat(&tx, period).await {
                Some(report) => {
                    let line = status_line(&report);
                    if watchdog.is_some() {
                        send(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                    } else {
                        send(&[NotifyState::Status(&line)]);
                    }
                }
                None => tracing::warn!(
                    "the control loop did not answer within {period:?}: no watchdog ping"
                ),
            },
            ev = events.recv() => match ev {
                Ok(e) if e.kind == EventKind::DaemonStopping.as_str() => stopping(&e.message),
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jarfleet_api::{AppStatus, DaemonStatus};

    #[test]
    fn ping_interval_is_half_the_watchdog_and_only_for_us() {
        let ms = Duration::from_millis;
        let cases: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (None, None, None),
            (Some("30000000"), None, Some(ms(15_000))),
            (Some("400000"), Some("42"), Some(ms(200))),
            (Some("400000"), Some(" 42\n"), Some(ms(200))),
            (Some("400000"), Some("43"), None),
            (Some("400000"), Some("x"), None),
            (Some("0"), None, None),
            (Some("-5"), None, None),
            (Some("soon"), None, None),
            (Some("1"), None, Some(ms(1))),
        ];
        for (usec, pid, want) in cases {
            assert_eq!(ping_interval(*usec, *pid, 42), *want, "{usec:?} {pid:?}");
        }
    }

    fn report(apps: &[(&str, u32, u32, bool)]) -> StatusReport {
        StatusReport {
            daemon: DaemonStatus {
                pid: 1,
                version: "0".into(),
                build: String::new(),
                data_plane: None,
                state_dir: "/s".into(),
                uptime_secs: 0,
                spec: None,
                open_files: None,
                store: None,
                warnings: Vec::new(),
            },
            strays: vec![],
            cluster: None,
            apps: apps
                .iter()
                .map(|(name, desired, ready, rolling)| AppStatus {
                    name: name.to_string(),
                    release: "r".into(),
                    desired: *desired,
                    ready: *ready,
                    rolling: *rolling,
                    deployment: None,
                    listen: None,
                    listener: None,
                    health: None,
                    balancer: None,
                    java: None,
                    canary: None,
                    instances: vec![],
                })
                .collect(),
        }
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_line(&report(&[])), "0 apps, 0/0 instances ready");
        assert_eq!(
            status_line(&report(&[("a", 1, 1, false)])),
            "1 app, 1/1 instance ready"
        );
        assert_eq!(
            status_line(&report(&[
                ("a", 2, 1, true),
                ("b", 3, 3, false),
                ("c", 1, 0, true)
            ])),
            "3 apps, 4/6 instances ready, deploying a c"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wedged_loop_earns_no_heartbeat() {
        // The receiver is alive but nobody reads it: the loop is stuck.
        let (tx, _stuck) = mpsc::channel::<Event>(8);
        assert!(heartbeat(&tx, Duration::from_secs(1)).await.is_none());
        // A gone loop neither.
        let (tx, rx) = mpsc::channel::<Event>(8);
        drop(rx);
        assert!(heartbeat(&tx, Duration::from_secs(1)).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answering_loop_earns_a_heartbeat() {
        let (tx, mut rx) = mpsc::channel::<Event>(8);
        let answering = tokio::spawn(async move {
            while let Some(ev) = rx.recv().await {
                if let Some(ApiRequest::Status { reply }) = ev.into_api() {
                    let _ = reply.send(report(&[("a", 2, 2, false)]));
                }
            }
        });
        let got = heartbeat(&tx, Duration::from_secs(1)).await;
        assert_eq!(
            got.map(|r| status_line(&r)).as_deref(),
            Some("1 app, 2/2 instances ready")
        );
        answering.abort();
    }
}
