//! One etcd member: its ports, data dir and log, and its process (started, killed, started again
//! on the same ports and data dir).

use std::fs::OpenOptions;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::Error;

/// Heartbeat and election timeout, in ms: etcd's defaults. Shorter ones elect faster, but on
/// two cores shared with a parallel test suite they also elect when nothing failed.
pub const HEARTBEAT_MS: u32 = 100;
pub const ELECTION_MS: u32 = 1000;

#[derive(Debug)]
pub struct Member {
    pub name: String,
    pub ip: Ipv4Addr,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Member {
    pub fn client_url(&self) -> String {
        format!("http://{}", self.client_addr())
    }

    pub fn client_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.client_port))
    }

    pub fn peer_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.peer_port)
    }

    /// Starts etcd for this member, its output appended to its log. `initial_cluster` and
    /// `token` only count the first time: a data dir that exists already says who the peers
    /// are.
    pub fn spawn(&mut self, initial_cluster: &str, token: &str) -> Result<(), Error> {
        let io = |source| Error::Io {
            what: format!("opening {}", self.log.display()),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(io)?;
        let log_err = log.try_clone().map_err(io)?;
        let client = self.client_url();
        let peer = self.peer_url();
        let spawned = Command::new("etcd")
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={token}"))
            .arg(format!("--heartbeat-interval={HEARTBEAT_MS}"))
            .arg(format!("--election-timeout={ELECTION_MS}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        match spawned {
            Ok(child) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(Error::NotInstalled),
            Err(source) => Err(Error::Io {
                what: format!("starting etcd {}", self.name),
                source,
            }),
        }
    }

    /// SIGKILL (by pid) and reap; nothing when it is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `Some(how)` when the process has exited by itself (it is then forgotten).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            Ok(None) => None,
            Err(e) => Some(format!("unknown ({e})")),
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The last `lines` lines of the member's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Whether the member failed because a port of its was taken.
    pub fn lost_a_port(&self) -> bool {
        std::fs::read_to_string(&self.log).is_ok_and(|log| log.contains("address already in use"))
    }
}
