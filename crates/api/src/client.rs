//! HTTP/1.1 over the daemon's unix socket.

use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::{ErrorBody, ErrorKind, PROTOCOL, PROTOCOL_HEADER, SOCKET_NAME};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the jarfleet daemon at {socket}: {source}")]
    Unreachable {
        socket: PathBuf,
        source: std::io::Error,
    },
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
            _ => None,
        }
    }

    /// Process exit code: 2 usage/spec error, 3 daemon unreachable, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        match self {
            ClientError::Unreachable { .. } => 3,
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
    socket: PathBuf,
}

impl Client {
    /// A client for the daemon whose state dir is `state_dir`.
    pub fn for_state_dir(state_dir: &Path) -> Client {
        Client {
            socket: state_dir.join(SOCKET_NAME),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
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

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
    ) -> Result<Response<Incoming>, ClientError> {
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Unreachable {
                    socket: self.socket.clone(),
                    source,
                })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "jarfleet")
            .header("content-type", "application/json")
            .header(PROTOCOL_HEADER, PROTOCOL.to_string())
            .body(Full::new(body))
            .map_err(|e| ClientError::Transport(e.to_string()))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| ClientError::Transport(e.to_string()))
    }
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
