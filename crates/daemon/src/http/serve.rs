//! The TCP accept loop: one task per connection, a TLS handshake first when configured (bounded
//! in time), then HTTP/1.1 by hyper; and the limits a hostile client meets ([`super::limits`]
//! decides, this module acts):
//!
//! * every connection has a watchdog that closes it when its [`Phase`] runs out of time: a whole
//!   request head within the header timeout (from the accept, or from the first byte of a later
//!   request: bytes trickling in do not move it), and the next request within the idle timeout.
//!   A request being answered (a stream included) has no deadline;
//! * at most `max_connections` are served: a connection accepted at the cap first has the
//!   accept loop close connections that wait for a request, oldest first, then requests answered
//!   without the token (open reads, the dashboard's files); when none can be closed it waits unanswered and the loop stops accepting
//!   (the next ones wait in the kernel's backlog) until a connection ends. The unix socket is
//!   served elsewhere and never capped.
//!
//! hyper's own `header_read_timeout` is not used: it starts when hyper starts waiting for a head,
//! so on a kept-alive connection it is also the idle timeout, and it cannot see a TLS handshake.

use jarfleet_core::events::EventKind;
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::auth::Alerts;
use super::limits::{self, Expired, Limits, Phase};

/// The TLS configuration for new connections (`None`: plain HTTP).
pub type SharedTls = Arc<ArcSwap<Option<tokio_rustls::TlsAcceptor>>>;
/// The limits in force, swapped whole when a new spec is applied.
pub type SharedLimits = Arc<ArcSwap<Limits>>;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish their response once the server stops.
const DRAIN: Duration = Duration::from_secs(2);
/// hyper's read buffer: a request head larger than this is answered 431.
const MAX_HEAD: usize = 64 * 1024;

/// What the accept loop serves, and with what.
pub struct Serving {
    pub app: Router,
    pub tls: SharedTls,
    pub limits: SharedLimits,
    /// Where refusals are reported (`security.connection-limit`, `security.slow-request`).
    pub events: mpsc::Sender<crate::control::Event>,
}

/// One open connection as its watchdog and the accept loop see it.
struct Conn {
    peer: SocketAddr,
    phase: Mutex<Phase>,
    /// Wakes the watchdog: the phase changed, or the connection is to be closed.
    wake: Notify,
    /// Set by the accept loop to make room.
    reclaimed: AtomicBool,
    /// Wakes the accept loop: this connection may now be closed, or is gone.
    room: Arc<Notify>,
}

impl Conn {
    fn phase(&self) -> Phase {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, change: impl FnOnce(Phase) -> Phase) {
        let (before, after) = {
            let mut phase = self.phase.lock().unwrap_or_else(|e| e.into_inner());
            let before = *phase;
            *phase = change(before);
            (before, *phase)
        };
        if before == after {
            return;
        }
        self.wake.notify_one();
        if after.closable() && !before.closable() {
            self.room.notify_one();
        }
    }

    fn reclaim(&self) {
        self.reclaimed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// The connection a request came on, in its extensions (TCP only): the token layer marks the
/// requests that came with the right token ([`ConnTag::token`]); the others may be closed to
/// make room at the cap.
#[derive(Clone)]
pub struct ConnTag(Arc<Conn>);

impl ConnTag {
    pub fn token(&self) {
        self.0.update(Phase::on_token);
    }
}

/// The open connections, by id.
#[derive(Default)]
struct Registry {
    next: u64,
    conns: HashMap<u64, Arc<Conn>>,
}

type SharedRegistry = Arc<Mutex<Registry>>;

fn lock(registry: &SharedRegistry) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(|e| e.into_inner())
}

/// Takes a connection out of the registry when its task ends, and says there is room.
struct Registered {
    registry: SharedRegistry,
    id: u64,
    room: Arc<Notify>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).conns.remove(&self.id);
        self.room.notify_one();
    }
}

/// What making room at the cap did.
enum Room {
    /// Below the cap.
    Free,
    /// These connections were closed (peer, what each was doing).
    Made(Vec<(SocketAddr, String)>),
    /// Nothing can be closed: every connection is answering a request made with the token.
    Full,
}

