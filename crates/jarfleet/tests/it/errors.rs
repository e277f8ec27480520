//! Bad input: a clear error, exit code 2, and nothing started or changed.

use std::net::TcpListener;

use crate::harness::*;

/// Asserts exit code 2, that stderr contains every `needles`, and that nothing was started.
fn assert_refused(fleet: &Fleet, args: &[&str], needles: &[&str]) -> String {
    let out = fleet.run(args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code of {args:?}; stderr:\n{stderr}"
    );
    for n in needles {
        assert!(
            stderr.contains(n),
            "stderr of {args:?} lacks {n:?}:\n{stderr}"
        );
    }
    assert!(
        processes_mentioning(&fleet.state).is_empty(),
        "something was started"
    );
    assert!(
        !fleet.state.join("jarfleet.sock").exists(),
        "a daemon is running"
    );
    stderr
}

#[test]
fn a_taken_port_is_refused_before_anything_starts() {
    let fleet = Fleet::new(1);
    let _taken = TcpListener::bind(("0.0.0.0", fleet.ports.0)).expect("taking the port");
    fleet.write_app(&AppDef::default());
    let port = fleet.ports.0.to_string();
    assert_refused(&fleet, &["up", "-d"], &["ports", &port, "in use"]);
    assert_refused(&fleet, &["up"], &["ports", &port]);
}

#[test]
fn a_port_taken_on_ipv6_loopback_is_refused_before_anything_starts() {
    let fleet = Fleet::new(1);
    let _taken = TcpListener::bind(("::1", fleet.ports.0))
        .expect("taking the port on [::1] (this test needs IPv6 loopback)");
    fleet.write_app(&AppDef::default());
    let port = fleet.ports.0.to_string();
    assert_refused(&fleet, &["up", "-d"], &["ports", &port, "in use"]);
}

#[test]
fn a_port_taken_on_ipv6_loopback_is_skipped_not_crash_looped() {
    // What ZooKeeper met: another process on [::1]:P, the JVM binding every address (`::`).
    let fleet = Fleet::new(2);
    let _taken = TcpListener::bind(("::1", fleet.ports.0))
        .expect("taking the port on [::1] (this test needs IPv6 loopback)");
    fleet.write_app(&AppDef {
        args: &["--bind=::"],
        ..AppDef::default()
    });
    fleet.up();
    let ready = fleet.wait_ready("fx", 1, std::time::Duration::from_secs(60));
    assert_eq!(
        ready[0]["port"].as_u64(),
        Some(u64::from(fleet.ports.1)),
        "the taken port is skipped: {ready:?}"
    );
    assert_eq!(ready[0]["restarts"].as_u64(), Some(0), "{ready:?}");
}

#[test]
fn a_missing_jar_is_refused() {
    let fleet = Fleet::new(1);
    let spec = fleet.app_toml(&AppDef::default()).replace(
        &crate::fixture::fixture_jar().display().to_string(),
        &fleet.path("build/missing.jar").display().to_string(),
    );
    fleet.write_spec(&spec);
    assert_refused(
        &fleet,
        &["up", "-d"],
        &["apps.fx.artifact", "missing.jar", "does not exist"],
    );
    assert_refused(&fleet, &["validate"], &["missing.jar"]);
}

#[test]
fn an_unsatisfiable_java_requirement_is_refused_naming_what_was_found() {
    let fleet = Fleet::new(1);
    let spec = fleet
        .app_toml(&AppDef::default())
        .replace("java = { opts", "java = { version = \">=99\", opts");
    fleet.write_spec(&spec);
    let err = assert_refused(&fleet, &["up", "-d"], &[">=99", "found"]);
    assert!(
        err.contains("/usr/lib/jvm") || err.contains("Java 17") || err.contains("Java "),
        "names the JDKs found:\n{err}"
    );
}

#[test]
fn a_bad_spec_is_refused_with_every_error() {
    let fleet = Fleet::new(1);
    let spec = fleet
        .app_toml(&AppDef {
            instances: 3,
            ..Default::default()
        })
        .replace("instances = 3", "instances = 0\ninstnces = 2")
        .replace("http = \"/health\"", "http = \"health\"\ninterval = \"5\"");
    fleet.write_spec(&spec);
    let err = assert_refused(
        &fleet,
        &["up", "-d"],
        &[
            "instances = 0",
            "instnces",
            "did you mean",
            "interval",
            "jarfleet.toml:",
        ],
    );
    assert!(err.contains("nothing was applied"), "{err}");
    assert_refused(&fleet, &["validate"], &["instnces"]);
    assert_refused(&fleet, &["apply"], &["instnces"]);
}

#[test]
fn a_missing_spec_file_is_a_usage_error() {
    let fleet = Fleet::new(1);
    assert_refused(
        &fleet,
        &["up", "-d", "nowhere.toml"],
        &["cannot read spec", "nowhere.toml"],
    );
}

#[test]
fn clients_without_a_daemon_exit_3() {
    let fleet = Fleet::new(1);
    let out = fleet.run(&["status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the jarfleet daemon") && err.contains("hint:"),
        "{err}"
    );
}

#[test]
fn unknown_apps_and_instances_are_usage_errors() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef::default());
    fleet.up();
    for (args, needle) in [
        (vec!["stop", "nope"], "no app named \"nope\""),
        (vec!["restart", "fx/7"], "fx/7 does not exist"),
        (vec!["scale", "nope", "2"], "no app named"),
        (vec!["logs", "nope"], "no app named"),
        (vec!["stop", "fx/x"], "is not APP or APP/N"),
    ] {
        let out = fleet.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // Nothing changed.
    assert_eq!(
        fleet
            .wait_ready("fx", 1, std::time::Duration::from_secs(5))
            .len(),
        1
    );
}
