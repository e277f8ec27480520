//! The load balancer's data plane, from the loop's side: one small interface, so a simulated
//! data plane can stand in for the real one. It is spoken to in messages: listener settings and
//! backend snapshots go in, counters and [`BalancerNote`]s come out; no handle on a listener
//! leaves it. The real daemon uses [`OwnProcess`], the proxy (`jarfleet_proxy`) in a process of
//! its own that outlives the daemon.
//!
//! What the loop keeps itself (`lb.rs`): which apps have a listener on which address, the last
//! snapshot pushed, and the retries of a listener that did not bind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_proxy::{ListenerConfig, ListenerStats};
use tokio::sync::mpsc;

use super::Event;

/// What the balancer tells the control loop.
pub enum BalancerNote {
    /// Nothing is in flight on that instance any more (or its drain timeout passed).
    Drained {
        app: String,
        slot: u32,
        generation: u64,
    },
}

/// One backend of a snapshot: an instance's current process, ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendEntry {
    /// The data plane's id of the process: a new process is a new backend.
    pub id: String,
    pub slot: u32,
    pub generation: u64,
    pub addr: SocketAddr,
    /// 0: no new traffic (a canary's split).
    pub weight: u32,
    /// How long the instance has been ready (the slow-start ramp starts then).
    pub ready_for: Duration,
    pub release: String,
    /// Another node's instance, reached through its relay at `addr`.
    pub via: Option<jarfleet_proxy::relay::Via>,
}

/// One drain to watch; its end reaches the loop as [`BalancerNote::Drained`].
#[derive(Debug, Clone)]
pub struct DrainRequest {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    /// The backend's id ([`BackendEntry::id`]).
    pub backend: String,
    pub timeout: Duration,
}

pub trait DataPlane: Send + Sync {
    /// Binds `app`'s listener for `cfg`, replacing the one it had.
    fn bind(&self, app: &str, cfg: &ListenerConfig) -> Result<(), String>;

    /// Changes the settings of `app`'s listener on the address it has (live).
    fn configure(&self, app: &str, cfg: &ListenerConfig);

    /// Stops `app`'s listener.
    fn close(&self, app: &str);

    /// The backends `app`'s listener sends new requests to, from now on (replacing the last
    /// snapshot whole).
    fn update(&self, app: &str, backends: Vec<BackendEntry>);

    /// Requests (tcp: connections) still running on a backend, also after its removal.
    fn in_flight(&self, app: &str, backend: &str) -> u64;

    /// Sends `Drained` on `tx` once nothing runs on the backend any more, or after the timeout.
    fn watch_drain(&self, req: DrainRequest, tx: mpsc::Sender<Event>);

    /// `app`'s listener's counters (`status`, `/metrics`, canary judgement).
    fn stats(&self, app: &str) -> Option<ListenerStats>;

    /// Whether a listener could be bound on `addr` now (the check before an apply).
    fn can_listen(&self, addr: SocketAddr) -> std::io::Result<()>;

    /// Once the loop has bound every app's listener after a start: listeners of apps not in
    /// `apps` (taken back from a data plane that outlived the last daemon) stop.
    fn retain(&self, _apps: &[String]) {}

    /// The daemon stops. `everything` (`jarfleet down`): the listeners go too; else (a restart,
    /// an upgrade) they keep serving without it where they can.
    fn leave(&self, _everything: bool) {}

    /// The data plane's process, for `status` (none when it runs inside the daemon).
    fn process(&self) -> Option<jarfleet_dataplane::client::Health> {
        None
    }

    /// Hands every listener over to a data plane of the binary `exe` (`jarfleet upgrade`); the
    /// old one finishes what it holds for up to `grace`. On an error nothing changed.
    fn hand_over_to(&self, _exe: &std::path::Path, _grace: Duration) -> Result<String, String> {
        Err("this data plane runs inside the daemon and cannot be handed over".into())
    }
}

/// The data plane in a process of its own (`jarfleet data-plane`), which outlives the daemon:
/// [`jarfleet_dataplane::client::Supervisor`] starts it, takes it back after a daemon restart,
/// and replaces it on the same sockets when it dies.
pub struct OwnProcess {
    sup: Arc<jarfleet_dataplane::client::Supervisor>,
}

