//! nginx and HAProxy config for the fleet's ready instances (pure: text from a status report).

use jarfleet_api::{AppStatus, HealthInfo, StatusReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Tcp,
}

/// One app as an outside load balancer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub app: String,
    pub mode: Mode,
    /// `HOST:PORT` to listen on; `None`: only the upstream/backend is written.
    pub listen: Option<String>,
    /// `(slot, port)` of each ready instance.
    pub servers: Vec<(u32, u16)>,
    pub health: Option<HealthInfo>,
}

/// Splits `listen` (`HOST:PORT`, `http://HOST:PORT`, `tcp://HOST:PORT`) into mode and address.
pub fn parse_listen(listen: &str) -> Result<(Option<Mode>, String), String> {
    let (mode, addr) = if let Some(a) = listen.strip_prefix("tcp://") {
        (Some(Mode::Tcp), a)
    } else if let Some(a) = listen.strip_prefix("http://") {
        (Some(Mode::Http), a)
    } else {
        (None, listen)
    };
    if let Err(why) = jarfleet_core::spec::host_port(addr) {
        return Err(format!(
            "listen address {listen:?}: {why} (e.g. 0.0.0.0:8080, tcp://127.0.0.1:5432)"
        ));
    }
    Ok((mode, addr.to_string()))
}

/// The backends to write: `app` alone or every app, each with at least one ready instance.
/// `listen` (only with `app`) replaces the app's own `listen`.
pub fn backends(
    report: &StatusReport,
    app: Option<&str>,
    listen: Option<&str>,
) -> Result<Vec<Backend>, ExportError> {
    if report.apps.is_empty() {
        return Err(ExportError::Usage(
            "the fleet has no apps: nothing to export".into(),
            "apply a spec first (`jarfleet up -d` or `jarfleet apply`)".into(),
        ));
    }
    let chosen: Vec<&AppStatus> = match app {
        Some(name) => match report.apps.iter().find(|a| a.name == name) {
            Some(a) => vec![a],
            None => {
                let names: Vec<&str> = report.apps.iter().map(|a| a.name.as_str()).collect();
                return Err(ExportError::Usage(
                    format!("no app {name:?} in the fleet"),
                    format!("its apps: {}", names.join(", ")),
                ));
            }
        },
        None => report.apps.iter().collect(),
    };
    let mut out = Vec::new();
    for a in chosen {
        let own = match &a.listen {
            Some(l) => Some(parse_listen(l).map_err(|e| ExportError::Failed(e, None))?),
            None => None,
        };
        let given = match listen {
            Some(l) => {
                Some(parse_listen(l).map_err(|e| ExportError::Usage(e, "check --listen".into()))?)
            }
            None => None,
        };
        let mode = given
            .as_ref()
            .and_then(|(m, _)| *m)
            .or(own.as_ref().and_then(|(m, _)| *m))
            .unwrap_or(Mode::Http);
        let listen = given.or(own).map(|(_, addr)| addr);
        let mut servers: Vec<(u32, u16)> = a
            .instances
            .iter()
            .filter(|i| i.ready)
            .filter_map(|i| Some((i.slot, i.port?)))
            .collect();
        servers.sort();
        if servers.is_empty() {
            return Err(ExportError::Failed(
                format!("app {} has no ready instance: nothing to export", a.name),
                Some(format!(
                    "wait until `jarfleet status {}` shows ready instances, then export again",
                    a.name
                )),
            ));
        }
        if let Some(HealthInfo {
            path: Some(path), ..
        }) = &a.health
            && !path_fits(path)
        {
            return Err(ExportError::Failed(
                format!(
                    "app {}'s health path {path:?} cannot be written into an nginx or HAProxy config",
                    a.name
                ),
                Some("use a plain URL path (percent-encode blanks, quotes and #)".into()),
            ));
        }
        out.push(Backend {
            app: a.name.clone(),
            mode,
            listen,
            servers,
            health: a.health.clone(),
        });
    }
    Ok(out)
}

