//! Spring Boot executable jars: recognising them and extracting the layout that starts fast.
//!
//! A fat jar starts slowly: its launcher reads classes out of jars nested in the jar, and CDS
//! cannot archive classes that come from there. [`extract_layout`] makes, once per release, the
//! layout Spring itself recommends for CDS: the application's classes and resources repacked as
//! one `app.jar`, the libraries as plain jars in `lib/`, and `Start-Class` as the main class.
//! Every class path entry is a jar, so the layout can be archived ([`crate::cds`]).

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use zip::ZipArchive;
use zip::write::SimpleFileOptions;

use crate::error::JavaError;
use crate::jar::{entry_error, open_jar, read_manifest};

/// `Spring-Boot-Classes` when the manifest does not say (Spring Boot 1.x).
const DEFAULT_CLASSES: &str = "BOOT-INF/classes/";
/// `Spring-Boot-Lib` when the manifest does not say.
const DEFAULT_LIB: &str = "BOOT-INF/lib/";
/// `classpath.idx` files larger than this are not read (a guard against zip bombs).
const MAX_INDEX: u64 = 4 << 20;
/// Manifest lines are at most 72 bytes; longer values continue on lines starting with a space.
const MANIFEST_LINE: usize = 72;

/// What the manifest of a Spring Boot executable jar says about its layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootJar {
    /// `Start-Class`: the application's own main class.
    pub start_class: String,
    /// `Spring-Boot-Classes` (`BOOT-INF/classes/`): prefix of the application's classes.
    pub classes: String,
    /// `Spring-Boot-Lib` (`BOOT-INF/lib/`): prefix of the nested library jars.
    pub lib: String,
    /// `Spring-Boot-Classpath-Index` (`BOOT-INF/classpath.idx`): the libraries' order.
    pub classpath_index: Option<String>,
    /// `Spring-Boot-Version`, when present.
    pub spring_boot_version: Option<String>,
}

/// An extracted layout, as made by [`extract_layout`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    /// The layout's directory (absolute).
    pub dir: PathBuf,
    /// `dir/app.jar`, then the libraries `dir/lib/*.jar` in class path order. Absolute paths.
    pub classpath: Vec<PathBuf>,
    /// The class to run: the fat jar's `Start-Class`.
    pub main_class: String,
}

/// Whether the jar at `path` is a Spring Boot executable jar: its manifest has a `Start-Class`
/// and the jar has entries under `Spring-Boot-Classes` or `Spring-Boot-Lib` (by default
/// `BOOT-INF/classes/` and `BOOT-INF/lib/`). Plain jars, and jars whose `Start-Class` points at
/// nothing nested (an already extracted `app.jar`), give `None`. So do executable wars
/// (`WEB-INF/…`): their `lib-provided/` jars make a different class path, so they run as they
/// are. Reads only the manifest and the names of the entries.
pub fn detect(jar: &Path) -> Result<Option<BootJar>, JavaError> {
    let mut zip = open_jar(jar)?;
    detect_in(&mut zip, jar)
}

