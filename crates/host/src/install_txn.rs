//! Install transactions: a journal in `STATE/journal/` where every step writes how to undo it
//! *before* it acts, so that a failure, or a crash of the installer at any point, can be rolled
//! back to exactly the state before the transaction.
//!
//! One file per transaction, `TXID.journal`: JSON lines, each fsynced. An undo entry is written
//! and synced before its step starts; undos are idempotent (removing what is not there, or
//! restoring a backup twice, is fine), so rolling back a step that never got to act is harmless.
//! `commit` deletes the file: a journal file that exists is an interrupted transaction, and
//! [`recover`] rolls it back — `jarfleet install` and the daemon call it when they start. The
//! journal file is locked (`flock`) while its installer runs, and `recover` skips locked ones.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// How to take back one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "undo", rename_all = "kebab-case")]
pub enum Undo {
    /// Remove a directory tree the step creates.
    RemoveDir { path: PathBuf },
    /// Put a file back as it was: from `backup`, or remove it when it did not exist.
    RestoreFile {
        path: PathBuf,
        backup: Option<PathBuf>,
    },
    /// Kill a process group the step starts (a hook), if it still runs that program.
    KillGroup { pgid: i32, program: PathBuf },
}

#[derive(Debug, Serialize, Deserialize)]
struct Line {
    step: String,
    #[serde(flatten)]
    undo: Undo,
}

/// An open transaction.
pub struct Journal {
    path: PathBuf,
    file: File,
    undos: Vec<Undo>,
    dir: PathBuf,
}

fn journal_dir(state_dir: &Path) -> PathBuf {
    crate::paths::StateDir::new(state_dir).install_journals()
}

impl Journal {
    /// Starts a transaction under `state_dir`.
    pub fn begin(state_dir: &Path, txid: &str) -> Result<Journal> {
        let dir = journal_dir(state_dir);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{txid}.journal"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("creating the install journal {}", path.display()))?;
        // Held for the transaction's life: `recover` leaves a live transaction alone.
        file.try_lock()
            .with_context(|| format!("locking the install journal {}", path.display()))?;
        sync_dir(&dir)?;
        Ok(Journal {
            path,
            file,
            undos: Vec::new(),
            dir,
        })
    }

    /// Where backups of this transaction go (inside the journal dir, removed at commit).
    pub fn backup_path(&self, name: &str) -> PathBuf {
        let stem = self
            .path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.dir.join(format!("{stem}.{name}.bak"))
    }

    /// Records `undo` for `step`, durably, before the caller acts.
    pub fn will(&mut self, step: &str, undo: Undo) -> Result<()> {
        let mut line = serde_json::to_vec(&Line {
            step: step.to_string(),
            undo: undo.clone(),
        })?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("writing the install journal {}", self.path.display()))?;
        self.undos.push(undo);
        Ok(())
    }

    /// Everything done is kept: the journal and its backups go.
    pub fn commit(self) -> Result<()> {
        for undo in &self.undos {
            if let Undo::RestoreFile {
                backup: Some(b), ..
            } = undo
            {
                let _ = fs::remove_file(b);
            }
        }
        fs::remove_file(&self.path)
            .with_context(|| format!("removing the install journal {}", self.path.display()))?;
        sync_dir(&self.dir)
    }

    /// Undoes every recorded step, newest first, then removes the journal.
    pub fn rollback(self) -> Result<()> {
        undo_all(&self.undos)?;
        fs::remove_file(&self.path)
            .with_context(|| format!("removing the install journal {}", self.path.display()))?;
        sync_dir(&self.dir)
    }
}

fn undo_all(undos: &[Undo]) -> Result<()> {
    for undo in undos.iter().rev() {
        apply_undo(undo)?;
    }
    Ok(())
}

