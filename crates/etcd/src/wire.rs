//! The gateway's JSON: key ranges, response shapes, and the decoder for the watch stream. Pure:
//! no IO, so every quirk below has a unit test.
//!
//! Quirks of etcd 3.4's gateway (grpc-gateway with `EmitDefaults` off), checked against the
//! real server:
//! - bytes fields are standard base64 with padding;
//! - int64 fields are JSON *strings* (`"revision":"5"`); we also accept numbers;
//! - fields at their default value are omitted: no `kvs` in an empty range, no `value` for an
//!   empty value, no `type` for a `PUT` event (enum value 0), no `events` in a created message;
//! - the watch response is one long chunked body of `{"result":{...}}` objects separated by
//!   `\n`, chunk boundaries need not match message boundaries; a failing stream may carry
//!   `{"error":{...}}` instead;
//! - a watch whose start revision was compacted first answers `created:true`, then
//!   `canceled:true` with `compact_revision` (and a header without `revision`), and the
//!   stream stays open: the client must drop it;
//! - errors come in two shapes: a unary call answers a non-200 status with
//!   `{"error":"..","message":"..","code":14}`, a streaming call (watch, lease keep-alive)
//!   with `{"error":{"grpc_code":14,"http_code":503,"message":"..",..}}`, either as the whole
//!   body of a non-200 answer or as a message inside a 200 stream;
//! - `/v3/lease/keepalive` is a bidirectional stream behind the gateway, but a POST with one
//!   JSON body gets exactly one `{"result":{..}}` and the body ends; a lease that does not
//!   exist (revoked, expired, never granted) is not an error there: the result simply has no
//!   `TTL`. `/v3/lease/timetolive` says the same with `"TTL":"-1"`, and `/v3/lease/revoke`
//!   with gRPC code 5 "requested lease not found";
//! - in a txn compare, the value to compare with is a oneof (`create_revision`,
//!   `mod_revision`, `version`, `value`): 3.4 reads an omitted one as zero, but we always
//!   send it, zero included (`"create_revision":"0"` is "the key is absent"). A `VALUE`
//!   compare on an absent key is false whatever the operator, `NOT_EQUAL` included;
//! - a txn's `succeeded` is omitted when false, and each of its `responses` is one of
//!   `response_range`, `response_put`, `response_delete_range` (a oneof).

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::{self, Deserializer};

/// Encodes bytes the way the gateway wants them in a request body.
pub(crate) fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// The `[key, range_end)` covering every key that starts with `prefix`.
///
/// `range_end` is the prefix with its last byte incremented, trailing `0xff` bytes dropped
/// first. An empty prefix (or one of only `0xff`s) has no such end: etcd spells "to the end of
/// the keyspace" as `range_end = "\0"`, and "every key" as `key = range_end = "\0"` (an empty key
/// is rejected by etcd).
pub(crate) fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let key = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.to_vec()
    };
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return (key, end);
        }
    }
    (key, vec![0])
}

fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        Str(String),
        Num(i64),
    }
    match Int::deserialize(d)? {
        Int::Num(n) => Ok(n),
        Int::Str(s) => s
            .parse()
            .map_err(|_| de::Error::custom(format!("{s:?} is not an int64"))),
    }
}

fn de_b64<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD
        .decode(s.as_bytes())
        .map_err(|e| de::Error::custom(format!("bad base64 {s:?}: {e}")))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, deserialize_with = "de_i64")]
    pub revision: i64,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeyValue {
    #[serde(default, deserialize_with = "de_b64")]
    pub key: Vec<u8>,
    #[serde(default, deserialize_with = "de_b64")]
    pub value: Vec<u8>,
    #[serde(default, deserialize_with = "de_i64")]
    pub create_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub mod_revision: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub version: i64,
    #[serde(default, deserialize_with = "de_i64")]
    pub lease: i64,
}

impl KeyValue {
    /// The public form: key and value as text (the crate's rule), full key kept.
    pub(crate) fn into_public(self) -> Result<crate::kv::KeyValue, EntryError> {
        let key = match String::from_utf8(self.key) {
            Ok(key) => key,
            Err(e) => {
                return Err(EntryError {
                    key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    problem: EntryProblem::KeyNotUtf8,
                });
            }
        };
        let value = value_text(key.as_bytes(), self.value)?;
        Ok(crate::kv::KeyValue {
            key,
            value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        })
    }
}

