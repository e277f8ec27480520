//! Packing: inputs on disk → a deterministic `.jfb` stream.
//!
//! Two passes over every file: the first hashes it (the manifest, written first, needs every
//! digest), the second streams it into the tar and hashes it again, so a file that changed in
//! between is an error rather than a bundle that fails verification later. Memory per file is
//! one copy buffer.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use toml::value::Datetime;

use crate::error::{Error, Result};
use crate::fsutil;
use crate::manifest::{self, FileEntry, FileKind, Hook, Hooks, MANIFEST_NAME, Manifest};
use crate::path_rules;

/// zstd level: a good ratio for jars and JREs at a speed that does not matter for a release step.
pub const ZSTD_LEVEL: i32 = 6;

/// What goes into a bundle.
#[derive(Debug, Clone, Default)]
pub struct PackSpec {
    pub name: String,
    pub version: String,
    /// The application jar, stored as `app/<file name>`.
    pub jar: PathBuf,
    /// Config templates, stored under `config/` (symlinks are followed).
    pub config_dir: Option<PathBuf>,
    /// Hook scripts, stored under `hooks/` (symlinks are followed).
    pub hooks_dir: Option<PathBuf>,
    /// A JRE (e.g. made with jlink), stored under `jre/`. Symlinks whose target stays inside the
    /// JRE are kept as symlinks; others are stored as the file they point to.
    pub jre_dir: Option<PathBuf>,
    /// Default app spec, copied to the manifest's `[app]`.
    pub app: toml::Table,
    /// Java requirement, e.g. `>=17`.
    pub java: Option<String>,
    /// Hooks. When empty and `hooks_dir` is set, files of `hooks_dir` named `pre_install`,
    /// `post_install` or `pre_start` (any extension, `-` or `_`) become hooks without timeout.
    pub hooks: Hooks,
    /// Creation time for the manifest; `None` keeps the output independent of when it was made.
    pub created: Option<Datetime>,
}

/// What `pack` produced.
#[derive(Debug, Clone)]
pub struct PackReport {
    pub manifest: Manifest,
    /// Release-identity digest (sha256 of the manifest bytes), hex.
    pub digest: String,
    /// Sum of the packed files' sizes.
    pub payload_bytes: u64,
    /// Size of the compressed bundle.
    pub bundle_bytes: u64,
}

/// `NAME-VERSION.jfb`.
pub fn bundle_file_name(name: &str, version: &str) -> String {
    format!("{name}-{version}.jfb")
}

/// Packs into `out`, atomically: a temp file in the same directory, fsynced and renamed.
pub fn pack(spec: &PackSpec, out: &Path) -> Result<PackReport> {
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = tempfile::Builder::new()
        .prefix(".jfb-")
        .tempfile_in(dir)
        .map_err(Error::io("create a temp file in", dir))?;
    let report = pack_writer(spec, io::BufWriter::new(tmp.as_file()))?;
    let file = tmp.as_file();
    file.set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| file.sync_all())
        .map_err(Error::io("write", tmp.path()))?;
    tmp.persist(out)
        .map_err(|e| Error::io("rename a temp file to", out)(e.error))?;
    fsutil::sync_dir(dir)?;
    Ok(report)
}

/// Packs into any writer (e.g. after an installer binary). On error the writer holds a partial
/// bundle: the caller discards it.
pub fn pack_writer<W: Write>(spec: &PackSpec, out: W) -> Result<PackReport> {
    let plan = plan(spec)?;
    let hooks = if spec.hooks.is_empty() && spec.hooks_dir.is_some() {
        hooks_by_convention(&plan)?
    } else {
        spec.hooks.clone()
    };
    let manifest = Manifest {
        name: spec.name.clone(),
        version: spec.version.clone(),
        created: spec.created,
        java: spec.java.clone(),
        app: spec.app.clone(),
        jre: spec.jre_dir.as_ref().map(|_| "jre".to_string()),
        hooks,
        files: plan.iter().map(|p| p.entry.clone()).collect(),
    };
    let text = manifest.to_toml()?;
    // What readers will see: validates the manifest with the same rules.
    let manifest = Manifest::from_slice(text.as_bytes())?;
    let digest = manifest::manifest_digest(text.as_bytes());

    let counting = CountingWriter {
        inner: out,
        count: 0,
    };
    let mut encoder =
        zstd::Encoder::new(counting, ZSTD_LEVEL).map_err(|source| Error::Write { source })?;
    encoder
        .include_checksum(true)
        .map_err(|source| Error::Write { source })?;
    let mut tar = tar::Builder::new(encoder);
    let mut header = base_header(tar::EntryType::Regular, 0o644, text.len() as u64);
    tar.append_data(&mut header, MANIFEST_NAME, text.as_bytes())
        .map_err(|source| Error::Write { source })?;
    for item in &plan {
        append(&mut tar, item)?;
    }
    let encoder = tar.into_inner().map_err(|source| Error::Write { source })?;
    let mut counting = encoder.finish().map_err(|source| Error::Write { source })?;
    counting
        .inner
        .flush()
        .map_err(|source| Error::Write { source })?;
    Ok(PackReport {
        payload_bytes: manifest.payload_bytes(),
        manifest,
        digest,
        bundle_bytes: counting.count,
    })
}

