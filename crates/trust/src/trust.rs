//! The set of trusted keys, and checking an artifact against whichever signature it comes with.
//!
//! A [`TrustStore`] holds minisign public keys and OpenPGP keyrings.
//! [`TrustStore::verify_artifact`] reads the signature file, tells a minisign signature (text
//! starting with `untrusted comment:`) from an OpenPGP one (binary packets or an armored
//! `PGP SIGNATURE` block) by its contents, not its name, and checks it against the trusted keys
//! of that kind. When no trusted key made the signature, the error names the signature's key,
//! the trusted keys and the file.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{minisign, openpgp};

/// Signature files larger than this are refused unread: real ones are a few hundred bytes.
const MAX_SIGNATURE_BYTES: u64 = 1 << 20;

/// The kinds of signature [`TrustStore::verify_artifact`] understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureKind {
    /// A minisign `.minisig` file.
    Minisign,
    /// An OpenPGP detached signature, binary (`.sig`) or armored (`.asc`).
    OpenPgp,
}

impl SignatureKind {
    /// Tells the kind from a signature file's contents, or `None` when it is neither.
    pub fn detect(bytes: &[u8]) -> Option<SignatureKind> {
        let text_start = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .map_or(&[][..], |i| &bytes[i..]);
        if bytes.starts_with(b"untrusted comment:") {
            Some(SignatureKind::Minisign)
        } else if text_start.starts_with(b"-----BEGIN PGP SIGNATURE-----")
            || bytes.first().is_some_and(|b| b & 0x80 != 0)
        {
            // Binary OpenPGP data starts with a packet header, whose top bit is always set.
            Some(SignatureKind::OpenPgp)
        } else {
            None
        }
    }
}

/// Who signed an artifact that verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signer {
    /// A trusted minisign key; the trusted comment comes with it.
    Minisign(minisign::Verified),
    /// A key of a trusted OpenPGP keyring.
    OpenPgp(openpgp::Signer),
}

impl Signer {
    /// The signing key as the trust store lists it (see [`TrustStore::key_ids`]).
    pub fn key_id(&self) -> String {
        match self {
            Signer::Minisign(v) => format!("minisign:{}", v.key_id),
            Signer::OpenPgp(s) => format!("openpgp:{}", s.fingerprint),
        }
    }
}

impl std::fmt::Display for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Signer::Minisign(v) => write!(
                f,
                "minisign key {} (trusted comment: {})",
                v.key_id, v.trusted_comment
            ),
            Signer::OpenPgp(s) => match &s.user_id {
                Some(uid) => write!(f, "OpenPGP key {} ({uid})", s.fingerprint),
                None => write!(f, "OpenPGP key {}", s.fingerprint),
            },
        }
    }
}

