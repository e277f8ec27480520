//! Every released store schema keeps loading: `fixtures/state-vN.sql` is a dump of a real
//! state.db written by that schema (3 hello instances, their events).

use jarfleet_daemon::store::{Store, read_events};

fn load_fixture(sql: &str, version: i64) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    conn.execute_batch(sql).expect("loading the fixture dump");
    conn.pragma_update(None, "user_version", version)
        .expect("user_version");
    drop(conn);
    (dir, db)
}

#[test]
fn schema_v1_state_still_loads() {
    let (_dir, db) = load_fixture(include_str!("fixtures/state-v1.sql"), 1);
    let store = Store::open(&db).expect("a v1 store opens");
    assert!(store.schema_version().expect("version") >= 1);
    let apps = store.apps().expect("apps");
    assert_eq!(apps.len(), 1);
    let (name, app) = &apps[0];
    assert_eq!(name, "hello");
    assert_eq!(app.spec.instances, 3);
    let instances = store.instances().expect("instances");
    assert_eq!(instances.len(), 3);
    assert!(
        instances
            .iter()
            .all(|r| r.instance.process.is_some() && r.generation > 0)
    );
    let events = read_events(&db, 0, 100).expect("events");
    assert!(events.iter().any(|e| e.kind == "instance.ready"));
}

#[test]
fn a_store_from_a_newer_jarfleet_is_refused_clearly() {
    let (_dir, db) = load_fixture(include_str!("fixtures/state-v1.sql"), 99);
    let err = Store::open(&db).err().expect("refused").to_string();
    let chain = format!("{err:#}");
    assert!(chain.contains("migrating store"), "{chain}");
}

/// A batch of writes is one transaction: when one of them fails (here a trigger refuses an
/// event, as a full disk would refuse a page), none is kept, and the store takes the next batch
/// (its prepared statements still work after the rollback).
#[test]
fn a_batch_of_writes_is_kept_whole_or_not_at_all() {
    use jarfleet_api::EventRecord;
    use jarfleet_daemon::store::Write;
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("state.db");
    let store = Store::open(&db).expect("a new store opens");
    rusqlite::Connection::open(&db)
        .expect("a second connection")
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.kind = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;",
        )
        .expect("the trigger");
    let event = |id: i64, kind: &str| {
        Write::Event(EventRecord {
            id,
            ts: 1,
            kind: kind.into(),
            app: Some("web".into()),
            slot: None,
            message: format!("event {id}"),
        })
    };
    let meta = |value: &str| Write::Meta {
        key: "k".into(),
        value: value.into(),
    };
    for round in 0..2 {
        let (m, ok, bad) = (
            meta("lost"),
            event(10 + round, "kept"),
            event(20, "refused"),
        );
        let err = store
            .write_all(&[&m, &ok, &bad])
            .expect_err("a batch with a refused write fails");
        assert!(
            format!("{err:#}").contains("refused by the test"),
            "{err:#}"
        );
        assert_ne!(store.meta("k").expect("meta").as_deref(), Some("lost"));
        let stored = read_events(&db, 0, 100).expect("events");
        assert!(
            stored
                .iter()
                .all(|e| e.kind != "refused" && e.id != 10 + round),
            "part of a failed batch was kept: {stored:?}"
        );
        let (m, ok) = (meta(&format!("round {round}")), event(1 + round, "kept"));
        store
            .write_all(&[&m, &ok])
            .expect("the next batch is taken");
        assert_eq!(
            store.meta("k").expect("meta").as_deref(),
            Some(format!("round {round}").as_str())
        );
        let ids: Vec<i64> = read_events(&db, 0, 100)
            .expect("events")
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(ids, (1..=1 + round).collect::<Vec<_>>());
    }
}
