//! Releases and rolling deploys with real JVMs: health-gated, capacity kept, rolled back on
//! failure, resumed after a daemon crash.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::fixture::fixture_variant;
use crate::harness::*;

const START: Duration = Duration::from_secs(90);

/// A fleet of `fx` (3 instances) running a v1 jar; fast deploy settings.
fn fleet_v1(extra_tables: &str) -> (Fleet, std::path::PathBuf) {
    let fleet = Fleet::new(12);
    let v1 = fixture_variant(&fleet.path("fx-v1.jar"), &[("version", "v1")]);
    let spec = fleet
        .app_toml(&AppDef {
            instances: 3,
            health: "http = \"/health\"\nstart_timeout = \"5s\"",
            tables: &format!("[apps.fx.deploy]\nmin_healthy = \"500ms\"\n{extra_tables}"),
            ..Default::default()
        })
        .replace(
            &crate::fixture::fixture_jar().display().to_string(),
            &v1.display().to_string(),
        );
    fleet.write_spec(&spec);
    fleet.up();
    fleet.wait_ready("fx", 3, START);
    (fleet, v1)
}

/// What each of `fx`'s instances answers on `/version` (or why it did not).
pub(crate) fn versions(fleet: &Fleet) -> Vec<String> {
    fleet
        .instances("fx")
        .iter()
        .filter_map(|i| i["port"].as_u64())
        .map(|p| {
            http_get(p as u16, "/version")
                .map(|(_, v)| v.trim().to_string())
                .unwrap_or_else(|e| e)
        })
        .collect()
}

fn history(fleet: &Fleet) -> Value {
    serde_json::from_str(&fleet.ok(&["history", "fx", "-o", "json"])).expect("history -o json")
}

/// Samples the number of ready instances until stopped: the minimum seen, and (from the
/// thread) how many samples were taken, so a watcher that saw nothing cannot pass.
fn watch_ready(
    fleet: &Fleet,
) -> (
    Arc<AtomicBool>,
    Arc<AtomicU32>,
    std::thread::JoinHandle<usize>,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let min = Arc::new(AtomicU32::new(u32::MAX));
    let (bin, state) = (jarfleet_bin(), fleet.state.clone());
    let handle = {
        let (stop, min) = (stop.clone(), min.clone());
        std::thread::spawn(move || {
            let (mut n, mut samples) = (0, 0);
            while !stop.load(Ordering::SeqCst) && n < 5_000 {
                n += 1;
                let out = run_with_deadline(
                    std::process::Command::new(&bin)
                        .args(["status", "-o", "json"])
                        .env("JARFLEET_STATE", &state),
                    Duration::from_secs(60),
                );
                let Ok(out) = out else { continue };
                let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
                    continue;
                };
                let ready = v["apps"][0]["instances"]
                    .as_array()
                    .map(|a| a.iter().filter(|i| i["ready"] == true).count())
                    .unwrap_or(0);
                min.fetch_min(ready as u32, Ordering::SeqCst);
                samples += 1;
            }
            samples
        })
    };
    (stop, min, handle)
}

#[test]
fn a_rolling_deploy_replaces_every_instance_and_keeps_capacity() {
    let (fleet, _) = fleet_v1("");
    let before: Vec<u64> = fleet.pids("fx");
    let v2 = fixture_variant(&fleet.path("fx-v2.jar"), &[("version", "v2")]);
    let (stop, min_ready, watcher) = watch_ready(&fleet);
    fleet.ok(&[
        "deploy",
        "fx",
        &v2.display().to_string(),
        "--version",
        "2.0",
        "--wait",
    ]);
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.join().expect("the ready watcher");
    assert!(samples > 0, "the ready count was never sampled");
    assert!(
        min_ready.load(Ordering::SeqCst) >= 3,
        "capacity dropped to {} ready during the deploy",
        min_ready.load(Ordering::SeqCst)
    );
    assert_eq!(versions(&fleet), ["v2", "v2", "v2"]);
    let after: Vec<u64> = fleet.pids("fx");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "an old process survived: {before:?} {after:?}"
    );
    let h = history(&fleet);
    let d = &h["deployments"][0];
    assert_eq!(d["outcome"], "succeeded", "{d}");
    assert!(
        d["steps"].as_array().is_some_and(|s| s.len() >= 7),
        "each step recorded: {d}"
    );
    let current = h["current"].as_str().unwrap_or_default().to_string();
    let v2_release = h["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["version"] == "2.0")
        .expect("release 2.0");
    assert_eq!(v2_release["id"], current.as_str());
    assert_eq!(v2_release["current"], true);
    // The release runs from its own copy of the jar.
    assert!(
        v2_release["artifact"]
            .as_str()
            .is_some_and(|a| a.contains("/releases/fx/")),
        "{v2_release}"
    );

    // Rollback goes back through the same path.
    fleet.ok(&["rollback", "fx", "--wait"]);
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
    let h = history(&fleet);
    assert_eq!(h["deployments"].as_array().map(Vec::len), Some(2));
    assert_eq!(h["deployments"][1]["outcome"], "succeeded");
}

