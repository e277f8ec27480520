//! A real 3-member etcd cluster on loopback: each member with its own client and peer ports and
//! data dir, joined by `--initial-cluster`. Members can be killed (SIGKILL, by pid) and
//! restarted on the same ports and data; every member still running is killed on drop.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;
use tokio::time::{Instant, sleep};

use super::{exchange, free_port, get};

/// How long the cluster (or a restarted member) may take to answer.
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long an election may take.
const LEADER_DEADLINE: Duration = Duration::from_secs(15);

/// Raft timing. A follower starts an election after one election timeout (randomised up to
/// twice that) without heartbeats: 1 s elects a new leader within about 2 s of a kill, and
/// leaves room for a loaded 2-core machine to miss a few heartbeats without spurious elections.
/// etcd's minimum lease TTL follows from it: 1.5 election timeouts.
pub const HEARTBEAT_MS: u64 = 100;
pub const ELECTION_MS: u64 = 1000;

pub struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is SIGKILL to this child's pid.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- {} ---\n{}",
            self.name,
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }
}

pub struct Cluster {
    _dir: TempDir,
    token: String,
    members: Vec<Member>,
}

/// What `/v3/maintenance/status` says about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub member_id: u64,
    /// 0 when the member knows no leader.
    pub leader: u64,
}

impl Cluster {
    /// Three members, started together; returns once every member is healthy (which needs an
    /// elected leader).
    pub async fn start() -> Cluster {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let token = format!(
                "jarfleet-test-{}",
                dir.path()
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            );
            let members = (0..3)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: free_port(),
                    peer_port: free_port(),
                    data_dir: dir.path().join(format!("m{i}")),
                    log: dir.path().join(format!("m{i}.log")),
                    child: None,
                })
                .collect();
            let mut cluster = Cluster {
                _dir: dir,
                token,
                members,
            };
            for i in 0..3 {
                cluster.spawn(i);
            }
            let mut ready = Ok(());
            for i in 0..3 {
                ready = cluster.wait_ready(i).await;
                if ready.is_err() {
                    break;
                }
            }
            match ready {
                Ok(()) => return cluster,
                Err(log) if log.contains("address already in use") => last = log,
                Err(log) => panic!("etcd cluster did not start:\n{log}"),
            }
        }
        panic!("etcd cluster did not start (ports taken each time):\n{last}");
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn url(&self, i: usize) -> String {
        self.members[i].url()
    }

    /// Every member's client URL, running or not.
    pub fn urls(&self) -> Vec<String> {
        self.members.iter().map(Member::url).collect()
    }

    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].is_running()
    }

    /// SIGKILL member `i` (by pid) and reap it.
    pub fn kill(&mut self, i: usize) {
        self.members[i].stop();
    }

    /// Starts member `i` again on its ports and data dir and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        if let Err(log) = self.wait_ready(i).await {
            panic!("etcd member m{i} did not restart:\n{log}");
        }
    }

    /// Member `i`'s own view, or `None` if it does not answer.
    pub async fn status(&self, i: usize) -> Option<Status> {
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(1),
            exchange(&self.url(i), "POST /v3/maintenance/status", "{}"),
        )
        .await
        .ok()?
        .ok()?;
        if status != 200 {
            return None;
        }
        let json: serde_json::Value = serde_json::from_str(&body).ok()?;
        let id = |v: Option<&serde_json::Value>| -> u64 {
            v.and_then(|v| v.as_str())
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        };
        Some(Status {
            member_id: id(json.pointer("/header/member_id")),
            leader: id(json.get("leader")),
        })
    }

    /// The index of the leader every running member agrees on, polled until they do.
    pub async fn leader(&self) -> usize {
        let deadline = Instant::now() + LEADER_DEADLINE;
        loop {
            if let Some(leader) = self.agreed_leader().await {
                return leader;
            }
            if Instant::now() > deadline {
                let mut views = Vec::new();
                for i in 0..self.len() {
                    views.push(format!("m{i}: {:?}", self.status(i).await));
                }
                panic!(
                    "no leader agreed on within {LEADER_DEADLINE:?}: {}\n{}",
                    views.join(", "),
                    self.logs()
                );
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn agreed_leader(&self) -> Option<usize> {
        let mut statuses = Vec::new();
        for i in (0..self.len()).filter(|&i| self.is_running(i)) {
            statuses.push((i, self.status(i).await?));
        }
        let leader = statuses.first()?.1.leader;
        if leader == 0 || statuses.iter().any(|(_, s)| s.leader != leader) {
            return None;
        }
        statuses
            .iter()
            .find(|(_, s)| s.member_id == leader)
            .map(|(i, _)| *i)
    }

    /// Waits until member `i` says it knows no leader (after losing quorum it takes an
    /// election timeout or two to give up on the old one).
    pub async fn wait_leaderless(&self, i: usize) {
        let deadline = Instant::now() + LEADER_DEADLINE;
        loop {
            if let Some(Status { leader: 0, .. }) = self.status(i).await {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "m{i} still names a leader after {LEADER_DEADLINE:?}"
            );
            sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn logs(&self) -> String {
        self.members
            .iter()
            .map(Member::log_tail)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self
            .members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",");
        let member = &mut self.members[i];
        let log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("open etcd log");
        let log_err = log.try_clone().expect("clone log handle");
        let client = member.url();
        let peer = member.peer_url();
        let spawned = Command::new("etcd")
            .arg(format!("--name={}", member.name))
            .arg(format!("--data-dir={}", member.data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial}"))
            // Ignored once the data dir exists (a restart rejoins as the same member).
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={}", self.token))
            .arg(format!("--heartbeat-interval={HEARTBEAT_MS}"))
            .arg(format!("--election-timeout={ELECTION_MS}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn();
        match spawned {
            Ok(child) => member.child = Some(child),
            Err(e) if e.kind() == ErrorKind::NotFound => panic!(
                "the `etcd` binary is not on PATH; these tests need a real etcd: \
                 apt-get install -y etcd-server"
            ),
            Err(e) => panic!("cannot start etcd: {e}"),
        }
    }

    /// Polls member `i`'s `/health` until true; `Err(logs)` if it exits or the deadline
    /// passes.
    async fn wait_ready(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + START_DEADLINE;
        let url = self.url(i);
        loop {
            if let Some(child) = self.members[i].child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.members[i].child = None;
                return Err(format!("m{i} exited with {status}; logs:\n{}", self.logs()));
            }
            if let Ok((200, body)) = get(&url, "/health").await
                && body.contains(r#""health":"true""#)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                let logs = self.logs();
                self.kill(i);
                return Err(format!(
                    "m{i} not healthy within {START_DEADLINE:?}; logs:\n{logs}"
                ));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.stop();
        }
    }
}
