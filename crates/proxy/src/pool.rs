//! Keep-alive connections to one backend: a capped LIFO of idle HTTP/1.1 senders.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// What goes to a backend: the client's streamed body, or nothing (replayable requests).
pub(crate) type UpBody = Either<Incoming, Empty<Bytes>>;
pub(crate) type Sender = SendRequest<UpBody>;

pub(crate) struct Pool {
    idle: Mutex<VecDeque<(Sender, Instant)>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, idle_timeout: Duration) -> Pool {
        Pool {
            idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        }
    }

    /// The most recently used idle connection that is still open. Connections idle longer than
    /// `idle_timeout` are dropped (closed) on the way; backends close idle ones on their own
    /// timers, and a fresher connection is less likely to be half-closed.
    pub fn checkout(&self, now: Instant) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, since)) = idle.front() {
            if now.saturating_duration_since(*since) > self.idle_timeout {
                idle.pop_front();
            } else {
                break;
            }
        }
        while let Some((s, _)) = idle.pop_back() {
            if !s.is_closed() {
                return Some(s);
            }
        }
        None
    }

    /// Back into the pool after its response ended; dropped (and so closed) beyond the cap.
    pub fn checkin(&self, s: Sender, now: Instant) {
        if s.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_idle {
            idle.push_back((s, now));
        }
    }

    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn idle_len(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// A fresh connection: TCP connect bounded by `timeout`, TCP_NODELAY, HTTP/1.1 handshake; the
/// connection's IO runs on its own task until the last sender is gone.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Sender> {
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
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(%addr, error = %e, "backend connection ended");
        }
    });
    Ok(sender)
}
