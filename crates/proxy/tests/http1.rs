//! The proxy's HTTP/1.1 handling seen from raw client sockets: framing it must translate,
//! requests it must refuse, and `Expect: 100-continue`.

mod helper;

use std::time::Duration;

use helper::*;
use jarfleet_proxy::Mode;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_chunked_response_passes_through_to_http11_and_is_dechunked_for_http10() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));

    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    s.write_all(b"GET /pieces HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let resp = read_to_close(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{resp}"
    );
    assert!(resp.ends_with("0\r\n\r\n"), "{resp:?}");

    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    s.write_all(b"GET /pieces HTTP/1.0\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let resp = read_to_close(&mut s).await;
    let (head, body) = resp.split_once("\r\n\r\n").expect("head and body");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    assert_eq!(body, "alpha-beta-gamma");
}

#[tokio::test]
async fn request_smuggling_shapes_and_oversized_heads_are_refused() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    for raw in [
        "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "GET / HTTP/1.1\r\nHo st: h\r\n\r\n",
    ] {
        let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
        s.write_all(raw.as_bytes()).await.expect("write");
        let resp = read_to_close(&mut s).await;
        assert!(resp.starts_with("HTTP/1.1 400 "), "{raw:?} → {resp}");
    }
    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    let big = format!(
        "GET / HTTP/1.1\r\nHost: h\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    // The proxy may answer and close before it has read all of it.
    let _ = s.write_all(big.as_bytes()).await;
    let resp = read_to_close(&mut s).await;
    assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
    assert_eq!(a.hits(), 0, "nothing reached the backend");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let a = TestBackend::start("a").await;
    let l = listener(Mode::Http, |_| {}).await;
    l.update(snapshot(&[&a]));
    let mut s = TcpStream::connect(l.local_addr()).await.expect("connect");
    s.write_all(
        b"PUT /sink HTTP/1.1\r\nHost: h\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    .await
    .expect("write");
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert!(
        interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n"),
        "{interim}"
    );
    s.write_all(b"hello world").await.expect("body");
    let resp = read_until(&mut s, "\r\n\r\n11").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    // The connection stays usable.
    s.write_all(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let resp = read_until(&mut s, "\r\n\r\na").await;
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    let _ = Duration::ZERO;
}
