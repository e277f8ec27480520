//! Bytes copied both ways between two connections (tcp mode, WebSocket tunnels) until either
//! side is done, or nothing moved either way for the idle timeout.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Copies until both directions are closed (half-closes are passed on), an error, or `idle`
/// with no byte either way (`TimedOut`). Returns the bytes copied a → b and b → a.
pub(crate) async fn pump<A, B>(a: &mut A, b: &mut B, idle: Duration) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let base = Instant::now();
    let last = AtomicU64::new(0);
    let mut ta = Tracked {
        inner: a,
        last: &last,
        base,
    };
    let mut tb = Tracked {
        inner: b,
        last: &last,
        base,
    };
    let copy = tokio::io::copy_bidirectional(&mut ta, &mut tb);
    tokio::pin!(copy);
    loop {
        let quiet_until = base + Duration::from_nanos(last.load(Ordering::Relaxed)) + idle;
        tokio::select! {
            r = &mut copy => return r,
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn copies_both_ways_and_ends_when_idle() {
        let (mut a_far, mut a) = tokio::io::duplex(64);
        let (mut b, mut b_far) = tokio::io::duplex(64);
        let task = tokio::spawn(async move { pump(&mut a, &mut b, Duration::from_secs(5)).await });
        a_far.write_all(b"ping").await.expect("write");
        let mut got = [0u8; 4];
        b_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        b_far.write_all(b"pong").await.expect("write");
        a_far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
        // Nothing moves: the auto-advancing paused clock reaches the idle timeout.
        let r = task.await.expect("join");
        assert_eq!(r.expect_err("idle").kind(), io::ErrorKind::TimedOut);
    }
}
