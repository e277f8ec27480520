//! The store before the daemon trusts it: a store that is missing, empty, without its schema or
//! unreadable while shims still run JVMs is never taken for "no fleet" (which would make the
//! daemon stop every JVM as a stray). The decision is `jarfleet_core::recovery`; this is the IO:
//! looking at the file, asking the shims, moving a bad file aside. `doctor` uses [`inspect`]
//! read-only.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use jarfleet_core::recovery::{StoreFound, StoreVerdict, store_verdict};
use rusqlite::{Connection, OpenFlags};

use crate::store::Store;
use jarfleet_host::paths::StateDir;
use jarfleet_host::survivors::{self, Found};

/// What the store file holds, without changing it.
#[derive(Debug, Clone)]
pub struct Inspection {
    pub found: StoreFound,
    /// Why it is unreadable (SQLite's error or the integrity check's first lines).
    pub error: Option<String>,
    pub schema_version: Option<i64>,
    pub apps: usize,
    pub instances: usize,
}

impl Inspection {
    fn found(found: StoreFound) -> Inspection {
        Inspection {
            found,
            error: None,
            schema_version: None,
            apps: 0,
            instances: 0,
        }
    }

    fn unreadable(error: impl Into<String>) -> Inspection {
        Inspection {
            error: Some(error.into()),
            ..Inspection::found(StoreFound::Unreadable)
        }
    }

    /// "is missing", "is empty (0 bytes)", …: what is wrong with a store that holds no fleet.
    pub fn what(&self, db: &Path) -> String {
        match self.found {
            StoreFound::Missing => "is missing".into(),
            StoreFound::Empty => "is empty (0 bytes)".into(),
            StoreFound::NoSchema => format!(
                "has no jarfleet schema (was its write-ahead log {}-wal deleted?)",
                db.display()
            ),
            StoreFound::NoApps => "holds no app".into(),
            StoreFound::Fleet { apps } => format!("holds {apps} app(s)"),
            StoreFound::Unreadable => format!(
                "cannot be read: {}",
                self.error.as_deref().unwrap_or("unknown error")
            ),
        }
    }
}

/// Looks at the store at `db` without writing to it: whether it exists, SQLite can read it,
/// its integrity (`PRAGMA quick_check`), its schema version, its apps and instances.
/// `read_only`: open it read-only (`doctor`, beside a running daemon); the daemon at start opens
/// it read-write (it holds the state dir's lock) so a store whose write-ahead log has to be
/// recovered can be read.
pub fn inspect(db: &Path, read_only: bool) -> Inspection {
    match std::fs::metadata(db) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Inspection::found(StoreFound::Missing);
        }
        Err(e) => return Inspection::unreadable(format!("{e}")),
        Ok(m) if !m.is_file() => return Inspection::unreadable("not a regular file"),
        Ok(m) if m.len() == 0 => return Inspection::found(StoreFound::Empty),
        Ok(_) => {}
    }
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = match Connection::open_with_flags(db, flags) {
        Ok(c) => c,
        Err(e) => return Inspection::unreadable(e.to_string()),
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    if !read_only {
        // The daemon holds the state dir's lock: without the shared-memory index, a store on a
        // full disk (which cannot grow `-shm`) can still be looked at.
        let _ = conn.pragma_update(None, "locking_mode", "EXCLUSIVE");
    }
    let version: i64 = match conn.pragma_query_value(None, "user_version", |r| r.get(0)) {
        Ok(v) => v,
        Err(e) => return Inspection::unreadable(e.to_string()),
    };
    match quick_check(&conn) {
        Ok(None) => {}
        Ok(Some(problems)) => {
            return Inspection::unreadable(format!("integrity check failed: {problems}"));
        }
        Err(e) => return Inspection::unreadable(e.to_string()),
    }
    if version == 0 {
        return Inspection {
            schema_version: Some(0),
            ..Inspection::found(StoreFound::NoSchema)
        };
    }
    let count = |table: &str| -> rusqlite::Result<usize> {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .map(|n| usize::try_from(n).unwrap_or(0))
    };
    match (count("apps"), count("instances")) {
        (Ok(apps), Ok(instances)) => Inspection {
            found: if apps == 0 {
                StoreFound::NoApps
            } else {
                StoreFound::Fleet { apps }
            },
            error: None,
            schema_version: Some(version),
            apps,
            instances,
        },
        (Err(e), _) | (_, Err(e)) => Inspection {
            schema_version: Some(version),
            ..Inspection::unreadable(e.to_string())
        },
    }
}

/// `None` when SQLite finds nothing wrong; else its first findings.
fn quick_check(conn: &Connection) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let rows: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok((rows != ["ok"]).then(|| rows.join("; ")))
}

