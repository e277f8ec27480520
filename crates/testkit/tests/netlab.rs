//! The network lab and the etcd cluster helper, for real: namespaces, veths and a bridge made
//! and removed, real servers (Python's `http.server`, etcd) inside and outside the hosts, and
//! the failures the lab injects observed from the other side.
//!
//! Needs root and iproute2 (`ip`), `python3` and `etcd`; each test fails saying which is
//! missing. Every wait polls with a deadline.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jarfleet_testkit::etcd_cluster::EtcdCluster;
use jarfleet_testkit::netlab::{Host, Lab};
use jarfleet_testkit::{free_port, http, run_with_deadline, try_wait_with_deadline};

/// How long a server may take to start listening, a peer to answer.
const DEADLINE: Duration = Duration::from_secs(20);
/// The connect timeout of a client that expects silence: longer than the 3 s after which a
/// failed neighbour (ARP) lookup would turn silence into "no route to host".
const SILENCE: Duration = Duration::from_secs(4);

fn lab(hosts: usize) -> Lab {
    Lab::new(hosts).unwrap_or_else(|e| panic!("cannot build the network lab: {e}"))
}

/// A real HTTP server (`python3 -m http.server`) inside a host, killed when dropped.
struct Server {
    addr: SocketAddr,
    child: Option<Child>,
}

