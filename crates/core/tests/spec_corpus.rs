//! The spec corpus: every file in `spec_errors/` must fail to load and its rendered errors are
//! snapshot-tested (review every `.snap` when it changes: the text is what users read);
//! every file in `spec_ok/` must load, and its typed result is checked.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jarfleet_core::interp::resolve_instance;
use jarfleet_core::spec::{self, FleetSpec, HealthCheck, Launch, PortRange, Strategy};

/// The fixed environment every corpus file is loaded with.
fn env(name: &str) -> Option<String> {
    match name {
        "HOME" => Some("/home/deploy".into()),
        "VERSION" => Some("2.1.0".into()),
        "EMPTY" => Some(String::new()),
        // Instance variables must never come from the environment, even when set.
        "PORT" => Some("1".into()),
        _ => None,
    }
}

/// The corpus files of `dir`, as bytes: a spec file need not be UTF-8 (`load_bytes` says so).
fn corpus_bytes(dir: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("corpus dir exists")
        .map(|entry| entry.expect("readable dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .map(|p| {
            let name = p
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let bytes = std::fs::read(&p).expect("readable corpus file");
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

fn corpus(dir: &str) -> Vec<(String, String)> {
    corpus_bytes(dir)
        .into_iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes).expect("a good spec is UTF-8");
            (name, text)
        })
        .collect()
}

#[test]
fn every_bad_spec_fails_with_the_snapshotted_errors() {
    let files = corpus_bytes("spec_errors");
    assert!(
        files.len() >= 18,
        "the corpus has {} bad specs, want at least 18",
        files.len()
    );
    for (name, text) in files {
        let errors = match spec::load_bytes(&text, Path::new(&name), &env) {
            Ok(spec) => panic!("{name} loaded but must fail: {spec:#?}"),
            Err(errors) => errors,
        };
        assert!(!errors.is_empty(), "{name}: no errors");
        let positions: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.column)).collect();
        let mut sorted = positions.clone();
        sorted.sort();
        assert_eq!(
            positions, sorted,
            "{name}: errors are not sorted by position"
        );
        let stem = name.trim_end_matches(".toml").to_string();
        insta::assert_snapshot!(stem, errors.to_string());
    }
}

fn load_ok(name: &str) -> FleetSpec {
    let text = corpus("spec_ok")
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, t)| t)
        .expect("corpus file exists");
    match spec::load(&text, Path::new("/srv/fleet/jarfleet.toml"), &env) {
        Ok(spec) => spec,
        Err(errors) => panic!("{name} must load:\n{errors}"),
    }
}

#[test]
fn every_good_spec_loads() {
    let files = corpus("spec_ok");
    assert!(files.len() >= 3);
    for (name, _) in files {
        load_ok(&name);
    }
}

#[test]
fn a_cluster_node_spec_needs_no_apps_and_gets_its_defaults() {
    let spec = load_ok("cluster-node.toml");
    assert!(spec.apps.is_empty());
    let c = spec.cluster.expect("[cluster]");
    assert_eq!(c.name, "prod");
    assert_eq!(
        c.etcd,
        [
            "http://10.0.0.1:2379",
            "http://10.0.0.2:2379",
            "http://10.0.0.3:2379"
        ]
    );
    assert_eq!(c.node.as_deref(), Some("web-1"));
    assert_eq!(c.advertise, "10.0.0.11");
    assert_eq!(c.peer_port, 9901);
    assert_eq!(c.labels["zone"], "eu-1a");
    assert_eq!(c.memory, Some(6 << 30));
    assert_eq!(c.lease_ttl, Duration::from_secs(6));
    assert_eq!(c.probe_interval, Duration::from_millis(500));
    assert_eq!(c.probe_timeout, Duration::from_millis(300));
    // Without [cluster], a spec still needs an app, and gets none of this.
    let minimal = load_ok("minimal.toml");
    assert!(minimal.cluster.is_none());
    assert_eq!(minimal.apps["web"].placement, Default::default());
    assert_eq!(minimal.apps["web"].instance_memory(), 512 << 20);
}

