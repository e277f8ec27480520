//! A new release across the cluster, node by node: three hosts in network namespaces, a
//! 3-member etcd, real JVMs, load through every host's balancer.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cluster::{Cluster, Node};
use crate::fixture;
use crate::front_door::FrontLoad;
use crate::harness::wait_until_explained;

/// One instance as a node's `status` shows the cluster's: (node, slot) → (release, state).
pub(crate) type Seen = BTreeMap<(String, u64), (String, String)>;

pub(crate) fn instances(c: &Cluster, seer: &Node) -> Seen {
    let status: Value =
        serde_json::from_str(&c.ok(seer, &["status", "-o", "json"])).expect("status is JSON");
    status["cluster"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["app"] == "web")
        .map(|i| {
            (
                (
                    i["node"].as_str().unwrap_or_default().to_string(),
                    i["slot"].as_u64().unwrap_or(u64::MAX),
                ),
                (
                    i["release"].as_str().unwrap_or_default().to_string(),
                    i["state"].as_str().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// The one release every instance runs, ready, once there are `n` of them.
pub(crate) fn settled_release(seen: &Seen, n: usize) -> Option<String> {
    let releases: BTreeSet<&String> = seen.values().map(|(r, _)| r).collect();
    let ready = seen.values().all(|(_, s)| s == "ready");
    (seen.len() == n && releases.len() == 1 && ready)
        .then(|| releases.into_iter().next())?
        .cloned()
}

/// Lets each load through `nodes` answer 30 more, then checks none of its requests failed.
pub(crate) fn none_failed<'a>(
    loads: Vec<FrontLoad>,
    nodes: impl IntoIterator<Item = &'a Node>,
    during: &str,
) {
    for l in &loads {
        l.wait_more(30);
    }
    for (l, n) in loads.into_iter().zip(nodes) {
        let t = l.finish();
        assert_eq!(
            t.failed, 0,
            "through {} during the {during}: {:?}",
            n.name, t.errors
        );
    }
}

/// Watches a rollout away from `from` until every one of `n` instances runs one other release,
/// ready; returns that release and the order in which nodes first ran it. Fails the test if a
/// node starts on it while a node before it still has instances that are not ready on it.
fn watch_node_by_node(c: &Cluster, seer: &Node, from: &str, n: usize) -> (String, Vec<String>) {
    let mut order: Vec<String> = Vec::new();
    let mut to: Option<String> = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let seen = instances(c, seer);
        let new: BTreeSet<String> = seen
            .iter()
            .filter(|(_, (r, _))| r != from)
            .map(|((node, _), _)| node.clone())
            .collect();
        if to.is_none() {
            to = seen
                .values()
                .map(|(r, _)| r)
                .find(|r| *r != from && !r.is_empty())
                .cloned();
        }
        for node in &new {
            if !order.contains(node) {
                // Every node before it is done: all its instances ready on the new release.
                for earlier in &order {
                    let done = seen
                        .iter()
                        .filter(|((n, _), _)| n == earlier)
                        .all(|(_, (r, s))| Some(r) == to.as_ref() && s == "ready");
                    assert!(
                        done,
                        "node {node} started on the new release while {earlier} was not done: {seen:?}"
                    );
                }
                order.push(node.clone());
            }
        }
        if let Some(release) = settled_release(&seen, n)
            && release != from
        {
            return (release, order);
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_new_release_goes_out_node_by_node_with_no_failed_request_posts_included() {
    let c = Cluster::start(3);
    let jar = fixture::fixture_jar();
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let apply = |node: &Node, version: &str| {
        let file = c.apps_file_args(6, &jar, &["--version", version]);
        c.ok(node, &["apply", &file.display().to_string()])
    };
    apply(n0, "v1");
    c.wait_ready(n0, 6);
    let v1 = settled_release(&instances(&c, n1), 6).expect("6 ready on one release");

    // v2, under load with POSTs through every host: 0 failed.
    let loads = c.warm_loads(&[n0, n1, n2], true);
    apply(n1, "v2");
    let (v2, order) = watch_node_by_node(&c, n2, &v1, 6);
    assert_eq!(order.len(), 3, "every node took it: {order:?}");
    none_failed(loads, [n0, n1, n2], "rollout");
    let leader = c.scheduler(n0);
    let lead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    let events = c.ok(lead, &["events", "-n", "100000", "-o", "json"]);
    for (k, node) in order.iter().enumerate() {
        let step = format!(
            "release {v2} goes out on node {node} ({} of 3 nodes)",
            k + 1
        );
        assert!(events.contains(&step), "no event {step:?}: {events}");
    }
    assert!(
        events.contains(&format!("release {v2} runs on every node")),
        "{events}"
    );
    // `status` on any node shows the rollout, with its nodes in the order they were cleared.
    let status: Value =
        serde_json::from_str(&c.ok(n0, &["status", "-o", "json"])).expect("status is JSON");
    let rollout = &status["cluster"]["rollouts"][0];
    assert_eq!(rollout["release"], v2.as_str(), "{status}");
    assert_eq!(rollout["state"], "done", "{status}");
    let steps: Vec<&str> = rollout["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["node"].as_str())
        .collect();
    assert_eq!(steps, order, "{status}");
    let text = c.ok(n0, &["status"]);
    assert!(
        text.contains(&format!("release {v2} went out node by node")),
        "{text}"
    );
    // Every node's own history has its deployment of it.
    for n in [n0, n1, n2] {
        let history = c.ok(n, &["history", "web", "-o", "json"]);
        assert!(history.contains(&v2), "{}: {history}", n.name);
    }
}

#[test]
fn a_node_without_room_for_a_surge_instance_replaces_its_instances_in_place_with_no_failed_request()
{
    // Each node offers 1 GiB and gets 2 instances of 400 MiB: no room for a third beside them.
    let c = Cluster::start_lab_full(3, 3, false, "", "memory = \"1GiB\"\n");
    let jar = fixture::fixture_jar();
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let placement = "\n[apps.web.placement]\nmemory = \"400MiB\"\n";
    let apply = |node: &Node, version: &str| {
        let file = c.apps_file_toml(6, &jar, &["--version", version], placement);
        c.ok(node, &["apply", &file.display().to_string()])
    };
    apply(n0, "v1");
    c.wait_ready(n0, 6);
    let v1 = settled_release(&instances(&c, n1), 6).expect("6 ready on one release");
    let loads = c.warm_loads(&[n0, n1, n2], true);
    apply(n1, "v2");
    // No node ever runs more than its 2 JVMs: each is replaced where it stands.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut most = 0;
    let mut worst = String::new();
    let v2 = loop {
        for n in [n0, n1, n2] {
            let here = c.jvms(&[n]);
            if here.len() > most {
                most = here.len();
                worst = format!(
                    "{here:?}: {:?}\n{}'s events:\n{}",
                    instances(&c, n2),
                    n.name,
                    c.ok(n, &["events", "-n", "200", "-o", "json"])
                );
            }
        }
        match settled_release(&instances(&c, n2), 6) {
            Some(r) if r != v1 => break r,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "not all on a new release: {:?}",
            instances(&c, n2)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(most <= 2, "a node ran {most} JVMs of web at once ({worst})");
    none_failed(loads, [n0, n1, n2], "rollout");
    let leader = c.scheduler(n0);
    let lead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    let events = c.ok(lead, &["events", "-n", "100000", "-o", "json"]);
    let said = "in place: its 1 surge instance(s) need 400MiB and it has 224MiB free";
    assert_eq!(
        events.matches(said).count(),
        3,
        "every node went in place, and said why: {events}"
    );
    assert!(
        events.contains(&format!("release {v2} runs on every node")),
        "{events}"
    );
}

#[test]
fn the_scheduler_s_host_dying_mid_rollout_leaves_the_next_scheduler_to_finish_it() {
    let c = Cluster::start(3);
    let jar = fixture::fixture_jar();
    let apply = |node: &Node, version: &str| {
        let file = c.apps_file_args(3, &jar, &["--version", version]);
        c.ok(node, &["apply", &file.display().to_string()])
    };
    apply(&c.nodes[0], "v1");
    c.wait_ready(&c.nodes[0], 3);
    let v1 = settled_release(&instances(&c, &c.nodes[1]), 3).expect("3 ready on one release");
    let leader = c.scheduler(&c.nodes[0]);
    let lead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    // The scheduler's host dies once the first node runs v2: the next scheduler finishes it
    // on the other two (GETs through them: a request in flight to a host that dies can only
    // be replayed if it is replayable).
    let alive: Vec<&Node> = c.nodes.iter().filter(|n| n.name != leader).collect();
    let loads: Vec<FrontLoad> = alive
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, false))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    apply(alive[0], "v2");
    wait_until_explained("a first node running v2", Duration::from_secs(90), || {
        let seen = instances(&c, alive[0]);
        let on_new = seen
            .values()
            .filter(|(r, s)| *r != v1 && !r.is_empty() && s == "ready")
            .count();
        if on_new > 0 {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    c.kill_host(lead);
    wait_until_explained(
        "all 3 on one release other than v1, on the two live hosts",
        Duration::from_secs(120),
        || {
            let seen = instances(&c, alive[0]);
            let on_live = seen.keys().all(|(n, _)| n != &leader);
            match settled_release(&seen, 3) {
                Some(r) if r != v1 && on_live => Ok(()),
                _ => Err(format!("{seen:?}")),
            }
        },
    );
    let new_leader = c.scheduler(alive[0]);
    assert_ne!(new_leader, leader, "the scheduler moved");
    for l in &loads {
        l.wait_more(30);
    }
    for (l, n) in loads.into_iter().zip(&alive) {
        let t = l.finish();
        assert_eq!(
            t.failed, 0,
            "through {} while {leader} died mid-rollout: {:?}",
            n.name, t.errors
        );
    }
    let next = c
        .nodes
        .iter()
        .find(|n| n.name == new_leader)
        .expect("a node");
    let events = c.ok(next, &["events", "-n", "100000", "-o", "json"]);
    assert!(events.contains("runs on every node"), "{events}");
}

#[test]
fn a_release_that_fails_on_the_first_node_never_reaches_the_others_and_is_rolled_back() {
    let c = Cluster::start(3);
    let jar = fixture::fixture_jar();
    let (n0, n1) = (&c.nodes[0], &c.nodes[1]);
    let file = c.apps_file_args(3, &jar, &["--version", "v1"]);
    c.ok(n0, &["apply", &file.display().to_string()]);
    c.wait_ready(n0, 3);
    let v1 = settled_release(&instances(&c, n1), 3).expect("3 ready on one release");
    let loads: Vec<FrontLoad> = c
        .nodes
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 0, true))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    // Its JVMs exit at once: never ready.
    let bad = c.apps_file_args(3, &jar, &["--version", "v2", "--crash-after", "0s"]);
    c.ok(n1, &["apply", &bad.display().to_string()]);
    let leader = c.scheduler(n0);
    let lead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    let mut tried_on = BTreeSet::new();
    wait_until_explained(
        "the rollout rolled back and all 3 on v1 again",
        Duration::from_secs(240),
        || {
            let seen = instances(&c, n0);
            tried_on.extend(
                seen.iter()
                    .filter(|(_, (r, _))| *r != v1)
                    .map(|((n, _), _)| n.clone()),
            );
            let events = c.ok(lead, &["events", "-n", "100000", "-o", "json"]);
            let rolled_back = events.contains("rolled back: node");
            match settled_release(&seen, 3) {
                Some(r) if r == v1 && rolled_back => Ok(()),
                _ => Err(format!("{seen:?}")),
            }
        },
    );
    assert!(
        tried_on.len() <= 1,
        "more than one node ran it: {tried_on:?}"
    );
    // Only the node cleared first ever deployed it.
    let deployed: Vec<&str> = c
        .nodes
        .iter()
        .filter(|n| {
            let history = c.ok(n, &["history", "web", "-o", "json"]);
            history.contains("\"to\"")
        })
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(deployed.len(), 1, "nodes that deployed it: {deployed:?}");
    for (l, n) in loads.into_iter().zip(&c.nodes) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
    }
    // Applying it again is refused, saying why; nothing changes.
    let out = c
        .lab
        .host(0)
        .command(crate::harness::jarfleet_bin())
        .args(["apply", &bad.display().to_string()])
        .env("JARFLEET_STATE", &n0.state)
        .output()
        .expect("apply");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("was rolled back across the cluster"),
        "{stderr}"
    );
}
