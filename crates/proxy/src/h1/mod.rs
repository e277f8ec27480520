//! HTTP/1.1 mode: one task per client connection moves requests to backends and responses
//! back, reading and writing the sockets itself.
//!
//! Heads are parsed with `httparse`, checked strictly and rewritten straight into a buffer
//! (`head`); request bodies are read whole when small (`body`), otherwise streamed; the
//! exchange with a backend sends the request while it reads the response (`exchange`), and
//! response bodies are copied through a fixed buffer as they come (Content-Length, chunked, or
//! until close), never held whole. A backend connection is owned by the task for the length of
//! one exchange and then goes back to the backend's pool: no connection task, no channel, no
//! per-request header map. The rules (retries, stale pooled connections, ejection, counters,
//! drain, timeouts) are those described in the crate docs.

mod body;
pub(crate) mod chunked;
mod exchange;
pub(crate) mod head;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Shared;
use crate::backend::BackendState;
use crate::conns::{ConnToken, GRACEFUL, HARD, RECLAIM_MIN_IDLE, RUNNING, Signal};
use crate::upstream::Upstream;

/// Read buffer per connection side; bodies are copied through it.
pub(crate) const BUF: usize = 16 * 1024;

/// A keep-alive connection to a backend with its read buffer (empty between exchanges).
pub(crate) struct BackendConn {
    stream: Upstream,
    buf: BytesMut,
}

impl BackendConn {
    /// A connection to `b` bounded by `timeout`, TCP_NODELAY (through its relay when it is
    /// another node's).
    async fn connect(b: &BackendState, timeout: Duration) -> io::Result<BackendConn> {
        Ok(BackendConn {
            stream: Upstream::connect(b, timeout).await?,
            buf: BytesMut::with_capacity(BUF),
        })
    }

    /// Still usable after sitting idle: the backend neither closed it nor sent anything.
    pub(crate) fn is_open(&self) -> bool {
        self.stream.is_open()
    }
}

pub(crate) struct Client {
    stream: TcpStream,
    buf: BytesMut,
    ip: String,
}

impl Client {
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(BUF);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Writes all of `data`, bounded by `timeout` (a client that does not read).
    async fn send(&mut self, data: &[u8], timeout: Duration) -> io::Result<()> {
        match tokio::time::timeout(timeout, self.stream.write_all(data)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client does not read its response",
            )),
        }
    }
}

/// What happens to the client connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    KeepAlive,
    Close,
    /// Close, but the client may still be sending a body the proxy did not read.
    Linger,
}

pub(crate) async fn serve(sh: Arc<Shared>, stream: TcpStream, peer: SocketAddr, token: ConnToken) {
    let accepted = Instant::now();
    let mut hard = token.signal();
    let client = Client {
        stream,
        buf: BytesMut::with_capacity(BUF),
        ip: peer.ip().to_string(),
    };
    tokio::select! {
        biased;
        _ = hard.wait_for(|s| s.stop >= HARD) => {}
        _ = run(&sh, client, &token, accepted) => {}
    }
}

/// How the wait for a request's first byte ended.
enum FirstByte {
    Data,
    /// The client closed, or the listener stops, or the connection was reclaimed.
    Closed,
    TimedOut,
}

