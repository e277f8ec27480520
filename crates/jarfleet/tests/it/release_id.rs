//! Release ids are independent of the host; a store written when they were not (they hashed the
//! JDK's home too) is taken over by a new daemon without restarting anything.

use std::path::Path;
use std::time::Duration;

use jarfleet_daemon::store::{Store, Write};

use crate::harness::*;

/// The release `fx` would have had under the old id scheme: what `prepare` computes for the
/// fleet's spec, on this host, the old way.
fn ids_of(fleet: &Fleet) -> (String, String) {
    let text = std::fs::read_to_string(fleet.spec_path()).expect("reading the spec");
    let env = |k: &str| std::env::var(k).ok();
    let spec = jarfleet_core::spec::load(&text, &fleet.spec_path(), &env)
        .unwrap_or_else(|e| panic!("the test spec does not load: {e}"));
    let prepared = jarfleet_host::prepare::prepare(&spec)
        .unwrap_or_else(|e| panic!("preparing the test spec: {}", e.message));
    let fx = prepared.get("fx").expect("fx prepared");
    let legacy = fx.legacy_release.clone().expect("a legacy id");
    (fx.release.clone(), legacy)
}

/// Renames release `from` to `to` everywhere the store names it (the app, its releases, its
/// instances, its deployments) and in the state dir: the store as an older jarfleet left it.
fn rename_release(state: &Path, from: &str, to: &str) {
    let store = Store::open(&state.join("state.db")).expect("opening the stopped daemon's store");
    let mut writes = Vec::new();
    for (name, mut app) in store.apps().expect("apps") {
        if app.release == from {
            app.release = to.to_string();
        }
        if let Some(r) = app.releases.remove(from) {
            app.releases.insert(to.to_string(), r);
        }
        writes.push(Write::App {
            name,
            record: Box::new(app),
            now: 1,
        });
    }
    for mut rec in store.instances().expect("instances") {
        if rec.instance.release == from {
            rec.instance.release = to.to_string();
        }
        writes.push(Write::Instance(Box::new(rec)));
    }
    for mut d in store.deployments(None).expect("deployments") {
        if d.from == from {
            d.from = to.to_string();
        }
        if d.to == from {
            d.to = to.to_string();
        }
        writes.push(Write::Deployment(Box::new(d)));
    }
    let refs: Vec<&Write> = writes.iter().collect();
    store.write_all(&refs).expect("rewriting the store");
    let dir = state.join("releases").join("fx");
    if dir.join(from).exists() {
        std::fs::rename(dir.join(from), dir.join(to)).expect("renaming the release dir");
    }
}

#[test]
fn a_store_with_old_style_release_ids_is_taken_over_without_a_restart() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let before = fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let mut pids: Vec<u64> = before.iter().filter_map(|i| i["pid"].as_u64()).collect();
    pids.sort();
    let (new_id, legacy) = ids_of(&fleet);
    assert_ne!(new_id, legacy, "the old scheme hashed the JDK's home too");
    assert_eq!(fleet.status()["apps"][0]["release"], new_id.as_str());

    // The daemon goes (its JVMs stay), and the store is left as an older jarfleet wrote it.
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    rename_release(&fleet.state, &new_id, &legacy);

    // A daemon of this version starts on it and the unchanged spec is applied, twice.
    fleet.ok(&["up", "-d"]);
    let out = fleet.ok(&["apply", "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&out).expect("apply -o json");
    assert_eq!(
        plan["plan"]["changes"],
        serde_json::json!([]),
        "nothing changes: {out}"
    );
    let after = fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let mut after_pids: Vec<u64> = after.iter().filter_map(|i| i["pid"].as_u64()).collect();
    after_pids.sort();
    assert_eq!(after_pids, pids, "every instance kept running");
    assert!(
        after.iter().all(|i| i["release"] == legacy.as_str()),
        "{after:?}"
    );
    assert_eq!(fleet.status()["apps"][0]["release"], legacy.as_str());
    assert!(
        fleet.events_of("deploy.started", "fx", None).is_empty(),
        "no deployment started"
    );
    // History shows the release with the JDK it runs on.
    let history: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["history", "fx", "-o", "json"])).expect("history json");
    let releases = history["releases"].as_array().expect("releases");
    assert_eq!(releases.len(), 1, "{history}");
    assert_eq!(releases[0]["id"], legacy.as_str());
    assert!(
        releases[0]["jdk"].as_str().is_some_and(|j| j.contains('/')),
        "{history}"
    );

    // A release that differs gets a new-style id, and the old one stays to roll back to.
    fleet.write_app(&AppDef {
        instances: 2,
        args: &["--version", "v2"],
        ..Default::default()
    });
    fleet.ok(&["apply"]);
    let (next, next_legacy) = ids_of(&fleet);
    assert_ne!(next, next_legacy);
    wait_until(
        "the new release to roll out",
        Duration::from_secs(120),
        || (!fleet.events_of("deploy.succeeded", "fx", None).is_empty()).then_some(()),
    );
    assert_eq!(fleet.status()["apps"][0]["release"], next.as_str());
}

