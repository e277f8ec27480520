//! Opening a bundle stream: decompress, read the manifest (the first entry, bounded), then hand
//! the rest of the stream to [`crate::extract`] for verification or extraction.

use std::io::{self, BufReader, Read};
use std::path::Path;

use crate::error::{Error, Result};
use crate::extract::{self, Sink};
use crate::fsutil::Target;
use crate::manifest::{self, MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest};

/// Largest zstd window accepted (2^24 = 16 MiB): bounds the decoder's memory whatever the
/// bundle says. `pack` uses far less.
pub const WINDOW_LOG_MAX: u32 = 24;

const BLOCK: usize = 512;

/// An opened bundle: the manifest has been read and validated; the payload has not been read.
pub struct Bundle<R: Read> {
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    rest: zstd::stream::read::Decoder<'static, BufReader<R>>,
}

/// What a verification or extraction went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub name: String,
    pub version: String,
    /// Release-identity digest, hex.
    pub digest: String,
    /// Payload entries (files, directories, symlinks).
    pub entries: usize,
    /// Bytes of regular-file content.
    pub bytes: u64,
}

impl<R: Read> Bundle<R> {
    /// Reads and validates the manifest at the start of `reader` (a `.jfb` stream).
    pub fn open(reader: R) -> Result<Bundle<R>> {
        let mut rest = zstd::stream::read::Decoder::new(reader).map_err(|e| not_bundle(&e))?;
        rest.window_log_max(WINDOW_LOG_MAX)
            .map_err(|e| not_bundle(&e))?;
        let mut block = [0u8; BLOCK];
        rest.read_exact(&mut block).map_err(|e| not_bundle(&e))?;
        let header = tar::Header::from_byte_slice(&block);
        if !checksum_ok(&block, header) {
            return Err(Error::NotABundle {
                reason: "the first tar header is corrupt (bad checksum)".into(),
            });
        }
        let name = header.path_bytes();
        if name.as_ref() != MANIFEST_NAME.as_bytes() {
            return Err(Error::NotABundle {
                reason: format!(
                    "the first entry is `{}`, expected {MANIFEST_NAME}",
                    String::from_utf8_lossy(&name)
                ),
            });
        }
        if header.entry_type() != tar::EntryType::Regular {
            return Err(Error::NotABundle {
                reason: format!("{MANIFEST_NAME} is not a regular file entry"),
            });
        }
        let size = header
            .entry_size()
            .map_err(|source| Error::Stream { source })?;
        if size > MAX_MANIFEST_BYTES {
            return Err(Error::NotABundle {
                reason: format!(
                    "{MANIFEST_NAME} is {size} bytes, more than the {MAX_MANIFEST_BYTES}-byte limit"
                ),
            });
        }
        let size = usize::try_from(size).map_err(|_| Error::NotABundle {
            reason: format!("{MANIFEST_NAME} size does not fit in memory"),
        })?;
        let padded = size.div_ceil(BLOCK) * BLOCK;
        let mut manifest_bytes = vec![0u8; padded];
        rest.read_exact(&mut manifest_bytes)
            .map_err(|source| Error::Stream { source })?;
        manifest_bytes.truncate(size);
        let manifest = Manifest::from_slice(&manifest_bytes)?;
        Ok(Bundle {
            manifest,
            manifest_bytes,
            rest,
        })
    }

    /// Opens and verifies everything (every entry against the manifest, sizes and digests)
    /// without writing anything.
    pub fn verify(reader: R) -> Result<Summary> {
        Bundle::open(reader)?.verify_payload()
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The manifest exactly as stored in the bundle.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// Release-identity digest: hex sha256 of the manifest bytes.
    pub fn digest(&self) -> String {
        manifest::manifest_digest(&self.manifest_bytes)
    }

    /// Reads the rest of the stream and checks it against the manifest, writing nothing.
    pub fn verify_payload(self) -> Result<Summary> {
        let summary = self.summary();
        let (entries, bytes) = extract::walk(&self.manifest, self.rest, &mut Sink::Discard)?;
        Ok(Summary {
            entries,
            bytes,
            ..summary
        })
    }

    /// Streams the payload into `dir`, verifying as it goes.
    ///
    /// `dir` must not exist (its parent must) or be an empty directory: it is a staging
    /// directory that the caller renames into place afterwards. On any error, everything
    /// written is removed again (and `dir` too when this call created it), so the caller never
    /// sees a partial release. Files get the manifest mode masked with `0o755`; directory modes
    /// are applied last; files and directories are fsynced.
    pub fn extract_to(self, dir: &Path) -> Result<Summary> {
        let summary = self.summary();
        let target = Target::prepare(dir)?;
        let mut sink = Sink::Dir {
            root: target.path,
            dirs: Vec::new(),
        };
        let walked = extract::walk(&self.manifest, self.rest, &mut sink)
            .and_then(|counts| sink.finish().map(|()| counts));
        match walked {
            Ok((entries, bytes)) => Ok(Summary {
                entries,
                bytes,
                ..summary
            }),
            Err(e) => {
                target.abandon();
                Err(e)
            }
        }
    }

    fn summary(&self) -> Summary {
        Summary {
            name: self.manifest.name.clone(),
            version: self.manifest.version.clone(),
            digest: self.digest(),
            entries: 0,
            bytes: 0,
        }
    }
}

fn not_bundle(e: &io::Error) -> Error {
    Error::NotABundle {
        reason: if e.kind() == io::ErrorKind::UnexpectedEof {
            "the stream is empty or truncated before the manifest".to_string()
        } else {
            format!("cannot decompress it as zstd ({e})")
        },
    }
}

fn checksum_ok(block: &[u8; BLOCK], header: &tar::Header) -> bool {
    let sum: u32 = block[..148]
        .iter()
        .chain(&block[156..])
        .map(|b| u32::from(*b))
        .sum::<u32>()
        + 8 * u32::from(b' ');
    header.cksum().is_ok_and(|c| c == sum)
}