/// Converts every key-value of a response (see [`KeyValue::into_public`]).
pub(crate) fn public_kvs(kvs: Vec<KeyValue>) -> Result<Vec<crate::kv::KeyValue>, EntryError> {
    kvs.into_iter().map(KeyValue::into_public).collect()
}

/// `POST /v3/kv/range`.
#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub kvs: Vec<KeyValue>,
}

/// `POST /v3/kv/put` and `POST /v3/kv/deleterange`: only the revision matters to us.
#[derive(Debug, Deserialize)]
pub(crate) struct WriteResponse {
    #[serde(default)]
    pub header: Header,
}

/// `POST /v3/kv/deleterange`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct DeleteResponse {
    #[serde(default, deserialize_with = "de_i64")]
    pub deleted: i64,
}

/// `POST /v3/lease/grant`.
#[derive(Debug, Deserialize)]
pub(crate) struct GrantResponse {
    #[serde(default, rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(default, rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
    /// LeaseGrantResponse has an error string of its own (unused by etcd 3.4, but checked).
    #[serde(default)]
    pub error: String,
}

/// One message of `POST /v3/lease/keepalive`. `TTL` is absent (0) when the lease is gone.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct KeepAliveResult {
    #[serde(default, rename = "ID", deserialize_with = "de_i64")]
    pub id: i64,
    #[serde(default, rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
}

/// `POST /v3/lease/timetolive`. `TTL` is -1 when the lease is gone.
#[derive(Debug, Deserialize)]
pub(crate) struct TimeToLiveResponse {
    #[serde(default, rename = "TTL", deserialize_with = "de_i64")]
    pub ttl: i64,
    #[serde(default, rename = "grantedTTL", deserialize_with = "de_i64")]
    pub granted_ttl: i64,
    #[serde(default, deserialize_with = "de_b64_list")]
    pub keys: Vec<Vec<u8>>,
}

fn de_b64_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
    Vec::<String>::deserialize(d)?
        .into_iter()
        .map(|s| {
            STANDARD
                .decode(s.as_bytes())
                .map_err(|e| de::Error::custom(format!("bad base64 {s:?}: {e}")))
        })
        .collect()
}

/// `POST /v3/kv/txn`.
#[derive(Debug, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<ResponseOp>,
}

/// One op's answer inside a txn: exactly one field is set.
#[derive(Debug, Deserialize)]
pub(crate) struct ResponseOp {
    pub response_range: Option<RangeResponse>,
    pub response_put: Option<WriteResponse>,
    pub response_delete_range: Option<DeleteResponse>,
}

/// A gRPC status as the gateway renders it: `code` and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewayError {
    pub code: i32,
    pub message: String,
}

impl GatewayError {
    /// Reads either shape (see the module docs): unary `{"code":..,"message":..}` or streaming
    /// `{"error":{"grpc_code":..,"message":..}}`. `None` if it is neither or has no text.
    pub(crate) fn parse(body: &[u8]) -> Option<GatewayError> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        GatewayError::from_value(&value)
    }

    fn from_value(value: &serde_json::Value) -> Option<GatewayError> {
        let text = |v: &serde_json::Value, field: &str| {
            v.get(field)
                .and_then(|m| m.as_str())
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
        };
        let code = |v: &serde_json::Value, field: &str| {
            v.get(field)
                .and_then(|c| c.as_i64())
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(0)
        };
        match value.get("error") {
            Some(inner @ serde_json::Value::Object(_)) => Some(GatewayError {
                code: code(inner, "grpc_code"),
                message: text(inner, "message")?,
            }),
            _ => Some(GatewayError {
                code: code(value, "code"),
                message: text(value, "message").or_else(|| text(value, "error"))?,
            }),
        }
    }
}

// Omitted on the wire for a put: it is the enum's default value.
pub(crate) use crate::kv::EventKind;

