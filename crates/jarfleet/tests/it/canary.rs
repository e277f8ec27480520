//! Canary deployments behind the load balancer: steps judged on the balancer's own figures,
//! rollback of a bad canary, pauses that wait for the operator, promote and abort.

use crate::balancer::{Load, START, crash_and_restart_daemon, fleet_behind_lb};
use crate::fixture::fixture_variant;
use crate::harness::*;

/// Two instances of a "v1" fixture behind the balancer (the jar's temp dir first, to keep it);
/// with `steps`, canary deploys through those steps.
fn fleet_on_v1(steps: Option<&str>) -> (tempfile::TempDir, Fleet, u16) {
    let v1_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&v1_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, lb) = fleet_behind_lb(2, Some(&v1), "round-robin");
    if let Some(steps) = steps {
        make_canary(&fleet, steps);
    }
    (v1_dir, fleet, lb)
}

/// The canary of `fleet_on_v1` waits for `promote` once its 50 % step passed.
fn pause_at_50(fleet: &Fleet) {
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace("max_p99_ratio = 20.0", "max_p99_ratio = 20.0, pause = [50]"));
    fleet.ok(&["apply"]);
}

/// The messages of a deployment record's steps.
fn step_messages(d: &serde_json::Value) -> Vec<String> {
    d["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["message"].as_str().map(str::to_string))
        .collect()
}

/// The app of `fleet_behind_lb` switched to canary deploys with short steps. `max_p99_ratio`
/// is generous: the canaries are freshly started JVMs (not yet compiled by the JIT) on a busy
/// 2-core machine, judged after one second; a short warm-up keeps the steps short with one
/// client.
fn make_canary(fleet: &Fleet, steps: &str) {
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace(
        "[apps.fx.deploy]\n",
        &format!(
            "[apps.fx.deploy]\nstrategy = \"canary\"\ncanary = {{ steps = {steps}, step_time = \"1s\", warmup_requests = 5, max_error_rate = 0.05, max_p99_ratio = 20.0 }}\n"
        ),
    ));
    fleet.ok(&["apply"]);
}

#[test]
fn a_healthy_canary_goes_through_every_step_without_a_failed_request() {
    let (_v1, fleet, lb) = fleet_on_v1(Some("[20, 50, 100]"));
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    load.wait_more(50);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} failed: {errors:?}", ok + failed);
    let d = latest_deployment(&fleet);
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    let steps = step_messages(&d);
    for (n, p) in [(1, 20), (2, 50), (3, 100)] {
        assert!(
            steps
                .iter()
                .any(|s| s.starts_with(&format!("canary step {n} ({p} %) passed: canary "))),
            "{steps:#?}"
        );
    }
    assert_all_from(
        lb,
        "v2",
        20,
        "every response comes from the release in force",
    );
}

#[test]
fn a_canary_answering_30_percent_500s_is_rolled_back_at_the_first_step() {
    let (_v1, fleet, lb) = fleet_on_v1(Some("[20, 50, 100]"));
    let bad = fixture_variant(
        &fleet.path("bad.jar"),
        &[("version", "v2"), ("error-rate", "0.3")],
    );
    let load = Load::start(lb, "/");
    load.wait_more(100);
    let out = fleet.run(&["deploy", "fx", &bad.display().to_string(), "--wait"]);
    assert!(!out.status.success(), "the deploy must fail");
    load.wait_more(50);
    let (ok, failed, _) = load.finish();
    let total = ok + failed;
    // Only the canary's 20 % share, of which 30 % fail, during the first step.
    assert!(failed > 0, "the canary did get traffic");
    assert!(
        (failed as f64) < 0.2 * 0.3 * total as f64 * 1.5 + 5.0,
        "{failed} of {total} failed: more than the first step's share"
    );
    let d = latest_deployment(&fleet);
    assert_eq!(d["outcome"], "rolled-back", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("canary step 1 (20 %) failed: error rate"),
        "{reason}"
    );
    assert_all_from(lb, "v1", 20, "stable keeps serving");
}

#[test]
fn a_canary_much_slower_than_stable_fails_on_max_p99_ratio() {
    let (_v1, fleet, lb) = fleet_on_v1(Some("[20, 50, 100]"));
    // This test is about latency: a tighter ratio than `make_canary`'s.
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace("max_p99_ratio = 20.0", "max_p99_ratio = 2.0"));
    fleet.ok(&["apply"]);
    let slow = fixture_variant(
        &fleet.path("slow.jar"),
        &[("version", "v2"), ("delay", "300ms")],
    );
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    let out = fleet.run(&["deploy", "fx", &slow.display().to_string(), "--wait"]);
    assert!(!out.status.success(), "the deploy must fail");
    let (_, failed, errors) = load.finish();
    assert_eq!(failed, 0, "slow is not failed: {errors:?}");
    let d = latest_deployment(&fleet);
    assert_eq!(d["outcome"], "rolled-back", "{d:#}");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("max_p99_ratio"), "{reason}");
}

