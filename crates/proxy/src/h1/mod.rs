//! HTTP/1.1 mode: one task per client connection moves requests to backends and responses
//! back, reading and writing the sockets itself.
//!
//! Heads are parsed with `httparse` (the parser hyper uses) and rewritten straight into a
//! buffer; bodies are copied through a fixed buffer as they come (Content-Length, chunked, or
//! until close), never held whole. A backend connection is owned by the task for the length of
//! one exchange and then goes back to the backend's pool: no connection task, no channel, no
//! per-request header map. The rules (retries, stale pooled connections, ejection, counters,
//! drain) are those described in the crate docs.

pub(crate) mod chunked;
pub(crate) mod head;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::{BackendState, ConnToken, GRACEFUL, HARD, InFlight, Shared};
use chunked::Chunked;
use head::{Framing, RequestHead};

/// Read buffer per connection side; bodies are copied through it.
const BUF: usize = 16 * 1024;
/// A client connection with no request for this long is closed (nginx: 75 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(75);
/// A request head must be complete this long after its first byte (slow clients).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A keep-alive connection to a backend with its read buffer (empty between exchanges).
pub(crate) struct BackendConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl BackendConn {
    /// TCP connect bounded by `timeout`, TCP_NODELAY.
    async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<BackendConn> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {addr} timed out"),
                ));
            }
        };
        stream.set_nodelay(true)?;
        Ok(BackendConn {
            stream,
            buf: BytesMut::with_capacity(BUF),
        })
    }

    /// Still usable after sitting idle: the backend neither closed it nor sent anything.
    pub(crate) fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(BUF);
        self.stream.read_buf(&mut self.buf).await
    }
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
    ip: String,
}

impl Client {
    async fn fill(&mut self) -> io::Result<usize> {
        self.buf.reserve(BUF);
        self.stream.read_buf(&mut self.buf).await
    }
}

/// What happens to the client connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// Close, but the client may still be sending a body the proxy did not read.
    Linger,
}

pub(crate) async fn serve(
    sh: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    stop: watch::Receiver<u8>,
    _token: ConnToken,
) {
    let mut hard = stop.clone();
    let client = Client {
        stream,
        buf: BytesMut::with_capacity(BUF),
        ip: peer.ip().to_string(),
    };
    tokio::select! {
        biased;
        _ = wait_state(&mut hard, HARD) => {}
        _ = run(&sh, client, stop) => {}
    }
}