#[test]
fn a_release_that_never_gets_ready_is_rolled_back_and_nothing_old_was_touched() {
    let (fleet, _) = fleet_v1("");
    let before: Vec<u64> = fleet.pids("fx");
    let bad = fixture_variant(
        &fleet.path("fx-bad.jar"),
        &[("version", "v2"), ("ready-delay", "1h")],
    );
    let out = fleet.run(&["deploy", "fx", &bad.display().to_string(), "--wait"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rolled-back"), "{err}");
    let d = &history(&fleet)["deployments"][0];
    assert_eq!(d["outcome"], "rolled-back");
    let reason = d["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("health checks") && reason.contains("503"),
        "{reason}"
    );
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
    let now: Vec<u64> = fleet.pids("fx");
    assert_eq!(now, before, "the old instances were never stopped");
    assert_eq!(
        fleet.instances("fx").len(),
        3,
        "the failed new instance is gone"
    );
}

#[test]
fn a_release_that_crashes_is_rolled_back_with_the_exit_as_reason() {
    let (fleet, _) = fleet_v1("");
    let bad = fixture_variant(
        &fleet.path("fx-crash.jar"),
        &[
            ("version", "v2"),
            ("crash-after", "1500ms"),
            ("crash-code", "9"),
        ],
    );
    let out = fleet.run(&["deploy", "fx", &bad.display().to_string(), "--wait"]);
    assert_eq!(out.status.code(), Some(1));
    let d = &history(&fleet)["deployments"][0];
    assert_eq!(d["outcome"], "rolled-back");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("exited with status 9")),
        "{d}"
    );
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
}

