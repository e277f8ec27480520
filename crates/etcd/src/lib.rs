//! jarfleet's etcd v3 client: the config center's prefix reads and watches, and what cluster
//! mode builds on (key metadata, leases, transactions, event watches).
//!
//! It speaks etcd's HTTP/JSON gateway (`/v3/kv/*`, `/v3/lease/*`, `/v3/watch`), served by every
//! etcd ≥ 3.4 on its client URL, so no protobuf code generation is needed. Plain `http://`
//! only.
//!
//! - [`Client`]: one-shot calls with failover across endpoints, each attempt bounded by the
//!   client's timeout ([`Client::with_timeout`] for another). Every request carries the
//!   gateway header `Grpc-Metadata-Hasleader: true`, so a member that lost its leader refuses
//!   at once ("etcdserver: no leader") instead of hanging or serving stale data; that refusal
//!   moves the request to the next endpoint, writes included (it was certainly not applied).
//!   - Config center: [`Client::get_prefix`] (a [`Snapshot`]), [`Client::put`],
//!     [`Client::delete`].
//!   - Key metadata: [`Client::range_prefix`] (optionally at a past revision) and
//!     [`Client::get`] give [`KeyValue`]s with `create_revision`, `mod_revision`, `version`
//!     and `lease`, plus the read's revision.
//!   - Leases: [`Client::grant`] a [`Lease`], [`Client::keep_alive_once`] (`None`: etcd says
//!     it is gone), [`Client::revoke`], [`Client::time_to_live`] ([`LeaseInfo`]),
//!     [`Client::put_with_lease`].
//!   - Transactions: [`Client::txn`] runs a [`Txn`] of [`Compare`]s on a key's
//!     create/mod revision, version or value ([`CompareOp`]) and [`Op`]s (put with optional
//!     lease, delete a key or prefix, get a key), giving a [`TxnResult`] of [`OpResponse`]s.
//!     Fenced writes are made of these; [`Compare::absent`] is `create_revision == 0`.
//!   - Event watches: [`Client::watch_prefix`] opens a [`WatchStream`] from a revision, giving
//!     [`WatchBatch`]es of [`Event`]s (or progress notifications) until it ends with
//!     [`Error::Compacted`] (re-list, then re-watch) or [`Error::WatchEnded`] (re-watch).
//! - [`Watcher`]: a task that holds a prefix's config, reports [`WatchEvent::Changed`] with the
//!   whole new [`Snapshot`], and survives outages ([`WatchEvent::Unreachable`] once,
//!   [`WatchEvent::Reconnected`], resume without losing a change, re-read after compaction).
//! - [`LeaseKeeper`]: a task renewing a lease every interval across endpoints, reporting
//!   [`KeeperEvent::Renewed`], [`KeeperEvent::Unreachable`] (once per outage, with the instant
//!   the lease must be assumed expired) and [`KeeperEvent::Lost`] (etcd says it is gone, or
//!   no renewal succeeded within the TTL). It never grants a new lease by itself.
//!
//! Keys and values are UTF-8 strings; anything else read is an error naming the key. The wire
//! quirks (checked against etcd 3.4) are listed in `wire.rs`.

mod client;
mod error;
mod keeper;
mod kv;
mod lease;
mod stream;
mod txn;
mod watcher;
mod wire;

pub use client::{Client, Snapshot};
pub use error::{Attempt, Error, Result};
pub use keeper::{KeeperConfig, KeeperEvent, LeaseKeeper, LeaseLoss};
pub use kv::{Event, EventKind, KeyValue};
pub use lease::{Lease, LeaseInfo};
pub use stream::{WatchBatch, WatchStream};
pub use txn::{Compare, CompareOp, CompareTarget, Op, OpResponse, Txn, TxnResult};
pub use watcher::{WatchConfig, WatchEvent, Watcher};