impl OwnProcess {
    /// Takes back the data plane running in `dir`, if one is (else one starts with the first
    /// listener).
    pub fn attach(
        exe: &std::path::Path,
        dir: &std::path::Path,
        tx: mpsc::Sender<Event>,
    ) -> std::io::Result<OwnProcess> {
        use jarfleet_core::events::EventKind;
        use jarfleet_dataplane::client::Told;
        let tell = Box::new(move |told: Told| {
            let (kind, message) = match told {
                Told::Replaced(m) => (EventKind::LbReplaced, m),
                Told::TakenBack(m) => (EventKind::LbTakenBack, m),
            };
            let note: Event = super::Notice {
                kind,
                app: None,
                message,
            }
            .into();
            if let Err(mpsc::error::TrySendError::Full(note)) = tx.try_send(note) {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    let _ = tx.blocking_send(note);
                });
            }
        });
        Ok(OwnProcess {
            sup: jarfleet_dataplane::client::Supervisor::attach(exe, dir, tell)?,
        })
    }
}

impl DataPlane for OwnProcess {
    fn bind(&self, app: &str, cfg: &ListenerConfig) -> Result<(), String> {
        self.sup
            .bind(app, cfg)
            .map_err(|e| format!("binding {}: {e}", cfg.listen))
    }

    fn configure(&self, app: &str, cfg: &ListenerConfig) {
        if let Err(e) = self.sup.configure(app, cfg) {
            tracing::warn!(app, "the data plane did not take the new settings: {e}");
        }
    }

    fn close(&self, app: &str) {
        if let Err(e) = self.sup.close(app) {
            tracing::warn!(app, "closing the listener: {e}");
        }
    }

    fn update(&self, app: &str, backends: Vec<BackendEntry>) {
        let wire = backends
            .into_iter()
            .map(|e| jarfleet_dataplane::protocol::WireBackend {
                id: e.id,
                addr: e.addr,
                weight: e.weight,
                ready_for_ms: e.ready_for.as_millis() as u64,
                labels: [
                    ("release".to_string(), e.release),
                    ("slot".to_string(), e.slot.to_string()),
                ]
                .into_iter()
                .collect(),
                via: e.via,
            })
            .collect();
        if let Err(e) = self.sup.update(app, wire) {
            tracing::warn!(app, "the data plane did not take the snapshot: {e}");
        }
    }

    fn in_flight(&self, app: &str, backend: &str) -> u64 {
        // Unknown: watched instead, which ends at once if the data plane cannot watch.
        self.sup.in_flight(app, backend).unwrap_or(1)
    }

    fn watch_drain(&self, req: DrainRequest, tx: mpsc::Sender<Event>) {
        let (app, slot, generation) = (req.app.clone(), req.slot, req.generation);
        let done = Box::new(move || {
            let note: Event = BalancerNote::Drained {
                app,
                slot,
                generation,
            }
            .into();
            if let Err(mpsc::error::TrySendError::Full(note)) = tx.try_send(note) {
                // Never block the caller (the loop itself, or the data plane's note reader).
                std::thread::spawn(move || {
                    let _ = tx.blocking_send(note);
                });
            }
        });
        if let Err(e) = self
            .sup
            .watch_drain(&req.app, &req.backend, req.timeout, done)
        {
            tracing::warn!(app = req.app, "watching a drain: {e}");
        }
    }

    fn stats(&self, app: &str) -> Option<ListenerStats> {
        self.sup.stats(app)
    }

    fn can_listen(&self, addr: SocketAddr) -> std::io::Result<()> {
        std::net::TcpListener::bind(addr).map(|_| ())
    }

    fn retain(&self, apps: &[String]) {
        if let Err(e) = self.sup.retain(apps) {
            tracing::warn!("closing listeners of apps that are gone: {e}");
        }
    }

    fn leave(&self, everything: bool) {
        if everything {
            self.sup.stop(std::time::Duration::from_secs(5));
        } else {
            self.sup.detach();
        }
    }

    fn process(&self) -> Option<jarfleet_dataplane::client::Health> {
        Some(self.sup.health())
    }

    fn hand_over_to(&self, exe: &std::path::Path, grace: Duration) -> Result<String, String> {
        match self.sup.hand_over_to(exe, grace) {
            Ok(Some(pid)) => Ok(format!("the load balancer now runs as pid {pid}")),
            Ok(None) => Ok("no load balancer runs".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}
