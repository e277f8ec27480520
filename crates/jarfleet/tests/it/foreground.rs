//! `jarfleet up` in the foreground: progress until ready, Ctrl-C stops everything.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::*;

#[test]
fn up_shows_progress_and_ctrl_c_stops_every_instance() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    let mut up = fleet
        .command(&["up"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("jarfleet up");
    let mut lines = StderrLines::of(&mut up);
    lines.wait_for("the 'ready' progress line", Duration::from_secs(60), |l| {
        l.contains("2 instance(s) of 1 app(s) ready")
    });
    assert!(
        lines
            .seen
            .iter()
            .any(|l| l.contains("+ fx: add with 2 instance(s)")),
        "{:#?}",
        lines.seen
    );
    assert!(
        lines
            .seen
            .iter()
            .filter(|l| l.contains("instance.ready"))
            .count()
            >= 2,
        "{:#?}",
        lines.seen
    );
    let pids: Vec<u32> = fleet
        .instances("fx")
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert_eq!(pids.len(), 2);

    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let status = wait_until("up to exit after Ctrl-C", Duration::from_secs(60), || {
        up.try_wait().ok().flatten()
    });
    assert!(status.success(), "up exited with {status}");
    for pid in pids {
        assert!(!pid_alive(pid), "JVM {pid} survived Ctrl-C");
    }
    lines.rest(Duration::from_secs(5));
    assert!(
        lines.seen.iter().any(|l| l.contains("stopped cleanly")),
        "{:#?}",
        lines.seen
    );
    assert!(
        processes_mentioning(&fleet.state).is_empty(),
        "leftover processes"
    );
}