/// Why an artifact is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The trust store is empty.
    #[error(
        "cannot verify {}: no trusted keys are configured; add the publisher's minisign public key or OpenPGP keyring",
        file.display()
    )]
    NoTrustedKeys { file: PathBuf },

    /// The signature file is neither minisign nor OpenPGP.
    #[error(
        "{} is neither a minisign signature (a .minisig file starting with \"untrusted comment:\") \
         nor an OpenPGP detached signature (.sig or .asc, as `gpg --detach-sign` writes)",
        signature.display()
    )]
    UnknownSignatureFormat { signature: PathBuf },

    /// The signature file is too large to be a signature.
    #[error(
        "{} is {size} bytes, too large for a signature (at most {MAX_SIGNATURE_BYTES}): is it the artifact itself?",
        signature.display()
    )]
    SignatureTooLarge { signature: PathBuf, size: u64 },

    /// No trusted key made the signature.
    #[error(
        "{} (the signature of {}) was made by {kind} key {}, which is not trusted (trusted keys: {}): \
         if you trust the publisher, add their public key; otherwise do not install {}",
        signature.display(),
        file.display(),
        signature_key_ids.join(", "),
        if trusted.is_empty() { "none".to_string() } else { trusted.join(", ") },
        file.display()
    )]
    UntrustedKey {
        file: PathBuf,
        signature: PathBuf,
        /// "minisign" or "OpenPGP".
        kind: &'static str,
        signature_key_ids: Vec<String>,
        trusted: Vec<String>,
    },

    /// A trusted minisign key made the signature, or the signature or key file is broken.
    #[error(transparent)]
    Minisign(#[from] minisign::Error),

    /// A trusted OpenPGP key made the signature, or the signature or keyring is broken.
    #[error(transparent)]
    OpenPgp(#[from] openpgp::Error),
}

/// The keys trusted to sign artifacts.
#[derive(Clone, Debug, Default)]
pub struct TrustStore {
    minisign: Vec<minisign::PublicKey>,
    openpgp: openpgp::Keyring,
}

impl TrustStore {
    /// An empty store, trusting nothing.
    pub fn new() -> TrustStore {
        TrustStore::default()
    }

    /// Trusts a minisign public key.
    pub fn add_minisign(&mut self, key: minisign::PublicKey) {
        if !self.minisign.contains(&key) {
            self.minisign.push(key);
        }
    }

    /// Trusts every key of an OpenPGP keyring.
    pub fn add_openpgp(&mut self, keyring: openpgp::Keyring) {
        self.openpgp.extend(keyring);
    }

    /// Trusts the key(s) in a file: a minisign public key file (first line
    /// `untrusted comment:`) or an OpenPGP keyring (binary or armored).
    pub fn add_key_file(&mut self, path: &Path) -> Result<(), TrustError> {
        let bytes = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if bytes.starts_with(b"untrusted comment:") {
            self.add_minisign(minisign::PublicKey::from_file(path)?);
        } else {
            self.add_openpgp(openpgp::Keyring::from_file(path)?);
        }
        Ok(())
    }

    /// The trusted keys: `minisign:<KEY ID>` and `openpgp:<FINGERPRINT>`.
    pub fn key_ids(&self) -> Vec<String> {
        let minisign = self
            .minisign
            .iter()
            .map(|k| format!("minisign:{}", k.key_id()));
        let openpgp = self
            .openpgp
            .fingerprints()
            .into_iter()
            .map(|fp| format!("openpgp:{fp}"));
        minisign.chain(openpgp).collect()
    }

    /// Whether nothing is trusted.
    pub fn is_empty(&self) -> bool {
        self.minisign.is_empty() && self.openpgp.is_empty()
    }

    /// Checks the artifact at `path` against the signature at `signature_path`, of either kind,
    /// with every trusted key of that kind. The artifact is streamed, never held in memory.
    pub fn verify_artifact(
        &self,
        path: &Path,
        signature_path: &Path,
    ) -> Result<Signer, TrustError> {
        if self.is_empty() {
            return Err(TrustError::NoTrustedKeys {
                file: path.to_path_buf(),
            });
        }
        let bytes = read_signature(signature_path)?;
        match SignatureKind::detect(&bytes) {
            Some(SignatureKind::Minisign) => self.verify_minisign(path, signature_path, &bytes),
            Some(SignatureKind::OpenPgp) => self.verify_openpgp(path, signature_path, &bytes),
            None => Err(TrustError::UnknownSignatureFormat {
                signature: signature_path.to_path_buf(),
            }),
        }
    }

    fn verify_minisign(
        &self,
        path: &Path,
        signature_path: &Path,
        bytes: &[u8],
    ) -> Result<Signer, TrustError> {
        let origin = signature_path.display().to_string();
        let text = std::str::from_utf8(bytes).map_err(|e| minisign::Error::Malformed {
            origin: origin.clone(),
            kind: "signature",
            line: 1 + bytes[..e.valid_up_to()]
                .iter()
                .filter(|b| **b == b'\n')
                .count(),
            problem: "not UTF-8 text".to_string(),
        })?;
        let sig = minisign::SignatureFile::parse(text, &origin)?;
        let Some(key) = self.minisign.iter().find(|k| k.key_id() == sig.key_id()) else {
            return Err(self.untrusted(
                path,
                signature_path,
                "minisign",
                vec![sig.key_id().to_string()],
            ));
        };
        Ok(Signer::Minisign(minisign::verify_file(path, key, &sig)?))
    }

    fn verify_openpgp(
        &self,
        path: &Path,
        signature_path: &Path,
        bytes: &[u8],
    ) -> Result<Signer, TrustError> {
        match openpgp::verify_detached(path, bytes, &self.openpgp) {
            Ok(signer) => Ok(Signer::OpenPgp(signer)),
            Err(openpgp::Error::UnknownKey {
                signature_key_ids, ..
            }) => Err(self.untrusted(path, signature_path, "OpenPGP", signature_key_ids)),
            Err(openpgp::Error::MalformedSignature { problem, .. }) => {
                Err(openpgp::Error::MalformedSignature {
                    origin: signature_path.display().to_string(),
                    problem,
                }
                .into())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn untrusted(
        &self,
        path: &Path,
        signature_path: &Path,
        kind: &'static str,
        signature_key_ids: Vec<String>,
    ) -> TrustError {
        TrustError::UntrustedKey {
            file: path.to_path_buf(),
            signature: signature_path.to_path_buf(),
            kind,
            signature_key_ids,
            trusted: self.key_ids(),
        }
    }
}

fn read_signature(path: &Path) -> Result<Vec<u8>, TrustError> {
    let read_error = |source| TrustError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_SIGNATURE_BYTES {
        let size = std::fs::metadata(path)
            .map(|m| m.len())
            .unwrap_or(bytes.len() as u64);
        return Err(TrustError::SignatureTooLarge {
            signature: path.to_path_buf(),
            size,
        });
    }
    Ok(bytes)
}

/// The signature of `artifact` next to it: `ARTIFACT.minisig`, else `ARTIFACT.sig` or
/// `ARTIFACT.asc` (OpenPGP), the first that exists.
pub fn signature_beside(artifact: &Path) -> Option<std::path::PathBuf> {
    ["minisig", "sig", "asc"].iter().find_map(|ext| {
        let mut s = artifact.as_os_str().to_owned();
        s.push(".");
        s.push(ext);
        let p = std::path::PathBuf::from(s);
        p.is_file().then_some(p)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_signature_kinds_by_content() {
        let cases: [(&[u8], Option<SignatureKind>); 6] = [
            (b"untrusted comment: x\n", Some(SignatureKind::Minisign)),
            (
                b"-----BEGIN PGP SIGNATURE-----\n",
                Some(SignatureKind::OpenPgp),
            ),
            (
                b"\n\n-----BEGIN PGP SIGNATURE-----\n",
                Some(SignatureKind::OpenPgp),
            ),
            (b"\x88\x75\x04\x00", Some(SignatureKind::OpenPgp)),
            (b"hello", None),
            (b"", None),
        ];
        for (bytes, want) in cases {
            assert_eq!(SignatureKind::detect(bytes), want, "{bytes:?}");
        }
    }

    #[test]
    fn an_empty_store_says_so() {
        let err = TrustStore::new()
            .verify_artifact(Path::new("a.jar"), Path::new("a.jar.minisig"))
            .err();
        assert!(
            matches!(err, Some(TrustError::NoTrustedKeys { .. })),
            "{err:?}"
        );
    }
}
