//! Downloading remote artifacts (jars, bundles) for the installer and the daemon.
//!
//! [`fetch`] is blocking. It speaks https only (Mozilla's roots plus an optional extra CA),
//! hashes with sha256 while bytes arrive, writes to `cache_dir/partial/` and moves a finished,
//! verified file to `cache_dir/sha256/<hex>`. With a pin, a cached copy is re-hashed and used
//! without any request. An interrupted download is resumed with `Range` + `If-Range`, both
//! within one call (up to `max_retries`) and across calls.
//!
//! Without a pin the caller must check a signature over the returned file before trusting it.
//!
//! [`fetch_by_digest`] fetches content known by its sha256 from the first of several sources
//! (a cluster's nodes, then the origin) that serves it intact, over http or https: the digest,
//! not the channel, is what makes the bytes trusted. [`adopt`] puts a local file into the cache.

mod cache;
mod digest;
mod download;
mod error;
mod http;
mod options;
mod peers;
mod tls;

pub use error::{Cause, FetchError};
pub use options::{DEFAULT_MAX_SIZE, FetchOptions, Fetched, Progress, ProgressFn};
pub use peers::{AdoptError, ByDigest, DigestFetchError, adopt, fetch_by_digest, is_sha256, prune};

use cache::Layout;
use digest::Sha256Hex;
use download::Download;
use http::UrlProblem;

/// Fetches `url` into the cache and returns where it is.
pub fn fetch(url: &str, opts: &FetchOptions) -> Result<Fetched, FetchError> {
    let host = http::check_url(url).map_err(|problem| match problem {
        UrlProblem::NotHttps(scheme) => FetchError::HttpsRequired {
            url: url.to_owned(),
            scheme,
        },
        UrlProblem::Invalid(reason) => FetchError::InvalidUrl {
            url: url.to_owned(),
            reason,
        },
    })?;
    let pin = match opts.sha256.as_deref() {
        None => None,
        Some(pin) => Some(Sha256Hex::parse(pin).ok_or_else(|| FetchError::InvalidPin {
            url: url.to_owned(),
            pin: pin.to_owned(),
        })?),
    };
    let layout = Layout::new(&opts.cache_dir);
    layout
        .create()
        .map_err(|(path, e)| FetchError::cache(url, "creating", path, e))?;
    if let Some(pin) = &pin
        && let Some(hit) = layout
            .lookup(pin)
            .map_err(|e| FetchError::cache(url, "checking", layout.blob(pin), e))?
    {
        return Ok(hit);
    }
    let tls =
        tls::config(opts.extra_ca.as_deref(), opts.client_cert.as_ref()).map_err(|reason| {
            FetchError::ExtraCa {
                url: url.to_owned(),
                path: opts.extra_ca.clone().unwrap_or_default(),
                reason,
            }
        })?;
    Download {
        url,
        identity: url,
        host: &host,
        pin: pin.as_ref(),
        opts,
        layout: &layout,
        agent: http::agent(opts, tls),
    }
    .run()
}
