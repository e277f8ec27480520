//! What cluster mode builds on, against a real etcd: key metadata, transactions (fenced
//! writes), leases and the lease keeper, event watches; and a 3-member cluster losing its
//! leader, then its quorum.

mod helper;

use std::time::Duration;

use helper::{Etcd, compact, next_keeper_event, wait_until};
use jarfleet_etcd::{
    Client, Compare, CompareOp, Error, Event, EventKind, KeeperConfig, KeeperEvent, KeyValue,
    LeaseKeeper, LeaseLoss, Op, OpResponse, Txn, WatchBatch, WatchStream,
};
use jarfleet_testkit::etcd_cluster::{ELECTION_MS, EtcdCluster};
use tokio::time::Instant;

fn client(endpoints: &[String]) -> Client {
    Client::new(endpoints.to_vec(), Duration::from_secs(1)).expect("valid endpoints")
}

async fn put(client: &Client, key: &str, value: &str) -> i64 {
    client
        .put(key, value)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

async fn get(client: &Client, key: &str) -> Option<KeyValue> {
    client
        .get(key)
        .await
        .unwrap_or_else(|e| panic!("get {key}: {e}"))
        .0
}

fn kv(key: &str, value: &str, create: i64, modified: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: value.to_owned(),
        create_revision: create,
        mod_revision: modified,
        version,
        lease,
    }
}

#[tokio::test]
async fn range_and_get_give_metadata_and_a_pinned_range_sees_old_values() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let r1 = put(&c, "a/1", "x").await;
    let r2 = put(&c, "a/1", "y").await;
    let r3 = put(&c, "a/2", "").await;
    put(&c, "a0", "sibling, outside the prefix").await;
    let lease = c.grant(60).await.expect("grant");
    let r5 = c
        .put_with_lease("a/3", "leased", lease.id)
        .await
        .expect("put with lease");

    let (found, revision) = c.get("a/1").await.expect("get");
    assert_eq!(found, Some(kv("a/1", "y", r1, r2, 2, 0)));
    assert_eq!(revision, r5);
    let (missing, revision) = c.get("a/none").await.expect("get a missing key");
    assert_eq!((missing, revision), (None, r5));

    let (kvs, revision) = c.range_prefix("a/", None).await.expect("range");
    assert_eq!(
        kvs,
        [
            kv("a/1", "y", r1, r2, 2, 0),
            kv("a/2", "", r3, r3, 1, 0),
            kv("a/3", "leased", r5, r5, 1, lease.id),
        ]
    );
    assert_eq!(revision, r5);

    // Pinned: the store as it was; the header revision stays the current one.
    let (kvs, revision) = c.range_prefix("a/", Some(r1)).await.expect("range at r1");
    assert_eq!(kvs, [kv("a/1", "x", r1, r1, 1, 0)]);
    assert_eq!(revision, r5);
    let deleted = c.delete("a/1").await.expect("delete");
    let (kvs, _) = c.range_prefix("a/", Some(r2)).await.expect("range at r2");
    assert_eq!(kvs, [kv("a/1", "y", r1, r2, 2, 0)]);
    let (kvs, revision) = c.range_prefix("a/", None).await.expect("range now");
    assert_eq!(kvs.len(), 2);
    assert_eq!(revision, deleted);

    // History that is gone is refused, not answered with the present.
    compact(&etcd.url(), deleted).await;
    let err = c
        .range_prefix("a/", Some(r1))
        .await
        .expect_err("compacted revision");
    assert!(
        matches!(&err, Error::Rejected { code: 11, message, .. } if message.contains("compacted")),
        "{err:?}"
    );
}