fn detect_in(zip: &mut ZipArchive<File>, path: &Path) -> Result<Option<BootJar>, JavaError> {
    let manifest = read_manifest(zip, path)?;
    let attr = |name: &str| {
        manifest
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let Some(start_class) = attr("Start-Class") else {
        return Ok(None);
    };
    let classes = prefix(attr("Spring-Boot-Classes"), DEFAULT_CLASSES);
    let lib = prefix(attr("Spring-Boot-Lib"), DEFAULT_LIB);
    if classes.starts_with("WEB-INF/") || lib.starts_with("WEB-INF/") {
        return Ok(None);
    }
    let nested = |name: &str, dir: &str| name.len() > dir.len() && name.starts_with(dir);
    if !zip
        .file_names()
        .any(|n| nested(n, &classes) || nested(n, &lib))
    {
        return Ok(None);
    }
    Ok(Some(BootJar {
        start_class,
        classes,
        lib,
        classpath_index: attr("Spring-Boot-Classpath-Index"),
        spring_boot_version: attr("Spring-Boot-Version"),
    }))
}

/// A directory prefix of entry names: no leading `/`, exactly one trailing `/`.
fn prefix(value: Option<String>, default: &str) -> String {
    let Some(v) = value else {
        return default.to_string();
    };
    let v = v.trim_start_matches('/').trim_end_matches('/');
    if v.is_empty() {
        return default.to_string();
    }
    format!("{v}/")
}

/// Extracts the Spring Boot jar at `jar` into the new directory `dest`:
///
/// * `dest/app.jar`: everything under `BOOT-INF/classes/` re-rooted at the jar root (entries
///   copied still compressed, never inflated), with a minimal manifest whose `Main-Class` is
///   `Start-Class`. Entries at the fat jar's root (its launcher, its manifest) are not copied.
/// * `dest/lib/…`: the nested library jars, byte for byte.
///
/// The class path is `app.jar` first, then the libraries in `classpath.idx` order (index lines
/// naming no nested jar are skipped), then any others sorted by name.
///
/// Streams entries (never a whole jar in memory). All or nothing: the layout is built in a
/// temporary directory next to `dest`, synced, and renamed to `dest` at the end; on any error
/// nothing is left behind. Fails when `dest` exists, and refuses (writes nothing) when an entry it
/// would copy has an absolute name, a `..` component, a backslash, or is a symlink.
pub fn extract_layout(jar: &Path, dest: &Path) -> Result<Layout, JavaError> {
    let mut zip = open_jar(jar)?;
    let boot = detect_in(&mut zip, jar)?.ok_or_else(|| JavaError::NotBootJar {
        path: jar.to_path_buf(),
    })?;
    let dest = std::path::absolute(dest).map_err(|e| write_error(dest, e))?;
    if fs::symlink_metadata(&dest).is_ok() {
        return Err(JavaError::LayoutExists { dest });
    }
    let parent = dest
        .parent()
        .ok_or_else(|| write_error(&dest, io::Error::other("it has no parent directory")))?;
    fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
    let tmp = tempfile::Builder::new()
        .prefix(".layout-")
        .tempdir_in(parent)
        .map_err(|e| write_error(parent, e))?;

    let plan = plan(&mut zip, jar, &boot)?;
    write_app_jar(
        &mut zip,
        jar,
        &boot,
        &plan.classes,
        &tmp.path().join("app.jar"),
    )?;
    let lib_dir = tmp.path().join("lib");
    fs::create_dir(&lib_dir).map_err(|e| write_error(&lib_dir, e))?;
    for (rel, &index) in &plan.libs {
        extract_file(&mut zip, jar, index, &lib_dir.join(rel))?;
    }
    sync_dir(&lib_dir)?;
    sync_dir(tmp.path())?;

    if let Err(e) = fs::rename(tmp.path(), &dest) {
        return Err(if fs::symlink_metadata(&dest).is_ok() {
            JavaError::LayoutExists { dest }
        } else {
            write_error(&dest, e)
        });
    }
    // Renamed: nothing left to clean up.
    let _ = tmp.keep();
    sync_dir(parent)?;

    let mut classpath = vec![dest.join("app.jar")];
    classpath.extend(plan.order.iter().map(|rel| dest.join("lib").join(rel)));
    Ok(Layout {
        dir: dest,
        classpath,
        main_class: boot.start_class,
    })
}

/// Which entries go where, from the central directory alone.
struct Plan {
    /// `(index, name in app.jar)` of the entries under `BOOT-INF/classes/`, in jar order.
    classes: Vec<(usize, String)>,
    /// Nested library jars: name below `BOOT-INF/lib/` → entry index.
    libs: BTreeMap<String, usize>,
    /// The library names in class path order.
    order: Vec<String>,
}

fn plan(zip: &mut ZipArchive<File>, jar: &Path, boot: &BootJar) -> Result<Plan, JavaError> {
    let mut classes = Vec::new();
    let mut libs = BTreeMap::new();
    let mut index_entry = None;
    for i in 0..zip.len() {
        let Some(name) = zip.name_for_index(i) else {
            continue;
        };
        if boot.classpath_index.as_deref() == Some(name) {
            index_entry = Some(i);
        }
        if let Some(rel) = name.strip_prefix(boot.classes.as_str()) {
            if rel.is_empty() {
                continue;
            }
            check_name(rel).map_err(|reason| unsafe_entry(jar, name, reason))?;
            classes.push((i, rel.to_string()));
        } else if let Some(rel) = name.strip_prefix(boot.lib.as_str()) {
            if rel.is_empty() || rel.ends_with('/') || !rel.to_ascii_lowercase().ends_with(".jar") {
                continue;
            }
            check_name(rel).map_err(|reason| unsafe_entry(jar, name, reason))?;
            // The zip reader keeps one entry per name, so there are no duplicates here.
            libs.insert(rel.to_string(), i);
        }
    }

    let mut order: Vec<String> = Vec::with_capacity(libs.len());
    if let (Some(i), Some(index_name)) = (index_entry, boot.classpath_index.as_deref()) {
        for line in read_index(zip, jar, i, index_name)? {
            let rel = line
                .strip_prefix(boot.lib.as_str())
                .unwrap_or(&line)
                .to_string();
            if libs.contains_key(&rel) && !order.contains(&rel) {
                order.push(rel);
            }
        }
    }
    let listed: HashSet<String> = order.iter().cloned().collect();
    order.extend(libs.keys().filter(|k| !listed.contains(*k)).cloned());
    Ok(Plan {
        classes,
        libs,
        order,
    })
}

/// The entry names listed in a `classpath.idx`: lines `- "BOOT-INF/lib/x.jar"` (Spring Boot
/// 2.3+) or bare names.
fn read_index(
    zip: &mut ZipArchive<File>,
    jar: &Path,
    index: usize,
    name: &str,
) -> Result<Vec<String>, JavaError> {
    let entry = zip.by_index(index).map_err(|e| entry_error(jar, name, e))?;
    let mut lines = Vec::new();
    for line in BufReader::new(entry.take(MAX_INDEX)).lines() {
        let line = line.map_err(|e| JavaError::BadEntry {
            path: jar.to_path_buf(),
            entry: name.to_string(),
            reason: e.to_string(),
        })?;
        let line = line.trim();
        let line = line.strip_prefix("- ").unwrap_or(line).trim();
        let line = line
            .strip_prefix('"')
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or(line);
        if !line.is_empty() && !line.starts_with('#') {
            lines.push(line.to_string());
        }
    }
    Ok(lines)
}

/// Writes `app.jar`: manifest first (as `JarInputStream` expects), then the application's
/// entries copied raw (still compressed).
fn write_app_jar(
    zip: &mut ZipArchive<File>,
    jar: &Path,
    boot: &BootJar,
    entries: &[(usize, String)],
    out: &Path,
) -> Result<(), JavaError> {
    let file = File::create_new(out).map_err(|e| write_error(out, e))?;
    let mut w = zip::ZipWriter::new(BufWriter::new(file));
    let zip_err = |e: zip::result::ZipError| write_error(out, io::Error::other(e));
    let deflated =
        SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    w.add_directory("META-INF/", SimpleFileOptions::default())
        .map_err(zip_err)?;
    w.start_file("META-INF/MANIFEST.MF", deflated)
        .map_err(zip_err)?;
    w.write_all(manifest(&boot.start_class).as_bytes())
        .map_err(|e| write_error(out, e))?;
    let mut written: HashSet<&str> = ["META-INF/", "META-INF/MANIFEST.MF"].into();
    for (index, name) in entries {
        if name.eq_ignore_ascii_case("META-INF/MANIFEST.MF") {
            continue; // replaced by ours
        }
        let entry = zip
            .by_index_raw(*index)
            .map_err(|e| entry_error(jar, name, e))?;
        if entry.is_symlink() {
            return Err(unsafe_entry(jar, entry.name(), "it is a symlink"));
        }
        if !written.insert(name.as_str()) {
            if name.ends_with('/') {
                continue;
            }
            return Err(unsafe_entry(jar, entry.name(), "the jar holds it twice"));
        }
        w.raw_copy_file_rename(entry, name).map_err(zip_err)?;
    }
    let buffered = w.finish().map_err(zip_err)?;
    let file = buffered
        .into_inner()
        .map_err(|e| write_error(out, e.into_error()))?;
    file.sync_all().map_err(|e| write_error(out, e))
}

/// Copies the (inflated) content of entry `index` to the new file `out`, then syncs it.
fn extract_file(
    zip: &mut ZipArchive<File>,
    jar: &Path,
    index: usize,
    out: &Path,
) -> Result<(), JavaError> {
    let mut entry = zip
        .by_index(index)
        .map_err(|e| entry_error(jar, &zip_name(index), e))?;
    let name = entry.name().to_string();
    if entry.is_symlink() {
        return Err(unsafe_entry(jar, &name, "it is a symlink"));
    }
    if let Some(dir) = out.parent() {
        fs::create_dir_all(dir).map_err(|e| write_error(dir, e))?;
    }
    let mut file = File::create_new(out).map_err(|e| write_error(out, e))?;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(JavaError::BadEntry {
                    path: jar.to_path_buf(),
                    entry: name,
                    reason: e.to_string(),
                });
            }
        };
        file.write_all(&buf[..n]).map_err(|e| write_error(out, e))?;
    }
    file.sync_all().map_err(|e| write_error(out, e))
}

