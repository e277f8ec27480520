//! The trusted OpenPGP public keys, and what each key may do: which (sub)key may sign, whether
//! it is revoked, and when it expires, all from self-signatures that verify.

use std::io::Cursor;
use std::path::Path;
use std::time::{Duration, SystemTime};

use pgp::composed::{Deserializable, SignedPublicKey, SignedPublicSubKey};
use pgp::packet::{Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, Tag};

use super::{Error, Result, hex_upper};

const ARMOR_PUBLIC: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
const ARMOR_SECRET: &str = "-----BEGIN PGP PRIVATE KEY BLOCK-----";

/// OpenPGP public keys (certificates) trusted to sign.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    certs: Vec<SignedPublicKey>,
}

impl Keyring {
    /// Reads a keyring file: binary (`gpg --export`) or armored (`gpg --export --armor`).
    pub fn from_file(path: &Path) -> Result<Keyring> {
        let bytes = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Keyring::parse(&bytes, &path.display().to_string())
    }

    /// Parses keyring bytes; errors call them "OpenPGP keyring data".
    pub fn from_bytes(bytes: &[u8]) -> Result<Keyring> {
        Keyring::parse(bytes, "OpenPGP keyring data")
    }

    /// Adds the keys of `other`.
    pub fn extend(&mut self, other: Keyring) {
        self.certs.extend(other.certs);
    }

    /// Fingerprints (uppercase hex) of the primary keys, in keyring order.
    pub fn fingerprints(&self) -> Vec<String> {
        self.certs
            .iter()
            .map(|c| hex_upper(c.primary_key.fingerprint().as_bytes()))
            .collect()
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    /// Whether the keyring holds no certificate.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The keys that may have made `sig`: every primary key or subkey whose fingerprint or key id
    /// the signature names (or all of them when it names none).
    pub(crate) fn candidates<'a>(&'a self, sig: &Signature) -> Vec<SigningCandidate<'a>> {
        let ids = sig.issuer_key_id();
        let fps = sig.issuer_fingerprint();
        let named = |k: &dyn KeyDetails| {
            (ids.is_empty() && fps.is_empty())
                || ids.iter().any(|id| **id == k.legacy_key_id())
                || fps.iter().any(|fp| **fp == k.fingerprint())
        };
        let mut out = Vec::new();
        for cert in &self.certs {
            if named(&cert.primary_key) {
                out.push(SigningCandidate { cert, subkey: None });
            }
            for sub in &cert.public_subkeys {
                if named(&sub.key) {
                    out.push(SigningCandidate {
                        cert,
                        subkey: Some(sub),
                    });
                }
            }
        }
        out
    }

    fn parse(bytes: &[u8], origin: &str) -> Result<Keyring> {
        let text = std::str::from_utf8(bytes).ok();
        let armored = text.is_some_and(|t| t.contains(ARMOR_PUBLIC));
        if text.is_some_and(|t| t.contains(ARMOR_SECRET)) {
            return Err(Error::SecretKeyring {
                origin: origin.to_string(),
            });
        }
        if let Some(first) = text
            .filter(|_| !armored)
            .and_then(|t| t.trim_start().lines().next())
            .filter(|l| l.starts_with("-----BEGIN PGP"))
        {
            return Err(Error::MalformedKeyring {
                origin: origin.to_string(),
                problem: format!("it holds {first:?}, not a \"PGP PUBLIC KEY BLOCK\""),
            });
        }
        let malformed = |e: pgp::errors::Error| Error::MalformedKeyring {
            origin: origin.to_string(),
            problem: e.to_string(),
        };
        let mut certs = Vec::new();
        match text {
            Some(text) if armored => {
                // rPGP reads one armored block; `cat a.asc b.asc` makes several.
                for block in text.split(ARMOR_PUBLIC).skip(1) {
                    let block = format!("{ARMOR_PUBLIC}{block}");
                    let (keys, _) =
                        SignedPublicKey::from_armor_many(Cursor::new(block.into_bytes()))
                            .map_err(malformed)?;
                    for key in keys {
                        certs.push(key.map_err(malformed)?);
                    }
                }
            }
            _ => {
                if is_secret_key_packet(bytes) {
                    return Err(Error::SecretKeyring {
                        origin: origin.to_string(),
                    });
                }
                let keys =
                    SignedPublicKey::from_bytes_many(Cursor::new(bytes)).map_err(malformed)?;
                for key in keys {
                    certs.push(key.map_err(malformed)?);
                }
            }
        }
        if certs.is_empty() {
            return Err(Error::EmptyKeyring {
                origin: origin.to_string(),
            });
        }
        Ok(Keyring { certs })
    }
}

