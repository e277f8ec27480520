//! A store that lost the fleet's records (0 bytes, deleted, its write-ahead log deleted) or
//! cannot be read is never taken for "no fleet": the daemon refuses to start, names the file and
//! the fix, and no JVM is stopped. `--new-store` starts anew with the JVMs left running as
//! strays, which only `down --strays` stops.

use std::time::Duration;

use crate::harness::*;

/// A fleet of two ready instances whose daemon was killed with SIGKILL; returns the JVM pids.
fn fleet_without_daemon() -> (Fleet, Vec<u32>) {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let pids: Vec<u32> = fleet
        .wait_ready("fx", 2, Duration::from_secs(60))
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    assert_eq!(pids.len(), 2);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    (fleet, pids)
}

/// `up -d` is refused with a message naming the store and the fix; every JVM still runs.
fn refused(fleet: &Fleet, pids: &[u32], what: &str) -> String {
    let out = fleet.run(&["up", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "up -d started on a {what}:\n{stderr}"
    );
    let db = fleet.state.join("state.db").display().to_string();
    for needle in [db.as_str(), what, "nothing was stopped", "--new-store"] {
        assert!(
            stderr.contains(needle),
            "stderr lacks {needle:?}:\n{stderr}"
        );
    }
    for pid in pids {
        assert!(pid_alive(*pid), "JVM {pid} was stopped: {stderr}");
    }
    assert!(
        fleet.run(&["status"]).status.code() != Some(0),
        "no daemon runs after the refusal"
    );
    stderr
}

#[test]
fn a_zero_byte_store_is_refused_and_no_jvm_is_stopped() {
    let (fleet, pids) = fleet_without_daemon();
    let db = fleet.state.join("state.db");
    std::fs::write(&db, b"").expect("truncating the store");
    refused(&fleet, &pids, "is empty (0 bytes)");
    // The refusal changed nothing: the file is still empty, and a second start refuses too.
    assert_eq!(std::fs::metadata(&db).map(|m| m.len()).ok(), Some(0));
    refused(&fleet, &pids, "is empty (0 bytes)");
    // `doctor` sees it without a daemon.
    let doctor = fleet.ok(&["doctor"]);
    assert!(
        doctor.contains("WARNING: the store") && doctor.contains("2 shim(s) run JVMs"),
        "{doctor}"
    );
}

#[test]
fn a_deleted_store_is_refused_and_no_jvm_is_stopped() {
    let (fleet, pids) = fleet_without_daemon();
    std::fs::remove_file(fleet.state.join("state.db")).expect("deleting the store");
    refused(&fleet, &pids, "is missing");
    assert!(!fleet.state.join("state.db").exists(), "nothing created");
}

#[test]
fn a_deleted_write_ahead_log_is_refused_then_new_store_leaves_strays_running() {
    let (fleet, pids) = fleet_without_daemon();
    let wal = fleet.state.join("state.db-wal");
    assert!(wal.exists(), "a daemon killed with SIGKILL leaves its WAL");
    std::fs::remove_file(&wal).expect("deleting the WAL");
    let _ = std::fs::remove_file(fleet.state.join("state.db-shm"));
    refused(&fleet, &pids, "has no jarfleet schema");

    // The operator starts anew: the old JVMs keep running as strays, reported, not stopped.
    let out = fleet.ok(&["up", "-d", "--wait", "--new-store"]);
    drop(out);
    let status = fleet.status();
    let strays: Vec<u32> = status["strays"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["pid"].as_u64())
        .map(|p| p as u32)
        .collect();
    let (mut want, mut got) = (pids.clone(), strays.clone());
    want.sort();
    got.sort();
    assert_eq!(
        got,
        want,
        "the old JVMs are the strays: {status}\n{}",
        std::fs::read_to_string(fleet.state.join("daemon.log")).unwrap_or_default()
    );
    for pid in &pids {
        assert!(pid_alive(*pid), "stray JVM {pid} was stopped");
    }
    assert_eq!(fleet.events_of("daemon.stray-found", "fx", None).len(), 2);
    assert!(
        fleet.ok(&["status"]).contains("2 stray JVM(s)"),
        "status lists them"
    );
    // The new fleet runs beside them, on other ports.
    let fresh = fleet.pids("fx");
    assert_eq!(fresh.len(), 2);
    assert!(fresh.iter().all(|p| !pids.contains(&(*p as u32))));
    let aside: Vec<String> = std::fs::read_dir(&fleet.state)
        .expect("state dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("state.db.") && n.ends_with(".bad"))
        .collect();
    assert_eq!(aside.len(), 1, "the old store is kept aside: {aside:?}");

    // Only when asked are they stopped; the new fleet stays.
    let out = fleet.run(&["down", "--strays"]);
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && said.contains("stopped 2 stray JVM(s)"),
        "{said}"
    );
    wait_until("the stray JVMs to end", Duration::from_secs(40), || {
        pids.iter().all(|p| !pid_alive(*p)).then_some(())
    });
    let status = fleet.status();
    assert!(status["strays"].as_array().is_none_or(|a| a.is_empty()));
    assert_eq!(fleet.wait_ready("fx", 2, Duration::from_secs(10)).len(), 2);
    for pid in &fresh {
        assert!(
            pid_alive(*pid as u32),
            "the new fleet's JVM {pid} was stopped"
        );
    }
}

#[test]
fn a_garbage_store_is_refused_with_the_file_and_the_fix() {
    let (fleet, pids) = fleet_without_daemon();
    let db = fleet.state.join("state.db");
    // A file that is no store at all (its log gone too: SQLite would read the pages it holds).
    std::fs::write(&db, vec![0x5a_u8; 16 * 1024]).expect("overwriting the store");
    for log in ["state.db-wal", "state.db-shm"] {
        let _ = std::fs::remove_file(fleet.state.join(log));
    }
    let stderr = refused(&fleet, &pids, "cannot be read");
    assert!(stderr.contains("not a database"), "{stderr}");
    assert!(stderr.contains(&format!("mv {}", db.display())), "{stderr}");
    let doctor = fleet.ok(&["doctor"]);
    assert!(doctor.contains("UNREADABLE"), "{doctor}");
}
