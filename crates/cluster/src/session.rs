//! Membership: this node's registration (`nodes/<node>`, on its lease; `known/<node>`, kept),
//! renewed across etcd endpoints by a [`LeaseKeeper`].
//!
//! - A restarted daemon renews the lease its predecessor held, if it is still alive: the
//!   cluster sees no change at all (no registration, instance state or leadership is lost).
//! - A lease that is lost (etcd says it is gone, or no renewal got through within its TTL) is
//!   replaced by a new registration with a new boot id; meanwhile the node's instances keep
//!   running, and the scheduler may have placed them elsewhere (the node's assignment then
//!   keeps each copy serving until its replacement is ready).
//! - A name another live node is registered under is refused, saying which node holds it.

use std::sync::Arc;
use std::time::Duration;

use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{NodeRecord, encode};
use jarfleet_core::events::EventKind;
use jarfleet_etcd::{
    Client, Compare, CompareOp, KeeperConfig, KeeperEvent, Lease, LeaseKeeper, Op, Txn,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep};

use crate::{Config, Error, Note, Result};

/// The registration in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub lease: i64,
    pub boot_id: String,
}

/// Registers, keeps the lease alive, registers again when it is lost. `info` is `None` while
/// the node is not registered. Runs until `info`'s receivers are gone.
pub async fn run(
    client: Client,
    keys: Keys,
    config: Arc<Config>,
    info: watch::Sender<Option<SessionInfo>>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let mut previous = config.previous_lease.clone();
    let mut wait = Duration::from_millis(200);
    let mut refused: Option<String> = None;
    while !info.is_closed() {
        let (session, mut keeper) = match register(&client, &keys, &config, previous.take()).await {
            Ok(ok) => ok,
            Err(e) => {
                let message = e.to_string();
                if refused.as_deref() != Some(message.as_str()) {
                    let kind = match e {
                        Error::Refused { .. } => EventKind::ClusterLeaseLost,
                        _ => EventKind::ClusterUnreachable,
                    };
                    let _ = notes.send(Note::Event {
                        kind,
                        app: None,
                        message: format!("cannot register node {}: {message}", config.node),
                    });
                    refused = Some(message);
                }
                sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        wait = Duration::from_millis(200);
        refused = None;
        let _ = notes.send(Note::Event {
            kind: EventKind::ClusterJoined,
            app: None,
            message: format!(
                "node {} registered at {}:{} (lease {:x}, boot {})",
                config.node,
                config.spec.advertise,
                config.spec.peer_port,
                session.lease,
                session.boot_id
            ),
        });
        info.send_replace(Some(session.clone()));
        let mut out_since: Option<Instant> = None;
        while let Some(event) = keeper.recv().await {
            match event {
                KeeperEvent::Renewed { .. } => {
                    if let Some(since) = out_since.take() {
                        let _ = notes.send(Note::Event {
                            kind: EventKind::ClusterReachable,
                            app: None,
                            message: format!(
                                "etcd answers again (lease renewals failed for {:.1} s)",
                                since.elapsed().as_secs_f64()
                            ),
                        });
                    }
                }
                KeeperEvent::Unreachable { since, error, .. } => {
                    out_since.get_or_insert(since);
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterUnreachable,
                        app: None,
                        message: format!(
                            "etcd does not answer this node's lease renewals: {error}; nothing stops or restarts, placements and applies wait"
                        ),
                    });
                }
                KeeperEvent::Lost { cause } => {
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterLeaseLost,
                        app: None,
                        message: format!(
                            "node {}'s lease {:x} is lost ({cause:?}): registering again; its instances keep running",
                            config.node, session.lease
                        ),
                    });
                    break;
                }
            }
        }
        info.send_replace(None);
    }
}

/// One registration: the lease (the previous one if it still lives), then the node's keys.
async fn register(
    client: &Client,
    keys: &Keys,
    config: &Config,
    previous: Option<(i64, String)>,
) -> Result<(SessionInfo, LeaseKeeper)> {
    let interval = config.keepalive_interval();
    let ttl = i64::try_from(config.spec.lease_ttl.as_secs())
        .unwrap_or(6)
        .max(2);
    let mut kept = None;
    if let Some((id, boot)) = previous {
        let sent = Instant::now();
        if let Ok(Some(left)) = client.keep_alive_once(id).await {
            let lease = Lease { id, ttl: left };
            let keeper =
                LeaseKeeper::keep(client.clone(), lease, sent, KeeperConfig::new(interval));
            kept = Some((lease, boot, keeper));
        }
    }
    let (lease, boot_id, keeper) = match kept {
        Some(k) => k,
        None => {
            let (lease, keeper) = LeaseKeeper::start(client.clone(), ttl, interval).await?;
            (lease, new_boot_id(), keeper)
        }
    };
    let record = NodeRecord {
        name: config.node.clone(),
        address: config.spec.advertise.clone(),
        peer_port: config.spec.peer_port,
        relay_port: config.spec.tls.is_some().then_some(config.spec.relay_port),
        labels: config.spec.labels.clone(),
        memory: config.memory,
        version: config.version.clone(),
        build: config.build.clone(),
        boot_id: boot_id.clone(),
        registered_ms: crate::now_ms(),
    };
    let node_key = keys.node(&config.node);
    let (existing, _) = client.get(&node_key).await?;
    if let Some(kv) = existing.filter(|kv| kv.lease != lease.id) {
        let theirs: Option<NodeRecord> = serde_json::from_str(&kv.value).ok();
        let same_host = theirs
            .as_ref()
            .is_some_and(|t| t.address == record.address && t.peer_port == record.peer_port);
        if !same_host {
            let at = theirs
                .map(|t| format!("{}:{}", t.address, t.peer_port))
                .unwrap_or_else(|| "an unknown address".into());
            let _ = keeper.revoke().await;
            return Err(Error::Refused {
                message: format!(
                    "node name {:?} is registered by another live node (at {at})",
                    config.node
                ),
                hint: Some(
                    "give this host its own `[cluster] node` name, or stop the other one".into(),
                ),
            });
        }
        // This host's own earlier registration (a daemon that could not keep its lease):
        // it goes now rather than after its TTL.
        let _ = client.revoke(kv.lease).await;
    }
    let value = encode(&record);
    let txn = Txn::new()
        .when([Compare::create_revision(&node_key, CompareOp::Equal, 0)])
        .and_then([
            Op::put_with_lease(&node_key, &value, lease.id),
            Op::put(&keys.known(&config.node), &value),
        ]);
    let done = client.txn(txn).await?;
    if !done.succeeded {
        // Someone registered the name between our read and our write, or it is our own
        // key on this lease: look once more.
        let (now, _) = client.get(&node_key).await?;
        if now.is_none_or(|kv| kv.lease != lease.id) {
            let _ = keeper.revoke().await;
            return Err(Error::Refused {
                message: format!(
                    "node name {:?} was registered by another node at the same time",
                    config.node
                ),
                hint: Some("give each host its own `[cluster] node` name".into()),
            });
        }
    }
    Ok((
        SessionInfo {
            lease: lease.id,
            boot_id,
        },
        keeper,
    ))
}

/// 16 random hex digits: tells one registration of a node from the next.
fn new_boot_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}
