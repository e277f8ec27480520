//! HTTP/1.1 to the daemon: over its unix socket, or to its TCP address (`[daemon] http`), with
//! the bearer token and, for `https://`, TLS (rustls, ring) trusting Mozilla's roots or only the
//! CA given.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::ServerName;

use crate::{ErrorBody, ErrorKind, PROTOCOL, PROTOCOL_HEADER, SOCKET_NAME};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the jarfleet daemon at {target}: {source}")]
    Unreachable {
        /// The socket path or the URL.
        target: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    BadRemote(String),
    #[error("TLS with {url} failed: {reason}")]
    Tls { url: String, reason: String },
    #[error("{0}")]
    Unauthorized(String),
    #[error("{}", .0.message)]
    Api(ErrorBody),
    #[error("the daemon answered {status}: {body}")]
    Http { status: StatusCode, body: String },
    #[error("talking to the daemon failed: {0}")]
    Transport(String),
    #[error("the daemon sent a reply this CLI cannot read: {0}")]
    Decode(String),
}

impl ClientError {
    /// The hint to show under the error line, if any.
    pub fn hint(&self) -> Option<String> {
        match self {
            ClientError::Unreachable { .. } => Some(
                "start it with `jarfleet up -d` (or `jarfleet daemon`), or point --state-dir / JARFLEET_STATE at its state dir".into(),
            ),
            ClientError::Api(body) => body.hint.clone(),
            ClientError::Tls { .. } => Some(
                "for a daemon with a certificate of a private CA, pass --ca FILE (or JARFLEET_CA) with that CA's PEM certificate".into(),
            ),
            ClientError::Unauthorized(_) => Some(
                "pass --token-file FILE (or JARFLEET_TOKEN_FILE) holding the daemon's token (its [daemon] token_file)".into(),
            ),
            _ => None,
        }
    }

    /// Process exit code: 2 usage/spec error, 3 daemon unreachable, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable { .. } | ClientError::Tls { .. } => 3,
            ClientError::BadRemote(_) | ClientError::Unauthorized(_) => 2,
            ClientError::Api(ErrorBody {
                kind: ErrorKind::Usage,
                ..
            }) => 2,
            ClientError::Api(ErrorBody {
                kind: ErrorKind::Protocol,
                ..
            }) => 2,
            _ => 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
}

#[derive(Clone)]
enum Target {
    Unix(PathBuf),
    Tcp(Arc<Remote>),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Unix(p) => write!(f, "Unix({})", p.display()),
            Target::Tcp(r) => write!(f, "Tcp({})", r.url),
        }
    }
}

/// A daemon's TCP address.
struct Remote {
    /// As given, for messages: `https://host:9900`.
    url: String,
    /// `host:port`, for connecting and the `Host` header.
    authority: String,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The bearer token.
    token: Option<String>,
}

