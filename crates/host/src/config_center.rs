//! The etcd config center (`[apps.NAME.config] etcd = { endpoints, prefix }`): the keys under the
//! prefix are the app's `etcd_env` (they win over `env`). They are read here when a release is
//! prepared; the daemon watches them for changes (its `etcd_watch`).

use std::collections::BTreeMap;
use std::time::Duration;

use jarfleet_core::spec::EtcdSource;

/// How long one read may take.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// The values under `source.prefix` now (blocking: for preparation, off the control loop).
pub fn read(source: &EtcdSource) -> Result<BTreeMap<String, String>, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the etcd client: {e}"))?;
    rt.block_on(async {
        let client = jarfleet_etcd::Client::new(source.endpoints.clone(), TIMEOUT)
            .map_err(|e| e.to_string())?;
        client
            .get_prefix(&source.prefix)
            .await
            .map(|s| s.values)
            .map_err(|e| e.to_string())
    })
}
