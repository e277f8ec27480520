//! Mutual TLS between the nodes (`[cluster] tls`) on three hosts in network namespaces: etcd
//! serves only clients with a certificate of the cluster's CA, the nodes probe each other and
//! move jars over TLS; a node with another CA's certificate can neither join nor call a
//! peer's API, and both refusals are events.

use std::time::Duration;

use crate::cluster::{Cluster, pki_command};
use crate::cluster_rollout::{instances, settled_release};
use crate::fixture;
use crate::harness::wait_until_explained;

#[test]
fn with_tls_only_nodes_of_the_cluster_s_ca_join_and_are_served() {
    let c = Cluster::start_lab(4, 3, true);
    let (n0, n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2], &c.nodes[3]);
    // Instances listen on loopback only (`--bind 127.0.0.1`): the other nodes' balancers reach
    // them through each node's relay.
    assert_eq!(c.bind, "127.0.0.1");
    let jar = fixture::fixture_jar();
    c.ok(
        n0,
        &[
            "apply",
            &c.apps_file_args(3, &jar, &["--version", "v1"])
                .display()
                .to_string(),
        ],
    );
    c.wait_ready(n0, 3);
    let v1 = wait_until_explained("3 ready on one release", Duration::from_secs(60), || {
        settled_release(&instances(&c, n0), 3).ok_or("not settled".to_string())
    });
    // Nothing reaches an instance's port from outside its host.
    for ((node, slot), _) in instances(&c, n0) {
        let n = c.nodes.iter().find(|n| n.name == node).expect("its node");
        let port = instance_port(&c, n0, &node, slot);
        let direct = std::net::TcpStream::connect_timeout(
            &std::net::SocketAddr::new(n.ip.into(), port),
            Duration::from_secs(5),
        );
        assert!(
            direct.is_err(),
            "web/{slot} on {node} answers from outside its host"
        );
    }
    // Every host serves from every host's instances, POSTs included, through a rolling
    // deploy: the old instances' drains wait for the other nodes' connections through the
    // relays.
    let loads = c.warm_loads(&[n0, n1, n2], true);
    c.ok(
        n1,
        &[
            "apply",
            &c.apps_file_args(3, &jar, &["--version", "v2"])
                .display()
                .to_string(),
        ],
    );
    wait_until_explained(
        "3 ready on the new release",
        Duration::from_secs(180),
        || match settled_release(&instances(&c, n0), 3) {
            Some(r) if r != v1 => Ok(()),
            _ => Err(format!("{:?}", instances(&c, n0))),
        },
    );
    for l in &loads {
        l.wait_more(50);
    }
    // n1's daemon killed (`kill -9`) and started again: its relay runs in its load balancer's
    // process, which outlives the daemon; the new daemon takes it back in place (its count
    // goes on).
    let relayed_before = metric_value(
        &c.ok(n1, &["metrics"]),
        "jarfleet_cluster_relay_connections_total",
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.ok(n1, &["status", "-o", "json"])).expect("status");
    let daemon = status["daemon"]["pid"].as_u64().expect("the daemon's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon).expect("a pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL");
    c.ok(n1, &["up", "-d", &n1.spec.display().to_string()]);
    c.wait_ready(n0, 3);
    wait_until_explained(
        "n1 reached through its relay again",
        Duration::from_secs(60),
        || {
            let now = metric_value(
                &c.ok(n1, &["metrics"]),
                "jarfleet_cluster_relay_connections_total",
            );
            if now > relayed_before {
                Ok(())
            } else if now < relayed_before {
                panic!(
                    "n1's relay started over ({relayed_before} → {now}): it did not outlive the daemon"
                )
            } else {
                Err(format!("{now} connections"))
            }
        },
    );
    for l in &loads {
        l.wait_more(50);
    }
    for (l, n) in loads.into_iter().zip([n0, n1, n2]) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
    }
    // Each node's balancer sent requests to the other nodes' instances (through their relays:
    // nothing else reaches them), and each relay carried them.
    for n in [n0, n1, n2] {
        let metrics = c.ok(n, &["metrics"]);
        let remote: u64 = metrics
            .lines()
            .filter(|l| l.starts_with("jarfleet_cluster_remote_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        let ran_here = instances(&c, n0).keys().any(|(node, _)| node == &n.name);
        let relayed: u64 = metric_value(&metrics, "jarfleet_cluster_relay_connections_total");
        assert!(
            remote > 0,
            "{} sent nothing to other nodes:\n{metrics}",
            n.name
        );
        if ran_here {
            assert!(
                relayed > 0,
                "{}'s relay carried nothing:\n{metrics}",
                n.name
            );
        }
    }
    // An instance on another node: its logs through this node, its node asked over TLS.
    let status: serde_json::Value =
        serde_json::from_str(&c.ok(n0, &["status", "-o", "json"])).expect("status is JSON");
    let remote = status["cluster"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["node"] != n0.name.as_str() && i["state"] == "ready")
        .cloned()
        .expect("an instance on another node");
    let slot = remote["slot"].as_u64().expect("slot");
    let prefix = format!("web/{slot} | ");
    let past = c.ok(n0, &["logs", &format!("web/{slot}"), "-n", "50"]);
    assert!(
        past.contains(&format!("{prefix}listening on port")),
        "{past}"
    );
    let mut follow = c
        .lab
        .host(0)
        .command(crate::harness::jarfleet_bin())
        .args(["logs", &format!("web/{slot}"), "-f", "-n", "0"])
        .env("JARFLEET_STATE", &n0.state)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let rx = crate::harness::lines_of(stdout);
    let front = c.balancer(n0).to_string();
    let seen = wait_until_explained(
        "a followed line from the other node",
        Duration::from_secs(20),
        || {
            // The instance writes a line when asked (every instance gets asked in turn).
            let asked: Vec<String> = (0..3)
                .map(|_| match raw_get(&front, "/log?lines=1&size=30") {
                    Ok(()) => "ok".to_string(),
                    Err(e) => e.to_string(),
                })
                .collect();
            rx.recv_timeout(Duration::from_millis(300)).map_err(|e| {
                format!(
                    "no line yet ({e}); asked: {asked:?}; its last lines: {}",
                    c.ok(n0, &["logs", &format!("web/{slot}"), "-n", "3"])
                )
            })
        },
    );
    assert!(seen.starts_with(&format!("{prefix}line ")), "{seen}");
    let _ = follow.kill();
    let _ = follow.wait();

    // The jar went from node to node over TLS.
    let fetched = [n1, n2].iter().any(|n| {
        c.ok(n, &["events", "-n", "100000", "-o", "json"])
            .contains(&format!("fetched from https://{}:9901/", n0.ip))
    });
    assert!(fetched, "no node fetched the jar from n0 over https");

    // A stranger: a node whose certificate is another CA's (and which trusts only that CA).
    let pki = c.dir.path().join("pki");
    let other = pki.join("other-ca");
    let other_nodes = pki.join("other-nodes");
    pki_command(&[
        "cluster",
        "ca",
        "--name",
        "other",
        "--out",
        &other.display().to_string(),
    ]);
    pki_command(&[
        "cluster",
        "cert",
        "n3",
        "--ca-dir",
        &other.display().to_string(),
        "--address",
        &n3.ip.to_string(),
        "--out",
        &other_nodes.display().to_string(),
    ]);
    let spec = std::fs::read_to_string(&n3.spec).expect("n3's spec");
    let spec = spec
        .replace(
            &pki.join("ca").join("ca.pem").display().to_string(),
            &other.join("ca.pem").display().to_string(),
        )
        .replace(
            &pki.join("nodes").join("n3.pem").display().to_string(),
            &other_nodes.join("n3.pem").display().to_string(),
        )
        .replace(
            &pki.join("nodes").join("n3.key").display().to_string(),
            &other_nodes.join("n3.key").display().to_string(),
        );
    std::fs::write(&n3.spec, spec).expect("n3's spec");
    // Its daemon starts (a cluster it cannot reach is not a reason to stop), but it never
    // joins, and says why.
    c.ok(n3, &["up", "-d", &n3.spec.display().to_string()]);
    wait_until_explained(
        "n3 saying it cannot reach etcd",
        Duration::from_secs(60),
        || {
            let events = c.ok(n3, &["events", "-n", "1000", "-o", "json"]);
            if events.contains("cluster.unreachable") {
                Ok(())
            } else {
                Err(events)
            }
        },
    );
    let events = c.ok(n3, &["events", "-n", "1000", "-o", "json"]);
    assert!(
        events.to_lowercase().contains("certificate") || events.contains("UnknownIssuer"),
        "n3's refusal does not say it is the certificate: {events}"
    );
    let names: Vec<String> = c
        .ready_per_node(n0)
        .into_iter()
        .map(|(n, _, _)| n)
        .collect();
    assert!(!names.contains(&"n3".to_string()), "n3 joined: {names:?}");

    // Its certificate on n0's peer endpoint (from outside the hosts): refused, and said.
    let pem = |p: std::path::PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let chain = ureq::tls::Certificate::from_pem(&pem(other_nodes.join("n3.pem")))
        .expect("n3's certificate");
    let key = ureq::tls::PrivateKey::from_pem(&pem(other_nodes.join("n3.key"))).expect("n3's key");
    let cluster_ca =
        ureq::tls::Certificate::from_pem(&pem(pki.join("ca").join("ca.pem"))).expect("the CA");
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::from(vec![cluster_ca]))
        .client_cert(Some(ureq::tls::ClientCert::new_with_certs(&[chain], key)))
        .build();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let url = format!("https://{}:9901/v1/cluster/ping", n0.ip);
    let answer = agent.get(&url).call();
    assert!(answer.is_err(), "n0 answered a stranger: {answer:?}");
    wait_until_explained(
        "n0 saying it refused the stranger",
        Duration::from_secs(30),
        || {
            let events = c.ok(n0, &["events", "-n", "100000", "-o", "json"]);
            if events.contains("cluster.refused") {
                Ok(())
            } else {
                Err("no cluster.refused yet".into())
            }
        },
    );
    // Nor does n0's relay serve it: refused in the handshake, and counted.
    let relayed = agent.get(&format!("https://{}:9902/", n0.ip)).call();
    assert!(
        relayed.is_err(),
        "n0's relay answered a stranger: {relayed:?}"
    );
    wait_until_explained(
        "n0 counting the stranger its relay refused",
        Duration::from_secs(30),
        || {
            let metrics = c.ok(n0, &["metrics"]);
            let refused = metrics
                .lines()
                .find(|l| {
                    l.starts_with("jarfleet_cluster_relay_refused_total{")
                        && l.contains("reason=\"tls\"")
                })
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
            match refused {
                Some(n) if n > 0 => Ok(()),
                _ => Err(metrics),
            }
        },
    );
    // A plain-HTTP client gets nothing either.
    let plain = ureq::get(&format!("http://{}:9901/v1/cluster/ping", n0.ip))
        .config()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .call();
    assert!(plain.is_err(), "n0 answered plain HTTP: {plain:?}");
}

/// One GET to `addr` (`IP:PORT`), the answer ignored.
fn raw_get(addr: &str, path: &str) -> std::io::Result<()> {
    use std::io::{Read, Write};
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::other(format!("{addr}: {e}")))?;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    Ok(())
}

/// The port of `web/SLOT` on `node`, as `seer`'s status shows the cluster.
fn instance_port(c: &Cluster, seer: &crate::cluster::Node, node: &str, slot: u64) -> u16 {
    let status: serde_json::Value =
        serde_json::from_str(&c.ok(seer, &["status", "-o", "json"])).expect("status is JSON");
    status["cluster"]["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["node"] == node && i["slot"].as_u64() == Some(slot))
        .and_then(|i| i["port"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("no port for web/{slot} on {node}: {status}"))
}

/// The sum of a metric family's samples in a /metrics text.
fn metric_value(metrics: &str, family: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}
