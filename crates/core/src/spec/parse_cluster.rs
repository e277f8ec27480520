//! `[cluster]` (a node's membership of a cluster) and `[apps.NAME.placement]` (where a cluster
//! may run an app): the parts of the spec that only mean something on several hosts.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::de::DeValue;

use super::check;
use super::reader::{Reader, Table};
use super::{
    ClusterSpec, ClusterTlsSpec, DEFAULT_LEASE_TTL, DEFAULT_PEER_PORT, DEFAULT_PROBE_INTERVAL,
    DEFAULT_PROBE_TIMEOUT, DEFAULT_RELAY_PORT, PlacementSpec,
};
use crate::interp::Mode;

pub(super) const CLUSTER_KEYS: &[&str] = &[
    "name",
    "etcd",
    "node",
    "advertise",
    "peer_port",
    "relay_port",
    "labels",
    "memory",
    "lease_ttl",
    "probe_interval",
    "probe_timeout",
    "tls",
];
const CLUSTER_TLS_KEYS: &[&str] = &["ca", "cert", "key"];
pub(super) const PLACEMENT_KEYS: &[&str] = &["memory", "max_per_node", "node_labels"];

/// `[cluster]`, when the spec has one.
pub(super) fn cluster(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<ClusterSpec> {
    r.check_keys(t, CLUSTER_KEYS, &[]);
    let name =
        required_string(r, t, "name", "\"prod\"").and_then(|(name, v)| {
            match check::app_name(&name) {
                Ok(()) => Some(name),
                Err(msg) => {
                    let msg = msg.replace("app name", "cluster name");
                    let hint = "1-40 characters: a-z, 0-9, `-` and `_`, e.g. name = \"prod\"";
                    r.bad(v, &t.key("name"), msg, Some(hint.into()));
                    None
                }
            }
        });
    let etcd = etcd_endpoints(r, t);
    let node = t.get("node").and_then(|v| {
        let key = t.key("node");
        let s = r.string_value(v, &key, Mode::Plain, "\"web-1\"")?;
        match node_name(&s) {
            Ok(()) => Some(s),
            Err(msg) => {
                let hint = "1-63 characters: a-z, 0-9, `.`, `-` and `_`, e.g. node = \"web-1\"";
                r.bad(v, &key, msg, Some(hint.into()));
                None
            }
        }
    });
    let advertise =
        required_string(r, t, "advertise", "\"10.0.0.11\"").and_then(|(s, v)| {
            match advertise(&s) {
                Ok(()) => Some(s),
                Err(msg) => {
                    let hint = "the IP address (or host name) other nodes reach this host on, without a port, e.g. advertise = \"10.0.0.11\"";
                    r.bad(v, &t.key("advertise"), msg, Some(hint.into()));
                    None
                }
            }
        });
    let peer_port = r
        .u32(
            t,
            "peer_port",
            1..=65_535,
            "the TCP port of this node's peer endpoint, e.g. peer_port = 9901",
        )
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_PEER_PORT);
    let relay_port = r
        .u32(
            t,
            "relay_port",
            1..=65_535,
            "the TCP port of this node's relay (with `tls`), e.g. relay_port = 9902",
        )
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_RELAY_PORT);
    if relay_port == peer_port
        && let Some(v) = t.get("relay_port").or_else(|| t.get("peer_port"))
    {
        r.bad(
            v,
            &t.key("relay_port"),
            "the same port as peer_port",
            Some(format!(
                "the relay and the peer endpoint each need a port of their own: e.g. relay_port = {}",
                peer_port.checked_add(1).unwrap_or(peer_port - 1)
            )),
        );
    }
    let labels = labels(r, t, "labels", "{ zone = \"eu-1a\", disk = \"ssd\" }");
    let memory = r.size(t, "memory");
    let lease_ttl = r
        .duration_within(
            t,
            "lease_ttl",
            (Duration::from_secs(3), Duration::from_secs(60)),
            None,
            "how long a silent node keeps its instances, e.g. lease_ttl = \"6s\"",
        )
        .unwrap_or(DEFAULT_LEASE_TTL);
    let probe_interval = r
        .duration_within(
            t,
            "probe_interval",
            (Duration::from_millis(100), Duration::from_secs(10)),
            None,
            "how often every peer is probed, e.g. probe_interval = \"500ms\"",
        )
        .unwrap_or(DEFAULT_PROBE_INTERVAL);
    let probe_timeout = r
        .duration_within(
            t,
            "probe_timeout",
            (Duration::from_millis(50), Duration::from_secs(10)),
            None,
            "how long one probe may take, e.g. probe_timeout = \"300ms\"",
        )
        .unwrap_or(DEFAULT_PROBE_TIMEOUT);
    let tls = cluster_tls(r, t);
    if let (Some(endpoints), Some(v)) = (&etcd, t.get("etcd")) {
        let over_tls = endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if t.has("tls") && over_tls < endpoints.len() {
            r.bad(
                v,
                &t.key("etcd"),
                "plain http:// etcd endpoints with `tls`",
                Some("with `tls` the node reaches etcd over TLS too, presenting its certificate: give https:// client URLs".into()),
            );
        } else if !t.has("tls") && over_tls > 0 {
            r.bad(
                v,
                &t.key("etcd"),
                "https:// etcd endpoints without `tls`",
                Some("etcd over TLS takes the node's certificate: add tls = { ca = \"tls/ca.pem\", cert = \"tls/web-1.pem\", key = \"tls/web-1.key\" }".into()),
            );
        }
    }
    if probe_timeout > probe_interval
        && let Some(v) = t.get("probe_timeout").or_else(|| t.get("probe_interval"))
    {
        let hint = format!(
            "a probe must end before the next one starts: make probe_timeout at most probe_interval ({})",
            crate::units::format_duration(probe_interval)
        );
        r.bad(
            v,
            &t.key("probe_timeout"),
            "longer than probe_interval",
            Some(hint),
        );
    }
    Some(ClusterSpec {
        name: name?,
        etcd: etcd?,
        node,
        advertise: advertise?,
        peer_port,
        relay_port,
        labels,
        memory,
        lease_ttl,
        probe_interval,
        probe_timeout,
        tls,
    })
}