/// Why nothing was exported: bad input (exit 2) or a fleet that cannot be exported (exit 1).
#[derive(Debug, PartialEq, Eq)]
pub enum ExportError {
    Usage(String, String),
    Failed(String, Option<String>),
}

fn path_fits(path: &str) -> bool {
    path.starts_with('/')
        && !path.chars().any(|c| {
            c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '\\' | '#' | '$' | ';')
        })
}

fn secs(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

const HEADER: &str = "\
# Written by `jarfleet export` from the running fleet: only ready instances are listed, and an
# instance's port changes when it restarts or a new release rolls out. Export again (and
# reload) after deploys, restarts and scaling.
";

/// nginx: one `upstream` per app and a `server` for apps with a listen address. Goes inside
/// nginx's `http { }` (e.g. /etc/nginx/conf.d/jarfleet.conf). `tcp` apps need a `stream { }`
/// block: they are left out, each named in a comment; `skipped` lists them.
pub fn nginx(backends: &[Backend]) -> (String, Vec<String>) {
    let mut out = String::from(HEADER);
    out.push_str("# Include inside nginx's http { } block.\n");
    let mut skipped = Vec::new();
    for b in backends {
        out.push('\n');
        if b.mode == Mode::Tcp {
            out.push_str(&format!(
                "# {}: a tcp app; nginx proxies tcp only in a stream {{ }} block: left out (see `jarfleet export haproxy`).\n",
                b.app
            ));
            skipped.push(b.app.clone());
            continue;
        }
        let name = format!("jarfleet_{}", b.app);
        out.push_str(&format!("upstream {name} {{\n"));
        if let Some(h) = &b.health {
            out.push_str(&format!(
                "    # jarfleet checks {} every {}; nginx sees failures only passively.\n",
                describe(h),
                secs(h.interval_ms)
            ));
        }
        out.push_str(
            "    # Like jarfleet's own balancer: an instance that fails is skipped for 5 s.\n",
        );
        for (slot, port) in &b.servers {
            out.push_str(&format!(
                "    server 127.0.0.1:{port} max_fails=1 fail_timeout=5s;  # {}/{slot}\n",
                b.app
            ));
        }
        out.push_str("    keepalive 32;\n}\n");
        match &b.listen {
            None => out.push_str(&format!(
                "# {}: no listen address (give one with --listen); in a server block of yours:\n#     location / {{ proxy_pass http://{name}; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n",
                b.app
            )),
            Some(listen) => {
                out.push_str(&format!(
                    "\nserver {{\n    listen {listen};\n    location / {{\n        proxy_pass http://{name};\n"
                ));
                out.push_str(
                    "        proxy_http_version 1.1;
        proxy_set_header Connection \"\";
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $host;
        # A request that failed before any response is sent once more, to another instance.
        proxy_next_upstream error timeout;
        proxy_next_upstream_tries 2;
    }
}
",
                );
            }
        }
    }
    (out, skipped)
}

fn describe(h: &HealthInfo) -> String {
    match (&h.check[..], &h.path) {
        ("http", Some(p)) => format!("GET {p}"),
        ("tcp", _) => "a tcp connect".into(),
        (other, _) => format!("an {other} command"),
    }
}

