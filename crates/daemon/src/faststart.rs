//! Faster JVM starts, from the daemon's side (`java.fast_start`, on by default):
//!
//! * a Spring Boot executable jar runs from an extracted layout made once per release
//!   (`releases/APP/RELEASE/boot/`: the application classes as one jar, the libraries as plain
//!   jars, `Start-Class` as the main class) — see `jarfleet_java::boot`;
//! * each release gets a class-data archive (`cds/APP/KEY.jsa`, or `.aot` on JDK 25+), trained
//!   by one run of the app in the background once the release's first instance is ready; every
//!   instance started after that uses it. The key covers the release, the JDK build and the JVM
//!   options, so any change of those gets its own archive. An archive that is missing, still
//!   being trained, or does not match its jars is simply not used: it costs speed, never a
//!   start (`jarfleet_java::cds::check_archive`).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jarfleet_core::spec::{AppSpec, HealthCheck, Launch};
use jarfleet_java::{boot, cds};

use crate::launch::{JavaRuntime, instance_vars};
use crate::paths::StateDir;

fn layout_dir(dirs: &StateDir, app: &str, release: &str) -> PathBuf {
    dirs.root()
        .join("releases")
        .join(app)
        .join(release)
        .join("boot")
}

/// For a Spring Boot jar: the launch that runs its extracted layout (extracted now if it is
/// not yet). `Ok(None)`: not a Spring Boot jar, or fast starts are off.
pub fn boot_launch(
    spec: &AppSpec,
    release: &str,
    dirs: &StateDir,
) -> Result<Option<Launch>, String> {
    if !spec.java.fast_start {
        return Ok(None);
    }
    let Launch::Jar { path, .. } = &spec.launch else {
        return Ok(None);
    };
    let name = &spec.name;
    if boot::detect(path)
        .map_err(|e| format!("apps.{name}.artifact: {e}"))?
        .is_none()
    {
        return Ok(None);
    }
    let dir = layout_dir(dirs, name, release);
    let index = dir.with_extension("classpath");
    if let Ok(text) = std::fs::read_to_string(&index)
        && let Some((main_class, rest)) = text.split_once('\n')
    {
        return Ok(Some(Launch::MainClass {
            main_class: main_class.to_string(),
            classpath: rest.lines().map(str::to_string).collect(),
        }));
    }
    // A layout without its index was cut short by a crash: made again.
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("apps.{name}: creating {}: {e}", parent.display()))?;
    }
    let layout = boot::extract_layout(path, &dir)
        .map_err(|e| format!("apps.{name}.artifact: extracting the Spring Boot layout: {e}"))?;
    let classpath: Vec<String> = layout
        .classpath
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let text = format!("{}\n{}\n", layout.main_class, classpath.join("\n"));
    let tmp = index.with_extension("classpath.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &index))
        .map_err(|e| format!("apps.{name}: writing {}: {e}", index.display()))?;
    Ok(Some(Launch::MainClass {
        main_class: layout.main_class,
        classpath,
    }))
}

/// The archive the instances of a release use: where it is, its kind, and its class path.
pub struct Archive {
    pub kind: cds::ArchiveKind,
    pub path: PathBuf,
    pub classpath: Vec<PathBuf>,
}

pub fn archive(
    spec: &AppSpec,
    rt: &JavaRuntime,
    release: &str,
    dirs: &StateDir,
) -> Option<Archive> {
    if !spec.java.fast_start {
        return None;
    }
    let kind = cds::ArchiveKind::for_jdk(rt.feature)?;
    let build = format!("{} {} {}", rt.vendor, rt.version, rt.home.display());
    let key = cds::archive_key(release, &build, &spec.java.opts);
    let path = dirs
        .root()
        .join("cds")
        .join(&spec.name)
        .join(format!("{key}.{}", kind.extension()));
    let classpath = match &spec.launch {
        Launch::Jar { path, .. } => vec![path.clone()],
        Launch::MainClass { classpath, .. } => classpath.iter().map(PathBuf::from).collect(),
    };
    Some(Archive {
        kind,
        path,
        classpath,
    })
}