/// Whether binary OpenPGP data starts with a secret key packet (tag 5).
fn is_secret_key_packet(bytes: &[u8]) -> bool {
    match bytes.first() {
        // New format: 0b11tttttt; old format: 0b10ttttll.
        Some(&b) if b & 0xc0 == 0xc0 => b & 0x3f == 5,
        Some(&b) if b & 0xc0 == 0x80 => (b >> 2) & 0x0f == 5,
        _ => false,
    }
}

/// A primary key or subkey that a signature names.
pub(crate) struct SigningCandidate<'a> {
    pub cert: &'a SignedPublicKey,
    pub subkey: Option<&'a SignedPublicSubKey>,
}

/// What the self-signatures say about a signing candidate.
pub(crate) struct KeyState {
    /// Set when the key is revoked: the reason.
    pub revoked: Option<String>,
    /// When the key (or, for a subkey, the key or its primary) expires.
    pub expires: Option<SystemTime>,
    /// Set when the key may not sign: why.
    pub unusable: Option<String>,
}

impl SigningCandidate<'_> {
    pub(crate) fn key_id(&self) -> String {
        match self.subkey {
            Some(sub) => hex_upper(sub.key.legacy_key_id().as_ref()),
            None => hex_upper(self.cert.primary_key.legacy_key_id().as_ref()),
        }
    }

    pub(crate) fn fingerprint(&self) -> String {
        hex_upper(self.cert.primary_key.fingerprint().as_bytes())
    }

    /// The primary user id: the one whose newest valid self-signature says "primary", else the
    /// first with a valid self-signature.
    pub(crate) fn user_id(&self) -> Option<String> {
        let primary = &self.cert.primary_key;
        let mut first = None;
        for user in &self.cert.details.users {
            let Some(sig) = newest(user.signatures.iter().filter(|s| {
                s.verify_certification(primary, Tag::UserId, &user.id)
                    .is_ok()
            })) else {
                continue;
            };
            let name = String::from_utf8_lossy(user.id.id()).into_owned();
            if sig.is_primary() {
                return Some(name);
            }
            first.get_or_insert(name);
        }
        first
    }

    /// Revocation, expiry and signing capability, from signatures that verify.
    pub(crate) fn state(&self) -> KeyState {
        let primary = &self.cert.primary_key;
        let primary_binding = self.primary_binding();
        let primary_expiry = primary_binding.and_then(|s| expiry(primary, s));
        let primary_revoked = self
            .cert
            .details
            .revocation_signatures
            .iter()
            .find(|s| s.verify_key(primary).is_ok())
            .map(revocation_reason);
        match self.subkey {
            None => {
                let unusable = match primary_binding {
                    None => Some("the primary key has no valid self-signature".to_string()),
                    Some(sig) if has_key_flags(sig) && !sig.key_flags().sign() => Some(
                        "its key flags do not allow signing (sign with a signing subkey)"
                            .to_string(),
                    ),
                    Some(_) => None,
                };
                KeyState {
                    revoked: primary_revoked,
                    expires: primary_expiry,
                    unusable,
                }
            }
            Some(sub) => {
                let binding = newest(sub.signatures.iter().filter(|s| {
                    s.typ() == Some(SignatureType::SubkeyBinding)
                        && s.verify_subkey_binding(primary, &sub.key).is_ok()
                }));
                let revoked = primary_revoked.or_else(|| {
                    sub.signatures
                        .iter()
                        .find(|s| {
                            s.typ() == Some(SignatureType::SubkeyRevocation)
                                && s.verify_subkey_binding(primary, &sub.key).is_ok()
                        })
                        .map(revocation_reason)
                });
                let unusable = match binding {
                    None => Some("the subkey has no valid binding signature".to_string()),
                    Some(sig) if !sig.key_flags().sign() => {
                        Some("the subkey's flags do not allow signing".to_string())
                    }
                    Some(sig)
                        if !sig.embedded_signature().is_some_and(|back| {
                            back.verify_primary_key_binding(&sub.key, primary).is_ok()
                        }) =>
                    {
                        Some("the signing subkey has no valid back-signature".to_string())
                    }
                    Some(_) => None,
                };
                let sub_expiry = binding.and_then(|s| expiry(&sub.key, s));
                KeyState {
                    revoked,
                    expires: earliest(primary_expiry, sub_expiry),
                    unusable,
                }
            }
        }
    }

    /// The newest valid self-signature of the primary key: a user id certification or a direct
    /// key signature.
    fn primary_binding(&self) -> Option<&Signature> {
        let primary = &self.cert.primary_key;
        let certifications = self.cert.details.users.iter().flat_map(|u| {
            u.signatures
                .iter()
                .filter(move |s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
        });
        let direct = self
            .cert
            .details
            .direct_signatures
            .iter()
            .filter(|s| s.verify_key(primary).is_ok());
        newest(certifications.chain(direct))
    }
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map(|t| t.as_secs()).unwrap_or(0))
}

