//! The built-in load balancer with real JVMs: one address, no request lost when an instance
//! dies, is stopped, or is replaced by a deploy.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::fixture::fixture_variant;
use crate::harness::*;

pub(crate) const START: Duration = Duration::from_secs(90);

/// A fleet of `fx` behind the load balancer on `127.0.0.1:PORT`.
pub(crate) fn fleet_behind_lb(
    instances: u32,
    jar: Option<&std::path::Path>,
    balance: &str,
) -> (Fleet, u16) {
    let fleet = Fleet::new(12);
    let lb = free_port();
    let listen = format!("listen = \"127.0.0.1:{lb}\"");
    let mut spec = fleet.app_toml(&AppDef {
        instances,
        extra: &listen,
        health: "http = \"/health\"\ninterval = \"500ms\"\nstart_timeout = \"10s\"",
        tables: &format!("[apps.fx.deploy]\nmin_healthy = \"500ms\"\n\n[apps.fx.balancer]\nbalance = \"{balance}\"\n"),
        ..Default::default()
    });
    if let Some(jar) = jar {
        spec = spec.replace(
            &crate::fixture::fixture_jar().display().to_string(),
            &jar.display().to_string(),
        );
    }
    fleet.write_spec(&spec);
    fleet.up();
    fleet.wait_ready("fx", instances as usize, START);
    // The balancer knows every ready instance.
    wait_until("requests spread over every instance", START, || {
        let pids: BTreeSet<String> = (0..(instances * 6))
            .filter_map(|_| http_get(lb, "/pid").ok())
            .map(|(_, p)| p)
            .collect();
        (pids.len() == instances as usize).then_some(())
    });
    (fleet, lb)
}

/// Continuous GETs of `path` through the balancer until stopped: (stop, ok, failed, bodies seen last).
/// `kill -9` of the daemon, then a new one (`up -d`) whose balancer on `lb` serves again from
/// the instances that stayed up.
pub(crate) fn crash_and_restart_daemon(fleet: &Fleet, lb: u16) {
    let daemon = fleet.daemon_pid().expect("daemon pid");
    kill9(daemon);
    wait_until("the daemon to die", Duration::from_secs(10), || {
        (!pid_alive(daemon)).then_some(())
    });
    fleet.ok(&["up", "-d"]);
    wait_until("the balancer back", START, || {
        http_get(lb, "/version").ok().filter(|(c, _)| *c == 200)
    });
}

pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
    errors: Arc<std::sync::Mutex<Vec<String>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(port: u16, path: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(std::sync::Mutex::new(Vec::new()));
        let handle = {
            let (stop, ok, failed, errors) =
                (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && n < 500_000 {
                    n += 1;
                    match http_get(port, path) {
                        Ok((200, _)) => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            if let Ok(mut e) = errors.lock() {
                                e.push(format!("{other:?}"));
                            }
                        }
                    }
                }
            })
        };
        Load {
            stop,
            ok,
            failed,
            errors,
            handle: Some(handle),
        }
    }

    /// Waits until `n` more requests succeeded (so the load really ran through an event).
    pub(crate) fn wait_more(&self, n: u64) {
        let from = self.ok.load(Ordering::SeqCst);
        wait_until("more requests answered", Duration::from_secs(30), || {
            (self.ok.load(Ordering::SeqCst) >= from + n).then_some(())
        });
    }

    pub(crate) fn finish(mut self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (
            self.ok.load(Ordering::SeqCst),
            self.failed.load(Ordering::SeqCst),
            errors,
        )
    }
}

