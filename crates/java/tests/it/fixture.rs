//! The Spring-Boot-shaped fixture jar and the JDKs the tests run.
//!
//! [`boot_jar`] runs `fixtures/boot/build.sh` (javac + jar only, see `fixtures/boot/README.md`)
//! into `<workspace>/target/fixtures/boot-<hash>/boot-app.jar`, where `<hash>` covers everything
//! under `fixtures/boot/` except `build/`, so an edited source gets a fresh jar and an unchanged
//! one is never rebuilt. Test processes building at once take turns (a lock file); each builds in
//! its own temp dir and renames it into place, so a crash never leaves a half-built jar.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use jarfleet_java::{Jdk, Sources, discover, discover_in};

/// Bump when the build recipe (here or in build.sh's caller contract) changes.
const RECIPE: &str = "boot-fixture v1: bash build.sh OUT with JAVAC/JAR";
const JAVAC_MISSING: &str =
    "javac not found: install a JDK (apt-get install -y openjdk-17-jdk-headless)";

/// The workspace root (`crates/java` is two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("CARGO_MANIFEST_DIR is <workspace>/crates/java")
        .to_path_buf()
}

/// The fixture's fat jar, built on first use (once per process, cached on disk across runs).
pub fn boot_jar() -> PathBuf {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(build_boot_jar).clone()
}

/// The installed JDK 17 (the machine's default JDK).
pub fn jdk17() -> Jdk {
    discover()
        .into_iter()
        .find(|j| j.feature() == Some(17))
        .unwrap_or_else(|| panic!("no JDK 17 found: apt-get install -y openjdk-17-jdk-headless"))
}

/// A JDK 25 under /usr/lib/jvm (e.g. `temurin-25-jdk-amd64`).
pub fn jdk25() -> Jdk {
    discover_in(&Sources {
        jvm_dirs: vec![PathBuf::from("/usr/lib/jvm")],
        ..Sources::default()
    })
    .into_iter()
    .find(|j| j.feature() == Some(25))
    .unwrap_or_else(|| {
        panic!(
            "no JDK 25 under /usr/lib/jvm: install one (e.g. apt-get install -y temurin-25-jdk \
             from the Adoptium apt repository) to test the AOT cache"
        )
    })
}

fn build_boot_jar() -> PathBuf {
    let root = workspace_root();
    let src = root.join("fixtures/boot");
    let mut files = Vec::new();
    collect_files(&src, &src.join("build"), &mut files);
    files.sort();
    assert!(
        files
            .iter()
            .any(|f| f.extension() == Some(OsStr::new("java"))),
        "no Java sources under {}",
        src.display()
    );
    let mut hash = Fnv64::new();
    hash.write(RECIPE.as_bytes());
    for file in &files {
        let rel = file
            .strip_prefix(&src)
            .expect("file is under fixtures/boot");
        let contents = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        hash.write(rel.to_string_lossy().replace('\\', "/").as_bytes());
        hash.write(&[0]);
        hash.write(&(contents.len() as u64).to_le_bytes());
        hash.write(&contents);
    }

    let cache = root.join("target/fixtures");
    let dest = cache.join(format!("boot-{:016x}", hash.finish()));
    let jar = dest.join("boot-app.jar");
    if jar.is_file() {
        return jar;
    }
    let (javac, jar_tool) = find_jdk_tools();
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    // One build at a time: javac is heavy, and several test processes start together.
    let lock = fs::File::create(cache.join(".boot.lock")).expect("create the build lock");
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("lock the fixture build: {e}"));
    if jar.is_file() {
        return jar; // built by another process while we waited
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = cache.join(format!(".tmp-boot-{}-{nanos}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap_or_else(|e| panic!("create {}: {e}", tmp.display()));
    let out = jarfleet_testkit::run_with_deadline(
        Command::new("bash")
            .arg(src.join("build.sh"))
            .arg(&tmp)
            .env("JAVAC", &javac)
            .env("JAR", &jar_tool),
        std::time::Duration::from_secs(300),
    )
    .unwrap_or_else(|e| panic!("run bash fixtures/boot/build.sh: {e}"));
    if !out.status.success() {
        let _ = fs::remove_dir_all(&tmp);
        panic!(
            "fixtures/boot/build.sh failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // rename(2) of a directory fails when the target exists: then another process won the race.
    if let Err(e) = fs::rename(&tmp, &dest) {
        let _ = fs::remove_dir_all(&tmp);
        assert!(
            jar.is_file(),
            "move fixture build into {}: {e}",
            dest.display()
        );
    }
    jar
}

/// `javac` and `jar` from `$JAVA_HOME/bin`, else from `PATH` (`jar` preferably next to `javac`).
fn find_jdk_tools() -> (PathBuf, PathBuf) {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|h| !h.is_empty()) {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    let javac = dirs
        .iter()
        .map(|d| d.join("javac"))
        .find(|p| p.is_file())
        .expect(JAVAC_MISSING);
    let real = fs::canonicalize(&javac).unwrap_or_else(|_| javac.clone());
    let jar = real
        .parent()
        .map(|d| d.join("jar"))
        .filter(|p| p.is_file())
        .or_else(|| dirs.iter().map(|d| d.join("jar")).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("jar not found next to {} nor on PATH", real.display()));
    (javac, jar)
}

fn collect_files(dir: &Path, skip: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .path();
        if path == skip {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, skip, out);
        } else {
            out.push(path);
        }
    }
}

/// FNV-1a, 64 bit: enough to key a cache of our own sources.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
