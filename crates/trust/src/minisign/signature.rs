//! The `.minisig` signature file: parsing and writing its four lines.

use std::path::Path;

use super::format::{
    self, ALG_ED25519, ALG_PREHASHED, KeyId, LineProblem, Lines, SIGNATURE_LEN, SigStruct,
    TRUSTED_PREFIX, UNTRUSTED_PREFIX, alg_name,
};
use super::keys::{malformed, read_to_string};
use super::{Error, Result};

/// How the file was signed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignatureAlgorithm {
    /// `ED`: ed25519 over the blake2b-512 of the file. What minisign makes by default (0.8+)
    /// and what [`sign_file`](super::sign_file) makes.
    Prehashed,
    /// `Ed`: ed25519 over the file itself (`minisign -S -l`, and minisign before 0.8).
    Legacy,
}

impl SignatureAlgorithm {
    pub(crate) fn tag(self) -> [u8; 2] {
        match self {
            SignatureAlgorithm::Prehashed => ALG_PREHASHED,
            SignatureAlgorithm::Legacy => ALG_ED25519,
        }
    }
}

/// A parsed minisign signature file (`FILE.minisig`).
///
/// `Display` writes it back in minisign's format (four lines, each ending with `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFile {
    pub(crate) untrusted_comment: String,
    pub(crate) algorithm: SignatureAlgorithm,
    pub(crate) key_id: KeyId,
    pub(crate) signature: [u8; 64],
    pub(crate) trusted_comment: String,
    pub(crate) global_signature: [u8; 64],
}

impl SignatureFile {
    /// Reads and parses a `.minisig` file.
    pub fn from_file(path: &Path) -> Result<SignatureFile> {
        let text = read_to_string(path)?;
        SignatureFile::parse(&text, &path.display().to_string())
    }

    /// Parses the text of a signature file. `origin` names it in errors (a path, or e.g.
    /// "signature from the bundle").
    pub fn parse(text: &str, origin: &str) -> Result<SignatureFile> {
        SignatureFile::parse_lines(text).map_err(|p| malformed(origin, "signature", p))
    }

    /// The id of the key that made the signature.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }

    /// Prehashed (`ED`) or legacy (`Ed`).
    pub fn algorithm(&self) -> SignatureAlgorithm {
        self.algorithm
    }

    /// The trusted comment as written in the file. It is only trustworthy after
    /// [`verify_file`](super::verify_file) succeeded, which returns it.
    pub fn trusted_comment(&self) -> &str {
        &self.trusted_comment
    }

    /// The untrusted comment (line 1, after `untrusted comment: `). Anyone can change it.
    pub fn untrusted_comment(&self) -> &str {
        &self.untrusted_comment
    }

    fn parse_lines(text: &str) -> Result<SignatureFile, LineProblem> {
        let mut lines = Lines::new(text);
        let (n, line) = lines.next_line()?;
        let untrusted = format::strip_prefix(line, n, UNTRUSTED_PREFIX)?;
        let (n, line) = lines.next_line()?;
        let sig: [u8; SIGNATURE_LEN] = format::decode_fixed(line, n, "signature")?;
        let sig = SigStruct::from_bytes(&sig);
        let algorithm = match sig.alg {
            ALG_PREHASHED => SignatureAlgorithm::Prehashed,
            ALG_ED25519 => SignatureAlgorithm::Legacy,
            other => {
                return Err(LineProblem::new(
                    n,
                    format!(
                        "unsupported signature algorithm {}, expected \"ED\" or \"Ed\"",
                        alg_name(other)
                    ),
                ));
            }
        };
        let (n, line) = lines.next_line()?;
        let trusted = format::strip_prefix(line, n, TRUSTED_PREFIX)?;
        let (n, line) = lines.next_line()?;
        let global: [u8; 64] = format::decode_fixed(line, n, "global signature")?;
        Ok(SignatureFile {
            untrusted_comment: untrusted.to_string(),
            algorithm,
            key_id: sig.key_id,
            signature: sig.signature,
            trusted_comment: trusted.to_string(),
            global_signature: global,
        })
    }
}

