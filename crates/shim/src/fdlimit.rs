//! The daemon's open files: its limit raised at start, a reserve kept for the control plane, and
//! the daemon's own shortages (file descriptors, memory, local ports, processes, disk) told
//! apart from an instance's failures.
//!
//! - **Raised at start** ([`raise`]): the soft `RLIMIT_NOFILE` goes up to the hard limit (what
//!   systemd does for its own services, and nginx's `worker_rlimit_nofile`), once per process.
//! - **Children get the limit back** that the daemon was started with (soft as it was, the same
//!   hard): shims, the JVMs under them and `exec` health checks see what the operator gave the
//!   daemon, as if jarfleet had not raised anything. A program that still uses `select()` cannot
//!   be handed a descriptor above 1023 (systemd keeps soft 1024 for its services for that
//!   reason), and a JVM raises its own soft limit to the hard one anyway (`-XX:+MaxFDLimit`, on
//!   by default); with `-XX:-MaxFDLimit` it keeps the operator's soft limit, as it would without
//!   jarfleet. The fork-side code is in `shim::spawn`.
//! - **A reserve for the control plane**: health checks, the API, the store, log files being
//!   followed, shims' sockets and spawns need descriptors whatever the traffic does. The load
//!   balancer's connection budget is what is left after [`reserve`], halved because a client
//!   connection may hold a connection to an instance too ([`budget`]).
//! - **Shortages are the daemon's, not the instance's**: [`classify`] tells an `errno` that
//!   says "the daemon (or the host) is out of something" from one about the other end. A health
//!   check that could not be run is inconclusive, a start that could not be made is postponed
//!   (`jarfleet_core::instance::Input`), a port that could not be checked is not "in use".
//!
//! The arithmetic, the classification and the alert rate are pure and table-tested here; the IO
//! is [`raise`], [`current_soft`] and [`open_count`].

use std::fmt;
use std::io;
use std::sync::OnceLock;

use jarfleet_core::Millis;

/// Descriptors kept for the control plane at least.
pub const MIN_RESERVE: u64 = 256;

/// Descriptors kept for the control plane out of `limit`: 10 %, at least [`MIN_RESERVE`], at
/// most half of a very small limit (so the load balancer still gets something).
pub fn reserve(limit: u64) -> u64 {
    (limit / 10).max(MIN_RESERVE).min(limit / 2)
}

/// Client connections all listeners may hold together under `limit`: what the reserve leaves,
/// halved, since each client connection may hold a connection to an instance too. At least 1.
pub fn budget(limit: u64) -> u64 {
    (limit.saturating_sub(reserve(limit)) / 2).max(1)
}

/// The soft limit to raise to: the hard limit, or (unlimited hard limit, as on some BSDs and
/// macOS) a large fixed number the kernel accepts.
pub fn raise_target(soft: u64, hard: u64) -> u64 {
    const UNLIMITED_CAP: u64 = 1 << 20;
    let target = if hard == u64::MAX {
        UNLIMITED_CAP
    } else {
        hard
    };
    target.max(soft)
}

/// What the daemon found and did at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The soft limit the daemon was started with: what its children get back.
    pub started_with: u64,
    /// The hard limit (never changed).
    pub hard: u64,
    /// The soft limit in force.
    pub soft: u64,
    /// Kept for the control plane ([`reserve`]).
    pub reserve: u64,
    /// Client connections the load balancer may hold ([`budget`]).
    pub budget: u64,
}

impl Limits {
    pub fn of(started_with: u64, hard: u64, soft: u64) -> Limits {
        Limits {
            started_with,
            hard,
            soft,
            reserve: reserve(soft),
            budget: budget(soft),
        }
    }

    /// The daemon raised its soft limit: children must get the old one back.
    pub fn raised(&self) -> bool {
        self.soft > self.started_with
    }