/// One payload entry and where its bytes come from.
struct Planned {
    entry: FileEntry,
    source: Option<PathBuf>,
}

fn plan(spec: &PackSpec) -> Result<Vec<Planned>> {
    for (what, value) in [("name", &spec.name), ("version", &spec.version)] {
        manifest::check_label(what, value).map_err(|problem| Error::Pack {
            path: PathBuf::from(value),
            problem,
        })?;
    }
    let mut plan = vec![dir_entry("app".into())];
    let jar_name = spec
        .jar
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Pack {
            path: spec.jar.clone(),
            problem: "the jar's file name is missing or not UTF-8".into(),
        })?;
    let meta = fs::metadata(&spec.jar).map_err(Error::io("inspect", &spec.jar))?;
    if !meta.is_file() {
        return Err(Error::Pack {
            path: spec.jar.clone(),
            problem: "the jar is not a regular file".into(),
        });
    }
    plan.push(file_entry(format!("app/{jar_name}"), &spec.jar, &meta)?);
    let trees = [
        (&spec.config_dir, "config", false),
        (&spec.hooks_dir, "hooks", false),
        (&spec.jre_dir, "jre", true),
    ];
    for (src, prefix, keep_links) in trees {
        if let Some(src) = src {
            let meta = fs::metadata(src).map_err(Error::io("inspect", src))?;
            if !meta.is_dir() {
                return Err(Error::Pack {
                    path: src.clone(),
                    problem: format!("not a directory (it would be stored under {prefix}/)"),
                });
            }
            plan.push(dir_entry(prefix.into()));
            let tree = Tree { prefix, keep_links };
            tree.walk(src, prefix, &mut plan)?;
        }
    }
    Ok(plan)
}

struct Tree<'a> {
    prefix: &'a str,
    keep_links: bool,
}

impl Tree<'_> {
    fn walk(&self, dir: &Path, bundle_dir: &str, plan: &mut Vec<Planned>) -> Result<()> {
        let mut children: Vec<fs::DirEntry> = fs::read_dir(dir)
            .map_err(Error::io("list", dir))?
            .collect::<io::Result<_>>()
            .map_err(Error::io("list", dir))?;
        children.sort_by_key(|c| c.file_name());
        for child in children {
            let path = child.path();
            let name = child.file_name();
            let name = name.to_str().ok_or_else(|| Error::Pack {
                path: path.clone(),
                problem: "file name is not UTF-8".into(),
            })?;
            let bundle_path = format!("{bundle_dir}/{name}");
            path_rules::check_name(&bundle_path).map_err(|p| Error::Pack {
                path: path.clone(),
                problem: format!("`{bundle_path}` is not a valid bundle name: {p}"),
            })?;
            let meta = fs::symlink_metadata(&path).map_err(Error::io("inspect", &path))?;
            let kind = meta.file_type();
            if kind.is_dir() {
                plan.push(dir_entry(bundle_path.clone()));
                self.walk(&path, &bundle_path, plan)?;
            } else if kind.is_file() {
                plan.push(file_entry(bundle_path, &path, &meta)?);
            } else if kind.is_symlink() {
                plan.push(self.symlink(&path, bundle_path)?);
            } else {
                return Err(Error::Pack {
                    path,
                    problem: "only regular files, directories and symlinks can be packed".into(),
                });
            }
        }
        Ok(())
    }

    fn symlink(&self, path: &Path, bundle_path: String) -> Result<Planned> {
        let target = fs::read_link(path).map_err(Error::io("read symlink", path))?;
        if self.keep_links
            && let Some(target) = target.to_str()
            && let Ok(resolved) = path_rules::resolve_symlink(&bundle_path, target)
            && path_rules::is_within(&resolved, self.prefix)
        {
            return Ok(Planned {
                entry: FileEntry {
                    path: bundle_path,
                    mode: 0o777,
                    kind: FileKind::Symlink {
                        target: target.to_string(),
                    },
                },
                source: None,
            });
        }
        match fs::metadata(path) {
            Ok(meta) if meta.is_file() => file_entry(bundle_path, path, &meta),
            Ok(_) => Err(Error::Pack {
                path: path.into(),
                problem: format!(
                    "symlink to `{}`: only symlinks to files are followed; a directory symlink is kept only inside the JRE",
                    target.display()
                ),
            }),
            Err(e) => Err(Error::Pack {
                path: path.into(),
                problem: format!("symlink to `{}` cannot be followed: {e}", target.display()),
            }),
        }
    }
}

