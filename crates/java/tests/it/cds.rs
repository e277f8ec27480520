//! CDS archives and AOT caches trained on the fixture, used, and ignored when stale.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use jarfleet_java::boot::{self, Layout};
use jarfleet_java::cds::{
    self, ArchiveKind, Target, TrainReport, TrainSpec, check_archive, run_flags, validate,
};
use jarfleet_java::{JavaError, Jdk, TrainFailure};

use crate::fixture::{boot_jar, jdk17, jdk25};
use crate::http;
use crate::jvm::{self, Jvm, class_sources, loaded_from_archive};

fn extract(dir: &Path) -> Layout {
    boot::extract_layout(&boot_jar(), &dir.join("layout")).expect("extract the fixture")
}

fn classpath_args(layout: &Layout) -> Vec<OsString> {
    vec![
        "-cp".into(),
        std::env::join_paths(&layout.classpath).expect("join"),
        layout.main_class.clone().into(),
    ]
}

fn spec(jdk: &Jdk, target: Target, archive_out: PathBuf) -> TrainSpec {
    let port = http::free_port();
    TrainSpec {
        java: jdk.java.clone(),
        target,
        args: Vec::new(),
        env: vec![("PORT".to_string(), port.to_string())],
        jvm_flags: vec!["-Xss1m".to_string()],
        kind: ArchiveKind::for_jdk(jdk.feature().expect("feature")).expect("a CDS-capable JDK"),
        archive_out,
        ready: Box::new(move || http::ok(port, "/health")),
        start_timeout: jvm::START,
        stop_timeout: Duration::from_secs(60),
        workdir: None,
    }
}

fn layout_target(layout: &Layout) -> Target {
    Target::Classpath {
        classpath: layout.classpath.clone(),
        main_class: layout.main_class.clone(),
    }
}

/// Trains, checks the report and what is left next to the archive.
fn train_ok(spec: TrainSpec) -> TrainReport {
    let out = spec.archive_out.clone();
    let report = cds::train(spec).unwrap_or_else(|e| panic!("training failed: {e}"));
    assert_eq!(report.archive, out);
    assert!(report.size > 0);
    assert_eq!(fs::metadata(&out).expect("archive").len(), report.size);
    assert!(cds::stamp_path(&out).is_file());
    assert!(report.ready_after <= report.took);
    let dir = out.parent().expect("parent");
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let file = out
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        names,
        vec![file.clone(), format!("{file}.stamp")],
        "leftovers"
    );
    report
}

/// Starts with `flags`, waits for /health, stops with 143; returns the output.
fn run_healthy(java: &Path, flags: &[String], layout: &Layout) -> String {
    let mut jvm = Jvm::start(java, flags, classpath_args(layout), &[]);
    jvm.wait_healthy();
    let status = jvm.stop();
    assert_eq!(status.code(), Some(143), "{}", jvm.output());
    jvm.output()
}

fn with(flags: &[String], more: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = more.iter().map(|s| s.to_string()).collect();
    out.extend_from_slice(flags);
    out
}

/// Moves a file's mtime: the jar "changed" for the JVM (and for the stamp).
fn touch(path: &Path) {
    let file = fs::File::options().write(true).open(path).expect("open");
    let later = SystemTime::now() + Duration::from_secs(5);
    file.set_modified(later).expect("set mtime");
}

