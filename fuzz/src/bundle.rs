//! Properties of bundle reading (`jarfleet_bundle::Bundle`: open, verify, extract), for the fuzz
//! target `bundle` and for the regression test that replays its inputs
//! (`crates/bundle/tests/it/fuzz_regressions.rs` includes this file).
//!
//! The input is a `.jfb` stream when it starts with the zstd magic number; anything else is
//! taken as the *decompressed* stream (the tar) and compressed here first, so that the fuzzer's
//! mutations reach the tar headers and the manifest instead of breaking the compression.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs;
use std::io::Read as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use jarfleet_bundle::{Bundle, Error, FileKind};
use sha2::{Digest as _, Sha256};

pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Where extraction happens below `scratch`: deep enough that a `../../..` escape lands in a
/// directory this check lists.
const NEST: [&str; 3] = ["a", "b", "c"];

/// `bundle`: verifies the input, then extracts it into `scratch/a/b/c/out` (which does not
/// exist before) and checks what is on disk. `scratch` is an empty directory owned by the
/// caller; it is left as it was found apart from `a/b/c`.
pub fn bundle(data: &[u8], scratch: &Path) {
    let stream: Cow<'_, [u8]> = if data.starts_with(&ZSTD_MAGIC) {
        Cow::Borrowed(data)
    } else {
        Cow::Owned(zstd::encode_all(data, 1).expect("zstd compresses in memory"))
    };
    let base = NEST.iter().fold(scratch.to_path_buf(), |p, n| p.join(n));
    fs::create_dir_all(&base).expect("create the scratch directories");
    let dir = base.join("out");

    let verified = Bundle::verify(&stream[..]);
    let extracted = Bundle::open(&stream[..]).and_then(|b| b.extract_to(&dir));

    // Nothing is created outside the target, whatever the outcome.
    let mut expected: Vec<String> = (1..=NEST.len()).map(|n| NEST[..n].join("/")).collect();
    if fs::symlink_metadata(&dir).is_ok() {
        expected.push(format!("{}/out", NEST.join("/")));
    }
    let outside: Vec<String> = listing(scratch, Some(&dir)).into_keys().collect();
    assert_eq!(outside, expected, "created outside the target directory");

    match (&verified, &extracted) {
        (Ok(v), Ok(x)) => {
            assert_eq!(v, x, "verify and extract disagree");
            let manifest = Bundle::open(&stream[..])
                .expect("it opened a moment ago")
                .manifest()
                .clone();
            check_tree(&dir, &manifest);
        }
        (Err(e), Ok(_)) => panic!("extracted a bundle that does not verify: {e}"),
        // The filesystem may refuse what verifies (a name too long for it, say), and only that.
        (Ok(_), Err(e)) => assert!(
            matches!(e, Error::Io { .. }),
            "verifies but does not extract: {e}"
        ),
        (Err(_), Err(_)) => {}
    }
    if let Err(e) = &extracted {
        assert!(
            fs::symlink_metadata(&dir).is_err(),
            "a failed extraction left {} behind ({e})",
            dir.display()
        );
        // Errors are printed to users as they are.
        let _ = e.to_string();
    }
    if let Err(e) = &verified {
        let _ = e.to_string();
    }
    remove(&dir);
}

/// What was extracted is exactly what the manifest lists: same paths and kinds, file contents
/// with the listed size and digest, modes without setuid/setgid/sticky or group/other write,
/// and symlinks with the listed target, resolving inside the target directory.
fn check_tree(dir: &Path, manifest: &jarfleet_bundle::Manifest) {
    let on_disk = listing(dir, None);
    let listed: Vec<&str> = {
        let mut v: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        v.sort_unstable();
        v
    };
    let found: Vec<&str> = on_disk.keys().map(String::as_str).collect();
    assert_eq!(found, listed, "extracted tree differs from the manifest");
    let root = fs::canonicalize(dir).expect("the target exists");
    for entry in &manifest.files {
        let path = dir.join(&entry.path);
        let meta = &on_disk[&entry.path];
        match &entry.kind {
            FileKind::File { size, sha256 } => {
                assert!(meta.file_type().is_file(), "{} is not a file", entry.path);
                let mut content = Vec::new();
                fs::File::open(&path)
                    .and_then(|mut f| f.read_to_end(&mut content))
                    .unwrap_or_else(|e| panic!("read {}: {e}", entry.path));
                assert_eq!(content.len() as u64, *size, "size of {}", entry.path);
                let digest: [u8; 32] = Sha256::digest(&content).into();
                assert_eq!(&digest, sha256, "content of {}", entry.path);
            }
            FileKind::Dir => assert!(meta.file_type().is_dir(), "{} is not a dir", entry.path),
            FileKind::Symlink { target } => {
                assert!(
                    meta.file_type().is_symlink(),
                    "{} is not a link",
                    entry.path
                );
                let on_disk = fs::read_link(&path).expect("read the link");
                assert_eq!(on_disk, Path::new(target), "target of {}", entry.path);
                let resolved = resolve(&path, &on_disk);
                assert!(
                    resolved.starts_with(&root),
                    "{} -> {target} resolves to {}, outside {}",
                    entry.path,
                    resolved.display(),
                    root.display()
                );
            }
        }
        if !meta.file_type().is_symlink() {
            let mode = meta.permissions().mode() & 0o7777;
            assert!(
                mode & 0o7022 == 0,
                "{} has mode {mode:o}: setuid/setgid/sticky or writable by others",
                entry.path
            );
        }
    }
}

/// Where the symlink `link` (pointing to `target`) leads: the real path when it exists, else
/// the target joined lexically to the link's real directory.
fn resolve(link: &Path, target: &Path) -> PathBuf {
    if let Ok(real) = fs::canonicalize(link) {
        return real;
    }
    let parent = link.parent().expect("a link has a parent");
    let mut out = fs::canonicalize(parent).expect("a link's directory exists");
    for c in target.components() {
        match c {
            Component::RootDir => out = PathBuf::from("/"),
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Every path below `dir` (relative, `/`-separated) with its metadata, symlinks not followed,
/// not descending into `skip`. Directories are made readable on the way (their modes are
/// recorded before).
fn listing(dir: &Path, skip: Option<&Path>) -> BTreeMap<String, fs::Metadata> {
    fn walk(
        root: &Path,
        dir: &Path,
        skip: Option<&Path>,
        out: &mut BTreeMap<String, fs::Metadata>,
    ) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("a directory entry").path();
            let meta = fs::symlink_metadata(&path).expect("inspect an entry");
            let rel = path.strip_prefix(root).expect("below the root");
            out.insert(rel.to_string_lossy().into_owned(), meta.clone());
            if meta.file_type().is_dir() && skip != Some(path.as_path()) {
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700))
                    .expect("make a directory readable");
                walk(root, &path, skip, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, skip, &mut out);
    out
}

fn remove(dir: &Path) {
    if fs::symlink_metadata(dir).is_err() {
        return;
    }
    let _ = listing(dir, None); // makes every directory writable
    fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
}
