//! Fixtures: a realistic pack input tree, and hand-crafted (possibly malicious) bundle streams.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use jarfleet_bundle::{Bundle, PackSpec};
use sha2::{Digest, Sha256};

pub const JAR: &[u8] = b"PK\x03\x04 not really a jar, but bytes all the same";
pub const PROPS: &str =
    "server.port=${PORT}\ndb.url=${DB_URL:jdbc:h2:mem:orders}\nliteral=$${NOT_A_VAR}\n";
pub const LOGBACK: &str =
    "<configuration><root level=\"${LOG_LEVEL:?set LOG_LEVEL}\"/></configuration>\n";
pub const KEYSTORE: &[u8] = &[0xff, 0xfe, 0x00, b'$', b'{', b'X', b'}', 0x80];
pub const HOOK: &str = "#!/bin/sh\necho pre-start\n";
pub const CACERTS: &[u8] = b"certificates living outside the JRE";

pub fn write(path: &Path, bytes: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("create parent");
    }
    fs::write(path, bytes).expect("write fixture");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod fixture");
}

/// Inputs under `root`: a jar, config templates (one binary), a hook, and a fake JRE with a
/// relative symlink inside it, a symlink to a file outside it, and a symlinked directory.
pub fn fixture(root: &Path) -> PackSpec {
    let jar = root.join("build/orders.jar");
    write(&jar, JAR, 0o644);
    let config = root.join("config");
    write(
        &config.join("application.properties"),
        PROPS.as_bytes(),
        0o640,
    );
    write(&config.join("sub/logback.xml"), LOGBACK.as_bytes(), 0o644);
    write(&config.join("keystore.p12"), KEYSTORE, 0o600);
    let hooks = root.join("hooks");
    write(&hooks.join("pre_start.sh"), HOOK.as_bytes(), 0o750);
    let jre = root.join("jre");
    write(&jre.join("bin/java"), b"#!/bin/sh\necho java\n", 0o755);
    write(&jre.join("lib/libjvm.so"), b"\x7fELF pretend", 0o644);
    write(&jre.join("lib/LICENSE"), b"GPLv2+CE", 0o644);
    write(&root.join("etc/cacerts"), CACERTS, 0o644);
    std::os::unix::fs::symlink("java", jre.join("bin/java-alias")).expect("symlink");
    fs::create_dir_all(jre.join("legal")).expect("legal dir");
    std::os::unix::fs::symlink("../lib/LICENSE", jre.join("legal/LICENSE")).expect("symlink");
    std::os::unix::fs::symlink(root.join("etc/cacerts"), jre.join("lib/cacerts")).expect("symlink");
    std::os::unix::fs::symlink("../lib", jre.join("bin/libdir")).expect("symlink");

    let mut app = toml::Table::new();
    app.insert("instances".into(), toml::Value::Integer(2));
    app.insert(
        "args".into(),
        toml::Value::Array(vec![toml::Value::String("--server.port=${PORT}".into())]),
    );
    let mut health = toml::Table::new();
    health.insert(
        "http".into(),
        toml::Value::String("/actuator/health".into()),
    );
    health.insert("interval".into(), toml::Value::String("5s".into()));
    app.insert("health".into(), toml::Value::Table(health));
    PackSpec {
        name: "orders".into(),
        version: "1.4.2".into(),
        jar,
        config_dir: Some(config),
        hooks_dir: Some(hooks),
        jre_dir: Some(jre),
        app,
        java: Some(">=17".into()),
        ..PackSpec::default()
    }
}

