//! Class data sharing: a per-release archive of loaded classes that makes JVMs start faster.
//!
//! For each release, a training run ([`train`]) starts the app once, waits until it is ready and
//! stops it gracefully; at exit the JVM writes an archive of the classes it loaded:
//!
//! * JDK 13–24: a dynamic AppCDS archive (`-XX:ArchiveClassesAtExit`), used with
//!   `-XX:SharedArchiveFile=… -Xshare:auto`;
//! * JDK 25+: an AOT cache (`-XX:AOTCacheOutput`, one-step training, JEP 514), used with
//!   `-XX:AOTCache=…`. Besides the parsed classes it holds them already linked.
//!
//! The archive is keyed by [`archive_key`] (release digest, JDK build, JVM flags). Instances add
//! [`run_flags`] when [`check_archive`] accepts the archive for their class path. A missing,
//! stale or rejected archive costs speed only: the JVM starts without it, saying why on stdout
//! for most mismatches (`[warning][cds,dynamic] Unable to use shared archive…`, or three
//! `[error][aot]` lines ending in `Unable to map shared spaces` on 25). Those messages are kept
//! on purpose: they are the only trace of why a start was slow.
//!
//! Two JVM behaviours are why [`check_archive`] exists (seen on this project's JDKs, Debian
//! 17.0.15 and Temurin 25.0.3):
//! * JDK 25 up to 25.0.3 uses an AOT cache even when a jar of the class path was replaced or
//!   the class path differs, and runs the cached (old) classes: for caches made by one-step
//!   training it skips its own class path check (JDK-8377932; the fix is reported for 25.0.4).
//! * JDK 17 crashes at start (SIGBUS) when the archive file is truncated, `-Xshare:auto` or not.
//!
//! The daemon does not train with a second run of the app: it records in the app's own
//! instances (JDK 17+: [`RECORD_FLAG`]) and has the JVM dump its loaded classes on demand
//! ([`dump_command_args`], `jcmd PID VM.cds dynamic_dump FILE`), then checks the file and
//! [`publish`]es it. [`train`] stays for tools and tests that start a JVM of their own.
//!
//! The pure parts (kinds, flags, keys, stamps) are separate from the IO (training, checks).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write as _};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::discover::Jdk;
use crate::error::{JavaError, TrainFailure};

/// How often [`train`] polls the readiness check and the process.
const POLL: Duration = Duration::from_millis(50);
/// Lines of JVM output kept in errors.
const TAIL_LINES: usize = 40;
/// How long [`validate`] may take.
const VALIDATE_TIMEOUT: Duration = Duration::from_secs(60);
/// Magic number at the start of a dynamic CDS archive (JDK 13+), native byte order.
const DYNAMIC_MAGIC: u32 = 0xf00b_aba8;
/// Magic number at the start of a static CDS archive, which an AOT cache is.
const STATIC_MAGIC: u32 = 0xf00b_aba2;
const STAMP_HEADER: &str = "jarfleet-cds-stamp v1";

/// Which archive a JDK makes and uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveKind {
    /// Dynamic AppCDS archive (`-XX:ArchiveClassesAtExit`), JDK 13 to 24.
    DynamicCds,
    /// AOT cache (`-XX:AOTCacheOutput`, JEP 483/514), JDK 25 and later.
    AotCache,
}

impl ArchiveKind {
    /// The archive a JDK of this feature version makes: none before 13 (no dynamic archiving;
    /// its flags would stop such a JVM from starting), a dynamic CDS archive up to 24, an AOT
    /// cache from 25 on.
    pub fn for_jdk(feature: u32) -> Option<ArchiveKind> {
        match feature {
            0..=12 => None,
            13..=24 => Some(ArchiveKind::DynamicCds),
            _ => Some(ArchiveKind::AotCache),
        }
    }

    /// The usual file extension: `jsa` or `aot`.
    pub fn extension(self) -> &'static str {
        match self {
            ArchiveKind::DynamicCds => "jsa",
            ArchiveKind::AotCache => "aot",
        }
    }

    fn magic(self) -> u32 {
        match self {
            ArchiveKind::DynamicCds => DYNAMIC_MAGIC,
            ArchiveKind::AotCache => STATIC_MAGIC,
        }
    }
}

/// The JVM flag that makes an instance keep what a later dump on demand needs (JDK 17+).
pub const RECORD_FLAG: &str = "-XX:+RecordDynamicDumpInfo";

/// The archive a running JVM of this feature version can dump on demand (`jcmd … VM.cds
/// dynamic_dump`): a dynamic CDS archive from JDK 17 on (JDK 25's AOT cache cannot be dumped
/// from a JVM that was not started to record one), none before.
pub fn dump_kind(feature: u32) -> Option<ArchiveKind> {
    (feature >= 17).then_some(ArchiveKind::DynamicCds)
}

