//! Request and response heads: parsed with `httparse`, checked as strictly as RFC 9110/9112
//! and nginx/HAProxy, and rewritten for the other side in one pass straight into an output
//! buffer (no header map, no per-header allocation).
//!
//! The proxy writes every framing header itself. A client's (or backend's) `Content-Length`
//! and `Transfer-Encoding` are read, checked and *dropped*; the head sent on carries the one
//! framing line the proxy chose for the body it will actually send. So nothing a client writes
//! — `Connection: Content-Length`, a second length, an unknown coding, `Content_Length` — can
//! make the two sides of the proxy see different message boundaries.
//!
//! Requests going to a backend: the request line is always HTTP/1.1 in origin form (an
//! absolute-form target becomes its path, and its authority the `Host`); exactly one `Host`;
//! hop-by-hop headers and those named in `Connection` are dropped, except `Host` and the
//! framing headers, which `Connection` can never remove; `X-Forwarded-For` gets the client's
//! address appended (earlier values kept, in order); `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are set; `Expect: 100-continue` is answered by the proxy (like nginx)
//! and not forwarded; a WebSocket upgrade offer is passed on as `Connection: Upgrade` +
//! `Upgrade: websocket`. Header names keep the client's spelling.
//!
//! Refused before anything reaches a backend: anything `httparse` refuses, two `Host` headers
//! or none in HTTP/1.1, a `Host` that is not a host, both `Content-Length` and
//! `Transfer-Encoding`, more than one of either, a length that is not plain digits, a
//! transfer coding other than exactly `chunked` (501), `Transfer-Encoding` in HTTP/1.0, a
//! header name that differs from a framing header only by `_` for `-`, targets in a form the
//! method does not allow, `CONNECT` and `TRACE` (405).
//!
//! Responses going to a client: hop-by-hop headers dropped, the framing chosen for the client
//! and written by the proxy (a chunked body to an HTTP/1.0 client is de-chunked and the
//! connection closed), `Connection: close` / `keep-alive` written when needed.

use std::fmt::Write as _;

/// Requests with more header fields are refused (431; HAProxy refuses beyond 101).
pub const MAX_HEADERS: usize = 100;
/// Heads larger than this are refused (431 for requests, 502 for responses).
pub const MAX_HEAD: usize = 64 * 1024;
/// A request line longer than this is refused (414, as nginx does beyond its 8 KiB buffer).
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

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
    /// A WebSocket upgrade is offered (GET, HTTP/1.1, no body, `Connection: upgrade`,
    /// `Upgrade: websocket`): a `101` answer turns the connection into a tunnel.
    pub websocket: bool,
    /// Where, in the rewritten head, the framing line starts (it is the last line before the
    /// blank one), so the proxy can put another framing there once it knows the body it sends:
    /// see [`reframe`].
    pub framing_at: usize,
}

/// Why a request or response head is refused; each maps to the status a client gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// Not valid or ambiguous HTTP/1.x (400 / 502).
    Invalid(String),
    /// Larger than [`MAX_HEAD`] or more than [`MAX_HEADERS`] headers (431 / 502).
    TooLarge,
    /// A transfer coding the proxy does not decode (501).
    NotImplemented(String),
    /// A method the proxy does not forward (405).
    MethodNotAllowed(String),
    /// A request line longer than [`MAX_REQUEST_LINE`] (414).
    UriTooLong,
}

impl HeadError {
    /// The status line a client gets for this request error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HeadError::Invalid(_) => (400, "Bad Request"),
            HeadError::TooLarge => (431, "Request Header Fields Too Large"),
            HeadError::NotImplemented(_) => (501, "Not Implemented"),
            HeadError::MethodNotAllowed(_) => (405, "Method Not Allowed"),
            HeadError::UriTooLong => (414, "URI Too Long"),
        }
    }
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Invalid(s)
            | HeadError::NotImplemented(s)
            | HeadError::MethodNotAllowed(s) => f.write_str(s),
            HeadError::TooLarge => write!(
                f,
                "head larger than {} KiB or with more than {MAX_HEADERS} headers",
                MAX_HEAD / 1024
            ),
            HeadError::UriTooLong => write!(
                f,
                "request line longer than {} KiB",
                MAX_REQUEST_LINE / 1024
            ),
        }
    }
}

fn invalid(s: impl Into<String>) -> HeadError {
    HeadError::Invalid(s.into())
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        e => HeadError::Invalid(e.to_string()),
    }
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), and the framing
/// headers, which the proxy writes itself.
fn is_hop_by_hop(name: &str) -> bool {
    const HOP: [&str; 10] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "content-length",
        "upgrade",
        "proxy-authorization",
        "http2-settings",
    ];
    HOP.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Headers a `Connection` token may never remove: what frames and routes the message.
