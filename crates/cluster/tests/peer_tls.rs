//! The peer endpoint with `[cluster] tls`, on a real socket: a node with a certificate of the
//! cluster's CA is served and its probe checks the peer's name; a client without one, with
//! another CA's, or speaking plain HTTP is refused, and each refusal is an event.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_cluster::logs::{LogAsk, LogLine};
use jarfleet_cluster::pki::{ca_files, issue_node, make_ca};
use jarfleet_cluster::tls::PeerTls;
use jarfleet_cluster::{Config, Note};
use jarfleet_core::events::EventKind;
use jarfleet_core::spec::{ClusterSpec, ClusterTlsSpec};
use tokio::sync::{mpsc, watch};

fn files(ca_dir: &Path, out: &Path, node: &str) -> ClusterTlsSpec {
    let (cert, key) = issue_node(ca_dir, node, &["127.0.0.1".parse().expect("ip")], out, 30)
        .expect("a node certificate");
    ClusterTlsSpec {
        ca: ca_files(ca_dir).0,
        cert,
        key,
    }
}

fn config(node: &str, port: u16, tls: Option<ClusterTlsSpec>, cache: &Path) -> Config {
    Config {
        spec: ClusterSpec {
            name: "lab".into(),
            etcd: vec!["http://127.0.0.1:1".into()],
            node: Some(node.into()),
            advertise: "127.0.0.1".into(),
            peer_port: port,
            relay_port: jarfleet_testkit::free_port(),
            labels: BTreeMap::new(),
            memory: None,
            lease_ttl: Duration::from_secs(6),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(300),
            tls,
        },
        node: node.into(),
        memory: 1 << 30,
        version: "test".into(),
        build: None,
        previous_lease: None,
        artifacts: Some(cache.to_path_buf()),
    }
}

/// Waits for the next refusal event (with a deadline).
async fn refusal(notes: &mut mpsc::UnboundedReceiver<Note>) -> String {
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(note) = notes.recv().await {
            if let Note::Event {
                kind: EventKind::ClusterRefused,
                message,
                ..
            } = note
            {
                return message;
            }
        }
        String::new()
    })
    .await;
    got.expect("a cluster.refused event within 10 s")
}