/// Why JVM flags rule out recording and dumping an archive (flags that choose an archive of
/// their own, or turn sharing off): `None` when they do not.
pub fn dump_blocked_by(jvm_flags: &[String]) -> Option<&str> {
    jvm_flags
        .iter()
        .find(|f| {
            f.starts_with("-XX:SharedArchiveFile=")
                || f.starts_with("-XX:ArchiveClassesAtExit=")
                || f.starts_with("-XX:AOTCache")
                || f.starts_with("-XX:AOTMode=")
                || f.as_str() == "-Xshare:off"
                || f.as_str() == "-XX:-RecordDynamicDumpInfo"
        })
        .map(String::as_str)
}

/// The arguments of `jcmd` that make the JVM `pid` (started with [`RECORD_FLAG`]) write a
/// dynamic archive of the classes it has loaded to `file` (absolute: the JVM resolves it).
pub fn dump_command_args(pid: u32, file: &Path) -> Vec<OsString> {
    vec![
        pid.to_string().into(),
        "VM.cds".into(),
        "dynamic_dump".into(),
        file.into(),
    ]
}

/// What identifies a JDK build for [`archive_key`]: vendor, `JAVA_RUNTIME_VERSION`, architecture
/// and home, from its `release` file (an archive only works with the exact JVM that wrote it).
pub fn jdk_build(jdk: &Jdk) -> String {
    format!(
        "{} {} {} {}",
        jdk.vendor,
        jdk.runtime_version,
        jdk.arch.as_deref().unwrap_or("?"),
        jdk.home.display()
    )
}

/// The key under which a release's archive is stored: lowercase hex SHA-256 of the release
/// digest, the JDK build ([`jdk_build`]) and the JVM flags in order (order matters to the JVM).
/// Stable across jarfleet versions unless the key format is bumped on purpose.
pub fn archive_key(release_digest: &str, jdk_build: &str, jvm_flags: &[String]) -> String {
    let mut h = Sha256::new();
    h.update(b"jarfleet-cds-key v1\0");
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(release_digest.as_bytes());
    field(jdk_build.as_bytes());
    field(&(jvm_flags.len() as u64).to_le_bytes());
    for flag in jvm_flags {
        field(flag.as_bytes());
    }
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// JVM flags of a training run that writes the archive to `archive` when the JVM exits.
pub fn training_flags(kind: ArchiveKind, archive: &Path) -> Vec<String> {
    match kind {
        ArchiveKind::DynamicCds => vec![format!("-XX:ArchiveClassesAtExit={}", archive.display())],
        ArchiveKind::AotCache => vec![format!("-XX:AOTCacheOutput={}", archive.display())],
    }
}

/// JVM flags that start an instance with the archive. They never make a start fail: a missing,
/// mismatched or corrupt archive makes the JVM print a warning and start without it
/// (`-Xshare:auto`; `-XX:AOTMode=auto` is the default with `-XX:AOTCache`). Two exceptions are
/// the reason for [`check_archive`]: a truncated archive crashes JDK 17, and JDK ≤ 25.0.3 uses
/// an AOT cache whose jars were replaced.
pub fn run_flags(kind: ArchiveKind, archive: &Path) -> Vec<String> {
    match kind {
        ArchiveKind::DynamicCds => vec![
            format!("-XX:SharedArchiveFile={}", archive.display()),
            "-Xshare:auto".to_string(),
        ],
        ArchiveKind::AotCache => vec![format!("-XX:AOTCache={}", archive.display())],
    }
}

/// Flags that make a JVM fail unless it maps the archive (used by [`validate`]).
fn strict_flags(kind: ArchiveKind, archive: &Path) -> Vec<String> {
    match kind {
        ArchiveKind::DynamicCds => vec![
            format!("-XX:SharedArchiveFile={}", archive.display()),
            "-Xshare:on".to_string(),
        ],
        ArchiveKind::AotCache => vec![
            format!("-XX:AOTCache={}", archive.display()),
            "-XX:AOTMode=on".to_string(),
        ],
    }
}

/// Whether a class path can be archived: every entry an existing jar (zip) file. A directory
/// (non-empty ones make the dump fail), a wildcard, a missing file or a path the class path
/// syntax cannot carry (`:`, newline) is an error naming the entry.
pub fn classpath_is_cds_safe(classpath: &[PathBuf]) -> Result<(), String> {
    for entry in classpath {
        let text = entry.to_string_lossy();
        if text.is_empty() {
            return Err("an empty class path entry (the current directory)".to_string());
        }
        if text.contains('*') {
            return Err(format!("{text}: a wildcard; list the jars instead"));
        }
        if text.contains(':') || text.contains('\n') {
            return Err(format!(
                "{text}: contains ':' or a newline, which a class path cannot carry"
            ));
        }
        let meta = fs::metadata(entry).map_err(|e| format!("{text}: {e}"))?;
        if meta.is_dir() {
            return Err(format!("{text}: a directory; pack it into a jar"));
        }
        let mut magic = [0u8; 2];
        File::open(entry)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(|e| format!("{text}: not a readable jar ({e})"))?;
        if &magic != b"PK" {
            return Err(format!("{text}: not a jar (zip) file"));
        }
    }
    Ok(())
}

/// What a training run starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `java … -jar JAR`.
    Jar(PathBuf),
    /// `java … -cp A:B:C MAIN`.
    Classpath {
        classpath: Vec<PathBuf>,
        main_class: String,
    },
}

