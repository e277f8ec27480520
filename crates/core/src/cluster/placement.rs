//! Which node an instance goes to. For the small clusters jarfleet is made for (3-20 hosts):
//!
//! 1. **filter**: the node is up and eligible (not marked ineligible, not draining), has every
//!    label the app asks for, has the instance's memory free, and runs fewer of the app's
//!    instances than `max_per_node`;
//! 2. **score**: fewest instances of this app (spread), then least memory in use;
//! 3. **tie-break** by rendezvous hash of (app, slot, node), so the same question gets the
//!    same answer on every scheduler and placements do not move when nothing changed.
//!
//! Nothing here moves what already runs: the scheduler asks only for slots that have no live
//! node.

use std::collections::BTreeMap;

use crate::units::format_size;

/// A node as placement sees it during one scheduling pass: what it offers and what is already
/// placed on it (updated by [`Usage::take`] as the pass places instances).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUse {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Memory it offers to instances.
    pub memory: u64,
    /// `None`: it can take new instances; `Some(why)`: it cannot ("down", "ineligible",
    /// "draining").
    pub closed: Option<&'static str>,
    /// Memory counted for what is placed on it.
    pub used: u64,
    /// Instances placed on it, per app.
    pub per_app: BTreeMap<String, u32>,
}

/// One instance to place.
#[derive(Debug, Clone, Copy)]
pub struct Need<'a> {
    pub app: &'a str,
    pub slot: u32,
    pub memory: u64,
    pub max_per_node: Option<u32>,
    pub node_labels: &'a BTreeMap<String, String>,
}

/// Every node of the cluster, with what is placed on each.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub nodes: Vec<NodeUse>,
}

impl Usage {
    /// Counts an instance of `app` needing `memory` as placed on `node` (ignored for a node
    /// not in the table: a placement on a node that is gone counts nowhere).
    pub fn take(&mut self, node: &str, app: &str, memory: u64) {
        if let Some(n) = self.nodes.iter_mut().find(|n| n.name == node) {
            n.used = n.used.saturating_add(memory);
            *n.per_app.entry(app.to_string()).or_default() += 1;
        }
    }

    /// The node for `need`, leaving out `avoid` (e.g. the node it keeps failing on) — or why
    /// none fits, one reason per node.
    pub fn choose(&self, need: &Need<'_>, avoid: Option<&str>) -> Result<String, String> {
        let mut best: Option<(&NodeUse, Score)> = None;
        let mut why_not = Vec::new();
        for node in &self.nodes {
            if let Err(why) = fits(node, need, avoid) {
                why_not.push(format!("{}: {why}", node.name));
                continue;
            }
            let score = (
                node.per_app.get(need.app).copied().unwrap_or(0),
                node.used,
                std::cmp::Reverse(rendezvous(need.app, need.slot, &node.name)),
            );
            if best.as_ref().is_none_or(|(_, s)| score < *s) {
                best = Some((node, score));
            }
        }
        match best {
            Some((node, _)) => Ok(node.name.clone()),
            None if self.nodes.is_empty() => Err("no node has joined the cluster".into()),
            None => Err(format!("no node fits ({})", why_not.join("; "))),
        }
    }
}

/// Lower is better: the app's instances on the node, memory in use, then the rendezvous hash
/// (highest wins).
type Score = (u32, u64, std::cmp::Reverse<u64>);

/// Whether `node` can take `need`, or why not.
fn fits(node: &NodeUse, need: &Need<'_>, avoid: Option<&str>) -> Result<(), String> {
    if let Some(why) = node.closed {
        return Err(why.to_string());
    }
    if avoid == Some(node.name.as_str()) {
        return Err("the instance failed there".into());
    }
    for (label, want) in need.node_labels {
        match node.labels.get(label) {
            Some(have) if have == want => {}
            Some(have) => return Err(format!("label {label}={have}, not {want}")),
            None => return Err(format!("no label {label}")),
        }
    }
    let here = node.per_app.get(need.app).copied().unwrap_or(0);
    if let Some(max) = need.max_per_node
        && here >= max
    {
        return Err(format!("already runs {here} (max_per_node = {max})"));
    }
    let free = node.memory.saturating_sub(node.used);
    if need.memory > free {
        return Err(format!(
            "{} free, {} needed",
            format_size(free),
            format_size(need.memory)
        ));
    }
    Ok(())
}

