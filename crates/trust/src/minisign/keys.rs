//! minisign key pairs: generation, and reading and writing both key files.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};
use ed25519_dalek::{SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use super::format::{
    self, ALG_ED25519, CHK_BLAKE2B, KDF_NONE, KDF_SCRYPT, KeyId, LineProblem, Lines,
    PUBLIC_KEY_LEN, SECRET_KEY_LEN, UNTRUSTED_PREFIX, alg_name, to_array,
};
use super::kdf::{self, KdfLimits, STREAM_LEN};
use super::{Error, Result};

/// A minisign public key: a key id and an ed25519 public key.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    key_id: KeyId,
    key: VerifyingKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} {})", self.key_id, self.to_base64())
    }
}

impl PublicKey {
    /// Reads a public key file (`minisign.pub`: an untrusted comment line, then the base64 key).
    pub fn from_file(path: &Path) -> Result<PublicKey> {
        let text = read_to_string(path)?;
        PublicKey::parse_file(&text, &path.display().to_string())
    }

    /// Parses the contents of a public key file; errors call it "public key text".
    pub fn from_file_string(text: &str) -> Result<PublicKey> {
        PublicKey::parse_file(text, "public key text")
    }

    /// Parses a public key given as its base64 line alone, as `minisign -P` takes it.
    pub fn from_base64(line: &str) -> Result<PublicKey> {
        PublicKey::decode(line, 1).map_err(|p| malformed("public key string", "public key", p))
    }

    /// The key id that signatures by this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The base64 line alone (what `minisign -P` takes).
    pub fn to_base64(&self) -> String {
        let mut b = [0u8; PUBLIC_KEY_LEN];
        b[..2].copy_from_slice(&ALG_ED25519);
        b[2..10].copy_from_slice(self.key_id.as_bytes());
        b[10..].copy_from_slice(self.key.as_bytes());
        format::encode(&b)
    }

    /// The whole public key file, as `minisign -G` writes it.
    pub fn to_file_string(&self) -> String {
        format!(
            "{UNTRUSTED_PREFIX}minisign public key {}\n{}\n",
            self.key_id,
            self.to_base64()
        )
    }

    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }

    fn parse_file(text: &str, origin: &str) -> Result<PublicKey> {
        let parse = || -> Result<PublicKey, LineProblem> {
            let mut lines = Lines::new(text);
            let (n, line) = lines.next_line()?;
            format::strip_prefix(line, n, UNTRUSTED_PREFIX)?;
            let (n, line) = lines.next_line()?;
            PublicKey::decode(line, n)
        };
        parse().map_err(|p| malformed(origin, "public key", p))
    }

    fn decode(line: &str, n: usize) -> Result<PublicKey, LineProblem> {
        let b: [u8; PUBLIC_KEY_LEN] = format::decode_fixed(line, n, "public key")?;
        let alg = [b[0], b[1]];
        if alg != ALG_ED25519 {
            return Err(LineProblem::new(
                n,
                format!(
                    "unsupported signature algorithm {}, expected \"Ed\"",
                    alg_name(alg)
                ),
            ));
        }
        let key = VerifyingKey::from_bytes(&to_array(&b[10..])).map_err(|_| {
            LineProblem::new(n, "the ed25519 public key is not a valid curve point")
        })?;
        Ok(PublicKey {
            key_id: KeyId(to_array(&b[2..10])),
            key,
        })
    }
}

/// How a secret key file is protected.
enum Protection {
    /// Stored in clear (`minisign -G -W`).
    None,
    /// Encrypted with scrypt output; the stream is kept so the key can be written again
    /// without asking for the password.
    Scrypt {
        salt: [u8; 32],
        limits: KdfLimits,
        stream: Zeroizing<[u8; STREAM_LEN]>,
    },
}

/// A minisign secret key. Its memory is wiped when dropped; `Debug` shows only the key id.
pub struct SecretKey {
    key_id: KeyId,
    key: SigningKey,
    protection: Protection,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SecretKey({}, {})",
            self.key_id,
            if self.is_encrypted() {
                "encrypted"
            } else {
                "unencrypted"
            }
        )
    }
}

impl SecretKey {
    /// Reads a secret key file. `password` is needed when the key is encrypted and ignored when
    /// it is not (like `minisign -W`).
    pub fn from_file(path: &Path, password: Option<&str>) -> Result<SecretKey> {
        let text = Zeroizing::new(read_to_string(path)?);
        SecretKey::parse_file(&text, password, &path.display().to_string())
    }