impl Target {
    /// The class path the JVM gets: the jar itself for [`Target::Jar`].
    pub fn classpath(&self) -> Vec<PathBuf> {
        match self {
            Target::Jar(jar) => vec![jar.clone()],
            Target::Classpath { classpath, .. } => classpath.clone(),
        }
    }

    /// The arguments after the JVM flags, up to the app's own arguments.
    pub fn java_args(&self) -> Vec<OsString> {
        match self {
            Target::Jar(jar) => vec!["-jar".into(), jar.into()],
            Target::Classpath {
                classpath,
                main_class,
            } => vec!["-cp".into(), join_classpath(classpath), main_class.into()],
        }
    }

    fn absolute(&self) -> io::Result<Target> {
        Ok(match self {
            Target::Jar(jar) => Target::Jar(std::path::absolute(jar)?),
            Target::Classpath {
                classpath,
                main_class,
            } => Target::Classpath {
                classpath: classpath
                    .iter()
                    .map(std::path::absolute)
                    .collect::<io::Result<_>>()?,
                main_class: main_class.clone(),
            },
        })
    }
}

fn join_classpath(classpath: &[PathBuf]) -> OsString {
    let mut out = OsString::new();
    for (i, p) in classpath.iter().enumerate() {
        if i > 0 {
            out.push(":");
        }
        out.push(p);
    }
    out
}

/// A training run: see [`train`].
pub struct TrainSpec {
    /// The `java` executable (of the JDK the instances will use).
    pub java: PathBuf,
    /// What to start. Relative paths are taken from the current directory.
    pub target: Target,
    /// The app's arguments.
    pub args: Vec<String>,
    /// Environment added to this process's (e.g. `PORT`).
    pub env: Vec<(String, String)>,
    /// The instances' JVM flags (part of the archive key), before the training flags.
    pub jvm_flags: Vec<String>,
    pub kind: ArchiveKind,
    /// Where the archive goes; its stamp goes next to it ([`check_archive`]).
    pub archive_out: PathBuf,
    /// Readiness check, e.g. an HTTP GET of the health endpoint; polled every 50 ms.
    pub ready: Box<dyn FnMut() -> bool>,
    /// How long the app gets to become ready.
    pub start_timeout: Duration,
    /// How long the JVM gets to exit after SIGTERM, including writing the archive (the AOT cache
    /// is assembled by a second JVM at exit: seconds, not milliseconds).
    pub stop_timeout: Duration,
    /// Working directory of the JVM; this process's when `None`.
    pub workdir: Option<PathBuf>,
}

/// What a successful [`train`] made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrainReport {
    /// `archive_out`, absolute.
    pub archive: PathBuf,
    /// Archive size in bytes.
    pub size: u64,
    /// From spawn to the first successful readiness check.
    pub ready_after: Duration,
    /// The whole training, validation included.
    pub took: Duration,
}

