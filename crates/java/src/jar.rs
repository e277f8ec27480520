//! Reading what a jar needs: manifest attributes and class-file versions.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Serialize;
use zip::ZipArchive;
use zip::result::ZipError;

use crate::error::JavaError;

/// Class-file major version of Java 1.0/1.1; feature N has major N + 44 (Java 8 = 52).
const MAJOR_OFFSET: u16 = 44;
/// The oldest Java jarfleet runs; jars with older classes still need at least this.
const MIN_FEATURE: u32 = 8;
/// Manifests larger than this are cut (a guard against zip bombs).
const MAX_MANIFEST: u64 = 1 << 20;

/// What [`inspect_jar`] learned about a jar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JarInfo {
    /// Manifest `Main-Class`.
    pub main_class: Option<String>,
    /// Manifest `Start-Class` (Spring Boot: the application's own main class).
    pub start_class: Option<String>,
    /// Manifest `Spring-Boot-Version`.
    pub spring_boot_version: Option<String>,
    /// Manifest `Spring-Boot-Classes` (e.g. `BOOT-INF/classes/`).
    pub spring_boot_classes: Option<String>,
    /// Manifest `Spring-Boot-Lib` (e.g. `BOOT-INF/lib/`).
    pub spring_boot_lib: Option<String>,
    /// Manifest `Build-Jdk-Spec` (Maven: the feature version of the JDK that built it).
    pub build_jdk_spec: Option<String>,
    /// Manifest `Multi-Release: true`.
    pub multi_release: bool,
    /// Newest class-file major version among the base classes (61 = Java 17).
    pub max_class_major: Option<u16>,
    /// Minimum Java feature version that can load every base class: `max_class_major - 44`,
    /// at least 8. Classes under `META-INF/versions/` are ignored (they are only loaded by a
    /// Java new enough for them). `BOOT-INF/classes/**` and `WEB-INF/classes/**` count; classes
    /// inside nested library jars are not inspected.
    pub min_java_feature: u32,
    /// Number of base classes read.
    pub class_count: usize,
}

impl JarInfo {
    /// A Spring Boot executable jar (has `Start-Class` or `Spring-Boot-Version`).
    pub fn is_spring_boot(&self) -> bool {
        self.start_class.is_some() || self.spring_boot_version.is_some()
    }
}

/// Reads the manifest and the first 8 bytes of each base class of the jar at `path`.
pub fn inspect_jar(path: impl AsRef<Path>) -> Result<JarInfo, JavaError> {
    let path = path.as_ref();
    let mut zip = open_jar(path)?;

    let manifest = read_manifest(&mut zip, path)?;
    let attr = |name: &str| {
        manifest
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };

    let mut max_major: Option<u16> = None;
    let mut class_count = 0usize;
    for i in 0..zip.len() {
        let Some(name) = zip.name_for_index(i) else {
            continue;
        };
        if !is_base_class(name) {
            continue;
        }
        let name = name.to_string();
        let mut entry = zip.by_index(i).map_err(|e| entry_error(path, &name, e))?;
        let mut header = [0u8; 8];
        match read_up_to(&mut entry, &mut header) {
            Ok(8) => {}
            Ok(_) => continue, // too short to be a class file
            Err(e) => {
                return Err(JavaError::BadEntry {
                    path: path.to_path_buf(),
                    entry: name,
                    reason: e.to_string(),
                });
            }
        }
        if header[..4] != [0xCA, 0xFE, 0xBA, 0xBE] {
            continue; // not a class file, whatever its name
        }
        let major = u16::from_be_bytes([header[6], header[7]]);
        class_count += 1;
        max_major = Some(max_major.map_or(major, |m| m.max(major)));
    }
    if class_count == 0 {
        return Err(JavaError::NoClasses {
            path: path.to_path_buf(),
        });
    }
    let min_java_feature = max_major
        .map_or(MIN_FEATURE, |m| u32::from(m.saturating_sub(MAJOR_OFFSET)))
        .max(MIN_FEATURE);

    Ok(JarInfo {
        main_class: attr("Main-Class"),
        start_class: attr("Start-Class"),
        spring_boot_version: attr("Spring-Boot-Version"),
        spring_boot_classes: attr("Spring-Boot-Classes"),
        spring_boot_lib: attr("Spring-Boot-Lib"),
        build_jdk_spec: attr("Build-Jdk-Spec"),
        multi_release: attr("Multi-Release").is_some_and(|v| v.eq_ignore_ascii_case("true")),
        max_class_major: max_major,
        min_java_feature,
        class_count,
    })
}

