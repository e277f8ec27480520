//! One request's way to a backend and back: the attempt loop (retries, ejection, local
//! answers), one attempt on one backend (a pooled or fresh connection, the request sent while
//! the response is read), the response body relay, and WebSocket tunnels.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant as StdInstant;

use bytes::Buf;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

use super::body::{self, Body, BodyError, Stream};
use super::chunked::{ChunkError, Chunked};
use super::head::{self, Framing, RequestHead, ResponseHead};
use super::{BUF, BackendConn, Client, Next};
use crate::backend::{BackendState, EjectReason, InFlight};
use crate::{ListenerConfig, Shared, table, tunnel};

/// How one attempt on one backend failed.
enum Failure {
    /// No connection: nothing was sent, the request can go anywhere else.
    Connect(io::Error),
    /// This process is out of descriptors or memory: not the backend's fault.
    Local(io::Error),
    /// Sent (maybe partly), and no response head came back.
    Lost(io::Error),
    /// No response head within the response timeout (or the backend stopped reading the body).
    Timeout,
    /// The backend was found hung while a replayable request waited on it.
    Hung,
    /// The client went away.
    Client,
    /// The client stopped sending its body.
    ClientStalled,
    /// The client's chunked body is malformed.
    BadBody(ChunkError),
}

/// How sending a request and reading its response head on one connection failed.
enum Undelivered {
    /// The connection failed before the backend got a single byte of the request: it can go
    /// anywhere (a pooled connection the backend had closed, or one it closed at once).
    NeverSent(io::Error),
    /// Nothing came back, and the request can go out again on a fresh connection (it never
    /// reached the backend, or it is replayable): the sign of a stale pooled connection.
    Stale(io::Error),
    Failed(Failure),
}

/// How much of the exchange was done when the response head came.
struct Progress {
    /// Every byte of the request reached the backend's socket.
    request_sent: bool,
    /// The client's whole body was read (so its connection can carry another request).
    client_body_read: bool,
}

pub(super) async fn forward(
    sh: &Arc<Shared>,
    cfg: &ListenerConfig,
    client: &mut Client,
    req: &RequestHead,
    up_head: &mut Vec<u8>,
    out: &mut Vec<u8>,
    closing: bool,
) -> Next {
    let mut body = match body::take(client, req, cfg).await {
        Ok(b) => b,
        Err(e) => return answer_client_failure(sh, client, req, cfg, e.into(), out).await,
    };
    if let Body::Buffered(b) = &body
        && req.body == Framing::Chunked
    {
        head::reframe(up_head, req, Framing::Length(b.len() as u64));
    }
    let replayable = req.idempotent && !body.is_stream();
    let start = StdInstant::now();
    let mut table = sh.table.load_full();
    let mut exclude = Vec::new();
    let mut last_failed = None;
    for attempt in 0..table::ATTEMPTS {
        let Some((idx, guard)) = table::enter(sh, &mut table, &mut exclude) else {
            if attempt == 0 {
                sh.no_backend.fetch_add(1, Relaxed);
                let msg = format!("no ready backend for app {}\n", sh.name);
                let whole = !body.is_stream();
                return local(
                    client,
                    req,
                    cfg,
                    503,
                    "Service Unavailable",
                    &msg,
                    whole,
                    out,
                )
                .await;
            }
            break;
        };
        if let Some(failed) = exclude.last().and_then(|i| table.backends.get(*i)) {
            failed.state.counters.retries.fetch_add(1, Relaxed);
        }
        let b = guard.backend().clone();
        last_failed = Some(idx);
        let mut guard = Some(guard);
        let result = attempt_on(
            sh, cfg, &b, &mut guard, client, req, up_head, &mut body, out, start, replayable,
            closing,
        )
        .await;
        match result {
            Ok(next) => return next,
            Err(f @ (Failure::Client | Failure::ClientStalled | Failure::BadBody(_))) => {
                return answer_client_failure(sh, client, req, cfg, f, out).await;
            }
            Err(Failure::Local(e)) => {
                sh.front.local_errors.fetch_add(1, Relaxed);
                if let Some(since) = sh.warnings.local_error.allow(StdInstant::now()) {
                    tracing::warn!(listener = %sh.name, error = %e, "cannot connect to an instance: the load balancer is out of resources{since}");
                }
                let msg = "the load balancer is out of resources; retry shortly\n";
                let whole = !body.is_stream();
                return local(
                    client,
                    req,
                    cfg,
                    503,
                    "Service Unavailable",
                    msg,
                    whole,
                    out,
                )
                .await;
            }
            Err(Failure::Connect(e)) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.name, backend = %b.id, error = %e, "connect failed");
                b.eject(sh, StdInstant::now(), EjectReason::Connect);
            }
            Err(Failure::Lost(e)) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.name, backend = %b.id, error = %e, "request lost before a response");
                b.failed(sh, StdInstant::now());
                if !replayable {
                    break;
                }
            }
            Err(Failure::Hung) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.name, backend = %b.id, "backend hung: the request goes elsewhere");
            }
            Err(Failure::Timeout) => {
                b.counters.errors.fetch_add(1, Relaxed);
                b.counters.timeouts.fetch_add(1, Relaxed);
                b.counters.record_response(504, start.elapsed());
                b.eject(sh, StdInstant::now(), EjectReason::Timeout);
                let msg = format!("gateway timeout: no answer from {} in time\n", sh.name);
                return local(client, req, cfg, 504, "Gateway Timeout", &msg, false, out).await;
            }
        }
        exclude.push(idx);
    }
    if let Some(b) = last_failed.and_then(|i| table.backends.get(i)) {
        b.state.counters.record_response(502, start.elapsed());
    }
    let msg = format!("bad gateway: no backend of {} answered\n", sh.name);
    local(client, req, cfg, 502, "Bad Gateway", &msg, false, out).await
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Failure {
        match e {
            BodyError::Gone => Failure::Client,
            BodyError::Stalled => Failure::ClientStalled,
            BodyError::Malformed(e) => Failure::BadBody(e),
        }
    }
}

