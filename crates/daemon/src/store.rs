//! The embedded store: SQLite in WAL mode with versioned migrations.
//!
//! Owned by the control loop (one connection, one writer). Readers that must not wait for the
//! loop (event listings) open their own read-only connection.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use jarfleet_api::{DeploymentRecord, EventRecord};
use jarfleet_core::instance::Instance;
use rusqlite::{Connection, OpenFlags, params};
use serde::{Deserialize, Serialize};

/// Migrations, applied in order; `PRAGMA user_version` records how many ran. Never edit a
/// released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE apps (
        name TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE TABLE instances (
        app TEXT NOT NULL,
        slot INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (app, slot)
    );
    CREATE TABLE releases (
        app TEXT NOT NULL,
        id TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (app, id)
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ts INTEGER NOT NULL,
        kind TEXT NOT NULL,
        app TEXT,
        slot INTEGER,
        message TEXT NOT NULL
    );
    CREATE INDEX events_app ON events (app, id);
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
    // 2: deployments.
    "CREATE TABLE deployments (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        app TEXT NOT NULL,
        outcome TEXT NOT NULL,
        record TEXT NOT NULL
    );
    CREATE INDEX deployments_app ON deployments (app, id);",
];

/// The meta key of [`Store::daemon_settings`].
pub const DAEMON_SETTINGS: &str = "daemon_settings";

/// Events kept; older ones are pruned.
pub const EVENT_RETENTION: i64 = 20_000;

/// What the store keeps about an app: the spec it runs and how it runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppRecord {
    pub spec: jarfleet_core::spec::AppSpec,
    pub release: String,
    pub runtime: jarfleet_host::launch::JavaRuntime,
    /// Bumped by a rolling `restart APP`.
    #[serde(default)]
    pub restart_generation: u64,
    /// Being removed: its instances are stopping and it goes once they are gone.
    #[serde(default)]
    pub removing: bool,
    /// How to run each release the app has (the current one, the one being deployed, and the
    /// previous ones for rollback), by release id.
    #[serde(default)]
    pub releases: BTreeMap<String, ReleaseRecord>,
}

/// One immutable release: the spec and JDK it runs with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReleaseRecord {
    pub spec: jarfleet_core::spec::AppSpec,
    pub runtime: jarfleet_host::launch::JavaRuntime,
    pub version: Option<String>,
    pub created_at: u64,
}

impl AppRecord {
    /// The spec and JDK of `release` (the app's current ones for a release recorded before
    /// releases were kept).
    pub fn release(
        &self,
        release: &str,
    ) -> (
        &jarfleet_core::spec::AppSpec,
        &jarfleet_host::launch::JavaRuntime,
    ) {
        match self.releases.get(release) {
            Some(r) => (&r.spec, &r.runtime),
            None => (&self.spec, &self.runtime),
        }
    }
}

/// What the store keeps about an instance slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: Instance,
    /// The shim generation (run dir) of the current or last process.
    pub generation: u64,
    #[serde(default)]
    pub restart_generation: u64,
    /// Port chosen for the process being spawned.
    #[serde(default)]
    pub pending_port: Option<u16>,
    /// The port the slot used last; preferred again on restart.
    #[serde(default)]
    pub last_port: Option<u16>,
    /// Blue-green: the old set after a switch — running, out of the load balancer, until then
    /// (epoch ms), ready to be switched back to.
    #[serde(default)]
    pub standby_until: Option<u64>,
    /// Changed since last persisted (not stored).
    #[serde(skip)]
    pub dirty: bool,
}

impl InstanceRecord {
    /// The port the instance holds, or is about to hold while its spawn is under way.
    pub fn port(&self) -> Option<u16> {
        self.instance
            .process
            .as_ref()
            .map(|p| p.port)
            .or(self.pending_port)
    }
}

pub struct Store {
    conn: Connection,
}

