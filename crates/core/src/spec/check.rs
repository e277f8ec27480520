//! Small pure validators for spec values. Each returns a message meant to follow
//! "<key> = <value>: ".

use super::PortRange;

/// `[a-z0-9][a-z0-9_-]{0,39}`.
pub fn app_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("an app name cannot be empty".into());
    }
    if name.len() > 40 {
        return Err(format!(
            "app name is {} characters long; at most 40 are allowed",
            name.len()
        ));
    }
    let mut chars = name.chars();
    if !matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit()) {
        return Err(format!(
            "app name `{name}` must start with a lowercase letter or a digit"
        ));
    }
    if let Some(bad) =
        chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "app name `{name}` contains `{bad}`; use a-z, 0-9, `-` and `_`"
        ));
    }
    Ok(())
}

/// `host:port` with a non-empty host (IPv4, `[IPv6]` or a DNS name) and a port 1..=65535.
pub fn host_port(text: &str) -> Result<(), String> {
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err("expected host:port".into());
    };
    if host.is_empty() {
        return Err("the host is missing; use 0.0.0.0:PORT for every interface".into());
    }
    match port.parse::<u16>() {
        Ok(0) => return Err("port 0 is not allowed".into()),
        Ok(_) => {}
        Err(_) if port.is_empty() => return Err("the port is missing".into()),
        Err(_) => return Err(format!("`{port}` is not a port number (1-65535)")),
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<core::net::Ipv6Addr>()
            .map(|_| ())
            .map_err(|_| format!("`{v6}` is not an IPv6 address"));
    }
    if host.contains(':') {
        return Err("write an IPv6 address in brackets, e.g. [::1]:9900".into());
    }
    let dns_ok = host.split('.').all(|label| {
        !label.is_empty() && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    if !dns_ok {
        return Err(format!("`{host}` is not a valid host name or address"));
    }
    Ok(())
}

/// `"9100-9199"` or `"9100"`: ports 1..=65535, first <= last.
pub(crate) fn port_range(text: &str) -> Result<PortRange, String> {
    let port = |s: &str| -> Result<u16, String> {
        match s.trim().parse::<u32>() {
            Ok(p @ 1..=65535) => Ok(p as u16),
            Ok(p) => Err(format!("port {p} is out of range (1-65535)")),
            Err(_) => Err(format!("`{}` is not a port number", s.trim())),
        }
    };
    let (first, last) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("the range is reversed; write \"{last}-{first}\""));
    }
    Ok(PortRange { first, last })
}

/// A Java binary class name: dot-separated identifiers, e.g. `org.h2.tools.Server`.
pub(crate) fn java_class(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("a main class cannot be empty".into());
    }
    if name.ends_with(".class") || name.contains('/') {
        return Err(
            "write the class name with dots, without `.class` (e.g. com.example.Main)".into(),
        );
    }
    let ident_ok = |part: &str| {
        let mut chars = part.chars();
        matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_' || c == '$')
            && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    };
    if !name.split('.').all(ident_ok) {
        return Err("not a Java class name (expected e.g. com.example.Main)".into());
    }
    Ok(())
}

/// Levenshtein distance (small strings only).
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Words users bring from other tools, and the key we use for them.
const SYNONYMS: &[(&str, &str)] = &[
    ("replicas", "instances"),
    ("count", "instances"),
    ("jar", "artifact"),
    ("main", "main_class"),
    ("cp", "classpath"),
    ("jvm", "java"),
    ("environment", "env"),
    ("healthcheck", "health"),
    ("arguments", "args"),
    ("port", "ports"),
];

