//! Settings that are fine alone but clash across apps: two listeners on one address, a listener
//! on the daemon's own API address, apps sharing a port range too small for all of them. Pure
//! comparisons of what was written (no name resolution; `localhost` counts as loopback).

use super::PortRange;

/// The host part of an address, as far as binding is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    /// `0.0.0.0`: every IPv4 address.
    AnyV4,
    /// `[::]`: every address (dual-stack by default on Linux).
    Any,
    /// An IPv4 address, or a name (compared in lower case; `localhost` is `127.0.0.1`).
    V4OrName(String),
    /// A bracketed IPv6 address, normalised (`[::1]`).
    V6(core::net::Ipv6Addr),
}

/// `[scheme://]host:port` (already checked by `check::host_port`) → (host, port).
fn split(addr: &str) -> Option<(Host, u16)> {
    let addr = addr.trim();
    let addr = addr
        .strip_prefix("tcp://")
        .or_else(|| addr.strip_prefix("http://"))
        .unwrap_or(addr);
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: core::net::Ipv6Addr = v6.parse().ok()?;
        if ip.is_unspecified() {
            Host::Any
        } else {
            Host::V6(ip)
        }
    } else if host == "0.0.0.0" {
        Host::AnyV4
    } else if host.eq_ignore_ascii_case("localhost") {
        Host::V4OrName("127.0.0.1".into())
    } else {
        Host::V4OrName(host.to_ascii_lowercase())
    };
    Some((host, port))
}

/// Whether two listen addresses cannot both be bound: same port, and the same host or a
/// wildcard covering the other.
pub(crate) fn addresses_clash(a: &str, b: &str) -> bool {
    let (Some((ha, pa)), Some((hb, pb))) = (split(a), split(b)) else {
        return false;
    };
    if pa != pb {
        return false;
    }
    match (&ha, &hb) {
        (Host::Any, _) | (_, Host::Any) => true,
        (Host::AnyV4, Host::V6(_)) | (Host::V6(_), Host::AnyV4) => false,
        (Host::AnyV4, _) | (_, Host::AnyV4) => true,
        _ => ha == hb,
    }
}

/// An app whose range can run out of ports because others share it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shortfall {
    /// Index (into the input) of the app short of ports.
    pub at: usize,
    /// The apps whose ranges overlap its own, by index.
    pub others: Vec<usize>,
    /// The ports left to it when the others' instances take the shared ports first.
    pub left: u32,
}

/// Apps (`(range, instances)`) whose instances may find no port: every other app whose range
/// overlaps takes up to its instance count of the shared ports (the worst case), and fewer
/// ports than the app's instances are left. Ranges that share ports with room for everyone
/// are fine. O(n log n) plus the overlaps.
pub(crate) fn port_shortfalls(apps: &[(PortRange, u32)]) -> Vec<Shortfall> {
    let mut order: Vec<usize> = (0..apps.len()).collect();
    order.sort_by_key(|&i| (apps[i].0.first, i));
    // The furthest `last` among the ranges sorted before each position.
    let mut reach = Vec::with_capacity(order.len());
    let mut furthest = 0u16;
    for &i in &order {
        furthest = furthest.max(apps[i].0.last);
        reach.push(furthest);
    }
    let mut out = Vec::new();
    for (pos, &i) in order.iter().enumerate() {
        let (range, instances) = apps[i];
        let mut others = Vec::new();
        // Later ranges start within this one …
        for &j in &order[pos + 1..] {
            if apps[j].0.first > range.last {
                break;
            }
            others.push(j);
        }
        // … earlier ones reach into it.
        for back in (0..pos).rev() {
            if reach[back] < range.first {
                break;
            }
            let j = order[back];
            if apps[j].0.last >= range.first {
                others.push(j);
            }
        }
        if others.is_empty() {
            continue;
        }
        let size = u32::from(range.last - range.first) + 1;
        let taken: u32 = others
            .iter()
            .map(|&j| {
                let shared = u32::from(apps[j].0.last.min(range.last))
                    - u32::from(apps[j].0.first.max(range.first))
                    + 1;
                apps[j].1.min(shared)
            })
            .sum();
        let left = size.saturating_sub(taken);
        if left < instances {
            others.sort_unstable();
            out.push(Shortfall {
                at: i,
                others,
                left,
            });
        }
    }
    out.sort_by_key(|s| s.at);
    out
}