#[test]
fn minimal_spec_gets_every_default() {
    let spec = load_ok("minimal.toml");
    assert_eq!(spec.source, PathBuf::from("/srv/fleet/jarfleet.toml"));
    assert_eq!(spec.daemon.state_dir, PathBuf::from("/srv/fleet/.jarfleet"));
    assert_eq!(spec.daemon.http, None);
    assert_eq!(spec.daemon.token_file, None);
    assert!(!spec.daemon.open_reads);
    assert!(spec.daemon.metrics, "/metrics is on unless switched off");
    assert!(spec.daemon.http_hosts.is_empty());
    assert_eq!(spec.daemon.http_max_connections, 256);
    assert_eq!(spec.daemon.http_header_timeout, Duration::from_secs(10));
    assert_eq!(spec.daemon.http_idle_timeout, Duration::from_secs(75));
    assert_eq!(spec.daemon.log_max_size, 10_000_000);
    assert_eq!(spec.daemon.log_keep, 5);
    let web = &spec.apps["web"];
    assert_eq!(web.name, "web");
    assert_eq!(
        web.launch,
        Launch::Jar {
            path: "/srv/fleet/web.jar".into(),
            url: None,
            sha256: None,
        }
    );
    assert_eq!(web.workdir, None);
    assert_eq!(web.instances, 1);
    assert_eq!(
        web.ports,
        PortRange {
            first: 8080,
            last: 8080
        }
    );
    assert!(web.args.is_empty() && web.env.is_empty() && web.listen.is_none());
    let java = &web.java;
    assert!(java.version.is_none() && java.home.is_none() && java.opts.is_empty());
    assert!(java.exit_on_oom && java.heap_dump_on_oom && java.gc_log);
    let h = &web.health;
    assert_eq!(
        h.check,
        HealthCheck::Http {
            path: "/actuator/health/readiness".into()
        }
    );
    assert_eq!(
        (
            h.interval,
            h.timeout,
            h.failures,
            h.start_timeout,
            h.unhealthy_restart_after
        ),
        (
            Duration::from_secs(5),
            Duration::from_secs(2),
            3,
            Duration::from_secs(120),
            Duration::from_secs(45)
        )
    );
    let r = &web.restart;
    assert_eq!(
        (
            r.backoff_initial,
            r.backoff_max,
            r.reset_after,
            r.max_restarts
        ),
        (
            Duration::from_secs(1),
            Duration::from_secs(300),
            Duration::from_secs(60),
            None
        )
    );
    assert_eq!(
        (web.stop.drain_timeout, web.stop.stop_timeout),
        (Duration::from_secs(30), Duration::from_secs(30))
    );
    assert_eq!((web.logs.max_size, web.logs.keep), (50_000_000, 10));
    let d = &web.deploy;
    assert_eq!(d.strategy, Strategy::Rolling);
    assert_eq!(
        (d.max_surge, d.max_unavailable, d.min_healthy),
        (1, 0, Duration::from_secs(10))
    );
    assert!(d.auto_rollback);
    assert_eq!(d.keep_old, Duration::from_secs(300));
    assert_eq!(d.canary.steps, vec![5, 25, 50, 100]);
    let b = &web.balancer;
    assert_eq!(*b, spec::BalancerSpec::default());
    let s = Duration::from_secs;
    assert_eq!(
        (
            b.head_timeout,
            b.keepalive_timeout,
            b.body_timeout,
            b.connect_timeout,
            b.response_timeout,
            b.backend_idle_timeout,
            b.tcp_idle_timeout
        ),
        (s(10), s(75), s(30), s(2), s(60), s(20), s(600))
    );
    assert_eq!(
        (b.max_connections, b.max_idle_per_backend, b.request_buffer),
        (10_000, 128, 64 * 1024)
    );
    assert_eq!(
        (
            b.eject_for,
            b.eject_after,
            b.stall_timeout,
            b.stall_probe_timeout
        ),
        (s(5), 3, s(3), s(1))
    );
}

#[test]
fn state_dir_default_follows_jarfleet_state() {
    let text = "[apps.web]\nartifact = \"web.jar\"\nports = \"8080\"\n";
    let with_state = |name: &str| (name == "JARFLEET_STATE").then(|| "/var/lib/jf".to_string());
    let spec = spec::load(text, Path::new("/srv/fleet/jarfleet.toml"), &with_state).expect("loads");
    assert_eq!(spec.daemon.state_dir, PathBuf::from("/var/lib/jf"));
    // A relative spec path keeps relative paths relative (to the caller's working directory).
    let spec = spec::load(text, Path::new("jarfleet.toml"), &env).expect("loads");
    assert_eq!(spec.daemon.state_dir, PathBuf::from(".jarfleet"));
    assert_eq!(
        spec.apps["web"].launch,
        Launch::Jar {
            path: "web.jar".into(),
            url: None,
            sha256: None,
        }
    );
}

