//! Hot reload: SIGHUP to the daemon and `up --watch` apply a changed spec; only what changed
//! moves, and a broken spec changes nothing.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

fn two_apps(fleet: &Fleet, x: &str, fb_instances: u32) -> String {
    let tables = "[apps.fa.deploy]\nmin_healthy = \"0s\"\n";
    let fa = fleet.app_toml(&AppDef {
        name: "fa",
        instances: 2,
        extra: &format!("env = {{ X = \"{x}\" }}"),
        tables,
        ..AppDef::default()
    });
    let fb = fleet.app_toml(&AppDef {
        name: "fb",
        instances: fb_instances,
        ..AppDef::default()
    });
    format!("{fa}\n{fb}")
}

#[test]
fn sighup_applies_the_changed_spec_and_only_what_changed_moves() {
    let fleet = Fleet::new(10);
    fleet.write_spec(&two_apps(&fleet, "1", 1));
    fleet.up();
    fleet.wait_ready("fa", 2, Duration::from_secs(60));
    fleet.wait_ready("fb", 1, Duration::from_secs(60));
    let fb_before = fleet.pids("fb");
    let daemon = fleet.daemon_pid().expect("daemon");

    // One app's env changes, the other only scales.
    fleet.write_spec(&two_apps(&fleet, "2", 2));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let reloaded = wait_until("config.reloaded", Duration::from_secs(30), || {
        fleet
            .events()
            .into_iter()
            .find(|e| e["kind"] == "config.reloaded")
    });
    assert!(
        reloaded["message"]
            .as_str()
            .is_some_and(|m| m.contains("fa")),
        "{reloaded}"
    );
    wait_until("fa rolled to X=2", Duration::from_secs(60), || {
        let xs = env_of_ready(&fleet, "fa", "X");
        (xs.len() == 2 && xs.iter().all(|x| x == "2")).then_some(())
    });
    fleet.wait_ready("fb", 2, Duration::from_secs(60));
    let fb_after = fleet.pids("fb");
    assert!(
        fb_before.iter().all(|p| fb_after.contains(p)),
        "a scale restarts nothing: {fb_before:?} → {fb_after:?}"
    );

    // A broken spec: an event with the errors, nothing changes.
    let pids = (fleet.pids("fa"), fleet.pids("fb"));
    fleet.write_spec("[apps.fa]\ninstances = \"many\"\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let failed = wait_until("config.reload-failed", Duration::from_secs(30), || {
        fleet
            .events()
            .into_iter()
            .find(|e| e["kind"] == "config.reload-failed")
    });
    assert!(
        failed["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing changed")),
        "{failed}"
    );
    assert_eq!((fleet.pids("fa"), fleet.pids("fb")), pids);
}

#[test]
fn up_watch_applies_a_saved_spec_and_reports_a_broken_one() {
    let fleet = Fleet::new(10);
    fleet.write_spec(&two_apps(&fleet, "1", 1));
    let mut up = fleet
        .command(&["up", "--watch"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jarfleet up --watch");
    let mut lines = StderrLines::of(&mut up);
    lines.wait_for("ready", Duration::from_secs(60), |l| {
        l.contains("3 instance(s) of 2 app(s) ready")
    });
    let fa_before = fleet.pids("fa");

    fleet.write_spec("[apps.fb]\ninstances = \"many\"\n");
    lines.wait_for("the broken spec reported", Duration::from_secs(60), |l| {
        l.contains("nothing changed")
    });
    assert_eq!(fleet.pids("fa"), fa_before);

    fleet.write_spec(&two_apps(&fleet, "1", 2));
    fleet.wait_ready("fb", 2, Duration::from_secs(60));
    assert_eq!(fleet.pids("fa"), fa_before, "fa did not change");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let status = wait_until("up exits", Duration::from_secs(60), || {
        up.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
}