    /// Parses the contents of a secret key file; errors call it "secret key text".
    pub fn from_file_string(text: &str, password: Option<&str>) -> Result<SecretKey> {
        SecretKey::parse_file(text, password, "secret key text")
    }

    /// The key id shared with the public key and every signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            key_id: self.key_id,
            key: self.key.verifying_key(),
        }
    }

    /// Whether the key file is password-protected.
    pub fn is_encrypted(&self) -> bool {
        matches!(self.protection, Protection::Scrypt { .. })
    }

    /// The whole secret key file, encrypted with the password it was created or loaded with.
    /// For an unencrypted key the text itself is secret, hence the wiping wrapper.
    pub fn to_file_string(&self) -> Zeroizing<String> {
        let mut b = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        b[..2].copy_from_slice(&ALG_ED25519);
        b[4..6].copy_from_slice(&CHK_BLAKE2B);
        let body = Zeroizing::new(self.plain_body());
        b[54..].copy_from_slice(body.as_slice());
        match &self.protection {
            Protection::None => b[2..4].copy_from_slice(&KDF_NONE),
            Protection::Scrypt {
                salt,
                limits,
                stream,
            } => {
                b[2..4].copy_from_slice(&KDF_SCRYPT);
                b[6..38].copy_from_slice(salt);
                b[38..46].copy_from_slice(&limits.opslimit.to_le_bytes());
                b[46..54].copy_from_slice(&limits.memlimit.to_le_bytes());
                for (byte, s) in b[54..].iter_mut().zip(stream.iter()) {
                    *byte ^= s;
                }
            }
        }
        Zeroizing::new(format!(
            "{UNTRUSTED_PREFIX}minisign encrypted secret key\n{}\n",
            Zeroizing::new(format::encode(b.as_slice())).as_str()
        ))
    }

    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.key
    }

    /// Key id ‖ secret key (seed ‖ public key) ‖ checksum, before encryption.
    fn plain_body(&self) -> [u8; STREAM_LEN] {
        let mut body = [0u8; STREAM_LEN];
        body[..8].copy_from_slice(self.key_id.as_bytes());
        body[8..72].copy_from_slice(&self.key.to_keypair_bytes());
        let chk = checksum(&self.key_id, &body[8..72]);
        body[72..].copy_from_slice(&chk);
        body
    }

    fn parse_file(text: &str, password: Option<&str>, origin: &str) -> Result<SecretKey> {
        let structural = |p| malformed(origin, "secret key", p);
        let mut lines = Lines::new(text);
        let (n, line) = lines.next_line().map_err(structural)?;
        format::strip_prefix(line, n, UNTRUSTED_PREFIX).map_err(structural)?;
        let (n, line) = lines.next_line().map_err(structural)?;
        let decoded = Zeroizing::new(BASE64.decode(line.trim()).map_err(|e| {
            structural(LineProblem::new(
                n,
                format!("secret key is not valid base64 ({e})"),
            ))
        })?);
        if decoded.len() != SECRET_KEY_LEN {
            return Err(structural(LineProblem::new(
                n,
                format!(
                    "secret key decodes to {} bytes, a minisign secret key has {SECRET_KEY_LEN}",
                    decoded.len()
                ),
            )));
        }
        let field =
            |range: std::ops::Range<usize>| [decoded[range.start], decoded[range.start + 1]];
        let (alg, kdf_alg, chk_alg) = (field(0..2), field(2..4), field(4..6));
        let unsupported = |what: &str, found: [u8; 2], expected: &str| {
            structural(LineProblem::new(
                n,
                format!(
                    "unsupported {what} {}, expected {expected}",
                    alg_name(found)
                ),
            ))
        };
        if alg != ALG_ED25519 {
            return Err(unsupported("signature algorithm", alg, "\"Ed\""));
        }
        if chk_alg != CHK_BLAKE2B {
            return Err(unsupported("checksum algorithm", chk_alg, "\"B2\""));
        }
        let mut body = Zeroizing::new([0u8; STREAM_LEN]);
        body.copy_from_slice(&decoded[54..]);
        let protection = if kdf_alg == KDF_SCRYPT {
            let Some(password) = password else {
                return Err(Error::PasswordRequired {
                    origin: origin.to_string(),
                });
            };
            let salt: [u8; 32] = to_array(&decoded[6..38]);
            let limits = KdfLimits {
                opslimit: u64::from_le_bytes(to_array(&decoded[38..46])),
                memlimit: u64::from_le_bytes(to_array(&decoded[46..54])),
            };
            let stream = kdf::derive_stream(password, &salt, limits).map_err(|e| Error::Kdf {
                origin: origin.to_string(),
                problem: e.to_string(),
            })?;
            for (byte, s) in body.iter_mut().zip(stream.iter()) {
                *byte ^= s;
            }
            Protection::Scrypt {
                salt,
                limits,
                stream,
            }
        } else if kdf_alg == KDF_NONE {
            Protection::None
        } else {
            return Err(unsupported(
                "key derivation function",
                kdf_alg,
                "\"Sc\" (scrypt) or none",
            ));
        };

        let key_id = KeyId(to_array(&body[..8]));
        let stored_chk: [u8; 32] = to_array(&body[72..]);
        let chk = checksum(&key_id, &body[8..72]);
        match protection {
            Protection::Scrypt { .. } if chk != stored_chk => {
                return Err(Error::WrongPassword {
                    origin: origin.to_string(),
                });
            }
            // `minisign -G -W` leaves the checksum of an unencrypted key all zero.
            Protection::None if stored_chk != [0; 32] && chk != stored_chk => {
                return Err(Error::CorruptSecretKey {
                    origin: origin.to_string(),
                    problem: "its checksum does not match its contents".to_string(),
                });
            }
            _ => {}
        }
        let keypair: Zeroizing<[u8; 64]> = Zeroizing::new(to_array(&body[8..72]));
        let key =
            SigningKey::from_keypair_bytes(&keypair).map_err(|_| Error::CorruptSecretKey {
                origin: origin.to_string(),
                problem: "its public half does not belong to its secret half".to_string(),
            })?;
        Ok(SecretKey {
            key_id,
            key,
            protection,
        })
    }
}

