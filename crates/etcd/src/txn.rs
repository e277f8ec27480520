//! Transactions: compare key metadata, then run one list of ops or the other, atomically.
//!
//! This is what fenced writes are made of. A leader that won its election by creating
//! `leader` (at `create_revision` E) writes `alloc/x` only while it still holds that key and
//! nobody changed `alloc/x` since it read it (at `mod_revision` M):
//!
//! ```no_run
//! # async fn fenced(client: &jarfleet_etcd::Client, e: i64, m: i64) -> jarfleet_etcd::Result<bool> {
//! use jarfleet_etcd::{Compare, CompareOp, Op, Txn};
//! let txn = Txn::new()
//!     .when([
//!         Compare::create_revision("leader", CompareOp::Equal, e),
//!         Compare::mod_revision("alloc/x", CompareOp::Equal, m),
//!     ])
//!     .and_then([Op::put("alloc/x", "node-3")]);
//! Ok(client.txn(txn).await?.succeeded)
//! # }
//! ```
//!
//! A key that is deleted and created again gets a new `create_revision`, so a leader whose key
//! expired and was taken over cannot write with its old token, even if it re-creates the key.

use serde_json::{Value, json};

use crate::client::{Client, Retry};
use crate::error::{Error, Result};
use crate::kv::{KeyValue, kvs_of};
use crate::wire::{self, TxnResponse};

/// How a [`Compare`] relates the key's current metadata to the given one:
/// `current <op> given`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Greater,
    Less,
}

impl CompareOp {
    fn wire(self) -> &'static str {
        match self {
            CompareOp::Equal => "EQUAL",
            CompareOp::NotEqual => "NOT_EQUAL",
            CompareOp::Greater => "GREATER",
            CompareOp::Less => "LESS",
        }
    }
}

/// What a [`Compare`] looks at, with the value to compare it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompareTarget {
    /// The revision that created the key; 0 when the key is absent.
    CreateRevision(i64),
    /// The revision of the key's last put; 0 when absent.
    ModRevision(i64),
    /// Puts since the key was created; 0 when absent.
    Version(i64),
    /// The value. etcd treats a value compare on an absent key as false whatever the operator
    /// (`NotEqual` included): test absence with [`Compare::absent`].
    Value(String),
}

/// One condition of a [`Txn`]: `key`'s current `target` `op` the given one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    pub key: String,
    pub op: CompareOp,
    pub target: CompareTarget,
}

impl Compare {
    pub fn create_revision(key: &str, op: CompareOp, revision: i64) -> Compare {
        Compare::new(key, op, CompareTarget::CreateRevision(revision))
    }

    pub fn mod_revision(key: &str, op: CompareOp, revision: i64) -> Compare {
        Compare::new(key, op, CompareTarget::ModRevision(revision))
    }

    pub fn version(key: &str, op: CompareOp, version: i64) -> Compare {
        Compare::new(key, op, CompareTarget::Version(version))
    }

    pub fn value(key: &str, op: CompareOp, value: &str) -> Compare {
        Compare::new(key, op, CompareTarget::Value(value.to_owned()))
    }

    /// `key` does not exist: its `create_revision` is 0.
    pub fn absent(key: &str) -> Compare {
        Compare::create_revision(key, CompareOp::Equal, 0)
    }

    fn new(key: &str, op: CompareOp, target: CompareTarget) -> Compare {
        Compare {
            key: key.to_owned(),
            op,
            target,
        }
    }

    /// The gateway's JSON. The value to compare with is always written, zero included: it is
    /// a protobuf oneof, and an unset oneof is a different message from one set to zero. etcd
    /// 3.4.23 happens to read both alike (checked), but nothing promises that of other versions
    /// or of proxies in between, and writing it costs nothing.
    fn to_json(&self) -> Value {
        let (target, field, value) = match &self.target {
            CompareTarget::CreateRevision(r) => ("CREATE", "create_revision", json!(r.to_string())),
            CompareTarget::ModRevision(r) => ("MOD", "mod_revision", json!(r.to_string())),
            CompareTarget::Version(v) => ("VERSION", "version", json!(v.to_string())),
            CompareTarget::Value(v) => ("VALUE", "value", json!(wire::b64(v.as_bytes()))),
        };
        let mut compare = json!({
            "key": wire::b64(self.key.as_bytes()),
            "target": target,
            "result": self.op.wire(),
        });
        compare[field] = value;
        compare
    }
}

