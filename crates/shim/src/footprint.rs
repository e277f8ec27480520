//! Handing back memory that was needed only to get going.
//!
//! One binary is the CLI, the daemon, the proxy and the shim, so its code is large, and the
//! kernel maps code in 64 KiB windows around every page touched ("fault-around"). After start-up
//! (parsing the spec, opening the store, spawning JVMs) a daemon keeps several MiB of code mapped
//! that its idle loop never runs again; a shim keeps ~2.7 MiB mapped for a loop that only waits.
//! [`trim`] unmaps the clean, read-only pages of our own executable (they stay in the page cache,
//! and a page used again is mapped back by a minor fault) and returns free heap pages to the
//! kernel. What is resident afterwards is what is really in use.
//!
//! Only mappings that hold nothing but the file's bytes are touched: our executable, not
//! writable, with no anonymous (copy-on-write) page. Everything else is left alone.

// madvise(2) and malloc_trim(3) have no safe wrapper; each call says why it is sound.
#![allow(unsafe_code)]

use std::time::Duration;

/// How long the daemon waits after its last piece of work before it trims.
pub const QUIET: Duration = Duration::from_secs(10);

/// One mapping of `/proc/self/smaps` that may be unmapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub start: usize,
    pub len: usize,
    /// Resident KiB before the trim.
    pub rss_kib: u64,
}

/// What one trim handed back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Trimmed {
    /// Resident KiB of code and read-only data unmapped.
    pub code_kib: u64,
    /// Whether the allocator returned any heap memory.
    pub heap: bool,
}