#[tokio::test]
async fn txn_compare_and_swap_on_mod_revision() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let m = put(&c, "cas/k", "v1").await;
    let cas = |m: i64, value: &str| {
        Txn::new()
            .when([Compare::mod_revision("cas/k", CompareOp::Equal, m)])
            .and_then([Op::put("cas/k", value)])
            .or_else([Op::get("cas/k")])
    };

    let done = c.txn(cas(m, "v2")).await.expect("txn");
    assert!(done.succeeded);
    assert_eq!(done.revision, m + 1);
    assert_eq!(done.responses, [OpResponse::Put]);

    // The same swap with the now stale revision fails, and the else branch reads the winner.
    let stale = c.txn(cas(m, "v3")).await.expect("txn");
    assert!(!stale.succeeded);
    assert_eq!(stale.revision, m + 1, "a failed txn writes nothing");
    assert_eq!(
        stale.responses,
        [OpResponse::Get(Some(kv("cas/k", "v2", m, m + 1, 2, 0)))]
    );
    assert_eq!(get(&c, "cas/k").await.map(|kv| kv.value), Some("v2".into()));

    // Greater / Less / NotEqual, and version and value compares.
    let ops = |compare| Txn::new().when([compare]);
    for (compare, holds) in [
        (Compare::mod_revision("cas/k", CompareOp::Greater, m), true),
        (
            Compare::mod_revision("cas/k", CompareOp::Less, m + 1),
            false,
        ),
        (Compare::mod_revision("cas/k", CompareOp::NotEqual, m), true),
        (Compare::version("cas/k", CompareOp::Equal, 2), true),
        (Compare::value("cas/k", CompareOp::Equal, "v2"), true),
        (Compare::value("cas/k", CompareOp::NotEqual, "v2"), false),
        (Compare::value("cas/k", CompareOp::Equal, ""), false),
    ] {
        let what = format!("{compare:?}");
        let done = c.txn(ops(compare)).await.expect("txn");
        assert_eq!(done.succeeded, holds, "{what}");
    }
}

#[tokio::test]
async fn txn_compare_create_revision_zero_means_absent() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let create = || {
        Txn::new()
            .when([Compare::absent("lock")])
            .and_then([Op::put("lock", "mine")])
            .or_else([Op::get("lock")])
    };
    let first = c.txn(create()).await.expect("txn");
    assert!(first.succeeded);
    let second = c.txn(create()).await.expect("txn");
    assert!(!second.succeeded);
    assert!(
        matches!(&second.responses[..], [OpResponse::Get(Some(kv))] if kv.create_revision == first.revision),
        "{second:?}"
    );
    // Zero compared explicitly in the other operators too.
    for (compare, holds) in [
        (
            Compare::create_revision("lock", CompareOp::Greater, 0),
            true,
        ),
        (Compare::version("lock", CompareOp::Equal, 0), false),
        (Compare::version("nothing", CompareOp::Equal, 0), true),
        (Compare::mod_revision("nothing", CompareOp::Equal, 0), true),
        (Compare::absent("nothing"), true),
        // etcd: a value compare on an absent key is false, NotEqual included.
        (Compare::value("nothing", CompareOp::NotEqual, "x"), false),
        (Compare::value("nothing", CompareOp::Equal, ""), false),
    ] {
        let what = format!("{compare:?}");
        let done = c.txn(Txn::new().when([compare])).await.expect("txn");
        assert_eq!(done.succeeded, holds, "{what}");
    }
    // Deleted, the key is absent again.
    c.delete("lock").await.expect("delete");
    assert!(c.txn(create()).await.expect("txn").succeeded);
}

#[tokio::test]
async fn a_fenced_write_fails_once_the_leader_key_is_recreated() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let fenced = |token: i64, m: i64, value: &str| {
        Txn::new()
            .when([
                Compare::create_revision("leader", CompareOp::Equal, token),
                Compare::mod_revision("alloc/x", CompareOp::Equal, m),
            ])
            .and_then([Op::put("alloc/x", value), Op::delete_prefix("alloc/tmp/")])
    };
    let token = put(&c, "leader", "node-1").await;
    let m = put(&c, "alloc/x", "unassigned").await;
    put(&c, "alloc/tmp/a", "1").await;
    put(&c, "alloc/tmp/b", "2").await;
    put(&c, "alloc/tmpz", "outside the prefix").await;

    let done = c.txn(fenced(token, m, "node-1")).await.expect("txn");
    assert!(done.succeeded);
    assert_eq!(
        done.responses,
        [OpResponse::Put, OpResponse::Delete { deleted: 2 }]
    );
    let m = done.revision;
    assert!(get(&c, "alloc/tmpz").await.is_some());

    // Leadership lost and won again by the same node: same key, same value, new life.
    c.delete("leader").await.expect("delete");
    let new_token = put(&c, "leader", "node-1").await;
    assert_ne!(new_token, token);
    let stale = c
        .txn(fenced(token, m, "written with the old token"))
        .await
        .expect("txn");
    assert!(!stale.succeeded);
    assert!(stale.responses.is_empty(), "no else branch: {stale:?}");
    assert_eq!(
        get(&c, "alloc/x").await.map(|kv| kv.value),
        Some("node-1".into())
    );

    let fresh = c
        .txn(fenced(new_token, m, "node-1 again"))
        .await
        .expect("txn");
    assert!(fresh.succeeded);
    assert_eq!(
        fresh.responses,
        [OpResponse::Put, OpResponse::Delete { deleted: 0 }]
    );
}

