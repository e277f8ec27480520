//! Leases: grant, renew once, revoke, ask. Keys put with a lease vanish when it ends, which is
//! how a node's registration disappears when the node does. [`LeaseKeeper`](crate::LeaseKeeper)
//! renews one in the background.

use serde_json::json;

use crate::client::{Client, Retry};
use crate::error::{Error, Result};
use crate::wire::{self, GrantResponse, TimeToLiveResponse, WriteResponse};

/// A lease etcd granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub id: i64,
    /// Seconds etcd keeps it without a renewal. May be more than asked for: etcd raises a TTL
    /// below its minimum (1.5 election timeouts) to that minimum.
    pub ttl: i64,
}

/// What [`Client::time_to_live`] says about a live lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    pub id: i64,
    /// Seconds left (rounded by etcd).
    pub ttl: i64,
    /// The TTL it was granted with, which each renewal restores.
    pub granted_ttl: i64,
    /// The keys attached to it.
    pub keys: Vec<String>,
}

/// etcd's message for a lease it does not hold (gRPC code 5, `NOT_FOUND`).
const LEASE_NOT_FOUND: &str = "etcdserver: requested lease not found";

impl Error {
    /// Whether etcd refused because the lease named does not exist (revoked, expired, never
    /// granted), e.g. a [`Client::put_with_lease`] with a lost lease: register again with a
    /// new one.
    pub fn is_lease_not_found(&self) -> bool {
        matches!(self, Error::Rejected { code: 5, message, .. } if message == LEASE_NOT_FOUND)
    }
}

impl Client {
    /// Grants a lease of `ttl_secs` seconds.
    ///
    /// Sent again to another endpoint when the first may not have answered: the worst case is
    /// one extra lease nobody renews, which etcd drops after `ttl_secs`.
    pub async fn grant(&self, ttl_secs: i64) -> Result<Lease> {
        let op = format!("grant a lease of {ttl_secs} s");
        let body = json!({ "TTL": ttl_secs.to_string() });
        let (endpoint, resp): (_, GrantResponse) = self
            .call(&op, "/v3/lease/grant", &body, Retry::Idempotent)
            .await?;
        if !resp.error.is_empty() || resp.id == 0 || resp.ttl <= 0 {
            return Err(Error::BadResponse {
                endpoint: self.endpoint(endpoint).to_owned(),
                op,
                reason: format!(
                    "no usable lease (ID {}, TTL {}, error {:?})",
                    resp.id, resp.ttl, resp.error
                ),
            });
        }
        Ok(Lease {
            id: resp.id,
            ttl: resp.ttl,
        })
    }

    /// Renews lease `id` once: `Some(ttl)`, the seconds it now has, or `None` when etcd says
    /// the lease is gone (revoked or expired); it cannot come back, so register again.
    ///
    /// One POST to the gateway's keep-alive stream with one request, which answers one message
    /// and ends (checked against etcd 3.4). Fails over like a read: renewing twice is harmless.
    pub async fn keep_alive_once(&self, id: i64) -> Result<Option<i64>> {
        let op = format!("keep lease {id} alive");
        let body = json!({ "ID": id.to_string() });
        let (endpoint, answer) = self
            .call_stream(
                &op,
                "/v3/lease/keepalive",
                &body,
                Retry::Idempotent,
                wire::keepalive_answer,
            )
            .await?;
        if answer.id != id {
            return Err(Error::BadResponse {
                endpoint: self.endpoint(endpoint).to_owned(),
                op,
                reason: format!("the answer is about lease {}", answer.id),
            });
        }
        Ok((answer.ttl > 0).then_some(answer.ttl))
    }

    /// Ends lease `id` now, deleting its keys (a clean shutdown's way to deregister at once).
    /// A lease that is already gone is not an error: that is the state asked for, which also
    /// makes it safe to send again to another endpoint.
    pub async fn revoke(&self, id: i64) -> Result<()> {
        let op = format!("revoke lease {id}");
        let body = json!({ "ID": id.to_string() });
        let call = self
            .call::<WriteResponse>(&op, "/v3/lease/revoke", &body, Retry::Idempotent)
            .await;
        match call {
            Ok(_) => Ok(()),
            Err(e) if e.is_lease_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What etcd knows of lease `id`: `None` if it is gone.
    pub async fn time_to_live(&self, id: i64) -> Result<Option<LeaseInfo>> {
        let op = format!("time to live of lease {id}");
        let body = json!({ "ID": id.to_string(), "keys": true });
        let (endpoint, resp): (_, TimeToLiveResponse) = self
            .call(&op, "/v3/lease/timetolive", &body, Retry::Idempotent)
            .await?;
        if resp.ttl < 0 {
            return Ok(None);
        }
        let keys = resp
            .keys
            .into_iter()
            .map(|key| {
                String::from_utf8(key).map_err(|e| Error::BadEntry {
                    endpoint: self.endpoint(endpoint).to_owned(),
                    op: op.clone(),
                    key: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    problem: "the key is not UTF-8".to_owned(),
                })
            })
            .collect::<Result<_>>()?;
        Ok(Some(LeaseInfo {
            id,
            ttl: resp.ttl,
            granted_ttl: resp.granted_ttl,
            keys,
        }))
    }
}
