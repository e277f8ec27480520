//! What the daemon and the data plane say to each other on the data plane's control socket.
//!
//! Each message is a frame: a 4-byte big-endian length, then that many bytes of JSON. A frame
//! that carries descriptors (a listening socket) sends them with its bytes (`SCM_RIGHTS`,
//! [`jarfleet_shim::fdpass`]); the reader queues descriptors as they come and each message that
//! needs one takes the oldest, so a descriptor that arrives with an earlier read than its
//! frame's end is never lost or mismatched. Every connection starts with a [`Request::Hello`]
//! naming its [`Role`] and the protocol version; a version this build does not speak is
//! refused at once with a message saying both.

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use jarfleet_proxy::{CounterView, FrontView, ListenerConfig, ListenerStats};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use jarfleet_shim::fdpass;

/// The version of this protocol. A daemon and a data plane of different versions do not talk;
/// `jarfleet upgrade` checks it before anything changes.
pub const PROTOCOL: u32 = 1;

/// The largest frame either side accepts (a stats reply of a listener with many backends is a
/// few hundred KiB at most).
pub const MAX_FRAME: usize = 8 << 20;

/// What a connection to the data plane is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Requests, each answered by one [`Reply`].
    Control,
    /// The data plane's [`Note`]s; its end tells the daemon the data plane is gone.
    Notes,
}

/// The daemon's requests.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Hello {
        protocol: u32,
        role: Role,
    },
    /// Serve `app` on the listening socket that comes with this frame (replacing the app's
    /// listener, if it had one). `carry`: counts from earlier processes, added to this
    /// listener's from now on.
    Adopt {
        app: String,
        cfg: Box<ListenerConfig>,
        #[serde(default)]
        carry: Option<Box<Carry>>,
        /// The backends to serve from the first connection accepted (a replacement's).
        #[serde(default)]
        backends: Vec<WireBackend>,
    },
    /// New settings for `app`'s listener, on the address it has.
    Configure {
        app: String,
        cfg: Box<ListenerConfig>,
    },
    /// Stop `app`'s listener (finishing what is in flight) and close its socket.
    Close {
        app: String,
    },
    /// `app`'s backends from now on (the whole snapshot).
    Update {
        app: String,
        backends: Vec<WireBackend>,
    },
    /// Requests in flight on one backend of `app`.
    InFlight {
        app: String,
        backend: String,
    },
    /// Send [`Note::Drained`] with `token` once nothing is in flight on the backend, or after
    /// `timeout_ms`.
    WatchDrain {
        app: String,
        backend: String,
        timeout_ms: u64,
        token: u64,
    },
    /// `app`'s counters (carried counts included).
    Stats {
        app: String,
    },
    /// Every listener, each in a [`Reply::Held`] frame with a duplicate of its socket.
    List,
    /// Another data plane serves these sockets now: stop accepting, let every connection
    /// finish (each answers its next request with `Connection: close`) for up to `grace_ms`,
    /// then exit.
    HandOver {
        grace_ms: u64,
    },
    /// Stop every listener (finishing in-flight requests for up to `grace_ms`) and exit.
    Exit {
        grace_ms: u64,
    },
}

/// The data plane's answers, one per request (`List`: one `Listed`, then one `Held` each).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Hello {
        protocol: u32,
        pid: u32,
        /// The build of the data plane (`jarfleet --version`, with the build id).
        version: String,
    },
    Ok,
    Error {
        message: String,
    },
    InFlight {
        n: u64,
    },
    Stats {
        stats: Option<Box<ListenerStats>>,
    },
    Listed {
        count: usize,
    },
    /// One listener, with a duplicate of its socket.
    Held {
        app: String,
        cfg: Box<ListenerConfig>,
        carry: Option<Box<Carry>>,
        backends: Vec<WireBackend>,
    },
}

/// What the data plane tells the daemon unasked.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    Drained { token: u64 },
}

/// One backend of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireBackend {
    pub id: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// How long it has been ready (the slow-start ramp), at the time of sending.
    pub ready_for_ms: u64,
    pub labels: BTreeMap<String, String>,
    /// Another node's instance, reached through its relay at `addr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<jarfleet_proxy::relay::Via>,
}

/// Counts a listener had in processes that are gone, added to its own when it reports them:
/// `status`, `/metrics` and a canary's judgement see one history across data-plane restarts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Carry {
    pub totals: CounterView,
    pub front: FrontView,
    pub no_backend: u64,
    /// Per backend id.
    pub backends: BTreeMap<String, CounterView>,
}

impl Carry {
    /// Everything `stats` counted (carried counts included, as a data plane reports them).
    pub fn of(stats: &ListenerStats) -> Carry {
        Carry {
            totals: stats.totals.clone(),
            front: stats.front.clone(),
            no_backend: stats.no_backend,
            backends: stats
                .backends
                .iter()
                .map(|b| (b.id.clone(), b.counters.clone()))
                .collect(),
        }
    }

