//! The relay between the nodes' balancers: how a balancer reaches an instance on another node
//! that listens on loopback only.
//!
//! Every node of a cluster with mutual TLS runs one relay listener ([`crate::Mode::Relay`]) on
//! its advertised address. A balancer that sends a request to another node's instance opens
//! (or reuses from its keep-alive pool) a connection to that node's relay, presents its node
//! certificate, checks that the relay's certificate names the node it meant to reach, and
//! names the instance in one line:
//!
//! ```text
//! → JFRELAY/1 web/2:9104\n
//! ← OK\n                      (or: NO <why>\n, and the connection closes)
//! ```
//!
//! The relay takes only clients with a certificate of the cluster's CA, looks the name up in
//! its snapshot — the instances this node runs, as the daemon lists them; nothing else on the
//! host, such as the daemon's own API, can be named — connects to the instance on loopback and
//! then copies bytes both ways until either side closes. The answer comes before any byte of
//! the request is sent, so a relay that refuses, or an instance that refuses the relay's
//! connect, is for the balancer a connect failure: the instance is ejected and the request
//! goes to another one, whatever its method. One connection through the relay is one
//! connection to the instance, so the balancer's keep-alive pool, its stale-connection checks
//! and its drain work as for an instance on this host, and a stopping instance's drain
//! counts the connections other nodes hold through the relay as the relay's in-flight ones.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::backend::{BackendState, InFlight};
use crate::conns::{ConnToken, HARD};
use crate::{Shared, tunnel};

/// The first word of a client's line: the protocol and its version.
const HELLO: &str = "JFRELAY/1 ";

/// The longest line either side sends (a target is at most [`MAX_TARGET`] bytes).
const MAX_LINE: usize = 256;

/// The longest instance name a client may ask for.
pub const MAX_TARGET: usize = 200;

/// This node's TLS for the relay: the cluster's CA, this node's certificate chain and key,
/// all DER, and the node's name (which its certificate carries).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTls {
    pub node: String,
    pub ca: Vec<Vec<u8>>,
    pub chain: Vec<Vec<u8>>,
    pub key: Vec<u8>,
}

impl fmt::Debug for RelayTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelayTls")
            .field("node", &self.node)
            .field("ca", &self.ca.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

/// A node's TLS as rustls uses it: the server side takes only clients presenting a
/// certificate of the CA; the client side presents the node's certificate and trusts only the
/// CA.
#[derive(Clone)]
pub struct MutualTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

/// Mutual-TLS configurations from a CA, a certificate chain and its key (ring, TLS 1.2 and
/// 1.3). An error names what is wrong.
pub fn mutual_tls(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<MutualTls, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| format!("the cluster's CA: {e}"))?;
    }
    let roots = Arc::new(roots);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| format!("the cluster's CA: {e}"))?;
    let server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), key.clone_key())
        .map_err(|e| format!("the node's key: {e}"))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| format!("the node's key: {e}"))?;
    Ok(MutualTls {
        server: Arc::new(server),
        client: Arc::new(client),
    })
}

impl RelayTls {
    pub fn mutual(&self) -> Result<MutualTls, String> {
        let ca: Vec<CertificateDer<'static>> = self
            .ca
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let chain = self
            .chain
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = PrivateKeyDer::try_from(self.key.clone())
            .map_err(|e| format!("the node's key: {e}"))?;
        mutual_tls(&ca, chain, key)
    }
}

/// The process's side as a client of other nodes' relays: set by the relay listener, used by
/// every listener that sends to another node's instance.
static CLIENT: ArcSwapOption<TlsConnector> = ArcSwapOption::const_empty();

pub(crate) fn install_client(client: Arc<rustls::ClientConfig>) {
    CLIENT.store(Some(Arc::new(TlsConnector::from(client))));
}

/// How a backend on another node is reached: through its node's relay (the backend's address
/// is the relay's), whose certificate names `node`, asking for `target`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Via {
    pub node: String,
    /// The instance's name at its node's relay (`APP/SLOT:PORT`).
    pub target: String,
}

/// Whether `target` is an instance's name as a relay knows it, `APP/SLOT:PORT` (what every
/// node reads in the cluster's status of the instance): an app name (`a-z`, `0-9`, `-`, `_`),
/// a slot and a port in decimal; at most [`MAX_TARGET`] bytes.
pub fn valid_target(target: &str) -> bool {
    let decimal = |s: &str| !s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit());
    let Some((app, rest)) = target.split_once('/') else {
        return false;
    };
    let Some((slot, port)) = rest.split_once(':') else {
        return false;
    };
    target.len() <= MAX_TARGET
        && !app.is_empty()
        && app
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && decimal(slot)
        && decimal(port)
}