/// Makes the archive for a release: runs the app once with [`training_flags`] (no shell, in its
/// own process group, output to a file), polls `ready` every 50 ms until `start_timeout`, then
/// sends SIGTERM to the JVM and waits up to `stop_timeout` for it to exit and write the
/// archive. Exit status 0, 130 or 143 (the JVM's answer to SIGTERM) is accepted. The archive
/// must then exist, carry the right magic number and be accepted by the same JVM with the same
/// class path and flags ([`validate`]). Only then is it renamed (atomically) to `archive_out`,
/// with its stamp next to it.
///
/// Fails, with the last lines of the JVM's output, when the class path is not CDS-safe, the app
/// exits before it is ready, is not ready in time, does not stop in time, exits otherwise, or
/// writes no usable archive. On every failure the process group is killed (no orphans) and
/// nothing is left next to `archive_out`. Blocks the calling thread.
pub fn train(mut spec: TrainSpec) -> Result<TrainReport, JavaError> {
    let started = Instant::now();
    let target = spec
        .target
        .absolute()
        .map_err(|e| spawn_error(&spec.java, e))?;
    let classpath = target.classpath();
    classpath_is_cds_safe(&classpath).map_err(|reason| JavaError::CdsUnsafeClasspath { reason })?;
    let archive_out = std::path::absolute(&spec.archive_out).map_err(|e| JavaError::Write {
        path: spec.archive_out.clone(),
        source: e,
    })?;
    let dir = archive_out.parent().unwrap_or(Path::new("/")).to_path_buf();
    let file_name = archive_out
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "archive".into());
    fs::create_dir_all(&dir).map_err(|e| write_error(&dir, e))?;
    let work = tempfile::Builder::new()
        .prefix(".train-")
        .tempdir_in(&dir)
        .map_err(|e| write_error(&dir, e))?;
    let tmp_archive = work.path().join(&file_name);
    let log_path = work.path().join("output.log");

    let mut cmd = Command::new(&spec.java);
    cmd.args(&spec.jvm_flags)
        .args(training_flags(spec.kind, &tmp_archive))
        .args(target.java_args())
        .args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = &spec.workdir {
        cmd.current_dir(dir);
    }
    let mut group = Group::spawn(cmd, &log_path, &spec.java)?;
    let fail = |group: &mut Group, failure: TrainFailure| {
        group.kill();
        JavaError::Train {
            java: spec.java.clone(),
            pid: group.pid,
            failure,
            output: tail(&log_path),
        }
    };

    // Ready?
    let deadline = started + spec.start_timeout;
    let ready_after = loop {
        match group.try_wait() {
            Ok(Some(status)) => {
                let status = describe(status);
                return Err(fail(&mut group, TrainFailure::ExitedBeforeReady { status }));
            }
            Ok(None) => {}
            Err(e) => return Err(fail(&mut group, io_failure("poll the JVM", &e))),
        }
        if (spec.ready)() {
            break started.elapsed();
        }
        if Instant::now() >= deadline {
            let waited = spec.start_timeout;
            return Err(fail(&mut group, TrainFailure::NotReady { waited }));
        }
        std::thread::sleep(POLL);
    };

    // Graceful stop: the archive is written at exit.
    if let Err(e) = kill(group.nix_pid(), Signal::SIGTERM) {
        let e = io::Error::from(e);
        return Err(fail(&mut group, io_failure("send SIGTERM", &e)));
    }
    let status = match group.wait_until(Instant::now() + spec.stop_timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let waited = spec.stop_timeout;
            return Err(fail(&mut group, TrainFailure::StopTimeout { waited }));
        }
        Err(e) => return Err(fail(&mut group, io_failure("wait for the JVM", &e))),
    };
    group.kill(); // whatever the app left running in its group
    if !clean_stop(status) {
        let status = describe(status);
        return Err(fail(&mut group, TrainFailure::BadExit { status }));
    }
    let size = match archive_size(spec.kind, &tmp_archive) {
        Ok(size) => size,
        Err(reason) => return Err(fail(&mut group, TrainFailure::NoArchive { reason })),
    };
    if let Err(reason) = validate(
        &spec.java,
        spec.kind,
        &tmp_archive,
        &classpath,
        &spec.jvm_flags,
    ) {
        return Err(fail(&mut group, TrainFailure::Rejected { reason }));
    }

    // Publish: the stamp first, then the archive, each by rename.
    let stamp = Stamp::of(&tmp_archive, &classpath).map_err(|e| write_error(&tmp_archive, e))?;
    let tmp_stamp = work.path().join("stamp");
    write_synced(&tmp_stamp, stamp.render().as_bytes())?;
    File::open(&tmp_archive)
        .and_then(|f| f.sync_all())
        .map_err(|e| write_error(&tmp_archive, e))?;
    let stamp_out = stamp_path(&archive_out);
    fs::rename(&tmp_stamp, &stamp_out).map_err(|e| write_error(&stamp_out, e))?;
    fs::rename(&tmp_archive, &archive_out).map_err(|e| write_error(&archive_out, e))?;
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_error(&dir, e))?;
    drop(work);
    Ok(TrainReport {
        archive: archive_out,
        size,
        ready_after,
        took: started.elapsed(),
    })
}

/// Whether `java` accepts `archive` for `classpath` with `jvm_flags`: runs
/// `java FLAGS -Xshare:on|-XX:AOTMode=on … -cp CLASSPATH -version`, which fails unless the
/// archive maps. Catches a corrupt or truncated archive, another JDK's, other flags (e.g.
/// `-XX:-UseCompressedOops`) and, for dynamic CDS, changed jars. It does not catch changed jars
/// for AOT caches on JDK ≤ 25.0.3 (JDK-8377932): [`check_archive`] does. Takes a JVM start
/// (~0.1–0.5 s). `-Xlog…` flags are left out. `Err` holds the JVM's explanation.
pub fn validate(
    java: &Path,
    kind: ArchiveKind,
    archive: &Path,
    classpath: &[PathBuf],
    jvm_flags: &[String],
) -> Result<(), String> {
    validate_as(java, kind, archive, classpath, jvm_flags, None)
}