    /// One line for the daemon's log: what was found, what was done, what it means.
    pub fn describe(&self, raise_error: Option<&str>) -> String {
        let head = match raise_error {
            Some(e) => format!(
                "open files: the soft limit {} could not be raised to {} ({e})",
                self.soft,
                raise_target(self.soft, self.hard)
            ),
            None if self.raised() => format!(
                "open files: soft limit raised from {} to {} (the hard limit)",
                self.started_with, self.soft
            ),
            None => format!(
                "open files: limit {} (already the hard limit {})",
                self.soft,
                fmt_limit(self.hard)
            ),
        };
        let mut line = format!(
            "{head}; {} kept for health checks, the API, the store and the shims, so the load balancer may hold {} client connection(s)",
            self.reserve, self.budget
        );
        if self.raised() {
            line.push_str(&format!(
                "; shims, JVMs and exec checks start with the soft limit {} as before",
                self.started_with
            ));
        }
        if self.soft < LOW_LIMIT {
            line.push_str(&format!(
                "; that is low for a load balancer: raise the hard limit (LimitNOFILE= in the daemon's systemd unit, or `ulimit -Hn` before starting it), e.g. to {}",
                SUGGESTED_LIMIT
            ));
        }
        line
    }
}

/// Below this a warning says how to raise the limit.
pub const LOW_LIMIT: u64 = 4096;
const SUGGESTED_LIMIT: u64 = 65_536;

fn fmt_limit(n: u64) -> String {
    if n == u64::MAX {
        "unlimited".into()
    } else {
        n.to_string()
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Raises the soft open-file limit to the hard one, once per process (a second daemon run in
/// the same process finds it done and keeps the limit it first found for the children). Logs
/// what it did; never fails (a limit that cannot be read or raised is logged and kept).
pub fn raise() -> Limits {
    if let Some(l) = LIMITS.get() {
        return *l;
    }
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("open files: cannot read the limit ({e}); leaving it as it is");
            return *LIMITS.get_or_init(|| Limits::of(1024, 1024, 1024));
        }
    };
    let target = raise_target(soft, hard);
    let (limits, error) = if target > soft {
        match setrlimit(Resource::RLIMIT_NOFILE, target, hard) {
            Ok(()) => (Limits::of(soft, hard, target), None),
            Err(e) => (Limits::of(soft, hard, soft), Some(e.to_string())),
        }
    } else {
        (Limits::of(soft, hard, soft), None)
    };
    let limits = *LIMITS.get_or_init(|| limits);
    let line = limits.describe(error.as_deref());
    if error.is_some() || limits.soft < LOW_LIMIT {
        tracing::warn!("{line}");
    } else {
        tracing::info!("{line}");
    }
    limits
}

/// What [`raise`] found and did (`None` before it ran: not a daemon process).
pub fn limits() -> Option<Limits> {
    LIMITS.get().copied()
}

/// The `(soft, hard)` open-file limit children are to get back, when the daemon raised its own.
/// Read before a fork; applied between fork and exec by `shim::spawn`.
pub fn for_children() -> Option<(u64, u64)> {
    limits()
        .filter(Limits::raised)
        .map(|l| (l.started_with, l.hard))
}

/// The soft open-file limit of this process now (no descriptor needed).
pub fn current_soft() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Descriptors this process has open (`None` when `/proc/self/fd` cannot be read — for one,
/// when there is no descriptor left to read it with).
pub fn open_count() -> Option<u64> {
    std::fs::read_dir("/proc/self/fd")
        .ok()
        .map(|d| d.count().saturating_sub(1) as u64)
}

/// A shortage of the daemon's (or the host's) own, as opposed to a problem at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Shortage {
    /// `EMFILE`: the process's open-file limit is reached.
    Descriptors,
    /// `ENFILE`: the system-wide file table is full.
    SystemFiles,
    /// `ENOMEM`, `ENOBUFS`: no memory for a socket, a buffer or a process.
    Memory,
    /// `EADDRNOTAVAIL`, `EAGAIN` on a connect: no local (ephemeral) port left.
    LocalPorts,
    /// `EAGAIN` on a fork: the process limit.
    Processes,
    /// `ENOSPC`, `EDQUOT`: no room on the disk for the files a start writes.
    Disk,
}

/// What was being done when an error came: the same `errno` means different things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// A connection out (health checks, refresh calls, a shim's socket).
    Connect,
    /// Binding a port (pre-flight checks, listeners).
    Bind,
    /// Starting a process (and writing what it needs).
    Spawn,
    /// Files and directories.
    File,
}

