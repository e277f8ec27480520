//! Properties of the proxy's HTTP/1 wire code (`jarfleet_proxy::http1`), for the fuzz targets
//! `http1_request`, `http1_response` and `chunked`, and for the regression tests that replay
//! their inputs (`crates/proxy/tests/fuzz_regressions.rs` includes this file).
//!
//! Only properties that any correct proxy has are asserted (RFC 9110/9112 and the framing the
//! proxy itself acts on), not this parser's particular choices, so that the checks survive a
//! rewrite of the parser. The calls under test are the three thin adapters below: the only
//! lines to change when a signature changes.

use jarfleet_proxy::http1::{Chunked, Framing, HeadError, RequestHead, ResponseHead};

type Parsed<H> = Result<Option<(usize, H)>, HeadError>;

fn parse_request(buf: &[u8], client_ip: &str, out: &mut Vec<u8>) -> Parsed<RequestHead> {
    jarfleet_proxy::http1::parse_request(buf, client_ip, out)
}

fn parse_response(
    buf: &[u8],
    req: &RequestHead,
    closing: bool,
    out: &mut Vec<u8>,
) -> Parsed<ResponseHead> {
    jarfleet_proxy::http1::parse_response(buf, req, closing, out)
}

fn feed(c: &mut Chunked, buf: &[u8], payload: &mut Vec<u8>) -> Result<usize, String> {
    c.feed(buf, |p| payload.extend_from_slice(p))
        .map_err(|e| e.to_string())
}

/// Bugs of the current parser that fuzzing found and that are reported, not fixed here (the
/// proxy's parser is being rewritten). Each id is a property (the `[id]` of a failure) or, for
/// `framing-*`, the input shape that breaks the framing property (see `framing_excuse`); the
/// checks exempt exactly that, so that fuzzing can find other bugs meanwhile. The inputs are in
/// `fuzz/regressions/<target>/open/<id>/`, and `crates/proxy/tests/fuzz_regressions.rs` checks
/// that they still fail without their exemption: once one passes, the bug is fixed and its id
/// leaves this list.
pub const KNOWN_OPEN: &[&str] = &[];

/// Client addresses as the proxy formats them (`SocketAddr::ip()`): one of each family.
const CLIENT_IPS: [&str; 2] = ["203.0.113.9", "2001:db8::7"];

/// Room for every header the rewritten head may have: the proxy's limit plus what it adds.
const OUT_HEADERS: usize = jarfleet_proxy::http1::MAX_HEADERS + 16;

/// `http1_request`: the input is the bytes a client sent.
pub fn request(data: &[u8]) {
    request_tolerating(data, KNOWN_OPEN);
}

/// [`request`], tolerating the known bugs `open` (see [`KNOWN_OPEN`]).
pub fn request_tolerating(data: &[u8], open: &[&str]) {
    for ip in CLIENT_IPS {
        let mut out = Vec::new();
        let Ok(Some((len, head))) = parse_request(data, ip, &mut out) else {
            // Refusals and "incomplete" are fine; the absence of a panic is the property.
            continue;
        };
        let ctx = Ctx::new("request", data, &out, open);
        ctx.check("consumed", len > 0 && len <= data.len(), || {
            format!("consumed {len} of {} bytes", data.len())
        });
        // A head ends where it ends: the bytes after it change nothing.
        let mut again = Vec::new();
        let alone = parse_request(&data[..len], ip, &mut again);
        ctx.check(
            "self-delimiting",
            alone == Ok(Some((len, head.clone()))) && again == out,
            || {
                format!(
                    "the head alone parses differently: {alone:?}, {}",
                    show(&again)
                )
            },
        );
        ctx.check(
            "request-until-close",
            head.body != Framing::UntilClose,
            || "a request body cannot be delimited by closing the connection".into(),
        );

        // The head sent to the backend is one complete HTTP/1.1 request head, nothing more.
        let mut storage = [httparse::EMPTY_HEADER; OUT_HEADERS];
        let mut fwd = httparse::Request::new(&mut storage);
        match fwd.parse(&out) {
            Ok(httparse::Status::Complete(n)) => {
                ctx.check("forwarded-parses", n == out.len(), || {
                    format!("{} bytes after the rewritten head", out.len() - n)
                })
            }
            other => ctx.fail(
                "forwarded-parses",
                &format!("the rewritten head does not parse: {other:?}"),
            ),
        }
        // Same method (when httparse reads the original the same way).
        let mut storage = [httparse::EMPTY_HEADER; jarfleet_proxy::http1::MAX_HEADERS];
        let mut orig = httparse::Request::new(&mut storage);
        let mut received: Vec<(&str, &[u8])> = Vec::new();
        if let Ok(httparse::Status::Complete(_)) = orig.parse(data) {
            ctx.check("method", orig.method == fwd.method, || {
                format!("method {:?} forwarded as {:?}", orig.method, fwd.method)
            });
            received = orig.headers.iter().map(|h| (h.name, h.value)).collect();
        }
        let headers: Vec<(&str, &[u8])> = fwd.headers.iter().map(|h| (h.name, h.value)).collect();
        // What the backend will take as the body is what the proxy will send.
        framing(&ctx, &received, &headers, Some(head.body), false);
        // RFC 9112 §3.2: more than one Host is refused (the backend and the proxy's
        // X-Forwarded-Host could otherwise disagree about the target).
        let hosts = count(&headers, "host");
        ctx.check("one-host", hosts <= 1, || {
            format!("{hosts} Host headers forwarded")
        });
        // The backend learns the client's address: the last X-Forwarded-For hop is the client.
        let xff: Vec<String> = values(&headers, "x-forwarded-for")
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let last_hop = xff.join(",");
        let last_hop = last_hop.rsplit(',').next().unwrap_or("").trim();
        ctx.check("client-last-hop", last_hop == ip, || {
            format!("last X-Forwarded-For hop is {last_hop:?}, not the client {ip}")
        });
    }
}

