//! Port pre-flight: a taken port is skipped (or a clear error), never a crash loop. A port that
//! could not be checked — the checking process is out of file descriptors, memory — is neither
//! free nor taken: the check says so, and nothing is marked "in use by other processes".

use std::collections::BTreeSet;
use std::net::TcpListener;

use jarfleet_core::spec::PortRange;

use jarfleet_shim::fdlimit::{self, Op, Shortage};

/// What binding a port told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    Free,
    /// Bound by someone else (`EADDRINUSE`), or not ours to bind (`EACCES`).
    InUse,
    /// The bind failed for another reason; `shortage` when it was this process's own.
    Unknown {
        errno: i32,
        shortage: Option<Shortage>,
    },
}

/// The verdict of one bind attempt (`Err(errno)`). Pure.
pub fn verdict(bind: Result<(), i32>) -> PortState {
    match bind {
        Ok(()) => PortState::Free,
        Err(libc::EADDRINUSE | libc::EACCES) => PortState::InUse,
        Err(errno) => PortState::Unknown {
            errno,
            shortage: fdlimit::classify(errno, Op::Bind),
        },
    }
}

/// The verdict of a bind on an IPv6 address. A host without IPv6 (no IPv6 in the kernel, or
/// the address not configured) has nothing listening there: free, as far as IPv6 goes. Pure.
pub fn verdict_v6(bind: Result<(), i32>) -> PortState {
    match bind {
        Err(libc::EAFNOSUPPORT | libc::EADDRNOTAVAIL | libc::EPROTONOSUPPORT) => PortState::Free,
        other => verdict(other),
    }
}

fn bind(addr: (&str, u16)) -> Result<(), i32> {
    TcpListener::bind(addr)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// How one bind's result is judged.
type Judge = fn(Result<(), i32>) -> PortState;

/// The addresses a port is tried on, each with how its bind is judged: every IPv4 address and
/// loopback, every IPv6 address (`::`, which on Linux is dual-stack unless `bindv6only`) and
/// IPv6 loopback. A listener on any one of them (another process's `[::1]:P`, say) would make
/// an instance that binds `0.0.0.0` or `::` fail at start, again and again.
const CHECKED: [(&str, Judge); 4] = [
    ("0.0.0.0", verdict),
    ("127.0.0.1", verdict),
    ("::", verdict_v6),
    ("::1", verdict_v6),
];

/// Whether `port` can be listened on, on any address and on loopback, IPv4 and IPv6.
pub fn state(port: u16) -> PortState {
    state_with(|host| bind((host, port)))
}

/// The first verdict that is not "free" over [`CHECKED`], binding with `bind`. Pure given
/// `bind`.
pub fn state_with(mut bind: impl FnMut(&str) -> Result<(), i32>) -> PortState {
    for (host, judge) in CHECKED {
        match judge(bind(host)) {
            PortState::Free => {}
            other => return other,
        }
    }
    PortState::Free
}

/// A port whose state could not be found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unchecked {
    pub port: u16,
    pub errno: i32,
    pub shortage: Option<Shortage>,
}

impl std::fmt::Display for Unchecked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let error = std::io::Error::from_raw_os_error(self.errno);
        match self.shortage {
            Some(s) => write!(
                f,
                "could not check whether port {} is free: {} ({error}); no port was marked as taken",
                self.port,
                s.describe_here()
            ),
            None => write!(f, "could not check port {}: {error}", self.port),
        }
    }
}

/// Whether nothing listens on `port` (any address): `Ok(true)` free, `Ok(false)` in use,
/// `Err` when it could not be checked.
pub fn is_free(port: u16) -> Result<bool, Unchecked> {
    free_as(port, state(port))
}

/// [`is_free`]'s answer from a port's state. Pure.
pub fn free_as(port: u16, state: PortState) -> Result<bool, Unchecked> {
    match state {
        PortState::Free => Ok(true),
        PortState::InUse => Ok(false),
        PortState::Unknown { errno, shortage } => Err(Unchecked {
            port,
            errno,
            shortage,
        }),
    }
}

