//! Finding installed JDKs. Reads `release` files only; never runs `java`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use jarfleet_core::javaver::{JavaVersion, parse_java_version};
use serde::Serialize;

use crate::error::JavaError;

const JAVA_EXE: &str = if cfg!(windows) { "java.exe" } else { "java" };

/// Where a JDK was found. One JDK can be found by several sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `JAVA_HOME` environment variable.
    JavaHome,
    /// The first `java` on `PATH`, symlinks resolved.
    Path,
    /// A child of a JVM directory such as `/usr/lib/jvm`.
    JvmDir,
    /// `/Library/Java/JavaVirtualMachines/*/Contents/Home` (macOS).
    MacOs,
    /// `~/.sdkman/candidates/java/*`.
    Sdkman,
    /// A home given by configuration (`java.home`, a bundled JRE).
    Configured,
}

/// An installed Java runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jdk {
    /// Canonical home directory (symlinks resolved), the one that holds `bin/java`.
    pub home: PathBuf,
    /// `home/bin/java`.
    pub java: PathBuf,
    /// From the `release` file; `None` when the home has no (readable) `release` file. Such a
    /// JDK is never picked by [`crate::select`], only used when named explicitly.
    pub version: Option<JavaVersion>,
    /// `IMPLEMENTOR` (e.g. "Eclipse Adoptium", "Debian"); empty when unknown.
    pub vendor: String,
    /// `JAVA_RUNTIME_VERSION` (e.g. "17.0.15+6-Debian-1deb12u1"), else `JAVA_VERSION`.
    pub runtime_version: String,
    /// Has `bin/javac` or `bin/jcmd` (a full JDK, not just a runtime).
    pub is_jdk: bool,
    /// `IMAGE_TYPE` ("JDK"/"JRE") when the release file says.
    pub image_type: Option<String>,
    /// `OS_ARCH` (e.g. "x86_64", "aarch64") when the release file says.
    pub arch: Option<String>,
    /// Which discovery sources found it, in discovery order.
    pub sources: Vec<Source>,
}

impl Jdk {
    /// The Java feature version (17 for 17.0.15), if known.
    pub fn feature(&self) -> Option<u32> {
        self.version.as_ref().map(|v| v.feature)
    }
}

impl fmt::Display for Jdk {
    /// `Java 17.0.15 (Debian, JDK) at /usr/lib/jvm/java-17-openjdk-amd64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.version {
            Some(v) => write!(f, "Java {v}")?,
            None => write!(f, "Java of unknown version (no release file)")?,
        }
        let vendor = if self.vendor.is_empty() {
            "unknown vendor"
        } else {
            &self.vendor
        };
        let kind = if self.is_jdk { "JDK" } else { "JRE" };
        write!(f, " ({vendor}, {kind}) at {}", self.home.display())
    }
}

/// Where [`discover_in`] looks. [`Sources::from_env`] gives the real ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources {
    /// Value of `JAVA_HOME`.
    pub java_home: Option<PathBuf>,
    /// Value of `PATH`.
    pub path: Option<OsString>,
    /// Directories whose children are JDK homes (`/usr/lib/jvm`).
    pub jvm_dirs: Vec<PathBuf>,
    /// Directories whose children are macOS bundles (`X.jdk/Contents/Home`).
    pub macos_dirs: Vec<PathBuf>,
    /// Directories whose children are SDKMAN! Java candidates.
    pub sdkman_dirs: Vec<PathBuf>,
    /// JDK homes given by configuration (a bundled JRE, `java.home`).
    pub configured_homes: Vec<PathBuf>,
}

impl Sources {
    /// The standard places on this machine, from the environment of this process.
    pub fn from_env() -> Sources {
        let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let home = non_empty("HOME").map(PathBuf::from);
        let mut macos_dirs = vec![PathBuf::from("/Library/Java/JavaVirtualMachines")];
        let mut sdkman_dirs = Vec::new();
        if let Some(sdkman) = non_empty("SDKMAN_DIR") {
            sdkman_dirs.push(PathBuf::from(sdkman).join("candidates/java"));
        }
        if let Some(home) = &home {
            macos_dirs.push(home.join("Library/Java/JavaVirtualMachines"));
            sdkman_dirs.push(home.join(".sdkman/candidates/java"));
        }
        Sources {
            java_home: non_empty("JAVA_HOME").map(PathBuf::from),
            path: non_empty("PATH"),
            jvm_dirs: vec![PathBuf::from("/usr/lib/jvm")],
            macos_dirs,
            sdkman_dirs,
            configured_homes: Vec::new(),
        }
    }
}

