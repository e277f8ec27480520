//! The streaming check of a bundle's payload against its manifest, optionally writing it out.
//!
//! Every tar entry must be named validly, be of an allowed type, be listed in the manifest with
//! the same kind, come after its parent directory, and appear once; file content is hashed
//! while it is copied and compared with the manifest at the end of the entry; symlink targets
//! must stay inside the root and equal the manifest's. Memory is one copy buffer, whatever the
//! file sizes.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::error::{EntryProblem, Error, Result};
use crate::fsutil::{self, BUF_SIZE};
use crate::manifest::{FileKind, Manifest};
use crate::path_rules;

/// Longest GNU long-name / long-link record accepted.
const MAX_LONG_NAME: u64 = 4096;

/// Where verified entries go.
pub(crate) enum Sink<'a> {
    Discard,
    Dir {
        root: &'a Path,
        /// Directories created, with their final modes, applied in `finish`.
        dirs: Vec<(PathBuf, u32)>,
    },
}

impl Sink<'_> {
    /// Applies directory modes (deepest first) and fsyncs the directories.
    pub(crate) fn finish(&mut self) -> Result<()> {
        if let Sink::Dir { root, dirs } = self {
            for (dir, _) in dirs.iter().rev() {
                fsutil::sync_dir(dir)?;
            }
            fsutil::sync_dir(root)?;
            for (dir, mode) in dirs.iter().rev() {
                fs::set_permissions(dir, fs::Permissions::from_mode(*mode))
                    .map_err(Error::io("set the mode of", dir))?;
            }
        }
        Ok(())
    }
}

/// Walks the tar stream `stream` (positioned after the manifest entry). Returns the number of
/// entries and of file bytes.
pub(crate) fn walk<R: Read>(
    manifest: &Manifest,
    stream: R,
    sink: &mut Sink,
) -> Result<(usize, u64)> {
    let index: HashMap<&str, usize> = manifest
        .files
        .iter()
        .enumerate()
        .map(|(i, e)| (e.path.as_str(), i))
        .collect();
    let mut seen = vec![false; manifest.files.len()];
    let mut bytes = 0u64;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut archive = tar::Archive::new(stream);
    {
        let entries = archive
            .entries()
            .map_err(|source| Error::Stream { source })?
            .raw(true);
        let mut long_name: Option<Vec<u8>> = None;
        let mut long_link: Option<Vec<u8>> = None;
        for entry in entries {
            let mut entry = entry.map_err(|source| Error::Stream { source })?;
            let ty = entry.header().entry_type();
            if ty.is_gnu_longname() || ty.is_gnu_longlink() {
                let slot = if ty.is_gnu_longname() {
                    &mut long_name
                } else {
                    &mut long_link
                };
                *slot = Some(read_long_name(&mut entry, slot.is_some())?);
                continue;
            }
            let raw_name = long_name
                .take()
                .unwrap_or_else(|| entry.path_bytes().into_owned());
            let mut name = String::from_utf8(raw_name).map_err(|e| {
                Error::entry(
                    String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    EntryProblem::NotUtf8,
                )
            })?;
            if ty.is_dir() && name.len() > 1 && name.ends_with('/') {
                name.pop();
            }
            let fail = |problem| Error::entry(name.clone(), problem);
            path_rules::check_name(&name).map_err(|p| fail(EntryProblem::BadName(p)))?;
            let kind = stream_kind(ty).map_err(|t| fail(EntryProblem::UnsupportedType(t)))?;
            let &i = index
                .get(name.as_str())
                .ok_or_else(|| fail(EntryProblem::NotInManifest))?;
            if seen[i] {
                return Err(fail(EntryProblem::Duplicate));
            }
            let listed = &manifest.files[i];
            if listed.kind.name() != kind {
                return Err(fail(EntryProblem::KindMismatch {
                    manifest: listed.kind.name(),
                    stream: kind,
                }));
            }
            if let Some(parent) = path_rules::parent(&name)
                && !index.get(parent).is_some_and(|&p| seen[p])
            {
                return Err(fail(EntryProblem::ParentNotExtracted {
                    parent: parent.to_string(),
                }));
            }
            let size = entry.size();
            match &listed.kind {
                FileKind::File {
                    size: want_size,
                    sha256,
                } => {
                    if size != *want_size {
                        return Err(fail(EntryProblem::SizeMismatch {
                            manifest: *want_size,
                            stream: size,
                        }));
                    }
                    let out = sink.create_file(&name)?;
                    let digest = copy_hashing(&mut entry, out, listed.mode, &mut buf)?;
                    if digest != *sha256 {
                        return Err(fail(EntryProblem::DigestMismatch {
                            manifest: hex::encode(sha256),
                            actual: hex::encode(digest),
                        }));
                    }
                    bytes += size;
                }
                FileKind::Dir => {
                    if size != 0 {
                        return Err(fail(EntryProblem::UnexpectedData { size }));
                    }
                    sink.create_dir(&name, listed.mode)?;
                }
                FileKind::Symlink { target: want } => {
                    if size != 0 {
                        return Err(fail(EntryProblem::UnexpectedData { size }));
                    }
                    let raw_target = long_link
                        .take()
                        .or_else(|| entry.link_name_bytes().map(|b| b.into_owned()))
                        .unwrap_or_default();
                    let target = String::from_utf8_lossy(&raw_target).into_owned();
                    if let Err(problem) = path_rules::resolve_symlink(&name, &target) {
                        return Err(fail(EntryProblem::BadSymlink { target, problem }));
                    }
                    if target != *want {
                        return Err(fail(EntryProblem::SymlinkTargetMismatch {
                            manifest: want.clone(),
                            stream: target,
                        }));
                    }
                    sink.create_symlink(&name, &target)?;
                }
            }
            if long_link.is_some() {
                return Err(fail(EntryProblem::BadLongName(
                    "a long link name before an entry that is not a link".into(),
                )));
            }
            seen[i] = true;
        }
        if long_name.is_some() || long_link.is_some() {
            return Err(Error::entry(
                "(end of archive)",
                EntryProblem::BadLongName("not followed by an entry".into()),
            ));
        }
    }
    let missing: Vec<String> = manifest
        .files
        .iter()
        .zip(&seen)
        .filter(|(_, seen)| !**seen)
        .map(|(e, _)| e.path.clone())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Missing { entries: missing });
    }
    drain_padding(archive.into_inner(), &mut buf)?;
    Ok((manifest.files.len(), bytes))
}

