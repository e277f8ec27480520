//! Port pre-flight: a taken port is skipped (or a clear error), never a crash loop.

use std::collections::BTreeSet;
use std::net::TcpListener;

use jarfleet_core::spec::PortRange;

/// Whether nothing listens on `port` (any address).
pub fn is_free(port: u16) -> bool {
    TcpListener::bind(("0.0.0.0", port)).is_ok() && TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Picks a port for an instance: `preferred` (the slot's previous port) if still free, else the
/// lowest free port of the range not held by another of our instances.
pub fn pick(range: PortRange, preferred: Option<u16>, ours: &BTreeSet<u16>) -> Result<u16, String> {
    if let Some(p) = preferred
        && p >= range.first
        && p <= range.last
        && !ours.contains(&p)
        && is_free(p)
    {
        return Ok(p);
    }
    (range.first..=range.last)
        .find(|p| !ours.contains(p) && is_free(*p))
        .ok_or_else(|| describe_exhausted(range, ours))
}

/// Ports of the range that are neither ours nor free.
pub fn taken_by_others(range: PortRange, ours: &BTreeSet<u16>) -> Vec<u16> {
    (range.first..=range.last)
        .filter(|p| !ours.contains(p) && !is_free(*p))
        .collect()
}

pub fn describe_exhausted(range: PortRange, ours: &BTreeSet<u16>) -> String {
    let others = taken_by_others(range, ours);
    let shown: Vec<String> = others.iter().take(5).map(u16::to_string).collect();
    format!(
        "no free port in {}-{} ({} used by jarfleet instances, {} in use by other processes{})",
        range.first,
        range.last,
        ours.iter()
            .filter(|p| **p >= range.first && **p <= range.last)
            .count(),
        others.len(),
        if shown.is_empty() {
            String::new()
        } else {
            format!(": {}", shown.join(", "))
        }
    )
}
