//! Request and response heads: parsed with `httparse` and rewritten for the other side in one
//! pass, straight into an output buffer (no header map, no per-header allocation).
//!
//! Requests going to a backend: hop-by-hop headers and those named in `Connection` are
//! dropped, `X-Forwarded-For` gets the client's address appended (earlier values kept, in
//! order), `X-Forwarded-Proto` and `X-Forwarded-Host` are set, `Expect: 100-continue` is answered
//! by the proxy itself (like nginx) and not forwarded, and the request line is always HTTP/1.1
//! so that backend connections stay alive. Header names keep the client's spelling.
//!
//! Responses going to a client: hop-by-hop headers dropped, the body framing chosen for the
//! client (a chunked body to an HTTP/1.0 client is de-chunked and the connection closed), and
//! `Connection: close` / `keep-alive` written when needed.

use std::fmt::Write as _;

pub const MAX_HEADERS: usize = 128;
/// Heads larger than this are refused (431 for requests, 502 for responses).
pub const MAX_HEAD: usize = 64 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Until the sender closes the connection (responses only).
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// RFC 9110 idempotent method: safe to send again when no response byte came.
    pub idempotent: bool,
    pub is_head: bool,
    /// HTTP/1.x minor version of the client.
    pub minor: u8,
    pub body: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before it sends the body.
    pub expect_continue: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not valid HTTP/1.x (400 / 502).
    Invalid(String),
    /// Larger than [`MAX_HEAD`] or more than [`MAX_HEADERS`] headers (431 / 502).
    TooLarge,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Invalid(s) => f.write_str(s),
            HeadError::TooLarge => write!(
                f,
                "head larger than {} KiB or with more than {MAX_HEADERS} headers",
                MAX_HEAD / 1024
            ),
        }
    }
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        e => HeadError::Invalid(e.to_string()),
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 8] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// The `Connection` header's tokens of interest: close, keep-alive, and the header names it
/// lists (which are dropped too).
#[derive(Default)]
struct ConnectionTokens<'a> {
    close: bool,
    keep_alive: bool,
    named: Vec<&'a str>,
}

impl<'a> ConnectionTokens<'a> {
    fn read(headers: &[httparse::Header<'a>]) -> ConnectionTokens<'a> {
        let mut t = ConnectionTokens::default();
        for h in headers {
            if !h.name.eq_ignore_ascii_case("connection") {
                continue;
            }
            let Ok(v) = std::str::from_utf8(h.value) else {
                continue;
            };
            for tok in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if tok.eq_ignore_ascii_case("close") {
                    t.close = true;
                } else if tok.eq_ignore_ascii_case("keep-alive") {
                    t.keep_alive = true;
                } else {
                    t.named.push(tok);
                }
            }
        }
        t
    }

    fn names(&self, name: &str) -> bool {
        self.named.iter().any(|n| n.eq_ignore_ascii_case(name))
    }
}

/// Body framing from `Transfer-Encoding` and `Content-Length`, as RFC 9112 §6.3 says.
/// `Ok(None)`: neither header.
fn body_framing(
    headers: &[httparse::Header<'_>],
    request: bool,
) -> Result<Option<Framing>, String> {
    let mut te_last_chunked = None;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let v = std::str::from_utf8(h.value).map_err(|_| "bad Transfer-Encoding")?;
            if let Some(last) = v.split(',').map(str::trim).rfind(|s| !s.is_empty()) {
                te_last_chunked = Some(last.eq_ignore_ascii_case("chunked"));
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let v = std::str::from_utf8(h.value).map_err(|_| "bad Content-Length")?;
            for part in v.split(',').map(str::trim) {
                if part.is_empty() || part.len() > 18 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(format!("bad Content-Length {part:?}"));
                }
                let n: u64 = part
                    .parse()
                    .map_err(|_| format!("bad Content-Length {part:?}"))?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length values".into());
                }
                length = Some(n);
            }
        }
    }
    match (te_last_chunked, length) {
        (Some(_), Some(_)) if request => {
            Err("both Transfer-Encoding and Content-Length (refused: request smuggling)".into())
        }
        (Some(true), _) => Ok(Some(Framing::Chunked)),
        (Some(false), _) if request => Err("Transfer-Encoding without chunked last".into()),
        (Some(false), _) => Ok(Some(Framing::UntilClose)),
        (None, Some(0)) => Ok(Some(Framing::None)),
        (None, Some(n)) => Ok(Some(Framing::Length(n))),
        (None, None) => Ok(None),
    }
}