/// Requests whose response the `http1_response` target parses, chosen by the input's first
/// byte (bit 3: the proxy is shutting down). Parsed by the proxy itself, so that the harness
/// never builds a `RequestHead` by hand.
const REQUESTS: [&str; 8] = [
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\n\r\n",
    "HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    "POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "PUT /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    "HEAD / HTTP/1.0\r\n\r\n",
];

/// `http1_response`: the first byte chooses the request, the rest is what the backend sent.
pub fn response(data: &[u8]) {
    response_tolerating(data, KNOWN_OPEN);
}

/// [`response`], tolerating the known bugs `open` (see [`KNOWN_OPEN`]).
pub fn response_tolerating(data: &[u8], open: &[&str]) {
    let Some((&select, data)) = data.split_first() else {
        return;
    };
    let raw_req = REQUESTS[usize::from(select & 7)];
    let closing = select & 8 != 0;
    let mut scratch = Vec::new();
    let Ok(Some((_, req))) = parse_request(raw_req.as_bytes(), CLIENT_IPS[0], &mut scratch) else {
        panic!("the proxy refuses the canned request {raw_req:?}");
    };
    let mut out = Vec::new();
    let Ok(Some((len, head))) = parse_response(data, &req, closing, &mut out) else {
        return;
    };
    let ctx = Ctx::new("response", data, &out, open).with_request(raw_req, closing);
    ctx.check("consumed", len > 0 && len <= data.len(), || {
        format!("consumed {len} of {} bytes", data.len())
    });
    let mut again = Vec::new();
    let alone = parse_response(&data[..len], &req, closing, &mut again);
    ctx.check(
        "self-delimiting",
        alone == Ok(Some((len, head.clone()))) && (head.status < 200 || again == out),
        || {
            format!(
                "the head alone parses differently: {alone:?}, {}",
                show(&again)
            )
        },
    );
    let no_body = head.status < 200 || head.status == 204 || head.status == 304 || req.is_head;
    if no_body {
        // RFC 9112 §6.3: whatever the headers say, these responses end with their head.
        ctx.check("bodiless-status", head.body == Framing::None, || {
            format!("status {} to this request has no body", head.status)
        });
    }
    if head.status < 200 {
        // Interim responses are skipped, not relayed.
        return;
    }
    ctx.check(
        "reuse-after-close-delimited",
        head.body != Framing::UntilClose || !head.reusable,
        || "a backend connection whose body ends at close is reused".into(),
    );

    // The head sent to the client is one complete response head with the same status.
    let mut storage = [httparse::EMPTY_HEADER; OUT_HEADERS];
    let mut fwd = httparse::Response::new(&mut storage);
    match fwd.parse(&out) {
        Ok(httparse::Status::Complete(n)) => ctx.check("forwarded-parses", n == out.len(), || {
            format!("{} bytes after the rewritten head", out.len() - n)
        }),
        other => ctx.fail(
            "forwarded-parses",
            &format!("the rewritten head does not parse: {other:?}"),
        ),
    }
    ctx.check("status", fwd.code == Some(head.status), || {
        format!("status {} relayed as {:?}", head.status, fwd.code)
    });
    let headers: Vec<(&str, &[u8])> = fwd.headers.iter().map(|h| (h.name, h.value)).collect();
    let mut storage = [httparse::EMPTY_HEADER; jarfleet_proxy::http1::MAX_HEADERS];
    let mut orig = httparse::Response::new(&mut storage);
    let received: Vec<(&str, &[u8])> = match orig.parse(data) {
        Ok(httparse::Status::Complete(_)) => {
            orig.headers.iter().map(|h| (h.name, h.value)).collect()
        }
        _ => Vec::new(),
    };
    // RFC 9112 §6.1: no Transfer-Encoding to an HTTP/1.0 client.
    if req.minor == 0 {
        ctx.check(
            "te-to-http10",
            count(&headers, "transfer-encoding") == 0,
            || "Transfer-Encoding sent to an HTTP/1.0 client".into(),
        );
    }
    if no_body {
        return;
    }
    // What the client will take as the body is what the proxy will send: the backend's body
    // as is, or de-chunked and ended by closing the connection.
    let sent = match head.body {
        Framing::Chunked if head.dechunk => None,
        other => Some(other),
    };
    framing(&ctx, &received, &headers, sent, true);
    if sent.is_none() || head.body == Framing::UntilClose {
        ctx.check(
            "close-delimited-kept-alive",
            !head.client_keep_alive,
            || "the body ends when the connection closes, but the client connection is kept".into(),
        );
    }
}

