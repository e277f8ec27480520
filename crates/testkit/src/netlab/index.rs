//! Lab indexes: which of the 512 subnets (and so which names) a lab uses.
//!
//! Tests run in parallel processes (nextest runs each test in its own), so an index is claimed
//! with an exclusive `flock` on `DIR/<index>.lock`, held for the lab's life. The kernel drops
//! the lock when its holder exits, however it exits: an index whose holder crashed becomes free
//! again, with the crashed lab's namespaces and links possibly still there for the next holder
//! to clear (it alone may: nobody else holds the index). The lock files themselves stay:
//! removing a lock file that another process may be opening would let two processes hold
//! "the" lock at once.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::Error;
use super::names::{INDEXES, LabId};

/// Where the lock files live: `/run` is a tmpfs, cleared at boot like the labs themselves.
pub const LOCK_DIR: &str = "/run/jarfleet-netlab";

/// An index claimed for as long as this value lives.
#[derive(Debug)]
pub struct Claim {
    id: LabId,
    _lock: Flock<File>,
}

impl Claim {
    pub fn id(&self) -> LabId {
        self.id
    }
}

/// Claims a free index in `dir`, trying them all from a starting point that differs between
/// processes (so parallel tests rarely contend for the same lock).
pub fn claim(dir: &Path) -> Result<Claim, Error> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        what: format!("creating the lab lock dir {}", dir.display()),
        source,
    })?;
    let start = entropy() % u64::from(INDEXES);
    for step in 0..INDEXES {
        let index = ((start + u64::from(step)) % u64::from(INDEXES)) as u16;
        let path = lock_path(dir, index);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|source| Error::Io {
                what: format!("opening the lab lock file {}", path.display()),
                source,
            })?;
        // Held by another lab (of this process or another): try the next index.
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            let id = LabId::new(index).expect("index < INDEXES");
            return Ok(Claim { id, _lock: lock });
        }
    }
    Err(Error::NoFreeIndex(INDEXES, dir.to_path_buf()))
}

fn lock_path(dir: &Path, index: u16) -> PathBuf {
    dir.join(format!("{index}.lock"))
}

/// A number that differs between processes and calls.
fn entropy() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    u64::from(nanos) ^ u64::from(std::process::id()).wrapping_mul(2_654_435_761)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_held_at_once_differ_and_a_released_one_is_free_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let claims: Vec<Claim> = (0..5)
            .map(|_| claim(dir.path()).expect("a free index"))
            .collect();
        let mut indexes: Vec<u16> = claims.iter().map(|c| c.id().index()).collect();
        indexes.sort_unstable();
        indexes.dedup();
        assert_eq!(indexes.len(), 5, "an index handed out twice: {indexes:?}");

        let held = claims[0].id();
        let file = File::open(lock_path(dir.path(), held.index())).expect("its lock file");
        assert!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_err(),
            "a claimed index is locked"
        );
        drop(claims);
        let file = File::open(lock_path(dir.path(), held.index())).expect("its lock file");
        assert!(
            Flock::lock(file, FlockArg::LockExclusiveNonblock).is_ok(),
            "a released index is free"
        );
    }

    #[test]
    fn every_index_taken_is_an_error_naming_the_dir() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _all: Vec<Claim> = (0..INDEXES)
            .map(|_| claim(dir.path()).expect("a free index"))
            .collect();
        let err = claim(dir.path()).expect_err("none left");
        assert!(
            err.to_string().contains(&dir.path().display().to_string()),
            "{err}"
        );
    }
}
