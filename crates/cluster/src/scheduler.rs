//! The scheduler: one node of the cluster at a time, elected through the `leader` key on its
//! own lease. Killing the scheduler's host frees the key together with its registration, so
//! the next scheduler needs no grace period.
//!
//! Once elected it reconciles (`jarfleet_core::cluster::schedule`) and takes every app's
//! rollout of a new release a step further (`jarfleet_core::cluster::rollout`) on every
//! change of the mirror and every [`TICK`]. Each write is one transaction that holds only if the leader key
//! still has the create revision this scheduler was elected at (its epoch) and the placement
//! key is still at the revision the decision was made on: a deposed scheduler, or one that
//! decided on stale data, writes nothing. A failed write is never retried blindly: the next
//! pass decides again on the newer mirror.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{LeaderRecord, SetStatsRecord, encode};
use jarfleet_core::cluster::rollout;
use jarfleet_core::cluster::schedule::{self, Write};
use jarfleet_core::events::EventKind;
use jarfleet_etcd::{Client, Compare, CompareOp, Op, Txn};
use tokio::sync::{mpsc, watch};
use tokio::time::sleep;

use crate::mirror::Mirror;
use crate::session::SessionInfo;
use crate::{Config, Note};

/// A pass runs at least this often (placements whose write failed, a node that fits again).
pub const TICK: Duration = Duration::from_secs(2);

/// Campaigns and, while elected, schedules. Runs until the mirror's sender is gone.
pub async fn run(
    client: Client,
    keys: Keys,
    config: Arc<Config>,
    mut mirror: watch::Receiver<Option<Arc<Mirror>>>,
    mut session: watch::Receiver<Option<SessionInfo>>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let mut leading: Option<i64> = None;
    let mut unplaced_said: BTreeMap<(String, u32), String> = BTreeMap::new();
    // When this node's registration in force began (a new boot id: a new registration).
    let mut registered: Option<(String, tokio::time::Instant)> = None;
    // This node's first registration since the daemon started counts as new only if the
    // daemon could not renew its predecessor's lease.
    let kept = config.previous_lease.as_ref().map(|(_, boot)| boot.clone());
    loop {
        let m = mirror.borrow_and_update().clone();
        let s = session.borrow_and_update().clone();
        if let Some(s) = &s
            && registered.as_ref().is_none_or(|(b, _)| *b != s.boot_id)
        {
            let at = if kept.as_deref() == Some(s.boot_id.as_str()) {
                tokio::time::Instant::now() - config.spec.lease_ttl
            } else {
                tokio::time::Instant::now()
            };
            registered = Some((s.boot_id.clone(), at));
        }
        let newly_registered = registered
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < config.spec.lease_ttl);
        if let (Some(m), Some(s)) = (m, s) {
            let mine = m
                .leader
                .as_ref()
                .filter(|l| l.record.node == config.node && l.lease == s.lease)
                .map(|l| l.epoch);
            if mine != leading {
                let message = match (leading, mine) {
                    (_, Some(epoch)) => {
                        format!("node {} is the scheduler (epoch {epoch})", config.node)
                    }
                    (Some(_), None) => format!("node {} is no longer the scheduler", config.node),
                    (None, None) => String::new(),
                };
                if !message.is_empty() {
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterLeader,
                        app: None,
                        message,
                    });
                }
                leading = mine;
            }
            match (leading, &m.leader) {
                (Some(epoch), _) => {
                    schedule_once(
                        &client,
                        &keys,
                        epoch,
                        &m,
                        newly_registered,
                        &notes,
                        &mut unplaced_said,
                    )
                    .await
                }
                (None, None) => campaign(&client, &keys, &config, &s).await,
                (None, Some(_)) => {}
            }
        }
        tokio::select! {
            changed = mirror.changed() => if changed.is_err() { return },
            changed = session.changed() => if changed.is_err() { return },
            _ = sleep(TICK) => {}
        }
    }
}

/// Writes one placement as the scheduler of `epoch`: only if the leader key still has that
/// create revision and the placement key is still at the revision the write was decided on.
/// `Ok(false)`: it did not hold, and nothing was written.
pub async fn write_fenced(
    client: &Client,
    keys: &Keys,
    epoch: i64,
    write: &Write,
) -> jarfleet_etcd::Result<bool> {
    let (key, expect, op) = match write {
        Write::Put {
            app,
            slot,
            record,
            expect,
        } => {
            let key = keys.alloc(app, *slot);
            let op = Op::put(&key, &encode(record));
            (key, *expect, op)
        }
        Write::Delete { app, slot, expect } => {
            let key = keys.alloc(app, *slot);
            (key.clone(), *expect, Op::delete(&key))
        }
    };
    write_key_fenced(client, keys, epoch, &key, expect, op).await
}

/// Writes `op` on `key` as the scheduler of `epoch`, only if `key` is still at `expect`.
async fn write_key_fenced(
    client: &Client,
    keys: &Keys,
    epoch: i64,
    key: &str,
    expect: i64,
    op: Op,
) -> jarfleet_etcd::Result<bool> {
    let txn = Txn::new()
        .when([
            Compare::create_revision(&keys.leader(), CompareOp::Equal, epoch),
            Compare::mod_revision(key, CompareOp::Equal, expect),
        ])
        .and_then([op]);
    Ok(client.txn(txn).await?.succeeded)
}

