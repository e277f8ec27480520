//! Apps applied to the cluster (`jarfleet apply` on any node): every app of the spec written to
//! `apps/<app>` and every app it no longer names deleted, in one transaction that holds only
//! if no app changed since they were read. Either all of it is applied or nothing is.

use std::collections::BTreeMap;

use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{decode, encode};
use jarfleet_core::reconcile::{self, AppState, Plan};
use jarfleet_etcd::{Client, Compare, CompareOp, Op, Txn};

use crate::mirror::ClusterApp;
use crate::{Error, Result};

/// Times the read-plan-write is tried when another apply changed the apps in between.
const ATTEMPTS: usize = 3;
/// How long an apply keeps trying while etcd cannot answer (an etcd leader election takes
/// 1-2 s, during which every member refuses or holds requests): a compare-and-swap read
/// again and planned again is safe to send again.
const RIDE_OUT: std::time::Duration = std::time::Duration::from_secs(6);

/// What an apply did (or would do, in a dry run).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub plan: Plan,
    pub applied: bool,
    /// The revision the apply was written at (or read at, when nothing was written).
    pub revision: i64,
}

/// Applies `desired` (the whole fleet of apps) to the cluster, riding out an etcd leader
/// election (up to [`RIDE_OUT`]); an etcd that stays out of reach is an error and nothing is
/// applied.
pub async fn apply(
    client: &Client,
    keys: &Keys,
    desired: &BTreeMap<String, ClusterApp>,
    dry_run: bool,
) -> Result<Applied> {
    let until = tokio::time::Instant::now() + RIDE_OUT;
    loop {
        match apply_once(client, keys, desired, dry_run).await {
            Err(Error::Etcd(e)) if e.is_retryable() && tokio::time::Instant::now() < until => {
                tracing::debug!("apply: etcd did not answer, trying again: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            other => return other,
        }
    }
}

async fn apply_once(
    client: &Client,
    keys: &Keys,
    desired: &BTreeMap<String, ClusterApp>,
    dry_run: bool,
) -> Result<Applied> {
    for _ in 0..ATTEMPTS {
        let (kvs, revision) = client.range_prefix(&keys.apps(), None).await?;
        let mut current: BTreeMap<String, (Option<ClusterApp>, i64)> = BTreeMap::new();
        for kv in &kvs {
            let Some(jarfleet_core::cluster::keys::Key::App(name)) = keys.parse(&kv.key) else {
                continue;
            };
            // A stored app that does not read is replaced (or deleted) like any other.
            let app = decode::<ClusterApp>(&kv.key, &kv.value).ok();
            current.insert(name, (app, kv.mod_revision));
        }
        let plan = plan_of(&current, desired);
        if dry_run || plan.is_empty() {
            return Ok(Applied {
                plan,
                applied: !dry_run,
                revision,
            });
        }
        let mut compares = Vec::new();
        let mut ops = Vec::new();
        for (name, (_, mod_revision)) in &current {
            compares.push(Compare::mod_revision(
                &keys.app(name),
                CompareOp::Equal,
                *mod_revision,
            ));
            if !desired.contains_key(name) {
                ops.push(Op::delete(&keys.app(name)));
            }
        }
        for (name, app) in desired {
            let same = current
                .get(name)
                .and_then(|(a, _)| a.as_ref())
                .is_some_and(|a| a.spec == app.spec && a.release == app.release);
            if !current.contains_key(name) {
                compares.push(Compare::create_revision(
                    &keys.app(name),
                    CompareOp::Equal,
                    0,
                ));
            }
            if !same {
                ops.push(Op::put(&keys.app(name), &encode(app)));
            }
        }
        let done = client.txn(Txn::new().when(compares).and_then(ops)).await?;
        if done.succeeded {
            return Ok(Applied {
                plan,
                applied: true,
                revision: done.revision,
            });
        }
    }
    Err(Error::Refused {
        message: format!(
            "the cluster's apps changed {ATTEMPTS} times while this apply was being written; nothing was applied"
        ),
        hint: Some("someone else is applying at the same time: apply again".into()),
    })
}

/// The plan from what is stored to what is wanted (a stored app that does not read counts
/// as absent).
fn plan_of(
    current: &BTreeMap<String, (Option<ClusterApp>, i64)>,
    desired: &BTreeMap<String, ClusterApp>,
) -> Plan {
    let have: BTreeMap<String, AppState> = current
        .iter()
        .filter_map(|(n, (a, _))| {
            let a = a.as_ref()?;
            Some((
                n.clone(),
                AppState {
                    spec: &a.spec,
                    release: &a.release,
                    jdk: "",
                },
            ))
        })
        .collect();
    let want: BTreeMap<String, AppState> = desired
        .iter()
        .map(|(n, a)| {
            (
                n.clone(),
                AppState {
                    spec: &a.spec,
                    release: &a.release,
                    jdk: "",
                },
            )
        })
        .collect();
    reconcile::plan(&have, &want)
}