/// Rendezvous (highest random weight) hash of a slot on a node: FNV-1a over the three names,
/// finished with a 64-bit mix so that close names spread. Fixed here, not `std`'s hasher,
/// whose output may change between Rust releases (schedulers of two builds must agree).
pub fn rendezvous(app: &str, slot: u32, node: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let slot = slot.to_le_bytes();
    for part in [app.as_bytes(), &[0], &slot, &[0], node.as_bytes()] {
        for b in part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    // splitmix64's finaliser.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn node(name: &str, memory_mib: u64) -> NodeUse {
        NodeUse {
            name: name.into(),
            labels: BTreeMap::new(),
            memory: memory_mib * MIB,
            closed: None,
            used: 0,
            per_app: BTreeMap::new(),
        }
    }

    fn need<'a>(app: &'a str, slot: u32, labels: &'a BTreeMap<String, String>) -> Need<'a> {
        Need {
            app,
            slot,
            memory: 512 * MIB,
            max_per_node: None,
            node_labels: labels,
        }
    }

    #[test]
    fn instances_spread_across_nodes_before_doubling_up() {
        let none = BTreeMap::new();
        let mut usage = Usage {
            nodes: vec![node("a", 4096), node("b", 4096), node("c", 4096)],
        };
        let mut placed = Vec::new();
        for slot in 0..6 {
            let n = usage.choose(&need("web", slot, &none), None).expect("fits");
            usage.take(&n, "web", 512 * MIB);
            placed.push(n);
        }
        for name in ["a", "b", "c"] {
            assert_eq!(
                placed.iter().filter(|n| *n == name).count(),
                2,
                "{placed:?}"
            );
        }
    }

    #[test]
    fn the_same_question_gets_the_same_answer() {
        let none = BTreeMap::new();
        let usage = Usage {
            nodes: vec![node("a", 4096), node("b", 4096), node("c", 4096)],
        };
        let mut reversed = usage.clone();
        reversed.nodes.reverse();
        for slot in 0..50 {
            assert_eq!(
                usage.choose(&need("web", slot, &none), None),
                reversed.choose(&need("web", slot, &none), None)
            );
        }
        // And different slots do not all land on one node.
        let firsts: std::collections::BTreeSet<String> = (0..50)
            .filter_map(|s| usage.choose(&need("web", s, &none), None).ok())
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn filters_say_why_no_node_fits() {
        let mut zone = BTreeMap::new();
        zone.insert("zone".to_string(), "a".to_string());
        let mut down = node("a", 4096);
        down.closed = Some("down");
        let mut other_zone = node("b", 4096);
        other_zone.labels.insert("zone".into(), "b".into());
        let mut full = node("c", 1024);
        full.labels.insert("zone".into(), "a".into());
        full.used = 768 * MIB;
        let usage = Usage {
            nodes: vec![down, other_zone, full],
        };
        let err = usage
            .choose(&need("web", 0, &zone), None)
            .expect_err("none fits");
        assert_eq!(
            err,
            "no node fits (a: down; b: label zone=b, not a; c: 256MiB free, 512MiB needed)"
        );

        let none = BTreeMap::new();
        let mut one = Usage {
            nodes: vec![node("a", 4096)],
        };
        let mut capped = need("web", 1, &none);
        capped.max_per_node = Some(1);
        one.take("a", "web", 512 * MIB);
        let err = one.choose(&capped, None).expect_err("capped");
        assert!(err.contains("max_per_node = 1"), "{err}");
        assert_eq!(
            one.choose(&need("web", 1, &none), Some("a")),
            Err("no node fits (a: the instance failed there)".into())
        );
        assert_eq!(
            Usage::default().choose(&need("web", 0, &none), None),
            Err("no node has joined the cluster".into())
        );
    }
}
