//! The data-plane tier of failure detection: every node answers on its peer endpoint
//! (`[cluster] advertise`:`peer_port`), and probes every other node's every
//! `probe_interval`. A peer that misses 3 probes in a row leaves this node's balancers (its
//! instances get no new requests from here); 2 answers in a row bring it back
//! (`jarfleet_core::cluster::peers`). This only ever takes instances out of a balancer, which
//! is always safe; placing them elsewhere is the scheduler's, on lease expiry.
//!
//! The endpoint answers `GET /v1/cluster/ping` with the node's and the cluster's names and its
//! boot id, serves the node's artifacts by digest ([`crate::artifacts`]) and, with TLS, its
//! instances' logs ([`crate::logs`]); anything else is 404. A probe opens a new connection each
//! time (a kept-alive one would not notice a host that went silent) and checks that the
//! answer comes from the node it expects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use jarfleet_core::cluster::peers::{PeerProbe, Verdict};
use jarfleet_core::events::EventKind;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::{Instant, sleep_until, timeout};

use crate::mirror::Mirror;
use crate::session::SessionInfo;
use crate::{Config, Note};

/// The endpoint's one path.
pub const PING_PATH: &str = "/v1/cluster/ping";
/// Connections the endpoint serves at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 64;
/// A connection has this long to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    pub cluster: String,
    pub node: String,
    #[serde(default)]
    pub boot_id: String,
}

/// Binds the peer endpoint (an error names the address: the port may be taken).
pub async fn bind(config: &Config) -> crate::Result<TcpListener> {
    let host = config.spec.advertise.trim_matches(['[', ']']);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, config.spec.peer_port))
        .await
        .map_err(|e| refused(config, &e.to_string()))?
        .collect();
    let mut last = String::from("the address resolves to nothing");
    for addr in addrs {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = e.to_string(),
        }
    }
    Err(refused(config, &last))
}

fn refused(config: &Config, why: &str) -> crate::Error {
    crate::Error::Refused {
        message: format!(
            "cannot listen for peers on {}:{}: {why}",
            config.spec.advertise, config.spec.peer_port
        ),
        hint: Some(
            "`[cluster] advertise` must be an address of this host, and `peer_port` free".into(),
        ),
    }
}

/// Serves the endpoint until the session's sender is gone. With `tls`, every connection is
/// TLS and must present a certificate of the cluster's CA; one refused is a
/// `cluster.refused` event (once a minute per address).
pub async fn serve(
    listener: TcpListener,
    config: Arc<Config>,
    session: watch::Receiver<Option<SessionInfo>>,
    tls: Option<Arc<crate::tls::PeerTls>>,
    logs: Option<crate::logs::LogSource>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let streams = Arc::new(Semaphore::new(crate::logs::MAX_STREAMS));
    let artifacts = crate::artifacts::Artifacts::new(config.artifacts.clone());
    let refusals = Arc::new(crate::tls::Refusals::default());
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, from) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("peer endpoint accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if session.has_changed().is_err() {
            return;
        }
        let handler = Handler {
            config: config.clone(),
            session: session.clone(),
            artifacts: artifacts.clone(),
            logs: logs.clone(),
            tls: tls.is_some(),
            streams: streams.clone(),
        };
        let tls = tls.clone();
        let notes = notes.clone();
        let refusals = refusals.clone();
        tokio::spawn(async move {
            match tls {
                None => handler.serve(stream).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
                    match timeout(REQUEST_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => handler.serve(stream).await,
                        Ok(Err(e)) => {
                            if refusals.say(from.ip()) {
                                let _ = notes.send(Note::Event {
                                    kind: EventKind::ClusterRefused,
                                    app: None,
                                    message: format!(
                                        "a connection from {} to this node's peer endpoint was refused: {e} (only nodes with a certificate of the cluster's CA are served)",
                                        from.ip()
                                    ),
                                });
                            }
                        }
                        // A client that never finished its handshake: dropped.
                        Err(_) => {}
                    }
                }
            }
            drop(permit);
        });
    }
}

/// What one connection to the endpoint is served with.
struct Handler {
    config: Arc<Config>,
    session: watch::Receiver<Option<SessionInfo>>,
    artifacts: crate::artifacts::Artifacts,
    /// The node's instances' logs, for its peers (served only over TLS).
    logs: Option<crate::logs::LogSource>,
    tls: bool,
    /// Log streams being served.
    streams: Arc<Semaphore>,
}

