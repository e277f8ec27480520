//! jarfleet's etcd v3 client for the config center: read a key prefix, and keep it current.
//!
//! It speaks etcd's HTTP/JSON gateway (`/v3/kv/range`, `/v3/kv/put`, `/v3/kv/deleterange`,
//! `/v3/watch`), served by every etcd ≥ 3.4 on its client URL, so no protobuf code generation
//! is needed. Plain `http://` only.
//!
//! - [`Client`]: one-shot reads and writes with failover across endpoints.
//! - [`Watcher`]: a task that holds a prefix's config, reports [`WatchEvent::Changed`] with the
//!   whole new [`Snapshot`], and survives outages ([`WatchEvent::Unreachable`] once,
//!   [`WatchEvent::Reconnected`], resume without losing a change, re-read after compaction).
//!
//! Keys and values are UTF-8 strings; anything else under a watched prefix is an error naming
//! the key. The wire quirks are listed in `wire.rs`.

mod client;
mod error;
mod watcher;
mod wire;

pub use client::{Client, Snapshot};
pub use error::{Attempt, Error, Result};
pub use watcher::{WatchConfig, WatchEvent, Watcher};