/// A freshly generated key pair.
#[derive(Debug)]
pub struct KeyPair {
    pub public: PublicKey,
    pub secret: SecretKey,
}

impl KeyPair {
    /// Generates a key pair with a random key id. With a password the secret key is encrypted
    /// with minisign's default scrypt cost ([`KdfLimits::SENSITIVE`]: 1 GiB of memory, a second
    /// or two of CPU); without one it is stored in clear, like `minisign -G -W`.
    pub fn generate(password: Option<&str>) -> Result<KeyPair> {
        KeyPair::generate_with_limits(password, KdfLimits::SENSITIVE)
    }

    /// Like [`KeyPair::generate`], with an explicit scrypt cost for the password.
    pub fn generate_with_limits(password: Option<&str>, limits: KdfLimits) -> Result<KeyPair> {
        let mut seed = Zeroizing::new([0u8; 32]);
        let mut key_id = [0u8; 8];
        random(seed.as_mut_slice())?;
        random(&mut key_id)?;
        let key = SigningKey::from_bytes(&seed);
        let protection = match password {
            None => Protection::None,
            Some(password) => {
                let mut salt = [0u8; 32];
                random(&mut salt)?;
                let stream =
                    kdf::derive_stream(password, &salt, limits).map_err(|e| Error::Kdf {
                        origin: "new key".to_string(),
                        problem: e.to_string(),
                    })?;
                Protection::Scrypt {
                    salt,
                    limits,
                    stream,
                }
            }
        };
        let secret = SecretKey {
            key_id: KeyId(key_id),
            key,
            protection,
        };
        Ok(KeyPair {
            public: secret.public_key(),
            secret,
        })
    }
}

/// blake2b-256 of `"Ed"` ‖ key id ‖ secret key: the secret key file's checksum.
fn checksum(key_id: &KeyId, secret: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(ALG_ED25519);
    h.update(key_id.as_bytes());
    h.update(secret);
    h.finalize().into()
}

fn random(buf: &mut [u8]) -> Result<()> {
    OsRng
        .try_fill_bytes(buf)
        .map_err(|e| Error::Random(e.to_string()))
}

pub(crate) fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

