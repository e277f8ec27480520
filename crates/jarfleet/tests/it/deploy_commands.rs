//! Operator commands while a deployment runs (the table of `jarfleet_core::during`, shown in
//! docs/deploys.md), with real JVMs: the new release is slow to get ready, so the deployment is
//! provably under way (its first new instance is starting) when each command arrives.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::deploy::versions;
use crate::fixture::fixture_variant;
use crate::harness::*;

const START: Duration = Duration::from_secs(90);

/// `fx`, 3 instances of a v1 jar; a new instance may take 120 s to get ready, so a release
/// that is never ready keeps its deployment running for as long as a test needs.
fn fleet_v1(deploy: &str) -> (Fleet, PathBuf) {
    let fleet = Fleet::new(12);
    let v1 = fixture_variant(&fleet.path("fx-v1.jar"), &[("version", "v1")]);
    fleet.write_spec(&spec(&fleet, &v1, deploy, ""));
    fleet.up();
    fleet.wait_ready("fx", 3, START);
    (fleet, v1)
}

/// The spec of `fx` running `jar`, with `deploy` settings and `extra` tables.
fn spec(fleet: &Fleet, jar: &std::path::Path, deploy: &str, extra: &str) -> String {
    fleet
        .app_toml(&AppDef {
            instances: 3,
            health: "http = \"/health\"\nstart_timeout = \"120s\"",
            tables: &format!("[apps.fx.deploy]\nmin_healthy = \"500ms\"\n{deploy}\n{extra}"),
            ..Default::default()
        })
        .replace(
            &crate::fixture::fixture_jar().display().to_string(),
            &jar.display().to_string(),
        )
}

/// A v2 jar whose instances never pass their health check.
fn never_ready_v2(fleet: &Fleet) -> PathBuf {
    fixture_variant(
        &fleet.path("fx-v2.jar"),
        &[("version", "v2"), ("ready-delay", "1h")],
    )
}