/// Why no port was picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PickError {
    /// Every port of the range is ours or taken (a spawn failure, with backoff).
    Exhausted(String),
    /// The ports could not be checked: the daemon is short of something itself. Nothing is
    /// known about the range; the start is to be tried again, not counted.
    Unchecked(Unchecked),
}

impl std::fmt::Display for PickError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PickError::Exhausted(m) => f.write_str(m),
            PickError::Unchecked(u) => u.fmt(f),
        }
    }
}

/// Picks a port for an instance: `preferred` (the slot's previous port) if still free, else the
/// lowest free port of the range not held by another of our instances. Stops at the first port
/// that cannot be checked for a shortage (every other one would fail the same way).
pub fn pick(
    range: PortRange,
    preferred: Option<u16>,
    ours: &BTreeSet<u16>,
) -> Result<u16, PickError> {
    pick_by(range, preferred, ours, state)
}

/// [`pick`], with each port's state from `state`. Pure given `state`.
pub fn pick_by(
    range: PortRange,
    preferred: Option<u16>,
    ours: &BTreeSet<u16>,
    mut state: impl FnMut(u16) -> PortState,
) -> Result<u16, PickError> {
    let candidates = preferred
        .filter(|p| *p >= range.first && *p <= range.last)
        .into_iter()
        .chain(range.first..=range.last);
    pick_with(candidates, ours, &mut state).map_err(|unchecked| match unchecked {
        Some(u) => PickError::Unchecked(u),
        None => PickError::Exhausted(describe_survey(
            range,
            ours,
            &survey_with(range, ours, &mut state),
        )),
    })
}

/// The first candidate not in `ours` whose `state` is free; `Err(Some)` at the first shortage,
/// `Err(None)` when there is none. Pure given `state`.
pub fn pick_with(
    candidates: impl IntoIterator<Item = u16>,
    ours: &BTreeSet<u16>,
    mut state: impl FnMut(u16) -> PortState,
) -> Result<u16, Option<Unchecked>> {
    for port in candidates {
        if ours.contains(&port) {
            continue;
        }
        match state(port) {
            PortState::Free => return Ok(port),
            PortState::InUse => {}
            PortState::Unknown {
                errno,
                shortage: Some(shortage),
            } => {
                return Err(Some(Unchecked {
                    port,
                    errno,
                    shortage: Some(shortage),
                }));
            }
            // Some other error on this one port: skip it.
            PortState::Unknown { shortage: None, .. } => {}
        }
    }
    Err(None)
}

/// What the ports of a range are, apart from `ours`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Survey {
    pub free: Vec<u16>,
    pub in_use: Vec<u16>,
    /// Ports whose bind failed for another reason (not counted as in use).
    pub unknown: Vec<u16>,
    /// The survey stopped here: the checking process is short of something itself.
    pub unchecked: Option<Unchecked>,
}

/// Surveys `range` apart from `ours`, stopping at the first shortage. Pure given `state`.
pub fn survey_with(
    range: PortRange,
    ours: &BTreeSet<u16>,
    mut state: impl FnMut(u16) -> PortState,
) -> Survey {
    let mut s = Survey::default();
    for port in (range.first..=range.last).filter(|p| !ours.contains(p)) {
        match state(port) {
            PortState::Free => s.free.push(port),
            PortState::InUse => s.in_use.push(port),
            PortState::Unknown {
                errno,
                shortage: Some(shortage),
            } => {
                s.unchecked = Some(Unchecked {
                    port,
                    errno,
                    shortage: Some(shortage),
                });
                break;
            }
            PortState::Unknown { shortage: None, .. } => s.unknown.push(port),
        }
    }
    s
}

pub fn survey(range: PortRange, ours: &BTreeSet<u16>) -> Survey {
    survey_with(range, ours, state)
}

/// Ports of the range that are neither ours nor free (`Err` when they could not be checked).
pub fn taken_by_others(range: PortRange, ours: &BTreeSet<u16>) -> Result<Vec<u16>, Unchecked> {
    taken_by_others_by(range, ours, state)
}