impl Server {
    fn start(host: &Host) -> Server {
        let port = free_port();
        let spawned = host
            .command("python3")
            .args(["-m", "http.server", "--bind"])
            .arg(host.ip().to_string())
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start `ip netns exec … python3 -m http.server` ({e}): \
                 these tests need iproute2 and python3"
            ),
        };
        let mut server = Server {
            addr: SocketAddr::from((host.ip(), port)),
            child: Some(child),
        };
        wait_until(&format!("the server on {} listens", server.addr), || {
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "`ip netns exec {} python3 -m http.server` exited ({status}): \
                     these tests need python3",
                    host.netns()
                );
            }
            TcpStream::connect_timeout(&server.addr, Duration::from_secs(1)).is_ok()
        });
        server
    }

    fn pid(&self) -> i32 {
        let child = self.child.as_ref().expect("the server runs");
        i32::try_from(child.id()).expect("a pid fits i32")
    }

    /// The child, reaped; it must have died by SIGKILL.
    fn reap_killed(&mut self) {
        let child = self.child.take().expect("the server was started");
        let out = try_wait_with_deadline(child, "the http.server", DEADLINE)
            .unwrap_or_else(|e| panic!("{e}"));
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{:?}", out.status);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `condition` every 20 ms; panics naming `what` after [`DEADLINE`].
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET /` from the current namespace: the status.
fn get(addr: SocketAddr) -> std::io::Result<u16> {
    http::get(addr, "/", Duration::from_secs(5)).map(|r| r.status)
}

/// A connect from `host` (or the root namespace for `None`) to `addr` within `timeout`: the
/// error (or none) and how long it took.
fn connect_from(
    host: Option<&Host>,
    addr: SocketAddr,
    timeout: Duration,
) -> (Result<SocketAddr, ErrorKind>, Duration) {
    let attempt = move || {
        let started = Instant::now();
        let result = TcpStream::connect_timeout(&addr, timeout)
            .and_then(|s| s.local_addr())
            .map_err(|e| e.kind());
        (result, started.elapsed())
    };
    match host {
        Some(host) => host.run_in(attempt).expect("joining the host's namespace"),
        None => attempt(),
    }
}

/// `ip ARGS`' stdout (within a deadline, like every command a test runs).
fn ip(args: &[&str]) -> String {
    let out = run_with_deadline(Command::new("ip").args(args), DEADLINE)
        .unwrap_or_else(|e| panic!("ip {args:?}: {e}"));
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn netns_names() -> Vec<String> {
    ip(&["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

fn link_names() -> Vec<String> {
    ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap_or(n).to_owned())
        .collect()
}

/// The names in the root namespace's listings that a lab made: its bridge, its namespaces and
/// the root ends of its veths.
fn names_of(lab: &Lab) -> Vec<String> {
    let mut names = vec![lab.bridge()];
    for host in lab.hosts() {
        names.push(host.netns().to_owned());
        names.push(host.veth().to_owned());
    }
    names
}

fn present(names: &[String]) -> Vec<String> {
    let (netns, links) = (netns_names(), link_names());
    names
        .iter()
        .filter(|n| netns.contains(n) || links.contains(n))
        .cloned()
        .collect()
}

#[test]
fn a_server_on_one_host_answers_another_host_and_the_root_namespace() {
    let lab = lab(2);
    let (h0, h1) = (lab.host(0), lab.host(1));
    assert_eq!(lab.bridge_ip().octets()[3], 1);
    assert_eq!(h0.ip().octets()[3], 2);
    assert_eq!(h1.ip().octets()[3], 3);
    assert_eq!((h0.name(), h1.name()), ("host0", "host1"));

    let server = Server::start(h0);
    let from_h1 = h1
        .run_in(|| {
            let local = TcpStream::connect(server.addr)
                .and_then(|s| s.local_addr())
                .expect("host1 connects to host0");
            (local, get(server.addr).expect("GET from host1"))
        })
        .expect("joining host1");
    assert_eq!(
        from_h1,
        (SocketAddr::from((h1.ip(), from_h1.0.port())), 200)
    );
    assert_eq!(get(server.addr).expect("GET from the root namespace"), 200);

    // The server runs inside host0 (`ip` exec'd it: the pid is the server's), host1 has none.
    assert_eq!(h0.pids().expect("host0's pids"), [server.pid()]);
    assert!(h1.pids().expect("host1's pids").is_empty());
}

#[test]
fn a_cut_host_is_silent_both_ways_until_healed() {
    let lab = lab(2);
    let (h0, h1) = (lab.host(0), lab.host(1));
    let server = Server::start(h0);
    // A listener in the root namespace, on the bridge, for host0's own outgoing connects.
    let outside = TcpListener::bind((lab.bridge_ip(), 0)).expect("a listener on the bridge");
    let outside = outside.local_addr().expect("its address");
    assert!(connect_from(Some(h1), server.addr, SILENCE).0.is_ok());
    assert!(connect_from(Some(h0), outside, SILENCE).0.is_ok());

    h0.cut().expect("cut host0");
    let (from_h1, from_root, from_h0) = std::thread::scope(|s| {
        let from_h1 = s.spawn(|| connect_from(Some(h1), server.addr, SILENCE));
        let from_root = s.spawn(|| connect_from(None, server.addr, SILENCE));
        let from_h0 = s.spawn(|| connect_from(Some(h0), outside, SILENCE));
        let join = |t: std::thread::ScopedJoinHandle<'_, _>| t.join().expect("a client thread");
        (join(from_h1), join(from_root), join(from_h0))
    });
    for (who, (result, took)) in [
        ("host1 → host0", from_h1),
        ("root → host0", from_root),
        ("host0 → bridge", from_h0),
    ] {
        eprintln!("cut: {who}: {result:?} after {took:?}");
        assert_eq!(
            result,
            Err(ErrorKind::TimedOut),
            "{who}: silence, no reset or refusal"
        );
        assert!(took >= SILENCE, "{who}: gave up after {took:?}");
    }

    let healed = Instant::now();
    h0.heal().expect("heal host0");
    let (result, took) = connect_from(Some(h1), server.addr, SILENCE);
    eprintln!(
        "heal: host1 → host0: {result:?} after {took:?} ({:?} since heal)",
        healed.elapsed()
    );
    assert!(result.is_ok(), "healed at once: {result:?}");
    assert!(connect_from(Some(h0), outside, SILENCE).0.is_ok());
    assert_eq!(get(server.addr).expect("GET after heal"), 200);
}

#[test]
fn kill_all_leaves_no_process_in_the_host_and_spares_the_rest() {
    let lab = lab(2);
    let (h0, h1) = (lab.host(0), lab.host(1));
    let mut server = Server::start(h0);
    // A grandchild reparented away from the test (its shell exits) and a shell that waits.
    let family = h0
        .command("sh")
        .args(["-c", "(sleep 600 &); sleep 600 & wait"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sh in host0");
    let neighbour = Server::start(h1);
    let mut outsider = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("sleep in the root namespace");
    wait_until("host0 runs the server, the shell and two sleeps", || {
        h0.pids().expect("host0's pids").len() >= 4
    });

    let started = Instant::now();
    h0.kill_all().expect("kill everything in host0");
    eprintln!("kill_all took {:?}", started.elapsed());
    assert_eq!(h0.pids().expect("host0's pids"), Vec::<i32>::new());
    server.reap_killed();
    let status = try_wait_with_deadline(family, "sh", DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"))
        .status;
    assert!(!status.success(), "{status:?}");
    let spared = outsider.try_wait().expect("the outsider");
    let _ = outsider.kill();
    let _ = outsider.wait();
    assert_eq!(spared, None, "the root namespace is spared");
    assert_eq!(h1.pids().expect("host1's pids").len(), 1, "host1 is spared");
    assert_eq!(get(neighbour.addr).expect("host1's server"), 200);

    // The host's kernel stays on the network: a connect is refused at once.
    let (result, _) = connect_from(Some(h1), server.addr, SILENCE);
    assert_eq!(result, Err(ErrorKind::ConnectionRefused));
}

#[test]
fn dropping_a_lab_leaves_nothing_of_it() {
    let first = lab(3);
    let names = names_of(&first);
    assert_eq!(present(&names), names, "the lab's names exist");
    let sleeper = first
        .host(1)
        .command("sleep")
        .arg("600")
        .spawn()
        .expect("sleep in host1");
    // A socket that keeps host2's namespace alive past its deletion: its veth must go anyway.
    let held = first
        .host(2)
        .run_in(|| TcpListener::bind("0.0.0.0:0").expect("a listener in host2"))
        .expect("joining host2");
    drop(first);
    assert_eq!(
        present(&names),
        Vec::<String>::new(),
        "left over after drop"
    );
    let status = try_wait_with_deadline(sleeper, "the sleeper", DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"))
        .status;
    assert!(!status.success(), "{status:?}");
    drop(held);

    let second = lab(1);
    let names = names_of(&second);
    second.close().expect("close tears down cleanly");
    assert_eq!(
        present(&names),
        Vec::<String>::new(),
        "left over after close"
    );
}

#[test]
fn two_labs_at_once_get_their_own_names_and_do_not_interfere() {
    let (a, b) = (lab(1), lab(1));
    assert_ne!(a.index(), b.index());
    assert_ne!(a.bridge_ip(), b.bridge_ip());
    let (a0, b0) = (a.host(0), b.host(0));
    assert_ne!(a0.netns(), b0.netns());
    let (sa, sb) = (Server::start(a0), Server::start(b0));

    // Separate networks: no route from one lab's host to the other's.
    let (result, took) = connect_from(Some(a0), sb.addr, SILENCE);
    assert_eq!(result, Err(ErrorKind::NetworkUnreachable), "after {took:?}");

    a0.cut().expect("cut lab a's host");
    assert_eq!(get(sb.addr).expect("lab b's server while a's is cut"), 200);
    a0.kill_all().expect("kill lab a's host");
    assert_eq!(b0.pids().expect("lab b's pids").len(), 1);
    let b_names = names_of(&b);
    drop(sa);
    drop(a);
    assert_eq!(
        present(&b_names),
        b_names,
        "lab b is whole after lab a went"
    );
    assert_eq!(get(sb.addr).expect("lab b's server after a went"), 200);
}

/// Base64 of the keys and values the etcd tests write (the gateway wants base64).
const KEY: &str = "bmV0bGFi"; // "netlab"
const FROM_HOST0: &str = "ZnJvbSBob3N0MA=="; // "from host0"
const FROM_HOST1: &str = "ZnJvbSBob3N0MQ=="; // "from host1"

fn put(member: SocketAddr, value: &str) -> Result<http::Response, std::io::Error> {
    http::post(
        member,
        "/v3/kv/put",
        &format!(r#"{{"key":"{KEY}","value":"{value}"}}"#),
        Duration::from_secs(5),
    )
}

fn value_at(member: SocketAddr) -> String {
    let answer = http::post(
        member,
        "/v3/kv/range",
        &format!(r#"{{"key":"{KEY}"}}"#),
        Duration::from_secs(5),
    )
    .unwrap_or_else(|e| panic!("range at {member}: {e}"));
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

#[test]
fn an_etcd_cluster_on_the_bridge_serves_the_hosts_and_outlives_its_leader() {
    let lab = lab(2);
    let started = Instant::now();
    let mut cluster = EtcdCluster::start(3, lab.bridge_ip())
        .unwrap_or_else(|e| panic!("the etcd cluster did not start: {e}"));
    eprintln!("3 members healthy after {:?}", started.elapsed());
    let addrs = cluster.client_addrs();
    assert_eq!(addrs.len(), 3);
    assert!(addrs.iter().all(|a| a.ip() == lab.bridge_ip()));
    assert_eq!(
        cluster.client_urls()[0],
        format!("http://{}:{}", lab.bridge_ip(), addrs[0].port())
    );

    // A client on host0 writes through one member; host1 reads it from another.
    let written = lab
        .host(0)
        .run_in(|| put(addrs[0], FROM_HOST0))
        .expect("joining host0")
        .expect("put from host0");
    assert_eq!(written.status, 200, "{}", written.body);
    let read = lab
        .host(1)
        .run_in(|| value_at(addrs[2]))
        .expect("joining host1");
    assert!(read.contains(FROM_HOST0), "{read}");

    let leader = cluster
        .wait_leader(DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"));
    let killed = Instant::now();
    cluster.kill(leader);
    assert_eq!(cluster.pid(leader), None);
    let next = cluster
        .wait_leader(DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "leader {leader} killed: member {next} leads after {:?}",
        killed.elapsed()
    );
    assert_ne!(next, leader);
    let survivor = addrs[(leader + 1) % 3];
    let written = lab
        .host(1)
        .run_in(|| put(survivor, FROM_HOST1))
        .expect("joining host1")
        .expect("put from host1 with one member down");
    assert_eq!(written.status, 200, "{}", written.body);
    cluster
        .wait_healthy(DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"));

    let restarted = Instant::now();
    cluster.restart(leader).unwrap_or_else(|e| panic!("{e}"));
    eprintln!("member {leader} back after {:?}", restarted.elapsed());
    assert_eq!(cluster.client_addrs()[leader], addrs[leader], "same ports");
    // Back with its data dir: it catches up on what was written without it.
    wait_until("the restarted member has the write it missed", || {
        value_at(addrs[leader]).contains(FROM_HOST1)
    });
    cluster
        .wait_healthy(DEADLINE)
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn an_etcd_member_on_loopback_keeps_its_data_across_a_restart() {
    let mut cluster = EtcdCluster::start(1, Ipv4Addr::LOCALHOST)
        .unwrap_or_else(|e| panic!("etcd did not start: {e}"));
    let member = cluster.client_addrs()[0];
    assert_eq!(
        cluster
            .wait_leader(DEADLINE)
            .unwrap_or_else(|e| panic!("{e}")),
        0
    );
    let written = put(member, FROM_HOST0).expect("put");
    assert_eq!(written.status, 200, "{}", written.body);
    let pid = cluster.pid(0).expect("running");
    cluster.kill(0);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() != "etcd"),
        "etcd {pid} is gone"
    );
    assert!(http::get(member, "/health", Duration::from_secs(1)).is_err());
    cluster.restart(0).unwrap_or_else(|e| panic!("{e}"));
    assert!(value_at(member).contains(FROM_HOST0));
    assert!(cluster.dir().join("member0.log").is_file());
}
