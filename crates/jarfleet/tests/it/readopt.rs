//! The daemon can die without touching any JVM; the next one re-adopts them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::harness::*;

#[test]
fn daemon_kill9_leaves_jvms_serving_and_a_new_daemon_readopts_them() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 3,
        ..Default::default()
    });
    fleet.up();
    let before = fleet.wait_ready("fx", 3, Duration::from_secs(60));
    let pids: Vec<u64> = before.iter().filter_map(|i| i["pid"].as_u64()).collect();
    let ports: Vec<u16> = before
        .iter()
        .filter_map(|i| i["port"].as_u64())
        .map(|p| p as u16)
        .collect();
    let port0 = ports[0];
    let (_, first) = http_get(port0, "/log?lines=3&size=40").expect("log before");
    assert_eq!(first.trim(), "3");

    // Requests to every instance, all the time, from another thread.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed, ports) = (stop.clone(), ok.clone(), failed.clone(), ports.clone());
        std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) && n < 200_000 {
                match http_get(ports[n % ports.len()], "/") {
                    Ok((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
                n += 1;
            }
        })
    };

    kill_daemon(&fleet);
    let served_while_down = ok.load(Ordering::SeqCst);
    wait_until(
        "requests answered while no daemon runs",
        Duration::from_secs(10),
        || (ok.load(Ordering::SeqCst) > served_while_down + 50).then_some(()),
    );
    for pid in &pids {
        assert!(pid_alive(*pid as u32), "JVM {pid} died with the daemon");
    }

    // A new daemon adopts the same processes.
    fleet.ok(&["up", "-d"]);
    let after = fleet.wait_ready("fx", 3, Duration::from_secs(30));
    let mut after_pids: Vec<u64> = after.iter().filter_map(|i| i["pid"].as_u64()).collect();
    let mut expected = pids.clone();
    after_pids.sort();
    expected.sort();
    assert_eq!(after_pids, expected, "re-adopted the same pids");
    assert!(after.iter().all(|i| i["restarts"] == 0));
    assert!(!fleet.events_of("instance.adopted", "fx", None).is_empty());

    // Logs continue in the same file, without a gap.
    let (_, second) = http_get(port0, "/log?lines=2&size=40").expect("log after");
    assert_eq!(second.trim(), "2");
    let slot0 = before
        .iter()
        .find(|i| i["port"].as_u64() == Some(port0 as u64))
        .and_then(|i| i["slot"].as_u64())
        .unwrap_or(0);
    let log = fleet.log_dir("fx", slot0 as u32).join("stdout.log");
    let text = wait_until("the 5 log lines", Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&log).ok()?;
        (t.lines().filter(|l| l.starts_with("line ")).count() >= 5).then_some(t)
    });
    let numbers = line_numbers(&text);
    assert_eq!(numbers.len(), 5, "{text}");
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "numbered lines in order, no gap: {numbers:?}"
    );

    let served_after = ok.load(Ordering::SeqCst);
    wait_until(
        "requests answered with the new daemon in charge",
        Duration::from_secs(10),
        || (ok.load(Ordering::SeqCst) > served_after + 20).then_some(()),
    );
    stop.store(true, Ordering::SeqCst);
    let _ = load.join();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed while the daemon was down or back"
    );

    // The adopted instances are fully supervised: a crash is still seen and restarted.
    kill9(pids[0] as u32);
    wait_until(
        "the adopted instance restarted",
        Duration::from_secs(60),
        || {
            let i = fleet.instances("fx");
            (i.iter().filter(|i| i["ready"] == true).count() == 3
                && i.iter().any(|i| i["restarts"] == 1))
            .then_some(())
        },
    );
}

#[test]
fn a_stop_interrupted_by_a_daemon_crash_is_finished_by_the_next_daemon() {
    let fleet = Fleet::new(10);
    let keep = fleet.app_toml(&AppDef {
        name: "keep",
        ..Default::default()
    });
    let gone = fleet.app_toml(&AppDef {
        name: "gone",
        args: &["--ignore-sigterm"],
        tables: "[apps.gone.stop]\nstop_timeout = \"4s\"\n",
        ..Default::default()
    });
    fleet.write_spec(&format!("{keep}\n{gone}"));
    fleet.up();
    fleet.wait_ready("keep", 1, Duration::from_secs(60));
    let pid = fleet.wait_ready("gone", 1, Duration::from_secs(60))[0]["pid"]
        .as_u64()
        .expect("pid") as u32;
    // Remove `gone` from the spec; its JVM ignores SIGTERM, so the stop takes stop_timeout.
    fleet.write_spec(&keep);
    let plan = fleet.ok(&["apply"]);
    assert!(plan.contains("- gone: remove"), "{plan}");
    kill_daemon(&fleet);
    fleet.ok(&["up", "-d"]);
    wait_until(
        "the removed app to be gone",
        Duration::from_secs(60),
        || {
            let status = fleet.status();
            let names: Vec<String> = status["apps"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a["name"].as_str().map(str::to_string))
                .collect();
            (names == ["keep"]).then_some(())
        },
    );
    assert!(!pid_alive(pid), "the removed app's JVM {pid} survived");
}

