//! The three proxies under test, each with one frontend per shape in front of that shape's own
//! backend port: jarfleet's (in process), nginx and HAProxy (child processes with a config in a
//! temp dir, killed on drop).
//!
//! Both external proxies run a single process with a single worker (nginx `master_process off`,
//! HAProxy `-db` with `nbthread 1`), so there is one pool of idle backend connections, which
//! every client of a frontend shares, exactly like jarfleet with one data-plane thread; and a
//! SIGKILL on drop leaves nothing behind. Keep-alive to the backend:
//! - nginx: `upstream { server ...; keepalive 16; }`, `proxy_http_version 1.1;`,
//!   `proxy_set_header Connection "";` (nginx's documented upstream keep-alive), and
//!   `proxy_set_header Host $host;` as most configurations have it; everything else default
//!   (`underscores_in_headers off`, `ignore_invalid_headers on`, `large_client_header_buffers
//!   4 8k`, request bodies buffered).
//! - HAProxy: `mode http`, `http-reuse always`. The default, `safe`, never sends the *first*
//!   request of a client connection over a connection another client used, and the victim in
//!   this test is always such a first request: with `safe` the cross-client check would never
//!   touch a shared connection. `always` shares idle connections between clients the way
//!   nginx's keepalive pool and jarfleet's pool do, so all three are tested alike. Parsing
//!   options stay default (no `accept-invalid-http-request`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jarfleet_proxy::{Backend, Listener, ListenerConfig, Mode, Snapshot};

/// The binary `name` in /usr/sbin or on PATH, or a failure saying what to install.
pub fn tool(name: &str) -> PathBuf {
    let found = [PathBuf::from("/usr/sbin").join(name)]
        .into_iter()
        .chain(
            std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join(name)),
        )
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "`{name}` is missing (looked in /usr/sbin and PATH): the smuggling test compares jarfleet with nginx and HAProxy; install them with `apt-get install -y nginx haproxy`"
        )
    })
}

