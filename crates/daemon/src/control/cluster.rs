//! Cluster mode from the loop's side: what the node's agent assigned it (the apps of the
//! cluster and the slots this node runs of each), the instances on other nodes its balancers
//! also send to, its own instances told back to the agent, and the stop of an instance other
//! nodes' balancers may still be sending to.
//!
//! The loop runs the assignment with the machinery of `apply`: each app's instance count is
//! the number of slots this node runs, and [`Control::ensure_slots`] keeps exactly the
//! assigned slot numbers. Before the first assignment (a daemon just started) the loop runs
//! what its store says, as on one host: nothing is stopped because the cluster has not been
//! read yet.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use jarfleet_cluster::{LocalInstance, LocalView, RemoteInstance};
use jarfleet_core::cluster::records::InstanceState;
use jarfleet_core::events::EventKind;
use tokio::sync::watch;

use super::data_plane::BackendEntry;
use super::*;
use crate::cluster_link::ClusterNote;

/// How long a stopping instance stays up after it left this node's balancer before anything
/// else happens, so that every other node's balancer has seen it leave (the status key's
/// deletion travels through etcd's watch in milliseconds; this is a bound with room).
pub const PROPAGATION: Duration = Duration::from_millis(1000);

/// The loop's part of cluster mode.
pub(super) struct ClusterState {
    /// This node's instances, for the agent.
    local: watch::Sender<LocalView>,
    /// Per app: slot → the placement's generation, of every slot this node runs; `None`
    /// before the first assignment.
    pub(super) assigned: Option<BTreeMap<String, BTreeMap<u32, u64>>>,
    /// The generation each slot was last assigned at: a copy no longer assigned is reported
    /// `draining` at it until its process is gone.
    generations: BTreeMap<(String, u32), u64>,
    /// Ready instances on other nodes, per app.
    remote: BTreeMap<String, Vec<RemoteInstance>>,
    /// Per app: the release this node's last deployment of it rolled back from (the
    /// cluster's rollout of it stops when a node says so).
    rolled_back: BTreeMap<String, String>,
    /// This node's figures of its led deployments' new sets, for the agent.
    pub(super) stats: watch::Sender<jarfleet_cluster::publish::SetStatsView>,
    /// Per app: the canary or blue-green rollout its deployment follows.
    pub(super) leads: BTreeMap<String, jarfleet_core::cluster::records::RolloutRecord>,
    /// When this node's figures of its led deployments are next taken.
    pub(super) stats_due: u64,
    /// The apps whose rolling release this node replaces in place (no room for a surge).
    pub(super) in_place: std::collections::BTreeSet<String>,
}

impl Control {
    pub(super) fn on_cluster(&mut self, note: ClusterNote) {
        match note {
            ClusterNote::Attach {
                local,
                stats,
                relay,
            } => {
                self.cluster = Some(ClusterState {
                    local,
                    assigned: None,
                    generations: BTreeMap::new(),
                    remote: BTreeMap::new(),
                    rolled_back: BTreeMap::new(),
                    stats,
                    leads: BTreeMap::new(),
                    stats_due: 0,
                    in_place: Default::default(),
                });
                // The agent decides nothing before this first report (even an empty one).
                if let Some(c) = self.cluster.as_ref() {
                    c.local.send_replace(self.cluster_view());
                }
                if let Some(setup) = relay {
                    self.start_relay(setup);
                }
            }
            ClusterNote::Assign {
                apps,
                run,
                leads,
                in_place,
            } => {
                if let Some(c) = self.cluster.as_mut() {
                    c.in_place = in_place;
                }
                self.cluster_assign(apps, run, leads)
            }
            ClusterNote::Remote(remote) => {
                if let Some(c) = self.cluster.as_mut() {
                    c.remote = remote;
                    self.carried_remote.clear();
                }
                self.sync_all_lbs();
            }
            ClusterNote::DrainDue {
                app,
                slot,
                generation,
                timeout,
            } => {
                if self.current_generation(&app, slot) == Some(generation) {
                    self.drain_here(&app, slot, timeout);
                }
            }
        }
    }