fn earliest(a: Option<SystemTime>, b: Option<SystemTime>) -> Option<SystemTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Creation time plus the binding signature's key expiration time (0 or absent: never).
fn expiry(key: &impl KeyDetails, binding: &Signature) -> Option<SystemTime> {
    let secs = binding.key_expiration_time()?.as_secs();
    if secs == 0 {
        return None;
    }
    let created: SystemTime = key.created_at().into();
    Some(created + Duration::from_secs(u64::from(secs)))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

fn revocation_reason(sig: &Signature) -> String {
    let code = sig
        .revocation_reason_code()
        .map(|c| format!("{c:?}"))
        .unwrap_or_else(|| "no reason given".to_string());
    match sig.revocation_reason_string() {
        Some(text) if !text.is_empty() => {
            format!("{code}: {}", String::from_utf8_lossy(text))
        }
        _ => code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_a_malformed_keyring() {
        let err = Keyring::from_bytes(b"\x99\x00\x01garbage").err();
        assert!(
            matches!(
                err,
                Some(Error::MalformedKeyring { .. } | Error::EmptyKeyring { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn armored_garbage_is_a_malformed_keyring() {
        let text =
            format!("{ARMOR_PUBLIC}\n\nnot base64 at all\n-----END PGP PUBLIC KEY BLOCK-----\n");
        let err = Keyring::from_bytes(text.as_bytes()).err();
        assert!(
            matches!(
                err,
                Some(Error::MalformedKeyring { .. } | Error::EmptyKeyring { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn other_armored_blocks_and_minisign_keys_are_not_keyrings() {
        let sig = "-----BEGIN PGP SIGNATURE-----\n\nxx\n-----END PGP SIGNATURE-----\n";
        let err = Keyring::from_bytes(sig.as_bytes())
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "OpenPGP keyring data is not an OpenPGP public keyring (what `gpg --export [--armor] KEYID` \
                 writes): it holds \"-----BEGIN PGP SIGNATURE-----\", not a \"PGP PUBLIC KEY BLOCK\""
            )
        );
        let minisign_pub = "untrusted comment: minisign public key 1\nRWQAAA==\n";
        let err = Keyring::from_bytes(minisign_pub.as_bytes()).err();
        assert!(
            matches!(
                err,
                Some(Error::MalformedKeyring { .. } | Error::EmptyKeyring { .. })
            ),
            "{err:?}"
        );
    }

    #[test]
    fn empty_input_is_an_empty_keyring() {
        let err = Keyring::from_bytes(b"").err();
        assert!(matches!(err, Some(Error::EmptyKeyring { .. })), "{err:?}");
    }

    #[test]
    fn secret_keys_are_refused_with_advice() {
        let armored = format!("{ARMOR_SECRET}\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n");
        let err = Keyring::from_bytes(armored.as_bytes()).err();
        assert!(matches!(err, Some(Error::SecretKeyring { .. })), "{err:?}");
        // New-format packet header, tag 5 (secret key).
        let err = Keyring::from_bytes(&[0xc5, 0x01, 0x04]).err();
        assert!(matches!(err, Some(Error::SecretKeyring { .. })), "{err:?}");
        // Old-format packet header, tag 5.
        let err = Keyring::from_bytes(&[0x94, 0x01, 0x04]).err();
        assert!(matches!(err, Some(Error::SecretKeyring { .. })), "{err:?}");
    }
}