/// Installed JDKs found in the standard places ([`Sources::from_env`]).
pub fn discover() -> Vec<Jdk> {
    discover_in(&Sources::from_env())
}

/// Installed JDKs found in `sources`, deduplicated by canonical home, in discovery order
/// (`JAVA_HOME`, `PATH`, JVM dirs, macOS, SDKMAN!, configured; directory children by name).
///
/// A home without `bin/java` is skipped. A home with `bin/java` but no `release` file is kept
/// with `version: None`, except when found only through `PATH` (there it is usually a wrapper
/// such as macOS's `/usr/bin/java`).
pub fn discover_in(sources: &Sources) -> Vec<Jdk> {
    let mut candidates: Vec<(PathBuf, Source)> = Vec::new();
    if let Some(home) = &sources.java_home {
        candidates.push((home.clone(), Source::JavaHome));
    }
    if let Some(home) = sources.path.as_ref().and_then(home_from_path) {
        candidates.push((home, Source::Path));
    }
    for dir in &sources.jvm_dirs {
        candidates.extend(children(dir).into_iter().map(|h| (h, Source::JvmDir)));
    }
    for dir in &sources.macos_dirs {
        candidates.extend(
            children(dir)
                .into_iter()
                .map(|b| (b.join("Contents/Home"), Source::MacOs)),
        );
    }
    for dir in &sources.sdkman_dirs {
        candidates.extend(children(dir).into_iter().map(|h| (h, Source::Sdkman)));
    }
    for home in &sources.configured_homes {
        candidates.push((home.clone(), Source::Configured));
    }

    let mut found: Vec<Jdk> = Vec::new();
    for (candidate, source) in candidates {
        let Some(home) = resolve_home(&candidate) else {
            continue;
        };
        if let Some(jdk) = found.iter_mut().find(|j| j.home == home) {
            if !jdk.sources.contains(&source) {
                jdk.sources.push(source);
            }
            continue;
        }
        let jdk = probe(home, source);
        if jdk.version.is_none() && source == Source::Path {
            continue;
        }
        found.push(jdk);
    }
    found
}

/// The JDK at `home`, as named by configuration (`java.home`): it only has to contain
/// `bin/java`; without a `release` file its version is `None`.
pub fn jdk_at(home: &Path) -> Result<Jdk, JavaError> {
    let resolved = resolve_home(home).ok_or_else(|| JavaError::NotAJavaHome {
        home: home.to_path_buf(),
        java: home.join("bin").join(JAVA_EXE),
    })?;
    Ok(probe(resolved, Source::Configured))
}

/// The tool that takes thread dumps of a running JVM of this JDK (`bin/jcmd`), if present.
pub fn thread_dump_tool(jdk: &Jdk) -> Option<PathBuf> {
    let exe = if cfg!(windows) { "jcmd.exe" } else { "jcmd" };
    let jcmd = jdk.home.join("bin").join(exe);
    is_executable(&jcmd).then_some(jcmd)
}

/// Canonical home of a candidate directory, or `None` when it holds no executable `bin/java`.
/// The `jre/` directory inside a Java 8 JDK resolves to the JDK around it.
fn resolve_home(candidate: &Path) -> Option<PathBuf> {
    let home = fs::canonicalize(candidate).ok()?;
    if !is_executable(&home.join("bin").join(JAVA_EXE)) {
        return None;
    }
    let is_jre_in_jdk = !home.join("release").is_file()
        && home.file_name().is_some_and(|n| n == "jre")
        && home.parent().is_some_and(|p| {
            p.join("release").is_file() && is_executable(&p.join("bin").join(JAVA_EXE))
        });
    if is_jre_in_jdk {
        return home.parent().map(Path::to_path_buf);
    }
    Some(home)
}