/// A child process killed (SIGKILL: single-process servers, nothing is orphaned) on drop.
pub struct Proc {
    child: Child,
    pub name: &'static str,
    dir: tempfile::TempDir,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Its stdout and stderr, and nginx's error log.
    pub fn log_text(&self) -> String {
        ["output.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// An external proxy and its frontends, in the order of the backends it was given.
pub struct External {
    pub proc: Proc,
    pub fronts: Vec<SocketAddr>,
}

/// `n` distinct loopback addresses for the proxy to bind, from the checked allocator (below the
/// ephemeral range, checked free, claimed for this test process).
fn free_ports(n: usize) -> Vec<SocketAddr> {
    (0..n)
        .map(|_| SocketAddr::from(([127, 0, 0, 1], jarfleet_testkit::free_port())))
        .collect()
}

fn nginx_conf(dir: &Path, fronts: &[SocketAddr], backends: &[SocketAddr]) -> String {
    let d = dir.display();
    let mut c = format!(
        "master_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  \
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n"
    );
    for (i, (f, b)) in fronts.iter().zip(backends).enumerate() {
        c.push_str(&format!(
            "  upstream s{i} {{ server {b}; keepalive 16; }}\n  server {{\n    listen {f};\n    location / {{\n      proxy_pass http://s{i};\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_set_header Host $host;\n    }}\n  }}\n"
        ));
    }
    c.push_str("}\n");
    c
}

fn haproxy_conf(fronts: &[SocketAddr], backends: &[SocketAddr]) -> String {
    let mut c = String::from(
        "global\n  nbthread 1\n  maxconn 4000\n  noreuseport\n\
         defaults\n  mode http\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  \
         timeout http-request 10s\n  timeout http-keep-alive 30s\n  http-reuse always\n",
    );
    for (i, (f, b)) in fronts.iter().zip(backends).enumerate() {
        c.push_str(&format!(
            "frontend f{i}\n  bind {f}\n  default_backend b{i}\n\
             backend b{i}\n  server s{i} {b}\n"
        ));
    }
    c
}

/// nginx in front of `backends`, one frontend each.
pub async fn nginx(backends: &[SocketAddr]) -> External {
    let bin = tool("nginx");
    start("nginx", backends, |dir, fronts| {
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(dir, fronts, backends)).expect("write nginx.conf");
        let mut cmd = Command::new(&bin);
        cmd.arg("-p")
            .arg(format!("{}/", dir.display()))
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"]);
        cmd
    })
    .await
}

/// HAProxy in front of `backends`, one frontend each.
pub async fn haproxy(backends: &[SocketAddr]) -> External {
    let bin = tool("haproxy");
    start("haproxy", backends, |dir, fronts| {
        let conf = dir.join("haproxy.cfg");
        std::fs::write(&conf, haproxy_conf(fronts, backends)).expect("write haproxy.cfg");
        let mut cmd = Command::new(&bin);
        cmd.arg("-f").arg(&conf).arg("-db");
        cmd
    })
    .await
}

/// Starts a proxy with fresh ports until it listens on all of them, each try bounded by 10 s.
/// The ports come from the checked allocator, so no other test and no ephemeral port takes
/// one; should something else bind one anyway, the proxy exits with "Address already in use"
/// and gets a new set, five times at most.
async fn start(
    name: &'static str,
    backends: &[SocketAddr],
    mut command: impl FnMut(&Path, &[SocketAddr]) -> Command,
) -> External {
    let mut last = String::new();
    for _ in 0..5 {
        let dir = tempfile::tempdir().expect("temp dir");
        let fronts = free_ports(backends.len());
        let mut cmd = command(dir.path(), &fronts);
        let out = std::fs::File::create(dir.path().join("output.log")).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut proc = Proc { child, name, dir };
        match listening(&mut proc, &fronts).await {
            Ok(()) => return External { proc, fronts },
            Err(e) => {
                last = format!("{e}\n--- {name}'s output ---\n{}", proc.log_text());
                if !last.contains("in use") {
                    break;
                }
            }
        }
    }
    panic!("{name} did not start: {last}");
}

/// The inodes of the sockets process `pid` holds.
fn socket_inodes(pid: u32) -> std::collections::HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Default::default();
    };
    dir.filter_map(|e| {
        let link = std::fs::read_link(e.ok()?.path()).ok()?;
        let link = link.to_str()?;
        link.strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

/// Listening IPv4 sockets by local port: their inodes, from /proc/net/tcp (more than one
/// where processes share a port with SO_REUSEPORT).
fn listening_sockets() -> std::collections::HashMap<u16, Vec<u64>> {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut out: std::collections::HashMap<u16, Vec<u64>> = Default::default();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(3) != Some(&"0A") {
            continue;
        }
        let port = f
            .get(1)
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| u16::from_str_radix(p, 16).ok());
        let inode = f.get(9).and_then(|i| i.parse().ok());
        if let (Some(port), Some(inode)) = (port, inode) {
            out.entry(port).or_default().push(inode);
        }
    }
    out
}

impl External {
    /// The fronts on which somebody else listens too, or nobody (a process sharing a port
    /// would get some of the connections meant for this proxy).
    pub fn not_solely_ours(&self) -> Vec<SocketAddr> {
        let mine = socket_inodes(self.proc.child.id());
        let listening = listening_sockets();
        self.fronts
            .iter()
            .copied()
            .filter(|f| {
                !listening
                    .get(&f.port())
                    .is_some_and(|l| l.iter().all(|i| mine.contains(i)))
            })
            .collect()
    }
}

/// Waits (10 s at most) until the process itself, and nobody else, listens on every front, or
/// exits. Checked by socket ownership rather than by connecting: a port the process failed to
/// bind, or shares, may be listened on by somebody else (another run's proxy), whose answers
/// must never be taken for this one's.
async fn listening(proc: &mut Proc, fronts: &[SocketAddr]) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = proc.child.try_wait() {
            return Err(format!("{} exited at start: {status}", proc.name));
        }
        let mine = socket_inodes(proc.child.id());
        let listening = listening_sockets();
        let missing = fronts
            .iter()
            .filter(|f| {
                !listening
                    .get(&f.port())
                    .is_some_and(|l| l.iter().all(|i| mine.contains(i)))
            })
            .count();
        if missing == 0 {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "{} does not listen on {missing} of its {} ports after 10 s",
                proc.name,
                fronts.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// jarfleet's proxy in front of `backend`: defaults, except no slow start and no stall probe
/// (which would add requests of its own to the backend's record).
pub async fn jarfleet(backend: SocketAddr) -> Listener {
    let mut cfg = ListenerConfig::new("shop", "127.0.0.1:0".parse().expect("addr"), Mode::Http);
    cfg.slow_start = Duration::ZERO;
    cfg.outlier.stall = Duration::ZERO;
    let l = Listener::bind(cfg).await.expect("bind jarfleet's listener");
    l.update(Snapshot {
        backends: vec![Backend::new("recorder", backend)],
    });
    l
}
