//! The daemon's own log: the writer under `tracing` that never fails and never panics.
//!
//! A write that fails (a full disk, a closed pipe) costs the line, never the daemon: the line is
//! counted as dropped, and the next line that can be written is preceded by a note saying how
//! many were lost and why. (`tracing-subscriber` reports a failing writer with `eprintln!`, which
//! panics when stderr cannot be written either: that is how a full disk used to kill the daemon
//! and, with it, every load balancer.)
//!
//! With a file (`jarfleet daemon --log FILE`, which `up -d` uses for `STATE/daemon.log`) the log
//! is rotated by size: `FILE` → `FILE.1` → … → `FILE.KEEP`, the oldest deleted. When the daemon's
//! stdout and stderr are that same file (as `up -d` starts it), they follow it to each new file,
//! so whatever reaches them (a panic message) lands in the current log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use jarfleet_shim::logfile::rotated_path;

/// Rotate the daemon's log once it would pass this size… (`[daemon] log_max_size`)
pub const DEFAULT_MAX_SIZE: u64 = jarfleet_core::spec::DEFAULT_DAEMON_LOG_MAX_SIZE;
/// …keeping this many rotated files (`[daemon] log_keep`).
pub const DEFAULT_KEEP: u32 = jarfleet_core::spec::DEFAULT_DAEMON_LOG_KEEP;

/// What the daemon's log has lost so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Lines that could not be written.
    pub dropped_lines: u64,
    /// Failed writes, rotations and re-opens.
    pub write_errors: u64,
    /// The latest error, while lines are being dropped (cleared once one is written again).
    pub failing: Option<String>,
}

/// A handle on the daemon's log; cheap to clone (tracing takes one per event).
#[derive(Clone)]
pub struct DaemonLog {
    inner: Arc<Inner>,
}

struct Inner {
    sink: Mutex<Guarded>,
    dropped: AtomicU64,
    errors: AtomicU64,
    max_size: AtomicU64,
    keep: AtomicU32,
}

enum Sink {
    Stream(Box<dyn Write + Send>),
    File(FileSink),
}

struct Unreported {
    lines: u64,
    error: String,
}

struct FileSink {
    path: PathBuf,
    /// `None` after a rotation could not open the new file: opened again at the next line.
    file: Option<File>,
    size: u64,
    /// A line was cut short by an error: the next write starts a fresh line.
    mid_line: bool,
    /// stdout and stderr are this log: they follow it to every new file.
    follow_stdio: bool,
}

static INSTALLED: OnceLock<DaemonLog> = OnceLock::new();

/// The log tracing writes to in this process, once [`DaemonLog::install`] ran.
pub fn installed() -> Option<&'static DaemonLog> {
    INSTALLED.get()
}

/// What the installed log has lost (nothing when none is installed).
pub fn stats() -> Stats {
    installed().map(DaemonLog::stats).unwrap_or_default()
}

/// Rotation settings for the installed log (`[daemon] log_max_size`, `log_keep`).
pub fn set_rotation(max_size: u64, keep: u32) {
    if let Some(log) = installed() {
        log.set_rotation(max_size, keep);
    }
}

impl DaemonLog {
    /// A log written to a stream (stderr).
    pub fn stream(out: Box<dyn Write + Send>) -> DaemonLog {
        DaemonLog::with(Sink::Stream(out))
    }

    /// A log written to `path`, rotated by size. Fails only if the file cannot be opened at all
    /// (a missing directory, a permission); a full disk does not stop it from opening.
    pub fn file(path: &Path) -> io::Result<DaemonLog> {
        let file = open_append(path)?;
        let meta = file.metadata()?;
        let follow_stdio = same_file(&meta, &io::stderr());
        Ok(DaemonLog::with(Sink::File(FileSink {
            path: path.to_path_buf(),
            size: meta.len(),
            file: Some(file),
            mid_line: false,
            follow_stdio,
        })))
    }

    fn with(sink: Sink) -> DaemonLog {
        DaemonLog {
            inner: Arc::new(Inner {
                sink: Mutex::new((sink, None)),
                dropped: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                max_size: AtomicU64::new(DEFAULT_MAX_SIZE),
                keep: AtomicU32::new(DEFAULT_KEEP),
            }),
        }
    }

    /// Makes this the log [`installed`], [`stats`] and [`set_rotation`] refer to (the first one
    /// installed stays).
    pub fn install(&self) {
        let _ = INSTALLED.set(self.clone());
    }

    pub fn set_rotation(&self, max_size: u64, keep: u32) {
        self.inner
            .max_size
            .store(max_size.max(1), Ordering::Relaxed);
        self.inner.keep.store(keep, Ordering::Relaxed);
    }

