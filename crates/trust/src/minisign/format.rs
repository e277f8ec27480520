//! The byte and text layouts of minisign files, and nothing else: no cryptography, no IO.
//!
//! Every minisign file is lines of text. Keys are two lines (an untrusted comment and one base64
//! line); signatures are four (untrusted comment, base64 signature, trusted comment, base64
//! global signature). The base64 lines decode to fixed-size structures:
//!
//! | file | bytes |
//! |---|---|
//! | public key (42) | `"Ed"` · key id (8) · ed25519 public key (32) |
//! | secret key (158) | `"Ed"` · kdf `"Sc"` or `00 00` · `"B2"` · salt (32) · opslimit (8, LE) · memlimit (8, LE) · [key id (8) · ed25519 secret key (64) · blake2b-256 checksum (32)], the bracket XOR-ed with scrypt output when encrypted |
//! | signature (74) | `"ED"` (blake2b-512 prehashed) or `"Ed"` (legacy) · key id (8) · ed25519 signature (64) |
//! | global signature (64) | ed25519 signature over signature (64) ‖ trusted comment |

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

/// `"untrusted comment: "`, the start of line 1 of every minisign file.
pub(crate) const UNTRUSTED_PREFIX: &str = "untrusted comment: ";
/// `"trusted comment: "`, the start of line 3 of a signature file.
pub(crate) const TRUSTED_PREFIX: &str = "trusted comment: ";

/// Signature algorithm of keys and legacy signatures: plain ed25519.
pub(crate) const ALG_ED25519: [u8; 2] = *b"Ed";
/// Signature algorithm of prehashed signatures: ed25519 over blake2b-512 of the file.
pub(crate) const ALG_PREHASHED: [u8; 2] = *b"ED";
/// Key derivation algorithm of an encrypted secret key: scrypt.
pub(crate) const KDF_SCRYPT: [u8; 2] = *b"Sc";
/// Key derivation algorithm of an unencrypted secret key (`minisign -G -W`).
pub(crate) const KDF_NONE: [u8; 2] = [0, 0];
/// Checksum algorithm of secret keys: blake2b-256.
pub(crate) const CHK_BLAKE2B: [u8; 2] = *b"B2";

pub(crate) const PUBLIC_KEY_LEN: usize = 2 + 8 + 32;
pub(crate) const SECRET_KEY_LEN: usize = 2 + 2 + 2 + 32 + 8 + 8 + 8 + 64 + 32;
pub(crate) const SIGNATURE_LEN: usize = 2 + 8 + 64;

/// The longest trusted comment minisign can sign and read back (its 8192-byte line buffer minus
/// the prefix and the terminating NUL).
pub(crate) const TRUSTED_COMMENT_MAX: usize = 8192 - TRUSTED_PREFIX.len() - 2;

/// A minisign key id: 8 random bytes chosen at key generation, stored in the public key, the
/// secret key and every signature.
///
/// Displayed as minisign displays it: the bytes read as a little-endian integer, in uppercase
/// hexadecimal (`minisign public key 3B5F8A2C1D7E9F04`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 8]);

impl KeyId {
    /// The raw 8 bytes, in file order.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016X}", u64::from_le_bytes(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// What is wrong with a minisign file's text, and on which line (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LineProblem {
    pub line: usize,
    pub problem: String,
}

impl LineProblem {
    pub(crate) fn new(line: usize, problem: impl Into<String>) -> LineProblem {
        LineProblem {
            line,
            problem: problem.into(),
        }
    }
}

/// Reads a minisign file line by line the way minisign's `fgets` + `trim` sees it: `\n` ends
/// a line and trailing `\r` is dropped. Lines are taken in order, so the first problem reported
/// is the first one in the file.
pub(crate) struct Lines<'a> {
    rest: &'a str,
    taken: usize,
}

impl<'a> Lines<'a> {
    pub(crate) fn new(text: &'a str) -> Lines<'a> {
        Lines {
            rest: text,
            taken: 0,
        }
    }

    /// The next line and its 1-based number, or a problem naming the missing line.
    pub(crate) fn next_line(&mut self) -> Result<(usize, &'a str), LineProblem> {
        let n = self.taken + 1;
        if self.rest.is_empty() {
            return Err(LineProblem::new(
                n,
                format!("missing (the file has only {} line(s))", self.taken),
            ));
        }
        let (line, tail) = self.rest.split_once('\n').unwrap_or((self.rest, ""));
        self.rest = tail;
        self.taken = n;
        Ok((n, line.trim_end_matches('\r')))
    }
}

/// Checks that `line` (number `n`) starts with `prefix` and returns what follows it.
pub(crate) fn strip_prefix<'a>(
    line: &'a str,
    n: usize,
    prefix: &str,
) -> Result<&'a str, LineProblem> {
    line.strip_prefix(prefix).ok_or_else(|| {
        LineProblem::new(
            n,
            format!("should start with {prefix:?}, found {:?}", preview(line)),
        )
    })
}