fn apply_undo(undo: &Undo) -> Result<()> {
    match undo {
        Undo::RemoveDir { path } => match fs::remove_dir_all(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        },
        Undo::RestoreFile { path, backup } => match backup {
            Some(b) if b.exists() => {
                let tmp = path.with_extension("restore-tmp");
                fs::copy(b, &tmp)
                    .and_then(|_| File::open(&tmp)?.sync_all())
                    .and_then(|()| fs::rename(&tmp, path))
                    .with_context(|| {
                        format!("restoring {} from {}", path.display(), b.display())
                    })?;
                let _ = fs::remove_file(b);
            }
            // The backup went with a commit that was interrupted after it: the file is final.
            Some(_) => {}
            None => match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
            },
        },
        Undo::KillGroup { pgid, program } => {
            let runs_it = jarfleet_shim::procinfo::cmdline(*pgid)
                .is_some_and(|c| c.iter().any(|a| Path::new(a) == program.as_path()));
            if runs_it {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(*pgid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
    Ok(())
}

/// Rolls back every interrupted transaction under `state_dir`; returns what was rolled back
/// (one line per transaction, for the caller to show).
pub fn recover(state_dir: &Path) -> Result<Vec<String>> {
    let dir = journal_dir(state_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut journals: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "journal"))
        .collect();
    journals.sort();
    let mut done = Vec::new();
    for path in journals {
        let file = File::open(&path).with_context(|| format!("reading {}", path.display()))?;
        if file.try_lock().is_err() {
            continue; // an installer is running this transaction right now
        }
        let mut undos = Vec::new();
        let mut steps = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            // A torn last line is a step that never started: nothing to undo for it.
            let Ok(entry) = serde_json::from_str::<Line>(&line) else {
                continue;
            };
            steps.push(entry.step);
            undos.push(entry.undo);
        }
        undo_all(&undos)?;
        fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        done.push(format!(
            "rolled back the interrupted install {} (steps: {})",
            path.file_stem()
                .map(|s| s.to_string_lossy())
                .unwrap_or_default(),
            if steps.is_empty() {
                "none".to_string()
            } else {
                steps.join(", ")
            }
        ));
    }
    if !done.is_empty() {
        sync_dir(&dir)?;
    }
    Ok(done)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollback_undoes_newest_first_and_recover_finishes_an_abandoned_journal() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let state = tmp.path().join("state");
        let spec = tmp.path().join("jarfleet.toml");
        fs::write(&spec, "old").expect("write");
        let staging = tmp.path().join("staging");

        let mut j = Journal::begin(&state, "tx1").expect("begin");
        j.will(
            "extract",
            Undo::RemoveDir {
                path: staging.clone(),
            },
        )
        .expect("will");
        fs::create_dir_all(staging.join("app")).expect("mkdir");
        let backup = j.backup_path("spec");
        fs::copy(&spec, &backup).expect("backup");
        j.will(
            "spec",
            Undo::RestoreFile {
                path: spec.clone(),
                backup: Some(backup.clone()),
            },
        )
        .expect("will");
        fs::write(&spec, "new").expect("write");
        // While the installer runs, its transaction is left alone.
        assert!(recover(&state).expect("recover").is_empty());
        assert!(staging.exists());
        // The installer dies here: the journal stays behind, unlocked.
        drop(j);

        let done = recover(&state).expect("recover");
        assert_eq!(done.len(), 1, "{done:?}");
        assert!(done[0].contains("extract, spec"), "{done:?}");
        assert_eq!(fs::read_to_string(&spec).expect("read"), "old");
        assert!(!staging.exists());
        assert!(!backup.exists());
        assert!(recover(&state).expect("again").is_empty());

        let mut j = Journal::begin(&state, "tx2").expect("begin");
        let created = tmp.path().join("created.toml");
        j.will(
            "spec",
            Undo::RestoreFile {
                path: created.clone(),
                backup: None,
            },
        )
        .expect("will");
        fs::write(&created, "x").expect("write");
        j.rollback().expect("rollback");
        assert!(!created.exists());

        let mut j = Journal::begin(&state, "tx3").expect("begin");
        j.will(
            "extract",
            Undo::RemoveDir {
                path: staging.clone(),
            },
        )
        .expect("will");
        fs::create_dir_all(&staging).expect("mkdir");
        j.commit().expect("commit");
        assert!(staging.exists());
        assert!(recover(&state).expect("nothing").is_empty());
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("journal");
        fs::create_dir_all(&dir).expect("mkdir");
        let victim = tmp.path().join("victim");
        fs::create_dir_all(&victim).expect("mkdir");
        let line = serde_json::to_string(&Line {
            step: "extract".into(),
            undo: Undo::RemoveDir {
                path: victim.clone(),
            },
        })
        .expect("json");
        fs::write(dir.join("t.journal"), format!("{line}\n{{\"step\":\"spe")).expect("write");
        let done = recover(tmp.path()).expect("recover");
        assert_eq!(done.len(), 1);
        assert!(!victim.exists());
    }
}