#[test]
fn design_example_loads_as_documented() {
    let spec = load_ok("design-example.toml");
    assert_eq!(spec.daemon.http.as_deref(), Some("127.0.0.1:9900"));
    let orders = &spec.apps["orders"];
    assert_eq!(
        orders.launch,
        Launch::Jar {
            path: "/srv/fleet/build/orders-2.1.0.jar".into(),
            url: None,
            sha256: None,
        }
    );
    assert_eq!(orders.instances, 3);
    assert_eq!(
        orders.ports,
        PortRange {
            first: 9100,
            last: 9199
        }
    );
    assert_eq!(orders.args, vec!["--server.port=${PORT}"]);
    assert_eq!(orders.env["SPRING_PROFILES_ACTIVE"], "prod");
    assert_eq!(
        orders.java.version.as_ref().map(|v| v.as_str()),
        Some(">=17")
    );
    assert_eq!(orders.java.opts, vec!["-Xmx256m"]);
    assert_eq!(orders.listen.as_deref(), Some("0.0.0.0:8080"));
}

#[test]
fn full_spec_resolves_paths_and_keeps_instance_vars() {
    let spec = load_ok("full.toml");
    assert_eq!(spec.daemon.state_dir, PathBuf::from("/srv/fleet/state"));
    assert_eq!(spec.daemon.http.as_deref(), Some("[::1]:9900"));
    assert_eq!(
        spec.daemon.token_file,
        Some(PathBuf::from("/srv/fleet/secrets/api-token"))
    );
    assert!(spec.daemon.open_reads);
    assert_eq!(
        spec.daemon.tls,
        Some(spec::TlsSpec {
            cert: "/srv/fleet/tls/server.pem".into(),
            key: "/etc/jarfleet/server.key".into(),
        })
    );
    assert!(!spec.daemon.metrics);
    assert_eq!(
        spec.daemon.http_hosts,
        vec!["dash.example.com", "10.1.2.3", "[fd00::1]"]
    );
    assert_eq!(spec.daemon.http_max_connections, 64);
    assert_eq!(spec.daemon.http_header_timeout, Duration::from_secs(5));
    assert_eq!(spec.daemon.http_idle_timeout, Duration::from_secs(60));
    assert_eq!(spec.daemon.log_max_size, 2_000_000);
    assert_eq!(spec.daemon.log_keep, 3);

    let h2 = &spec.apps["h2"];
    assert_eq!(
        h2.launch,
        Launch::MainClass {
            main_class: "org.h2.tools.Server".into(),
            classpath: vec![
                "/srv/fleet/lib/*.jar".into(),
                "/opt/h2/h2.jar".into(),
                "/srv/fleet/conf".into()
            ],
        }
    );
    assert_eq!(h2.workdir, Some(PathBuf::from("/home/deploy/h2")));
    assert_eq!(
        h2.ports,
        PortRange {
            first: 9092,
            last: 9092
        }
    );
    // Templates: instance vars kept, literal `$` written `$$`.
    assert_eq!(
        h2.args,
        vec![
            "-tcp",
            "-tcpPort",
            "${PORT}",
            "-baseDir",
            "data/${JARFLEET_SLOT}",
            "price: $$5",
            "fallback"
        ]
    );
    assert_eq!(h2.env["H2_INSTANCE"], "${JARFLEET_INSTANCE}");
    assert_eq!(h2.env["LITERAL"], "$${PORT}");
    assert_eq!(h2.env["QUOTED_KEY"], "v");
    assert_eq!(h2.java.version.as_ref().map(|v| v.as_str()), Some("17+"));
    assert_eq!(h2.java.home, Some(PathBuf::from("/srv/fleet/jdks/17")));
    assert_eq!(h2.java.opts, vec!["-Xmx64m", "-Dh2.port=${PORT}"]);
    assert!(!h2.java.exit_on_oom && !h2.java.heap_dump_on_oom && !h2.java.gc_log);
    assert_eq!(
        h2.health.check,
        HealthCheck::Exec {
            argv: vec!["./bin/check".into(), "--port".into(), "${PORT}".into()]
        }
    );
    assert_eq!(h2.health.interval, Duration::from_secs(90));
    assert_eq!(h2.health.timeout, Duration::from_millis(250));
    assert_eq!(h2.health.failures, 1);
    assert_eq!(h2.health.unhealthy_restart_after, Duration::from_secs(3600));
    assert_eq!(h2.restart.backoff_initial, Duration::from_millis(500));
    assert_eq!(h2.restart.max_restarts, Some(5));
    assert_eq!(h2.stop.drain_timeout, Duration::ZERO);
    assert_eq!((h2.logs.max_size, h2.logs.keep), (10 * 1024 * 1024, 3));
    assert_eq!(h2.deploy.strategy, Strategy::Canary);
    assert_eq!((h2.deploy.max_surge, h2.deploy.max_unavailable), (0, 1));
    assert_eq!(h2.deploy.canary.steps, vec![10, 100]);
    assert_eq!(h2.deploy.canary.max_error_rate, 0.0);
    assert_eq!(h2.deploy.canary.max_p99_ratio, 2.0);

    // What an instance finally sees.
    let vars: BTreeMap<&str, String> = [
        ("PORT", "9092".to_string()),
        ("JARFLEET_SLOT", "1".to_string()),
        ("JARFLEET_INSTANCE", "h2/1".to_string()),
    ]
    .into_iter()
    .collect();
    let resolved: Vec<String> = h2.args.iter().map(|a| resolve_instance(a, &vars)).collect();
    assert_eq!(
        resolved,
        vec![
            "-tcp",
            "-tcpPort",
            "9092",
            "-baseDir",
            "data/1",
            "price: $5",
            "fallback"
        ]
    );
    assert_eq!(resolve_instance(&h2.env["LITERAL"], &vars), "${PORT}");

    let proxy = &spec.apps["proxy-1"];
    assert_eq!(
        proxy.launch,
        Launch::Jar {
            path: "/opt/proxy/proxy.jfb".into(),
            url: None,
            sha256: None,
        }
    );
    assert_eq!(proxy.health.check, HealthCheck::Tcp);
    assert_eq!(proxy.deploy.strategy, Strategy::BlueGreen);
    let ms = Duration::from_millis;
    assert_eq!(
        proxy.balancer,
        spec::BalancerSpec {
            balance: spec::Balance::LeastRequest,
            slow_start: Duration::ZERO,
            head_timeout: ms(5_000),
            keepalive_timeout: ms(120_000),
            body_timeout: ms(15_000),
            connect_timeout: ms(500),
            response_timeout: ms(300_000),
            backend_idle_timeout: ms(10_000),
            tcp_idle_timeout: ms(3_600_000),
            max_connections: 2000,
            max_idle_per_backend: 0,
            request_buffer: 0,
            eject_for: ms(30_000),
            eject_after: 1,
            stall_timeout: Duration::ZERO,
            stall_probe_timeout: ms(250),
        }
    );
}

