//! The control loop's writes to the store when the store does not take them (a full disk).
//!
//! Every write is tried at once. One that fails starts a *failing* period: from then on writes
//! are kept in memory — instance and app records, deployments and settings by what they are
//! about (the latest state wins), events in order in a bounded queue (the oldest dropped and
//! counted beyond [`EVENT_QUEUE`]) — and every [`RETRY_MS`] all of them are written again in one
//! transaction. The period ends when that succeeds (and a store opened for the daemon alone at a
//! start on a full disk has been opened normally again: [`Persist::degraded`]).
//!
//! Nothing here stops or slows the loop: supervision and load balancing go on from memory; what
//! is lost if the daemon dies before the disk has room again is what was kept.

use std::collections::{BTreeMap, VecDeque};

use jarfleet_api::EventRecord;

use crate::store::{Store, Write, WriteKey};

/// How often kept writes are tried again.
pub const RETRY_MS: u64 = 1000;
/// Events kept while the store fails; older ones are dropped (and counted) beyond this.
pub const EVENT_QUEUE: usize = 2000;

/// Free space under this is a full disk (`status`, `/metrics`).
pub const DISK_FULL_BELOW: u64 = 1024 * 1024;

/// Free space on the file system of `dir`, for an unprivileged writer (none if unknown).
pub fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Where writes go: the store, or a test's stand-in.
pub trait Target {
    /// All of `writes`, or none.
    fn take(&self, writes: &[&Write]) -> anyhow::Result<()>;
}

impl Target for Store {
    fn take(&self, writes: &[&Write]) -> anyhow::Result<()> {
        self.write_all(writes)
    }
}

/// Writes the store is made to refuse, as a full disk or an I/O error would: a simulation's
/// hook (the real daemon has none; see `control::World`).
pub trait Faults: Send + Sync {
    /// The error the store gives for `writes` now, or `None` to let them through.
    fn refuse(&self, writes: &[&Write]) -> Option<anyhow::Error>;
}

/// The store behind the loop's fault hook, if it has one.
pub struct Guarded<'a> {
    pub store: &'a Store,
    pub faults: Option<&'a dyn Faults>,
}

impl Guarded<'_> {
    fn refused(&self, writes: &[&Write]) -> anyhow::Result<()> {
        match self.faults.and_then(|f| f.refuse(writes)) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records a new deployment (written at once: its id comes from the store).
    pub fn insert_deployment(&self, rec: &jarfleet_api::DeploymentRecord) -> anyhow::Result<i64> {
        self.refused(&[&Write::Deployment(Box::new(rec.clone()))])?;
        self.store.put_deployment(rec)
    }
}

impl Target for Guarded<'_> {
    fn take(&self, writes: &[&Write]) -> anyhow::Result<()> {
        self.refused(writes)?;
        self.store.write_all(writes)
    }
}

/// A change of the store's state, for the loop to report (event, log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Writes began to fail: this one's error.
    Failing { error: String },
    /// Everything kept was written.
    Recovered {
        failed_for_ms: u64,
        /// Writes kept and written now (after coalescing).
        written: usize,
        /// Events dropped from the full queue in that period.
        events_dropped: u64,
    },
}

/// The store's health, for `status`, `/metrics` and `doctor`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Health {
    /// Since when writes fail (epoch ms), if they do.
    pub failing_since: Option<u64>,
    pub last_error: Option<String>,
    /// Writes waiting (records by key, events).
    pub pending: usize,
    /// Failed writes and retries since the daemon started.
    pub write_errors: u64,
    /// Events dropped from the full queue since the daemon started.
    pub events_dropped: u64,
    /// The store was opened for this daemon alone (a start on a full disk): other readers
    /// (event listings) wait until it is opened normally again.
    pub degraded: bool,
}

struct Trouble {
    since: u64,
    error: String,
    events_dropped: u64,
}

#[derive(Default)]
pub struct Persist {
    keyed: BTreeMap<WriteKey, (u64, Write)>,
    events: VecDeque<EventRecord>,
    seq: u64,
    trouble: Option<Trouble>,
    next_retry: u64,
    write_errors: u64,
    events_dropped: u64,
    degraded: bool,
}

impl Persist {
    /// `degraded`: the store could only be opened for the daemon alone (`Store::open_exclusive`),
    /// for that reason; the daemon starts in a failing period.
    pub fn new(degraded: Option<String>, now: u64) -> Persist {
        let mut p = Persist::default();
        if let Some(error) = degraded {
            p.degraded = true;
            p.trouble = Some(Trouble {
                since: now,
                error,
                events_dropped: 0,
            });
            p.next_retry = now + RETRY_MS;
        }
        p
    }

    /// Writes `w` now, or keeps it: while earlier writes wait (they go first), or when it fails.
    /// Returns `Failing` when this write began a failing period.
    pub fn write(&mut self, target: &impl Target, w: Write, now: u64) -> Option<Change> {
        if self.trouble.is_some() {
            self.keep(w);
            return None;
        }
        match target.take(&[&w]) {
            Ok(()) => None,
            Err(e) => {
                self.keep(w);
                self.refused(format!("{e:#}"), now)
            }
        }
    }

