//! The checked port allocator.
//!
//! Binding `127.0.0.1:0`, reading the port and letting go races: the port is in the kernel's
//! ephemeral range, so any process's next outgoing connection or port-0 bind may take it before
//! the process the test handed it to binds it. Ports from here instead
//! - lie below the ephemeral range (`/proc/sys/net/ipv4/ip_local_port_range`), where the
//!   kernel never picks on its own;
//! - are checked free by binding each on `0.0.0.0` and `127.0.0.1`;
//! - are claimed for the life of the test process by an exclusive `flock` on
//!   `$TMPDIR/jarfleet-test-ports/PORT`, so concurrent test processes (nextest runs each test
//!   in its own) never get the same port, and no port is handed out twice in one process.

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use nix::fcntl::{Flock, FlockArg};

/// Where the pool starts: above the well-known and registered ports most services use.
const POOL_START: u16 = 10_000;
/// How many runs are tried before giving up.
const ATTEMPTS: u32 = 500;

/// The claims this process holds (kept until it exits).
static CLAIMS: Mutex<Vec<Flock<File>>> = Mutex::new(Vec::new());

/// `n` consecutive free ports `(first, last)`, checked and claimed (see the module docs).
/// Panics, saying why, when no run is free.
pub fn free_ports(n: u16) -> (u16, u16) {
    assert!(n > 0, "free_ports(0): ask for at least one port");
    let end = pool_end();
    assert!(
        end > POOL_START + n,
        "no room for {n} ports between {POOL_START} and the ephemeral range (starting at {end}); \
         raise its start in /proc/sys/net/ipv4/ip_local_port_range"
    );
    let span = u64::from(end - POOL_START - n);
    let dir = claim_dir();
    let mut seed = entropy();
    for _ in 0..ATTEMPTS {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let base = POOL_START + ((seed >> 33) % span) as u16;
        let last = base + n - 1;
        if let Some(claims) = claim_run(&dir, base, last) {
            CLAIMS
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(claims);
            return (base, last);
        }
    }
    panic!("no run of {n} free ports found below {end} after {ATTEMPTS} tries");
}

/// One free port, checked and claimed like [`free_ports`].
pub fn free_port() -> u16 {
    free_ports(1).0
}

/// Claims every port of `base..=last` and checks it is free; `None` (releasing what was
/// claimed) when one is taken.
fn claim_run(dir: &std::path::Path, base: u16, last: u16) -> Option<Vec<Flock<File>>> {
    let mut claims = Vec::new();
    for port in base..=last {
        let file = File::create(dir.join(port.to_string())).ok()?;
        // Held by another test process, or already by this one: not ours to use.
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
        let free = TcpListener::bind(("0.0.0.0", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok();
        if !free {
            return None;
        }
        claims.push(lock);
    }
    Some(claims)
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn pool_end() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

fn claim_dir() -> PathBuf {
    let dir = std::env::temp_dir().join("jarfleet-test-ports");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!(
            "cannot create the port-claim dir {}: {e}; make the temp dir writable or set TMPDIR",
            dir.display()
        );
    }
    dir
}

/// A seed that differs between processes and calls.
fn entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_free_below_the_ephemeral_range_and_never_handed_out_twice() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let (first, last) = free_ports(3);
            assert_eq!(last - first, 2);
            assert!(first >= POOL_START && last < pool_end());
            for p in first..=last {
                assert!(seen.insert(p), "port {p} handed out twice");
                assert!(
                    TcpListener::bind(("127.0.0.1", p)).is_ok(),
                    "port {p} is free"
                );
            }
        }
    }

    #[test]
    fn a_port_someone_listens_on_or_another_process_claimed_is_refused() {
        let dir = claim_dir();
        let held = TcpListener::bind("127.0.0.1:0").expect("a foreign listener");
        let port = held.local_addr().expect("its address").port();
        assert!(
            claim_run(&dir, port, port).is_none(),
            "a listened-on port is refused"
        );
        drop(held);
        let claim = claim_run(&dir, port, port).expect("the released port is claimed");
        assert!(
            claim_run(&dir, port, port).is_none(),
            "a claimed port is refused"
        );
        drop(claim);
        assert!(
            claim_run(&dir, port, port).is_some(),
            "a released claim is free again"
        );
    }
}
