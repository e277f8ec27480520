//! Bundles, signatures and transactional installs: `pack`, `keygen`, `sign`, `verify`,
//! `install`, self-contained installers, with real JVMs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::fixture::fixture_variant;
use crate::harness::{
    Fleet, JVM_OPTS, environ, http_get, kill9, pid_alive, run_with_deadline, wait_until,
};

/// Every file under `dir` (relative paths, sorted): "nothing written" is checked with it.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            if p.is_dir() && !p.is_symlink() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The default app spec packed into the bundles: the fixture on the fleet's ports.
fn app_spec(fleet: &Fleet) -> PathBuf {
    let path = fleet.path("app-spec.toml");
    fs::write(
        &path,
        format!(
            "instances = 2\nports = \"{}-{}\"\njava = {{ opts = {JVM_OPTS}, fast_start = false }}\n\n[health]\nhttp = \"/health\"\n\n[deploy]\nmin_healthy = \"0s\"\n",
            fleet.ports.0, fleet.ports.1
        ),
    )
    .expect("app spec");
    path
}

fn write_hook(dir: &Path, name: &str, body: &str) {
    fs::create_dir_all(dir).expect("hooks dir");
    let p = dir.join(name);
    fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("hook");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// Packs the fixture as app `fx`, version `version`; returns the bundle path.
fn pack(fleet: &Fleet, version: &str, extra: &[&str]) -> PathBuf {
    let jar = fixture_variant(
        &fleet.path(&format!("fx-{version}.jar")),
        &[("version", version)],
    );
    let spec = app_spec(fleet);
    let out = fleet.path(&format!("out-{version}"));
    let mut args = vec![
        "pack",
        jar.to_str().expect("utf-8"),
        "--name",
        "fx",
        "--version",
        version,
        "--app-spec",
        spec.to_str().expect("utf-8"),
        "-o",
        out.to_str().expect("utf-8"),
    ];
    args.extend_from_slice(extra);
    fleet.ok(&args);
    out.join(format!("fx-{version}.jfb"))
}

fn keygen(fleet: &Fleet, name: &str) -> (PathBuf, PathBuf) {
    let base = fleet.path(name);
    fleet.ok(&[
        "keygen",
        "--no-password",
        "-o",
        base.to_str().expect("utf-8"),
    ]);
    (base.with_extension("key"), base.with_extension("pub"))
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The instance's answer to /version through its own port.
fn versions(fleet: &Fleet) -> Vec<String> {
    fleet
        .instances("fx")
        .iter()
        .filter_map(|i| i["port"].as_u64())
        .map(|p| {
            http_get(p as u16, "/version")
                .map(|(_, b)| b)
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn pack_sign_verify_install_up_and_every_bad_bundle_is_refused_before_a_byte_is_written() {
    let fleet = Fleet::new(4);
    let bundle = pack(&fleet, "1.0.0", &[]);
    let (key, public) = keygen(&fleet, "release");
    fleet.ok(&["sign", s(&bundle), "--key", s(&key)]);
    let out = fleet.ok(&["verify", s(&bundle), "--key", s(&public)]);
    assert!(out.contains("good signature"), "{out}");

    // Refused, each before anything is written: one byte changed, an untrusted signer, no
    // signature at all.
    let prefix = fleet.path("srv");
    let bad_dir = fleet.path("bad");
    fs::create_dir_all(&bad_dir).expect("mkdir");
    let tampered = bad_dir.join("fx-1.0.0.jfb");
    let mut bytes = fs::read(&bundle).expect("bundle");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    fs::write(&tampered, &bytes).expect("write");
    fs::copy(
        bundle.with_extension("jfb.minisig"),
        bad_dir.join("fx-1.0.0.jfb.minisig"),
    )
    .expect("copy sig");
    let out = fleet.run(&[
        "install",
        s(&tampered),
        "--prefix",
        s(&prefix),
        "--trust",
        s(&public),
    ]);
    assert!(!out.status.success());
    assert!(stderr_of(&out).contains("refused"), "{}", stderr_of(&out));
    assert!(
        tree(&prefix).iter().all(|p| p.starts_with("state")),
        "{:?}",
        tree(&prefix)
    );

    let (other_key, _) = keygen(&fleet, "intruder");
    let foreign_dir = fleet.path("foreign");
    fs::create_dir_all(&foreign_dir).expect("mkdir");
    let foreign = foreign_dir.join("fx-1.0.0.jfb");
    fs::copy(&bundle, &foreign).expect("copy");
    fleet.ok(&["sign", s(&foreign), "--key", s(&other_key)]);
    let out = fleet.run(&[
        "install",
        s(&foreign),
        "--prefix",
        s(&prefix),
        "--trust",
        s(&public),
    ]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("refused") && err.contains("fx-1.0.0.jfb"),
        "{err}"
    );

    let unsigned_dir = fleet.path("unsigned");
    fs::create_dir_all(&unsigned_dir).expect("mkdir");
    let unsigned = unsigned_dir.join("fx-1.0.0.jfb");
    fs::copy(&bundle, &unsigned).expect("copy");
    let out = fleet.run(&[
        "install",
        s(&unsigned),
        "--prefix",
        s(&prefix),
        "--trust",
        s(&public),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("not signed"),
        "{}",
        stderr_of(&out)
    );
    let journal = prefix.join("state/journal");
    assert!(
        tree(&prefix)
            .iter()
            .all(|p| p == "state" || p == "state/journal"),
        "only the (empty) journal dir may exist: {:?}",
        tree(&prefix)
    );
    assert!(tree(&journal).is_empty());

    // The good one installs and starts.
    let out = fleet.ok(&[
        "install",
        s(&bundle),
        "--prefix",
        s(&prefix),
        "--trust",
        s(&public),
    ]);
    assert!(out.contains("installed"), "{out}");
    let installed = Fleet::adopt(&fleet, prefix.join("state"));
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    assert_eq!(versions(&installed), vec!["1.0.0", "1.0.0"]);
    let spec = fs::read_to_string(prefix.join("jarfleet.toml")).expect("spec");
    assert!(spec.contains("releases/fx/1.0.0-"), "{spec}");
    assert!(tree(&journal).is_empty(), "{:?}", tree(&journal));
}

#[test]
fn a_dry_run_refuses_what_the_install_refuses_a_bundle_named_unlike_an_app() {
    let fleet = Fleet::new(2);
    let jar = fixture_variant(&fleet.path("fx.jar"), &[("version", "1")]);
    let spec = app_spec(&fleet);
    let out_dir = fleet.path("out");
    // A valid bundle name, but not an app name (upper case, a dot).
    fleet.ok(&[
        "pack",
        s(&jar),
        "--name",
        "Orders.App",
        "--version",
        "1.0.0",
        "--app-spec",
        s(&spec),
        "-o",
        s(&out_dir),
    ]);
    let bundle = out_dir.join("Orders.App-1.0.0.jfb");
    let prefix = fleet.path("srv");
    for dry_run in [true, false] {
        let mut args = vec!["install", s(&bundle), "--prefix", s(&prefix)];
        if dry_run {
            args.push("--dry-run");
        }
        let out = fleet.run(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("Orders.App") && err.contains("app name") && err.contains("hint:"),
            "{args:?}: {err}"
        );
        assert!(
            tree(&prefix)
                .iter()
                .all(|p| p == "state" || p.starts_with("state/")),
            "{args:?}: nothing but the state dir's journal check: {:?}",
            tree(&prefix)
        );
        assert!(!prefix.join("jarfleet.toml").exists(), "{args:?}");
        assert!(!prefix.join("releases").exists(), "{args:?}");
    }

    // A bundle whose app spec cannot load is refused by the dry run too, as by the install.
    fs::write(&spec, "instances = 0\nports = \"9100\"\n").expect("a bad app spec");
    fleet.ok(&[
        "pack",
        s(&jar),
        "--name",
        "fx",
        "--version",
        "2.0.0",
        "--app-spec",
        s(&spec),
        "-o",
        s(&out_dir),
    ]);
    let bundle = out_dir.join("fx-2.0.0.jfb");
    let out = fleet.run(&["install", s(&bundle), "--prefix", s(&prefix), "--dry-run"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("apps.fx.instances = 0"), "{err}");
    assert!(!prefix.join("jarfleet.toml").exists());
}

#[test]
fn a_failing_hook_or_a_killed_installer_leaves_the_previous_release_serving() {
    let fleet = Fleet::new(4);
    let prefix = fleet.path("srv");
    let v1 = pack(&fleet, "1.0.0", &[]);
    fleet.ok(&["install", s(&v1), "--prefix", s(&prefix)]);
    let installed = Fleet::adopt(&fleet, prefix.join("state"));
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    let spec_before = fs::read(prefix.join("jarfleet.toml")).expect("spec");
    let pids_before = installed.pids("fx");

    // v2's pre_install hook fails.
    let hooks = fleet.path("hooks-fail");
    write_hook(
        &hooks,
        "pre_install",
        "echo 'migration failed: table locked' >&2\nexit 3",
    );
    let v2 = pack(&fleet, "2.0.0", &["--hooks", s(&hooks)]);
    let out = fleet.run(&["install", s(&v2), "--prefix", s(&prefix)]);
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("pre_install") && err.contains("table locked") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(
        fs::read(prefix.join("jarfleet.toml")).expect("spec"),
        spec_before
    );
    assert!(
        !tree(&prefix.join("releases/fx"))
            .iter()
            .any(|p| p.starts_with("2.0.0") || p.starts_with(".staging"))
    );
    assert_eq!(installed.pids("fx"), pids_before);
    assert_eq!(versions(&installed), vec!["1.0.0", "1.0.0"]);

    // v3's hook blocks; the installer is killed with SIGKILL in the middle of it.
    let hooks = fleet.path("hooks-block");
    let started = fleet.path("hook-started");
    write_hook(
        &hooks,
        "pre_install",
        &format!(
            "touch {}\ni=0\nwhile [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
            started.display()
        ),
    );
    let v3 = pack(&fleet, "3.0.0", &["--hooks", s(&hooks)]);
    let mut child = fleet
        .command(&["install", s(&v3), "--prefix", s(&prefix)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("install");
    wait_until("the blocking hook runs", Duration::from_secs(60), || {
        started.exists().then_some(())
    });
    let staging: Vec<String> = tree(&prefix.join("releases/fx"))
        .into_iter()
        .filter(|p| p.starts_with(".staging"))
        .collect();
    assert!(!staging.is_empty(), "extraction happened before the hook");
    kill9(child.id());
    let _ = child.wait();
    let hook_pids =
        crate::harness::processes_mentioning(&prefix.join("releases/fx").join(&staging[0]));
    assert!(!hook_pids.is_empty(), "the hook outlived its installer");

    // The next jarfleet run (here a dry run) rolls the transaction back: staging gone, hook
    // killed, spec untouched, v1 still serving.
    let out = fleet.run(&["install", s(&v1), "--prefix", s(&prefix), "--dry-run"]);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("rolled back the interrupted install"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        !tree(&prefix.join("releases/fx"))
            .iter()
            .any(|p| p.starts_with(".staging") || p.starts_with("3.0.0"))
    );
    assert!(tree(&prefix.join("state/journal")).is_empty());
    for pid in hook_pids {
        wait_until("the orphaned hook is gone", Duration::from_secs(10), || {
            (!pid_alive(pid)).then_some(())
        });
    }
    assert_eq!(
        fs::read(prefix.join("jarfleet.toml")).expect("spec"),
        spec_before
    );
    assert_eq!(installed.pids("fx"), pids_before);

    // A good upgrade rolls out through the daemon.
    let v4 = pack(&fleet, "4.0.0", &[]);
    fleet.ok(&["install", s(&v4), "--prefix", s(&prefix)]);
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    assert_eq!(versions(&installed), vec!["4.0.0", "4.0.0"]);
}

#[test]
fn a_self_contained_installer_installs_its_binary_and_runs_on_its_bundled_jre() {
    let fleet = Fleet::new(4);
    let jre = fleet.path("jre");
    let jlink = crate::fixture::jdk_tool("jlink");
    let out = run_with_deadline(
        std::process::Command::new(&jlink)
            .args([
                "--add-modules",
                "java.base,jdk.httpserver",
                "--no-header-files",
                "--no-man-pages",
            ])
            .arg("--output")
            .arg(&jre),
        Duration::from_secs(300),
    )
    .expect("running jlink (apt-get install -y openjdk-17-jdk-headless)");
    assert!(out.status.success(), "jlink failed: {}", stderr_of(&out));
    let bundle = pack(&fleet, "1.0.0", &["--jre", s(&jre), "--installer"]);
    let installer = bundle.with_file_name("fx-1.0.0-installer");
    assert!(installer.is_file());
    let prefix = fleet.path("srv");
    // No java on PATH, no JAVA_HOME: only the bundled JRE can run the app.
    let out = run_with_deadline(
        std::process::Command::new(&installer)
            .args(["install", "--prefix", s(&prefix)])
            .env("PATH", "/usr/bin/nonexistent")
            .env_remove("JAVA_HOME")
            .env("NO_COLOR", "1"),
        Duration::from_secs(180),
    )
    .expect("run the installer");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr_of(&out)
    );
    let bin = prefix.join("bin/jarfleet");
    assert!(bin.is_file());
    assert!(
        fs::metadata(&bin).expect("bin").len() < fs::metadata(&installer).expect("installer").len()
    );
    let installed = Fleet::adopt(&fleet, prefix.join("state"));
    let ready = installed.wait_ready("fx", 2, Duration::from_secs(60));
    for i in ready {
        let pid = i["pid"].as_u64().expect("pid");
        let exe = fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        assert!(
            exe.starts_with(prefix.join("releases/fx")),
            "{} is not the bundled JRE",
            exe.display()
        );
    }
    drop(installed);

    // `up --prefix`: install, then run the fleet (here detached, waiting until it is ready).
    let prefix2 = fleet.path("srv2");
    let out = run_with_deadline(
        std::process::Command::new(&installer)
            .args(["up", "--prefix", s(&prefix2), "-d", "--wait"])
            .env("PATH", "/usr/bin/nonexistent")
            .env_remove("JAVA_HOME")
            .env_remove("JARFLEET_STATE")
            .env("NO_COLOR", "1"),
        Duration::from_secs(180),
    )
    .expect("run the installer's up");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let second = Fleet::adopt(&fleet, prefix2.join("state"));
    second.wait_ready("fx", 2, Duration::from_secs(60));
}

/// Kills the installer (SIGKILL, through the debug-build fault point) right before each journal
/// step acts, and fails a step with ENOSPC: each time the old release keeps serving, nothing of
/// the new one stays behind, and running the same install again succeeds.
#[test]
fn a_fault_at_every_journal_step_leaves_the_old_release_and_a_rerun_succeeds() {
    let fleet = Fleet::new(4);
    let prefix = fleet.path("srv");
    let v1 = pack(&fleet, "1.0.0", &[]);
    fleet.ok(&["install", s(&v1), "--prefix", s(&prefix)]);
    let installed = Fleet::adopt(&fleet, prefix.join("state"));
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    let hooks = fleet.path("hooks-ok");
    write_hook(&hooks, "pre_install", "exit 0");
    write_hook(&hooks, "post_install", "exit 0");

    let mut serving = "1.0.0".to_string();
    let faults = [
        "extract",
        "pre_install",
        "activate",
        "spec",
        "post_install",
        "start",
        "extract:enospc",
        "spec:enospc",
    ];
    for (i, fault) in faults.iter().enumerate() {
        let version = format!("2.{i}.0");
        let bundle = pack(&fleet, &version, &["--hooks", s(&hooks)]);
        let spec_before = fs::read(prefix.join("jarfleet.toml")).expect("spec");
        let out = run_with_deadline(
            fleet
                .command(&["install", s(&bundle), "--prefix", s(&prefix)])
                .env("JARFLEET_FAULT_AT", fault),
            Duration::from_secs(180),
        )
        .expect("install");
        assert!(
            !out.status.success(),
            "{fault}: the install must not succeed"
        );
        if fault.ends_with(":enospc") {
            let err = stderr_of(&out);
            assert!(
                err.contains("No space left") && err.contains("rolled back"),
                "{fault}: {err}"
            );
        }
        // The next run rolls an interrupted transaction back before anything else (a dry run
        // changes nothing else).
        fleet.ok(&["install", s(&bundle), "--prefix", s(&prefix), "--dry-run"]);
        assert_eq!(
            fs::read(prefix.join("jarfleet.toml")).expect("spec"),
            spec_before,
            "{fault}: the spec is as before"
        );
        let leftovers: Vec<String> = tree(&prefix.join("releases/fx"))
            .into_iter()
            .filter(|p| p.starts_with(&version) || p.starts_with(".staging"))
            .collect();
        assert!(leftovers.is_empty(), "{fault}: {leftovers:?}");
        assert!(tree(&prefix.join("state/journal")).is_empty(), "{fault}");
        assert_eq!(
            versions(&installed),
            vec![serving.clone(), serving.clone()],
            "{fault}"
        );

        fleet.ok(&["install", s(&bundle), "--prefix", s(&prefix)]);
        installed.wait_ready("fx", 2, Duration::from_secs(60));
        assert_eq!(
            versions(&installed),
            vec![version.clone(), version.clone()],
            "{fault}"
        );
        serving = version;
    }
}

/// Each instance's rendered `app.properties`, found through its `JARFLEET_CONFIG_DIR`.
fn instance_configs(fleet: &Fleet) -> Vec<(u64, String)> {
    fleet
        .instances("fx")
        .iter()
        .map(|i| {
            let pid = i["pid"].as_u64().expect("pid");
            let dir = environ(pid)
                .into_iter()
                .find(|(k, _)| k == "JARFLEET_CONFIG_DIR")
                .map(|(_, v)| v)
                .unwrap_or_else(|| panic!("JVM {pid} has no JARFLEET_CONFIG_DIR"));
            let text = fs::read_to_string(Path::new(&dir).join("app.properties")).expect("config");
            (i["port"].as_u64().expect("port"), text)
        })
        .collect()
}

#[test]
fn config_templates_are_rendered_per_release_and_instance_and_roll_back_with_the_code() {
    let fleet = Fleet::new(4);
    let config = fleet.path("config");
    fs::create_dir_all(&config).expect("config dir");
    fs::write(
        config.join("app.properties"),
        "port=${PORT}\ngreeting=${GREETING:hello}\napp=${JARFLEET_APP}\n",
    )
    .expect("template");
    fs::write(
        config.join("db.properties"),
        "# the database\nurl=${DB_URL:?set DB_URL to the orders database}\n",
    )
    .expect("template");
    let prefix = fleet.path("srv");
    let v1 = pack(&fleet, "1.0.0", &["--config", s(&config)]);

    // A required value missing: an install-time error naming file, line and message.
    let out = run_with_deadline(
        fleet
            .command(&["install", s(&v1), "--prefix", s(&prefix)])
            .env_remove("DB_URL"),
        Duration::from_secs(180),
    )
    .expect("install");
    assert!(!out.status.success());
    let err = stderr_of(&out);
    assert!(
        err.contains("db.properties")
            && err.contains(":2:")
            && err.contains("set DB_URL to the orders database"),
        "{err}"
    );
    assert!(
        !tree(&prefix.join("releases/fx"))
            .iter()
            .any(|p| p.starts_with("1.0.0"))
    );

    let install = |bundle: &Path, greeting: &str| {
        let out = run_with_deadline(
            fleet
                .command(&["install", s(bundle), "--prefix", s(&prefix)])
                .env("DB_URL", "jdbc:postgresql://db/orders")
                .env("GREETING", greeting),
            Duration::from_secs(180),
        )
        .expect("install");
        assert!(out.status.success(), "{}", stderr_of(&out));
    };
    install(&v1, "hi");
    let installed = Fleet::adopt(&fleet, prefix.join("state"));
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    for (port, text) in instance_configs(&installed) {
        assert_eq!(text, format!("port={port}\ngreeting=hi\napp=fx\n"));
    }

    let v2 = pack(&fleet, "2.0.0", &["--config", s(&config)]);
    install(&v2, "hey");
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    assert_eq!(versions(&installed), vec!["2.0.0", "2.0.0"]);
    for (port, text) in instance_configs(&installed) {
        assert_eq!(text, format!("port={port}\ngreeting=hey\napp=fx\n"));
    }

    // Rolling back the code brings its config back too.
    installed.ok(&["rollback", "fx", "--wait"]);
    installed.wait_ready("fx", 2, Duration::from_secs(60));
    assert_eq!(versions(&installed), vec!["1.0.0", "1.0.0"]);
    for (port, text) in instance_configs(&installed) {
        assert_eq!(text, format!("port={port}\ngreeting=hi\napp=fx\n"));
    }
}