pub(crate) fn malformed(origin: &str, kind: &'static str, p: LineProblem) -> Error {
    Error::Malformed {
        origin: origin.to_string(),
        kind,
        line: p.line,
        problem: p.problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key made by `minisign -G -W` (0.11): all-zero kdf fields and checksum.
    const MINISIGN_W_PUB: &str = "untrusted comment: minisign public key CDC83FD16C6BCEB7\n\
        RWS3zmts0T/IzUyV7n3t8uDViuv42fUiOk6Xyul5snlEeEngkFr4WTbS\n";
    const MINISIGN_W_KEY: &str = "untrusted comment: minisign encrypted secret key\n\
        RWQAAEIyAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAt85rbNE/yM0GjEfRALOr20ZX45re0frD26nyvaJsNa4shqOWVd+rYkyV7n3t8uDViuv42fUiOk6Xyul5snlEeEngkFr4WTbSAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";

    #[test]
    fn reads_an_unencrypted_minisign_key_pair() -> Result<()> {
        let public = PublicKey::from_file_string(MINISIGN_W_PUB)?;
        let secret = SecretKey::from_file_string(MINISIGN_W_KEY, None)?;
        assert_eq!(public.key_id().to_string(), "CDC83FD16C6BCEB7");
        assert_eq!(secret.public_key(), public);
        assert!(!secret.is_encrypted());
        assert_eq!(public.to_file_string(), MINISIGN_W_PUB);
        Ok(())
    }

    #[test]
    fn public_key_round_trips_through_base64_and_file() -> Result<()> {
        let pair = KeyPair::generate(None)?;
        let b64 = pair.public.to_base64();
        assert_eq!(PublicKey::from_base64(&b64)?, pair.public);
        assert_eq!(
            PublicKey::from_file_string(&pair.public.to_file_string())?,
            pair.public
        );
        Ok(())
    }

    #[test]
    fn unencrypted_secret_key_round_trips_with_a_checksum() -> Result<()> {
        let pair = KeyPair::generate(None)?;
        let text = pair.secret.to_file_string();
        let back = SecretKey::from_file_string(&text, None)?;
        assert_eq!(back.public_key(), pair.public);
        assert_eq!(*back.to_file_string(), *text);
        Ok(())
    }

    #[test]
    fn encrypted_secret_key_needs_the_right_password() -> Result<()> {
        let pair = KeyPair::generate_with_limits(Some("s3cret"), KdfLimits::INTERACTIVE)?;
        let text = pair.secret.to_file_string();
        assert!(pair.secret.is_encrypted());
        let back = SecretKey::from_file_string(&text, Some("s3cret"))?;
        assert_eq!(back.public_key(), pair.public);
        assert_eq!(*back.to_file_string(), *text);
        let wrong = SecretKey::from_file_string(&text, Some("guess")).err();
        assert!(
            matches!(wrong, Some(Error::WrongPassword { .. })),
            "{wrong:?}"
        );
        let none = SecretKey::from_file_string(&text, None).err();
        assert!(
            matches!(none, Some(Error::PasswordRequired { .. })),
            "{none:?}"
        );
        Ok(())
    }

    #[test]
    fn malformed_keys_name_the_line_and_problem() {
        let cases: [(&str, usize, &str); 5] = [
            ("", 1, "missing"),
            ("untrusted comment: x\n", 2, "missing"),
            (
                "comment: x\nRWQ=\n",
                1,
                "should start with \"untrusted comment: \"",
            ),
            ("untrusted comment: x\n!!!\n", 2, "not valid base64"),
            ("untrusted comment: x\nRWQA\n", 2, "decodes to 3 bytes"),
        ];
        for (text, line, needle) in cases {
            match PublicKey::from_file_string(text) {
                Err(Error::Malformed {
                    line: l, problem, ..
                }) => {
                    assert_eq!(l, line, "{text:?}: {problem}");
                    assert!(problem.contains(needle), "{text:?}: {problem}");
                }
                other => panic!("{text:?}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn public_key_with_another_algorithm_is_refused() {
        let mut b = [0u8; PUBLIC_KEY_LEN];
        b[..2].copy_from_slice(b"XY");
        let err = PublicKey::from_base64(&format::encode(&b)).err();
        assert!(
            err.as_ref().is_some_and(|e| e
                .to_string()
                .contains("unsupported signature algorithm \"XY\"")),
            "{err:?}"
        );
    }

    #[test]
    fn corrupted_unencrypted_key_is_detected() -> Result<()> {
        let pair = KeyPair::generate(None)?;
        let text = pair.secret.to_file_string();
        let line = text.lines().nth(1).unwrap_or_default();
        let mut raw = BASE64
            .decode(line)
            .map_err(|e| Error::Random(e.to_string()))?;
        raw[60] ^= 1; // a byte of the seed
        let broken = format!("untrusted comment: x\n{}\n", format::encode(&raw));
        let err = SecretKey::from_file_string(&broken, None).err();
        assert!(
            matches!(err, Some(Error::CorruptSecretKey { .. })),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn debug_does_not_show_secret_material() -> Result<()> {
        let pair = KeyPair::generate(None)?;
        let shown = format!("{:?}", pair.secret);
        assert_eq!(
            shown,
            format!("SecretKey({}, unencrypted)", pair.secret.key_id())
        );
        Ok(())
    }
}
