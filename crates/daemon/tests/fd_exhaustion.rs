//! A process that is really out of file descriptors: the daemon's health checks, port checks
//! and shim starts must say "could not be done, for want of descriptors" — never blame the
//! instance or call a port "in use".
//!
//! The exhaustion happens in a child process (this test binary run again for this one test, with
//! a low soft limit and every descriptor taken), so no other test ever sees it, whatever the
//! test runner.

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::time::Duration;

use jarfleet_core::spec::{HealthCheck, PortRange};
use jarfleet_daemon::probe::{self, Outcome};
use jarfleet_host::ports::{self, PickError};
use jarfleet_shim::fdlimit::{self, Op, Shortage};

const CHILD: &str = "JARFLEET_TEST_FD_EXHAUSTED";
const LIMIT: u64 = 64;

#[test]
fn out_of_descriptors_blames_no_instance_and_takes_no_port() {
    if std::env::var_os(CHILD).is_some() {
        exhausted();
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let out = jarfleet_testkit::run_with_deadline(
        std::process::Command::new(exe)
            .args([
                "out_of_descriptors_blames_no_instance_and_takes_no_port",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1"),
        Duration::from_secs(120),
    )
    .expect("running the test again as a child");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the exhausted child failed:\n{text}");
    assert!(
        text.contains("checked with every descriptor taken"),
        "the child ran nothing:\n{text}"
    );
}

/// In the child: everything set up first, then every descriptor taken, then the checks.
fn exhausted() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, LIMIT, hard).expect("lowering the soft limit");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // An instance that answers: any check that can be run passes.
    let instance = TcpListener::bind("127.0.0.1:0").expect("instance listener");
    let port = instance.local_addr().expect("addr").port();
    let answering = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in instance.incoming() {
            let Ok(mut conn) = conn else {
                // Out of descriptors like the rest of the process: no spinning meanwhile.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        }
    });
    drop(answering);
    // A free port to check, from the checked allocator (the code under test binds it).
    let free = jarfleet_testkit::free_port();
    let run_dir = tempfile::tempdir().expect("temp dir");
    let (tx, _rx) = tokio::sync::mpsc::channel::<jarfleet_daemon::shim_client::ShimNote>(16);
    let checks = [
        HealthCheck::Tcp,
        HealthCheck::Http {
            path: "/health".into(),
        },
        HealthCheck::Exec {
            argv: vec!["true".into()],
        },
    ];
    let vars = BTreeMap::new();
    let timeout = Duration::from_secs(5);

    // Before: the checks pass (the instance is fine).
    for check in &checks {
        let outcome = rt.block_on(probe::check(check, port, timeout, &vars, None));
        assert_eq!(outcome, Outcome::Pass, "{check:?} before the exhaustion");
    }

    let mut held = Vec::new();
    let err = loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => held.push(f),
            Err(e) => break e,
        }
    };
    assert_eq!(err.raw_os_error(), Some(libc::EMFILE), "{err}");

    // Health checks: inconclusive, for want of descriptors — not a failure of the instance.
    for check in &checks {
        match rt.block_on(probe::check(check, port, timeout, &vars, None)) {
            Outcome::Inconclusive { shortage, error } => {
                assert_eq!(shortage, Shortage::Descriptors, "{check:?}: {error}");
            }
            other => panic!("{check:?} with every descriptor taken: {other:?}"),
        }
    }

    // Port checks: "could not check", never "in use".
    let unchecked =
        ports::is_free(free).expect_err("a port cannot be checked without a descriptor");
    assert_eq!(unchecked.shortage, Some(Shortage::Descriptors));
    let text = unchecked.to_string();
    assert!(
        text.contains(&format!("out of file descriptors (limit {LIMIT})")),
        "{text}"
    );
    let range = PortRange {
        first: free,
        last: free,
    };
    match ports::pick(range, None, &BTreeSet::new()) {
        Err(PickError::Unchecked(u)) => assert_eq!(u.port, free),
        other => panic!("pick with every descriptor taken: {other:?}"),
    }
    let exhausted = ports::describe_exhausted(range, &BTreeSet::new());
    assert!(
        !exhausted.contains("in use by other processes"),
        "{exhausted}"
    );
    assert!(exhausted.contains("out of file descriptors"), "{exhausted}");
    assert_eq!(
        ports::taken_by_others(range, &BTreeSet::new()).map_err(|u| u.shortage),
        Err(Some(Shortage::Descriptors))
    );

    // A shim start: fails, and the failure says it was the daemon's shortage.
    let launch = jarfleet_shim::protocol::Launch {
        argv: vec!["java".into()],
        env: vec![],
        cwd: run_dir.path().join("cwd"),
        stdout_log: run_dir.path().join("out.log"),
        stderr_log: run_dir.path().join("err.log"),
        log_max_size: 1 << 20,
        log_keep: 1,
        hs_err_dir: run_dir.path().join("hs"),
        jcmd: None,
        dump_dir: run_dir.path().join("dumps"),
        run_as: None,
    };
    let started = rt.block_on(async {
        jarfleet_daemon::shim_client::start(
            std::path::Path::new("/bin/false"),
            &run_dir.path().join("run"),
            &launch,
            "fx".into(),
            0,
            1,
            tx,
        )
    });
    let error = started.expect_err("a shim cannot be started without a descriptor");
    assert_eq!(
        fdlimit::Failure::chain(&error, Op::Spawn).shortage,
        Some(Shortage::Descriptors),
        "{error:#}"
    );

    // Descriptors back: the same checks are conclusive again.
    held.truncate(held.len().saturating_sub(16));
    for check in &checks {
        let outcome = rt.block_on(probe::check(check, port, timeout, &vars, None));
        assert_eq!(outcome, Outcome::Pass, "{check:?} after the exhaustion");
    }
    assert_eq!(ports::is_free(free).map_err(|u| u.to_string()), Ok(true));
    drop(held);
    println!("checked with every descriptor taken");
}
