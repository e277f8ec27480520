//! The etcd config center against a real etcd: values reach every instance through a rolling
//! restart that loses no request; an unreachable etcd restarts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::etcd_helper::Etcd;
use crate::harness::*;

const START: Duration = Duration::from_secs(90);

#[test]
fn an_etcd_change_rolls_to_every_instance_without_a_failed_request_and_an_outage_restarts_nothing()
{
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut etcd = rt.block_on(Etcd::start());
    let client =
        jarfleet_etcd::Client::new(vec![etcd.url()], Duration::from_secs(5)).expect("client");
    rt.block_on(client.put("/fx/GREETING", "hi")).expect("put");

    let fleet = Fleet::new(10);
    let lb = free_port();
    let listen = format!("listen = \"127.0.0.1:{lb}\"");
    let tables = format!(
        "[apps.fx.config]\netcd = {{ endpoints = [\"{}\"], prefix = \"/fx/\" }}\n\n[apps.fx.deploy]\nmin_healthy = \"500ms\"\n",
        etcd.url()
    );
    fleet.write_app(&AppDef {
        instances: 2,
        extra: &listen,
        health: "http = \"/health\"\ninterval = \"500ms\"",
        tables: &tables,
        ..AppDef::default()
    });
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    assert_eq!(env_of_ready(&fleet, "fx", "GREETING"), vec!["hi", "hi"]);

    // Continuous load through the balancer while the new value rolls out.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match http_get(lb, "/health") {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    wait_until("load flows", Duration::from_secs(10), || {
        (ok.load(Ordering::Relaxed) > 50).then_some(())
    });
    rt.block_on(client.put("/fx/GREETING", "hey")).expect("put");
    wait_until(
        "the new value on every instance",
        Duration::from_secs(60),
        || {
            let g = env_of_ready(&fleet, "fx", "GREETING");
            (g.len() == 2 && g.iter().all(|v| v == "hey") && fleet.instances("fx").len() == 2)
                .then_some(())
        },
    );
    let before = ok.load(Ordering::Relaxed);
    wait_until("more load", Duration::from_secs(10), || {
        (ok.load(Ordering::Relaxed) > before + 50).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    load.join().expect("load thread");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the rollout"
    );
    assert!(!fleet.events_of("config.rollout", "fx", None).is_empty());

    // etcd goes away: an event, and nothing restarts.
    let pids = fleet.pids("fx");
    etcd.stop();
    wait_until("config.unreachable", Duration::from_secs(30), || {
        fleet.events_of("config.unreachable", "fx", None).pop()
    });
    assert_eq!(fleet.pids("fx"), pids);
    assert_eq!(env_of_ready(&fleet, "fx", "GREETING"), vec!["hey", "hey"]);
}

/// `app.properties` of every ready instance as the JVM last read it (its `/config`), in slot
/// order, with the instance's port.
fn configs_read(fleet: &Fleet) -> Vec<(u16, String)> {
    fleet
        .instances("fx")
        .iter()
        .filter(|i| i["ready"] == true)
        .filter_map(|i| i["port"].as_u64())
        .filter_map(|p| {
            let (code, body) = http_get(p as u16, "/config?file=app.properties").ok()?;
            (code == 200).then_some((p as u16, body))
        })
        .collect()
}

/// A fleet of two fixture JVMs whose config template takes GREETING from etcd.
fn fleet_with_etcd_template(etcd: &Etcd, on_change: &str, env: &str) -> Fleet {
    let fleet = Fleet::new(10);
    std::fs::create_dir_all(fleet.path("config")).expect("config dir");
    std::fs::write(
        fleet.path("config/app.properties"),
        "greeting=${GREETING}\nport=${PORT}\nregion=${REGION:eu}\n",
    )
    .expect("template");
    let tables = format!(
        "[apps.fx.config]\ntemplates = \"config\"\netcd = {{ endpoints = [\"{}\"], prefix = \"/fx/\" }}\non_change = \"{on_change}\"\n\n[apps.fx.env]\n{env}\n\n[apps.fx.deploy]\nmin_healthy = \"500ms\"\n",
        etcd.url()
    );
    fleet.write_app(&AppDef {
        instances: 2,
        health: "http = \"/health\"\ninterval = \"500ms\"",
        tables: &tables,
        ..AppDef::default()
    });
    fleet
}