    pub fn stats(&self) -> Stats {
        let failing = match &*lock(&self.inner.sink) {
            (_, Some(u)) => Some(u.error.clone()),
            _ => None,
        };
        Stats {
            dropped_lines: self.inner.dropped.load(Ordering::Relaxed),
            write_errors: self.inner.errors.load(Ordering::Relaxed),
            failing,
        }
    }

    /// Writes one log line (or several: whatever one event formatted). Never fails.
    fn line(&self, bytes: &[u8]) {
        let max_size = self.inner.max_size.load(Ordering::Relaxed);
        let keep = self.inner.keep.load(Ordering::Relaxed);
        let mut guard = lock(&self.inner.sink);
        let (sink, unreported) = &mut *guard;
        if let Some(u) = unreported.as_ref() {
            let note = format!(
                "jarfleet: {} daemon log line(s) could not be written ({})\n",
                u.lines, u.error
            );
            match sink.write(note.as_bytes(), max_size, keep, &self.inner.errors) {
                Ok(()) => *unreported = None,
                Err(e) => return self.drop_line(unreported, &e),
            }
        }
        if let Err(e) = sink.write(bytes, max_size, keep, &self.inner.errors) {
            self.drop_line(unreported, &e);
        }
    }

    fn drop_line(&self, unreported: &mut Option<Unreported>, e: &io::Error) {
        self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        self.inner.errors.fetch_add(1, Ordering::Relaxed);
        let u = unreported.get_or_insert(Unreported {
            lines: 0,
            error: String::new(),
        });
        u.lines += 1;
        u.error = e.to_string();
    }
}

impl Write for DaemonLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The sink and the lines not yet reported as lost.
type Guarded = (Sink, Option<Unreported>);

fn lock(m: &Mutex<Guarded>) -> std::sync::MutexGuard<'_, Guarded> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Sink {
    fn write(
        &mut self,
        bytes: &[u8],
        max_size: u64,
        keep: u32,
        errors: &AtomicU64,
    ) -> io::Result<()> {
        match self {
            Sink::Stream(out) => {
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File(f) => f.write(bytes, max_size, keep, errors),
        }
    }
}