/// [`taken_by_others`], with each port's state from `state`. Pure given `state`.
pub fn taken_by_others_by(
    range: PortRange,
    ours: &BTreeSet<u16>,
    state: impl FnMut(u16) -> PortState,
) -> Result<Vec<u16>, Unchecked> {
    let s = survey_with(range, ours, state);
    match s.unchecked {
        Some(u) => Err(u),
        None => Ok(s.in_use),
    }
}

pub fn describe_exhausted(range: PortRange, ours: &BTreeSet<u16>) -> String {
    describe_survey(range, ours, &survey(range, ours))
}

/// "no free port in A-B (…)" from a survey. Pure.
pub fn describe_survey(range: PortRange, ours: &BTreeSet<u16>, s: &Survey) -> String {
    if let Some(u) = &s.unchecked {
        return format!("no port picked in {}-{}: {u}", range.first, range.last);
    }
    let shown: Vec<String> = s.in_use.iter().take(5).map(u16::to_string).collect();
    let mut text = format!(
        "no free port in {}-{} ({} used by jarfleet instances, {} in use by other processes{}",
        range.first,
        range.last,
        ours.iter()
            .filter(|p| **p >= range.first && **p <= range.last)
            .count(),
        s.in_use.len(),
        if shown.is_empty() {
            String::new()
        } else {
            format!(": {}", shown.join(", "))
        }
    );
    if !s.unknown.is_empty() {
        text.push_str(&format!(", {} could not be bound", s.unknown.len()));
    }
    text.push(')');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bind_result_tells_free_taken_and_could_not_check() {
        let table = [
            (Ok(()), PortState::Free),
            (Err(libc::EADDRINUSE), PortState::InUse),
            (Err(libc::EACCES), PortState::InUse),
            (
                Err(libc::EMFILE),
                PortState::Unknown {
                    errno: libc::EMFILE,
                    shortage: Some(Shortage::Descriptors),
                },
            ),
            (
                Err(libc::ENFILE),
                PortState::Unknown {
                    errno: libc::ENFILE,
                    shortage: Some(Shortage::SystemFiles),
                },
            ),
            (
                Err(libc::ENOBUFS),
                PortState::Unknown {
                    errno: libc::ENOBUFS,
                    shortage: Some(Shortage::Memory),
                },
            ),
            (
                Err(libc::EADDRNOTAVAIL),
                PortState::Unknown {
                    errno: libc::EADDRNOTAVAIL,
                    shortage: None,
                },
            ),
        ];
        for (bind, want) in table {
            assert_eq!(verdict(bind), want, "{bind:?}");
        }
    }

    #[test]
    fn ipv6_listeners_count_and_a_host_without_ipv6_does_not_fail_the_check() {
        let eaddrinuse = Err(libc::EADDRINUSE);
        // (result per address: 0.0.0.0, 127.0.0.1, ::, ::1; the verdict)
        let table = [
            ([Ok(()), Ok(()), Ok(()), Ok(())], PortState::Free),
            ([eaddrinuse, Ok(()), Ok(()), Ok(())], PortState::InUse),
            // A foreign listener on [::1]:P: the wildcard and the loopback bind fail.
            ([Ok(()), Ok(()), eaddrinuse, eaddrinuse], PortState::InUse),
            ([Ok(()), Ok(()), Ok(()), eaddrinuse], PortState::InUse),
            // No IPv6 on this host.
            (
                [
                    Ok(()),
                    Ok(()),
                    Err(libc::EAFNOSUPPORT),
                    Err(libc::EAFNOSUPPORT),
                ],
                PortState::Free,
            ),
            (
                [Ok(()), Ok(()), Ok(()), Err(libc::EADDRNOTAVAIL)],
                PortState::Free,
            ),
            // IPv4 has no such excuse.
            (
                [Err(libc::EADDRNOTAVAIL), Ok(()), Ok(()), Ok(())],
                PortState::Unknown {
                    errno: libc::EADDRNOTAVAIL,
                    shortage: None,
                },
            ),
            (
                [Ok(()), Ok(()), Err(libc::EMFILE), Ok(())],
                PortState::Unknown {
                    errno: libc::EMFILE,
                    shortage: Some(Shortage::Descriptors),
                },
            ),
        ];
        for (results, want) in table {
            let mut tried = Vec::new();
            let got = state_with(|host| {
                tried.push(host.to_string());
                let i = ["0.0.0.0", "127.0.0.1", "::", "::1"]
                    .iter()
                    .position(|h| *h == host)
                    .expect("a checked address");
                results[i]
            });
            assert_eq!(got, want, "{results:?} (tried {tried:?})");
        }
    }

    #[test]
    fn a_real_ipv6_loopback_listener_makes_its_port_in_use() {
        let foreign = TcpListener::bind(("::1", 0))
            .expect("this test needs IPv6 loopback (::1): enable IPv6 on the test host");
        let port = foreign.local_addr().map(|a| a.port()).unwrap_or_default();
        assert_eq!(state(port), PortState::InUse);
        drop(foreign);
    }

    fn range() -> PortRange {
        PortRange {
            first: 9100,
            last: 9105,
        }
    }

    /// A host where 9101 and 9103 are taken, 9104 fails oddly, and from `short_from` on the
    /// checking process is out of descriptors.
    fn host(short_from: u16) -> impl FnMut(u16) -> PortState {
        move |p| match p {
            p if p >= short_from => PortState::Unknown {
                errno: libc::EMFILE,
                shortage: Some(Shortage::Descriptors),
            },
            9101 | 9103 => PortState::InUse,
            9104 => PortState::Unknown {
                errno: libc::EADDRNOTAVAIL,
                shortage: None,
            },
            _ => PortState::Free,
        }
    }

    #[test]
    fn picking_skips_ours_and_taken_ports_and_stops_at_a_shortage() {
        let ours: BTreeSet<u16> = [9100].into();
        let all = || 9100..=9105;
        // (candidates, shortage from port, picked or the port that could not be checked)
        type Row = (Vec<u16>, u16, Result<u16, Option<u16>>);
        let table: [Row; 6] = [
            (all().collect(), u16::MAX, Ok(9102)),
            (
                [9103].into_iter().chain(all()).collect(),
                u16::MAX,
                Ok(9102),
            ),
            (
                [9105].into_iter().chain(all()).collect(),
                u16::MAX,
                Ok(9105),
            ),
            (vec![9100, 9101, 9103, 9104], u16::MAX, Err(None)),
            (all().collect(), 9102, Err(Some(9102))),
            (all().collect(), 9100, Err(Some(9101))),
        ];
        for (candidates, short_from, want) in table {
            let got = pick_with(candidates.clone(), &ours, host(short_from))
                .map_err(|u| u.map(|u| u.port));
            assert_eq!(got, want, "{candidates:?}, short from {short_from}");
        }
    }

    #[test]
    fn a_shortage_is_never_reported_as_ports_in_use() {
        let ours: BTreeSet<u16> = [9100].into();
        let fine = survey_with(range(), &ours, host(u16::MAX));
        assert_eq!(fine.free, [9102, 9105]);
        assert_eq!(fine.in_use, [9101, 9103]);
        assert_eq!(fine.unknown, [9104]);
        assert_eq!(fine.unchecked, None);
        assert_eq!(
            describe_survey(range(), &ours, &fine),
            "no free port in 9100-9105 (1 used by jarfleet instances, 2 in use by other processes: 9101, 9103, 1 could not be bound)"
        );

        let short = survey_with(range(), &ours, host(9100));
        assert!(short.in_use.is_empty() && short.free.is_empty());
        let text = describe_survey(range(), &ours, &short);
        assert!(
            text.starts_with(
                "no port picked in 9100-9105: could not check whether port 9101 is free: out of file descriptors (limit "
            ),
            "{text}"
        );
        assert!(text.ends_with("no port was marked as taken"), "{text}");
        assert!(!text.contains("in use by other processes"), "{text}");
    }
}
