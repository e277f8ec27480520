//! This node's relay (cluster nodes with `[cluster] tls`): the listener through which the other
//! nodes' balancers reach this node's instances over mutual TLS, so that instances may listen
//! on loopback only. It runs in the load balancer's process like the apps' listeners (it
//! outlives a daemon restart); its snapshot is every ready instance of this node of an app
//! with a `listen` address — the only things a peer may name. The other nodes' instances this
//! node's balancers send to are reached through their nodes' relays
//! ([`Control::remote_backends`]).

use std::net::SocketAddr;
use std::time::Duration;

use jarfleet_core::events::EventKind;
use jarfleet_proxy::relay::RelayTls;
use jarfleet_proxy::{ListenerConfig, Mode};

use super::data_plane::BackendEntry;
use super::*;

/// The relay's name among the load balancer's listeners (no app can have it).
pub const RELAY: &str = "@relay";

/// Longest a relayed connection stays open with nothing moving either way (the balancers
/// that hold it close idle ones much sooner).
const RELAY_IDLE: Duration = Duration::from_secs(15 * 60);

/// An instance's name at its node's relay: its app, slot and port, which every node reads in
/// the cluster's status of it (a new process of the slot listens on another port).
pub(super) fn relay_target(app: &str, slot: u32, port: u16) -> String {
    format!("{app}/{slot}:{port}")
}

/// Where the relay listens and the node's TLS it serves with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelaySetup {
    pub listen: SocketAddr,
    pub tls: RelayTls,
}

/// The relay as the loop knows it.
#[derive(Debug)]
pub(super) struct Relay {
    setup: RelaySetup,
    bound: bool,
    /// The targets of the last snapshot pushed, to push only changes.
    last: Vec<(String, SocketAddr)>,
}

/// The relay's listener settings.
fn relay_config(setup: &RelaySetup) -> ListenerConfig {
    let mut cfg = ListenerConfig::new("relay", setup.listen, Mode::Relay);
    cfg.relay_tls = Some(setup.tls.clone());
    cfg.timeouts.head = Duration::from_secs(10);
    cfg.timeouts.tcp_idle = RELAY_IDLE;
    cfg
}

impl Control {
    /// Cluster mode with TLS begins: the relay binds (or, after a daemon restart, is found
    /// running in the load balancer's process and takes these settings).
    pub(super) fn start_relay(&mut self, setup: RelaySetup) {
        self.relay = Some(Relay {
            setup,
            bound: false,
            last: Vec::new(),
        });
        self.ensure_relay();
        // The other nodes' instances are reached through their relays from now on.
        self.sync_all_lbs();
    }

    /// Whether this node's balancers reach other nodes' instances through their relays.
    pub(super) fn relay_active(&self) -> bool {
        self.relay.is_some()
    }

    /// Binds the relay if it is not; a failure is an event, and it is tried again with the
    /// listeners' backoff.
    pub(super) fn ensure_relay(&mut self) {
        let Some(r) = self.relay.as_ref() else {
            return;
        };
        if r.bound {
            return;
        }
        let cfg = relay_config(&r.setup);
        let listen = r.setup.listen;
        match self.data_plane.bind(RELAY, &cfg) {
            Ok(()) => {
                if let Some(r) = self.relay.as_mut() {
                    r.bound = true;
                    r.last.clear();
                }
                self.lb_unbound_cleared(RELAY);
                self.emit(
                    EventKind::LbListening,
                    None,
                    None,
                    format!(
                        "relay for the other nodes' balancers listening on {listen} (mutual TLS)"
                    ),
                );
                self.sync_relay();
            }
            Err(e) => self.relay_failed(&listen.to_string(), e),
        }
    }

    /// Pushes this node's ready instances to the relay if they changed.
    pub(super) fn sync_relay(&mut self) {
        let Some(r) = self.relay.as_ref().filter(|r| r.bound) else {
            return;
        };
        let now = self.now_ms();
        let mut targets: Vec<BackendEntry> = Vec::new();
        for (app, rt) in &self.apps {
            if rt.rec.spec.listen.is_none() {
                continue;
            }
            for (slot, s) in &rt.slots {
                let i = &s.record.instance;
                let Phase::Ready { since } = i.phase else {
                    continue;
                };
                let Some(port) = i.process.as_ref().map(|p| p.port) else {
                    continue;
                };
                targets.push(BackendEntry {
                    id: relay_target(app, *slot, port),
                    slot: *slot,
                    generation: s.record.generation,
                    addr: SocketAddr::from(([127, 0, 0, 1], port)),
                    weight: 100,
                    ready_for: Duration::from_millis(now.saturating_sub(since)),
                    release: i.release.clone(),
                    via: None,
                });
            }
        }
        let key: Vec<(String, SocketAddr)> =
            targets.iter().map(|b| (b.id.clone(), b.addr)).collect();
        if key == r.last {
            return;
        }
        self.data_plane.update(RELAY, targets);
        if let Some(r) = self.relay.as_mut() {
            r.last = key;
        }
    }
}
