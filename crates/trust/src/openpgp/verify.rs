//! Checking a file against an OpenPGP detached signature, streaming the file.

use std::io::{BufReader, Cursor, Read};
use std::path::Path;
use std::time::{Duration, SystemTime};

use pgp::composed::{Deserializable, DetachedSignature};
use pgp::packet::{Signature, SignatureType};

use super::keyring::{Keyring, SigningCandidate};
use super::{Error, KeyName, Result, Signer, hex_upper};

/// Checks the file at `file` against `signature` (binary or armored; if it holds several
/// signatures, one valid signature by a usable key of `keyring` is enough) at the current time.
/// See the [module docs](super) for what is checked.
pub fn verify_detached(file: &Path, signature: &[u8], keyring: &Keyring) -> Result<Signer> {
    verify_detached_at(file, signature, keyring, SystemTime::now())
}

/// [`verify_detached`] with an explicit "now", used for the expiry checks.
pub fn verify_detached_at(
    file: &Path,
    signature: &[u8],
    keyring: &Keyring,
    now: SystemTime,
) -> Result<Signer> {
    let signatures = parse(signature, file)?;
    let mut issuers = Vec::new();
    let mut failure = None;
    for sig in &signatures {
        issuers.extend(issuer_names(sig));
        for candidate in keyring.candidates(sig) {
            match check(file, sig, &candidate, now) {
                Ok(signer) => return Ok(signer),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
    }
    Err(failure.unwrap_or_else(|| Error::UnknownKey {
        file: file.to_path_buf(),
        signature_key_ids: issuers,
        keyring: keyring.fingerprints(),
    }))
}

/// The issuer fingerprints the signature names, else its issuer key ids, uppercase hex.
pub(crate) fn issuer_names(sig: &Signature) -> Vec<String> {
    let fps: Vec<String> = sig
        .issuer_fingerprint()
        .iter()
        .map(|fp| hex_upper(fp.as_bytes()))
        .collect();
    if !fps.is_empty() {
        return fps;
    }
    sig.issuer_key_id()
        .iter()
        .map(|id| hex_upper(id.as_ref()))
        .collect()
}

/// Parses detached signature bytes into the signatures over data they hold.
pub(crate) fn parse(bytes: &[u8], file: &Path) -> Result<Vec<Signature>> {
    let origin = || format!("the signature of {}", file.display());
    let malformed = |problem: String| Error::MalformedSignature {
        origin: origin(),
        problem,
    };
    let (parsed, _) = DetachedSignature::from_reader_many(Cursor::new(bytes))
        .map_err(|e| malformed(e.to_string()))?;
    let mut out = Vec::new();
    for sig in parsed {
        let sig = sig.map_err(|e| malformed(e.to_string()))?.signature;
        match sig.typ() {
            Some(SignatureType::Binary | SignatureType::Text) => out.push(sig),
            other => {
                return Err(malformed(format!(
                    "it holds a {other:?} signature, not a signature over a file"
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(malformed("it holds no signature".to_string()));
    }
    Ok(out)
}

fn check(
    file: &Path,
    sig: &Signature,
    candidate: &SigningCandidate<'_>,
    now: SystemTime,
) -> Result<Signer> {
    let name = || {
        Box::new(KeyName {
            key_id: candidate.key_id(),
            fingerprint: candidate.fingerprint(),
            user_id: candidate.user_id(),
        })
    };

    let opened = std::fs::File::open(file).map_err(|source| Error::Read {
        path: file.to_path_buf(),
        source,
    })?;
    let mut reader = RecordingReader {
        inner: BufReader::with_capacity(64 * 1024, opened),
        error: None,
    };
    let verified = match candidate.subkey {
        Some(sub) => sig.verify(&sub.key, &mut reader),
        None => sig.verify(&candidate.cert.primary_key, &mut reader),
    };
    if let Some(source) = reader.error {
        return Err(Error::Read {
            path: file.to_path_buf(),
            source,
        });
    }
    if let Err(e) = verified {
        return Err(Error::BadSignature {
            file: file.to_path_buf(),
            key: name(),
            problem: e.to_string(),
        });
    }

    let state = candidate.state();
    if let Some(reason) = state.revoked {
        return Err(Error::Revoked {
            file: file.to_path_buf(),
            key: name(),
            reason,
        });
    }
    if let Some(problem) = state.unusable {
        return Err(Error::UnusableKey {
            file: file.to_path_buf(),
            key: name(),
            problem,
        });
    }
    let signed_at: Option<SystemTime> = sig.created().map(Into::into);
    if let Some(expired_at) = state.expires {
        let expired_when_signed = signed_at.is_some_and(|t| t >= expired_at);
        if expired_at <= now || expired_when_signed {
            return Err(Error::Expired {
                file: file.to_path_buf(),
                key: name(),
                expired_at,
            });
        }
    }
    if let (Some(created), Some(validity)) = (signed_at, sig.signature_expiration_time()) {
        let secs = validity.as_secs();
        let expired_at = created + Duration::from_secs(u64::from(secs));
        if secs != 0 && expired_at <= now {
            return Err(Error::SignatureExpired {
                file: file.to_path_buf(),
                key: name(),
                expired_at,
            });
        }
    }
    let KeyName {
        key_id,
        fingerprint,
        user_id,
    } = *name();
    Ok(Signer {
        fingerprint,
        key_id,
        user_id,
        signed_at,
    })
}

/// Passes reads through and keeps the first IO error, so a read failure is reported as such
/// rather than as a bad signature.
struct RecordingReader<R> {
    inner: R,
    error: Option<std::io::Error>,
}

impl<R: Read> Read for RecordingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => {
                let copy = std::io::Error::new(e.kind(), e.to_string());
                self.error.get_or_insert(e);
                Err(copy)
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_signature_is_malformed() {
        for bytes in [&b"hello"[..], b"", b"\x88\x00"] {
            let err = parse(bytes, Path::new("a.jar")).err();
            assert!(
                matches!(err, Some(Error::MalformedSignature { .. })),
                "{bytes:?}: {err:?}"
            );
        }
    }

    #[test]
    fn a_minisign_signature_is_not_an_openpgp_signature() {
        let minisig = "untrusted comment: x\nRUS3\ntrusted comment: y\nAAAA\n";
        let err = parse(minisig.as_bytes(), Path::new("a.jar"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.starts_with("the signature of a.jar is not an OpenPGP detached signature"),
            "{err}"
        );
    }
}