/// One write of the control loop: what [`crate::persist`] keeps in memory and writes again when
/// the store does not take it (a full disk).
#[derive(Debug, Clone)]
pub enum Write {
    App {
        name: String,
        record: Box<AppRecord>,
        now: u64,
    },
    /// The app and its instances.
    DeleteApp(String),
    Instance(Box<InstanceRecord>),
    DeleteInstance {
        app: String,
        slot: u32,
    },
    Release {
        app: String,
        id: String,
        record: serde_json::Value,
        now: u64,
    },
    /// An update of a recorded deployment (its id is set).
    Deployment(Box<DeploymentRecord>),
    Meta {
        key: String,
        value: String,
    },
    /// An event with its id (given by the loop: [`Store::last_event_id`] + 1, …).
    Event(EventRecord),
}

impl Write {
    /// What the write is about: a later write with the same key replaces an earlier one still
    /// waiting (latest state wins). Events have none: each is kept.
    pub fn key(&self) -> Option<WriteKey> {
        Some(match self {
            Write::App { name, .. } | Write::DeleteApp(name) => WriteKey::App(name.clone()),
            Write::Instance(rec) => WriteKey::Instance(rec.instance.app.clone(), rec.instance.slot),
            Write::DeleteInstance { app, slot } => WriteKey::Instance(app.clone(), *slot),
            Write::Release { app, id, .. } => WriteKey::Release(app.clone(), id.clone()),
            Write::Deployment(d) => WriteKey::Deployment(d.id),
            Write::Meta { key, .. } => WriteKey::Meta(key.clone()),
            Write::Event(_) => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum WriteKey {
    App(String),
    Instance(String, u32),
    Release(String, String),
    Deployment(i64),
    Meta(String),
}

impl Store {
    pub fn open(path: &Path) -> Result<Store> {
        let mut conn =
            Connection::open(path).with_context(|| format!("opening store {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        // The store is small; a 512 KiB page cache keeps the daemon's footprint down.
        conn.pragma_update(None, "cache_size", -512)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut conn).with_context(|| format!("migrating store {}", path.display()))?;
        // Every statement the store runs stays prepared (parsing SQL was a tenth of a write).
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Store { conn })
    }

    /// Carries out one write.
    pub fn write(&self, w: &Write) -> Result<()> {
        match w {
            Write::App { name, record, now } => self.put_app(name, record, *now),
            Write::DeleteApp(name) => self.delete_app(name),
            Write::Instance(rec) => self.put_instance(rec),
            Write::DeleteInstance { app, slot } => self.delete_instance(app, *slot),
            Write::Release {
                app,
                id,
                record,
                now,
            } => self.put_release(app, id, record, *now),
            Write::Deployment(d) => self.put_deployment(d).map(|_| ()),
            Write::Meta { key, value } => self.set_meta(key, value),
            Write::Event(e) => self.put_event(e),
        }
    }

    /// Carries out `writes` in one transaction: all of them, or none.
    pub fn write_all(&self, writes: &[&Write]) -> Result<()> {
        // BEGIN and COMMIT as prepared statements (the loop writes a few times a second).
        self.conn.prepare_cached("BEGIN")?.execute([])?;
        let done = (|| -> Result<()> {
            for w in writes {
                self.write(w)?;
            }
            self.conn.prepare_cached("COMMIT")?.execute([])?;
            Ok(())
        })();
        if done.is_err() && !self.conn.is_autocommit() {
            // A failed write or commit (a full disk): none of them is kept.
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        done
    }

    /// The newest `limit` events after `after_id`, oldest first (as [`read_events`] reads
    /// them, through this store's connection).
    pub fn events_after(&self, after_id: i64, limit: usize) -> Result<Vec<EventRecord>> {
        events_after(&self.conn, after_id, limit)
    }

    /// The id of the newest event recorded (0 for none).
    pub fn last_event_id(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0),
                        COALESCE((SELECT MAX(id) FROM events), 0))",
            [],
            |r| r.get(0),
        )?)
    }

    /// Records an event under its own id (pruning old ones now and then).
    pub fn put_event(&self, e: &EventRecord) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT OR REPLACE INTO events (id, ts, kind, app, slot, message)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![e.id, e.ts as i64, e.kind, e.app, e.slot, e.message])?;
        if e.id % 1000 == 0 {
            self.conn
                .prepare_cached("DELETE FROM events WHERE id <= ?1")?
                .execute(params![e.id - EVENT_RETENTION])?;
        }
        Ok(())
    }

    /// Opens the store on a disk with no room: WAL mode keeps its index in a shared-memory file
    /// (`state.db-shm`) that a full disk cannot extend, so here it stays in the daemon's memory
    /// instead (`locking_mode = EXCLUSIVE` before the first access). Other connections (the
    /// event listings') wait until the daemon opens the store normally again. The schema must
    /// be current: nothing is migrated.
    pub fn open_exclusive(path: &Path) -> Result<Store> {
        let conn =
            Connection::open(path).with_context(|| format!("opening store {}", path.display()))?;
        conn.pragma_update(None, "locking_mode", "EXCLUSIVE")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "cache_size", -512)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version != MIGRATIONS.len() as i64 {
            anyhow::bail!(
                "the store {} has schema version {version}, and it cannot be migrated on a full disk",
                path.display()
            );
        }
        // Every statement the store runs stays prepared (parsing SQL was a tenth of a write).
        conn.set_prepared_statement_cache_capacity(32);
        Ok(Store { conn })
    }

    /// A store that takes nothing (every write fails): held for a moment while the real one is
    /// opened again.
    pub fn unavailable() -> Result<Store> {
        let conn = Connection::open_in_memory_with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        Ok(Store { conn })
    }

    pub fn schema_version(&self) -> Result<i64> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    pub fn put_app(&self, name: &str, rec: &AppRecord, now: u64) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO apps (name, record, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at")?.execute(
            params![name, serde_json::to_string(rec)?, now as i64],
        )?;
        Ok(())
    }

    pub fn delete_app(&self, name: &str) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM instances WHERE app = ?1")?
            .execute(params![name])?;
        self.conn
            .prepare_cached("DELETE FROM apps WHERE name = ?1")?
            .execute(params![name])?;
        Ok(())
    }

    pub fn apps(&self) -> Result<Vec<(String, AppRecord)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name, record FROM apps ORDER BY name")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (name, json) = row?;
            let rec = serde_json::from_str(&json)
                .with_context(|| format!("reading app {name} from the store"))?;
            out.push((name, rec));
        }
        Ok(out)
    }

    pub fn put_instance(&self, rec: &InstanceRecord) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO instances (app, slot, record) VALUES (?1, ?2, ?3)
             ON CONFLICT(app, slot) DO UPDATE SET record = excluded.record",
            )?
            .execute(params![
                rec.instance.app,
                rec.instance.slot,
                serde_json::to_string(rec)?
            ])?;
        Ok(())
    }

    pub fn delete_instance(&self, app: &str, slot: u32) -> Result<()> {
        self.conn
            .prepare_cached("DELETE FROM instances WHERE app = ?1 AND slot = ?2")?
            .execute(params![app, slot])?;
        Ok(())
    }

    pub fn instances(&self) -> Result<Vec<InstanceRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT app, slot, record FROM instances ORDER BY app, slot")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, u32>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (app, slot, json) = row?;
            let rec = serde_json::from_str(&json)
                .with_context(|| format!("reading instance {app}/{slot} from the store"))?;
            out.push(rec);
        }
        Ok(out)
    }

    pub fn put_release(
        &self,
        app: &str,
        id: &str,
        record: &serde_json::Value,
        now: u64,
    ) -> Result<()> {
        self.conn.prepare_cached("INSERT OR IGNORE INTO releases (app, id, created_at, record) VALUES (?1, ?2, ?3, ?4)")?.execute(
            params![app, id, now as i64, record.to_string()],
        )?;
        Ok(())
    }

    pub fn add_event(
        &self,
        ts: u64,
        kind: &str,
        app: Option<&str>,
        slot: Option<u32>,
        message: &str,
    ) -> Result<EventRecord> {
        self.conn
            .prepare_cached(
                "INSERT INTO events (ts, kind, app, slot, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![ts as i64, kind, app, slot, message])?;
        let id = self.conn.last_insert_rowid();
        if id % 1000 == 0 {
            self.conn
                .prepare_cached("DELETE FROM events WHERE id <= ?1")?
                .execute(params![id - EVENT_RETENTION])?;
        }
        Ok(EventRecord {
            id,
            ts,
            kind: kind.to_string(),
            app: app.map(str::to_string),
            slot,
            message: message.to_string(),
        })
    }

    /// Inserts (`id` = None) or updates a deployment; returns its id.
    pub fn put_deployment(&self, rec: &DeploymentRecord) -> Result<i64> {
        let json = serde_json::to_string(rec)?;
        if rec.id == 0 {
            self.conn
                .prepare_cached(
                    "INSERT INTO deployments (app, outcome, record) VALUES (?1, ?2, ?3)",
                )?
                .execute(params![rec.app, rec.outcome, json])?;
            Ok(self.conn.last_insert_rowid())
        } else {
            self.conn
                .prepare_cached("UPDATE deployments SET outcome = ?2, record = ?3 WHERE id = ?1")?
                .execute(params![rec.id, rec.outcome, json])?;
            Ok(rec.id)
        }
    }

    /// Deployments of `app`, oldest first (all apps when `None`).
    pub fn deployments(&self, app: Option<&str>) -> Result<Vec<DeploymentRecord>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, record FROM deployments WHERE ?1 IS NULL OR app = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map(params![app], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row?;
            let mut rec: DeploymentRecord =
                serde_json::from_str(&json).with_context(|| format!("reading deployment {id}"))?;
            rec.id = id;
            out.push(rec);
        }
        Ok(out)
    }

    pub fn max_generation(&self) -> Result<u64> {
        Ok(self
            .instances()?
            .iter()
            .map(|r| r.generation)
            .max()
            .unwrap_or(0))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")?.execute(
            params![key, value],
        )?;
        Ok(())
    }

    /// The `[daemon]` settings of the last applied spec (the TCP API's, for the next start).
    pub fn put_daemon_settings(&self, daemon: &jarfleet_core::spec::DaemonSpec) -> Result<()> {
        self.set_meta(DAEMON_SETTINGS, &serde_json::to_string(daemon)?)
    }

    pub fn daemon_settings(&self) -> Result<Option<jarfleet_core::spec::DaemonSpec>> {
        match self.meta(DAEMON_SETTINGS)? {
            Some(json) => Ok(Some(
                serde_json::from_str(&json).context("reading the stored [daemon] settings")?,
            )),
            None => Ok(None),
        }
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = ?1")?;
        let mut rows = stmt.query(params![key])?;
        Ok(match rows.next()? {
            Some(row) => Some(row.get(0)?),
            None => None,
        })
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        anyhow::bail!(
            "the store has schema version {version}, newer than this jarfleet understands ({known}); use a newer jarfleet"
        );
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Recent events, read through a separate read-only connection (never blocks the loop).
pub fn read_events(db: &Path, after_id: i64, limit: usize) -> Result<Vec<EventRecord>> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening store {}", db.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    events_after(&conn, after_id, limit)
}

/// The newest `limit` events after `after_id`, oldest first.
fn events_after(conn: &Connection, after_id: i64, limit: usize) -> Result<Vec<EventRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, ts, kind, app, slot, message FROM
           (SELECT * FROM events WHERE id > ?1 ORDER BY id DESC LIMIT ?2) ORDER BY id",
    )?;
    let rows = stmt.query_map(params![after_id, limit as i64], |r| {
        Ok(EventRecord {
            id: r.get(0)?,
            ts: r.get::<_, i64>(1)? as u64,
            kind: r.get(2)?,
            app: r.get(3)?,
            slot: r.get(4)?,
            message: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

/// Whether opening the store failed the way a full disk makes it fail (no room for the WAL or
/// its index, an I/O error on them), rather than for a reason a retry would not change.
pub fn is_disk_trouble(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<rusqlite::Error>(),
            Some(rusqlite::Error::SqliteFailure(f, _))
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DiskFull
                        | rusqlite::ErrorCode::SystemIoFailure
                        | rusqlite::ErrorCode::CannotOpen
                )
        )
    })
}