/// The home above the first `java` on `PATH` (`…/bin/java` → `…`), symlinks resolved.
fn home_from_path(path: &OsString) -> Option<PathBuf> {
    let java = std::env::split_paths(path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(JAVA_EXE))
        .find(|p| is_executable(p))?;
    let real = fs::canonicalize(java).ok()?;
    let bin = real.parent()?;
    Some(bin.parent()?.to_path_buf())
}

/// Sub-directories (following symlinks) of `dir`, sorted by name; empty if unreadable.
fn children(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    out.sort();
    out
}

/// Reads what the home's `release` file says; `home` is canonical and holds `bin/java`.
fn probe(home: PathBuf, source: Source) -> Jdk {
    let release = fs::read_to_string(home.join("release"))
        .map(|text| parse_release(&text))
        .unwrap_or_default();
    let get = |k: &str| release.get(k).filter(|v| !v.is_empty()).cloned();
    let runtime = get("JAVA_RUNTIME_VERSION");
    let version = match get("JAVA_VERSION").and_then(|v| parse_java_version(&v)) {
        Some(mut v) => {
            // JAVA_VERSION has no build number; take it from the runtime version when it agrees.
            if let Some(rt) = runtime.as_deref().and_then(parse_java_version) {
                let same = |a: &JavaVersion| (a.feature, a.interim, a.update, a.patch);
                if same(&rt) == same(&v) && v.build.is_none() {
                    v.build = rt.build;
                }
            }
            Some(v)
        }
        None => runtime.as_deref().and_then(parse_java_version),
    };
    let bin = home.join("bin");
    let is_jdk = ["javac", "jcmd"].iter().any(|t| {
        let exe = if cfg!(windows) {
            format!("{t}.exe")
        } else {
            (*t).to_string()
        };
        is_executable(&bin.join(exe))
    });
    Jdk {
        java: bin.join(JAVA_EXE),
        version,
        vendor: get("IMPLEMENTOR").unwrap_or_default(),
        runtime_version: runtime.or_else(|| get("JAVA_VERSION")).unwrap_or_default(),
        is_jdk,
        image_type: get("IMAGE_TYPE"),
        arch: get("OS_ARCH"),
        sources: vec![source],
        home,
    }
}