#[test]
fn jdk17_dynamic_archive_is_trained_used_and_stale_ones_are_harmless() {
    let jdk = jdk17();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = extract(tmp.path());
    let archive = tmp.path().join("cds/r1.jsa");
    let spec = spec(&jdk, layout_target(&layout), archive.clone());
    let flags = spec.jvm_flags.clone();
    assert_eq!(spec.kind, ArchiveKind::DynamicCds);
    train_ok(spec);
    assert_eq!(check_archive(&archive, &layout.classpath), Ok(()));
    assert_eq!(
        validate(
            &jdk.java,
            ArchiveKind::DynamicCds,
            &archive,
            &layout.classpath,
            &flags
        ),
        Ok(())
    );

    // Used: the app's and the libraries' classes come from the archive.
    let mut used = flags.clone();
    used.extend(run_flags(ArchiveKind::DynamicCds, &archive));
    let log = run_healthy(&jdk.java, &with(&used, &["-Xlog:class+load=info"]), &layout);
    assert!(
        loaded_from_archive(&log, "fixture.boot.app.BootApp"),
        "{log}"
    );
    assert!(
        loaded_from_archive(&log, "fixture.lib.alpha.Alpha001"),
        "BootApp shared, Alpha001 not"
    );
    let (total, shared) = class_sources(&log, "fixture.lib.");
    assert!(total >= 1000, "{total} library classes loaded");
    assert!(
        shared * 10 >= total * 9,
        "only {shared} of {total} library classes shared"
    );

    // Other flags: the JVM ignores the archive and starts.
    let other: Vec<String> = with(&used, &["-XX:-UseCompressedOops"]);
    let log = run_healthy(
        &jdk.java,
        &with(&other, &["-Xlog:class+load=info"]),
        &layout,
    );
    assert!(!loaded_from_archive(&log, "fixture.boot.app.BootApp"));
    let no_coops = with(&flags, &["-XX:-UseCompressedOops"]);
    assert!(
        validate(
            &jdk.java,
            ArchiveKind::DynamicCds,
            &archive,
            &layout.classpath,
            &no_coops
        )
        .is_err()
    );

    // A changed jar: check_archive refuses, the JVM rejects it too, and still starts.
    touch(&layout.classpath[2]);
    let refused = check_archive(&archive, &layout.classpath).expect_err("changed jar");
    assert!(
        refused.contains("fixture-beta.jar changed since training"),
        "{refused}"
    );
    let rejected = validate(
        &jdk.java,
        ArchiveKind::DynamicCds,
        &archive,
        &layout.classpath,
        &flags,
    )
    .expect_err("the JVM sees the changed jar");
    assert!(rejected.contains("fixture-beta.jar"), "{rejected}");
    let log = run_healthy(&jdk.java, &with(&used, &["-Xlog:class+load=info"]), &layout);
    assert!(!loaded_from_archive(&log, "fixture.boot.app.BootApp"));
    assert!(log.contains("Unable to use shared archive"), "{log}");

    // A missing archive: silently ignored.
    let missing = run_flags(ArchiveKind::DynamicCds, &tmp.path().join("cds/none.jsa"));
    run_healthy(&jdk.java, &missing, &layout);

    // A truncated archive (crashes JDK 17 at start with SIGBUS): check_archive refuses it.
    let truncated = tmp.path().join("cds/truncated.jsa");
    fs::copy(&archive, &truncated).expect("copy");
    fs::copy(cds::stamp_path(&archive), cds::stamp_path(&truncated)).expect("copy stamp");
    let file = fs::File::options()
        .write(true)
        .open(&truncated)
        .expect("open");
    file.set_len(100_000).expect("truncate");
    let refused = check_archive(&truncated, &layout.classpath).expect_err("truncated");
    assert!(refused.contains("truncated"), "{refused}");
    assert!(check_archive(&tmp.path().join("cds/none.jsa"), &layout.classpath).is_err());
}

#[test]
fn jdk25_aot_cache_is_trained_and_used() {
    let jdk = jdk25();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = extract(tmp.path());
    let cache = tmp.path().join("cds/r1.aot");
    let spec = spec(&jdk, layout_target(&layout), cache.clone());
    let flags = spec.jvm_flags.clone();
    assert_eq!(spec.kind, ArchiveKind::AotCache);
    train_ok(spec);
    assert_eq!(check_archive(&cache, &layout.classpath), Ok(()));

    let mut used = flags.clone();
    used.extend(run_flags(ArchiveKind::AotCache, &cache));
    let log = run_healthy(&jdk.java, &with(&used, &["-Xlog:class+load=info"]), &layout);
    assert!(
        loaded_from_archive(&log, "fixture.boot.app.BootApp"),
        "{log}"
    );
    assert!(loaded_from_archive(&log, "fixture.lib.beta.Beta200"));
    let (total, shared) = class_sources(&log, "fixture.lib.");
    assert!(
        total >= 1000 && shared * 10 >= total * 9,
        "{shared} of {total} shared"
    );

    // Missing or mismatched (other heap layout): the JVM says so and starts anyway.
    let missing = run_flags(ArchiveKind::AotCache, &tmp.path().join("cds/none.aot"));
    let log = run_healthy(&jdk.java, &missing, &layout);
    assert!(log.contains("Unable to map shared spaces"), "{log}");
    let other = with(&used, &["-XX:-UseCompressedOops", "-Xlog:class+load=info"]);
    let log = run_healthy(&jdk.java, &other, &layout);
    assert!(!loaded_from_archive(&log, "fixture.boot.app.BootApp"));

    // A changed jar: check_archive refuses (JDK 25 before 25.0.4 would use the stale classes).
    touch(&layout.classpath[0]);
    let refused = check_archive(&cache, &layout.classpath).expect_err("changed jar");
    assert!(
        refused.contains("app.jar changed since training"),
        "{refused}"
    );
}

