//! One download: request, resume, retry, write, hash, verify, promote into the cache.

use crate::cache::{Layout, Partial, Sidecar};
use crate::digest::{Sha256Hex, hash_into};
use crate::error::{Cause, FetchError};
use crate::http;
use crate::options::{FetchOptions, Fetched, Progress};
use crate::tls::{self, TlsFailure};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};

const CHUNK: usize = 64 * 1024;

pub(crate) struct Download<'a> {
    pub(crate) url: &'a str,
    /// What the bytes are: the URL, or for a fetch by digest `sha256:<hex>`, so that bytes
    /// received from one source are continued from another.
    pub(crate) identity: &'a str,
    pub(crate) host: &'a str,
    pub(crate) pin: Option<&'a Sha256Hex>,
    pub(crate) opts: &'a FetchOptions,
    pub(crate) layout: &'a Layout,
    pub(crate) agent: ureq::Agent,
}

/// The bytes in the `.part` file and their running digest. `len` and `hasher` always describe
/// exactly the file's content.
struct Received {
    hasher: Sha256,
    len: u64,
    total: Option<u64>,
    /// How to ask for the rest of the same content; `None`: it cannot be resumed.
    if_range: Option<String>,
}

impl Received {
    fn nothing() -> Self {
        Self {
            hasher: Sha256::new(),
            len: 0,
            total: None,
            if_range: None,
        }
    }

    fn progress(&self) -> Progress {
        Progress {
            downloaded: self.len,
            total: self.total,
        }
    }
}

enum Failure {
    /// The connection failed or dropped: worth retrying from where it stopped.
    Transient(Cause),
    /// The server no longer has what we hold (416 to our Range): start over, not a retry.
    Restart,
    Fatal(FetchError),
}

