//! OpenPGP detached signatures, checked with the pure-Rust `pgp` crate (rPGP).
//!
//! - [`Keyring`] holds the public keys to trust, read from what `gpg --export` or
//!   `gpg --export --armor` writes (one or more keys, binary or ASCII-armored, several armored
//!   blocks may be concatenated).
//! - [`verify_detached`] checks a file against a detached signature, binary (`gpg
//!   --detach-sign`) or armored (`gpg --armor --detach-sign`), and returns the [`Signer`].
//!
//! The file is streamed through the hash (rPGP's `Signature::verify` takes a `Read`), so its
//! size does not matter; the signature and the keyring are small and read whole.
//!
//! A signature is accepted when it verifies with a key of the keyring that may sign: the
//! primary key (with a valid self-signature, and signing allowed by its key flags when it has
//! any) or a subkey (with a valid binding signature that allows signing and a valid back
//! signature). Then, and only then, the key's state is checked: a revoked key, or one that was
//! expired when the signature was made or is expired now, is refused, as is a signature past its
//! own expiry. The time of "now" is a parameter of [`verify_detached_at`].
//!
//! Not checked: the web of trust (every key in the keyring is trusted fully), revocations by
//! designated revokers, and revocation of user ids.

mod keyring;
mod verify;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

pub use keyring::Keyring;
pub use verify::{verify_detached, verify_detached_at};

/// The key that made a valid signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signer {
    /// Fingerprint of the certificate's primary key, uppercase hex (as `gpg --fingerprint`
    /// shows it, without spaces).
    pub fingerprint: String,
    /// Key id (uppercase hex, 16 digits) of the key that signed: the primary key or a subkey.
    pub key_id: String,
    /// The certificate's primary user id, if it has one with a valid self-signature.
    pub user_id: Option<String>,
    /// When the signature says it was made.
    pub signed_at: Option<SystemTime>,
}

/// Why an OpenPGP operation failed. Each message names the file, the key and the way out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The keyring could not be parsed.
    #[error(
        "{origin} is not an OpenPGP public keyring (what `gpg --export [--armor] KEYID` writes): {problem}"
    )]
    MalformedKeyring { origin: String, problem: String },

    /// The keyring holds secret keys.
    #[error(
        "{origin} holds an OpenPGP secret key; give the public key instead (`gpg --export --armor KEYID`)"
    )]
    SecretKeyring { origin: String },

    /// The keyring holds no key.
    #[error("{origin} holds no OpenPGP public key; export one with `gpg --export --armor KEYID`")]
    EmptyKeyring { origin: String },

    /// The signature could not be parsed.
    #[error(
        "{origin} is not an OpenPGP detached signature (what `gpg --detach-sign [--armor]` writes): {problem}"
    )]
    MalformedSignature { origin: String, problem: String },

    /// No key of the keyring made the signature.
    #[error(
        "the OpenPGP signature of {} was made by key {}, which is not in the keyring (it holds {}): \
         add the publisher's public key to the keyring, or check that the signature belongs to this file",
        file.display(),
        list(signature_key_ids),
        list(keyring)
    )]
    UnknownKey {
        file: PathBuf,
        /// Issuer fingerprints or key ids named by the signature.
        signature_key_ids: Vec<String>,
        /// Fingerprints of the keyring's certificates.
        keyring: Vec<String>,
    },

    /// The signature does not match the file.
    #[error(
        "{} does not match its OpenPGP signature by key {key}: the file was modified or \
         corrupted after signing; download it again or ask the publisher to sign it again ({problem})",
        file.display()
    )]
    BadSignature {
        file: PathBuf,
        key: Box<KeyName>,
        problem: String,
    },

    /// The signing key has been revoked by its owner.
    #[error(
        "the OpenPGP key {key} that signed {} has been revoked ({reason}): do not trust this \
         signature; ask the publisher for their current key",
        file.display()
    )]
    Revoked {
        file: PathBuf,
        key: Box<KeyName>,
        reason: String,
    },

    /// The signing key has expired, or had when it signed.
    #[error(
        "the OpenPGP key {key} that signed {} expired on {}: ask the publisher for a signature \
         by a current key, or for this key re-exported with a later expiry (`gpg --quick-set-expire`)",
        file.display(),
        utc(*expired_at)
    )]
    Expired {
        file: PathBuf,
        key: Box<KeyName>,
        expired_at: SystemTime,
    },

    /// The signature itself carries an expiry that has passed.
    #[error(
        "the OpenPGP signature of {} by key {key} expired on {}: ask the publisher to sign the file again",
        file.display(),
        utc(*expired_at)
    )]
    SignatureExpired {
        file: PathBuf,
        key: Box<KeyName>,
        expired_at: SystemTime,
    },

    /// The key named by the signature is in the keyring but may not sign.
    #[error(
        "the OpenPGP key {key} named by the signature of {} cannot be used to sign: {problem}",
        file.display()
    )]
    UnusableKey {
        file: PathBuf,
        key: Box<KeyName>,
        problem: String,
    },
}

/// A key of the keyring, as errors name it: `KEYID (fingerprint FPR, USER ID)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyName {
    /// Key id (uppercase hex) of the primary key or subkey concerned.
    pub key_id: String,
    /// Fingerprint of the certificate's primary key.
    pub fingerprint: String,
    /// The certificate's primary user id.
    pub user_id: Option<String>,
}

impl std::fmt::Display for KeyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.user_id {
            Some(uid) => write!(
                f,
                "{} (fingerprint {}, {uid})",
                self.key_id, self.fingerprint
            ),
            None => write!(f, "{} (fingerprint {})", self.key_id, self.fingerprint),
        }
    }
}

/// Result of this module's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "no key".to_string()
    } else {
        items.join(", ")
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days, for days since 1970-01-01 (non-negative here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// Uppercase hex, as gpg shows key ids and fingerprints.
fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_formats_known_instants() {
        let cases = [
            (0, "1970-01-01 00:00:00 UTC"),
            (951_782_400, "2000-02-29 00:00:00 UTC"),
            (1_700_000_000, "2023-11-14 22:13:20 UTC"),
            (4_102_444_799, "2099-12-31 23:59:59 UTC"),
        ];
        for (secs, want) in cases {
            assert_eq!(utc(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
    }

    #[test]
    fn hex_upper_pads() {
        assert_eq!(hex_upper(&[0x0a, 0xff, 0x00]), "0AFF00");
    }
}
