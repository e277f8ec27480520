//! The dashboard in a real headless Chromium (Debian `chromium`, driven over the DevTools
//! protocol) against a running fleet of fixture JVMs: it shows the instances, a `kill -9` shows
//! up live (no reload), actions are refused without the token and go through with it, the log
//! tail streams, and screenshots (desktop and phone) are saved as test artifacts.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use headless_chrome::protocol::cdp::{Emulation, Page};
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::{Value, json};

use crate::harness::*;
use crate::remote_api::{api_spec, new_token};

/// The system's Chromium; the test fails (never skips) without it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("chromium is missing: apt-get install -y chromium");
}

fn browser() -> Browser {
    let options = LaunchOptions::default_builder()
        .path(Some(chromium()))
        .headless(true)
        // Chromium's sandbox does not run as root (CI runs as root).
        .sandbox(false)
        .window_size(Some((1280, 1000)))
        .idle_browser_timeout(Duration::from_secs(300))
        .build()
        .expect("chromium launch options");
    Browser::new(options).expect("starting chromium")
}

/// Evaluates `expr` in the page and returns its value (through JSON, so objects come back whole).
fn js(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("JSON.stringify(({expr}) ?? null)");
    let result = tab
        .evaluate(&wrapped, false)
        .expect("evaluating in the page");
    result
        .value
        .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()))
        .unwrap_or(Value::Null)
}

/// Like [`js`] for an expression that is a promise.
fn js_await(tab: &Tab, expr: &str) -> Value {
    let wrapped = format!("({expr}).then(v => JSON.stringify(v ?? null))");
    let result = tab
        .evaluate(&wrapped, true)
        .expect("evaluating in the page");
    result
        .value
        .and_then(|v| v.as_str().and_then(|s| serde_json::from_str(s).ok()))
        .unwrap_or(Value::Null)
}

/// What the page shows of one instance's row.
fn row(tab: &Tab, key: &str) -> Value {
    js(
        tab,
        &format!(
            "(() => {{ const r = document.querySelector('tr[data-instance=\"{key}\"]'); \
             return r && {{ state: r.dataset.state, pid: r.dataset.pid }}; }})()"
        ),
    )
}

fn notice(tab: &Tab) -> String {
    js(tab, "document.querySelector('#notice').textContent")
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .map(|p| p.join("test-artifacts"))
        .expect("the target dir");
    std::fs::create_dir_all(&dir).expect("creating target/test-artifacts");
    dir
}

fn screenshot(tab: &Tab, name: &str) -> PathBuf {
    let png = tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = artifacts().join(name);
    std::fs::write(&path, png).expect("writing the screenshot");
    eprintln!("dashboard screenshot: {}", path.display());
    path
}

fn device(tab: &Tab, width: u32, height: u32, mobile: bool) {
    let metrics: Emulation::SetDeviceMetricsOverride = serde_json::from_value(json!({
        "width": width,
        "height": height,
        "deviceScaleFactor": 1,
        "mobile": mobile,
    }))
    .expect("device metrics");
    tab.call_method(metrics).expect("emulating the screen size");
}