/// Parses a `release` file: `KEY="value"` lines (quotes optional); other lines are ignored.
fn parse_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (k, v) = line.split_once('=')?;
            let k = k.trim();
            if k.is_empty() || k.starts_with('#') {
                return None;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

fn is_executable(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    if !meta.is_file() {
        return false;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeJdk, symlink};

    fn sources() -> Sources {
        Sources::default()
    }

    fn canon(p: &Path) -> PathBuf {
        fs::canonicalize(p).expect("canonicalize")
    }

    #[test]
    fn release_file_parsing() {
        let r = parse_release(
            "IMPLEMENTOR=\"Eclipse Adoptium\"\nJAVA_VERSION=\"21.0.2\"\nOS_ARCH=x86_64\n\
             # comment\ngarbage line\nEMPTY=\"\"\n",
        );
        assert_eq!(
            r.get("IMPLEMENTOR").map(String::as_str),
            Some("Eclipse Adoptium")
        );
        assert_eq!(r.get("JAVA_VERSION").map(String::as_str), Some("21.0.2"));
        assert_eq!(r.get("OS_ARCH").map(String::as_str), Some("x86_64"));
        assert_eq!(r.get("EMPTY").map(String::as_str), Some(""));
        assert_eq!(r.len(), 4);
    }

    #[test]
    fn java_home_source_reads_release_file() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = FakeJdk::new("21.0.2")
            .vendor("Eclipse Adoptium")
            .runtime("21.0.2+13-LTS")
            .image_type("JDK")
            .create(&tmp.path().join("temurin-21"));
        let found = discover_in(&Sources {
            java_home: Some(home.clone()),
            ..sources()
        });
        assert_eq!(found.len(), 1);
        let jdk = &found[0];
        assert_eq!(jdk.home, canon(&home));
        assert_eq!(jdk.java, canon(&home).join("bin/java"));
        let v = jdk.version.as_ref().expect("version");
        assert_eq!((v.feature, v.update, v.build), (21, 2, Some(13)));
        assert_eq!(jdk.vendor, "Eclipse Adoptium");
        assert_eq!(jdk.runtime_version, "21.0.2+13-LTS");
        assert_eq!(jdk.image_type.as_deref(), Some("JDK"));
        assert_eq!(jdk.arch.as_deref(), Some("x86_64"));
        assert!(jdk.is_jdk);
        assert_eq!(jdk.sources, vec![Source::JavaHome]);
        assert_eq!(thread_dump_tool(jdk), Some(canon(&home).join("bin/jcmd")));
        let json = serde_json::to_value(jdk).expect("serialize");
        assert_eq!(json["sources"][0], "java_home");
        assert_eq!(json["version"]["feature"], 21);
    }

    #[test]
    fn path_source_resolves_symlink_chain() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let home = FakeJdk::new("17.0.15").create(&t.join("jvm/java-17-openjdk-amd64"));
        // /usr/bin/java -> /etc/alternatives/java -> /usr/lib/jvm/java-17…/bin/java
        fs::create_dir_all(t.join("etc/alternatives")).expect("mkdir");
        fs::create_dir_all(t.join("usr/bin")).expect("mkdir");
        symlink(&home.join("bin/java"), &t.join("etc/alternatives/java"));
        symlink(&t.join("etc/alternatives/java"), &t.join("usr/bin/java"));
        // An earlier PATH entry with a non-executable `java` and one with none are skipped.
        fs::create_dir_all(t.join("noexec")).expect("mkdir");
        fs::write(t.join("noexec/java"), "not executable").expect("write");
        fs::create_dir_all(t.join("empty")).expect("mkdir");
        let path = std::env::join_paths([t.join("empty"), t.join("noexec"), t.join("usr/bin")])
            .expect("join");
        let found = discover_in(&Sources {
            path: Some(path),
            ..sources()
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].home, canon(&home));
        assert_eq!(found[0].sources, vec![Source::Path]);
        assert_eq!(found[0].feature(), Some(17));
    }

    #[test]
    fn path_source_without_release_file_is_skipped() {
        // Like macOS's /usr/bin/java stub: not an identifiable JDK.
        let tmp = tempfile::tempdir().expect("tempdir");
        let usr = tmp.path().join("usr");
        FakeJdk::without_release().create(&usr);
        let found = discover_in(&Sources {
            path: Some(usr.join("bin").into_os_string()),
            ..sources()
        });
        assert!(found.is_empty(), "{found:?}");
    }

    #[test]
    fn path_source_java8_jre_inside_jdk() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = FakeJdk::new("1.8.0_392").create(&tmp.path().join("jdk8"));
        FakeJdk::without_release().jre().create(&home.join("jre"));
        let found = discover_in(&Sources {
            path: Some(home.join("jre/bin").into_os_string()),
            jvm_dirs: vec![tmp.path().to_path_buf()],
            ..sources()
        });
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].home, canon(&home));
        assert_eq!(found[0].feature(), Some(8));
        assert_eq!(found[0].sources, vec![Source::Path, Source::JvmDir]);
    }

    #[test]
    fn jvm_dir_dedups_debian_aliases_and_merges_sources() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jvm = tmp.path().join("jvm");
        let j17 = FakeJdk::new("17.0.15")
            .vendor("Debian")
            .runtime("17.0.15+6-Debian-1deb12u1")
            .create(&jvm.join("java-17-openjdk-amd64"));
        symlink(
            Path::new("java-17-openjdk-amd64"),
            &jvm.join("java-1.17.0-openjdk-amd64"),
        );
        // Debian's openjdk-17 holds only src.zip: not a home.
        fs::create_dir_all(jvm.join("openjdk-17")).expect("mkdir");
        fs::write(jvm.join("openjdk-17/src.zip"), "").expect("write");
        // A stray file, and a JRE.
        fs::write(jvm.join(".java-1.17.0-openjdk-amd64.jinfo"), "").expect("write");
        let jre = FakeJdk::new("21.0.3").jre().create(&jvm.join("jre-21"));
        let found = discover_in(&Sources {
            java_home: Some(jvm.join("java-1.17.0-openjdk-amd64")),
            path: Some(j17.join("bin").into_os_string()),
            jvm_dirs: vec![jvm.clone(), tmp.path().join("missing")],
            ..sources()
        });
        let homes: Vec<&Path> = found.iter().map(|j| j.home.as_path()).collect();
        assert_eq!(homes, vec![canon(&j17).as_path(), canon(&jre).as_path()]);
        assert_eq!(
            found[0].sources,
            vec![Source::JavaHome, Source::Path, Source::JvmDir]
        );
        assert_eq!(found[0].vendor, "Debian");
        assert_eq!(found[0].version.as_ref().and_then(|v| v.build), Some(6));
        assert_eq!(found[1].sources, vec![Source::JvmDir]);
        assert!(!found[1].is_jdk);
        assert_eq!(thread_dump_tool(&found[1]), None);
    }

    #[test]
    fn macos_sdkman_and_configured_sources() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path();
        let mac = t.join("JavaVirtualMachines");
        let zulu = FakeJdk::new("21.0.4")
            .vendor("Azul Systems, Inc.")
            .create(&mac.join("zulu-21.jdk/Contents/Home"));
        // A bundle without Contents/Home is ignored.
        fs::create_dir_all(mac.join("broken.jdk/Contents")).expect("mkdir");
        let sdk = t.join("sdkman/candidates/java");
        let tem = FakeJdk::new("25").create(&sdk.join("25-tem"));
        symlink(Path::new("25-tem"), &sdk.join("current"));
        let bundled = FakeJdk::new("17.0.12").jre().create(&t.join("bundle/jre"));
        let bare = FakeJdk::without_release().create(&t.join("custom-build"));
        let found = discover_in(&Sources {
            macos_dirs: vec![mac],
            sdkman_dirs: vec![sdk],
            configured_homes: vec![bundled.clone(), bare.clone(), t.join("nothing-here")],
            ..sources()
        });
        let summary: Vec<(PathBuf, Option<u32>, Vec<Source>)> = found
            .iter()
            .map(|j| (j.home.clone(), j.feature(), j.sources.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (canon(&zulu), Some(21), vec![Source::MacOs]),
                (canon(&tem), Some(25), vec![Source::Sdkman]),
                (canon(&bundled), Some(17), vec![Source::Configured]),
                (canon(&bare), None, vec![Source::Configured]),
            ]
        );
        assert_eq!(found[0].vendor, "Azul Systems, Inc.");
    }

    #[test]
    fn jdk_at_explicit_home() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let bare = FakeJdk::without_release().create(&tmp.path().join("bare"));
        let jdk = jdk_at(&bare).expect("a home with bin/java");
        assert_eq!(jdk.version, None);
        assert_eq!(jdk.sources, vec![Source::Configured]);
        assert!(jdk.to_string().contains("unknown version"), "{jdk}");
        let err = jdk_at(&tmp.path().join("nope")).expect_err("no java");
        let text = err.to_string();
        assert!(text.contains("is not a Java installation"), "{text}");
        assert!(text.contains("nope/bin/java"), "{text}");
    }

    #[test]
    fn empty_sources_find_nothing() {
        assert!(discover_in(&Sources::default()).is_empty());
        let empty_path = Sources {
            path: Some(OsString::new()),
            java_home: Some(PathBuf::from("/definitely/not/here")),
            ..sources()
        };
        assert!(discover_in(&empty_path).is_empty());
    }

    /// Reads this machine's real JDKs. Needs at least one installed.
    #[test]
    fn real_machine_jdks() {
        let in_usr_lib_jvm = discover_in(&Sources {
            jvm_dirs: vec![PathBuf::from("/usr/lib/jvm")],
            ..sources()
        });
        let everywhere = discover();
        for list in [&in_usr_lib_jvm, &everywhere] {
            assert!(
                list.iter().any(|j| j.version.is_some()),
                "no JDK with a readable release file found in /usr/lib/jvm or via \
                 JAVA_HOME/PATH: install openjdk-17-jdk-headless (found: {list:?})"
            );
            let mut homes: Vec<&PathBuf> = list.iter().map(|j| &j.home).collect();
            homes.sort();
            homes.dedup();
            assert_eq!(homes.len(), list.len(), "duplicates in {list:?}");
            for j in list.iter() {
                assert!(j.java.is_file(), "{}", j.java.display());
            }
        }
        // Every JDK under /usr/lib/jvm is also in the full discovery.
        for j in &in_usr_lib_jvm {
            assert!(
                everywhere
                    .iter()
                    .any(|e| e.home == j.home && e.sources.contains(&Source::JvmDir))
            );
        }
    }
}
