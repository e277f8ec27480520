//! Test harness: a real etcd on free loopback ports (a 3-member one is the test kit's), a TCP
//! relay that can cut the network, raw gateway calls, and waiting for watcher and lease keeper
//! events with a deadline.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jarfleet_etcd::{KeeperEvent, LeaseKeeper, WatchEvent, Watcher};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Instant, sleep, timeout_at};

/// How long etcd may take to start answering.
const START_DEADLINE: Duration = Duration::from_secs(15);
/// How long a test waits for one expected watcher event.
pub const EVENT_DEADLINE: Duration = Duration::from_secs(10);

/// A port for etcd (or for nobody, as a dead endpoint): from the checked allocator, never
/// bound-and-released, so nothing else takes it before etcd binds it.
pub use jarfleet_testkit::free_port;

/// A single-member etcd with its own data dir and ports, killed (by pid) on drop.
pub struct Etcd {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    /// More command-line flags, like `--experimental-watch-progress-notify-interval=200ms`.
    extra: Vec<String>,
    child: Option<Child>,
}

impl Etcd {
    pub async fn start() -> Etcd {
        Etcd::start_with(&[]).await
    }

    /// Started with `extra` flags too.
    pub async fn start_with(extra: &[&str]) -> Etcd {
        // Another test may grab a port between our probe and etcd's bind: try fresh ports.
        let mut last_log = String::new();
        for _ in 0..3 {
            let mut etcd = Etcd {
                dir: tempfile::tempdir().expect("temp dir"),
                client_port: free_port(),
                peer_port: free_port(),
                extra: extra.iter().map(|a| (*a).to_owned()).collect(),
                child: None,
            };
            etcd.spawn();
            match etcd.wait_ready().await {
                Ok(()) => return etcd,
                Err(log) if log.contains("address already in use") => last_log = log,
                Err(log) => panic!("etcd did not start:\n{log}"),
            }
        }
        panic!("etcd did not start (ports taken each time):\n{last_log}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("etcd is not running");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
    }

    /// Kills etcd (SIGKILL, by pid) and reaps it: an abrupt outage.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data dir and waits until it answers.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        if let Err(log) = self.wait_ready().await {
            panic!("etcd did not restart:\n{log}");
        }
    }

    /// SIGSTOP: the process keeps its sockets open but answers nothing, like a hung member.
    pub fn freeze(&self) {
        kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP etcd");
    }

    pub fn thaw(&self) {
        kill(self.pid(), Signal::SIGCONT).expect("SIGCONT etcd");
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open etcd log");
        let log_err = log.try_clone().expect("clone log handle");
        let spawned = Command::new("etcd")
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            // A lone member elects itself after one election timeout: keep it short.
            .arg("--heartbeat-interval=10")
            .arg("--election-timeout=100")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        match spawned {
            Ok(child) => self.child = Some(child),
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "the `etcd` binary is not on PATH; these tests need a real etcd: \
                 apt-get install -y etcd-server"
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        }
    }

    /// Polls `/health` until it says true; `Err(log)` if etcd exits or the deadline passes.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let url = self.url();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!(
                    "etcd exited with {status}; log:\n{}",
                    self.log_tail()
                ));
            }
            if let Ok((200, body)) = get(&url, "/health").await
                && body.contains(r#""health":"true""#)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(format!(
                    "etcd not healthy within {START_DEADLINE:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay in front of etcd whose "network" can be cut (listener closed, every relayed
/// connection dropped) and restored on the same port, while etcd itself stays up.
pub struct Relay {
    port: u16,
    target: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl Relay {
    pub async fn start(target_url: &str) -> Relay {
        let target = target_url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .expect("target like http://127.0.0.1:PORT");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        let mut relay = Relay {
            port,
            target,
            task: None,
        };
        relay.serve(listener);
        relay
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes the listener and every relayed connection; returns once they are gone.
    pub async fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub async fn restore(&mut self) {
        assert!(self.task.is_none(), "relay is already up");
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("rebind relay port");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let target = self.target;
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task when it is aborted, aborting every relay in it.
            let mut relays = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                relays.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while relays.try_join_next().is_some() {}
            }
        }));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A raw HTTP/1.0 exchange with the gateway, independent of the client under test.
async fn exchange(url: &str, request_line: &str, body: &str) -> std::io::Result<(u16, String)> {
    let addr = url.strip_prefix("http://").unwrap_or(url);
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!(
        "{request_line} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    Ok((status, body.to_owned()))
}

async fn get(url: &str, path: &str) -> std::io::Result<(u16, String)> {
    tokio::time::timeout(
        Duration::from_secs(1),
        exchange(url, &format!("GET {path}"), ""),
    )
    .await
    .unwrap_or_else(|_| Err(std::io::Error::other("timed out")))
}

/// `POST path body` to the gateway; panics unless it answers 200. Returns the body.
pub async fn post(url: &str, path: &str, body: &str) -> String {
    let (status, answer) = exchange(url, &format!("POST {path}"), body)
        .await
        .unwrap_or_else(|e| panic!("POST {path} to {url}: {e}"));
    assert_eq!(status, 200, "POST {path} {body} to {url}: {answer}");
    answer
}

/// The number of watchers etcd holds, from its Prometheus metrics.
pub async fn watchers(url: &str) -> u64 {
    let (status, metrics) = get(url, "/metrics").await.expect("GET /metrics");
    assert_eq!(status, 200, "GET /metrics: {metrics}");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("etcd_debugging_mvcc_watcher_total "))
        .and_then(|n| n.trim().parse::<f64>().ok())
        .map(|n| n as u64)
        .unwrap_or_else(|| panic!("no etcd_debugging_mvcc_watcher_total in /metrics"))
}

/// Polls `condition` every 20 ms until it holds; panics naming `what` after the deadline.
pub async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + EVENT_DEADLINE;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "not within {EVENT_DEADLINE:?}: {what}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

/// Compacts etcd's history up to `revision`.
pub async fn compact(url: &str, revision: i64) {
    post(
        url,
        "/v3/kv/compaction",
        &format!(r#"{{"revision":"{revision}","physical":true}}"#),
    )
    .await;
}

/// The next event, or a panic naming what was expected.
pub async fn next_event(watcher: &mut Watcher, expecting: &str) -> WatchEvent {
    let deadline = Instant::now() + EVENT_DEADLINE;
    match timeout_at(deadline, watcher.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("watcher task ended while expecting {expecting}"),
        Err(_) => panic!("no watcher event within {EVENT_DEADLINE:?}, expecting {expecting}"),
    }
}

/// Panics if an event is already queued (checks what has arrived, not what might come).
pub fn assert_no_event(watcher: &mut Watcher, context: &str) {
    if let Some(event) = watcher.try_recv() {
        panic!("unexpected watcher event {event:?} {context}");
    }
}

/// The next lease keeper event within `within`, or a panic naming what was expected.
pub async fn next_keeper_event(
    keeper: &mut LeaseKeeper,
    within: Duration,
    expecting: &str,
) -> KeeperEvent {
    match tokio::time::timeout(within, keeper.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("lease keeper stopped while expecting {expecting}"),
        Err(_) => panic!("no lease keeper event within {within:?}, expecting {expecting}"),
    }
}
