//! `/metrics` against a real fleet: the exposition passes `promtool check metrics` (Prometheus's
//! own parser and linter), is read with a parser crate, and its counters follow traffic through
//! the load balancer, a `kill -9` and a deployment. `[daemon] metrics = false` takes it away.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use prometheus_parse::{Sample, Value};

use crate::fixture::fixture_variant;
use crate::harness::*;

const START: Duration = Duration::from_secs(90);

/// Prometheus's `promtool`; the test fails without it.
fn promtool() -> PathBuf {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .or_else(|| {
            std::env::var_os("PATH").and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("promtool"))
                    .find(|p| p.is_file())
            })
        })
        .expect("promtool not found: install it with `apt-get install -y prometheus`")
}

/// `promtool check metrics` on `text`: parse errors and lint problems both fail.
pub(crate) fn assert_promtool_accepts(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running promtool");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let out = wait_with_deadline(child, "promtool check metrics", Duration::from_secs(60));
    assert!(
        out.status.success(),
        "promtool check metrics failed ({}):\n{}{}\n--- the exposition:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One scrape through `jarfleet metrics`, checked by promtool and parsed.
fn scrape(fleet: &Fleet) -> Vec<Sample> {
    let text = fleet.ok(&["metrics"]);
    assert_promtool_accepts(&text);
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("the exposition parses")
        .samples
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Counter(n) | Value::Gauge(n) | Value::Untyped(n) => *n,
        other => panic!("not a single number: {other:?}"),
    }
}

/// Samples of `metric` whose labels include every `(name, value)` of `labels`.
fn matching<'a>(samples: &'a [Sample], metric: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect()
}

/// The sum of `metric` over the samples matching `labels` (0 when there is none).
fn sum(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
    matching(samples, metric, labels)
        .iter()
        .map(|s| number(&s.value))
        .sum()
}

/// A fleet of `instances` fixture JVMs behind the balancer on 127.0.0.1:PORT.
fn fleet_behind_lb(instances: u32, daemon: &str) -> (Fleet, u16) {
    let fleet = Fleet::new(12);
    let lb = free_port();
    let listen = format!("listen = \"127.0.0.1:{lb}\"");
    let app = fleet.app_toml(&AppDef {
        instances,
        extra: &listen,
        health: "http = \"/health\"\ninterval = \"500ms\"\nstart_timeout = \"20s\"",
        tables: "[apps.fx.deploy]\nmin_healthy = \"500ms\"\n",
        ..Default::default()
    });
    fleet.write_spec(&format!("{daemon}\n{app}"));
    fleet.up();
    fleet.wait_ready("fx", instances as usize, START);
    (fleet, lb)
}