#[test]
fn a_killed_instance_loses_no_request_behind_the_balancer() {
    let (fleet, lb) = fleet_behind_lb(3, None, "round-robin");
    let load = Load::start(lb, "/");
    load.wait_more(100);
    let victim = fleet.instances("fx")[1]["pid"].as_u64().expect("pid") as u32;
    kill9(victim);
    wait_until("the killed instance to be replaced", START, || {
        let i = fleet.instances("fx");
        (i.iter().filter(|i| i["ready"] == true).count() == 3
            && i.iter().all(|i| i["pid"].as_u64() != Some(victim as u64)))
        .then_some(())
    });
    load.wait_more(100);
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed: {errors:?}",
        ok + failed
    );
    let status = fleet.status();
    let totals = &status["apps"][0]["balancer"]["totals"];
    assert!(
        totals["requests"][1].as_u64().unwrap_or(0) >= ok,
        "the balancer counted the 2xx: {totals}"
    );
}

#[test]
fn a_request_in_flight_completes_while_its_instance_is_stopped() {
    let (fleet, lb) = fleet_behind_lb(2, None, "least-request");
    let slow = std::thread::spawn(move || http_get(lb, "/slow?ms=3000"));
    // Find the instance holding the request, then stop it.
    let slot = wait_until(
        "the slow request in flight",
        Duration::from_secs(10),
        || {
            let status = fleet.status();
            let backends = status["apps"][0]["balancer"]["backends"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            backends
                .iter()
                .find(|b| b["in_flight"].as_u64() == Some(1))
                .and_then(|b| {
                    b["id"]
                        .as_str()
                        .and_then(|id| id.split('/').nth(1)?.split('#').next()?.parse::<u32>().ok())
                })
        },
    );
    fleet.ok(&["stop", &format!("fx/{slot}")]);
    let (code, body) = slow
        .join()
        .expect("slow request thread")
        .expect("slow request");
    assert_eq!(
        (code, body.trim()),
        (200, "slow done"),
        "the in-flight request completed"
    );
    wait_until("the instance to stop", Duration::from_secs(30), || {
        (fleet.instance("fx", slot as u64)["state"] == "stopped").then_some(())
    });
    // New requests went to the other instance meanwhile.
    assert_eq!(http_get(lb, "/").map(|(c, _)| c), Ok(200));
}

#[test]
fn a_rolling_deploy_under_load_loses_no_request_and_ends_on_v2() {
    let fleet_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&fleet_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, lb) = fleet_behind_lb(3, Some(&v1), "least-request");
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    load.wait_more(100);
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the deploy: {errors:?}",
        ok + failed
    );
    assert_all_from(
        lb,
        "v2",
        30,
        "every response after the deploy comes from v2",
    );
}

#[test]
fn tcp_mode_carries_a_non_http_protocol_with_failover() {
    use std::io::{BufRead, BufReader, Write};
    let fleet = Fleet::new(12);
    let lb = free_port();
    let listen = format!("listen = \"tcp://127.0.0.1:{lb}\"");
    // The instance's PORT is its TCP echo server; its HTTP side takes any free port.
    fleet.write_app(&AppDef {
        instances: 2,
        args: &["--tcp-echo-port", "${PORT}", "--port", "0"],
        extra: &listen,
        health: "tcp = true",
        ..Default::default()
    });
    fleet.up();
    fleet.wait_ready("fx", 2, START);
    let echo = |line: &str| -> Result<String, String> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", lb)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        writeln!(s, "{line}").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        BufReader::new(s)
            .read_line(&mut reply)
            .map_err(|e| e.to_string())?;
        Ok(reply.trim_end().to_string())
    };
    wait_until("the balancer to carry tcp", START, || {
        echo("ping").ok().filter(|r| r == "echo: ping")
    });
    let victim = fleet.instances("fx")[0]["pid"].as_u64().expect("pid") as u32;
    kill9(victim);
    // Once the daemon has seen the exit (milliseconds), the dead instance is out of the
    // balancer: every new connection goes to the live one while it is replaced. (A connection
    // made in the instant between the kill and the kernel closing the JVM's socket can be
    // accepted and then dropped: tcp mode cannot replay bytes. Connect failures are retried on
    // another backend; see the proxy crate's tests.)
    wait_until("the exit to be seen", START, || {
        fleet
            .events_of("instance.exited", "fx", None)
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains(&format!("pid {victim} ")))
            })
            .then_some(())
    });
    for n in 0..40 {
        assert_eq!(
            echo(&format!("line {n}")),
            Ok(format!("echo: line {n}")),
            "connection {n}"
        );
    }
}