/// The JVM flags that start an instance with its release's archive, when one is usable.
pub fn run_flags(spec: &AppSpec, rt: &JavaRuntime, release: &str, dirs: &StateDir) -> Vec<String> {
    match archive(spec, rt, release, dirs) {
        Some(a) if cds::check_archive(&a.path, &a.classpath).is_ok() => {
            cds::run_flags(a.kind, &a.path)
        }
        _ => Vec::new(),
    }
}

/// Whether a release still needs its archive trained.
pub fn needs_training(spec: &AppSpec, rt: &JavaRuntime, release: &str, dirs: &StateDir) -> bool {
    archive(spec, rt, release, dirs)
        .is_some_and(|a| cds::check_archive(&a.path, &a.classpath).is_err())
}

/// One training run for a release (blocking: seconds): the app started on a free port with the
/// training flags, stopped once ready. `Ok` describes the archive made.
pub fn train(
    spec: &AppSpec,
    rt: &JavaRuntime,
    release: &str,
    dirs: &StateDir,
    base_env: &[(String, String)],
) -> Result<String, String> {
    let Some(a) = archive(spec, rt, release, dirs) else {
        return Err("fast starts are off for this app or its JDK".into());
    };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("finding a free port for the training run: {e}"))?;
    let vars = instance_vars(dirs, &spec.name, 0, port);
    let resolve = |s: &str| jarfleet_core::interp::resolve_instance(s, &vars);
    let target = match &spec.launch {
        Launch::Jar { path, .. } => cds::Target::Jar(path.clone()),
        Launch::MainClass {
            main_class,
            classpath,
        } => cds::Target::Classpath {
            classpath: classpath
                .iter()
                .map(|c| PathBuf::from(resolve(c)))
                .collect(),
            main_class: main_class.clone(),
        },
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let ready: Box<dyn FnMut() -> bool> = match &spec.health.check {
        HealthCheck::Http { path } => {
            let path = path.clone();
            Box::new(move || http_ok(addr, &path))
        }
        HealthCheck::Tcp => {
            Box::new(move || TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
        }
        HealthCheck::Exec { .. } => {
            return Err(
                "training needs an http or tcp health check to know when the app is ready".into(),
            );
        }
    };
    let mut env: Vec<(String, String)> = base_env.to_vec();
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), resolve(v))));
    env.push(("PORT".into(), port.to_string()));
    env.push(("JARFLEET_APP".into(), spec.name.clone()));
    env.push(("JARFLEET_RELEASE".into(), release.to_string()));
    env.push(("JAVA_HOME".into(), rt.home.display().to_string()));
    let workdir = dirs.root().join("cds").join(&spec.name).join("work");
    std::fs::create_dir_all(&workdir)
        .map_err(|e| format!("creating {}: {e}", workdir.display()))?;
    let report = cds::train(cds::TrainSpec {
        java: rt.java.clone(),
        target,
        args: spec.args.iter().map(|a| resolve(a)).collect(),
        env,
        jvm_flags: spec.java.opts.iter().map(|o| resolve(o)).collect(),
        kind: a.kind,
        archive_out: a.path.clone(),
        ready,
        start_timeout: spec.health.start_timeout,
        stop_timeout: spec.stop.stop_timeout + Duration::from_secs(30),
        workdir: Some(spec.workdir.clone().unwrap_or(workdir)),
    })
    .map_err(|e| e.to_string())?;
    Ok(format!(
        "class data archive for release {release} trained: {} KiB, ready after {} ms, {} ms in all ({})",
        report.size / 1024,
        report.ready_after.as_millis(),
        report.took.as_millis(),
        file_name(&report.archive)
    ))
}

/// Training runs left behind by a daemon that died while they ran (their JVM waits for a
/// SIGTERM that will never come): killed, process group and all. Returns their pids.
pub fn kill_stray_trainings(dirs: &StateDir) -> Vec<i32> {
    let cds = dirs.root().join("cds");
    let cds = cds.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(argv) = crate::procinfo::cmdline(pid) else {
            continue;
        };
        let training = argv.iter().any(|a| {
            (a.starts_with("-XX:ArchiveClassesAtExit=") || a.starts_with("-XX:AOTCacheOutput="))
                && a.contains(&*cds)
        });
        if training {
            // A training JVM leads its own process group.
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            killed.push(pid);
        }
    }
    killed
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A blocking GET: 2xx/3xx within a second.
fn http_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).is_err() {
        return false;
    }
    matches!(&head[9..10], b"2" | b"3")
}
