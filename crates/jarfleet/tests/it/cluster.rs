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
    /// Where the instances listen: on loopback only with TLS (the other nodes' balancers
    /// reach them through each node's relay), on every address without.
    pub bind: &'static str,
}

impl Cluster {
    /// `hosts` hosts and a 3-member etcd on the lab's bridge, every node up (`up -d` of a
    /// node spec with `[cluster]`, inside its host).
    pub(crate) fn start(hosts: usize) -> Cluster {
        Cluster::start_with(hosts, hosts)
    }

    /// `hosts` hosts of which only the first `up` run their node (the others join later with
    /// [`Cluster::up`]).
    pub(crate) fn start_with(hosts: usize, up: usize) -> Cluster {
        Cluster::start_lab(hosts, up, false)
    }

    /// `start_lab(hosts, up, true)`: [`Cluster::start_with`] with mutual TLS everywhere: the cluster's CA and every node's
    /// certificate made with `jarfleet cluster ca` / `cluster cert`, etcd serving only clients
    /// with a certificate of that CA, every node's `[cluster] tls` set. The CA is in
    /// `DIR/pki/ca`, each node's files in `DIR/pki/nodes`.
    pub(crate) fn start_lab(hosts: usize, up: usize, tls: bool) -> Cluster {
        Cluster::start_lab_daemon(hosts, up, tls, "")
    }

    /// [`Cluster::start_lab`] with `daemon` as more lines of every node's `[daemon]` table
    /// (`HOST_IP` in it stands for the node's address).
    pub(crate) fn start_lab_daemon(hosts: usize, up: usize, tls: bool, daemon: &str) -> Cluster {
        Cluster::start_lab_full(hosts, up, tls, daemon, "")
    }

