//! Faster JVM starts, from the daemon's side (`java.fast_start`, on by default):
//!
//! * a Spring Boot executable jar runs from an extracted layout made once per release
//!   (`releases/APP/RELEASE/boot/`: the application classes as one jar, the libraries as plain
//!   jars, `Start-Class` as the main class) — see `jarfleet_java::boot`;
//! * each release gets a class-data archive (`cds/APP/KEY.jsa`, JDK 17+), dumped on demand by
//!   the release's first ready instance itself — no second copy of the app runs: the instances
//!   of a release without an archive start with `-XX:+RecordDynamicDumpInfo`, and once one is
//!   ready `jcmd PID VM.cds dynamic_dump FILE` (as the app's user) makes it write the classes it
//!   loaded. One attempt per release (recorded next to the archive); every instance started
//!   after that uses the archive. The key covers the release, the JDK build and the JVM
//!   options, so any change of those gets its own archive. An archive that is missing, still
//!   being dumped, or does not match its jars is simply not used: it costs speed, never a
//!   start (`jarfleet_java::cds::check_archive`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use jarfleet_core::spec::{AppSpec, Launch};
use jarfleet_java::{boot, cds};

use crate::launch::JavaRuntime;
use crate::paths::StateDir;

fn layout_dir(dirs: &StateDir, app: &str, release: &str) -> PathBuf {
    dirs.release_dir(app, release).join("boot")
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

impl Archive {
    /// The record of the release's one dump attempt (`KEY.jsa.attempt`): made before `jcmd`
    /// runs, kept with the failure when it fails, removed when it succeeds. While it exists no
    /// other dump is tried for the release, daemon restarts included; delete it to try again.
    pub fn attempt_path(&self) -> PathBuf {
        let mut name = self.path.as_os_str().to_os_string();
        name.push(".attempt");
        PathBuf::from(name)
    }
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
    let kind = cds::dump_kind(rt.feature)?;
    let build = format!("{} {} {}", rt.vendor, rt.version, rt.home.display());
    let key = cds::archive_key(release, &build, &spec.java.opts);
    let path = dirs
        .cds_dir(&spec.name)
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

/// The JVM flags of an instance of a release: its archive's when one is usable; else, while
/// the release's one dump is still to be tried, the flag that lets the instance record what
/// that dump needs.
pub fn run_flags(spec: &AppSpec, rt: &JavaRuntime, release: &str, dirs: &StateDir) -> Vec<String> {
    match archive(spec, rt, release, dirs) {
        Some(a) if cds::check_archive(&a.path, &a.classpath).is_ok() => {
            cds::run_flags(a.kind, &a.path)
        }
        Some(a)
            if cds::dump_blocked_by(&spec.java.opts).is_none()
                && std::fs::symlink_metadata(a.attempt_path()).is_err() =>
        {
            vec![cds::RECORD_FLAG.to_string()]
        }
        _ => Vec::new(),
    }
}

/// Whether a release still needs its archive dumped: fast starts on, a JDK that can, no usable
/// archive, and no attempt made yet.
pub fn needs_dump(spec: &AppSpec, rt: &JavaRuntime, release: &str, dirs: &StateDir) -> bool {
    archive(spec, rt, release, dirs).is_some_and(|a| {
        cds::check_archive(&a.path, &a.classpath).is_err()
            && std::fs::symlink_metadata(a.attempt_path()).is_err()
    })
}

/// Whether the JVM `pid` was started to record a dump (it may be an instance started before
/// the flag was added, e.g. by an older jarfleet).
pub fn records_dump_info(pid: u32) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(jarfleet_shim::procinfo::cmdline)
        .is_some_and(|argv| argv.iter().any(|a| a == cds::RECORD_FLAG))
}

/// How long `jcmd` may take for one dump.
const DUMP_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest dump taken in (a class data archive of a big app is tens of MiB).
const MAX_DUMP_BYTES: u64 = 4 << 30;

/// The release's one dump (blocking: a second or so): `jcmd PID VM.cds dynamic_dump FILE` run
/// as the app's user (`run_as`) against the running instance `pid`, into a directory of the
/// app's user that nobody else can enter; the file is then opened without following links,
/// must be a regular file of that user, is copied into a file of the daemon's, checked by the
/// same JVM run as the app's user, stamped and renamed into place (`cds::publish`). The
/// attempt is recorded first (see [`Archive::attempt_path`]). `Ok` describes the archive.
pub fn dump(
    spec: &AppSpec,
    rt: &JavaRuntime,
    release: &str,
    dirs: &StateDir,
    pid: u32,
    run_as: Option<jarfleet_shim::protocol::RunAs>,
) -> Result<String, String> {
    let Some(a) = archive(spec, rt, release, dirs) else {
        return Err("fast starts are off for this app or its JDK".into());
    };
    let attempt = a.attempt_path();
    let dir = a.path.parent().unwrap_or(dirs.root()).to_path_buf();
    create_cds_dir(&dir)?;
    write_new(
        &attempt,
        &format!("dump from the instance with pid {pid} of release {release}\n"),
    )?;
    let started = std::time::Instant::now();
    let result = dump_into_place(spec, rt, &a, &dir, pid, run_as);
    match &result {
        Ok(_) => {
            let _ = std::fs::remove_file(&attempt);
        }
        Err(e) => {
            let _ = std::fs::write(
                &attempt,
                format!("dump from the instance with pid {pid} of release {release} failed: {e}\n"),
            );
        }
    }
    let size = result?;
    Ok(format!(
        "class data archive for release {release} dumped by its running instance (pid {pid}{}): {} KiB in {} ms ({})",
        run_as.map_or(String::new(), |r| format!(", as uid {}", r.uid)),
        size / 1024,
        started.elapsed().as_millis(),
        file_name(&a.path)
    ))
}

fn dump_into_place(
    spec: &AppSpec,
    rt: &JavaRuntime,
    a: &Archive,
    dir: &Path,
    pid: u32,
    run_as: Option<jarfleet_shim::protocol::RunAs>,
) -> Result<u64, String> {
    if let Some(flag) = cds::dump_blocked_by(&spec.java.opts) {
        return Err(format!(
            "java.opts has {flag}, which chooses an archive of its own or turns class data sharing off; drop it, or set java.fast_start = false"
        ));
    }
    cds::classpath_is_cds_safe(&a.classpath)
        .map_err(|e| format!("the class path cannot be archived: {e}"))?;
    let jcmd = rt.home.join("bin").join("jcmd");
    if !jcmd.is_file() {
        return Err(format!(
            "{} does not exist: the JDK at {} has no jcmd (a JRE?); install the full JDK (e.g. openjdk-17-jdk-headless) or set java.fast_start = false",
            jcmd.display(),
            rt.home.display()
        ));
    }
    // The JVM (the app's user) writes into a directory only that user can enter.
    let work = DumpDir::create(dir, pid)?;
    let (uid, gid) = match run_as {
        Some(r) => (r.uid, r.gid),
        None => (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ),
    };
    std::os::unix::fs::chown(work.path(), Some(uid), Some(gid))
        .map_err(|e| format!("giving {} to uid {uid}: {e}", work.path().display()))?;
    let dumped = work.path().join(format!("archive.{}", a.kind.extension()));
    run_jcmd(&jcmd, pid, &dumped, run_as)?;

    // Taken in: no link followed, a regular file of the app's user, copied into our own file.
    let candidate = dir.join(format!(
        ".adopt-{}",
        file_name(&a.path) // same file system as the archive: renamed into place
    ));
    let _ = std::fs::remove_file(&candidate);
    copy_owned_file(&dumped, uid, &candidate)?;
    drop(work);
    let jvm_flags: Vec<String> = spec.java.opts.clone();
    let result = cds::publish(
        &rt.java,
        a.kind,
        &candidate,
        &a.path,
        &a.classpath,
        &jvm_flags,
        run_as.map(|r| (r.uid, r.gid)),
    );
    if result.is_err() {
        let _ = std::fs::remove_file(&candidate);
        let _ = std::fs::remove_file(cds::stamp_path(&candidate));
    }
    result.map_err(|e| format!("the dumped archive is not usable: {e}"))
}

/// The directory the JVM dumps into (`.dump-PID-NANOS`, made new), removed with what is in it
/// when dropped (`remove_dir_all` does not follow links).
struct DumpDir(PathBuf);

impl DumpDir {
    fn create(parent: &Path, pid: u32) -> Result<DumpDir, String> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let path = parent.join(format!(".dump-{pid}-{nanos}"));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("creating {}: {e}", path.display()))?;
        Ok(DumpDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DumpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `jcmd PID VM.cds dynamic_dump FILE` as the app's user (the same fenced spawn as the
/// instance's JVM: own process group, user and groups dropped), within [`DUMP_TIMEOUT`].
fn run_jcmd(
    jcmd: &Path,
    pid: u32,
    file: &Path,
    run_as: Option<jarfleet_shim::protocol::RunAs>,
) -> Result<(), String> {
    use std::io::Read;
    let mut cmd = jarfleet_shim::spawn::jvm_command(&jcmd.display().to_string(), run_as);
    cmd.args(cds::dump_command_args(pid, file))
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", jcmd.display()))?;
    let deadline = std::time::Instant::now() + DUMP_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) | Err(_) => {
                if let Ok(p) = i32::try_from(child.id()) {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(p),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ = child.wait();
                return Err(format!(
                    "{} did not finish within {} s",
                    jcmd.display(),
                    DUMP_TIMEOUT.as_secs()
                ));
            }
        }
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.by_ref().take(16 * 1024).read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.by_ref().take(16 * 1024).read_to_string(&mut out);
    }
    let out = out.trim();
    if !status.success() || out.contains("Exception") || out.contains("Error") {
        return Err(format!(
            "`jcmd {pid} VM.cds dynamic_dump` failed ({status}): {}",
            if out.is_empty() { "no output" } else { out }
        ));
    }
    Ok(())
}