impl<'de> Deserialize<'de> for EventKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Str(String),
            Num(i64),
        }
        match Raw::deserialize(d)? {
            Raw::Num(0) => Ok(EventKind::Put),
            Raw::Num(1) => Ok(EventKind::Delete),
            Raw::Str(s) if s == "PUT" => Ok(EventKind::Put),
            Raw::Str(s) if s == "DELETE" => Ok(EventKind::Delete),
            Raw::Num(n) => Err(de::Error::custom(format!("unknown event type {n}"))),
            Raw::Str(s) => Err(de::Error::custom(format!("unknown event type {s:?}"))),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(crate) struct Event {
    #[serde(default, rename = "type")]
    pub kind: EventKind,
    #[serde(default)]
    pub kv: KeyValue,
}

/// One message of the watch stream (the gateway's `result`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct WatchResult {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub created: bool,
    #[serde(default)]
    pub canceled: bool,
    #[serde(default, deserialize_with = "de_i64")]
    pub compact_revision: i64,
    #[serde(default)]
    pub cancel_reason: String,
    #[serde(default)]
    pub events: Vec<Event>,
}

/// One message of a streaming call: its result, or the error that ended the stream.
#[derive(Deserialize)]
struct Frame<T> {
    result: Option<T>,
    error: Option<serde_json::Value>,
}

impl<T> Frame<T> {
    fn into_result(self) -> Result<T, StreamError> {
        match self {
            Frame {
                error: Some(error), ..
            } => Err(StreamError::Refused(render_stream_error(&error))),
            Frame {
                result: Some(result),
                ..
            } => Ok(result),
            Frame {
                result: None,
                error: None,
            } => Err(StreamError::Unreadable(
                "a stream message with neither result nor error".to_owned(),
            )),
        }
    }
}

/// Why a streaming call's message is not a result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// etcd's own error message, like "etcdserver: no leader".
    Refused(GatewayError),
    /// Not the gateway's JSON.
    Unreadable(String),
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::Refused(e) if e.code != 0 => {
                write!(f, "{} (gRPC code {})", e.message, e.code)
            }
            StreamError::Refused(e) => f.write_str(&e.message),
            StreamError::Unreadable(reason) => f.write_str(reason),
        }
    }
}

/// The answer to a one-shot `POST /v3/lease/keepalive`: its first (only) message.
pub(crate) fn keepalive_answer(body: &[u8]) -> Result<KeepAliveResult, StreamError> {
    let mut stream =
        serde_json::Deserializer::from_slice(body).into_iter::<Frame<KeepAliveResult>>();
    match stream.next() {
        Some(Ok(frame)) => frame.into_result(),
        Some(Err(e)) => Err(StreamError::Unreadable(format!(
            "undecodable keep-alive answer: {e}"
        ))),
        None => Err(StreamError::Unreadable(
            "an empty keep-alive answer".to_owned(),
        )),
    }
}

/// Largest watch message we buffer. etcd caps a request at 1.5 MiB by default; a message this
/// big means we are not reading what we think we are.
const MAX_MESSAGE: usize = 64 << 20;

/// Splits the watch body into messages, whatever the chunking.
#[derive(Debug, Default)]
pub(crate) struct WatchDecoder {
    buf: Vec<u8>,
}

impl WatchDecoder {
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete message; `Ok(None)` when more bytes are needed. An `{"error":..}`
    /// message is returned as `Err` with the gateway's text.
    pub(crate) fn next(&mut self) -> Result<Option<WatchResult>, String> {
        let mut stream =
            serde_json::Deserializer::from_slice(&self.buf).into_iter::<Frame<WatchResult>>();
        let frame = match stream.next() {
            None => {
                // Only whitespace so far.
                self.buf.clear();
                return Ok(None);
            }
            Some(Err(e)) if e.is_eof() => {
                if self.buf.len() > MAX_MESSAGE {
                    return Err(format!("a watch message exceeded {MAX_MESSAGE} bytes"));
                }
                return Ok(None);
            }
            Some(Err(e)) => return Err(format!("undecodable watch message: {e}")),
            Some(Ok(frame)) => frame,
        };
        let used = stream.byte_offset();
        self.buf.drain(..used);
        frame.into_result().map(Some).map_err(|e| match e {
            StreamError::Unreadable(_) => "watch message with neither result nor error".to_owned(),
            refused => refused.to_string(),
        })
    }
}

