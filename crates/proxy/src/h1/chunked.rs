//! Incremental reader of the chunked transfer coding (RFC 9112 §7.1): finds where a chunked
//! body ends without buffering it, and hands out the payload bytes for de-chunking.

/// Where in the chunked framing the next byte falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size {
        size: u64,
        digits: u8,
    },
    /// Whitespace or an extension after the size, up to CR.
    Ext {
        size: u64,
    },
    /// LF after the size line's CR.
    SizeLf {
        size: u64,
    },
    /// Payload bytes still to come in this chunk.
    Data(u64),
    DataCr,
    DataLf,
    /// Start of a trailer line (or the final CRLF).
    TrailerStart,
    /// A trailer field's name (token characters up to the colon).
    TrailerName,
    /// After the colon: the value, up to CR.
    TrailerValue,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed chunked body: {}", self.0)
    }
}

impl std::error::Error for ChunkError {}

/// Chunk-size lines longer than this are refused (a size plus a reasonable extension).
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone)]
pub struct Chunked {
    state: State,
    line: usize,
}

impl Default for Chunked {
    fn default() -> Self {
        Chunked::new()
    }
}

impl Chunked {
    pub fn new() -> Chunked {
        Chunked {
            state: State::Size { size: 0, digits: 0 },
            line: 0,
        }
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes bytes of `buf` that belong to the body, calling `payload` with each run of
    /// payload bytes. Returns how many bytes of `buf` belong to the body: all of them unless the
    /// body ended inside `buf`.
    pub fn feed(
        &mut self,
        buf: &[u8],
        mut payload: impl FnMut(&[u8]),
    ) -> Result<usize, ChunkError> {
        if self.state == State::Done {
            return Ok(0);
        }
        let mut i = 0;
        while i < buf.len() {
            if let State::Data(left) = self.state {
                let n = (buf.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                payload(&buf[i..i + n]);
                i += n;
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                continue;
            }
            let b = buf[i];
            i += 1;
            self.line += 1;
            if self.line > MAX_LINE {
                return Err(ChunkError("line too long"));
            }
            self.state = match self.state {
                State::Size { size, digits } => match hex(b) {
                    Some(d) => {
                        if digits >= 15 {
                            return Err(ChunkError("chunk size too large"));
                        }
                        State::Size {
                            size: size * 16 + u64::from(d),
                            digits: digits + 1,
                        }
                    }
                    None if digits == 0 => return Err(ChunkError("chunk size expected")),
                    None => match b {
                        b'\r' => State::SizeLf { size },
                        b';' | b' ' | b'\t' => State::Ext { size },
                        _ => return Err(ChunkError("bad character after chunk size")),
                    },
                },
                State::Ext { size } => match b {
                    b'\r' => State::SizeLf { size },
                    b'\n' => return Err(ChunkError("bare LF in chunk size line")),
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::Ext { size },
                    _ => return Err(ChunkError("control character in a chunk extension")),
                },
                State::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(ChunkError("CRLF expected after chunk size"));
                    }
                    self.line = 0;
                    if size == 0 {
                        State::TrailerStart
                    } else {
                        State::Data(size)
                    }
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError("CRLF expected after chunk data"));
                    }
                    State::DataLf
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CRLF expected after chunk data"));
                    }
                    self.line = 0;
                    State::Size { size: 0, digits: 0 }
                }
                State::TrailerStart => match b {
                    b'\r' => State::EndLf,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError("bad trailer field name")),
                },
                State::TrailerName => match b {
                    b':' => State::TrailerValue,
                    b if is_tchar(b) => State::TrailerName,
                    _ => return Err(ChunkError("bad trailer field name")),
                },
                State::TrailerValue => match b {
                    b'\r' => State::TrailerLf,
                    b'\t' | b' '..=b'~' | 0x80..=0xff => State::TrailerValue,
                    _ => return Err(ChunkError("control character in a trailer")),
                },
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CRLF expected after a trailer"));
                    }
                    self.line = 0;
                    State::TrailerStart
                }
                State::EndLf => {
                    if b != b'\n' {
                        return Err(ChunkError("CRLF expected at the end"));
                    }
                    self.state = State::Done;
                    return Ok(i);
                }
                State::Data(_) | State::Done => unreachable!("handled above"),
            };
        }
        Ok(i)
    }
}

/// Appends one chunk of the chunked coding holding `payload` (nothing for an empty payload: an
/// empty chunk would end the body). The proxy writes its own framing: a body it forwards
/// chunked is decoded and re-encoded, extensions and trailers dropped.
pub fn encode_chunk(out: &mut Vec<u8>, payload: &[u8]) {
    if payload.is_empty() {
        return;
    }
    use std::io::Write as _;
    let _ = write!(out, "{:x}\r\n", payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked body: the last chunk and an empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// A token character (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], split: usize) -> Result<(usize, Vec<u8>, bool), ChunkError> {
        let mut c = Chunked::new();
        let mut out = Vec::new();
        let mut used = 0;
        for part in input.chunks(split.max(1)) {
            if c.is_done() {
                break;
            }
            used += c.feed(part, |p| out.extend_from_slice(p))?;
        }
        Ok((used, out, c.is_done()))
    }

    #[test]
    fn finds_the_end_whatever_the_split() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\nGET / HTTP/1.1";
        let end = body.len() - b"GET / HTTP/1.1".len();
        for split in 1..body.len() {
            let (used, payload, done) = run(body, split).expect("valid");
            assert!(done, "split {split}");
            assert_eq!(used, end, "split {split}");
            assert_eq!(payload, b"hello, world");
        }
    }

    #[test]
    fn large_and_uppercase_sizes() {
        let mut body = b"1A\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 26));
        body.extend_from_slice(b"\r\n0\r\n\r\n");
        let (used, payload, done) = run(&body, 7).expect("valid");
        assert!(done);
        assert_eq!(used, body.len());
        assert_eq!(payload.len(), 26);
    }

    #[test]
    fn refuses_malformed_framing() {
        for bad in [
            &b"\r\n"[..],
            b"zz\r\n",
            b"5\nhello",
            b"5\r\nhelloX",
            b"10000000000000000\r\n",
            b"0\r\nTrailer\n",
            b"0\r\nNo colon\r\n\r\n",
            b"0\r\n: empty name\r\n\r\n",
            b"0\r\nX: a\x00b\r\n\r\n",
            b"0\r\n folded: x\r\n\r\n",
        ] {
            let mut c = Chunked::new();
            let r = c.feed(bad, |_| {});
            assert!(
                r.is_err() || !c.is_done(),
                "{:?} accepted",
                String::from_utf8_lossy(bad)
            );
        }
        let mut c = Chunked::new();
        assert!(c.feed(b"5\r\nhelloX", |_| {}).is_err());
        let mut c = Chunked::new();
        assert!(c.feed(b"5\nhello", |_| {}).is_err());
    }
}