/// Copies `from` — opened without following a link, and only if it is a regular file owned
/// by `uid` of at most [`MAX_DUMP_BYTES`] — into a new file `to` of the daemon's (0644).
fn copy_owned_file(from: &Path, uid: u32, to: &Path) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut src = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(from)
        .map_err(|e| {
            format!(
                "the JVM wrote no archive at {} ({e}); see the instance's log",
                from.display()
            )
        })?;
    let meta = src
        .metadata()
        .map_err(|e| format!("{}: {e}", from.display()))?;
    if !meta.file_type().is_file() || meta.uid() != uid || meta.nlink() != 1 {
        return Err(format!(
            "{} is not a regular file of uid {uid} with one link (uid {}, {} links): not taken",
            from.display(),
            meta.uid(),
            meta.nlink()
        ));
    }
    if meta.len() > MAX_DUMP_BYTES {
        return Err(format!(
            "{} has {} bytes, more than an archive may ({MAX_DUMP_BYTES}): not taken",
            from.display(),
            meta.len()
        ));
    }
    let mut dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(to)
        .map_err(|e| format!("creating {}: {e}", to.display()))?;
    let copied = std::io::copy(
        &mut std::io::Read::take(&mut src, MAX_DUMP_BYTES + 1),
        &mut dst,
    )
    .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()));
    if copied.is_err() {
        let _ = std::fs::remove_file(to);
    }
    copied.map(|_| ())
}

/// `STATE/cds/APP`, made if missing: the daemon's, enterable (not listable) by an app's user so
/// that its JVM reaches its own dump directory and the archive.
fn create_cds_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
            .map_err(|e| format!("chmod {}: {e}", d.display()))?;
    }
    Ok(())
}

/// Creates `path` (it must not exist) with `text`, synced.
fn write_new(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("recording the attempt in {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("recording the attempt in {}: {e}", path.display()))
}

/// Training runs left behind by a daemon that died while they ran (their JVM waits for a
/// SIGTERM that will never come): killed, process group and all. Returns their pids.
pub fn kill_stray_trainings(dirs: &StateDir) -> Vec<i32> {
    let cds = dirs.cds_root();
    let cds = cds.to_string_lossy();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut killed = Vec::new();
    for pid in entries.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        let Some(argv) = jarfleet_shim::procinfo::cmdline(pid) else {
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