#[test]
fn train_fails_when_the_app_exits_before_it_is_ready() {
    let jdk = jdk17();
    let tmp = tempfile::tempdir().expect("tempdir");
    let archive = tmp.path().join("cds/fat.jsa");
    let mut spec = spec(&jdk, Target::Jar(boot_jar()), archive.clone());
    spec.env = vec![("PORT".to_string(), "not-a-port".to_string())];
    let err = cds::train(spec).expect_err("exits with 2");
    let JavaError::Train {
        failure,
        output,
        pid,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert!(
        matches!(failure, TrainFailure::ExitedBeforeReady { status } if status.contains('2')),
        "{failure:?}"
    );
    assert!(
        output.contains("PORT must be a port number, got 'not-a-port'"),
        "{output}"
    );
    assert!(err.to_string().contains("before it was ready"), "{err}");
    jvm::assert_gone(*pid, "the JVM");
    assert!(!archive.exists());
    let left: Vec<_> = fs::read_dir(tmp.path().join("cds")).expect("dir").collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn train_kills_an_app_that_never_gets_ready_with_its_children() {
    let jdk = jdk17();
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = extract(tmp.path());
    let archive = tmp.path().join("cds/r1.jsa");
    let mut spec = spec(&jdk, layout_target(&layout), archive.clone());
    spec.env
        .push(("BOOT_FIXTURE_SPAWN_CHILD".to_string(), "1".to_string()));
    // Serving, but the readiness check says no (think: a wrong health path).
    let port: u16 = spec.env[0].1.parse().expect("port");
    let served = std::rc::Rc::new(std::cell::Cell::new(false));
    let seen = served.clone();
    spec.ready = Box::new(move || {
        if http::ok(port, "/health") {
            seen.set(true);
        }
        false
    });
    spec.start_timeout = Duration::from_secs(12);
    let err = cds::train(spec).expect_err("never ready");
    let JavaError::Train {
        failure,
        output,
        pid,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(
        failure,
        &TrainFailure::NotReady {
            waited: Duration::from_secs(12)
        }
    );
    assert!(served.get(), "the app never served within 12 s:\n{output}");
    jvm::assert_gone(*pid, "the JVM");
    let child: u32 = output
        .lines()
        .find_map(|l| l.strip_prefix("child pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no child pid in:\n{output}"));
    jvm::assert_gone(child, "the app's child process");
    assert!(!archive.exists());
}

#[test]
fn train_refuses_a_class_path_with_a_directory() {
    let jdk = jdk17();
    let tmp = tempfile::tempdir().expect("tempdir");
    let classes = tmp.path().join("classes");
    fs::create_dir(&classes).expect("mkdir");
    fs::write(classes.join("A.class"), "x").expect("write");
    let target = Target::Classpath {
        classpath: vec![classes],
        main_class: "A".to_string(),
    };
    let err = cds::train(spec(&jdk, target, tmp.path().join("a.jsa"))).expect_err("a directory");
    assert!(
        matches!(&err, JavaError::CdsUnsafeClasspath { reason } if reason.contains("a directory")),
        "{err:?}"
    );
    assert!(!tmp.path().join("a.jsa").exists());
}
