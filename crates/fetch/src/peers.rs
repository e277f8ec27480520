//! Content known by its sha256, from whichever source has it: the nodes of a cluster, then the
//! origin. Each source is asked in turn; bytes received from one are continued from the next
//! (the partial file is keyed by the digest, and every source of ours names the content by the
//! same strong ETag, the quoted digest); content that does not hash to the digest is dropped and
//! the next source asked. So a source can be slow, gone, or hostile, and the worst it does is
//! cost time.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::cache::Layout;
use crate::digest::Sha256Hex;
use crate::download::Download;
use crate::error::FetchError;
use crate::options::{FetchOptions, Fetched};

/// Whether `text` is a sha256 as 64 hex digits.
pub fn is_sha256(text: &str) -> bool {
    Sha256Hex::parse(text).is_some_and(|d| d.as_str() == text)
}

/// Why [`fetch_by_digest`] found no intact copy.
#[derive(Debug, thiserror::Error)]
pub enum DigestFetchError {
    #[error("{0:?} is not a sha256 (64 lowercase hex digits)")]
    InvalidDigest(String),
    #[error("no source to fetch sha256 {digest} from")]
    NoSource { digest: String },
    #[error("no source served sha256 {digest} intact: {}", .tried.iter().map(|(url, e)| format!("{url}: {e}")).collect::<Vec<_>>().join("; "))]
    Exhausted {
        digest: String,
        /// Each source asked, and what went wrong there.
        tried: Vec<(String, FetchError)>,
    },
    #[error("the cache at {path}: {source}")]
    Cache {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
}

impl DigestFetchError {
    /// The sources that served bytes which were not the content asked for.
    pub fn tampered(&self) -> Vec<&str> {
        match self {
            DigestFetchError::Exhausted { tried, .. } => tried
                .iter()
                .filter(|(_, e)| matches!(e, FetchError::DigestMismatch { .. }))
                .map(|(url, _)| url.as_str())
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// What [`fetch_by_digest`] got, and from where.
#[derive(Debug)]
pub struct ByDigest {
    pub fetched: Fetched,
    /// The source that served it (`None`: it was in the cache).
    pub from: Option<String>,
    /// Sources asked before it, and what went wrong there (a tampered copy among them).
    pub failed: Vec<(String, FetchError)>,
}

/// Fetches the content whose sha256 is `digest` into the cache, from the cache itself if it is
/// there and intact, else from the first of `sources` (http or https URLs) that serves it
/// intact. `opts.sha256` is ignored: `digest` is the pin.
pub fn fetch_by_digest(
    sources: &[String],
    digest: &str,
    opts: &FetchOptions,
) -> Result<ByDigest, DigestFetchError> {
    let pin = Sha256Hex::parse(digest)
        .filter(|d| d.as_str() == digest)
        .ok_or_else(|| DigestFetchError::InvalidDigest(digest.to_owned()))?;
    let layout = Layout::new(&opts.cache_dir);
    layout
        .create()
        .map_err(|(path, source)| DigestFetchError::Cache { path, source })?;
    let cached = layout
        .lookup(&pin)
        .map_err(|source| DigestFetchError::Cache {
            path: layout.blob(&pin),
            source,
        })?;
    if let Some(fetched) = cached {
        return Ok(ByDigest {
            fetched,
            from: None,
            failed: Vec::new(),
        });
    }
    if sources.is_empty() {
        return Err(DigestFetchError::NoSource {
            digest: digest.to_owned(),
        });
    }
    let tls = crate::tls::config(opts.extra_ca.as_deref(), opts.client_cert.as_ref())
        .unwrap_or_else(|_| {
            // An unusable extra CA or client certificate: https sources are then checked
            // against Mozilla's roots alone, with no certificate of ours (one behind a private
            // CA, or asking for a client certificate, fails and the next source is asked); the
            // digest, not the channel, is what makes the bytes trusted.
            crate::tls::config(None, None).unwrap_or_default()
        });
    let agent = crate::http::digest_agent(opts, tls);
    let identity = format!("sha256:{digest}");
    let mut failed = Vec::new();
    for url in sources {
        let host = match source_host(url) {
            Ok(host) => host,
            Err(e) => {
                failed.push((url.clone(), e));
                continue;
            }
        };
        let got = Download {
            url,
            identity: &identity,
            host: &host,
            pin: Some(&pin),
            opts,
            layout: &layout,
            agent: agent.clone(),
        }
        .run();
        match got {
            Ok(fetched) => {
                return Ok(ByDigest {
                    fetched,
                    from: Some(url.clone()),
                    failed,
                });
            }
            Err(e) => failed.push((url.clone(), e)),
        }
    }
    Err(DigestFetchError::Exhausted {
        digest: digest.to_owned(),
        tried: failed,
    })
}

/// The host of an http or https source.
fn source_host(url: &str) -> Result<String, FetchError> {
    let invalid = |reason: &str| FetchError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    if !matches!(scheme.as_deref(), Some("http" | "https")) {
        return Err(invalid("a source is an http or https URL"));
    }
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e: ureq::http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(host.trim_matches(['[', ']']).to_owned()),
        _ => Err(invalid("no host")),
    }
}

/// Puts the local file at `path` into the cache under its sha256 (a copy: the original may
/// change or go) and returns it there; a file already cached intact is not copied again. When
/// `expect` is given and the file does not hash to it, nothing is cached and the actual digest
/// is the error.
pub fn adopt(path: &Path, cache_dir: &Path, expect: Option<&str>) -> Result<Fetched, AdoptError> {
    let layout = Layout::new(cache_dir);
    layout
        .create()
        .map_err(|(at, source)| AdoptError::Io { path: at, source })?;
    let io_err = |at: &Path| {
        let at = at.to_path_buf();
        move |source| AdoptError::Io { path: at, source }
    };
    let (digest, size) = crate::digest::hash_file(path).map_err(io_err(path))?;
    if let Some(want) = expect
        && want != digest.as_str()
    {
        return Err(AdoptError::Mismatch {
            path: path.to_path_buf(),
            expected: want.to_owned(),
            actual: digest.to_string(),
        });
    }
    let target = layout.blob(&digest);
    // Already cached, and intact (a copy that went bad is replaced below).
    let cached = fs::symlink_metadata(&target).is_ok_and(|m| m.is_file() && m.len() == size)
        && crate::digest::hash_file(&target).is_ok_and(|(d, _)| d == digest);
    if cached {
        // Adopted again just now: a prune must not take it while it goes into a release.
        let _ = File::options()
            .write(true)
            .open(&target)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
        return Ok(Fetched {
            path: target,
            sha256: digest.to_string(),
            size,
            from_cache: true,
        });
    }
    let mut from = File::open(path).map_err(io_err(path))?;
    let tmp = tempfile::NamedTempFile::new_in(layout.partials()).map_err(io_err(cache_dir))?;
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    {
        let mut out = tmp.as_file();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err(path)(e)),
            };
            sha2::Digest::update(&mut hasher, &buf[..n]);
            out.write_all(&buf[..n]).map_err(io_err(tmp.path()))?;
        }
        out.sync_all().map_err(io_err(tmp.path()))?;
    }
    // The file changed between the two reads: what was copied is not what was hashed.
    let copied = Sha256Hex::finish(hasher);
    if copied != digest {
        return Err(AdoptError::Mismatch {
            path: path.to_path_buf(),
            expected: digest.to_string(),
            actual: copied.to_string(),
        });
    }
    tmp.persist(&target).map_err(|e| AdoptError::Io {
        path: target.clone(),
        source: e.error,
    })?;
    if let Some(dir) = target.parent() {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
    }
    Ok(Fetched {
        path: target,
        sha256: digest.to_string(),
        size,
        from_cache: false,
    })
}

/// Why [`adopt`] did not cache a file.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} has sha256 {actual}, not {expected}")]
    Mismatch {
        path: std::path::PathBuf,
        expected: String,
        actual: String,
    },
}

/// Removes every finished artifact in the cache whose digest is not in `keep` and that was
/// not written or adopted within `min_age` (it may be on its way into a release), with the
/// files kept beside it (`<digest>.<ext>`: its signature); returns the digests removed.
/// Unfinished downloads and unknown files are left alone.
pub fn prune(
    cache_dir: &Path,
    keep: &std::collections::BTreeSet<String>,
    min_age: std::time::Duration,
) -> io::Result<Vec<String>> {
    let layout = Layout::new(cache_dir);
    let mut removed = Vec::new();
    let dir = match fs::read_dir(layout.blobs()) {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in dir {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let digest = name.split_once('.').map_or(name.as_str(), |(d, _)| d);
        let young = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_none_or(|age| age < min_age);
        if is_sha256(digest) && !keep.contains(digest) && !young {
            fs::remove_file(entry.path())?;
            if digest == name {
                removed.push(name);
            }
        }
    }
    removed.sort();
    Ok(removed)
}