/// `up -d` after a daemon crash joins the stored fleet: a refused apply stops nothing (before,
/// `up` ran `down` on it: every JVM stopped, the app removed from the store).
#[test]
fn up_after_a_crash_never_stops_the_stored_fleet_when_its_apply_is_refused() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let pids = ready_pids(&fleet, "fx", 2);
    kill_daemon(&fleet);

    // The spec now asks for a listen address another process holds: the daemon refuses it.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a foreign listener");
    let port = taken.local_addr().expect("its address").port();
    fleet.write_app(&AppDef {
        instances: 2,
        extra: &format!("listen = \"127.0.0.1:{port}\""),
        ..Default::default()
    });
    let out = fleet.run(&["up", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the apply is refused:\n{stderr}");
    assert!(
        stderr.contains("nothing was stopped") && stderr.contains("1 app(s) its store holds (fx)"),
        "the CLI says what happened:\n{stderr}"
    );
    for pid in &pids {
        assert!(pid_alive(*pid as u32), "JVM {pid} was stopped:\n{stderr}");
    }
    // The daemon runs on with the stored fleet, the same JVMs re-adopted.
    let mut after = fleet.pids("fx");
    after.sort();
    assert_eq!(after, pids, "the stored fleet carries on");
    assert!(fleet.events_of("daemon.stray-found", "fx", None).is_empty());
}

/// With a port range just big enough, the fleet's own surviving JVMs hold every port: `up -d`
/// after a crash counts them as its own, not as foreign.
#[test]
fn up_after_a_crash_with_a_tight_port_range_readopts_its_own_jvms() {
    let fleet = Fleet::new(2);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let pids = ready_pids(&fleet, "fx", 2);
    kill_daemon(&fleet);
    fleet.ok(&["up", "-d", "--wait"]);
    let mut after = fleet.pids("fx");
    after.sort();
    assert_eq!(after, pids, "re-adopted the same JVMs");
}

/// The report's case: the spec edited and applied, the daemon killed with SIGKILL mid-rollout,
/// then `up -d` with the same spec: the resumed deployment carries on, the spec (its target)
/// changes nothing, and the fleet keeps running (before, `up` ran `down`: every JVM stopped, the app forgotten).
#[test]
fn up_after_a_crash_mid_deployment_keeps_the_fleet_running() {
    let fleet = Fleet::new(10);
    let health = "http = \"/health\"\nstart_timeout = \"120s\"";
    fleet.write_app(&AppDef {
        instances: 2,
        health,
        ..Default::default()
    });
    fleet.up();
    let pids = ready_pids(&fleet, "fx", 2);
    // v2 takes a long while to become ready: the rollout is under way when the daemon dies.
    fleet.write_app(&AppDef {
        instances: 2,
        args: &["--version", "v2", "--ready-delay", "60s"],
        health,
        ..Default::default()
    });
    fleet.ok(&["apply"]);
    wait_until(
        "the rollout to start a v2 instance",
        Duration::from_secs(30),
        || {
            (fleet.instances("fx").len() > 2 || fleet.status()["apps"][0]["rolling"] == true)
                .then_some(())
        },
    );
    kill_daemon(&fleet);
    let out = fleet.run(&["up", "-d"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    for pid in &pids {
        assert!(
            pid_alive(*pid as u32),
            "v1 JVM {pid} was stopped:\n{stderr}"
        );
    }
    // The deployment carries on under the new daemon, and the same spec names where it is
    // going: nothing to apply, nothing stopped.
    assert!(out.status.success(), "{stderr}");
    let status = fleet.status();
    assert!(
        !status["apps"][0]["deployment"].is_null(),
        "the resumed deployment is under way: {status}"
    );
    assert_eq!(
        status["apps"].as_array().map(Vec::len),
        Some(1),
        "{stderr}\n{status}"
    );
    let mut after: Vec<u64> = fleet.pids("fx");
    after.sort();
    assert!(
        pids.iter().all(|p| after.contains(p)),
        "the v1 JVMs are still the fleet's: {after:?}\n{stderr}"
    );
}

/// The pids of `app`'s first `n` ready instances, sorted.
fn ready_pids(fleet: &Fleet, app: &str, n: usize) -> Vec<u64> {
    let mut pids: Vec<u64> = fleet
        .wait_ready(app, n, Duration::from_secs(60))
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    pids.sort();
    pids
}

/// `kill -9` of the fleet's daemon, waited for.
fn kill_daemon(fleet: &Fleet) {
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
}