#[test]
fn metrics_pass_promtool_and_follow_traffic_crashes_and_deploys() {
    let (fleet, lb) = fleet_behind_lb(2, "");
    let before = scrape(&fleet);
    let release = fleet.instance("fx", 0)["release"]
        .as_str()
        .expect("a release")
        .to_string();
    for slot in ["0", "1"] {
        let of = [("app", "fx"), ("slot", slot), ("release", release.as_str())];
        assert_eq!(
            sum(&before, "jarfleet_instance_up", &of),
            1.0,
            "slot {slot}"
        );
        assert_eq!(
            sum(&before, "jarfleet_instance_ready", &of),
            1.0,
            "slot {slot}"
        );
        assert!(sum(&before, "jarfleet_instance_resident_memory_bytes", &of) > 1e6);
        assert_eq!(
            matching(&before, "jarfleet_instance_cpu_seconds_total", &of).len(),
            1
        );
    }
    assert_eq!(
        matching(
            &before,
            "jarfleet_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        )
        .len(),
        1
    );
    assert_eq!(
        sum(&before, "jarfleet_deployment_in_progress", &[("app", "fx")]),
        0.0
    );

    // N requests through the app's listen address: 2xx grows by N, spread over both backends.
    const N: u64 = 40;
    let ok2xx = [("app", "fx"), ("code", "2xx")];
    for _ in 0..N {
        let (status, _) = http_get(lb, "/").expect("a response through the balancer");
        assert_eq!(status, 200);
    }
    let after = scrape(&fleet);
    let grown = sum(&after, "jarfleet_proxy_requests_total", &ok2xx)
        - sum(&before, "jarfleet_proxy_requests_total", &ok2xx);
    assert_eq!(grown, N as f64, "2xx responses counted");
    let backends = matching(&after, "jarfleet_proxy_requests_total", &ok2xx);
    assert_eq!(backends.len(), 2, "one 2xx series per backend");
    for b in &backends {
        let id = b.labels.get("backend").expect("a backend label");
        let was = sum(
            &before,
            "jarfleet_proxy_requests_total",
            &[("backend", id), ("code", "2xx")],
        );
        assert!(
            number(&b.value) > was,
            "backend {id} got none of the requests"
        );
        assert_eq!(b.labels.get("release"), Some(release.as_str()));
    }
    for other in ["4xx", "5xx"] {
        assert_eq!(
            sum(
                &after,
                "jarfleet_proxy_requests_total",
                &[("app", "fx"), ("code", other)]
            ),
            0.0
        );
    }
    // The latency histogram counts the same responses, each in a bucket.
    let histograms = matching(
        &after,
        "jarfleet_proxy_request_duration_seconds",
        &[("app", "fx")],
    );
    let counted: f64 = histograms
        .iter()
        .map(|s| match &s.value {
            Value::Histogram(b) => b
                .iter()
                .find(|c| c.less_than.is_infinite())
                .map_or(0.0, |c| c.count),
            other => panic!("not a histogram: {other:?}"),
        })
        .sum();
    assert_eq!(
        counted,
        sum(&after, "jarfleet_proxy_requests_total", &[("app", "fx")])
    );
    // Health checks are timed per instance.
    for slot in ["0", "1"] {
        let ok = matching(
            &after,
            "jarfleet_health_check_duration_seconds_count",
            &[("slot", slot), ("result", "ok")],
        );
        assert!(
            ok.iter().map(|s| number(&s.value)).sum::<f64>() >= 1.0,
            "slot {slot}: no successful health check counted"
        );
    }
    assert!(
        sum(
            &after,
            "jarfleet_control_events_total",
            &[("event", "probe")]
        ) >= 2.0
    );

    // kill -9 a JVM: its exit (class signal) and its restart are counted.
    let victim = [("app", "fx"), ("slot", "0"), ("release", release.as_str())];
    let restarts0 = sum(&after, "jarfleet_instance_restarts_total", &victim);
    let killed = [("app", "fx"), ("slot", "0"), ("class", "signal")];
    let exits0 = sum(&after, "jarfleet_instance_exits_total", &killed);
    let pid = fleet.instance("fx", 0)["pid"].as_u64().expect("a pid") as u32;
    kill9(pid);
    wait_until("the kill counted as an exit and a restart", START, || {
        let now = scrape(&fleet);
        (sum(&now, "jarfleet_instance_exits_total", &killed) == exits0 + 1.0
            && sum(&now, "jarfleet_instance_restarts_total", &victim) == restarts0 + 1.0)
            .then_some(())
    });
    fleet.wait_ready("fx", 2, START);
    let now = scrape(&fleet);
    assert_eq!(sum(&now, "jarfleet_instance_up", &victim), 1.0);
    // The other instance saw nothing.
    let other = [("app", "fx"), ("slot", "1")];
    assert_eq!(sum(&now, "jarfleet_instance_exits_total", &other), 0.0);
    assert_eq!(sum(&now, "jarfleet_instance_restarts_total", &other), 0.0);

    // A deploy: one succeeded rolling deployment, nothing left in progress.
    let succeeded = [
        ("app", "fx"),
        ("strategy", "rolling"),
        ("outcome", "succeeded"),
    ];
    assert_eq!(sum(&now, "jarfleet_deployments_total", &succeeded), 0.0);
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    let deployed = scrape(&fleet);
    assert_eq!(
        sum(&deployed, "jarfleet_deployments_total", &succeeded),
        1.0
    );
    assert_eq!(
        sum(
            &deployed,
            "jarfleet_deployment_in_progress",
            &[("app", "fx")]
        ),
        0.0
    );
    // A rolling deploy starts new slots for the new release and forgets the old ones.
    let ready = fleet.wait_ready("fx", 2, START);
    let new_release = ready[0]["release"].as_str().expect("a release").to_string();
    assert_ne!(new_release, release);
    assert_eq!(
        sum(
            &deployed,
            "jarfleet_instance_ready",
            &[("app", "fx"), ("release", new_release.as_str())]
        ),
        2.0,
        "both instances ready on the new release"
    );
}

/// A GET over the daemon's unix socket without the API's protocol header, as a scraper (or a
/// proxy in front of the socket) sends it: (status line, content type, body).
fn raw_get(fleet: &Fleet, path: &str) -> (String, String, String) {
    let mut s = std::os::unix::net::UnixStream::connect(fleet.state.join("jarfleet.sock"))
        .expect("connecting to the daemon's socket");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    (status, content_type, body.to_string())
}

#[test]
fn metrics_can_be_switched_off_and_on_again() {
    let (fleet, _) = fleet_behind_lb(1, "[daemon]\nmetrics = false\n");
    let out = fleet.run(&["metrics"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("metrics are switched off"), "{err}");
    assert!(err.contains("metrics = true"), "the hint says how: {err}");
    assert!(out.stdout.is_empty());
    let (status, _, _) = raw_get(&fleet, "/metrics");
    assert!(status.contains(" 404 "), "{status}");

    // On again: served without the API's protocol header, in the Prometheus text format.
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("the spec");
    fleet.write_spec(&spec.replace("metrics = false", "metrics = true"));
    fleet.ok(&["apply"]);
    let (status, content_type, body) = raw_get(&fleet, "/metrics");
    assert!(status.contains(" 200 "), "{status}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_promtool_accepts(&body);
    assert!(
        body.contains("jarfleet_instance_up{app=\"fx\",slot=\"0\""),
        "{body}"
    );
    assert!(
        fleet.events().iter().any(|e| e["kind"] == "config.metrics"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("turned on"))),
        "the switch is recorded as an event"
    );
    // The rest of the API still wants its header.
    let (status, _, _) = raw_get(&fleet, "/v1/status");
    assert!(status.contains(" 426 "), "{status}");
}

/// Every query of a Grafana dashboard, panel by panel (and its annotations).
fn dashboard_queries(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(expr) = map.get("expr").and_then(|e| e.as_str()) {
                out.push(expr.to_string());
            }
            map.values().for_each(|v| dashboard_queries(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_is_importable_and_its_queries_parse() {
    let path = crate::fixture::workspace_root().join("docs/grafana-jarfleet.json");
    let text = std::fs::read_to_string(&path).expect("docs/grafana-jarfleet.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    // Importable anywhere: the data source is an input chosen at import.
    assert_eq!(dash["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dash["__inputs"][0]["pluginId"], "prometheus");
    let panels = dash["panels"].as_array().expect("panels");
    let mut titles = Vec::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        titles.push(p["title"].as_str().unwrap_or_default().to_string());
        assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        for t in p["targets"].as_array().expect("targets") {
            assert_eq!(t["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
    for wanted in [
        "Instances up and ready",
        "Restarts",
        "Requests by status class",
        "p99 time to response head",
        "Deployments by outcome",
    ] {
        assert!(
            titles.iter().any(|t| t == wanted),
            "no panel {wanted:?}: {titles:?}"
        );
    }

    // Every query parses as PromQL: promtool checks them as recording rules (JSON is YAML).
    let mut queries = Vec::new();
    dashboard_queries(&dash, &mut queries);
    assert!(queries.len() >= 20, "{queries:?}");
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let expr = q.replace("$__rate_interval", "5m").replace("$app", ".*");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("dashboard-rules.yml");
    let doc = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(&file, doc.to_string()).expect("writing the rules");
    let out = run_with_deadline(
        Command::new(promtool()).args(["check", "rules"]).arg(&file),
        Duration::from_secs(60),
    )
    .expect("running promtool");
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
