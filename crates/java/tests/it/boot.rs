//! Spring Boot jars: detection, layout extraction, and running the extracted layout.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use jarfleet_java::JavaError;
use jarfleet_java::boot::{self, BootJar};
use zip::ZipArchive;
use zip::write::SimpleFileOptions;

use crate::fixture::{boot_jar, jdk17};
use crate::jvm::Jvm;

fn entry_names(jar: &Path) -> Vec<String> {
    let zip = ZipArchive::new(fs::File::open(jar).expect("open jar")).expect("read jar");
    zip.file_names().map(str::to_string).collect()
}

fn entry_bytes(jar: &Path, name: &str) -> Vec<u8> {
    let mut zip = ZipArchive::new(fs::File::open(jar).expect("open jar")).expect("read jar");
    let mut entry = zip.by_name(name).expect("entry");
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).expect("read entry");
    bytes
}

/// Names in `dir`, for "nothing left behind" checks.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const BOOT_MANIFEST: &str = "Manifest-Version: 1.0\r\nMain-Class: org.example.Launcher\r\n\
    Start-Class: com.example.App\r\n\r\n";

/// A hand-made jar: (name, content); names ending in `/` are directories.
fn write_jar(path: &Path, entries: &[(&str, &[u8])]) {
    let mut zip = zip::ZipWriter::new(fs::File::create(path).expect("create jar"));
    let opts = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, content) in entries {
        if name.ends_with('/') {
            zip.add_directory(*name, opts).expect("add dir");
        } else {
            zip.start_file(*name, opts).expect("start file");
            zip.write_all(content).expect("write entry");
        }
    }
    zip.finish().expect("finish jar");
}

#[test]
fn fixture_is_detected_and_extracted() {
    let jar = boot_jar();
    let detected = boot::detect(&jar).expect("detect");
    assert_eq!(
        detected,
        Some(BootJar {
            start_class: "fixture.boot.app.BootApp".to_string(),
            classes: "BOOT-INF/classes/".to_string(),
            lib: "BOOT-INF/lib/".to_string(),
            classpath_index: Some("BOOT-INF/classpath.idx".to_string()),
            spring_boot_version: Some("0.0.0-jarfleet-fixture".to_string()),
        })
    );

    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = tmp.path().join("releases/r1/layout");
    let layout = boot::extract_layout(&jar, &dest).expect("extract");
    assert_eq!(layout.dir, dest);
    assert_eq!(layout.main_class, "fixture.boot.app.BootApp");
    // classpath.idx order (core, beta, alpha), not alphabetical.
    assert_eq!(
        layout.classpath,
        vec![
            dest.join("app.jar"),
            dest.join("lib/fixture-core.jar"),
            dest.join("lib/fixture-beta.jar"),
            dest.join("lib/fixture-alpha.jar"),
        ]
    );
    assert_eq!(listing(&dest), vec!["app.jar", "lib"]);
    assert_eq!(listing(&dest.join("lib")).len(), 3);
    // Nothing else next to the layout (the temp dir was renamed, not copied).
    assert_eq!(listing(dest.parent().expect("parent")), vec!["layout"]);

    // app.jar: the application's classes and resources at the root, a manifest of ours.
    let app = dest.join("app.jar");
    let names = entry_names(&app);
    assert_eq!(names[0], "META-INF/", "{names:?}");
    assert_eq!(names[1], "META-INF/MANIFEST.MF", "{names:?}");
    for expected in [
        "fixture/boot/app/BootApp.class",
        "fixture/boot/app/BootApp$Settings.class",
        "fixture/boot/app/Handlers.class",
        "application.properties",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("BOOT-INF") || n.starts_with("fixture/boot/launch")),
        "{names:?}"
    );
    assert_eq!(
        entry_bytes(&app, "fixture/boot/app/BootApp.class"),
        entry_bytes(&jar, "BOOT-INF/classes/fixture/boot/app/BootApp.class")
    );
    let info = jarfleet_java::inspect_jar(&app).expect("inspect app.jar");
    assert_eq!(info.main_class.as_deref(), Some("fixture.boot.app.BootApp"));
    assert!(!info.is_spring_boot());
    assert_eq!(boot::detect(&app).expect("detect app.jar"), None);

    // The libraries byte for byte.
    for lib in ["core", "alpha", "beta"] {
        let extracted = fs::read(dest.join(format!("lib/fixture-{lib}.jar"))).expect("read lib");
        assert_eq!(
            extracted,
            entry_bytes(&jar, &format!("BOOT-INF/lib/fixture-{lib}.jar")),
            "fixture-{lib}.jar"
        );
    }

    // Made once: a second extraction is refused and leaves nothing behind.
    let err = boot::extract_layout(&jar, &dest).expect_err("exists");
    assert!(matches!(err, JavaError::LayoutExists { .. }), "{err:?}");
    assert!(err.to_string().contains("already exists"), "{err}");
    assert_eq!(listing(dest.parent().expect("parent")), vec!["layout"]);
}

