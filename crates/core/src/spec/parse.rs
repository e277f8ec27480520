//! TOML text → [`FleetSpec`], walking every table by hand and collecting every error.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::check;
use super::clash;
use super::error::SpecErrors;
use super::parse_cluster::{CLUSTER_KEYS, PLACEMENT_KEYS};
use super::reader::{Reader, Table, Value, type_name};
use super::{
    AppSpec, Balance, BalancerSpec, CanarySpec, DaemonSpec, DeploySpec, EtcdSource, FleetSpec,
    HealthCheck, HealthSpec, JavaSpec, Launch, LogSpec, OnChange, PortRange, RestartSpec, StopSpec,
    Strategy, TlsSpec, TrustSpec,
};
use super::{
    DEFAULT_DAEMON_LOG_KEEP, DEFAULT_DAEMON_LOG_MAX_SIZE, DEFAULT_HTTP_HEADER_TIMEOUT,
    DEFAULT_HTTP_IDLE_TIMEOUT, DEFAULT_HTTP_MAX_CONNECTIONS,
};
use crate::interp::Mode;
use crate::javaver::VersionReq;

const TOP_KEYS: &[&str] = &["daemon", "trust", "cluster", "apps"];
const DAEMON_KEYS: &[&str] = &[
    "state_dir",
    "http",
    "token_file",
    "open_reads",
    "tls",
    "metrics",
    "http_hosts",
    "http_max_connections",
    "http_header_timeout",
    "http_idle_timeout",
    "log_max_size",
    "log_keep",
];
/// The `[daemon]` keys that only mean something with an `http` address.
const DAEMON_API_KEYS: &[&str] = &[
    "token_file",
    "open_reads",
    "tls",
    "http_hosts",
    "http_max_connections",
    "http_header_timeout",
    "http_idle_timeout",
];
const TLS_KEYS: &[&str] = &["cert", "key"];
const TRUST_KEYS: &[&str] = &["keys", "ca"];
const APP_KEYS: &[&str] = &[
    "artifact",
    "sha256",
    "main_class",
    "classpath",
    "workdir",
    "config",
    "user",
    "instances",
    "ports",
    "args",
    "env",
    "java",
    "listen",
    "health",
    "restart",
    "stop",
    "logs",
    "balancer",
    "deploy",
    "placement",
];
const HEALTH_KEYS: &[&str] = &[
    "http",
    "tcp",
    "exec",
    "interval",
    "timeout",
    "failures",
    "start_timeout",
    "unhealthy_restart_after",
];
const RESTART_KEYS: &[&str] = &[
    "backoff_initial",
    "backoff_max",
    "reset_after",
    "max_restarts",
];
const STOP_KEYS: &[&str] = &["drain_timeout", "stop_timeout"];
const LOGS_KEYS: &[&str] = &["max_size", "keep"];
const BALANCER_KEYS: &[&str] = &[
    "balance",
    "slow_start",
    "head_timeout",
    "keepalive_timeout",
    "body_timeout",
    "connect_timeout",
    "response_timeout",
    "backend_idle_timeout",
    "tcp_idle_timeout",
    "max_connections",
    "max_idle_per_backend",
    "request_buffer",
    "eject_for",
    "eject_after",
    "stall_timeout",
    "stall_probe_timeout",
];
const JAVA_KEYS: &[&str] = &[
    "version",
    "home",
    "opts",
    "exit_on_oom",
    "heap_dump_on_oom",
    "gc_log",
    "fast_start",
];
const DEPLOY_KEYS: &[&str] = &[
    "strategy",
    "max_surge",
    "max_unavailable",
    "min_healthy",
    "auto_rollback",
    "keep_old",
    "keep_releases",
    "canary",
];
const CANARY_KEYS: &[&str] = &[
    "steps",
    "step_time",
    "max_error_rate",
    "max_p99_ratio",
    "latency_floor",
    "warmup_requests",
    "min_requests",
    "pause",
];

/// Every table of the spec with the keys the parser takes there: what `docs/spec.md` must
/// document, no more and no less (`crates/core/tests/spec_docs.rs`). A dotted name is a table
/// written inline in its parent's section (`daemon.tls` in `[daemon]`).
pub const TABLES: &[(&str, &[&str])] = &[
    ("daemon", DAEMON_KEYS),
    ("daemon.tls", TLS_KEYS),
    ("trust", TRUST_KEYS),
    ("cluster", CLUSTER_KEYS),
    ("apps.NAME", APP_KEYS),
    ("java", JAVA_KEYS),
    ("health", HEALTH_KEYS),
    ("restart", RESTART_KEYS),
    ("stop", STOP_KEYS),
    ("logs", LOGS_KEYS),
    ("deploy", DEPLOY_KEYS),
    ("canary", CANARY_KEYS),
    ("balancer", BALANCER_KEYS),
    ("placement", PLACEMENT_KEYS),
    ("apps.NAME.config", CONFIG_KEYS),
    ("apps.NAME.config.etcd", ETCD_KEYS),
];

/// Keys that users put one level too high: named with their section in the error.
const CONFIG_KEYS: &[&str] = &["templates", "etcd", "on_change"];
const ETCD_KEYS: &[&str] = &["endpoints", "prefix"];
const APP_SECTIONS: &[(&str, &[&str])] = &[
    ("config", CONFIG_KEYS),
    ("health", HEALTH_KEYS),
    ("restart", RESTART_KEYS),
    ("stop", STOP_KEYS),
    ("logs", LOGS_KEYS),
    ("balancer", BALANCER_KEYS),
    ("java", JAVA_KEYS),
    ("deploy", DEPLOY_KEYS),
    ("placement", PLACEMENT_KEYS),
];
const TOP_SECTIONS: &[(&str, &[&str])] = &[
    ("daemon", DAEMON_KEYS),
    ("trust", TRUST_KEYS),
    ("cluster", CLUSTER_KEYS),
    ("apps.NAME", APP_KEYS),
];

/// Set by jarfleet for every instance; an app's `env` cannot override them.
const RESERVED_ENV: &[&str] = &[
    "PORT",
    "JARFLEET_APP",
    "JARFLEET_INSTANCE",
    "JARFLEET_RELEASE",
    "JARFLEET_SLOT",
];

/// Default for `daemon.state_dir`, interpolated like a written value.
pub const DEFAULT_STATE_DIR: &str = "${JARFLEET_STATE:.jarfleet}";
/// Default readiness check when none is given.
pub const DEFAULT_HEALTH_PATH: &str = "/actuator/health/readiness";

