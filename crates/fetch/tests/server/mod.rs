//! A real HTTPS/1.1 server on 127.0.0.1 for the fetch tests: rustls over a std TcpListener,
//! one thread per connection, `Connection: close` on every response.
//!
//! It serves files with an ETag and honours `Range: bytes=N-` with `If-Range`, can cut a
//! response after N body bytes (without TLS close_notify, as a dropped connection looks),
//! redirects, answers fixed statuses, and records every request it parsed.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What one path answers.
#[derive(Debug, Clone)]
pub enum Route {
    File(FileRoute),
    /// 302 to this Location.
    Redirect(String),
    /// This status with an empty body.
    Status(u16),
}

#[derive(Debug, Clone, Default)]
pub struct FileRoute {
    pub body: Vec<u8>,
    /// Sent as `ETag` and compared with `If-Range`.
    pub etag: Option<String>,
    /// `false`: no Content-Length; the body ends when the connection closes.
    pub no_length: bool,
    /// One entry per response, in order: send only this many body bytes, then cut the connection.
    pub drops: VecDeque<usize>,
    /// One entry per response, in order: send only this many body bytes, then go silent until
    /// the client gives up and closes.
    pub stalls: VecDeque<usize>,
}

impl FileRoute {
    pub fn new(body: Vec<u8>, etag: &str) -> Self {
        Self {
            body,
            etag: Some(format!("\"{etag}\"")),
            ..Self::default()
        }
    }
}

/// A request as the server parsed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
    pub if_range: Option<String>,
}

struct Shared {
    routes: Mutex<HashMap<String, Route>>,
    seen: Mutex<Vec<Seen>>,
    body_bytes: AtomicU64,
    stop: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

pub struct TestServer {
    addr: SocketAddr,
    /// `false`: plain HTTP (a cluster's nodes serving artifacts by digest).
    tls: bool,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    dir: tempfile::TempDir,
}

const IO_TIMEOUT: Duration = Duration::from_secs(10);

impl TestServer {
    /// Generates a CA and a certificate for `localhost` and `127.0.0.1`, then listens on a
    /// port the OS picks.
    pub fn start() -> Self {
        Self::start_with(true)
    }

    /// The same server over plain HTTP.
    pub fn start_plain() -> Self {
        Self::start_with(false)
    }

    fn start_with(with_tls: bool) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ca_pem, config) = pki();
        let tls = with_tls.then_some(config);
        std::fs::write(dir.path().join("ca.pem"), ca_pem).expect("write ca.pem");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            routes: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            body_bytes: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accept = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(listener, tls, shared))
        };
        Self {
            addr,
            tls: with_tls,
            shared,
            accept: Some(accept),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}{path}", self.addr.port())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The PEM file holding the test CA.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn route(&self, path: &str, route: Route) {
        lock(&self.shared.routes).insert(path.to_owned(), route);
    }

    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// Body bytes written so far, over all responses.
    pub fn body_bytes(&self) -> u64 {
        self.shared.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept().
        let _ = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let connections = std::mem::take(&mut *lock(&self.shared.connections));
        for connection in connections {
            let _ = connection.join();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn pki() -> (String, Arc<ServerConfig>) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "jarfleet-fetch test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &issuer).expect("server cert");

    let chain: Vec<CertificateDer<'static>> = vec![cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    (ca_cert.pem(), Arc::new(config))
}

fn accept_loop(listener: TcpListener, tls: Option<Arc<ServerConfig>>, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(tcp) = stream else { continue };
        let (tls, conn_shared) = (tls.clone(), shared.clone());
        let handle = std::thread::spawn(move || {
            // Errors here are the client going away, which several tests cause on purpose.
            let _ = serve(tcp, tls, &conn_shared);
        });
        lock(&shared.connections).push(handle);
    }
}

type Tls = StreamOwned<ServerConnection, TcpStream>;

/// A connection, over TLS or not.
trait Conn: Read + Write {
    fn tcp(&self) -> &TcpStream;
    /// Ends the response cleanly (TLS: close_notify first).
    fn close(&mut self) -> io::Result<()>;
}

impl Conn for Tls {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn close(&mut self) -> io::Result<()> {
        self.conn.send_close_notify();
        self.flush()?;
        self.sock.shutdown(Shutdown::Write)
    }
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn close(&mut self) -> io::Result<()> {
        self.flush()?;
        self.shutdown(Shutdown::Write)
    }
}

