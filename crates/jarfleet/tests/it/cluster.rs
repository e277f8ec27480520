//! Cluster mode on several hosts: each host a network namespace of the test's own lab (its own
//! address on a bridge), a 3-member etcd on the bridge, a real `jarfleet` daemon per host
//! started with `up -d` inside its namespace, real JVMs, load from the root namespace through
//! every host's balancer. The lab, etcd and every process in it go when the test ends.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use jarfleet_testkit::etcd_cluster::EtcdCluster;
use jarfleet_testkit::netlab::Lab;
use serde_json::Value;

use crate::fixture;
use crate::front_door::FrontLoad;
use crate::harness::{JVM_OPTS, jarfleet_bin, wait_until_explained};

/// One host of the lab and its jarfleet node.
pub(crate) struct Node {
    pub name: String,
    pub ip: Ipv4Addr,
    pub state: PathBuf,
    pub spec: PathBuf,
    host: usize,
}

/// A lab of hosts, each a node of one cluster, with its etcd.
pub(crate) struct Cluster {
    pub nodes: Vec<Node>,
    pub etcd: EtcdCluster,
    pub lab: Lab,
    pub dir: tempfile::TempDir,
    /// The app's `listen` port (the same on every host) and its instances' port range.
    pub listen: u16,
    pub ports: (u16, u16),
}

