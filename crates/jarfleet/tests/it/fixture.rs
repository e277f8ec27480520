//! Java fixtures for the integration tests.
//!
//! [`fixture_jar`] compiles `fixtures/app/src` (the flag-driven test service, see
//! `fixtures/README.md`) into `<workspace>/target/fixtures/<hash>/fixture-app.jar`, where `<hash>`
//! covers the sources and the build recipe, so an edited source gets a fresh jar and an unchanged
//! one is never rebuilt. Several test processes may race to build it: each builds in its own temp
//! dir and renames it into place; a loser drops its copy and uses the winner's.

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Bump when the build recipe below changes, so cached jars are not reused.
const RECIPE: &str = "fixture-app v1: javac --release 11 -encoding UTF-8; jar --main-class";
const MAIN_CLASS: &str = "jarfleet.fixture.FixtureApp";
const JAVAC_MISSING: &str =
    "javac not found: install a JDK (apt-get install -y openjdk-17-jdk-headless)";

/// The workspace root (`crates/jarfleet` is two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(Path::parent)
        .expect("CARGO_MANIFEST_DIR is <workspace>/crates/jarfleet")
        .to_path_buf()
}

/// The fixture app jar, built on first use (once per process, cached on disk across runs).
pub fn fixture_jar() -> PathBuf {
    static JAR: OnceLock<PathBuf> = OnceLock::new();
    JAR.get_or_init(build_fixture_jar).clone()
}

/// The committed jar of the `examples/hello` app (rebuilt by `examples/hello/build.sh`).
pub fn hello_jar() -> PathBuf {
    let jar = workspace_root().join("examples/hello/hello.jar");
    assert!(
        jar.is_file(),
        "{} is missing: run examples/hello/build.sh",
        jar.display()
    );
    jar
}

fn build_fixture_jar() -> PathBuf {
    let root = workspace_root();
    let src = root.join("fixtures/app/src");
    let mut files = Vec::new();
    collect_files(&src, &mut files);
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
        let rel = file.strip_prefix(&src).expect("file is under src");
        let contents = fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        hash.write(rel.to_string_lossy().replace('\\', "/").as_bytes());
        hash.write(&[0]);
        hash.write(&(contents.len() as u64).to_le_bytes());
        hash.write(&contents);
    }

    let cache = root.join("target/fixtures");
    let dest = cache.join(format!("{:016x}", hash.finish()));
    let jar = dest.join("fixture-app.jar");
    if jar.is_file() {
        return jar;
    }

    let (javac, jar_tool) = find_jdk_tools();
    fs::create_dir_all(&cache).unwrap_or_else(|e| panic!("create {}: {e}", cache.display()));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tmp = cache.join(format!(".tmp-{}-{nanos}", std::process::id()));
    let classes = tmp.join("classes");
    fs::create_dir_all(&classes).unwrap_or_else(|e| panic!("create {}: {e}", classes.display()));

    let mut javac_cmd = Command::new(&javac);
    javac_cmd
        .args(["--release", "11", "-encoding", "UTF-8", "-nowarn", "-d"])
        .arg(&classes);
    javac_cmd.args(
        files
            .iter()
            .filter(|f| f.extension() == Some(OsStr::new("java"))),
    );
    run(javac_cmd, &tmp);
    let mut jar_cmd = Command::new(&jar_tool);
    jar_cmd
        .args(["--create", "--file"])
        .arg(tmp.join("fixture-app.jar"))
        .args(["--main-class", MAIN_CLASS, "-C"])
        .arg(&classes)
        .arg(".");
    run(jar_cmd, &tmp);

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

/// How long one JDK tool run (javac, jar) may take on a loaded machine.
const JDK_TOOL_DEADLINE: std::time::Duration = std::time::Duration::from_secs(300);

/// Runs a JDK tool; on failure removes `tmp` and panics with the tool's output.
fn run(mut cmd: Command, tmp: &Path) {
    let out = jarfleet_testkit::run_with_deadline(&mut cmd, JDK_TOOL_DEADLINE)
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    if !out.status.success() {
        let _ = fs::remove_dir_all(tmp);
        panic!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    // Resolve symlinks (/usr/bin/javac -> /usr/lib/jvm/...) so `jar` comes from the same JDK.
    let real = fs::canonicalize(&javac).unwrap_or_else(|_| javac.clone());
    let jar = real
        .parent()
        .map(|d| d.join("jar"))
        .filter(|p| p.is_file())
        .or_else(|| dirs.iter().map(|d| d.join("jar")).find(|p| p.is_file()))
        .unwrap_or_else(|| panic!("jar not found next to {} nor on PATH", real.display()));
    (javac, jar)
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .path();
        if path.is_dir() {
            collect_files(&path, out);
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

/// A copy of the fixture jar at `dest` whose built-in defaults are `props` (flag name → value,
/// e.g. `version=v2`, `ready-delay=1h`): a different artifact, as a deploy needs.
pub fn fixture_variant(dest: &Path, props: &[(&str, &str)]) -> PathBuf {
    let dir = dest.parent().expect("dest has a parent").join(format!(
        ".variant-{}",
        dest.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    fs::create_dir_all(&dir).expect("variant dir");
    let text: String = props.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    fs::write(dir.join("jarfleet-fixture.properties"), text).expect("properties");
    fs::copy(fixture_jar(), dest).expect("copy the fixture jar");
    let (_, jar) = find_jdk_tools();
    let out = jarfleet_testkit::run_with_deadline(
        Command::new(&jar)
            .arg("uf")
            .arg(dest)
            .arg("-C")
            .arg(&dir)
            .arg("jarfleet-fixture.properties"),
        JDK_TOOL_DEADLINE,
    )
    .expect("running jar");
    assert!(
        out.status.success(),
        "jar uf failed for {}: {}",
        dest.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    dest.to_path_buf()
}

/// A tool of the JDK that builds the fixtures (`jlink`, `jcmd`, ...).
pub fn jdk_tool(name: &str) -> PathBuf {
    let (_, jar) = find_jdk_tools();
    let tool = jar.with_file_name(name);
    assert!(
        tool.is_file(),
        "{} not found (apt-get install -y openjdk-17-jdk-headless)",
        tool.display()
    );
    tool
}
