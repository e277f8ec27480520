//! sha256 digests as lowercase hex, and hashing files.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

/// A sha256 as 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sha256Hex(String);

impl Sha256Hex {
    /// Accepts 64 hex digits in either case; `None` for anything else.
    pub(crate) fn parse(pin: &str) -> Option<Self> {
        let pin = pin.trim();
        (pin.len() == 64 && pin.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| Self(pin.to_ascii_lowercase()))
    }

    pub(crate) fn finish(hasher: Sha256) -> Self {
        Self(hex(&hasher.finalize()))
    }

    pub(crate) fn of(bytes: &[u8]) -> Self {
        Self(hex(&Sha256::digest(bytes)))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Feeds the whole file at `path` to `hasher` and returns its length.
pub(crate) fn hash_into(path: &Path, hasher: &mut Sha256) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut len = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(len),
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The digest and length of the file at `path`.
pub(crate) fn hash_file(path: &Path) -> io::Result<(Sha256Hex, u64)> {
    let mut hasher = Sha256::new();
    let len = hash_into(path, &mut hasher)?;
    Ok((Sha256Hex::finish(hasher), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_64_hex_digits_only() {
        let good = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";
        let cases: [(&str, Option<&str>); 5] = [
            (good, Some(&good.to_ascii_lowercase())),
            (
                " e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n",
                Some("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
            ),
            ("e3b0", None),
            (
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b8",
                None,
            ),
            (
                "g3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                None,
            ),
        ];
        for (input, want) in cases {
            let got = Sha256Hex::parse(input);
            assert_eq!(got.as_ref().map(Sha256Hex::as_str), want, "{input:?}");
        }
    }

    #[test]
    fn digest_of_empty_input() {
        assert_eq!(
            Sha256Hex::of(b"").as_str(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
