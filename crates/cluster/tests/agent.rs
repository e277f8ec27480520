//! The agent against a real etcd: several agents on one machine (each its own node, its peer
//! endpoint on its own port), the daemon's side played by the test (a local view it sets, the
//! notes it reads).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use jarfleet_cluster::agent::Agent;
use jarfleet_cluster::{ClusterApp, Config, LocalInstance, LocalView, Note, RemoteInstance};
use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{AllocRecord, InstanceState};
use jarfleet_core::cluster::schedule::Write;
use jarfleet_core::events::EventKind;
use jarfleet_core::spec::ClusterSpec;
use jarfleet_testkit::etcd_cluster::EtcdCluster;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep};

const DEADLINE: Duration = Duration::from_secs(20);

fn spec(etcd: &EtcdCluster, name: &str) -> ClusterSpec {
    ClusterSpec {
        name: name.into(),
        etcd: etcd.client_urls(),
        node: None,
        advertise: "127.0.0.1".into(),
        peer_port: jarfleet_testkit::free_port(),
        relay_port: jarfleet_testkit::free_port(),
        labels: BTreeMap::new(),
        memory: None,
        lease_ttl: Duration::from_secs(3),
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(150),
        tls: None,
    }
}

/// One node: its agent, the view of its instances the test plays, the notes it got.
struct Node {
    name: String,
    agent: Option<Agent>,
    local: watch::Sender<LocalView>,
    stats: watch::Sender<jarfleet_cluster::publish::SetStatsView>,
    notes: mpsc::UnboundedReceiver<Note>,
    /// The latest of each kind of note.
    assignment: Option<jarfleet_cluster::Assignment>,
    remote: BTreeMap<String, Vec<RemoteInstance>>,
    events: Vec<(EventKind, String)>,
    config: Config,
}

impl Node {
    async fn start(etcd: &EtcdCluster, cluster: &str, name: &str) -> Node {
        let config = Config {
            spec: spec(etcd, cluster),
            node: name.into(),
            memory: 4 << 30,
            version: "test".into(),
            build: None,
            previous_lease: None,
            artifacts: None,
        };
        Node::start_with(config).await
    }

    async fn start_with(config: Config) -> Node {
        let (local, view) = watch::channel(LocalView::new());
        let (stats, stats_view) = watch::channel(BTreeMap::new());
        let (tx, notes) = mpsc::unbounded_channel();
        let agent = Agent::start(config.clone(), view, stats_view, None, tx)
            .await
            .expect("the agent starts");
        // The daemon's first report (it runs nothing yet): the agent decides nothing before.
        local.send_replace(LocalView::new());
        Node {
            name: config.node.clone(),
            agent: Some(agent),
            local,
            stats,
            notes,
            assignment: None,
            remote: BTreeMap::new(),
            events: Vec::new(),
            config,
        }
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("running")
    }

    fn drain_notes(&mut self) {
        while let Ok(n) = self.notes.try_recv() {
            match n {
                Note::Assignment(a) => self.assignment = Some(a),
                Note::Remote(r) => self.remote = r,
                Note::Event { kind, message, .. } => self.events.push((kind, message)),
            }
        }
    }

    fn runs(&self, app: &str) -> BTreeMap<u32, u64> {
        self.assignment
            .as_ref()
            .and_then(|a| a.run.get(app).cloned())
            .unwrap_or_default()
    }

    /// Plays the daemon: runs what it is assigned, ready on port 9000 + slot.
    fn run_assigned(&self, app: &str) {
        self.run_assigned_of(&[app]);
    }

    /// [`Node::run_assigned`] for several apps: copies it no longer runs are gone.
    fn run_assigned_of(&self, apps: &[&str]) {
        let mut view = LocalView::new();
        for (app, slot, generation) in apps.iter().flat_map(|app| {
            self.runs(app)
                .into_iter()
                .map(move |(slot, generation)| (*app, slot, generation))
        }) {
            view.insert(
                (app.to_string(), slot),
                LocalInstance {
                    generation,
                    state: InstanceState::Ready,
                    port: Some(9000 + u16::try_from(slot).expect("small")),
                    pid: Some(1000 + slot),
                    // The release it was told to run (what a daemon's deployment leads to).
                    release: self
                        .assignment
                        .as_ref()
                        .and_then(|a| a.apps.get(app))
                        .map_or_else(|| "r1".to_string(), |a| a.release.clone()),
                    restarts: 0,
                    leaving: false,
                    rolled_back: None,
                },
            );
        }
        self.local.send_replace(view);
    }
}

