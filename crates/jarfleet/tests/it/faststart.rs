//! `java.fast_start`: a Spring-Boot-shaped jar runs from its extracted layout, its release gets a
//! trained class data archive that later instances map, and a corrupt archive costs nothing but
//! speed.

#[allow(dead_code)]
#[path = "../../../java/tests/it/fixture.rs"]
mod boot_fixture;

use std::time::Duration;

use crate::harness::{Fleet, JVM_OPTS, wait_until};

fn cmdline(pid: u64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Whether the JVM has the file mapped (a class data archive in use is).
fn maps(pid: u64, file: &std::path::Path) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap_or_default()
        .contains(&*file.to_string_lossy())
}

#[test]
fn a_boot_jar_runs_extracted_and_its_trained_archive_is_used_and_a_corrupt_one_is_not() {
    let fleet = Fleet::new(4);
    let jar = boot_fixture::boot_jar();
    fleet.write_spec(&format!(
        "[apps.boot]\nartifact = {jar:?}\ninstances = 2\nports = \"{}-{}\"\njava = {{ opts = {JVM_OPTS} }}\n\n[apps.boot.health]\nhttp = \"/health\"\nstart_timeout = \"60s\"\n",
        fleet.ports.0,
        fleet.ports.1,
        jar = jar.display().to_string()
    ));
    fleet.up();
    let ready = fleet.wait_ready("boot", 2, Duration::from_secs(90));
    let pid = ready[0]["pid"].as_u64().expect("pid");
    let argv = cmdline(pid);
    let cp = argv
        .iter()
        .position(|a| a == "-cp")
        .map(|i| argv[i + 1].clone())
        .unwrap_or_else(|| panic!("runs from the extracted layout with -cp: {argv:?}"));
    assert!(
        cp.contains("/boot/app.jar") && cp.contains("/boot/lib/"),
        "{cp}"
    );
    assert!(
        argv.iter().any(|a| a == "fixture.boot.app.BootApp"),
        "{argv:?}"
    );

    let trained = wait_until(
        "the release's archive is trained",
        Duration::from_secs(120),
        || fleet.events_of("cds.trained", "boot", None).pop(),
    );
    assert!(
        fleet.events_of("cds.failed", "boot", None).is_empty(),
        "{:?}",
        fleet.events_of("cds.failed", "boot", None)
    );
    let archive = std::fs::read_dir(fleet.state.join("cds/boot"))
        .expect("cds dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsa" || x == "aot"))
        .unwrap_or_else(|| panic!("no archive after {trained}"));

    // An instance started now maps the archive.
    fleet.ok(&["restart", "boot/1"]);
    let pid = wait_until(
        "boot/1 restarted and ready",
        Duration::from_secs(60),
        || {
            let i = fleet.instance("boot", 1);
            (i["ready"] == true && i["pid"].as_u64() != Some(pid)).then(|| i["pid"].as_u64())?
        },
    );
    assert!(
        cmdline(pid)
            .iter()
            .any(|a| a.contains(&*archive.to_string_lossy()))
    );
    assert!(maps(pid, &archive), "the JVM maps {}", archive.display());

    // A corrupt archive (same size, garbage inside): the next start ignores it and is ready.
    let len = std::fs::metadata(&archive).expect("archive").len();
    std::fs::write(&archive, vec![0u8; len as usize]).expect("corrupt it");
    fleet.ok(&["restart", "boot/1"]);
    let pid2 = wait_until(
        "boot/1 ready without a usable archive",
        Duration::from_secs(60),
        || {
            let i = fleet.instance("boot", 1);
            (i["ready"] == true && i["pid"].as_u64() != Some(pid)).then(|| i["pid"].as_u64())?
        },
    );
    assert!(!maps(pid2, &archive), "a corrupt archive is not mapped");
}

/// A daemon killed while it trains an archive leaves the training JVM waiting for a SIGTERM
/// that never comes: the next daemon kills it.
#[test]
fn a_training_run_orphaned_by_a_daemon_crash_is_killed_by_the_next_daemon() {
    let fleet = Fleet::new(2);
    // Slow to get ready, so that the training run is still going when the daemon dies.
    let jar = crate::fixture::fixture_variant(&fleet.path("slow.jar"), &[("ready-delay", "4s")]);
    fleet.write_spec(&format!(
        "[apps.slow]\nartifact = {jar:?}\ninstances = 1\nports = \"{}-{}\"\njava = {{ opts = {JVM_OPTS} }}\n\n[apps.slow.health]\nhttp = \"/health\"\n",
        fleet.ports.0,
        fleet.ports.1,
        jar = jar.display().to_string()
    ));
    fleet.up();
    fleet.wait_ready("slow", 1, Duration::from_secs(60));
    let cds = fleet.state.join("cds");
    let training = wait_until("the training run", Duration::from_secs(30), || {
        crate::harness::processes_mentioning(&cds)
            .into_iter()
            .find(|pid| {
                cmdline(u64::from(*pid)).iter().any(|a| {
                    a.starts_with("-XX:ArchiveClassesAtExit=")
                        || a.starts_with("-XX:AOTCacheOutput=")
                })
            })
    });
    let daemon = fleet.daemon_pid().expect("daemon");
    crate::harness::kill9(daemon);
    wait_until("the daemon is gone", Duration::from_secs(10), || {
        (!crate::harness::pid_alive(daemon)).then_some(())
    });
    assert!(
        crate::harness::pid_alive(training),
        "the training JVM outlives the killed daemon"
    );
    fleet.ok(&["up", "-d"]);
    wait_until(
        "the orphaned training JVM is killed",
        Duration::from_secs(20),
        || (!crate::harness::pid_alive(training)).then_some(()),
    );
    let stray = fleet.events_of("daemon.stray-stopped", "", None);
    assert!(
        fleet
            .events()
            .iter()
            .any(|e| e["kind"] == "daemon.stray-stopped"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&training.to_string()))),
        "an event names it: {stray:?}"
    );
}
