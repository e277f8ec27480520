//! Canary and blue-green releases across the cluster: every node starts its new set at once,
//! the scheduler gives the new release each step's share of every node's balancer and judges
//! it on the sum of every node's figures; three hosts in network namespaces, a 3-member etcd,
//! real JVMs, load through every host's balancer.

use std::time::Duration;

use serde_json::Value;

use crate::cluster::{Cluster, Node};
use crate::cluster_rollout::{instances, none_failed, settled_release};
use crate::fixture;
use crate::front_door::FrontLoad;
use crate::harness::wait_until_explained;

/// Canary settings for a test: short steps, a short warm-up, a generous latency ratio (the
/// canaries are freshly started JVMs on a busy 2-core machine running a dozen of them).
const CANARY: &str = "[apps.web.deploy]\nstrategy = \"canary\"\nmin_healthy = \"2s\"\ncanary = { steps = [20, 100], step_time = \"4s\", warmup_requests = 5, max_error_rate = 0.05, max_p99_ratio = 20.0 }\n";

const BLUE_GREEN: &str = "[apps.web.deploy]\nstrategy = \"blue-green\"\nmin_healthy = \"2s\"\n";

/// The app's rollout as `seer`'s `status` shows it.
fn rollout(c: &Cluster, seer: &Node) -> Value {
    let status: Value =
        serde_json::from_str(&c.ok(seer, &["status", "-o", "json"])).expect("status is JSON");
    status["cluster"]["rollouts"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["app"] == "web").cloned())
        .unwrap_or(Value::Null)
}

/// Six instances of `web` on v1 (with `toml`'s deploy settings), load through every node.
fn six_on_v1(c: &Cluster, toml: &str, posts: bool) -> (String, Vec<FrontLoad>) {
    let jar = fixture::fixture_jar();
    let file = c.apps_file_toml(6, &jar, &["--version", "v1"], toml);
    c.ok(&c.nodes[0], &["apply", &file.display().to_string()]);
    c.wait_ready(&c.nodes[0], 6);
    let v1 = settled_release(&instances(c, &c.nodes[1]), 6).expect("6 ready on one release");
    let loads: Vec<FrontLoad> = c
        .nodes
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, posts))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    (v1, loads)
}

/// Waits until all 6 instances run one release other than `old`, ready; that release.
fn settled_on_a_new_release(c: &Cluster, seer: &Node, old: &str) -> String {
    wait_until_explained(
        "all 6 ready on the new release",
        Duration::from_secs(180),
        || match settled_release(&instances(c, seer), 6) {
            Some(r) if r != old => Ok(r),
            _ => Err(format!("{:?}", instances(c, seer))),
        },
    )
}

