//! Settings that are fine alone but clash across apps: two listeners on one address, a listener
//! on the daemon's own API address, two apps with overlapping port ranges. Pure comparisons of
//! what was written (no name resolution; `localhost` counts as loopback).

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

/// Whether two port ranges share a port.
pub(crate) fn ranges_overlap(a: PortRange, b: PortRange) -> bool {
    a.first <= b.last && b.first <= a.last
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
    fn ranges() {
        let r = |first, last| PortRange { first, last };
        let cases = [
            (r(9100, 9199), r(9150, 9250), true),
            (r(9100, 9199), r(9199, 9199), true),
            (r(9100, 9199), r(9000, 9100), true),
            (r(9100, 9199), r(9200, 9299), false),
            (r(9100, 9100), r(9101, 9101), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(ranges_overlap(a, b), want, "{a:?} vs {b:?}");
            assert_eq!(ranges_overlap(b, a), want, "{b:?} vs {a:?}");
        }
        assert_eq!(
            free_range_after(&[r(9100, 9199), r(9000, 9300)], 100),
            Some(r(9301, 9400))
        );
        assert_eq!(free_range_after(&[r(9100, 65535)], 1), None);
        assert_eq!(free_range_after(&[r(9100, 65500)], 100), None);
        assert_eq!(free_range_after(&[], 10), None);
    }
}