/// One operation of a [`Txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key`, attached to `lease` if given.
    Put {
        key: String,
        value: String,
        lease: Option<i64>,
    },
    /// Deletes `key` only.
    Delete { key: String },
    /// Deletes every key under `prefix` (see [`Client::get_prefix`] for what "under" means).
    DeletePrefix { prefix: String },
    /// Reads `key`.
    Get { key: String },
}

impl Op {
    pub fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.to_owned(),
            value: value.to_owned(),
            lease: None,
        }
    }

    pub fn put_with_lease(key: &str, value: &str, lease: i64) -> Op {
        Op::Put {
            key: key.to_owned(),
            value: value.to_owned(),
            lease: Some(lease),
        }
    }

    pub fn delete(key: &str) -> Op {
        Op::Delete {
            key: key.to_owned(),
        }
    }

    pub fn delete_prefix(prefix: &str) -> Op {
        Op::DeletePrefix {
            prefix: prefix.to_owned(),
        }
    }

    pub fn get(key: &str) -> Op {
        Op::Get {
            key: key.to_owned(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => {
                let mut put = json!({
                    "key": wire::b64(key.as_bytes()),
                    "value": wire::b64(value.as_bytes()),
                });
                if let Some(lease) = lease {
                    put["lease"] = json!(lease.to_string());
                }
                json!({ "request_put": put })
            }
            Op::Delete { key } => {
                json!({ "request_delete_range": { "key": wire::b64(key.as_bytes()) } })
            }
            Op::DeletePrefix { prefix } => {
                let (key, end) = wire::prefix_range(prefix.as_bytes());
                json!({ "request_delete_range": {
                    "key": wire::b64(&key),
                    "range_end": wire::b64(&end),
                }})
            }
            Op::Get { key } => json!({ "request_range": { "key": wire::b64(key.as_bytes()) } }),
        }
    }
}

/// If every compare holds, run `success`, else `failure`; all at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds conditions (all must hold).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.compares.extend(compares);
        self
    }

    /// Adds ops run when every condition holds.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = Op>) -> Txn {
        self.success.extend(ops);
        self
    }

    /// Adds ops run otherwise (typically [`Op::get`]s, to learn what changed).
    pub fn or_else(mut self, ops: impl IntoIterator<Item = Op>) -> Txn {
        self.failure.extend(ops);
        self
    }

    fn to_json(&self) -> Value {
        json!({
            "compare": self.compares.iter().map(Compare::to_json).collect::<Vec<_>>(),
            "success": self.success.iter().map(Op::to_json).collect::<Vec<_>>(),
            "failure": self.failure.iter().map(Op::to_json).collect::<Vec<_>>(),
        })
    }
}

/// The answer to one [`Op`], in the same position as its op.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResponse {
    Put,
    /// How many keys were deleted.
    Delete {
        deleted: i64,
    },
    /// The key read, if present.
    Get(Option<KeyValue>),
}

/// What a [`Txn`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every compare held (so `success` ran, else `failure`).
    pub succeeded: bool,
    /// The store revision after the txn (the revision of its writes, if it wrote).
    pub revision: i64,
    /// One per op of the branch that ran.
    pub responses: Vec<OpResponse>,
}