#[test]
fn a_healthy_canary_is_judged_on_every_node_s_figures_and_promoted_with_no_failed_request() {
    let c = Cluster::start(3);
    let (v1, loads) = six_on_v1(&c, CANARY, true);
    let jar = fixture::fixture_jar();
    let file = c.apps_file_toml(6, &jar, &["--version", "v2"], CANARY);
    c.ok(&c.nodes[1], &["apply", &file.display().to_string()]);
    let v2 = settled_on_a_new_release(&c, &c.nodes[2], &v1);
    none_failed(loads, &c.nodes, "canary");
    let r = wait_until_explained("the rollout done", Duration::from_secs(30), || {
        let r = rollout(&c, &c.nodes[0]);
        if r["state"] == "done" {
            Ok(r)
        } else {
            Err(format!("{r:#}"))
        }
    });
    assert_eq!(
        (r["release"].as_str(), r["strategy"].as_str()),
        (Some(v2.as_str()), Some("canary"))
    );
    // Every node started its new set at once: cleared in one step.
    let at: Vec<u64> = r["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["at_ms"].as_u64())
        .collect();
    assert_eq!(at.len(), 3, "{r:#}");
    assert!(at.iter().all(|t| *t == at[0]), "cleared together: {r:#}");
    // Both steps judged on the whole cluster's figures, with each node's.
    let verdicts = r["verdicts"].as_array().cloned().unwrap_or_default();
    assert_eq!(verdicts.len(), 2, "{r:#}");
    for (v, percent) in verdicts.iter().zip([20, 100]) {
        assert_eq!(v["passed"], true, "{v:#}");
        assert_eq!(v["percent"], percent, "{v:#}");
        assert!(
            v["figures"]
                .as_str()
                .unwrap_or_default()
                .starts_with("canary "),
            "{v:#}"
        );
        let nodes = v["nodes"].as_object().map(|m| m.len()).unwrap_or(0);
        assert_eq!(nodes, 3, "every node's figures: {v:#}");
    }
    let text = c.ok(&c.nodes[2], &["status"]);
    assert!(text.contains("canary step 1 (20 %) passed"), "{text}");
    // `history` on any node: its own deployment, and the release across the cluster with
    // each step and each node's figures.
    let text = c.ok(&c.nodes[1], &["history", "web"]);
    let across = text.split("ACROSS THE CLUSTER").nth(1).unwrap_or_default();
    assert!(
        across.contains("canary step 2 (100 %) passed")
            && c.nodes
                .iter()
                .all(|n| across.contains(&format!("{}: canary ", n.name))),
        "{text}"
    );
    // Each node's own history: a canary led by the cluster, succeeded.
    for n in &c.nodes {
        let history: Value = serde_json::from_str(&c.ok(n, &["history", "web", "-o", "json"]))
            .expect("history is JSON");
        let d = history["deployments"]
            .as_array()
            .and_then(|h| h.iter().find(|d| d["to"] == v2.as_str()))
            .cloned()
            .unwrap_or(Value::Null);
        assert_eq!(d["outcome"], "succeeded", "{}: {history:#}", n.name);
        assert!(
            d.to_string().contains("the cluster's step"),
            "{}: {d:#}",
            n.name
        );
    }
}

#[test]
fn a_canary_answering_30_percent_500s_is_rolled_back_on_every_node() {
    let c = Cluster::start(3);
    let (v1, loads) = six_on_v1(&c, CANARY, false);
    let jar = fixture::fixture_jar();
    let bad = c.apps_file_toml(6, &jar, &["--version", "v2", "--error-rate", "0.3"], CANARY);
    c.ok(&c.nodes[1], &["apply", &bad.display().to_string()]);
    let r = wait_until_explained(
        "the rollout rolled back and all 6 on v1 again",
        Duration::from_secs(180),
        || {
            let r = rollout(&c, &c.nodes[0]);
            let seen = instances(&c, &c.nodes[0]);
            match settled_release(&seen, 6) {
                Some(s) if s == v1 && r["state"] == "rolled-back" => Ok(r),
                _ => Err(format!("{seen:?} {r:#}")),
            }
        },
    );
    let why = r["why"].as_str().unwrap_or_default();
    assert!(
        why.contains("canary step 1 (20 %) failed on the whole cluster's figures"),
        "{why}"
    );
    assert_eq!(r["verdicts"][0]["passed"], false, "{r:#}");
    for l in &loads {
        l.wait_more(30);
    }
    let (mut ok, mut failed) = (0, 0);
    for l in loads {
        let t = l.finish();
        ok += t.ok;
        failed += t.failed;
    }
    let total = ok + failed;
    // Only the canary's 20 % share, of which 30 % fail, during the first step.
    assert!(failed > 0, "the canary did get traffic");
    assert!(
        (failed as f64) < 0.2 * 0.3 * total as f64 * 1.5 + 10.0,
        "{failed} of {total} failed: more than the first step's share"
    );
    // Every node's deployment of it rolled back, saying why.
    for n in &c.nodes {
        let history = c.ok(n, &["history", "web", "-o", "json"]);
        assert!(
            history.contains("failed on the whole cluster's figures"),
            "{}: {history}",
            n.name
        );
    }
}

#[test]
fn a_blue_green_release_switches_every_node_once_every_new_set_is_ready() {
    let c = Cluster::start(3);
    let (v1, loads) = six_on_v1(&c, BLUE_GREEN, true);
    let jar = fixture::fixture_jar();
    let file = c.apps_file_toml(6, &jar, &["--version", "v2"], BLUE_GREEN);
    c.ok(&c.nodes[2], &["apply", &file.display().to_string()]);
    let v2 = settled_on_a_new_release(&c, &c.nodes[0], &v1);
    none_failed(loads, &c.nodes, "switch");
    let leader = c.scheduler(&c.nodes[0]);
    let lead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    let events = c.ok(lead, &["events", "-n", "100000", "-o", "json"]);
    assert!(
        events.contains(&format!(
            "every node's new set of release {v2} is ready: every balancer switches to it"
        )),
        "{events}"
    );
    // Without `[cluster] tls`, another node's instance's logs are not served: said, with what
    // to do.
    let n0 = &c.nodes[0];
    let other = instances(&c, n0)
        .into_keys()
        .find(|(node, _)| *node != n0.name)
        .expect("an instance on another node");
    let out = c
        .lab
        .host(0)
        .command(crate::harness::jarfleet_bin())
        .args(["logs", &format!("web/{}", other.1)])
        .env("JARFLEET_STATE", &n0.state)
        .output()
        .expect("logs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("runs on node {}", other.0)) && stderr.contains("`[cluster] tls`"),
        "{stderr}"
    );
}

/// The scheduler's host dies during a canary's first step: the next scheduler carries the
/// canary on from its record, the dead host's slots are placed on the two others, and the
/// release ends on every slot; no request through the two others fails.
#[test]
fn the_scheduler_s_host_dying_mid_canary_leaves_the_next_scheduler_to_finish_it() {
    let c = Cluster::start(3);
    let jar = fixture::fixture_jar();
    let file = c.apps_file_toml(6, &jar, &["--version", "v1"], CANARY);
    c.ok(&c.nodes[0], &["apply", &file.display().to_string()]);
    c.wait_ready(&c.nodes[0], 6);
    let v1 = settled_release(&instances(&c, &c.nodes[1]), 6).expect("6 ready on one release");
    let leader = c.scheduler(&c.nodes[0]);
    let lead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    let alive: Vec<&Node> = c.nodes.iter().filter(|n| n.name != leader).collect();
    let loads: Vec<FrontLoad> = alive
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, false))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    let file = c.apps_file_toml(6, &jar, &["--version", "v2"], CANARY);
    c.ok(alive[0], &["apply", &file.display().to_string()]);
    wait_until_explained("the canary's first step", Duration::from_secs(120), || {
        let r = rollout(&c, alive[0]);
        if r["percent"] == 20 {
            Ok(())
        } else {
            Err(format!("{r:#}"))
        }
    });
    c.kill_host(lead);
    let r = wait_until_explained(
        "the rollout done and 6 ready on the new release on the two live hosts",
        Duration::from_secs(240),
        || {
            let r = rollout(&c, alive[0]);
            let seen = instances(&c, alive[0]);
            let on_live = seen.keys().all(|(n, _)| *n != leader);
            match settled_release(&seen, 6) {
                Some(s) if s != v1 && on_live && r["state"] == "done" => Ok(r),
                _ => Err(format!("{seen:?} {r:#}")),
            }
        },
    );
    assert_eq!(r["verdicts"].as_array().map(Vec::len), Some(2), "{r:#}");
    let new_leader = c.scheduler(alive[0]);
    assert_ne!(new_leader, leader, "the scheduler moved");
    none_failed(
        loads,
        alive.iter().copied(),
        &format!("death of {leader} mid-canary"),
    );
}