impl Handler {
    async fn serve<IO>(self, io: IO)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Handler {
            config,
            session,
            artifacts,
            logs,
            tls,
            streams,
        } = self;
        // A ping is over in moments; an artifact's transfer may take a while.
        let deadline = Arc::new(std::sync::Mutex::new(Instant::now() + REQUEST_TIMEOUT * 2));
        let extend = deadline.clone();
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let config = config.clone();
            let session = session.clone();
            let artifacts = artifacts.clone();
            let extend = extend.clone();
            let logs = logs.clone();
            let streams = streams.clone();
            async move {
                if req.method() == hyper::Method::GET && req.uri().path() == crate::logs::LOGS_PATH
                {
                    let answer =
                        crate::logs::answer(req.uri().query(), logs.as_ref(), tls, &streams);
                    if answer.status() == StatusCode::OK
                        && let Ok(mut d) = extend.lock()
                    {
                        *d = Instant::now() + crate::logs::STREAM_LIMIT;
                    }
                    return Ok::<_, std::convert::Infallible>(answer);
                }
                let header = |name| {
                    req.headers()
                        .get(name)
                        .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
                };
                let ask = crate::artifacts::ask(
                    req.method(),
                    req.uri().path(),
                    header(hyper::header::RANGE),
                    header(hyper::header::IF_RANGE),
                );
                let answer = if ask == crate::artifacts::Ask::NotOurs {
                    answer(&req, &config, &session)
                } else {
                    if let Ok(mut d) = extend.lock() {
                        *d = Instant::now() + crate::artifacts::TRANSFER_LIMIT;
                    }
                    artifacts.answer(ask).await
                };
                Ok::<_, std::convert::Infallible>(answer)
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(REQUEST_TIMEOUT)
            .max_buf_size(8192)
            .keep_alive(false)
            .serve_connection(hyper_util::rt::TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        loop {
            let until = deadline.lock().map_or_else(|_| Instant::now(), |d| *d);
            match tokio::time::timeout_at(until, conn.as_mut()).await {
                Ok(_) => break,
                Err(_) => {
                    let later = deadline.lock().is_ok_and(|d| *d > Instant::now());
                    if !later {
                        break;
                    }
                }
            }
        }
    }
}

fn answer(
    req: &Request<Incoming>,
    config: &Config,
    session: &watch::Receiver<Option<SessionInfo>>,
) -> Response<crate::artifacts::Body> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(crate::artifacts::full(body));
        *r.status_mut() = status;
        r
    };
    if req.method() != hyper::Method::GET || req.uri().path() != PING_PATH {
        return reply(StatusCode::NOT_FOUND, String::new());
    }
    let pong = Pong {
        cluster: config.spec.name.clone(),
        node: config.node.clone(),
        boot_id: session
            .borrow()
            .as_ref()
            .map(|s| s.boot_id.clone())
            .unwrap_or_default(),
    };
    reply(
        StatusCode::OK,
        serde_json::to_string(&pong).unwrap_or_default(),
    )
}

/// One probe: a new connection, one request, the answer checked, all within `limit`. With
/// `tls`, the connection is TLS, presents this node's certificate, and the peer's must name
/// `node`.
pub async fn probe(
    addr: &str,
    port: u16,
    cluster: &str,
    node: &str,
    limit: Duration,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> bool {
    let attempt = async {
        let stream = TcpStream::connect((addr.trim_matches(['[', ']']), port))
            .await
            .ok()?;
        match tls {
            None => ping(stream, addr, port, cluster, node).await,
            Some(tls) => {
                let name = crate::tls::PeerTls::name_of(node)?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, stream)
                    .await
                    .ok()?;
                ping(stream, addr, port, cluster, node).await
            }
        }
    };
    matches!(timeout(limit, attempt).await, Ok(Some(true)))
}

/// Asks for the ping over `io` and checks the answer names `cluster` and `node`.
async fn ping<IO>(io: IO, addr: &str, port: u16, cluster: &str, node: &str) -> Option<bool>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .ok()?;
    tokio::spawn(conn);
    let req = Request::get(PING_PATH)
        .header(hyper::header::HOST, format!("{addr}:{port}"))
        .body(Empty::<Bytes>::new())
        .ok()?;
    let resp = sender.send_request(req).await.ok()?;
    if resp.status() != StatusCode::OK {
        return None;
    }
    let body = Limited::new(resp.into_body(), 4096).collect().await.ok()?;
    let pong: Pong = serde_json::from_slice(&body.to_bytes()).ok()?;
    Some(pong.cluster == cluster && pong.node == node)
}