    /// `stats` with these counts added.
    pub fn add_to(&self, stats: &mut ListenerStats) {
        stats.totals.add(&self.totals);
        stats.no_backend += self.no_backend;
        stats.front.add(&self.front);
        for b in &mut stats.backends {
            if let Some(carried) = self.backends.get(&b.id) {
                b.counters.add(carried);
            }
        }
    }
}

/// One end of a control-socket connection: frames out, frames (and descriptors) in.
pub struct Channel {
    sock: UnixStream,
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Channel {
    /// `sock` must be in blocking mode (descriptors are sent whole or not at all).
    pub fn new(sock: UnixStream) -> Channel {
        Channel {
            sock,
            buf: Vec::new(),
            fds: VecDeque::new(),
        }
    }

    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Sends `msg`, with `fd` when it carries one.
    pub fn send<T: Serialize>(&self, msg: &T, fd: Option<&dyn AsFd>) -> io::Result<()> {
        let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
        let len = u32::try_from(body.len())
            .ok()
            .filter(|&n| (n as usize) <= MAX_FRAME)
            .ok_or_else(|| io::Error::other(format!("a {}-byte message", body.len())))?;
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&body);
        match fd {
            Some(fd) => fdpass::send(&self.sock, &frame, &[fd.as_fd()]),
            None => (&self.sock).write_all(&frame),
        }
    }

    /// The next message. `Ok(None)`: the peer closed the connection between two messages.
    pub fn recv<T: DeserializeOwned>(&mut self) -> io::Result<Option<T>> {
        loop {
            if let Some(len) = self.frame_len()?
                && self.buf.len() >= 4 + len
            {
                let msg = serde_json::from_slice(&self.buf[4..4 + len]).map_err(|e| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("a bad message: {e}"))
                });
                self.buf.drain(..4 + len);
                return msg.map(Some);
            }
            let mut chunk = [0u8; 64 * 1024];
            let (n, fds) = fdpass::recv(&self.sock, &mut chunk)?;
            self.fds.extend(fds);
            if self.fds.len() > fdpass::MAX_FDS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "more descriptors than messages that carry them",
                ));
            }
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a message",
                    ))
                };
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The descriptor that came with the message just received (the oldest not taken).
    pub fn take_fd(&mut self) -> io::Result<OwnedFd> {
        self.fds.pop_front().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "a message that carries a socket came without one",
            )
        })
    }

    fn frame_len(&self) -> io::Result<Option<usize>> {
        let Some(head) = self.buf.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a {len}-byte message, more than {MAX_FRAME}"),
            ));
        }
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn frames_and_their_sockets_arrive_in_order_even_when_reads_cut_across_frames() {
        let (a, b) = UnixStream::pair().expect("pair");
        let sender = Channel::new(a);
        let mut receiver = Channel::new(b);
        let l1 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let l2 = TcpListener::bind("127.0.0.1:0").expect("bind");
        let cfg = |l: &TcpListener| {
            ListenerConfig::new(
                "app",
                l.local_addr().expect("addr"),
                jarfleet_proxy::Mode::Http,
            )
        };
        // Three frames sent before any is read: a read may take all of them at once.
        for (l, app) in [(&l1, "one"), (&l2, "two")] {
            let msg = Request::Adopt {
                app: app.into(),
                cfg: Box::new(cfg(l)),
                carry: None,
                backends: Vec::new(),
            };
            sender.send(&msg, Some(l)).expect("send");
        }
        sender
            .send(&Request::Close { app: "one".into() }, None)
            .expect("send");
        for want in [&l1, &l2] {
            let msg: Request = receiver.recv().expect("recv").expect("a message");
            assert!(matches!(msg, Request::Adopt { .. }), "{msg:?}");
            let got = TcpListener::from(receiver.take_fd().expect("its socket"));
            assert_eq!(got.local_addr().ok(), want.local_addr().ok());
        }
        let msg: Request = receiver.recv().expect("recv").expect("a message");
        assert!(matches!(msg, Request::Close { .. }));
        assert!(receiver.take_fd().is_err(), "no descriptor is left over");
        drop(sender);
        assert!(receiver.recv::<Request>().expect("clean end").is_none());
    }

    #[test]
    fn an_oversized_or_cut_frame_is_an_error_not_a_hang() {
        let (a, b) = UnixStream::pair().expect("pair");
        let mut receiver = Channel::new(b);
        (&a).write_all(&u32::MAX.to_be_bytes()).expect("write");
        let e = receiver.recv::<Request>().expect_err("refused");
        assert!(e.to_string().contains("more than"), "{e}");

        let (a, b) = UnixStream::pair().expect("pair");
        let mut receiver = Channel::new(b);
        (&a).write_all(&[0, 0, 0, 10, b'{']).expect("write");
        drop(a);
        let e = receiver.recv::<Request>().expect_err("cut");
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
