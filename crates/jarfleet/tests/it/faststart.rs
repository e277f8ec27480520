//! `java.fast_start`: a Spring-Boot-shaped jar runs from its extracted layout, its release gets a
//! class data archive dumped by its own running instance that later instances map, a failed
//! archive is tried once per release, and a corrupt archive costs nothing but speed.

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
fn a_boot_jar_runs_extracted_and_its_dumped_archive_is_used_and_a_corrupt_one_is_not() {
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
        "the release's archive is dumped",
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

/// A fleet of one app `fx` running the fixture as `nobody` (a copy of the jar in the fleet's
/// dir, which nobody can reach), with fast starts on, `extra_opts` after the harness's JVM
/// options, and every run of the fixture's `main` appending its pid, port and user to the
/// returned marker file.
fn nobody_fleet(extra_opts: &str) -> (Fleet, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI and the dev machines run as root)"
    );
    let fleet = Fleet::new(4);
    std::fs::set_permissions(fleet.dir.path(), PermissionsExt::from_mode(0o755)).expect("chmod");
    let jar = fleet.path("fx.jar");
    std::fs::copy(crate::fixture::fixture_jar(), &jar).expect("copy the fixture jar");
    let markers = fleet.path("markers");
    std::fs::create_dir(&markers).expect("mkdir");
    std::fs::set_permissions(&markers, PermissionsExt::from_mode(0o777)).expect("chmod");
    let marker = markers.join("main-runs");
    let opts = JVM_OPTS.trim_end_matches(']').to_string() + extra_opts + "]";
    fleet.write_spec(&format!(
        "[apps.fx]\nartifact = {jar:?}\ninstances = 1\nports = \"{}-{}\"\nuser = \"nobody\"\nargs = [\"--marker\", {marker:?}]\njava = {{ opts = {opts} }}\n\n[apps.fx.health]\nhttp = \"/health\"\nstart_timeout = \"60s\"\n",
        fleet.ports.0,
        fleet.ports.1,
        jar = jar.display().to_string(),
        marker = marker.display().to_string(),
    ));
    (fleet, marker)
}

/// The lines of the marker file: one per run of the app's `main`.
fn main_runs(marker: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(marker)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn restarted(fleet: &Fleet, old_pid: u64) -> u64 {
    fleet.ok(&["restart", "fx/0"]);
    wait_until("fx/0 restarted and ready", Duration::from_secs(60), || {
        let i = fleet.instance("fx", 0);
        (i["ready"] == true && i["pid"].as_u64() != Some(old_pid)).then(|| i["pid"].as_u64())?
    })
}

/// The archive comes from the running instance itself (`jcmd … VM.cds dynamic_dump`, run as
/// the app's user): no second copy of the app runs `main` — not as root, not on another port,
/// not with slot 0's data — and the next start maps the archive.
#[test]
fn the_archive_is_dumped_by_the_running_instance_as_its_user_and_used_by_the_next_start() {
    let (fleet, marker) = nobody_fleet("");
    fleet.up();
    let i = fleet.wait_ready("fx", 1, Duration::from_secs(90)).remove(0);
    let pid = i["pid"].as_u64().expect("pid");
    let port = i["port"].as_u64().expect("port");
    assert!(
        cmdline(pid)
            .iter()
            .any(|a| a == "-XX:+RecordDynamicDumpInfo"),
        "{:?}",
        cmdline(pid)
    );
    let made = wait_until(
        "the release's archive is dumped",
        Duration::from_secs(120),
        || fleet.events_of("cds.trained", "fx", None).pop(),
    );
    assert!(
        fleet.events_of("cds.failed", "fx", None).is_empty(),
        "{:?}",
        fleet.events_of("cds.failed", "fx", None)
    );
    assert!(
        made["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("pid {pid}"))),
        "{made}"
    );
    // One run of main: the instance's own, as nobody, on its own port.
    let runs = main_runs(&marker);
    assert_eq!(
        runs,
        vec![format!("main pid={pid} port={port} user=nobody")],
        "only the instance ran the app"
    );
    let dir = fleet.state.join("cds/fx");
    let archive = std::fs::read_dir(&dir)
        .expect("cds dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "jsa"))
        .unwrap_or_else(|| panic!("no archive after {made}"));
    let meta = std::fs::metadata(&archive).expect("archive");
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&meta),
        0,
        "the archive is the daemon's copy"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("cds dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') || n.ends_with(".attempt"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let pid2 = restarted(&fleet, pid);
    let argv = cmdline(pid2);
    assert!(
        argv.iter().any(|a| a.contains(&*archive.to_string_lossy())),
        "{argv:?}"
    );
    assert!(
        !argv.iter().any(|a| a == "-XX:+RecordDynamicDumpInfo"),
        "{argv:?}"
    );
    assert!(maps(pid2, &archive), "the JVM maps {}", archive.display());
    let runs = main_runs(&marker);
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().all(|r| r.ends_with(" user=nobody")), "{runs:?}");
    assert_eq!(fleet.events_of("cds.trained", "fx", None).len(), 1);
}

/// A release whose archive cannot be made is tried once: the failure is reported once, with
/// what to do, and neither the next instances becoming ready nor a new daemon try again.
#[test]
fn a_failed_archive_is_tried_once_per_release_not_at_every_ready() {
    let (fleet, marker) = nobody_fleet(", \"-Xshare:off\"");
    fleet.up();
    let mut pid = fleet.wait_ready("fx", 1, Duration::from_secs(90)).remove(0)["pid"]
        .as_u64()
        .expect("pid");
    let failed = wait_until("the failure", Duration::from_secs(60), || {
        fleet.events_of("cds.failed", "fx", None).pop()
    });
    let message = failed["message"].as_str().unwrap_or_default();
    assert!(message.contains("-Xshare:off"), "{message}");
    for _ in 0..2 {
        pid = restarted(&fleet, pid);
    }
    // A new daemon does not try again either.
    let daemon = fleet.daemon_pid().expect("daemon");
    crate::harness::kill9(daemon);
    wait_until("the daemon is gone", Duration::from_secs(10), || {
        (!crate::harness::pid_alive(daemon)).then_some(())
    });
    fleet.ok(&["up", "-d"]);
    pid = restarted(&fleet, pid);
    // Every ready instance was judged by now (the restart waited for readiness); the events
    // of all of them are in.
    let _ = fleet.wait_ready("fx", 1, Duration::from_secs(30));
    let failures = fleet.events_of("cds.failed", "fx", None);
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(fleet.events_of("cds.trained", "fx", None).is_empty());
    // Only the instances ran the app: four starts, four runs of main, all as nobody.
    let runs = main_runs(&marker);
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|r| r.ends_with(" user=nobody")), "{runs:?}");
    assert!(
        runs.last()
            .is_some_and(|r| r.contains(&format!("pid={pid} ")))
    );
}
