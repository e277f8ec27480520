//! Test backends (hyper and raw tokio), a small client, and deadline polling.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jarfleet_proxy::{Backend, BackendId, Listener, ListenerConfig, Mode, Snapshot};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// Everything the proxy sends until it closes the connection (bounded by [`DEADLINE`]).
pub async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut out))
        .await
        .expect("the proxy closes the connection")
        .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `needle` has arrived (bounded by [`DEADLINE`]).
pub async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{needle:?} never came: {}", String::from_utf8_lossy(&out)))
            .expect("read");
        assert!(
            n > 0,
            "closed before {needle:?}: {}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A backend frozen like a JVM under `SIGSTOP`: the kernel completes connections into its
/// backlog and buffers what is sent, and nothing is ever read or answered.
pub struct FrozenBackend {
    pub addr: SocketAddr,
    _socket: std::net::TcpListener,
}

impl FrozenBackend {
    pub fn start() -> FrozenBackend {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        FrozenBackend {
            addr: socket.local_addr().expect("addr"),
            _socket: socket,
        }
    }
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn listener(mode: Mode, f: impl FnOnce(&mut ListenerConfig)) -> Listener {
    let mut cfg = ListenerConfig::new("shop", "127.0.0.1:0".parse().expect("addr"), mode);
    cfg.slow_start = Duration::ZERO;
    f(&mut cfg);
    Listener::bind(cfg).await.expect("bind")
}

pub fn snapshot(backends: &[&TestBackend]) -> Snapshot {
    Snapshot {
        backends: backends.iter().map(|b| b.backend()).collect(),
    }
}

/// An address where nothing listens (connect refused).
pub async fn dead_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// A hyper HTTP/1.1 backend. Paths:
/// `/` → its name; `/headers` → the request headers, one per line; `/hold` → its name once the
/// gate opens; `/big?N` → N bytes, streamed, counted in `produced`; `POST /sink` → reads the body
/// (pausing after 1 MiB until the gate opens), answers the byte count; `/pieces` →
/// `alpha-beta-gamma` in three chunks of a chunked body.
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub produced: Arc<AtomicU64>,
    pub consumed: Arc<AtomicU64>,
    /// Requests that reached `/hold` (counted before waiting at the gate).
    pub holding: Arc<AtomicU64>,
    /// Every request's method and target, in arrival order.
    pub seen: Arc<std::sync::Mutex<Vec<String>>>,
    gate: watch::Sender<bool>,
    kill: watch::Sender<bool>,
}

impl TestBackend {
    pub async fn start(name: &str) -> TestBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let (gate, gate_rx) = watch::channel(false);
        let (kill, kill_rx) = watch::channel(false);
        let b = TestBackend {
            name: name.to_owned(),
            addr,
            hits: Arc::default(),
            produced: Arc::default(),
            consumed: Arc::default(),
            holding: Arc::default(),
            seen: Arc::default(),
            gate,
            kill,
        };
        let ctx = Arc::new(Ctx {
            name: name.to_owned(),
            hits: b.hits.clone(),
            produced: b.produced.clone(),
            consumed: b.consumed.clone(),
            holding: b.holding.clone(),
            seen: b.seen.clone(),
            gate: gate_rx,
        });
        tokio::spawn(async move {
            let mut kill_rx = kill_rx;
            let kill_conn = kill_rx.clone();
            loop {
                tokio::select! {
                    r = l.accept() => {
                        let Ok((s, _)) = r else { continue };
                        let _ = s.set_nodelay(true);
                        let ctx = ctx.clone();
                        let mut kill_rx = kill_conn.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                let ctx = ctx.clone();
                                async move { Ok::<_, Infallible>(ctx.handle(req).await) }
                            });
                            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(s), svc);
                            tokio::select! {
                                _ = conn => {}
                                _ = kill_rx.wait_for(|k| *k) => {}
                            }
                        });
                    }
                    _ = kill_rx.wait_for(|k| *k) => return,
                }
            }
        });
        b
    }

    pub fn backend(&self) -> Backend {
        Backend::new(self.name.clone(), self.addr)
    }

    pub fn id(&self) -> BackendId {
        BackendId(self.name.clone())
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(SeqCst)
    }

    /// Method and target of every request so far.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn open_gate(&self) {
        self.gate.send_replace(true);
    }

    /// Like `kill -9`: the listening socket and every open connection close at once.
    pub fn kill(&self) {
        self.kill.send_replace(true);
    }
}

struct Ctx {
    name: String,
    hits: Arc<AtomicU64>,
    produced: Arc<AtomicU64>,
    consumed: Arc<AtomicU64>,
    holding: Arc<AtomicU64>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
    gate: watch::Receiver<bool>,
}

pub enum TBody {
    Full(Option<Bytes>),
    Gen {
        left: u64,
        produced: Arc<AtomicU64>,
    },
    /// Pieces of unknown total length: sent chunked.
    Pieces(Vec<Bytes>),
}