/// The client's own failure: gone (nothing to answer), stalled (`408`) or a broken body
/// (`400`); counted, and the connection closed after the answer.
async fn answer_client_failure(
    sh: &Shared,
    client: &mut Client,
    req: &RequestHead,
    cfg: &ListenerConfig,
    failure: Failure,
    out: &mut Vec<u8>,
) -> Next {
    let (status, reason, msg) = match failure {
        Failure::ClientStalled => {
            sh.front.client_timeouts.fetch_add(1, Relaxed);
            (
                408,
                "Request Timeout",
                "request body too slow\n".to_string(),
            )
        }
        Failure::BadBody(e) => {
            sh.front.bad_requests.fetch_add(1, Relaxed);
            (400, "Bad Request", format!("{e}\n"))
        }
        _ => return Next::Close,
    };
    local(client, req, cfg, status, reason, &msg, false, out).await
}

/// A response made here. The connection stays open only when the client's whole request was
/// read (`body_read`, or it had none) and it asked for keep-alive.
#[allow(clippy::too_many_arguments)]
async fn local(
    client: &mut Client,
    req: &RequestHead,
    cfg: &ListenerConfig,
    status: u16,
    reason: &str,
    body: &str,
    body_read: bool,
    out: &mut Vec<u8>,
) -> Next {
    let whole = req.body == Framing::None || body_read;
    let keep = req.keep_alive && whole;
    head::local_response(status, reason, body, keep, out);
    if client.send(out, cfg.timeouts.body).await.is_err() {
        return Next::Close;
    }
    match (keep, whole) {
        (true, _) => Next::KeepAlive,
        (false, true) => Next::Close,
        (false, false) => Next::Linger,
    }
}