/// Opens the daemon's store once it is safe to trust it; see the module doc. Returns the store
/// and the shims found in `run/`.
pub async fn open(dirs: &StateDir, new_store: bool) -> Result<(Store, Found, Option<String>)> {
    let db = dirs.db();
    let (inspection, shims) = {
        let (db, root) = (db.clone(), dirs.root().to_path_buf());
        tokio::task::spawn_blocking(move || (inspect(&db, false), survivors::find(&root)))
            .await
            .context("checking the store")?
    };
    match store_verdict(inspection.found, shims.running(), new_store) {
        StoreVerdict::Open => {}
        StoreVerdict::MoveAsideAndStartEmpty => {
            let aside = move_aside(&db)?;
            tracing::warn!(
                "the store {} {}: moved aside to {}; starting with an empty store ({} running shim(s) are left running as strays)",
                db.display(),
                inspection.what(&db),
                aside.display(),
                shims.running()
            );
        }
        StoreVerdict::Refuse => anyhow::bail!("{}", refusal(&db, &inspection, &shims)),
    }
    if inspection.found == StoreFound::Missing && new_store {
        // A write-ahead log left without its database would be replayed into the new one.
        move_aside(&db)?;
    }
    let (store, degraded) = open_private(&db).map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n  hint: {}",
            fix(&db, "move it aside and restore a backup")
        )
    })?;
    Ok((store, shims, degraded))
}

/// Opens the store with private modes (under a umask of 077: SQLite gives `-wal` and `-shm` the
/// database's mode). On a disk with no room for WAL's index the store is opened for this daemon
/// alone (`Store::open_exclusive`); the second value then says why.
fn open_private(db: &Path) -> Result<(Store, Option<String>)> {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o077));
    let opened = match Store::open(db) {
        Ok(store) => Ok((store, None)),
        Err(e) if crate::store::is_disk_trouble(&e) => match Store::open_exclusive(db) {
            Ok(store) => {
                tracing::warn!(
                    "the store could not be opened normally ({e:#}): opened for this daemon alone; event listings wait until there is room on the disk again"
                );
                Ok((store, Some(format!("{e:#}"))))
            }
            Err(_) => Err(e),
        },
        Err(e) => Err(e),
    };
    umask(old);
    opened
}

fn fix(db: &Path, first: &str) -> String {
    format!(
        "{first} (`mv {db} {db}.bad`), or start the daemon with `--new-store`, which moves it aside and begins with an empty store: running JVMs are left running as strays (`jarfleet status` lists them, `jarfleet down --strays` stops them) and `jarfleet apply` starts the fleet anew",
        db = db.display()
    )
}

fn refusal(db: &Path, inspection: &Inspection, shims: &Found) -> String {
    let running = shims.running();
    let mut names: Vec<String> = shims.alive.iter().take(5).map(|s| s.describe()).collect();
    names.extend(
        shims
            .unclear
            .iter()
            .take(5usize.saturating_sub(names.len()))
            .map(|(dir, why)| format!("{} ({why})", dir.display())),
    );
    if running > names.len() {
        names.push(format!("and {} more", running - names.len()));
    }
    let shims_line = if running == 0 {
        "no shim is running".to_string()
    } else {
        format!(
            "{running} shim(s) still run JVMs: {}; they keep running",
            names.join(", ")
        )
    };
    match inspection.found {
        StoreFound::Unreadable => format!(
            "the store {} {}. The daemon did not start and nothing was stopped ({shims_line}).\n  hint: {}",
            db.display(),
            inspection.what(db),
            fix(db, "move it aside and restore a backup")
        ),
        _ => format!(
            "the store {} {} while {shims_line}: the fleet's records are lost. The daemon did not start and nothing was stopped.\n  hint: {}",
            db.display(),
            inspection.what(db),
            fix(
                db,
                "restore the store from a backup (with its -wal file), then start the daemon again; or move it aside"
            )
        ),
    }
}

/// Moves the store and its WAL files aside as `state.db.<ms>.bad` (…`-wal`); returns the new
/// path of the store.
fn move_aside(db: &Path) -> Result<PathBuf> {
    let stamp = crate::clock::now_ms();
    let aside = PathBuf::from(format!("{}.{stamp}.bad", db.display()));
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", db.display()));
        let to = PathBuf::from(format!("{}{suffix}", aside.display()));
        match std::fs::rename(&from, &to) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("moving {} aside to {}", from.display(), to.display())
                });
            }
        }
    }
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("jf-storecheck-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    #[test]
    fn what_the_file_holds() {
        let dir = temp("kinds");
        let db = dir.join("state.db");
        assert_eq!(inspect(&db, false).found, StoreFound::Missing);
        std::fs::write(&db, b"").expect("write");
        assert_eq!(inspect(&db, false).found, StoreFound::Empty);
        std::fs::write(&db, vec![b'x'; 8192]).expect("write");
        let garbage = inspect(&db, false);
        assert_eq!(garbage.found, StoreFound::Unreadable);
        assert!(
            garbage
                .error
                .as_deref()
                .unwrap_or("")
                .contains("not a database"),
            "{garbage:?}"
        );
        std::fs::remove_file(&db).expect("rm");
        drop(Store::open(&db).expect("new store"));
        let fresh = inspect(&db, true);
        assert_eq!(
            (fresh.found, fresh.schema_version.is_some_and(|v| v > 0)),
            (StoreFound::NoApps, true)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_store_moved_aside_keeps_its_log() {
        let dir = temp("aside");
        let db = dir.join("state.db");
        std::fs::write(&db, b"garbage").expect("write");
        std::fs::write(dir.join("state.db-wal"), b"log").expect("write");
        let aside = move_aside(&db).expect("moved");
        assert!(!db.exists() && aside.exists());
        let wal = PathBuf::from(format!("{}-wal", aside.display()));
        assert_eq!(std::fs::read(wal).expect("wal moved"), b"log");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