fn make_room(registry: &SharedRegistry, limits: &Limits, now: Instant) -> Room {
    let mut reg = lock(registry);
    let open = reg.conns.len();
    if open < limits.max_connections {
        return Room::Free;
    }
    let phases: Vec<(u64, Phase)> = reg.conns.iter().map(|(id, c)| (*id, c.phase())).collect();
    let victims = limits::to_reclaim(&phases, open + 1 - limits.max_connections);
    if victims.is_empty() {
        return Room::Full;
    }
    let mut closed = Vec::with_capacity(victims.len());
    for id in victims {
        if let Some(conn) = reg.conns.remove(&id) {
            closed.push((conn.peer, conn.phase().describe(now)));
            conn.reclaim();
        }
    }
    Room::Made(closed)
}

/// Serves on `listener` until `stop` turns true; then open connections finish their current
/// response (a shutdown's acknowledgement reaches its client) for up to [`DRAIN`], and whatever
/// is left (long streams) is closed.
pub async fn accept_loop(listener: TcpListener, serving: Serving, mut stop: watch::Receiver<bool>) {
    let registry: SharedRegistry = Arc::default();
    let room = Arc::new(Notify::new());
    let at_limit = Alerts::new(serving.events.clone());
    let slow = Arc::new(Alerts::new(serving.events.clone()));
    let mut tasks = JoinSet::new();
    'accepting: loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stop.changed() => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait a little instead of spinning.
                tracing::warn!("TCP API accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // At the cap, make room for it; if nothing can be closed, it waits unanswered (and the
        // next ones in the kernel's backlog) until a connection ends. Its clock starts when it
        // is served.
        loop {
            let limits = **serving.limits.load();
            match make_room(&registry, &limits, Instant::now()) {
                Room::Free => break,
                Room::Made(closed) => {
                    for (peer, doing) in &closed {
                        tracing::debug!("TCP API at its limit: closing {peer} ({doing})");
                    }
                    at_limit.emit(EventKind::SecurityConnectionLimit, "at the limit", || {
                        let (peer, doing) = closed
                            .first()
                            .map(|(p, d)| (p.to_string(), d.as_str()))
                            .unwrap_or_default();
                        format!(
                            "the TCP API reached its limit of {} connections ([daemon] http_max_connections): closed the connection from {peer} ({doing}) to accept a new one",
                            limits.max_connections
                        )
                    });
                }
                Room::Full => {
                    at_limit.emit(EventKind::SecurityConnectionLimit, "at the limit", || {
                        format!(
                            "the TCP API reached its limit of {} connections ([daemon] http_max_connections), all answering requests made with the token: new connections wait until one ends",
                            limits.max_connections
                        )
                    });
                    tokio::select! {
                        () = room.notified() => {}
                        _ = stop.changed() => break 'accepting,
                    }
                }
            }
        }
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            peer,
            phase: Mutex::new(Phase::accepted(Instant::now())),
            wake: Notify::new(),
            reclaimed: AtomicBool::new(false),
            room: room.clone(),
        });
        let registered = {
            let mut reg = lock(&registry);
            let id = reg.next;
            reg.next += 1;
            reg.conns.insert(id, conn.clone());
            Registered {
                registry: registry.clone(),
                id,
                room: room.clone(),
            }
        };
        let app = serving.app.clone();
        let acceptor = serving.tls.load_full();
        let limits = serving.limits.clone();
        let stop = stop.clone();
        let slow = slow.clone();
        tasks.spawn(async move {
            let _registered = registered;
            let serve = async {
                match acceptor.as_ref() {
                    None => serve_connection(stream, app, conn.clone(), stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => serve_connection(tls, app, conn.clone(), stop).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake with {peer} failed: {e}"),
                            Err(_) => tracing::debug!("TLS handshake with {peer} timed out"),
                        }
                    }
                }
            };
            tokio::select! {
                () = serve => {}
                closed = watchdog(&conn, &limits) => report(closed, &conn, &limits, &slow),
            }
        });
    }
    drop(listener);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tasks.shutdown().await;
    }
}

