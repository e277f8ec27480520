//! The request body as the proxy takes it from the client: read whole when it fits the
//! request buffer (a chunked body decoded), otherwise streamed — a chunked stream decoded and
//! re-encoded by the proxy, so a backend only ever sees framing the proxy wrote.

use bytes::{Buf, BytesMut};

use super::Client;
use super::chunked::{ChunkError, Chunked, LAST_CHUNK, encode_chunk};
use super::head::{Framing, RequestHead};
use crate::ListenerConfig;

pub(super) enum Body {
    None,
    /// The whole body, read before a backend is chosen (decoded if it came chunked).
    Buffered(BytesMut),
    /// Too large to hold: streamed while the request is sent.
    Stream(Stream),
}

impl Body {
    pub fn is_stream(&self) -> bool {
        matches!(self, Body::Stream(_))
    }
}

pub(super) struct Stream {
    coding: Coding,
    /// Decoded payload read while trying to buffer the body, sent first.
    pending: Vec<u8>,
    done: bool,
}

enum Coding {
    Length { left: u64 },
    Chunked(Chunked),
}

/// Why a request body could not be taken.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The client closed or reset the connection.
    Gone,
    /// No byte came for the body timeout.
    Stalled,
    Malformed(ChunkError),
}

/// Reads a body that fits `request_buffer` whole (each read bounded by the body timeout), or
/// sets up its stream.
pub(super) async fn take(
    client: &mut Client,
    req: &RequestHead,
    cfg: &ListenerConfig,
) -> Result<Body, BodyError> {
    let limit = cfg.limits.request_buffer;
    let idle = cfg.timeouts.body;
    match req.body {
        Framing::None | Framing::UntilClose => Ok(Body::None),
        Framing::Length(n) if n > limit as u64 => Ok(Body::Stream(Stream {
            coding: Coding::Length { left: n },
            pending: Vec::new(),
            done: false,
        })),
        Framing::Length(n) => {
            let n = n as usize;
            while client.buf.len() < n {
                fill(client, idle).await?;
            }
            Ok(Body::Buffered(client.buf.split_to(n)))
        }
        Framing::Chunked if limit == 0 => Ok(Body::Stream(Stream {
            coding: Coding::Chunked(Chunked::new()),
            pending: Vec::new(),
            done: false,
        })),
        Framing::Chunked => {
            let mut decoder = Chunked::new();
            let mut decoded = BytesMut::new();
            let mut raw = 0usize;
            loop {
                if !client.buf.is_empty() {
                    let used = decoder
                        .feed(&client.buf, |p| decoded.extend_from_slice(p))
                        .map_err(BodyError::Malformed)?;
                    client.buf.advance(used);
                    raw += used;
                }
                if decoder.is_done() {
                    return Ok(Body::Buffered(decoded));
                }
                // Too much to hold (payload, or framing around tiny chunks): stream the rest.
                if decoded.len() > limit || raw > limit.saturating_mul(4) {
                    return Ok(Body::Stream(Stream {
                        coding: Coding::Chunked(decoder),
                        pending: decoded.to_vec(),
                        done: false,
                    }));
                }
                fill(client, idle).await?;
            }
        }
    }
}

async fn fill(client: &mut Client, idle: std::time::Duration) -> Result<(), BodyError> {
    match tokio::time::timeout(idle, client.fill()).await {
        Ok(Ok(0) | Err(_)) => Err(BodyError::Gone),
        Ok(Ok(_)) => Ok(()),
        Err(_) => Err(BodyError::Stalled),
    }
}

impl Stream {
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Moves what the client sent so far (from `buf`) into `out`, framed for the backend.
    pub fn produce(&mut self, buf: &mut BytesMut, out: &mut Vec<u8>) -> Result<(), ChunkError> {
        match &mut self.coding {
            Coding::Length { left } => {
                let take = usize::try_from(*left).map_or(buf.len(), |l| l.min(buf.len()));
                out.extend_from_slice(&buf[..take]);
                buf.advance(take);
                *left -= take as u64;
                self.done = *left == 0;
            }
            Coding::Chunked(decoder) => {
                if !self.pending.is_empty() {
                    encode_chunk(out, &self.pending);
                    self.pending = Vec::new();
                }
                let used = decoder.feed(buf, |p| encode_chunk(out, p))?;
                buf.advance(used);
                if decoder.is_done() {
                    out.extend_from_slice(LAST_CHUNK);
                    self.done = true;
                }
            }
        }
        Ok(())
    }

    /// Whether something is already waiting to go out without reading the client.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
}
