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