/// Returns once the listener's state is at least `at_least` (or the listener is gone).
async fn wait_state(rx: &mut watch::Receiver<u8>, at_least: u8) {
    loop {
        if *rx.borrow_and_update() >= at_least {
            return;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn run(sh: &Shared, mut client: Client, stop: watch::Receiver<u8>) {
    let mut graceful_rx = stop.clone();
    let graceful = wait_state(&mut graceful_rx, GRACEFUL);
    tokio::pin!(graceful);
    let idle = tokio::time::sleep(IDLE_TIMEOUT);
    tokio::pin!(idle);
    let mut up_head = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(BUF);
    loop {
        // One request head.
        let (len, req) = loop {
            if !client.buf.is_empty() {
                match head::parse_request(&client.buf, &client.ip, &mut up_head) {
                    Ok(Some(parsed)) => break parsed,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(listener = %sh.cfg.name, client = %client.ip, error = %e, "bad request");
                        let (status, reason) = match e {
                            head::HeadError::TooLarge => (431, "Request Header Fields Too Large"),
                            head::HeadError::Invalid(_) => (400, "Bad Request"),
                        };
                        head::local_response(status, reason, &format!("{e}\n"), false, &mut out);
                        let _ = client.stream.write_all(&out).await;
                        linger_close(client).await;
                        return;
                    }
                }
            }
            let read = if client.buf.is_empty() {
                // Between requests: idle, or the listener is stopping.
                let now = tokio::time::Instant::now();
                if idle.deadline() < now + IDLE_TIMEOUT - Duration::from_secs(5) {
                    idle.as_mut().reset(now + IDLE_TIMEOUT);
                }
                tokio::select! {
                    biased;
                    r = client.fill() => r,
                    _ = &mut graceful => return,
                    _ = &mut idle => return,
                }
            } else {
                match tokio::time::timeout(HEAD_TIMEOUT, client.fill()).await {
                    Ok(r) => r,
                    Err(_) => {
                        head::local_response(
                            408,
                            "Request Timeout",
                            "request head too slow\n",
                            false,
                            &mut out,
                        );
                        let _ = client.stream.write_all(&out).await;
                        return;
                    }
                }
            };
            match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        client.buf.advance(len);
        if req.expect_continue
            && req.minor >= 1
            && client
                .stream
                .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                .await
                .is_err()
        {
            return;
        }
        let closing = stop.has_changed().unwrap_or(true);
        match forward(sh, &mut client, &req, &up_head, &mut out, closing).await {
            Next::KeepAlive if !closing => {}
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

/// Closes after a response the client may not have read yet while it still sends: shut the
/// write side, then discard what comes for a moment, so the kernel does not answer unread
/// data with a reset that would destroy the response in flight.
async fn linger_close(mut client: Client) {
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

/// How one attempt on one backend failed.
enum Failure {
    /// No connection: nothing was sent, the request can go anywhere else.
    Connect(io::Error),
    /// Sent (maybe partly), and no response head came back.
    Lost(io::Error),
    /// The client went away or broke its own request body.
    Client,
}

async fn forward(
    sh: &Shared,
    client: &mut Client,
    req: &RequestHead,
    up_head: &[u8],
    out: &mut Vec<u8>,
    closing: bool,
) -> Next {
    let start = Instant::now();
    let replayable = req.idempotent && req.body == Framing::None;
    let mut table = sh.table.load_full();
    let mut exclude = None;
    let mut last_failed = None;
    for attempt in 0..2 {
        let Some((idx, guard)) = crate::enter(sh, &mut table, &mut exclude) else {
            if attempt == 0 {
                sh.no_backend.fetch_add(1, Relaxed);
                let body = format!("no ready backend for app {}\n", sh.cfg.name);
                return local(client, req, 503, "Service Unavailable", &body, out).await;
            }
            break;
        };
        if let Some(failed) = exclude.and_then(|i: usize| table.backends.get(i)) {
            failed.state.counters.retries.fetch_add(1, Relaxed);
        }
        let b = guard.backend().clone();
        let b = &b;
        last_failed = Some(idx);
        let mut guard = Some(guard);
        match exchange(
            sh, b, &mut guard, client, req, up_head, out, start, replayable, closing,
        )
        .await
        {
            Ok(next) => return next,
            Err(Failure::Client) => return Next::Close,
            Err(Failure::Connect(e)) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "connect failed");
                b.eject(sh, Instant::now());
            }
            Err(Failure::Lost(e)) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "request lost before a response");
                if !replayable {
                    break;
                }
            }
        }
        exclude = Some(idx);
    }
    if let Some(b) = last_failed.and_then(|i| table.backends.get(i)) {
        b.state.counters.record_response(502, start.elapsed());
    }
    let body = format!("bad gateway: no backend of {} answered\n", sh.cfg.name);
    local(client, req, 502, "Bad Gateway", &body, out).await
}

/// A response made here. The connection stays open only when the request had no body (a body
/// may be partly unread).
async fn local(
    client: &mut Client,
    req: &RequestHead,
    status: u16,
    reason: &str,
    body: &str,
    out: &mut Vec<u8>,
) -> Next {
    let keep = req.keep_alive && req.body == Framing::None;
    head::local_response(status, reason, body, keep, out);
    if client.stream.write_all(out).await.is_err() {
        return Next::Close;
    }
    match (keep, req.body) {
        (true, _) => Next::KeepAlive,
        (false, Framing::None) => Next::Close,
        (false, _) => Next::Linger,
    }
}

/// One attempt: a pooled connection (or a fresh one when the pool is empty or the pooled one
/// proves stale), the request, the response head, then the response body to the client.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    sh: &Shared,
    b: &BackendState,
    guard: &mut Option<InFlight>,
    client: &mut Client,
    req: &RequestHead,
    up_head: &[u8],
    out: &mut Vec<u8>,
    start: Instant,
    replayable: bool,
    closing: bool,
) -> Result<Next, Failure> {
    let mut pooled = b.pool.checkout(Instant::now());
    let (mut up, resp, head_len) = loop {
        let reused = pooled.is_some();
        let mut up = match pooled.take() {
            Some(c) => c,
            None => BackendConn::connect(b.addr, sh.cfg.timeouts.connect)
                .await
                .map_err(Failure::Connect)?,
        };
        if let Err(e) = up.stream.write_all(up_head).await {
            if reused {
                // Nothing of the body was read yet: the request goes out fresh.
                b.counters.stale_retries.fetch_add(1, Relaxed);
                continue;
            }
            return Err(Failure::Lost(e));
        }
        if req.body != Framing::None {
            send_body(client, &mut up, req.body).await?;
        }
        match read_head(&mut up, req, closing, out).await {
            Ok((len, resp)) => break (up, resp, len),
            Err((e, nothing)) => {
                if reused && nothing && replayable {
                    b.counters.stale_retries.fetch_add(1, Relaxed);
                    continue;
                }
                return Err(Failure::Lost(e));
            }
        }
    };
    b.counters.record_response(resp.status, start.elapsed());
    up.buf.advance(head_len);
    let mut reusable = resp.reusable;
    match relay_body(&mut up, client, &resp, out, guard).await {
        Ok(clean) => reusable &= clean,
        Err(Relay::Backend(e)) => {
            b.counters.errors.fetch_add(1, Relaxed);
            tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "response body cut short");
            return Ok(Next::Close);
        }
        Err(Relay::Client) => return Ok(Next::Close),
    }
    if reusable && !b.removed.load(Relaxed) {
        b.pool.checkin(up, Instant::now());
    }
    Ok(if resp.client_keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

/// Streams the request body from the client to the backend.
async fn send_body(
    client: &mut Client,
    up: &mut BackendConn,
    framing: Framing,
) -> Result<(), Failure> {
    let mut chunked = Chunked::new();
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        if client.buf.is_empty() {
            match client.fill().await {
                Ok(0) | Err(_) => return Err(Failure::Client),
                Ok(_) => {}
            }
        }
        let take = if framing == Framing::Chunked {
            chunked
                .feed(&client.buf, |_| {})
                .map_err(|_| Failure::Client)?
        } else {
            usize::try_from(left).map_or(client.buf.len(), |l| l.min(client.buf.len()))
        };
        up.stream
            .write_all(&client.buf[..take])
            .await
            .map_err(Failure::Lost)?;
        client.buf.advance(take);
        left -= take as u64;
        if left == 0 || chunked.is_done() {
            return Ok(());
        }
    }
}

/// Reads until a final response head is complete; 1xx heads are skipped. On error, also says
/// whether nothing at all came back (the signature of a stale keep-alive connection).
async fn read_head(
    up: &mut BackendConn,
    req: &RequestHead,
    closing: bool,
    out: &mut Vec<u8>,
) -> Result<(usize, head::ResponseHead), (io::Error, bool)> {
    let mut received = false;
    loop {
        if !up.buf.is_empty() {
            received = true;
            match head::parse_response(&up.buf, req, closing, out) {
                Ok(Some((len, resp))) if resp.status < 200 => {
                    up.buf.advance(len);
                    continue;
                }
                Ok(Some(parsed)) => return Ok(parsed),
                Ok(None) => {}
                Err(e) => {
                    return Err((
                        io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("bad response head: {e}"),
                        ),
                        false,
                    ));
                }
            }
        }
        match up.fill().await {
            Ok(0) => {
                return Err((
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "backend closed the connection",
                    ),
                    !received,
                ));
            }
            Ok(_) => {}
            Err(e) => return Err((e, !received)),
        }
    }
}