/// Every path below `dir`, relative, sorted (symlinks not followed).
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).expect("read_dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            let rel = path.strip_prefix(root).expect("below root");
            out.push(rel.to_string_lossy().into_owned());
            if entry.file_type().expect("file type").is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Builds manifest text: a header plus `[[files]]` tables.
pub struct ManifestText(String);

impl ManifestText {
    pub fn new() -> Self {
        ManifestText("format = 1\nname = \"evil\"\nversion = \"1\"\n".into())
    }
    pub fn file(mut self, path: &str, content: &[u8]) -> Self {
        self.0.push_str(&format!(
            "[[files]]\npath = \"{path}\"\nkind = \"file\"\nmode = 0o644\nsize = {}\nsha256 = \"{}\"\n",
            content.len(),
            sha256_hex(content)
        ));
        self
    }
    pub fn dir(mut self, path: &str) -> Self {
        self.0.push_str(&format!(
            "[[files]]\npath = \"{path}\"\nkind = \"dir\"\nmode = 0o755\n"
        ));
        self
    }
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        self.0.push_str(&format!(
            "[[files]]\npath = \"{path}\"\nkind = \"symlink\"\ntarget = \"{target}\"\n"
        ));
        self
    }
    pub fn text(&self) -> &str {
        &self.0
    }
}

/// One raw tar entry, written with the header API so that anything can be expressed.
pub struct Raw {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
}

pub fn file(name: &str, data: &[u8]) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Regular,
        data: data.to_vec(),
        link: None,
    }
}

pub fn dir(name: &str) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind: tar::EntryType::Directory,
        data: Vec::new(),
        link: None,
    }
}

pub fn link(kind: tar::EntryType, name: &str, target: &str) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind,
        data: Vec::new(),
        link: Some(target.as_bytes().to_vec()),
    }
}

pub fn special(kind: tar::EntryType, name: &str) -> Raw {
    Raw {
        name: name.as_bytes().to_vec(),
        kind,
        data: Vec::new(),
        link: None,
    }
}

/// A zstd tar stream: the manifest first, then `entries` exactly as given.
pub fn craft(manifest: &str, entries: &[Raw]) -> Vec<u8> {
    let mut all = vec![file("jarfleet-bundle.toml", manifest.as_bytes())];
    all.extend(entries.iter().map(|r| Raw {
        name: r.name.clone(),
        kind: r.kind,
        data: r.data.clone(),
        link: r.link.clone(),
    }));
    let mut tar = tar::Builder::new(Vec::new());
    for raw in &all {
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        assert!(raw.name.len() < name.len(), "crafted names are short");
        name[..raw.name.len()].copy_from_slice(&raw.name);
        if let Some(target) = &raw.link {
            header.as_old_mut().linkname[..target.len()].copy_from_slice(target);
        }
        header.set_entry_type(raw.kind);
        header.set_mode(if raw.kind.is_dir() { 0o755 } else { 0o644 });
        header.set_size(raw.data.len() as u64);
        header.set_cksum();
        tar.append(&header, raw.data.as_slice())
            .expect("append raw");
    }
    let tar = tar.into_inner().expect("finish tar");
    let mut enc = zstd::Encoder::new(Vec::new(), 3).expect("encoder");
    enc.write_all(&tar).expect("compress");
    enc.finish().expect("finish zstd")
}

/// Asserts that `bytes` is refused by verify and by extraction, with an error containing every
/// needle, and that extraction leaves nothing behind (in an existing empty dir, or a dir that
/// it had to create).
pub fn assert_refused(bytes: &[u8], needles: &[&str]) {
    let check = |what: &str, err: &jarfleet_bundle::Error| {
        let text = err.to_string();
        for needle in needles {
            assert!(text.contains(needle), "{what}: {needle:?} not in: {text}");
        }
    };
    let err = Bundle::verify(bytes).expect_err("verify must refuse");
    check("verify", &err);

    let tmp = tempfile::tempdir().expect("tempdir");
    let existing = tmp.path().join("staging");
    fs::create_dir(&existing).expect("staging dir");
    let err = Bundle::open(bytes)
        .and_then(|b| b.extract_to(&existing))
        .expect_err("extract must refuse");
    check("extract", &err);
    assert_eq!(
        tree(&existing),
        Vec::<String>::new(),
        "staging dir not empty"
    );

    let fresh: PathBuf = tmp.path().join("fresh");
    let err = Bundle::open(bytes)
        .and_then(|b| b.extract_to(&fresh))
        .expect_err("extract must refuse");
    check("extract", &err);
    assert!(!fresh.exists(), "a created staging dir must be removed");
    assert_eq!(
        tree(tmp.path()),
        vec!["staging".to_string()],
        "something escaped"
    );
}