fn release_of(fleet: &Fleet) -> String {
    fleet.status()["apps"][0]["release"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Deploys `jar` and waits until its first new instance runs (spawned, not ready): the
/// deployment is under way. Returns its record.
fn deploy_under_way(fleet: &Fleet, jar: &std::path::Path, old_release: &str) -> Value {
    fleet.ok(&["deploy", "fx", &jar.display().to_string()]);
    wait_until("the deployment's first new instance to run", START, || {
        let starting = fleet.instances("fx").into_iter().any(|i| {
            i["release"] != old_release && i["pid"].as_u64().is_some() && i["ready"] == false
        });
        let d = latest_deployment(fleet);
        let step = d["steps"].as_array().is_some_and(|s| {
            s.iter().any(|s| {
                s["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("start fx/"))
            })
        });
        (starting && step && d["outcome"] == "running").then_some(d)
    })
}

fn kill_and_restart_daemon(fleet: &Fleet) {
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    fleet.ok(&["up", "-d"]);
}

#[test]
fn stop_during_a_rolling_deploy_ends_it_and_stops_the_app_also_after_a_daemon_kill() {
    let (fleet, _) = fleet_v1("");
    let v1 = release_of(&fleet);
    let v2 = never_ready_v2(&fleet);
    let d = deploy_under_way(&fleet, &v2, &v1);

    fleet.ok(&["stop", "fx"]);
    let stopped_on_v1 = |fleet: &Fleet| {
        let instances = fleet.instances("fx");
        instances.len() == 3
            && instances
                .iter()
                .all(|i| i["state"] == "stopped" && i["release"] == v1.as_str())
    };
    let ended = wait_until("the app stopped on v1, its deployment ended", START, || {
        let now = latest_deployment(&fleet);
        (now["outcome"] == "aborted" && stopped_on_v1(&fleet)).then_some(now)
    });
    assert_eq!(ended["id"], d["id"]);
    assert!(
        ended["reason"]
            .as_str()
            .is_some_and(|r| r.contains("superseded by `jarfleet stop`")),
        "{ended}"
    );
    let app = &fleet.status()["apps"][0];
    assert_eq!(app["rolling"], false, "status shows no deployment: {app}");
    assert_eq!(app["release"], v1.as_str());

    // A daemon killed and started again does not resume it: nothing starts.
    kill_and_restart_daemon(&fleet);
    assert_eq!(latest_deployment(&fleet)["outcome"], "aborted");
    assert!(stopped_on_v1(&fleet), "{:?}", fleet.instances("fx"));
    // Started again, the app runs its old release at its count, and nothing else.
    fleet.ok(&["start", "fx"]);
    fleet.wait_ready("fx", 3, START);
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
    assert_eq!(
        fleet.instances("fx").len(),
        3,
        "{:?}",
        fleet.instances("fx")
    );
    assert_eq!(latest_deployment(&fleet)["outcome"], "aborted");
}

#[test]
fn abort_turns_a_rolling_deploy_left_running_by_a_killed_daemon_back_to_the_old_release() {
    let (fleet, _) = fleet_v1("");
    let v1 = release_of(&fleet);
    let old_pids = fleet.pids("fx");
    let v2 = never_ready_v2(&fleet);
    deploy_under_way(&fleet, &v2, &v1);
    kill_and_restart_daemon(&fleet);
    assert_eq!(latest_deployment(&fleet)["outcome"], "running");

    fleet.ok(&["abort", "fx", "--wait"]);
    let d = latest_deployment(&fleet);
    assert_eq!(d["outcome"], "rolled-back", "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("aborted by the operator")),
        "{d}"
    );
    fleet.wait_ready("fx", 3, START);
    wait_until("the new instance to be gone", START, || {
        (fleet.instances("fx").len() == 3).then_some(())
    });
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
    assert_eq!(
        fleet.pids("fx"),
        old_pids,
        "the old instances were never touched"
    );
}

#[test]
fn abort_of_a_blue_green_deploy_keeps_the_old_set() {
    let (fleet, _) = fleet_v1("strategy = \"blue-green\"\nkeep_old = \"0s\"\n");
    let v1 = release_of(&fleet);
    let old_pids = fleet.pids("fx");
    let v2 = never_ready_v2(&fleet);
    deploy_under_way(&fleet, &v2, &v1);

    fleet.ok(&["abort", "fx", "--wait"]);
    let d = latest_deployment(&fleet);
    assert_eq!(d["outcome"], "rolled-back", "{d}");
    wait_until("the new set to be gone", START, || {
        (fleet.instances("fx").len() == 3).then_some(())
    });
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
    assert_eq!(fleet.pids("fx"), old_pids);
}

#[test]
fn commands_during_a_deployment_are_refused_naming_it_and_live_settings_apply_at_once() {
    let (fleet, v1_jar) = fleet_v1("");
    let v1 = release_of(&fleet);
    let v2 = never_ready_v2(&fleet);
    let d = deploy_under_way(&fleet, &v2, &v1);
    let id = d["id"].as_u64().expect("deployment id");
    let v3 = fixture_variant(&fleet.path("fx-v3.jar"), &[("version", "v3")]);
    let v3 = v3.display().to_string();

    // The spec file still names v1, where the deployment started: the plan says the release
    // is left to the deployment, and nothing moves.
    let pids = fleet.pids("fx");
    let plan = fleet.ok(&["apply"]);
    assert!(
        plan.contains(&format!("fx: deployment #{id} {v1} → "))
            && plan.contains("under way")
            && !plan.contains("rolling restart")
            && !plan.contains("unchanged"),
        "{plan}"
    );
    assert_eq!(fleet.pids("fx"), pids, "the apply moved something");

    // A third release, and every command that would move instances: refused, naming it.
    fleet.write_spec(&spec(&fleet, std::path::Path::new(&v3), "", ""));
    for args in [
        vec!["apply"],
        vec!["scale", "fx", "5"],
        vec!["restart", "fx"],
        vec!["restart", "fx/0"],
        vec!["stop", "fx/0"],
        vec!["deploy", "fx", v3.as_str()],
        vec!["rollback", "fx"],
    ] {
        let out = fleet.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!("deployment #{id} (rolling"))
                && err.contains("is running")
                && err.contains("`jarfleet abort fx`"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(latest_deployment(&fleet)["outcome"], "running");

    // The deployment's own release with a live change: the plan says "update live", and
    // that is what happens (no process restarts, the deployment goes on).
    let pids = fleet.pids("fx");
    fleet.write_spec(&spec(&fleet, &v2, "", "[apps.fx.logs]\nkeep = 7\n"));
    let plan = fleet.ok(&["apply"]);
    assert!(
        plan.contains("~ fx: update live (logs)") && !plan.contains("rolling"),
        "{plan}"
    );
    assert_eq!(fleet.pids("fx"), pids, "a live change restarted something");
    let now = latest_deployment(&fleet);
    assert_eq!(
        (now["id"].as_u64(), now["outcome"].as_str()),
        (Some(id), Some("running"))
    );

    // Turned back, the app runs v1 again and keeps the live settings as last applied…
    fleet.ok(&["abort", "fx", "--wait"]);
    wait_until("the new instance to be gone", START, || {
        (fleet.instances("fx").len() == 3).then_some(())
    });
    fleet.write_spec(&spec(&fleet, &v1_jar, "", "[apps.fx.logs]\nkeep = 7\n"));
    let plan = fleet.ok(&["apply"]);
    assert!(plan.contains("fx: unchanged"), "{plan}");
    // … with the v1 spec, a live change is only that…
    fleet.write_spec(&spec(&fleet, &v1_jar, "", "[apps.fx.logs]\nkeep = 9\n"));
    let pids = fleet.pids("fx");
    let plan = fleet.ok(&["apply"]);
    assert!(
        plan.contains("~ fx: update live (logs)") && !plan.contains("rolling"),
        "{plan}"
    );
    assert_eq!(fleet.pids("fx"), pids);
    // … and a release change is the rolling deploy it says.
    let env = spec(&fleet, &v1_jar, "", "[apps.fx.logs]\nkeep = 9\n")
        .replace("instances = 3", "instances = 3\nenv = { MODE = \"x\" }");
    fleet.write_spec(&env);
    let plan = fleet.ok(&["apply"]);
    assert!(
        plan.contains("~ fx: rolling restart") && plan.contains("(env changed)"),
        "{plan}"
    );
    wait_until("the rolling restart to succeed", START, || {
        let d = latest_deployment(&fleet);
        (d["outcome"] == "succeeded" && d["id"].as_u64() > Some(id)).then_some(())
    });
    let after = fleet.wait_ready("fx", 3, START);
    assert!(
        after
            .iter()
            .filter_map(|i| i["pid"].as_u64())
            .all(|p| !pids.contains(&p)),
        "every instance restarted"
    );
}