/// The framing headers of a forwarded head against the body the proxy will send: `None` is a
/// body ended by closing the connection. Exactly one framing header field, in the only form a
/// sender may use (RFC 9110 §8.6: `1*DIGIT`, never a list; RFC 9112 §6.1: chunked last and once).
fn framing(
    ctx: &Ctx<'_>,
    received: &[(&str, &[u8])],
    headers: &[(&str, &[u8])],
    body: Option<Framing>,
    response: bool,
) {
    let lengths: Vec<&[u8]> = values(headers, "content-length").collect();
    let codings: Vec<&[u8]> = values(headers, "transfer-encoding").collect();
    let codings_text = codings
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect::<Vec<_>>();
    let tokens: Vec<String> = codings_text
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    let chunked_last = tokens.last().is_some_and(|t| t == "chunked");
    let chunked_count = tokens.iter().filter(|t| *t == "chunked").count();
    if let Some(bug) = framing_excuse(ctx.open, received) {
        // A known bug of this shape: not checked (see KNOWN_OPEN).
        let _ = bug;
        return;
    }
    let lengths_text = lengths
        .iter()
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect::<Vec<_>>();
    let what = || format!("Content-Length {lengths_text:?}, Transfer-Encoding {codings_text:?}");
    match body {
        Some(Framing::None) => {
            ctx.check("framing", codings.is_empty(), || {
                format!("no body, but {}", what())
            });
            ctx.check(
                "framing",
                lengths.is_empty() || (lengths.len() == 1 && decimal(lengths[0]) == Some(0)),
                || format!("no body, but {}", what()),
            );
        }
        Some(Framing::Length(n)) => {
            ctx.check(
                "framing",
                codings.is_empty() && lengths.len() == 1 && decimal(lengths[0]) == Some(n),
                || format!("a body of {n} bytes, but {}", what()),
            );
        }
        Some(Framing::Chunked) => {
            ctx.check(
                "framing",
                lengths.is_empty() && codings.len() == 1 && chunked_last && chunked_count == 1,
                || format!("a chunked body, but {}", what()),
            );
        }
        Some(Framing::UntilClose) | None => {
            ctx.check("framing", response, || {
                "a request body ended by closing".into()
            });
            ctx.check("framing", lengths.is_empty() && !chunked_last, || {
                format!("a body ended by closing, but {}", what())
            });
        }
    }
}

