//! The recording backend: raw TCP, HTTP/1.1 keep-alive, parsing the way a typical *lenient*
//! Java backend does, so that a desync shows up as requests nobody sent instead of being hidden
//! by a strict parser.
//!
//! Lenient on purpose:
//! - lines end at LF (a CR before it is dropped); empty lines before a request line are skipped;
//! - header names and values are trimmed of whitespace (`Content-Length : 5` counts); a line
//!   starting with SP or HT continues the previous header (obs-fold); a line without a colon
//!   is ignored;
//! - framing: `Transfer-Encoding` whose value *contains* `chunked` (any case), else the *first*
//!   `Content-Length`, whose first comma-separated item is read like Java's `Long.parseLong`
//!   (a leading `+` is fine); a negative or unparsable length, or a malformed chunk, is
//!   answered `400` and the connection closed (recorded as an error).
//!
//! Every request parsed is recorded (backend connection id, method, target, headers, body, the
//! raw bytes) and answered `200` with `X-Id: <id>` and the body `id=<id> target=<target>`, the
//! id growing across the whole process. Bytes a connection holds that do not (yet) make a
//! request stay visible as that connection's `pending` bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone)]
pub struct Rec {
    pub id: u64,
    pub conn: u64,
    pub method: String,
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Everything this request consumed on the connection.
    pub raw: Vec<u8>,
    /// Set when the backend refused the bytes (400 and close).
    pub error: Option<String>,
}

impl Rec {
    pub fn header(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Bytes a backend connection holds that are not a complete request.
#[derive(Debug, Clone)]
pub struct Pending {
    pub conn: u64,
    pub bytes: Vec<u8>,
    /// The proxy closed the connection with these bytes unparsed.
    pub closed: bool,
}

#[derive(Debug, Default, Clone)]
pub struct Log {
    pub records: Vec<Rec>,
    pub pending: BTreeMap<u64, Pending>,
    pub connections: u64,
}

/// One listening port of the backend: everything one proxy sends for one shape.
pub struct Site {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Log>>,
}

impl Site {
    pub async fn start() -> Site {
        let l = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the recording backend");
        let addr = l.local_addr().expect("backend address");
        let log = Arc::new(Mutex::new(Log::default()));
        let log2 = log.clone();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let conn = {
                    let mut g = log2.lock().expect("backend log");
                    g.connections += 1;
                    g.connections
                };
                tokio::spawn(serve(s, conn, log2.clone()));
            }
        });
        Site { addr, log }
    }

    pub fn snapshot(&self) -> Log {
        self.log.lock().expect("backend log").clone()
    }
}

async fn serve(mut s: TcpStream, conn: u64, log: Arc<Mutex<Log>>) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        // Parsed and recorded before the next await: on the test's single-threaded runtime,
        // whatever was read is in the log whenever another task looks.
        let mut out = Vec::new();
        let mut close = false;
        {
            let mut g = log.lock().expect("backend log");
            loop {
                match parse(&buf) {
                    Parsed::Incomplete => break,
                    Parsed::Complete { mut rec, used } => {
                        rec.id = NEXT_ID.fetch_add(1, SeqCst);
                        rec.conn = conn;
                        rec.raw = buf[..used].to_vec();
                        respond(&rec, &mut out);
                        g.records.push(rec);
                        buf.drain(..used);
                    }
                    Parsed::Error { mut rec } => {
                        rec.id = NEXT_ID.fetch_add(1, SeqCst);
                        rec.conn = conn;
                        rec.raw = std::mem::take(&mut buf);
                        let body = format!("id={} error\n", rec.id);
                        out.extend_from_slice(
                            format!(
                                "HTTP/1.1 400 Bad Request\r\nContent-Length: {}\r\nX-Id: {}\r\nConnection: close\r\n\r\n{body}",
                                body.len(),
                                rec.id
                            )
                            .as_bytes(),
                        );
                        g.records.push(rec);
                        close = true;
                        break;
                    }
                }
            }
            if buf.is_empty() {
                g.pending.remove(&conn);
            } else {
                g.pending.insert(
                    conn,
                    Pending {
                        conn,
                        bytes: buf.clone(),
                        closed: false,
                    },
                );
            }
        }
        if !out.is_empty() && s.write_all(&out).await.is_err() {
            break;
        }
        if close {
            break;
        }
    }
    if let Some(p) = log.lock().expect("backend log").pending.get_mut(&conn) {
        p.closed = true;
    }
}

fn respond(rec: &Rec, out: &mut Vec<u8>) {
    let target: String = rec
        .target
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
        .collect();
    let body = format!("id={} target={target}\n", rec.id);
    let head = rec.method == "HEAD";
    out.extend_from_slice(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Id: {}\r\n{}\r\n",
            body.len(),
            rec.id,
            if head { "X-Req-Method: HEAD\r\n" } else { "" }
        )
        .as_bytes(),
    );
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
}