/// One attempt: a pooled connection (or a fresh one when the pool is empty, the pooled one
/// proves stale, or the body streams), the request, the response head, then the response
/// body to the client (or a tunnel).
#[allow(clippy::too_many_arguments)]
async fn attempt_on(
    sh: &Arc<Shared>,
    cfg: &ListenerConfig,
    b: &Arc<BackendState>,
    guard: &mut Option<InFlight>,
    client: &mut Client,
    req: &RequestHead,
    up_head: &[u8],
    body: &mut Body,
    out: &mut Vec<u8>,
    start: StdInstant,
    replayable: bool,
    closing: bool,
) -> Result<Next, Failure> {
    let t = &cfg.timeouts;
    // A streamed body cannot be sent twice: never risk it on a connection that may be stale.
    let mut pooled = if body.is_stream() {
        None
    } else {
        b.pool.checkout(StdInstant::now(), t.backend_idle)
    };
    let (mut up, resp, head_len, progress) = loop {
        let reused = pooled.is_some();
        let mut up = match pooled.take() {
            Some(c) => c,
            None => BackendConn::connect(b, t.connect).await.map_err(|e| {
                if crate::is_local_exhaustion(&e) {
                    Failure::Local(e)
                } else {
                    Failure::Connect(e)
                }
            })?,
        };
        match send_and_read(
            sh, cfg, b, &mut up, client, req, up_head, body, replayable, out, closing,
        )
        .await
        {
            Ok((len, resp, progress)) => break (up, resp, len, progress),
            Err(Undelivered::Stale(_) | Undelivered::NeverSent(_)) if reused => {
                b.counters.stale_retries.fetch_add(1, Relaxed);
            }
            Err(Undelivered::NeverSent(e)) => return Err(Failure::Connect(e)),
            Err(Undelivered::Stale(e)) => return Err(Failure::Lost(e)),
            Err(Undelivered::Failed(f)) => return Err(f),
        }
    };
    up.buf.advance(head_len);
    // A small response is read whole before anything goes to the client: should the instance
    // die between its head and its body (a JVM writes them apart), a replayable request goes
    // to another instance and any other gets a clean 502, never a cut answer.
    if let Framing::Length(n) = resp.body {
        whole_small_body(sh, cfg, b, &mut up, n).await?;
    }
    b.succeeded();
    b.counters.record_response(resp.status, start.elapsed());
    if resp.upgraded {
        return Ok(tunnel(sh, cfg, up, client, out, guard).await);
    }
    let mut reusable = resp.reusable && progress.request_sent;
    match relay_body(sh, cfg, b, &mut up, client, &resp, out, guard).await {
        Ok(clean) => reusable &= clean,
        Err(Relay::Backend(e)) => {
            b.counters.errors.fetch_add(1, Relaxed);
            tracing::debug!(listener = %sh.name, backend = %b.id, error = %e, "response body cut short");
            return Ok(Next::Close);
        }
        Err(Relay::Client(timed_out)) => {
            if timed_out {
                sh.front.client_timeouts.fetch_add(1, Relaxed);
            }
            return Ok(Next::Close);
        }
    }
    if reusable && !b.removed.load(Relaxed) {
        b.pool
            .checkin(up, StdInstant::now(), cfg.limits.max_idle_per_backend);
    }
    Ok(if !progress.client_body_read {
        Next::Linger
    } else if resp.client_keep_alive {
        Next::KeepAlive
    } else {
        Next::Close
    })
}

/// Bodies up to this size are read whole before a replayable request's response is relayed.
const SMALL_BODY: u64 = BUF as u64;

/// Reads a body of `n` bytes (when small) into the backend connection's buffer, each read
/// bounded by the response timeout. A failure is the backend's, before any response byte
/// reached the client.
async fn whole_small_body(
    sh: &Shared,
    cfg: &ListenerConfig,
    b: &BackendState,
    up: &mut BackendConn,
    n: u64,
) -> Result<(), Failure> {
    if n > SMALL_BODY {
        return Ok(());
    }
    while (up.buf.len() as u64) < n {
        up.buf.reserve(BUF);
        let read = tokio::time::timeout(
            cfg.timeouts.response,
            tokio::io::AsyncReadExt::read_buf(&mut up.stream, &mut up.buf),
        )
        .await;
        match read {
            Ok(Ok(0)) => {
                return Err(Failure::Lost(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed the connection inside the body",
                )));
            }
            Ok(Ok(_)) => b.progress(sh.nanos(StdInstant::now())),
            Ok(Err(e)) => return Err(Failure::Lost(e)),
            Err(_) => return Err(Failure::Timeout),
        }
    }
    Ok(())
}

/// What the wait in [`send_and_read`] is bounded by.
#[derive(Clone, Copy)]
enum Wait {
    /// The backend does not take the request's bytes.
    BackendWrite,
    /// The client does not send its body.
    ClientBody,
    /// The response head does not come.
    Response,
    /// Time to look whether the backend is stalled.
    StallCheck,
}

