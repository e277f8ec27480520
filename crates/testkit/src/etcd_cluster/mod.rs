//! A real etcd cluster of several members on one address, for tests of what depends on etcd
//! staying up while members die: leader changes, a member lost and back.
//!
//! Every member listens on the same address (`bind_ip`: the network lab's bridge address, which
//! every lab host reaches, or 127.0.0.1) with its own client and peer ports from the checked
//! allocator, its own data dir and a log file, all in one temp dir. Another test can still
//! take a port between the allocator's check and etcd's bind: a start that fails that way is
//! tried again with fresh ports. When the cluster is dropped every member is SIGKILLed by pid;
//! when it is dropped by a panicking test its temp dir (data and logs) is kept, and named on
//! stderr, for the post-mortem.
//!
//! Talking to the members uses etcd's HTTP/JSON gateway through [`crate::http`], no `curl`.
//! On a lab's bridge, make the lab first: the cluster, dropped first, dies before its address.

mod member;
mod status;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::http;
use member::Member;
pub use member::{ELECTION_MS, EtcdTls, HEARTBEAT_MS};

/// How long a new or restarted member may take to serve: election timeouts and fsyncs on a
/// busy machine.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How many fresh sets of ports a start tries when one was taken under it.
const START_ATTEMPTS: u32 = 3;
/// How long one question to a member may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How many lines of each member's log an error quotes.
const LOG_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("an etcd cluster needs at least one member")]
    NoMembers,
    #[error(
        "the `etcd` binary is not on PATH; the etcd cluster tests need a real etcd: \
         apt-get install -y etcd-server"
    )]
    NotInstalled,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("etcd {member} exited ({status}); its log ends:\n{log}")]
    Exited {
        member: String,
        status: String,
        log: String,
    },
    #[error("etcd members not healthy within {waited:?}: {members:?}; their logs end:\n{logs}")]
    NotHealthy {
        waited: Duration,
        members: Vec<String>,
        logs: String,
    },
    #[error("no etcd member led within {waited:?}; the logs end:\n{logs}")]
    NoLeader { waited: Duration, logs: String },
    #[error("a port was taken under etcd at each of {attempts} starts; the last log ends:\n{log}")]
    PortsTaken { attempts: u32, log: String },
}

/// The members of one etcd cluster, killed when this is dropped.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    /// Data dirs and logs; `None` only once kept for a post-mortem.
    dir: Option<TempDir>,
}

impl EtcdCluster {
    /// Starts `members` members on `bind_ip` and waits until every one is healthy.
    pub fn start(members: usize, bind_ip: Ipv4Addr) -> Result<EtcdCluster, Error> {
        EtcdCluster::start_with(members, bind_ip, None)
    }

    /// [`EtcdCluster::start`] serving clients over TLS only, each client presenting a
    /// certificate of `tls.ca` (`client_urls` are then `https://`).
    pub fn start_tls(
        members: usize,
        bind_ip: Ipv4Addr,
        tls: EtcdTls,
    ) -> Result<EtcdCluster, Error> {
        EtcdCluster::start_with(members, bind_ip, Some(tls))
    }

