//! The HTTP side: endpoints, failover, unary calls and opening watch streams.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::{Request, StatusCode, Uri};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Attempt, Error, Result};
use crate::wire::{self, GatewayError, RangeResponse, WatchDecoder, WatchResult, WriteResponse};

/// Sent with every request: a member that has no leader refuses at once with "etcdserver: no
/// leader" (gRPC `UNAVAILABLE`) instead of holding a write or linearizable read until its own
/// timeout (then `context deadline exceeded`) or, for a watch, opening a stream that never
/// delivers. It also makes etcd cut an open watch once its member has been without a leader for
/// three election timeouts. (etcd's `rpctypes.MetadataRequireLeaderKey`, passed by the gateway
/// as gRPC metadata; checked against etcd 3.4.)
const HAS_LEADER: (&str, &str) = ("grpc-metadata-hasleader", "true");

/// etcd's refusal under [`HAS_LEADER`]. Given before the request is looked at, so the request
/// was certainly not applied: any request, writes included, may go to another member.
const NO_LEADER: &str = "etcdserver: no leader";

/// The values under a prefix at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The store revision this state is current as of: the range's header revision for a
    /// read, the last applied change for a watcher.
    pub revision: i64,
    /// Key with the prefix stripped → value.
    pub values: BTreeMap<String, String>,
}

/// An etcd v3 client over the HTTP/JSON gateway. Cheap to clone (shares one connection pool).
///
/// Requests go to the endpoint that last answered; on a connection failure, or when the member
/// refuses for having no leader, they fail over to the next endpoint, and the endpoint that
/// failed stops being the first choice. Reads, lease calls and watches also fail over when a
/// request was sent but not answered (timeout, connection lost) or refused as `UNAVAILABLE`.
/// Writes (put, delete, txn) do not: a write that may have been applied is reported, not
/// repeated (a repeated compare-and-swap would fail against its own success).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// Bounds each request to one endpoint.
    timeout: Duration,
}

struct Inner {
    endpoints: Vec<String>,
    /// Index of the endpoint tried first.
    preferred: AtomicUsize,
    http: HttpClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.endpoints)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why one request to one endpoint failed.
enum Failure {
    /// The connection could not be made: the request was certainly not applied.
    NotSent(String),
    /// The request went out and no (complete) answer came back.
    MaybeSent(String),
    /// etcd answered with a gRPC error.
    Rejected { code: i32, message: String },
    /// The member refused for having no leader ([`NO_LEADER`]): not applied, try another.
    NoLeader(String),
    /// etcd answered with something that is not the gateway's JSON.
    Unreadable(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotSent(r) | Failure::MaybeSent(r) | Failure::Unreadable(r) => f.write_str(r),
            Failure::Rejected { code, message } => {
                write!(f, "refused: {message} (gRPC code {code})")
            }
            Failure::NoLeader(message) => {
                write!(f, "refused: {message} (gRPC code {UNAVAILABLE})")
            }
        }
    }
}

/// gRPC `UNAVAILABLE`: this member cannot serve now, another one may.
const UNAVAILABLE: i32 = 14;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Safe to send again to another endpoint whatever happened.
    Idempotent,
    /// Only sent to another endpoint when it certainly did not reach this one.
    WhenNotSent,
}

