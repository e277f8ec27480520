use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use jarfleet_bundle::{Bundle, FileKind, bundle_file_name, pack, pack_writer};

use crate::helper::{self, CACERTS, HOOK, JAR, KEYSTORE, LOGBACK, PROPS};

fn mode(path: &std::path::Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn pack_open_verify_extract_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = helper::fixture(&tmp.path().join("src"));
    let out = tmp.path().join(bundle_file_name(&spec.name, &spec.version));
    assert!(out.ends_with("orders-1.4.2.jfb"));
    let report = pack(&spec, &out).expect("pack");
    assert_eq!(
        report.bundle_bytes,
        fs::metadata(&out).expect("bundle").len()
    );
    assert_eq!(mode(&out), 0o644);

    let bundle = Bundle::open(fs::File::open(&out).expect("open")).expect("open bundle");
    let m = bundle.manifest();
    assert_eq!((m.name.as_str(), m.version.as_str()), ("orders", "1.4.2"));
    assert_eq!(m.java.as_deref(), Some(">=17"));
    assert_eq!(m.jre.as_deref(), Some("jre"));
    assert_eq!(m.app, spec.app);
    let hook = m
        .hooks
        .pre_start
        .as_ref()
        .expect("pre_start found by convention");
    assert_eq!(hook.argv, vec!["hooks/pre_start.sh".to_string()]);
    assert!(m.hooks.pre_install.is_none() && m.created.is_none());
    let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "app",
            "app/orders.jar",
            "config",
            "config/application.properties",
            "config/keystore.p12",
            "config/sub",
            "config/sub/logback.xml",
            "hooks",
            "hooks/pre_start.sh",
            "jre",
            "jre/bin",
            "jre/bin/java",
            "jre/bin/java-alias",
            "jre/bin/libdir",
            "jre/legal",
            "jre/legal/LICENSE",
            "jre/lib",
            "jre/lib/LICENSE",
            "jre/lib/cacerts",
            "jre/lib/libjvm.so",
        ]
    );
    let kind = |p: &str| m.entry(p).map(|e| e.kind.clone()).expect("listed");
    assert_eq!(
        kind("jre/bin/java-alias"),
        FileKind::Symlink {
            target: "java".into()
        }
    );
    assert_eq!(
        kind("jre/bin/libdir"),
        FileKind::Symlink {
            target: "../lib".into()
        }
    );
    match kind("jre/lib/cacerts") {
        FileKind::File { size, .. } => assert_eq!(size, CACERTS.len() as u64),
        other => panic!("a symlink leaving the JRE is stored as its file, got {other:?}"),
    }
    // The digest is the sha256 of the manifest bytes, and pack reported the same.
    assert_eq!(bundle.digest(), helper::sha256_hex(bundle.manifest_bytes()));
    assert_eq!(bundle.digest(), report.digest);

    let summary = Bundle::verify(fs::File::open(&out).expect("open")).expect("verify");
    assert_eq!(summary.entries, 20);
    assert_eq!(summary.digest, report.digest);
    assert_eq!(summary.bytes, report.payload_bytes);

    let dest = tmp.path().join("release");
    let summary = bundle.extract_to(&dest).expect("extract");
    assert_eq!(summary.entries, 20);
    let read = |p: &str| fs::read(dest.join(p)).expect("extracted file");
    assert_eq!(read("app/orders.jar"), JAR);
    assert_eq!(read("config/application.properties"), PROPS.as_bytes());
    assert_eq!(read("config/sub/logback.xml"), LOGBACK.as_bytes());
    assert_eq!(read("config/keystore.p12"), KEYSTORE);
    assert_eq!(read("hooks/pre_start.sh"), HOOK.as_bytes());
    assert_eq!(read("jre/lib/cacerts"), CACERTS);
    assert_eq!(read("jre/bin/java-alias"), read("jre/bin/java"));
    assert_eq!(read("jre/legal/LICENSE"), b"GPLv2+CE");
    assert_eq!(read("jre/bin/libdir/LICENSE"), b"GPLv2+CE");
    assert_eq!(
        fs::read_link(dest.join("jre/bin/java-alias")).expect("link"),
        std::path::Path::new("java")
    );
    assert_eq!(mode(&dest.join("hooks/pre_start.sh")), 0o755);
    assert_eq!(mode(&dest.join("jre/bin/java")), 0o755);
    assert_eq!(mode(&dest.join("config/application.properties")), 0o644);
    assert_eq!(mode(&dest.join("config/keystore.p12")), 0o644);
    assert_eq!(mode(&dest.join("jre/lib")), 0o755);
}