/// A JDK at `dir` that discovery takes for a newer patch of `real` (its `release` file says
/// `FEATURE.0.99`); its tools are links to the real ones, so JVMs run as before.
fn newer_patch_of(real: &Path, dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("creating the fake JDK");
    for tool in ["java", "jcmd", "javac"] {
        let target = real.join("bin").join(tool);
        if target.exists() {
            std::os::unix::fs::symlink(&target, bin.join(tool)).expect("linking a JDK tool");
        }
    }
    let release =
        std::fs::read_to_string(real.join("release")).expect("the real JDK's release file");
    let bumped: Vec<String> = release
        .lines()
        .map(|l| match l.split_once('=') {
            Some((k @ ("JAVA_VERSION" | "JAVA_RUNTIME_VERSION"), v)) => {
                let feature = v.trim_matches('"').split('.').next().unwrap_or("17");
                format!("{k}=\"{feature}.0.99\"")
            }
            _ => l.to_string(),
        })
        .collect();
    std::fs::write(dir.join("release"), bumped.join("\n") + "\n").expect("writing release");
}

#[test]
fn another_jdk_on_the_host_restarts_the_same_release_on_it() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let before = fleet.wait_ready("fx", 2, Duration::from_secs(60));
    let old_pids: Vec<u64> = before.iter().filter_map(|i| i["pid"].as_u64()).collect();
    let status = fleet.status();
    let release = status["apps"][0]["release"]
        .as_str()
        .expect("release")
        .to_string();
    let java = status["apps"][0]["java"]
        .as_str()
        .expect("java")
        .to_string();
    let home = java
        .split_once(" (")
        .map(|(_, h)| h.trim_end_matches(')'))
        .expect("the JDK's home in status");

    // The host gets a newer JDK: the next daemon finds it (JAVA_HOME) and picks it.
    let fake = fleet.path("newer-jdk");
    newer_patch_of(Path::new(home), &fake);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    let out = run_with_deadline(
        fleet.command(&["up", "-d"]).env("JAVA_HOME", &fake),
        Duration::from_secs(180),
    )
    .expect("running jarfleet up -d");
    assert!(
        out.status.success(),
        "up -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Starting, it applied the unchanged spec: the same release restarts, on the new JDK.
    let moved = fleet.events_of("app.updated", "fx", None);
    assert!(
        moved.iter().any(|e| e["message"].as_str().is_some_and(|m| m
            .contains(&format!("release {release} moves to another JDK"))
            && m.contains(&fake.display().to_string()))),
        "{moved:#?}"
    );
    let started = fleet.events_of("deploy.started", "fx", None);
    assert!(
        started.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("{release} → {release}")))),
        "{started:#?}"
    );
    wait_until(
        "the restart on the new JDK",
        Duration::from_secs(120),
        || (!fleet.events_of("deploy.succeeded", "fx", None).is_empty()).then_some(()),
    );
    let after = fleet.wait_ready("fx", 2, Duration::from_secs(60));
    assert!(
        after.iter().all(
            |i| i["pid"].as_u64().is_some_and(|p| !old_pids.contains(&p))
                && i["release"] == release.as_str()
        ),
        "every instance restarted, on the same release: {after:?}"
    );
    let status = fleet.status();
    assert_eq!(status["apps"][0]["release"], release.as_str());
    let fake_home = fake.display().to_string();
    assert!(
        status["apps"][0]["java"]
            .as_str()
            .is_some_and(|j| j.contains(&fake_home) && j.contains(".0.99")),
        "{}",
        status["apps"][0]["java"]
    );
    let history: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["history", "fx", "-o", "json"])).expect("history json");
    assert_eq!(
        history["releases"].as_array().map(Vec::len),
        Some(1),
        "{history}"
    );
    assert!(
        history["releases"][0]["jdk"]
            .as_str()
            .is_some_and(|j| j.contains(&fake_home)),
        "{history}"
    );
    // Applying again changes nothing.
    let again: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["apply", "-o", "json"])).expect("apply -o json");
    assert_eq!(again["plan"]["changes"], serde_json::json!([]), "{again}");
}