/// Parses a request head at the start of `buf`. On success writes the head for the backend
/// into `out` (cleared first) and returns the head's length in `buf`. `Ok(None)`: incomplete.
pub fn parse_request(
    buf: &[u8],
    client_ip: &str,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, RequestHead)>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let len = match req.parse(buf).map_err(parse_error)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(HeadError::Invalid("incomplete request line".into()));
    };
    let headers = req.headers;
    let conn = ConnectionTokens::read(headers);
    let body = body_framing(headers, true).map_err(HeadError::Invalid)?;
    if minor == 0 && body == Some(Framing::Chunked) {
        return Err(HeadError::Invalid(
            "chunked Transfer-Encoding in an HTTP/1.0 request".into(),
        ));
    }
    let body = body.unwrap_or(Framing::None);
    let keep_alive = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut expect_continue = false;
    let mut host: Option<&[u8]> = None;
    let mut xff_seen = false;
    for h in headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name) && !name.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        if conn.names(name)
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("expect") {
            if h.value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
                continue;
            }
        } else if name.eq_ignore_ascii_case("host") {
            host = Some(h.value);
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            // All earlier hops in one header, in order, then this client.
            if xff_seen {
                continue;
            }
            xff_seen = true;
            out.extend_from_slice(b"X-Forwarded-For: ");
            let mut first = true;
            for v in headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            {
                if !first {
                    out.extend_from_slice(b", ");
                }
                out.extend_from_slice(v.value);
                first = false;
            }
            out.extend_from_slice(b", ");
            out.extend_from_slice(client_ip.as_bytes());
            out.extend_from_slice(b"\r\n");
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !xff_seen {
        out.extend_from_slice(b"X-Forwarded-For: ");
        out.extend_from_slice(client_ip.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    if let Some(host) = host {
        out.extend_from_slice(b"X-Forwarded-Host: ");
        out.extend_from_slice(host);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let idempotent = crate::is_idempotent(method);
    Ok(Some((
        len,
        RequestHead {
            idempotent,
            is_head: method == "HEAD",
            minor,
            body,
            keep_alive,
            expect_continue: expect_continue && body != Framing::None,
        },
    )))
}

/// A backend's response head, as the proxy relays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// The body as it comes from the backend.
    pub body: Framing,
    /// The backend connection can carry another request after this body.
    pub reusable: bool,
    /// The chunked body is decoded for an HTTP/1.0 client.
    pub dechunk: bool,
    /// The client connection stays open after this response.
    pub client_keep_alive: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete. 1xx heads are
/// returned with `status < 200` and no body: the caller skips them (the proxy answers
/// `Expect` itself and never asks for an upgrade). On a final head, writes the head for the
/// client into `out` (cleared first). `closing`: the proxy is shutting down.
pub fn parse_response(
    buf: &[u8],
    req: &RequestHead,
    closing: bool,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, ResponseHead)>, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut storage);
    let len = match resp.parse(buf).map_err(parse_error)? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial if buf.len() >= MAX_HEAD => return Err(HeadError::TooLarge),
        httparse::Status::Partial => return Ok(None),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let (Some(status), Some(minor)) = (resp.code, resp.version) else {
        return Err(HeadError::Invalid("incomplete status line".into()));
    };
    if status < 200 {
        return Ok(Some((
            len,
            ResponseHead {
                status,
                body: Framing::None,
                reusable: true,
                dechunk: false,
                client_keep_alive: true,
            },
        )));
    }
    let headers = resp.headers;
    let conn = ConnectionTokens::read(headers);
    let declared = body_framing(headers, false).map_err(HeadError::Invalid)?;
    // With a transfer coding, Content-Length means nothing and must not reach the client.
    let has_te = headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("transfer-encoding"));
    let body = if req.is_head || status == 204 || status == 304 {
        Framing::None
    } else {
        declared.unwrap_or(Framing::UntilClose)
    };
    let backend_keep_alive = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };
    let reusable = backend_keep_alive && body != Framing::UntilClose;
    let dechunk = req.minor == 0 && body == Framing::Chunked;
    let client_keep_alive = req.keep_alive
        && !closing
        && !dechunk
        && body != Framing::UntilClose
        && req.body != Framing::UntilClose;

    out.clear();
    let reason = resp.reason.unwrap_or("");
    let _ = write!(Buf(out), "HTTP/1.1 {status} {reason}\r\n");
    for h in headers.iter() {
        let name = h.name;
        if conn.names(name) || (has_te && name.eq_ignore_ascii_case("content-length")) {
            continue;
        }
        if is_hop_by_hop(name) {
            // The chunked framing passes through as is, unless it is decoded here.
            if name.eq_ignore_ascii_case("transfer-encoding") && !dechunk {
                write_header(out, name, h.value);
            }
            continue;
        }
        write_header(out, name, h.value);
    }
    if !client_keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if req.minor == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some((
        len,
        ResponseHead {
            status,
            body,
            reusable,
            dechunk,
            client_keep_alive,
        },
    )))
}