/// How a response is cut short after this many body bytes.
#[derive(Debug, Clone, Copy)]
enum Cut {
    Drop(usize),
    Stall(usize),
}

fn serve(tcp: TcpStream, config: Option<Arc<ServerConfig>>, shared: &Shared) -> io::Result<()> {
    tcp.set_read_timeout(Some(IO_TIMEOUT))?;
    tcp.set_write_timeout(Some(IO_TIMEOUT))?;
    match config {
        Some(config) => {
            let conn = ServerConnection::new(config).map_err(io::Error::other)?;
            serve_on(&mut StreamOwned::new(conn, tcp), shared)
        }
        None => serve_on(&mut { tcp }, shared),
    }
}

fn serve_on(stream: &mut impl Conn, shared: &Shared) -> io::Result<()> {
    let head = read_head(stream)?;
    let (path, headers) = parse_head(&head)?;
    lock(&shared.seen).push(Seen {
        path: path.clone(),
        range: headers.get("range").cloned(),
        if_range: headers.get("if-range").cloned(),
    });
    let route = {
        let mut routes = lock(&shared.routes);
        match routes.get_mut(&path) {
            // Take this response's drop plan out, so the next response serves normally.
            Some(Route::File(file)) => {
                let cut = match file.drops.pop_front() {
                    Some(n) => Some(Cut::Drop(n)),
                    None => file.stalls.pop_front().map(Cut::Stall),
                };
                Some((Route::File(file.clone()), cut))
            }
            Some(other) => Some((other.clone(), None)),
            None => None,
        }
    };
    match route {
        None => respond_empty(stream, 404, &[]),
        Some((Route::Status(code), _)) => respond_empty(stream, code, &[]),
        Some((Route::Redirect(location), _)) => {
            respond_empty(stream, 302, &[("Location", &location)])
        }
        Some((Route::File(file), cut)) => serve_file(stream, &file, &headers, cut, shared),
    }
}

fn read_head(stream: &mut impl Conn) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(io::Error::other("request head too long"));
        }
        match stream.read(&mut byte)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            _ => head.push(byte[0]),
        }
    }
    String::from_utf8(head).map_err(io::Error::other)
}

fn parse_head(head: &str) -> io::Result<(String, HashMap<String, String>)> {
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (Some("GET"), Some(path)) = (parts.next(), parts.next()) else {
        return Err(io::Error::other(format!(
            "unexpected request {request_line:?}"
        )));
    };
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok((path.to_owned(), headers))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        _ => "Whatever",
    }
}

fn respond_empty(stream: &mut impl Conn, status: u16, extra: &[(&str, &str)]) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())?;
    stream.close()
}

fn serve_file(
    stream: &mut impl Conn,
    file: &FileRoute,
    headers: &HashMap<String, String>,
    cut: Option<Cut>,
    shared: &Shared,
) -> io::Result<()> {
    let len = file.body.len();
    let validator_matches = match (headers.get("if-range"), &file.etag) {
        (None, _) => true,
        (Some(asked), Some(etag)) => asked == etag,
        (Some(_), None) => false,
    };
    let range_start = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|_| validator_matches);
    let (status, start) = match range_start {
        Some(n) if n >= len => {
            let range = format!("bytes */{len}");
            return respond_empty(stream, 416, &[("Content-Range", &range)]);
        }
        Some(n) => (206, n),
        None => (200, 0),
    };
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\n",
        reason(status)
    );
    if let Some(etag) = &file.etag {
        head.push_str(&format!("ETag: {etag}\r\n"));
    }
    if !file.no_length {
        head.push_str(&format!("Content-Length: {}\r\n", len - start));
    }
    if status == 206 {
        head.push_str(&format!(
            "Content-Range: bytes {start}-{}/{len}\r\n",
            len - 1
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;

    let body = &file.body[start..];
    let sent = match cut {
        Some(Cut::Drop(n) | Cut::Stall(n)) => n.min(body.len()),
        None => body.len(),
    };
    let body = &body[..sent];
    for chunk in body.chunks(16 * 1024) {
        shared
            .body_bytes
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        stream.write_all(chunk)?;
    }
    stream.flush()?;
    match cut {
        // A dropped connection: no close_notify, just the TCP close.
        Some(Cut::Drop(_)) => stream.tcp().shutdown(Shutdown::Both),
        // Silent until the client closes (or the socket's read timeout ends it).
        Some(Cut::Stall(_)) => stream.read(&mut [0u8; 1]).map(drop),
        None => stream.close(),
    }
}
