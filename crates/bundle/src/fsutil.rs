//! Small filesystem helpers shared by extraction, rendering and packing: staging targets that
//! are cleaned up on failure, streaming sha256, directory fsync.

use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Copy buffer size: the only per-file memory the streaming paths use.
pub(crate) const BUF_SIZE: usize = 64 * 1024;

/// A directory being filled; [`Target::abandon`] removes what was written.
pub(crate) struct Target<'a> {
    pub(crate) path: &'a Path,
    created: bool,
}

impl<'a> Target<'a> {
    /// `path` must not exist (it is created) or be an empty directory.
    pub(crate) fn prepare(path: &'a Path) -> Result<Target<'a>> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(path).map_err(Error::io("create directory", path))?;
                Ok(Target {
                    path,
                    created: true,
                })
            }
            Err(e) => Err(Error::io("inspect", path)(e)),
            Ok(meta) if meta.is_dir() => {
                let mut entries = fs::read_dir(path).map_err(Error::io("list", path))?;
                if entries.next().is_some() {
                    return Err(Error::TargetNotEmpty { path: path.into() });
                }
                Ok(Target {
                    path,
                    created: false,
                })
            }
            Ok(_) => Err(Error::TargetNotEmpty { path: path.into() }),
        }
    }

    /// Removes everything written below the target (and the target itself if we created it).
    /// Best effort: the original error is what the caller reports.
    pub(crate) fn abandon(self) {
        make_dirs_writable(self.path);
        if self.created {
            let _ = fs::remove_dir_all(self.path);
        } else if let Ok(entries) = fs::read_dir(self.path) {
            for entry in entries.flatten() {
                let path = entry.path();
                match entry.file_type() {
                    Ok(t) if t.is_dir() => {
                        let _ = fs::remove_dir_all(&path);
                    }
                    _ => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
        }
    }
}

fn make_dirs_writable(dir: &Path) {
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_dirs_writable(&entry.path());
            }
        }
    }
}

/// fsyncs a directory so that the entries created in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("sync directory", dir))
}

/// Streams a file through sha256; returns its size and digest.
pub(crate) fn hash_file(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut file = fs::File::open(path).map_err(Error::io("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hasher.finalize().into()))
}