    /// A write failed: one of ours (kept by the caller), or one made straight to the store (one
    /// that cannot wait: a new deployment's record). A failing period begins, so that what
    /// waits for the store's recovery is told when it comes. Returns `Failing` when it began one.
    pub fn refused(&mut self, error: String, now: u64) -> Option<Change> {
        self.write_errors += 1;
        if self.trouble.is_some() {
            return None;
        }
        self.trouble = Some(Trouble {
            since: now,
            error: error.clone(),
            events_dropped: 0,
        });
        self.next_retry = now + RETRY_MS;
        Some(Change::Failing { error })
    }

    fn keep(&mut self, w: Write) {
        match (w.key(), w) {
            (Some(key), w) => {
                self.seq += 1;
                self.keyed.insert(key, (self.seq, w));
            }
            (None, Write::Event(e)) => {
                if self.events.len() >= EVENT_QUEUE {
                    self.events.pop_front();
                    self.events_dropped += 1;
                    if let Some(t) = &mut self.trouble {
                        t.events_dropped += 1;
                    }
                }
                self.events.push_back(e);
            }
            // Every write but an event has a key.
            (None, _) => {}
        }
    }

    /// When kept writes are to be tried again.
    pub fn next_retry(&self) -> Option<u64> {
        self.trouble.as_ref().map(|_| self.next_retry)
    }

    pub fn due(&self, now: u64) -> bool {
        self.next_retry().is_some_and(|t| t <= now)
    }

    pub fn degraded(&self) -> bool {
        self.degraded
    }

    /// Writes everything kept, in the order it was written (records by their latest version),
    /// in one transaction. `Err` (kept, tried again in [`RETRY_MS`]) or `Ok(written)`.
    pub fn flush(&mut self, target: &impl Target, now: u64) -> Result<usize, String> {
        let mut keyed: Vec<&(u64, Write)> = self.keyed.values().collect();
        keyed.sort_by_key(|(seq, _)| *seq);
        let events: Vec<Write> = self.events.iter().cloned().map(Write::Event).collect();
        let all: Vec<&Write> = keyed.iter().map(|(_, w)| w).chain(events.iter()).collect();
        let count = all.len();
        if count > 0
            && let Err(e) = target.take(&all)
        {
            let error = format!("{e:#}");
            self.write_errors += 1;
            self.next_retry = now + RETRY_MS;
            if let Some(t) = &mut self.trouble {
                t.error = error.clone();
            }
            return Err(error);
        }
        self.keyed.clear();
        self.events.clear();
        Ok(count)
    }

    /// A degraded store that could not be opened normally yet (tried again in [`RETRY_MS`]).
    pub fn still_degraded(&mut self, error: String, now: u64) {
        self.next_retry = now + RETRY_MS;
        if let Some(t) = &mut self.trouble {
            t.error = error;
        }
    }

    /// The store was opened normally again.
    pub fn reopened(&mut self) {
        self.degraded = false;
    }

    /// Ends the failing period once nothing waits and the store is open normally.
    pub fn recovered(&mut self, written: usize, now: u64) -> Option<Change> {
        if self.degraded || !self.keyed.is_empty() || !self.events.is_empty() {
            return None;
        }
        let t = self.trouble.take()?;
        Some(Change::Recovered {
            failed_for_ms: now.saturating_sub(t.since),
            written,
            events_dropped: t.events_dropped,
        })
    }

    pub fn health(&self) -> Health {
        Health {
            failing_since: self.trouble.as_ref().map(|t| t.since),
            last_error: self.trouble.as_ref().map(|t| t.error.clone()),
            pending: self.keyed.len() + self.events.len(),
            write_errors: self.write_errors,
            events_dropped: self.events_dropped,
            degraded: self.degraded,
        }
    }

    /// Events kept, not yet in the store (newest last).
    pub fn kept_events(&self) -> impl Iterator<Item = &EventRecord> {
        self.events.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};

    /// A store that fails while `full` is set, and records what it took.
    #[derive(Default)]
    struct Disk {
        full: Cell<bool>,
        taken: RefCell<Vec<String>>,
    }

    impl Target for Disk {
        fn take(&self, writes: &[&Write]) -> anyhow::Result<()> {
            if self.full.get() {
                anyhow::bail!("database or disk is full");
            }
            self.taken
                .borrow_mut()
                .extend(writes.iter().map(|w| describe(w)));
            Ok(())
        }
    }

    fn describe(w: &Write) -> String {
        match w {
            Write::Meta { key, value } => format!("{key}={value}"),
            Write::Event(e) => format!("event {}", e.id),
            Write::DeleteApp(a) => format!("delete {a}"),
            other => format!("{other:?}"),
        }
    }

    fn meta(key: &str, value: &str) -> Write {
        Write::Meta {
            key: key.into(),
            value: value.into(),
        }
    }

