//! The agent: the cluster tasks of one node, started together and stopped together.
//!
//! Besides starting [`sync`](crate::sync), [`session`](crate::session),
//! [`scheduler`](crate::scheduler), [`publish`](crate::publish) and [`peers`](crate::peers),
//! it runs the node's own decision: on every change of the mirror, of the daemon's instances
//! or of the peers out of reach, what this node runs (`jarfleet_core::cluster::assign`) and
//! which instances elsewhere its balancers send to — each sent to the daemon when it changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jarfleet_core::cluster::assign::{Seen, assign};
use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{AdminRecord, InstanceState, RolloutRecord, decode, encode};
use jarfleet_core::events::EventKind;
use jarfleet_etcd::{Client, Compare, CompareOp, Op, Txn};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::apply::Applied;
use crate::mirror::{ClusterApp, Mirror};
use crate::peers::PeerView;
use crate::session::SessionInfo;
use crate::sync::SyncNote;
use crate::{Assignment, Config, LocalView, Note, RemoteInstance, Result};

/// Each etcd request to one endpoint may take this long before the next endpoint is tried.
const ETCD_TIMEOUT: Duration = Duration::from_secs(2);

/// A running agent; dropping it stops every task (the lease then expires after its TTL).
pub struct Agent {
    client: Client,
    keys: Keys,
    config: Arc<Config>,
    mirror: watch::Receiver<Option<Arc<Mirror>>>,
    session: watch::Receiver<Option<SessionInfo>>,
    peers: watch::Receiver<PeerView>,
    reachable: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// `[cluster] tls`, loaded.
    tls: Option<Arc<crate::tls::PeerTls>>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Agent {
    /// Binds the peer endpoint and starts every task. `local` is the daemon's view of its
    /// instances, `stats` its figures of the new sets of canary and blue-green rollouts, `logs`
    /// its instances' logs (served to its peers with TLS); `notes` receives what the daemon must do and record.
    pub async fn start(
        config: Config,
        local: watch::Receiver<LocalView>,
        stats: watch::Receiver<crate::publish::SetStatsView>,
        logs: Option<crate::logs::LogSource>,
        notes: mpsc::UnboundedSender<Note>,
    ) -> Result<Agent> {
        let keys = Keys::new(&config.spec.name);
        let tls = match &config.spec.tls {
            None => None,
            Some(files) => Some(Arc::new(
                crate::tls::PeerTls::load(files, &config.node).map_err(|why| {
                    crate::Error::Refused {
                        message: format!("the node's TLS (`[cluster] tls`): {why}"),
                        hint: Some(
                            "make the files with `jarfleet cluster ca` (once per cluster) and `jarfleet cluster cert NODE` (per node, naming this node and its addresses)"
                                .into(),
                        ),
                    }
                })?,
            )),
        };
        let client = Client::with_tls(
            config.spec.etcd.clone(),
            ETCD_TIMEOUT,
            tls.as_ref().map(|t| t.client.clone()),
        )?;
        let config = Arc::new(config);
        let listener = crate::peers::bind(&config).await?;
        let (mirror_tx, mirror) = watch::channel(None);
        let (session_tx, session) = watch::channel(None);
        let (peers_tx, peers) = watch::channel(PeerView::default());
        let (reachable_tx, reachable) = watch::channel(true);
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let tasks = vec![
            tokio::spawn(crate::sync::run(
                client.clone(),
                keys.clone(),
                mirror_tx,
                sync_tx,
                reachable_tx,
            )),
            tokio::spawn(crate::session::run(
                client.clone(),
                keys.clone(),
                config.clone(),
                session_tx,
                notes.clone(),
            )),
            tokio::spawn(crate::scheduler::run(
                client.clone(),
                keys.clone(),
                config.clone(),
                mirror.clone(),
                session.clone(),
                notes.clone(),
            )),
            tokio::spawn(crate::publish::run(
                client.clone(),
                keys.clone(),
                config.clone(),
                local.clone(),
                session.clone(),
            )),
            tokio::spawn(crate::publish::run_stats(
                client.clone(),
                keys.clone(),
                config.clone(),
                stats,
                session.clone(),
            )),
            tokio::spawn(crate::peers::serve(
                listener,
                config.clone(),
                session.clone(),
                tls.clone(),
                logs,
                notes.clone(),
            )),
            tokio::spawn(crate::peers::probe_peers(
                config.clone(),
                mirror.clone(),
                peers_tx,
                notes.clone(),
                tls.clone(),
            )),
            tokio::spawn(decide(
                config.clone(),
                mirror.clone(),
                local,
                peers.clone(),
                reachable.clone(),
                sync_rx,
                notes,
            )),
        ];
        Ok(Agent {
            client,
            keys,
            tls,
            config,
            mirror,
            session,
            peers,
            reachable,
            tasks,
        })
    }

    /// The node's TLS towards its peers (`[cluster] tls`), if it has one.
    pub fn peer_tls(&self) -> Option<Arc<crate::tls::PeerTls>> {
        self.tls.clone()
    }

    /// Stops every task and waits until they are gone (the peer endpoint's port is free
    /// again). The lease is left to expire, as when the process dies.
    pub async fn stop(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.config.node
    }

    /// The registration in force, if any.
    pub fn session(&self) -> Option<SessionInfo> {
        self.session.borrow().clone()
    }

    /// The registration, as it changes (a daemon keeps it so a restart renews the same lease).
    pub fn session_changes(&self) -> watch::Receiver<Option<SessionInfo>> {
        self.session.clone()
    }

    /// The etcd client the agent uses (for reads such as a node's lease time to live).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The cluster's keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// The cluster as last read (`None` before the first read).
    pub fn mirror(&self) -> Option<Arc<Mirror>> {
        self.mirror.borrow().clone()
    }

    /// Whether the cluster's state was last read from etcd successfully.
    pub fn etcd_reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Peers this node's probes cannot reach.
    pub fn unreachable_peers(&self) -> BTreeSet<String> {
        self.peers.borrow().ejected.clone()
    }

    /// Applies `desired` (every app of the fleet) to the cluster.
    pub async fn apply(
        &self,
        desired: &BTreeMap<String, ClusterApp>,
        dry_run: bool,
    ) -> Result<Applied> {
        crate::apply::apply(&self.client, &self.keys, desired, dry_run).await
    }

    /// Sets what an operator says of `node` (`cluster eligible|ineligible|drain|undrain`): a
    /// compare-and-swap on the record as read, so two operators' changes never lose one
    /// another (a change that lost the race is read and made again).
    pub async fn set_admin(&self, node: &str, edit: impl Fn(&mut AdminRecord)) -> Result<()> {
        let key = self.keys.admin(node);
        for _ in 0..8 {
            let (kv, _) = self.client.get(&key).await?;
            // A record that does not read is replaced whole by the operator's word.
            let mut record: AdminRecord = kv
                .as_ref()
                .and_then(|kv| decode::<AdminRecord>(&kv.key, &kv.value).ok())
                .unwrap_or_default();
            edit(&mut record);
            let unchanged = match &kv {
                Some(kv) => Compare::mod_revision(&key, CompareOp::Equal, kv.mod_revision),
                None => Compare::absent(&key),
            };
            let txn = Txn::new()
                .when([unchanged])
                .and_then([Op::put(&key, &encode(&record))]);
            if self.client.txn(txn).await?.succeeded {
                return Ok(());
            }
        }
        Err(crate::Error::Refused {
            message: format!("node {node}'s record kept changing while this was written"),
            hint: Some("someone else is changing it at the same time: try again".into()),
        })
    }
}

impl Agent {
    /// `jarfleet promote` (`promote`, `full`) or `abort` of `app`'s canary or blue-green across
    /// the cluster: the rollout's record changed by a compare-and-swap on the one read (the
    /// scheduler's fenced writes and the operator's never lose one another). Its new record.
    pub async fn decide_rollout(
        &self,
        app: &str,
        promote: bool,
        full: bool,
    ) -> Result<RolloutRecord> {
        let key = self.keys.rollout(app);
        let refused = |message: String| crate::Error::Refused {
            message,
            hint: Some(format!(
                "`jarfleet status` shows {app}'s rollout across the cluster"
            )),
        };
        for _ in 0..8 {
            let (kv, _) = self.client.get(&key).await?;
            let Some(kv) = kv else {
                return Err(refused(format!(
                    "{app} has no release going out across the cluster"
                )));
            };
            let record = decode::<RolloutRecord>(&kv.key, &kv.value).map_err(refused)?;
            let canary = self
                .mirror()
                .and_then(|m| m.apps.get(app).map(|(a, _)| a.spec.deploy.canary.clone()))
                .unwrap_or_default();
            let now = crate::now_ms();
            let next = if promote {
                jarfleet_core::cluster::rollout::promote(&record, &canary, full, now)
            } else {
                jarfleet_core::cluster::rollout::abort(&record, now)
            }
            .map_err(refused)?;
            let txn = Txn::new()
                .when([Compare::mod_revision(
                    &key,
                    CompareOp::Equal,
                    kv.mod_revision,
                )])
                .and_then([Op::put(&key, &encode(&next))]);
            if self.client.txn(txn).await?.succeeded {
                return Ok(next);
            }
        }
        Err(refused(format!(
            "{app}'s rollout kept changing while this was written: try again"
        )))
    }
}

/// What this node runs and which remote instances its balancers use, sent on every change.
///
/// - Nothing is decided before the daemon has told its instances (a daemon just started):
///   a copy kept for a move must not be taken for one that is not there.
/// - While etcd cannot be read the assignment is held: nothing starts or stops because of a
///   view of the cluster that may be old. The balancers still follow the probes.
/// - A copy of this node's is stopped for its replacement elsewhere only on the word of a
///   peer that answers this node's probes (a replacement on a host that died is still
///   "ready" in etcd until that host's lease expires).
/// - The other nodes' instances go to the daemon before the assignment, so that a copy
///   stopped here leaves a balancer that already has its replacement.
#[allow(clippy::too_many_arguments)]
async fn decide(
    config: Arc<Config>,
    mut mirror: watch::Receiver<Option<Arc<Mirror>>>,
    mut local: watch::Receiver<LocalView>,
    mut peers: watch::Receiver<PeerView>,
    mut reachable: watch::Receiver<bool>,
    mut sync_notes: mpsc::UnboundedReceiver<SyncNote>,
    notes: mpsc::UnboundedSender<Note>,
) {
    if local.changed().await.is_err() {
        return;
    }
    let mut last_assignment: Option<Assignment> = None;
    let mut last_remote: Option<BTreeMap<String, Vec<RemoteInstance>>> = None;
    let mut moving_said: BTreeMap<(String, u32), String> = BTreeMap::new();
    let mut holding_said = false;
    // Copies whose stop was said (until they are gone from the daemon's report).
    let mut stopping_said: std::collections::BTreeSet<(String, u32)> = Default::default();
    loop {
        // When this node's drain deadline passes, if it is being drained with one still ahead.
        let mut drain_due: Option<tokio::time::Instant> = None;
        let m = mirror.borrow_and_update().clone();
        let view = local.borrow_and_update().clone();
        let peer_view = peers.borrow_and_update().clone();
        let etcd_ok = *reachable.borrow_and_update();
        if let Some(m) = m {
            let remote = remote_instances(&config.node, &m, &peer_view.ejected);
            if last_remote.as_ref() != Some(&remote) {
                let _ = notes.send(Note::Remote(remote.clone()));
                last_remote = Some(remote);
            }
            if etcd_ok {
                // Fresh: answered within the last probe round (and the time that round may
                // take).
                let fresh = config.spec.probe_interval + config.spec.probe_timeout;
                let now = tokio::time::Instant::now();
                let trusted =
                    |node: &str| node == config.node || peer_view.answering(node, now, fresh);
                let seen = Seen {
                    me: &config.node,
                    apps: m.apps.keys().cloned().collect(),
                    allocs: m
                        .allocs
                        .iter()
                        .map(|(k, p)| (k.clone(), p.record.clone()))
                        .collect(),
                    statuses: m
                        .statuses
                        .iter()
                        .filter(|((node, _, _), _)| trusted(node))
                        .map(|(k, s)| (k.clone(), s.clone()))
                        .collect(),
                    local: view
                        .iter()
                        .filter(|(_, i)| !i.leaving)
                        .map(|(k, i)| (k.clone(), i.generation))
                        .collect(),
                    drain_overdue: m
                        .admin
                        .get(&config.node)
                        .is_some_and(|a| a.drain_overdue(crate::now_ms())),
                };
                let decided = assign(&seen);
                if let Some(deadline) = drain_deadline_ahead(&m, &config.node, crate::now_ms()) {
                    drain_due = Some(tokio::time::Instant::now() + deadline);
                }
                match &decided.holding {
                    Some(why) if !holding_said => {
                        holding_said = true;
                        let _ = notes.send(Note::Event {
                            kind: EventKind::ClusterHolding,
                            app: None,
                            message: why.clone(),
                        });
                    }
                    None => holding_said = false,
                    _ => {}
                }
                for ((app, slot), to) in &decided.handing_over {
                    if moving_said.get(&(app.clone(), *slot)) != Some(to) {
                        let _ = notes.send(Note::Event {
                            kind: EventKind::ClusterMoving,
                            app: Some(app.clone()),
                            message: format!(
                                "{app}/{slot} is placed on node {to}: this copy serves until that one is ready"
                            ),
                        });
                    }
                }
                moving_said = decided.handing_over.clone();
                for ((app, slot), why) in &decided.stop {
                    if stopping_said.insert((app.clone(), *slot)) {
                        let _ = notes.send(Note::Event {
                            kind: EventKind::ClusterMoving,
                            app: Some(app.clone()),
                            message: format!("{app}/{slot} is drained and stopped here: {why}"),
                        });
                    }
                }
                stopping_said.retain(|k| view.get(k).is_some_and(|i| !i.leaving));
                let assignment = Assignment {
                    apps: m
                        .apps
                        .keys()
                        .filter_map(|n| Some((n.clone(), app_here(&config.node, &m, &view, n)?)))
                        .collect(),
                    run: decided.run,
                    stop: decided.stop,
                    leads: leads(&m),
                    in_place: in_place(&m, &config.node),
                };
                if last_assignment.as_ref() != Some(&assignment) {
                    let _ = notes.send(Note::Assignment(assignment.clone()));
                    last_assignment = Some(assignment);
                }
            }
        }
        let overdue_at = async {
            match drain_due {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = overdue_at => {}
            changed = mirror.changed() => if changed.is_err() { return },
            changed = local.changed() => if changed.is_err() { return },
            changed = peers.changed() => if changed.is_err() { return },
            changed = reachable.changed() => if changed.is_err() { return },
            note = sync_notes.recv() => match note {
                Some(SyncNote::Unreachable(why)) => {
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterUnreachable,
                        app: None,
                        message: format!("cannot read the cluster's state from etcd: {why}; nothing stops or restarts, placements and applies wait"),
                    });
                }
                Some(SyncNote::Reachable) => {
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterReachable,
                        app: None,
                        message: "the cluster's state is read from etcd again".into(),
                    });
                }
                None => return,
            },
        }
    }
}

