//! Bytes copied both ways between two connections (tcp mode, WebSocket tunnels) until either
//! side is done, or nothing moved either way for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Copies bytes both ways between a client and a backend until the backend is done (its side
/// closed and everything it sent passed on), an error, or `idle` with no byte either way
/// (`TimedOut`). A client that closes its side (a half-close: "that was my request") is passed
/// on and the backend's answer still flows back; a backend that closes its side ends the
/// tunnel, as nginx does by default, so a session the instance ended never lingers (nor holds
/// the instance's drain) because its client keeps a socket open.
pub(crate) async fn pump<C, B>(client: &mut C, backend: &mut B, idle: Duration) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let base = Instant::now();
    let last = AtomicU64::new(0);
    let client = Tracked {
        inner: client,
        last: &last,
        base,
    };
    let backend = Tracked {
        inner: backend,
        last: &last,
        base,
    };
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut backend_read, mut backend_write) = tokio::io::split(backend);
    let upstream = async {
        tokio::io::copy(&mut client_read, &mut backend_write).await?;
        backend_write.shutdown().await
    };
    let downstream = async {
        tokio::io::copy(&mut backend_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::pin!(upstream, downstream);
    let mut client_done = false;
    loop {
        let quiet_until = base + Duration::from_nanos(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            r = &mut downstream => return r,
            r = &mut upstream, if !client_done => {
                r?;
                client_done = true;
            }
            _ = tokio::time::sleep_until(quiet_until) => {
                let since = base + Duration::from_nanos(last.load(Ordering::Relaxed));
                if since.elapsed() >= idle {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "idle for too long"));
                }
            }
        }
    }
}

/// A stream that notes when bytes last moved through it.
struct Tracked<'a, S: ?Sized> {
    inner: &'a mut S,
    last: &'a AtomicU64,
    base: Instant,
}

impl<S: ?Sized> Tracked<'_, S> {
    fn moved(&self) {
        let ns = self.base.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        self.last.store(ns, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin + ?Sized> AsyncRead for Tracked<'_, S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut *self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> AsyncWrite for Tracked<'_, S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut *self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn copies_both_ways_and_ends_when_idle() {
        let (mut client_far, mut client) = tokio::io::duplex(64);
        let (mut backend, mut backend_far) = tokio::io::duplex(64);
        let task =
            tokio::spawn(
                async move { pump(&mut client, &mut backend, Duration::from_secs(5)).await },
            );
        client_far.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        backend_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        backend_far.write_all(b"pong").await.expect("write");
        client_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
        // Nothing moves: the auto-advancing paused clock reaches the idle timeout.
        let r = task.await.expect("join");
        assert_eq!(r.expect_err("idle").kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_half_close_still_gets_the_answer() {
        let (mut client_far, mut client) = tokio::io::duplex(64);
        let (mut backend, mut backend_far) = tokio::io::duplex(64);
        let task =
            tokio::spawn(
                async move { pump(&mut client, &mut backend, Duration::from_secs(60)).await },
            );
        client_far.write_all(b"question").await.expect("write");
        client_far.shutdown().await.expect("half-close");
        let mut got = Vec::new();
        backend_far
            .read_to_end(&mut got)
            .await
            .expect("the client's FIN is passed on");
        assert_eq!(got, b"question");
        backend_far.write_all(b"answer").await.expect("write");
        drop(backend_far);
        let mut answer = Vec::new();
        client_far.read_to_end(&mut answer).await.expect("read");
        assert_eq!(answer, b"answer");
        task.await.expect("join").expect("a clean end");
    }

    #[tokio::test(start_paused = true)]
    async fn a_backend_that_closes_ends_the_tunnel_even_if_the_client_stays() {
        let (mut client_far, mut client) = tokio::io::duplex(64);
        let (mut backend, backend_far) = tokio::io::duplex(64);
        let task =
            tokio::spawn(
                async move { pump(&mut client, &mut backend, Duration::from_secs(600)).await },
            );
        drop(backend_far);
        task.await.expect("join").expect("a clean end");
        let mut rest = Vec::new();
        client_far
            .read_to_end(&mut rest)
            .await
            .expect("the client sees the close");
        assert!(rest.is_empty());
    }
}