/// The case: with `step_time = "8s"` and the default judgement settings, a canary of
/// the same code (a new version string) — freshly started JVMs judged against a warm stable
/// set — is promoted: its first `warmup_requests` are not judged, and a cold JVM's few slow
/// responses are neither a significant shift nor above the 5 ms floor.
#[test]
fn a_cold_canary_of_the_same_code_with_8s_steps_is_promoted() {
    let (_v1, fleet, lb) = fleet_on_v1(None);
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace(
        "[apps.fx.deploy]\n",
        "[apps.fx.deploy]\nstrategy = \"canary\"\ncanary = { steps = [20, 50, 100], step_time = \"8s\" }\n",
    ));
    fleet.ok(&["apply"]);
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    let load = Load::start(lb, "/version");
    load.wait_more(500);
    let out = fleet.run(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    let (_, failed, errors) = load.finish();
    let d = latest_deployment(&fleet);
    assert!(out.status.success(), "{d:#}");
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    assert_eq!(failed, 0, "{errors:?}");
    let steps = step_messages(&d);
    assert!(
        steps
            .iter()
            .any(|s| s.starts_with("canary step 1 (20 %) passed: canary ")
                && s.contains(" warm: median ")),
        "{steps:#?}"
    );
}

/// The newest deployment of a `history -o json`.
#[test]
fn an_operator_promotes_one_canary_and_aborts_another() {
    let (_v1, fleet, lb) = fleet_on_v1(Some("[10, 50, 100]"));
    // Steps far longer than the test: only the operator ends them.
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace("step_time = \"1s\"", "step_time = \"10m\""));
    fleet.ok(&["apply"]);
    let in_first_step = |fleet: &Fleet| {
        wait_until("the canary's first step", START, || {
            step_messages(&latest_deployment(fleet))
                .iter()
                .any(|m| m.starts_with("canary step 1 of 3"))
                .then_some(())
        })
    };
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    fleet.ok(&["deploy", "fx", &v2.display().to_string()]);
    in_first_step(&fleet);
    fleet.ok(&["promote", "fx", "--wait"]);
    assert_all_from(
        lb,
        "v2",
        20,
        "every response comes from the release in force",
    );

    let v3 = fixture_variant(&fleet.path("v3.jar"), &[("version", "v3")]);
    fleet.ok(&["deploy", "fx", &v3.display().to_string()]);
    in_first_step(&fleet);
    fleet.ok(&["abort", "fx", "--wait"]);
    assert_eq!(latest_deployment(&fleet)["outcome"], "rolled-back");
    assert_eq!(
        latest_deployment(&fleet)["reason"],
        "aborted by the operator"
    );
    assert_all_from(
        lb,
        "v2",
        20,
        "every response comes from the release in force",
    );
    // Nothing to promote any more: a clear error.
    let out = fleet.run(&["promote", "fx"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no canary deployment"));
}

/// `status -o json`'s canary object of app `fx`, if any.
fn canary_status(fleet: &Fleet) -> Option<serde_json::Value> {
    let s: serde_json::Value = serde_json::from_str(&fleet.ok(&["status", "-o", "json"])).ok()?;
    s["apps"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == "fx")?
        .get("canary")
        .cloned()
}

#[test]
fn a_paused_canary_waits_for_promote_while_it_is_still_judged_and_status_shows_its_figures() {
    let (_v1, fleet, lb) = fleet_on_v1(Some("[50, 100]"));
    pause_at_50(&fleet);
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    // `--wait` returns once the canary pauses: nothing more happens until someone acts.
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    let paused = canary_status(&fleet).expect("a canary in status");
    assert_eq!(paused["paused"], true, "{paused:#}");
    assert_eq!(
        (paused["step"].as_u64(), paused["percent"].as_u64()),
        (Some(1), Some(50))
    );
    // It stays at its step, and is judged again meanwhile (a window after the pause passed).
    let judged = wait_until("a judged window while paused", START, || {
        let c = canary_status(&fleet)?;
        c["last_verdict"]
            .as_str()
            .is_some_and(|v| v.starts_with("good while paused"))
            .then_some(c)
    });
    assert_eq!(
        (judged["paused"].as_bool(), judged["percent"].as_u64()),
        (Some(true), Some(50))
    );
    assert!(
        judged["canary_figures"]["requests"].as_u64().is_some(),
        "{judged:#}"
    );
    let text = fleet.ok(&["status"]);
    assert!(
        text.contains("paused: `jarfleet promote fx` goes on"),
        "{text}"
    );
    assert!(text.contains("this step: canary "), "{text}");
    assert_eq!(latest_deployment(&fleet)["outcome"], "running");
    // Both releases answer meanwhile.
    let seen: std::collections::BTreeSet<String> = (0..40)
        .filter_map(|_| http_get(lb, "/version").ok().map(|(_, b)| b))
        .collect();
    assert!(seen.contains("v1") && seen.contains("v2"), "{seen:?}");

    // Promote from the pause: the next step (100 %) is judged, then the old set goes.
    fleet.ok(&["promote", "fx", "--wait"]);
    load.wait_more(50);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} failed: {errors:?}", ok + failed);
    let d = latest_deployment(&fleet);
    assert_eq!(d["outcome"], "succeeded", "{d:#}");
    let steps = step_messages(&d);
    let at = |prefix: &str| {
        steps
            .iter()
            .position(|s| s.starts_with(prefix))
            .unwrap_or_else(|| panic!("no step starting {prefix:?}: {steps:#?}"))
    };
    assert!(at("canary step 1 (50 %) passed: canary ") < at("paused at 50 %"));
    assert!(at("paused at 50 %") < at("promoted by the operator"));
    assert!(at("promoted by the operator") < at("canary step 2 (100 %) passed: canary "));
    assert!(canary_status(&fleet).is_none(), "the canary is over");
    assert_all_from(
        lb,
        "v2",
        20,
        "every response comes from the release in force",
    );
}