#[test]
fn bad_deploys_are_refused_and_change_nothing() {
    let (fleet, v1) = fleet_v1("");
    let v1s = v1.display().to_string();
    for (args, needle) in [
        (vec!["deploy", "nope", v1s.as_str()], "no app named"),
        (vec!["deploy", "fx", "/nonexistent/x.jar"], "does not exist"),
        (vec!["deploy", "fx", v1s.as_str()], "already runs release"),
        (vec!["rollback", "fx"], "no previous release"),
        (vec!["history", "nope"], "no app named"),
        (
            vec!["deploy", "fx", v1s.as_str(), "--strategy", "canary"],
            "has no `listen` address",
        ),
    ] {
        let out = fleet.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // A deploy while another runs on the same app.
    let slow = fixture_variant(
        &fleet.path("fx-slow.jar"),
        &[("version", "v2"), ("start-delay", "3s")],
    );
    fleet.ok(&["deploy", "fx", &slow.display().to_string()]);
    let v3 = fixture_variant(&fleet.path("fx-v3.jar"), &[("version", "v3")]);
    let out = fleet.run(&["deploy", "fx", &v3.display().to_string()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("deploy refused") && err.contains("is running"),
        "{err}"
    );
    let out = fleet.run(&["scale", "fx", "5"]);
    assert_eq!(out.status.code(), Some(2), "scale during a deploy");
    wait_until("the first deploy to finish", START, || {
        let h = history(&fleet);
        (h["deployments"][0]["outcome"] == "succeeded").then_some(())
    });
    assert_eq!(
        history(&fleet)["deployments"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(versions(&fleet), ["v2", "v2", "v2"]);
}

#[test]
fn a_deploy_interrupted_by_a_daemon_crash_is_finished_by_the_next_daemon() {
    let (fleet, _) = fleet_v1("");
    let v2 = fixture_variant(&fleet.path("fx-v2.jar"), &[("version", "v2")]);
    fleet.ok(&["deploy", "fx", &v2.display().to_string()]);
    wait_until("the first new instance", START, || {
        fleet
            .events_of("instance.spawned", "fx", None)
            .len()
            .ge(&4)
            .then_some(())
    });
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    fleet.ok(&["up", "-d"]);
    wait_until("the deployment to finish", START, || {
        let h = history(&fleet);
        let outcome = h["deployments"][0]["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (outcome == "succeeded" || outcome == "rolled-back").then_some(())
    });
    let h = history(&fleet);
    let expected = if h["deployments"][0]["outcome"] == "succeeded" {
        "v2"
    } else {
        "v1"
    };
    assert_eq!(
        versions(&fleet),
        [expected; 3],
        "the record matches what runs"
    );
    // No orphan: besides the daemon, exactly 3 JVMs and their 3 shims mention the state dir.
    let daemon = fleet.daemon_pid().expect("the new daemon");
    let others = || -> Vec<u32> {
        processes_mentioning(&fleet.state)
            .into_iter()
            .filter(|p| *p != daemon)
            .collect()
    };
    wait_until("3 JVMs and 3 shims", Duration::from_secs(30), || {
        (others().len() == 6).then_some(())
    });
}

#[test]
fn restart_of_an_app_is_a_rolling_deploy_that_keeps_capacity() {
    let (fleet, _) = fleet_v1("");
    let before: Vec<u64> = fleet.pids("fx");
    // A stopped instance comes back as part of the restart.
    let stopped_slot = fleet.instances("fx")[0]["slot"]
        .as_u64()
        .expect("slot")
        .to_string();
    fleet.ok(&["stop", &format!("fx/{stopped_slot}")]);
    wait_until("the instance to stop", START, || {
        fleet
            .instances("fx")
            .iter()
            .any(|i| i["state"] == "stopped")
            .then_some(())
    });
    let (stop, min_ready, watcher) = watch_ready(&fleet);
    fleet.ok(&["restart", "fx"]);
    wait_until("the restart deployment to succeed", START, || {
        (history(&fleet)["deployments"][0]["outcome"] == "succeeded").then_some(())
    });
    stop.store(true, Ordering::SeqCst);
    let samples = watcher.join().expect("the ready watcher");
    assert!(samples > 0, "the ready count was never sampled");
    assert!(
        min_ready.load(Ordering::SeqCst) >= 2,
        "the two running instances stayed up throughout"
    );
    let after = fleet.wait_ready("fx", 3, START);
    assert!(
        after
            .iter()
            .filter_map(|i| i["pid"].as_u64())
            .all(|p| !before.contains(&p)),
        "every instance is a new process"
    );
    assert_eq!(versions(&fleet), ["v1", "v1", "v1"]);
}

#[test]
fn old_releases_are_pruned_but_never_the_current_or_the_previous() {
    let (fleet, _) = fleet_v1("keep_releases = 2\n");
    for v in ["v2", "v3", "v4"] {
        let jar = fixture_variant(&fleet.path(&format!("fx-{v}.jar")), &[("version", v)]);
        fleet.ok(&[
            "deploy",
            "fx",
            &jar.display().to_string(),
            "--version",
            v,
            "--wait",
        ]);
    }
    let h = history(&fleet);
    let versions_kept: Vec<String> = h["releases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["version"].as_str().map(str::to_string))
        .collect();
    assert_eq!(versions_kept, ["v3", "v4"], "{h}");
    let dirs = std::fs::read_dir(fleet.state.join("releases/fx"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(dirs, 2, "the pruned releases' jar copies are gone");
    // The previous release is still there to roll back to.
    fleet.ok(&["rollback", "fx", "--wait"]);
    assert_eq!(versions(&fleet), ["v3", "v3", "v3"]);
}

#[test]
fn restart_wait_follows_the_restart_to_its_end_and_fails_with_it() {
    let (fleet, _) = fleet_v1("");
    let before = fleet.pids("fx");

    // An app: its rolling restart is a deployment; `--wait` returns once it has ended.
    let out = fleet.run(&["restart", "fx", "--wait"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("deployment #"), "{err}");
    let d = &history(&fleet)["deployments"][0];
    assert_eq!(
        d["outcome"], "succeeded",
        "ended when the command returned: {d}"
    );
    let after = fleet.pids("fx");
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "every instance is new: {before:?} → {after:?}"
    );

    // One instance: `--wait` returns once it is ready again, with a new process.
    let old = fleet.instance("fx", 0)["pid"]
        .as_u64()
        .expect("fx/0 has a pid");
    fleet.ok(&["restart", "fx/0", "--wait"]);
    let i = fleet.instance("fx", 0);
    assert_eq!(i["ready"], true, "{i}");
    assert_ne!(i["pid"].as_u64(), Some(old), "{i}");

    // A restart that cannot succeed: the jar the instances run is replaced (by a rename: the
    // running JVMs keep theirs) with one that never gets ready. Exit 1, as `deploy --wait`.
    let pid = fleet.pids("fx")[0];
    let argv = std::fs::read(format!("/proc/{pid}/cmdline")).expect("the JVM's command line");
    let argv: Vec<String> = argv
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let jar = argv
        .iter()
        .position(|a| a == "-jar")
        .and_then(|i| argv.get(i + 1))
        .expect("the JVM runs -jar")
        .clone();
    let never = fixture_variant(
        &fleet.path("fx-never.jar"),
        &[("version", "v1"), ("ready-delay", "1h")],
    );
    let staged = format!("{jar}.new");
    std::fs::copy(&never, &staged).expect("staging the replacement");
    std::fs::rename(&staged, &jar).expect("replacing the jar");
    let out = fleet.run(&["restart", "fx", "--wait"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("error: deployment #") && err.contains("did not pass its health checks"),
        "{err}"
    );
}