#[test]
fn extracted_layout_runs_and_answers_health() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let layout = boot::extract_layout(&boot_jar(), &tmp.path().join("layout")).expect("extract");
    let cp = std::env::join_paths(&layout.classpath).expect("join class path");
    let mut jvm = Jvm::start(
        &jdk17().java,
        &[],
        vec!["-cp".into(), cp, layout.main_class.clone().into()],
        &[],
    );
    jvm.wait_healthy();
    let (status, info) = crate::http::get(jvm.port, "/info").expect("GET /info");
    assert_eq!(status, 200);
    assert!(info.contains("components=500"), "{info}");
    // Application classes from app.jar, libraries from lib/, resources found.
    let app_jar = format!("app=file:{}", layout.classpath[0].display());
    assert!(info.contains(&app_jar), "{info}");
    assert!(info.contains("name=boot-fixture"), "{info}");
    let status = jvm.stop();
    assert_eq!(status.code(), Some(143), "{}", jvm.output());
}

#[test]
fn plain_jars_are_not_boot_jars() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let plain = tmp.path().join("plain.jar");
    write_jar(
        &plain,
        &[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\nMain-Class: a.Main\r\n\r\n",
            ),
            ("a/Main.class", b"\xca\xfe\xba\xbe\0\0\0\x3d"),
        ],
    );
    assert_eq!(boot::detect(&plain).expect("detect"), None);
    let err = boot::extract_layout(&plain, &tmp.path().join("out")).expect_err("plain");
    assert!(matches!(err, JavaError::NotBootJar { .. }), "{err:?}");
    assert!(!tmp.path().join("out").exists());

    // Start-Class but nothing nested (e.g. an already extracted app.jar): not a boot jar.
    let flat = tmp.path().join("flat.jar");
    write_jar(
        &flat,
        &[
            ("META-INF/MANIFEST.MF", BOOT_MANIFEST.as_bytes()),
            ("com/example/App.class", b"\xca\xfe\xba\xbe\0\0\0\x3d"),
        ],
    );
    assert_eq!(boot::detect(&flat).expect("detect"), None);

    // An executable war runs as it is.
    let war = tmp.path().join("app.war");
    write_jar(
        &war,
        &[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\nStart-Class: com.example.App\r\n\
                  Spring-Boot-Classes: WEB-INF/classes/\r\nSpring-Boot-Lib: WEB-INF/lib/\r\n\r\n",
            ),
            ("WEB-INF/classes/com/example/App.class", b"\xca\xfe\xba\xbe"),
        ],
    );
    assert_eq!(boot::detect(&war).expect("detect"), None);

    let err = boot::detect(&tmp.path().join("missing.jar")).expect_err("missing");
    assert!(matches!(err, JavaError::JarNotFound { .. }), "{err:?}");
}

#[test]
fn without_an_index_libraries_are_sorted_and_defaults_apply() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let jar = tmp.path().join("boot.jar");
    // No Spring-Boot-Classes/-Lib (Spring Boot 1.x style): the BOOT-INF defaults; an index
    // attribute naming a missing entry is ignored; non-jar files under lib/ are skipped.
    write_jar(
        &jar,
        &[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\nStart-Class: com.example.App\r\n\
                  Spring-Boot-Classpath-Index: BOOT-INF/missing.idx\r\n\r\n",
            ),
            ("BOOT-INF/classes/com/example/App.class", b"app"),
            (
                "BOOT-INF/classes/META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\n\r\n",
            ),
            ("BOOT-INF/classes/META-INF/spring.factories", b"x=y"),
            ("BOOT-INF/lib/zeta.jar", b"zeta"),
            ("BOOT-INF/lib/alpha.jar", b"alpha"),
            ("BOOT-INF/lib/README.txt", b"not a jar"),
            ("BOOT-INF/lib/sub/", b""),
            ("BOOT-INF/lib/sub/mid.jar", b"mid"),
        ],
    );
    let dest = tmp.path().join("layout");
    let layout = boot::extract_layout(&jar, &dest).expect("extract");
    assert_eq!(
        layout.classpath,
        vec![
            dest.join("app.jar"),
            dest.join("lib/alpha.jar"),
            dest.join("lib/sub/mid.jar"),
            dest.join("lib/zeta.jar"),
        ]
    );
    assert_eq!(
        fs::read(dest.join("lib/sub/mid.jar")).expect("read"),
        b"mid"
    );
    assert!(!dest.join("lib/README.txt").exists());
    let app = dest.join("app.jar");
    assert_eq!(
        entry_names(&app),
        vec![
            "META-INF/",
            "META-INF/MANIFEST.MF",
            "com/example/App.class",
            "META-INF/spring.factories",
        ]
    );
    let manifest = String::from_utf8(entry_bytes(&app, "META-INF/MANIFEST.MF")).expect("utf-8");
    assert_eq!(
        manifest,
        "Manifest-Version: 1.0\r\nCreated-By: jarfleet\r\nMain-Class: com.example.App\r\n\r\n"
    );

    // Bare names in classpath.idx (early Spring Boot 2.3 format), partial: listed first.
    let jar2 = tmp.path().join("boot2.jar");
    write_jar(
        &jar2,
        &[
            (
                "META-INF/MANIFEST.MF",
                b"Manifest-Version: 1.0\r\nStart-Class: com.example.App\r\n\
                  Spring-Boot-Lib: BOOT-INF/lib/\r\n\
                  Spring-Boot-Classpath-Index: BOOT-INF/classpath.idx\r\n\r\n",
            ),
            ("BOOT-INF/classpath.idx", b"zeta.jar\nnot-there.jar\n"),
            ("BOOT-INF/lib/alpha.jar", b"alpha"),
            ("BOOT-INF/lib/beta.jar", b"beta"),
            ("BOOT-INF/lib/zeta.jar", b"zeta"),
        ],
    );
    let dest2 = tmp.path().join("layout2");
    let layout2 = boot::extract_layout(&jar2, &dest2).expect("extract");
    let libs: Vec<PathBuf> = layout2.classpath[1..].to_vec();
    assert_eq!(
        libs,
        vec![
            dest2.join("lib/zeta.jar"),
            dest2.join("lib/alpha.jar"),
            dest2.join("lib/beta.jar"),
        ]
    );
}

