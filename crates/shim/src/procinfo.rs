//! Reads /proc: process liveness, children, CPU and memory.

/// Fields of `/proc/PID/stat` after the command name.
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = text.rfind(')').map(|i| &text[i + 2..])?;
    Some(after.split_whitespace().map(str::to_string).collect())
}

/// Parent pid of `pid`.
pub fn parent_of(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// Direct children of `parent` (by scanning /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// utime + stime in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub const CLOCK_TICKS_PER_SEC: u64 = 100;

/// One process as `/proc/PID/stat` tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcEntry {
    pub pid: u32,
    pub ppid: u32,
    pub pgrp: u32,
    /// utime + stime in clock ticks.
    pub ticks: u64,
    /// Resident memory in bytes when known ahead (a simulated host's); `None`: read from
    /// `/proc/PID/status` (`VmRSS`) when asked. `stat`'s own `rss` field is the kernel's
    /// approximate per-CPU count and can be pages off, so it is not used.
    pub rss_bytes: Option<u64>,
}

/// Every process of the host, read once: what an instance is made of. A JVM may not be alone:
/// a launcher (Jetty's `--exec`, a wrapper script's `java`) forks the real JVM, and an app may
/// start helpers; they stay in the instance's process group (the shim gives the JVM its own)
/// or below it, and they are the instance as much as its first process is.
#[derive(Debug, Clone, Default)]
pub struct ProcTable {
    entries: Vec<ProcEntry>,
}

impl ProcTable {
    /// Reads `/proc/*/stat`. Processes that go away while it reads are left out.
    pub fn scan() -> ProcTable {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return ProcTable::default();
        };

        let entries = dir
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| {
                let f = stat_fields(pid)?;
                Some(ProcEntry {
                    pid,
                    ppid: f.get(1)?.parse().ok()?,
                    pgrp: f.get(2)?.parse().ok()?,
                    ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
                    rss_bytes: None,
                })
            })
            .collect();
        ProcTable { entries }
    }

    pub fn from_entries(entries: Vec<ProcEntry>) -> ProcTable {
        ProcTable { entries }
    }

    /// The processes of the instance whose first process is `root`: `root`, every process of
    /// its process group, and the descendants of all of them; sorted. Empty when `root` is
    /// gone. Pure.
    pub fn members(&self, root: u32) -> Vec<u32> {
        if !self.entries.iter().any(|e| e.pid == root) {
            return Vec::new();
        }
        let mut members: std::collections::BTreeSet<u32> = self
            .entries
            .iter()
            .filter(|e| e.pid == root || e.pgrp == root)
            .map(|e| e.pid)
            .collect();
        // Descendants: grow until nothing is added (each pass adds a generation).
        loop {
            let before = members.len();
            for e in &self.entries {
                if members.contains(&e.ppid) {
                    members.insert(e.pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        members.into_iter().collect()
    }

    /// CPU time of the whole instance (see [`ProcTable::members`]), in clock ticks.
    pub fn cpu_ticks(&self, root: u32) -> Option<u64> {
        let members = self.members(root);
        if members.is_empty() {
            return None;
        }
        Some(
            self.entries
                .iter()
                .filter(|e| members.binary_search(&e.pid).is_ok())
                .map(|e| e.ticks)
                .sum(),
        )
    }

    /// Resident memory of the whole instance: the sum over its processes (pages they share
    /// are counted once per process, as `ps` would). A member gone since the scan counts
    /// nothing; the root's own figure is required.
    pub fn rss_bytes(&self, root: u32) -> Option<u64> {
        let members = self.members(root);
        if members.is_empty() {
            return None;
        }
        let of = |pid: u32| {
            self.entries
                .iter()
                .find(|e| e.pid == pid)
                .and_then(|e| e.rss_bytes)
                .or_else(|| rss_bytes(pid))
        };
        let root_rss = of(root)?;
        Some(
            root_rss
                + members
                    .iter()
                    .filter(|p| **p != root)
                    .filter_map(|p| of(*p))
                    .sum::<u64>(),
        )
    }
}

/// The command line of `pid`, argument by argument.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// Open file descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn open_fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(dir.count() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_its_process_group_and_everything_below() {
        let e = |pid, ppid, pgrp| ProcEntry {
            pid,
            ppid,
            pgrp,
            ticks: u64::from(pid),
            rss_bytes: Some(u64::from(pid) << 20),
        };
        // 100: a shim; 200: the JVM it started (own group 200); 201: a JVM that 200 forked
        // (Jetty --exec); 202: a helper of 201 in a group of its own (setsid); 203: its child;
        // 300: another instance; 1: init; 400: a process that joined group 200 from elsewhere.
        let table = ProcTable::from_entries(vec![
            e(1, 0, 1),
            e(100, 1, 100),
            e(200, 100, 200),
            e(201, 200, 200),
            e(202, 201, 202),
            e(203, 202, 202),
            e(300, 100, 300),
            e(400, 1, 200),
        ]);
        let cases: [(u32, &[u32]); 4] = [
            (200, &[200, 201, 202, 203, 400]),
            (300, &[300]),
            (201, &[201, 202, 203]),
            (999, &[]),
        ];
        for (root, want) in cases {
            assert_eq!(table.members(root), want, "root {root}");
        }
        assert_eq!(table.cpu_ticks(200), Some(200 + 201 + 202 + 203 + 400));
        assert_eq!(table.cpu_ticks(999), None);
        assert_eq!(
            table.rss_bytes(200),
            Some((200 + 201 + 202 + 203 + 400) << 20)
        );
        assert_eq!(table.rss_bytes(999), None);
    }

    /// A scanned table's resident memory of this process is the figure `/proc/PID/status`
    /// shows as `VmRSS` (read a moment apart, so within a margin), in bytes.
    #[test]
    fn the_scanned_memory_of_this_process_is_its_vmrss() {
        let keep = vec![1u8; 64 << 20];
        let me = std::process::id();
        let scanned = ProcTable::scan()
            .rss_bytes(me)
            .expect("this process is scanned");
        let status = rss_bytes(me).expect("VmRSS of this process");
        assert!(keep.iter().all(|b| *b == 1));
        let (lo, hi) = (status.min(scanned), status.max(scanned));
        assert!(
            lo >= 64 << 20 && hi - lo < hi / 5,
            "the table says {scanned} bytes, VmRSS {status}"
        );
    }

    #[test]
    fn this_process_and_its_child_are_one_instance() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("running sleep (coreutils)");
        let me = std::process::id();
        let table = ProcTable::scan();
        let members = table.members(me);
        let _ = child.kill();
        let _ = child.wait();
        assert!(members.contains(&me), "{members:?}");
        assert!(members.contains(&child.id()), "{members:?}");
    }
}