#[test]
fn the_dashboard_shows_the_fleet_live_and_acts_only_with_the_token() {
    let browser = browser();
    let fleet = Fleet::new(6);
    let (token_file, token) = new_token(&fleet, "api-token");
    let (api, listen) = {
        let (a, b) = free_ports(2);
        (a, b)
    };
    let extra = format!("listen = \"127.0.0.1:{listen}\"");
    let app = AppDef {
        instances: 2,
        extra: &extra,
        ..AppDef::default()
    };
    fleet.write_spec(&api_spec(
        &fleet,
        &app,
        api,
        &format!(
            "token_file = {:?}\nopen_reads = true",
            token_file.display().to_string()
        ),
    ));
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    for _ in 0..20 {
        let (code, _) = http_get(listen, "/").expect("GET through the balancer");
        assert_eq!(code, 200);
    }

    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://127.0.0.1:{api}/"))
        .expect("navigate")
        .wait_until_navigated()
        .expect("the page loads");

    // The instances, as the daemon knows them.
    let pids: Vec<String> = fleet.pids("fx").iter().map(u64::to_string).collect();
    wait_until(
        "the page to show both instances ready with their pids",
        Duration::from_secs(30),
        || {
            let shown: Vec<Value> = ["fx/0", "fx/1"].iter().map(|k| row(&tab, k)).collect();
            let ok = shown
                .iter()
                .zip(&pids)
                .all(|(r, pid)| r["state"] == "ready" && r["pid"] == pid.as_str());
            ok.then_some(())
        },
    );
    wait_until(
        "the traffic table to list both backends",
        Duration::from_secs(30),
        || (js(&tab, "document.querySelectorAll('tr[data-backend]').length") == 2).then_some(()),
    );
    js(&tab, "(window.__samePage = 'yes')");

    // Without the token the restart button is refused, and the page says so.
    tab.find_element("tr[data-instance=\"fx/0\"] button[data-action=\"restart\"]")
        .expect("the restart button of fx/0")
        .click()
        .expect("click");
    wait_until(
        "the page to report the refused restart",
        Duration::from_secs(20),
        || {
            let text = notice(&tab);
            (text.contains("401") && text.contains("restart fx/0")).then_some(text)
        },
    );
    let refused = js_await(
        &tab,
        "fetch('/v1/action', { method: 'POST', headers: { 'x-jarfleet-protocol': '1', \
         'content-type': 'application/json' }, body: JSON.stringify({ app: 'fx', slot: 0, \
         action: 'restart' }) }).then(r => r.status)",
    );
    assert_eq!(refused, 401);
    assert_eq!(
        fleet
            .pids("fx")
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>(),
        pids,
        "a refused restart restarted something"
    );

    // kill -9 of one JVM arrives live: the row changes without a reload.
    let victim: u64 = pids[1].parse().expect("pid");
    kill9(victim as u32);
    wait_until(
        "the page to show fx/1 leave the killed JVM",
        Duration::from_secs(30),
        || {
            let r = row(&tab, "fx/1");
            (r["pid"] != pids[1].as_str() || r["state"] != "ready").then_some(())
        },
    );
    let new_pid = wait_until(
        "the page to show fx/1 ready again with a new JVM",
        Duration::from_secs(60),
        || {
            let r = row(&tab, "fx/1");
            let pid = r["pid"].as_str().unwrap_or("").to_string();
            (r["state"] == "ready" && !pid.is_empty() && pid != pids[1]).then_some(pid)
        },
    );
    assert_eq!(
        fleet.instance("fx", 1)["pid"]
            .as_u64()
            .map(|p| p.to_string()),
        Some(new_pid)
    );
    assert_eq!(js(&tab, "window.__samePage"), "yes", "the page reloaded");
    wait_until(
        "the exit in the event list",
        Duration::from_secs(20),
        || {
            (js(
            &tab,
            "[...document.querySelectorAll('#events li[data-kind=\"instance.exited\"] .who')].some(e => e.textContent === 'fx/1')",
        ) == true)
            .then_some(())
        },
    );

    // The log tail of fx/0 streams its output.
    tab.find_element("tr[data-instance=\"fx/0\"] button[data-action=\"logs\"]")
        .expect("the logs button of fx/0")
        .click()
        .expect("click");
    wait_until("the log tail of fx/0", Duration::from_secs(20), || {
        js(&tab, "document.querySelector('#logs').textContent")
            .as_str()
            .filter(|t| t.contains("listening on port"))
            .map(|_| ())
    });

    screenshot(&tab, "dashboard.png");

    // With the token (typed into the form the refusal opened) the restart goes through.
    assert_eq!(
        js(&tab, "document.querySelector('#token-form').hidden"),
        false,
        "the refused action did not ask for the token"
    );
    tab.find_element("#token-input")
        .expect("the token input")
        .type_into(&token)
        .expect("typing the token");
    tab.press_key("Enter").expect("submit");
    wait_until("the token to be kept", Duration::from_secs(10), || {
        (js(&tab, "sessionStorage.getItem('jarfleet.token')") == token.as_str()).then_some(())
    });
    let before = fleet.instance("fx", 0)["pid"].as_u64().expect("pid");
    tab.find_element("tr[data-instance=\"fx/0\"] button[data-action=\"restart\"]")
        .expect("the restart button of fx/0")
        .click()
        .expect("click");
    wait_until(
        "fx/0 restarted from the page",
        Duration::from_secs(60),
        || {
            let i = fleet.instance("fx", 0);
            (i["ready"] == true && i["pid"].as_u64().is_some_and(|p| p != before)).then_some(())
        },
    );
    assert!(
        notice(&tab).contains("restart fx/0:")
            && !notice(&tab).contains("401")
            && !notice(&tab).contains("null"),
        "{}",
        notice(&tab)
    );

    // Last (the emulated screen stays): the phone-sized page.
    device(&tab, 390, 844, true);
    screenshot(&tab, "dashboard-phone.png");
}