/// Opens the jar at `path` for reading its entries (only the central directory is read).
pub(crate) fn open_jar(path: &Path) -> Result<ZipArchive<File>, JavaError> {
    let file = File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => JavaError::JarNotFound {
            path: path.to_path_buf(),
        },
        _ => JavaError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(JavaError::NotAJar {
            path: path.to_path_buf(),
            reason: "it is a directory".to_string(),
        });
    }
    ZipArchive::new(file).map_err(|e| open_error(path, e))
}

/// A `.class` entry that any Java loads: not under `META-INF/` (so not a versioned class of a
/// multi-release jar), and not under `…/META-INF/versions/` of `BOOT-INF/classes/` either.
fn is_base_class(name: &str) -> bool {
    name.ends_with(".class")
        && !name.starts_with("META-INF/")
        && !name.contains("/META-INF/versions/")
}

/// Reads until `buf` is full or the entry ends; returns the number of bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Main-section attributes of `META-INF/MANIFEST.MF`, in order; empty when there is none.
pub(crate) fn read_manifest(
    zip: &mut ZipArchive<File>,
    path: &Path,
) -> Result<Vec<(String, String)>, JavaError> {
    let Some(index) = (0..zip.len()).find(|&i| {
        zip.name_for_index(i)
            .is_some_and(|n| n.eq_ignore_ascii_case("META-INF/MANIFEST.MF"))
    }) else {
        return Ok(Vec::new());
    };
    let mut entry = zip
        .by_index(index)
        .map_err(|e| entry_error(path, "META-INF/MANIFEST.MF", e))?;
    let mut bytes = Vec::new();
    (&mut entry)
        .take(MAX_MANIFEST)
        .read_to_end(&mut bytes)
        .map_err(|e| JavaError::BadEntry {
            path: path.to_path_buf(),
            entry: "META-INF/MANIFEST.MF".to_string(),
            reason: e.to_string(),
        })?;
    Ok(parse_manifest(&String::from_utf8_lossy(&bytes)))
}

/// Parses the main section of a manifest: `Name: value` lines, continuation lines start with
/// one space, the section ends at the first empty line.
pub(crate) fn parse_manifest(text: &str) -> Vec<(String, String)> {
    let mut attrs: Vec<(String, String)> = Vec::new();
    for line in text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l)) {
        if line.is_empty() {
            if attrs.is_empty() {
                continue; // tolerate leading blank lines
            }
            break;
        }
        if let Some(cont) = line.strip_prefix(' ') {
            if let Some((_, v)) = attrs.last_mut() {
                v.push_str(cont);
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            attrs.push((
                k.trim().to_string(),
                v.strip_prefix(' ').unwrap_or(v).to_string(),
            ));
        }
    }
    for (_, v) in &mut attrs {
        let trimmed = v.trim_end();
        if trimmed.len() != v.len() {
            *v = trimmed.to_string();
        }
    }
    attrs
}

