//! The relay between the nodes' balancers over real sockets on 127.0.0.1: a balancer reaches
//! an instance of "another node" only through that node's relay, over mutual TLS with
//! certificates made here; the relay answers only for the instances in its snapshot and only
//! to clients of the cluster's CA.

mod helper;

use std::time::Duration;

use helper::*;
use jarfleet_proxy::relay::{RelayTls, Via};
use jarfleet_proxy::{Backend, BackendId, Listener, ListenerConfig, Mode, Snapshot};
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA and the certificates it signs for node names.
struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).expect("CA");
        Ca {
            der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        }
    }

    /// `node`'s TLS as a relay listener takes it: this CA, a certificate naming `node`.
    fn node(&self, node: &str) -> RelayTls {
        self.node_trusting(node, &self.der)
    }

    fn node_trusting(&self, node: &str, ca: &[u8]) -> RelayTls {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec![node.to_string()]).expect("params");
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &self.issuer).expect("cert");
        RelayTls {
            node: node.to_string(),
            ca: vec![ca.to_vec()],
            chain: vec![cert.der().to_vec()],
            key: key.serialize_der(),
        }
    }
}

async fn relay(tls: RelayTls, instances: &[(&str, &TestBackend)]) -> Listener {
    let mut cfg = ListenerConfig::new("relay", "127.0.0.1:0".parse().expect("addr"), Mode::Relay);
    cfg.relay_tls = Some(tls);
    cfg.timeouts.head = Duration::from_secs(2);
    let l = Listener::bind(cfg).await.expect("relay bind");
    l.update(Snapshot {
        backends: instances
            .iter()
            .map(|(id, b)| Backend::new(*id, b.addr))
            .collect(),
    });
    l
}

fn through(relay: &Listener, node: &str, target: &str, id: &str) -> Backend {
    let mut b = Backend::new(id, relay.local_addr());
    b.via = Some(Via {
        node: node.into(),
        target: target.into(),
    });
    b
}

/// One process plays both nodes here: the relay listener installs the process's client side
/// too, so every test uses one CA and node `n1`'s relay, reached as `n1`.
#[tokio::test]
async fn a_balancer_reaches_another_node_s_instances_only_through_its_relay() {
    let ca = Ca::new("cluster");
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let r = relay(ca.node("n1"), &[("web/0:1", &a), ("web/1:1", &b)]).await;
    let lb = listener(Mode::Http, |_| {}).await;
    lb.update(Snapshot {
        backends: vec![
            through(&r, "n1", "web/0:1", "web/0@n1#1"),
            through(&r, "n1", "web/1:1", "web/1@n1#1"),
        ],
    });
    // Keep-alive through the relay: each balancer connection is one relayed connection.
    let mut client = Client::connect(lb.local_addr()).await.expect("connect");
    let mut seen = String::new();
    for _ in 0..20 {
        let resp = client
            .request("POST", "/sink", "hello")
            .await
            .expect("answered");
        assert_eq!(resp.status, 200);
        seen.push_str(&resp.backend());
    }
    assert_eq!(seen, "ab".repeat(10), "round-robin through the relay");
    let relay_stats = r.stats();
    let conns: u64 = relay_stats
        .backends
        .iter()
        .map(|b| b.counters.connections)
        .sum();
    assert_eq!(conns, 2, "pooled: one relayed connection per instance");
    // The relay counts the connections other nodes hold through it, as in flight: a stopping
    // instance's drain waits for them.
    assert_eq!(r.in_flight(&BackendId::from("web/0:1")), 1);
    // Gone from the balancer's snapshot: its pooled connection closes, and so the relayed one.
    lb.update(Snapshot {
        backends: vec![through(&r, "n1", "web/1:1", "web/1@n1#1")],
    });
    wait_until("the relayed connection to web/0 closes", || {
        r.in_flight(&BackendId::from("web/0:1")) == 0
    })
    .await;
    assert!(
        r.drained(&BackendId::from("web/0:1"), Duration::from_secs(1))
            .await
    );

    // An instance that dies (`kill -9`) with a pooled connection through the relay: the relay
    // closes its side, the balancer finds the pooled connection closed and no POST is lost.
    lb.update(Snapshot {
        backends: vec![
            through(&r, "n1", "web/0:1", "web/0@n1#1"),
            through(&r, "n1", "web/1:1", "web/1@n1#1"),
        ],
    });
    let mut client = Client::connect(lb.local_addr()).await.expect("connect");
    for _ in 0..4 {
        client.get("/").await.expect("warm the pool");
    }
    b.kill();
    wait_until("the relayed connection to the dead one closes", || {
        r.in_flight(&BackendId::from("web/1:1")) == 0
    })
    .await;
    for _ in 0..10 {
        let resp = client
            .request("POST", "/sink", "x")
            .await
            .expect("answered");
        assert_eq!((resp.status, resp.backend().as_str()), (200, "a"));
    }
}

