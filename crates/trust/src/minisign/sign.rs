//! Signing files in minisign's prehashed (`ED`) mode, streaming.

use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use blake2::{Blake2b512, Digest};
use ed25519_dalek::Signer as _;

use super::format::TRUSTED_COMMENT_MAX;
use super::keys::SecretKey;
use super::signature::{SignatureAlgorithm, SignatureFile};
use super::{Error, Result};

/// Size of the chunks files are read in.
const CHUNK: usize = 64 * 1024;

/// Signs the file at `path`: ed25519 over the blake2b-512 of its contents, read in 64 KiB
/// chunks. Without a trusted comment (or with an empty one) the comment is minisign's default,
/// [`default_trusted_comment`] with the file's name and the current time.
pub fn sign_file(
    path: &Path,
    key: &SecretKey,
    trusted_comment: Option<&str>,
) -> Result<SignatureFile> {
    let comment = match trusted_comment {
        Some(c) if !c.is_empty() => c.to_string(),
        _ => {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string());
            default_trusted_comment(&name, SystemTime::now())
        }
    };
    let file = open(path)?;
    sign_reader(file, path, key, &comment)
}

/// Signs everything `data` yields, like [`sign_file`]. `name` only labels read errors.
pub fn sign_reader(
    data: impl Read,
    name: &Path,
    key: &SecretKey,
    trusted_comment: &str,
) -> Result<SignatureFile> {
    check_trusted_comment(trusted_comment)?;
    let digest = blake2b512(data).map_err(|source| Error::Read {
        path: name.to_path_buf(),
        source,
    })?;
    let signing = key.signing_key();
    let signature = signing.sign(&digest).to_bytes();
    let mut global_message = Vec::with_capacity(64 + trusted_comment.len());
    global_message.extend_from_slice(&signature);
    global_message.extend_from_slice(trusted_comment.as_bytes());
    let global_signature = signing.sign(&global_message).to_bytes();
    Ok(SignatureFile {
        untrusted_comment: format!("signature from minisign secret key {}", key.key_id()),
        algorithm: SignatureAlgorithm::Prehashed,
        key_id: key.key_id(),
        signature,
        trusted_comment: trusted_comment.to_string(),
        global_signature,
    })
}

/// minisign's default trusted comment for a prehashed signature:
/// `timestamp:<unix seconds>\tfile:<file name>\thashed`.
pub fn default_trusted_comment(file_name: &str, now: SystemTime) -> String {
    let secs = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("timestamp:{secs}\tfile:{file_name}\thashed")
}

fn check_trusted_comment(comment: &str) -> Result<()> {
    if comment.contains(['\n', '\r']) {
        return Err(Error::InvalidTrustedComment {
            problem: "it contains a line break; it must be one line".to_string(),
        });
    }
    if comment.len() > TRUSTED_COMMENT_MAX {
        return Err(Error::InvalidTrustedComment {
            problem: format!(
                "it is {} bytes long; minisign reads at most {TRUSTED_COMMENT_MAX}",
                comment.len()
            ),
        });
    }
    Ok(())
}

pub(crate) fn open(path: &Path) -> Result<std::fs::File> {
    std::fs::File::open(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Calls `f` with successive chunks of `data` until it is exhausted.
pub(crate) fn for_each_chunk(mut data: impl Read, mut f: impl FnMut(&[u8])) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match data.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => f(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// blake2b-512 of everything `data` yields (libsodium's `crypto_generichash` with 64 bytes of
/// output and no key, which minisign uses for prehashing).
pub(crate) fn blake2b512(data: impl Read) -> std::io::Result<[u8; 64]> {
    let mut h = Blake2b512::new();
    for_each_chunk(data, |chunk| h.update(chunk))?;
    Ok(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::minisign::KeyPair;
    use std::time::Duration;

    #[test]
    fn default_comment_matches_minisign() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_653_459);
        assert_eq!(
            default_trusted_comment("f.txt", t),
            "timestamp:1795653459\tfile:f.txt\thashed"
        );
    }

    #[test]
    fn blake2b512_matches_the_reference_vector() -> std::io::Result<()> {
        // BLAKE2b-512("abc"), RFC 7693 appendix A.
        let want = "ba80a53f981c4d0d6a2797b69f12f6e94c212f14685ac4b74b12bb6fdbffa2d1\
                    7d87c5392aab792dc252d5de4533cc9518d38aa8dbf1925ab92386edd4009923";
        let got: String = blake2b512(&b"abc"[..])?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(got, want);
        Ok(())
    }

    #[test]
    fn chunked_hash_equals_one_shot_hash() -> std::io::Result<()> {
        let data: Vec<u8> = (0..(3 * CHUNK + 17)).map(|i| (i % 251) as u8).collect();
        let one_shot: [u8; 64] = Blake2b512::digest(&data).into();
        assert_eq!(blake2b512(&data[..])?, one_shot);
        Ok(())
    }

    #[test]
    fn multi_line_or_oversized_comments_are_refused() -> Result<()> {
        let pair = KeyPair::generate(None)?;
        let name = Path::new("x");
        for bad in ["a\nb", "a\rb", &"x".repeat(TRUSTED_COMMENT_MAX + 1)] {
            let err = sign_reader(&b""[..], name, &pair.secret, bad).err();
            assert!(
                matches!(err, Some(Error::InvalidTrustedComment { .. })),
                "{err:?}"
            );
        }
        sign_reader(
            &b""[..],
            name,
            &pair.secret,
            &"x".repeat(TRUSTED_COMMENT_MAX),
        )?;
        Ok(())
    }
}