/// The known key closest to `key`, if it is close enough to be a plausible typo.
pub(crate) fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase().replace('-', "_");
    if let Some(&(_, ours)) = SYNONYMS.iter().find(|(theirs, _)| *theirs == lower)
        && let Some(k) = known.iter().find(|k| **k == ours)
    {
        return Some(k);
    }

    known
        .iter()
        .map(|k| (distance(&lower, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1) || (k.len() >= 4 && lower.starts_with(*k)))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// A Unix user name: `[a-z_][a-z0-9_-]*`, at most 32 characters (optionally ending in `$`).
pub fn user_name(s: &str) -> Result<(), String> {
    let body = s.strip_suffix('$').unwrap_or(s);
    let mut chars = body.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if first_ok && rest_ok && s.len() <= 32 {
        Ok(())
    } else {
        Err(format!("`{s}` is not a valid user name"))
    }
}

/// A host name a client may send in `Host` (`[daemon] http_hosts`): a DNS name, an IPv4
/// address or an `[IPv6]` address, without a port. Returns it in lower case without a trailing
/// dot, the form it is compared in.
pub fn host_name(text: &str) -> Result<String, String> {
    let host = text.trim();
    if host.is_empty() {
        return Err("a host name cannot be empty".into());
    }
    if host.contains("://") || host.contains('/') {
        return Err("write the host name only, without a scheme or a path".into());
    }
    if host.contains('*') {
        return Err("wildcards are not accepted; list every name".into());
    }
    if let Some(inner) = host.strip_prefix('[') {
        let Some((v6, rest)) = inner.split_once(']') else {
            return Err(format!("`{host}` lacks its closing `]`"));
        };
        if !rest.is_empty() {
            return Err("write the address without a port: every port is accepted".into());
        }
        return match v6.parse::<core::net::Ipv6Addr>() {
            Ok(_) => Ok(host.to_ascii_lowercase()),
            Err(_) => Err(format!("`{v6}` is not an IPv6 address")),
        };
    }
    if let Some((_, port)) = host.rsplit_once(':') {
        if host.matches(':').count() == 1 && port.bytes().all(|b| b.is_ascii_digit()) {
            return Err("write the name without a port: every port is accepted".into());
        }
        return Err("write an IPv6 address in brackets, e.g. [::1]".into());
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return Err(format!("`{host}` is not a valid host name or address"));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("dash.example.com", Ok("dash.example.com")),
            (" Dash.Example.COM. ", Ok("dash.example.com")),
            ("localhost", Ok("localhost")),
            ("10.0.0.5", Ok("10.0.0.5")),
            ("[::1]", Ok("[::1]")),
            ("[FE80::1]", Ok("[fe80::1]")),
            ("", Err("cannot be empty")),
            ("dash.example.com:443", Err("without a port")),
            ("[::1]:9900", Err("without a port")),
            ("::1", Err("in brackets")),
            ("[::1", Err("closing")),
            ("[nope]", Err("not an IPv6 address")),
            ("https://dash.example.com", Err("without a scheme")),
            ("dash.example.com/ui", Err("without a scheme or a path")),
            ("*.example.com", Err("wildcards")),
            ("dash..example.com", Err("not a valid host name")),
            ("dash_board.example.com", Err("not a valid host name")),
            ("dash board", Err("not a valid host name")),
        ];
        for (text, want) in cases {
            match (host_name(text), want) {
                (Ok(got), Ok(want)) => assert_eq!(&got, want, "{text:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text:?}: {got}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn app_names() {
        let cases: &[(&str, bool)] = &[
            ("orders", true),
            ("0rders-v2_x", true),
            ("a", true),
            (&"a".repeat(40), true),
            (&"a".repeat(41), false),
            ("", false),
            ("Orders", false),
            ("-orders", false),
            ("or.ders", false),
            ("ordérs", false),
        ];
        for (name, ok) in cases {
            assert_eq!(app_name(name).is_ok(), *ok, "{name}");
        }
    }

    #[test]
    fn host_ports() {
        let cases: &[(&str, bool)] = &[
            ("127.0.0.1:9900", true),
            ("0.0.0.0:80", true),
            ("localhost:9900", true),
            ("[::1]:9900", true),
            ("::1:9900", false),
            (":9900", false),
            ("localhost", false),
            ("localhost:", false),
            ("localhost:0", false),
            ("localhost:70000", false),
            ("local host:80", false),
            ("[nope]:80", false),
        ];
        for (text, ok) in cases {
            assert_eq!(host_port(text).is_ok(), *ok, "{text}");
        }
    }

    #[test]
    fn port_ranges() {
        let ok: &[(&str, u16, u16)] = &[
            ("9100-9199", 9100, 9199),
            ("9100", 9100, 9100),
            (" 1 - 2 ", 1, 2),
        ];
        for (text, first, last) in ok {
            assert_eq!(
                port_range(text),
                Ok(PortRange {
                    first: *first,
                    last: *last
                }),
                "{text}"
            );
        }
        let bad: &[(&str, &str)] = &[
            ("9199-9100", "the range is reversed; write \"9100-9199\""),
            ("0", "port 0 is out of range (1-65535)"),
            ("9100-70000", "port 70000 is out of range (1-65535)"),
            ("http", "`http` is not a port number"),
            ("9100:9199", "`9100:9199` is not a port number"),
        ];
        for (text, err) in bad {
            assert_eq!(port_range(text), Err(err.to_string()), "{text}");
        }
    }

    #[test]
    fn class_names() {
        let cases: &[(&str, bool)] = &[
            ("org.h2.tools.Server", true),
            ("Main", true),
            ("a.b$Inner", true),
            ("", false),
            ("org/h2/Server", false),
            ("Main.class", false),
            ("org..Main", false),
            ("1org.Main", false),
            ("org.Main ", false),
        ];
        for (name, ok) in cases {
            assert_eq!(java_class(name).is_ok(), *ok, "{name}");
        }
    }

    #[test]
    fn suggestions() {
        let known = [
            "artifact",
            "instances",
            "ports",
            "env",
            "health",
            "max_size",
            "keep",
        ];
        let cases: &[(&str, Option<&str>)] = &[
            ("instnces", Some("instances")),
            ("Instances", Some("instances")),
            ("port", Some("ports")),
            ("artefact", Some("artifact")),
            ("max-size", Some("max_size")),
            ("max_size_mb", Some("max_size")),
            ("envs", Some("env")),
            ("replicas", Some("instances")),
            ("sidecars", None),
            ("x", None),
        ];
        for (key, want) in cases {
            assert_eq!(closest(key, &known), *want, "{key}");
        }
    }
}