/// grpc-gateway's stream error: `{"grpc_code":14,"http_code":503,"message":"..",...}`.
fn render_stream_error(error: &serde_json::Value) -> GatewayError {
    let wrapped = serde_json::json!({ "error": error });
    GatewayError::from_value(&wrapped).unwrap_or_else(|| GatewayError {
        code: 0,
        message: error.to_string(),
    })
}

/// A key or value that is not what the config center can hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EntryError {
    /// The key, lossily decoded.
    pub key: String,
    pub problem: EntryProblem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryProblem {
    KeyNotUtf8,
    ValueNotUtf8,
    /// etcd sent a key that does not start with the prefix asked for.
    OutsidePrefix,
}

impl fmt::Display for EntryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryProblem::KeyNotUtf8 => "the key is not UTF-8",
            EntryProblem::ValueNotUtf8 => "the value is not UTF-8",
            EntryProblem::OutsidePrefix => "the key is outside the prefix asked for",
        })
    }
}

/// The key with `prefix` stripped.
fn short_key(prefix: &str, key: &[u8]) -> Result<String, EntryError> {
    let fail = |problem| EntryError {
        key: String::from_utf8_lossy(key).into_owned(),
        problem,
    };
    let rest = key
        .strip_prefix(prefix.as_bytes())
        .ok_or_else(|| fail(EntryProblem::OutsidePrefix))?;
    String::from_utf8(rest.to_vec()).map_err(|_| fail(EntryProblem::KeyNotUtf8))
}

fn value_text(key: &[u8], value: Vec<u8>) -> Result<String, EntryError> {
    String::from_utf8(value).map_err(|_| EntryError {
        key: String::from_utf8_lossy(key).into_owned(),
        problem: EntryProblem::ValueNotUtf8,
    })
}

/// The values of a range over `prefix`, keys stripped.
pub(crate) fn range_values(
    prefix: &str,
    kvs: Vec<KeyValue>,
) -> Result<BTreeMap<String, String>, EntryError> {
    let mut values = BTreeMap::new();
    for kv in kvs {
        let key = short_key(prefix, &kv.key)?;
        let value = value_text(&kv.key, kv.value)?;
        values.insert(key, value);
    }
    Ok(values)
}