fn is_protected(name: &str) -> bool {
    ["host", "content-length", "transfer-encoding"]
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// `Content_Length`, `transfer_encoding`, `HOST` with an underscore…: a backend that maps `_`
/// to `-` (CGI-style servers do) would read a framing header the proxy never saw.
fn aliases_protected(name: &str) -> bool {
    name.contains('_')
        && ["host", "content-length", "transfer-encoding"]
            .iter()
            .any(|h| {
                h.len() == name.len()
                    && h.bytes()
                        .zip(name.bytes())
                        .all(|(a, b)| a == b.to_ascii_lowercase() || (a == b'-' && b == b'_'))
            })
}

/// The `Connection` header's tokens: close, keep-alive, upgrade, and the header names it lists
/// (which are dropped too, unless protected).
#[derive(Default)]
struct ConnectionTokens<'a> {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
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
                } else if tok.eq_ignore_ascii_case("upgrade") {
                    t.upgrade = true;
                } else if !is_protected(tok) {
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

/// What the framing headers of a message say, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Declared {
    Nothing,
    Length(u64),
    Chunked,
    /// A transfer coding other than a lone `chunked` (responses: read until close).
    OtherCoding,
}

/// Reads `Transfer-Encoding` and `Content-Length` as RFC 9112 §6 says, refusing every
/// ambiguity: more than one of either header, both, a length that is not plain digits.
/// Requests may only use `chunked` alone; responses may use any coding (the body then runs
/// until close).
fn declared_framing(
    headers: &[httparse::Header<'_>],
    request: bool,
) -> Result<Declared, HeadError> {
    let mut te: Option<&[u8]> = None;
    let mut length: Option<u64> = None;
    for h in headers {
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if te.is_some() {
                return Err(invalid("more than one Transfer-Encoding header"));
            }
            te = Some(h.value);
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = parse_length(h.value)?;
            match length {
                Some(_) if request => return Err(invalid("more than one Content-Length header")),
                Some(l) if l != n => return Err(invalid("conflicting Content-Length values")),
                _ => length = Some(n),
            }
        }
    }
    match (te, length) {
        (Some(_), Some(_)) if request => Err(invalid(
            "both Transfer-Encoding and Content-Length (refused: request smuggling)",
        )),
        (Some(v), _) => {
            if trim_ows(v).eq_ignore_ascii_case(b"chunked") {
                Ok(Declared::Chunked)
            } else if request {
                Err(HeadError::NotImplemented(format!(
                    "transfer coding {:?} is not supported: only a lone `chunked`",
                    String::from_utf8_lossy(v)
                )))
            } else {
                Ok(Declared::OtherCoding)
            }
        }
        (None, Some(n)) => Ok(Declared::Length(n)),
        (None, None) => Ok(Declared::Nothing),
    }
}

/// A Content-Length value: 1 to 18 ASCII digits, nothing else (no sign, no list, no spaces
/// inside).
fn parse_length(v: &[u8]) -> Result<u64, HeadError> {
    let v = trim_ows(v);
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return Err(invalid(format!(
            "bad Content-Length {:?}",
            String::from_utf8_lossy(v)
        )));
    }
    Ok(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

fn trim_ows(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

/// `uri-host [ ":" port ]` (RFC 3986): a registered name, an IPv4 address or a bracketed IP
/// literal, then digits. (An empty `Host` header is refused by the caller, as nginx does.)
fn valid_host(v: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = v.strip_prefix(b"[") {
        let Some(end) = rest.iter().position(|b| *b == b']') else {
            return false;
        };
        let literal = &rest[..end];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        {
            return false;
        }
        (&v[..end + 2], &rest[end + 1..])
    } else {
        match v.iter().position(|b| *b == b':') {
            Some(i) => (&v[..i], &v[i..]),
            None => (v, &v[v.len()..]),
        }
    };
    let host_ok = host.starts_with(b"[")
        || host.iter().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                )
        });
    let port_ok = match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.len() <= 5 && digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    };
    host_ok && port_ok && (port.is_empty() || !host.is_empty())
}