/// Established TCP connections to local `port` from addresses that are not loopback (in this
/// network namespace): what other hosts still have open to an instance, read from
/// `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn established_from_elsewhere(port: u16) -> std::io::Result<usize> {
    let mut n = 0;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        match std::fs::read_to_string(file) {
            Ok(text) => n += count_established(&text, port, v6),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The lines of a `/proc/net/tcp{,6}` table in state ESTABLISHED (`01`) with local `port`
/// and a remote address outside 127.0.0.0/8 and ::1 (an IPv4-mapped loopback included).
fn count_established(table: &str, port: u16, v6: bool) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state)) = (f.get(1), f.get(2), f.get(3)) else {
                return false;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            *state == "01" && local_port == Some(port) && !is_loopback(remote, v6)
        })
        .count()
}

/// Whether a `/proc/net/tcp` address (`0100007F:1F90`, or 32 hex digits for IPv6, each 32-bit
/// word in host order) is a loopback address.
fn is_loopback(addr: &str, v6: bool) -> bool {
    let Some((ip, _)) = addr.split_once(':') else {
        return false;
    };
    // Each 32-bit word is printed as a number in host (little-endian) order.
    let word = |i: usize| {
        ip.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
    };
    if !v6 {
        // Stored as the address's bytes in host (little-endian) order: 0100007F = 127.0.0.1.
        return u32::from_str_radix(ip, 16)
            .map(|v| v.to_le_bytes()[0] == 127)
            .unwrap_or(false);
    }
    let words: Option<Vec<u32>> = (0..4).map(word).collect();
    let Some(w) = words else { return false };
    let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_le_bytes()).collect();
    let ip = std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes.as_slice()).unwrap_or([0; 16]));
    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
}

#[cfg(test)]
mod established_tests {
    use super::*;

    #[test]
    fn established_connections_from_other_hosts_are_counted_and_loopback_is_not() {
        // Local port 0x1F90 = 8080. Rows: from 10.0.0.2 (established), from 127.0.0.1
        // (established), from 10.0.0.3 in TIME_WAIT (06), another port.
        let v4 = "  sl  local_address rem_address   st\n\
   0: 0B00000A:1F90 0200000A:D431 01 0\n\
   1: 0100007F:1F90 0100007F:D432 01 0\n\
   2: 0B00000A:1F90 0300000A:D433 06 0\n\
   3: 0B00000A:1F91 0200000A:D434 01 0\n";
        assert_eq!(count_established(v4, 8080, false), 1);
        // ::1, ::ffff:127.0.0.1 and ::ffff:10.0.0.2.
        let v6 = "  sl  local_address rem_address st\n\
   0: 00000000000000000000000000000000:1F90 00000000000000000000000001000000:D431 01 0\n\
   1: 00000000000000000000000000000000:1F90 0000000000000000FFFF00000100007F:D432 01 0\n\
   2: 00000000000000000000000000000000:1F90 0000000000000000FFFF00000200000A:D433 01 0\n";
        assert_eq!(count_established(v6, 8080, true), 1);
    }
}