#[tokio::test]
async fn only_nodes_of_the_cluster_s_ca_are_served_and_every_refusal_is_an_event() {
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca");
    make_ca(&ca, "lab", 30).expect("the cluster's CA");
    let a = files(&ca, &dir.path().join("a"), "a");
    let b = files(&ca, &dir.path().join("b"), "b");
    let other_ca = dir.path().join("other-ca");
    make_ca(&other_ca, "other", 30).expect("another CA");
    let stranger = files(&other_ca, &dir.path().join("s"), "b");

    // A certificate for another node name does not load as this node's.
    let wrong = PeerTls::load(&b, "a").expect_err("b's certificate is not a's");
    assert!(wrong.contains("for node a"), "{wrong}");

    let port = jarfleet_testkit::free_port();
    let server_tls = Arc::new(PeerTls::load(&a, "a").expect("a's TLS"));
    // a serves one artifact from its cache.
    let cache = dir.path().join("cache");
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let digest = {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(&bytes);
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::create_dir_all(cache.join("sha256")).expect("cache");
    std::fs::write(cache.join("sha256").join(&digest), &bytes).expect("blob");
    let cfg = config("a", port, Some(a.clone()), &cache);
    let listener = jarfleet_cluster::peers::bind(&cfg).await.expect("binds");
    let (session_tx, session) = watch::channel(None);
    let (notes_tx, mut notes) = mpsc::unbounded_channel();
    // a's instance web/3 has two lines of log, then one more for whoever follows it.
    let logs: jarfleet_cluster::logs::LogSource = Arc::new(|ask: LogAsk| {
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            for (i, line) in ["one", "two", "three"].iter().enumerate() {
                if i == 2 && !ask.follow {
                    break;
                }
                let line = LogLine {
                    app: ask.app.clone(),
                    slot: ask.slot,
                    stream: "stdout".into(),
                    line: line.to_string(),
                };
                if tx.send(line).await.is_err() {
                    return;
                }
            }
        });
        rx
    });
    let server = tokio::spawn(jarfleet_cluster::peers::serve(
        listener,
        Arc::new(cfg),
        session,
        Some(server_tls),
        Some(logs),
        notes_tx,
    ));
    let limit = Duration::from_secs(5);
    let probe = |tls: Option<Arc<rustls::ClientConfig>>, name: &'static str| async move {
        jarfleet_cluster::peers::probe("127.0.0.1", port, "lab", name, limit, tls.as_ref()).await
    };

    // b, a node of the cluster, is served; a's certificate must name a.
    let b_tls = PeerTls::load(&b, "b").expect("b's TLS");
    assert!(
        probe(Some(b_tls.client.clone()), "a").await,
        "b's probe of a"
    );
    assert!(
        !probe(Some(b_tls.client.clone()), "c").await,
        "a's certificate taken for node c"
    );

    // Plain HTTP: refused, and said.
    assert!(!probe(None, "a").await, "a plain probe was served");
    let said = refusal(&mut notes).await;
    assert!(said.contains("from 127.0.0.1"), "{said}");

    // The same address is said once a minute: another CA's node, from 127.0.0.2.
    // (It trusts the cluster's CA, so only its own certificate is wrong.)
    let stranger_tls = jarfleet_cluster::pki::NodeTls::load(&a.ca, &stranger.cert, &stranger.key)
        .expect("stranger's files");
    let mut roots = rustls::RootCertStore::empty();
    for c in stranger_tls.ca.clone() {
        roots.add(c).expect("root");
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_client_auth_cert(stranger_tls.chain, stranger_tls.key.clone_key())
    .expect("client");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.2:0".parse().expect("addr"))
        .expect("bind 127.0.0.2");
    let stream = socket
        .connect(format!("127.0.0.1:{port}").parse().expect("addr"))
        .await
        .expect("connects");
    let handshake = tokio_rustls::TlsConnector::from(Arc::new(client))
        .connect(PeerTls::name_of("a").expect("name"), stream)
        .await;
    // TLS 1.3: the client may finish before the server refuses its certificate; either way
    // nothing is served.
    if let Ok(mut s) = handshake {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let _ = s
            .write_all(b"GET /v1/cluster/ping HTTP/1.1\r\nHost: a\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
        assert!(
            !String::from_utf8_lossy(&buf).contains("200 OK"),
            "served another CA's node"
        );
    }
    let said = refusal(&mut notes).await;
    assert!(said.contains("from 127.0.0.2"), "{said}");

    // An artifact by digest over TLS: b (its certificate presented, a's checked against the
    // cluster's CA and a's address) gets it; a client without a certificate gets nothing.
    let url = jarfleet_cluster::artifacts::url("127.0.0.1", port, &digest, true);
    let fetch = |client_cert: Option<(std::path::PathBuf, std::path::PathBuf)>, into: &str| {
        let (url, digest, ca) = (url.clone(), digest.clone(), a.ca.clone());
        let into = dir.path().join(into);
        tokio::task::spawn_blocking(move || {
            let mut opts = jarfleet_fetch::FetchOptions::new(into);
            opts.extra_ca = Some(ca);
            opts.client_cert = client_cert;
            opts.max_retries = 0;
            opts.timeout = Duration::from_secs(5);
            jarfleet_fetch::fetch_by_digest(&[url], &digest, &opts)
        })
    };
    let got = fetch(Some((b.cert.clone(), b.key.clone())), "b-cache")
        .await
        .expect("task")
        .expect("b fetched it over TLS");
    assert_eq!(std::fs::read(&got.fetched.path).expect("copy"), bytes);
    let refused = fetch(None, "anon-cache").await.expect("task");
    assert!(refused.is_err(), "fetched without a client certificate");

    // An instance's logs, followed by b over TLS; a stranger gets nothing.
    let ask = LogAsk {
        app: "web".into(),
        slot: 3,
        lines: 10,
        follow: true,
    };
    let mut lines =
        jarfleet_cluster::logs::follow("127.0.0.1", port, "a", &b_tls.client, &ask, limit)
            .await
            .expect("b follows a's logs");
    let mut got = Vec::new();
    while let Some(l) = tokio::time::timeout(limit, lines.recv())
        .await
        .expect("a line in time")
    {
        assert_eq!((l.app.as_str(), l.slot), ("web", 3));
        got.push(l.line);
    }
    assert_eq!(got, ["one", "two", "three"]);
    let wrong_node =
        jarfleet_cluster::logs::follow("127.0.0.1", port, "c", &b_tls.client, &ask, limit).await;
    assert!(wrong_node.is_err(), "a's certificate taken for node c");

    drop(session_tx);
    server.abort();
}

#[tokio::test]
async fn without_tls_a_node_serves_no_logs() {
    let dir = tempfile::tempdir().expect("dir");
    let port = jarfleet_testkit::free_port();
    let cfg = config("a", port, None, &dir.path().join("cache"));
    let listener = jarfleet_cluster::peers::bind(&cfg).await.expect("binds");
    let (_session_tx, session) = watch::channel(None);
    let (notes_tx, _notes) = mpsc::unbounded_channel();
    let logs: jarfleet_cluster::logs::LogSource = Arc::new(|_ask: LogAsk| {
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let _ = tx
                .send(LogLine {
                    app: "web".into(),
                    slot: 0,
                    stream: "stdout".into(),
                    line: "secret".into(),
                })
                .await;
        });
        rx
    });
    let server = tokio::spawn(jarfleet_cluster::peers::serve(
        listener,
        Arc::new(cfg),
        session,
        None,
        Some(logs),
        notes_tx,
    ));
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    s.write_all(
        b"GET /v1/cluster/logs?app=web&slot=0 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("asks");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(!answer.contains("secret"), "{answer}");
    server.abort();
}