impl Client {
    /// A client for the daemon whose state dir is `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Client {
        Client {
            target: Target::Unix(state_dir.join(SOCKET_NAME)),
        }
    }

    /// A client for a daemon's TCP API at `url` (`http://HOST:PORT` or `https://HOST:PORT`),
    /// sending `token`; for https, trusting only the certificates of `ca_pem` if given, else
    /// Mozilla's roots.
    pub fn remote(
        url: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let bad = |why: &str| {
            ClientError::BadRemote(format!(
                "{url:?} is not a daemon address: {why}; write http://HOST:PORT or https://HOST:PORT"
            ))
        };
        let uri: hyper::Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad("the scheme must be http or https")),
        };
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad("give no path"));
        }
        let host = uri.host().ok_or_else(|| bad("no host"))?;
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = format!("{host}:{port}");
        let tls = if https {
            let bare = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let name =
                ServerName::try_from(bare).map_err(|_| bad("the host is not a valid name"))?;
            Some((TlsConnector::from(tls_config(ca_pem)?), name))
        } else {
            None
        };
        Ok(Client {
            target: Target::Tcp(Arc::new(Remote {
                url: url.trim_end_matches('/').to_string(),
                authority,
                tls,
                token,
            })),
        })
    }

    /// Where this client connects: the socket path or the URL.
    pub fn target(&self) -> String {
        match &self.target {
            Target::Unix(p) => p.display().to_string(),
            Target::Tcp(r) => r.url.clone(),
        }
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.send(Method::GET, path, Bytes::new()).await?;
        decode(resp).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode(e.to_string()))?;
        let resp = self.send(Method::POST, path, Bytes::from(bytes)).await?;
        decode(resp).await
    }

    /// A GET whose body is text (e.g. [`crate::METRICS_PATH`]).
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let resp = self.send(Method::GET, path, Bytes::new()).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        let (_, body) = read_body(resp).await?;
        String::from_utf8(body.to_vec()).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// A streaming GET whose body is newline-delimited JSON.
    pub async fn stream<T: DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<LineStream<T>, ClientError> {
        let resp = self.send(Method::GET, path, Bytes::new()).await?;
        if !resp.status().is_success() {
            return Err(error_from(resp).await);
        }
        Ok(LineStream {
            body: resp.into_body(),
            buf: BytesMut::new(),
            done: false,
            _t: std::marker::PhantomData,
        })
    }

    async fn connect(&self) -> Result<(Sender, String), ClientError> {
        match &self.target {
            Target::Unix(socket) => {
                let stream = UnixStream::connect(socket).await.map_err(|source| {
                    ClientError::Unreachable {
                        target: socket.display().to_string(),
                        source,
                    }
                })?;
                Ok((handshake(stream).await?, "jarfleet".into()))
            }
            Target::Tcp(remote) => {
                let unreachable = |source| ClientError::Unreachable {
                    target: remote.url.clone(),
                    source,
                };
                let tcp = TcpStream::connect(&remote.authority)
                    .await
                    .map_err(unreachable)?;
                let _ = tcp.set_nodelay(true);
                let sender = match &remote.tls {
                    None => handshake(tcp).await?,
                    Some((connector, name)) => {
                        let tls = connector.connect(name.clone(), tcp).await.map_err(|e| {
                            ClientError::Tls {
                                url: remote.url.clone(),
                                reason: e.to_string(),
                            }
                        })?;
                        handshake(tls).await?
                    }
                };
                Ok((sender, remote.authority.clone()))
            }
        }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        let (mut sender, host) = self.connect().await?;
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", host)
            .header("content-type", "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL.to_string());
        if let Target::Tcp(remote) = &self.target
            && let Some(token) = &remote.token
        {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn handshake<S>(stream: S) -> Result<Sender, ClientError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// Only the CA of `ca_pem` when given (a private CA), else Mozilla's roots.
fn tls_config(
    ca_pem: Option<&[u8]>,
) -> Result<Arc<tokio_rustls::rustls::ClientConfig>, ClientError> {
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let bad = |why: String| ClientError::BadRemote(format!("the --ca file: {why}"));
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert = cert.map_err(|e| bad(format!("not valid PEM ({e:?})")))?;
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("a certificate in it is unusable: {e}")))?;
            }
            if roots.is_empty() {
                return Err(bad("no CERTIFICATE in it".into()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::BadRemote(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

async fn read_body(resp: Response<Incoming>) -> Result<(StatusCode, Bytes), ClientError> {
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Transport(e.to_string()))?
        .to_bytes();
    Ok((status, body))
}

async fn decode<T: DeserializeOwned>(resp: Response<Incoming>) -> Result<T, ClientError> {
    if !resp.status().is_success() {
        return Err(error_from(resp).await);
    }
    let (_, body) = read_body(resp).await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Decode(e.to_string()))
}

async fn error_from(resp: Response<Incoming>) -> ClientError {
    match read_body(resp).await {
        Ok((status, body)) => match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(err) if status == StatusCode::UNAUTHORIZED => ClientError::Unauthorized(err.message),
            Ok(err) => ClientError::Api(err),
            Err(_) => ClientError::Http {
                status,
                body: String::from_utf8_lossy(&body).into_owned(),
            },
        },
        Err(e) => e,
    }
}

/// Newline-delimited JSON values from a streaming response.
pub struct LineStream<T> {
    body: Incoming,
    buf: BytesMut,
    done: bool,
    _t: std::marker::PhantomData<T>,
}

impl<T: DeserializeOwned> LineStream<T> {
    /// The next value, or `None` at the end of the stream.
    pub async fn next(&mut self) -> Result<Option<T>, ClientError> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line = self.buf.split_to(pos + 1);
                let line = &line[..pos];
                if line.is_empty() {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ClientError::Decode(e.to_string()));
            }
            if self.done {
                return Ok(None);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(mut data) = frame.into_data() {
                        while data.has_remaining() {
                            let chunk = data.chunk();
                            self.buf.extend_from_slice(chunk);
                            let n = chunk.len();
                            data.advance(n);
                        }
                    }
                }
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                None => self.done = true,
            }
        }
    }
}
