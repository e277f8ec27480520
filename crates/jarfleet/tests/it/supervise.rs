//! Supervision: readiness, restarts, backoff, stop sequence, health.

use std::time::Duration;

use crate::harness::*;

const START: Duration = Duration::from_secs(60);

#[test]
fn three_instances_become_ready_and_status_reports_them() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 3,
        args: &["--version", "v1"],
        ..Default::default()
    });
    fleet.up();
    let ready = fleet.wait_ready("fx", 3, START);
    let mut ports = Vec::new();
    for i in &ready {
        assert_eq!(i["app"], "fx");
        assert_eq!(i["state"], "ready");
        let pid = i["pid"].as_u64().expect("pid") as u32;
        let port = i["port"].as_u64().expect("port") as u16;
        assert!(pid_alive(pid), "pid {pid} of {i} is not alive");
        assert!(i["release"].as_str().is_some_and(|r| !r.is_empty()));
        // The pid is the JVM's: it answers its own pid on /pid.
        let (code, body) = http_get(port, "/pid").expect("GET /pid");
        assert_eq!((code, body.trim()), (200, pid.to_string().as_str()));
        ports.push(port);
    }
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3, "each instance has its own port: {ports:?}");
    // The environment jarfleet injects.
    let port = ports[0];
    let (_, env) = http_get(port, "/env").expect("GET /env");
    assert!(env.contains(&format!("PORT={port}\n")), "{env}");
    assert!(env.contains("JARFLEET_APP=fx\n"), "{env}");
    assert!(
        env.lines().any(|l| l.starts_with("JARFLEET_INSTANCE=fx/")),
        "{env}"
    );
    assert!(
        env.lines().any(|l| l.starts_with("JARFLEET_RELEASE=")),
        "{env}"
    );
    // The table form shows the same instances.
    let table = fleet.ok(&["status"]);
    assert!(
        table.contains("fx/0") && table.contains("fx/2") && table.contains("ready"),
        "{table}"
    );
}

#[test]
fn killed_instance_is_restarted_at_once_and_the_exit_is_classified() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    fleet.wait_ready("fx", 2, START);
    let before = fleet.instance("fx", 0);
    let old_pid = before["pid"].as_u64().expect("pid") as u32;
    kill9(old_pid);
    let after = wait_until("fx/0 restarted with a new pid", START, || {
        let i = fleet.instance("fx", 0);
        (i["ready"] == true && i["pid"].as_u64() != Some(old_pid as u64)).then_some(i)
    });
    assert_eq!(after["restarts"], 1);
    assert!(!pid_alive(old_pid));
    let exits = fleet.events_of("instance.exited", "fx", Some(0));
    assert!(
        exits.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("pid {old_pid} killed by signal 9")))),
        "exit classified as a signal: {exits:?}"
    );
    let scheduled = fleet.events_of("instance.restart-scheduled", "fx", Some(0));
    assert!(
        scheduled
            .iter()
            .any(|e| e["message"] == "restart #1 in 0 ms"),
        "first restart is immediate: {scheduled:?}"
    );
    // The other instance was not touched.
    assert_eq!(fleet.instance("fx", 1)["restarts"], 0);
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().unwrap_or(0) + fields[12].parse::<u64>().unwrap_or(0)
}

/// Parses "restart #N in D ms".
fn restart_delay_ms(e: &serde_json::Value) -> Option<u64> {
    e["message"]
        .as_str()?
        .split(" in ")
        .nth(1)?
        .strip_suffix(" ms")?
        .parse()
        .ok()
}