#[tokio::test]
async fn a_refused_name_is_a_connect_failure_and_the_request_goes_elsewhere() {
    let ca = Ca::new("cluster");
    let a = TestBackend::start("a").await;
    let gone = dead_addr().await;
    let r = relay(ca.node("n1"), &[("web/0:1", &a)]).await;
    // `web/1:1` is in the relay's snapshot but its instance is gone; `web/9:1` is not there.
    r.update(Snapshot {
        backends: vec![
            Backend::new("web/0:1", a.addr),
            Backend::new("web/1:1", gone),
        ],
    });
    let lb = listener(Mode::Http, |_| {}).await;
    lb.update(Snapshot {
        backends: vec![
            through(&r, "n1", "web/9:1", "web/9@n1#1"),
            through(&r, "n1", "web/1:1", "web/1@n1#1"),
            through(&r, "n1", "web/0:1", "web/0@n1#1"),
        ],
    });
    // POSTs are not replayable: they go elsewhere only because nothing was sent.
    for _ in 0..6 {
        let mut c = Client::connect(lb.local_addr()).await.expect("connect");
        let resp = c.request("POST", "/sink", "x").await.expect("answered");
        assert_eq!((resp.status, resp.backend().as_str()), (200, "a"));
    }
    let stats = lb.stats();
    for id in ["web/9@n1#1", "web/1@n1#1"] {
        let b = stats
            .backends
            .iter()
            .find(|b| b.id == id)
            .expect("in stats");
        assert_eq!(b.ejected_reason.as_deref(), Some("connect"), "{id}");
    }
    assert!(r.stats().no_backend >= 1, "the unknown name was refused");
}

#[tokio::test]
async fn the_relay_takes_only_nodes_of_the_cluster_and_names_of_its_instances() {
    let ca = Ca::new("cluster");
    let a = TestBackend::start("a").await;
    let r = relay(ca.node("n1"), &[("web/0:1", &a)]).await;
    let addr = r.local_addr();

    // Plain text: the handshake fails, nothing is relayed.
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"JFRELAY/1 web/0:1\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut s).await;
    assert!(!got.contains("HTTP/1.1"), "plain text was relayed: {got}");

    // A client with another CA's certificate (trusting the cluster's CA, so it would accept
    // the relay): refused in the handshake, and counted.
    let stranger = Ca::new("stranger").node_trusting("n0", &ca.der);
    let stranger_tls = stranger.mutual().expect("stranger's configs");
    let connector = tokio_rustls::TlsConnector::from(stranger_tls.client);
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let refused = async {
        let mut tls = connector
            .connect("n1".try_into().expect("name"), tcp)
            .await?;
        tls.write_all(b"JFRELAY/1 web/0:1\n").await?;
        tls.flush().await?;
        let mut buf = [0u8; 16];
        let n = tls.read(&mut buf).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
    }
    .await;
    assert!(
        !matches!(&refused, Ok(s) if s.starts_with("OK")),
        "a stranger was served: {refused:?}"
    );
    wait_until("the refusal counted", || r.stats().front.tls_refused >= 1).await;

    // A node of the cluster asking for anything but an instance of the snapshot — another
    // port of this host, a path, garbage — gets `NO` and a closed connection.
    let member = ca.node("n0").mutual().expect("member's configs");
    let connector = tokio_rustls::TlsConnector::from(member.client);
    for line in [
        format!("JFRELAY/1 127.0.0.1:{}\n", a.addr.port()),
        "JFRELAY/1 web/0:2\n".to_string(),
        "JFRELAY/1 ../web/0:1\n".to_string(),
        "GET / HTTP/1.1\n".to_string(),
        format!("JFRELAY/1 {}\n", "w".repeat(300)),
    ] {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let mut tls = connector
            .connect("n1".try_into().expect("name"), tcp)
            .await
            .expect("a member's handshake");
        tls.write_all(line.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("NO "), "{line:?} → {got:?}");
    }
    // One that says nothing after the handshake is closed at the head timeout.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .connect("n1".try_into().expect("name"), tcp)
        .await
        .expect("handshake");
    tls.write_all(b"JFRELAY/1 web").await.expect("write");
    let mut got = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "a silent client was never closed");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(a.hits(), 0, "nothing reached the instance");

    // The relay's certificate must name the node the balancer meant to reach.
    let lb = listener(Mode::Http, |_| {}).await;
    lb.update(Snapshot {
        backends: vec![through(&r, "n2", "web/0:1", "web/0@n2#1")],
    });
    let resp = get(lb.local_addr(), "/").await;
    assert_eq!(resp.status, 502, "{}", resp.body);
    assert_eq!(a.hits(), 0);
}

#[tokio::test]
async fn tcp_mode_and_websocket_style_tunnels_cross_the_relay_too() {
    let ca = Ca::new("cluster");
    let a = TestBackend::start("a").await;
    let r = relay(ca.node("n1"), &[("db/0:1", &a)]).await;
    let lb = listener(Mode::Tcp, |_| {}).await;
    lb.update(Snapshot {
        backends: vec![through(&r, "n1", "db/0:1", "db/0@n1#1")],
    });
    let mut s = TcpStream::connect(lb.local_addr()).await.expect("connect");
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let got = read_to_close(&mut s).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(a.hits(), 1);
}