#[test]
fn a_stored_balancer_without_the_newer_keys_reads_their_defaults() {
    // What a daemon of the previous version stored for an app's balancer.
    let old = r#"{"balance": "least-request", "slow_start": {"secs": 5, "nanos": 0}}"#;
    let b: spec::BalancerSpec = serde_json::from_str(old).expect("an old record loads");
    assert_eq!(
        b,
        spec::BalancerSpec {
            balance: spec::Balance::LeastRequest,
            slow_start: Duration::from_secs(5),
            ..spec::BalancerSpec::default()
        }
    );
}

#[test]
fn spec_round_trips_through_json() {
    // The CLI sends the typed spec to the daemon: it must survive serialisation.
    let spec = load_ok("full.toml");
    let json = serde_json::to_string(&spec).expect("serialises");
    let back: FleetSpec = serde_json::from_str(&json).expect("deserialises");
    assert_eq!(back, spec);
}

#[test]
fn daemon_settings_stored_before_the_api_limits_get_their_defaults() {
    // The store keeps the last applied `[daemon]` settings as JSON; those of an older daemon
    // lack the TCP API's limits and host names.
    let spec = load_ok("full.toml");
    let mut json = serde_json::to_value(&spec.daemon).expect("serialises");
    let map = json.as_object_mut().expect("an object");
    for key in [
        "http_hosts",
        "http_max_connections",
        "http_header_timeout",
        "http_idle_timeout",
        "log_max_size",
        "log_keep",
    ] {
        assert!(map.remove(key).is_some(), "{key} is serialised");
    }
    let old: spec::DaemonSpec = serde_json::from_value(json).expect("deserialises");
    assert!(old.http_hosts.is_empty());
    assert_eq!(old.http_max_connections, 256);
    assert_eq!(old.http_header_timeout, Duration::from_secs(10));
    assert_eq!(old.http_idle_timeout, Duration::from_secs(75));
    assert_eq!((old.log_max_size, old.log_keep), (10_000_000, 5));
    assert_eq!(old.http, spec.daemon.http);
}

#[test]
fn twenty_thousand_bad_tables_are_all_reported() {
    // Each error's position once cost a scan from the start of the file (20,000 errors took
    // half a minute); the timing lives in docs/BENCHMARKS.md ("Spec errors at scale"), this
    // checks that every error is there, in order, at its line.
    let n = 20_000;
    let text: String = (0..n)
        .map(|i| {
            format!(
                "[apps.app{i}]\nartifact = \"app.jar\"\nports = \"{}\"\nbogus = 1\n\n",
                10_000 + i
            )
        })
        .collect();
    let errors = spec::load(&text, Path::new("big.toml"), &env).expect_err("every table is bad");
    assert_eq!(errors.len(), n);
    for (i, e) in errors.iter().enumerate() {
        assert_eq!((e.line, e.column), (5 * i + 4, 1), "{e}");
        assert_eq!(e.key, format!("apps.app{i}.bogus"));
    }
}
