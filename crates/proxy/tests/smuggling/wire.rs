//! The client side: raw bytes out, responses read back with deadlines and split leniently.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

/// One response (or bytes that are not one) as a client received it.
#[derive(Debug, Clone)]
pub enum Piece {
    Resp {
        status: u16,
        /// The backend's `X-Id`: which recorded request this answers.
        id: Option<u64>,
        /// Its framing was complete (else it was cut by the close).
        complete: bool,
    },
    /// Bytes that do not start with `HTTP/` (an HTTP/0.9 answer, tunnel data, garbage).
    Raw(Vec<u8>),
}

impl Piece {
    pub fn is_final(&self) -> bool {
        match self {
            Piece::Resp { status, .. } => *status >= 200,
            Piece::Raw(_) => true,
        }
    }

    pub fn label(&self) -> String {
        match self {
            Piece::Resp {
                status,
                complete: true,
                ..
            } => status.to_string(),
            Piece::Resp { status, .. } => format!("{status}(cut)"),
            Piece::Raw(_) => "raw".into(),
        }
    }
}

/// How a read phase ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// What was waited for arrived.
    Enough,
    /// The proxy closed the connection.
    Eof,
    Reset(String),
    /// Nothing more within the deadline.
    Deadline,
    /// Never connected.
    NoConnection(String),
}

impl End {
    pub fn closed(&self) -> bool {
        matches!(self, End::Eof | End::Reset(_))
    }
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// Splits what a client received into responses. `first_is_head`: the first request was HEAD
/// (its response has no body whatever its headers say). `eof`: the connection is closed, so a
/// body delimited by the close is complete and a cut one counts as received.
pub fn pieces(raw: &[u8], first_is_head: bool, eof: bool) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut at = 0;
    let mut finals = 0;
    while at < raw.len() {
        let rest = &raw[at..];
        if !rest.starts_with(b"HTTP/") {
            if b"HTTP/".starts_with(rest) && !eof {
                break;
            }
            out.push(Piece::Raw(rest.to_vec()));
            break;
        }
        let (head_end, body_at) = match (find(rest, b"\r\n\r\n"), find(rest, b"\n\n")) {
            (Some(a), Some(b)) if b < a => (b, b + 2),
            (Some(a), _) => (a, a + 4),
            (None, Some(b)) => (b, b + 2),
            (None, None) => {
                if eof {
                    out.push(Piece::Raw(rest.to_vec()));
                }
                break;
            }
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).into_owned();
        let mut lines = head.lines();
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut length = None;
        let mut chunked = false;
        let mut id = None;
        let mut head_method = false;
        for l in lines {
            let Some((n, v)) = l.split_once(':') else {
                continue;
            };
            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim());
            match n.as_str() {
                "content-length" => length = v.parse::<usize>().ok(),
                "transfer-encoding" => chunked |= v.to_ascii_lowercase().contains("chunked"),
                "x-id" => id = v.parse().ok(),
                "x-req-method" => head_method = v == "HEAD",
                _ => {}
            }
        }
        let body = &rest[body_at..];
        if (100..200).contains(&status) {
            out.push(Piece::Resp {
                status,
                id,
                complete: true,
            });
            at += body_at;
            if status == 101 {
                if !body.is_empty() {
                    out.push(Piece::Raw(body.to_vec()));
                }
                break;
            }
            continue;
        }
        let no_body =
            (first_is_head && finals == 0) || head_method || status == 204 || status == 304;
        let used = if no_body {
            Some(0)
        } else if chunked {
            chunked_len(body)
        } else if let Some(n) = length {
            (body.len() >= n).then_some(n)
        } else if eof {
            Some(body.len())
        } else {
            None
        };
        finals += 1;
        match used {
            Some(n) => {
                out.push(Piece::Resp {
                    status,
                    id,
                    complete: true,
                });
                at += body_at + n;
            }
            None => {
                if eof {
                    out.push(Piece::Resp {
                        status,
                        id,
                        complete: false,
                    });
                }
                break;
            }
        }
    }
    out
}

/// The length of a complete chunked body at the start of `b`.
fn chunked_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let lf = b[at..].iter().position(|&c| c == b'\n')? + at;
        let line = String::from_utf8_lossy(&b[at..lf]);
        let size = usize::from_str_radix(line.trim().split(';').next()?.trim(), 16).ok()?;
        at = lf + 1;
        if size == 0 {
            loop {
                let lf = b[at..].iter().position(|&c| c == b'\n')? + at;
                let empty = b[at..lf].iter().all(|&c| c == b'\r');
                at = lf + 1;
                if empty {
                    return Some(at);
                }
            }
        }
        at = at.checked_add(size)?.checked_add(2)?;
        if at > b.len() {
            return None;
        }
    }
}

pub fn finals(raw: &[u8], first_is_head: bool) -> usize {
    pieces(raw, first_is_head, false)
        .iter()
        .filter(|p| p.is_final())
        .count()
}

/// One client connection and everything it received.
pub struct Conn {
    pub stream: Option<TcpStream>,
    pub raw: Vec<u8>,
    pub write_error: Option<String>,
    pub end: End,
    first_is_head: bool,
}

impl Conn {
    /// Connects and sends `bytes`, both bounded by `wait`.
    pub async fn send(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Conn {
        let deadline = Instant::now() + wait;
        let first_is_head = bytes.starts_with(b"HEAD ");
        let mut c = Conn {
            stream: None,
            raw: Vec::new(),
            write_error: None,
            end: End::Deadline,
            first_is_head,
        };
        let mut s = match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                c.end = End::NoConnection(e.to_string());
                return c;
            }
            Err(_) => {
                c.end = End::NoConnection("connect timed out".into());
                return c;
            }
        };
        let _ = s.set_nodelay(true);
        match timeout_at(deadline, s.write_all(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => c.write_error = Some(e.to_string()),
            Err(_) => c.write_error = Some("write timed out".into()),
        }
        c.stream = Some(s);
        c
    }

    pub fn pieces(&self) -> Vec<Piece> {
        pieces(&self.raw, self.first_is_head, self.end.closed())
    }

    /// Reads until `want` final responses arrived (`None`: until the close), the connection
    /// closes, or `wait` passes.
    pub async fn read(&mut self, want: Option<usize>, wait: Duration) {
        let deadline = Instant::now() + wait;
        let Some(s) = self.stream.as_mut() else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            if want.is_some_and(|w| finals(&self.raw, self.first_is_head) >= w) {
                self.end = End::Enough;
                return;
            }
            match timeout_at(deadline, s.read(&mut buf)).await {
                Err(_) => {
                    self.end = End::Deadline;
                    return;
                }
                Ok(Ok(0)) => {
                    self.end = End::Eof;
                    return;
                }
                Ok(Ok(n)) => self.raw.extend_from_slice(&buf[..n]),
                Ok(Err(e)) => {
                    self.end = End::Reset(e.to_string());
                    return;
                }
            }
        }
    }

    /// Half-closes (the client has nothing more to say) and reads until the proxy closes.
    pub async fn finish(&mut self, wait: Duration) {
        if self.end.closed() {
            return;
        }
        if let Some(s) = self.stream.as_mut() {
            let _ = s.shutdown().await;
        }
        self.read(None, wait).await;
    }
}
