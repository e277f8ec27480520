//! The etcd config center's watches (`[apps.NAME.config] etcd = { endpoints, prefix }`; the read
//! at preparation is `jarfleet_host::config_center`): a watch per app turns every change into a
//! new release, rolled out by the app's strategy like any deploy (never all instances at once).
//! When etcd cannot be reached the last known config keeps running and an event says so; nothing
//! restarts.

use jarfleet_core::events::EventKind;
use std::collections::BTreeMap;
use std::time::Duration;

use jarfleet_core::spec::EtcdSource;
use tokio::sync::mpsc;

use crate::control::{Event, Notice};

/// What an etcd watch tells the control loop (outages and recoveries go as a [`Notice`]).
pub enum EtcdNote {
    /// The values under an app's prefix (first read of a watch, or a change).
    Values {
        app: String,
        values: BTreeMap<String, String>,
    },
}

use jarfleet_host::config_center::TIMEOUT;

/// Watches an app's prefix until the task is aborted: every change, outage and recovery goes
/// to the control loop.
pub async fn watch(app: String, source: EtcdSource, tx: mpsc::Sender<Event>) {
    let emit = |kind: EventKind, message: String| -> Event {
        Notice {
            kind,
            app: Some(app.clone()),
            message,
        }
        .into()
    };
    let client = match jarfleet_etcd::Client::new(source.endpoints.clone(), TIMEOUT) {
        Ok(c) => c,
        Err(e) => {
            let _ = tx
                .send(emit(EventKind::ConfigUnreachable, e.to_string()))
                .await;
            return;
        }
    };
    let mut delay = Duration::from_millis(200);
    let mut announced = false;
    let (snapshot, mut watcher) = loop {
        match jarfleet_etcd::Watcher::start(client.clone(), &source.prefix).await {
            Ok(started) => break started,
            Err(e) => {
                if !announced {
                    let message =
                        format!("etcd unreachable, the last known config keeps running: {e}");
                    if tx
                        .send(emit(EventKind::ConfigUnreachable, message))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    announced = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    if announced
        && tx
            .send(emit(
                EventKind::ConfigReconnected,
                "etcd reachable again".into(),
            ))
            .await
            .is_err()
    {
        return;
    }
    let values = |app: &str, values| -> Event {
        EtcdNote::Values {
            app: app.to_string(),
            values,
        }
        .into()
    };
    if tx.send(values(&app, snapshot.values)).await.is_err() {
        return;
    }
    while let Some(event) = watcher.recv().await {
        let sent = match event {
            jarfleet_etcd::WatchEvent::Changed(s) => tx.send(values(&app, s.values)).await,
            jarfleet_etcd::WatchEvent::Unreachable { error } => {
                let message =
                    format!("etcd unreachable, the last known config keeps running: {error}");
                tx.send(emit(EventKind::ConfigUnreachable, message)).await
            }
            jarfleet_etcd::WatchEvent::Reconnected => {
                tx.send(emit(
                    EventKind::ConfigReconnected,
                    "etcd reachable again".into(),
                ))
                .await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
