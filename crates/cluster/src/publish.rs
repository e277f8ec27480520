//! This node's instances as every balancer sees them: `status/<node>/<app>/<slot>` on the
//! node's lease, written when an instance's state changes and all again under a new lease.
//! A write that fails is tried again; the keys vanish by themselves with the lease.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{SetStatsRecord, StatusRecord, encode};
use jarfleet_etcd::Client;
use tokio::sync::watch;
use tokio::time::sleep;

use crate::session::SessionInfo;
use crate::{Config, LocalView};

/// After a failed write, the next attempt.
const RETRY: Duration = Duration::from_millis(300);

/// The status record of each local instance.
pub fn records(config: &Config, local: &LocalView) -> BTreeMap<(String, u32), StatusRecord> {
    local
        .iter()
        .map(|((app, slot), i)| {
            let ready = i.port.is_some();
            (
                (app.clone(), *slot),
                StatusRecord {
                    generation: i.generation,
                    state: i.state,
                    address: ready.then(|| config.spec.advertise.clone()),
                    port: i.port,
                    release: i.release.clone(),
                    pid: i.pid,
                    restarts: i.restarts,
                    rolled_back: i.rolled_back.clone(),
                },
            )
        })
        .collect()
}

/// This node's status keys in etcd that ride `lease` (keys of an older lease vanish with it).
async fn already_there(
    client: &Client,
    keys: &Keys,
    node: &str,
    lease: i64,
) -> jarfleet_etcd::Result<BTreeMap<(String, u32), StatusRecord>> {
    let (kvs, _) = client.range_prefix(&keys.node_statuses(node), None).await?;
    let mut out = BTreeMap::new();
    for kv in kvs {
        let Some(jarfleet_core::cluster::keys::Key::Status { app, slot, .. }) = keys.parse(&kv.key)
        else {
            continue;
        };
        // A value that does not read is rewritten or deleted like any other.
        let record = jarfleet_core::cluster::records::decode::<StatusRecord>(&kv.key, &kv.value)
            .unwrap_or(StatusRecord {
                generation: 0,
                state: jarfleet_core::cluster::records::InstanceState::Failed,
                address: None,
                port: None,
                release: String::new(),
                pid: None,
                restarts: 0,
                rolled_back: None,
            });
        if kv.lease == lease {
            out.insert((app, slot), record);
        }
    }
    Ok(out)
}

/// Runs until `local`'s sender is gone.
pub async fn run(
    client: Client,
    keys: Keys,
    config: Arc<Config>,
    mut local: watch::Receiver<LocalView>,
    mut session: watch::Receiver<Option<SessionInfo>>,
) {
    // What etcd holds, as far as this node knows, and under which lease.
    let mut written: BTreeMap<(String, u32), StatusRecord> = BTreeMap::new();
    let mut under: Option<i64> = None;
    loop {
        let want = records(&config, &local.borrow_and_update());
        let lease = session.borrow_and_update().as_ref().map(|s| s.lease);
        let mut failed = false;
        if let Some(lease) = lease
            && under != Some(lease)
        {
            match already_there(&client, &keys, &config.node, lease).await {
                Ok(there) => {
                    written = there;
                    under = Some(lease);
                }
                Err(e) => {
                    tracing::debug!("reading this node's status keys: {e}");
                    failed = true;
                }
            }
        }
        if let Some(lease) = lease.filter(|_| !failed) {
            for (key, record) in &want {
                if written.get(key) == Some(record) {
                    continue;
                }
                let k = keys.status(&config.node, &key.0, key.1);
                match client.put_with_lease(&k, &encode(record), lease).await {
                    Ok(_) => {
                        written.insert(key.clone(), record.clone());
                    }
                    Err(e) => {
                        tracing::debug!("publishing {k}: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            let gone: Vec<(String, u32)> = written
                .keys()
                .filter(|k| !want.contains_key(*k))
                .cloned()
                .collect();
            for key in gone {
                if failed {
                    break;
                }
                let k = keys.status(&config.node, &key.0, key.1);
                match client.delete(&k).await {
                    Ok(_) => {
                        written.remove(&key);
                    }
                    Err(e) => {
                        tracing::debug!("unpublishing {k}: {e}");
                        failed = true;
                    }
                }
            }
        }
        tokio::select! {
            changed = local.changed() => if changed.is_err() { return },
            changed = session.changed() => if changed.is_err() { return },
            _ = sleep(RETRY), if failed => {}
        }
    }
}

/// This node's figures of each app's new set during a canary or blue-green rollout, by app:
/// what the daemon hands the agent to publish.
pub type SetStatsView = BTreeMap<String, SetStatsRecord>;

/// Figures change with every request: they are written at most this often.
const STATS_EVERY: Duration = Duration::from_millis(500);

/// Publishes `stats/<node>/<app>` on the node's lease as `stats` changes (at most every
/// [`STATS_EVERY`]); a key whose app has no figures any more is deleted. Runs until `stats`'s
/// sender is gone.
pub async fn run_stats(
    client: Client,
    keys: Keys,
    config: Arc<Config>,
    mut stats: watch::Receiver<SetStatsView>,
    mut session: watch::Receiver<Option<SessionInfo>>,
) {
    let mut written: SetStatsView = BTreeMap::new();
    let mut under: Option<i64> = None;
    loop {
        let want = stats.borrow_and_update().clone();
        let lease = session.borrow_and_update().as_ref().map(|s| s.lease);
        if under != lease {
            // Keys of another lease are gone with it (or go with it): all is written again.
            written.clear();
            under = lease;
        }
        let mut failed = false;
        if let Some(lease) = lease {
            for (app, record) in &want {
                if written.get(app) == Some(record) {
                    continue;
                }
                let k = keys.node_stats(&config.node, app);
                match client.put_with_lease(&k, &encode(record), lease).await {
                    Ok(_) => {
                        written.insert(app.clone(), record.clone());
                    }
                    Err(e) => {
                        tracing::debug!("publishing {k}: {e}");
                        failed = true;
                        break;
                    }
                }
            }
            let gone: Vec<String> = written
                .keys()
                .filter(|a| !want.contains_key(*a))
                .cloned()
                .collect();
            for app in gone {
                if failed {
                    break;
                }
                let k = keys.node_stats(&config.node, &app);
                match client.delete(&k).await {
                    Ok(_) => {
                        written.remove(&app);
                    }
                    Err(e) => {
                        tracing::debug!("unpublishing {k}: {e}");
                        failed = true;
                    }
                }
            }
        }
        sleep(if failed { RETRY } else { STATS_EVERY }).await;
        if failed {
            continue;
        }
        tokio::select! {
            changed = stats.changed() => if changed.is_err() { return },
            changed = session.changed() => if changed.is_err() { return },
        }
    }
}