/// [`validate`] with the JVM run as `run_as` (uid, gid; supplementary groups dropped) — an
/// archive an app's JVM wrote is mapped only by that app's user.
pub fn validate_as(
    java: &Path,
    kind: ArchiveKind,
    archive: &Path,
    classpath: &[PathBuf],
    jvm_flags: &[String],
    run_as: Option<(u32, u32)>,
) -> Result<(), String> {
    let work = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let log = work.path().join("output.log");
    let mut cmd = Command::new(java);
    if let Some((uid, gid)) = run_as {
        // std drops the supplementary groups (setgroups(0)) when root switches users.
        cmd.uid(uid).gid(gid).current_dir("/");
    }
    // Logging flags cannot change whether the archive maps, and may name the instance's log
    // files (GC logs), which this run must not touch.
    cmd.args(jvm_flags.iter().filter(|f| !f.starts_with("-Xlog")))
        .args(strict_flags(kind, archive))
        .arg("-cp")
        .arg(join_classpath(classpath))
        .arg("-version");
    let mut group = Group::spawn(cmd, &log, java).map_err(|e| e.to_string())?;
    let status = group
        .wait_until(Instant::now() + VALIDATE_TIMEOUT)
        .map_err(|e| format!("waiting for {}: {e}", java.display()))?;
    group.kill();
    match status {
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "{} ({}):\n{}",
            java.display(),
            describe(s),
            tail(&log)
        )),
        None => Err(format!(
            "{} -version did not exit within {VALIDATE_TIMEOUT:?}",
            java.display()
        )),
    }
}

/// Makes `candidate` (an archive just dumped, in a directory of the caller's, on the same file
/// system as `archive_out`) the archive at `archive_out`: it must carry `kind`'s magic number
/// and be accepted by `java` with `classpath` and `jvm_flags` ([`validate_as`], run as
/// `run_as`); then its stamp is written and both are renamed into place (the stamp first) and
/// synced. Returns the archive's size. On `Err` nothing is left at `archive_out`.
pub fn publish(
    java: &Path,
    kind: ArchiveKind,
    candidate: &Path,
    archive_out: &Path,
    classpath: &[PathBuf],
    jvm_flags: &[String],
    run_as: Option<(u32, u32)>,
) -> Result<u64, String> {
    let size = archive_size(kind, candidate)?;
    validate_as(java, kind, candidate, classpath, jvm_flags, run_as)?;
    let stamp = Stamp::of(candidate, classpath)
        .map_err(|e| format!("cannot read {} or its class path: {e}", candidate.display()))?;
    let stamp_out = stamp_path(archive_out);
    let tmp_stamp = stamp_path(candidate);
    write_synced(&tmp_stamp, stamp.render().as_bytes()).map_err(|e| e.to_string())?;
    File::open(candidate)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", candidate.display()))?;
    fs::rename(&tmp_stamp, &stamp_out).map_err(|e| format!("{}: {e}", stamp_out.display()))?;
    if let Err(e) = fs::rename(candidate, archive_out) {
        let _ = fs::remove_file(&stamp_out);
        return Err(format!("{}: {e}", archive_out.display()));
    }
    if let Some(dir) = archive_out.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(size)
}

/// Whether the archive at `archive` may be used by an instance whose class path is `classpath`:
/// its stamp (written by [`train`]) must match the archive's size and the class path entry by
/// entry (path, size, modification time). Cheap (a few `stat`s). Use [`run_flags`] only when it
/// says `Ok`; `Err` says why not (to log, and train again).
pub fn check_archive(archive: &Path, classpath: &[PathBuf]) -> Result<(), String> {
    let stamp_file = stamp_path(archive);
    let text = fs::read_to_string(&stamp_file)
        .map_err(|e| format!("no stamp {}: {e}", stamp_file.display()))?;
    let recorded = Stamp::parse(&text).ok_or_else(|| {
        format!(
            "{} is not a stamp written by jarfleet",
            stamp_file.display()
        )
    })?;
    let current = Stamp::of(archive, classpath)
        .map_err(|e| format!("cannot read {} or its class path: {e}", archive.display()))?;
    recorded.differs_from(&current).map_or(Ok(()), Err)
}

/// Where [`train`] writes the stamp of `archive`: `archive` + `.stamp`.
pub fn stamp_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_os_string();
    name.push(".stamp");
    PathBuf::from(name)
}

/// The archive's size and, per class path entry, path, size and mtime: what must not change
/// between training and use.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    archive_size: u64,
    /// (size, mtime in ns since the epoch, path)
    entries: Vec<(u64, u128, String)>,
}

impl Stamp {
    fn of(archive: &Path, classpath: &[PathBuf]) -> io::Result<Stamp> {
        let archive_size = fs::metadata(archive)?.len();
        let mut entries = Vec::with_capacity(classpath.len());
        for entry in classpath {
            let meta = fs::metadata(entry)?;
            let mtime = meta
                .modified()?
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let path = std::path::absolute(entry)?;
            entries.push((meta.len(), mtime, path.to_string_lossy().into_owned()));
        }
        Ok(Stamp {
            archive_size,
            entries,
        })
    }