/// Applies watch events to `values`; returns the highest `mod_revision` seen (0 if none).
///
/// On error `values` may be partly updated; callers apply to a copy.
pub(crate) fn apply_events(
    prefix: &str,
    values: &mut BTreeMap<String, String>,
    events: Vec<Event>,
) -> Result<i64, EntryError> {
    let mut revision = 0;
    for event in events {
        revision = revision.max(event.kv.mod_revision);
        let key = short_key(prefix, &event.kv.key)?;
        match event.kind {
            EventKind::Put => {
                let value = value_text(&event.kv.key, event.kv.value)?;
                values.insert(key, value);
            }
            EventKind::Delete => {
                values.remove(&key);
            }
        }
    }
    Ok(revision)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn prefix_ranges() {
        let cases: &[(&[u8], &[u8], &[u8])] = &[
            (b"app/", b"app/", b"app0"),
            (b"a", b"a", b"b"),
            (b"a\xff", b"a\xff", b"b"),
            (b"a\xfe", b"a\xfe", b"a\xff"),
            (b"\xff\xff", b"\xff\xff", b"\0"),
            (b"", b"\0", b"\0"),
        ];
        for (prefix, key, end) in cases {
            assert_eq!(
                prefix_range(prefix),
                (key.to_vec(), end.to_vec()),
                "prefix {prefix:?}"
            );
        }
    }

    #[test]
    fn range_response_with_string_ints_and_omitted_fields() {
        let body = r#"{"header":{"cluster_id":"1","revision":"7","raft_term":"2"},
            "kvs":[{"key":"YXBwL2E=","create_revision":"2","mod_revision":"6","version":"3","value":"MQ=="},
                   {"key":"YXBwL2I=","mod_revision":"7"}],"count":"2"}"#;
        let resp: RangeResponse = serde_json::from_str(body).unwrap();
        assert_eq!(resp.header.revision, 7);
        let values = range_values("app/", resp.kvs).unwrap();
        let expected: BTreeMap<String, String> =
            [("a".into(), "1".into()), ("b".into(), String::new())].into();
        assert_eq!(values, expected);

        // An empty range has no "kvs" at all.
        let resp: RangeResponse = serde_json::from_str(r#"{"header":{"revision":"1"}}"#).unwrap();
        assert!(resp.kvs.is_empty());
        // Numbers are accepted too.
        let resp: RangeResponse = serde_json::from_str(r#"{"header":{"revision":3}}"#).unwrap();
        assert_eq!(resp.header.revision, 3);
    }

    #[test]
    fn entry_errors() {
        let kv = |key: &[u8], value: &[u8]| KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            mod_revision: 1,
            ..KeyValue::default()
        };
        let cases: &[(&[u8], &[u8], EntryProblem)] = &[
            (b"app/x", b"\xff", EntryProblem::ValueNotUtf8),
            (b"app/\xff", b"v", EntryProblem::KeyNotUtf8),
            (b"other/x", b"v", EntryProblem::OutsidePrefix),
        ];
        for (key, value, problem) in cases {
            let err = range_values("app/", vec![kv(key, value)]).unwrap_err();
            assert_eq!(err.problem, *problem, "key {key:?}");
        }
    }

    #[test]
    fn watch_stream_split_anywhere() {
        let stream = concat!(
            r#"{"result":{"header":{"revision":"3"},"created":true}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"4"},"events":[{"kv":{"key":"YS94","mod_revision":"4","value":"MQ=="}}]}}"#,
            "\n",
            r#"{"result":{"header":{"revision":"6"},"events":[{"type":"DELETE","kv":{"key":"YS94","mod_revision":"6"}}]}}"#,
            "\n"
        )
        .as_bytes();
        for split in 0..stream.len() {
            let mut decoder = WatchDecoder::default();
            let mut messages = Vec::new();
            for part in [&stream[..split], &stream[split..]] {
                decoder.push(part);
                while let Some(m) = decoder.next().unwrap() {
                    messages.push(m);
                }
            }
            assert_eq!(messages.len(), 3, "split at {split}");
            assert!(messages[0].created);
            let mut values = BTreeMap::new();
            assert_eq!(
                apply_events("a/", &mut values, std::mem::take(&mut messages[1].events)),
                Ok(4)
            );
            assert_eq!(values.get("x").map(String::as_str), Some("1"));
            assert_eq!(messages[2].events[0].kind, EventKind::Delete);
            assert_eq!(
                apply_events("a/", &mut values, std::mem::take(&mut messages[2].events)),
                Ok(6)
            );
            assert!(values.is_empty());
        }
    }

    #[test]
    fn key_values_with_metadata() {
        let body = r#"{"header":{"revision":"9"},"kvs":[
            {"key":"bm9kZS8x","create_revision":"4","mod_revision":"9","version":"2","value":"dXA=","lease":"7587862072907233292"},
            {"key":"bm9kZS8y","create_revision":"5","mod_revision":"5","version":"1"}]}"#;
        let resp: RangeResponse = serde_json::from_str(body).unwrap();
        let kvs = public_kvs(resp.kvs).unwrap();
        assert_eq!(
            kvs[0],
            crate::kv::KeyValue {
                key: "node/1".into(),
                value: "up".into(),
                create_revision: 4,
                mod_revision: 9,
                version: 2,
                lease: 7_587_862_072_907_233_292,
            }
        );
        // Omitted: an empty value, no lease.
        assert_eq!((kvs[1].value.as_str(), kvs[1].lease), ("", 0));

        let bad = KeyValue {
            key: b"k\xff".to_vec(),
            ..KeyValue::default()
        };
        assert_eq!(
            bad.into_public().unwrap_err().problem,
            EntryProblem::KeyNotUtf8
        );
    }

    #[test]
    fn gateway_errors_in_both_shapes() {
        let unary =
            br#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        let stream = br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader","http_status":"Service Unavailable"}}"#;
        let expected = GatewayError {
            code: 14,
            message: "etcdserver: no leader".into(),
        };
        assert_eq!(GatewayError::parse(unary), Some(expected.clone()));
        assert_eq!(GatewayError::parse(stream), Some(expected));
        // Only "error" (older gateways).
        assert_eq!(
            GatewayError::parse(br#"{"error":"x","code":5}"#),
            Some(GatewayError {
                code: 5,
                message: "x".into()
            })
        );
        assert_eq!(GatewayError::parse(b"<html>"), None);
        assert_eq!(GatewayError::parse(br#"{"code":2}"#), None);
    }

    #[test]
    fn keepalive_answers() {
        // What etcd 3.4 answers a one-shot POST: one result, then the body ends.
        let alive = br#"{"result":{"header":{"revision":"1","raft_term":"2"},"ID":"4111120497036431365","TTL":"5"}}
"#;
        let a = keepalive_answer(alive).unwrap();
        assert_eq!((a.id, a.ttl), (4_111_120_497_036_431_365, 5));
        // A lease etcd does not hold: no TTL at all.
        let gone = br#"{"result":{"header":{"revision":"1"},"ID":"12345"}}"#;
        assert_eq!(keepalive_answer(gone).unwrap().ttl, 0);
        let refused =
            br#"{"error":{"grpc_code":14,"http_code":503,"message":"etcdserver: no leader"}}"#;
        assert_eq!(
            keepalive_answer(refused).unwrap_err().to_string(),
            "etcdserver: no leader (gRPC code 14)"
        );
        assert!(matches!(
            keepalive_answer(b""),
            Err(StreamError::Unreadable(_))
        ));
        assert!(matches!(
            keepalive_answer(br#"{"ID":"1","TTL":"5"}"#),
            Err(StreamError::Unreadable(_))
        ));
    }

    #[test]
    fn lease_and_txn_responses() {
        let ttl: TimeToLiveResponse = serde_json::from_str(
            r#"{"header":{"revision":"3"},"ID":"7","TTL":"2","grantedTTL":"5","keys":["YQ=="]}"#,
        )
        .unwrap();
        assert_eq!(
            (ttl.ttl, ttl.granted_ttl, ttl.keys),
            (2, 5, vec![b"a".to_vec()])
        );
        let gone: TimeToLiveResponse =
            serde_json::from_str(r#"{"header":{"revision":"3"},"ID":"7","TTL":"-1"}"#).unwrap();
        assert_eq!(gone.ttl, -1);

        // A failed txn: no "succeeded" at all.
        let txn: TxnResponse = serde_json::from_str(
            r#"{"header":{"revision":"3"},"responses":[{"response_range":{"header":{"revision":"3"},
                "kvs":[{"key":"YQ==","create_revision":"3","mod_revision":"3","version":"1","value":"djE="}],"count":"1"}},
                {"response_delete_range":{"header":{"revision":"4"},"deleted":"1"}},
                {"response_put":{"header":{"revision":"4"}}}]}"#,
        )
        .unwrap();
        assert!(!txn.succeeded);
        assert_eq!(txn.header.revision, 3);
        assert_eq!(
            txn.responses[0].response_range.as_ref().unwrap().kvs.len(),
            1
        );
        assert_eq!(
            txn.responses[1]
                .response_delete_range
                .as_ref()
                .unwrap()
                .deleted,
            1
        );
        assert!(txn.responses[2].response_put.is_some());
        let txn: TxnResponse =
            serde_json::from_str(r#"{"header":{"revision":"4"},"succeeded":true}"#).unwrap();
        assert!(txn.succeeded && txn.responses.is_empty());
    }

    #[test]
    fn watch_canceled_for_compaction() {
        let mut decoder = WatchDecoder::default();
        decoder.push(
            br#"{"result":{"header":{"raft_term":"2"},"canceled":true,"compact_revision":"5"}}"#,
        );
        let m = decoder.next().unwrap().unwrap();
        assert!(m.canceled);
        assert_eq!(m.compact_revision, 5);
        assert_eq!(m.header.revision, 0);
    }

    #[test]
    fn watch_stream_errors() {
        let mut decoder = WatchDecoder::default();
        decoder.push(br#"{"error":{"grpc_code":14,"http_code":503,"message":"no leader","http_status":"Service Unavailable"}}"#);
        assert_eq!(decoder.next().unwrap_err(), "no leader (gRPC code 14)");

        let mut decoder = WatchDecoder::default();
        decoder.push(b"<html>");
        assert!(
            decoder
                .next()
                .unwrap_err()
                .starts_with("undecodable watch message")
        );

        let mut decoder = WatchDecoder::default();
        decoder.push(br#"{"result":{"events":[{"type":"BOGUS","kv":{}}]}}"#);
        assert!(decoder.next().unwrap_err().contains("unknown event type"));
    }
}