/// The known framing bug (in `open`) that the received head (`received`) has the shape of.
fn framing_excuse(open: &[&str], received: &[(&str, &[u8])]) -> Option<&'static str> {
    let lower = |v: &[u8]| String::from_utf8_lossy(v).to_ascii_lowercase();
    let tokens = |name: &str| -> Vec<String> {
        values(received, name)
            .flat_map(|v| {
                lower(v)
                    .split(',')
                    .map(|t| t.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|t| !t.is_empty())
            .collect()
    };
    let bugs = [
        (
            // `Connection: content-length` or `transfer-encoding`: the framing header dropped.
            "framing-connection-option",
            tokens("connection")
                .iter()
                .any(|t| t == "content-length" || t == "transfer-encoding"),
        ),
        (
            // `Transfer-Encoding:` with no coding: ignored for the framing, forwarded all the same.
            "framing-empty-te",
            values(received, "transfer-encoding")
                .any(|v| lower(v).split(',').all(|t| t.trim().is_empty())),
        ),
        (
            // Framing fields repeated, or a list of lengths: forwarded as received.
            "framing-repeated",
            count(received, "content-length") > 1
                || values(received, "content-length").any(|v| v.contains(&b',')),
        ),
        (
            "framing-repeated",
            count(received, "transfer-encoding") > 1
                || tokens("transfer-encoding")
                    .iter()
                    .filter(|t| *t == "chunked")
                    .count()
                    > 1,
        ),
    ];
    bugs.into_iter()
        .find(|(bug, shape)| *shape && open.contains(bug))
        .map(|(bug, _)| bug)
}

/// `1*DIGIT` (RFC 9110 §8.6), as a number.
fn decimal(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn values<'h>(headers: &'h [(&str, &'h [u8])], name: &str) -> impl Iterator<Item = &'h [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

fn count(headers: &[(&str, &[u8])], name: &str) -> usize {
    values(headers, name).count()
}

/// What one decoding run saw.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    /// Bytes that belonged to the body; 0 after an error (the connection is dropped then).
    consumed: usize,
    payload: Vec<u8>,
    done: bool,
    error: Option<String>,
}

/// Feeds `body` in pieces of the given sizes (cycled), with an empty feed after each piece,
/// and stops at the end of the body or at the first error (what the proxy does).
fn decode(body: &[u8], sizes: &[usize]) -> Decoded {
    let mut c = Chunked::new();
    let mut d = Decoded {
        consumed: 0,
        payload: Vec::new(),
        done: false,
        error: None,
    };
    let mut at = 0;
    for &size in sizes.iter().cycle() {
        if at >= body.len() || c.is_done() {
            break;
        }
        let piece = &body[at..body.len().min(at + size.max(1))];
        let result = feed(&mut c, piece, &mut d.payload)
            .and_then(|n| Ok(n + feed(&mut c, &[], &mut d.payload)?));
        match result {
            Ok(n) => {
                assert!(n <= piece.len(), "feed used {n} of {} bytes", piece.len());
                assert!(
                    n == piece.len() || c.is_done(),
                    "feed used {n} of {} bytes but the body is not done",
                    piece.len()
                );
                d.consumed += n;
                at += piece.len();
            }
            Err(e) => {
                d.consumed = 0;
                d.error = Some(e);
                break;
            }
        }
    }
    d.done = c.is_done();
    d
}

/// `chunked`: byte 0 is `k`; the next `k % 8` bytes are piece sizes (1-256), used in turn;
/// the rest is a chunked body as a backend or client sends it (and what follows it).
pub fn chunked(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(k % 8).min(rest.len());
    let (sizes, body) = rest.split_at(k);
    let mut sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();
    if sizes.is_empty() {
        sizes = vec![1, 2, 3, 5, 8, 13];
    }
    let whole = decode(body, &[body.len()]);
    let show_body = || String::from_utf8_lossy(body).into_owned();
    for (how, split) in [
        ("byte by byte", decode(body, &[1])),
        ("in the input's pieces", decode(body, &sizes)),
    ] {
        assert_eq!(
            whole,
            split,
            "fed whole vs {how} {sizes:?} differ for {:?}",
            show_body()
        );
    }
    if whole.error.is_none() {
        assert!(
            whole.done || whole.consumed == body.len(),
            "not done, yet only {} of {} bytes used: {:?}",
            whole.consumed,
            body.len(),
            show_body()
        );
    }
    if whole.done {
        assert!(
            body[..whole.consumed].ends_with(b"\r\n") && whole.payload.len() < whole.consumed,
            "a chunked body ends with CRLF after its last chunk: {:?}",
            show_body()
        );
    }
}

/// A failed property names itself, the input and the forwarded head, printable; a property
/// in `open` is not checked.
struct Ctx<'a> {
    what: &'static str,
    input: &'a [u8],
    out: &'a [u8],
    open: &'a [&'a str],
    request: Option<(&'static str, bool)>,
}

impl<'a> Ctx<'a> {
    fn new(what: &'static str, input: &'a [u8], out: &'a [u8], open: &'a [&'a str]) -> Self {
        Ctx {
            what,
            input,
            out,
            open,
            request: None,
        }
    }

    fn with_request(mut self, raw: &'static str, closing: bool) -> Self {
        self.request = Some((raw, closing));
        self
    }

    fn check(&self, property: &str, ok: bool, why: impl FnOnce() -> String) {
        if !ok {
            self.fail(property, &why());
        }
    }

    fn fail(&self, property: &str, why: &str) {
        if self.open.contains(&property) {
            return;
        }
        let request = match self.request {
            Some((raw, closing)) => format!("\nrequest: {raw:?} (closing: {closing})"),
            None => String::new(),
        };
        panic!(
            "{} property [{property}] failed: {why}\ninput: {}\nforwarded: {}{request}",
            self.what,
            show(self.input),
            show(self.out)
        );
    }
}

fn show(bytes: &[u8]) -> String {
    format!(
        "{:?}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(2048)])
    )
}
