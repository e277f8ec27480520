//! Cluster mode from the daemon's side, outside the loop: joining (a node spec's `[cluster]`,
//! applied by `up`, or the one kept from before a restart), the node's agent
//! (`jarfleet_cluster`), and what goes between them:
//!
//! - the agent's assignments are prepared here (artifact, JDK: off the loop, as an apply's
//!   are) and handed to the loop as [`ClusterNote::Assign`]; an app that does not prepare on
//!   this node keeps the release it ran, and the failure is an event;
//! - the other nodes' instances go to the loop for its balancers ([`ClusterNote::Remote`]);
//! - the agent's events become the loop's events;
//! - `apply` on a node of a cluster prepares the apps here (every error as on one host) and
//!   writes them to the cluster in one compare-and-swap.
//!
//! What a restarted daemon needs to rejoin (the cluster table, the `[daemon]` settings, the
//! lease it held) is kept in `STATE/cluster.json` (0600).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_api::{ApplyResponse, ErrorBody, ErrorKind};
use jarfleet_cluster::{Agent, ClusterApp, Config, LocalView, Note, RemoteInstance};
use jarfleet_core::spec::{ClusterSpec, DaemonSpec, FleetSpec};
use jarfleet_host::paths::StateDir;
use jarfleet_host::prepare::PreparedApp;
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;

use crate::control::{Event, Notice};

/// What the cluster side tells the loop.
pub enum ClusterNote {
    /// Cluster mode begins: the loop tells the agent its instances through `local`.
    Attach {
        local: watch::Sender<LocalView>,
        /// Its figures of the new sets of canary and blue-green rollouts, for the agent.
        stats: watch::Sender<jarfleet_cluster::publish::SetStatsView>,
        /// With `[cluster] tls`: this node's relay.
        relay: Option<crate::control::relay::RelaySetup>,
    },
    /// What this node runs: every app of the cluster (prepared here) and, per app, the slots
    /// it runs with their placement's generation.
    Assign {
        apps: BTreeMap<String, PreparedApp>,
        run: BTreeMap<String, BTreeMap<u32, u64>>,
        /// The canary and blue-green rollouts this node's deployments follow, per app.
        leads: BTreeMap<String, jarfleet_core::cluster::records::RolloutRecord>,
        /// The apps whose rolling release this node replaces in place (no room for a surge).
        in_place: std::collections::BTreeSet<String>,
    },
    /// The ready instances on other nodes, per app.
    Remote(BTreeMap<String, Vec<RemoteInstance>>),
    /// A stopping instance may now be drained here: the other nodes' balancers have let go.
    DrainDue {
        app: String,
        slot: u32,
        generation: u64,
        timeout: Duration,
    },
}

