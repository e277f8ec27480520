//! Measures time-to-healthy of a Spring Boot fat jar started four ways: as it is, with a CDS
//! archive (AOT cache on JDK 25+), extracted ([`jarfleet_java::boot::extract_layout`]), and
//! extracted with an archive. Prints a markdown table of medians.
//!
//! ```text
//! cargo run --release -p jarfleet-java --example faststart -- \
//!     --jar target/fixtures/boot-<hash>/boot-app.jar \
//!     --java /usr/lib/jvm/java-17-openjdk-amd64/bin/java --runs 5
//! ```
//!
//! The app must serve `GET /health` on `$PORT`. Time-to-healthy is from spawn to the first
//! 200, polled every 10 ms. Runs of the four modes alternate, so machine noise hits all alike.

#[path = "../tests/it/http.rs"]
mod http;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jarfleet_java::boot;
use jarfleet_java::cds::{self, ArchiveKind, Target, TrainSpec};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

const START_TIMEOUT: Duration = Duration::from_secs(120);

struct Args {
    jar: PathBuf,
    java: PathBuf,
    runs: usize,
    /// The app's own arguments; `{PORT}` is replaced by the port of each run.
    app_args: Vec<String>,
    health: String,
}

/// Settings every run shares.
struct App {
    app_args: Vec<String>,
    health: String,
}

impl App {
    fn args(&self, port: u16) -> Vec<String> {
        self.app_args
            .iter()
            .map(|a| a.replace("{PORT}", &port.to_string()))
            .collect()
    }
}

fn parse_args() -> Result<Args, String> {
    let mut jar = None;
    let mut java = None;
    let mut runs = 5;
    let mut app_args = Vec::new();
    let mut health = "/health".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--jar" => jar = Some(PathBuf::from(value()?)),
            "--java" => java = Some(PathBuf::from(value()?)),
            "--arg" => app_args.push(value()?),
            "--health" => health = value()?,
            "--runs" | "-n" => {
                runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?;
            }
            "-h" | "--help" => {
                return Err("usage: faststart --jar JAR [--java PATH] [--runs N] [--health PATH] [--arg A]... ({PORT} in an --arg is the run's port)".into());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let jar = jar.ok_or("--jar is required (see --help)")?;
    let java = java.unwrap_or_else(|| PathBuf::from("java"));
    if runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    Ok(Args {
        jar,
        java,
        runs,
        app_args,
        health,
    })
}

fn main() {
    if let Err(e) = run() {
        eprintln!("faststart: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let args = parse_args()?;
    let java = which(&args.java)?;
    let home = java
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot tell the JDK home from --java")?;
    let jdk = jarfleet_java::jdk_at(home).map_err(|e| e.to_string())?;
    let feature = jdk.feature().ok_or("the JDK has no release file")?;
    let kind = ArchiveKind::for_jdk(feature).ok_or("this JDK makes no CDS archives")?;
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    eprintln!("{jdk}; archive: {kind:?}");

    let ext = kind.extension();
    let fat = Target::Jar(std::path::absolute(&args.jar).map_err(|e| e.to_string())?);
    let app = App {
        app_args: args.app_args.clone(),
        health: args.health.clone(),
    };
    let fat_archive = train(
        &app,
        &java,
        kind,
        &fat,
        &tmp.path().join(format!("fat.{ext}")),
    )?;
    let is_boot = boot::detect(&args.jar)
        .map_err(|e| e.to_string())?
        .is_some();
    let mut modes: Vec<(&str, Vec<String>, Vec<OsString>)> = vec![
        ("as is", vec![], fat.java_args()),
        (
            "as is + archive",
            cds::run_flags(kind, &fat_archive),
            fat.java_args(),
        ),
    ];
    // A plain jar has no layout to extract: it runs as it is, with or without an archive.
    if is_boot {
        let t = Instant::now();
        let layout = boot::extract_layout(&args.jar, &tmp.path().join("layout"))
            .map_err(|e| e.to_string())?;
        eprintln!("extracted in {:?}", t.elapsed());
        let extracted = Target::Classpath {
            classpath: layout.classpath.clone(),
            main_class: layout.main_class.clone(),
        };
        let ext_archive = train(
            &app,
            &java,
            kind,
            &extracted,
            &tmp.path().join(format!("ext.{ext}")),
        )?;
        modes.push(("extracted", vec![], extracted.java_args()));
        modes.push((
            "extracted + archive",
            cds::run_flags(kind, &ext_archive),
            extracted.java_args(),
        ));
    }
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); modes.len()];
    for round in 0..args.runs {
        for (i, (name, flags, target)) in modes.iter().enumerate() {
            let took = time_to_healthy(&app, &java, flags, target)?;
            eprintln!("run {}: {name}: {took:?}", round + 1);
            times[i].push(took);
        }
    }

    println!(
        "| mode ({}, {} runs) | median to healthy | min | max | vs as is |",
        jdk.runtime_version, args.runs
    );
    println!("|---|---:|---:|---:|---:|");
    let base = median(&mut times[0].clone());
    for ((name, _, _), t) in modes.iter().zip(times.iter_mut()) {
        let med = median(t);
        let (min, max) = (t[0], t[t.len() - 1]);
        println!(
            "| {name} | {} | {} | {} | {:.0}% |",
            ms(med),
            ms(min),
            ms(max),
            100.0 * med.as_secs_f64() / base.as_secs_f64()
        );
    }
    Ok(())
}

fn train(
    app: &App,
    java: &Path,
    kind: ArchiveKind,
    target: &Target,
    out: &Path,
) -> Result<PathBuf, String> {
    let port = http::free_port();
    let report = cds::train(TrainSpec {
        java: java.to_path_buf(),
        target: target.clone(),
        args: app.args(port),
        env: vec![("PORT".to_string(), port.to_string())],
        jvm_flags: Vec::new(),
        kind,
        archive_out: out.to_path_buf(),
        ready: {
            let health = app.health.clone();
            Box::new(move || http::ok(port, &health))
        },
        start_timeout: START_TIMEOUT,
        stop_timeout: Duration::from_secs(120),
        workdir: None,
    })
    .map_err(|e| e.to_string())?;
    eprintln!(
        "trained {} ({} KiB) in {:?}",
        out.display(),
        report.size / 1024,
        report.took
    );
    Ok(report.archive)
}

/// Spawn → first 200 on /health (polled every 10 ms); then SIGTERM and wait.
fn time_to_healthy(
    app: &App,
    java: &Path,
    flags: &[String],
    target: &[OsString],
) -> Result<Duration, String> {
    let port = http::free_port();
    let started = Instant::now();
    let mut child = Command::new(java)
        .args(flags)
        .args(target)
        .args(app.args(port))
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", java.display()))?;
    let pid = Pid::from_raw(i32::try_from(child.id()).map_err(|e| e.to_string())?);
    let result = loop {
        if http::ok(port, &app.health) {
            break Ok(started.elapsed());
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!("the app exited ({status}) before /health answered"));
        }
        if started.elapsed() > START_TIMEOUT {
            break Err(format!("/health not 200 within {START_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(30);
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = killpg(pid, Signal::SIGKILL);
    let _ = child.wait();
    result
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// `java` as given, or found on PATH, symlinks resolved (to find the JDK home).
fn which(java: &Path) -> Result<PathBuf, String> {
    let found = if java.components().count() > 1 {
        Some(java.to_path_buf())
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(java))
                .find(|c| c.is_file())
        })
    };
    let found = found.ok_or_else(|| format!("{} not found", java.display()))?;
    std::fs::canonicalize(&found).map_err(|e| format!("{}: {e}", found.display()))
}