enum Relay {
    Backend(io::Error),
    Client,
}

/// Writes the response head (in `out`) and streams the body to the client. `Ok(true)`: the
/// body ended exactly where the backend's framing said, and the connection can be reused.
/// The backend's in-flight count drops as soon as its whole response has been read: from then
/// on, stopping the instance cannot hurt this request.
async fn relay_body(
    up: &mut BackendConn,
    client: &mut Client,
    resp: &head::ResponseHead,
    out: &mut Vec<u8>,
    guard: &mut Option<InFlight>,
) -> Result<bool, Relay> {
    let mut chunked = Chunked::new();
    let mut left = match resp.body {
        Framing::Length(n) => n,
        _ => 0,
    };
    // The head and whatever body bytes came with it go out in one write; then each read.
    loop {
        let done = match resp.body {
            Framing::None => true,
            Framing::Length(_) => {
                let take = usize::try_from(left).map_or(up.buf.len(), |l| l.min(up.buf.len()));
                out.extend_from_slice(&up.buf[..take]);
                up.buf.advance(take);
                left -= take as u64;
                left == 0
            }
            Framing::Chunked => {
                let dechunk = resp.dechunk;
                let mut payload = Vec::new();
                let used = chunked
                    .feed(&up.buf, |p| {
                        if dechunk {
                            payload.extend_from_slice(p);
                        }
                    })
                    .map_err(|e| Relay::Backend(io::Error::new(io::ErrorKind::InvalidData, e)))?;
                out.extend_from_slice(if dechunk { &payload } else { &up.buf[..used] });
                up.buf.advance(used);
                chunked.is_done()
            }
            Framing::UntilClose => {
                out.extend_from_slice(&up.buf);
                up.buf.clear();
                false
            }
        };
        if done {
            guard.take();
        }
        if !out.is_empty() {
            client
                .stream
                .write_all(out)
                .await
                .map_err(|_| Relay::Client)?;
            out.clear();
        }
        if done {
            // Bytes beyond the body: the backend broke the framing; do not reuse.
            return Ok(up.buf.is_empty());
        }
        up.buf.clear();
        match up.fill().await {
            Ok(0) if resp.body == Framing::UntilClose => return Ok(false),
            Ok(0) => {
                return Err(Relay::Backend(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed the connection inside the body",
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(Relay::Backend(e)),
        }
    }
}