    fn start_with(
        members: usize,
        bind_ip: Ipv4Addr,
        tls: Option<EtcdTls>,
    ) -> Result<EtcdCluster, Error> {
        if members == 0 {
            return Err(Error::NoMembers);
        }
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let mut cluster = EtcdCluster::spawn(members, bind_ip, tls.clone())?;
            match cluster.wait_healthy(START_DEADLINE) {
                Ok(()) => return Ok(cluster),
                Err(e) => {
                    let Some(lost) = cluster.members.iter().find(|m| m.lost_a_port()) else {
                        return Err(e);
                    };
                    last_log = lost.log_tail(LOG_LINES);
                    // Dropped: its members killed, its dir removed (no test is failing yet).
                    cluster.kill_all();
                }
            }
        }
        Err(Error::PortsTaken {
            attempts: START_ATTEMPTS,
            log: last_log,
        })
    }

    /// Fresh ports and dirs for `count` members, every member started.
    fn spawn(count: usize, ip: Ipv4Addr, tls: Option<EtcdTls>) -> Result<EtcdCluster, Error> {
        let dir = tempfile::Builder::new()
            .prefix("jarfleet-etcd-cluster-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating the cluster's temp dir".into(),
                source,
            })?;
        let members: Vec<Member> = (0..count)
            .map(|i| {
                let (client_port, peer_port) = crate::free_ports(2);
                Member {
                    name: format!("member{i}"),
                    ip,
                    client_port,
                    peer_port,
                    data_dir: dir.path().join(format!("member{i}")),
                    log: dir.path().join(format!("member{i}.log")),
                    child: None,
                    local_port: if tls.is_some() { crate::free_port() } else { 0 },
                    tls: tls.clone(),
                }
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        // Peers of another cluster that somehow reached these ports are refused.
        let token = format!(
            "jarfleet-test-{}-{}",
            std::process::id(),
            members[0].client_port
        );
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            dir: Some(dir),
        };
        for i in 0..count {
            cluster.spawn_member(i)?;
        }
        Ok(cluster)
    }

    fn spawn_member(&mut self, i: usize) -> Result<(), Error> {
        let (initial_cluster, token) = (&self.initial_cluster, &self.token);
        self.members[i].spawn(initial_cluster, token)
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL (`http://IP:PORT`), in member order.
    pub fn client_urls(&self) -> Vec<String> {
        self.members.iter().map(Member::client_url).collect()
    }

    /// Every member's client address, in member order.
    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        self.members.iter().map(Member::client_addr).collect()
    }

    /// The temp dir holding the members' data dirs and logs (`member<i>.log`).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("taken only when dropped").path()
    }

    /// Member `i`'s pid, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.member(i).child.as_ref().map(std::process::Child::id)
    }

    /// The last lines of every member's log, for a failure message.
    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("--- {} ---\n{}", m.name, m.log_tail(LOG_LINES)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Which member leads now, asking each running one (`/v3/maintenance/status`); `None`
    /// while none does (an election under way, or no quorum).
    pub fn leader(&self) -> Option<usize> {
        let answers: Vec<Option<status::Status>> = self
            .members
            .iter()
            .map(|m| {
                if !m.running() {
                    return None;
                }
                let answer =
                    http::post(m.client_addr(), "/v3/maintenance/status", "{}", ASK_TIMEOUT)
                        .ok()?;
                (answer.status == 200)
                    .then(|| status::parse(&answer.body))
                    .flatten()
            })
            .collect();
        status::leader(&answers)
    }

    /// Whether member `i` answers and says it knows no leader (after losing quorum it takes
    /// an election timeout or two to give up on the old one).
    pub fn knows_no_leader(&self, i: usize) -> bool {
        let Some(m) = self.members.get(i).filter(|m| m.running()) else {
            return false;
        };
        http::post(m.client_addr(), "/v3/maintenance/status", "{}", ASK_TIMEOUT)
            .ok()
            .filter(|a| a.status == 200)
            .and_then(|a| status::parse(&a.body))
            .is_some_and(|s| s.leader == "0")
    }

    /// Waits until member `i` knows no leader, polling every 20 ms.
    pub fn wait_leaderless(&self, i: usize, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        while !self.knows_no_leader(i) {
            if Instant::now() > deadline {
                return Err(Error::NoLeader {
                    waited: timeout,
                    logs: format!("member {i} still names a leader; {}", self.logs()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Waits until a member leads, polling every 20 ms; which one.
    pub fn wait_leader(&self, timeout: Duration) -> Result<usize, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader() {
                return Ok(leader);
            }
            if Instant::now() > deadline {
                return Err(Error::NoLeader {
                    waited: timeout,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs member `i` (by pid) and reaps it: a member lost outright.
    pub fn kill(&mut self, i: usize) {
        self.member_mut(i).kill();
    }

    /// Starts every member again (the whole cluster was down: none can be healthy alone) on
    /// the same ports and data dirs, and waits until they all are.
    pub fn restart_all(&mut self) -> Result<(), Error> {
        for i in 0..self.members.len() {
            self.member_mut(i).kill();
            self.spawn_member(i)?;
        }
        self.wait_healthy(START_DEADLINE)
    }

    /// Starts member `i` again (killing it first if it runs) on the same ports and data dir,
    /// and waits until it is healthy.
    pub fn restart(&mut self, i: usize) -> Result<(), Error> {
        self.member_mut(i).kill();
        self.spawn_member(i)?;
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            let member = &mut self.members[i];
            if let Some(status) = member.exited() {
                return Err(Error::Exited {
                    member: member.name.clone(),
                    status,
                    log: member.log_tail(LOG_LINES),
                });
            }
            if healthy(member) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotHealthy {
                    waited: START_DEADLINE,
                    members: vec![member.name.clone()],
                    logs: member.log_tail(LOG_LINES),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running member says it is healthy (`GET /health`: it has a leader
    /// and serves reads), polling every 20 ms. A member that exits meanwhile is an error at
    /// once.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        loop {
            for member in &mut self.members {
                if let Some(status) = member.exited() {
                    return Err(Error::Exited {
                        member: member.name.clone(),
                        status,
                        log: member.log_tail(LOG_LINES),
                    });
                }
            }
            let unhealthy: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.running() && !healthy(m))
                .map(|m| m.name.clone())
                .collect();
            if unhealthy.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::NotHealthy {
                    waited: timeout,
                    members: unhealthy,
                    logs: self.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn member(&self, i: usize) -> &Member {
        let len = self.members.len();
        self.members
            .get(i)
            .unwrap_or_else(|| panic!("member {i} of an etcd cluster of {len}"))
    }

    fn member_mut(&mut self, i: usize) -> &mut Member {
        let len = self.members.len();
        self.members
            .get_mut(i)
            .unwrap_or_else(|| panic!("member {i} of an etcd cluster of {len}"))
    }

    fn kill_all(&mut self) {
        for member in &mut self.members {
            member.kill();
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
        if std::thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            eprintln!(
                "etcd cluster: data and logs kept for the failing test in {}",
                dir.keep().display()
            );
        }
    }
}

/// Whether `member` answers `/health` with `"health":"true"`.
fn healthy(member: &Member) -> bool {
    http::get(member.client_addr(), "/health", ASK_TIMEOUT)
        .is_ok_and(|r| r.status == 200 && r.body.contains(r#""health":"true""#))
}
