//! minisign-compatible ed25519 keys and signatures.
//!
//! Files written here are read by `minisign` (0.11 and later) and the other way round; the
//! formats are those of <https://jedisct1.github.io/minisign/>, summarised in [`format`]'s
//! module docs.
//!
//! - [`KeyPair::generate`] makes a key pair. The secret key is encrypted with scrypt when a
//!   password is given (as `minisign -G` does, with the same cost parameters) and stored in
//!   clear otherwise (as `minisign -G -W` does).
//! - [`PublicKey`] and [`SecretKey`] read and write the two key files.
//! - [`sign_file`] signs a file in minisign's prehashed mode (`ED`: ed25519 over the file's
//!   blake2b-512), reading it in chunks, so the file's size does not matter.
//! - [`verify_file`] checks a [`SignatureFile`] against a [`PublicKey`]: key id, signature over
//!   the file (prehashed `ED`, or legacy `Ed` over the raw file, both streamed), then the global
//!   signature over the trusted comment, which it returns in [`Verified`].
//!
//! Every failure is an [`Error`] that names the file, the key ids involved and what to do.

mod format;
mod kdf;
mod keys;
mod sign;
mod signature;
mod verify;

use std::path::PathBuf;

pub use format::KeyId;
pub use kdf::KdfLimits;
pub use keys::{KeyPair, PublicKey, SecretKey};
pub use sign::{default_trusted_comment, sign_file, sign_reader};
pub use signature::{SignatureAlgorithm, SignatureFile};
pub use verify::{Verified, verify_file, verify_reader};

/// Why a minisign operation failed. Each message names the object and the way out.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A key or signature file is not in minisign's format.
    #[error("{origin} is not a valid minisign {kind}: line {line}: {problem}")]
    Malformed {
        /// The file's path, or a description such as "public key string".
        origin: String,
        /// "public key", "secret key" or "signature".
        kind: &'static str,
        /// 1-based line number.
        line: usize,
        problem: String,
    },

    /// The signature was made by another key than the one it is checked against.
    #[error(
        "the signature of {} was made with minisign key {signature_key_id}, but the public key \
         given is {public_key_id}: verify with the public key {signature_key_id}, or ask the \
         publisher which key they sign with",
        file.display()
    )]
    WrongKey {
        file: PathBuf,
        signature_key_id: KeyId,
        public_key_id: KeyId,
    },

    /// The file's contents do not match the signature: it was modified, truncated or replaced.
    #[error(
        "{} does not match its signature by minisign key {key_id}: the file was modified or \
         corrupted after signing; download it again or ask the publisher to sign it again",
        file.display()
    )]
    BadSignature { file: PathBuf, key_id: KeyId },

    /// The signature over the file is valid but the trusted comment was altered.
    #[error(
        "the trusted comment in the signature of {} was altered after signing (the global \
         signature by minisign key {key_id} does not match it): do not trust this signature; \
         fetch the original .minisig file",
        file.display()
    )]
    BadTrustedComment { file: PathBuf, key_id: KeyId },

    /// The password does not decrypt the secret key.
    #[error("wrong password for the minisign secret key {origin}")]
    WrongPassword { origin: String },

    /// The secret key is encrypted and no password was given.
    #[error("the minisign secret key {origin} is encrypted: give its password")]
    PasswordRequired { origin: String },

    /// The secret key decoded, but its contents are inconsistent.
    #[error("the minisign secret key {origin} is corrupted: {problem}; restore it from a backup")]
    CorruptSecretKey { origin: String, problem: String },

    /// The secret key's password-derivation parameters cannot or will not be used.
    #[error("cannot decrypt the minisign secret key {origin}: {problem}")]
    Kdf { origin: String, problem: String },

    /// The trusted comment cannot be put in a signature file.
    #[error("cannot sign with this trusted comment: {problem}")]
    InvalidTrustedComment { problem: String },

    /// The operating system's random number generator failed.
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// Result of this module's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