/// `tls = { ca = "ca.pem", cert = "node.pem", key = "node.key" }`: all three, or no `tls`.
fn cluster_tls(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<ClusterTlsSpec> {
    let example = "{ ca = \"tls/ca.pem\", cert = \"tls/web-1.pem\", key = \"tls/web-1.key\" }";
    let tt = r.table(t, "tls", example)?;
    r.check_keys(&tt, CLUSTER_TLS_KEYS, &[]);
    let ca = r.path(&tt, "ca", "\"tls/ca.pem\"");
    let cert = r.path(&tt, "cert", "\"tls/web-1.pem\"");
    let key = r.path(&tt, "key", "\"tls/web-1.key\"");
    let missing: Vec<String> = CLUSTER_TLS_KEYS
        .iter()
        .filter(|k| !tt.has(k))
        .map(|k| format!("`{k}`"))
        .collect();
    if !missing.is_empty() {
        r.missing(
            &tt,
            format!(
                "{} missing: the nodes' TLS needs the cluster's CA, this node's certificate and its key",
                missing.join(" and ")
            ),
            Some(format!(
                "make them with `jarfleet cluster ca` and `jarfleet cluster cert`, then tls = {example}"
            )),
        );
    }
    Some(ClusterTlsSpec {
        ca: ca?,
        cert: cert?,
        key: key?,
    })
}

/// `[apps.NAME.placement]` (default: anywhere, counted at the JVM's heap).
pub(super) fn placement(r: &mut Reader<'_>, t: &Table<'_, '_>) -> PlacementSpec {
    let Some(pt) = r.table(t, "placement", "{ memory = \"768MiB\", max_per_node = 2 }") else {
        return PlacementSpec::default();
    };
    r.check_keys(&pt, PLACEMENT_KEYS, &[]);
    PlacementSpec {
        memory: r.size(&pt, "memory"),
        max_per_node: r.u32(
            &pt,
            "max_per_node",
            1..=1000,
            "at most this many instances on one node, e.g. max_per_node = 1",
        ),
        node_labels: labels(r, &pt, "node_labels", "{ zone = \"eu-1a\" }"),
    }
}

fn required_string<'t, 'i>(
    r: &mut Reader<'_>,
    t: &Table<'t, 'i>,
    key: &str,
    example: &str,
) -> Option<(String, &'t super::reader::Value<'i>)> {
    let Some(v) = t.get(key) else {
        r.missing(
            t,
            format!("[{}] needs `{key}`", t.path),
            Some(format!("{key} = {example}")),
        );
        return None;
    };
    let s = r.string_value(v, &t.key(key), Mode::Plain, example)?;
    Some((s.trim().to_string(), v))
}

fn etcd_endpoints(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<Vec<String>> {
    let example = "[\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\", \"http://10.0.0.3:2379\"]";
    let Some(items) = r.string_list(t, "etcd", Mode::Plain, example) else {
        if !t.has("etcd") {
            r.missing(
                t,
                "[cluster] needs the etcd endpoints",
                Some(format!("etcd = {example}")),
            );
        }
        return None;
    };
    let mut out = Vec::new();
    let mut ok = true;
    for (i, (e, v)) in items.into_iter().enumerate() {
        let key = format!("{}[{i}]", t.key("etcd"));
        match e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .map(|rest| check::host_port(rest.trim_end_matches('/')))
        {
            Some(Ok(())) => out.push(e.trim_end_matches('/').to_string()),
            Some(Err(msg)) => {
                r.bad(
                    v,
                    &key,
                    msg,
                    Some("an etcd client URL: http://host:port".into()),
                );
                ok = false;
            }
            None => {
                r.bad(
                    v,
                    &key,
                    "not an http:// or https:// URL",
                    Some(
                        "etcd client URLs as http://host:port, or https://host:port with `tls`"
                            .into(),
                    ),
                );
                ok = false;
            }
        }
    }
    if out.is_empty() && ok {
        r.missing(
            t,
            "[cluster] needs at least one etcd endpoint",
            Some(format!("etcd = {example}")),
        );
        return None;
    }
    ok.then_some(out)
}

/// A table of `label = "value"` pairs.
fn labels(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    key: &str,
    example: &str,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(lt) = r.table(t, key, example) else {
        return out;
    };
    for (k, v) in lt.map.iter() {
        let name: &str = k.get_ref();
        let full = lt.key(name);
        if let Err(msg) = label_name(name) {
            let hint = "label names are 1-63 characters: a-z, 0-9, `.`, `-`, `_` and `/`";
            r.push(k.span().start, &full, None, msg, Some(hint.into()));
            continue;
        }
        let value = match v.get_ref() {
            DeValue::String(s) => r.interp(s, v, &full, Mode::Plain),
            _ => {
                let hint = format!("quote it: {name} = \"{}\"", r.raw(&v.span()));
                r.bad(v, &full, "label values are strings", Some(hint));
                None
            }
        };
        let Some(value) = value else { continue };
        if let Err(msg) = label_value(&value) {
            r.bad(
                v,
                &full,
                msg,
                Some("at most 63 characters, without spaces or control characters".into()),
            );
            continue;
        }
        out.insert(name.to_string(), value);
    }
    out
}

/// A node's name: `[a-z0-9][a-z0-9._-]{0,62}` (a host name in lower case is one).
pub fn node_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a node name cannot be empty".into());
    }
    if name.len() > 63 {
        return Err(format!(
            "node name is {} characters long; at most 63 are allowed",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!(
            "node name `{name}` must start with a lowercase letter or a digit"
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "node name `{name}` contains `{bad}`; use a-z, 0-9, `.`, `-` and `_`"
        ));
    }
    Ok(())
}

fn label_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if name.is_empty() || name.len() > 63 {
        return Err(format!("label name `{name}` must be 1-63 characters"));
    }
    if let Some(bad) = name.chars().find(|c| !ok_char(*c)) {
        return Err(format!("label name `{name}` contains `{bad}`"));
    }
    Ok(())
}