    /// [`Cluster::start_lab_daemon`] with `cluster` as more lines of every node's `[cluster]`
    /// table (`memory = "1GiB"`).
    pub(crate) fn start_lab_full(
        hosts: usize,
        up: usize,
        tls: bool,
        daemon: &str,
        cluster: &str,
    ) -> Cluster {
        let lab = Lab::new(hosts).unwrap_or_else(|e| panic!("the network lab: {e}"));
        let dir = tempfile::Builder::new()
            .prefix("jfc")
            .tempdir()
            .expect("temp dir");
        let pki = dir.path().join("pki");
        let etcd = if tls {
            let ca = pki.join("ca");
            let certs = pki.join("nodes");
            pki_command(&["cluster", "ca", "--name", "lab", "--out", &path_str(&ca)]);
            let bridge = lab.bridge_ip().to_string();
            pki_command(&[
                "cluster",
                "cert",
                "etcd",
                "--ca-dir",
                &path_str(&ca),
                "--address",
                &bridge,
                "--out",
                &path_str(&certs),
            ]);
            let files = jarfleet_testkit::etcd_cluster::EtcdTls {
                ca: ca.join("ca.pem"),
                cert: certs.join("etcd.pem"),
                key: certs.join("etcd.key"),
            };
            EtcdCluster::start_tls(3, lab.bridge_ip(), files)
        } else {
            EtcdCluster::start(3, lab.bridge_ip())
        }
        .unwrap_or_else(|e| panic!("etcd: {e}"));
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
            let tls_line = if tls {
                let (ca, certs) = (pki.join("ca"), pki.join("nodes"));
                pki_command(&[
                    "cluster",
                    "cert",
                    &name,
                    "--ca-dir",
                    &path_str(&ca),
                    "--address",
                    &host.ip().to_string(),
                    "--out",
                    &path_str(&certs),
                ]);
                format!(
                    "tls = {{ ca = {:?}, cert = {:?}, key = {:?} }}\n",
                    path_str(&ca.join("ca.pem")),
                    path_str(&certs.join(format!("{name}.pem"))),
                    path_str(&certs.join(format!("{name}.key"))),
                )
            } else {
                String::new()
            };
            std::fs::write(
                &spec,
                format!(
                    "[daemon]\nstate_dir = {state:?}\n{daemon}\n\n[cluster]\nname = \"lab\"\netcd = [{}]\nnode = \"{name}\"\nadvertise = \"{ip}\"\nlease_ttl = \"6s\"\n{tls_line}{cluster}",
                    endpoints.join(", "),
                    state = state.display().to_string(),
                    ip = host.ip(),
                    daemon = daemon.replace("HOST_IP", &host.ip().to_string()),
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
            bind: if tls { "127.0.0.1" } else { "0.0.0.0" },
        };
        for n in &c.nodes[..up] {
            c.up(n);
        }
        // Every node registered before anything is applied (placement spreads over the nodes
        // that are up when it places).
        c.wait_nodes_ready(up);
        c
    }

    /// Starts `node`'s daemon (`up -d` of its node spec, inside its host).
    pub(crate) fn up(&self, node: &Node) {
        self.ok(
            node,
            &["up", "-d", "--wait", &node.spec.display().to_string()],
        );
    }

    /// Waits until the first node sees `hosts` nodes, all ready.
    pub(crate) fn wait_nodes_ready(&self, hosts: usize) {
        let c = self;
        wait_until_explained(
            &format!("{hosts} ready nodes"),
            Duration::from_secs(60),
            || {
                let seen = c.ready_per_node(&c.nodes[0]);
                if seen.len() == hosts && seen.iter().all(|(_, s, _)| s == "ready") {
                    Ok(())
                } else {
                    Err(format!("{seen:?}"))
                }
            },
        );
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

    /// The scheduler's node name, as `seer` sees the cluster.
    pub(crate) fn scheduler(&self, seer: &Node) -> String {
        self.nodes_seen_by(seer)["leader"]
            .as_str()
            .expect("a scheduler")
            .to_string()
    }

    /// `cluster nodes -o json` as `node` sees it.
    pub(crate) fn nodes_seen_by(&self, node: &Node) -> Value {
        serde_json::from_str(&self.ok(node, &["cluster", "nodes", "-o", "json"]))
            .expect("cluster nodes is JSON")
    }

    /// The apps file applied to the cluster: the fixture app `web`, listening on every host.
    pub(crate) fn apps_file(&self, instances: u32) -> PathBuf {
        self.apps_file_with(instances, &fixture::fixture_jar())
    }

    /// [`Cluster::apps_file`] running the jar at `jar`.
    pub(crate) fn apps_file_with(&self, instances: u32, jar: &std::path::Path) -> PathBuf {
        self.apps_file_args(instances, jar, &[])
    }

    /// [`Cluster::apps_file`] with more arguments for the fixture (a new release: `--version
    /// v2`).
    pub(crate) fn apps_file_args(
        &self,
        instances: u32,
        jar: &std::path::Path,
        more: &[&str],
    ) -> PathBuf {
        self.apps_file_toml(instances, jar, more, "")
    }

    /// [`Cluster::apps_file_args`] with more of the app's TOML after it (`[apps.web.deploy]`).
    pub(crate) fn apps_file_toml(
        &self,
        instances: u32,
        jar: &std::path::Path,
        more: &[&str],
        toml: &str,
    ) -> PathBuf {
        let path = self.dir.path().join("apps.toml");
        let args: String = ["--bind", self.bind]
            .iter()
            .chain(more)
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        std::fs::write(
            &path,
            format!(
                "[apps.web]\nartifact = {jar:?}\ninstances = {instances}\nports = \"{a}-{b}\"\nargs = [{args}]\nlisten = \"0.0.0.0:{listen}\"\njava = {{ opts = {opts}, fast_start = false }}\n\n[apps.web.health]\nhttp = \"/health\"\ninterval = \"500ms\"\n{toml}",
                jar = jar.display().to_string(),
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

    /// Keep-alive loads through each of `nodes`' balancers (2 clients and 1 that reconnects,
    /// POSTs too with `posts`), each once it has had 30 answers.
    pub(crate) fn warm_loads(&self, nodes: &[&Node], posts: bool) -> Vec<FrontLoad> {
        let loads: Vec<FrontLoad> = nodes
            .iter()
            .map(|n| FrontLoad::start_at(self.balancer(n), 2, 1, posts))
            .collect();
        for l in &loads {
            l.wait_more(30);
        }
        loads
    }

    /// Kills every process of `node`'s host outright (daemon, data plane, shims, JVMs).
    pub(crate) fn kill_host(&self, node: &Node) {
        self.lab
            .host(node.host)
            .kill_all()
            .unwrap_or_else(|e| panic!("killing host {}: {e}", node.name));
    }
}

fn path_str(p: &std::path::Path) -> String {
    p.display().to_string()
}

/// `jarfleet ARGS` that needs no daemon (the cluster's CA and certificates), with a deadline.
pub(crate) fn pki_command(args: &[&str]) -> String {
    let child = std::process::Command::new(jarfleet_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running jarfleet");
    let out = jarfleet_testkit::wait_with_deadline(
        child,
        &format!("jarfleet {args:?}"),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "jarfleet {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_scheduler_s_host_killed_outright_is_replaced_on_the_others_and_no_request_through_them_fails()
 {
    let c = Cluster::start(3);
    let apps = c.apps_file(4);
    let out = c.ok(&c.nodes[1], &["apply", &apps.display().to_string()]);
    assert!(out.contains("web"), "the plan names the app: {out}");

    // Placed across the hosts, 4 ready, every host serving the app.
    wait_until_explained(
        "4 ready instances across 3 ready nodes",
        Duration::from_secs(120),
        || {
            let seen = c.ready_per_node(&c.nodes[0]);
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
    let text = c.ok(&c.nodes[2], &["cluster", "nodes"]);
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

    // The scheduler's host dies outright, under load through the two others (GETs:
    // replayable).
    let leader = c.scheduler(&c.nodes[0]);
    let dead = c.nodes.iter().find(|n| n.name == leader).expect("a node");
    let alive: Vec<&Node> = c.nodes.iter().filter(|n| n.name != leader).collect();
    let loads: Vec<FrontLoad> = alive
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 3, 1, false))
        .collect();
    for l in &loads {
        l.wait_more(50);
    }
    let killed = Instant::now();
    c.kill_host(dead);
    wait_until_explained(
        "a new scheduler, the dead host down and its instances ready on the others",
        Duration::from_secs(60),
        || {
            let report = c.nodes_seen_by(alive[0]);
            let seen = c.ready_per_node(alive[0]);
            let ready: u64 = seen
                .iter()
                .filter(|(n, _, _)| *n != leader)
                .map(|(_, _, r)| r)
                .sum();
            let down = seen.iter().any(|(n, s, _)| *n == leader && s == "down");
            let new_leader = report["leader"].as_str().is_some_and(|l| l != leader);
            if ready == 4 && down && new_leader {
                Ok(())
            } else {
                Err(format!("{report}"))
            }
        },
    );
    let replaced_after = killed.elapsed();
    for l in &loads {
        l.wait_more(50);
    }
    for (l, n) in loads.into_iter().zip(&alive) {
        let t = l.finish();
        assert_eq!(
            t.failed, 0,
            "requests through {} failed while {leader} died (replaced after {replaced_after:?}): {:?}",
            n.name, t.errors
        );
        assert!(t.ok > 100, "too few requests through {}: {}", n.name, t.ok);
    }
    let metrics = c.ok(alive[0], &["metrics"]);
    crate::metrics::assert_promtool_accepts(&metrics);
    for line in [
        "jarfleet_cluster_nodes{state=\"down\"} 1",
        "jarfleet_cluster_nodes{state=\"ready\"} 2",
        "jarfleet_cluster_registered 1",
        "jarfleet_cluster_etcd_reachable 1",
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}:\n{metrics}");
    }
    let events =
        c.ok(alive[0], &["events", "-o", "json"]) + &c.ok(alive[1], &["events", "-o", "json"]);
    assert!(
        events.contains(&format!("node {leader} lost")),
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

    /// Watches the cluster for a whole lease (6 s) and a second more, then checks that the JVMs
    /// of `nodes` are still `before` (none restarted or moved) and that no slot was placed
    /// anew: what a fault shorter than a lease must leave.
    pub(crate) fn assert_still_after_a_lease(
        &self,
        nodes: &[&Node],
        before: &std::collections::BTreeMap<(String, u64), u64>,
        placed_before: usize,
    ) {
        let settle = Instant::now() + Duration::from_secs(7);
        while Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(200));
        }
        assert_eq!(self.jvms(nodes), *before, "something restarted or moved");
        let placed_after: usize = nodes.iter().map(|n| self.placements(n)).sum();
        assert_eq!(placed_after, placed_before, "something was placed anew");
    }

    /// How many `cluster.placed` events `node` recorded.
    pub(crate) fn placements(&self, node: &Node) -> usize {
        let text = self.ok(node, &["events", "-n", "100000", "-o", "json"]);
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

#[test]
fn a_partitioned_host_keeps_serving_is_replaced_and_after_the_heal_its_copy_is_drained_without_a_failure()
 {
    let c = Cluster::start(3);
    let apps = c.apps_file(3);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.ok(n0, &["apply", &apps.display().to_string()]);
    c.wait_ready(n0, 3);
    let before = c.jvms(&[n0, n1, n2]);
    let n2_slot = before
        .keys()
        .find(|(n, _)| n == "n2")
        .map(|(_, s)| *s)
        .expect("n2 runs an instance");
    // Clients of n0 and n1 from outside, and a client of n2 on n2 itself (it stays with its
    // host when the host is cut off).
    let outside: Vec<FrontLoad> = [n0, n1]
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, false))
        .collect();
    let listen = c.listen;
    let inside = c
        .lab
        .host(2)
        .run_in(move || {
            FrontLoad::start_at(SocketAddr::from(([127, 0, 0, 1], listen)), 2, 1, false)
        })
        .expect("a client inside n2");
    for l in outside.iter().chain([&inside]) {
        l.wait_more(30);
    }

    c.lab.host(2).cut().expect("cutting n2 off");
    // The majority re-places n2's slot once its lease expired; n2 serves on meanwhile.
    wait_until_explained(
        "n2 down for the others and its slot ready on n0 or n1",
        Duration::from_secs(60),
        || {
            let seen = c.ready_per_node(n0);
            let ready: u64 = seen
                .iter()
                .filter(|(n, _, _)| n != "n2")
                .map(|(_, _, r)| r)
                .sum();
            let down = seen.iter().any(|(n, s, _)| n == "n2" && s == "down");
            if ready == 3 && down {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    );
    let served = inside.answered();
    inside.wait_more(30);
    assert!(
        inside.answered() > served,
        "n2 stopped serving its own clients"
    );
    let during = c.jvms(&[n2]);
    assert_eq!(
        during.get(&("n2".to_string(), n2_slot)),
        before.get(&("n2".to_string(), n2_slot)),
        "n2's instance must keep running while it is cut off"
    );

    c.lab.host(2).heal().expect("healing n2");
    // n2 registers again, finds its slot placed elsewhere, and drains its copy once that one
    // is ready: three instances in all, none of the others restarted.
    wait_until_explained(
        "n2 back, ready, and running nothing",
        Duration::from_secs(60),
        || {
            let seen = c.ready_per_node(n0);
            let n2_back = seen.iter().any(|(n, s, _)| n == "n2" && s == "ready");
            let jvms = c.jvms(&[n2]);
            if n2_back && jvms.is_empty() {
                Ok(())
            } else {
                Err(format!("{seen:?}; n2 runs {jvms:?}"))
            }
        },
    );
    let after = c.jvms(&[n0, n1]);
    for (key, pid) in before.iter().filter(|(k, _)| k.0 != "n2") {
        assert_eq!(after.get(key), Some(pid), "{key:?} restarted: {after:?}");
    }
    assert_eq!(after.len(), 3, "{after:?}");
    for l in outside.iter().chain([&inside]) {
        l.wait_more(30);
    }
    for (l, who) in outside
        .into_iter()
        .chain([inside])
        .zip(["n0", "n1", "n2 (inside)"])
    {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {who}: {:?}", t.errors);
    }
    let events = c.ok(n2, &["events", "-o", "json"]);
    assert!(
        events.contains("cluster.moving"),
        "n2 said its copy moves:\n{events}"
    );
}

#[test]
fn a_frozen_daemon_and_a_short_link_cut_move_and_restart_nothing() {
    let c = Cluster::start(3);
    let apps = c.apps_file(3);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.ok(n0, &["apply", &apps.display().to_string()]);
    c.wait_ready(n0, 3);
    let before = c.jvms(&[n0, n1, n2]);
    let placed_before: usize = [n0, n1, n2].iter().map(|n| c.placements(n)).sum();
    let loads: Vec<FrontLoad> = [n0, n2]
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, false))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    // n1's daemon frozen for 3 s (half its lease).
    let status: Value = serde_json::from_str(&c.ok(n1, &["status", "-o", "json"])).expect("status");
    let daemon = status["daemon"]["pid"].as_u64().expect("the daemon's pid");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(daemon).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let frozen = Instant::now();
    while frozen.elapsed() < Duration::from_secs(3) {
        for l in &loads {
            let _ = l.answered();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    for l in &loads {
        l.wait_more(30);
    }
    // n2's link down for 3 s.
    c.lab.host(2).cut().expect("cut");
    let cut = Instant::now();
    while cut.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(100));
    }
    c.lab.host(2).heal().expect("heal");
    // Past a whole lease after both: nothing may have expired or moved.
    wait_until_explained("every node ready again", Duration::from_secs(30), || {
        let seen = c.ready_per_node(n0);
        if seen.iter().all(|(_, s, r)| s == "ready" && *r == 1) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    c.assert_still_after_a_lease(&[n0, n1, n2], &before, placed_before);
    for (l, n) in loads.into_iter().zip([n0, n2]) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
    }
}

#[test]
fn with_etcd_down_nothing_stops_applies_say_why_and_afterwards_they_go_through() {
    let mut c = Cluster::start(3);
    let apps = c.apps_file(3);
    c.ok(&c.nodes[0], &["apply", &apps.display().to_string()]);
    c.wait_ready(&c.nodes[0], 3);
    let all: Vec<&Node> = c.nodes.iter().collect();
    let before = c.jvms(&all);
    let loads: Vec<FrontLoad> = c
        .nodes
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, false))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    for i in 0..3 {
        c.etcd.kill(i);
    }
    // Three lease lifetimes without etcd.
    let out_since = Instant::now();
    let apps4 = c.apps_file(4);
    let mut cmd = c.lab.host(0).command(jarfleet_bin());
    cmd.args(["apply", &apps4.display().to_string()])
        .env("JARFLEET_STATE", &c.nodes[0].state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let refused = jarfleet_testkit::wait_with_deadline(
        cmd.spawn().expect("apply"),
        "apply while etcd is down",
        Duration::from_secs(60),
    );
    let err = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        !refused.status.success(),
        "an apply with etcd down succeeded"
    );
    assert!(
        err.contains("nothing was applied"),
        "the refusal says nothing was applied: {err}"
    );
    while out_since.elapsed() < Duration::from_secs(18) {
        for l in &loads {
            let _ = l.answered();
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let all: Vec<&Node> = c.nodes.iter().collect();
    assert_eq!(
        c.jvms(&all),
        before,
        "an instance stopped or restarted while etcd was down"
    );
    let metrics = c.ok(all[0], &["metrics"]);
    assert!(
        metrics.contains("jarfleet_cluster_etcd_reachable 0"),
        "/metrics says etcd is out of reach:\n{metrics}"
    );
    c.etcd
        .restart_all()
        .unwrap_or_else(|e| panic!("restarting etcd: {e}"));
    let nodes: Vec<&Node> = c.nodes.iter().collect();
    c.ok(nodes[1], &["apply", &apps4.display().to_string()]);
    c.wait_ready(nodes[0], 4);
    let after = c.jvms(&nodes);
    for (key, pid) in &before {
        assert_eq!(
            after.get(key),
            Some(pid),
            "{key:?} restarted after etcd came back"
        );
    }
    for (l, n) in loads.into_iter().zip(&nodes) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
    }
    let events = c.ok(nodes[0], &["events", "-o", "json"]);
    assert!(events.contains("cluster.unreachable"), "{events}");
}

#[test]
fn a_cluster_node_s_daemon_killed_comes_back_on_its_lease_and_nothing_moves_or_restarts() {
    let c = Cluster::start(3);
    let apps = c.apps_file(3);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.ok(n0, &["apply", &apps.display().to_string()]);
    c.wait_ready(n0, 3);
    let before = c.jvms(&[n0, n1, n2]);
    let placed_before: usize = [n0, n1, n2].iter().map(|n| c.placements(n)).sum();
    let loads: Vec<FrontLoad> = [n0, n1, n2]
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, false))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }
    let status: Value = serde_json::from_str(&c.ok(n1, &["status", "-o", "json"])).expect("status");
    let daemon = status["daemon"]["pid"].as_u64().expect("the daemon's pid");
    let lease_before = std::fs::read_to_string(n1.state.join("cluster.json")).expect("kept");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon).expect("a pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    // A new daemon from the same state dir, in the same host: it rejoins on its lease.
    c.ok(n1, &["up", "-d", &n1.spec.display().to_string()]);
    wait_until_explained("n1's daemon back, 3 ready", Duration::from_secs(60), || {
        let seen = c.ready_per_node(n1);
        if seen.iter().all(|(_, s, r)| s == "ready" && *r == 1) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let lease_after = std::fs::read_to_string(n1.state.join("cluster.json")).expect("kept");
    let lease = |text: &str| -> Value {
        serde_json::from_str::<Value>(text).expect("json")["lease"].clone()
    };
    assert_eq!(
        lease(&lease_before),
        lease(&lease_after),
        "a new lease: the cluster saw n1 go"
    );
    // A whole lease later nothing has moved or restarted.
    c.assert_still_after_a_lease(&[n0, n1, n2], &before, placed_before);
    for (l, n) in loads.into_iter().zip([n0, n1, n2]) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
    }
}

#[test]
fn an_ineligible_node_keeps_what_it_runs_and_gets_nothing_new() {
    let c = Cluster::start(3);
    let (n0, n1, n2) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    c.ok(n0, &["apply", &c.apps_file(3).display().to_string()]);
    c.wait_ready(n0, 3);
    let before = c.jvms(&[n2]);
    let out = c.ok(n1, &["cluster", "ineligible", "n2"]);
    assert!(out.contains("ineligible"), "{out}");
    wait_until_explained("n2 shown ineligible", Duration::from_secs(20), || {
        let seen = c.ready_per_node(n0);
        if seen.iter().any(|(n, s, _)| n == "n2" && s == "ineligible") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    c.ok(n0, &["apply", &c.apps_file(6).display().to_string()]);
    c.wait_ready(n0, 6);
    assert_eq!(
        c.jvms(&[n2]),
        before,
        "n2 got a new instance, or lost its own"
    );
    c.ok(n1, &["cluster", "eligible", "n2"]);
    wait_until_explained("n2 eligible again", Duration::from_secs(20), || {
        let seen = c.ready_per_node(n0);
        if seen.iter().any(|(n, s, _)| n == "n2" && s == "ready") {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let refused = c
        .lab
        .host(0)
        .command(jarfleet_bin())
        .args(["cluster", "ineligible", "nope"])
        .env("JARFLEET_STATE", &n0.state)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jarfleet");
    let out = jarfleet_testkit::wait_with_deadline(
        refused,
        "cluster ineligible nope",
        Duration::from_secs(30),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no node named"),
        "{out:?}"
    );
}

/// Whether a process with this pid is alive (the lab's hosts share the pid namespace).
fn alive(pid: u64) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn draining_a_node_moves_each_instance_ready_first_with_no_failed_request_and_undrain_takes_it_back()
 {
    let c = Cluster::start(3);
    let all: Vec<&Node> = c.nodes.iter().collect();
    c.ok(all[0], &["apply", &c.apps_file(4).display().to_string()]);
    c.wait_ready(all[0], 4);
    let before = c.jvms(&all);
    assert_eq!(before.len(), 4, "{before:?}");
    // The node with two of the four instances.
    let victim = *all
        .iter()
        .max_by_key(|n| before.keys().filter(|(node, _)| *node == n.name).count())
        .expect("nodes");
    let leaving: Vec<u64> = before
        .iter()
        .filter(|((node, _), _)| *node == victim.name)
        .map(|(_, pid)| *pid)
        .collect();
    assert_eq!(leaving.len(), 2, "{before:?}");
    let others: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| n.name != victim.name)
        .collect();
    // Keep-alive GETs and POSTs, and fresh connections, through every host's balancer.
    let loads: Vec<FrontLoad> = all
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 1, true))
        .collect();
    for l in &loads {
        l.wait_more(30);
    }

    // Drained from another node; the command follows it until the node runs nothing.
    let out = c.ok(
        others[0],
        &["cluster", "drain", &victim.name, "--deadline", "3m"],
    );
    assert!(
        out.contains(&format!("node {} drained in", victim.name)),
        "{out}"
    );
    // Its two JVMs are gone, four are ready elsewhere, and nothing on the others restarted.
    for pid in &leaving {
        assert!(!alive(*pid), "the drained node's JVM {pid} still runs");
    }
    c.wait_ready(others[0], 4);
    let after = c.jvms(&others);
    assert_eq!(after.len(), 4, "{after:?}");
    for (key, pid) in before.iter().filter(|((node, _), _)| *node != victim.name) {
        assert_eq!(
            after.get(key),
            Some(pid),
            "{key:?} restarted or moved: {after:?}"
        );
    }
    for l in &loads {
        l.wait_more(30);
    }
    let report = c.nodes_seen_by(all[0]);
    let shown = report["nodes"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["name"] == victim.name.as_str()))
        .cloned()
        .expect("the victim is listed");
    assert_eq!(shown["state"], "draining", "{shown}");
    assert_eq!(shown["instances"], 0, "{shown}");
    assert_eq!(shown["running"], 0, "{shown}");
    assert!(shown["drain_deadline_ms"].as_u64().is_some(), "{shown}");
    // Each move is in the events: placed elsewhere because of the drain, stopped after.
    let placed: usize = all
        .iter()
        .map(|n| {
            c.ok(n, &["events", "-n", "100000", "-o", "json"])
                .matches(&format!("(node {} drained)", victim.name))
                .count()
        })
        .sum();
    assert_eq!(placed, 2, "two placements for the drain");
    let victim_events = c.ok(victim, &["events", "-n", "100000", "-o", "json"]);
    assert_eq!(
        victim_events
            .matches("is drained and stopped here: replaced by its instance on node")
            .count(),
        2,
        "{victim_events}"
    );

    // Nothing new goes to a draining node.
    c.ok(all[1], &["apply", &c.apps_file(6).display().to_string()]);
    c.wait_ready(all[0], 6);
    assert!(
        c.jvms(&[victim]).is_empty(),
        "a draining node got an instance"
    );
    // Undrained, it is ready again, and the next new instance may go there.
    let out = c.ok(others[1], &["cluster", "undrain", &victim.name]);
    assert!(out.contains("no longer draining"), "{out}");
    c.ok(all[2], &["apply", &c.apps_file(7).display().to_string()]);
    c.wait_ready(all[0], 7);
    assert_eq!(
        c.jvms(&[victim]).len(),
        1,
        "the 7th instance goes to the emptiest node"
    );

    for (l, n) in loads.into_iter().zip(&all) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
        assert!(t.ok > 0, "through {}: nothing answered", n.name);
    }
    // /metrics on any node: the cluster's placements per node, and the traffic this node's
    // balancer sent to other nodes' instances (their backends are `web/SLOT@NODE#GEN`).
    let metrics = c.ok(others[0], &["metrics"]);
    crate::metrics::assert_promtool_accepts(&metrics);
    let placed = |node: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("jarfleet_cluster_placements{")
                    && l.contains(&format!("node=\"{node}\""))
                    && l.contains("app=\"web\"")
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
    };
    assert_eq!(placed(&victim.name), Some(1), "{metrics}");
    assert_eq!(
        placed(&others[0].name).unwrap_or(0) + placed(&others[1].name).unwrap_or(0),
        6,
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("jarfleet_proxy_requests_total{")
                && l.contains(&format!("@{}#", others[1].name))),
        "no traffic to another node's instance in /metrics:\n{metrics}"
    );
    // The same traffic summed per node it went to.
    let remote_requests = metrics
        .lines()
        .find(|l| {
            l.starts_with("jarfleet_cluster_remote_requests_total{")
                && l.contains(&format!("node=\"{}\"", others[1].name))
                && l.contains("app=\"web\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        remote_requests.is_some_and(|n| n > 0),
        "no cross-node traffic to {} in /metrics:\n{metrics}",
        others[1].name
    );
}

#[test]
fn a_release_applied_on_one_node_runs_on_the_others_from_its_digest_and_a_tampered_copy_is_refused()
{
    let c = Cluster::start_with(4, 3);
    let (n0, n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2], &c.nodes[3]);
    // The jar exists only where it is applied, and only until the apply returns.
    let jar = c.dir.path().join("only-here.jar");
    std::fs::copy(fixture::fixture_jar(), &jar).expect("a private copy of the jar");
    let digest = sha256_file(&jar);
    c.ok(
        n0,
        &["apply", &c.apps_file_with(3, &jar).display().to_string()],
    );
    std::fs::remove_file(&jar).expect("the jar removed");
    c.wait_ready(n0, 3);
    let blob = |n: &Node| n.state.join("cache").join("sha256").join(&digest);
    for n in [n0, n1, n2] {
        assert!(blob(n).is_file(), "{} has no copy in its cache", n.name);
    }
    let n0_url = format!("http://{}:9901/v1/cluster/artifacts/{digest}", n0.ip);
    for n in [n1, n2] {
        let events = c.ok(n, &["events", "-n", "100000", "-o", "json"]);
        assert!(
            events.contains("\"cluster.artifact\"")
                && events.contains(&format!("fetched from {n0_url}")),
            "{} did not fetch it from n0: {events}",
            n.name
        );
    }
    // Each runs it from its own copy.
    let history = c.ok(n1, &["history", "web", "-o", "json"]);
    assert!(
        history.contains(&blob(n1).display().to_string()),
        "n1 does not run its own copy: {history}"
    );
    let status: Value = serde_json::from_str(&c.ok(n1, &["status", "-o", "json"])).expect("json");
    // And `status` on any node shows the whole cluster's instances, each with its node.
    let mut seen: Vec<(String, String)> = status["cluster"]["instances"]
        .as_array()
        .expect("the cluster's instances")
        .iter()
        .map(|i| {
            (
                i["node"].as_str().unwrap_or_default().to_string(),
                i["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [n0, n1, n2]
            .iter()
            .map(|n| (n.name.clone(), "ready".to_string()))
            .collect::<Vec<_>>(),
        "{status}"
    );

    // n0's copy is replaced by other bytes (a new file: the JVM running the old one is not
    // touched). A node that joins now asks n0 first (the release was applied there), refuses
    // what it serves, and gets the jar from another node; it then takes over a lost host's
    // slot and runs it from that copy.
    let tampered = blob(n0).with_extension("tmp");
    let mut bytes = std::fs::read(blob(n0)).expect("n0's copy");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&tampered, &bytes).expect("tampered copy");
    std::fs::rename(&tampered, blob(n0)).expect("swapped in");
    c.up(n3);
    c.wait_nodes_ready(4);
    assert!(c.jvms(&[n2]).len() == 1, "n2 runs one instance");
    c.kill_host(n2);
    wait_until_explained("n2's slot ready on n3", Duration::from_secs(120), || {
        let seen = c.ready_per_node(n0);
        if seen.iter().any(|(n, _, r)| n == "n3" && *r == 1) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    assert_eq!(c.jvms(&[n3]).len(), 1, "n2's slot went to the empty node");
    assert_eq!(sha256_file(&blob(n3)), digest, "n3's copy is the release");
    let events = c.ok(n3, &["events", "-n", "100000", "-o", "json"]);
    assert!(
        events.contains(&format!(
            "{n0_url}: served a copy that does not match the digest: refused"
        )),
        "n3 did not refuse n0's copy: {events}"
    );
    // (It fetched the jar when it joined: every node prepares every app, for its balancer.)
    assert!(
        [n1, n2]
            .iter()
            .any(|n| events.contains(&format!("fetched from http://{}:9901/", n.ip))),
        "n3 did not get it from n1 or n2: {events}"
    );
}

fn sha256_file(path: &std::path::Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