#[test]
fn malicious_entry_names_are_refused_and_nothing_is_written() {
    let cases: &[(&str, &str)] = &[
        ("BOOT-INF/lib/../../evil.jar", "parent directory"),
        ("BOOT-INF/lib/x/../../../evil.jar", "parent directory"),
        ("BOOT-INF/classes/../../evil.class", "parent directory"),
        ("BOOT-INF/lib/..\\..\\evil.jar", "backslash"),
        ("BOOT-INF/lib//tmp/evil.jar", "absolute path"),
        ("BOOT-INF/classes//etc/evil", "absolute path"),
    ];
    for (bad, why) in cases {
        let tmp = tempfile::tempdir().expect("tempdir");
        let jars = tmp.path().join("in");
        fs::create_dir(&jars).expect("mkdir");
        let jar = jars.join("boot.jar");
        write_jar(
            &jar,
            &[
                ("META-INF/MANIFEST.MF", BOOT_MANIFEST.as_bytes()),
                ("BOOT-INF/classes/com/example/App.class", b"app"),
                ("BOOT-INF/lib/good.jar", b"good"),
                (bad, b"evil"),
            ],
        );
        let out = tmp.path().join("out");
        fs::create_dir(&out).expect("mkdir");
        let dest = out.join("deep/layout");
        let err = boot::extract_layout(&jar, &dest).expect_err(bad);
        match &err {
            JavaError::UnsafeEntry { entry, reason, .. } => {
                assert_eq!(entry, bad);
                assert!(reason.contains(why), "{bad}: {reason}");
            }
            other => panic!("{bad}: {other:?}"),
        }
        assert!(err.to_string().contains("refusing entry"), "{err}");
        assert!(!dest.exists(), "{bad}");
        // Nothing written anywhere: not the layout, not a temp dir, not the evil file.
        assert_eq!(listing(&out), vec!["deep"], "{bad}");
        assert!(listing(&out.join("deep")).is_empty(), "{bad}");
        assert_eq!(listing(&jars), vec!["boot.jar"], "{bad}");
        assert_eq!(listing(tmp.path()), vec!["in", "out"], "{bad}");
    }

    // A symlink entry among the libraries.
    let tmp = tempfile::tempdir().expect("tempdir");
    let jar = tmp.path().join("boot.jar");
    let mut zip = zip::ZipWriter::new(fs::File::create(&jar).expect("create"));
    let opts = SimpleFileOptions::default();
    zip.start_file("META-INF/MANIFEST.MF", opts).expect("start");
    zip.write_all(BOOT_MANIFEST.as_bytes()).expect("write");
    zip.start_file("BOOT-INF/classes/com/example/App.class", opts)
        .expect("start");
    zip.write_all(b"app").expect("write");
    zip.add_symlink("BOOT-INF/lib/link.jar", "/etc/passwd", opts)
        .expect("symlink");
    zip.finish().expect("finish");
    let err = boot::extract_layout(&jar, &tmp.path().join("layout")).expect_err("symlink");
    assert!(
        matches!(&err, JavaError::UnsafeEntry { reason, .. } if reason.contains("symlink")),
        "{err:?}"
    );
    assert_eq!(listing(tmp.path()), vec!["boot.jar"]);
}
