//! The API boundary: socket permissions, protocol versions, events.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use crate::harness::*;

fn raw_request(fleet: &Fleet, request: &str) -> String {
    let mut s = UnixStream::connect(fleet.state.join("jarfleet.sock")).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn the_socket_is_private_and_other_protocol_versions_are_told_clearly() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef::default());
    fleet.up();
    let mode = std::fs::metadata(fleet.state.join("jarfleet.sock"))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");

    let reply = raw_request(
        &fleet,
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nx-jarfleet-protocol: 999\r\nConnection: close\r\n\r\n",
    );
    assert!(reply.starts_with("HTTP/1.1 426"), "{reply}");
    assert!(
        reply.contains("protocol 999") && reply.contains("speaks protocol 1"),
        "{reply}"
    );
    let reply = raw_request(
        &fleet,
        "GET /v1/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        reply.starts_with("HTTP/1.1 426") && reply.contains("missing x-jarfleet-protocol"),
        "{reply}"
    );
}

#[test]
fn events_are_persisted_and_survive_a_daemon_restart() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef::default());
    fleet.up();
    fleet.wait_ready("fx", 1, Duration::from_secs(60));
    let before: Vec<i64> = fleet
        .events()
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    assert!(!fleet.events_of("instance.ready", "fx", Some(0)).is_empty());
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    fleet.ok(&["up", "-d"]);
    let after: Vec<i64> = fleet
        .events()
        .iter()
        .filter_map(|e| e["id"].as_i64())
        .collect();
    for id in &before {
        assert!(after.contains(id), "event {id} lost across the restart");
    }
    let started = fleet
        .events()
        .into_iter()
        .filter(|e| e["kind"] == "daemon.started")
        .count();
    assert_eq!(started, 2);
}

#[test]
fn down_stops_every_instance_and_the_daemon() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let pids: Vec<u64> = fleet
        .wait_ready("fx", 2, Duration::from_secs(60))
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    let daemon = fleet.daemon_pid().expect("daemon pid");
    fleet.ok(&["down"]);
    for pid in pids {
        assert!(!pid_alive(pid as u32), "JVM {pid} survived down");
    }
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    // A shim leaves a moment after the daemon acknowledged its JVM's exit.
    wait_until_explained(
        "no process left after down",
        Duration::from_secs(10),
        || {
            let left = processes_mentioning(&fleet.state);
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("processes {left:?}"))
            }
        },
    );
}

#[test]
fn doctor_lists_the_jdks_of_this_host() {
    let fleet = Fleet::new(1);
    let json: serde_json::Value =
        serde_json::from_str(&fleet.ok(&["doctor", "-o", "json"])).expect("doctor -o json");
    let jdks = json["jdks"].as_array().cloned().unwrap_or_default();
    assert!(
        !jdks.is_empty(),
        "no JDK found: install one (apt-get install -y openjdk-17-jdk-headless)"
    );
    assert!(jdks.iter().all(|j| {
        j["home"]
            .as_str()
            .is_some_and(|h| std::path::Path::new(h).join("bin/java").exists())
    }));
    assert_eq!(json["state_dir_writable"], true);
    assert!(json["daemon"].is_null());
    let table = fleet.ok(&["doctor"]);
    assert!(
        table.contains("Java installations") && table.contains("daemon: not running"),
        "{table}"
    );
}