impl Body for TBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            TBody::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            TBody::Pieces(p) => Poll::Ready((!p.is_empty()).then(|| Ok(Frame::data(p.remove(0))))),
            TBody::Gen { left, produced } => {
                if *left == 0 {
                    return Poll::Ready(None);
                }
                let n = (*left).min(64 * 1024);
                *left -= n;
                produced.fetch_add(n, SeqCst);
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b'x'; n as usize])))))
            }
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            TBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            TBody::Full(None) => SizeHint::with_exact(0),
            TBody::Gen { left, .. } => SizeHint::with_exact(*left),
            TBody::Pieces(_) => SizeHint::default(),
        }
    }
}

impl Ctx {
    async fn handle(&self, req: Request<Incoming>) -> Response<TBody> {
        self.hits.fetch_add(1, SeqCst);
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(format!("{} {}", req.method(), req.uri()));
        let text = |s: String| {
            let mut r = Response::new(TBody::Full(Some(Bytes::from(s))));
            r.headers_mut()
                .insert("x-backend", self.name.parse().expect("header value"));
            r
        };
        match req.uri().path() {
            "/headers" => {
                let mut lines: Vec<String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                    .collect();
                lines.sort();
                text(lines.join("\n"))
            }
            "/hold" => {
                self.holding.fetch_add(1, SeqCst);
                let mut g = self.gate.clone();
                let _ = g.wait_for(|open| *open).await;
                text(self.name.clone())
            }
            "/big" => {
                let n: u64 = req.uri().query().and_then(|q| q.parse().ok()).unwrap_or(0);
                Response::new(TBody::Gen {
                    left: n,
                    produced: self.produced.clone(),
                })
            }
            "/pieces" => Response::new(TBody::Pieces(vec![
                Bytes::from_static(b"alpha-"),
                Bytes::from_static(b"beta-"),
                Bytes::from_static(b"gamma"),
            ])),
            "/sink" => {
                let mut body = req.into_body();
                let mut n = 0u64;
                while let Some(f) = body.frame().await {
                    let Ok(f) = f else {
                        let mut r = text("body error".into());
                        *r.status_mut() = StatusCode::BAD_REQUEST;
                        return r;
                    };
                    if let Some(d) = f.data_ref() {
                        n += d.len() as u64;
                        self.consumed.store(n, SeqCst);
                    }
                    if n >= 1 << 20 {
                        let mut g = self.gate.clone();
                        let _ = g.wait_for(|open| *open).await;
                    }
                }
                text(n.to_string())
            }
            _ => text(self.name.clone()),
        }
    }
}

/// A raw backend that answers the first request of each connection with 200 and, on
/// `close_on`-th request of a connection (1-based), reads it and closes without a response.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    pub connections: Arc<AtomicU64>,
}

impl RawBackend {
    pub async fn start(close_on: u64) -> RawBackend {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicU64::new(0));
        let (r2, c2) = (requests.clone(), connections.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                c2.fetch_add(1, SeqCst);
                let r2 = r2.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut nth = 0;
                    loop {
                        // One request: headers up to the blank line (bodies here are tiny and
                        // sent with the headers).
                        let mut chunk = [0u8; 4096];
                        let Ok(n) = s.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            continue;
                        }
                        buf.clear();
                        nth += 1;
                        r2.fetch_add(1, SeqCst);
                        if nth == close_on {
                            return; // closes the connection, no response byte
                        }
                        let resp =
                            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\nx-backend: raw\r\n\r\nraw";
                        if s.write_all(resp).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        RawBackend {
            addr,
            requests,
            connections,
        }
    }
}

pub struct Resp {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: String,
}

impl Resp {
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

/// One keep-alive client connection.
pub struct Client(hyper::client::conn::http1::SendRequest<Full<Bytes>>);

impl Client {
    pub async fn connect(addr: SocketAddr) -> Result<Client, String> {
        let s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = s.set_nodelay(true);
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Ok(Client(send))
    }

    /// Waits until the connection can take a request; `false` once it has closed (after a
    /// response that said `Connection: close`, or closed by the proxy): nothing is sent then.
    pub async fn usable(&mut self) -> bool {
        self.0.ready().await.is_ok()
    }

    pub async fn request(&mut self, method: &str, path: &str, body: &str) -> Result<Resp, String> {
        self.0.ready().await.map_err(|e| e.to_string())?;
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "shop.test")
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| e.to_string())?;
        let resp = self.0.send_request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    pub async fn get(&mut self, path: &str) -> Result<Resp, String> {
        self.request("GET", path, "").await
    }
}

/// One request on a new connection.
pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    let mut c = Client::connect(addr).await.expect("connect to the proxy");
    c.get(path).await.expect("response")
}

pub fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([("release".to_owned(), "r1".to_owned())])
}

/// Bytes queued in the kernel (send + receive queues) on established IPv4 TCP sockets whose
/// local or remote port is one of `ports`, from /proc/net/tcp.
pub fn kernel_queued(ports: &[u16]) -> u64 {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut total = 0;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[3] != "01" {
            continue;
        }
        let (Some(lp), Some(rp)) = (port(f[1]), port(f[2])) else {
            continue;
        };
        if !ports.contains(&lp) && !ports.contains(&rp) {
            continue;
        }
        let (tx, rx) = f[4].split_once(':').unwrap_or(("0", "0"));
        total +=
            u64::from_str_radix(tx, 16).unwrap_or(0) + u64::from_str_radix(rx, 16).unwrap_or(0);
    }
    total
}
