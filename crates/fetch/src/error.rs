//! Everything that can go wrong, each naming the URL and what to do about it.

use std::io;
use std::path::PathBuf;

/// The boxed cause of a network failure; ureq's types stay out of this crate's API.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why [`fetch`](crate::fetch) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    #[error(
        "refusing to fetch {url}: https is required, not {scheme}://; publish the artifact over https"
    )]
    HttpsRequired { url: String, scheme: String },

    #[error("cannot fetch {url:?}: not a valid https URL ({reason})")]
    InvalidUrl { url: String, reason: String },

    #[error("cannot fetch {url}: the sha256 pin {pin:?} is not 64 hex digits")]
    InvalidPin { url: String, pin: String },

    #[error(
        "cannot fetch {url}: the extra CA file {path} is unusable ({reason}); give a PEM file with one or more CERTIFICATE blocks"
    )]
    ExtraCa {
        url: String,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "cannot fetch {url}: the TLS certificate of {host} is not trusted ({reason}); if {host} uses a private CA, pass that CA's PEM certificate as the extra CA (extra_ca)"
    )]
    Certificate {
        url: String,
        host: String,
        reason: String,
    },

    #[error("cannot fetch {url}: TLS with {host} failed ({reason})")]
    Tls {
        url: String,
        host: String,
        reason: String,
    },

    #[error(
        "cannot fetch {url}: the server answered HTTP {status}; check the URL and that the artifact is published"
    )]
    Status { url: String, status: u16 },

    #[error(
        "cannot fetch {url}: it redirects to {location}, which is not https; https is required on every hop"
    )]
    InsecureRedirect { url: String, location: String },

    #[error("cannot fetch {url}: more than {max} redirects; point at the artifact's final URL")]
    TooManyRedirects { url: String, max: u32 },

    #[error(
        "refusing {url}: it is {size} bytes or more, above the limit of {max} bytes; raise max_size if this artifact is really that large"
    )]
    TooLarge { url: String, size: u64, max: u64 },

    #[error(
        "sha256 mismatch for {url}: expected {expected}, got {actual}; nothing was cached: check the pin, or whether the artifact was replaced"
    )]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },

    #[error(
        "downloading {url} failed after {attempts} attempt(s): {source}; what arrived is kept and the next fetch resumes from there"
    )]
    Network {
        url: String,
        attempts: u32,
        #[source]
        source: Cause,
    },

    #[error("cannot fetch {url}: the server's answer makes no sense ({reason})")]
    BadResponse { url: String, reason: String },

    #[error(
        "cannot fetch {url}: {action} {path} failed: {source}; check the cache directory's permissions and free space"
    )]
    Cache {
        url: String,
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl FetchError {
    /// Whether trying again later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            FetchError::Network { .. } => true,
            FetchError::Status { status, .. } => matches!(status, 408 | 429 | 500..=599),
            _ => false,
        }
    }

    pub(crate) fn cache(url: &str, action: &'static str, path: PathBuf, source: io::Error) -> Self {
        FetchError::Cache {
            url: url.to_owned(),
            action,
            path,
            source,
        }
    }
}