fn dir_entry(path: String) -> Planned {
    Planned {
        entry: FileEntry {
            path,
            mode: 0o755,
            kind: FileKind::Dir,
        },
        source: None,
    }
}

fn file_entry(path: String, src: &Path, meta: &fs::Metadata) -> Result<Planned> {
    let (size, sha256) = fsutil::hash_file(src)?;
    Ok(Planned {
        entry: FileEntry {
            path,
            mode: path_rules::pack_mode(false, meta.permissions().mode()),
            kind: FileKind::File { size, sha256 },
        },
        source: Some(src.to_path_buf()),
    })
}

fn hooks_by_convention(plan: &[Planned]) -> Result<Hooks> {
    let mut hooks = Hooks::default();
    for item in plan {
        let Some(file) = item.entry.path.strip_prefix("hooks/") else {
            continue;
        };
        if file.contains('/') || !matches!(item.entry.kind, FileKind::File { .. }) {
            continue;
        }
        let stem = file.split('.').next().unwrap_or(file).replace('-', "_");
        let slot = match stem.as_str() {
            "pre_install" => &mut hooks.pre_install,
            "post_install" => &mut hooks.post_install,
            "pre_start" => &mut hooks.pre_start,
            _ => continue,
        };
        if let Some(existing) = slot {
            return Err(Error::Pack {
                path: item.source.clone().unwrap_or_default(),
                problem: format!(
                    "two scripts for the {stem} hook: `{}` and `{}`",
                    existing.argv.join(" "),
                    item.entry.path
                ),
            });
        }
        *slot = Some(Hook {
            argv: vec![item.entry.path.clone()],
            timeout: None,
        });
    }
    Ok(hooks)
}

/// A header with everything that could vary between machines fixed.
fn base_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, item: &Planned) -> Result<()> {
    let entry = &item.entry;
    let write_err = |source| Error::Write { source };
    match (&entry.kind, &item.source) {
        (FileKind::Dir, _) => {
            let mut header = base_header(tar::EntryType::Directory, entry.mode, 0);
            tar.append_data(&mut header, &entry.path, io::empty())
                .map_err(write_err)
        }
        (FileKind::Symlink { target }, _) => {
            let mut header = base_header(tar::EntryType::Symlink, 0o777, 0);
            tar.append_link(&mut header, &entry.path, target)
                .map_err(write_err)
        }
        (FileKind::File { size, sha256 }, Some(src)) => {
            let file = fs::File::open(src).map_err(Error::io("open", src))?;
            let mut header = base_header(tar::EntryType::Regular, entry.mode, *size);
            let mut reader = CheckedReader {
                file,
                remaining: *size,
                hasher: Sha256::new(),
                src,
            };
            // tar copies through its own small buffer and never sees more than `size` bytes.
            tar.append_data(&mut header, &entry.path, &mut reader)
                .map_err(|e| match e.kind() {
                    io::ErrorKind::InvalidData => Error::Pack {
                        path: src.clone(),
                        problem: e.to_string(),
                    },
                    _ => Error::Write { source: e },
                })?;
            reader.finish(sha256)
        }
        (FileKind::File { .. }, None) => Err(Error::Pack {
            path: PathBuf::from(&entry.path),
            problem: "internal: a planned file has no source".into(),
        }),
    }
}

/// Yields exactly `remaining` bytes of `file`, hashing them; fails if the file is shorter.
struct CheckedReader<'a> {
    file: fs::File,
    remaining: u64,
    hasher: Sha256,
    src: &'a Path,
}

impl Read for CheckedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "file shrank while packing",
            ));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        Ok(n)
    }
}

impl CheckedReader<'_> {
    fn finish(mut self, expected: &[u8; 32]) -> Result<()> {
        let mut probe = [0u8; 1];
        let grew = self
            .file
            .read(&mut probe)
            .map_err(Error::io("read", self.src))?
            > 0;
        let digest: [u8; 32] = self.hasher.finalize().into();
        if grew || digest != *expected {
            return Err(Error::Pack {
                path: self.src.to_path_buf(),
                problem: "file changed while packing".into(),
            });
        }
        Ok(())
    }
}

struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