/// What this node's probes say of its peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerView {
    /// Out of this node's balancers (3 misses in a row, not yet 2 answers).
    pub ejected: BTreeSet<String>,
    /// When each peer not ejected last answered a probe. A peer whose answer is fresh
    /// ([`PeerView::answering`]) is one whose word (an instance of theirs ready) this node
    /// acts on when it stops a copy of its own.
    pub answered_at: BTreeMap<String, Instant>,
}

impl PeerView {
    /// Whether `peer` answered within `fresh` of `now` and is not ejected. An answer from
    /// before a pause of this process (a frozen daemon) is old when it resumes, so a peer
    /// that died meanwhile is not believed on its last word.
    pub fn answering(&self, peer: &str, now: Instant, fresh: Duration) -> bool {
        !self.ejected.contains(peer)
            && self
                .answered_at
                .get(peer)
                .is_some_and(|at| now.saturating_duration_since(*at) <= fresh)
    }
}

/// Probes every registered peer every `probe_interval`; publishes what the probes say.
/// Runs until the mirror's sender is gone.
pub async fn probe_peers(
    config: Arc<Config>,
    mirror: watch::Receiver<Option<Arc<Mirror>>>,
    out: watch::Sender<PeerView>,
    notes: mpsc::UnboundedSender<Note>,
    tls: Option<Arc<crate::tls::PeerTls>>,
) {
    let mut answered_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut probes: BTreeMap<String, PeerProbe> = BTreeMap::new();
    let mut next = Instant::now();
    loop {
        next += config.spec.probe_interval;
        if mirror.has_changed().is_err() {
            return;
        }
        let peers: Vec<(String, String, u16)> = mirror
            .borrow()
            .as_ref()
            .map(|m| {
                m.nodes
                    .values()
                    .filter(|n| n.record.name != config.node)
                    .map(|n| {
                        (
                            n.record.name.clone(),
                            n.record.address.clone(),
                            n.record.peer_port,
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A peer no longer registered is forgotten (the watch already took its instances out).
        probes.retain(|name, _| peers.iter().any(|(n, _, _)| n == name));
        answered_at.retain(|name, _| peers.iter().any(|(n, _, _)| n == name));
        let mut tasks = tokio::task::JoinSet::new();
        for (name, addr, port) in peers {
            let cluster = config.spec.name.clone();
            let limit = config.spec.probe_timeout;
            let tls = tls.as_ref().map(|t| t.client.clone());
            tasks.spawn(async move {
                let ok = probe(&addr, port, &cluster, &name, limit, tls.as_ref()).await;
                (name, ok)
            });
        }
        let mut changed = false;
        while let Some(Ok((name, ok))) = tasks.join_next().await {
            if ok {
                answered_at.insert(name.clone(), Instant::now());
            }
            let p = probes.entry(name.clone()).or_default();
            match p.observe(ok) {
                Some(Verdict::Eject) => {
                    changed = true;
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterPeerDown,
                        app: None,
                        message: format!(
                            "node {name} does not answer this node's probes: its instances are out of this node's balancers"
                        ),
                    });
                }
                Some(Verdict::Restore) => {
                    changed = true;
                    let _ = notes.send(Note::Event {
                        kind: EventKind::ClusterPeerUp,
                        app: None,
                        message: format!("node {name} answers again: its instances are back in this node's balancers"),
                    });
                }
                None => {}
            }
        }
        let ejected: BTreeSet<String> = probes
            .iter()
            .filter(|(_, p)| p.ejected())
            .map(|(n, _)| n.clone())
            .collect();
        let view = PeerView {
            answered_at: answered_at
                .iter()
                .filter(|(n, _)| !ejected.contains(*n))
                .map(|(n, at)| (n.clone(), *at))
                .collect(),
            ejected,
        };
        if changed || *out.borrow() != view {
            out.send_replace(view);
        }
        if out.is_closed() {
            return;
        }
        sleep_until(next).await;
        let now = Instant::now();
        if next < now {
            next = now;
        }
    }
}