/// HAProxy: a `backend` per app with active checks like jarfleet's (`option httpchk` on the
/// health path, 2xx/3xx healthy), and a `frontend` for apps with a listen address.
pub fn haproxy(backends: &[Backend]) -> String {
    let mut out = String::from(HEADER);
    out.push_str("# Add to haproxy.cfg, or pass as one more -f file.\n");
    for b in backends {
        let name = format!("jarfleet_{}", b.app);
        let (mode, idle) = match b.mode {
            Mode::Http => ("http", "75s"),
            Mode::Tcp => ("tcp", "1h"),
        };
        if let Some(listen) = &b.listen {
            out.push_str(&format!(
                "\nfrontend {name}\n    mode {mode}\n    bind {listen}\n    timeout client {idle}\n"
            ));
            if b.mode == Mode::Http {
                out.push_str("    option forwardfor\n");
            }
            out.push_str(&format!("    default_backend {name}\n"));
        } else {
            out.push_str(&format!(
                "\n# {}: no listen address; point a frontend of yours at backend {name}.\n",
                b.app
            ));
        }
        out.push_str(&format!(
            "\nbackend {name}\n    mode {mode}\n    balance roundrobin\n    timeout connect 5s\n    timeout server {}\n",
            if b.mode == Mode::Http { "60s" } else { idle }
        ));
        // A request that failed on connect goes to another instance, once.
        out.push_str("    retries 1\n    option redispatch\n");
        let mut check = String::from("check");
        if let Some(h) = &b.health {
            out.push_str(&format!("    timeout check {}\n", secs(h.timeout_ms)));
            match (&h.check[..], &h.path) {
                ("http", Some(path)) => out.push_str(&format!(
                    "    option httpchk\n    http-check send meth GET uri {path}\n    http-check expect rstatus ^[23]\n"
                )),
                ("http" | "tcp", _) => {}
                (other, _) => out.push_str(&format!(
                    "    # jarfleet checks it with an {other} command; HAProxy checks a tcp connect.\n"
                )),
            }
            check = format!(
                "check inter {} fall {} rise 1",
                secs(h.interval_ms),
                h.failures.max(1)
            );
        }
        for (slot, port) in &b.servers {
            out.push_str(&format!(
                "    server {}-{slot} 127.0.0.1:{port} {check}\n",
                b.app
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use jarfleet_api::{DaemonStatus, InstanceStatus};

    fn instance(app: &str, slot: u32, port: Option<u16>, ready: bool) -> InstanceStatus {
        InstanceStatus {
            app: app.into(),
            slot,
            state: if ready { "ready" } else { "starting" }.into(),
            ready,
            release: "r1".into(),
            pid: Some(100 + slot),
            shim_pid: Some(200 + slot),
            port,
            uptime_secs: Some(5),
            restarts: 0,
            cpu_percent: None,
            rss_bytes: None,
            last_exit: None,
            health_error: None,
        }
    }

    fn app(
        name: &str,
        listen: Option<&str>,
        health: Option<HealthInfo>,
        instances: Vec<InstanceStatus>,
    ) -> AppStatus {
        AppStatus {
            name: name.into(),
            release: "r1".into(),
            desired: instances.len() as u32,
            ready: instances.iter().filter(|i| i.ready).count() as u32,
            rolling: false,
            deployment: None,
            listen: listen.map(str::to_string),
            listener: None,
            health,
            balancer: None,
            java: None,
            canary: None,
            instances,
        }
    }

    fn http_health(path: &str) -> Option<HealthInfo> {
        Some(HealthInfo {
            check: "http".into(),
            path: Some(path.into()),
            interval_ms: 5000,
            timeout_ms: 2000,
            failures: 3,
        })
    }

    fn fleet() -> StatusReport {
        StatusReport {
            daemon: DaemonStatus {
                pid: 1,
                version: "0.1.0".into(),
                build: String::new(),
                data_plane: None,
                state_dir: "/srv/state".into(),
                uptime_secs: 1,
                spec: None,
                open_files: None,
                store: None,
                warnings: Vec::new(),
            },
            strays: vec![],
            cluster: None,
            apps: vec![
                app(
                    "orders",
                    Some("0.0.0.0:8080"),
                    http_health("/actuator/health/readiness"),
                    vec![
                        instance("orders", 1, Some(9101), true),
                        instance("orders", 0, Some(9100), true),
                        instance("orders", 2, Some(9102), false),
                        instance("orders", 3, None, false),
                    ],
                ),
                app(
                    "pg-proxy",
                    Some("tcp://127.0.0.1:6432"),
                    Some(HealthInfo {
                        check: "tcp".into(),
                        path: None,
                        interval_ms: 1500,
                        timeout_ms: 500,
                        failures: 2,
                    }),
                    vec![instance("pg-proxy", 0, Some(9200), true)],
                ),
                app(
                    "billing",
                    None,
                    Some(HealthInfo {
                        check: "exec".into(),
                        path: None,
                        interval_ms: 5000,
                        timeout_ms: 2000,
                        failures: 3,
                    }),
                    vec![instance("billing", 0, Some(9300), true)],
                ),
            ],
        }
    }

    #[test]
    fn only_ready_instances_in_slot_order() {
        let b = backends(&fleet(), Some("orders"), None).expect("exports");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].servers, vec![(0, 9100), (1, 9101)]);
        assert_eq!(b[0].listen.as_deref(), Some("0.0.0.0:8080"));
        assert_eq!(b[0].mode, Mode::Http);
    }

    #[test]
    fn listen_flag_replaces_the_apps_own() {
        let b = backends(&fleet(), Some("pg-proxy"), Some("127.0.0.1:7000")).expect("exports");
        assert_eq!(b[0].listen.as_deref(), Some("127.0.0.1:7000"));
        assert_eq!(b[0].mode, Mode::Tcp, "the app's own mode stays");
        let b = backends(&fleet(), Some("billing"), Some("tcp://[::1]:7000")).expect("exports");
        assert_eq!(
            (b[0].mode, b[0].listen.as_deref()),
            (Mode::Tcp, Some("[::1]:7000"))
        );
    }

    #[test]
    fn refusals() {
        let err = |app: Option<&str>, listen: Option<&str>, r: &StatusReport| {
            backends(r, app, listen).expect_err("refused")
        };
        assert_eq!(
            err(Some("nope"), None, &fleet()),
            ExportError::Usage(
                "no app \"nope\" in the fleet".into(),
                "its apps: orders, pg-proxy, billing".into()
            )
        );
        assert!(matches!(
            err(Some("orders"), Some("8080"), &fleet()),
            ExportError::Usage(m, _) if m.contains("expected host:port")
        ));
        let mut none_ready = fleet();
        none_ready.apps[2].instances[0].ready = false;
        assert!(matches!(
            err(None, None, &none_ready),
            ExportError::Failed(m, Some(_)) if m == "app billing has no ready instance: nothing to export"
        ));
        let mut empty = fleet();
        empty.apps.clear();
        assert!(matches!(err(None, None, &empty), ExportError::Usage(..)));
        let mut odd = fleet();
        odd.apps[0].health = http_health("/health check");
        assert!(
            matches!(err(None, None, &odd), ExportError::Failed(m, _) if m.contains("health path"))
        );
    }

    #[test]
    fn listen_addresses() {
        let ok = [
            ("0.0.0.0:8080", None, "0.0.0.0:8080"),
            ("http://127.0.0.1:80", Some(Mode::Http), "127.0.0.1:80"),
            ("tcp://localhost:5432", Some(Mode::Tcp), "localhost:5432"),
            ("[::]:8080", None, "[::]:8080"),
        ];
        for (l, mode, addr) in ok {
            assert_eq!(parse_listen(l), Ok((mode, addr.to_string())), "{l}");
        }
        for bad in [
            "8080",
            ":8080",
            "host:0",
            "host:99999",
            "a b:80",
            "h:80;",
            "udp://h:1",
        ] {
            assert!(parse_listen(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nginx_config() {
        let b = backends(&fleet(), None, None).expect("exports");
        let (text, skipped) = nginx(&b);
        assert_eq!(skipped, vec!["pg-proxy".to_string()]);
        insta::assert_snapshot!(text);
    }

    #[test]
    fn haproxy_config() {
        let b = backends(&fleet(), None, None).expect("exports");
        insta::assert_snapshot!(haproxy(&b));
    }
}