#[test]
fn a_failed_deploy_under_load_rolls_back_without_a_failed_request() {
    let fleet_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&fleet_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, lb) = fleet_behind_lb(3, Some(&v1), "round-robin");
    let bad = fixture_variant(
        &fleet.path("bad.jar"),
        &[("version", "v2"), ("crash-after", "1200ms")],
    );
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    let out = fleet.run(&["deploy", "fx", &bad.display().to_string(), "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    load.wait_more(100);
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the rollback: {errors:?}",
        ok + failed
    );
    assert_all_from(lb, "v1", 30, "the old release serves after the rollback");
}

#[test]
fn after_a_daemon_crash_mid_deploy_requests_flow_again_and_the_deploy_ends() {
    let fleet_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&fleet_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, lb) = fleet_behind_lb(3, Some(&v1), "round-robin");
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    fleet.ok(&["deploy", "fx", &v2.display().to_string()]);
    wait_until("the first new instance", START, || {
        (fleet.events_of("instance.spawned", "fx", None).len() >= 4).then_some(())
    });
    crash_and_restart_daemon(&fleet, lb);
    let load = Load::start(lb, "/version");
    wait_until("the deployment to end", START, || {
        let h: serde_json::Value =
            serde_json::from_str(&fleet.ok(&["history", "fx", "-o", "json"])).ok()?;
        let outcome = h["deployments"][0]["outcome"].as_str()?.to_string();
        (outcome == "succeeded" || outcome == "rolled-back").then_some(())
    });
    load.wait_more(50);
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed once the daemon was back: {errors:?}",
        ok + failed
    );
}

/// Kinds of the events after the last one of `kind`.
fn events_since(fleet: &Fleet, kind: &str) -> Vec<serde_json::Value> {
    let events = fleet.events();
    let last = events
        .iter()
        .rposition(|e| e["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} event"));
    events[last..].to_vec()
}

#[test]
fn a_blue_green_deploy_switches_once_keeps_the_old_set_warm_and_switches_back_instantly() {
    let fleet_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&fleet_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, lb) = fleet_behind_lb(3, Some(&v1), "round-robin");
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace(
        "[apps.fx.deploy]\n",
        "[apps.fx.deploy]\nstrategy = \"blue-green\"\nkeep_old = \"5m\"\n",
    ));
    fleet.ok(&["apply"]);
    let old_pids = fleet.pids("fx");
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);

    let load = Load::start(lb, "/version");
    load.wait_more(100);
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    load.wait_more(100);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} failed: {errors:?}", ok + failed);
    assert_all_from(
        lb,
        "v2",
        30,
        "every response comes from the release in force",
    );
    // The whole new set was ready before the switch; the old set still runs, out of traffic.
    let after = events_since(&fleet, "deploy.started");
    assert!(
        after.iter().all(|e| e["kind"] != "instance.stopping"),
        "{after:#?}"
    );
    let ready_new = after
        .iter()
        .filter(|e| e["kind"] == "instance.ready")
        .count();
    assert_eq!(ready_new, 3, "{after:#?}");
    let pids = fleet.pids("fx");
    assert!(
        old_pids.iter().all(|p| pids.contains(p)),
        "the old set is kept warm"
    );

    // Switching back is instant: no JVM starts, nothing lost.
    let load = Load::start(lb, "/version");
    load.wait_more(100);
    fleet.ok(&["rollback", "fx", "--wait"]);
    load.wait_more(100);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{failed} of {} failed: {errors:?}", ok + failed);
    let back = events_since(&fleet, "deploy.started");
    assert!(
        back.iter().all(|e| e["kind"] != "instance.spawned"),
        "no JVM start to switch back: {back:#?}"
    );
    assert_all_from(
        lb,
        "v1",
        30,
        "every response comes from the release in force",
    );
}

