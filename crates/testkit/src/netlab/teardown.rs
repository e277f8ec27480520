//! Removing everything of one lab index: its processes, namespaces, veth pairs and bridge.
//!
//! Used twice: by a lab going away, and by a lab taking an index, to clear what a crashed
//! earlier holder of the index left. Both hold the index's lock, so everything named after the
//! index is theirs to remove, and nothing else is touched: names are matched exactly
//! (`names::LabId::owns_*`). Removing what is already gone is not an error, so it can run any
//! number of times.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::Error;
use super::ip;
use super::names::LabId;

/// How long SIGKILLed processes may take to leave a namespace (they go in milliseconds; a
/// busy machine and a JVM with gigabytes to unmap, a few seconds).
pub const KILL_DEADLINE: Duration = Duration::from_secs(20);

/// SIGKILLs every process in `netns` (other than this one), again and again until none is
/// left: processes a dying one started, or reparented ones, are caught in the next round.
pub fn kill_all(netns: &str) -> Result<(), Error> {
    let started = Instant::now();
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    loop {
        let pids: Vec<i32> = ip::netns_pids(netns)?
            .into_iter()
            .filter(|pid| *pid != me)
            .collect();
        if pids.is_empty() {
            return Ok(());
        }
        if started.elapsed() > KILL_DEADLINE {
            return Err(Error::StillRunning {
                netns: netns.to_owned(),
                pids,
                waited: KILL_DEADLINE,
            });
        }
        for pid in pids {
            // Gone already (ESRCH) is what we want.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Removes every namespace and link of index `id`; the problems met, one line each, after
/// trying everything.
pub fn remove_index(id: LabId) -> Vec<String> {
    let mut problems = Vec::new();
    let netns = match ip::netns_names() {
        Ok(names) => names.into_iter().filter(|n| id.owns_netns(n)).collect(),
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    // Processes first: a namespace that still has one outlives `ip netns del`, and so would
    // its end of a veth pair.
    for name in &netns {
        if let Err(e) = kill_all(name) {
            problems.push(e.to_string());
        }
    }
    // The veth pairs are deleted by hand, at once: a deleted namespace goes a little later (the
    // kernel cleans up in the background), or not at all while a socket still holds it (a
    // test's `run_in` socket not yet closed), and its pair with it.
    let links = match ip::link_names() {
        Ok(names) => names.into_iter().filter(|n| id.owns_link(n)).collect(),
        Err(e) => {
            problems.push(e.to_string());
            Vec::new()
        }
    };
    let bridge = id.bridge();
    for link in links.iter().filter(|l| **l != bridge) {
        delete_link(link, &mut problems);
    }
    for name in &netns {
        if let Err(e) = ip::ip(&["netns", "del", name]) {
            // Gone meanwhile is fine.
            if ip::netns_names().is_ok_and(|names| names.contains(name)) {
                problems.push(e.to_string());
            }
        }
    }
    if links.contains(&bridge) {
        delete_link(&bridge, &mut problems);
    }
    problems
}

fn delete_link(name: &str, problems: &mut Vec<String>) {
    if let Err(e) = ip::ip(&["link", "del", "dev", name]) {
        // Deleting one end of a veth pair takes the other with it, and so does the end of a
        // namespace: gone meanwhile is fine.
        if ip::link_exists(name).unwrap_or(true) {
            problems.push(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netlab::index;
    use std::process::Command;

    #[test]
    fn a_crashed_labs_leftovers_go_and_nothing_else() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test needs root (it makes namespaces and links, as a crashed lab leaves them)"
        );
        let claim = index::claim(std::path::Path::new(index::LOCK_DIR)).expect("an index");
        let id = claim.id();
        let i = id.index();
        // What a lab of another size, killed before its drop, leaves: a bridge, namespaces
        // (one with a process in it), veth pairs; and a pair whose names are near but not ours.
        let (decoy, decoy_peer) = (format!("jf{i}x0"), format!("jf{i}y0"));
        ip::batch(
            None,
            &[
                format!("link add {} type bridge", id.bridge()),
                format!("netns add {}", id.netns(0)),
                format!("netns add {}", id.netns(7)),
                format!(
                    "link add {} type veth peer name eth0 netns {}",
                    id.veth(0),
                    id.netns(0)
                ),
                format!(
                    "link add {} type veth peer name eth0 netns {}",
                    id.veth(7),
                    id.netns(7)
                ),
                format!("link set {} master {}", id.veth(7), id.bridge()),
                format!("link add {decoy} type veth peer name {decoy_peer}"),
            ],
        )
        .expect("leftovers made");
        let sleeper = Command::new("ip")
            .args(["netns", "exec", &id.netns(7), "sleep", "600"])
            .spawn()
            .expect("a process in a leftover namespace");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while ip::netns_pids(&id.netns(7)).expect("pids").is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the sleeper never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }

        let problems = remove_index(id);
        let links = ip::link_names().expect("links");
        let netns = ip::netns_names().expect("namespaces");
        let decoy_survived = links.contains(&decoy) && links.contains(&decoy_peer);
        let _ = ip::ip(&["link", "del", "dev", &decoy]);
        assert_eq!(problems, Vec::<String>::new());
        assert!(decoy_survived, "a link not of the index was removed");
        for name in [id.bridge(), id.veth(0), id.veth(7)] {
            assert!(!links.contains(&name), "{name} is left");
        }
        for name in [id.netns(0), id.netns(7)] {
            assert!(!netns.contains(&name), "{name} is left");
        }
        let status =
            crate::wait_with_deadline(sleeper, "the sleeper", Duration::from_secs(20)).status;
        assert!(!status.success(), "the sleeper was killed: {status:?}");
        assert_eq!(
            remove_index(id),
            Vec::<String>::new(),
            "a second run finds nothing"
        );
    }
}
