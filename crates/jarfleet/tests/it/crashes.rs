//! Exit classification with real JVMs: out of memory, a JVM crash with its hs_err file.

use std::time::Duration;

use crate::harness::*;

const START: Duration = Duration::from_secs(60);

#[test]
fn out_of_memory_is_classified_and_restarted() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        args: &["--oom"],
        tables: "[apps.fx.restart]\nbackoff_initial = \"5s\"\n",
        ..Default::default()
    });
    fleet.ok(&["up", "-d"]);
    let exit = wait_until("an OOM exit", START, || {
        fleet
            .events_of("instance.exited", "fx", Some(0))
            .into_iter()
            .next()
    });
    assert!(
        exit["message"]
            .as_str()
            .is_some_and(|m| m.contains("ran out of memory")),
        "{exit}"
    );
    // -XX:+ExitOnOutOfMemoryError is on by default; HeapDumpOnOutOfMemoryError too.
    let dumps: Vec<String> = std::fs::read_dir(fleet.state.join("dumps/fx"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        dumps.iter().any(|d| d.ends_with(".hprof")),
        "heap dump in dumps/fx: {dumps:?}"
    );
    let restarts = fleet.events_of("instance.restart-scheduled", "fx", Some(0));
    assert!(!restarts.is_empty());
}

#[test]
fn a_jvm_crash_is_classified_with_its_hs_err_file() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef::default());
    fleet.up();
    let pid = fleet.wait_ready("fx", 1, START)[0]["pid"]
        .as_u64()
        .expect("pid") as u32;
    // An external SIGSEGV makes HotSpot write its crash report and abort.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSEGV,
    );
    let exit = wait_until("the crash to be reported", START, || {
        fleet
            .events_of("instance.exited", "fx", Some(0))
            .into_iter()
            .next()
    });
    let message = exit["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains("JVM crashed") && message.contains(&format!("hs_err_pid{pid}.log")),
        "{message}"
    );
    assert!(
        fleet
            .log_dir("fx", 0)
            .join(format!("jvm/hs_err_pid{pid}.log"))
            .is_file()
    );
    fleet.wait_ready("fx", 1, START);
}
