//! The etcd config center against a real etcd: values reach every instance through a rolling
//! restart that loses no request; an unreachable etcd restarts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::etcd_helper::Etcd;
use crate::harness::*;

#[test]
fn an_etcd_change_rolls_to_every_instance_without_a_failed_request_and_an_outage_restarts_nothing()
{
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut etcd = rt.block_on(Etcd::start());
    let client =
        jarfleet_etcd::Client::new(vec![etcd.url()], Duration::from_secs(5)).expect("client");
    rt.block_on(client.put("/fx/GREETING", "hi")).expect("put");

    let fleet = Fleet::new(10);
    let lb = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
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