    fn render(&self) -> String {
        let mut out = format!("{STAMP_HEADER}\narchive {}\n", self.archive_size);
        for (size, mtime, path) in &self.entries {
            let _ = writeln!(out, "entry {size} {mtime} {path}");
        }
        out
    }

    fn parse(text: &str) -> Option<Stamp> {
        let mut lines = text.lines();
        if lines.next()? != STAMP_HEADER {
            return None;
        }
        let archive_size = lines.next()?.strip_prefix("archive ")?.parse().ok()?;
        let mut entries = Vec::new();
        for line in lines {
            let rest = line.strip_prefix("entry ")?;
            let (size, rest) = rest.split_once(' ')?;
            let (mtime, path) = rest.split_once(' ')?;
            entries.push((size.parse().ok()?, mtime.parse().ok()?, path.to_string()));
        }
        Some(Stamp {
            archive_size,
            entries,
        })
    }

    /// The first difference between the recorded stamp (`self`) and the current one.
    fn differs_from(&self, now: &Stamp) -> Option<String> {
        if self.archive_size != now.archive_size {
            return Some(format!(
                "the archive has {} bytes, {} when it was trained (truncated or replaced)",
                now.archive_size, self.archive_size
            ));
        }
        let (was, is) = (&self.entries, &now.entries);
        for (i, (old, new)) in was.iter().zip(is).enumerate() {
            if old.2 != new.2 {
                return Some(format!(
                    "class path entry {i} is {}, {} when trained",
                    new.2, old.2
                ));
            }
            if old.0 != new.0 || old.1 != new.1 {
                return Some(format!("{} changed since training", new.2));
            }
        }
        if was.len() != is.len() {
            return Some(format!(
                "the class path has {} entries, {} when trained",
                is.len(),
                was.len()
            ));
        }
        None
    }
}

/// The size of the archive at `path` if it looks like one of `kind` (non-empty, right magic).
fn archive_size(kind: ArchiveKind, path: &Path) -> Result<u64, String> {
    let mut file = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .len();
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic)
        .map_err(|e| format!("{} ({size} bytes): {e}", path.display()))?;
    let found = u32::from_ne_bytes(magic);
    if found != kind.magic() {
        return Err(format!(
            "{} starts with {found:#010x}, not the {kind:?} magic {:#010x}",
            path.display(),
            kind.magic()
        ));
    }
    Ok(size)
}

/// After our SIGTERM: 0, 130 or 143 (the JVM's exit after a signal), or killed by TERM/INT.
fn clean_stop(status: ExitStatus) -> bool {
    match status.code() {
        Some(code) => matches!(code, 0 | 130 | 143),
        None => matches!(
            status.signal(),
            Some(s) if s == Signal::SIGTERM as i32 || s == Signal::SIGINT as i32
        ),
    }
}

fn describe(status: ExitStatus) -> String {
    status.to_string()
}

/// A spawned JVM in its own process group, killed with its group when dropped.
struct Group {
    child: Child,
    pid: u32,
    reaped: bool,
}