#[test]
fn etcd_values_fill_config_templates_and_an_http_refresh_reaches_each_instance_without_a_restart() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(Etcd::start());
    let client =
        jarfleet_etcd::Client::new(vec![etcd.url()], Duration::from_secs(5)).expect("client");
    let fleet = fleet_with_etcd_template(&etcd, "http:POST /refresh", "");

    // No GREETING in etcd nor in the environment: refused, naming the template's line.
    let out = fleet.run(&["up", "-d", "--wait"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app.properties:1:") && err.contains("etcd under /fx/"),
        "{err}"
    );

    rt.block_on(client.put("/fx/GREETING", "hi")).expect("put");
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let first = configs_read(&fleet);
    assert_eq!(first.len(), 2, "{first:?}");
    for (port, text) in &first {
        assert_eq!(text, &format!("greeting=hi\nport={port}\nregion=eu\n"));
    }
    let pids = fleet.pids("fx");
    let release = fleet.status()["apps"][0]["release"].clone();

    rt.block_on(client.put("/fx/GREETING", "hey")).expect("put");
    wait_until("the new value read by every instance", START, || {
        let c = configs_read(&fleet);
        (c.len() == 2 && c.iter().all(|(_, t)| t.starts_with("greeting=hey\n"))).then_some(())
    });
    let d = wait_until("the refresh deployment's end", START, || {
        let d = latest_deployment(&fleet);
        (d["outcome"] != "running").then_some(d)
    });
    assert_eq!(
        (d["strategy"].as_str(), d["outcome"].as_str()),
        (Some("refresh"), Some("succeeded")),
        "{d:#}"
    );
    let steps: Vec<&str> = d["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["message"].as_str())
        .collect();
    for slot in 0..2 {
        let line = format!("fx/{slot} refreshed: POST /refresh answered 200");
        assert!(steps.contains(&line.as_str()), "{steps:#?}");
    }
    assert_eq!(fleet.pids("fx"), pids, "nothing restarted");
    let status = fleet.status();
    let app = &status["apps"][0];
    assert_ne!(app["release"], release, "a new release");
    for i in app["instances"].as_array().expect("instances") {
        assert_eq!(i["release"], app["release"], "{i:#}");
    }
}

#[test]
fn a_sighup_refresh_reaches_each_instance_and_a_failed_refresh_becomes_a_rolling_restart() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(Etcd::start());
    let client =
        jarfleet_etcd::Client::new(vec![etcd.url()], Duration::from_secs(5)).expect("client");
    rt.block_on(client.put("/fx/GREETING", "hi")).expect("put");
    // The fixture's POST /refresh fails: used once on_change switches to it below.
    let fleet = fleet_with_etcd_template(&etcd, "signal:HUP", "FIXTURE_REFRESH_STATUS = \"500\"");
    fleet.up();
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let pids = fleet.pids("fx");

    rt.block_on(client.put("/fx/GREETING", "hey")).expect("put");
    wait_until("the new value read by every instance", START, || {
        let c = configs_read(&fleet);
        (c.len() == 2 && c.iter().all(|(_, t)| t.starts_with("greeting=hey\n"))).then_some(())
    });
    wait_until("the refresh's end", START, || {
        (latest_deployment(&fleet)["outcome"] == "succeeded").then_some(())
    });
    assert_eq!(fleet.pids("fx"), pids, "nothing restarted");

    // on_change is a live setting: switching it restarts nothing.
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace("signal:HUP", "http:POST /refresh"));
    fleet.ok(&["apply"]);
    assert_eq!(fleet.pids("fx"), pids, "nothing restarted");

    rt.block_on(client.put("/fx/GREETING", "hello"))
        .expect("put");
    let d = wait_until("the fallback's end", START, || {
        let d = latest_deployment(&fleet);
        (d["outcome"] != "running" && d["steps"].to_string().contains("could not be refreshed"))
            .then_some(d)
    });
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    assert!(
        d["steps"].to_string().contains(
            "POST /refresh answered 500): a rolling restart brings the new config instead"
        ),
        "{d:#}"
    );
    fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let now = fleet.pids("fx");
    assert!(
        now.iter().all(|p| !pids.contains(p)),
        "restarted: {pids:?} → {now:?}"
    );
    let c = configs_read(&fleet);
    assert!(
        c.len() == 2 && c.iter().all(|(_, t)| t.starts_with("greeting=hello\n")),
        "{c:?}"
    );
    assert!(
        !fleet
            .events_of("config.refresh-failed", "fx", None)
            .is_empty()
    );
}