/// The request target as it goes to the backend: origin form, and the authority of an
/// absolute-form target (which replaces `Host`, RFC 9112 §3.2.2).
fn target<'a>(method: &str, target: &'a str) -> Result<(&'a str, Option<&'a str>), HeadError> {
    if target.starts_with('/') {
        return Ok((target, None));
    }
    if target == "*" {
        return if method == "OPTIONS" {
            Ok((target, None))
        } else {
            Err(invalid(format!(
                "target * with {method} (only OPTIONS may use it)"
            )))
        };
    }
    let lower_scheme = target
        .get(..7)
        .is_some_and(|s| s.eq_ignore_ascii_case("http://"));
    if !lower_scheme {
        return Err(invalid(format!(
            "request target {:?} is neither a path nor an http:// URL",
            target.chars().take(64).collect::<String>()
        )));
    }
    let rest = &target[7..];
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() || authority.contains('@') || !valid_host(authority.as_bytes()) {
        return Err(invalid(format!(
            "bad authority {:?} in an absolute-form target",
            authority.chars().take(64).collect::<String>()
        )));
    }
    let path = &rest[end..];
    Ok((if path.is_empty() { "/" } else { path }, Some(authority)))
}

/// Parses a request head at the start of `buf`. On success writes the head for the backend
/// into `out` (cleared first) and returns the head's length in `buf`. `Ok(None)`: incomplete.
/// The head written ends with the framing line for the body as the client framed it
/// (`Content-Length: N` or `Transfer-Encoding: chunked`); [`reframe`] replaces it.
pub fn parse_request(
    buf: &[u8],
    client_ip: &str,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, RequestHead)>, HeadError> {
    let start = &buf[..buf.len().min(MAX_REQUEST_LINE + 1)];
    if !start.contains(&b'\n') && start.len() > MAX_REQUEST_LINE {
        return Err(HeadError::UriTooLong);
    }
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
    let (Some(method), Some(raw_target), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(invalid("incomplete request line"));
    };
    if !method
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Err(invalid(format!(
            "method {:?}: methods are upper-case letters",
            method.chars().take(32).collect::<String>()
        )));
    }
    if method == "CONNECT" || method == "TRACE" {
        return Err(HeadError::MethodNotAllowed(format!(
            "{method} is not forwarded by the load balancer"
        )));
    }
    let (path, authority) = target(method, raw_target)?;
    let headers = req.headers;
    let conn = ConnectionTokens::read(headers);
    let declared = declared_framing(headers, true)?;
    let body = match declared {
        Declared::Nothing | Declared::Length(0) => Framing::None,
        Declared::Length(n) => Framing::Length(n),
        Declared::Chunked if minor == 0 => {
            return Err(invalid("Transfer-Encoding in an HTTP/1.0 request"));
        }
        Declared::Chunked => Framing::Chunked,
        Declared::OtherCoding => return Err(HeadError::NotImplemented("transfer coding".into())),
    };
    let keep_alive = if minor == 0 {
        conn.keep_alive && !conn.close
    } else {
        !conn.close
    };

    let mut host: Option<&[u8]> = None;
    let mut upgrade: Option<&[u8]> = None;
    for h in headers.iter() {
        if h.name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(invalid("more than one Host header"));
            }
            let v = trim_ows(h.value);
            if v.is_empty() || !valid_host(v) {
                return Err(invalid(format!(
                    "bad Host {:?}",
                    String::from_utf8_lossy(v)
                        .chars()
                        .take(64)
                        .collect::<String>()
                )));
            }
            host = Some(v);
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(h.value);
        } else if aliases_protected(h.name) {
            return Err(invalid(format!(
                "header {:?} differs from a framing header only by `_`",
                h.name
            )));
        }
    }
    if minor == 1 && host.is_none() {
        return Err(invalid("HTTP/1.1 request without Host"));
    }
    let host = authority.map(str::as_bytes).or(host);
    let websocket = conn.upgrade
        && minor == 1
        && method == "GET"
        && body == Framing::None
        && upgrade.is_some_and(|u| trim_ows(u).eq_ignore_ascii_case(b"websocket"));

    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut expect_continue = false;
    let mut xff_seen = false;
    for h in headers.iter() {
        let name = h.name;
        if is_hop_by_hop(name)
            || conn.names(name)
            || name.eq_ignore_ascii_case("x-forwarded-proto")
            || name.eq_ignore_ascii_case("x-forwarded-host")
        {
            continue;
        }
        if name.eq_ignore_ascii_case("expect") {
            if trim_ows(h.value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
                continue;
            }
        } else if name.eq_ignore_ascii_case("host") {
            if let Some(a) = authority {
                write_header(out, name, a.as_bytes());
                continue;
            }
        } else if name.eq_ignore_ascii_case("x-forwarded-for") {
            // All earlier hops in one header, in order, then this client.
            if xff_seen {
                continue;
            }
            xff_seen = true;
            out.extend_from_slice(b"X-Forwarded-For: ");
            for v in headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            {
                out.extend_from_slice(v.value);
                out.extend_from_slice(b", ");
            }
            out.extend_from_slice(client_ip.as_bytes());
            out.extend_from_slice(b"\r\n");
            continue;
        }
        write_header(out, name, h.value);
    }
    if authority.is_some() && !headers.iter().any(|h| h.name.eq_ignore_ascii_case("host")) {
        write_header(out, "Host", host.unwrap_or_default());
    }
    if !xff_seen {
        write_header(out, "X-Forwarded-For", client_ip.as_bytes());
    }
    out.extend_from_slice(b"X-Forwarded-Proto: http\r\n");
    if let Some(host) = host {
        write_header(out, "X-Forwarded-Host", host);
    }
    if websocket {
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\n");
    }
    let framing_at = out.len();
    // An explicit `Content-Length: 0` stays explicit (some servers want a length on a POST).
    let framing = match declared {
        Declared::Length(0) => Framing::Length(0),
        _ => body,
    };
    write_framing(out, framing);
    out.extend_from_slice(b"\r\n");
    Ok(Some((
        len,
        RequestHead {
            idempotent: crate::is_idempotent(method),
            is_head: method == "HEAD",
            minor,
            body,
            keep_alive,
            expect_continue: expect_continue && body != Framing::None,
            websocket,
            framing_at,
        },
    )))
}