/// The app as this node runs it: the release a rollout cleared it for, else the one before;
/// and the one before at once when this node's own deployment of the release just rolled back
/// (the scheduler rolls the cluster's rollout back soon after, but this node must not try it
/// again meanwhile).
fn app_here(me: &str, m: &Mirror, local: &LocalView, app: &str) -> Option<ClusterApp> {
    let wanted = m.app_for(me, app)?;
    let refused_here = local
        .iter()
        .any(|((a, _), i)| a == app && i.rolled_back.as_deref() == Some(wanted.release.as_str()));
    if refused_here {
        let before = m.apps.get(app).and_then(|(a, _)| a.before());
        if let Some(before) = before {
            return Some(before);
        }
    }
    Some(wanted)
}

/// The apps whose rolling release under way `node` replaces in place (the scheduler found no
/// room there for their surge).
fn in_place(m: &Mirror, node: &str) -> std::collections::BTreeSet<String> {
    m.rollouts
        .iter()
        .filter(|(app, (r, _))| {
            r.state == jarfleet_core::cluster::records::RolloutState::Rolling
                && r.in_place.iter().any(|n| n == node)
                && m.apps
                    .get(*app)
                    .is_some_and(|(a, _)| a.release == r.release)
        })
        .map(|(app, _)| app.clone())
        .collect()
}

