//! A node's peer endpoint serving its artifacts by digest: the real endpoint on 127.0.0.1,
//! asked by raw HTTP/1.1 (to see exactly what it answers) and by the fetcher the nodes use.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_cluster::Config;
use jarfleet_cluster::artifacts::{MAX_TRANSFERS, url};
use jarfleet_core::spec::ClusterSpec;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A peer endpoint serving `cache`, on its own runtime thread; returns its port.
fn endpoint(cache: &Path) -> (u16, tokio::runtime::Runtime) {
    let config = Config {
        spec: ClusterSpec {
            name: "t".into(),
            etcd: vec!["http://127.0.0.1:1".into()],
            node: Some("a".into()),
            advertise: "127.0.0.1".into(),
            peer_port: jarfleet_testkit::free_port(),
            relay_port: jarfleet_testkit::free_port(),
            labels: BTreeMap::new(),
            memory: None,
            lease_ttl: Duration::from_secs(6),
            probe_interval: Duration::from_millis(500),
            probe_timeout: Duration::from_millis(300),
            tls: None,
        },
        node: "a".into(),
        memory: 1 << 30,
        version: "test".into(),
        build: None,
        previous_lease: None,
        artifacts: Some(cache.to_path_buf()),
    };
    let port = config.spec.peer_port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = jarfleet_cluster::peers::bind(&config).await.expect("binds");
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            // The sender lives as long as the endpoint.
            let _tx = tx;
            let (notes, _) = tokio::sync::mpsc::unbounded_channel();
            jarfleet_cluster::peers::serve(listener, Arc::new(config), rx, None, None, notes).await;
        });
    });
    (port, rt)
}

/// One raw request; the answer's head and body.
fn raw(port: u16, request: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connects");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("sends");
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(all.len());
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let body = all.get(split + 4..).map(<[u8]>::to_vec).unwrap_or_default();
    (head, body)
}

fn get(port: u16, path: &str, extra: &str) -> (String, Vec<u8>) {
    raw(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: a\r\n{extra}Connection: close\r\n\r\n"),
    )
}

#[test]
fn artifacts_are_served_by_digest_whole_or_from_a_byte_and_nothing_else_is() {
    let dir = tempfile::tempdir().expect("dir");
    let content = bytes(300_000, 7);
    let digest = sha256(&content);
    std::fs::create_dir_all(dir.path().join("sha256")).expect("cache");
    std::fs::write(dir.path().join("sha256").join(&digest), &content).expect("blob");
    std::fs::write(dir.path().join("secret"), b"not an artifact").expect("other");
    let (port, _rt) = endpoint(dir.path());
    let path = format!("/v1/cluster/artifacts/{digest}");

    let (head, body) = get(port, &path, "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("etag: \"{digest}\"")), "{head}");
    assert_eq!(body, content);

    let (head, body) = get(
        port,
        &path,
        &format!("Range: bytes=100000-\r\nIf-Range: \"{digest}\"\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 206"), "{head}");
    assert!(
        head.contains("content-range: bytes 100000-299999/300000"),
        "{head}"
    );
    assert_eq!(body, content[100_000..]);
    // Another validator: the whole content.
    let (head, body) = get(port, &path, "Range: bytes=100000-\r\nIf-Range: \"v1\"\r\n");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body.len(), content.len());
    let (head, _) = get(port, &path, "Range: bytes=300000-\r\n");
    assert!(head.starts_with("HTTP/1.1 416"), "{head}");
    assert!(head.contains("content-range: bytes */300000"), "{head}");
    let (head, body) = raw(
        port,
        &format!("HEAD {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-length: 300000"), "{head}");
    assert!(body.is_empty());
    let (head, _) = raw(
        port,
        &format!("DELETE {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
    );
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");

    for bad in [
        "/v1/cluster/artifacts/secret".to_string(),
        "/v1/cluster/artifacts/../secret".to_string(),
        "/v1/cluster/artifacts/%2e%2e%2fsecret".to_string(),
        format!("/v1/cluster/artifacts/{}", digest.to_uppercase()),
        format!("/v1/cluster/artifacts/{}", sha256(b"absent")),
        "/v1/cluster/artifacts/".to_string(),
    ] {
        let (head, body) = get(port, &bad, "");
        assert!(head.starts_with("HTTP/1.1 404"), "{bad}: {head}");
        assert!(body.is_empty(), "{bad}");
    }
    // A link in the cache is not followed.
    let linked = sha256(b"linked");
    std::os::unix::fs::symlink(
        dir.path().join("secret"),
        dir.path().join("sha256").join(&linked),
    )
    .expect("symlink");
    let (head, _) = get(port, &format!("/v1/cluster/artifacts/{linked}"), "");
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    // The fetcher the nodes use gets it, checked, into its own cache.
    let theirs = tempfile::tempdir().expect("dir");
    let got = jarfleet_fetch::fetch_by_digest(
        &[url("127.0.0.1", port, &digest, false)],
        &digest,
        &jarfleet_fetch::FetchOptions::new(theirs.path()),
    )
    .expect("fetched");
    assert_eq!(std::fs::read(&got.fetched.path).expect("read"), content);
}

#[test]
fn transfers_beyond_the_limit_are_turned_away_and_probes_still_answer() {
    let dir = tempfile::tempdir().expect("dir");
    // Large enough that a client that does not read keeps its transfer open.
    let content = bytes(64 << 20, 3);
    let digest = sha256(&content);
    std::fs::create_dir_all(dir.path().join("sha256")).expect("cache");
    std::fs::write(dir.path().join("sha256").join(&digest), &content).expect("blob");
    let (port, _rt) = endpoint(dir.path());
    let path = format!("/v1/cluster/artifacts/{digest}");
    let mut stalled = Vec::new();
    for _ in 0..MAX_TRANSFERS {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes())
            .expect("sends");
        // Read the head, then stop reading.
        let mut first = [0u8; 12];
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("t");
        s.read_exact(&mut first).expect("an answer");
        assert_eq!(&first, b"HTTP/1.1 200");
        stalled.push(s);
    }
    let (head, _) = get(port, &path, "");
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("retry-after: 1"), "{head}");
    let (head, body) = get(port, "/v1/cluster/ping", "");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"node\":\"a\""));
    // A transfer's end frees its slot.
    drop(stalled.pop());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (head, body) = raw(
            port,
            &format!("HEAD {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"),
        );
        assert!(
            head.starts_with("HTTP/1.1 200") && body.is_empty(),
            "{head}"
        );
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connects");
        s.write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: a\r\nRange: bytes={}-\r\nConnection: close\r\n\r\n",
                content.len() - 10
            )
            .as_bytes(),
        )
        .expect("sends");
        let mut all = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("t");
        let _ = s.read_to_end(&mut all);
        if all.starts_with(b"HTTP/1.1 206") {
            assert!(all.ends_with(&content[content.len() - 10..]));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the slot was never freed: {}",
            String::from_utf8_lossy(&all[..all.len().min(200)])
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