/// Sends the request (head, body) while reading the response, until a final response head is
/// complete — which may come before the body is all sent: an early answer (401, 413) is
/// relayed, not turned into a 502.
#[allow(clippy::too_many_arguments)]
async fn send_and_read(
    sh: &Arc<Shared>,
    cfg: &ListenerConfig,
    b: &Arc<BackendState>,
    up: &mut BackendConn,
    client: &mut Client,
    req: &RequestHead,
    up_head: &[u8],
    body: &mut Body,
    replayable: bool,
    out: &mut Vec<u8>,
    closing: bool,
) -> Result<(usize, ResponseHead, Progress), Undelivered> {
    let t = &cfg.timeouts;
    let stall = cfg.outlier.stall;
    let (buffered, mut stream): (&[u8], Option<&mut Stream>) = match body {
        Body::None => (&[], None),
        Body::Buffered(bytes) => (&bytes[..], None),
        Body::Stream(s) => (&[], Some(s)),
    };
    // Outgoing: the head, a buffered body, then what the client's stream produces.
    let parts: [&[u8]; 2] = [up_head, buffered];
    let (mut part, mut at) = (0usize, 0usize);
    let mut chunk: Vec<u8> = Vec::new();
    let mut chunk_at = 0usize;
    let mut received = false;
    let mut write_failed = false;
    let mut last_write = Instant::now();
    let mut last_client = Instant::now();
    let mut waiting_since: Option<Instant> = None;
    let mut next_stall_check: Option<Instant> = None;
    let mut suspected = false;
    let BackendConn {
        stream: up_stream,
        buf: up_buf,
    } = up;
    let (mut up_read, mut up_write) = up_stream.split();
    loop {
        if !up_buf.is_empty() {
            received = true;
            match head::parse_response(up_buf, req, closing, out) {
                Ok(Some((len, resp))) if resp.status < 200 && !resp.upgraded => {
                    up_buf.advance(len);
                    continue;
                }
                Ok(Some((len, resp))) => {
                    let progress = Progress {
                        request_sent: !write_failed
                            && part >= 2
                            && chunk_at >= chunk.len()
                            && stream.as_ref().is_none_or(|s| s.is_done()),
                        client_body_read: stream.as_ref().is_none_or(|s| s.is_done()),
                    };
                    return Ok((len, resp, progress));
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Undelivered::Failed(Failure::Lost(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad response head: {e}"),
                    ))));
                }
            }
        }
        // What goes out next.
        while part < 2 && at >= parts[part].len() {
            part += 1;
            at = 0;
        }
        if part >= 2
            && chunk_at >= chunk.len()
            && let Some(s) = stream.as_deref_mut()
            && !s.is_done()
            && (!client.buf.is_empty() || s.has_pending())
        {
            chunk.clear();
            chunk_at = 0;
            s.produce(&mut client.buf, &mut chunk)
                .map_err(|e| Undelivered::Failed(Failure::BadBody(e)))?;
        }
        let writing: &[u8] = if write_failed {
            &[]
        } else if part < 2 {
            &parts[part][at..]
        } else {
            &chunk[chunk_at..]
        };
        let body_left = stream.as_ref().is_some_and(|s| !s.is_done());
        let need_client = !write_failed && writing.is_empty() && body_left;
        if writing.is_empty() && !need_client && waiting_since.is_none() {
            let now = Instant::now();
            waiting_since = Some(now);
            if !stall.is_zero() {
                next_stall_check = Some(now + stall);
            }
        }
        let (deadline, wait) = if !writing.is_empty() {
            (last_write + t.response, Wait::BackendWrite)
        } else if need_client {
            (last_client + t.body, Wait::ClientBody)
        } else {
            let timeout_at = waiting_since.unwrap_or_else(Instant::now) + t.response;
            match next_stall_check {
                Some(check) if check < timeout_at => (check, Wait::StallCheck),
                _ => (timeout_at, Wait::Response),
            }
        };
        tokio::select! {
            biased;
            r = tokio::io::AsyncReadExt::read_buf(&mut up_read, up_buf) => match r {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::UnexpectedEof, "backend closed the connection");
                    return Err(lost(e, received, replayable, part == 0 && at == 0));
                }
                Ok(_) => b.progress(sh.nanos(StdInstant::now())),
                Err(e) => return Err(lost(e, received, replayable, part == 0 && at == 0)),
            },
            r = up_write.write(writing), if !writing.is_empty() => match r {
                Ok(0) => write_failed = true,
                Ok(n) => {
                    if part < 2 {
                        at += n;
                    } else {
                        chunk_at += n;
                    }
                    last_write = Instant::now();
                }
                // Keep reading: an early answer may be on its way.
                Err(_) => write_failed = true,
            },
            r = client.fill(), if need_client => match r {
                Ok(0) | Err(_) => return Err(Undelivered::Failed(Failure::Client)),
                Ok(_) => last_client = Instant::now(),
            },
            _ = tokio::time::sleep_until(deadline) => match wait {
                Wait::BackendWrite | Wait::Response => return Err(Undelivered::Failed(Failure::Timeout)),
                Wait::ClientBody => return Err(Undelivered::Failed(Failure::ClientStalled)),
                Wait::StallCheck => {
                    b.suspect(sh, StdInstant::now());
                    suspected = true;
                    next_stall_check = Some(Instant::now() + stall);
                }
            },
            _ = b.wait_hung(), if suspected && replayable && !received => {
                return Err(Undelivered::Failed(Failure::Hung));
            }
        }
    }
}