#[test]
fn the_dashboard_follows_a_canary_deployment_and_aborts_it_with_the_token() {
    let browser = browser();
    let fleet = Fleet::new(6);
    let (token_file, token) = new_token(&fleet, "api-token");
    let (api, listen) = free_ports(2);
    let v1 = crate::fixture::fixture_variant(&fleet.path("fx-v1.jar"), &[("version", "v1")]);
    let v2 = crate::fixture::fixture_variant(&fleet.path("fx-v2.jar"), &[("version", "v2")]);
    let extra = format!("listen = \"127.0.0.1:{listen}\"");
    // Long steps: the canary stays at its first step until the page aborts it.
    let tables = "[apps.fx.deploy]\nstrategy = \"canary\"\ncanary = { steps = [50, 100], step_time = \"10m\" }\n";
    let app = AppDef {
        instances: 2,
        extra: &extra,
        tables,
        ..AppDef::default()
    };
    let spec = api_spec(
        &fleet,
        &app,
        api,
        &format!("token_file = {:?}", token_file.display().to_string()),
    )
    .replace(
        &format!("{:?}", crate::fixture::fixture_jar().display().to_string()),
        &format!("{:?}", v1.display().to_string()),
    );
    fleet.write_spec(&spec);
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));

    // Reads need the token here: the page asks for it before it shows anything.
    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://127.0.0.1:{api}/"))
        .expect("navigate")
        .wait_until_navigated()
        .expect("the page loads");
    wait_until(
        "the page to ask for the token",
        Duration::from_secs(20),
        || {
            (js(&tab, "document.querySelector('#token-form').hidden") == false
                && notice(&tab).contains("401"))
            .then_some(())
        },
    );
    assert_eq!(
        js(
            &tab,
            "document.querySelectorAll('tr[data-instance]').length"
        ),
        0,
        "the fleet was shown without the token"
    );
    tab.find_element("#token-input")
        .expect("the token input")
        .type_into(&token)
        .expect("typing the token");
    tab.press_key("Enter").expect("submit");
    wait_until(
        "the instances after the token",
        Duration::from_secs(20),
        || {
            (js(
                &tab,
                "document.querySelectorAll('tr[data-instance][data-state=ready]').length",
            ) == 2)
                .then_some(())
        },
    );

    fleet.ok(&["deploy", "fx", &v2.display().to_string()]);
    wait_until(
        "the page to show the canary deployment with its steps",
        Duration::from_secs(60),
        || {
            let shown = js(
                &tab,
                "(() => { const d = document.querySelector('.deployment[data-outcome=running]'); \
                 return d && { steps: d.querySelectorAll('.steps li').length, \
                 canary: document.querySelector('article.app.has-canary') !== null, \
                 title: d.querySelector('h3').textContent }; })()",
            );
            (shown["steps"].as_u64().is_some_and(|n| n >= 1) && shown["canary"] == true)
                .then_some(shown)
        },
    );
    screenshot(&tab, "dashboard-canary.png");

    // Abort asks for a second click, then the canary is rolled back.
    let abort = "article.app[data-app=\"fx\"] button[data-action=\"abort\"]";
    tab.find_element(abort)
        .expect("abort")
        .click()
        .expect("click");
    assert_eq!(
        js(
            &tab,
            &format!(
                "document.querySelector('{}').textContent",
                abort.replace('\'', "\\'")
            )
        ),
        "Sure?"
    );
    tab.find_element(abort)
        .expect("abort")
        .click()
        .expect("click");
    wait_until(
        "the canary to be rolled back",
        Duration::from_secs(60),
        || {
            let h: Value =
                serde_json::from_str(&fleet.ok(&["history", "fx", "-o", "json"])).ok()?;
            let last = h["deployments"].as_array()?.last()?.clone();
            (last["outcome"] == "rolled-back").then_some(())
        },
    );
    wait_until(
        "the page to show the rolled-back deployment",
        Duration::from_secs(30),
        || {
            js(&tab, "document.querySelector('.last-deploy')?.textContent")
                .as_str()
                .filter(|t| t.contains("rolled-back"))
                .map(|_| ())
        },
    );
    assert!(
        notice(&tab).contains("abort canary of fx"),
        "{}",
        notice(&tab)
    );
}