impl Download<'_> {
    pub(crate) fn run(&self) -> Result<Fetched, FetchError> {
        let partial = self.layout.partial(self.identity, self.pin);
        let mut received = self.resume_point(&partial)?;
        let mut retries = 0;
        loop {
            match self.attempt(&partial, &mut received) {
                Ok(()) => return self.finish(&partial, received),
                Err(Failure::Restart) => {
                    self.discard(&partial);
                    received = Received::nothing();
                }
                Err(Failure::Transient(_)) if retries < self.opts.max_retries => {
                    retries += 1;
                    std::thread::sleep(self.opts.backoff(retries));
                }
                Err(Failure::Transient(source)) => {
                    return Err(FetchError::Network {
                        url: self.url.to_owned(),
                        attempts: retries + 1,
                        source,
                    });
                }
                Err(Failure::Fatal(error)) => return Err(error),
            }
        }
    }

    /// What an earlier, interrupted call left behind, if it can be continued.
    fn resume_point(&self, partial: &Partial) -> Result<Received, FetchError> {
        let len = partial
            .len()
            .map_err(|e| self.cache_error("reading", &partial.part, e))?;
        let sidecar = partial.load_sidecar();
        let usable = len > 0 && len <= self.opts.max_size;
        let if_range = match sidecar {
            Some(Sidecar { url, if_range }) if usable && url == self.identity => if_range,
            _ => None,
        };
        let Some(if_range) = if_range else {
            self.discard(partial);
            return Ok(Received::nothing());
        };
        let mut hasher = Sha256::new();
        let len = hash_into(&partial.part, &mut hasher)
            .map_err(|e| self.cache_error("reading", &partial.part, e))?;
        Ok(Received {
            hasher,
            len,
            total: None,
            if_range: Some(if_range),
        })
    }

    fn attempt(&self, partial: &Partial, rx: &mut Received) -> Result<(), Failure> {
        if rx.if_range.is_none() {
            // Bytes without a validator cannot be continued safely.
            *rx = Received::nothing();
        }
        let mut request = self.agent.get(self.url);
        if let (true, Some(validator)) = (rx.len > 0, &rx.if_range) {
            request = request
                .header("range", format!("bytes={}-", rx.len))
                .header("if-range", validator);
        }
        let response = request.call().map_err(|e| self.call_failure(e))?;
        let status = response.status().as_u16();
        let headers = response.headers();
        match status {
            206 if rx.len > 0 => {
                let Some((start, total)) = http::content_range(headers) else {
                    return Err(self.bad(partial, "a 206 without a usable Content-Range".into()));
                };
                if start != rx.len {
                    let reason =
                        format!("asked for bytes from {} but got them from {start}", rx.len);
                    return Err(self.bad(partial, reason));
                }
                rx.total = total;
            }
            200 => {
                *rx = Received::nothing();
                rx.total = http::content_length(headers);
                rx.if_range = http::if_range(headers);
                let sidecar = Sidecar {
                    url: self.identity.to_owned(),
                    if_range: rx.if_range.clone(),
                };
                partial.save_sidecar(&sidecar).map_err(|e| {
                    Failure::Fatal(self.cache_error("writing", &partial.sidecar, e))
                })?;
            }
            416 if rx.len > 0 => return Err(Failure::Restart),
            _ => {
                return Err(Failure::Fatal(FetchError::Status {
                    url: self.url.to_owned(),
                    status,
                }));
            }
        }
        if let Some(total) = rx.total
            && total > self.opts.max_size
        {
            return Err(self.too_large(partial, total));
        }
        let mut file = self.open_part(partial, rx.len)?;
        self.opts.report(rx.progress());
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Failure::Transient(Box::new(e))),
            };
            let len = rx.len + n as u64;
            if len > self.opts.max_size {
                return Err(self.too_large(partial, len));
            }
            file.write_all(&buf[..n])
                .map_err(|e| Failure::Fatal(self.cache_error("writing", &partial.part, e)))?;
            rx.hasher.update(&buf[..n]);
            rx.len = len;
            self.opts.report(rx.progress());
        }
        match rx.total {
            Some(total) if rx.len < total => Err(Failure::Transient(
                format!("connection closed after {} of {total} bytes", rx.len).into(),
            )),
            Some(total) if rx.len > total => {
                let reason = format!("{} bytes arrived, {total} were announced", rx.len);
                Err(self.bad(partial, reason))
            }
            _ => file
                .sync_all()
                .map_err(|e| Failure::Fatal(self.cache_error("syncing", &partial.part, e))),
        }
    }

    /// The `.part` file, cut to `len` bytes and positioned at its end.
    fn open_part(&self, partial: &Partial, len: u64) -> Result<File, Failure> {
        let open = || -> io::Result<File> {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(&partial.part)?;
            file.set_len(len)?;
            file.seek(SeekFrom::End(0))?;
            Ok(file)
        };
        open().map_err(|e| Failure::Fatal(self.cache_error("writing", &partial.part, e)))
    }

    fn finish(&self, partial: &Partial, rx: Received) -> Result<Fetched, FetchError> {
        let digest = Sha256Hex::finish(rx.hasher);
        if let Some(pin) = self.pin
            && &digest != pin
        {
            self.discard(partial);
            return Err(FetchError::DigestMismatch {
                url: self.url.to_owned(),
                expected: pin.to_string(),
                actual: digest.to_string(),
            });
        }
        let path = self
            .layout
            .promote(partial, &digest)
            .map_err(|e| self.cache_error("moving into the cache", &partial.part, e))?;
        Ok(Fetched {
            path,
            sha256: digest.to_string(),
            size: rx.len,
            from_cache: false,
        })
    }

    fn call_failure(&self, error: ureq::Error) -> Failure {
        let url = self.url.to_owned();
        let host = self.host.to_owned();
        match tls::classify(&error) {
            Some(TlsFailure::Certificate(reason)) => {
                return Failure::Fatal(FetchError::Certificate { url, host, reason });
            }
            Some(TlsFailure::Other(reason)) => {
                return Failure::Fatal(FetchError::Tls { url, host, reason });
            }
            None => {}
        }
        Failure::Fatal(match error {
            ureq::Error::RequireHttpsOnly(location) => {
                FetchError::InsecureRedirect { url, location }
            }
            ureq::Error::TooManyRedirects => FetchError::TooManyRedirects {
                url,
                max: http::MAX_REDIRECTS,
            },
            ureq::Error::BadUri(reason) => FetchError::InvalidUrl { url, reason },
            ureq::Error::Tls(reason) => FetchError::Tls {
                url,
                host,
                reason: reason.to_owned(),
            },
            ureq::Error::RedirectFailed
            | ureq::Error::Protocol(_)
            | ureq::Error::LargeResponseHeader(..) => FetchError::BadResponse {
                url,
                reason: error.to_string(),
            },
            // Connection refused or reset, timeouts, name resolution: may pass.
            other => return Failure::Transient(Box::new(other)),
        })
    }

    fn too_large(&self, partial: &Partial, size: u64) -> Failure {
        self.discard(partial);
        Failure::Fatal(FetchError::TooLarge {
            url: self.url.to_owned(),
            size,
            max: self.opts.max_size,
        })
    }

    fn bad(&self, partial: &Partial, reason: String) -> Failure {
        self.discard(partial);
        Failure::Fatal(FetchError::BadResponse {
            url: self.url.to_owned(),
            reason,
        })
    }

    /// Drops a partial download. Best effort: the error being reported matters more, and a
    /// leftover is restarted by the next call because it has no usable sidecar or is too long.
    fn discard(&self, partial: &Partial) {
        let _ = partial.remove();
    }

    fn cache_error(
        &self,
        action: &'static str,
        path: &std::path::Path,
        e: io::Error,
    ) -> FetchError {
        FetchError::cache(self.url, action, path.to_path_buf(), e)
    }
}