#[test]
fn deploy_strategy_makes_one_canary_of_a_rolling_app_and_the_next_deploy_rolls_again() {
    let (_v1, fleet, lb) = fleet_on_v1(None);
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    fleet.ok(&[
        "deploy",
        "fx",
        &v2.display().to_string(),
        "--strategy",
        "canary",
    ]);
    // The default canary settings: 5 % for a minute at first.
    let first = wait_until("the canary's first step", START, || {
        canary_status(&fleet).filter(|c| c["step"] == 1)
    });
    assert_eq!(first["percent"], 5, "{first:#}");
    fleet.ok(&["promote", "fx", "--full", "--wait"]);
    let d = latest_deployment(&fleet);
    assert_eq!(
        (d["strategy"].as_str(), d["outcome"].as_str()),
        (Some("canary"), Some("succeeded"))
    );
    assert_all_from(
        lb,
        "v2",
        20,
        "every response comes from the release in force",
    );

    let v3 = fixture_variant(&fleet.path("v3.jar"), &[("version", "v3")]);
    fleet.ok(&["deploy", "fx", &v3.display().to_string(), "--wait"]);
    assert_eq!(
        latest_deployment(&fleet)["strategy"],
        "rolling",
        "the app's own strategy again"
    );
    assert_all_from(
        lb,
        "v3",
        20,
        "every response comes from the release in force",
    );
}

#[test]
fn a_daemon_killed_mid_canary_is_followed_by_one_that_resumes_at_the_same_step() {
    let (_v1, fleet, lb) = fleet_on_v1(Some("[20, 50, 100]"));
    pause_at_50(&fleet);
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    let paused = canary_status(&fleet).expect("a canary in status");
    assert_eq!(
        (
            paused["step"].as_u64(),
            paused["percent"].as_u64(),
            paused["paused"].as_bool()
        ),
        (Some(2), Some(50), Some(true)),
        "{paused:#}"
    );
    let canary_pids: Vec<u64> = fleet
        .instances("fx")
        .iter()
        .filter(|i| i["release"] == latest_deployment(&fleet)["to"])
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    assert_eq!(canary_pids.len(), 2);

    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} failed: {errors:?}", ok + failed);

    // The balancer lives in the daemon: requests flow again once the new one is up.
    crash_and_restart_daemon(&fleet, lb);
    let load = Load::start(lb, "/version");
    // The new daemon resumes the canary where it was: paused at 50 %, step 1 not run again.
    let resumed = wait_until("the canary resumed", START, || {
        canary_status(&fleet).filter(|c| c["step_elapsed_ms"].is_u64())
    });
    assert_eq!(
        (
            resumed["step"].as_u64(),
            resumed["percent"].as_u64(),
            resumed["paused"].as_bool()
        ),
        (Some(2), Some(50), Some(true)),
        "{resumed:#}"
    );
    let steps = step_messages(&latest_deployment(&fleet));
    assert!(
        steps
            .iter()
            .any(|m| m.starts_with("canary resumed by a new daemon at step 2 of 3: 50 %")),
        "{steps:#?}"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|m| m.starts_with("canary step 1 of 3"))
            .count(),
        1,
        "step 1 ran once: {steps:#?}"
    );
    // Both releases still answer, from the same canary JVMs.
    wait_until("both releases answering", START, || {
        let seen: std::collections::BTreeSet<String> = (0..40)
            .filter_map(|_| http_get(lb, "/version").ok().map(|(_, b)| b))
            .collect();
        (seen.contains("v1") && seen.contains("v2")).then_some(())
    });
    for pid in &canary_pids {
        assert!(pid_alive(*pid as u32), "canary JVM {pid} kept running");
    }

    fleet.ok(&["promote", "fx", "--wait"]);
    load.wait_more(50);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} failed: {errors:?}", ok + failed);
    assert_eq!(latest_deployment(&fleet)["outcome"], "succeeded");
    assert_all_from(
        lb,
        "v2",
        20,
        "every response comes from the release in force",
    );
}
