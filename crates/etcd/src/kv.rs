//! Key-values with their metadata: ranges, single gets, and puts attached to a lease.
//!
//! Cluster mode reads and writes through these rather than [`Snapshot`](crate::Snapshot):
//! fencing needs each key's `create_revision` / `mod_revision`, and re-listing before a watch
//! needs the range's header revision.

use serde_json::json;

use crate::client::{Client, Retry};
use crate::error::{Error, Result};
use crate::wire::{self, RangeResponse, WriteResponse};

/// One key as etcd stores it. Keys and values are UTF-8 text (anything else is an
/// [`Error::BadEntry`] naming the key).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyValue {
    /// The full key (no prefix stripped).
    pub key: String,
    pub value: String,
    /// The revision that created this key (since its last deletion). Changes when the key is
    /// deleted and put again, so it identifies one "life" of the key: the fencing token.
    pub create_revision: i64,
    /// The revision of the last put to this key: what compare-and-swap compares.
    pub mod_revision: i64,
    /// Puts since the key was created (1 after the first).
    pub version: i64,
    /// The lease the key is attached to; 0 for none.
    pub lease: i64,
}

/// What a watch event did to its key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EventKind {
    /// Created or changed: the event's key-value is the new one.
    #[default]
    Put,
    /// Deleted (or its lease ended): the event's key-value has only the key and the
    /// `mod_revision` of the deletion.
    Delete,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
}

/// Flattens a range answer, naming the endpoint and op in an error.
pub(crate) fn kvs_of(
    client: &Client,
    endpoint: usize,
    op: &str,
    kvs: Vec<wire::KeyValue>,
) -> Result<Vec<KeyValue>> {
    wire::public_kvs(kvs).map_err(|e| Error::BadEntry {
        endpoint: client.endpoint(endpoint).to_owned(),
        op: op.to_owned(),
        key: e.key,
        problem: e.problem.to_string(),
    })
}

impl Client {
    /// Every key under `prefix` with its metadata, sorted by key, and the revision the read is
    /// current as of (the header revision: re-watch from it + 1 to miss nothing).
    ///
    /// `at_revision` reads the store as it was at that revision (a "pinned" read, for listing
    /// consistently in pages or comparing with a past state); it fails with
    /// [`Error::Rejected`] (gRPC code 11, "required revision has been compacted") when that
    /// history is gone, and likewise for a revision in the future. The header revision is
    /// always the current one.
    pub async fn range_prefix(
        &self,
        prefix: &str,
        at_revision: Option<i64>,
    ) -> Result<(Vec<KeyValue>, i64)> {
        let op = match at_revision {
            Some(revision) => format!("range {prefix:?} at revision {revision}"),
            None => format!("range {prefix:?}"),
        };
        let (key, end) = wire::prefix_range(prefix.as_bytes());
        let mut body = json!({ "key": wire::b64(&key), "range_end": wire::b64(&end) });
        if let Some(revision) = at_revision {
            body["revision"] = json!(revision.to_string());
        }
        let (endpoint, resp): (_, RangeResponse) = self
            .call(&op, "/v3/kv/range", &body, Retry::Idempotent)
            .await?;
        let revision = self.header_revision(endpoint, &op, resp.header.revision)?;
        Ok((kvs_of(self, endpoint, &op, resp.kvs)?, revision))
    }

    /// `key` with its metadata (`None` if absent), and the store revision of the read.
    pub async fn get(&self, key: &str) -> Result<(Option<KeyValue>, i64)> {
        let op = format!("get {key:?}");
        let body = json!({ "key": wire::b64(key.as_bytes()) });
        let (endpoint, resp): (_, RangeResponse) = self
            .call(&op, "/v3/kv/range", &body, Retry::Idempotent)
            .await?;
        let revision = self.header_revision(endpoint, &op, resp.header.revision)?;
        let kv = kvs_of(self, endpoint, &op, resp.kvs)?.into_iter().next();
        Ok((kv, revision))
    }

    /// Sets `key` to `value` attached to `lease` (from [`Client::grant`]): the key is deleted
    /// when the lease ends. Returns the revision of the change. A lease that does not exist
    /// (any more) is refused: [`Error::Rejected`] with gRPC code 5, see
    /// [`Error::is_lease_not_found`].
    pub async fn put_with_lease(&self, key: &str, value: &str, lease: i64) -> Result<i64> {
        let op = format!("put {key:?} with lease {lease}");
        let body = json!({
            "key": wire::b64(key.as_bytes()),
            "value": wire::b64(value.as_bytes()),
            "lease": lease.to_string(),
        });
        let (_, resp): (_, WriteResponse) = self
            .call(&op, "/v3/kv/put", &body, Retry::WhenNotSent)
            .await?;
        Ok(resp.header.revision)
    }

    /// A read's header revision, which every successful answer has.
    pub(crate) fn header_revision(&self, endpoint: usize, op: &str, revision: i64) -> Result<i64> {
        if revision <= 0 {
            return Err(Error::BadResponse {
                endpoint: self.endpoint(endpoint).to_owned(),
                op: op.to_owned(),
                reason: "no header revision".to_owned(),
            });
        }
        Ok(revision)
    }
}
