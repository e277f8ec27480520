//! An in-memory etcd, as much of it as the cluster protocol uses: one global revision; keys
//! with their create and mod revisions, version and lease; leases that expire on the fake
//! clock and take their keys with them (all in one revision, as etcd does); transactions whose
//! compares are on create and mod revisions (0: the key is absent); and a log of every change
//! in revision order, which the nodes' watches follow.
//!
//! It is the model's ground truth: the invariants are judged against it, never against a
//! node's mirror.

use std::collections::BTreeMap;

use jarfleet_core::cluster::records::{
    AdminRecord, AllocRecord, LeaderRecord, NodeRecord, StatusRecord,
};
use jarfleet_core::cluster::schedule::Demand;

pub type Revision = i64;
pub type LeaseId = i64;
/// Milliseconds on the fake clock.
pub type Ms = u64;

/// A stored value. The simulation keeps the records typed (the real cluster stores them as
/// JSON through `records::encode`; decoding is `mirror.rs`'s business there and is covered by
/// its own tests), and an app as the [`Demand`] the scheduler reads from it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    App(Demand),
    Node(NodeRecord),
    Known(NodeRecord),
    Admin(AdminRecord),
    Leader(LeaderRecord),
    Alloc(AllocRecord),
    Status(StatusRecord),
}

/// A key as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub key: String,
    pub value: Value,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: i64,
    /// 0: no lease.
    pub lease: LeaseId,
}

/// One change, as a watch reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Put(Kv),
    Delete { key: String, revision: Revision },
}

impl Change {
    pub fn revision(&self) -> Revision {
        match self {
            Change::Put(kv) => kv.mod_revision,
            Change::Delete { revision, .. } => *revision,
        }
    }
}

/// A transaction's condition on one key.
#[derive(Debug, Clone)]
pub enum Compare {
    CreateRevision(String, Revision),
    ModRevision(String, Revision),
}

/// A transaction's operation.
#[derive(Debug, Clone)]
pub enum Op {
    /// `lease` 0: none.
    Put {
        key: String,
        value: Value,
        lease: LeaseId,
    },
    Delete(String),
}

/// Why etcd refused a request outright.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// A put named a lease that does not exist (expired or revoked).
    LeaseNotFound(LeaseId),
}

struct Lease {
    ttl: Ms,
    expires_at: Ms,
}

/// The store.
#[derive(Default)]
pub struct Etcd {
    revision: Revision,
    kvs: BTreeMap<String, Kv>,
    leases: BTreeMap<LeaseId, Lease>,
    next_lease: LeaseId,
    log: Vec<Change>,
}

impl Etcd {
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// Every change so far, in revision order.
    pub fn log(&self) -> &[Change] {
        &self.log
    }

    pub fn get(&self, key: &str) -> Option<&Kv> {
        self.kvs.get(key)
    }