fn zip_name(index: usize) -> String {
    format!("#{index}")
}

/// Why an entry name must not be written, if it must not: it would land outside the directory
/// (or jar root) it is extracted to, or is ambiguous across platforms.
pub(crate) fn check_name(rel: &str) -> Result<(), &'static str> {
    if rel.starts_with('/') {
        return Err("absolute path");
    }
    if rel.contains('\\') {
        return Err("backslash in the name");
    }
    if rel.contains('\0') {
        return Err("NUL in the name");
    }
    let body = rel.strip_suffix('/').unwrap_or(rel);
    let bytes = body.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err("drive letter");
    }
    for part in body.split('/') {
        match part {
            ".." => return Err("parent directory (..) component"),
            "." | "" => return Err("empty or . path component"),
            _ => {}
        }
    }
    Ok(())
}

/// A minimal manifest: version, creator and `Main-Class`, lines wrapped at 72 bytes.
fn manifest(main_class: &str) -> String {
    let mut out = String::new();
    for (key, value) in [
        ("Manifest-Version", "1.0"),
        ("Created-By", "jarfleet"),
        ("Main-Class", main_class),
    ] {
        let line = format!("{key}: {value}");
        let mut rest = line.as_str();
        let mut limit = MANIFEST_LINE;
        loop {
            let mut cut = rest.len().min(limit);
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&rest[..cut]);
            out.push_str("\r\n");
            rest = &rest[cut..];
            if rest.is_empty() {
                break;
            }
            out.push(' ');
            limit = MANIFEST_LINE - 1;
        }
    }
    out.push_str("\r\n");
    out
}