/// Whether `errno`, met during `op`, is a shortage of the daemon's own. Pure.
pub fn classify(errno: i32, op: Op) -> Option<Shortage> {
    match (errno, op) {
        (libc::EMFILE, _) => Some(Shortage::Descriptors),
        (libc::ENFILE, _) => Some(Shortage::SystemFiles),
        (libc::ENOMEM | libc::ENOBUFS, _) => Some(Shortage::Memory),
        (libc::EADDRNOTAVAIL | libc::EAGAIN, Op::Connect) => Some(Shortage::LocalPorts),
        (libc::EAGAIN, Op::Spawn) => Some(Shortage::Processes),
        (libc::ENOSPC | libc::EDQUOT, Op::Spawn | Op::File) => Some(Shortage::Disk),
        _ => None,
    }
}

/// [`classify`] of an `io::Error` (none without an OS error code).
pub fn of_io(e: &io::Error, op: Op) -> Option<Shortage> {
    e.raw_os_error().and_then(|errno| classify(errno, op))
}

/// [`classify`] of the first OS error in an error's chain of sources.
pub fn in_chain(e: &(dyn std::error::Error + 'static), op: Op) -> Option<Shortage> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && io.raw_os_error().is_some()
        {
            return of_io(io, op);
        }
        next = err.source();
    }
    None
}

impl Shortage {
    /// What ran out, with the limit when it is ours: "out of file descriptors (limit 512)".
    pub fn describe(self, limit: Option<u64>) -> String {
        match (self, limit) {
            (Shortage::Descriptors, Some(n)) => format!("out of file descriptors (limit {n})"),
            (Shortage::Descriptors, None) => "out of file descriptors".into(),
            (Shortage::SystemFiles, _) => "the system's file table is full (ENFILE)".into(),
            (Shortage::Memory, _) => "out of memory for sockets or processes".into(),
            (Shortage::LocalPorts, _) => "no local port left for a connection".into(),
            (Shortage::Processes, _) => "cannot start another process (process limit)".into(),
            (Shortage::Disk, _) => "the disk is full".into(),
        }
    }

    /// [`Shortage::describe`] with this process's current limit.
    pub fn describe_here(self) -> String {
        self.describe(current_soft())
    }

    /// What to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            Shortage::Descriptors => {
                "raise the daemon's open-file limit (LimitNOFILE= in its systemd unit, or `ulimit -Hn` before starting it), or lower the balancer's max_connections"
            }
            Shortage::SystemFiles => {
                "raise fs.file-max (sysctl), or find the process holding files"
            }
            Shortage::Memory => "free memory on the host",
            Shortage::LocalPorts => {
                "widen net.ipv4.ip_local_port_range (sysctl), or look for connections left in TIME_WAIT"
            }
            Shortage::Processes => {
                "raise the process limit (LimitNPROC= in the unit, `ulimit -u`), or find what forks"
            }
            Shortage::Disk => "free space on the state dir's disk",
        }
    }
}

/// An error that may be the daemon's own shortage rather than a problem of an instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub message: String,
    pub shortage: Option<Shortage>,
}

