//! Keeping the node's [`Mirror`] of the cluster current: read the whole prefix at a revision,
//! watch from the next one, and read again when the watch ends (a member died, lost its
//! leader, history was compacted). Every [`RELIST_EVERY`] the prefix is read again anyway and
//! compared with the mirror, which catches a watch that went silent without ending (on a
//! member that froze, or was cut off from this node).
//!
//! The mirror is shared through a `watch` channel: `None` until the first read succeeds, so
//! nothing is decided on a cluster the node has not seen yet.

use std::sync::Arc;
use std::time::Duration;

use jarfleet_core::cluster::keys::Keys;
use jarfleet_etcd::Client;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep, timeout_at};

use crate::mirror::Mirror;

/// How often the prefix is read again and compared with the mirror.
pub const RELIST_EVERY: Duration = Duration::from_secs(10);
/// Waits between failed reads: doubling from the first to the last.
const RETRY: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(2));

/// What the sync task says besides the mirror itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncNote {
    /// The prefix could not be read (first failure of an outage).
    Unreachable(String),
    /// Read again after an outage.
    Reachable,
}

/// Runs until the receivers are gone.
pub async fn run(
    client: Client,
    keys: Keys,
    mirror: watch::Sender<Option<Arc<Mirror>>>,
    notes: mpsc::UnboundedSender<SyncNote>,
    reachable: watch::Sender<bool>,
) {
    let root = keys.root().to_string();
    let mut wait = RETRY.0;
    let mut out = false;
    loop {
        if mirror.is_closed() {
            return;
        }
        let (kvs, revision) = match client.range_prefix(&root, None).await {
            Ok(read) => read,
            Err(e) => {
                if !out {
                    out = true;
                    reachable.send_replace(false);
                    let _ = notes.send(SyncNote::Unreachable(e.to_string()));
                }
                sleep(wait).await;
                wait = (wait * 2).min(RETRY.1);
                continue;
            }
        };
        if out {
            out = false;
            let _ = notes.send(SyncNote::Reachable);
        }
        wait = RETRY.0;
        let mut current = Mirror::load(&keys, &kvs, revision);
        mirror.send_replace(Some(Arc::new(current.clone())));
        reachable.send_if_modified(|r| !std::mem::replace(r, true));
        let mut stream = match client.watch_prefix(&root, revision + 1).await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("cluster watch: {e}");
                continue;
            }
        };
        let mut relist_at = Instant::now() + RELIST_EVERY;
        loop {
            match timeout_at(relist_at, stream.next()).await {
                Ok(Ok(batch)) => {
                    for event in &batch.events {
                        current.apply(&keys, event);
                    }
                    current.revision = current.revision.max(batch.delivered_through());
                    if !batch.events.is_empty() {
                        mirror.send_replace(Some(Arc::new(current.clone())));
                    }
                }
                Ok(Err(e)) => {
                    tracing::debug!("cluster watch ended: {e}");
                    break;
                }
                Err(_) => {
                    // Time to compare with a fresh read.
                    match client.range_prefix(&root, None).await {
                        Ok((kvs, revision)) => {
                            let fresh = Mirror::load(&keys, &kvs, revision);
                            if !fresh.same_keys(&current) {
                                tracing::info!(
                                    "cluster watch fell behind (revision {} read as {}): reading again",
                                    current.revision,
                                    revision
                                );
                                break;
                            }
                        }
                        Err(e) => {
                            if !out {
                                out = true;
                                reachable.send_replace(false);
                                let _ = notes.send(SyncNote::Unreachable(e.to_string()));
                            }
                            break;
                        }
                    }
                    relist_at = Instant::now() + RELIST_EVERY;
                }
            }
        }
    }
}