fn sync_dir(dir: &Path) -> Result<(), JavaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_error(dir, e))
}

fn write_error(path: &Path, source: io::Error) -> JavaError {
    JavaError::Write {
        path: path.to_path_buf(),
        source,
    }
}

fn unsafe_entry(jar: &Path, entry: &str, reason: &str) -> JavaError {
    JavaError::UnsafeEntry {
        path: jar.to_path_buf(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jar::parse_manifest;

    #[test]
    fn entry_names() {
        for ok in [
            "a.jar",
            "dir/a.jar",
            "com/example/App.class",
            "META-INF/",
            "x..y.jar",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("/etc/passwd", "absolute path"),
            ("../evil.jar", "parent directory (..) component"),
            ("a/../../evil.jar", "parent directory (..) component"),
            ("a/..", "parent directory (..) component"),
            ("a\\..\\evil.jar", "backslash in the name"),
            ("C:/evil.jar", "drive letter"),
            ("a//b.jar", "empty or . path component"),
            ("./a.jar", "empty or . path component"),
            ("a\0b", "NUL in the name"),
        ] {
            assert_eq!(check_name(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn directory_prefixes() {
        assert_eq!(prefix(None, DEFAULT_LIB), "BOOT-INF/lib/");
        assert_eq!(
            prefix(Some("BOOT-INF/lib".into()), DEFAULT_LIB),
            "BOOT-INF/lib/"
        );
        assert_eq!(prefix(Some("/x/y//".into()), DEFAULT_LIB), "x/y/");
        assert_eq!(prefix(Some("/".into()), DEFAULT_LIB), "BOOT-INF/lib/");
    }

    #[test]
    fn manifest_lines_are_wrapped_at_72_bytes() {
        let long = format!("com.example.{}.Main", "verylongpackagename".repeat(10));
        let text = manifest(&long);
        assert!(text.ends_with("\r\n\r\n"), "{text:?}");
        for line in text.split("\r\n") {
            assert!(line.len() <= 72, "{line:?}");
        }
        let attrs = parse_manifest(&text);
        assert_eq!(
            attrs,
            vec![
                ("Manifest-Version".to_string(), "1.0".to_string()),
                ("Created-By".to_string(), "jarfleet".to_string()),
                ("Main-Class".to_string(), long.clone()),
            ]
        );
        // Exactly 72 bytes: no continuation line.
        let exact = "a".repeat(72 - "Main-Class: ".len());
        assert!(!manifest(&exact).contains("\r\n "));
    }
}