impl Sink<'_> {
    fn create_file(&mut self, name: &str) -> Result<Option<(fs::File, PathBuf)>> {
        match self {
            Sink::Discard => Ok(None),
            Sink::Dir { root, .. } => {
                let path = root.join(name);
                let file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(Error::io("create", &path))?;
                Ok(Some((file, path)))
            }
        }
    }

    fn create_dir(&mut self, name: &str, mode: u32) -> Result<()> {
        if let Sink::Dir { root, dirs } = self {
            let path = root.join(name);
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .map_err(Error::io("create directory", &path))?;
            dirs.push((path, path_rules::extract_mode(mode)));
        }
        Ok(())
    }

    fn create_symlink(&mut self, name: &str, target: &str) -> Result<()> {
        if let Sink::Dir { root, .. } = self {
            let path = root.join(name);
            std::os::unix::fs::symlink(target, &path)
                .map_err(Error::io("create symlink", &path))?;
        }
        Ok(())
    }
}

/// Copies `entry` into `out` (if any) through `buf`, hashing; returns the sha256. Then applies
/// the final file mode (explicitly, so the umask does not matter) and fsyncs.
fn copy_hashing(
    entry: &mut impl Read,
    mut out: Option<(fs::File, PathBuf)>,
    mode: u32,
    buf: &mut [u8],
) -> Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    loop {
        let n = match entry.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Stream { source }),
        };
        hasher.update(&buf[..n]);
        if let Some((file, path)) = &mut out {
            file.write_all(&buf[..n])
                .map_err(Error::io("write", path.as_path()))?;
        }
    }
    if let Some((file, path)) = &out {
        file.set_permissions(fs::Permissions::from_mode(path_rules::extract_mode(mode)))
            .and_then(|()| file.sync_all())
            .map_err(Error::io("write", path.as_path()))?;
    }
    Ok(hasher.finalize().into())
}

/// The manifest kind of a tar entry type, or the name of a refused type.
fn stream_kind(ty: tar::EntryType) -> std::result::Result<&'static str, &'static str> {
    match ty {
        tar::EntryType::Regular => Ok("file"),
        tar::EntryType::Directory => Ok("dir"),
        tar::EntryType::Symlink => Ok("symlink"),
        tar::EntryType::Link => Err("hard link"),
        tar::EntryType::Char => Err("character device"),
        tar::EntryType::Block => Err("block device"),
        tar::EntryType::Fifo => Err("fifo"),
        tar::EntryType::Continuous => Err("contiguous file"),
        tar::EntryType::GNUSparse => Err("sparse file"),
        tar::EntryType::XHeader | tar::EntryType::XGlobalHeader => Err("PAX header"),
        _ => Err("unknown-type"),
    }
}

fn read_long_name(entry: &mut impl Read, already: bool) -> Result<Vec<u8>> {
    let fail = |why: &str| Error::entry("(GNU long name)", EntryProblem::BadLongName(why.into()));
    if already {
        return Err(fail("two long name records for one entry"));
    }
    let mut name = Vec::new();
    entry
        .take(MAX_LONG_NAME + 1)
        .read_to_end(&mut name)
        .map_err(|source| Error::Stream { source })?;
    if name.len() as u64 > MAX_LONG_NAME {
        return Err(fail("longer than 4096 bytes"));
    }
    while name.last() == Some(&0) {
        name.pop();
    }
    Ok(name)
}

/// After the end-of-archive block only zero padding may follow; reading it to the end also
/// makes zstd check its frame checksum.
fn drain_padding(mut rest: impl Read, buf: &mut [u8]) -> Result<()> {
    loop {
        let n = match rest.read(buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => return Err(Error::Stream { source }),
        };
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(Error::TrailingData);
        }
    }
}