fn app(name: &str, instances: u32) -> ClusterApp {
    app_with(name, instances, "")
}

/// An app with more of its spec (`more`: TOML lines of its table).
fn app_with(name: &str, instances: u32, more: &str) -> ClusterApp {
    let text = format!(
        "[apps.{name}]\nartifact = \"/srv/{name}.jar\"\nports = \"9000-9099\"\ninstances = {instances}\n{more}"
    );
    let spec = jarfleet_core::spec::load(&text, std::path::Path::new("/srv/apps.toml"), &|_| None)
        .expect("the spec loads");
    ClusterApp {
        spec: spec.apps[name].clone(),
        release: "r1".into(),
        applied_by: "test".into(),
        applied_ms: 0,
        artifact: None,
        previous: None,
    }
}

/// Polls `nodes` (reading their notes) until `done` holds, or fails naming `what`.
async fn until(nodes: &mut [&mut Node], what: &str, done: impl Fn(&[&mut Node]) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for n in nodes.iter_mut() {
            n.drain_notes();
        }
        if done(nodes) {
            return;
        }
        if Instant::now() > deadline {
            let state: Vec<String> = nodes
                .iter()
                .map(|n| {
                    format!(
                        "{}: runs {:?}, remote {:?}, events {:?}",
                        n.name,
                        n.assignment.as_ref().map(|a| &a.run),
                        n.remote,
                        n.events
                    )
                })
                .collect();
            panic!("not within {DEADLINE:?}: {what}\n{}", state.join("\n"));
        }
        sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node of `nodes` sees all of them registered (placement spreads over
/// the nodes registered when it places).
async fn all_registered(nodes: &mut [&mut Node]) {
    let n = nodes.len();
    until(nodes, "every node registered", |ns| {
        ns.iter()
            .all(|x| x.agent().mirror().is_some_and(|m| m.nodes.len() == n))
    })
    .await;
}

fn etcd() -> EtcdCluster {
    EtcdCluster::start(1, Ipv4Addr::LOCALHOST).expect("etcd starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apps_applied_on_any_node_are_spread_and_each_slot_runs_on_exactly_one_node() {
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t1", "a").await;
    let mut b = Node::start(&etcd, "t1", "b").await;
    let mut c = Node::start(&etcd, "t1", "c").await;
    // Placement spreads over the nodes registered when it places: all three, here.
    all_registered(&mut [&mut a, &mut b, &mut c]).await;
    let desired = BTreeMap::from([("web".to_string(), app("web", 4))]);
    let applied = b.agent().apply(&desired, false).await.expect("applies");
    assert!(applied.applied);
    assert_eq!(applied.plan.changes.len(), 1);
    until(
        &mut [&mut a, &mut b, &mut c],
        "every slot placed once",
        |ns| {
            let mut all: Vec<u32> = ns.iter().flat_map(|n| n.runs("web").into_keys()).collect();
            all.sort();
            all == vec![0, 1, 2, 3]
        },
    )
    .await;
    for n in [&a, &b, &c] {
        assert!(
            !n.runs("web").is_empty(),
            "{} runs nothing: not spread",
            n.name
        );
        // Every node knows every app (to serve its `listen`).
        assert!(
            n.assignment
                .as_ref()
                .is_some_and(|x| x.apps.contains_key("web"))
        );
    }
    // The same apply again changes nothing; a dry run writes nothing.
    let again = a.agent().apply(&desired, false).await.expect("applies");
    assert!(again.plan.is_empty());
    let mut more = desired.clone();
    more.insert("api".into(), app("api", 1));
    let dry = c.agent().apply(&more, true).await.expect("plans");
    assert!(!dry.applied);
    assert_eq!(dry.plan.changes.len(), 1);
    let m = a.agent().mirror().expect("read");
    assert!(!m.apps.contains_key("api"), "a dry run wrote");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_node_is_replaced_on_the_others_and_its_instances_leave_every_balancer_first() {
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t2", "a").await;
    let mut b = Node::start(&etcd, "t2", "b").await;
    let mut c = Node::start(&etcd, "t2", "c").await;
    all_registered(&mut [&mut a, &mut b, &mut c]).await;
    let desired = BTreeMap::from([("web".to_string(), app("web", 3))]);
    a.agent().apply(&desired, false).await.expect("applies");
    until(
        &mut [&mut a, &mut b, &mut c],
        "one slot on each node",
        |ns| ns.iter().all(|n| n.runs("web").len() == 1),
    )
    .await;
    for n in [&a, &b, &c] {
        n.run_assigned("web");
    }
    // Every balancer sees the two other nodes' instances.
    until(
        &mut [&mut a, &mut b, &mut c],
        "each node sees 2 remote instances",
        |ns| {
            ns.iter()
                .all(|n| n.remote.get("web").is_some_and(|r| r.len() == 2))
        },
    )
    .await;
    let lost_slot = *c.runs("web").keys().next().expect("c runs one");

    // c dies: its agent stops without a word (its lease is not revoked).
    let died = Instant::now();
    drop(c.agent.take());
    until(
        &mut [&mut a, &mut b],
        "c's instance out of a's and b's balancers",
        |ns| {
            ns.iter().all(|n| {
                n.remote
                    .get("web")
                    .is_some_and(|r| r.iter().all(|i| i.node != "c"))
            })
        },
    )
    .await;
    let out_after = died.elapsed();
    assert!(
        out_after < Duration::from_secs(3),
        "the probes took c out after {out_after:?}, its lease of 3 s would have done it anyway"
    );
    until(&mut [&mut a, &mut b], "c's slot placed on a or b", |ns| {
        ns.iter().any(|n| n.runs("web").contains_key(&lost_slot))
    })
    .await;
    let owner = [&a, &b]
        .into_iter()
        .find(|n| n.runs("web").contains_key(&lost_slot))
        .expect("someone");
    assert_eq!(owner.runs("web")[&lost_slot], 2, "a new generation");
    // Nothing else moved.
    for n in [&a, &b] {
        assert!(
            n.runs("web").values().filter(|g| **g == 1).count() == 1,
            "{} lost its own slot",
            n.name
        );
    }
    let placed: Vec<&String> = [&a, &b]
        .iter()
        .flat_map(|n| n.events.iter())
        .filter(|(k, _)| *k == EventKind::ClusterPlaced)
        .map(|(_, m)| m)
        .collect();
    assert!(
        placed.iter().any(|m| m.contains("node c lost")),
        "{placed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_s_death_elects_another_and_a_deposed_scheduler_writes_nothing() {
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t3", "a").await;
    let mut b = Node::start(&etcd, "t3", "b").await;
    let desired = BTreeMap::from([("web".to_string(), app("web", 2))]);
    a.agent().apply(&desired, false).await.expect("applies");
    until(&mut [&mut a, &mut b], "placed", |ns| {
        ns.iter().map(|n| n.runs("web").len()).sum::<usize>() == 2
    })
    .await;
    let m = a.agent().mirror().expect("read");
    let old = m.leader.clone().expect("a scheduler");
    let (leader, other) = if old.record.node == "a" {
        (a, b)
    } else {
        (b, a)
    };
    let mut other = other;
    let client =
        jarfleet_etcd::Client::new(etcd.client_urls(), Duration::from_secs(2)).expect("client");
    let keys = Keys::new("t3");

    drop(leader);
    until(
        &mut [&mut other],
        "the other node is the scheduler and runs both slots",
        |ns| {
            let m = ns[0].agent().mirror();
            m.and_then(|m| m.leader.clone())
                .is_some_and(|l| l.record.node == ns[0].name)
                && ns[0].runs("web").len() == 2
        },
    )
    .await;
    let new = other
        .agent()
        .mirror()
        .and_then(|m| m.leader.clone())
        .expect("leader");
    assert!(new.epoch > old.epoch);

    // The old scheduler's epoch writes nothing now.
    let (before, _) = client.get(&keys.alloc("web", 0)).await.expect("read");
    let stale = Write::Put {
        app: "web".into(),
        slot: 0,
        record: AllocRecord {
            node: "zombie".into(),
            generation: 99,
            reason: "a deposed scheduler".into(),
            placed_ms: 0,
        },
        expect: before.as_ref().map_or(0, |kv| kv.mod_revision),
    };
    let wrote = jarfleet_cluster::scheduler::write_fenced(&client, &keys, old.epoch, &stale)
        .await
        .expect("etcd answers");
    assert!(!wrote, "a deposed scheduler wrote");
    let (after, _) = client.get(&keys.alloc("web", 0)).await.expect("read");
    assert_eq!(before, after);
    // The current epoch with a stale revision writes nothing either.
    let Write::Put {
        app, slot, record, ..
    } = stale
    else {
        unreachable!()
    };
    let stale_rev = Write::Put {
        app,
        slot,
        record,
        expect: 1,
    };
    assert!(
        !jarfleet_cluster::scheduler::write_fenced(&client, &keys, new.epoch, &stale_rev)
            .await
            .expect("answers")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_keeps_its_registration_and_a_taken_name_is_refused() {
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t4", "a").await;
    until(&mut [&mut a], "registered", |ns| {
        ns[0].agent().session().is_some()
    })
    .await;
    let first = a.agent().session().expect("registered");
    let mut config = a.config.clone();
    config.previous_lease = Some((first.lease, first.boot_id.clone()));
    a.agent.take().expect("running").stop().await;
    let mut again = Node::start_with(config).await;
    until(&mut [&mut again], "registered again", |ns| {
        ns[0].agent().session().is_some()
    })
    .await;
    assert_eq!(
        again.agent().session(),
        Some(first),
        "a new lease or boot id"
    );

    // Another host (another address) under the same name is refused.
    let mut other = again.config.clone();
    other.previous_lease = None;
    other.spec.advertise = "127.0.0.2".into();
    other.spec.peer_port = jarfleet_testkit::free_port();
    let mut dup = Node::start_with(other).await;
    until(&mut [&mut dup], "the duplicate name refused", |ns| {
        ns[0]
            .events
            .iter()
            .any(|(_, m)| m.contains("is registered by another live node"))
    })
    .await;
    assert!(dup.agent().session().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_node_hands_each_copy_over_once_its_replacement_is_ready_and_stops_the_rest_at_the_deadline()
 {
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t5", "a").await;
    let mut b = Node::start(&etcd, "t5", "b").await;
    let mut c = Node::start(&etcd, "t5", "c").await;
    all_registered(&mut [&mut a, &mut b, &mut c]).await;
    // `web` may run once per node: its slot on a drained node has nowhere to go. `api` may
    // go anywhere.
    let desired = BTreeMap::from([
        (
            "web".to_string(),
            app_with("web", 3, "placement = { max_per_node = 1 }\n"),
        ),
        ("api".to_string(), app("api", 3)),
    ]);
    a.agent().apply(&desired, false).await.expect("applies");
    until(
        &mut [&mut a, &mut b, &mut c],
        "one slot of each app on each node",
        |ns| {
            ns.iter()
                .all(|n| n.runs("web").len() == 1 && n.runs("api").len() == 1)
        },
    )
    .await;
    for n in [&a, &b, &c] {
        n.run_assigned_of(&["web", "api"]);
    }
    let web_slot = *c.runs("web").keys().next().expect("c runs web");
    let api_slot = *c.runs("api").keys().next().expect("c runs api");

    // Drained with a deadline 4 s away.
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        + Duration::from_secs(4);
    let deadline_ms = u64::try_from(deadline.as_millis()).expect("ms");
    a.agent()
        .set_admin("c", |r| {
            r.draining = true;
            r.drain_deadline_ms = Some(deadline_ms);
        })
        .await
        .expect("drains");
    let drained_at = Instant::now();
    // api's slot is placed anew elsewhere; c keeps serving it until that copy is ready.
    until(
        &mut [&mut a, &mut b, &mut c],
        "c's api slot placed on a or b, c still running it",
        |ns| {
            let moved = ns[..2]
                .iter()
                .any(|n| n.runs("api").get(&api_slot) == Some(&2));
            moved && ns[2].runs("api").contains_key(&api_slot)
        },
    )
    .await;
    assert!(
        c.assignment
            .as_ref()
            .is_some_and(|x| x.stop.is_empty() && x.run["web"].contains_key(&web_slot)),
        "c stopped something before any replacement was ready: {:?}",
        c.assignment
    );
    // The replacement gets ready: c's copy is stopped, its web slot still runs.
    for n in [&a, &b] {
        n.run_assigned_of(&["web", "api"]);
    }
    until(
        &mut [&mut a, &mut b, &mut c],
        "c's api copy stopped",
        |ns| {
            ns[2].assignment.as_ref().is_some_and(|x| {
                x.stop.iter().any(|((app, slot), why)| {
                    app == "api" && *slot == api_slot && why.starts_with("replaced by")
                }) && x.run.get("web").is_some_and(|r| r.contains_key(&web_slot))
            })
        },
    )
    .await;
    c.run_assigned_of(&["web", "api"]);
    // web's slot stays (the scheduler says why), until the deadline.
    until(
        &mut [&mut a, &mut b, &mut c],
        "the scheduler says web's slot stays on c",
        |ns| {
            ns.iter().flat_map(|n| n.events.iter()).any(|(k, m)| {
                *k == EventKind::ClusterUnplaced && m.contains("stays on draining node c")
            })
        },
    )
    .await;
    until(
        &mut [&mut a, &mut b, &mut c],
        "c stops web's slot at the deadline",
        |ns| {
            ns[2].assignment.as_ref().is_some_and(|x| {
                x.run.is_empty()
                    && x.stop.iter().any(|((app, slot), why)| {
                        app == "web" && *slot == web_slot && why.contains("drain deadline passed")
                    })
            })
        },
    )
    .await;
    assert!(
        drained_at.elapsed() >= Duration::from_secs(3),
        "stopped {:?} after the drain, before its deadline",
        drained_at.elapsed()
    );
    // Nothing else moved: a and b still run their own slots of the first generation.
    for n in [&a, &b] {
        assert_eq!(n.runs("web").len(), 1, "{}", n.name);
        assert!(n.runs("web").values().all(|g| *g == 1), "{}", n.name);
    }
    // Undrained: nothing is moved back, and the next slot may go to c again.
    a.agent()
        .set_admin("c", |r| {
            r.draining = false;
            r.drain_deadline_ms = None;
        })
        .await
        .expect("undrains");
    until(
        &mut [&mut a, &mut b, &mut c],
        "web's slot runs on c again",
        |ns| ns[2].runs("web").contains_key(&web_slot),
    )
    .await;
}

/// The release `node` is told to run of `app`.
fn told(n: &Node, app: &str) -> String {
    n.assignment
        .as_ref()
        .and_then(|a| a.apps.get(app))
        .map(|a| a.release.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_release_reaches_one_node_at_a_time_and_the_next_scheduler_carries_on() {
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t7", "a").await;
    let mut b = Node::start(&etcd, "t7", "b").await;
    let mut c = Node::start(&etcd, "t7", "c").await;
    all_registered(&mut [&mut a, &mut b, &mut c]).await;
    let r1 = BTreeMap::from([("web".to_string(), app("web", 3))]);
    a.agent().apply(&r1, false).await.expect("applies");
    until(&mut [&mut a, &mut b, &mut c], "one slot each", |ns| {
        ns.iter().all(|n| n.runs("web").len() == 1)
    })
    .await;
    for n in [&a, &b, &c] {
        n.run_assigned("web");
    }
    let mut r2 = r1.clone();
    if let Some(w) = r2.get_mut("web") {
        w.release = "r2".into();
    }
    b.agent().apply(&r2, false).await.expect("applies r2");
    // Node by node: at each moment at most one node is told r2 and runs r1 still; the daemon
    // (played here) then runs it, and the next node is told.
    let mut order: Vec<String> = Vec::new();
    let mut scheduler_stopped = false;
    let deadline = Instant::now() + DEADLINE * 2;
    loop {
        for n in [&mut a, &mut b, &mut c] {
            if n.agent.is_some() {
                n.drain_notes();
            }
        }
        let told_r2: Vec<&Node> = [&a, &b, &c]
            .into_iter()
            .filter(|n| n.agent.is_some() && told(n, "web") == "r2")
            .collect();
        for n in &told_r2 {
            if order.contains(&n.name) {
                continue;
            }
            // Told only once every node told before it (and still up) runs r2, ready, as
            // etcd shows it.
            let m = n.agent().mirror().expect("read");
            for earlier in &order {
                if !m.nodes.contains_key(earlier) {
                    continue;
                }
                let on_r2 = m
                    .statuses
                    .iter()
                    .filter(|((node, app, _), _)| node == earlier && app == "web")
                    .all(|(_, st)| st.release == "r2" && st.state == InstanceState::Ready);
                assert!(on_r2, "{} told r2 before {earlier} ran it", n.name);
            }
            order.push(n.name.clone());
        }
        // Only the last node told may still be on its way.
        let first_told = told_r2.first().map(|n| n.name.clone());
        for n in [&a, &b, &c] {
            if n.agent.is_some() && told(n, "web") == "r2" {
                n.run_assigned("web");
            }
        }
        if order.len() == 1 && !scheduler_stopped {
            // The scheduler's node goes once the first node is told: the next scheduler
            // carries on from the record.
            let m = a.agent().mirror().expect("read");
            let leader = m.leader.clone().expect("a scheduler").record.node;
            let gone = [&mut a, &mut b, &mut c]
                .into_iter()
                .find(|n| n.name == leader)
                .expect("the scheduler is one of them");
            gone.agent.take().expect("running").stop().await;
            scheduler_stopped = true;
        }
        let alive: Vec<&Node> = [&a, &b, &c]
            .into_iter()
            .filter(|n| n.agent.is_some())
            .collect();
        let done = alive.iter().all(|n| told(n, "web") == "r2")
            && alive.iter().all(|n| {
                n.agent().mirror().is_some_and(|m| {
                    m.rollouts.get("web").is_some_and(|(r, _)| {
                        r.state == jarfleet_core::cluster::records::RolloutState::Done
                    })
                })
            });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: order {order:?}, first told {first_told:?}, {:?}",
            alive
                .iter()
                .map(|n| (n.name.clone(), told(n, "web"), n.events.clone()))
                .collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(20)).await;
    }
    assert!(order.len() >= 2, "{order:?}");
    // The scheduler says so once its write went through (the watch may show the record first).
    let mut alive: Vec<&mut Node> = [&mut a, &mut b, &mut c]
        .into_iter()
        .filter(|n| n.agent.is_some())
        .collect();
    until(
        &mut alive,
        "the scheduler's word that r2 runs on every node",
        |ns| {
            ns.iter().any(|n| {
                n.events.iter().any(|(k, m)| {
                    *k == EventKind::ClusterRollout && m.contains("runs on every node")
                })
            })
        },
    )
    .await;
}

/// Node `n`'s figures of web's new set of `release` at `step` (`percent`), as its daemon hands
/// them to the agent: `canary` requests with `failed` of them failed, and 10 times as many
/// stable.
fn set_stats(
    n: &Node,
    release: &str,
    ready: bool,
    step: u32,
    percent: u8,
    canary: u64,
    failed: u64,
) {
    use jarfleet_core::canary::{SetFigures, StepFigures};
    let bounds = vec![1_000, 2_000, 5_000];
    let set = |requests: u64, failures: u64| SetFigures {
        requests,
        failures,
        buckets: vec![0, requests, 0, 0],
    };
    let record = jarfleet_core::cluster::records::SetStatsRecord {
        release: release.into(),
        ready,
        step,
        percent,
        figures: StepFigures {
            canary: set(canary, failed),
            canary_warm: set(canary, failed),
            stable: set(canary * 10, 0),
        },
        bounds,
    };
    n.stats
        .send_replace(BTreeMap::from([("web".to_string(), record)]));
}

/// The rollout of web as `n` reads it from etcd.
fn web_rollout(n: &Node) -> Option<jarfleet_core::cluster::records::RolloutRecord> {
    n.agent()
        .mirror()
        .and_then(|m| m.rollouts.get("web").map(|(r, _)| r.clone()))
}

/// A canary's nodes all moved at once, its steps led through the record and judged on the sum
/// of every node's published figures: a healthy one is released, a failing one rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_led_through_etcd_and_judged_on_every_node_s_figures() {
    use jarfleet_core::cluster::records::RolloutState;
    let etcd = etcd();
    let mut a = Node::start(&etcd, "t9", "a").await;
    let mut b = Node::start(&etcd, "t9", "b").await;
    let mut c = Node::start(&etcd, "t9", "c").await;
    all_registered(&mut [&mut a, &mut b, &mut c]).await;
    let canary = "[apps.web.deploy]\nstrategy = \"canary\"\ncanary = { steps = [10, 100], step_time = \"1s\" }\n";
    for (round, failing) in [(0, false), (1, true)] {
        let mut want = BTreeMap::from([("web".to_string(), app_with("web", 3, canary))]);
        if round == 0 {
            a.agent().apply(&want, false).await.expect("applies r1");
            until(&mut [&mut a, &mut b, &mut c], "one slot each", |ns| {
                ns.iter().all(|n| n.runs("web").len() == 1)
            })
            .await;
            for n in [&a, &b, &c] {
                n.run_assigned("web");
            }
        }
        if let Some(w) = want.get_mut("web") {
            w.release = if failing { "r3" } else { "r2" }.into();
        }
        b.agent()
            .apply(&want, false)
            .await
            .expect("applies the canary");
        let release = want["web"].release.clone();
        // Every node is told the new release at once, with the rollout to follow.
        until(
            &mut [&mut a, &mut b, &mut c],
            "every node told at once",
            |ns| {
                ns.iter().all(|n| {
                    told(n, "web") == release
                        && n.assignment.as_ref().is_some_and(|x| {
                            x.leads.get("web").is_some_and(|r| r.release == release)
                        })
                })
            },
        )
        .await;
        assert_eq!(
            web_rollout(&a).map(|r| r.percent),
            Some(0),
            "no share before the sets are ready"
        );
        // Two nodes' new sets ready: no share yet; the third: step 1.
        let publish = |n: &Node, ready, step, percent, canary, failed| {
            set_stats(n, &release, ready, step, percent, canary, failed);
        };
        publish(&a, true, 0, 0, 0, 0);
        publish(&b, true, 0, 0, 0, 0);
        publish(&c, true, 0, 0, 0, 0);
        until(&mut [&mut a, &mut b, &mut c], "step 1 at 10 %", |ns| {
            web_rollout(ns[0]).is_some_and(|r| r.percent == 10 && r.step == 0)
        })
        .await;
        // Each node alone has too few canary requests (min_requests 20); together enough.
        for n in [&a, &b, &c] {
            publish(n, true, 0, 10, 8, if failing { 3 } else { 0 });
        }
        if failing {
            until(&mut [&mut a, &mut b, &mut c], "rolled back", |ns| {
                web_rollout(ns[0]).is_some_and(|r| r.state == RolloutState::RolledBack)
            })
            .await;
            let r = web_rollout(&a).expect("the rollout");
            assert!(
                r.why
                    .as_deref()
                    .unwrap_or_default()
                    .contains("failed on the whole cluster's figures"),
                "{r:?}"
            );
            assert_eq!(r.verdicts[0].nodes.len(), 3, "{r:?}");
            // Every node is told the release before it again.
            until(
                &mut [&mut a, &mut b, &mut c],
                "every node back on r2",
                |ns| ns.iter().all(|n| told(n, "web") == "r2"),
            )
            .await;
        } else {
            until(&mut [&mut a, &mut b, &mut c], "step 2 at 100 %", |ns| {
                web_rollout(ns[0]).is_some_and(|r| r.percent == 100 && r.step == 1)
            })
            .await;
            let r = web_rollout(&a).expect("the rollout");
            assert!(
                r.verdicts[0].passed && r.verdicts[0].figures.contains("canary 24 requests"),
                "{r:?}"
            );
            for n in [&a, &b, &c] {
                publish(n, true, 1, 100, 30, 0);
            }
            until(&mut [&mut a, &mut b, &mut c], "released", |ns| {
                web_rollout(ns[0]).is_some_and(|r| r.released)
            })
            .await;
            // The daemons (played here) let their old sets go and run r2 on their slots.
            for n in [&mut a, &mut b, &mut c] {
                n.drain_notes();
                n.stats.send_replace(BTreeMap::new());
                n.run_assigned("web");
            }
            until(&mut [&mut a, &mut b, &mut c], "done", |ns| {
                web_rollout(ns[0]).is_some_and(|r| r.state == RolloutState::Done)
            })
            .await;
            // A node's figures are gone from etcd once it has none.
            until(&mut [&mut a, &mut b, &mut c], "figures withdrawn", |ns| {
                ns[0].agent().mirror().is_some_and(|m| m.stats.is_empty())
            })
            .await;
        }
    }
}