/// In cluster mode the page shows the cluster's nodes (the scheduler marked), every app's
/// instances on the other nodes with where they run, and a release going out across the
/// cluster with its nodes.
#[test]
fn the_dashboard_shows_the_cluster_s_nodes_where_each_instance_runs_and_its_rollouts() {
    let browser = browser();
    let tokens = tempfile::tempdir().expect("dir");
    let token_file = tokens.path().join("token");
    crate::cluster::pki_command(&["token", "new", &token_file.display().to_string()]);
    let api = free_port();
    let c = crate::cluster::Cluster::start_lab_daemon(
        3,
        3,
        false,
        &format!(
            "http = \"HOST_IP:{api}\"\ntoken_file = {:?}\nopen_reads = true",
            token_file.display().to_string()
        ),
    );
    let jar = crate::fixture::fixture_jar();
    let n0 = &c.nodes[0];
    let file = c.apps_file_args(3, &jar, &["--version", "v1"]);
    c.ok(n0, &["apply", &file.display().to_string()]);
    c.wait_ready(n0, 3);

    let tab: Arc<Tab> = browser.new_tab().expect("a tab");
    tab.navigate_to(&format!("http://{}:{api}/", n0.ip))
        .expect("navigate")
        .wait_until_navigated()
        .expect("the page loads");
    // Every node, with its state; the scheduler marked.
    let leader = c.scheduler(n0);
    wait_until(
        "the nodes panel with 3 ready nodes",
        Duration::from_secs(30),
        || {
            let nodes = js(
                &tab,
                "JSON.stringify([...document.querySelectorAll('#cluster tr[data-node]')].map(r => [r.dataset.node, r.dataset.state, r.textContent]))",
            );
            let nodes: Vec<(String, String, String)> =
                serde_json::from_str(nodes.as_str().unwrap_or("[]")).unwrap_or_default();
            let names: Vec<&str> = nodes.iter().map(|(n, _, _)| n.as_str()).collect();
            let ready = nodes.iter().all(|(_, s, _)| s == "ready");
            let marked = nodes
                .iter()
                .any(|(n, _, text)| *n == leader && text.contains("scheduler"));
            (names == ["n0", "n1", "n2"] && ready && marked).then_some(())
        },
    );
    // web's instances on the other nodes, with their node, as the cluster places them.
    let placed: Vec<(String, u64)> = {
        let status: Value =
            serde_json::from_str(&c.ok(n0, &["status", "-o", "json"])).expect("status is JSON");
        status["cluster"]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["node"] != "n0")
            .map(|i| {
                (
                    i["node"].as_str().unwrap_or_default().to_string(),
                    i["slot"].as_u64().unwrap_or(u64::MAX),
                )
            })
            .collect()
    };
    assert_eq!(placed.len(), 2, "{placed:?}");
    wait_until(
        "the other nodes' instances",
        Duration::from_secs(30),
        || {
            placed
            .iter()
            .all(|(node, slot)| {
                let row = js(
                    &tab,
                    &format!(
                        "(() => {{ const r = document.querySelector('tr[data-remote=\"web/{slot}\"]'); return r ? r.dataset.node + '|' + r.dataset.state : ''; }})()"
                    ),
                );
                row.as_str() == Some(&format!("{node}|ready"))
            })
            .then_some(())
        },
    );
    // A new release going out node by node shows up with the nodes it reached, then done.
    let v2 = c.apps_file_args(3, &jar, &["--version", "v2"]);
    c.ok(n0, &["apply", &v2.display().to_string()]);
    wait_until(
        "the rollout done, every node reached",
        Duration::from_secs(180),
        || {
            let r = js(
                &tab,
                "(() => { const r = document.querySelector('.rollout'); return r ? r.dataset.rollout + '|' + r.textContent : ''; })()",
            );
            let text = r.as_str().unwrap_or_default().to_string();
            (text.starts_with("done|")
                && ["n0 at", "n1 at", "n2 at"].iter().all(|n| text.contains(n)))
            .then_some(text)
        },
    );
    let shot = screenshot(&tab, "dashboard-cluster.png");
    assert!(shot.exists());
}
