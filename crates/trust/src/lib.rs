//! jarfleet's signatures: who may publish what jarfleet installs.
//!
//! Three modules, one job each:
//!
//! - [`minisign`]: ed25519 keys and signatures in minisign's formats, so publishers can use
//!   `jarfleet keygen`/`jarfleet sign` or the `minisign` tool interchangeably. Generates keys,
//!   reads and writes both key files (password-protected with scrypt, or not), signs files
//!   streaming, and verifies signatures and their trusted comments.
//! - [`openpgp`]: verification of OpenPGP detached signatures (`gpg --detach-sign`, binary or
//!   armored) against keyrings exported by `gpg --export`, in pure Rust (rPGP), streaming the
//!   file.
//! - [`trust`]: the [`TrustStore`] of keys of both kinds and [`TrustStore::verify_artifact`],
//!   which tells the signature kind from the signature file's contents and checks it against
//!   the trusted keys.
//!
//! Nothing here reads a whole artifact into memory: files are hashed in 64 KiB chunks. Errors
//! are `thiserror` enums whose messages name the file, the key ids involved and what to do.

pub mod minisign;
pub mod openpgp;
pub mod trust;

pub use trust::{SignatureKind, Signer, TrustError, TrustStore, signature_beside};
