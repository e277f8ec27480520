//! What a caller asks of [`fetch`](crate::fetch) and what it gets back.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Default ceiling on an artifact's size: 4 GiB.
pub const DEFAULT_MAX_SIZE: u64 = 4 * 1024 * 1024 * 1024;

/// How far a download has come, given to the progress callback after every chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the artifact on disk so far, including those resumed from an earlier call.
    pub downloaded: u64,
    /// The artifact's full size, when the server said it.
    pub total: Option<u64>,
}

/// A progress callback. It runs on the downloading thread, so it should be quick.
pub type ProgressFn = Box<dyn Fn(Progress) + Send + Sync>;

/// How to fetch. Build with [`FetchOptions::new`], then set the fields you need.
#[non_exhaustive]
pub struct FetchOptions {
    /// Root of the cache: `sha256/<hex>` holds finished artifacts, `partial/` unfinished ones.
    pub cache_dir: PathBuf,
    /// Expected sha256 as 64 hex digits. With a pin, a cached copy is used without any network
    /// and a mismatch is an error. Without one the caller must verify a signature over the result.
    pub sha256: Option<String>,
    /// A PEM file with one or more CA certificates, trusted in addition to Mozilla's roots.
    pub extra_ca: Option<PathBuf>,
    /// A client certificate (PEM chain, PEM key) presented to servers that ask for one (a
    /// cluster's nodes, to each other).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Connect timeout, and the longest the server may stay silent while sending.
    pub timeout: Duration,
    /// Called as bytes arrive.
    pub progress: Option<ProgressFn>,
    /// How often a dropped connection is retried within one call, resuming where it stopped.
    pub max_retries: u32,
    /// Wait before the first retry; doubled for each further one, capped at 10 s.
    pub retry_backoff: Duration,
    /// An artifact larger than this is refused, by its Content-Length or as its body grows.
    pub max_size: u64,
}

impl FetchOptions {
    /// Options with defaults: no pin, Mozilla roots only, 30 s timeout, 3 retries, 4 GiB limit.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        Self {
            cache_dir: cache_dir.into(),
            sha256: None,
            extra_ca: None,
            client_cert: None,
            timeout: Duration::from_secs(30),
            progress: None,
            max_retries: 3,
            retry_backoff: Duration::from_millis(500),
            max_size: DEFAULT_MAX_SIZE,
        }
    }

    pub(crate) fn report(&self, progress: Progress) {
        if let Some(callback) = &self.progress {
            callback(progress);
        }
    }

    /// The wait before retry number `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.retry_backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(10))
    }
}

impl fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchOptions")
            .field("cache_dir", &self.cache_dir)
            .field("sha256", &self.sha256)
            .field("extra_ca", &self.extra_ca)
            .field("client_cert", &self.client_cert)
            .field("timeout", &self.timeout)
            .field("progress", &self.progress.as_ref().map(|_| "Fn(Progress)"))
            .field("max_retries", &self.max_retries)
            .field("retry_backoff", &self.retry_backoff)
            .field("max_size", &self.max_size)
            .finish()
    }
}

/// A fetched artifact, in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// `cache_dir/sha256/<hex>`.
    pub path: PathBuf,
    /// sha256 of the content, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// True when no request was made because the pinned artifact was already cached.
    pub from_cache: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let mut opts = FetchOptions::new("/tmp/x");
        opts.retry_backoff = Duration::from_millis(100);
        let cases = [(1, 100), (2, 200), (3, 400), (8, 10_000), (40, 10_000)];
        for (attempt, millis) in cases {
            assert_eq!(
                opts.backoff(attempt),
                Duration::from_millis(millis),
                "{attempt}"
            );
        }
    }
}
