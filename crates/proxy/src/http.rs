//! HTTP/1.1 mode: one hyper server connection per client, requests forwarded with retries.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::pool::{self, Sender, UpBody};
use crate::{BackendState, ConnToken, GRACEFUL, HARD, InFlight, Shared, is_idempotent};

pub(crate) async fn serve(
    sh: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<u8>,
    _token: ConnToken,
) {
    let svc_sh = sh.clone();
    let peer_ip = peer_ip(peer);
    let svc = hyper::service::service_fn(move |req| {
        let sh = svc_sh.clone();
        let peer_ip = peer_ip.clone();
        async move { Ok::<_, Infallible>(proxy(&sh, &peer_ip, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let mut graceful = false;
    loop {
        let state = *stop.borrow_and_update();
        if state >= HARD {
            return;
        }
        if state >= GRACEFUL && !graceful {
            conn.as_mut().graceful_shutdown();
            graceful = true;
        }
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(listener = %sh.cfg.name, %peer, error = %e, "client connection ended with an error");
                }
                return;
            }
            r = stop.changed() => {
                if r.is_err() {
                    return;
                }
            }
        }
    }
}

/// What the client gets: a streamed backend body, or a short body made here.
pub(crate) enum ProxyBody {
    Upstream(Upstream),
    Local(Option<Bytes>),
}

impl ProxyBody {
    fn local(s: String) -> ProxyBody {
        ProxyBody::Local(Some(Bytes::from(s)))
    }
}

/// A backend's response body. Holds the in-flight guard until the body is done, and gives the
/// connection back to the pool when the body ended cleanly.
pub(crate) struct Upstream {
    body: Incoming,
    sender: Option<Sender>,
    guard: InFlight,
}

impl Upstream {
    fn release(&mut self) {
        if let Some(s) = self.sender.take() {
            let b = self.guard.backend();
            if !b.removed.load(Relaxed) {
                b.pool.checkin(s, Instant::now());
            }
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // HEAD, 204, 304 and bodies the server never polled to the end but that are complete.
        if self.body.is_end_stream() {
            self.release();
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ProxyBody::Local(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Upstream(u) => {
                let r = Pin::new(&mut u.body).poll_frame(cx);
                match &r {
                    Poll::Ready(None) => u.release(),
                    Poll::Ready(Some(Ok(_))) if u.body.is_end_stream() => u.release(),
                    Poll::Ready(Some(Err(_))) => {
                        u.sender = None;
                        u.guard.backend().counters.errors.fetch_add(1, Relaxed);
                    }
                    _ => {}
                }
                r
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Local(b) => b.is_none(),
            ProxyBody::Upstream(u) => u.body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Local(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ProxyBody::Local(None) => SizeHint::with_exact(0),
            ProxyBody::Upstream(u) => u.body.size_hint(),
        }
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, those named in `Connection` first.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.get(header::CONNECTION) {
        let named: Vec<HeaderName> = conn
            .to_str()
            .unwrap_or("")
            .split(',')
            .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The client's address as a header value, made once per client connection.
fn peer_ip(peer: SocketAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(Bytes::from(peer.ip().to_string()))
        .expect("an IP address is a valid header value")
}

#[cfg(test)]
fn forward_headers(h: &mut HeaderMap, peer: SocketAddr) {
    forward_headers_ip(h, &peer_ip(peer));
}

fn forward_headers_ip(h: &mut HeaderMap, ip: &HeaderValue) {
    strip_hop_by_hop(h);
    let xff = {
        let mut prior = h
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .peekable();
        if prior.peek().is_none() {
            Ok(ip.clone())
        } else {
            let mut s: String = prior.collect::<Vec<_>>().join(", ");
            s.push_str(", ");
            s.push_str(ip.to_str().unwrap_or_default());
            HeaderValue::from_str(&s)
        }
    };
    if let Ok(v) = xff {
        h.insert(X_FORWARDED_FOR.clone(), v);
    }
    h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// Method, target and headers of a replayable request (idempotent, no body).
struct Template {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Template {
    fn build(&self) -> Request<UpBody> {
        let mut r = Request::new(Either::Right(Empty::new()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.uri.clone();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

enum Failure {
    /// No connection could be made: the request was not sent and comes back.
    Connect(std::io::Error, Box<Request<UpBody>>),
    /// The request was (maybe partly) sent and no response head came.
    Lost(hyper::Error),
}

/// One attempt on one backend: a pooled connection first, then a fresh one when the pooled one
/// proves stale (closed before the request was written, or a replayable request lost on it).
async fn send(
    sh: &Shared,
    b: &BackendState,
    mut req: Request<UpBody>,
    template: Option<&Template>,
) -> Result<(Response<Incoming>, Sender), Failure> {
    if let Some(mut s) = b.pool.checkout(Instant::now()) {
        let stale = match s.ready().await {
            Err(_) => true,
            Ok(()) => match s.try_send_request(req).await {
                Ok(resp) => return Ok((resp, s)),
                Err(mut e) => match e.take_message() {
                    Some(back) => {
                        req = back;
                        true
                    }
                    None => match template {
                        Some(t) => {
                            req = t.build();
                            true
                        }
                        None => return Err(Failure::Lost(e.into_error())),
                    },
                },
            },
        };
        if stale {
            b.counters.stale_retries.fetch_add(1, Relaxed);
        }
    }
    let mut s = match pool::connect(b.addr, sh.cfg.connect_timeout).await {
        Ok(s) => s,
        Err(e) => return Err(Failure::Connect(e, Box::new(req))),
    };
    match s.try_send_request(req).await {
        Ok(resp) => Ok((resp, s)),
        Err(e) => Err(Failure::Lost(e.into_error())),
    }
}

fn bad_gateway(sh: &Shared) -> Response<ProxyBody> {
    local_response(
        StatusCode::BAD_GATEWAY,
        format!("bad gateway: no backend of {} answered\n", sh.cfg.name),
    )
}

fn local_response(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::local(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

async fn proxy(sh: &Shared, peer_ip: &HeaderValue, req: Request<Incoming>) -> Response<ProxyBody> {
    let start = Instant::now();
    let mut table = sh.table.load_full();
    let (mut parts, body) = req.into_parts();
    forward_headers_ip(&mut parts.headers, peer_ip);
    let replayable = is_idempotent(&parts.method) && body.is_end_stream();
    let template = replayable.then(|| Template {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: parts.headers.clone(),
    });
    let mut pending: Option<Request<UpBody>> = Some({
        let mut r = Request::from_parts(
            parts,
            if replayable {
                Either::Right(Empty::new())
            } else {
                Either::Left(body)
            },
        );
        *r.version_mut() = Version::HTTP_11;
        r
    });
    let mut exclude = None;
    let mut last_failed = None;
    for attempt in 0..2 {
        let Some((idx, guard)) = crate::enter(sh, &mut table, &mut exclude) else {
            if attempt == 0 {
                sh.no_backend.fetch_add(1, Relaxed);
                return local_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("no ready backend for app {}\n", sh.cfg.name),
                );
            }
            break;
        };
        if let Some(failed) = exclude.and_then(|i: usize| table.backends.get(i)) {
            failed.state.counters.retries.fetch_add(1, Relaxed);
        }
        let b = &table.backends[idx].state;
        last_failed = Some(idx);
        let req = match (pending.take(), &template) {
            (Some(r), _) => r,
            (None, Some(t)) => t.build(),
            (None, None) => break,
        };
        match send(sh, b, req, template.as_ref()).await {
            Ok((resp, sender)) => {
                b.counters
                    .record_response(resp.status().as_u16(), start.elapsed());
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                let mut up = Upstream {
                    body,
                    sender: Some(sender),
                    guard,
                };
                if up.body.is_end_stream() {
                    up.release();
                }
                return Response::from_parts(parts, ProxyBody::Upstream(up));
            }
            Err(Failure::Connect(e, req)) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "connect failed");
                b.eject(sh, Instant::now());
                pending = Some(*req);
            }
            Err(Failure::Lost(e)) => {
                b.counters.errors.fetch_add(1, Relaxed);
                tracing::debug!(listener = %sh.cfg.name, backend = %b.id, error = %e, "request lost before a response");
                if template.is_none() {
                    break;
                }
            }
        }
        exclude = Some(idx);
    }
    if let Some(b) = last_failed.and_then(|i| table.backends.get(i)) {
        b.state.counters.record_response(502, start.elapsed());
    }
    bad_gateway(sh)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("shop.example"));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        forward_headers(&mut h, "127.0.0.9:4000".parse().expect("addr"));
        let mut got: Vec<String> = h
            .iter()
            .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![
                "host: shop.example",
                "x-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.9",
                "x-forwarded-host: shop.example",
                "x-forwarded-proto: http",
            ]
        );
    }
}