impl Failure {
    /// An error that is nobody's shortage (a missing user, a bad template).
    pub fn plain(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            shortage: None,
        }
    }

    /// `context: e`, classified.
    pub fn io(context: impl fmt::Display, e: &io::Error, op: Op) -> Failure {
        Failure {
            message: format!("{context}: {e}"),
            shortage: of_io(e, op),
        }
    }

    /// The whole chain (`{e:#}`), classified by its first OS error.
    pub fn chain(e: &anyhow::Error, op: Op) -> Failure {
        Failure {
            message: format!("{e:#}"),
            shortage: in_chain(e.as_ref(), op),
        }
    }

    /// For a shortage: what ran out first, then the error ("out of file descriptors (limit
    /// 512): creating …: Too many open files (os error 24)").
    pub fn explained(&self) -> String {
        match self.shortage {
            Some(s) => format!("{}: {}", s.describe_here(), self.message),
            None => self.message.clone(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The shortest time between two `daemon.shortage` events.
pub const ALERT_EVERY_MS: Millis = 10_000;

/// Shortages as the control loop counts them: every one, and at most one event per
/// [`ALERT_EVERY_MS`], the next one saying how many were not reported in between.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alerts {
    /// Shortages met since the daemon started.
    pub total: u64,
    /// The latest one, described.
    pub last: Option<String>,
    reported_at: Option<Millis>,
    held: u64,
}

impl Alerts {
    /// Counts one shortage at `now`. `Some(n)`: report it, with `n` unreported ones before it.
    pub fn note(&mut self, now: Millis, what: &str) -> Option<u64> {
        self.total += 1;
        self.last = Some(what.to_string());
        match self.reported_at {
            Some(at) if now.saturating_sub(at) < ALERT_EVERY_MS => {
                self.held += 1;
                None
            }
            _ => {
                self.reported_at = Some(now);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_and_the_budget() {
        // (limit, reserve, budget)
        let table = [
            (16, 8, 4),
            (64, 32, 16),
            (256, 128, 64),
            (300, 150, 75),
            (512, 256, 128),
            (1024, 256, 384),
            (2560, 256, 1152),
            (4096, 409, 1843),
            (65_536, 6_553, 29_491),
            (524_288, 52_428, 235_930),
            (1_048_576, 104_857, 471_859),
        ];
        for (limit, want_reserve, want_budget) in table {
            assert_eq!(reserve(limit), want_reserve, "reserve of {limit}");
            assert_eq!(budget(limit), want_budget, "budget of {limit}");
            // budget × 2 (client + instance side) + reserve never exceeds the limit
            assert!(2 * budget(limit) + reserve(limit) <= limit, "{limit}");
        }
        assert_eq!(budget(0), 1);
        assert_eq!(budget(1), 1);
    }

    #[test]
    fn raising_goes_to_the_hard_limit() {
        let table = [
            (1024, 524_288, 524_288),
            (1024, 1024, 1024),
            (512, 512, 512),
            (4096, u64::MAX, 1 << 20),
            // already above what we would pick: never lowered
            (2 << 20, u64::MAX, 2 << 20),
        ];
        for (soft, hard, want) in table {
            assert_eq!(raise_target(soft, hard), want, "{soft}/{hard}");
        }
    }

    #[test]
    fn what_the_log_says() {
        let raised = Limits::of(1024, 524_288, 524_288);
        assert!(raised.raised());
        assert_eq!(
            raised.describe(None),
            "open files: soft limit raised from 1024 to 524288 (the hard limit); 52428 kept for health checks, the API, the store and the shims, so the load balancer may hold 235930 client connection(s); shims, JVMs and exec checks start with the soft limit 1024 as before"
        );
        let stuck = Limits::of(512, 512, 512);
        assert!(!stuck.raised());
        assert_eq!(
            stuck.describe(None),
            "open files: limit 512 (already the hard limit 512); 256 kept for health checks, the API, the store and the shims, so the load balancer may hold 128 client connection(s); that is low for a load balancer: raise the hard limit (LimitNOFILE= in the daemon's systemd unit, or `ulimit -Hn` before starting it), e.g. to 65536"
        );
        let refused = Limits::of(1024, 4096, 1024);
        assert!(
            refused
                .describe(Some("EPERM: Operation not permitted"))
                .starts_with(
                    "open files: the soft limit 1024 could not be raised to 4096 (EPERM: Operation not permitted); 256 kept"
                )
        );
    }

    #[test]
    fn shortages_are_told_from_the_other_ends_problems() {
        use Op::*;
        // (errno, op, verdict)
        let table = [
            (libc::EMFILE, Connect, Some(Shortage::Descriptors)),
            (libc::EMFILE, Bind, Some(Shortage::Descriptors)),
            (libc::EMFILE, Spawn, Some(Shortage::Descriptors)),
            (libc::EMFILE, File, Some(Shortage::Descriptors)),
            (libc::ENFILE, Bind, Some(Shortage::SystemFiles)),
            (libc::ENOBUFS, Connect, Some(Shortage::Memory)),
            (libc::ENOMEM, Spawn, Some(Shortage::Memory)),
            (libc::EADDRNOTAVAIL, Connect, Some(Shortage::LocalPorts)),
            (libc::EAGAIN, Connect, Some(Shortage::LocalPorts)),
            (libc::EAGAIN, Spawn, Some(Shortage::Processes)),
            (libc::ENOSPC, Spawn, Some(Shortage::Disk)),
            (libc::EDQUOT, File, Some(Shortage::Disk)),
            // the other end's problems, or a port that is not ours to take
            (libc::ECONNREFUSED, Connect, None),
            (libc::ECONNRESET, Connect, None),
            (libc::ETIMEDOUT, Connect, None),
            (libc::EHOSTUNREACH, Connect, None),
            (libc::EADDRINUSE, Bind, None),
            (libc::EACCES, Bind, None),
            (libc::EADDRNOTAVAIL, Bind, None),
            (libc::ENOENT, Spawn, None),
            (libc::EACCES, Spawn, None),
            (libc::ENOSPC, Connect, None),
            (libc::EAGAIN, File, None),
        ];
        for (errno, op, want) in table {
            assert_eq!(classify(errno, op), want, "errno {errno} during {op:?}");
            let e = io::Error::from_raw_os_error(errno);
            assert_eq!(of_io(&e, op), want, "io::Error {e} during {op:?}");
        }
        // no OS error: nothing to go by
        let e = io::Error::new(io::ErrorKind::TimedOut, "timed out");
        assert_eq!(of_io(&e, Connect), None);
    }

    #[test]
    fn a_shortage_is_found_deep_in_an_error_chain() {
        let e = anyhow::Error::from(io::Error::from_raw_os_error(libc::EMFILE))
            .context("binding /state/run/fx.0.7/s.sock")
            .context("starting the instance shim");
        let f = Failure::chain(&e, Op::Spawn);
        assert_eq!(f.shortage, Some(Shortage::Descriptors));
        assert!(
            f.message
                .starts_with("starting the instance shim: binding /state/run/fx.0.7/s.sock: "),
            "{}",
            f.message
        );
        let plain = anyhow::anyhow!("no such user").context("resolving");
        assert_eq!(Failure::chain(&plain, Op::Spawn).shortage, None);
        let refused = io::Error::from_raw_os_error(libc::ENOENT);
        assert_eq!(
            Failure::io("cannot run java", &refused, Op::Spawn).shortage,
            None
        );
    }

    #[test]
    fn descriptions_name_the_limit_and_what_to_do() {
        assert_eq!(
            Shortage::Descriptors.describe(Some(512)),
            "out of file descriptors (limit 512)"
        );
        assert_eq!(
            Shortage::Descriptors.describe(None),
            "out of file descriptors"
        );
        for s in [
            Shortage::Descriptors,
            Shortage::SystemFiles,
            Shortage::Memory,
            Shortage::LocalPorts,
            Shortage::Processes,
            Shortage::Disk,
        ] {
            assert!(
                !s.describe(None).is_empty() && !s.hint().is_empty(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn alerts_are_rate_limited_and_count_what_they_held_back() {
        let mut a = Alerts::default();
        // (at, reported with n held back)
        let table = [
            (0, Some(0)),
            (1, None),
            (9_999, None),
            (10_000, Some(2)),
            (10_500, None),
            (25_000, Some(1)),
            (40_000, Some(0)),
        ];
        for (at, want) in table {
            assert_eq!(a.note(at, &format!("at {at}")), want, "at {at}");
        }
        assert_eq!(a.total, 7);
        assert_eq!(a.last.as_deref(), Some("at 40000"));
    }
}