async fn run(sh: &Arc<Shared>, mut client: Client, token: &ConnToken, accepted: Instant) {
    let mut signal = token.signal();
    signal.borrow_and_update();
    let mut up_head = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(BUF);
    let mut first = true;
    loop {
        let cfg = sh.config().clone();
        let t = cfg.timeouts;
        // The head deadline: from the accept for the first request (a client that connects and
        // says nothing), from the first byte for the next ones. Never moved by later bytes.
        let mut head_deadline = accepted + t.head;
        if client.buf.is_empty() {
            let until = if first {
                head_deadline
            } else {
                Instant::now() + t.keep_alive
            };
            match first_byte(&mut client, &mut signal, until, token).await {
                FirstByte::Data => {}
                FirstByte::Closed => return,
                FirstByte::TimedOut => {
                    if first {
                        sh.front.head_timeouts.fetch_add(1, Relaxed);
                    }
                    return;
                }
            }
        }
        if !first {
            head_deadline = Instant::now() + t.head;
        }
        let (len, req) = loop {
            match head::parse_request(&client.buf, &client.ip, &mut up_head) {
                Ok(Some(parsed)) => break parsed,
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(listener = %sh.name, client = %client.ip, error = %e, "request refused");
                    sh.front.bad_requests.fetch_add(1, Relaxed);
                    let (status, reason) = e.status();
                    head::local_response(status, reason, &format!("{e}\n"), false, &mut out);
                    let _ = client.send(&out, t.body).await;
                    linger_close(client).await;
                    return;
                }
            }
            match tokio::time::timeout_at(head_deadline, client.fill()).await {
                Ok(Ok(0) | Err(_)) => return,
                Ok(Ok(_)) => {}
                Err(_) => {
                    sh.front.head_timeouts.fetch_add(1, Relaxed);
                    head::local_response(
                        408,
                        "Request Timeout",
                        "request head not complete in time\n",
                        false,
                        &mut out,
                    );
                    let _ = client.send(&out, t.body).await;
                    linger_close(client).await;
                    return;
                }
            }
        };
        first = false;
        client.buf.advance(len);
        if req.expect_continue
            && req.minor >= 1
            && client
                .send(b"HTTP/1.1 100 Continue\r\n\r\n", t.body)
                .await
                .is_err()
        {
            return;
        }
        let closing = signal.borrow().stop != RUNNING;
        match exchange::forward(sh, &cfg, &mut client, &req, &mut up_head, &mut out, closing).await
        {
            // A hand-over that began during the exchange: the client was told it may send
            // again, so the next request is answered (with `Connection: close`).
            Next::KeepAlive if signal.borrow().stop < GRACEFUL => {}
            Next::KeepAlive => return,
            Next::Close => {
                let _ = client.stream.shutdown().await;
                return;
            }
            Next::Linger => {
                linger_close(client).await;
                return;
            }
        }
    }
}

/// Waits for the first byte of a request (into the client's buffer) until `until`, the
/// listener's stop, or — once idle for [`RECLAIM_MIN_IDLE`] — a reclaim at a connection cap.
async fn first_byte(
    client: &mut Client,
    signal: &mut watch::Receiver<Signal>,
    until: Instant,
    token: &ConnToken,
) -> FirstByte {
    let idle_since = Instant::now();
    let mut reclaims_seen = signal.borrow().reclaim;
    loop {
        tokio::select! {
            biased;
            r = client.fill() => {
                return match r {
                    Ok(0) | Err(_) => FirstByte::Closed,
                    Ok(_) => FirstByte::Data,
                };
            }
            r = signal.changed() => {
                if r.is_err() {
                    return FirstByte::Closed;
                }
                let s = *signal.borrow_and_update();
                if s.stop >= GRACEFUL {
                    return FirstByte::Closed;
                }
                // A hand-over keeps waiting: the client may be sending its next request now.
                let reclaim = s.reclaim != reclaims_seen;
                reclaims_seen = s.reclaim;
                if reclaim && idle_since.elapsed() >= RECLAIM_MIN_IDLE {
                    token.reclaimed();
                    return FirstByte::Closed;
                }
            }
            _ = tokio::time::sleep_until(until) => return FirstByte::TimedOut,
        }
    }
}

/// Closes after a response the client may not have read yet while it still sends: shut the
/// write side, then discard what comes for a moment, so the kernel does not answer unread
/// data with a reset that would destroy the response in flight.
pub(crate) async fn linger_close(mut client: Client) {
    if client.stream.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut total = 0usize;
        while total < 1 << 20 {
            match client.stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}