#[test]
fn output_is_deterministic_and_a_plain_tar() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let spec = helper::fixture(&tmp.path().join("src"));
    let first = tmp.path().join("a.jfb");
    pack(&spec, &first).expect("pack");
    // Different mtimes and a different output path: same bytes.
    let later = SystemTime::now() + Duration::from_secs(3600);
    let jar = fs::File::options()
        .write(true)
        .open(&spec.jar)
        .expect("jar");
    jar.set_modified(later).expect("touch");
    let mut second = Vec::new();
    pack_writer(&spec, &mut second).expect("pack again");
    assert_eq!(fs::read(&first).expect("first"), second);

    // Manifest first; mtime, uid and gid zero everywhere.
    let decoder = zstd::Decoder::new(second.as_slice()).expect("zstd");
    let mut archive = tar::Archive::new(decoder);
    let mut names = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let h = entry.header();
        assert_eq!(
            (h.mtime().ok(), h.uid().ok(), h.gid().ok()),
            (Some(0), Some(0), Some(0))
        );
        names.push(String::from_utf8_lossy(&entry.path_bytes()).into_owned());
        let mut sink = Vec::new();
        entry.read_to_end(&mut sink).expect("read entry");
    }
    assert_eq!(
        names.first().map(String::as_str),
        Some("jarfleet-bundle.toml")
    );
    assert_eq!(names.len(), 21);
}

#[test]
fn long_names_survive_the_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut spec = helper::fixture(&tmp.path().join("src"));
    let deep = format!("{}/{}.txt", "d".repeat(120), "ü".repeat(100));
    let config = spec.config_dir.clone().expect("config");
    helper::write(&config.join(&deep), b"deep", 0o644);
    spec.jre_dir = None;
    let mut bytes = Vec::new();
    pack_writer(&spec, &mut bytes).expect("pack");
    let dest = tmp.path().join("out");
    Bundle::open(bytes.as_slice())
        .and_then(|b| b.extract_to(&dest))
        .expect("extract");
    assert_eq!(
        fs::read(dest.join("config").join(&deep)).expect("deep"),
        b"deep"
    );
}

#[test]
fn pack_refuses_bad_inputs_and_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out_dir = tmp.path().join("out");
    fs::create_dir(&out_dir).expect("out dir");
    let out = out_dir.join("x.jfb");

    let spec = helper::fixture(&tmp.path().join("src"));
    let cases: Vec<(jarfleet_bundle::PackSpec, &str)> = vec![
        (
            jarfleet_bundle::PackSpec {
                name: "../evil".into(),
                ..spec.clone()
            },
            "name `../evil` is invalid",
        ),
        (
            jarfleet_bundle::PackSpec {
                jar: tmp.path().join("missing.jar"),
                ..spec.clone()
            },
            "missing.jar",
        ),
        (
            jarfleet_bundle::PackSpec {
                config_dir: Some(spec.jar.clone()),
                ..spec.clone()
            },
            "not a directory",
        ),
    ];
    for (bad, needle) in cases {
        let err = pack(&bad, &out).expect_err("must refuse");
        assert!(err.to_string().contains(needle), "{needle:?} not in {err}");
        assert_eq!(helper::tree(&out_dir), Vec::<String>::new());
    }

    // A socket in the config dir, a symlinked directory outside the JRE, a non-executable hook.
    let config = spec.config_dir.clone().expect("config");
    let sock = config.join("app.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("socket");
    let err = pack(&spec, &out).expect_err("socket");
    assert!(err.to_string().contains("app.sock"), "{err}");
    assert!(err.to_string().contains("only regular files"), "{err}");
    drop(listener);
    fs::remove_file(&sock).expect("rm socket");
    assert_eq!(helper::tree(&out_dir), Vec::<String>::new());

    std::os::unix::fs::symlink("sub", config.join("dirlink")).expect("symlink");
    let err = pack(&spec, &out).expect_err("dir symlink");
    assert!(err.to_string().contains("dirlink"), "{err}");
    fs::remove_file(config.join("dirlink")).expect("rm");

    let hooks = spec.hooks_dir.clone().expect("hooks");
    fs::set_permissions(
        hooks.join("pre_start.sh"),
        fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let err = pack(&spec, &out).expect_err("hook not executable");
    assert!(
        err.to_string()
            .contains("hooks.pre_start: `hooks/pre_start.sh` is not executable"),
        "{err}"
    );
    assert_eq!(helper::tree(&out_dir), Vec::<String>::new());
}
