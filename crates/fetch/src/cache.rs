//! The cache directory: finished artifacts by digest, unfinished ones by request.
//!
//! ```text
//! cache_dir/sha256/<hex>          finished, verified content; never written in place
//! cache_dir/partial/<key>.part    bytes received so far
//! cache_dir/partial/<key>.json    the validator (ETag / Last-Modified) those bytes came with
//! ```
//! `<key>` is the sha256 of the URL and the pin, so a different pin never resumes another's bytes.

use crate::digest::{Sha256Hex, hash_file};
use crate::options::Fetched;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

pub(crate) struct Layout {
    root: PathBuf,
}

impl Layout {
    pub(crate) fn new(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
        }
    }

    pub(crate) fn blobs(&self) -> PathBuf {
        self.root.join("sha256")
    }

    pub(crate) fn partials(&self) -> PathBuf {
        self.root.join("partial")
    }

    /// Creates `sha256/` and `partial/`; on failure returns the directory that could not be made.
    pub(crate) fn create(&self) -> Result<(), (PathBuf, io::Error)> {
        for dir in [self.blobs(), self.partials()] {
            fs::create_dir_all(&dir).map_err(|e| (dir, e))?;
        }
        Ok(())
    }

    pub(crate) fn blob(&self, digest: &Sha256Hex) -> PathBuf {
        self.blobs().join(digest.as_str())
    }

    pub(crate) fn partial(&self, url: &str, pin: Option<&Sha256Hex>) -> Partial {
        let request = format!("{url}\n{}", pin.map(Sha256Hex::as_str).unwrap_or(""));
        let key = Sha256Hex::of(request.as_bytes());
        let dir = self.partials();
        Partial {
            part: dir.join(format!("{key}.part")),
            sidecar: dir.join(format!("{key}.json")),
        }
    }

    /// The pinned artifact if it is cached and intact. A corrupt copy is deleted.
    pub(crate) fn lookup(&self, pin: &Sha256Hex) -> io::Result<Option<Fetched>> {
        let path = self.blob(pin);
        let (actual, size) = match hash_file(&path) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if &actual != pin {
            remove_if_present(&path)?;
            return Ok(None);
        }
        Ok(Some(Fetched {
            path,
            sha256: actual.to_string(),
            size,
            from_cache: true,
        }))
    }

    /// Moves a finished partial file to its place by digest, durably.
    pub(crate) fn promote(&self, partial: &Partial, digest: &Sha256Hex) -> io::Result<PathBuf> {
        let target = self.blob(digest);
        fs::rename(&partial.part, &target)?;
        sync_dir(&self.blobs())?;
        remove_if_present(&partial.sidecar)?;
        Ok(target)
    }
}

/// Where one request's unfinished download lives.
pub(crate) struct Partial {
    pub(crate) part: PathBuf,
    pub(crate) sidecar: PathBuf,
}

/// What is saved beside a `.part` file so a later call can ask for the rest of the same content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sidecar {
    pub(crate) url: String,
    /// The `If-Range` value: a strong ETag or a Last-Modified date. `None`: the server gave
    /// neither, so the bytes cannot be resumed safely.
    pub(crate) if_range: Option<String>,
}

impl Partial {
    /// The saved sidecar, or `None` when missing or unreadable (the partial is then restarted).
    pub(crate) fn load_sidecar(&self) -> Option<Sidecar> {
        let text = fs::read(&self.sidecar).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub(crate) fn save_sidecar(&self, sidecar: &Sidecar) -> io::Result<()> {
        let json = serde_json::to_vec(sidecar).map_err(io::Error::other)?;
        let tmp = self.sidecar.with_extension("json.tmp");
        let mut file = File::create(&tmp)?;
        file.write_all(&json)?;
        file.sync_all()?;
        fs::rename(&tmp, &self.sidecar)
    }

    /// The length of the `.part` file, 0 when there is none.
    pub(crate) fn len(&self) -> io::Result<u64> {
        match fs::metadata(&self.part) {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn remove(&self) -> io::Result<()> {
        remove_if_present(&self.part)?;
        remove_if_present(&self.sidecar)
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_key_depends_on_url_and_pin() {
        let layout = Layout::new(Path::new("/c"));
        let pin = Sha256Hex::of(b"x");
        let a = layout.partial("https://h/a.jar", None).part;
        let b = layout.partial("https://h/b.jar", None).part;
        let c = layout.partial("https://h/a.jar", Some(&pin)).part;
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_eq!(a, layout.partial("https://h/a.jar", None).part);
        assert!(a.starts_with("/c/partial"));
        assert_eq!(a.extension().and_then(|e| e.to_str()), Some("part"));
    }

    #[test]
    fn sidecar_round_trips_and_garbage_reads_as_none() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let layout = Layout::new(dir.path());
        layout.create().map_err(|(_, e)| e)?;
        let partial = layout.partial("https://h/a.jar", None);
        assert_eq!(partial.load_sidecar(), None);
        let sidecar = Sidecar {
            url: "https://h/a.jar".into(),
            if_range: Some("\"v1\"".into()),
        };
        partial.save_sidecar(&sidecar)?;
        assert_eq!(partial.load_sidecar(), Some(sidecar));
        fs::write(&partial.sidecar, b"{not json")?;
        assert_eq!(partial.load_sidecar(), None);
        Ok(())
    }
}