#[tokio::test]
async fn leases_grant_renew_revoke_and_expire() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);

    let lease = c.grant(4).await.expect("grant");
    assert_eq!(lease.ttl, 4);
    c.put_with_lease("node/a", "up", lease.id)
        .await
        .expect("put with lease");
    assert_eq!(get(&c, "node/a").await.map(|kv| kv.lease), Some(lease.id));
    let info = c.time_to_live(lease.id).await.expect("ttl").expect("alive");
    assert_eq!(
        (info.id, info.granted_ttl, info.keys),
        (lease.id, 4, vec!["node/a".to_owned()])
    );

    // Keep-alive extends: once the TTL has run down, a renewal brings it back up.
    wait_until("the lease's TTL runs down to 2 s", || {
        let c = c.clone();
        async move {
            let info = c.time_to_live(lease.id).await.ok().flatten();
            info.is_some_and(|info| info.ttl <= 2)
        }
    })
    .await;
    assert_eq!(c.keep_alive_once(lease.id).await.expect("renew"), Some(4));
    let info = c.time_to_live(lease.id).await.expect("ttl").expect("alive");
    assert!(info.ttl >= 3, "renewed: {info:?}");

    // Revoked: its key goes with it at once, and the lease is gone for good.
    c.revoke(lease.id).await.expect("revoke");
    assert_eq!(get(&c, "node/a").await, None);
    assert_eq!(c.time_to_live(lease.id).await.expect("ttl"), None);
    assert_eq!(c.keep_alive_once(lease.id).await.expect("renew"), None);
    c.revoke(lease.id).await.expect("revoking again is fine");
    let err = c
        .put_with_lease("node/a", "up", lease.id)
        .await
        .expect_err("a put with a revoked lease");
    assert!(err.is_lease_not_found(), "{err:?}");

    // Expired: nobody renews it, and its key vanishes by itself.
    let short = c.grant(1).await.expect("grant");
    c.put_with_lease("node/b", "up", short.id)
        .await
        .expect("put with lease");
    let granted = Instant::now();
    wait_until("the key of an expired lease vanishes", || {
        let c = c.clone();
        async move { matches!(c.get("node/b").await, Ok((None, _))) }
    })
    .await;
    assert!(granted.elapsed() >= Duration::from_millis(500));
    assert_eq!(c.keep_alive_once(short.id).await.expect("renew"), None);
    assert_eq!(c.time_to_live(short.id).await.expect("ttl"), None);
}

#[tokio::test]
async fn the_keeper_reports_a_revoked_lease_as_lost_and_can_revoke_its_own() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let (lease, mut keeper) = LeaseKeeper::start(c.clone(), 5, Duration::from_millis(200))
        .await
        .expect("start keeper");
    assert_eq!(keeper.lease(), lease);
    let event = next_keeper_event(&mut keeper, Duration::from_secs(5), "Renewed").await;
    assert_eq!(event, KeeperEvent::Renewed { ttl: 5 });

    // Revoked behind its back: etcd says the lease is gone, and the keeper stops.
    c.revoke(lease.id).await.expect("revoke");
    loop {
        match next_keeper_event(&mut keeper, Duration::from_secs(5), "Lost").await {
            KeeperEvent::Renewed { .. } => {}
            KeeperEvent::Lost { cause } => {
                assert_eq!(cause, LeaseLoss::Gone);
                break;
            }
            other => panic!("got {other:?}, expecting Lost"),
        }
    }
    assert_eq!(keeper.recv().await, None);

    // A clean shutdown revokes, taking the keys at once.
    let (lease, keeper) = LeaseKeeper::start(c.clone(), 5, Duration::from_millis(200))
        .await
        .expect("start keeper");
    c.put_with_lease("node/x", "up", lease.id)
        .await
        .expect("put with lease");
    keeper.revoke().await.expect("revoke");
    assert_eq!(get(&c, "node/x").await, None);
}