impl FileSink {
    fn write(
        &mut self,
        bytes: &[u8],
        max_size: u64,
        keep: u32,
        errors: &AtomicU64,
    ) -> io::Result<()> {
        if self.size > 0 && self.size + bytes.len() as u64 > max_size {
            // A rotation that fails leaves the line in the current file (over the size) rather
            // than lose it; it is tried again at the next line.
            if self.rotate(keep).is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => {
                let f = open_append(&self.path)?;
                self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                self.follow(&f);
                self.file.insert(f)
            }
        };
        if self.mid_line {
            file.write_all(b"\n")?;
            self.size += 1;
            self.mid_line = false;
        }
        let mut rest = bytes;
        while !rest.is_empty() {
            match file.write(rest) {
                Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.size += n as u64;
                    rest = &rest[n..];
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.mid_line = rest.len() < bytes.len();
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// `path` → `path.1` (older ones shifted, those beyond `keep` deleted), then a new `path`.
    fn rotate(&mut self, keep: u32) -> io::Result<()> {
        let mut n = 0u32;
        while fs::symlink_metadata(rotated_path(&self.path, n + 1)).is_ok() {
            n += 1;
        }
        for i in (keep.max(1)..=n).rev() {
            gone_is_fine(fs::remove_file(rotated_path(&self.path, i)))?;
        }
        if keep == 0 {
            gone_is_fine(fs::remove_file(&self.path))?;
        } else {
            for i in (1..=n.min(keep - 1)).rev() {
                gone_is_fine(fs::rename(
                    rotated_path(&self.path, i),
                    rotated_path(&self.path, i + 1),
                ))?;
            }
            gone_is_fine(fs::rename(&self.path, rotated_path(&self.path, 1)))?;
        }
        // The old file is renamed: from here on, lines go to a new one (opened now, or at the
        // next line if it cannot be opened now).
        self.file = None;
        self.size = 0;
        self.mid_line = false;
        let f = open_append(&self.path)?;
        self.follow(&f);
        self.file = Some(f);
        Ok(())
    }

    /// stdout and stderr to the new file, when they were the log.
    fn follow(&self, f: &File) {
        if self.follow_stdio {
            let _ = nix::unistd::dup2_stdout(f);
            let _ = nix::unistd::dup2_stderr(f);
        }
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn gone_is_fine(r: io::Result<()>) -> io::Result<()> {
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Whether `stream` (stderr) is the file `meta` describes.
// `st_dev` and `st_ino` are not `u64` on every platform.
#[allow(clippy::unnecessary_cast)]
fn same_file(meta: &fs::Metadata, stream: &impl std::os::fd::AsFd) -> bool {
    nix::sys::stat::fstat(stream.as_fd())
        .is_ok_and(|st| st.st_dev as u64 == meta.dev() && st.st_ino as u64 == meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    fn log_line(log: &DaemonLog, text: &str) {
        let mut w = log.clone();
        w.write_all(format!("{text}\n").as_bytes())
            .expect("the daemon log never fails");
    }

    /// A daemon log in a new temporary directory (kept while the first value lives).
    fn temp_log() -> (tempfile::TempDir, std::path::PathBuf, DaemonLog) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("daemon.log");
        let log = DaemonLog::file(&path).expect("opening the log");
        (dir, path, log)
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let (_dir, path, log) = temp_log();
        log.set_rotation(100, 2);
        for i in 0..20 {
            // 30 bytes a line: 3 lines a file.
            log_line(&log, &format!("line {i:02} ......................"));
        }
        assert!(path.exists() && rotated_path(&path, 1).exists());
        assert!(rotated_path(&path, 2).exists());
        assert!(
            !rotated_path(&path, 3).exists(),
            "only 2 rotated files kept"
        );
        for i in 0..=2 {
            let text = read(&rotated_path(&path, i));
            assert!(text.len() <= 100, "file {i} is {} bytes", text.len());
            assert!(
                text.ends_with('\n') && text.lines().all(|l| l.len() == 30),
                "{text}"
            );
        }
        // Oldest first: .2, .1, then the current file, ending with the last line.
        let all = format!(
            "{}{}{}",
            read(&rotated_path(&path, 2)),
            read(&rotated_path(&path, 1)),
            read(&path)
        );
        let numbers: Vec<&str> = all.lines().map(|l| &l[5..7]).collect();
        assert_eq!(numbers, ["12", "13", "14", "15", "16", "17", "18", "19"]);
        assert_eq!(log.stats(), Stats::default());
    }

    #[test]
    fn keeping_fewer_files_deletes_the_extra_ones() {
        let (_dir, path, log) = temp_log();
        log.set_rotation(10, 4);
        for i in 0..6 {
            log_line(&log, &format!("{i}........"));
        }
        assert!(rotated_path(&path, 4).exists());
        log.set_rotation(10, 1);
        log_line(&log, "last.....");
        assert!(rotated_path(&path, 1).exists());
        assert!(!rotated_path(&path, 2).exists() && !rotated_path(&path, 4).exists());
        assert_eq!(read(&path), "last.....\n");
    }

    #[test]
    fn a_full_device_costs_lines_not_the_writer() {
        let full = File::options()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full (Linux) to stand for a full disk");
        let log = DaemonLog::stream(Box::new(full));
        for i in 0..5 {
            log_line(&log, &format!("line {i}"));
        }
        let stats = log.stats();
        assert_eq!(stats.dropped_lines, 5);
        assert!(stats.write_errors >= 5);
        let why = stats.failing.expect("failing while lines are dropped");
        assert!(why.contains("No space left on device"), "{why}");
    }

    /// A stream that fails while `broken` is set.
    struct Flaky {
        broken: Arc<AtomicBool>,
        out: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Flaky {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            self.out
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_lost_are_reported_once_writing_works_again() {
        let broken = Arc::new(AtomicBool::new(false));
        let out = Arc::new(Mutex::new(Vec::new()));
        let log = DaemonLog::stream(Box::new(Flaky {
            broken: broken.clone(),
            out: out.clone(),
        }));
        log_line(&log, "before");
        broken.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            log_line(&log, "lost");
        }
        assert!(log.stats().failing.is_some());
        broken.store(false, Ordering::SeqCst);
        log_line(&log, "after");
        let text =
            String::from_utf8_lossy(&out.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(lines[0], "before");
        assert!(
            lines[1].contains("3 daemon log line(s) could not be written")
                && lines[1].contains("No space left on device"),
            "{}",
            lines[1]
        );
        assert_eq!(lines[2], "after");
        let stats = log.stats();
        assert_eq!((stats.dropped_lines, stats.failing), (3, None));
    }

    #[test]
    fn a_rotation_that_fails_keeps_the_line_and_is_tried_again() {
        let (_dir, path, log) = temp_log();
        log.set_rotation(20, 1);
        // `daemon.log.1` is a directory with something in it: it can be neither deleted nor
        // replaced by the log.
        let blocker = rotated_path(&path, 1);
        fs::create_dir(&blocker).expect("mkdir");
        fs::write(blocker.join("x"), b"x").expect("write");
        for i in 0..4 {
            log_line(&log, &format!("line {i} ....."));
        }
        assert_eq!(read(&path).lines().count(), 4, "kept in the current file");
        let stats = log.stats();
        assert_eq!(stats.dropped_lines, 0);
        assert!(stats.write_errors >= 3, "{stats:?}");
        fs::remove_dir_all(&blocker).expect("rm");
        log_line(&log, "line 4 .....");
        assert_eq!(read(&path), "line 4 .....\n");
        assert_eq!(read(&blocker).lines().count(), 4);
    }
}