/// Loads a fleet spec from the file's bytes: [`load`] once they are checked to be UTF-8. Bytes
/// that are not UTF-8 are one error at the line and column of the first bad byte.
pub fn load_bytes(
    bytes: &[u8],
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FleetSpec, SpecErrors> {
    match std::str::from_utf8(bytes) {
        Ok(text) => load(text, file, env),
        Err(e) => {
            let good = &bytes[..e.valid_up_to()];
            // The prefix before the first bad byte is UTF-8 by definition.
            let text = std::str::from_utf8(good).unwrap_or_default();
            let mut r = Reader::new(text, file, env);
            let bad = bytes.get(e.valid_up_to()).copied().unwrap_or_default();
            let message = format!("the file is not UTF-8: byte 0x{bad:02X} is not valid here");
            let hint = "the file must be UTF-8; re-save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE`, or your editor's encoding setting)";
            r.push(text.len(), "", None, message, Some(hint.into()));
            Err(SpecErrors(r.errors))
        }
    }
}

/// Loads a fleet spec.
///
/// * `text`: the file's content; `file`: its path as the user named it (used in errors, as
///   [`FleetSpec::source`], and as the base for relative paths: pure joins, no IO).
/// * `env`: environment lookup for `${VAR}` (pass `&|k| std::env::var(k).ok()` at the edge).
///
/// Returns every error found, sorted by position; nothing partial is returned.
pub fn load(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<FleetSpec, SpecErrors> {
    let mut r = Reader::new(text, file, env);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    // Only the first syntax error: the ones after it are often consequences of it.
    if let Some(e) = syntax
        .iter()
        .min_by_key(|e| e.span().map_or(0, |s| s.start))
    {
        let at = e.span().map_or(0, |s| s.start);
        let mut message = format!("invalid TOML: {}", e.message().trim());
        let mut hint = "fix the TOML syntax first; the other checks run once the file parses";
        if e.message().trim() == "duplicate key" {
            let name = e.span().and_then(|s| text.get(s)).unwrap_or("").trim();
            message = format!("invalid TOML: duplicate key `{name}`");
            hint = "a key can appear only once per table: remove one of them";
        }
        r.push(at, "", None, message, Some(hint.into()));
        return Err(SpecErrors(r.errors));
    }
    let root = Table {
        path: String::new(),
        at: 0..0,
        map: doc.get_ref(),
    };
    let spec = fleet(&mut r, &root, file);
    if r.errors.is_empty() {
        return Ok(spec);
    }
    let mut errors = r.errors;
    errors.sort_by_key(|e| (e.line, e.column));
    errors.dedup();
    Err(SpecErrors(errors))
}

fn fleet(r: &mut Reader<'_>, root: &Table<'_, '_>, file: &Path) -> FleetSpec {
    r.check_keys(root, TOP_KEYS, TOP_SECTIONS);
    let daemon_table = r.table(root, "daemon", "{ state_dir = \".jarfleet\" }");
    let daemon = daemon(r, daemon_table.as_ref());
    let trust_table = r.table(root, "trust", "{ keys = [\"release.pub\"] }");
    let trust = trust(r, trust_table.as_ref());
    let cluster = r
        .table(
            root,
            "cluster",
            "{ name = \"prod\", etcd = [\"http://10.0.0.1:2379\"], advertise = \"10.0.0.11\" }",
        )
        .and_then(|t| super::parse_cluster::cluster(r, &t));
    let mut apps = BTreeMap::new();
    let no_apps_hint = "add an app, e.g.\n        [apps.orders]\n        artifact = \"build/orders.jar\"\n        ports = \"9100-9199\"";
    match root.get("apps") {
        // A cluster node's own spec may name no apps: they are applied to the cluster.
        None if root.has("cluster") => {}
        None => r.push(0, "", None, "no apps defined", Some(no_apps_hint.into())),
        Some(v) => match v.get_ref() {
            DeValue::Table(map) if map.is_empty() => {
                r.bad(v, "apps", "no apps defined", Some(no_apps_hint.into()))
            }
            DeValue::Table(map) => {
                for (name, app_value) in map.iter() {
                    let name: &str = name.get_ref();
                    let path = format!("apps.{name}");
                    if let Err(msg) = check::app_name(name) {
                        let hint = "app names are 1-40 characters: a-z, 0-9, `-` and `_`, starting with a letter or digit";
                        r.push(app_value.span().start, &path, None, msg, Some(hint.into()));
                    }
                    match app_value.get_ref() {
                        DeValue::Table(map) => {
                            let t = Table {
                                path,
                                at: app_value.span(),
                                map,
                            };
                            if let Some(app) = app(r, name, &t, !trust.keys.is_empty()) {
                                apps.insert(name.to_string(), app);
                            }
                        }
                        other => {
                            let msg = format!("expected a table, found {}", type_name(other));
                            let hint = format!(
                                "declare the app as a table: [apps.{name}] followed by its keys"
                            );
                            r.bad(app_value, &path, msg, Some(hint));
                        }
                    }
                }
            }
            other => {
                let msg = format!("expected a table of apps, found {}", type_name(other));
                let hint = "declare each app as [apps.NAME], e.g. [apps.orders]";
                r.push(v.span().start, "apps", None, msg, Some(hint.into()));
            }
        },
    }
    cross_app(r, root, &apps, &daemon);
    for app in apps.values_mut() {
        app.trust_keys = trust.keys.clone();
    }
    FleetSpec {
        source: file.to_path_buf(),
        daemon,
        trust,
        apps,
        cluster,
    }
}

/// One app's value of a key, where it is written.
struct Placed<'v, 'i> {
    app: &'v str,
    value: &'v Value<'i>,
}

/// Settings that clash across apps (and with the daemon's API address), which `apply` would
/// refuse: each error points at the later of the two in the file and names the other's line.
/// Apps with errors of their own are left out. Sorting keeps this O(n log n) in the apps.
fn cross_app(
    r: &mut Reader<'_>,
    root: &Table<'_, '_>,
    apps: &BTreeMap<String, AppSpec>,
    daemon: &DaemonSpec,
) {
    let Some(DeValue::Table(map)) = root.get("apps").map(|v| v.get_ref()) else {
        return;
    };
    let value_of = |name: &str, key: &str| match map.get(name).map(|v| v.get_ref()) {
        Some(DeValue::Table(t)) => t.get(key),
        _ => None,
    };
    let daemon_http = match root.get("daemon").map(|v| v.get_ref()) {
        Some(DeValue::Table(t)) => t.get("http"),
        _ => None,
    };

    // Listeners: grouped by port, compared within a port.
    let mut by_port: BTreeMap<u16, Vec<(&str, &Value<'_>, &str)>> = BTreeMap::new();
    for (name, app) in apps {
        let (Some(listen), Some(v)) = (app.listen.as_deref(), value_of(name, "listen")) else {
            continue;
        };
        let port = listen.rsplit_once(':').and_then(|(_, p)| p.parse().ok());
        if let Some(port) = port {
            by_port
                .entry(port)
                .or_default()
                .push((name.as_str(), v, listen));
        }
        if let (Some(http), Some(hv)) = (daemon.http.as_deref(), daemon_http)
            && clash::addresses_clash(listen, http)
        {
            let line = r.line_of(hv.span().start);
            let hint = "give the app another listen port, or move the daemon's API to another one"
                .to_string();
            r.bad(
                v,
                &format!("apps.{name}.listen"),
                format!("clashes with [daemon] http = {:?} (line {line}): the daemon's API listens there", http),
                Some(hint),
            );
        }
    }
    for (_, mut group) in by_port {
        group.sort_by_key(|(_, v, _)| v.span().start);
        for i in 1..group.len() {
            let (name, v, listen) = group[i];
            if let Some((other, ov, other_listen)) = group[..i]
                .iter()
                .find(|(_, _, o)| clash::addresses_clash(listen, o))
            {
                let line = r.line_of(ov.span().start);
                r.bad(
                    v,
                    &format!("apps.{name}.listen"),
                    format!(
                        "clashes with apps.{other}.listen = {other_listen:?} (line {line}): two apps cannot listen on one address"
                    ),
                    Some("give each app its own listen port".into()),
                );
            }
        }
    }

    // Port ranges: shared ones only where an app could run out of ports.
    let ranges: Vec<(PortRange, u32, Placed<'_, '_>)> = apps
        .iter()
        .filter_map(|(name, app)| {
            let value = value_of(name, "ports")?;
            Some((app.ports, app.instances, Placed { app: name, value }))
        })
        .collect();
    let sizes: Vec<(PortRange, u32)> = ranges.iter().map(|(p, n, _)| (*p, *n)).collect();
    let all: Vec<PortRange> = sizes.iter().map(|(p, _)| *p).collect();
    for short in clash::port_shortfalls(&sizes) {
        let (range, instances, placed) = &ranges[short.at];
        let Some(first) = short
            .others
            .iter()
            .min_by_key(|&&j| ranges[j].2.value.span().start)
        else {
            continue;
        };
        let other = &ranges[*first].2;
        let line = r.line_of(other.value.span().start);
        let also = match short.others.len() {
            1 => String::new(),
            n => format!(" and {} other app{}", n - 1, if n == 2 { "" } else { "s" }),
        };
        let width = range.last - range.first + 1;
        let hint = match clash::free_range_after(&all, width) {
            Some(free) => format!(
                "give each app its own range, e.g. ports = \"{}-{}\"",
                free.first, free.last
            ),
            None => "give each app its own range, or widen the shared one".to_string(),
        };
        r.bad(
            placed.value,
            &format!("apps.{}.ports", placed.app),
            format!(
                "shares ports with apps.{}.ports = {} (line {line}){also}: when their instances take the shared ports, {} left for {instances} instance{}",
                other.app,
                r.raw(&other.value.span()),
                match short.left {
                    0 => "none is".to_string(),
                    1 => "1 is".to_string(),
                    n => format!("{n} are"),
                },
                if *instances == 1 { "" } else { "s" },
            ),
            Some(hint),
        );
    }
}

/// `[trust] keys = [...]`: minisign public keys or OpenPGP keyrings, relative to the spec.
fn trust(r: &mut Reader<'_>, t: Option<&Table<'_, '_>>) -> TrustSpec {
    let mut keys = Vec::new();
    if let Some(t) = t {
        r.check_keys(t, TRUST_KEYS, &[]);
        let example = "[\"keys/release.pub\", \"keys/ops.gpg\"]";
        for (i, (key, v)) in r
            .string_list(t, "keys", Mode::Plain, example)
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if r.check_path(&key, v, &format!("trust.keys[{i}]"), "\"keys/release.pub\"")
                .is_some()
            {
                keys.push(r.resolve(&key));
            }
        }
    }
    let ca = t.and_then(|t| r.path(t, "ca", "\"certs/internal-ca.pem\""));
    TrustSpec { keys, ca }
}

fn daemon(r: &mut Reader<'_>, t: Option<&Table<'_, '_>>) -> DaemonSpec {
    let mut state_dir = None;
    let mut http = None;
    let mut token_file = None;
    let mut open_reads = false;
    let mut tls = None;
    let mut metrics = true;
    let mut http_hosts = Vec::new();
    let mut http_max_connections = DEFAULT_HTTP_MAX_CONNECTIONS;
    let mut http_header_timeout = DEFAULT_HTTP_HEADER_TIMEOUT;
    let mut http_idle_timeout = DEFAULT_HTTP_IDLE_TIMEOUT;
    let mut log_max_size = DEFAULT_DAEMON_LOG_MAX_SIZE;
    let mut log_keep = DEFAULT_DAEMON_LOG_KEEP;
    if let Some(t) = t {
        log_max_size = r.size(t, "log_max_size").unwrap_or(log_max_size);
        log_keep = r
            .u32(
                t,
                "log_keep",
                0..=1000,
                "rotated daemon log files kept, e.g. log_keep = 5",
            )
            .unwrap_or(log_keep);
        r.check_keys(t, DAEMON_KEYS, &[]);
        metrics = r.boolean(t, "metrics").unwrap_or(true);
        state_dir = r.path(t, "state_dir", "\"/var/lib/jarfleet\"");
        if let Some(v) = t.get("http") {
            http = host_port(r, v, "daemon.http", "\"127.0.0.1:9900\"");
        }
        token_file = r.path(t, "token_file", "\"/etc/jarfleet/token\"");
        open_reads = r.boolean(t, "open_reads").unwrap_or(false);
        tls = daemon_tls(r, t);
        http_hosts = daemon_http_hosts(r, t);
        http_max_connections = r
            .u32(
                t,
                "http_max_connections",
                1..=65_535,
                "the most TCP API connections open at once, e.g. http_max_connections = 256",
            )
            .unwrap_or(DEFAULT_HTTP_MAX_CONNECTIONS);
        http_header_timeout = api_timeout(r, t, "http_header_timeout", "\"10s\"")
            .unwrap_or(DEFAULT_HTTP_HEADER_TIMEOUT);
        http_idle_timeout =
            api_timeout(r, t, "http_idle_timeout", "\"75s\"").unwrap_or(DEFAULT_HTTP_IDLE_TIMEOUT);
        // The remote API's settings mean nothing without its address.
        if !t.has("http") {
            for key in DAEMON_API_KEYS {
                if let Some(v) = t.get(key) {
                    let hint = format!(
                        "add http = \"127.0.0.1:9900\" to [daemon] to serve the TCP API, or remove {key}"
                    );
                    r.bad(
                        v,
                        &t.key(key),
                        "only used by the TCP API, and [daemon] has no http address",
                        Some(hint),
                    );
                }
            }
        }
    }
    let state_dir = state_dir.unwrap_or_else(|| {
        // The default can only fail if JARFLEET_STATE holds something odd; fall back to it raw.
        let dir = crate::interp::interpolate(DEFAULT_STATE_DIR, r.env, Mode::Plain)
            .unwrap_or_else(|_| ".jarfleet".to_string());
        r.resolve(if dir.trim().is_empty() {
            ".jarfleet"
        } else {
            &dir
        })
    });
    DaemonSpec {
        state_dir,
        http,
        token_file,
        open_reads,
        tls,
        metrics,
        http_hosts,
        http_max_connections,
        http_header_timeout,
        http_idle_timeout,
        log_max_size,
        log_keep,
    }
}

/// `http_hosts = ["dash.example.com"]`: host names without a port, kept in lower case.
fn daemon_http_hosts(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Vec<String> {
    let example = "[\"dash.example.com\"]";
    let Some(items) = r.string_list(t, "http_hosts", Mode::Plain, example) else {
        return Vec::new();
    };
    let mut hosts = Vec::new();
    for (i, (text, v)) in items.into_iter().enumerate() {
        match check::host_name(&text) {
            Ok(name) => hosts.push(name),
            Err(msg) => r.bad(
                v,
                &format!("{}[{i}]", t.key("http_hosts")),
                msg,
                Some(format!(
                    "list the names browsers use to reach the dashboard, e.g. http_hosts = {example}"
                )),
            ),
        }
    }
    hosts
}

/// A timeout of the TCP API: a duration of at least one second.
fn api_timeout(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
    key: &str,
    example: &str,
) -> Option<Duration> {
    let d = r.duration(t, key, true)?;
    if d < Duration::from_secs(1) {
        if let Some(v) = t.get(key) {
            r.bad(
                v,
                &t.key(key),
                "must be at least 1s: shorter cuts off clients on a slow network",
                Some(format!("e.g. {key} = {example}")),
            );
        }
        return None;
    }
    Some(d)
}

/// `tls = { cert = "server.pem", key = "server.key" }`: both PEM files, or neither.
fn daemon_tls(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<TlsSpec> {
    let example = "{ cert = \"tls/server.pem\", key = \"tls/server.key\" }";
    let tt = r.table(t, "tls", example)?;
    r.check_keys(&tt, TLS_KEYS, &[]);
    let cert = r.path(&tt, "cert", "\"tls/server.pem\"");
    let key = r.path(&tt, "key", "\"tls/server.key\"");
    let missing: Vec<&str> = TLS_KEYS.iter().copied().filter(|k| !tt.has(k)).collect();
    if !missing.is_empty() {
        let named: Vec<String> = missing.iter().map(|k| format!("`{k}`")).collect();
        let verb = if named.len() == 1 { "is" } else { "are" };
        r.missing(
            &tt,
            format!(
                "{} {verb} missing: TLS needs the certificate and its private key",
                named.join(" and ")
            ),
            Some(format!("give both PEM files: tls = {example}")),
        );
    }
    Some(TlsSpec {
        cert: cert?,
        key: key?,
    })
}

fn host_port(r: &mut Reader<'_>, v: &Value<'_>, key: &str, example: &str) -> Option<String> {
    let s = r.string_value(v, key, Mode::Plain, example)?;
    match check::host_port(s.trim()) {
        Ok(()) => Some(s.trim().to_string()),
        Err(msg) => {
            r.bad(
                v,
                key,
                msg,
                Some(format!("accepted: host:port, e.g. {example}")),
            );
            None
        }
    }
}

fn app(r: &mut Reader<'_>, name: &str, t: &Table<'_, '_>, has_trust: bool) -> Option<AppSpec> {
    r.check_keys(t, APP_KEYS, APP_SECTIONS);

    let launch = launch(r, t, has_trust);
    let workdir = r.path(t, "workdir", "\"/srv/orders\"");
    let (config, config_etcd, config_on_change) = app_config(r, t);
    let user = t.get("user").and_then(|v| {
        let key = t.key("user");
        let s = r.string_value(v, &key, Mode::Plain, "\"orders\"")?;
        match check::user_name(&s) {
            Ok(()) => Some(s),
            Err(msg) => {
                r.bad(
                    v,
                    &key,
                    msg,
                    Some("a Unix user name, e.g. user = \"orders\"".into()),
                );
                None
            }
        }
    });

    let instances = r
        .u32(
            t,
            "instances",
            1..=1000,
            "set instances to the number of JVMs to run, e.g. instances = 3",
        )
        .unwrap_or(1);
    let ports = ports(r, t, instances);

    let args = r
        .string_list(t, "args", Mode::Template, "[\"--server.port=${PORT}\"]")
        .map(|v| v.into_iter().map(|(s, _)| s).collect())
        .unwrap_or_default();
    let env = env(r, t);
    let java = java(r, t);
    let listen = t.get("listen").and_then(|v| {
        let key = t.key("listen");
        let text = r.string_value(v, &key, Mode::Plain, "\"0.0.0.0:8080\"")?;
        let text = text.trim().to_string();
        // `tcp://` proxies raw TCP (non-HTTP apps); `http://` or no scheme is HTTP.
        let addr = text
            .strip_prefix("tcp://")
            .or_else(|| text.strip_prefix("http://"))
            .unwrap_or(&text);
        let checked = match addr.split_once("://") {
            Some((scheme, _)) => Err(format!(
                "unknown scheme `{scheme}://`; the load balancer speaks http:// (default) or tcp://"
            )),
            None => check::host_port(addr),
        };
        match checked {
            Ok(()) => Some(text),
            Err(msg) => {
                let hint = "accepted: [http://|tcp://]host:port, e.g. \"0.0.0.0:8080\" or \"tcp://0.0.0.0:5432\"";
                r.bad(v, &key, msg, Some(hint.into()));
                None
            }
        }
    });
    let health = health(r, t);
    let restart = restart(r, t);
    let stop = stop(r, t);
    let logs = logs(r, t);
    let balancer = balancer(r, t);
    let deploy = deploy(r, t);
    let placement = super::parse_cluster::placement(r, t);

    Some(AppSpec {
        placement,
        trust_keys: Vec::new(),
        config,
        config_rendered: BTreeMap::new(),
        config_etcd,
        etcd_env: BTreeMap::new(),
        config_templates: BTreeMap::new(),
        config_values: BTreeMap::new(),
        config_on_change,
        name: name.to_string(),
        launch: launch?,
        workdir,
        user,
        instances,
        ports: ports?,
        args,
        env,
        java,
        listen,
        health,
        restart,
        stop,
        logs,
        balancer,
        deploy,
    })
}

fn launch(r: &mut Reader<'_>, t: &Table<'_, '_>, has_trust: bool) -> Option<Launch> {
    let artifact_example = "\"build/orders.jar\"";
    let artifact = t.get("artifact").and_then(|v| {
        let key = t.key("artifact");
        let s = r.string_value(v, &key, Mode::Plain, artifact_example)?;
        if s.starts_with("https://") {
            return Some((std::path::PathBuf::new(), Some(s)));
        }
        if s.contains("://") {
            let hint = "artifacts are downloaded over https only: use an https:// URL (with sha256 = \"...\"), or a local path";
            r.bad(v, &key, "not an https URL", Some(hint.into()));
            return None;
        }
        r.check_path(&s, v, &key, artifact_example)?;
        Some((r.resolve(&s), None))
    });
    let sha256 = t.get("sha256").and_then(|v| {
        let key = t.key("sha256");
        let s = r.string_value(
            v,
            &key,
            Mode::Plain,
            "\"9f86d081884c7d65...\" (64 hex digits)",
        )?;
        let s = s.trim().to_ascii_lowercase();
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Some(s)
        } else {
            let hint = "the sha256 of the jar as 64 hex digits, e.g. from `sha256sum app.jar`";
            r.bad(v, &key, "not a sha256 digest", Some(hint.into()));
            None
        }
    });
    let main_class = t.get("main_class").and_then(|v| {
        let key = t.key("main_class");
        let s = r.string_value(v, &key, Mode::Plain, "\"com.example.Main\"")?;
        match check::java_class(&s) {
            Ok(()) => Some(s),
            Err(msg) => {
                r.bad(v, &key, msg, None);
                None
            }
        }
    });
    let classpath = classpath(r, t);

    match (t.has("artifact"), t.has("main_class")) {
        (true, true) => {
            if let Some(v) = t.get("main_class") {
                let hint = "use artifact = \"app.jar\" to run `java -jar`, or main_class + classpath to run `java -cp`";
                r.bad(
                    v,
                    &t.key("main_class"),
                    "set either artifact or main_class, not both",
                    Some(hint.into()),
                );
            }
            None
        }
        (false, false) => {
            let hint = "add artifact = \"path/to/app.jar\" (runs java -jar), or main_class = \"com.example.Main\" with classpath = [\"lib/*.jar\"]";
            r.missing(
                t,
                "missing artifact (or main_class): nothing to run",
                Some(hint.into()),
            );
            None
        }
        (true, false) => {
            if let Some(v) = t.get("classpath") {
                let hint = "java -jar ignores the class path: remove classpath, or use main_class instead of artifact";
                r.bad(
                    v,
                    &t.key("classpath"),
                    "classpath is only used with main_class",
                    Some(hint.into()),
                );
                return None;
            }
            let (path, url) = artifact?;
            if url.is_some() && sha256.is_none() && !has_trust {
                let v = t.get("artifact")?;
                let hint = "pin it with sha256 = \"<64 hex digits>\", or list signing keys under [trust] (its signature is then fetched from URL.minisig)";
                r.bad(
                    v,
                    &t.key("artifact"),
                    "a remote artifact needs a sha256 pin or trusted keys",
                    Some(hint.into()),
                );
                return None;
            }
            Some(Launch::Jar { path, url, sha256 })
        }
        (false, true) => {
            if !t.has("classpath") {
                let v = t.get("main_class")?;
                let hint = "add classpath = [\"lib/*.jar\"] (paths relative to the spec file)";
                r.bad(
                    v,
                    &t.key("main_class"),
                    "main_class needs a classpath",
                    Some(hint.into()),
                );
                return None;
            }
            Some(Launch::MainClass {
                main_class: main_class?,
                classpath: classpath?,
            })
        }
    }
}

fn classpath(r: &mut Reader<'_>, t: &Table<'_, '_>) -> Option<Vec<String>> {
    let key = t.key("classpath");
    let entries = r.string_list(t, "classpath", Mode::Plain, "[\"lib/*.jar\"]")?;
    let mut ok = t.get("classpath").is_some_and(|v| !is_empty_array(v));
    if !ok && let Some(v) = t.get("classpath") {
        r.bad(
            v,
            &key,
            "classpath cannot be empty",
            Some("e.g. classpath = [\"lib/*.jar\"]".into()),
        );
    }
    let mut out = Vec::new();
    for (i, (entry, v)) in entries.into_iter().enumerate() {
        let entry_key = format!("{key}[{i}]");
        if entry.contains(':') {
            let hint = "one entry per array element, e.g. classpath = [\"app.jar\", \"lib/*\"]";
            r.bad(v, &entry_key, "contains `:`", Some(hint.into()));
            ok = false;
            continue;
        }
        if r.check_path(&entry, v, &entry_key, "\"lib/*.jar\"")
            .is_none()
        {
            ok = false;
            continue;
        }
        out.push(r.resolve(&entry).to_string_lossy().into_owned());
    }
    ok.then_some(out)
}

fn ports(r: &mut Reader<'_>, t: &Table<'_, '_>, instances: u32) -> Option<PortRange> {
    let key = t.key("ports");
    let Some(v) = t.get("ports") else {
        let hint = "add ports = \"9100-9199\": each instance gets its own PORT from this range";
        r.missing(t, "missing ports", Some(hint.into()));
        return None;
    };
    let accepted = "accepted: \"FIRST-LAST\" or a single port, e.g. ports = \"9100-9199\"";
    let parsed = match v.get_ref() {
        DeValue::Integer(i) => check::port_range(i.as_str()),
        DeValue::String(s) => {
            let s = r.interp(s, v, &key, Mode::Plain)?;
            check::port_range(&s)
        }
        other => Err(format!("expected a string, found {}", type_name(other))),
    };
    let range = match parsed {
        Ok(range) => range,
        Err(msg) => {
            r.bad(v, &key, msg, Some(accepted.into()));
            return None;
        }
    };
    let count = u32::from(range.last - range.first) + 1;
    if count < instances {
        let last = (u32::from(range.first) + instances - 1).min(65535);
        let hint = format!(
            "widen the range, e.g. ports = \"{}-{last}\", or lower instances",
            range.first
        );
        let msg = format!(
            "the range holds {count} port{} but instances = {instances} needs at least {instances}",
            if count == 1 { "" } else { "s" }
        );
        r.bad(v, &key, msg, Some(hint));
        return None;
    }
    Some(range)
}

fn env(r: &mut Reader<'_>, t: &Table<'_, '_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(et) = r.table(t, "env", "{ SPRING_PROFILES_ACTIVE = \"prod\" }") else {
        return out;
    };
    for (k, v) in et.map.iter() {
        let name: &str = k.get_ref();
        let key = et.key(name);
        if !crate::interp::is_var_name(name) {
            let hint =
                "environment variable names are letters, digits and _, not starting with a digit";
            r.push(
                k.span().start,
                &key,
                None,
                format!("`{name}` is not a valid environment variable name"),
                Some(hint.into()),
            );
            continue;
        }
        if RESERVED_ENV.contains(&name) {
            let hint = "PORT, JARFLEET_APP, JARFLEET_INSTANCE, JARFLEET_RELEASE and JARFLEET_SLOT are set for every instance";
            r.push(
                k.span().start,
                &key,
                None,
                format!("{name} is set by jarfleet and cannot be overridden"),
                Some(hint.into()),
            );
            continue;
        }
        let value = match v.get_ref() {
            DeValue::String(s) => r.interp(s, v, &key, Mode::Template),
            DeValue::Integer(_) | DeValue::Float(_) | DeValue::Boolean(_) => {
                let hint = format!("quote it: {name} = \"{}\"", r.raw(&v.span()));
                r.bad(v, &key, "environment values are strings", Some(hint));
                None
            }
            _ => r.string_value(v, &key, Mode::Template, "\"value\""),
        };
        if let Some(value) = value {
            out.insert(name.to_string(), value);
        }
    }
    out
}

fn java(r: &mut Reader<'_>, t: &Table<'_, '_>) -> JavaSpec {
    let mut java = JavaSpec {
        version: None,
        home: None,
        opts: Vec::new(),
        exit_on_oom: true,
        heap_dump_on_oom: true,
        gc_log: true,
        fast_start: true,
    };
    if let Some(v) = t.get("java")
        && let DeValue::String(s) = v.get_ref()
    {
        let hint = format!("java is a table: java = {{ version = \"{s}\" }}");
        r.bad(
            v,
            &t.key("java"),
            "expected a table, found a string",
            Some(hint),
        );
        return java;
    }
    let Some(jt) = r.table(t, "java", "{ version = \">=17\" }") else {
        return java;
    };
    r.check_keys(&jt, JAVA_KEYS, &[]);
    if let Some(v) = jt.get("version") {
        let key = jt.key("version");
        if let Some(s) = r.string_value(v, &key, Mode::Plain, "\">=17\"") {
            match VersionReq::parse(&s) {
                Ok(req) => java.version = Some(req),
                Err(msg) => {
                    // javaver's message quotes the value, which the error line already shows.
                    let prefix = format!("invalid Java version requirement {s:?}: ");
                    let msg = match msg.strip_prefix(&prefix) {
                        Some(rest) => format!("invalid Java version requirement: {rest}"),
                        None => msg,
                    };
                    match msg.split_once("; expected ") {
                        Some((what, accepted)) => {
                            r.bad(v, &key, what, Some(format!("expected {accepted}")))
                        }
                        None => r.bad(v, &key, msg, None),
                    }
                }
            }
        }
    }
    java.home = r.path(&jt, "home", "\"/usr/lib/jvm/java-21-openjdk\"");
    if let Some(opts) = r.string_list(&jt, "opts", Mode::Template, "[\"-Xmx256m\"]") {
        let key = jt.key("opts");
        for (i, (opt, v)) in opts.into_iter().enumerate() {
            let opt_key = format!("{key}[{i}]");
            let trimmed = opt.trim();
            if matches!(trimmed, "-jar" | "-cp" | "-classpath" | "--class-path") {
                let hint = "jarfleet builds -jar / -cp from artifact, main_class and classpath";
                r.bad(
                    v,
                    &opt_key,
                    format!("{trimmed} cannot be set in java.opts"),
                    Some(hint.into()),
                );
            } else if !trimmed.starts_with('-') {
                let hint =
                    "JVM options start with `-`, e.g. \"-Xmx256m\"; program arguments go in args";
                r.bad(v, &opt_key, "not a JVM option", Some(hint.into()));
            } else {
                java.opts.push(opt);
            }
        }
    }
    java.exit_on_oom = r.boolean(&jt, "exit_on_oom").unwrap_or(true);
    java.heap_dump_on_oom = r.boolean(&jt, "heap_dump_on_oom").unwrap_or(true);
    java.gc_log = r.boolean(&jt, "gc_log").unwrap_or(true);
    java.fast_start = r.boolean(&jt, "fast_start").unwrap_or(true);
    java
}

fn health(r: &mut Reader<'_>, t: &Table<'_, '_>) -> HealthSpec {
    let mut health = HealthSpec {
        check: HealthCheck::Http {
            path: DEFAULT_HEALTH_PATH.to_string(),
        },
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(2),
        failures: 3,
        start_timeout: Duration::from_secs(120),
        unhealthy_restart_after: Duration::from_secs(45),
    };
    let Some(ht) = r.table(t, "health", "{ http = \"/health\" }") else {
        return health;
    };
    r.check_keys(&ht, HEALTH_KEYS, &[]);

    let given: Vec<&str> = ["http", "tcp", "exec"]
        .into_iter()
        .filter(|k| ht.has(k))
        .collect();
    if given.len() > 1 {
        for k in &given[1..] {
            if let Some(v) = ht.get(k) {
                let msg = format!(
                    "only one health check can be set, found {}",
                    given.join(" and ")
                );
                let hint = "keep one of http = \"/path\", tcp = true, exec = [\"cmd\", \"arg\"]";
                r.bad(v, &ht.key(k), msg, Some(hint.into()));
            }
        }
    } else if let Some(v) = ht.get("http") {
        let key = ht.key("http");
        if let Some(path) = r.string_value(v, &key, Mode::Plain, "\"/actuator/health/readiness\"") {
            if path.starts_with("http://") || path.starts_with("https://") {
                let hint =
                    "give only the path: jarfleet probes http://127.0.0.1:PORT/<path> itself";
                r.bad(v, &key, "expected a path, found a URL", Some(hint.into()));
            } else if !path.starts_with('/') {
                r.bad(
                    v,
                    &key,
                    "the path must start with `/`",
                    Some(format!("e.g. http = \"/{path}\"")),
                );
            } else {
                health.check = HealthCheck::Http { path };
            }
        }
    } else if ht.has("tcp") {
        match r.boolean(&ht, "tcp") {
            Some(true) => health.check = HealthCheck::Tcp,
            Some(false) => {
                if let Some(v) = ht.get("tcp") {
                    let hint = "write tcp = true for a TCP connect check, or remove tcp for the default http check";
                    r.bad(
                        v,
                        &ht.key("tcp"),
                        "tcp = false selects no check",
                        Some(hint.into()),
                    );
                }
            }
            None => {}
        }
    } else if let Some(argv) =
        r.string_list(&ht, "exec", Mode::Template, "[\"./check.sh\", \"${PORT}\"]")
    {
        let argv: Vec<String> = argv.into_iter().map(|(s, _)| s).collect();
        let empty = ht.get("exec").is_some_and(is_empty_array)
            || argv.first().is_some_and(|a| a.trim().is_empty());
        if empty {
            if let Some(v) = ht.get("exec") {
                let hint =
                    "e.g. exec = [\"curl\", \"-fs\", \"http://127.0.0.1:${PORT}/ping\"] (no shell)";
                r.bad(
                    v,
                    &ht.key("exec"),
                    "the command is empty",
                    Some(hint.into()),
                );
            }
        } else {
            health.check = HealthCheck::Exec { argv };
        }
    }

    health.interval = r.duration(&ht, "interval", true).unwrap_or(health.interval);
    health.timeout = r.duration(&ht, "timeout", true).unwrap_or(health.timeout);
    health.failures = r
        .u32(
            &ht,
            "failures",
            1..=u32::MAX,
            "consecutive failed checks before the instance is unhealthy, e.g. failures = 3",
        )
        .unwrap_or(health.failures);
    health.start_timeout = r
        .duration(&ht, "start_timeout", true)
        .unwrap_or(health.start_timeout);
    health.unhealthy_restart_after = r
        .duration(&ht, "unhealthy_restart_after", true)
        .unwrap_or(health.unhealthy_restart_after);
    health
}

fn restart(r: &mut Reader<'_>, t: &Table<'_, '_>) -> RestartSpec {
    let mut restart = RestartSpec {
        backoff_initial: Duration::from_secs(1),
        backoff_max: Duration::from_secs(300),
        reset_after: Duration::from_secs(60),
        max_restarts: None,
    };
    let Some(rt) = r.table(t, "restart", "{ backoff_max = \"5m\" }") else {
        return restart;
    };
    r.check_keys(&rt, RESTART_KEYS, &[]);
    let initial = r.duration(&rt, "backoff_initial", true);
    let max = r.duration(&rt, "backoff_max", true);
    restart.reset_after = r
        .duration(&rt, "reset_after", true)
        .unwrap_or(restart.reset_after);
    restart.max_restarts = r.u32(
        &rt,
        "max_restarts",
        0..=u32::MAX,
        "omit max_restarts to never give up",
    );
    restart.backoff_initial = initial.unwrap_or(restart.backoff_initial);
    restart.backoff_max = max.unwrap_or(restart.backoff_max);
    if restart.backoff_max < restart.backoff_initial && (initial.is_some() || max.is_some()) {
        let (k, hint) = if max.is_some() {
            ("backoff_max", "raise backoff_max or lower backoff_initial")
        } else {
            (
                "backoff_initial",
                "backoff_max defaults to 5m: raise it as well, or lower backoff_initial",
            )
        };
        if let Some(v) = rt.get(k) {
            let msg = format!(
                "backoff_max ({}) is shorter than backoff_initial ({})",
                crate::units::format_duration(restart.backoff_max),
                crate::units::format_duration(restart.backoff_initial)
            );
            r.bad(v, &rt.key(k), msg, Some(hint.into()));
        }
    }
    restart
}

fn stop(r: &mut Reader<'_>, t: &Table<'_, '_>) -> StopSpec {
    let mut stop = StopSpec {
        drain_timeout: Duration::from_secs(30),
        stop_timeout: Duration::from_secs(30),
    };
    if let Some(st) = r.table(t, "stop", "{ stop_timeout = \"30s\" }") {
        r.check_keys(&st, STOP_KEYS, &[]);
        stop.drain_timeout = r
            .duration(&st, "drain_timeout", false)
            .unwrap_or(stop.drain_timeout);
        stop.stop_timeout = r
            .duration(&st, "stop_timeout", true)
            .unwrap_or(stop.stop_timeout);
    }
    stop
}

fn logs(r: &mut Reader<'_>, t: &Table<'_, '_>) -> LogSpec {
    let mut logs = LogSpec {
        max_size: 50_000_000,
        keep: 10,
    };
    if let Some(lt) = r.table(t, "logs", "{ max_size = \"50MB\", keep = 10 }") {
        r.check_keys(&lt, LOGS_KEYS, &[]);
        logs.max_size = r.size(&lt, "max_size").unwrap_or(logs.max_size);
        logs.keep = r
            .u32(
                &lt,
                "keep",
                0..=1000,
                "rotated files kept per stream, e.g. keep = 10",
            )
            .unwrap_or(logs.keep);
    }
    logs
}

/// `config = "DIR"`, or `[apps.NAME.config]` with `templates = "DIR"`,
/// `etcd = { endpoints = [...], prefix = "..." }` and `on_change`.
fn app_config(
    r: &mut Reader<'_>,
    t: &Table<'_, '_>,
) -> (Option<std::path::PathBuf>, Option<EtcdSource>, OnChange) {
    let is_table = t
        .get("config")
        .is_some_and(|v| matches!(v.get_ref(), DeValue::Table(_)));
    if !is_table {
        return (r.path(t, "config", "\"config/\""), None, OnChange::Restart);
    }
    let Some(ct) = r.table(t, "config", "{ templates = \"config/\" }") else {
        return (None, None, OnChange::Restart);
    };
    r.check_keys(&ct, CONFIG_KEYS, &[]);
    let templates = r.path(&ct, "templates", "\"config/\"");
    let etcd = r
        .table(
            &ct,
            "etcd",
            "{ endpoints = [\"http://127.0.0.1:2379\"], prefix = \"/config/orders/\" }",
        )
        .and_then(|et| {
            r.check_keys(&et, ETCD_KEYS, &[]);
            let example = "[\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"]";
            let mut endpoints = Vec::new();
            let mut ok = true;
            for (i, (e, v)) in r
                .string_list(&et, "endpoints", Mode::Plain, example)
                .unwrap_or_default()
                .into_iter()
                .enumerate()
            {
                if e.starts_with("http://") && e.len() > "http://".len() {
                    endpoints.push(e);
                } else {
                    let hint = "etcd client URLs as http://host:port";
                    r.bad(
                        v,
                        &format!("{}[{i}]", et.key("endpoints")),
                        "not an http:// URL",
                        Some(hint.into()),
                    );
                    ok = false;
                }
            }
            if endpoints.is_empty() && ok {
                r.missing(
                    &et,
                    "etcd needs at least one endpoint",
                    Some(format!("endpoints = {example}")),
                );
                ok = false;
            }
            let prefix = match et.get("prefix") {
                Some(v) => r.string_value(v, &et.key("prefix"), Mode::Plain, "\"/config/orders/\""),
                None => {
                    r.missing(
                        &et,
                        "etcd needs a key prefix",
                        Some("prefix = \"/config/orders/\"".into()),
                    );
                    None
                }
            };
            match (ok, prefix) {
                (true, Some(prefix)) if !prefix.is_empty() => {
                    Some(EtcdSource { endpoints, prefix })
                }
                _ => None,
            }
        });
    let on_change = on_change(r, &ct, templates.is_some(), ct.has("etcd"));
    (templates, etcd, on_change)
}

/// Signals an app may be sent on a config change (never one that stops it).
const REFRESH_SIGNALS: &[&str] = &["HUP", "USR1", "USR2"];

/// `on_change = "restart" | "signal:HUP" | "http:POST /actuator/refresh"`.
fn on_change(r: &mut Reader<'_>, ct: &Table<'_, '_>, templates: bool, etcd: bool) -> OnChange {
    let Some(v) = ct.get("on_change") else {
        return OnChange::Restart;
    };
    let key = ct.key("on_change");
    let hint = "accepted: \"restart\" (a new release, default), \"signal:HUP\" (or USR1, USR2), \"http:POST /actuator/refresh\" (any method and path)";
    let Some(s) = r.string_value(v, &key, Mode::Plain, "\"http:POST /actuator/refresh\"") else {
        return OnChange::Restart;
    };
    let parsed = if s == "restart" {
        Ok(OnChange::Restart)
    } else if let Some(sig) = s.strip_prefix("signal:") {
        let sig = sig.trim().trim_start_matches("SIG").to_ascii_uppercase();
        if REFRESH_SIGNALS.contains(&sig.as_str()) {
            Ok(OnChange::Signal { signal: sig })
        } else {
            Err(format!(
                "signal {sig:?} cannot refresh an app (it would stop it or is unknown)"
            ))
        }
    } else if let Some(call) = s.strip_prefix("http:") {
        match call.trim().split_once(' ') {
            Some((method, path))
                if !method.is_empty()
                    && method.bytes().all(|b| b.is_ascii_uppercase())
                    && path.trim().starts_with('/')
                    && !path.trim().contains(char::is_whitespace) =>
            {
                Ok(OnChange::Http {
                    method: method.to_string(),
                    path: path.trim().to_string(),
                })
            }
            _ => Err("expected \"http:METHOD /path\"".to_string()),
        }
    } else {
        Err("unknown on_change".to_string())
    };
    match parsed {
        Ok(OnChange::Restart) => OnChange::Restart,
        Ok(_) if !etcd => {
            r.bad(
                v,
                &key,
                "on_change refreshes instances when etcd values change, and there is no etcd source",
                Some("add etcd = { endpoints = [...], prefix = \"...\" }, or remove on_change".into()),
            );
            OnChange::Restart
        }
        Ok(_) if !templates => {
            r.bad(
                v,
                &key,
                "a live refresh reaches the app through its config files, and there are no templates",
                Some("add templates = \"config/\" (files that use the etcd values, e.g. ${GREETING}), or remove on_change: a restart brings new values through the environment".into()),
            );
            OnChange::Restart
        }
        Ok(refresh) => refresh,
        Err(message) => {
            r.bad(v, &key, message, Some(hint.into()));
            OnChange::Restart
        }
    }
}

fn balancer(r: &mut Reader<'_>, t: &Table<'_, '_>) -> BalancerSpec {
    let mut b = BalancerSpec::default();
    let Some(bt) = r.table(t, "balancer", "{ balance = \"round-robin\" }") else {
        return b;
    };
    r.check_keys(&bt, BALANCER_KEYS, &[]);
    if let Some(v) = bt.get("balance") {
        let key = bt.key("balance");
        if let Some(s) = r.string_value(v, &key, Mode::Plain, "\"round-robin\"") {
            match s.as_str() {
                "round-robin" => b.balance = Balance::RoundRobin,
                "least-request" => b.balance = Balance::LeastRequest,
                _ => r.bad(
                    v,
                    &key,
                    "unknown balancing",
                    Some("accepted: round-robin (smooth weighted), least-request (power of two choices)".into()),
                ),
            }
        }
    }
    b.slow_start = r.duration(&bt, "slow_start", false).unwrap_or(b.slow_start);
    balancer_limits(r, &bt, &mut b);
    b
}

/// The balancer's timeouts, limits and ejection settings, each within what makes sense (the
/// bounds are in docs/spec.md).
fn balancer_limits(r: &mut Reader<'_>, bt: &Table<'_, '_>, b: &mut BalancerSpec) {
    const MS: Duration = Duration::from_millis(1);
    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(86_400);
    // (key, field, (min, max), what it is: the hint)
    let timeouts: [(&str, &mut Duration, (Duration, Duration), &str); 7] = [
        (
            "head_timeout",
            &mut b.head_timeout,
            (MS, 10 * MINUTE),
            "how long a client may take to send a request head (408 after), e.g. head_timeout = \"10s\"",
        ),
        (
            "keepalive_timeout",
            &mut b.keepalive_timeout,
            (MS, HOUR),
            "how long an idle keep-alive client connection is kept, e.g. keepalive_timeout = \"75s\"",
        ),
        (
            "body_timeout",
            &mut b.body_timeout,
            (MS, HOUR),
            "how long a client may stall while sending a body or taking a response, e.g. body_timeout = \"30s\"",
        ),
        (
            "connect_timeout",
            &mut b.connect_timeout,
            (MS, MINUTE),
            "how long a connect to an instance (on this host) may take, e.g. connect_timeout = \"2s\"",
        ),
        (
            "response_timeout",
            &mut b.response_timeout,
            (MS, DAY),
            "how long an instance may take to start answering, and between two reads of its answer (504 after), e.g. response_timeout = \"60s\"",
        ),
        (
            "backend_idle_timeout",
            &mut b.backend_idle_timeout,
            (MS, HOUR),
            "how long an idle connection to an instance may be reused; keep it below the app's own idle timeout, e.g. backend_idle_timeout = \"20s\"",
        ),
        (
            "tcp_idle_timeout",
            &mut b.tcp_idle_timeout,
            (MS, DAY),
            "how long a tcp (or upgraded) connection may be silent both ways, e.g. tcp_idle_timeout = \"10m\"",
        ),
    ];
    for (key, field, range, hint) in timeouts {
        if let Some(d) = r.duration_within(bt, key, range, None, hint) {
            *field = d;
        }
    }
    b.max_connections = r
        .u32(
            bt,
            "max_connections",
            1..=1_000_000,
            "client connections the app's listener holds at once (the daemon's open-file limit caps all listeners together), e.g. max_connections = 10000",
        )
        .unwrap_or(b.max_connections);
    b.max_idle_per_backend = r
        .u32(
            bt,
            "max_idle_per_backend",
            0..=10_000,
            "idle keep-alive connections kept per instance (0: a new connection for every request), e.g. max_idle_per_backend = 128",
        )
        .unwrap_or(b.max_idle_per_backend);
    b.request_buffer = r
        .size_up_to(
            bt,
            "request_buffer",
            64 << 20,
            "request bodies up to this size are read whole before an instance is picked (per connection; \"0B\" streams every body), e.g. request_buffer = \"64KiB\"",
        )
        .unwrap_or(b.request_buffer);
    b.eject_for = r
        .duration_within(
            bt,
            "eject_for",
            (MS, HOUR),
            None,
            "how long an instance that fails at the connection level gets no new request, e.g. eject_for = \"5s\"",
        )
        .unwrap_or(b.eject_for);
    b.eject_after = r
        .u32(
            bt,
            "eject_after",
            1..=1000,
            "consecutive failed exchanges that eject an instance, e.g. eject_after = 3",
        )
        .unwrap_or(b.eject_after);
    b.stall_timeout = r
        .duration_within(
            bt,
            "stall_timeout",
            (Duration::from_millis(100), 10 * MINUTE),
            Some("off"),
            "an instance with requests waiting that sends nothing this long is probed and ejected if it does not answer, e.g. stall_timeout = \"3s\"",
        )
        .unwrap_or(b.stall_timeout);
    b.stall_probe_timeout = r
        .duration_within(
            bt,
            "stall_probe_timeout",
            (MS, MINUTE),
            None,
            "how long the stall probe waits for an answer, e.g. stall_probe_timeout = \"1s\"",
        )
        .unwrap_or(b.stall_probe_timeout);
}

fn deploy(r: &mut Reader<'_>, t: &Table<'_, '_>) -> DeploySpec {
    let mut deploy = DeploySpec::default();
    let Some(dt) = r.table(t, "deploy", "{ strategy = \"rolling\" }") else {
        return deploy;
    };
    r.check_keys(&dt, DEPLOY_KEYS, &[]);
    if let Some(v) = dt.get("strategy") {
        let key = dt.key("strategy");
        if let Some(s) = r.string_value(v, &key, Mode::Plain, "\"rolling\"") {
            match s.as_str() {
                "rolling" => deploy.strategy = Strategy::Rolling,
                "canary" => deploy.strategy = Strategy::Canary,
                "blue-green" => deploy.strategy = Strategy::BlueGreen,
                other => {
                    let known = ["rolling", "canary", "blue-green"];
                    let msg = match check::closest(other, &known) {
                        Some(close) => format!("unknown strategy; did you mean `{close}`?"),
                        None => "unknown strategy".to_string(),
                    };
                    r.bad(
                        v,
                        &key,
                        msg,
                        Some("accepted: rolling, canary, blue-green".into()),
                    );
                }
            }
        }
    }
    let surge_hint = "extra instances started during a rollout, e.g. max_surge = 1";
    deploy.max_surge = r
        .u32(&dt, "max_surge", 0..=1000, surge_hint)
        .unwrap_or(deploy.max_surge);
    let unavail_hint =
        "instances that may be out of service during a rollout, e.g. max_unavailable = 0";
    deploy.max_unavailable = r
        .u32(&dt, "max_unavailable", 0..=1000, unavail_hint)
        .unwrap_or(deploy.max_unavailable);
    if deploy.max_surge == 0
        && deploy.max_unavailable == 0
        && let Some(v) = dt.get("max_surge")
    {
        let hint = "keep max_surge = 1 (start a new instance before stopping an old one) or allow max_unavailable = 1";
        r.bad(
            v,
            &dt.key("max_surge"),
            "max_surge and max_unavailable are both 0: a rollout could never progress",
            Some(hint.into()),
        );
    }
    deploy.min_healthy = r
        .duration(&dt, "min_healthy", false)
        .unwrap_or(deploy.min_healthy);
    deploy.auto_rollback = r
        .boolean(&dt, "auto_rollback")
        .unwrap_or(deploy.auto_rollback);
    deploy.keep_old = r
        .duration(&dt, "keep_old", false)
        .unwrap_or(deploy.keep_old);
    deploy.keep_releases = r
        .u32(
            &dt,
            "keep_releases",
            2..=1000,
            "releases kept for rollback (at least the current and the previous), e.g. keep_releases = 5",
        )
        .unwrap_or(deploy.keep_releases);
    if let Some(ct) = r.table(
        &dt,
        "canary",
        "{ steps = [5, 25, 50, 100], step_time = \"60s\" }",
    ) {
        if deploy.strategy != Strategy::Canary && !has_error_at(r, &dt.key("strategy")) {
            let hint = "set strategy = \"canary\", or remove the canary settings";
            r.missing(
                &ct,
                "canary settings are only used with strategy = \"canary\"",
                Some(hint.into()),
            );
        }
        deploy.canary = canary(r, &ct);
    }
    deploy
}

/// True when an error was already reported for `key` (to avoid a consequential second error).
fn has_error_at(r: &Reader<'_>, key: &str) -> bool {
    r.errors.iter().any(|e| e.key == key)
}

fn canary(r: &mut Reader<'_>, ct: &Table<'_, '_>) -> CanarySpec {
    let mut canary = CanarySpec::default();
    r.check_keys(ct, CANARY_KEYS, &[]);
    if let Some(v) = ct.get("steps") {
        let key = ct.key("steps");
        let hint = "percentages of traffic, increasing, each 1-100, e.g. steps = [5, 25, 50, 100]";
        match percentages(v) {
            Some(steps) if !steps.is_empty() && steps.windows(2).all(|w| w[0] < w[1]) => {
                canary.steps = steps
            }
            Some(steps) if !steps.is_empty() => r.bad(
                v,
                &key,
                "steps must be strictly increasing",
                Some(hint.into()),
            ),
            _ => r.bad(
                v,
                &key,
                "expected a non-empty array of percentages 1-100",
                Some(hint.into()),
            ),
        }
    }
    if let Some(v) = ct.get("pause") {
        let key = ct.key("pause");
        let hint = format!(
            "steps after which the canary waits for `jarfleet promote`, each one of steps = {:?}, e.g. pause = [{}]",
            canary.steps,
            canary
                .steps
                .get(canary.steps.len().saturating_sub(2))
                .copied()
                .unwrap_or(50)
        );
        match percentages(v) {
            Some(pause) => match pause.iter().find(|p| !canary.steps.contains(p)) {
                None => canary.pause = pause,
                Some(p) => r.bad(v, &key, format!("{p} is not one of the steps"), Some(hint)),
            },
            None => r.bad(v, &key, "expected an array of step percentages", Some(hint)),
        }
    }
    canary.min_requests = r
        .int(
            ct,
            "min_requests",
            1..=1_000_000,
            "canary requests a step needs before it is judged, e.g. min_requests = 20",
        )
        .map_or(canary.min_requests, |n| n as u64);
    canary.step_time = r
        .duration(ct, "step_time", true)
        .unwrap_or(canary.step_time);
    canary.max_error_rate = r
        .float(
            ct,
            "max_error_rate",
            |f| (0.0..=1.0).contains(&f),
            "must be a fraction between 0 and 1",
            "0.01",
        )
        .unwrap_or(canary.max_error_rate);
    canary.max_p99_ratio = r
        .float(
            ct,
            "max_p99_ratio",
            |f| f >= 1.0,
            "must be at least 1 (a canary is slower only when its median is more than this many times the stable set's)",
            "1.5",
        )
        .unwrap_or(canary.max_p99_ratio);
    canary.latency_floor = r
        .duration(ct, "latency_floor", false)
        .unwrap_or(canary.latency_floor);
    canary.warmup_requests = r
        .int(
            ct,
            "warmup_requests",
            0..=1_000_000,
            "responses of each canary instance not judged for latency while its JVM warms up, e.g. warmup_requests = 200",
        )
        .map_or(canary.warmup_requests, |n| n as u64);
    canary
}

/// An array of integers 1..=100 (`None` if anything else).
fn percentages(v: &Value<'_>) -> Option<Vec<u8>> {
    match v.get_ref() {
        DeValue::Array(items) => items
            .iter()
            .map(|item| match item.get_ref() {
                DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
                    .ok()
                    .and_then(|n| u8::try_from(n).ok())
                    .filter(|n| (1..=100).contains(n)),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

fn is_empty_array(v: &Value<'_>) -> bool {
    matches!(v.get_ref(), DeValue::Array(items) if items.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "HOME").then(|| "/home/me".to_string())
    }

    /// (line, column, key, message) of one error.
    type Found = (usize, usize, String, String);

    fn errors(text: &str) -> Vec<Found> {
        match load(text, Path::new("f.toml"), &env) {
            Ok(spec) => panic!("expected errors, got {spec:?}"),
            Err(errs) => errs
                .0
                .into_iter()
                .map(|e| (e.line, e.column, e.key, e.message))
                .collect(),
        }
    }

    #[test]
    fn positions_and_keys() {
        let t = |l: usize, c: usize, k: &str, m: &str| (l, c, k.to_string(), m.to_string());
        let not_set = "environment variable NOPE is not set; set it or write ${NOPE:default}";
        let cases: &[(&str, Vec<Found>)] = &[
            ("", vec![t(1, 1, "", "no apps defined")]),
            ("apps = {}", vec![t(1, 8, "apps", "no apps defined")]),
            (
                "[apps.a]\n",
                vec![
                    t(
                        1,
                        1,
                        "apps.a",
                        "missing artifact (or main_class): nothing to run",
                    ),
                    t(1, 1, "apps.a", "missing ports"),
                ],
            ),
            // CRLF line endings count as one line break.
            (
                "[apps.a]\r\nartifact = \"a.jar\"\r\nports = \"x\"\r\n",
                vec![t(3, 9, "apps.a.ports", "`x` is not a port number")],
            ),
            // Errors point inside plain strings, at the string when it has escapes.
            (
                "[apps.a]\nartifact = \"x/${NOPE}\"\nports = \"1\"\n",
                vec![t(2, 15, "apps.a.artifact", not_set)],
            ),
            (
                "[apps.a]\nartifact = 'x/${NOPE}'\nports = \"1\"\n",
                vec![t(2, 15, "apps.a.artifact", not_set)],
            ),
            (
                "[apps.a]\nartifact = \"\\u0078/${NOPE}\"\nports = \"1\"\n",
                vec![t(2, 12, "apps.a.artifact", not_set)],
            ),
            (
                "[apps.a]\nartifact = \"\"\"\nx/${NOPE}\"\"\"\nports = \"1\"\n",
                vec![t(3, 3, "apps.a.artifact", not_set)],
            ),
            // Non-ASCII before the error: columns count characters.
            (
                "[apps.a]\nartifact = \"é/${NOPE}\"\nports = \"1\"\n",
                vec![t(2, 15, "apps.a.artifact", not_set)],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(&errors(text), want, "{text:?}");
        }
    }

    #[test]
    fn no_prefix_of_a_valid_spec_panics() {
        let text = "[daemon]\nhttp = \"127.0.0.1:9900\"\n[apps.é-x]\nartifact = \"${HOME}/a.jar\"\n\
                    ports = \"9100-9101\"\nenv = { A = \"${PORT}\" }\n[apps.é-x.health]\nexec = [\"x\"]\n";
        for (i, _) in text.char_indices() {
            let _ = load(&text[..i], Path::new("f.toml"), &env);
        }
    }
}