/// Reads batches until `n` events arrived.
async fn events(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::new();
    while events.len() < n {
        let batch = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} events within 10 s", events.len()))
            .expect("a batch");
        assert!(
            batch.revision >= batch.delivered_through(),
            "header revision {} before its events ({batch:?})",
            batch.revision
        );
        events.extend(batch.events);
    }
    assert_eq!(events.len(), n, "{events:?}");
    events
}

fn event(kind: EventKind, kv: KeyValue) -> Event {
    Event { kind, kv }
}

#[tokio::test]
async fn watch_prefix_sees_puts_and_deletes_in_order_and_ends_clearly() {
    let mut etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let r1 = put(&c, "w/a", "1").await;
    let (_, listed) = c.range_prefix("w/", None).await.expect("list");

    let mut stream = c.watch_prefix("w/", listed + 1).await.expect("watch");
    assert_eq!(stream.endpoint(), etcd.url());
    let r2 = put(&c, "w/a", "2").await;
    let r3 = put(&c, "w/b", "x").await;
    put(&c, "w0", "a sibling, not watched").await;
    let r5 = c.delete("w/a").await.expect("delete");
    let both = c
        .txn(Txn::new().and_then([Op::put("w/c", "1"), Op::put("w/d", "1")]))
        .await
        .expect("txn");
    let r6 = both.revision;
    let deleted_kv = KeyValue {
        key: "w/a".into(),
        mod_revision: r5,
        ..KeyValue::default()
    };
    assert_eq!(
        events(&mut stream, 5).await,
        [
            event(EventKind::Put, kv("w/a", "2", r1, r2, 2, 0)),
            event(EventKind::Put, kv("w/b", "x", r3, r3, 1, 0)),
            event(EventKind::Delete, deleted_kv.clone()),
            event(EventKind::Put, kv("w/c", "1", r6, r6, 1, 0)),
            event(EventKind::Put, kv("w/d", "1", r6, r6, 1, 0)),
        ]
    );

    // From an old revision: the history replayed first, in order.
    let mut replay = c.watch_prefix("w/", r1).await.expect("watch from r1");
    let seen = events(&mut replay, 6).await;
    let revisions: Vec<i64> = seen.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(revisions, [r1, r2, r3, r5, r6, r6]);
    assert_eq!(seen[3], event(EventKind::Delete, deleted_kv));

    // Compacted history: a clear error with the compaction revision, then nothing more.
    compact(&etcd.url(), r6).await;
    let mut old = c.watch_prefix("w/", r1).await.expect("watch opens");
    let err = old.next().await.expect_err("compacted");
    assert!(
        matches!(err, Error::Compacted { compact_revision, .. } if compact_revision == r6),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(matches!(old.next().await, Err(Error::WatchEnded { .. })));
    // Watching from the compaction revision + 1 works.
    let mut fresh = c.watch_prefix("w/", r6 + 1).await.expect("watch");
    let r7 = put(&c, "w/e", "1").await;
    assert_eq!(
        events(&mut fresh, 1).await,
        [event(EventKind::Put, kv("w/e", "1", r7, r7, 1, 0))]
    );

    // A live watch goes on across a compaction.
    assert_eq!(
        events(&mut stream, 1).await,
        [event(EventKind::Put, kv("w/e", "1", r7, r7, 1, 0))]
    );

    // The connection drops: the stream says so at once (the caller re-lists and re-watches).
    etcd.stop();
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the end noticed within 5 s");
    let err = ended.expect_err("the stream ended");
    assert!(
        matches!(&err, Error::WatchEnded { endpoint, .. } if *endpoint == etcd.url()),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn an_idle_watch_gets_progress_notifications() {
    let etcd = Etcd::start_with(&["--experimental-watch-progress-notify-interval=200ms"]).await;
    let c = client(&[etcd.url()]);
    let mut stream = c.watch_prefix("quiet/", 0).await.expect("watch");
    let elsewhere = put(&c, "busy/x", "1").await;
    // Nothing under the prefix changes, yet the watch learns how current it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let batch = tokio::time::timeout_at(deadline, stream.next())
            .await
            .expect("a progress notification within 10 s")
            .expect("a batch");
        assert!(batch.is_progress(), "{batch:?}");
        assert_eq!(batch.delivered_through(), batch.revision);
        if batch.revision >= elsewhere {
            break;
        }
    }
}

/// Drains keeper events until `until`, panicking on `Lost`; returns the `Renewed` count.
async fn renewals_until(keeper: &mut LeaseKeeper, until: Instant) -> usize {
    let mut renewed = 0;
    while let Ok(event) = tokio::time::timeout_at(until, keeper.recv()).await {
        match event {
            Some(KeeperEvent::Renewed { .. }) => renewed += 1,
            Some(KeeperEvent::Unreachable { .. }) => {}
            Some(lost @ KeeperEvent::Lost { .. }) => panic!("the keeper reported {lost:?}"),
            None => panic!("the keeper stopped"),
        }
    }
    renewed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_survives_killing_the_etcd_leader() {
    let mut cluster = start_cluster();
    let c = client(&cluster.client_urls());
    let (lease, mut keeper) = LeaseKeeper::start(c.clone(), 6, Duration::from_secs(1))
        .await
        .expect("start keeper");
    c.put_with_lease("nodes/n1", "up", lease.id)
        .await
        .expect("register");
    let first = next_keeper_event(&mut keeper, Duration::from_secs(5), "Renewed").await;
    assert_eq!(first, KeeperEvent::Renewed { ttl: 6 });

    let old_leader = leader_of(&cluster);
    cluster.kill(old_leader);
    let killed = Instant::now();
    let new_leader = leader_of(&cluster);
    assert_ne!(new_leader, old_leader);
    let elected = Instant::now();

    // Past the TTL since the kill, and a few renewals past the election: a lease nobody
    // renewed would have expired by now.
    let until = (killed + Duration::from_secs(7)).max(elected + Duration::from_secs(3));
    let renewed = renewals_until(&mut keeper, until).await;
    assert!(renewed >= 2, "only {renewed} renewals after the kill");
    let kv = get(&c, "nodes/n1")
        .await
        .expect("the key outlived the leader");
    assert_eq!(kv.lease, lease.id);
    let info = c
        .time_to_live(lease.id)
        .await
        .expect("ttl")
        .expect("the lease is alive");
    assert!(info.ttl >= 3, "{info:?}");

    // The old leader comes back as a follower, with the key.
    tokio::task::block_in_place(|| cluster.restart(old_leader)).expect("the old leader restarts");
    let only_it = client(&[cluster.client_urls()[old_leader].clone()]);
    assert_eq!(
        get(&only_it, "nodes/n1").await.map(|kv| kv.lease),
        Some(lease.id)
    );
    renewals_until(&mut keeper, Instant::now() + Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_without_quorum_refuses_at_once_and_the_keeper_loses_its_lease() {
    let mut cluster = start_cluster();
    let c = client(&cluster.client_urls());
    let ttl = 3;
    let interval = Duration::from_millis(500);
    let config = KeeperConfig {
        interval,
        attempt_timeout: Duration::from_millis(300),
    };
    let (lease, mut keeper) = LeaseKeeper::start_with(c.clone(), ttl, config)
        .await
        .expect("start keeper");
    assert_eq!(
        lease.ttl, ttl,
        "at least etcd's minimum: 1.5 election timeouts"
    );
    c.put_with_lease("nodes/n1", "up", lease.id)
        .await
        .expect("register");
    let first = next_keeper_event(&mut keeper, Duration::from_secs(5), "Renewed").await;
    assert_eq!(first, KeeperEvent::Renewed { ttl });

    let leader = leader_of(&cluster);
    let survivor = (leader + 1) % cluster.len();
    let only_survivor = Client::new(
        vec![cluster.client_urls()[survivor].clone()],
        Duration::from_secs(5),
    )
    .expect("client");
    let mut watch = only_survivor
        .watch_prefix("nodes/", 0)
        .await
        .expect("watch on the survivor");
    for i in (0..cluster.len()).filter(|&i| i != survivor) {
        cluster.kill(i);
    }
    let killed = Instant::now();

    // Once the survivor knows it has no leader, it refuses at once (the 5 s timeout would
    // otherwise run out): writes, lease renewals and linearizable reads alike.
    tokio::task::block_in_place(|| cluster.wait_leaderless(survivor, Duration::from_secs(15)))
        .expect("the survivor gives up its leader");
    let started = Instant::now();
    let err = only_survivor
        .put("nodes/n2", "up")
        .await
        .expect_err("no quorum");
    let refused_in = started.elapsed();
    assert!(refused_in < Duration::from_secs(1), "took {refused_in:?}");
    assert!(err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    let started = Instant::now();
    let err = only_survivor
        .keep_alive_once(lease.id)
        .await
        .expect_err("no quorum");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");
    let err = only_survivor.get("nodes/n1").await.expect_err("no quorum");
    assert!(err.to_string().contains("etcdserver: no leader"), "{err}");

    // The refusal sends even a write on to the next endpoint (here a separate etcd, to have
    // one that answers).
    let other = Etcd::start().await;
    let failover = client(&[cluster.client_urls()[survivor].clone(), other.url()]);
    failover
        .put("nodes/n2", "up")
        .await
        .expect("a put refused for no leader goes to the next endpoint");
    assert!(get(&client(&[other.url()]), "nodes/n2").await.is_some());

    // The open watch on the survivor is cut, not left silent.
    let cut = tokio::time::timeout(
        Duration::from_millis(5 * u64::from(ELECTION_MS) + 5000),
        watch.next(),
    )
    .await
    .expect("the watch is cut within a few election timeouts");
    let err = cut.expect_err("the watch ended");
    assert!(err.to_string().contains("no leader"), "{err}");

    // The keeper: unreachable, then lost once its last renewal's TTL has run out.
    let mut unreachable = None;
    let lost_at = loop {
        match next_keeper_event(&mut keeper, Duration::from_secs(10), "Unreachable, Lost").await {
            KeeperEvent::Renewed { .. } => {
                assert!(unreachable.is_none(), "renewed while nothing can renew");
            }
            KeeperEvent::Unreachable { since, expires, .. } => {
                assert!(unreachable.is_none(), "a second Unreachable");
                unreachable = Some((since, expires));
            }
            KeeperEvent::Lost { cause } => {
                assert_eq!(cause, LeaseLoss::Expired);
                break Instant::now();
            }
        }
    };
    let (since, expires) = unreachable.expect("Unreachable before Lost");
    assert!(
        since + interval >= killed,
        "unreachable {:?} before the kill",
        killed - since
    );
    assert!(lost_at >= expires, "lost before its expiry");
    let ttl = Duration::from_secs(3);
    assert!(
        lost_at >= killed + ttl - 2 * interval,
        "lost {:?} after the kill",
        lost_at - killed
    );
    assert!(
        lost_at <= killed + ttl + Duration::from_secs(2),
        "lost {:?} after the kill",
        lost_at - killed
    );
    assert_eq!(keeper.recv().await, None, "the keeper stopped");
}

/// A batch's `delivered_through` is its last event's revision, or its own for progress.
#[test]
fn delivered_through() {
    let progress = WatchBatch {
        events: vec![],
        revision: 9,
    };
    assert!(progress.is_progress());
    assert_eq!(progress.delivered_through(), 9);
    let batch = WatchBatch {
        events: vec![event(EventKind::Put, kv("k", "v", 3, 5, 2, 0))],
        revision: 9,
    };
    assert_eq!(batch.delivered_through(), 5);
}

/// A 3-member etcd on loopback (the test kit's, as the multi-host tests use).
fn start_cluster() -> EtcdCluster {
    tokio::task::block_in_place(|| EtcdCluster::start(3, std::net::Ipv4Addr::LOCALHOST))
        .unwrap_or_else(|e| panic!("etcd cluster: {e}"))
}

/// The member that leads now, waiting for an election if one is under way.
fn leader_of(cluster: &EtcdCluster) -> usize {
    tokio::task::block_in_place(|| cluster.wait_leader(Duration::from_secs(15)))
        .unwrap_or_else(|e| panic!("{e}"))
}
