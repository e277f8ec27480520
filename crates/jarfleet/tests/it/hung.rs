//! A JVM frozen with `SIGSTOP` behind the balancer, under load: the balancer finds it by
//! itself (a request waits, nothing comes, a stall probe goes unanswered), takes it out of
//! rotation long before the health check could, sends the GETs that were waiting on it to the
//! other instance, and answers a POST stuck on it with `504` at the response timeout. Nothing
//! is restarted, and once the JVM runs again it gets traffic again.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::balancer::{Load, START};
use crate::harness::*;

/// `POST /` on a new connection (the fixture answers it like a GET); the status code, or what
/// went wrong. The client waits far
/// longer than the balancer's response timeout: an answer must come from the balancer.
fn post(port: u16) -> Result<u16, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"POST / HTTP/1.1\r\nHost: fx\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP answer: {text:?}"))
}

/// The balancer's entry for the current process of `fx/slot`.
fn backend(fleet: &Fleet, slot: u64) -> Value {
    let status = fleet.status();
    status["apps"][0]["balancer"]["backends"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| {
            b["in_snapshot"] == true
                && b["labels"]["slot"].as_str().and_then(|s| s.parse().ok()) == Some(slot)
        })
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn a_frozen_jvm_leaves_the_balancer_without_a_failed_get_and_a_stuck_post_gets_504() {
    let fleet = Fleet::new(12);
    let lb = free_port();
    let listen = format!("listen = \"127.0.0.1:{lb}\"");
    fleet.write_spec(&fleet.app_toml(&AppDef {
        instances: 2,
        extra: &listen,
        // The health check alone would need 3 failed checks 5 s apart.
        health: "http = \"/health\"\ninterval = \"5s\"\nfailures = 3",
        tables: "[apps.fx.balancer]\nstall_timeout = \"500ms\"\nstall_probe_timeout = \"300ms\"\nresponse_timeout = \"4s\"\neject_for = \"2s\"\n",
        ..Default::default()
    }));
    fleet.up();
    let ready = fleet.wait_ready("fx", 2, START);
    let pids_before: Vec<u64> = ready.iter().filter_map(|i| i["pid"].as_u64()).collect();
    let load = Load::start(lb, "/");
    load.wait_more(50);

    let frozen = fleet.instance("fx", 0)["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(frozen),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    // Non-replayable requests, some of which land on the frozen JVM before it is found out.
    let posts: Vec<_> = (0..12)
        .map(|_| std::thread::spawn(move || post(lb)))
        .collect();

    let found = wait_until("the balancer to find the frozen JVM", START, || {
        let b = backend(&fleet, 0);
        (b["ejected"] == true && b["hung"] == true).then_some(b)
    });
    assert_eq!(found["ejected_reason"], "stalled", "{found}");
    assert!(found["stall_probes"].as_u64() >= Some(1), "{found}");
    load.wait_more(100);

    let answers: Vec<Result<u16, String>> = posts
        .into_iter()
        .map(|p| p.join().expect("a POST thread"))
        .collect();
    let timed_out = answers.iter().filter(|a| **a == Ok(504)).count() as u64;
    assert!(
        answers.iter().all(|a| matches!(a, Ok(200) | Ok(504))),
        "every POST gets the instance's answer (200) or a 504: {answers:?}"
    );
    assert!(
        timed_out >= 1,
        "no POST reached the frozen JVM: {answers:?}"
    );
    let stuck = backend(&fleet, 0);
    assert_eq!(stuck["timeouts"].as_u64(), Some(timed_out), "{stuck}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(frozen),
        nix::sys::signal::Signal::SIGCONT,
    )
    .expect("SIGCONT");
    wait_until("the JVM to be back in rotation", START, || {
        let b = backend(&fleet, 0);
        (b["ejected"] == false && b["hung"] == false).then_some(())
    });
    load.wait_more(100);
    let (ok, failed, errors) = load.finish();
    assert_eq!(
        failed,
        0,
        "{failed} of {} GETs failed: {errors:?}",
        ok + failed
    );
    let after: Vec<u64> = fleet
        .instances("fx")
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    assert_eq!(after, pids_before, "no instance was restarted");
    let restarts: u64 = fleet
        .instances("fx")
        .iter()
        .filter_map(|i| i["restarts"].as_u64())
        .sum();
    assert_eq!(restarts, 0);
}

#[test]
fn a_stopped_jvm_is_woken_to_shut_down_cleanly_when_it_is_stopped() {
    let fleet = Fleet::new(6);
    fleet.write_spec(&fleet.app_toml(&AppDef {
        instances: 1,
        // Far longer than the test waits: a stop that sat it out would be plain to see.
        tables: "[apps.fx.stop]\nstop_timeout = \"120s\"\n",
        ..Default::default()
    }));
    fleet.up();
    fleet.wait_ready("fx", 1, START);
    let pid = fleet.instance("fx", 0)["pid"].as_u64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP");
    fleet.ok(&["stop", "fx/0"]);
    let exited = wait_until("the stopped JVM to exit", Duration::from_secs(60), || {
        fleet
            .events_of("instance.exited", "fx", Some(0))
            .into_iter()
            .last()
    });
    let message = exited["message"].as_str().unwrap_or("");
    assert!(
        message.contains("stopped cleanly"),
        "the JVM was not woken to run its shutdown hooks: {exited}"
    );
    let log =
        std::fs::read_to_string(fleet.log_dir("fx", 0).join("stdout.log")).unwrap_or_default();
    assert!(log.contains("shutting down"), "{log}");
}