/// Why a watchdog closed its connection.
enum Closed {
    /// To make room at the cap (the accept loop reported it).
    Reclaimed,
    Expired(Expired),
}

/// Resolves when `conn` is to be closed: reclaimed, or its phase's time ran out.
async fn watchdog(conn: &Conn, limits: &SharedLimits) -> Closed {
    loop {
        if conn.reclaimed.load(Ordering::SeqCst) {
            return Closed::Reclaimed;
        }
        let phase = conn.phase();
        let limits = **limits.load();
        let now = Instant::now();
        if let Some(expired) = phase.expired(&limits, now) {
            return Closed::Expired(expired);
        }
        // `wake` keeps a permit, so a change between the checks above and here is not missed.
        match phase.deadline(&limits) {
            Some(deadline) => {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => {}
                    () = conn.wake.notified() => {}
                }
            }
            None => conn.wake.notified().await,
        }
    }
}

fn report(closed: Closed, conn: &Conn, limits: &SharedLimits, slow: &Alerts) {
    let peer = conn.peer;
    match closed {
        Closed::Reclaimed => {}
        Closed::Expired(Expired::Idle) => {
            tracing::debug!("TCP API: closing {peer}, idle for the idle timeout");
        }
        Closed::Expired(Expired::Head { started: false }) => {
            tracing::debug!("TCP API: closing {peer}, no request within the header timeout");
        }
        Closed::Expired(Expired::Head { started: true }) => {
            let timeout = limits.load().header_timeout;
            tracing::debug!("TCP API: closing {peer}, request head not complete in {timeout:?}");
            slow.emit(EventKind::SecuritySlowRequest, "closed", || {
                format!(
                    "closed the TCP API connection from {peer}: its request head did not arrive whole within {timeout:?} ([daemon] http_header_timeout)"
                )
            });
        }
    }
}

/// One connection; on `stop` it finishes the response in progress and closes. Dropped by the
/// watchdog to close it.
async fn serve_connection<S>(
    stream: S,
    app: Router,
    conn: Arc<Conn>,
    mut stop: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = Watched {
        inner: stream,
        conn: conn.clone(),
    };
    let service = Tracking {
        inner: TowerToHyperService::new(app),
        conn,
    };
    let http = hyper::server::conn::http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let result = tokio::select! {
        r = http.as_mut() => r,
        // (The guard `wait_for` returns must not live across the await below.)
        () = async { let _ = stop.wait_for(|stopped| *stopped).await; } => {
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("TCP API connection ended: {e}");
    }
}

/// The connection's byte stream, telling its [`Conn`] when request bytes come in.
struct Watched<S> {
    inner: S,
    conn: Arc<Conn>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.update(|p| p.on_bytes(Instant::now()));
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The API as hyper's service, telling the [`Conn`] when a request begins and when its
/// response has been sent (its body dropped).
struct Tracking {
    inner: TowerToHyperService<Router>,
    conn: Arc<Conn>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Tracking {
    type Response = hyper::Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut req: hyper::Request<Incoming>) -> Self::Future {
        self.conn.update(|p| p.on_request(Instant::now()));
        let end = RequestEnd(self.conn.clone());
        req.extensions_mut().insert(ConnTag(self.conn.clone()));
        let answer = self.inner.call(req);
        Box::pin(async move {
            let resp = answer.await?;
            Ok(resp.map(|body| TrackedBody { body, _end: end }))
        })
    }
}

/// Marks the request's end when dropped: with its response body once sent, or with the
/// response future if the connection goes first.
struct RequestEnd(Arc<Conn>);

impl Drop for RequestEnd {
    fn drop(&mut self) {
        self.0.update(|p| p.on_response_end(Instant::now()));
    }
}

/// A response body that marks its request's end when dropped.
struct TrackedBody {
    body: axum::body::Body,
    _end: RequestEnd,
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
