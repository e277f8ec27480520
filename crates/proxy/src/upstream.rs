//! A connection to a backend: plain TCP to an instance of this node, or TLS through another
//! node's relay ([`crate::relay`]). Either way the proxy reads and writes it the same.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio_rustls::client::TlsStream;

use crate::backend::BackendState;
use crate::relay;

pub(crate) enum Upstream {
    Plain(TcpStream),
    Relayed(Box<TlsStream<TcpStream>>),
}

impl Upstream {
    /// A connection to `b` within `timeout` (TCP_NODELAY): straight to its address, or
    /// through its node's relay (handshake and the relay's answer included).
    pub async fn connect(b: &BackendState, timeout: Duration) -> io::Result<Upstream> {
        if let Some(via) = &b.via {
            return Ok(Upstream::Relayed(Box::new(
                relay::connect(b.addr, via, timeout).await?,
            )));
        }
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(b.addr)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect to {} timed out", b.addr),
                ));
            }
        };
        stream.set_nodelay(true)?;
        Ok(Upstream::Plain(stream))
    }

    /// The TCP socket underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Upstream::Plain(s) => s,
            Upstream::Relayed(s) => s.get_ref().0,
        }
    }

    /// Still usable after sitting idle: the peer neither closed it nor sent anything (for a
    /// relayed connection, not even a TLS record: a relay whose instance closed the
    /// connection closes its side too).
    pub fn is_open(&self) -> bool {
        let mut probe = [0u8; 1];
        if let Upstream::Plain(s) = self
            && !matches!(s.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
        {
            return false;
        }
        // The reactor may not have seen the peer's FIN or RST yet (an instance that died a
        // moment ago): the kernel knows. A request written on such a connection would be lost,
        // and one that is not replayable (a POST) could not go anywhere else.
        use nix::sys::socket::{MsgFlags, recv};
        matches!(
            recv(
                self.fd(),
                &mut probe,
                MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT
            ),
            Err(nix::errno::Errno::EAGAIN)
        )
    }

    fn fd(&self) -> RawFd {
        self.tcp().as_raw_fd()
    }

    /// Borrowed read and write halves, used at the same time.
    pub fn split(&mut self) -> (UpRead<'_>, UpWrite<'_>) {
        match self {
            Upstream::Plain(s) => {
                let (r, w) = s.split();
                (UpRead::Plain(r), UpWrite::Plain(w))
            }
            Upstream::Relayed(s) => {
                let (r, w) = tokio::io::split(&mut **s);
                (UpRead::Relayed(r), UpWrite::Relayed(w))
            }
        }
    }
}

pub(crate) enum UpRead<'a> {
    Plain(ReadHalf<'a>),
    Relayed(tokio::io::ReadHalf<&'a mut TlsStream<TcpStream>>),
}

pub(crate) enum UpWrite<'a> {
    Plain(WriteHalf<'a>),
    Relayed(tokio::io::WriteHalf<&'a mut TlsStream<TcpStream>>),
}

/// Delegates the tokio io traits to whichever variant it is.
macro_rules! delegate_io {
    ($ty:ty, read) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
                    Self::Relayed(s) => Pin::new(s).poll_read(cx, buf),
                }
            }
        }
    };
    ($ty:ty, write) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
                    Self::Relayed(s) => Pin::new(s).poll_write(cx, buf),
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_flush(cx),
                    Self::Relayed(s) => Pin::new(s).poll_flush(cx),
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
                    Self::Relayed(s) => Pin::new(s).poll_shutdown(cx),
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                    Self::Relayed(s) => Pin::new(s).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    Self::Plain(s) => s.is_write_vectored(),
                    Self::Relayed(s) => s.is_write_vectored(),
                }
            }
        }
    };
}

delegate_io!(Upstream, read);
delegate_io!(Upstream, write);
delegate_io!(UpRead<'_>, read);
delegate_io!(UpWrite<'_>, write);