/// Unmaps the clean read-only mappings of this process's executable and trims the heap.
/// Best effort: anything it cannot read or do is skipped.
pub fn trim() -> Trimmed {
    let mut out = Trimmed::default();
    if let (Ok(exe), Ok(smaps)) = (
        std::fs::read_link("/proc/self/exe"),
        std::fs::read_to_string("/proc/self/smaps"),
    ) {
        for r in droppable(&smaps, &exe.to_string_lossy()) {
            // SAFETY: `r` is a whole mapping of our executable with no write permission and no
            // private page (checked on the same smaps read): its contents are exactly the file's,
            // so MADV_DONTNEED only drops page table entries, and the next access maps the same
            // bytes back from the page cache. Nothing can write to it in between (read-only).
            let rc =
                unsafe { libc::madvise(r.start as *mut libc::c_void, r.len, libc::MADV_DONTNEED) };
            if rc == 0 {
                out.code_kib += r.rss_kib;
            }
        }
    }
    out.heap = trim_heap();
    out
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() -> bool {
    // SAFETY: malloc_trim only returns free memory of glibc's allocator to the kernel.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() -> bool {
    false
}

/// The mappings of `exe` in an smaps text that hold nothing but the file's bytes: not writable,
/// private, no anonymous (copy-on-write) or swapped page, something resident.
pub fn droppable(smaps: &str, exe: &str) -> Vec<Range> {
    let mut out = Vec::new();
    let mut current: Option<(Range, bool)> = None; // (range, still eligible)
    let finish = |cur: Option<(Range, bool)>, out: &mut Vec<Range>| {
        if let Some((r, true)) = cur
            && r.rss_kib > 0
        {
            out.push(r);
        }
    };
    for line in smaps.lines() {
        if let Some(header) = mapping_header(line) {
            finish(current.take(), &mut out);
            let (start, end, perms, path) = header;
            let eligible =
                path == exe && perms.as_bytes().get(1) == Some(&b'-') && perms.ends_with('p');
            current = Some((
                Range {
                    start,
                    len: end.saturating_sub(start),
                    rss_kib: 0,
                },
                eligible,
            ));
            continue;
        }
        let Some((range, eligible)) = current.as_mut() else {
            continue;
        };
        let Some((key, kib)) = field_kib(line) else {
            continue;
        };
        match key {
            "Rss" => range.rss_kib = kib,
            // A copy-on-write page (Anonymous, or swapped out) holds bytes the file does not;
            // dirty page-cache pages (a freshly written binary) are still the file's.
            "Anonymous" | "Swap" if kib > 0 => *eligible = false,
            _ => {}
        }
    }
    finish(current.take(), &mut out);
    out
}

/// `start-end perms offset dev inode [path]` → (start, end, perms, path).
fn mapping_header(line: &str) -> Option<(usize, usize, &str, &str)> {
    let mut parts = line.splitn(6, ' ');
    let range = parts.next()?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let perms = parts.next()?;
    if perms.len() != 4 {
        return None;
    }
    let _offset = parts.next()?;
    let _dev = parts.next()?;
    let _inode = parts.next()?;
    let path = parts.next().unwrap_or("").trim_start();
    Some((start, end, perms, path))
}

/// `Key:   123 kB` → (Key, 123).
fn field_kib(line: &str) -> Option<(&str, u64)> {
    let (key, rest) = line.split_once(':')?;
    let value = rest.trim().strip_suffix("kB")?.trim();
    Some((key, value.parse().ok()?))
}

/// When the daemon should trim: once, [`QUIET`] after the last piece of work, and again only
/// after more work. Pure: the control loop feeds it times.
#[derive(Debug, Default)]
pub struct Trimmer {
    last_work_ms: Option<u64>,
    trimmed_after_ms: Option<u64>,
}

impl Trimmer {
    /// Something was done that may have mapped more code (a command, a spawn, a deployment).
    pub fn worked(&mut self, now_ms: u64) {
        self.last_work_ms = Some(now_ms);
    }

    /// When the next trim is due, if one is.
    pub fn due_at(&self) -> Option<u64> {
        let last = self.last_work_ms?;
        if self.trimmed_after_ms.is_some_and(|t| t >= last) {
            return None;
        }
        Some(last + QUIET.as_millis() as u64)
    }

    /// Whether a trim should run now; if so, it counts as done.
    pub fn take_due(&mut self, now_ms: u64) -> bool {
        match self.due_at() {
            Some(at) if at <= now_ms => {
                self.trimmed_after_ms = self.last_work_ms;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXE: &str = "/usr/bin/jarfleet";

    fn smaps() -> String {
        [
            "00200000-0044b000 r--p 00000000 fe:00 10010760                           /usr/bin/jarfleet",
            "Size:               2348 kB",
            "Rss:                 832 kB",
            "Private_Dirty:         0 kB",
            "Anonymous:             0 kB",
            "0044b000-00c2c000 r-xp 0024a000 fe:00 10010760                           /usr/bin/jarfleet",
            "Rss:                6852 kB",
            "Shared_Dirty:          0 kB",
            "Private_Dirty:      2096 kB",
            "Anonymous:             0 kB",
            "Swap:                  0 kB",
            "00c2c000-00c62000 r--p 00a2a000 fe:00 10010760                           /usr/bin/jarfleet",
            "Rss:                 216 kB",
            "Private_Dirty:         8 kB",
            "Anonymous:             8 kB",
            "00c62000-00c68000 rw-p 00a5f000 fe:00 10010760                           /usr/bin/jarfleet",
            "Rss:                  24 kB",
            "Private_Dirty:         0 kB",
            "00c68000-00c70000 r--p 00000000 fe:00 10010761                           /usr/bin/jarfleet-old",
            "Rss:                  24 kB",
            "7f2590358000-7f25904ae000 r-xp 00026000 fe:00 326279                     /usr/lib/x86_64-linux-gnu/libc.so.6",
            "Rss:                1240 kB",
            "7f2590507000-7f2590514000 rw-p 00000000 00:00 0 ",
            "Rss:                  20 kB",
            "7f2590600000-7f2590610000 r-xs 00000000 fe:00 10010760                   /usr/bin/jarfleet",
            "Rss:                  64 kB",
            "7f2590700000-7f2590710000 r-xp 00000000 fe:00 10010760                   /usr/bin/jarfleet",
            "Rss:                   0 kB",
            "VmFlags: rd ex mr mw me dw",
        ]
        .join("\n")
    }

    #[test]
    fn only_clean_read_only_private_mappings_of_the_executable_are_dropped() {
        let got = droppable(&smaps(), EXE);
        assert_eq!(
            got,
            vec![
                Range {
                    start: 0x200000,
                    len: 0x24b000,
                    rss_kib: 832
                },
                Range {
                    start: 0x44b000,
                    len: 0x7e1000,
                    rss_kib: 6852
                },
            ],
            "relocated (anonymous), writable, shared, other files, other libraries and unmapped \
             mappings are kept"
        );
    }

    #[test]
    fn a_replaced_executable_is_matched_by_its_deleted_name() {
        let text =
            "00400000-00500000 r-xp 00000000 fe:00 1 /usr/bin/jarfleet (deleted)\nRss: 12 kB\n";
        assert_eq!(droppable(text, "/usr/bin/jarfleet (deleted)").len(), 1);
        assert!(droppable(text, EXE).is_empty());
    }

    #[test]
    fn a_path_with_spaces_is_read_whole() {
        let text = "00400000-00500000 r-xp 00000000 fe:00 1 /opt/my apps/jarfleet\nRss: 12 kB\n";
        assert_eq!(droppable(text, "/opt/my apps/jarfleet").len(), 1);
    }

    #[test]
    fn trims_once_after_quiet_and_again_only_after_more_work() {
        let mut t = Trimmer::default();
        assert_eq!(t.due_at(), None, "nothing done yet");
        t.worked(1_000);
        assert_eq!(t.due_at(), Some(11_000));
        assert!(!t.take_due(10_999));
        t.worked(5_000);
        assert!(!t.take_due(11_000), "more work pushes it back");
        assert!(t.take_due(15_000));
        assert_eq!(t.due_at(), None, "once per quiet period");
        assert!(!t.take_due(60_000));
        t.worked(70_000);
        assert!(t.take_due(80_000));
    }

    fn resident_code_kib() -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        droppable(&smaps, &exe.to_string_lossy())
            .iter()
            .map(|r| r.rss_kib)
            .sum()
    }

    #[test]
    fn trimming_this_process_unmaps_code_and_it_keeps_working() {
        // Against the test binary itself (nextest runs each test in its own process).
        let before = resident_code_kib();
        let trimmed = trim();
        let after = resident_code_kib();
        assert!(trimmed.code_kib > 0, "{trimmed:?}");
        assert!(
            after < before,
            "resident code {before} KiB before, {after} KiB after the trim"
        );
        // Code runs again (mapped back on use), including code last used before the trim.
        let sum: u64 = (1..=1000u64).map(|i| i * i).sum();
        assert_eq!(sum, 333_833_500);
        assert!(resident_code_kib() > 0);
    }
}