#[test]
fn crash_loop_backs_off_with_growing_delays() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        args: &["--crash-after", "100ms", "--crash-code", "7"],
        tables: "[apps.fx.restart]\nbackoff_initial = \"300ms\"\nbackoff_max = \"10s\"\n",
        ..Default::default()
    });
    fleet.ok(&["up", "-d"]);
    let daemon = fleet.daemon_pid().expect("daemon pid");
    let cpu_before = cpu_ticks(daemon);
    let delays = wait_until("five scheduled restarts", Duration::from_secs(90), || {
        let d: Vec<u64> = fleet
            .events_of("instance.restart-scheduled", "fx", Some(0))
            .iter()
            .filter_map(restart_delay_ms)
            .collect();
        (d.len() >= 5).then_some(d)
    });
    // No CPU storm: the daemon sleeps between restarts (2 s of CPU is a very generous bound
    // for five restarts; a polling or spinning loop burns far more).
    let cpu = cpu_ticks(daemon) - cpu_before;
    assert!(
        cpu < 200,
        "the daemon used {cpu} CPU ticks during the crash loop"
    );
    assert_eq!(delays[0], 0, "first restart immediate: {delays:?}");
    // 300 ms, 600 ms, 1200 ms … each within ±20 % jitter, so strictly growing.
    for w in delays.windows(2).skip(1) {
        assert!(w[1] > w[0], "delays must grow: {delays:?}");
    }
    assert!((240..=360).contains(&delays[1]), "{delays:?}");
    let exits = fleet.events_of("instance.exited", "fx", Some(0));
    assert!(
        exits.iter().all(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("exited with status 7"))),
        "{exits:?}"
    );
    let loops = fleet.events_of("instance.crash-loop", "fx", Some(0));
    assert_eq!(loops.len(), 1, "one crash-loop event: {loops:?}");
    let state = fleet.instance("fx", 0)["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        ["crash-loop", "starting"].contains(&state.as_str()),
        "shown as crash loop: {state}"
    );
}

#[test]
fn ignoring_sigterm_gets_sigkill_after_stop_timeout_and_its_child_dies_too() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        args: &["--ignore-sigterm", "--spawn-child"],
        tables: "[apps.fx.stop]\nstop_timeout = \"2s\"\n",
        ..Default::default()
    });
    fleet.up();
    let (pid, port, child) = jvm_and_its_child(&fleet);
    assert!(pid_alive(child));
    fleet.ok(&["stop", "fx"]);
    let stopped = wait_until("fx/0 stopped", Duration::from_secs(30), || {
        let i = fleet.instance("fx", 0);
        (i["state"] == "stopped").then_some(i)
    });
    assert_eq!(stopped["last_exit"], "killed (SIGKILL) after stop_timeout");
    assert!(!pid_alive(pid), "JVM {pid} still alive");
    assert!(!pid_alive(child), "child {child} of the JVM survived");
    assert!(port_free(port), "port {port} still taken");
    // A thread dump was taken before the SIGKILL (jcmd is in the JDK).
    let dumps = std::fs::read_dir(fleet.state.join("dumps/fx"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert!(dumps >= 1, "no thread dump in dumps/fx");
    // It stays down until started again.
    fleet.ok(&["start", "fx"]);
    fleet.wait_ready("fx", 1, START);
}

#[test]
fn slow_start_is_not_killed_before_start_timeout() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        args: &["--start-delay", "20s"],
        health: "http = \"/health\"\nstart_timeout = \"90s\"",
        ..Default::default()
    });
    fleet.ok(&["up", "-d"]);
    let i = wait_until(
        "the slow instance to become ready",
        Duration::from_secs(120),
        || {
            let i = fleet.instance("fx", 0);
            (i["ready"] == true).then_some(i)
        },
    );
    assert_eq!(i["restarts"], 0, "killed before start_timeout: {i}");
    let ready = fleet.events_of("instance.ready", "fx", Some(0));
    let ms: u64 = ready[0]["message"]
        .as_str()
        .and_then(|m| m.strip_prefix("ready after "))
        .and_then(|m| m.strip_suffix(" ms"))
        .and_then(|m| m.parse().ok())
        .expect("ready after N ms");
    assert!(
        ms >= 20_000,
        "ready only after its 20 s start delay, got {ms} ms"
    );
    assert!(
        fleet
            .events_of("instance.start-timeout", "fx", Some(0))
            .is_empty()
    );
}