/// Takes each app's rollout one step further where it can (`jarfleet_core::cluster::rollout`),
/// each write fenced like a placement's.
async fn roll_out(
    client: &Client,
    keys: &Keys,
    epoch: i64,
    m: &Mirror,
    notes: &mpsc::UnboundedSender<Note>,
) {
    let up: std::collections::BTreeSet<String> = m.nodes.keys().cloned().collect();
    let memory_of = |app: &str| m.apps.get(app).map_or(0, |(a, _)| a.spec.instance_memory());
    let room = rollout::free_memory(
        m.nodes
            .values()
            .map(|n| (n.record.name.as_str(), n.record.memory)),
        m.allocs
            .iter()
            .map(|((app, _), p)| (p.record.node.as_str(), memory_of(app))),
    );
    for (app, (record, revision)) in &m.rollouts {
        let Some((current, _)) = m.apps.get(app) else {
            continue;
        };
        if current.release != record.release {
            continue;
        }
        let stats: BTreeMap<&str, &SetStatsRecord> = m
            .stats
            .iter()
            .filter(|((_, a), _)| a == app)
            .map(|((node, _), s)| (node.as_str(), s))
            .collect();
        let seen = rollout::Seen {
            app,
            rollout: record,
            allocs: m
                .allocs
                .iter()
                .filter(|((a, _), _)| a == app)
                .map(|((_, slot), p)| (*slot, &p.record))
                .collect(),
            statuses: &m.statuses,
            up: &up,
            canary: &current.spec.deploy.canary,
            stats: stats.clone(),
            bounds: stats.values().next().map_or(&[][..], |s| &s.bounds),
            instance_memory: current.spec.instance_memory(),
            max_surge: current.spec.deploy.max_surge,
            room: room.clone(),
        };
        let Some(step) = rollout::next(&seen, crate::now_ms()) else {
            continue;
        };
        let key = keys.rollout(app);
        let op = Op::put(&key, &encode(&step.record));
        match write_key_fenced(client, keys, epoch, &key, *revision, op).await {
            Ok(true) => {
                let _ = notes.send(Note::Event {
                    kind: EventKind::ClusterRollout,
                    app: Some(app.clone()),
                    message: step.said,
                });
            }
            // Deposed, or decided on stale data: the next pass decides again.
            Ok(false) => return,
            Err(e) => {
                tracing::debug!("rollout write: {e}");
                return;
            }
        }
    }
}

/// Takes the leader key if nobody holds it (the watch then shows who won).
async fn campaign(client: &Client, keys: &Keys, config: &Config, s: &SessionInfo) {
    let leader = keys.leader();
    let record = LeaderRecord {
        node: config.node.clone(),
        boot_id: s.boot_id.clone(),
        since_ms: crate::now_ms(),
    };
    let txn = Txn::new()
        .when([Compare::create_revision(&leader, CompareOp::Equal, 0)])
        .and_then([Op::put_with_lease(&leader, &encode(&record), s.lease)]);
    if let Err(e) = client.txn(txn).await {
        tracing::debug!("campaign: {e}");
    }
}

/// One reconciliation and its writes, each fenced. A scheduler whose own registration is new
/// (`newly_registered`: it lost its lease, as every node does when etcd is cut off from them
/// all) leaves the slots of nodes not registered where they are for one lease's time: they
/// may be registering again too.
async fn schedule_once(
    client: &Client,
    keys: &Keys,
    epoch: i64,
    m: &Mirror,
    newly_registered: bool,
    notes: &mpsc::UnboundedSender<Note>,
    unplaced_said: &mut BTreeMap<(String, u32), String>,
) {
    let mut view = m.view();
    if newly_registered {
        view.returning = m
            .allocs
            .values()
            .map(|p| p.record.node.clone())
            .filter(|n| !view.nodes.contains_key(n))
            .collect();
    }
    let pass = schedule::reconcile(&view, crate::now_ms());
    for write in pass.writes {
        match write_fenced(client, keys, epoch, &write).await {
            Ok(true) => {
                if let Write::Put {
                    app, slot, record, ..
                } = &write
                {
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterPlaced,
                        app: Some(app.clone()),
                        message: format!(
                            "{app}/{slot} placed on node {} ({})",
                            record.node, record.reason
                        ),
                    });
                }
            }
            // Deposed, or decided on stale data: the next pass decides again.
            Ok(false) => return,
            Err(e) => {
                tracing::debug!("scheduling write: {e}");
                return;
            }
        }
    }
    let now: BTreeMap<(String, u32), String> = pass
        .unplaced
        .into_iter()
        .map(|u| ((u.app, u.slot), u.why))
        .collect();
    for ((app, slot), why) in &now {
        if unplaced_said.get(&(app.clone(), *slot)) != Some(why) {
            let _ = notes.send(Note::Event {
                kind: EventKind::ClusterUnplaced,
                app: Some(app.clone()),
                message: format!("{app}/{slot} cannot be placed: {why}"),
            });
        }
    }
    *unplaced_said = now;
    roll_out(client, keys, epoch, m, notes).await;
}