    fn event(id: i64) -> Write {
        Write::Event(EventRecord {
            id,
            ts: 0,
            kind: "k".into(),
            app: None,
            slot: None,
            message: String::new(),
        })
    }

    #[test]
    fn writes_go_straight_through_while_the_store_takes_them() {
        let disk = Disk::default();
        let mut p = Persist::new(None, 0);
        assert_eq!(p.write(&disk, meta("a", "1"), 0), None);
        assert_eq!(p.write(&disk, event(1), 0), None);
        assert_eq!(*disk.taken.borrow(), ["a=1", "event 1"]);
        assert_eq!(p.health(), Health::default());
        assert_eq!(p.next_retry(), None);
    }

    #[test]
    fn failed_writes_are_kept_coalesced_and_written_in_order_when_room_returns() {
        let disk = Disk::default();
        let mut p = Persist::new(None, 0);
        disk.full.set(true);
        let began = p.write(&disk, meta("a", "1"), 100);
        assert!(matches!(began, Some(Change::Failing { error }) if error.contains("full")));
        // Kept from now on, even before a retry: earlier writes go first.
        assert_eq!(p.write(&disk, event(7), 200), None);
        assert_eq!(p.write(&disk, meta("b", "1"), 300), None);
        assert_eq!(p.write(&disk, meta("a", "2"), 400), None);
        assert_eq!(p.write(&disk, event(8), 500), None);
        let h = p.health();
        assert_eq!(
            (h.failing_since, h.pending, h.write_errors),
            (Some(100), 4, 1)
        );
        assert_eq!(p.next_retry(), Some(100 + RETRY_MS));
        assert!(!p.due(1000) && p.due(1100));
        // Still full: nothing written, tried again later.
        assert!(p.flush(&disk, 1100).is_err());
        assert_eq!(p.next_retry(), Some(1100 + RETRY_MS));
        assert_eq!(p.health().write_errors, 2);
        disk.full.set(false);
        assert_eq!(p.flush(&disk, 2100), Ok(4));
        // `b` then the latest `a` (which was written after it), then the events in order.
        assert_eq!(*disk.taken.borrow(), ["b=1", "a=2", "event 7", "event 8"]);
        assert_eq!(
            p.recovered(4, 2100),
            Some(Change::Recovered {
                failed_for_ms: 2000,
                written: 4,
                events_dropped: 0
            })
        );
        assert_eq!(p.health().failing_since, None);
        assert_eq!(p.write(&disk, meta("c", "1"), 2200), None);
        assert_eq!(disk.taken.borrow().last().map(String::as_str), Some("c=1"));
    }

    #[test]
    fn a_direct_write_that_failed_begins_a_failing_period_that_the_next_retry_ends() {
        let disk = Disk::default();
        let mut p = Persist::new(None, 0);
        let began = p.refused("database or disk is full".into(), 100);
        assert!(matches!(began, Some(Change::Failing { .. })));
        assert_eq!(p.refused("again".into(), 150), None, "one period");
        assert_eq!(p.health().write_errors, 2);
        assert!(p.due(100 + RETRY_MS));
        // Nothing was kept: the retry writes nothing and ends the period.
        assert_eq!(p.flush(&disk, 100 + RETRY_MS), Ok(0));
        assert!(matches!(
            p.recovered(0, 100 + RETRY_MS),
            Some(Change::Recovered { written: 0, .. })
        ));
    }

    #[test]
    fn a_full_event_queue_drops_the_oldest_and_counts_them() {
        let disk = Disk::default();
        let mut p = Persist::new(None, 0);
        disk.full.set(true);
        for id in 1..=(EVENT_QUEUE as i64 + 5) {
            p.write(&disk, event(id), 0);
        }
        // The one whose write failed is kept like the others.
        assert_eq!(p.health().events_dropped, 5);
        assert_eq!(p.kept_events().next().map(|e| e.id), Some(6));
        disk.full.set(false);
        assert_eq!(p.flush(&disk, RETRY_MS), Ok(EVENT_QUEUE));
        assert!(matches!(
            p.recovered(EVENT_QUEUE, RETRY_MS),
            Some(Change::Recovered {
                events_dropped: 5,
                ..
            })
        ));
    }

    #[test]
    fn a_degraded_start_recovers_only_once_the_store_is_reopened() {
        let disk = Disk::default();
        let mut p = Persist::new(Some("disk I/O error".into()), 0);
        assert!(p.degraded() && p.health().degraded);
        assert_eq!(p.health().failing_since, Some(0));
        p.write(&disk, meta("a", "1"), 10);
        assert_eq!(p.flush(&disk, RETRY_MS), Ok(1));
        assert_eq!(p.recovered(1, RETRY_MS), None, "still degraded");
        p.still_degraded("disk I/O error".into(), RETRY_MS);
        assert_eq!(p.next_retry(), Some(2 * RETRY_MS));
        p.reopened();
        assert!(matches!(
            p.recovered(0, 2 * RETRY_MS),
            Some(Change::Recovered { failed_for_ms, .. }) if failed_for_ms == 2 * RETRY_MS
        ));
    }
}