    /// Every key under `prefix`.
    pub fn range<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Kv> + 'a {
        self.kvs
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv)
    }

    pub fn lease_alive(&self, id: LeaseId) -> bool {
        self.leases.contains_key(&id)
    }

    pub fn grant(&mut self, ttl: Ms, now: Ms) -> LeaseId {
        self.next_lease += 1;
        let id = 0x1000 + self.next_lease;
        self.leases.insert(
            id,
            Lease {
                ttl,
                expires_at: now + ttl,
            },
        );
        id
    }

    /// A keep-alive: the lease's TTL again from now, or `None` when it is gone.
    pub fn keep_alive(&mut self, id: LeaseId, now: Ms) -> Option<Ms> {
        let lease = self.leases.get_mut(&id)?;
        lease.expires_at = now + lease.ttl;
        Some(lease.ttl)
    }

    pub fn revoke(&mut self, id: LeaseId) {
        if self.leases.remove(&id).is_some() {
            self.drop_keys_of(&[id]);
        }
    }

    /// Expires every lease whose time is up at `now`; returns them.
    pub fn expire(&mut self, now: Ms) -> Vec<LeaseId> {
        let gone: Vec<LeaseId> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expires_at <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.leases.remove(id);
        }
        if !gone.is_empty() {
            self.drop_keys_of(&gone);
        }
        gone
    }

    /// Deletes the keys of `leases` in one revision (a lease's expiry is one change).
    fn drop_keys_of(&mut self, leases: &[LeaseId]) {
        let keys: Vec<String> = self
            .kvs
            .values()
            .filter(|kv| kv.lease != 0 && leases.contains(&kv.lease))
            .map(|kv| kv.key.clone())
            .collect();
        if keys.is_empty() {
            return;
        }
        self.revision += 1;
        for key in keys {
            self.kvs.remove(&key);
            self.log.push(Change::Delete {
                key,
                revision: self.revision,
            });
        }
    }

    /// A transaction: `Ok(true)` when every compare held and the operations were applied (in
    /// one revision, if they changed anything), `Ok(false)` when a compare failed.
    pub fn txn(&mut self, compares: &[Compare], ops: Vec<Op>) -> Result<bool, Refused> {
        let held = compares.iter().all(|c| match c {
            Compare::CreateRevision(key, want) => {
                self.kvs.get(key).map_or(0, |kv| kv.create_revision) == *want
            }
            Compare::ModRevision(key, want) => {
                self.kvs.get(key).map_or(0, |kv| kv.mod_revision) == *want
            }
        });
        if !held {
            return Ok(false);
        }
        for op in &ops {
            if let Op::Put { lease, .. } = op
                && *lease != 0
                && !self.leases.contains_key(lease)
            {
                return Err(Refused::LeaseNotFound(*lease));
            }
        }
        let changes = ops.iter().any(|op| {
            matches!(op, Op::Put { .. }) || matches!(op, Op::Delete(k) if self.kvs.contains_key(k))
        });
        if !changes {
            return Ok(true);
        }
        self.revision += 1;
        let revision = self.revision;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let (create_revision, version) = self
                        .kvs
                        .get(&key)
                        .map_or((revision, 1), |kv| (kv.create_revision, kv.version + 1));
                    let kv = Kv {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                        version,
                        lease,
                    };
                    self.kvs.insert(key, kv.clone());
                    self.log.push(Change::Put(kv));
                }
                Op::Delete(key) => {
                    if self.kvs.remove(&key).is_some() {
                        self.log.push(Change::Delete { key, revision });
                    }
                }
            }
        }
        Ok(true)
    }

    /// A plain put.
    pub fn put(&mut self, key: &str, value: Value, lease: LeaseId) -> Result<(), Refused> {
        self.txn(
            &[],
            vec![Op::Put {
                key: key.to_string(),
                value,
                lease,
            }],
        )
        .map(|_| ())
    }

    /// A plain delete.
    pub fn delete(&mut self, key: &str) {
        let _ = self.txn(&[], vec![Op::Delete(key.to_string())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admin() -> Value {
        Value::Admin(AdminRecord::default())
    }

    #[test]
    fn compares_see_absent_keys_as_revision_zero_and_a_failed_compare_changes_nothing() {
        let mut e = Etcd::default();
        let absent = [Compare::CreateRevision("k".into(), 0)];
        let put = || {
            vec![Op::Put {
                key: "k".into(),
                value: admin(),
                lease: 0,
            }]
        };
        assert_eq!(e.txn(&absent, put()), Ok(true));
        assert_eq!(e.revision(), 1);
        assert_eq!(e.txn(&absent, put()), Ok(false));
        assert_eq!(e.revision(), 1);
        assert_eq!(
            e.txn(&[Compare::ModRevision("k".into(), 1)], put()),
            Ok(true)
        );
        let kv = e.get("k").expect("stored");
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
        // A delete of an absent key is no change at all.
        e.delete("nothing");
        assert_eq!(e.revision(), 2);
    }

    #[test]
    fn an_expired_lease_takes_its_keys_in_one_revision_and_refuses_new_puts() {
        let mut e = Etcd::default();
        let lease = e.grant(6_000, 0);
        e.put("a", admin(), lease).expect("put");
        e.put("b", admin(), lease).expect("put");
        e.put("c", admin(), 0).expect("put");
        assert_eq!(e.keep_alive(lease, 5_000), Some(6_000));
        assert!(e.expire(10_999).is_empty());
        assert_eq!(e.expire(11_000), vec![lease]);
        assert_eq!(e.revision(), 4);
        assert!(e.get("a").is_none() && e.get("b").is_none() && e.get("c").is_some());
        assert_eq!(e.log().iter().filter(|c| c.revision() == 4).count(), 2);
        assert_eq!(
            e.put("d", admin(), lease),
            Err(Refused::LeaseNotFound(lease))
        );
        assert_eq!(e.keep_alive(lease, 11_000), None);
    }
}