impl Client {
    /// A client for `endpoints` (like `http://127.0.0.1:2379`), `timeout` bounding each
    /// request to one endpoint (connecting gets half of it). Needs a tokio runtime to be used,
    /// not to be built.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Result<Client> {
        Client::with_tls(endpoints, timeout, None)
    }

    /// [`Client::new`] for etcd over TLS when `tls` is given: every endpoint is then
    /// `https://`, its certificate checked by `tls` (its roots), and `tls`'s client
    /// certificate presented. Without it, every endpoint is `http://`.
    pub fn with_tls(
        endpoints: Vec<String>,
        timeout: Duration,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Result<Client> {
        if endpoints.is_empty() {
            return Err(Error::NoEndpoints);
        }
        let endpoints = endpoints
            .iter()
            .map(|raw| {
                parse_endpoint(raw, tls.is_some()).map_err(|reason| Error::InvalidEndpoint {
                    endpoint: raw.clone(),
                    reason,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout / 2));
        connector.set_nodelay(true);
        // Watches are idle for long stretches: let the kernel notice a vanished peer too.
        connector.set_keepalive(Some(Duration::from_secs(30)));
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let connector = match tls {
            Some(config) => builder
                .with_tls_config((*config).clone())
                .https_only()
                .enable_http1()
                .wrap_connector(connector),
            None => {
                // Plain HTTP only (the endpoints were checked): this TLS config is never used.
                let unused = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::InvalidEndpoint {
                    endpoint: String::new(),
                    reason: e.to_string(),
                })?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
                builder
                    .with_tls_config(unused)
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector)
            }
        };
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                http,
            }),
            timeout,
        })
    }

    /// The same client (connection pool, endpoint preference) with another per-request
    /// timeout: a lease keeper wants attempts much shorter than its interval, while a large
    /// read may need longer. Connecting still gets at most half of the timeout given to
    /// [`Client::new`].
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: Arc::clone(&self.inner),
            timeout,
        }
    }

    /// The per-request timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoints, normalised (`http://host:port`).
    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// Every key under `prefix` (not keys that merely share its first bytes after a
    /// separator: `app/` does not cover `app2/x`), read linearizably.
    pub async fn get_prefix(&self, prefix: &str) -> Result<Snapshot> {
        let op = format!("range {prefix:?}");
        let (key, end) = wire::prefix_range(prefix.as_bytes());
        let body = json!({ "key": wire::b64(&key), "range_end": wire::b64(&end) });
        let (endpoint, resp): (_, RangeResponse) = self
            .call(&op, "/v3/kv/range", &body, Retry::Idempotent)
            .await?;
        let endpoint = self.endpoint(endpoint);
        if resp.header.revision <= 0 {
            return Err(Error::BadResponse {
                endpoint: endpoint.to_owned(),
                op,
                reason: "no header revision".to_owned(),
            });
        }
        let values = wire::range_values(prefix, resp.kvs).map_err(|e| Error::BadEntry {
            endpoint: endpoint.to_owned(),
            op: op.clone(),
            key: e.key,
            problem: e.problem.to_string(),
        })?;
        Ok(Snapshot {
            revision: resp.header.revision,
            values,
        })
    }

    /// Sets `key` to `value`; returns the revision of the change.
    pub async fn put(&self, key: &str, value: &str) -> Result<i64> {
        let op = format!("put {key:?}");
        let body =
            json!({ "key": wire::b64(key.as_bytes()), "value": wire::b64(value.as_bytes()) });
        let (_, resp): (_, WriteResponse) = self
            .call(&op, "/v3/kv/put", &body, Retry::WhenNotSent)
            .await?;
        Ok(resp.header.revision)
    }

    /// Deletes `key` (only that key, not a prefix); returns the store revision after it.
    pub async fn delete(&self, key: &str) -> Result<i64> {
        let op = format!("delete {key:?}");
        let body = json!({ "key": wire::b64(key.as_bytes()) });
        let (_, resp): (_, WriteResponse) = self
            .call(&op, "/v3/kv/deleterange", &body, Retry::WhenNotSent)
            .await?;
        Ok(resp.header.revision)
    }

    pub(crate) fn endpoint(&self, index: usize) -> &str {
        self.inner.endpoints.get(index).map_or("?", String::as_str)
    }

    /// Whether `endpoint` still serves linearizable reads (so it has a leader): a one-key
    /// count-only range.
    pub(crate) async fn probe(&self, endpoint: usize, key: &str) -> Result<(), String> {
        let body = json!({ "key": wire::b64(key.as_bytes()), "count_only": true });
        let body = Bytes::from(body.to_string());
        self.exchange(endpoint, "/v3/kv/range", body)
            .await
            .map(|_| ())
            .map_err(|f| f.to_string())
    }

    /// Opens a watch on `prefix` from `start_revision` and reads its first message (normally
    /// `created`, or `canceled` when the revision was compacted). Fails over across all
    /// endpoints.
    pub(crate) async fn open_watch(
        &self,
        prefix: &str,
        start_revision: i64,
    ) -> Result<(RawWatch, WatchResult)> {
        let op = format!("watch {prefix:?} from revision {start_revision}");
        let (key, end) = wire::prefix_range(prefix.as_bytes());
        let body = json!({ "create_request": {
            "key": wire::b64(&key),
            "range_end": wire::b64(&end),
            "start_revision": start_revision.to_string(),
            // Lets the server tell an idle watcher how far it is current (every 10 min by
            // default), so a reconnect after a long quiet spell needs no full re-read.
            "progress_notify": true,
        }});
        let body = Bytes::from(body.to_string());
        let mut attempts = Vec::new();
        for index in self.order() {
            let timeout = self.timeout;
            let opening = async {
                let resp = self
                    .inner
                    .http
                    .request(self.request(index, "/v3/watch", body.clone())?)
                    .await
                    .map_err(|e| error_chain(&e))?;
                let status = resp.status();
                if status != StatusCode::OK {
                    let body = resp.into_body().collect().await.map(|b| b.to_bytes());
                    return Err(match body {
                        Ok(body) => rejection(status, &body).to_string(),
                        Err(e) => format!("HTTP {status}, then {}", error_chain(&e)),
                    });
                }
                let mut stream = RawWatch {
                    endpoint: index,
                    body: resp.into_body(),
                    decoder: WatchDecoder::default(),
                };
                let first = stream.next().await?;
                Ok((stream, first))
            };
            match tokio::time::timeout(timeout, opening).await {
                Ok(Ok(opened)) => {
                    self.prefer(index);
                    return Ok(opened);
                }
                Ok(Err(reason)) => attempts.push(self.attempt(index, reason)),
                Err(_) => {
                    attempts.push(self.attempt(index, format!("no answer within {timeout:?}")))
                }
            }
            self.avoid(index);
        }
        Err(Error::Unavailable { op, attempts })
    }

    /// Endpoint indices in the order to try them: the preferred one first.
    fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.inner.endpoints.len();
        let start = self.inner.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| (start + i) % n)
    }

    fn prefer(&self, index: usize) {
        self.inner.preferred.store(index, Ordering::Relaxed);
    }

    /// `index` just failed: if it was the first choice, the next endpoint becomes it.
    fn avoid(&self, index: usize) {
        let next = (index + 1) % self.inner.endpoints.len();
        let _ = self.inner.preferred.compare_exchange(
            index,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn attempt(&self, index: usize, reason: String) -> Attempt {
        Attempt {
            endpoint: self.endpoint(index).to_owned(),
            reason,
        }
    }

    fn request(
        &self,
        index: usize,
        path: &str,
        body: Bytes,
    ) -> Result<Request<Full<Bytes>>, String> {
        Request::post(format!("{}{path}", self.endpoint(index)))
            .header(CONTENT_TYPE, "application/json")
            .header(HAS_LEADER.0, HAS_LEADER.1)
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))
    }

    /// One request to one endpoint, bounded by the timeout.
    async fn exchange(&self, index: usize, path: &str, body: Bytes) -> Result<Bytes, Failure> {
        let request = self.request(index, path, body).map_err(Failure::NotSent)?;
        let timeout = self.timeout;
        let work = async {
            let resp = self.inner.http.request(request).await.map_err(|e| {
                if e.is_connect() {
                    Failure::NotSent(error_chain(&e))
                } else {
                    Failure::MaybeSent(error_chain(&e))
                }
            })?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| {
                    Failure::MaybeSent(format!("reading the answer: {}", error_chain(&e)))
                })?
                .to_bytes();
            if status == StatusCode::OK {
                Ok(body)
            } else {
                Err(rejection(status, &body))
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(Failure::MaybeSent(format!("no answer within {timeout:?}"))),
        }
    }

    /// A unary call with failover; returns the index of the endpoint that answered.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        op: &str,
        path: &str,
        body: &serde_json::Value,
        retry: Retry,
    ) -> Result<(usize, T)> {
        self.call_with(op, path, body, retry, |answer| {
            serde_json::from_slice(answer)
                .map_err(|e| Failure::Unreadable(format!("{e} in {}", snippet(answer))))
        })
        .await
    }

    /// A one-shot streaming call (one JSON body in, one message out, like the lease
    /// keep-alive): its 200 answer may still carry an error, in the stream's own shape.
    pub(crate) async fn call_stream<T>(
        &self,
        op: &str,
        path: &str,
        body: &serde_json::Value,
        retry: Retry,
        decode: impl Fn(&[u8]) -> Result<T, wire::StreamError>,
    ) -> Result<(usize, T)> {
        self.call_with(op, path, body, retry, |answer| {
            decode(answer).map_err(|e| match e {
                wire::StreamError::Refused(e) => refusal(e),
                wire::StreamError::Unreadable(reason) => {
                    Failure::Unreadable(format!("{reason} in {}", snippet(answer)))
                }
            })
        })
        .await
    }

    /// A call with failover, `decode` reading a 200 answer.
    async fn call_with<T>(
        &self,
        op: &str,
        path: &str,
        body: &serde_json::Value,
        retry: Retry,
        decode: impl Fn(&[u8]) -> Result<T, Failure>,
    ) -> Result<(usize, T)> {
        let body = Bytes::from(body.to_string());
        let mut attempts = Vec::new();
        for index in self.order() {
            let outcome = match self.exchange(index, path, body.clone()).await {
                Ok(answer) => decode(&answer),
                Err(failure) => Err(failure),
            };
            match outcome {
                Ok(answer) => {
                    self.prefer(index);
                    return Ok((index, answer));
                }
                Err(Failure::Rejected { code, message })
                    if code != UNAVAILABLE || retry == Retry::WhenNotSent =>
                {
                    return Err(Error::Rejected {
                        endpoint: self.endpoint(index).to_owned(),
                        op: op.to_owned(),
                        code,
                        message,
                    });
                }
                Err(Failure::Unreadable(reason)) => {
                    return Err(Error::BadResponse {
                        endpoint: self.endpoint(index).to_owned(),
                        op: op.to_owned(),
                        reason,
                    });
                }
                Err(Failure::MaybeSent(reason)) if retry == Retry::WhenNotSent => {
                    self.avoid(index);
                    attempts.push(self.attempt(
                        index,
                        format!(
                            "{reason} (it may have been applied, so it was not sent elsewhere)"
                        ),
                    ));
                    return Err(Error::Unavailable {
                        op: op.to_owned(),
                        attempts,
                    });
                }
                Err(failure) => {
                    self.avoid(index);
                    attempts.push(self.attempt(index, failure.to_string()));
                }
            }
        }
        Err(Error::Unavailable {
            op: op.to_owned(),
            attempts,
        })
    }
}