impl Cluster {
    /// `hosts` hosts and a 3-member etcd on the lab's bridge, every node up (`up -d` of a
    /// node spec with `[cluster]`, inside its host).
    pub(crate) fn start(hosts: usize) -> Cluster {
        let lab = Lab::new(hosts).unwrap_or_else(|e| panic!("the network lab: {e}"));
        let etcd = EtcdCluster::start(3, lab.bridge_ip()).unwrap_or_else(|e| panic!("etcd: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("jfc")
            .tempdir()
            .expect("temp dir");
        let endpoints: Vec<String> = etcd
            .client_urls()
            .iter()
            .map(|u| format!("{u:?}"))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..hosts {
            let host = lab.host(i);
            let name = format!("n{i}");
            let root = dir.path().join(&name);
            std::fs::create_dir_all(&root).expect("node dir");
            let state = root.join("state");
            let spec = root.join("node.toml");
            std::fs::write(
                &spec,
                format!(
                    "[daemon]\nstate_dir = {state:?}\n\n[cluster]\nname = \"lab\"\netcd = [{}]\nnode = \"{name}\"\nadvertise = \"{ip}\"\nlease_ttl = \"6s\"\n",
                    endpoints.join(", "),
                    state = state.display().to_string(),
                    ip = host.ip(),
                ),
            )
            .expect("node spec");
            nodes.push(Node {
                name,
                ip: host.ip(),
                state,
                spec,
                host: i,
            });
        }
        // Ports the same on every host: each host has its own network stack.
        let listen = jarfleet_testkit::free_port();
        let ports = jarfleet_testkit::free_ports(20);
        let c = Cluster {
            nodes,
            etcd,
            lab,
            dir,
            listen,
            ports,
        };
        for n in &c.nodes {
            c.ok(n, &["up", "-d", "--wait", &n.spec.display().to_string()]);
        }
        c
    }

    /// Runs `jarfleet ARGS` against `node`'s daemon, inside its host; its stdout, or the test
    /// fails with both streams.
    pub(crate) fn ok(&self, node: &Node, args: &[&str]) -> String {
        let mut cmd = self.lab.host(node.host).command(jarfleet_bin());
        cmd.args(args)
            .env("JARFLEET_STATE", &node.state)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = cmd.spawn().expect("running jarfleet");
        let out = jarfleet_testkit::wait_with_deadline(
            child,
            &format!("jarfleet {args:?} on {}", node.name),
            Duration::from_secs(120),
        );
        assert!(
            out.status.success(),
            "jarfleet {args:?} on {} failed ({}):\nstdout: {}\nstderr: {}",
            node.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `cluster nodes -o json` as `node` sees it.
    pub(crate) fn nodes_seen_by(&self, node: &Node) -> Value {
        serde_json::from_str(&self.ok(node, &["cluster", "nodes", "-o", "json"]))
            .expect("cluster nodes is JSON")
    }

    /// The apps file applied to the cluster: the fixture app `web`, listening on every host.
    pub(crate) fn apps_file(&self, instances: u32) -> PathBuf {
        let path = self.dir.path().join("apps.toml");
        std::fs::write(
            &path,
            format!(
                "[apps.web]\nartifact = {jar:?}\ninstances = {instances}\nports = \"{a}-{b}\"\nargs = [\"--bind\", \"0.0.0.0\"]\nlisten = \"0.0.0.0:{listen}\"\njava = {{ opts = {opts}, fast_start = false }}\n\n[apps.web.health]\nhttp = \"/health\"\ninterval = \"500ms\"\n",
                jar = fixture::fixture_jar().display().to_string(),
                a = self.ports.0,
                b = self.ports.1,
                listen = self.listen,
                opts = JVM_OPTS,
            ),
        )
        .expect("apps file");
        path
    }

    /// Ready instances per node, as `seer` sees the cluster.
    pub(crate) fn ready_per_node(&self, seer: &Node) -> Vec<(String, String, u64)> {
        let report = self.nodes_seen_by(seer);
        report["nodes"]
            .as_array()
            .map(|nodes| {
                nodes
                    .iter()
                    .map(|n| {
                        (
                            n["name"].as_str().unwrap_or_default().to_string(),
                            n["state"].as_str().unwrap_or_default().to_string(),
                            n["ready"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn balancer(&self, node: &Node) -> SocketAddr {
        SocketAddr::from((node.ip, self.listen))
    }

    /// Kills every process of `node`'s host outright (daemon, data plane, shims, JVMs).
    pub(crate) fn kill_host(&self, node: &Node) {
        self.lab
            .host(node.host)
            .kill_all()
            .unwrap_or_else(|e| panic!("killing host {}: {e}", node.name));
    }
}

#[test]
fn a_host_killed_outright_is_replaced_on_the_others_and_no_request_through_them_fails() {
    let c = Cluster::start(3);
    let apps = c.apps_file(4);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let out = c.ok(n1, &["apply", &apps.display().to_string()]);
    assert!(out.contains("web"), "the plan names the app: {out}");

    // Placed across the hosts, 4 ready, every host serving the app.
    wait_until_explained(
        "4 ready instances across 3 ready nodes",
        Duration::from_secs(120),
        || {
            let seen = c.ready_per_node(n0);
            let ready: u64 = seen.iter().map(|(_, _, r)| r).sum();
            let all_up = seen.len() == 3 && seen.iter().all(|(_, s, _)| s == "ready");
            let spread = seen.iter().all(|(_, _, r)| *r >= 1);
            if ready == 4 && all_up && spread {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    let text = c.ok(n2, &["cluster", "nodes"]);
    for n in ["n0", "n1", "n2", "(scheduler)"] {
        assert!(text.contains(n), "`cluster nodes` names {n}:\n{text}");
    }
    // Every host's balancer answers, from instances on every host.
    for n in &c.nodes {
        let mut from = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let (status, body) = get(c.balancer(n), "/pid");
            assert_eq!(status, 200, "through {}: {body}", n.name);
            from.insert(body);
        }
        assert!(from.len() >= 3, "through {} only {from:?}", n.name);
    }

    // Load through n0 and n1 (GETs: replayable), then n2 dies outright.
    let loads = [
        FrontLoad::start_at(c.balancer(n0), 3, 1, false),
        FrontLoad::start_at(c.balancer(n1), 3, 1, false),
    ];
    for l in &loads {
        l.wait_more(50);
    }
    let killed = Instant::now();
    c.kill_host(n2);
    wait_until_explained(
        "n2 down and its instances ready on n0 and n1",
        Duration::from_secs(60),
        || {
            let seen = c.ready_per_node(n0);
            let ready: u64 = seen
                .iter()
                .filter(|(n, _, _)| n != "n2")
                .map(|(_, _, r)| r)
                .sum();
            let down = seen.iter().any(|(n, s, _)| n == "n2" && s == "down");
            if ready == 4 && down {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    let replaced_after = killed.elapsed();
    for l in &loads {
        l.wait_more(50);
    }
    for (l, n) in loads.into_iter().zip([n0, n1]) {
        let t = l.finish();
        assert_eq!(
            t.failed, 0,
            "requests through {} failed while n2 died (replaced after {replaced_after:?}): {:?}",
            n.name, t.errors
        );
        assert!(t.ok > 100, "too few requests through {}: {}", n.name, t.ok);
    }
    let events = c.ok(n0, &["events", "-o", "json"]);
    assert!(
        events.contains("node n2 lost"),
        "the re-placement is an event naming why:\n{events}"
    );
}

/// One GET of `path` through `addr`: the status and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connecting to {addr}: {e}"));
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .expect("sending");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

impl Cluster {
    /// Every ready JVM of `web` on every live node: (node, slot) → pid.
    pub(crate) fn jvms(&self, nodes: &[&Node]) -> std::collections::BTreeMap<(String, u64), u64> {
        let mut out = std::collections::BTreeMap::new();
        for n in nodes {
            let status: Value = serde_json::from_str(&self.ok(n, &["status", "-o", "json"]))
                .expect("status is JSON");
            for app in status["apps"].as_array().into_iter().flatten() {
                for i in app["instances"].as_array().into_iter().flatten() {
                    if let (Some(slot), Some(pid)) = (i["slot"].as_u64(), i["pid"].as_u64()) {
                        out.insert((n.name.clone(), slot), pid);
                    }
                }
            }
        }
        out
    }

    /// How many `cluster.placed` events `node` recorded.
    pub(crate) fn placements(&self, node: &Node) -> usize {
        let text = self.ok(node, &["events", "-o", "json"]);
        text.matches("\"cluster.placed\"").count()
    }

    /// Waits until `n` instances of `web` are ready across the cluster, as `seer` sees it.
    pub(crate) fn wait_ready(&self, seer: &Node, n: u64) {
        wait_until_explained(
            &format!("{n} ready instances"),
            Duration::from_secs(120),
            || {
                let seen = self.ready_per_node(seer);
                let ready: u64 = seen.iter().map(|(_, _, r)| r).sum();
                if ready == n {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        );
    }
}

#[test]
fn the_etcd_leader_killed_during_load_and_an_apply_moves_and_restarts_nothing() {
    let mut c = Cluster::start(3);
    let apps = c.apps_file(3);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.ok(n0, &["apply", &apps.display().to_string()]);
    c.wait_ready(n0, 3);
    let before = c.jvms(&[n0, n1, n2]);
    assert_eq!(before.len(), 3, "{before:?}");
    let placed_before: usize = [n0, n1, n2].iter().map(|n| c.placements(n)).sum();
    let loads: Vec<FrontLoad> = [n0, n1, n2]
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, true))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }

    let leader = c
        .etcd
        .wait_leader(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("no etcd leader: {e}"));
    c.etcd.kill(leader);
    // An apply right after the leader died (4 instances now): etcd's client fails over, the
    // apply goes through, and only the new slot is placed.
    let apps = c.apps_file(4);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.ok(n1, &["apply", &apps.display().to_string()]);
    c.wait_ready(n2, 4);
    // Two lease lifetimes under load after the leader's death: no lease may expire.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        for n in [n0, n1, n2] {
            let seen = c.ready_per_node(n);
            assert!(
                seen.iter().all(|(_, s, _)| s == "ready"),
                "a node went down or suspect while the etcd leader changed: {seen:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let after = c.jvms(&[n0, n1, n2]);
    for (key, pid) in &before {
        assert_eq!(
            after.get(key),
            Some(pid),
            "{key:?} restarted or moved: before {before:?}, after {after:?}"
        );
    }
    let placed_after: usize = [n0, n1, n2].iter().map(|n| c.placements(n)).sum();
    assert_eq!(
        placed_after,
        placed_before + 1,
        "only the new slot is placed (once)"
    );
    for (l, n) in loads.into_iter().zip([n0, n1, n2]) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
    }
}
