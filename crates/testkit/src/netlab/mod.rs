//! A network lab: several "hosts" on one machine, each a Linux network namespace, for testing
//! what crosses a network (cluster mode: many daemons, one fleet on etcd).
//!
//! ```text
//!   root namespace: bridge jfbr<i>, 198.18.x.1/24 (etcd members listen here)
//!        |               |
//!     jf<i>v0         jf<i>v1         root ends of the veth pairs (cut() sets one down)
//!        |               |
//!   ns jf<i>h0:      ns jf<i>h1:
//!     eth0 .2          eth0 .3        lo up in each; a host's processes run here
//! ```
//!
//! Names and addresses come from the lab's index, claimed with a lock for the lab's life
//! (`index.rs`, `names.rs`), so parallel test processes never collide and a crashed run's
//! leftovers are cleared by the next lab that takes its index.
//!
//! Hosts reach the bridge address and each other, nothing else: they have no default route.
//! Every neighbour (ARP) entry is written up front and permanent, so a cut host stays *silent*
//! for as long as it is cut: its peers' packets vanish and their connects time out. With
//! learned entries, a peer whose entry for it had expired (or that never talked to it) would
//! instead get "no route to host" (`EHOSTUNREACH`) after a 3-second failed lookup: another
//! failure, and one that depends on who talked to whom last.
//!
//! Failures to inject:
//! - [`Host::cut`] / [`Host::heal`]: the host's link goes down (its veth's root end): no reset,
//!   no refusal, in either direction — a machine that vanished from the network, or a
//!   partition of that host from all others. Its processes run on.
//! - [`Host::kill_all`]: every process in the host's namespace SIGKILLed — a host killed
//!   outright. Its kernel stays on the network: a connect to a port nobody listens on any more
//!   is refused at once. `cut` and `kill_all` together: a machine powered off.
//! - Freezing a host's process (SIGSTOP) needs no help from here.
//! - A partition between *two* hosts that both still reach the rest would take drop rules (nft
//!   or iptables). Neither is installed on this machine's kind (nor are tc's classifiers in its
//!   kernel), so this lab has no `partition_from`: rather none than one that does something
//!   else under that name.

mod enter;
mod error;
mod index;
mod ip;
mod names;
mod teardown;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;

pub use error::Error;
pub use names::MAX_HOSTS;

use index::Claim;
use names::LabId;

/// A lab of hosts, torn down (processes killed, namespaces, veths and bridge deleted, index
/// released) when dropped.
#[derive(Debug)]
pub struct Lab {
    id: LabId,
    hosts: Vec<Host>,
    /// The index's lock; `None` once torn down.
    claim: Option<Claim>,
}

/// One host of a lab: a network namespace with one interface, `eth0`, on the lab's bridge.
#[derive(Debug)]
pub struct Host {
    name: String,
    netns: String,
    veth: String,
    ip: Ipv4Addr,
}