fn write_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A head made by the proxy itself (502, 503, 400, ...), with a short text body.
pub fn local_response(status: u16, reason: &str, body: &str, keep_alive: bool, out: &mut Vec<u8>) {
    out.clear();
    let _ = write!(
        Buf(out),
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{}\r\n{body}",
        body.len(),
        if keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        },
    );
}

/// `fmt::Write` into a byte buffer.
struct Buf<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> (usize, RequestHead, String) {
        let mut out = Vec::new();
        let (n, head) = parse_request(raw.as_bytes(), "127.0.0.9", &mut out)
            .expect("valid")
            .expect("complete");
        (n, head, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn request_headers_are_rewritten_for_the_backend() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nConnection: keep-alive, X-Private\r\n\
                   X-Private: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.0.0.1\r\n\
                   Accept: */*\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: evil\r\n\r\nnext";
        let (n, head, out) = request(raw);
        assert_eq!(n, raw.len() - 4);
        assert!(head.keep_alive && head.idempotent && !head.is_head);
        assert_eq!(head.body, Framing::None);
        assert_eq!(
            out,
            "GET /a?b=1 HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: 10.0.0.1, 10.0.0.2, 127.0.0.9\r\n\
             Accept: */*\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: shop.example\r\n\r\n"
        );
    }

    #[test]
    fn request_body_framing_and_keep_alive() {
        let (_, h, out) = request("POST /p HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(h.body, Framing::Length(5));
        assert!(!h.idempotent);
        assert!(out.contains("Content-Length: 5\r\n"));
        let (_, h, out) = request(
            "PUT /p HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        );
        assert_eq!(h.body, Framing::Chunked);
        assert!(h.expect_continue && !h.keep_alive);
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));
        assert!(!out.contains("Expect") && !out.contains("Connection"));
        let (_, h, out) = request("GET / HTTP/1.0\r\n\r\n");
        assert!(!h.keep_alive && h.minor == 0);
        assert!(out.starts_with("GET / HTTP/1.1\r\n"));
        let (_, h, _) = request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn bad_requests_are_refused() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 1e3\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/2.0\r\n\r\n",
            "GET\r\n\r\n",
        ] {
            let r = parse_request(raw.as_bytes(), "1.2.3.4", &mut Vec::new());
            assert!(
                matches!(r, Err(HeadError::Invalid(_))),
                "{raw:?} gave {r:?}"
            );
        }
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            parse_request(big.as_bytes(), "1.2.3.4", &mut Vec::new()),
            Err(HeadError::TooLarge)
        );
        assert_eq!(
            parse_request(b"GET / HTTP/1.1\r\nHost: x\r\n", "1.2.3.4", &mut Vec::new()),
            Ok(None)
        );
    }

    fn response(raw: &str, req: &RequestHead) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let (_, head) = parse_response(raw.as_bytes(), req, false, &mut out)
            .expect("valid")
            .expect("complete");
        (head, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn responses_are_framed_for_the_client() {
        let (_, get11, _) = request("GET / HTTP/1.1\r\n\r\n");
        let (_, get10, _) = request("GET / HTTP/1.0\r\n\r\n");
        let (_, head11, _) = request("HEAD / HTTP/1.1\r\n\r\n");

        let (h, out) = response(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=5\r\nX-A: b\r\n\r\nhi",
            &get11,
        );
        assert_eq!(h.body, Framing::Length(2));
        assert!(h.reusable && h.client_keep_alive && !h.dechunk);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\n"
        );

        let (h, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get11,
        );
        assert_eq!(h.body, Framing::Chunked);
        assert!(out.contains("Transfer-Encoding: chunked\r\n"));

        let (h, out) = response(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            &get10,
        );
        assert!(h.dechunk && !h.client_keep_alive);
        assert!(!out.contains("Transfer-Encoding") && out.contains("Connection: close\r\n"));

        let (h, out) = response("HTTP/1.0 200 OK\r\n\r\n", &get11);
        assert_eq!(h.body, Framing::UntilClose);
        assert!(!h.reusable && !h.client_keep_alive);
        assert!(out.contains("Connection: close\r\n"));

        let (h, _) = response("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", &head11);
        assert_eq!(h.body, Framing::None);
        assert!(h.reusable);

        let (h, _) = response("HTTP/1.1 304 Not Modified\r\n\r\n", &get11);
        assert_eq!(h.body, Framing::None);

        let (h, _) = response(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            &get11,
        );
        assert!(!h.reusable && h.client_keep_alive);

        let (h, _) = response("HTTP/1.1 100 Continue\r\n\r\n", &get11);
        assert_eq!(h.status, 100);

        let mut out = Vec::new();
        assert!(
            parse_response(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                &get11,
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
}