/// Decodes base64 line `n` into exactly `N` bytes.
pub(crate) fn decode_fixed<const N: usize>(
    line: &str,
    n: usize,
    what: &str,
) -> Result<[u8; N], LineProblem> {
    let bytes = BASE64.decode(line.trim()).map_err(|e| {
        LineProblem::new(
            n,
            format!("{what} is not valid base64 ({e}): {:?}", preview(line)),
        )
    })?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| {
        LineProblem::new(
            n,
            format!(
                "{what} decodes to {} bytes, a minisign {what} has {N}",
                bytes.len()
            ),
        )
    })
}

pub(crate) fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// At most 40 characters of `line`, for error messages.
fn preview(line: &str) -> String {
    let mut s: String = line.chars().take(40).collect();
    if s.len() < line.len() {
        s.push('…');
    }
    s
}

/// Names a two-byte algorithm tag for messages: printable ASCII as is, anything else as hex.
pub(crate) fn alg_name(alg: [u8; 2]) -> String {
    if alg.iter().all(|b| b.is_ascii_graphic()) {
        format!("{:?}", String::from_utf8_lossy(&alg))
    } else {
        format!("0x{:02x}{:02x}", alg[0], alg[1])
    }
}

/// The decoded line 2 of a signature file.
pub(crate) struct SigStruct {
    pub alg: [u8; 2],
    pub key_id: KeyId,
    pub signature: [u8; 64],
}

impl SigStruct {
    pub(crate) fn from_bytes(b: &[u8; SIGNATURE_LEN]) -> SigStruct {
        let (alg, rest) = b.split_at(2);
        let (key_id, signature) = rest.split_at(8);
        SigStruct {
            alg: [alg[0], alg[1]],
            key_id: KeyId(to_array(key_id)),
            signature: to_array(signature),
        }
    }

    pub(crate) fn to_bytes(&self) -> [u8; SIGNATURE_LEN] {
        let mut b = [0u8; SIGNATURE_LEN];
        b[..2].copy_from_slice(&self.alg);
        b[2..10].copy_from_slice(&self.key_id.0);
        b[10..].copy_from_slice(&self.signature);
        b
    }
}

/// Copies a slice whose length the caller has already fixed into an array.
pub(crate) fn to_array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_id_displays_like_minisign() {
        // minisign prints le64_load(keynum) with %016llX.
        let id = KeyId([0xb7, 0xce, 0x6b, 0x6c, 0xd1, 0x3f, 0xc8, 0xcd]);
        assert_eq!(id.to_string(), "CDC83FD16C6BCEB7");
        let small = KeyId([1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(small.to_string(), "0000000000000001");
    }

    fn take(text: &str, count: usize) -> Result<Vec<&str>, LineProblem> {
        let mut lines = Lines::new(text);
        (0..count)
            .map(|_| lines.next_line().map(|(_, l)| l))
            .collect()
    }

    #[test]
    fn lines_handle_crlf_missing_final_newline_and_short_files() {
        assert_eq!(take("a\r\nb\n", 2), Ok(vec!["a", "b"]));
        assert_eq!(take("a\nb", 2), Ok(vec!["a", "b"]));
        assert_eq!(take("a\nb\nc\nd\nextra", 4), Ok(vec!["a", "b", "c", "d"]));
        assert_eq!(take("a\n", 2).err().map(|e| e.line), Some(2));
        assert_eq!(take("", 1).err().map(|e| e.line), Some(1));
        let mut lines = Lines::new("x\ny\n");
        assert_eq!(lines.next_line(), Ok((1, "x")));
        assert_eq!(lines.next_line(), Ok((2, "y")));
        assert_eq!(
            lines.next_line().err().map(|e| e.problem),
            Some("missing (the file has only 2 line(s))".to_string())
        );
    }

    #[test]
    fn strip_prefix_names_the_line_and_what_was_found() {
        let err = strip_prefix("hello", 3, TRUSTED_PREFIX).err();
        let err = err.map(|e| (e.line, e.problem));
        assert_eq!(
            err,
            Some((
                3,
                "should start with \"trusted comment: \", found \"hello\"".to_string()
            ))
        );
    }

    #[test]
    fn decode_fixed_reports_bad_base64_and_wrong_length() {
        let bad = decode_fixed::<4>("not base64!", 2, "signature").err();
        assert!(
            bad.as_ref()
                .is_some_and(|e| e.line == 2 && e.problem.contains("not valid base64")),
            "{bad:?}"
        );
        let short = decode_fixed::<4>(&encode(b"abc"), 2, "signature").err();
        assert!(
            short.as_ref().is_some_and(
                |e| e.problem == "signature decodes to 3 bytes, a minisign signature has 4"
            ),
            "{short:?}"
        );
        assert_eq!(decode_fixed::<3>(&encode(b"abc"), 2, "x"), Ok(*b"abc"));
    }

    #[test]
    fn alg_name_shows_ascii_or_hex() {
        assert_eq!(alg_name(*b"ED"), "\"ED\"");
        assert_eq!(alg_name([0, 0]), "0x0000");
    }

    #[test]
    fn sig_struct_round_trips() {
        let s = SigStruct {
            alg: ALG_PREHASHED,
            key_id: KeyId([1, 2, 3, 4, 5, 6, 7, 8]),
            signature: [9; 64],
        };
        let back = SigStruct::from_bytes(&s.to_bytes());
        assert_eq!(
            (back.alg, back.key_id, back.signature),
            (s.alg, s.key_id, s.signature)
        );
    }
}
