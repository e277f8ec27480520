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
    /// Serving clients over TLS only, taking only clients with a certificate of the CA; the
    /// harness itself then asks on a plain listener on 127.0.0.1:`local_port`.
    pub tls: Option<EtcdTls>,
    pub local_port: u16,
}

/// An etcd member's TLS: the CA its clients' certificates must chain to, and its own
/// certificate (naming the member's address) and key, all PEM.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Member {
    /// The URL clients are given (`https://` with TLS).
    pub fn client_url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!(
            "{scheme}://{}",
            SocketAddr::from((self.ip, self.client_port))
        )
    }

    /// Where the harness asks (plain HTTP): the client address, or with TLS the member's
    /// plain listener on 127.0.0.1.
    pub fn client_addr(&self) -> SocketAddr {
        match self.tls {
            None => SocketAddr::from((self.ip, self.client_port)),
            Some(_) => SocketAddr::from(([127, 0, 0, 1], self.local_port)),
        }
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
        let mut cmd = Command::new("etcd");
        match &self.tls {
            None => {
                cmd.arg(format!("--listen-client-urls={client}"));
            }
            Some(tls) => {
                cmd.arg(format!(
                    "--listen-client-urls={client},http://127.0.0.1:{}",
                    self.local_port
                ))
                .arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
            }
        }
        let spawned = cmd
            .arg(format!("--name={}", self.name))
            .arg(format!("--data-dir={}", self.data_dir.display()))
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