/// Where this node's relay listens: `advertise`, on `relay_port`.
async fn relay_address(spec: &ClusterSpec) -> Result<std::net::SocketAddr, ErrorBody> {
    let host = spec.advertise.trim_matches(['[', ']']);
    tokio::net::lookup_host((host, spec.relay_port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| {
            refused(
                format!(
                    "`[cluster] advertise` ({}) names no address for the relay",
                    spec.advertise
                ),
                Some("advertise an IP address of this host (or a name that resolves to one)"),
            )
        })
}

/// This node's instances' logs, served to its peers (over TLS only).
fn log_source(dirs: &StateDir) -> jarfleet_cluster::logs::LogSource {
    let dirs = dirs.clone();
    Arc::new(move |ask: jarfleet_cluster::logs::LogAsk| {
        let mut lines = crate::http::logtail::spawn(
            dirs.clone(),
            ask.app,
            vec![ask.slot],
            ask.lines,
            ask.follow,
        );
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            while let Some(l) = lines.recv().await {
                let line = jarfleet_cluster::logs::LogLine {
                    app: l.app,
                    slot: l.slot,
                    stream: l.stream,
                    line: l.line,
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        rx
    })
}

/// What `STATE/cluster.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Saved {
    cluster: ClusterSpec,
    daemon: DaemonSpec,
    #[serde(default)]
    lease: Option<(i64, String)>,
}

/// The daemon's cluster membership: none until a spec with `[cluster]` is applied (or one was
/// kept from before a restart).
#[derive(Default)]
pub struct ClusterLink {
    joined: Mutex<Option<Joined>>,
}

struct Joined {
    agent: Arc<Agent>,
    spec: ClusterSpec,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Joined {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn refused(message: impl Into<String>, hint: Option<&str>) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Usage,
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

fn failed(message: impl Into<String>) -> ErrorBody {
    ErrorBody {
        kind: ErrorKind::Failed,
        message: message.into(),
        hint: None,
    }
}

impl ClusterLink {
    pub fn new() -> Arc<ClusterLink> {
        Arc::new(ClusterLink::default())
    }

    /// Whether this daemon is a node of a cluster.
    pub async fn joined(&self) -> bool {
        self.joined.lock().await.is_some()
    }

    /// The agent, once joined.
    pub async fn agent(&self) -> Option<Arc<Agent>> {
        self.joined.lock().await.as_ref().map(|j| j.agent.clone())
    }

    /// `jarfleet promote` / `abort` of `app`'s canary or blue-green across the cluster: the
    /// rollout's record is changed (every node follows it). `None`: not a node of a cluster, or
    /// no such rollout of the app's release under way (the node's own deployment is decided
    /// here, as on one host).
    pub async fn decide_rollout(
        &self,
        app: &str,
        promote: bool,
        full: bool,
    ) -> Option<Result<jarfleet_core::cluster::records::RolloutRecord, ErrorBody>> {
        let agent = self.agent().await?;
        let m = agent.mirror()?;
        let (current, _) = m.apps.get(app)?;
        let (r, _) = m.rollouts.get(app)?;
        let leading = r.release == current.release
            && r.leads_sets()
            && r.state == jarfleet_core::cluster::records::RolloutState::Rolling;
        if !leading {
            return None;
        }
        Some(
            agent
                .decide_rollout(app, promote, full)
                .await
                .map_err(|e| match e {
                    jarfleet_cluster::Error::Refused { message, hint } => {
                        refused(message, hint.as_deref())
                    }
                    other => failed(format!("{app}'s rollout across the cluster: {other}")),
                }),
        )
    }

    /// The logs of `app/slot` when it runs on another node: that node's peer endpoint is asked
    /// for them over TLS. `Ok(None)`: not a node of a cluster, or no other node runs it.
    pub async fn follow_logs(
        &self,
        app: &str,
        slot: u32,
        lines: usize,
        follow: bool,
    ) -> Result<Option<mpsc::Receiver<jarfleet_cluster::logs::LogLine>>, ErrorBody> {
        let Some(agent) = self.agent().await else {
            return Ok(None);
        };
        let Some(m) = agent.mirror() else {
            return Ok(None);
        };
        let me = agent.node();
        // Where it is placed, else any other node that reports a copy of it.
        let placed = m
            .allocs
            .get(&(app.to_string(), slot))
            .map(|p| p.record.node.clone());
        let node = placed.filter(|n| n != me).or_else(|| {
            m.statuses
                .keys()
                .find(|(n, a, s)| n != me && a == app && *s == slot)
                .map(|(n, _, _)| n.clone())
        });
        let Some(node) = node else {
            return Ok(None);
        };
        let Some(tls) = agent.peer_tls() else {
            return Err(refused(
                format!(
                    "{app}/{slot} runs on node {node}: following its logs from this node needs `[cluster] tls` (the nodes then prove who they are to each other)"
                ),
                Some(&format!(
                    "run `jarfleet logs {app}/{slot}` on {node}, or set up `[cluster] tls` (docs/cluster.md)"
                )),
            ));
        };
        let Some(record) = m.nodes.get(&node).map(|r| r.record.clone()) else {
            return Err(failed(format!(
                "{app}/{slot} runs on node {node}, which is down: its logs cannot be read from here"
            )));
        };
        let ask = jarfleet_cluster::logs::LogAsk {
            app: app.to_string(),
            slot,
            lines: lines.min(jarfleet_cluster::logs::MAX_LINES),
            follow,
        };
        jarfleet_cluster::logs::follow(
            &record.address,
            record.peer_port,
            &node,
            &tls.client,
            &ask,
            Duration::from_secs(5),
        )
        .await
        .map(Some)
        .map_err(|why| failed(format!("the logs of {app}/{slot} on node {node}: {why}")))
    }

    /// Rejoins the cluster kept in `STATE/cluster.json`, if any (a daemon start).
    pub async fn rejoin(&self, tx: &mpsc::Sender<Event>, dirs: &StateDir) -> anyhow::Result<()> {
        let path = saved_path(dirs);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => anyhow::bail!("reading {}: {e}", path.display()),
        };
        let saved: Saved = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{} is not readable: {e}", path.display()))?;
        self.join(saved.cluster, saved.daemon, tx, dirs)
            .await
            .map_err(|e| anyhow::anyhow!("rejoining the cluster: {}", e.message))
    }

    /// Joins the cluster of `spec` (nothing to do if this daemon already is a node of it).
    pub async fn join(
        &self,
        spec: ClusterSpec,
        daemon: DaemonSpec,
        tx: &mpsc::Sender<Event>,
        dirs: &StateDir,
    ) -> Result<(), ErrorBody> {
        let mut joined = self.joined.lock().await;
        if let Some(j) = joined.as_ref() {
            if j.spec == spec {
                return Ok(());
            }
            return Err(refused(
                format!(
                    "this daemon is node {} of cluster {:?}; its [cluster] table cannot change while it runs",
                    j.agent.node(),
                    j.spec.name
                ),
                Some(
                    "stop the daemon (`jarfleet down --keep` leaves the JVMs running), then `up -d` with the new table",
                ),
            ));
        }
        let node = match &spec.node {
            Some(n) => n.clone(),
            None => host_name()?,
        };
        let previous = read_saved(dirs)
            .filter(|s| {
                s.cluster.name == spec.name && s.cluster.node.as_ref().unwrap_or(&node) == &node
            })
            .and_then(|s| s.lease);
        let config = Config {
            spec: spec.clone(),
            node: node.clone(),
            memory: spec.memory.unwrap_or_else(offered_memory),
            version: env!("CARGO_PKG_VERSION").to_string(),
            build: jarfleet_host::build::own().id.clone(),
            previous_lease: previous.clone(),
            artifacts: Some(dirs.download_cache()),
        };
        let (local_tx, local_rx) = watch::channel(LocalView::new());
        let (stats_tx, stats_rx) = watch::channel(BTreeMap::new());
        let (notes_tx, notes_rx) = mpsc::unbounded_channel();
        let agent = Agent::start(config, local_rx, stats_rx, Some(log_source(dirs)), notes_tx)
            .await
            .map_err(|e| match e {
                jarfleet_cluster::Error::Refused { message, hint } => {
                    refused(message, hint.as_deref())
                }
                other => failed(format!("joining cluster {:?}: {other}", spec.name)),
            })?;
        let agent = Arc::new(agent);
        let relay = match agent.peer_tls() {
            Some(tls) => Some(crate::control::relay::RelaySetup {
                listen: relay_address(&spec).await?,
                tls: tls.relay.clone(),
            }),
            None => None,
        };
        tx.send(
            ClusterNote::Attach {
                local: local_tx,
                stats: stats_tx,
                relay,
            }
            .into(),
        )
        .await
        .map_err(|_| failed("the daemon is stopping"))?;
        // `up -d` returns once the node is registered (bounded: with etcd out of reach the
        // node registers by itself later), so that an apply right after it counts this node.
        let mut session = agent.session_changes();
        let _ =
            tokio::time::timeout(Duration::from_secs(10), session.wait_for(|s| s.is_some())).await;
        let saved = Saved {
            cluster: spec.clone(),
            daemon: daemon.clone(),
            lease: previous,
        };
        write_saved(dirs, &saved).map_err(|e| failed(format!("keeping the cluster table: {e}")))?;
        let tasks = vec![
            tokio::spawn(forward(
                notes_rx,
                tx.clone(),
                daemon,
                dirs.clone(),
                Arc::downgrade(&agent),
            )),
            tokio::spawn(keep_lease(agent.clone(), saved, dirs.clone())),
        ];
        *joined = Some(Joined { agent, spec, tasks });
        Ok(())
    }

    /// `apply` on a node: the apps prepared here (every error as on one host: nothing is
    /// written), then written to the cluster together.
    pub async fn apply(&self, spec: FleetSpec, dry_run: bool) -> Result<ApplyResponse, ErrorBody> {
        let Some(agent) = self.agent().await else {
            return Err(failed("this daemon is not a node of a cluster"));
        };
        let checked = spec.clone();
        let cache = StateDir::new(&spec.daemon.state_dir).download_cache();
        // Prepared as on one host, then each jar kept in this node's cache for the others.
        let (prepared, mut artifacts) = tokio::task::spawn_blocking(move || {
            let prepared = jarfleet_host::prepare::prepare(&checked)?;
            let artifacts = crate::cluster_artifacts::refs_of(&prepared, &cache)?;
            Ok::<_, ErrorBody>((prepared, artifacts))
        })
        .await
        .map_err(|e| failed(format!("a background task failed: {e}")))??;
        let me = agent.node().to_string();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let desired: BTreeMap<String, ClusterApp> = prepared
            .into_iter()
            .map(|(name, p)| {
                let artifact = artifacts.remove(&name);
                (
                    name,
                    ClusterApp {
                        artifact,
                        spec: p.spec,
                        release: p.release,
                        applied_by: me.clone(),
                        applied_ms: now,
                        // The apply keeps the release the cluster runs now.
                        previous: None,
                    },
                )
            })
            .collect();
        let applied = agent.apply(&desired, dry_run).await.map_err(|e| match e {
            jarfleet_cluster::Error::Refused { message, hint } => refused(message, hint.as_deref()),
            other => ErrorBody {
                kind: ErrorKind::Failed,
                message: format!("the cluster's etcd did not take the apply: {other}"),
                hint: Some("nothing was applied; apply again once etcd answers (`jarfleet events` says when)".into()),
            },
        })?;
        Ok(ApplyResponse {
            plan: applied.plan,
            applied: applied.applied,
        })
    }
}

impl ClusterLink {
    /// `cluster nodes`: every node the cluster knows, with its state as this node sees it.
    pub async fn nodes(&self) -> Result<jarfleet_api::ClusterNodes, ErrorBody> {
        use jarfleet_core::cluster::records::InstanceState;
        let agent = self.agent().await.ok_or_else(not_a_node)?;
        let cluster = self
            .joined
            .lock()
            .await
            .as_ref()
            .map(|j| j.spec.name.clone())
            .unwrap_or_default();
        let Some(m) = agent.mirror() else {
            return Ok(jarfleet_api::ClusterNodes {
                cluster,
                me: agent.node().to_string(),
                leader: None,
                nodes: Vec::new(),
                stale: Some("the cluster's state has not been read from etcd yet".into()),
            });
        };
        let unreachable = agent.unreachable_peers();
        let mut names: Vec<String> = m.known.keys().cloned().collect();
        for n in m.nodes.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        names.sort();
        let mut nodes = Vec::new();
        for name in names {
            let registered = m.nodes.get(&name);
            let Some(record) = registered.map(|r| &r.record).or_else(|| m.known.get(&name)) else {
                continue;
            };
            let admin = m.admin.get(&name).cloned().unwrap_or_default();
            let state = jarfleet_core::cluster::nodes::state(
                registered.is_some(),
                unreachable.contains(&name),
                &admin,
            );
            let placed: Vec<&String> = m
                .allocs
                .iter()
                .filter(|(_, p)| p.record.node == name)
                .map(|((app, _), _)| app)
                .filter(|app| m.apps.contains_key(*app))
                .collect();
            let memory_used = placed
                .iter()
                .filter_map(|app| m.apps.get(*app))
                .map(|(a, _)| a.spec.instance_memory())
                .sum();
            let ready = m
                .statuses
                .iter()
                .filter(|((n, _, _), s)| *n == name && s.state == InstanceState::Ready)
                .count() as u32;
            let running = if registered.is_some() {
                m.statuses.keys().filter(|(n, _, _)| *n == name).count() as u32
            } else {
                0
            };
            let heartbeat_secs_ago = match registered {
                Some(r) => match agent.client().time_to_live(r.lease).await {
                    Ok(Some(info)) => Some(u64::try_from(info.granted_ttl - info.ttl).unwrap_or(0)),
                    _ => None,
                },
                None => None,
            };
            nodes.push(jarfleet_api::ClusterNode {
                name: name.clone(),
                state: state.to_string(),
                address: record.address.clone(),
                peer_port: record.peer_port,
                relay_port: record.relay_port,
                version: record.version.clone(),
                memory: record.memory,
                memory_used,
                instances: placed.len() as u32,
                ready,
                heartbeat_secs_ago,
                running,
                drain_deadline_ms: admin.drain_deadline_ms.filter(|_| admin.draining),
                labels: record.labels.clone(),
            });
        }
        Ok(jarfleet_api::ClusterNodes {
            cluster,
            me: agent.node().to_string(),
            leader: m.leader.as_ref().map(|l| l.record.node.clone()),
            nodes,
            stale: None,
        })
    }

    /// What `status` shows of the cluster (`None` on one host, or before etcd was read): every
    /// slot placed, with what its node reports, and every copy still handing over.
    pub async fn status(&self) -> Option<jarfleet_api::ClusterStatus> {
        let (agent, cluster) = {
            let joined = self.joined.lock().await;
            let j = joined.as_ref()?;
            (j.agent.clone(), j.spec.name.clone())
        };
        let m = agent.mirror()?;
        let mut instances = Vec::new();
        let mut reported = std::collections::BTreeSet::new();
        for ((node, app, slot), s) in &m.statuses {
            if !m.nodes.contains_key(node) {
                continue;
            }
            let placed_on = m
                .allocs
                .get(&(app.clone(), *slot))
                .map(|p| p.record.node.clone());
            if placed_on.as_deref() == Some(node.as_str()) {
                reported.insert((app.clone(), *slot));
            }
            instances.push(jarfleet_api::ClusterInstance {
                app: app.clone(),
                slot: *slot,
                node: node.clone(),
                generation: s.generation,
                state: s.state.to_string(),
                placed_on,
                address: s.address.clone(),
                port: s.port,
                release: s.release.clone(),
                pid: s.pid,
                restarts: s.restarts,
            });
        }
        for ((app, slot), p) in &m.allocs {
            if reported.contains(&(app.clone(), *slot)) || !m.apps.contains_key(app) {
                continue;
            }
            instances.push(jarfleet_api::ClusterInstance {
                app: app.clone(),
                slot: *slot,
                node: p.record.node.clone(),
                generation: p.record.generation,
                state: "placed".into(),
                placed_on: Some(p.record.node.clone()),
                address: None,
                port: None,
                release: String::new(),
                pid: None,
                restarts: 0,
            });
        }
        instances.sort_by(|a, b| (&a.app, a.slot, &a.node).cmp(&(&b.app, b.slot, &b.node)));
        let rollouts = m
            .rollouts
            .iter()
            .filter(|(app, _)| m.apps.contains_key(*app))
            .map(|(app, (r, _))| jarfleet_api::ClusterRollout {
                app: app.clone(),
                release: r.release.clone(),
                from: r.from.clone(),
                state: r.state.to_string(),
                steps: r
                    .cleared
                    .iter()
                    .enumerate()
                    .map(|(i, node)| jarfleet_api::RolloutStep {
                        node: node.clone(),
                        at_ms: r.cleared_ms.get(i).copied().unwrap_or(0),
                    })
                    .collect(),
                why: r.why.clone(),
                started_ms: r.started_ms,
                ended_ms: r.ended_ms,
                strategy: r.strategy.to_string(),
                percent: r.percent,
                paused: r.paused,
                verdicts: r
                    .verdicts
                    .iter()
                    .map(|v| jarfleet_api::RolloutVerdict {
                        step: v.step + 1,
                        percent: v.percent,
                        passed: v.passed,
                        figures: v.figures.clone(),
                        nodes: v.nodes.clone(),
                        at_ms: v.at_ms,
                    })
                    .collect(),
            })
            .collect();
        Some(jarfleet_api::ClusterStatus {
            cluster,
            me: agent.node().to_string(),
            instances,
            rollouts,
        })
    }

    /// What `/metrics` shows of the cluster (`None` on one host).
    pub async fn figures(&self) -> Option<crate::metrics::ClusterFigures> {
        use jarfleet_core::cluster::records::InstanceState;
        let (agent, cluster) = {
            let joined = self.joined.lock().await;
            let j = joined.as_ref()?;
            (j.agent.clone(), j.spec.name.clone())
        };
        let session = agent.session();
        let mut figures = crate::metrics::ClusterFigures {
            cluster,
            node: agent.node().to_string(),
            registered: session.is_some(),
            etcd_reachable: agent.etcd_reachable(),
            ..Default::default()
        };
        let Some(m) = agent.mirror() else {
            return Some(figures);
        };
        figures.scheduler = m.leader.as_ref().is_some_and(|l| {
            l.record.node == agent.node() && session.as_ref().is_some_and(|s| s.lease == l.lease)
        });
        let unreachable = agent.unreachable_peers();
        let mut by_state: BTreeMap<String, u64> =
            ["ready", "suspect", "down", "draining", "ineligible"]
                .iter()
                .map(|s| (s.to_string(), 0))
                .collect();
        let mut names: std::collections::BTreeSet<&String> = m.known.keys().collect();
        names.extend(m.nodes.keys());
        for name in names {
            let admin = m.admin.get(name).cloned().unwrap_or_default();
            let state = jarfleet_core::cluster::nodes::state(
                m.nodes.contains_key(name),
                unreachable.contains(name),
                &admin,
            );
            *by_state.entry(state.to_string()).or_default() += 1;
        }
        figures.nodes = by_state.into_iter().collect();
        figures.placed_here = m
            .allocs
            .values()
            .filter(|p| p.record.node == agent.node())
            .count() as u64;
        let mut placements: BTreeMap<(String, String), u64> = BTreeMap::new();
        for ((app, _), p) in &m.allocs {
            if m.apps.contains_key(app) {
                *placements
                    .entry((p.record.node.clone(), app.clone()))
                    .or_default() += 1;
            }
        }
        figures.placements = placements.into_iter().collect();
        let mut remote: BTreeMap<String, u64> = m.apps.keys().map(|a| (a.clone(), 0)).collect();
        for ((node, app, _), s) in &m.statuses {
            if node != agent.node()
                && s.state == InstanceState::Ready
                && m.nodes.contains_key(node)
                && !unreachable.contains(node)
                && let Some(n) = remote.get_mut(app)
            {
                *n += 1;
            }
        }
        figures.remote = remote.into_iter().collect();
        Some(figures)
    }

    /// `cluster eligible|ineligible NODE`.
    pub async fn set_eligible(&self, node: &str, eligible: bool) -> Result<(), ErrorBody> {
        self.set_admin(node, |a| a.ineligible = !eligible).await
    }

    /// `cluster drain NODE [--deadline]` (`Some(deadline)`) and `cluster undrain NODE`
    /// (`None`). Returns when the deadline passes (ms since the epoch), for a drain.
    pub async fn set_draining(
        &self,
        node: &str,
        deadline: Option<Duration>,
    ) -> Result<Option<u64>, ErrorBody> {
        let at = deadline.map(|d| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            u64::try_from(now.saturating_add(d).as_millis()).unwrap_or(u64::MAX)
        });
        self.set_admin(node, |a| {
            a.draining = at.is_some();
            a.drain_deadline_ms = at;
        })
        .await?;
        Ok(at)
    }

    /// Changes what an operator says of `node`, once it is known to the cluster.
    async fn set_admin(
        &self,
        node: &str,
        edit: impl Fn(&mut jarfleet_core::cluster::records::AdminRecord),
    ) -> Result<(), ErrorBody> {
        let agent = self.agent().await.ok_or_else(not_a_node)?;
        jarfleet_core::spec::node_name(node).map_err(|e| refused(e, None))?;
        let known = agent
            .mirror()
            .is_some_and(|m| m.known.contains_key(node) || m.nodes.contains_key(node));
        if !known {
            return Err(refused(
                format!("the cluster has no node named {node:?}"),
                Some("`jarfleet cluster nodes` lists them"),
            ));
        }
        agent.set_admin(node, edit).await.map_err(|e| ErrorBody {
            kind: ErrorKind::Failed,
            message: format!("etcd did not take it: {e}"),
            hint: Some("nothing was changed; try again once etcd answers".into()),
        })
    }
}

fn not_a_node() -> ErrorBody {
    refused(
        "this daemon is not a node of a cluster",
        Some("add a [cluster] table to the node's spec and `jarfleet up -d` it (docs/cluster.md)"),
    )
}

/// The agent's notes to the loop: assignments prepared here first.
async fn forward(
    mut notes: mpsc::UnboundedReceiver<Note>,
    tx: mpsc::Sender<Event>,
    daemon: DaemonSpec,
    dirs: StateDir,
    agent: std::sync::Weak<Agent>,
) {
    // The last preparation of each app, kept while its cluster record is the same.
    let mut prepared: BTreeMap<String, (ClusterApp, PreparedApp)> = BTreeMap::new();
    // The jars the artifact cache keeps for the cluster, and what it kept last.
    let mut kept = crate::cluster_artifacts::Kept::default();
    let mut last_kept = None;
    while let Some(note) = notes.recv().await {
        let event: Event = match note {
            Note::Assignment(a) => {
                let mut apps = BTreeMap::new();
                for (name, wanted) in &a.apps {
                    if let Some((had, p)) = prepared.get(name)
                        && had == wanted
                    {
                        apps.insert(name.clone(), p.clone());
                        continue;
                    }
                    let fetched = {
                        let agent = agent.upgrade();
                        crate::cluster_artifacts::fetch_for(
                            wanted,
                            agent.as_deref(),
                            dirs.download_cache(),
                        )
                        .await
                    };
                    let fetched = match fetched {
                        Ok(f) => {
                            if let Some(note) = f.note {
                                let _ = tx
                                    .send(
                                        Notice {
                                            kind: jarfleet_core::events::EventKind::ClusterArtifact,
                                            app: Some(name.clone()),
                                            message: note,
                                        }
                                        .into(),
                                    )
                                    .await;
                            }
                            Ok(f.app)
                        }
                        Err(e) => Err(e),
                    };
                    let prepared_here = match fetched {
                        Ok(local) => prepare_one(&local, &daemon, &dirs).await,
                        Err(e) => Err(e),
                    };
                    match prepared_here {
                        Ok(p) => {
                            prepared.insert(name.clone(), (wanted.clone(), p.clone()));
                            apps.insert(name.clone(), p);
                        }
                        Err(e) => {
                            let kept = prepared.get(name).map(|(_, p)| p.clone());
                            let what = if kept.is_some() {
                                "it keeps running its current release"
                            } else {
                                "it does not run here"
                            };
                            let _ = tx
                                .send(
                                    Notice {
                                        kind: jarfleet_core::events::EventKind::ClusterFailed,
                                        app: Some(name.clone()),
                                        message: format!(
                                            "{name} as applied to the cluster does not prepare on this node ({what}): {}",
                                            e.message
                                        ),
                                    }
                                    .into(),
                                )
                                .await;
                            if let Some(p) = kept {
                                apps.insert(name.clone(), p);
                            }
                        }
                    }
                }
                prepared.retain(|name, _| a.apps.contains_key(name));
                if let Some(keep) = kept.note(&a.apps)
                    && last_kept.as_ref() != Some(&keep)
                {
                    prune_cache(&dirs, keep.clone(), &tx).await;
                    last_kept = Some(keep);
                }
                let run = a
                    .run
                    .into_iter()
                    .filter(|(app, _)| apps.contains_key(app))
                    .collect();
                ClusterNote::Assign {
                    apps,
                    run,
                    leads: a.leads,
                    in_place: a.in_place,
                }
                .into()
            }
            Note::Remote(r) => ClusterNote::Remote(r).into(),
            Note::Event { kind, app, message } => Notice { kind, app, message }.into(),
        };
        if tx.send(event).await.is_err() {
            return;
        }
    }
}

/// Removes the jars no release of the cluster's apps needs any more from this node's artifact
/// cache (`release.pruned`). A failure costs only disk space, and is logged.
async fn prune_cache(
    dirs: &StateDir,
    keep: std::collections::BTreeSet<String>,
    tx: &mpsc::Sender<Event>,
) {
    let cache = dirs.download_cache();
    // A jar written in the last 10 minutes may be on its way into an apply: it stays.
    let pruned = tokio::task::spawn_blocking(move || {
        jarfleet_fetch::prune(&cache, &keep, Duration::from_secs(600))
    })
    .await;
    match pruned {
        Ok(Ok(removed)) if !removed.is_empty() => {
            let names: Vec<String> = removed.iter().map(|d| format!("{}…", &d[..12])).collect();
            let _ = tx
                .send(
                    Notice {
                        kind: jarfleet_core::events::EventKind::ReleasePruned,
                        app: None,
                        message: format!(
                            "artifact cache: removed {} jar(s) no release of the cluster's apps keeps: {}",
                            removed.len(),
                            names.join(", ")
                        ),
                    }
                    .into(),
                )
                .await;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::warn!("pruning the artifact cache: {e}"),
        Err(e) => tracing::warn!("pruning the artifact cache: {e}"),
    }
}

/// One app of the cluster prepared on this node.
async fn prepare_one(
    app: &ClusterApp,
    daemon: &DaemonSpec,
    dirs: &StateDir,
) -> Result<PreparedApp, ErrorBody> {
    let fleet = FleetSpec {
        source: std::path::PathBuf::from("cluster"),
        daemon: daemon.clone(),
        trust: jarfleet_core::spec::TrustSpec {
            keys: app.spec.trust_keys.clone(),
            ca: None,
        },
        apps: BTreeMap::from([(app.spec.name.clone(), app.spec.clone())]),
        cluster: None,
    };
    let dirs = dirs.clone();
    let name = app.spec.name.clone();
    tokio::task::spawn_blocking(move || {
        let mut prepared = jarfleet_host::prepare::prepare(&fleet)?;
        for p in prepared.values_mut() {
            jarfleet_host::prepare::fast_start_layout(p, &dirs)?;
        }
        prepared
            .remove(&name)
            .ok_or_else(|| failed(format!("{name} was not prepared")))
    })
    .await
    .map_err(|e| failed(format!("a background task failed: {e}")))?
}

/// Keeps the lease in force in `STATE/cluster.json`, so a restarted daemon renews it.
async fn keep_lease(agent: Arc<Agent>, mut saved: Saved, dirs: StateDir) {
    let mut changes = agent.session_changes();
    loop {
        let now = changes
            .borrow_and_update()
            .as_ref()
            .map(|s| (s.lease, s.boot_id.clone()));
        if now.is_some() && now != saved.lease {
            saved.lease = now;
            if let Err(e) = write_saved(&dirs, &saved) {
                tracing::warn!(
                    "keeping the cluster lease in {}: {e}",
                    saved_path(&dirs).display()
                );
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn saved_path(dirs: &StateDir) -> std::path::PathBuf {
    dirs.root().join("cluster.json")
}

/// Whether the daemon of this state dir was a node of a cluster when it last ran (it rejoins it
/// as it starts).
pub fn was_joined(dirs: &StateDir) -> bool {
    saved_path(dirs).exists()
}

fn read_saved(dirs: &StateDir) -> Option<Saved> {
    let text = std::fs::read_to_string(saved_path(dirs)).ok()?;
    serde_json::from_str(&text).ok()
}

fn write_saved(dirs: &StateDir, saved: &Saved) -> std::io::Result<()> {
    let text = serde_json::to_vec_pretty(saved).map_err(std::io::Error::other)?;
    jarfleet_shim::privfs::write_atomic(&saved_path(dirs), &text)
}

/// This host's name, as a node name.
fn host_name() -> Result<String, ErrorBody> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map_err(|e| failed(format!("reading the host name: {e}")))?;
    let name = raw.trim().to_ascii_lowercase();
    jarfleet_core::spec::node_name(&name).map_err(|e| {
        refused(
            format!("the host name cannot name this node: {e}"),
            Some("set `[cluster] node = \"web-1\"`"),
        )
    })?;
    Ok(name)
}

/// The machine's memory less 10 %, offered to instances when `[cluster] memory` is not set.
fn offered_memory() -> u64 {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(4 << 30);
    total - total / 10
}
