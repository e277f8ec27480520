//! Deployments under load drain: requests in flight inside an old instance when it is told to
//! stop are answered by it, and it goes only then (rolling and blue-green, JVM backends).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::balancer::{START, fleet_behind_lb};
use crate::fixture::fixture_variant;
use crate::harness::*;
use crate::kill_under_load::{KeepAliveClients, park_until, parked_in};

/// Deploys v2 by `strategy` (lines of `[apps.fx.deploy]`) while keep-alive clients run and at
/// least one request is parked inside every v1 instance; asserts each v1 instance was seen
/// stopping with requests still inside it, and that every request was answered.
fn deploy_draining(strategy: &str) {
    let fleet_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&fleet_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, lb) = fleet_behind_lb(2, Some(&v1), "round-robin");
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace(
        "[apps.fx.deploy]\n",
        &format!("[apps.fx.deploy]\n{strategy}\n"),
    ));
    fleet.ok(&["apply"]);
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    let clients = KeepAliveClients::start(lb, 4);
    clients.wait_more(100);

    // pid → port of every v1 instance, each with a request parked inside.
    let old: BTreeMap<u64, u16> = fleet
        .instances("fx")
        .iter()
        .filter_map(|i| Some((i["pid"].as_u64()?, i["port"].as_u64()? as u16)))
        .collect();
    assert_eq!(old.len(), 2, "two v1 instances");
    let ports: Vec<u16> = old.values().copied().collect();
    let parked = park_until(
        lb,
        &ports,
        || old.values().all(|p| parked_in(*p).unwrap_or(0) > 0),
        "a v1 instance holds none: the balancer does not spread them",
    );

    // Every parked request sleeps in a v1 instance now: how many in each.
    let inside: BTreeMap<u64, u64> = old
        .iter()
        .map(|(pid, port)| (*pid, parked_in(*port).unwrap_or(0)))
        .collect();
    assert_eq!(
        inside.values().sum::<u64>(),
        parked.len() as u64,
        "every parked request is inside a v1 instance: {inside:?}"
    );
    let deploy = {
        let mut cmd = fleet.command(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
        std::thread::spawn(move || run_with_deadline(&mut cmd, Duration::from_secs(180)))
    };
    // Each v1 instance is seen stopping while requests are still inside it.
    let mut seen = std::collections::BTreeSet::new();
    wait_until(
        "every v1 instance stopping with requests inside it",
        START,
        || {
            for i in fleet.instances("fx") {
                let (Some(pid), Some(state)) = (i["pid"].as_u64(), i["state"].as_str()) else {
                    continue;
                };
                if let Some(port) = old.get(&pid)
                    && state == "stopping"
                    && parked_in(*port).unwrap_or(0) > 0
                {
                    seen.insert(pid);
                }
            }
            (seen.len() == old.len()).then_some(())
        },
    );
    // Each is answered by the instance it was parked in (drained, not retried elsewhere).
    let mut answered_by: BTreeMap<u64, u64> = BTreeMap::new();
    for (i, h) in parked.into_iter().enumerate() {
        let answer = h.join().expect("parked request thread");
        assert_eq!(
            answer.as_ref().map(|(c, b, _)| (*c, b.trim().to_string())),
            Ok((200, "slow done".to_string())),
            "parked request {i}"
        );
        if let Ok((_, _, Some(pid))) = answer {
            *answered_by.entry(pid).or_default() += 1;
        }
    }
    assert_eq!(
        answered_by, inside,
        "parked requests answered by (pid → count), against where they were parked"
    );
    let out = deploy
        .join()
        .expect("deploy thread")
        .expect("running jarfleet deploy");
    assert!(
        out.status.success(),
        "deploy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    clients.wait_more(100);
    let (ok, failed, errors) = clients.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} keep-alive requests failed: {errors:?}",
        ok + failed
    );
    assert_all_from(lb, "v2", 20, "the deploy ended on v2");
    wait_until("the v1 JVMs gone", START, || {
        old.keys().all(|p| !pid_alive(*p as u32)).then_some(())
    });
}

#[test]
fn a_rolling_deploy_drains_requests_parked_in_each_old_instance() {
    deploy_draining("strategy = \"rolling\"");
}

#[test]
fn a_blue_green_deploy_drains_requests_parked_in_the_old_set() {
    deploy_draining("strategy = \"blue-green\"\nkeep_old = \"0s\"");
}
