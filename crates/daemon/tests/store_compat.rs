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
