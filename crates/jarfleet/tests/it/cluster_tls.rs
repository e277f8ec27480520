//! Mutual TLS between the nodes (`[cluster] tls`) on three hosts in network namespaces: etcd
//! serves only clients with a certificate of the cluster's CA, the nodes probe each other and
//! move jars over TLS; a node with another CA's certificate can neither join nor call a
//! peer's API, and both refusals are events.

use std::time::Duration;

use crate::cluster::{Cluster, pki_command};
use crate::front_door::FrontLoad;
use crate::harness::wait_until_explained;

#[test]
fn with_tls_only_nodes_of_the_cluster_s_ca_join_and_are_served() {
    let c = Cluster::start_lab(4, 3, true);
    let (n0, n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2], &c.nodes[3]);
    c.ok(n0, &["apply", &c.apps_file(3).display().to_string()]);
    c.wait_ready(n0, 3);
    // Every host serves from every host's instances.
    let loads: Vec<FrontLoad> = [n0, n1, n2]
        .iter()
        .map(|n| FrontLoad::start_at(c.balancer(n), 2, 0, false))
        .collect();
    for l in &loads {
        l.wait_more(50);
    }
    for (l, n) in loads.into_iter().zip([n0, n1, n2]) {
        let t = l.finish();
        assert_eq!(t.failed, 0, "through {}: {:?}", n.name, t.errors);
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
    let target = format!(
        "{}:{}",
        remote["address"].as_str().expect("address"),
        remote["port"].as_u64().expect("port")
    );
    let seen = wait_until_explained(
        "a followed line from the other node",
        Duration::from_secs(20),
        || {
            // The instance writes a line when asked.
            let _ = raw_get(&target, "/log?lines=1&size=30");
            rx.recv_timeout(Duration::from_millis(300))
                .map_err(|e| format!("no line yet: {e}"))
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