/// A watch response body being read.
pub(crate) struct RawWatch {
    pub(crate) endpoint: usize,
    body: Incoming,
    decoder: WatchDecoder,
}

impl fmt::Debug for RawWatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawWatch")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl RawWatch {
    /// The next message; an error when the stream broke or ended. Cancel-safe: bytes read are
    /// kept in the decoder.
    pub(crate) async fn next(&mut self) -> Result<WatchResult, String> {
        loop {
            if let Some(message) = self.decoder.next()? {
                return Ok(message);
            }
            match self.body.frame().await {
                None => return Err("etcd ended the watch stream".to_owned()),
                Some(Err(e)) => return Err(format!("the watch stream broke: {}", error_chain(&e))),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.decoder.push(&data);
                    }
                }
            }
        }
    }
}

/// Checks an endpoint as given by the user and returns it as `http://host:port`
/// (`https://host:port` with `tls`).
fn parse_endpoint(raw: &str, tls: bool) -> Result<String, String> {
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|e| format!("not a URL ({e}); expected like http://127.0.0.1:2379"))?;
    match (uri.scheme_str(), tls) {
        (Some("http"), false) | (Some("https"), true) => {}
        (Some("https"), false) => {
            return Err(
                "https needs the node's TLS (`[cluster] tls`, its certificate presented to etcd); \
                        without it give an http:// client URL"
                    .to_owned(),
            );
        }
        (Some("http"), true) => {
            return Err(
                "with `[cluster] tls` etcd is reached over TLS only: give https:// client URLs"
                    .to_owned(),
            );
        }
        (Some(other), _) => {
            return Err(format!("scheme {other:?} is not supported; use http://"));
        }
        (None, _) => return Err("no scheme; write it like http://127.0.0.1:2379".to_owned()),
    }
    let authority = uri
        .authority()
        .ok_or("no host; write it like http://127.0.0.1:2379")?;
    if authority.as_str().contains('@') {
        return Err("credentials in the URL are not supported".to_owned());
    }
    if authority.port_u16().is_none() {
        return Err(format!(
            "no port; write it like http://{}:2379",
            authority.host()
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(
            "a client URL has no path or query; write it like http://127.0.0.1:2379".to_owned(),
        );
    }
    let scheme = if tls { "https" } else { "http" };
    Ok(format!("{scheme}://{authority}"))
}

/// A non-200 answer: the gateway's gRPC status if it is one (in either shape, see `wire.rs`).
fn rejection(status: StatusCode, body: &[u8]) -> Failure {
    match GatewayError::parse(body) {
        Some(e) => refusal(e),
        None => Failure::Unreadable(format!("HTTP {status}: {}", snippet(body))),
    }
}

/// etcd's refusal, told apart when it is the no-leader one.
fn refusal(e: GatewayError) -> Failure {
    if e.code == UNAVAILABLE && e.message == NO_LEADER {
        Failure::NoLeader(e.message)
    } else {
        Failure::Rejected {
            code: e.code,
            message: e.message,
        }
    }
}

fn snippet(body: &[u8]) -> String {
    const MAX: usize = 200;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    if body.len() > MAX {
        format!("{text:?}...")
    } else {
        format!("{text:?}")
    }
}

/// An error with its sources: hyper's own `Display` is just "client error (Connect)".
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("http://127.0.0.1:2379", Ok("http://127.0.0.1:2379")),
            ("http://127.0.0.1:2379/", Ok("http://127.0.0.1:2379")),
            (
                " http://etcd-1.internal:2379 ",
                Ok("http://etcd-1.internal:2379"),
            ),
            ("http://[::1]:2379", Ok("http://[::1]:2379")),
            ("https://127.0.0.1:2379", Err("https needs the node's TLS")),
            ("127.0.0.1:2379", Err("no scheme")),
            ("http://127.0.0.1", Err("no port")),
            ("http://127.0.0.1:2379/v3", Err("no path or query")),
            ("http://u:p@127.0.0.1:2379", Err("credentials")),
            (
                "grpc://127.0.0.1:2379",
                Err("scheme \"grpc\" is not supported"),
            ),
            ("", Err("not a URL")),
        ];
        for (raw, expected) in cases {
            match (parse_endpoint(raw, false), expected) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{raw:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw:?}: {got}"),
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
        // With TLS: https only.
        assert_eq!(
            parse_endpoint("https://10.0.0.1:2379", true).as_deref(),
            Ok("https://10.0.0.1:2379")
        );
        let plain = parse_endpoint("http://10.0.0.1:2379", true).expect_err("http with TLS");
        assert!(plain.contains("https:// client URLs"), "{plain}");
    }

    #[test]
    fn no_leader_is_told_apart() {
        let stream =
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#;
        let unary =
            br#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        for body in [&stream[..], &unary[..]] {
            assert!(matches!(
                rejection(StatusCode::SERVICE_UNAVAILABLE, body),
                Failure::NoLeader(_)
            ));
        }
        let timed_out = br#"{"error":"etcdserver: request timed out","message":"etcdserver: request timed out","code":14}"#;
        assert!(matches!(
            rejection(StatusCode::SERVICE_UNAVAILABLE, timed_out),
            Failure::Rejected { code: 14, .. }
        ));
        assert!(matches!(
            rejection(StatusCode::BAD_GATEWAY, b"<html>"),
            Failure::Unreadable(_)
        ));
    }

    #[test]
    fn new_rejects_before_any_io() {
        let err = Client::new(vec![], Duration::from_secs(1))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("no etcd endpoints given; name at least one, like http://127.0.0.1:2379")
        );
        let err = Client::new(
            vec![
                "http://127.0.0.1:2379".into(),
                "https://10.0.0.1:2379".into(),
            ],
            Duration::from_secs(1),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.starts_with(
                "etcd endpoint \"https://10.0.0.1:2379\" is not usable: https needs the node's TLS (`[cluster] tls`, its certificate presented to etcd); without it give an http:// client URL"
            ),
            "{err}"
        );
    }
}