/// A client's line, without its `\n`: the instance it asks for.
pub fn parse_request(line: &[u8]) -> Result<&str, &'static str> {
    let line = std::str::from_utf8(line).map_err(|_| "not text")?;
    let target = line.strip_prefix(HELLO).ok_or("not a relay request")?;
    if !valid_target(target) {
        return Err("not an instance name");
    }
    Ok(target)
}

/// The relay's answer line, without its `\n`: `Ok(())` for `OK`, the reason of a `NO`.
pub fn parse_answer(line: &[u8]) -> Result<(), String> {
    if line == b"OK" {
        return Ok(());
    }
    let why = line
        .strip_prefix(b"NO ")
        .filter(|w| w.iter().all(|b| (0x20..0x7f).contains(b)))
        .ok_or_else(|| "not a relay's answer".to_string())?;
    Err(String::from_utf8_lossy(why).into_owned())
}

/// Reads one line (up to and without its `\n`) a byte at a time — nothing after it is taken
/// from the stream, which is the instance's from then on.
async fn read_line<S: AsyncRead + Unpin>(s: &mut S) -> io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(32);
    loop {
        let b = s.read_u8().await?;
        if b == b'\n' {
            return Ok(line);
        }
        if line.len() >= MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a line too long",
            ));
        }
        line.push(b);
    }
}

/// A connection to `target` on `node` through its relay at `addr`, ready for the instance's
/// bytes; the connect, the handshake and the relay's answer all within `timeout`. A relay
/// that refuses, or whose instance refused its connect, is a `ConnectionRefused`.
pub(crate) async fn connect(
    addr: SocketAddr,
    via: &Via,
    timeout: Duration,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let Some(connector) = CLIENT.load_full() else {
        return Err(io::Error::new(
            io::ErrorKind::NotConnected,
            "this node has no certificate to reach other nodes' relays with",
        ));
    };
    let name = ServerName::try_from(via.node.clone()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("node name {}: {e}", via.node),
        )
    })?;
    let attempt = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the relay of node {} at {addr}: {e}", via.node),
            )
        })?;
        tls.write_all(format!("{HELLO}{}\n", via.target).as_bytes())
            .await?;
        tls.flush().await?;
        let answer = read_line(&mut tls).await.map_err(|e| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "the relay of node {} at {addr} did not answer: {e}",
                    via.node
                ),
            )
        })?;
        parse_answer(&answer).map_err(|why| {
            io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!(
                    "the relay of node {} refused {}: {why}",
                    via.node, via.target
                ),
            )
        })?;
        Ok(tls)
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect to {} through {addr} timed out", via.target),
        )),
    }
}

/// The relay's TLS acceptor, built from the listener's `relay_tls` (checked when the listener
/// starts).
pub(crate) fn acceptor(tls: Option<&RelayTls>) -> io::Result<(TlsAcceptor, MutualTls)> {
    let tls = tls.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a relay listener needs the node's certificate (relay_tls)",
        )
    })?;
    let mutual = tls
        .mutual()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok((TlsAcceptor::from(mutual.server.clone()), mutual))
}

/// One client connection of the relay: the handshake, the line naming an instance, then the
/// instance's bytes both ways.
pub(crate) async fn serve(sh: Arc<Shared>, stream: TcpStream, peer: SocketAddr, token: ConnToken) {
    let mut signal = token.signal();
    let Some(acceptor) = sh.relay.load_full() else {
        return;
    };
    let (head, connect_timeout, idle) = {
        let cfg = sh.config();
        (
            cfg.timeouts.head,
            cfg.timeouts.connect,
            cfg.timeouts.tcp_idle,
        )
    };
    let greeting = async {
        let mut tls = acceptor.accept(stream).await.map_err(|e| {
            sh.front.tls_refused.fetch_add(1, Relaxed);
            if let Some(since) = sh.warnings.tls_refused.allow(Instant::now()) {
                tracing::warn!(listener = %sh.name, client = %peer, error = %e, "relay: TLS refused (not a node of the cluster?){since}");
            }
        })?;
        let line = read_line(&mut tls).await;
        Ok::<_, ()>((tls, line))
    };
    let Ok(Ok((mut tls, line))) = tokio::time::timeout(head, greeting).await else {
        return;
    };
    let line = match line {
        Ok(line) => line,
        Err(e) => {
            sh.front.bad_requests.fetch_add(1, Relaxed);
            if e.kind() == io::ErrorKind::InvalidData {
                refuse(&mut tls, "a line too long").await;
            }
            return;
        }
    };
    let target = match parse_request(&line) {
        Ok(t) => t.to_string(),
        Err(why) => {
            sh.front.bad_requests.fetch_add(1, Relaxed);
            refuse(&mut tls, why).await;
            return;
        }
    };
    let Some(guard) = enter(&sh, &target) else {
        sh.no_backend.fetch_add(1, Relaxed);
        tracing::debug!(listener = %sh.name, client = %peer, target, "relay: no such instance here");
        refuse(&mut tls, "no such instance on this node").await;
        return;
    };
    let b = guard.backend().clone();
    let mut upstream = match tokio::time::timeout(connect_timeout, TcpStream::connect(b.addr)).await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            b.counters.errors.fetch_add(1, Relaxed);
            refuse(&mut tls, &format!("the instance refused: {}", e.kind())).await;
            return;
        }
        Err(_) => {
            b.counters.errors.fetch_add(1, Relaxed);
            refuse(&mut tls, "the instance's connect timed out").await;
            return;
        }
    };
    let _ = upstream.set_nodelay(true);
    if tls.write_all(b"OK\n").await.is_err() || tls.flush().await.is_err() {
        return;
    }
    b.counters.conns.fetch_add(1, Relaxed);
    tokio::select! {
        r = tunnel::pump(&mut tls, &mut upstream, idle) => {
            if let Err(e) = r {
                tracing::debug!(listener = %sh.name, backend = %b.id, error = %e, "relayed connection ended");
            }
        }
        _ = signal.wait_for(|s| s.stop >= HARD) => {}
    }
    drop(guard);
}