impl Group {
    /// Spawns `cmd` (stdin closed, stdout and stderr to `log`) as a process-group leader.
    fn spawn(mut cmd: Command, log: &Path, program: &Path) -> Result<Group, JavaError> {
        let out = File::create(log).map_err(|e| write_error(log, e))?;
        let err = out.try_clone().map_err(|e| write_error(log, e))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let child = cmd.spawn().map_err(|e| spawn_error(program, e))?;
        Ok(Group {
            pid: child.id(),
            child,
            reaped: false,
        })
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX))
    }

    fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        let status = self.child.try_wait()?;
        self.reaped |= status.is_some();
        Ok(status)
    }

    /// Polls for the leader's exit until `deadline`; `None` when it still runs then.
    fn wait_until(&mut self, deadline: Instant) -> io::Result<Option<ExitStatus>> {
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL);
        }
    }

    /// SIGKILL to the whole group (ignored when it is already gone), then reaps the leader.
    fn kill(&mut self) {
        let _ = killpg(self.nix_pid(), Signal::SIGKILL);
        if !self.reaped {
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last [`TAIL_LINES`] lines of the file at `path` (at most its last 16 KiB).
fn tail(path: &Path) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(16 * 1024);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(from)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    tail_lines(&String::from_utf8_lossy(&bytes), TAIL_LINES)
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), JavaError> {
    let mut f = File::create(path).map_err(|e| write_error(path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| write_error(path, e))
}

fn io_failure(action: &str, e: &io::Error) -> TrainFailure {
    TrainFailure::Io {
        action: action.to_string(),
        message: e.to_string(),
    }
}

fn spawn_error(program: &Path, source: io::Error) -> JavaError {
    JavaError::Spawn {
        program: program.to_path_buf(),
        source,
    }
}

fn write_error(path: &Path, source: io::Error) -> JavaError {
    JavaError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kind_by_feature_version() {
        let table = [
            (8, None),
            (11, None),
            (12, None),
            (13, Some(ArchiveKind::DynamicCds)),
            (17, Some(ArchiveKind::DynamicCds)),
            (21, Some(ArchiveKind::DynamicCds)),
            (24, Some(ArchiveKind::DynamicCds)),
            (25, Some(ArchiveKind::AotCache)),
            (26, Some(ArchiveKind::AotCache)),
        ];
        for (feature, kind) in table {
            assert_eq!(ArchiveKind::for_jdk(feature), kind, "Java {feature}");
        }
        assert_eq!(ArchiveKind::DynamicCds.extension(), "jsa");
        assert_eq!(ArchiveKind::AotCache.extension(), "aot");
    }

    #[test]
    fn flags_per_kind() {
        let a = Path::new("/var/jf/cds/k.jsa");
        assert_eq!(
            training_flags(ArchiveKind::DynamicCds, a),
            flags(&["-XX:ArchiveClassesAtExit=/var/jf/cds/k.jsa"])
        );
        assert_eq!(
            run_flags(ArchiveKind::DynamicCds, a),
            flags(&["-XX:SharedArchiveFile=/var/jf/cds/k.jsa", "-Xshare:auto"])
        );
        let a = Path::new("/var/jf/cds/k.aot");
        assert_eq!(
            training_flags(ArchiveKind::AotCache, a),
            flags(&["-XX:AOTCacheOutput=/var/jf/cds/k.aot"])
        );
        assert_eq!(
            run_flags(ArchiveKind::AotCache, a),
            flags(&["-XX:AOTCache=/var/jf/cds/k.aot"])
        );
        assert_eq!(
            strict_flags(ArchiveKind::AotCache, a),
            flags(&["-XX:AOTCache=/var/jf/cds/k.aot", "-XX:AOTMode=on"])
        );
    }

    #[test]
    fn dumps_on_demand() {
        for (feature, kind) in [
            (11, None),
            (16, None),
            (17, Some(ArchiveKind::DynamicCds)),
            (21, Some(ArchiveKind::DynamicCds)),
            (25, Some(ArchiveKind::DynamicCds)),
        ] {
            assert_eq!(dump_kind(feature), kind, "Java {feature}");
        }
        assert_eq!(
            dump_command_args(42, Path::new("/s/cds/a/.dump-x/archive.jsa")),
            vec![
                OsString::from("42"),
                OsString::from("VM.cds"),
                OsString::from("dynamic_dump"),
                OsString::from("/s/cds/a/.dump-x/archive.jsa")
            ]
        );
        assert_eq!(
            dump_blocked_by(&flags(&["-Xmx64m", "-XX:+UseSerialGC"])),
            None
        );
        for f in [
            "-Xshare:off",
            "-XX:SharedArchiveFile=/x.jsa",
            "-XX:ArchiveClassesAtExit=/x.jsa",
            "-XX:AOTCache=/x.aot",
        ] {
            assert_eq!(dump_blocked_by(&flags(&["-Xmx64m", f])), Some(f));
        }
    }

    #[test]
    fn archive_key_is_stable_and_sensitive() {
        let base = archive_key("sha256:abc", "Debian 17.0.15+6", &flags(&["-Xmx256m"]));
        assert_eq!(base.len(), 64);
        assert!(
            base.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        // Pinned: a change here invalidates every stored archive, so make it on purpose.
        assert_eq!(
            base,
            archive_key("sha256:abc", "Debian 17.0.15+6", &flags(&["-Xmx256m"]))
        );
        assert_eq!(base, PINNED_KEY, "archive key format changed");
        let others = [
            archive_key("sha256:abd", "Debian 17.0.15+6", &flags(&["-Xmx256m"])),
            archive_key("sha256:abc", "Debian 17.0.16+6", &flags(&["-Xmx256m"])),
            archive_key("sha256:abc", "Debian 17.0.15+6", &flags(&["-Xmx512m"])),
            archive_key("sha256:abc", "Debian 17.0.15+6", &flags(&[])),
            archive_key(
                "sha256:abc",
                "Debian 17.0.15+6",
                &flags(&["-Xmx256m", "-Xss1m"]),
            ),
            archive_key(
                "sha256:abc",
                "Debian 17.0.15+6",
                &flags(&["-Xss1m", "-Xmx256m"]),
            ),
            // Field boundaries are not ambiguous.
            archive_key("sha256:ab", "cDebian 17.0.15+6", &flags(&["-Xmx256m"])),
            archive_key("sha256:abc", "Debian 17.0.15+6", &flags(&["-Xmx2", "56m"])),
        ];
        for (i, k) in others.iter().enumerate() {
            assert_ne!(&base, k, "variant {i}");
            for (j, k2) in others.iter().enumerate().skip(i + 1) {
                assert_ne!(k, k2, "variants {i} and {j}");
            }
        }
    }

    const PINNED_KEY: &str = "4b0a9814dfce500246cd318b83f9f2dc0ab6ac747df05cc802cfac57924a9b9a";

    #[test]
    fn stamp_round_trip_and_differences() {
        let stamp = Stamp {
            archive_size: 5_455_872,
            entries: vec![
                (
                    1000,
                    1_700_000_000_123_456_789,
                    "/srv/r1/app.jar".to_string(),
                ),
                (
                    2000,
                    1_700_000_000_000_000_000,
                    "/srv/r1/lib/a b.jar".to_string(),
                ),
            ],
        };
        let text = stamp.render();
        assert!(
            text.starts_with("jarfleet-cds-stamp v1\narchive 5455872\n"),
            "{text}"
        );
        assert_eq!(Stamp::parse(&text), Some(stamp.clone()));
        assert_eq!(Stamp::parse("something else\n"), None);
        assert_eq!(Stamp::parse("jarfleet-cds-stamp v1\narchive x\n"), None);
        assert_eq!(stamp.differs_from(&stamp), None);

        let mut truncated = stamp.clone();
        truncated.archive_size = 100;
        assert!(
            stamp
                .differs_from(&truncated)
                .is_some_and(|r| r.contains("truncated")),
        );
        let mut touched = stamp.clone();
        touched.entries[1].1 += 1;
        assert_eq!(
            stamp.differs_from(&touched).as_deref(),
            Some("/srv/r1/lib/a b.jar changed since training")
        );
        let mut moved = stamp.clone();
        moved.entries[0].2 = "/srv/r2/app.jar".to_string();
        assert!(
            stamp
                .differs_from(&moved)
                .is_some_and(|r| r.contains("entry 0 is /srv/r2/app.jar"))
        );
        let mut longer = stamp.clone();
        longer.entries.push((1, 1, "/x.jar".to_string()));
        assert!(
            stamp
                .differs_from(&longer)
                .is_some_and(|r| r.contains("3 entries, 2 when trained"))
        );
    }

    #[test]
    fn classpath_safety() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jar = tmp.path().join("a.jar");
        crate::testutil::write_zip(&jar, &[("x.txt", b"x".to_vec())]);
        let text = tmp.path().join("notes.jar");
        fs::write(&text, "not a zip").expect("write");
        let dir = tmp.path().join("classes");
        fs::create_dir(&dir).expect("mkdir");
        assert_eq!(classpath_is_cds_safe(&[]), Ok(()));
        assert_eq!(classpath_is_cds_safe(std::slice::from_ref(&jar)), Ok(()));
        let err = |cp: &[PathBuf]| classpath_is_cds_safe(cp).expect_err("unsafe");
        assert!(err(&[jar.clone(), dir.clone()]).contains("a directory"));
        assert!(err(&[tmp.path().join("lib/*")]).contains("wildcard"));
        assert!(err(&[tmp.path().join("missing.jar")]).contains("missing.jar"));
        assert!(err(&[text]).contains("not a jar"));
        assert!(err(&[PathBuf::new()]).contains("empty"));
        assert!(err(&[PathBuf::from("/a:b.jar")]).contains("':'"));
    }

    #[test]
    fn targets() {
        let jar = Target::Jar(PathBuf::from("/r/app.jar"));
        assert_eq!(jar.classpath(), vec![PathBuf::from("/r/app.jar")]);
        assert_eq!(
            jar.java_args(),
            vec![OsString::from("-jar"), OsString::from("/r/app.jar")]
        );
        let cp = Target::Classpath {
            classpath: vec![PathBuf::from("/r/app.jar"), PathBuf::from("/r/lib/a.jar")],
            main_class: "com.example.Main".to_string(),
        };
        assert_eq!(
            cp.java_args(),
            vec![
                OsString::from("-cp"),
                OsString::from("/r/app.jar:/r/lib/a.jar"),
                OsString::from("com.example.Main")
            ]
        );
    }

    #[test]
    fn exit_statuses_after_sigterm() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        let signal = |s: i32| ExitStatus::from_raw(s);
        assert!(clean_stop(code(0)));
        assert!(clean_stop(code(143)));
        assert!(clean_stop(code(130)));
        assert!(clean_stop(signal(15)));
        assert!(!clean_stop(code(1)));
        assert!(!clean_stop(code(134)));
        assert!(!clean_stop(signal(9)));
        assert!(!clean_stop(signal(6)));
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let t = tail_lines(&text, 3);
        assert_eq!(t, "line 98\nline 99\nline 100");
        assert_eq!(tail_lines("", 3), "");
    }
}