impl Lab {
    /// A bridge and `hosts` namespaces joined to it, under a free index. Needs root and `ip`
    /// (iproute2); the error says which is missing.
    pub fn new(hosts: usize) -> Result<Lab, Error> {
        if hosts > MAX_HOSTS {
            return Err(Error::TooManyHosts {
                asked: hosts,
                max: MAX_HOSTS,
            });
        }
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::NeedsRoot);
        }
        ip::require_ip()?;
        let claim = index::claim(std::path::Path::new(index::LOCK_DIR))?;
        let id = claim.id();
        let leftovers = teardown::remove_index(id);
        if !leftovers.is_empty() {
            return Err(Error::Teardown {
                index: id.index(),
                problems: leftovers,
            });
        }
        let lab = Lab {
            id,
            hosts: (0..hosts)
                .map(|n| Host {
                    name: format!("host{n}"),
                    netns: id.netns(n),
                    veth: id.veth(n),
                    ip: id.host_ip(n),
                })
                .collect(),
            claim: Some(claim),
        };
        // Half-built, it is torn down by its drop like a whole one.
        lab.build()?;
        Ok(lab)
    }

    /// The lab's index (`0..512`): its subnet is `198.(18 + index / 256).(index % 256).0/24`.
    pub fn index(&self) -> u16 {
        self.id.index()
    }

    /// The bridge's name in the root namespace.
    pub fn bridge(&self) -> String {
        self.id.bridge()
    }

    /// The bridge's address, reachable from every host and from the root namespace: where to
    /// listen for all hosts (an etcd cluster, say).
    pub fn bridge_ip(&self) -> Ipv4Addr {
        self.id.bridge_ip()
    }

    /// Host `i`; panics naming the lab's size when there is none.
    pub fn host(&self, i: usize) -> &Host {
        self.hosts
            .get(i)
            .unwrap_or_else(|| panic!("host {i} of a lab of {} hosts", self.hosts.len()))
    }

    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Tears the lab down now, saying what could not be removed (dropping it does the same
    /// and only prints the problems). Removing what is gone already is not a problem.
    pub fn close(mut self) -> Result<(), Error> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        let Some(claim) = self.claim.take() else {
            return Ok(());
        };
        let problems = teardown::remove_index(self.id);
        // Released even so: the next lab to take the index clears what is left.
        drop(claim);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Teardown {
                index: self.id.index(),
                problems,
            })
        }
    }

    /// The bridge, then per host its namespace, veth pair, addresses and neighbour entries.
    fn build(&self) -> Result<(), Error> {
        let id = self.id;
        let prefix = |ip: Ipv4Addr| format!("{ip}/24");
        let permanent = |ip: Ipv4Addr, mac: &str, dev: &str| {
            format!("neigh replace {ip} lladdr {mac} dev {dev} nud permanent")
        };
        let bridge = id.bridge();
        let mut root = vec![
            format!("link add {bridge} address {} type bridge", id.bridge_mac()),
            format!("addr add {} dev {bridge}", prefix(id.bridge_ip())),
            format!("link set {bridge} up"),
        ];
        for (n, host) in self.hosts.iter().enumerate() {
            root.extend([
                format!("netns add {}", host.netns),
                format!(
                    "link add {} type veth peer name eth0 address {} netns {}",
                    host.veth,
                    id.host_mac(n),
                    host.netns
                ),
                format!("link set {} master {bridge} up", host.veth),
                permanent(host.ip, &id.host_mac(n), &bridge),
            ]);
        }
        ip::batch(None, &root)?;
        for host in &self.hosts {
            let mut inside = vec![
                "link set lo up".to_owned(),
                format!("addr add {} dev eth0", prefix(host.ip)),
                "link set eth0 up".to_owned(),
                permanent(id.bridge_ip(), &id.bridge_mac(), "eth0"),
            ];
            for (m, peer) in self.hosts.iter().enumerate() {
                if peer.netns != host.netns {
                    inside.push(permanent(peer.ip, &id.host_mac(m), "eth0"));
                }
            }
            ip::batch(Some(&host.netns), &inside)?;
        }
        Ok(())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("netlab: {e}");
        }
    }
}

impl Host {
    /// `host0`, `host1`, …: the same in every lab, for node names and snapshots.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// The network namespace's name (`ip netns exec NAME …`, `/run/netns/NAME`).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// The root-namespace end of the host's veth pair, on the bridge.
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// `program` run inside the host (`ip netns exec NETNS program`; add its arguments):
    /// it, and whatever it starts — a daemon, its shims, their JVMs — are on this host.
    /// `ip` execs `program`, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"]).arg(&self.netns).arg(program);
        cmd
    }

    /// Runs `f` on a new thread that has joined the host's network namespace: the sockets it
    /// opens are this host's (a client or server inside the test process, no helper program).
    /// Close them before the lab goes; a panic in `f` is resumed here.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        enter::run_in(&self.netns, f)
    }

    /// The pids of the processes in the host's namespace.
    pub fn pids(&self) -> Result<Vec<i32>, Error> {
        ip::netns_pids(&self.netns)
    }

    /// Takes the host off the network, silently: its link goes down, packets to and from it
    /// vanish (no reset, no refusal; connects time out), its processes run on.
    pub fn cut(&self) -> Result<(), Error> {
        ip::ip(&["link", "set", "dev", &self.veth, "down"]).map(drop)
    }

    /// Puts a cut host back on the network (at once: the bridge runs no spanning tree).
    pub fn heal(&self) -> Result<(), Error> {
        ip::ip(&["link", "set", "dev", &self.veth, "up"]).map(drop)
    }

    /// SIGKILLs every process in the host's namespace, again until none is left (within 20 s):
    /// the host killed outright. The test's own children among them still need reaping
    /// (`Child::wait`).
    pub fn kill_all(&self) -> Result<(), Error> {
        teardown::kill_all(&self.netns)
    }
}