fn open_error(path: &Path, e: ZipError) -> JavaError {
    match e {
        ZipError::Io(source) if source.kind() != io::ErrorKind::UnexpectedEof => JavaError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => JavaError::NotAJar {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

pub(crate) fn entry_error(path: &Path, entry: &str, e: ZipError) -> JavaError {
    JavaError::BadEntry {
        path: PathBuf::from(path),
        entry: entry.to_string(),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{class_bytes, write_zip};
    use std::process::Command;

    fn manifest(lines: &[&str]) -> Vec<u8> {
        let mut s = String::from("Manifest-Version: 1.0\r\n");
        for l in lines {
            s.push_str(l);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    #[test]
    fn hand_made_jar_major_61_is_java_17() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jar = tmp.path().join("app.jar");
        write_zip(
            &jar,
            &[
                (
                    "META-INF/MANIFEST.MF",
                    manifest(&[
                        "Main-Class: com.example.Main",
                        "Multi-Release: true",
                        "Build-Jdk-Spec: 17",
                    ]),
                ),
                ("com/", vec![]),
                ("com/example/", vec![]),
                ("com/example/Main.class", class_bytes(61)),
                ("com/example/Util.class", class_bytes(55)),
                // Versioned classes of a multi-release jar do not raise the minimum.
                (
                    "META-INF/versions/21/com/example/Util.class",
                    class_bytes(65),
                ),
                ("module-info.class", class_bytes(53)),
                ("com/example/res.txt", b"hello".to_vec()),
                ("com/example/Broken.class", b"nope".to_vec()),
                (
                    "com/example/NotAClass.class",
                    b"definitely not a class file".to_vec(),
                ),
            ],
        );
        let info = inspect_jar(&jar).expect("inspect");
        assert_eq!(info.main_class.as_deref(), Some("com.example.Main"));
        assert_eq!(info.start_class, None);
        assert_eq!(info.build_jdk_spec.as_deref(), Some("17"));
        assert!(info.multi_release);
        assert!(!info.is_spring_boot());
        assert_eq!(info.max_class_major, Some(61));
        assert_eq!(info.min_java_feature, 17);
        assert_eq!(info.class_count, 3);
    }

    #[test]
    fn old_classes_need_at_least_java_8() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jar = tmp.path().join("old.jar");
        write_zip(&jar, &[("Old.class", class_bytes(49))]);
        let info = inspect_jar(&jar).expect("inspect");
        assert_eq!(info.max_class_major, Some(49));
        assert_eq!(info.min_java_feature, 8);
        assert_eq!(info.main_class, None);
        assert!(!info.multi_release);
    }

    #[test]
    fn spring_boot_fat_jar_layout() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jar = tmp.path().join("boot.jar");
        write_zip(
            &jar,
            &[
                (
                    "META-INF/MANIFEST.MF",
                    manifest(&[
                        "Main-Class: org.springframework.boot.loader.launch.JarLauncher",
                        // Continuation lines as written by the jar tool (72-byte lines).
                        "Start-Class: com.example.demo.averyveryveryveryveryverylongpackagename",
                        " .DemoApplication",
                        "Spring-Boot-Version: 3.3.4",
                        "Spring-Boot-Classes: BOOT-INF/classes/",
                        "Spring-Boot-Lib: BOOT-INF/lib/",
                    ]),
                ),
                (
                    "org/springframework/boot/loader/launch/JarLauncher.class",
                    class_bytes(61),
                ),
                (
                    "BOOT-INF/classes/com/example/demo/DemoApplication.class",
                    class_bytes(65),
                ),
                (
                    "BOOT-INF/classes/application.properties",
                    b"server.port=0".to_vec(),
                ),
                (
                    "BOOT-INF/classes/META-INF/versions/25/X.class",
                    class_bytes(69),
                ),
                (
                    "BOOT-INF/lib/spring-core-6.1.13.jar",
                    b"PK not inspected".to_vec(),
                ),
            ],
        );
        let info = inspect_jar(&jar).expect("inspect");
        assert!(info.is_spring_boot());
        assert_eq!(
            info.start_class.as_deref(),
            Some("com.example.demo.averyveryveryveryveryverylongpackagename.DemoApplication")
        );
        assert_eq!(
            info.main_class.as_deref(),
            Some("org.springframework.boot.loader.launch.JarLauncher")
        );
        assert_eq!(info.spring_boot_version.as_deref(), Some("3.3.4"));
        assert_eq!(
            info.spring_boot_classes.as_deref(),
            Some("BOOT-INF/classes/")
        );
        assert_eq!(info.spring_boot_lib.as_deref(), Some("BOOT-INF/lib/"));
        assert_eq!(info.max_class_major, Some(65));
        assert_eq!(info.min_java_feature, 21);
        assert_eq!(info.class_count, 2);
    }

    #[test]
    fn manifest_parsing_details() {
        let attrs = parse_manifest(
            "Manifest-Version: 1.0\nMain-Class: a.b\n C\nX-Empty:\nCreated-By: 17 (Debian)  \n\n\
             Name: a/b/C.class\nMain-Class: ignored.In.Section\n",
        );
        assert_eq!(
            attrs,
            vec![
                ("Manifest-Version".to_string(), "1.0".to_string()),
                ("Main-Class".to_string(), "a.bC".to_string()),
                ("X-Empty".to_string(), String::new()),
                ("Created-By".to_string(), "17 (Debian)".to_string()),
            ]
        );
    }

    #[test]
    fn errors_name_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let missing = tmp.path().join("missing.jar");
        let err = inspect_jar(&missing).expect_err("missing");
        assert!(matches!(err, JavaError::JarNotFound { .. }), "{err:?}");
        assert!(err.to_string().contains("missing.jar"), "{err}");

        let text = tmp.path().join("text.jar");
        std::fs::write(&text, "this is not a zip file at all").expect("write");
        let err = inspect_jar(&text).expect_err("text");
        assert!(matches!(err, JavaError::NotAJar { .. }), "{err:?}");
        assert!(err.to_string().contains("text.jar is not a jar"), "{err}");

        let empty = tmp.path().join("empty.jar");
        std::fs::write(&empty, "").expect("write");
        let err = inspect_jar(&empty).expect_err("empty");
        assert!(matches!(err, JavaError::NotAJar { .. }), "{err:?}");

        let err = inspect_jar(tmp.path()).expect_err("dir");
        assert!(matches!(err, JavaError::NotAJar { .. }), "{err:?}");

        let no_classes = tmp.path().join("resources.jar");
        write_zip(
            &no_classes,
            &[
                ("META-INF/MANIFEST.MF", manifest(&["Main-Class: Nope"])),
                ("META-INF/versions/17/Only.class", class_bytes(61)),
                ("data.txt", b"x".to_vec()),
            ],
        );
        let err = inspect_jar(&no_classes).expect_err("no classes");
        assert!(matches!(err, JavaError::NoClasses { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains("resources.jar contains no Java classes"),
            "{err}"
        );
    }

    /// A jar built by the real `javac --release 11` and `jar` of an installed JDK.
    #[test]
    fn real_javac_release_11_jar() {
        let jdk = crate::discover()
            .into_iter()
            .filter(|j| j.home.join("bin/javac").is_file() && j.home.join("bin/jar").is_file())
            .max_by_key(|j| j.version.clone());
        let Some(jdk) = jdk else {
            panic!("no JDK with javac and jar found: install openjdk-17-jdk-headless");
        };
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src/demo");
        std::fs::create_dir_all(&src).expect("mkdir");
        std::fs::write(
            src.join("Hello.java"),
            "package demo;\npublic class Hello {\n  interface Greeter { String greet(); }\n  \
             public static void main(String[] args) {\n    var g = (Greeter) () -> \"hi\";\n    \
             System.out.println(g.greet());\n  }\n}\n",
        )
        .expect("write source");
        let classes = tmp.path().join("classes");
        let deadline = std::time::Duration::from_secs(300);
        let out = jarfleet_testkit::run_with_deadline(
            Command::new(jdk.home.join("bin/javac"))
                .args(["--release", "11", "-d"])
                .arg(&classes)
                .arg(src.join("Hello.java")),
            deadline,
        )
        .expect("run javac");
        assert!(
            out.status.success(),
            "javac failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let jar = tmp.path().join("hello.jar");
        let out = jarfleet_testkit::run_with_deadline(
            Command::new(jdk.home.join("bin/jar"))
                .args(["--create", "--file"])
                .arg(&jar)
                .args(["--main-class", "demo.Hello", "-C"])
                .arg(&classes)
                .arg("."),
            deadline,
        )
        .expect("run jar");
        assert!(
            out.status.success(),
            "jar failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        let info = inspect_jar(&jar).expect("inspect");
        assert_eq!(info.min_java_feature, 11, "{info:?}");
        assert_eq!(info.max_class_major, Some(55));
        assert_eq!(info.main_class.as_deref(), Some("demo.Hello"));
        assert_eq!(info.class_count, 2, "Hello and Hello$Greeter: {info:?}");
        assert!(!info.multi_release);
    }
}