/// The canary and blue-green rollouts of the apps' current releases: each node's deployment
/// of such a release follows its record.
fn leads(m: &Mirror) -> BTreeMap<String, RolloutRecord> {
    m.rollouts
        .iter()
        .filter(|(app, (r, _))| {
            r.leads_sets()
                && m.apps
                    .get(*app)
                    .is_some_and(|(a, _)| a.release == r.release)
        })
        .map(|(app, (r, _))| (app.clone(), r.clone()))
        .collect()
}

/// How long until this node's drain deadline passes, if it is being drained and it is still
/// ahead.
fn drain_deadline_ahead(m: &Mirror, me: &str, now_ms: u64) -> Option<Duration> {
    let admin = m.admin.get(me).filter(|a| a.draining)?;
    let deadline = admin.drain_deadline_ms?;
    (deadline > now_ms).then(|| Duration::from_millis(deadline - now_ms))
}

/// The ready instances of other nodes that are registered and answer this node's probes.
pub fn remote_instances(
    me: &str,
    m: &Mirror,
    unreachable: &BTreeSet<String>,
) -> BTreeMap<String, Vec<RemoteInstance>> {
    let mut out: BTreeMap<String, Vec<RemoteInstance>> =
        m.apps.keys().map(|a| (a.clone(), Vec::new())).collect();
    for ((node, app, slot), s) in &m.statuses {
        if node == me || !m.nodes.contains_key(node) || unreachable.contains(node) {
            continue;
        }
        if s.state != InstanceState::Ready {
            continue;
        }
        let (Some(address), Some(port)) = (&s.address, s.port) else {
            continue;
        };
        if let Some(list) = out.get_mut(app) {
            list.push(RemoteInstance {
                node: node.clone(),
                slot: *slot,
                generation: s.generation,
                address: address.clone(),
                port,
                release: s.release.clone(),
                relay_port: m.nodes.get(node).and_then(|n| n.record.relay_port),
            });
        }
    }
    out
}