fn label_value(value: &str) -> Result<(), String> {
    if value.len() > 63 {
        return Err(format!("label value is {} characters long", value.len()));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("label values cannot hold spaces or control characters".into());
    }
    Ok(())
}

/// `advertise`: an address other hosts can reach (an IP address that is not a wildcard, or a
/// host name), without a port.
fn advertise(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("the address cannot be empty".into());
    }
    if let Ok(ip) = text.trim_matches(['[', ']']).parse::<core::net::IpAddr>() {
        if ip.is_unspecified() {
            return Err(format!(
                "`{text}` means every interface; other nodes need an address they can reach"
            ));
        }
        return Ok(());
    }
    if check::host_port(&format!("{text}:1")).is_err() || text.contains(':') {
        return Err(format!(
            "`{text}` is not an IP address or a host name (write no port: peer_port sets it)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        assert!(node_name("web-1.eu").is_ok());
        assert!(node_name("Web").is_err());
        assert!(node_name("").is_err());
        assert!(node_name(&"a".repeat(64)).is_err());
        assert!(node_name("a/b").is_err());
    }

    #[test]
    fn advertise_addresses() {
        assert!(advertise("10.0.0.1").is_ok());
        assert!(advertise("::1").is_ok());
        assert!(advertise("web-1.internal").is_ok());
        assert!(advertise("0.0.0.0").is_err());
        assert!(advertise("10.0.0.1:9901").is_err());
        assert!(advertise("").is_err());
    }
}