/// Replaces the framing line of a head made by [`parse_request`] with the one for `body`
/// (a buffered chunked body goes on with its decoded length).
pub fn reframe(out: &mut Vec<u8>, req: &RequestHead, body: Framing) {
    out.truncate(req.framing_at);
    write_framing(out, body);
    out.extend_from_slice(b"\r\n");
}

fn write_framing(out: &mut Vec<u8>, body: Framing) {
    match body {
        Framing::Length(n) => {
            let _ = write!(Buf(out), "Content-Length: {n}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::None | Framing::UntilClose => {}
    }
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
    /// `101 Switching Protocols` to a WebSocket offer: the connection becomes a tunnel.
    pub upgraded: bool,
}

/// Parses a response head at the start of `buf`. `Ok(None)`: incomplete. 1xx heads other than
/// an accepted upgrade are returned with `status < 200` and no body: the caller skips them
/// (the proxy answers `Expect` itself). On a final head (or a `101` to a WebSocket offer),
/// writes the head for the client into `out` (cleared first). `closing`: the proxy is shutting
/// down.
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
        return Err(invalid("incomplete status line"));
    };
    let headers = resp.headers;
    if status == 101 {
        let upgrade_ok = headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("upgrade")
                && trim_ows(h.value).eq_ignore_ascii_case(b"websocket")
        });
        if !req.websocket || !upgrade_ok || minor == 0 {
            return Err(invalid(
                "101 Switching Protocols without a WebSocket upgrade offered",
            ));
        }
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        for h in headers.iter() {
            if !is_hop_by_hop(h.name) {
                write_header(out, h.name, h.value);
            }
        }
        out.extend_from_slice(b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
        return Ok(Some((
            len,
            ResponseHead {
                status,
                body: Framing::None,
                reusable: false,
                dechunk: false,
                client_keep_alive: false,
                upgraded: true,
            },
        )));
    }
    if status < 200 {
        return Ok(Some((
            len,
            ResponseHead {
                status,
                body: Framing::None,
                reusable: true,
                dechunk: false,
                client_keep_alive: true,
                upgraded: false,
            },
        )));
    }
    let conn = ConnectionTokens::read(headers);
    let declared = declared_framing(headers, false)?;
    let no_body = req.is_head || status == 204 || status == 304;
    let body = match declared {
        _ if no_body => Framing::None,
        Declared::Nothing => Framing::UntilClose,
        Declared::Length(0) => Framing::None,
        Declared::Length(n) => Framing::Length(n),
        Declared::Chunked => Framing::Chunked,
        Declared::OtherCoding => Framing::UntilClose,
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
        if is_hop_by_hop(h.name) || conn.names(h.name) {
            continue;
        }
        write_header(out, h.name, h.value);
    }
    match (body, declared) {
        (Framing::Length(n), _) => {
            let _ = write!(Buf(out), "Content-Length: {n}\r\n");
        }
        (Framing::Chunked, _) if !dechunk => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n")
        }
        // HEAD and 304: the length of the body the request would have had, as declared.
        (Framing::None, Declared::Length(n)) if status != 204 => {
            let _ = write!(Buf(out), "Content-Length: {n}\r\n");
        }
        (Framing::None, Declared::Chunked) if req.is_head && req.minor == 1 => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
        }
        _ => {}
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
            upgraded: false,
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
mod tests;
