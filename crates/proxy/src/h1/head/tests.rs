use super::*;

fn request(raw: &str) -> (usize, RequestHead, String) {
    let mut out = Vec::new();
    let (n, head) = parse_request(raw.as_bytes(), "127.0.0.9", &mut out)
        .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
        .expect("complete");
    (n, head, String::from_utf8(out).expect("utf-8"))
}

fn refused(raw: &str) -> HeadError {
    match parse_request(raw.as_bytes(), "1.2.3.4", &mut Vec::new()) {
        Err(e) => e,
        Ok(r) => panic!("{raw:?} accepted: {r:?}"),
    }
}

#[test]
fn request_headers_are_rewritten_for_the_backend() {
    let raw = "GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Private\r\n\
               X-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n\
               Accept: */*\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: https\r\n\
               X-Forwarded-Host: evil\r\n\r\nnext";
    let (n, head, out) = request(raw);
    assert_eq!(n, raw.len() - 4);
    assert!(head.keep_alive && head.idempotent && !head.is_head && !head.websocket);
    assert_eq!(head.body, Framing::None);
    assert_eq!(
        out,
        "GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 127.0.0.9\r\n\
         Accept: */*\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: shop.example\r\n\r\n"
    );
}

#[test]
fn the_proxy_writes_the_framing_line_last_and_can_replace_it() {
    let (_, h, out) = request("POST /p HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\nX-A: 1\r\n\r\n");
    assert_eq!(h.body, Framing::Length(5));
    assert!(!h.idempotent);
    assert!(
        out.ends_with("X-Forwarded-Host: h\r\nContent-Length: 5\r\n\r\n"),
        "{out}"
    );
    assert!(
        !out.contains("content-length"),
        "the client's spelling is not kept: {out}"
    );

    let raw = "PUT /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n";
    let mut out = Vec::new();
    let (_, h) = parse_request(raw.as_bytes(), "1.1.1.1", &mut out)
        .expect("valid")
        .expect("complete");
    assert_eq!(h.body, Framing::Chunked);
    assert!(h.expect_continue && !h.keep_alive);
    let text = String::from_utf8(out.clone()).expect("utf-8");
    assert!(
        text.ends_with("Transfer-Encoding: chunked\r\n\r\n"),
        "{text}"
    );
    assert!(!text.contains("Expect") && !text.contains("Connection"));
    reframe(&mut out, &h, Framing::Length(11));
    let text = String::from_utf8(out).expect("utf-8");
    assert!(
        text.ends_with("X-Forwarded-Host: h\r\nContent-Length: 11\r\n\r\n"),
        "{text}"
    );
    assert!(!text.contains("Transfer-Encoding"));

    let (_, h, out) = request("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(h.body, Framing::None);
    assert!(out.ends_with("Content-Length: 0\r\n\r\n"), "{out}");
}

#[test]
fn connection_can_never_remove_host_or_framing() {
    for conn in [
        "Content-Length",
        "content-length",
        "keep-alive, Content-Length",
        "Transfer-Encoding",
        "Host",
        "close, host, content-length, transfer-encoding",
    ] {
        let raw = format!(
            "POST /innocent HTTP/1.1\r\nHost: h\r\nConnection: {conn}\r\nContent-Length: 7\r\n\r\n"
        );
        let (_, h, out) = request(&raw);
        assert_eq!(h.body, Framing::Length(7), "{conn}");
        assert!(out.contains("\r\nHost: h\r\n"), "{conn}: {out}");
        assert!(out.ends_with("Content-Length: 7\r\n\r\n"), "{conn}: {out}");
    }
    let raw = "POST / HTTP/1.1\r\nHost: h\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (_, h, out) = request(raw);
    assert_eq!(h.body, Framing::Chunked);
    assert!(out.ends_with("Transfer-Encoding: chunked\r\n\r\n"), "{out}");
}

#[test]
fn http10_and_keep_alive() {
    let (_, h, out) = request("GET / HTTP/1.0\r\n\r\n");
    assert!(!h.keep_alive && h.minor == 0);
    assert!(out.starts_with("GET / HTTP/1.1\r\n"));
    assert!(
        !out.contains("X-Forwarded-Host"),
        "no Host, no X-Forwarded-Host: {out}"
    );
    let (_, h, _) = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert!(h.keep_alive);
}

#[test]
fn absolute_form_becomes_origin_form_with_its_authority_as_host() {
    let (_, _, out) = request("GET http://other.example:8080/p?q=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        out.starts_with("GET /p?q=1 HTTP/1.1\r\nHost: other.example:8080\r\n"),
        "{out}"
    );
    assert!(
        out.contains("X-Forwarded-Host: other.example:8080\r\n"),
        "{out}"
    );
    assert!(!out.contains("Host: x"), "{out}");
    let (_, _, out) = request("GET HTTP://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n");
    assert!(
        out.starts_with("GET / HTTP/1.1\r\nHost: a.example\r\n"),
        "{out}"
    );
    let (_, _, out) = request("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(out.starts_with("OPTIONS * HTTP/1.1\r\n"), "{out}");
}

#[test]
fn websocket_offers_are_passed_on_other_upgrades_dropped() {
    let raw = "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let (_, h, out) = request(raw);
    assert!(h.websocket);
    assert!(
        out.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"),
        "{out}"
    );
    assert!(
        out.ends_with("Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
        "{out}"
    );

    for raw in [
        "GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\n",
        "GET / HTTP/1.0\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    ] {
        let (_, h, out) = request(raw);
        assert!(!h.websocket, "{raw:?}");
        assert!(
            !out.contains("Upgrade") && !out.contains("HTTP2-Settings"),
            "{raw:?} → {out}"
        );
    }
}

#[test]
fn ambiguous_requests_are_refused_with_the_right_status() {
    let cases: &[(&str, u16)] = &[
        // Framing.
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1e3\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n",
            501,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
        ),
        ("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (
            "POST / HTTP/1.1\r\nHost: h\r\nContent_Length: 5\r\n\r\n",
            400,
        ),
        (
            "POST / HTTP/1.1\r\nHost: h\r\ntransfer_encoding: chunked\r\n\r\n",
            400,
        ),
        // Host.
        ("GET / HTTP/1.1\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost:\r\n\r\n", 400),
        ("get / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("Get / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        // Methods and targets.
        (
            "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
            405,
        ),
        ("TRACE / HTTP/1.1\r\nHost: h\r\n\r\n", 405),
        (
            "GET https://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            400,
        ),
        (
            "GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
            400,
        ),
        ("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        ("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400),
        // Not HTTP/1.x, as httparse says.
        ("GET / HTTP/2.0\r\n\r\n", 400),
        ("GET / HTTP/1.2\r\nHost: h\r\n\r\n", 400),
        ("GET /\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHo st: h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", 400),
        ("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400),
        ("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400),
    ];
    for (raw, status) in cases {
        let e = refused(raw);
        assert_eq!(e.status().0, *status, "{raw:?}: {e}");
    }
    let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(
        parse_request(big.as_bytes(), "1.2.3.4", &mut Vec::new()),
        Err(HeadError::TooLarge)
    );
    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: h\r\n\r\n",
        "a".repeat(MAX_REQUEST_LINE)
    );
    assert_eq!(refused(&long).status().0, 414);
    assert_eq!(
        refused(&long[..MAX_REQUEST_LINE + 2]).status().0,
        414,
        "also before the line ends"
    );
    let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: h\r\n{many}\r\n");
    assert_eq!(refused(&many).status().0, 431);
    assert_eq!(
        parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n", "1.2.3.4", &mut Vec::new()),
        Ok(None)
    );
}

#[test]
fn accepted_hosts() {
    for host in [
        "a.example",
        "a.example:8080",
        "127.0.0.1:1",
        "[::1]:9",
        "[fe80::1]",
        "xn--bcher-kva.example",
        "",
    ] {
        assert!(valid_host(host.as_bytes()), "{host:?}");
    }
}

fn response(raw: &str, req: &RequestHead) -> (ResponseHead, String) {
    let mut out = Vec::new();
    let (_, head) = parse_response(raw.as_bytes(), req, false, &mut out)
        .unwrap_or_else(|e| panic!("{raw:?} refused: {e}"))
        .expect("complete");
    (head, String::from_utf8(out).expect("utf-8"))
}

#[test]
fn responses_are_framed_for_the_client_by_the_proxy() {
    let (_, get11, _) = request("GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    let (_, get10, _) = request("GET / HTTP/1.0\r\n\r\n");
    let (_, head11, _) = request("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n");

    let (h, out) = response(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nKeep-Alive: timeout=5\r\nX-A: b\r\n\r\nhi",
        &get11,
    );
    assert_eq!(h.body, Framing::Length(2));
    assert!(h.reusable && h.client_keep_alive && !h.dechunk);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nX-A: b\r\nContent-Length: 2\r\n\r\n"
    );

    // `Connection` naming the length does not make the client lose the framing.
    let (h, out) = response(
        "HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\n",
        &get11,
    );
    assert_eq!(h.body, Framing::Length(2));
    assert!(out.contains("Content-Length: 2\r\n"), "{out}");

    let (h, out) = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &get11,
    );
    assert_eq!(h.body, Framing::Chunked);
    assert!(out.contains("Transfer-Encoding: chunked\r\n"));

    let (h, out) = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        &get11,
    );
    assert_eq!(h.body, Framing::Chunked);
    assert!(!out.contains("Content-Length"), "{out}");

    let (h, out) = response(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        &get10,
    );
    assert!(h.dechunk && !h.client_keep_alive);
    assert!(!out.contains("Transfer-Encoding") && out.contains("Connection: close\r\n"));

    let (h, out) = response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", &get11);
    assert_eq!(h.body, Framing::UntilClose);
    assert!(!h.reusable && !h.client_keep_alive);
    assert!(
        !out.contains("Transfer-Encoding") && out.contains("Connection: close\r\n"),
        "{out}"
    );

    let (h, out) = response("HTTP/1.0 200 OK\r\n\r\n", &get11);
    assert_eq!(h.body, Framing::UntilClose);
    assert!(!h.reusable && !h.client_keep_alive);
    assert!(out.contains("Connection: close\r\n"));

    let (h, out) = response("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", &head11);
    assert_eq!(h.body, Framing::None);
    assert!(h.reusable);
    assert!(
        out.contains("Content-Length: 99\r\n"),
        "HEAD keeps the length: {out}"
    );

    let (h, _) = response("HTTP/1.1 304 Not Modified\r\n\r\n", &get11);
    assert_eq!(h.body, Framing::None);
    let (h, out) = response(
        "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        &get11,
    );
    assert_eq!(h.body, Framing::None);
    assert!(!out.contains("Content-Length"), "{out}");

    let (h, _) = response(
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        &get11,
    );
    assert!(!h.reusable && h.client_keep_alive);

    let (h, _) = response("HTTP/1.1 100 Continue\r\n\r\n", &get11);
    assert_eq!(h.status, 100);

    let mut out = Vec::new();
    for bad in [
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    ] {
        assert!(
            parse_response(bad.as_bytes(), &get11, false, &mut out).is_err(),
            "{bad:?}"
        );
    }
}

#[test]
fn a_101_to_a_websocket_offer_opens_a_tunnel() {
    let (_, ws, _) = request(
        "GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\nSec-WebSocket-Version: 13\r\n\r\n",
    );
    let (h, out) = response(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: a\r\n\r\n",
        &ws,
    );
    assert!(h.upgraded && !h.reusable);
    assert_eq!(
        out,
        "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    );
    // Refused: the backend did not switch to WebSocket.
    let mut out = Vec::new();
    assert!(
        parse_response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
            &ws,
            false,
            &mut out
        )
        .is_err()
    );
}

#[test]
fn local_responses_are_complete() {
    let mut out = Vec::new();
    local_response(
        503,
        "Service Unavailable",
        "no ready backend\n",
        true,
        &mut out,
    );
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: 17\r\n\r\nno ready backend\n"
    );
}
