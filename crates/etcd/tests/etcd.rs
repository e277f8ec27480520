//! The client and the watcher against a real etcd (`apt-get install -y etcd-server`).

mod helper;

use std::collections::BTreeMap;
use std::time::Duration;

use helper::{Etcd, Relay, assert_no_event, compact, free_port, next_event, post};
use jarfleet_etcd::{Client, Error, Snapshot, WatchConfig, WatchEvent, Watcher};

fn client(endpoints: &[String]) -> Client {
    Client::new(endpoints.to_vec(), Duration::from_secs(1)).expect("valid endpoints")
}

/// Faster than the defaults so outages are noticed and healed quickly.
fn quick() -> WatchConfig {
    WatchConfig {
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(400),
        idle_probe: Duration::from_secs(5),
        coalesce: Duration::from_millis(20),
        capacity: 16,
    }
}

fn map(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn put(client: &Client, key: &str, value: &str) -> i64 {
    client
        .put(key, value)
        .await
        .unwrap_or_else(|e| panic!("put {key}: {e}"))
}

/// The next event must be `Changed` with exactly `expected`; returns its snapshot.
async fn expect_changed(watcher: &mut Watcher, expected: &[(&str, &str)]) -> Snapshot {
    let what = format!("Changed({expected:?})");
    match next_event(watcher, &what).await {
        WatchEvent::Changed(snapshot) => {
            assert_eq!(snapshot.values, map(expected), "expecting {what}");
            snapshot
        }
        other => panic!("got {other:?}, expecting {what}"),
    }
}

async fn expect_unreachable(watcher: &mut Watcher, endpoint: &str) {
    match next_event(watcher, "Unreachable").await {
        WatchEvent::Unreachable { error } => {
            assert!(
                error.contains(endpoint),
                "error should name {endpoint}: {error}"
            );
        }
        other => panic!("got {other:?}, expecting Unreachable"),
    }
}

async fn expect_reconnected(watcher: &mut Watcher) {
    let event = next_event(watcher, "Reconnected").await;
    assert_eq!(event, WatchEvent::Reconnected);
}

#[tokio::test]
async fn get_prefix_returns_exactly_the_keys_under_the_prefix_stripped() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    for (key, value) in [
        ("app/", "the prefix itself"),
        ("app/a", "1"),
        ("app/b/c", "nested"),
        ("app/empty", ""),
        ("app/ü", "ünïcödé"),
        ("app2/x", "sibling"),
        ("app0", "the range end itself"),
        ("app.x", "sorts before"),
        ("ap", "shorter"),
    ] {
        put(&c, key, value).await;
    }
    let last = put(&c, "app/a", "2").await;

    let snapshot = c.get_prefix("app/").await.expect("get_prefix");
    assert_eq!(
        snapshot.values,
        map(&[
            ("", "the prefix itself"),
            ("a", "2"),
            ("b/c", "nested"),
            ("empty", ""),
            ("ü", "ünïcödé")
        ])
    );
    assert_eq!(snapshot.revision, last);

    let nothing = c.get_prefix("nothing/").await.expect("empty prefix");
    assert!(nothing.values.is_empty());
    assert_eq!(nothing.revision, last);

    let deleted_at = c.delete("app/a").await.expect("delete");
    assert_eq!(deleted_at, last + 1);
    let after = c.get_prefix("app/").await.expect("get_prefix after delete");
    assert!(!after.values.contains_key("a"));
    assert_eq!(after.revision, deleted_at);

    // Not UTF-8 under the prefix: an error naming the endpoint and the key.
    post(
        &etcd.url(),
        "/v3/kv/put",
        r#"{"key":"YmluL3g=","value":"/w=="}"#,
    )
    .await; // bin/x = 0xff
    let err = c.get_prefix("bin/").await.expect_err("a non-UTF-8 value");
    assert!(matches!(err, Error::BadEntry { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&etcd.url()) && text.contains("bin/x") && text.contains("not UTF-8"),
        "{text}"
    );
}

#[tokio::test]
async fn watcher_reports_put_change_and_delete_as_whole_snapshots() {
    let etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    put(&c, "cfg/keep", "k").await;
    put(&c, "cfg2/sibling", "s").await;

    let (initial, mut w) = Watcher::start_with(c.clone(), "cfg/", quick())
        .await
        .expect("start");
    assert_eq!(initial.values, map(&[("keep", "k")]));

    let rev = put(&c, "cfg/a", "1").await;
    let s = expect_changed(&mut w, &[("keep", "k"), ("a", "1")]).await;
    assert_eq!(s.revision, rev);

    put(&c, "cfg/a", "2").await;
    expect_changed(&mut w, &[("keep", "k"), ("a", "2")]).await;

    // Neither a sibling prefix nor a put of the same value is a change: the next event is the
    // delete.
    put(&c, "cfg2/x", "other").await;
    put(&c, "cfg/a", "2").await;
    let rev = c.delete("cfg/a").await.expect("delete");
    let s = expect_changed(&mut w, &[("keep", "k")]).await;
    assert_eq!(s.revision, rev);

    // A burst converges on the final state (coalesced into fewer events when they arrive
    // together; how many is timing).
    for i in 0..10 {
        put(&c, "cfg/burst", &i.to_string()).await;
    }
    let mut events = 0;
    loop {
        events += 1;
        match next_event(&mut w, "Changed with burst=9").await {
            WatchEvent::Changed(s) if s.values.get("burst").map(String::as_str) == Some("9") => {
                break;
            }
            WatchEvent::Changed(_) => {}
            other => panic!("unexpected {other:?} during burst"),
        }
    }
    assert!(events <= 10, "{events} events for 10 puts");
    assert_no_event(&mut w, "after the burst");

    // Dropping the watcher ends its task, which closes its watch on the server.
    assert_eq!(helper::watchers(&etcd.url()).await, 1);
    drop(w);
    helper::wait_until("etcd holds no watcher after the drop", || async {
        helper::watchers(&etcd.url()).await == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_survives_etcd_restarts() {
    let mut etcd = Etcd::start().await;
    let c = client(&[etcd.url()]);
    let (_, mut w) = Watcher::start_with(c.clone(), "cfg/", quick())
        .await
        .expect("start");
    // The stream is live before it is cut.
    put(&c, "cfg/a", "1").await;
    expect_changed(&mut w, &[("a", "1")]).await;

    etcd.stop();
    expect_unreachable(&mut w, &etcd.url()).await;
    etcd.restart().await;
    expect_reconnected(&mut w).await;
    // The last config was kept: the change adds to it.
    put(&c, "cfg/b", "2").await;
    expect_changed(&mut w, &[("a", "1"), ("b", "2")]).await;

    // A put right after a restart, likely before the watcher reconnects, is not lost.
    etcd.stop();
    expect_unreachable(&mut w, &etcd.url()).await;
    etcd.restart().await;
    put(&c, "cfg/c", "3").await;
    expect_reconnected(&mut w).await;
    expect_changed(&mut w, &[("a", "1"), ("b", "2"), ("c", "3")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_and_compaction_during_a_network_cut_are_not_lost() {
    let etcd = Etcd::start().await;
    let direct = client(&[etcd.url()]);
    let mut relay = Relay::start(&etcd.url()).await;
    put(&direct, "cfg/a", "1").await;
    let (_, mut w) = Watcher::start_with(client(&[relay.url()]), "cfg/", quick())
        .await
        .expect("start");
    put(&direct, "cfg/b", "1").await;
    expect_changed(&mut w, &[("a", "1"), ("b", "1")]).await;

    // Changed while the watcher certainly cannot see etcd: it resumes from its revision.
    relay.cut().await;
    expect_unreachable(&mut w, &relay.url()).await;
    put(&direct, "cfg/a", "2").await;
    relay.restore().await;
    expect_reconnected(&mut w).await;
    expect_changed(&mut w, &[("a", "2"), ("b", "1")]).await;

    // History the watcher needs is compacted away: it re-reads the prefix.
    relay.cut().await;
    expect_unreachable(&mut w, &relay.url()).await;
    put(&direct, "cfg/a", "3").await;
    put(&direct, "cfg/a", "4").await;
    put(&direct, "cfg/c", "new").await;
    let rev = direct.delete("cfg/b").await.expect("delete");
    put(&direct, "other/x", "moves the revision on").await;
    compact(&etcd.url(), rev).await;
    relay.restore().await;
    expect_reconnected(&mut w).await;
    let s = expect_changed(&mut w, &[("a", "4"), ("c", "new")]).await;
    assert_eq!(
        s.revision,
        rev + 1,
        "a full read is current as of the store's revision"
    );

    // Compacted again, but the config ends where it was: no Changed. The next event is the
    // next real change.
    relay.cut().await;
    expect_unreachable(&mut w, &relay.url()).await;
    put(&direct, "cfg/a", "5").await;
    let rev = put(&direct, "cfg/a", "4").await;
    compact(&etcd.url(), rev).await;
    relay.restore().await;
    expect_reconnected(&mut w).await;
    put(&direct, "cfg/a", "6").await;
    expect_changed(&mut w, &[("a", "6"), ("c", "new")]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_etcd_is_noticed_by_the_idle_probe() {
    let etcd = Etcd::start().await;
    let c = Client::new(vec![etcd.url()], Duration::from_millis(500)).expect("client");
    let config = WatchConfig {
        idle_probe: Duration::from_millis(300),
        ..quick()
    };
    let (_, mut w) = Watcher::start_with(c.clone(), "cfg/", config)
        .await
        .expect("start");
    put(&c, "cfg/a", "1").await;
    expect_changed(&mut w, &[("a", "1")]).await;

    // SIGSTOP keeps the stream open and silent, as a hung or partitioned member would.
    etcd.freeze();
    match next_event(&mut w, "Unreachable").await {
        // Noticed by the probe: the stream itself never broke.
        WatchEvent::Unreachable { error } => assert!(
            error.contains(&format!("{} stopped answering", etcd.url())),
            "{error}"
        ),
        other => panic!("got {other:?}, expecting Unreachable"),
    }
    etcd.thaw();
    expect_reconnected(&mut w).await;
    put(&c, "cfg/a", "2").await;
    expect_changed(&mut w, &[("a", "2")]).await;
}

#[tokio::test]
async fn requests_fail_over_from_a_dead_endpoint() {
    let etcd = Etcd::start().await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let c = client(&[dead.clone(), etcd.url()]);

    put(&c, "cfg/a", "1").await;
    let snapshot = c
        .get_prefix("cfg/")
        .await
        .expect("get_prefix through failover");
    assert_eq!(snapshot.values, map(&[("a", "1")]));
    let (_, mut w) = Watcher::start_with(c.clone(), "cfg/", quick())
        .await
        .expect("watch");
    put(&c, "cfg/a", "2").await;
    expect_changed(&mut w, &[("a", "2")]).await;

    // Nothing alive: the error names every endpoint tried.
    let other_dead = format!("http://127.0.0.1:{}", free_port());
    let err = client(&[dead.clone(), other_dead.clone()])
        .get_prefix("cfg/")
        .await
        .expect_err("no live endpoint");
    assert!(err.is_retryable());
    let text = err.to_string();
    assert!(text.starts_with(r#"etcd range "cfg/" failed: "#), "{text}");
    assert!(text.contains(&dead) && text.contains(&other_dead), "{text}");
}