enum Parsed {
    Incomplete,
    Complete { rec: Rec, used: usize },
    Error { rec: Rec },
}

fn empty_rec() -> Rec {
    Rec {
        id: 0,
        conn: 0,
        method: String::new(),
        target: String::new(),
        version: String::new(),
        headers: Vec::new(),
        body: Vec::new(),
        raw: Vec::new(),
        error: None,
    }
}

/// The next line of `buf` from `at`: (line without CR/LF, index after the LF).
fn line(buf: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let lf = buf[at..].iter().position(|&b| b == b'\n')? + at;
    let mut end = lf;
    if end > at && buf[end - 1] == b'\r' {
        end -= 1;
    }
    Some((&buf[at..end], lf + 1))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn parse(buf: &[u8]) -> Parsed {
    let start = match buf.iter().position(|&b| b != b'\r' && b != b'\n') {
        Some(s) => s,
        None => return Parsed::Incomplete,
    };
    // The head: lines up to the first empty one.
    let mut at = start;
    let mut lines: Vec<&[u8]> = Vec::new();
    loop {
        let Some((l, next)) = line(buf, at) else {
            if buf.len() - start > 1 << 20 {
                let mut rec = empty_rec();
                rec.error = Some("head larger than 1 MiB".into());
                return Parsed::Error { rec };
            }
            return Parsed::Incomplete;
        };
        at = next;
        if l.is_empty() {
            break;
        }
        lines.push(l);
    }
    let mut rec = empty_rec();
    let request_line = text(lines[0]);
    let mut words = request_line.split_ascii_whitespace();
    rec.method = words.next().unwrap_or("").to_owned();
    rec.target = words.next().unwrap_or("").to_owned();
    rec.version = words.collect::<Vec<_>>().join(" ");
    for l in &lines[1..] {
        if matches!(l.first(), Some(b' ' | b'\t')) {
            if let Some((_, v)) = rec.headers.last_mut() {
                v.push(' ');
                v.push_str(text(l).trim());
            }
            continue;
        }
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        rec.headers.push((
            text(&l[..colon]).trim().to_owned(),
            text(&l[colon + 1..]).trim().to_owned(),
        ));
    }
    let chunked = rec
        .header("transfer-encoding")
        .any(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        return chunked_body(buf, at, rec);
    }
    let first_cl = rec.header("content-length").next().map(str::to_owned);
    let length = match first_cl {
        None => 0,
        Some(v) => {
            let first = v.split(',').next().unwrap_or("").trim();
            match first.parse::<i64>() {
                Ok(n) if n >= 0 => n as u64,
                _ => {
                    rec.error = Some(format!("bad Content-Length {v:?}"));
                    return Parsed::Error { rec };
                }
            }
        }
    };
    let Some(end) = usize::try_from(length).ok().and_then(|l| at.checked_add(l)) else {
        return Parsed::Incomplete;
    };
    if buf.len() < end {
        return Parsed::Incomplete;
    }
    rec.body = buf[at..end].to_vec();
    Parsed::Complete { rec, used: end }
}

fn chunked_body(buf: &[u8], mut at: usize, mut rec: Rec) -> Parsed {
    loop {
        let Some((l, next)) = line(buf, at) else {
            return Parsed::Incomplete;
        };
        let size_text = text(l);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = match u64::from_str_radix(size_text, 16) {
            Ok(n) if !size_text.starts_with('+') => n,
            _ => {
                rec.error = Some(format!("bad chunk size {size_text:?}"));
                return Parsed::Error { rec };
            }
        };
        at = next;
        if size == 0 {
            // Trailers, up to an empty line.
            loop {
                let Some((l, next)) = line(buf, at) else {
                    return Parsed::Incomplete;
                };
                at = next;
                if l.is_empty() {
                    return Parsed::Complete { rec, used: at };
                }
            }
        }
        let Some(end) = usize::try_from(size).ok().and_then(|s| at.checked_add(s)) else {
            rec.error = Some("chunk size beyond memory".into());
            return Parsed::Error { rec };
        };
        if buf.len() <= end || (buf[end] == b'\r' && buf.len() < end + 2) {
            return Parsed::Incomplete;
        }
        rec.body.extend_from_slice(&buf[at..end]);
        at = if buf[end] == b'\n' {
            end + 1
        } else if buf[end] == b'\r' && buf[end + 1] == b'\n' {
            end + 2
        } else {
            rec.error = Some("no line end after chunk data".into());
            return Parsed::Error { rec };
        };
    }
}