#[test]
fn never_ready_instance_is_killed_at_start_timeout_and_retried() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        args: &["--ready-delay", "1h"],
        health: "http = \"/health\"\nstart_timeout = \"3s\"",
        tables: "[apps.fx.stop]\nstop_timeout = \"5s\"\n",
        ..Default::default()
    });
    fleet.ok(&["up", "-d"]);
    let first = wait_until("fx/0 spawned", START, || {
        fleet.instance("fx", 0)["pid"].as_u64()
    });
    let timeouts = wait_until("a start timeout", START, || {
        let t = fleet.events_of("instance.start-timeout", "fx", Some(0));
        (!t.is_empty()).then_some(t)
    });
    assert!(
        timeouts[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("start_timeout (3 s)"))
    );
    wait_until("fx/0 restarted after the timeout", START, || {
        let i = fleet.instance("fx", 0);
        (i["restarts"].as_u64() >= Some(1) && i["pid"].as_u64().is_some_and(|p| p != first))
            .then_some(())
    });
    assert!(!pid_alive(first as u32));
}

#[test]
fn failing_health_turns_unhealthy_then_restarts() {
    let fleet = Fleet::new(5);
    fleet.write_app(&AppDef {
        args: &["--health-fail-after", "3s"],
        health: "http = \"/health\"\ninterval = \"300ms\"\nfailures = 2\nunhealthy_restart_after = \"2s\"",
        ..Default::default()
    });
    fleet.up();
    let first = fleet.wait_ready("fx", 1, START)[0]["pid"]
        .as_u64()
        .expect("pid");
    let unhealthy = wait_until("fx/0 unhealthy", START, || {
        let e = fleet.events_of("instance.unhealthy", "fx", Some(0));
        (!e.is_empty()).then_some(e)
    });
    assert!(
        unhealthy[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "{unhealthy:?}"
    );
    wait_until("an unhealthy restart", START, || {
        (!fleet
            .events_of("instance.unhealthy-restart", "fx", Some(0))
            .is_empty())
        .then_some(())
    });
    wait_until("fx/0 ready again as a new process", START, || {
        let i = fleet.instance("fx", 0);
        (i["ready"] == true && i["pid"].as_u64() != Some(first)).then_some(())
    });
}

#[test]
fn scale_changes_only_the_instance_count() {
    let fleet = Fleet::new(10);
    fleet.write_app(&AppDef {
        instances: 2,
        ..Default::default()
    });
    fleet.up();
    let before: Vec<u64> = fleet
        .wait_ready("fx", 2, START)
        .iter()
        .filter_map(|i| i["pid"].as_u64())
        .collect();
    fleet.ok(&["scale", "fx", "4"]);
    let after = fleet.wait_ready("fx", 4, START);
    let pids: Vec<u64> = after.iter().filter_map(|i| i["pid"].as_u64()).collect();
    for p in &before {
        assert!(pids.contains(p), "scale up restarted {p}: {pids:?}");
    }
    fleet.ok(&["scale", "fx", "1"]);
    wait_until("scaled down to 1", START, || {
        (fleet.instances("fx").len() == 1).then_some(())
    });
    assert_eq!(
        fleet.instances("fx")[0]["pid"].as_u64(),
        Some(before[0]),
        "slot 0 kept"
    );
}

#[test]
fn apply_rolls_a_changed_app_and_leaves_the_others_alone() {
    let fleet = Fleet::new(10);
    let spec = |version: &str| {
        let a = fleet.app_toml(&AppDef {
            name: "a",
            instances: 2,
            args: &["--version", version],
            ..Default::default()
        });
        let b = fleet.app_toml(&AppDef {
            name: "b",
            instances: 1,
            ..Default::default()
        });
        format!("{a}\n{b}")
    };
    fleet.write_spec(&spec("v1"));
    fleet.up();
    let b_pid = fleet.wait_ready("b", 1, START)[0]["pid"].as_u64();
    fleet.wait_ready("a", 2, START);
    fleet.write_spec(&spec("v2"));
    let plan = fleet.ok(&["apply", "--dry-run"]);
    assert!(
        plan.contains("~ a: rolling restart") && plan.contains("args changed"),
        "{plan}"
    );
    assert!(plan.contains("b: unchanged"), "{plan}");
    fleet.ok(&["apply"]);
    wait_until("every instance of a serving v2", START, || {
        let a = fleet.instances("a");
        let all_v2 = a.len() == 2
            && a.iter().all(|i| {
                i["ready"] == true
                    && i["port"]
                        .as_u64()
                        .and_then(|p| http_get(p as u16, "/version").ok())
                        .is_some_and(|(_, v)| v.trim() == "v2")
            });
        all_v2.then_some(())
    });
    assert_eq!(
        fleet.instances("b")[0]["pid"].as_u64(),
        b_pid,
        "b was restarted"
    );
    // Applying the same spec again changes nothing.
    let again = fleet.ok(&["apply"]);
    assert!(
        again.contains("a: unchanged") && again.contains("b: unchanged"),
        "{again}"
    );
}

#[test]
fn the_example_hello_fleet_runs_as_the_readme_says() {
    let fleet = Fleet::new(1);
    let example = crate::fixture::workspace_root().join("examples/hello/jarfleet.toml");
    let text = std::fs::read_to_string(&example).expect("examples/hello/jarfleet.toml");
    fleet.write_spec(&text);
    std::fs::copy(crate::fixture::hello_jar(), fleet.path("hello.jar")).expect("copy hello.jar");
    fleet.ok(&["validate"]);
    fleet.up();
    let ready = fleet.wait_ready("hello", 3, START);
    for i in ready {
        let port = i["port"].as_u64().expect("port") as u16;
        let (code, body) = http_get(port, "/").expect("GET /");
        assert_eq!(code, 200);
        assert!(
            body.starts_with(&format!("hello from instance hello/{}", i["slot"])),
            "{body}"
        );
    }
    // ... and behind the one address of the example's load balancer.
    let seen: std::collections::BTreeSet<String> = wait_until("the balancer", START, || {
        let bodies: std::collections::BTreeSet<String> = (0..12)
            .filter_map(|_| http_get(18080, "/").ok())
            .filter(|(code, _)| *code == 200)
            .map(|(_, b)| b.split(" (pid").next().unwrap_or_default().to_string())
            .collect();
        (bodies.len() == 3).then_some(bodies)
    });
    assert!(
        seen.iter()
            .all(|b| b.starts_with("hello from instance hello/")),
        "{seen:?}"
    );
}

#[test]
fn tcp_and_exec_health_checks_gate_readiness() {
    let fleet = Fleet::new(10);
    let tcp = fleet.app_toml(&AppDef {
        name: "bytcp",
        health: "tcp = true",
        ..Default::default()
    });
    let exec = fleet.app_toml(&AppDef {
        name: "byexec",
        health: "exec = [\"bash\", \"-c\", \"exec 3<>/dev/tcp/127.0.0.1/${PORT}\"]",
        ..Default::default()
    });
    let never = fleet.app_toml(&AppDef {
        name: "never",
        health: "exec = [\"false\"]\nstart_timeout = \"2s\"",
        tables: "[apps.never.restart]\nbackoff_initial = \"30s\"\n",
        ..Default::default()
    });
    fleet.write_spec(&format!("{tcp}\n{exec}\n{never}"));
    fleet.ok(&["up", "-d"]);
    fleet.wait_ready("bytcp", 1, START);
    fleet.wait_ready("byexec", 1, START);
    let timeout = wait_until("the exec check to fail the start", START, || {
        fleet
            .events_of("instance.start-timeout", "never", Some(0))
            .into_iter()
            .next()
    });
    assert!(
        timeout["message"]
            .as_str()
            .is_some_and(|m| m.contains("start_timeout"))
    );
    assert_eq!(fleet.instance("never", 0)["ready"], false);
}

#[test]
fn instances_run_as_the_spec_user_when_the_daemon_is_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (CI and the dev machines run as root)"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .ok()
        .flatten()
        .expect("user nobody");
    let fleet = Fleet::new(5);
    // The JVM must be able to reach its state dir.
    std::fs::set_permissions(
        fleet.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    // ... and its jar, wherever the repository was cloned.
    let jar = fleet.path("fx.jar");
    std::fs::copy(crate::fixture::fixture_jar(), &jar).expect("copy the fixture jar");
    let spec = fleet
        .app_toml(&AppDef {
            extra: "user = \"nobody\"",
            ..Default::default()
        })
        .replace(
            &crate::fixture::fixture_jar().display().to_string(),
            &jar.display().to_string(),
        );
    fleet.write_spec(&spec);
    fleet.up();
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let pid = i["pid"].as_u64().expect("pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .expect("Uid line");
    let uids: Vec<u32> = uid_line
        .split_whitespace()
        .skip(1)
        .filter_map(|u| u.parse().ok())
        .collect();
    assert!(
        uids.iter().all(|u| *u == nobody.uid.as_raw()),
        "JVM runs as {uid_line}"
    );
    let port = i["port"].as_u64().expect("port") as u16;
    let (_, env) = http_get(port, "/env").expect("GET /env");
    assert!(env.contains("USER=nobody\n"), "{env}");
    // The JVM itself writes its GC log, as nobody.
    let gc = fleet.log_dir("fx", 0).join("jvm/gc.log");
    wait_until("the GC log", Duration::from_secs(10), || {
        gc.exists().then_some(())
    });
    // An unknown user is refused before anything starts.
    let other = Fleet::new(1);
    other.write_app(&AppDef {
        extra: "user = \"no-such-user-jf\"",
        ..Default::default()
    });
    let out = other.run(&["up", "-d"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("there is no user \"no-such-user-jf\""));
}

/// `/proc/PID/status` VmRSS in bytes.
fn vm_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// Sends SIGCONT to a process stopped by a test, whatever happens to the test.
struct Continue(u32);
impl Drop for Continue {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[test]
fn an_instances_rss_counts_the_processes_its_jvm_started() {
    let fleet = Fleet::new(1);
    fleet.write_app(&AppDef {
        args: &["--spawn-child"],
        ..Default::default()
    });
    fleet.up();
    let (pid, _port, child) = jvm_and_its_child(&fleet);

    // Stopped, the JVM's memory holds still (the child sleeps): the figures can be compared
    // exactly. Health checks fail meanwhile, far from a restart.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the JVM");
    let _cont = Continue(pid);
    wait_until("the JVM stopped", Duration::from_secs(10), || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .next()?
            .to_string();
        (state == "T").then_some(())
    });
    let (jvm, kid) = (vm_rss(pid), vm_rss(child));
    assert!(kid > 0, "the child has resident memory");
    let shown = fleet.instance("fx", 0)["rss_bytes"]
        .as_u64()
        .expect("status has rss_bytes");
    assert_eq!(
        shown,
        jvm + kid,
        "status RSS is the JVM's ({jvm}) and its child's ({kid})"
    );
}

/// The pid and port of `fx/0`'s JVM (started with `--spawn-child`) once it is ready, and the pid of the child
/// process it started (`GET /child`), which the fleet's clean-up will also kill.
fn jvm_and_its_child(fleet: &Fleet) -> (u32, u16, u32) {
    let i = fleet.wait_ready("fx", 1, START).remove(0);
    let pid = i["pid"].as_u64().expect("pid") as u32;
    let port = i["port"].as_u64().expect("port") as u16;
    let (_, child) = http_get(port, "/child").expect("GET /child");
    let child: u32 = child.trim().parse().expect("child pid");
    fleet.remember(child);
    (pid, port, child)
}
