//! Verifying a file against a minisign signature and public key, streaming.

use std::io::Read;
use std::path::Path;

use ed25519_dalek::Signature;

use super::format::KeyId;
use super::keys::PublicKey;
use super::sign::{blake2b512, for_each_chunk, open};
use super::signature::{SignatureAlgorithm, SignatureFile};
use super::{Error, Result};

/// A successful verification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The key that made the signature.
    pub key_id: KeyId,
    /// The trusted comment, now known to come from the key's owner.
    pub trusted_comment: String,
    /// Prehashed (`ED`) or legacy (`Ed`).
    pub algorithm: SignatureAlgorithm,
}

/// Checks `signature` over the file at `path` with `key`, in minisign's order: the key ids
/// match, the signature covers the file's contents (read in chunks, for both algorithms), and
/// the global signature covers the trusted comment.
pub fn verify_file(path: &Path, key: &PublicKey, signature: &SignatureFile) -> Result<Verified> {
    check_key_id(path, key, signature)?;
    let file = open(path)?;
    verify_reader(file, path, key, signature)
}

/// Like [`verify_file`] for whatever `data` yields; `name` is what errors call it.
pub fn verify_reader(
    data: impl Read,
    name: &Path,
    key: &PublicKey,
    signature: &SignatureFile,
) -> Result<Verified> {
    check_key_id(name, key, signature)?;
    let read_error = |source| Error::Read {
        path: name.to_path_buf(),
        source,
    };
    let bad_signature = || Error::BadSignature {
        file: name.to_path_buf(),
        key_id: signature.key_id,
    };
    let sig = Signature::from_bytes(&signature.signature);
    let vk = key.verifying_key();
    match signature.algorithm {
        SignatureAlgorithm::Prehashed => {
            let digest = blake2b512(data).map_err(read_error)?;
            vk.verify_strict(&digest, &sig)
                .map_err(|_| bad_signature())?;
        }
        SignatureAlgorithm::Legacy => {
            // ed25519 verification hashes R ‖ A ‖ message once, so it can stream. libsodium
            // refuses small-order public keys; so do we (small-order R cannot verify under a
            // proper key).
            if vk.is_weak() {
                return Err(bad_signature());
            }
            let mut verifier = vk.verify_stream(&sig).map_err(|_| bad_signature())?;
            for_each_chunk(data, |chunk| verifier.update(chunk)).map_err(read_error)?;
            verifier
                .finalize_and_verify()
                .map_err(|_| bad_signature())?;
        }
    }
    let mut global_message = Vec::with_capacity(64 + signature.trusted_comment.len());
    global_message.extend_from_slice(&signature.signature);
    global_message.extend_from_slice(signature.trusted_comment.as_bytes());
    vk.verify_strict(
        &global_message,
        &Signature::from_bytes(&signature.global_signature),
    )
    .map_err(|_| Error::BadTrustedComment {
        file: name.to_path_buf(),
        key_id: signature.key_id,
    })?;
    Ok(Verified {
        key_id: signature.key_id,
        trusted_comment: signature.trusted_comment.clone(),
        algorithm: signature.algorithm,
    })
}

fn check_key_id(name: &Path, key: &PublicKey, signature: &SignatureFile) -> Result<()> {
    if signature.key_id == key.key_id() {
        Ok(())
    } else {
        Err(Error::WrongKey {
            file: name.to_path_buf(),
            signature_key_id: signature.key_id,
            public_key_id: key.key_id(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::{KeyPair, sign_reader};

    const DATA: &[u8] = b"jarfleet bundle contents\n";

    fn signed() -> Result<(KeyPair, SignatureFile)> {
        let pair = KeyPair::generate(None)?;
        let sig = sign_reader(DATA, Path::new("a.jar"), &pair.secret, "file:a.jar")?;
        Ok((pair, sig))
    }

    #[test]
    fn accepts_the_signed_data_and_returns_the_trusted_comment() -> Result<()> {
        let (pair, sig) = signed()?;
        let v = verify_reader(DATA, Path::new("a.jar"), &pair.public, &sig)?;
        assert_eq!(v.trusted_comment, "file:a.jar");
        assert_eq!(v.key_id, pair.public.key_id());
        assert_eq!(v.algorithm, SignatureAlgorithm::Prehashed);
        Ok(())
    }

    #[test]
    fn refuses_changed_data() -> Result<()> {
        let (pair, sig) = signed()?;
        let err = verify_reader(
            &b"jarfleet bundle contentz\n"[..],
            Path::new("a.jar"),
            &pair.public,
            &sig,
        )
        .err();
        assert!(matches!(err, Some(Error::BadSignature { .. })), "{err:?}");
        Ok(())
    }

    #[test]
    fn refuses_a_changed_trusted_comment() -> Result<()> {
        let (pair, mut sig) = signed()?;
        sig.trusted_comment = "file:b.jar".to_string();
        let reparsed: SignatureFile = sig.to_string().parse()?;
        let err = verify_reader(DATA, Path::new("a.jar"), &pair.public, &reparsed).err();
        assert!(
            matches!(err, Some(Error::BadTrustedComment { .. })),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn wrong_key_names_both_key_ids() -> Result<()> {
        let (_, sig) = signed()?;
        let other = KeyPair::generate(None)?;
        let err = verify_reader(DATA, Path::new("a.jar"), &other.public, &sig)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains(&sig.key_id().to_string()), "{err}");
        assert!(err.contains(&other.public.key_id().to_string()), "{err}");
        Ok(())
    }

    #[test]
    fn same_key_id_but_another_key_is_a_bad_signature() -> Result<()> {
        let (pair, sig) = signed()?;
        let other = KeyPair::generate(None)?;
        let forged_id = format!(
            "untrusted comment: x\n{}\n",
            crate::minisign::format::encode(
                &[
                    &b"Ed"[..],
                    pair.public.key_id().as_bytes(),
                    other.public.verifying_key().as_bytes(),
                ]
                .concat()
            )
        );
        let impostor = PublicKey::from_file_string(&forged_id)?;
        let err = verify_reader(DATA, Path::new("a.jar"), &impostor, &sig).err();
        assert!(matches!(err, Some(Error::BadSignature { .. })), "{err:?}");
        Ok(())
    }

    /// A legacy (`Ed`) signature: ed25519 over the raw data, as `minisign -S -l` makes.
    #[test]
    fn accepts_legacy_signatures_streaming() -> Result<()> {
        use ed25519_dalek::Signer as _;
        let pair = KeyPair::generate(None)?;
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 256) as u8).collect();
        let signature = pair.secret.signing_key().sign(&data).to_bytes();
        let comment = "timestamp:0\tfile:big";
        let global = pair
            .secret
            .signing_key()
            .sign(&[&signature[..], comment.as_bytes()].concat())
            .to_bytes();
        let sig = SignatureFile {
            untrusted_comment: "legacy".to_string(),
            algorithm: SignatureAlgorithm::Legacy,
            key_id: pair.public.key_id(),
            signature,
            trusted_comment: comment.to_string(),
            global_signature: global,
        };
        let sig: SignatureFile = sig.to_string().parse()?;
        let v = verify_reader(&data[..], Path::new("big"), &pair.public, &sig)?;
        assert_eq!(v.algorithm, SignatureAlgorithm::Legacy);
        let mut changed = data.clone();
        changed[150_000] ^= 1;
        let err = verify_reader(&changed[..], Path::new("big"), &pair.public, &sig).err();
        assert!(matches!(err, Some(Error::BadSignature { .. })), "{err:?}");
        Ok(())
    }
}