/// The backend failed before a response head: retry-worthy on a fresh connection when nothing
/// came back and the request is replayable, and anywhere when it never left (`nothing_sent`).
fn lost(e: io::Error, received: bool, replayable: bool, nothing_sent: bool) -> Undelivered {
    if !received && nothing_sent {
        Undelivered::NeverSent(e)
    } else if !received && replayable {
        Undelivered::Stale(e)
    } else {
        Undelivered::Failed(Failure::Lost(e))
    }
}

enum Relay {
    Backend(io::Error),
    /// The client went away or stopped reading (`true`: timed out).
    Client(bool),
}

/// Writes the response head (in `out`) and streams the body to the client. `Ok(true)`: the
/// body ended exactly where the backend's framing said, and the connection can be reused.
/// The backend's in-flight count drops as soon as its whole response has been read: from then
/// on, stopping the instance cannot hurt this request.
#[allow(clippy::too_many_arguments)]
async fn relay_body(
    sh: &Shared,
    cfg: &ListenerConfig,
    b: &BackendState,
    up: &mut BackendConn,
    client: &mut Client,
    resp: &ResponseHead,
    out: &mut Vec<u8>,
    guard: &mut Option<InFlight>,
) -> Result<bool, Relay> {
    let t = &cfg.timeouts;
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
                .send(out, t.body)
                .await
                .map_err(|e| Relay::Client(e.kind() == io::ErrorKind::TimedOut))?;
            out.clear();
        }
        if done {
            // Bytes beyond the body: the backend broke the framing; do not reuse.
            return Ok(up.buf.is_empty());
        }
        up.buf.clear();
        up.buf.reserve(BUF);
        let read = tokio::time::timeout(
            t.response,
            tokio::io::AsyncReadExt::read_buf(&mut up.stream, &mut up.buf),
        )
        .await;
        match read {
            Ok(Ok(0)) if resp.body == Framing::UntilClose => return Ok(false),
            Ok(Ok(0)) => {
                return Err(Relay::Backend(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "backend closed the connection inside the body",
                )));
            }
            Ok(Ok(_)) => b.progress(sh.nanos(StdInstant::now())),
            Ok(Err(e)) => return Err(Relay::Backend(e)),
            Err(_) => {
                return Err(Relay::Backend(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the response body stalled",
                )));
            }
        }
    }
}

/// A `101` to a WebSocket offer: the head (and whatever followed it) to the client, then bytes
/// both ways until either side closes or nothing moves for `tcp_idle`. The in-flight guard
/// lives as long as the tunnel, so a drain before stop waits for it.
async fn tunnel(
    sh: &Shared,
    cfg: &ListenerConfig,
    mut up: BackendConn,
    client: &mut Client,
    head_out: &[u8],
    guard: &mut Option<InFlight>,
) -> Next {
    let t = &cfg.timeouts;
    if client.send(head_out, t.body).await.is_err() {
        return Next::Close;
    }
    if !up.buf.is_empty() {
        if client.send(&up.buf, t.body).await.is_err() {
            return Next::Close;
        }
        up.buf.clear();
    }
    if !client.buf.is_empty() {
        let sent = tokio::time::timeout(t.body, up.stream.write_all(&client.buf)).await;
        if !matches!(sent, Ok(Ok(()))) {
            return Next::Close;
        }
        client.buf.clear();
    }
    sh.front.tunnels.fetch_add(1, Relaxed);
    let _open = OpenTunnel::count(&sh.front.tunnels_open);
    let r = tunnel::pump(&mut client.stream, &mut up.stream, t.tcp_idle).await;
    if let Err(e) = r {
        tracing::debug!(listener = %sh.name, error = %e, "WebSocket tunnel ended");
    }
    guard.take();
    Next::Close
}

/// Counts an open tunnel until dropped (also when the listener's hard stop cancels it).
struct OpenTunnel<'a>(&'a std::sync::atomic::AtomicU64);

impl<'a> OpenTunnel<'a> {
    fn count(c: &'a std::sync::atomic::AtomicU64) -> OpenTunnel<'a> {
        c.fetch_add(1, Relaxed);
        OpenTunnel(c)
    }
}

impl Drop for OpenTunnel<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}