impl Client {
    /// Runs `txn` atomically. Like every write, it is not re-sent to another endpoint once it
    /// may have reached one: an [`Error::Unavailable`] after a sent txn means "unknown", and the
    /// caller re-reads to learn whether it took effect.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult> {
        let op = describe(&txn);
        let (endpoint, resp): (_, TxnResponse) = self
            .call(&op, "/v3/kv/txn", &txn.to_json(), Retry::WhenNotSent)
            .await?;
        let revision = self.header_revision(endpoint, &op, resp.header.revision)?;
        let ops = if resp.succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let bad = |reason: String| Error::BadResponse {
            endpoint: self.endpoint(endpoint).to_owned(),
            op: op.clone(),
            reason,
        };
        if resp.responses.len() != ops.len() {
            return Err(bad(format!(
                "{} answers for {} ops",
                resp.responses.len(),
                ops.len()
            )));
        }
        let mut responses = Vec::with_capacity(ops.len());
        for (i, (asked, answer)) in ops.iter().zip(resp.responses).enumerate() {
            let response = match (asked, answer) {
                (
                    Op::Put { .. },
                    wire::ResponseOp {
                        response_put: Some(_),
                        ..
                    },
                ) => OpResponse::Put,
                (
                    Op::Delete { .. } | Op::DeletePrefix { .. },
                    wire::ResponseOp {
                        response_delete_range: Some(deleted),
                        ..
                    },
                ) => OpResponse::Delete {
                    deleted: deleted.deleted,
                },
                (
                    Op::Get { .. },
                    wire::ResponseOp {
                        response_range: Some(range),
                        ..
                    },
                ) => OpResponse::Get(kvs_of(self, endpoint, &op, range.kvs)?.into_iter().next()),
                (asked, answer) => {
                    return Err(bad(format!(
                        "answer {i} ({answer:?}) does not fit {asked:?}"
                    )));
                }
            };
            responses.push(response);
        }
        Ok(TxnResult {
            succeeded: resp.succeeded,
            revision,
            responses,
        })
    }
}

/// A short name of a txn for errors: the keys it compares and writes.
fn describe(txn: &Txn) -> String {
    let keys = |ops: &[Op]| {
        ops.iter()
            .map(|op| match op {
                Op::Put { key, .. } => format!("put {key:?}"),
                Op::Delete { key } => format!("delete {key:?}"),
                Op::DeletePrefix { prefix } => format!("delete prefix {prefix:?}"),
                Op::Get { key } => format!("get {key:?}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let compares = txn
        .compares
        .iter()
        .map(|c| format!("{:?}", c.key))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "txn if [{compares}] then [{}] else [{}]",
        keys(&txn.success),
        keys(&txn.failure)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_sent_explicitly() {
        let json = Compare::absent("k").to_json();
        assert_eq!(
            json,
            json!({"key": "aw==", "target": "CREATE", "result": "EQUAL", "create_revision": "0"})
        );
        let json = Compare::version("k", CompareOp::Greater, 0).to_json();
        assert_eq!(json["version"], json!("0"));
        assert_eq!(json["result"], json!("GREATER"));
        let json = Compare::value("k", CompareOp::NotEqual, "").to_json();
        assert_eq!(json["value"], json!(""));
        assert_eq!(json["target"], json!("VALUE"));
        let json = Compare::mod_revision("k", CompareOp::Less, 12).to_json();
        assert_eq!(json["mod_revision"], json!("12"));
    }

    #[test]
    fn ops_in_gateway_json() {
        let txn = Txn::new()
            .when([Compare::absent("a")])
            .and_then([
                Op::put_with_lease("a", "1", 7),
                Op::put("b", ""),
                Op::delete_prefix("p/"),
            ])
            .or_else([Op::get("a"), Op::delete("a")]);
        assert_eq!(
            txn.to_json(),
            json!({
                "compare": [{"key": "YQ==", "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
                "success": [
                    {"request_put": {"key": "YQ==", "value": "MQ==", "lease": "7"}},
                    {"request_put": {"key": "Yg==", "value": ""}},
                    {"request_delete_range": {"key": "cC8=", "range_end": "cDA="}},
                ],
                "failure": [
                    {"request_range": {"key": "YQ=="}},
                    {"request_delete_range": {"key": "YQ=="}},
                ],
            })
        );
        assert_eq!(
            describe(&txn),
            r#"txn if ["a"] then [put "a", put "b", delete prefix "p/"] else [get "a", delete "a"]"#
        );
    }
}