    /// Runs what the cluster assigned this node: every app (with the slots it runs here),
    /// through `apply`'s plan, checks and changes.
    fn cluster_assign(
        &mut self,
        mut apps: BTreeMap<String, PreparedApp>,
        run: BTreeMap<String, BTreeMap<u32, u64>>,
        leads: BTreeMap<String, jarfleet_core::cluster::records::RolloutRecord>,
    ) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        c.leads = leads;
        for (app, slots) in &run {
            for (slot, generation) in slots {
                c.generations.insert((app.clone(), *slot), *generation);
            }
        }
        c.assigned = Some(run.clone());
        // A rollout rolled back across the cluster turns this node's deployment back before
        // the release before it is applied (which the deployment then already heads for).
        self.follow_leads();
        for (name, p) in apps.iter_mut() {
            p.spec.instances = run.get(name).map_or(0, |s| s.len() as u32);
        }
        if let Err(e) = self.apply_apps(apps.clone()) {
            self.emit(
                EventKind::ClusterFailed,
                None,
                None,
                format!(
                    "this node cannot run what the cluster assigned it: {}",
                    e.message
                ),
            );
        }
        for (name, p) in &apps {
            let busy = self.apps.get(name).is_some_and(|a| a.deployment.is_some());
            if !busy {
                self.ensure_slots(name, p.spec.instances);
            }
        }
        self.publish_cluster_view();
    }

    /// In cluster mode, an app's deployment ended: one that did not reach its release is told
    /// to the cluster (its rollout of that release stops everywhere); one that did clears it.
    pub(super) fn cluster_deployment_ended(&mut self, app: &str, to: &str, reached: bool) {
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if reached {
            c.rolled_back.remove(app);
        } else {
            c.rolled_back.insert(app.to_string(), to.to_string());
        }
        self.publish_cluster_view();
    }

    /// The slots the cluster assigned `app` on this node, once an assignment came.
    pub(super) fn assigned_slots(&self, app: &str) -> Option<BTreeSet<u32>> {
        let assigned = self.cluster.as_ref()?.assigned.as_ref()?;
        Some(
            assigned
                .get(app)
                .map(|s| s.keys().copied().collect())
                .unwrap_or_default(),
        )
    }

    /// Makes `app` run exactly `wanted` slots: the others are drained and stopped, the
    /// missing ones started (a slot on its way out that is wanted again comes back).
    pub(super) fn ensure_slot_set(&mut self, app: &str, wanted: &BTreeSet<u32>) {
        let now = self.now_ms();
        let Some(rt) = self.apps.get_mut(app) else {
            return;
        };
        let release = rt.rec.release.clone();
        let restart_generation = rt.rec.restart_generation;
        let ever_assigned = |slot: u32| {
            self.cluster
                .as_ref()
                .is_some_and(|c| c.generations.contains_key(&(app.to_string(), slot)))
        };
        let extra: Vec<(u32, bool)> = rt
            .slots
            .iter()
            .filter(|(slot, s)| !wanted.contains(slot) && !s.being_removed())
            .map(|(slot, s)| {
                let ready = matches!(s.record.instance.phase, Phase::Ready { .. });
                (*slot, ready)
            })
            .collect();
        // A deployment's own instances on slot numbers the cluster never gave this node (its
        // surge) serve until the assigned slots they stand in for are ready: as many ready
        // ones stay as assigned slots are not ready yet. A copy of a slot the cluster moved
        // or took away goes at once (its replacement is ready elsewhere, or it is unwanted).
        let unready = wanted
            .iter()
            .filter(|slot| {
                rt.slots
                    .get(slot)
                    .is_none_or(|s| !matches!(s.record.instance.phase, Phase::Ready { .. }))
            })
            .count();
        let mut stand_ins = 0;
        let mut to_remove = Vec::new();
        for (slot, ready) in extra {
            if !ever_assigned(slot) && ready && stand_ins < unready {
                stand_ins += 1;
            } else {
                to_remove.push(slot);
            }
        }
        let mut revive = Vec::new();
        for slot in wanted {
            match rt.slots.get(slot) {
                None => {
                    rt.slots.insert(
                        *slot,
                        Slot::new(app, *slot, &release, restart_generation, now),
                    );
                }
                Some(s) if s.being_removed() => revive.push(*slot),
                Some(_) => {}
            }
        }
        self.revive_and_remove(app, revive, to_remove);
    }

    /// After a deployment in cluster mode, each app's slots are brought back to the slot
    /// numbers the cluster assigned this node (a rolling walk starts its new instances on
    /// slot numbers of its own): the missing ones start on the release the app now runs, and
    /// the deployment's extra instances serve until they are ready.
    pub(super) fn settle_cluster_slots(&mut self) {
        let Some(assigned) = self.cluster.as_ref().and_then(|c| c.assigned.as_ref()) else {
            return;
        };
        let unsettled: Vec<(String, BTreeSet<u32>)> = self
            .apps
            .iter()
            .filter(|(_, rt)| rt.deployment.is_none() && !rt.removing)
            .filter_map(|(app, rt)| {
                let wanted: BTreeSet<u32> = assigned.get(app)?.keys().copied().collect();
                let live: BTreeSet<u32> = rt
                    .slots
                    .iter()
                    .filter(|(_, s)| !s.being_removed())
                    .map(|(slot, _)| *slot)
                    .collect();
                (live != wanted).then(|| (app.clone(), wanted))
            })
            .collect();
        for (app, wanted) in unsettled {
            self.ensure_slot_set(&app, &wanted);
        }
    }

    /// Tells the agent this node's instances, when they changed.
    pub(super) fn publish_cluster_view(&self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let view = self.cluster_view();
        c.local.send_if_modified(|old| {
            if *old == view {
                false
            } else {
                *old = view;
                true
            }
        });
    }

    /// This node's instances for the agent: the assigned slots with their placement's
    /// generation (a deployment's extra instances are this node's business); before the first
    /// assignment, every slot it runs, generation unknown (0), so that a copy kept for a move
    /// is known to be here. A copy no longer assigned (moved, scaled down) is reported
    /// `draining` until its process is gone: no balancer sends it anything, and the cluster
    /// sees the node is not done with it (`cluster drain` waits for that).
    fn cluster_view(&self) -> LocalView {
        let mut view = LocalView::new();
        let Some(c) = self.cluster.as_ref() else {
            return view;
        };
        let everything: BTreeMap<String, BTreeMap<u32, u64>>;
        let assigned = match c.assigned.as_ref() {
            Some(a) => a,
            None => {
                everything = self
                    .apps
                    .iter()
                    .map(|(app, rt)| (app.clone(), rt.slots.keys().map(|s| (*s, 0)).collect()))
                    .collect();
                &everything
            }
        };
        for (app, slots) in assigned {
            let Some(rt) = self.apps.get(app) else {
                continue;
            };
            for (slot, generation) in slots {
                let Some(s) = rt.slots.get(slot) else {
                    continue;
                };
                let i = &s.record.instance;
                let state = match &i.phase {
                    Phase::Ready { .. } if s.record.standby_until.is_none() => InstanceState::Ready,
                    Phase::Ready { .. } | Phase::Stopping { .. } | Phase::Stopped => {
                        InstanceState::Draining
                    }
                    Phase::Failed { .. } => InstanceState::Failed,
                    Phase::Waiting { .. } | Phase::Starting { .. } | Phase::Unhealthy { .. } => {
                        InstanceState::Starting
                    }
                };
                view.insert(
                    (app.clone(), *slot),
                    LocalInstance {
                        generation: *generation,
                        state,
                        port: i.process.as_ref().map(|p| p.port),
                        pid: i.process.as_ref().map(|p| p.pid),
                        release: i.release.clone(),
                        restarts: i.restarts,
                        leaving: false,
                        rolled_back: c.rolled_back.get(app).cloned(),
                    },
                );
            }
        }
        if c.assigned.is_some() {
            for (app, rt) in &self.apps {
                for (slot, s) in &rt.slots {
                    let key = (app.clone(), *slot);
                    let i = &s.record.instance;
                    let Some(process) = i.process.as_ref() else {
                        continue;
                    };
                    // Only a stop under way (a deployment's extra instances are not the
                    // cluster's business).
                    if view.contains_key(&key) || !matches!(i.phase, Phase::Stopping { .. }) {
                        continue;
                    }
                    view.insert(
                        key.clone(),
                        LocalInstance {
                            generation: c.generations.get(&key).copied().unwrap_or(0),
                            state: InstanceState::Draining,
                            port: Some(process.port),
                            pid: Some(process.pid),
                            release: i.release.clone(),
                            restarts: i.restarts,
                            leaving: true,
                            rolled_back: None,
                        },
                    );
                }
            }
        }
        view
    }

    /// The instances on other nodes `app`'s balancer sends to.
    pub(super) fn remote_backends(&self, app: &str) -> Vec<BackendEntry> {
        if !self.carried_remote.is_empty() {
            return self.carried_remote.get(app).cloned().unwrap_or_default();
        }
        let Some(c) = self.cluster.as_ref() else {
            return Vec::new();
        };
        let relayed = self.relay_active();
        c.remote
            .get(app)
            .map(|list| {
                list.iter()
                    .filter_map(|r| {
                        let ip: IpAddr = r.address.trim_matches(['[', ']']).parse().ok()?;
                        // With TLS, through its node's relay (the instance may listen on
                        // loopback only); straight to its port otherwise.
                        let (addr, via) = match r.relay_port.filter(|_| relayed) {
                            Some(port) => (
                                SocketAddr::new(ip, port),
                                Some(jarfleet_proxy::relay::Via {
                                    node: r.node.clone(),
                                    target: super::relay::relay_target(app, r.slot, r.port),
                                }),
                            ),
                            None => (SocketAddr::new(ip, r.port), None),
                        };
                        Some(BackendEntry {
                            id: format!("{app}/{}@{}#{}", r.slot, r.node, r.generation),
                            slot: r.slot,
                            generation: r.generation,
                            addr,
                            via,
                            weight: 100,
                            // Warmed up where it runs: no slow start from here.
                            ready_for: Duration::from_secs(3600),
                            release: r.release.clone(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A daemon of a cluster node that starts: the other nodes' instances the data plane (which
    /// outlived the last daemon) sends to stay in its snapshots until the agent has read the
    /// cluster. With etcd out of reach at the start they stay until it is read: the last known
    /// set, which the balancer's own checks keep honest.
    pub(super) fn carry_remote_backends(&mut self, apps: &[String]) {
        for app in apps {
            let Some(stats) = self.data_plane.stats(app) else {
                continue;
            };
            let carried: Vec<BackendEntry> = stats
                .backends
                .iter()
                .filter(|b| b.in_snapshot)
                .filter_map(|b| carried_entry(&b.id, b.addr, b.weight, &b.labels, b.via.clone()))
                .collect();
            if !carried.is_empty() {
                self.carried_remote.insert(app.clone(), carried);
            }
        }
    }

    /// A stop's drain in cluster mode: the instance has left this node's balancer and its
    /// status is withdrawn; after [`PROPAGATION`], and once no other host holds a connection
    /// to it (bounded by `timeout`), the drain goes on here. `false` when not in cluster mode
    /// (the drain goes on at once).
    pub(super) fn drain_across_nodes(&mut self, app: &str, slot: u32, timeout: Duration) -> bool {
        if self.cluster.is_none() {
            return false;
        }
        self.publish_cluster_view();
        let Some(generation) = self.current_generation(app, slot) else {
            return false;
        };
        let port = self
            .apps
            .get(app)
            .and_then(|a| a.slots.get(&slot))
            .and_then(|s| s.record.instance.process.as_ref())
            .map(|p| p.port);
        let tx = self.tx.clone();
        // Through the relay, other nodes' connections come from this host: the relay counts
        // them as in flight on the instance.
        let relay = match (self.relay_active(), port) {
            (true, Some(port)) => Some((
                self.data_plane.clone(),
                super::relay::relay_target(app, slot, port),
            )),
            _ => None,
        };
        let app = app.to_string();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            tokio::time::sleep(PROPAGATION.min(timeout)).await;
            if let Some(port) = port {
                let deadline = started + timeout;
                while tokio::time::Instant::now() < deadline {
                    let direct =
                        jarfleet_shim::procinfo::established_from_elsewhere(port).unwrap_or(0);
                    let relayed = match &relay {
                        Some((dp, id)) => {
                            let (dp, id) = (dp.clone(), id.clone());
                            tokio::task::spawn_blocking(move || {
                                dp.in_flight(super::relay::RELAY, &id)
                            })
                            .await
                            .unwrap_or(0)
                        }
                        None => 0,
                    };
                    if direct == 0 && relayed == 0 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            let left = timeout.saturating_sub(started.elapsed());
            let _ = tx
                .send(
                    ClusterNote::DrainDue {
                        app,
                        slot,
                        generation,
                        timeout: left,
                    }
                    .into(),
                )
                .await;
        });
        true
    }
}

/// A backend of a data plane's snapshot that is another node's instance (its id is
/// `APP/SLOT@NODE#GENERATION`), as a snapshot entry again.
fn carried_entry(
    id: &str,
    addr: SocketAddr,
    weight: u32,
    labels: &BTreeMap<String, String>,
    via: Option<jarfleet_proxy::relay::Via>,
) -> Option<BackendEntry> {
    let (_, placed) = id.split_once('@')?;
    let (_, generation) = placed.rsplit_once('#')?;
    let generation: u64 = generation.parse().ok()?;
    let slot: u32 = labels.get("slot")?.parse().ok()?;
    Some(BackendEntry {
        id: id.to_string(),
        slot,
        generation,
        addr,
        weight,
        ready_for: Duration::from_secs(3600),
        release: labels.get("release").cloned().unwrap_or_default(),
        via,
    })
}

#[cfg(test)]
mod carried_tests {
    use super::*;

    #[test]
    fn only_other_nodes_instances_are_carried_over_a_restart() {
        let labels = BTreeMap::from([
            ("slot".to_string(), "2".to_string()),
            ("release".to_string(), "r7".to_string()),
        ]);
        let addr: SocketAddr = "10.0.0.2:9100".parse().expect("addr");
        let got = carried_entry("web/2@n1#4", addr, 100, &labels, None).expect("a remote one");
        assert_eq!(
            (got.slot, got.generation, got.release.as_str()),
            (2, 4, "r7")
        );
        assert_eq!(got.addr, addr);
        // This node's own (`APP/SLOT/GEN`) and malformed ids are not.
        assert!(carried_entry("web/2#4", addr, 100, &labels, None).is_none());
        assert!(carried_entry("web/2@n1#x", addr, 100, &labels, None).is_none());
        assert!(carried_entry("web/2@n1", addr, 100, &labels, None).is_none());
        assert!(carried_entry("web/2@n1#4", addr, 100, &BTreeMap::new(), None).is_none());
    }
}
