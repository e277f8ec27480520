//! Apps applied to the cluster (`jarfleet apply` on any node): every app of the spec written to
//! `apps/<app>` and every app it no longer names deleted, in one transaction that holds only
//! if no app changed since they were read. Either all of it is applied or nothing is.

use std::collections::BTreeMap;

use jarfleet_core::cluster::keys::Keys;
use jarfleet_core::cluster::records::{
    RolloutRecord, RolloutState, RolloutStrategy, decode, encode,
};
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
        // Read at the same revision: an app and its rollout are seen together.
        let (kvs, _) = client
            .range_prefix(&keys.rollouts(), Some(revision))
            .await?;
        let mut rollouts: BTreeMap<String, (Option<RolloutRecord>, i64)> = BTreeMap::new();
        for kv in &kvs {
            let Some(jarfleet_core::cluster::keys::Key::Rollout(name)) = keys.parse(&kv.key) else {
                continue;
            };
            let r = decode::<RolloutRecord>(&kv.key, &kv.value).ok();
            rollouts.insert(name, (r, kv.mod_revision));
        }
        let mut changes = BTreeMap::new();
        for (name, app) in desired {
            let had = current.get(name).and_then(|(a, _)| a.as_ref());
            let rollout = rollouts.get(name).and_then(|(r, _)| r.as_ref());
            let change = release_change(had, rollout, app, crate::now_ms())
                .map_err(|message| Error::Refused {
                    message: format!("app {name}: {message}; nothing was applied"),
                    hint: Some(
                        "wait until the rollout is done (`jarfleet status` on any node shows it), or apply the release it started from to go back"
                            .into(),
                    ),
                })?;
            changes.insert(name.clone(), change);
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
        for (name, (_, mod_revision)) in &rollouts {
            compares.push(Compare::mod_revision(
                &keys.rollout(name),
                CompareOp::Equal,
                *mod_revision,
            ));
            if !desired.contains_key(name) {
                ops.push(Op::delete(&keys.rollout(name)));
            }
        }
        for (name, change) in &changes {
            let same = current
                .get(name)
                .and_then(|(a, _)| a.as_ref())
                .is_some_and(|a| a.spec == change.app.spec && a.release == change.app.release);
            if !current.contains_key(name) {
                compares.push(Compare::create_revision(
                    &keys.app(name),
                    CompareOp::Equal,
                    0,
                ));
            }
            if !rollouts.contains_key(name) {
                compares.push(Compare::create_revision(
                    &keys.rollout(name),
                    CompareOp::Equal,
                    0,
                ));
            }
            if !same {
                ops.push(Op::put(&keys.app(name), &encode(&change.app)));
            }
            match &change.rollout {
                RolloutWrite::Keep => {}
                RolloutWrite::Put(r) => ops.push(Op::put(&keys.rollout(name), &encode(&**r))),
                RolloutWrite::Delete => {
                    if rollouts.contains_key(name) {
                        ops.push(Op::delete(&keys.rollout(name)));
                    }
                }
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

/// What an apply writes for one app.
#[derive(Debug, Clone, PartialEq)]
struct Change {
    /// The app, with the release it runs before this one.
    app: ClusterApp,
    rollout: RolloutWrite,
}

#[derive(Debug, Clone, PartialEq)]
enum RolloutWrite {
    Keep,
    Put(Box<RolloutRecord>),
    Delete,
}

/// How an apply changes one app's release: a new release goes out node by node (a rollout
/// that clears no node yet, written with it), from the release the cluster runs now. A
/// rollout under way is not superseded: only the release it started from may be applied
/// then, which ends it (every node goes back to that release).
fn release_change(
    had: Option<&ClusterApp>,
    rollout: Option<&RolloutRecord>,
    desired: &ClusterApp,
    now: u64,
) -> std::result::Result<Change, String> {
    let mut app = desired.clone();
    let Some(had) = had else {
        // A new app (or one whose stored record did not read): it starts on its release.
        app.previous = None;
        return Ok(Change {
            app,
            rollout: RolloutWrite::Delete,
        });
    };
    // The rollout of the stored release, if one was written for it.
    let of_had = rollout.filter(|r| r.release == had.release && had.previous.is_some());
    if had.release == desired.release {
        app.previous = had.previous.clone();
        if of_had.is_some_and(|r| r.state == RolloutState::RolledBack) {
            return Err(format!(
                "release {} was rolled back across the cluster ({}); applying it again changes nothing",
                desired.release,
                of_had
                    .and_then(|r| r.why.as_deref())
                    .unwrap_or("a node's deployment of it failed")
            ));
        }
        return Ok(Change {
            app,
            rollout: RolloutWrite::Keep,
        });
    }
    // What the cluster runs now.
    let running = match of_had {
        Some(r) if r.state == RolloutState::Rolling => {
            if desired.release != r.from {
                return Err(format!(
                    "release {} is still going out across the cluster ({} node(s) cleared so far)",
                    r.release,
                    r.cleared.len()
                ));
            }
            // Back to where the rollout started: every node runs that release again.
            let mut ended = r.clone();
            ended.state = RolloutState::RolledBack;
            ended.why = Some(format!("release {} was applied again", r.from));
            ended.ended_ms = Some(now);
            app.previous = Some(Box::new(had.as_previous()));
            return Ok(Change {
                app,
                rollout: RolloutWrite::Put(Box::new(ended)),
            });
        }
        Some(r) if r.state == RolloutState::RolledBack => {
            had.before().unwrap_or_else(|| had.clone())
        }
        _ => had.clone(),
    };
    if running.release == desired.release {
        // The release every node already runs (its rollout's successor was rolled back).
        app.previous = None;
        return Ok(Change {
            app,
            rollout: RolloutWrite::Delete,
        });
    }
    app.previous = Some(Box::new(running.as_previous()));
    Ok(Change {
        app,
        rollout: RolloutWrite::Put(Box::new(RolloutRecord::new(
            &desired.release,
            &running.release,
            rollout_strategy(desired.spec.deploy.strategy),
            now,
        ))),
    })
}

/// How a release of an app with this `[deploy] strategy` goes out across the cluster.
fn rollout_strategy(s: jarfleet_core::spec::Strategy) -> RolloutStrategy {
    match s {
        jarfleet_core::spec::Strategy::Rolling => RolloutStrategy::Rolling,
        jarfleet_core::spec::Strategy::Canary => RolloutStrategy::Canary,
        jarfleet_core::spec::Strategy::BlueGreen => RolloutStrategy::BlueGreen,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn app(release: &str) -> ClusterApp {
        let text =
            "[apps.web]\nartifact = \"/srv/web.jar\"\nports = \"9000-9099\"\ninstances = 2\n";
        let spec =
            jarfleet_core::spec::load(text, std::path::Path::new("/srv/apps.toml"), &|_| None)
                .expect("the spec loads")
                .apps["web"]
                .clone();
        ClusterApp {
            spec,
            release: release.into(),
            applied_by: "a".into(),
            applied_ms: 1,
            artifact: None,
            previous: None,
        }
    }

    fn with_previous(release: &str, before: &str) -> ClusterApp {
        let mut a = app(release);
        a.previous = Some(Box::new(app(before).as_previous()));
        a
    }

    fn put(c: &Change) -> &RolloutRecord {
        match &c.rollout {
            RolloutWrite::Put(r) => r,
            other => panic!("no rollout written: {other:?}"),
        }
    }

    #[test]
    fn a_new_release_goes_out_from_what_runs_with_no_node_cleared() {
        let first = release_change(None, None, &app("r1"), 5).expect("a new app");
        assert_eq!(first.app.previous, None);
        assert_eq!(first.rollout, RolloutWrite::Delete);

        let c = release_change(Some(&app("r1")), None, &app("r2"), 5).expect("r2");
        assert_eq!(
            c.app.previous.as_ref().map(|p| p.release.as_str()),
            Some("r1")
        );
        let r = put(&c);
        assert_eq!((r.release.as_str(), r.from.as_str()), ("r2", "r1"));
        assert_eq!(r.state, RolloutState::Rolling);
        assert!(r.cleared.is_empty());
        assert_eq!(r.started_ms, 5);
    }

    #[test]
    fn the_same_release_keeps_its_rollout_and_the_release_before_it() {
        let had = with_previous("r2", "r1");
        let c = release_change(Some(&had), None, &app("r2"), 5).expect("same");
        assert_eq!(c.app.previous, had.previous);
        assert_eq!(c.rollout, RolloutWrite::Keep);
    }

    #[test]
    fn a_rollout_under_way_is_not_superseded_but_may_be_taken_back() {
        let had = with_previous("r2", "r1");
        let rolling =
            put(&release_change(Some(&app("r1")), None, &app("r2"), 1).expect("r2")).clone();
        let err = release_change(Some(&had), Some(&rolling), &app("r3"), 5)
            .expect_err("r3 during r2's rollout");
        assert!(err.contains("release r2 is still going out"), "{err}");

        let back = release_change(Some(&had), Some(&rolling), &app("r1"), 5).expect("r1 again");
        let r = put(&back);
        assert_eq!(r.state, RolloutState::RolledBack);
        assert_eq!(
            r.release, "r2",
            "the rollout of r2 ends, so no node is held back"
        );
        assert_eq!(back.app.release, "r1");
    }

    #[test]
    fn after_a_rollback_the_next_release_goes_out_from_the_release_that_runs() {
        let had = with_previous("r2", "r1");
        let mut rolled_back =
            put(&release_change(Some(&app("r1")), None, &app("r2"), 1).expect("r2")).clone();
        rolled_back.state = RolloutState::RolledBack;
        let c = release_change(Some(&had), Some(&rolled_back), &app("r3"), 5).expect("r3");
        let r = put(&c);
        assert_eq!(r.from, "r1", "r2 never ran everywhere");
        assert_eq!(
            c.app.previous.as_ref().map(|p| p.release.as_str()),
            Some("r1")
        );

        let again = release_change(Some(&had), Some(&rolled_back), &app("r2"), 5)
            .expect_err("the release that was rolled back");
        assert!(again.contains("was rolled back"), "{again}");

        let back = release_change(Some(&had), Some(&rolled_back), &app("r1"), 5).expect("r1");
        assert_eq!(back.rollout, RolloutWrite::Delete);
        assert_eq!(back.app.previous, None);
    }

    #[test]
    fn after_a_finished_rollout_the_next_goes_out_from_it() {
        let had = with_previous("r2", "r1");
        let mut done =
            put(&release_change(Some(&app("r1")), None, &app("r2"), 1).expect("r2")).clone();
        done.state = RolloutState::Done;
        let c = release_change(Some(&had), Some(&done), &app("r3"), 5).expect("r3");
        assert_eq!(put(&c).from, "r2");
        let p = c.app.previous.as_ref().expect("previous");
        assert_eq!(p.release, "r2");
    }
}