/// A canary with a `pause` step across the cluster waits for `jarfleet promote` given on any
/// node, then goes on on every node; another one is aborted from another node and rolled back
/// everywhere. No request fails.
#[test]
fn a_paused_canary_is_promoted_or_aborted_from_any_node() {
    let c = Cluster::start(3);
    let paused = CANARY.replace("max_p99_ratio = 20.0", "max_p99_ratio = 20.0, pause = [20]");
    let jar = fixture::fixture_jar();
    let file = c.apps_file_toml(6, &jar, &["--version", "v1"], &paused);
    c.ok(&c.nodes[0], &["apply", &file.display().to_string()]);
    c.wait_ready(&c.nodes[0], 6);
    let v1 = settled_release(&instances(&c, &c.nodes[1]), 6).expect("6 ready on one release");
    let loads: Vec<FrontLoad> = c
        .nodes
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, true))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    let wait_paused = |what: &str| {
        wait_until_explained(what, Duration::from_secs(120), || {
            let r = rollout(&c, &c.nodes[0]);
            if r["paused"] == true && r["state"] == "rolling" {
                Ok(r)
            } else {
                Err(format!("{r:#}"))
            }
        })
    };
    // v2: paused after its first step, promoted from node 2.
    let file = c.apps_file_toml(6, &jar, &["--version", "v2"], &paused);
    c.ok(&c.nodes[1], &["apply", &file.display().to_string()]);
    let r = wait_paused("the canary paused at 20 %");
    assert_eq!(r["percent"], 20, "{r:#}");
    let text = c.ok(&c.nodes[1], &["status"]);
    assert!(
        text.contains("paused at 20 %, waiting for `jarfleet promote web`"),
        "{text}"
    );
    c.ok(&c.nodes[2], &["promote", "web"]);
    let v2 = wait_until_explained("v2 on all 6", Duration::from_secs(120), || {
        let r = rollout(&c, &c.nodes[0]);
        match settled_release(&instances(&c, &c.nodes[0]), 6) {
            Some(s) if s != v1 && r["state"] == "done" => Ok(s),
            _ => Err(format!("{r:#}")),
        }
    });
    // v3: paused, then aborted from node 0: every node back on v2.
    let file = c.apps_file_toml(6, &jar, &["--version", "v3"], &paused);
    c.ok(&c.nodes[1], &["apply", &file.display().to_string()]);
    wait_paused("the v3 canary paused");
    c.ok(&c.nodes[0], &["abort", "web"]);
    let r = wait_until_explained(
        "v3 rolled back, all 6 on v2",
        Duration::from_secs(120),
        || {
            let r = rollout(&c, &c.nodes[0]);
            match settled_release(&instances(&c, &c.nodes[0]), 6) {
                Some(s) if s == v2 && r["state"] == "rolled-back" => Ok(r),
                _ => Err(format!("{r:#}")),
            }
        },
    );
    assert_eq!(r["why"], "aborted by the operator", "{r:#}");
    none_failed(loads, &c.nodes, "pause, the promote and the abort");
}