/// A range as wide as `width` ports starting after every range in `taken`, if one fits.
pub(crate) fn free_range_after(taken: &[PortRange], width: u16) -> Option<PortRange> {
    let start = taken.iter().map(|r| r.last).max()?.checked_add(1)?;
    let last = start.checked_add(width.checked_sub(1)?)?;
    Some(PortRange { first: start, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let cases = [
            ("0.0.0.0:8080", "0.0.0.0:8080", true),
            ("0.0.0.0:8080", "tcp://0.0.0.0:8080", true),
            ("http://127.0.0.1:8080", "127.0.0.1:8080", true),
            ("0.0.0.0:8080", "127.0.0.1:8080", true),
            ("localhost:8080", "127.0.0.1:8080", true),
            ("LOCALHOST:8080", "localhost:8080", true),
            ("[::]:8080", "127.0.0.1:8080", true),
            ("[::]:8080", "[::1]:8080", true),
            ("[::1]:8080", "[0:0:0:0:0:0:0:1]:8080", true),
            ("0.0.0.0:8080", "[::1]:8080", false),
            ("127.0.0.1:8080", "127.0.0.2:8080", false),
            ("0.0.0.0:8080", "0.0.0.0:8081", false),
            ("[::1]:8080", "127.0.0.1:8080", false),
            ("nonsense", "0.0.0.0:8080", false),
        ];
        for (a, b, want) in cases {
            assert_eq!(addresses_clash(a, b), want, "{a} vs {b}");
            assert_eq!(addresses_clash(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn free_ranges() {
        let r = |first, last| PortRange { first, last };
        assert_eq!(
            free_range_after(&[r(9100, 9199), r(9000, 9300)], 100),
            Some(r(9301, 9400))
        );
        assert_eq!(free_range_after(&[r(9100, 65535)], 1), None);
        assert_eq!(free_range_after(&[r(9100, 65500)], 100), None);
        assert_eq!(free_range_after(&[], 10), None);
    }

    #[test]
    fn shared_ranges_are_refused_only_when_someone_can_run_out() {
        let r = |first, last| PortRange { first, last };
        // (apps as (range, instances), the short ones as (index, others, ports left))
        type Case = (Vec<(PortRange, u32)>, Vec<(usize, Vec<usize>, u32)>);
        let cases: Vec<Case> = vec![
            // Apart.
            (vec![(r(9100, 9199), 3), (r(9200, 9299), 3)], vec![]),
            // One range shared by three small apps, with room for all (as tests often do).
            (
                vec![(r(9100, 9109), 2), (r(9100, 9109), 2), (r(9100, 9109), 1)],
                vec![],
            ),
            // Three ports, three + two instances: both can run out.
            (
                vec![(r(9100, 9102), 3), (r(9101, 9103), 2)],
                vec![(0, vec![1], 1), (1, vec![0], 1)],
            ),
            // A single port each, the same port.
            (
                vec![(r(9300, 9300), 1), (r(9300, 9309), 10)],
                vec![(0, vec![1], 0), (1, vec![0], 9)],
            ),
            // A long early range reaching over a later one.
            (
                vec![(r(9000, 9500), 1), (r(9100, 9100), 1), (r(9200, 9200), 1)],
                vec![(1, vec![0], 0), (2, vec![0], 0)],
            ),
        ];
        for (apps, want) in cases {
            let got: Vec<(usize, Vec<usize>, u32)> = port_shortfalls(&apps)
                .into_iter()
                .map(|s| (s.at, s.others, s.left))
                .collect();
            assert_eq!(got, want, "{apps:?}");
        }
    }
}
