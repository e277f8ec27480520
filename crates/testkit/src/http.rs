//! A minimal HTTP/1.1 client on `std::net`: one request per connection (`Connection: close`),
//! the whole exchange within one deadline.
//!
//! For tests that are not async (the network lab, the etcd cluster helper) and for talking to
//! a server from inside a lab host (`Host::run_in`), where starting a runtime or a `curl` is
//! more than the job needs. It is no general client: no TLS, no redirects, no keep-alive.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The most a response may hold: tests talk to small JSON APIs.
const MAX_RESPONSE: usize = 16 << 20;

/// A response: its status and its body (decoded when chunked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// `GET path` from `addr`, all within `timeout`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "GET", path, None, timeout)
}

/// `POST path` with a JSON `body` to `addr`, all within `timeout`.
pub fn post(addr: SocketAddr, path: &str, body: &str, timeout: Duration) -> io::Result<Response> {
    request(addr, "POST", path, Some(body), timeout)
}

/// One exchange: connect, send, read until the server closes. Running out of `timeout` at any
/// step is an error of kind `TimedOut`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> io::Result<Response> {
    let deadline = Instant::now() + timeout;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(body) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body.unwrap_or_default());
    stream.set_write_timeout(Some(left(deadline)?))?;
    stream.write_all(head.as_bytes())?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        stream.set_read_timeout(Some(left(deadline)?))?;
        let n = match stream.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "reading the response",
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.len() > MAX_RESPONSE {
            return Err(io::Error::other(format!(
                "the response is larger than {MAX_RESPONSE} bytes"
            )));
        }
    }
    parse(&raw)
}

/// The time left before `deadline`, or `TimedOut` (a zero timeout means "none" to std).
fn left(deadline: Instant) -> io::Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the deadline passed",
        ))
    } else {
        Ok(left)
    }
}

/// A whole response as read off a closed connection.
fn parse(raw: &[u8]) -> io::Result<Response> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of the response head"))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let mut body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            let len: usize = value.parse().map_err(|_| bad("a bad Content-Length"))?;
            body = body
                .get(..len)
                .ok_or_else(|| bad("the body is shorter than its Content-Length"))?;
        }
    }
    let body = if chunked {
        dechunk(body).ok_or_else(|| bad("a bad chunked body"))?
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A chunked body decoded; `None` when it is cut short or malformed.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&rest[..end]).ok()?;
        let size = size.split(';').next()?.trim();
        let size = usize::from_str_radix(size, 16).ok()?;
        rest = &rest[end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(rest.get(..size)?);
        rest = rest.get(size..)?.strip_prefix(b"\r\n")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn responses_are_read_in_every_framing() {
        let cases: [(&[u8], u16, &str); 4] = [
            (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", 200, "{}"),
            (b"HTTP/1.1 404 Not Found\r\n\r\nnot here", 404, "not here"),
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
                200,
                "abcde",
            ),
            (b"HTTP/1.0 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n", 503, ""),
        ];
        for (raw, status, body) in cases {
            let response = parse(raw).expect("a good response");
            assert_eq!((response.status, response.body.as_str()), (status, body));
        }
    }

    #[test]
    fn broken_responses_are_errors() {
        let cases: [&[u8]; 4] = [
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        ];
        for raw in cases {
            assert!(parse(raw).is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn a_request_reaches_a_real_server_and_a_silent_one_times_out() {
        let server = TcpListener::bind("127.0.0.1:0").expect("a listener");
        let addr = server.local_addr().expect("its address");
        let answer = std::thread::spawn(move || {
            let (mut conn, _) = server.accept().expect("a connection");
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"{\"k\":1}") {
                let n = conn.read(&mut buf).expect("the request");
                assert!(n > 0, "the request ended early: {seen:?}");
                seen.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
                .expect("the answer");
            // Closed: the client reads to the end.
            drop(conn);
            let silent = server.accept().expect("a second connection");
            (String::from_utf8_lossy(&seen).into_owned(), silent)
        });
        let response =
            post(addr, "/v3/kv/put", "{\"k\":1}", Duration::from_secs(10)).expect("an answer");
        assert_eq!(
            response,
            Response {
                status: 201,
                body: "ok".into()
            }
        );
        let started = Instant::now();
        let err = get(addr, "/", Duration::from_millis(300)).expect_err("no answer");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let (request, _silent) = answer.join().expect("the server thread");
        assert!(
            request.starts_with("POST /v3/kv/put HTTP/1.1\r\n")
                && request.contains("\r\nContent-Length: 7\r\n"),
            "{request}"
        );
    }
}