#[test]
fn a_warm_blue_green_set_stops_when_keep_old_is_over() {
    let fleet_dir = tempfile::tempdir().expect("temp");
    let v1 = fixture_variant(&fleet_dir.path().join("v1.jar"), &[("version", "v1")]);
    let (fleet, _lb) = fleet_behind_lb(2, Some(&v1), "round-robin");
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    fleet.write_spec(&spec.replace(
        "[apps.fx.deploy]\n",
        "[apps.fx.deploy]\nstrategy = \"blue-green\"\nkeep_old = \"1s\"\n",
    ));
    fleet.ok(&["apply"]);
    let old_pids = fleet.pids("fx");
    let v2 = fixture_variant(&fleet.path("v2.jar"), &[("version", "v2")]);
    fleet.ok(&["deploy", "fx", &v2.display().to_string(), "--wait"]);
    wait_until("the warm set is stopped", START, || {
        let pids = fleet.pids("fx");
        (pids.len() == 2 && old_pids.iter().all(|p| !pids.contains(p))).then_some(())
    });
    for pid in old_pids {
        wait_until("old JVM gone", START, || {
            (!pid_alive(pid as u32)).then_some(())
        });
    }
    assert_eq!(
        fleet.events_of("instance.standby-ended", "fx", None).len(),
        2
    );
}

/// Each `fx` instance's pid and restart count.
fn pids_and_restarts(fleet: &Fleet) -> Vec<(u64, u64)> {
    fleet
        .instances("fx")
        .iter()
        .map(|i| {
            (
                i["pid"].as_u64().expect("pid"),
                i["restarts"].as_u64().expect("restarts"),
            )
        })
        .collect()
}

#[test]
fn balancer_settings_change_live_on_apply_without_a_restart() {
    let (fleet, lb) = fleet_behind_lb(2, None, "round-robin");
    let before = pids_and_restarts(&fleet);
    let load = Load::start(lb, "/version");
    load.wait_more(20);
    let spec = std::fs::read_to_string(fleet.spec_path()).expect("spec");
    let tuned = spec.replace(
        "balance = \"round-robin\"\n",
        "balance = \"least-request\"\nhead_timeout = \"5s\"\nkeepalive_timeout = \"30s\"\nconnect_timeout = \"500ms\"\nresponse_timeout = \"2m\"\nmax_connections = 500\nmax_idle_per_backend = 16\nrequest_buffer = \"16KiB\"\neject_for = \"2s\"\neject_after = 2\nstall_timeout = \"0s\"\n",
    );
    assert_ne!(tuned, spec, "the balancer table is in the spec");
    fleet.write_spec(&tuned);
    let plan = fleet.ok(&["apply", "-o", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&plan).expect("apply -o json");
    assert_eq!(
        plan["plan"]["changes"],
        serde_json::json!([{"change": "update", "app": "fx", "fields": ["balancer"]}]),
        "{plan}"
    );
    load.wait_more(20);
    let (ok, failed, errors) = load.finish();
    assert_eq!(failed, 0, "{ok} ok, {failed} failed: {errors:?}");
    let after = pids_and_restarts(&fleet);
    assert_eq!(after, before, "a balancer setting restarted an instance");
    let updated = fleet.events_of("app.updated", "fx", None);
    assert!(
        updated
            .last()
            .and_then(|e| e["message"].as_str())
            .is_some_and(|m| m.contains("updated live: balancer")),
        "{updated:?}"
    );
    // A value out of range changes nothing: refused with the spec's error, where it is.
    fleet.write_spec(&tuned.replace("eject_after = 2", "eject_after = 0"));
    let out = fleet.run(&["apply"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("apps.fx.balancer.eject_after = 0: must be between 1 and 1000"),
        "{stderr}"
    );
}