/// The instance named `target` in the current snapshot, entered (in-flight + 1); `None` when
/// this node does not run it (any more).
fn enter(sh: &Shared, target: &str) -> Option<InFlight> {
    for _ in 0..8 {
        let table = sh.table.load();
        let state: &Arc<BackendState> = &table
            .backends
            .iter()
            .find(|e| e.state.id.0 == target)?
            .state;
        let guard = InFlight::enter(state);
        if !state.removed.load(std::sync::atomic::Ordering::SeqCst) {
            return Some(guard);
        }
    }
    None
}

async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, why: &str) {
    let why: String = why
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(MAX_LINE - 4)
        .collect();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        s.write_all(format!("NO {why}\n").as_bytes()).await?;
        s.shutdown().await
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_an_instance_and_nothing_else() {
        assert_eq!(parse_request(b"JFRELAY/1 web/2:9104"), Ok("web/2:9104"));
        for bad in [
            &b"JFRELAY/1 "[..],
            b"JFRELAY/2 web/2:9104",
            b"jfrelay/1 web/2:9104",
            b"JFRELAY/1 web/2:9104 extra",
            b"JFRELAY/1 web/2:9104\r",
            b"JFRELAY/1 web/2#7",
            b"JFRELAY/1 ../../etc",
            b"JFRELAY/1 127.0.0.1:22 ",
            b"GET / HTTP/1.1",
            b"JFRELAY/1 \xff\xfe",
            b"JFRELAY/1 a\x00b",
        ] {
            assert!(
                parse_request(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        for bad in [
            "web",
            "web/1",
            "web/1#",
            "/1#2",
            "web/x#1",
            "Web/1#1",
            "web/1#1#1",
            "a@n1/1#1",
        ] {
            assert!(!valid_target(bad), "{bad}");
        }
        let long = format!("{HELLO}{}/1:1", "a".repeat(MAX_TARGET));
        assert!(parse_request(long.as_bytes()).is_err());
        let longest = format!("{HELLO}{}/1:1", "a".repeat(MAX_TARGET - 4));
        assert!(parse_request(longest.as_bytes()).is_ok());
    }

    #[test]
    fn an_answer_is_ok_or_a_printable_reason() {
        assert_eq!(parse_answer(b"OK"), Ok(()));
        assert_eq!(
            parse_answer(b"NO no such instance"),
            Err("no such instance".to_string())
        );
        assert!(parse_answer(b"OK ").is_err());
        assert!(parse_answer(b"HTTP/1.1 200 OK").is_err());
        assert_eq!(
            parse_answer(b"NO \x1b[31m"),
            Err("not a relay's answer".to_string())
        );
    }

    #[tokio::test]
    async fn a_line_is_read_up_to_its_end_and_no_further() {
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"OK\nHTTP/1.1 200").await.expect("write");
        assert_eq!(read_line(&mut b).await.expect("line"), b"OK");
        let mut rest = [0u8; 4];
        b.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"HTTP");
        let (mut a, mut b) = tokio::io::duplex(4096);
        a.write_all(&[b'x'; MAX_LINE + 10]).await.expect("write");
        assert_eq!(
            read_line(&mut b).await.expect_err("too long").kind(),
            io::ErrorKind::InvalidData
        );
    }
}