impl std::fmt::Display for SignatureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sig = SigStruct {
            alg: self.algorithm.tag(),
            key_id: self.key_id,
            signature: self.signature,
        };
        writeln!(f, "{UNTRUSTED_PREFIX}{}", self.untrusted_comment)?;
        writeln!(f, "{}", format::encode(&sig.to_bytes()))?;
        writeln!(f, "{TRUSTED_PREFIX}{}", self.trusted_comment)?;
        writeln!(f, "{}", format::encode(&self.global_signature))
    }
}

impl std::str::FromStr for SignatureFile {
    type Err = Error;

    fn from_str(s: &str) -> Result<SignatureFile> {
        SignatureFile::parse(s, "signature text")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `minisign -Sm f.txt` (0.11) with the `-W` key in `keys.rs`'s tests.
    const MINISIG: &str = "untrusted comment: signature from minisign secret key\n\
        RUS3zmts0T/IzRzx34JeWRDGvzpyNBqtKNmzxEewYLzqLbUepuoAO5IvT9B5hVRX/8vMVujGtkbkdiG2dS12E3PyhN1uggY7jA4=\n\
        trusted comment: timestamp:1795653459\tfile:f.txt\thashed\n\
        bHH0+XYa6lHpY0nsOYFIev9sk4fK8BoYKw8+Uv4DyZlNJawS/Ny7nsVZt1sHyAXkygKzy7PXaCs8micR5nL1DQ==\n";

    #[test]
    fn parses_a_minisign_signature_and_writes_it_back_identically() -> Result<()> {
        let sig: SignatureFile = MINISIG.parse()?;
        assert_eq!(sig.key_id().to_string(), "CDC83FD16C6BCEB7");
        assert_eq!(sig.algorithm(), SignatureAlgorithm::Prehashed);
        assert_eq!(
            sig.trusted_comment(),
            "timestamp:1795653459\tfile:f.txt\thashed"
        );
        assert_eq!(
            sig.untrusted_comment(),
            "signature from minisign secret key"
        );
        assert_eq!(sig.to_string(), MINISIG);
        Ok(())
    }

    #[test]
    fn tolerates_crlf_and_a_missing_final_newline() -> Result<()> {
        let crlf = MINISIG.replace('\n', "\r\n");
        assert_eq!(crlf.parse::<SignatureFile>()?, MINISIG.parse()?);
        let trimmed = MINISIG.trim_end();
        assert_eq!(trimmed.parse::<SignatureFile>()?, MINISIG.parse()?);
        Ok(())
    }

    /// Each malformation is reported on the line where it is.
    #[test]
    fn malformed_signatures_name_the_line() {
        let lines: Vec<&str> = MINISIG.lines().collect();
        let with = |n: usize, replacement: &str| {
            let mut l = lines.clone();
            l[n] = replacement;
            l.join("\n")
        };
        let legacy_alg_xx = {
            let mut raw = [0u8; SIGNATURE_LEN];
            raw[..2].copy_from_slice(b"XX");
            format::encode(&raw)
        };
        let cases = [
            (
                with(0, "comment: x"),
                1,
                "should start with \"untrusted comment: \"",
            ),
            (with(1, "@@@"), 2, "not valid base64"),
            (with(1, "RUS3"), 2, "decodes to 3 bytes"),
            (
                with(1, &legacy_alg_xx),
                2,
                "unsupported signature algorithm \"XX\"",
            ),
            (
                with(2, "comment: x"),
                3,
                "should start with \"trusted comment: \"",
            ),
            (with(3, "AAAA"), 4, "global signature decodes to 3 bytes"),
            (lines[..3].join("\n"), 4, "missing"),
            (String::new(), 1, "missing"),
        ];
        for (text, line, needle) in cases {
            match SignatureFile::parse(&text, "sig.minisig") {
                Err(Error::Malformed {
                    origin,
                    kind,
                    line: l,
                    problem,
                }) => {
                    assert_eq!((origin.as_str(), kind), ("sig.minisig", "signature"));
                    assert_eq!(l, line, "{problem}");
                    assert!(problem.contains(needle), "line {l}: {problem}");
                }
                other => panic!("expected Malformed at line {line}, got {other:?}"),
            }
        }
    }

    #[test]
    fn error_message_reads_well() {
        let err = SignatureFile::parse("untrusted comment: x\n", "a.jar.minisig").err();
        assert_eq!(
            err.map(|e| e.to_string()).unwrap_or_default(),
            "a.jar.minisig is not a valid minisign signature: line 2: missing (the file has only 1 line(s))"
        );
    }
}
