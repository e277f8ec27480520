//! What a lab is called and where it lives, all derived from its index, so that the index alone
//! (held by a lock, see `index.rs`) makes every name and address of a lab its own, and a crashed
//! lab's leftovers can be recognised by the next lab that takes the same index.
//!
//! - Addresses: 198.18.0.0/15 is set aside for network benchmarks (RFC 2544) and never routed
//!   off the machine. It holds 512 /24 subnets: index `i` gets `198.(18 + i / 256).(i % 256).0/24`,
//!   the bridge `.1`, host `n` `.(n + 2)`.
//! - Interface names stay within Linux's 15 characters: bridge `jfbr<i>`, the root end of host
//!   `n`'s veth `jf<i>v<n>` (at most `jf511v252`), namespace `jf<i>h<n>`.
//! - MAC addresses are fixed (locally administered, `02:4a:66` = "Jf", then the index and the
//!   address's last byte), so every neighbour entry can be written before any packet flows.

use std::net::Ipv4Addr;

/// How many labs can exist at once: the /24 subnets of 198.18.0.0/15.
pub const INDEXES: u16 = 512;
/// The most hosts a lab can have: `.2` to `.254` of its /24.
pub const MAX_HOSTS: usize = 253;

/// A lab's index, `0..INDEXES`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LabId(u16);

impl LabId {
    /// `None` when `index` is past the last /24 of 198.18.0.0/15.
    pub fn new(index: u16) -> Option<LabId> {
        (index < INDEXES).then_some(LabId(index))
    }

    pub fn index(self) -> u16 {
        self.0
    }

    pub fn bridge(self) -> String {
        format!("jfbr{}", self.0)
    }

    /// The network namespace of host `host`.
    pub fn netns(self, host: usize) -> String {
        format!("jf{}h{host}", self.0)
    }

    /// The root-namespace end of host `host`'s veth pair (the end on the bridge).
    pub fn veth(self, host: usize) -> String {
        format!("jf{}v{host}", self.0)
    }

    pub fn bridge_ip(self) -> Ipv4Addr {
        self.address(1)
    }

    pub fn host_ip(self, host: usize) -> Ipv4Addr {
        self.address(host_byte(host))
    }

    pub fn bridge_mac(self) -> String {
        self.mac(1)
    }

    /// The MAC of host `host`'s `eth0`.
    pub fn host_mac(self, host: usize) -> String {
        self.mac(host_byte(host))
    }

    /// Whether `name` (from `ip netns list`) is one of this index's namespaces, whatever the
    /// number of hosts of the lab that made it.
    pub fn owns_netns(self, name: &str) -> bool {
        self.numbered(name, 'h')
    }

    /// Whether `name` (from `ip link`, without any `@peer` suffix) is this index's bridge or
    /// the root end of one of its veth pairs.
    pub fn owns_link(self, name: &str) -> bool {
        name == self.bridge() || self.numbered(name, 'v')
    }

    /// `name` is exactly `jf<index><kind><digits>`.
    fn numbered(self, name: &str, kind: char) -> bool {
        let Some(rest) = name.strip_prefix("jf") else {
            return false;
        };
        let Some((index, host)) = rest.split_once(kind) else {
            return false;
        };
        index == self.0.to_string() && !host.is_empty() && host.bytes().all(|b| b.is_ascii_digit())
    }

    fn address(self, last: u8) -> Ipv4Addr {
        let [high, low] = self.0.to_be_bytes();
        Ipv4Addr::new(198, 18 + high, low, last)
    }

    fn mac(self, last: u8) -> String {
        let [high, low] = self.0.to_be_bytes();
        format!("02:4a:66:{high:02x}:{low:02x}:{last:02x}")
    }
}

/// The last byte of host `host`'s address; callers keep `host < MAX_HOSTS`.
fn host_byte(host: usize) -> u8 {
    assert!(
        host < MAX_HOSTS,
        "host {host}: a lab has at most {MAX_HOSTS}"
    );
    // At most 254: fits.
    (host + 2) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_follow_the_index() {
        let cases = [
            (
                0,
                "jfbr0",
                "jf0h0",
                "jf0v0",
                [198, 18, 0, 1],
                [198, 18, 0, 2],
            ),
            (
                7,
                "jfbr7",
                "jf7h0",
                "jf7v0",
                [198, 18, 7, 1],
                [198, 18, 7, 2],
            ),
            (
                256,
                "jfbr256",
                "jf256h0",
                "jf256v0",
                [198, 19, 0, 1],
                [198, 19, 0, 2],
            ),
            (
                511,
                "jfbr511",
                "jf511h0",
                "jf511v0",
                [198, 19, 255, 1],
                [198, 19, 255, 2],
            ),
        ];
        for (index, bridge, netns, veth, bridge_ip, host_ip) in cases {
            let id = LabId::new(index).expect("in range");
            assert_eq!(id.bridge(), bridge);
            assert_eq!(id.netns(0), netns);
            assert_eq!(id.veth(0), veth);
            assert_eq!(id.bridge_ip(), Ipv4Addr::from(bridge_ip));
            assert_eq!(id.host_ip(0), Ipv4Addr::from(host_ip));
        }
        assert_eq!(LabId::new(INDEXES), None);
    }

    #[test]
    fn the_longest_names_fit_linux_interface_names() {
        let id = LabId::new(INDEXES - 1).expect("in range");
        for name in [id.bridge(), id.veth(MAX_HOSTS - 1), id.netns(MAX_HOSTS - 1)] {
            assert!(name.len() <= 15, "{name} is longer than IFNAMSIZ - 1");
        }
        assert_eq!(id.host_ip(MAX_HOSTS - 1), Ipv4Addr::new(198, 19, 255, 254));
    }

    #[test]
    fn macs_are_locally_administered_and_distinct() {
        let a = LabId::new(258).expect("in range");
        assert_eq!(a.bridge_mac(), "02:4a:66:01:02:01");
        assert_eq!(a.host_mac(0), "02:4a:66:01:02:02");
        assert_eq!(a.host_mac(252), "02:4a:66:01:02:fe");
        let b = LabId::new(2).expect("in range");
        assert_ne!(a.host_mac(0), b.host_mac(0));
    }

    #[test]
    fn leftovers_of_an_index_are_recognised_and_nothing_else() {
        let id = LabId::new(3).expect("in range");
        for ours in ["jf3h0", "jf3h17"] {
            assert!(id.owns_netns(ours), "{ours}");
        }
        for ours in ["jfbr3", "jf3v0", "jf3v252"] {
            assert!(id.owns_link(ours), "{ours}");
        }
        for other in [
            "jf31h0", "jf03h0", "jf3h", "jf3hx", "jf3v0", "jfbr3", "xjf3h0", "jf3h0 ", "eth0",
        ] {
            assert!(!id.owns_netns(other), "{other}");
        }
        for other in [
            "jfbr31", "jfbr", "jf31v0", "jf3h0", "jf3v", "jf3v1a", "eth0", "ifb0", "jf33v1",
        ] {
            assert!(!id.owns_link(other), "{other}");
        }
    }
}
