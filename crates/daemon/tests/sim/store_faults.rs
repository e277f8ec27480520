//! Failed store writes in the simulation: a simulated disk under the real store refuses a
//! seeded share of the loop's writes for a while (the errors SQLite gives on a full disk or an
//! I/O error), then recovers. The loop's `persist` keeps what was refused and writes it again;
//! the checks here say that nothing it acknowledged is lost once the disk takes writes again,
//! and what a daemon crash *during* such a period may lose (the writes kept in memory: known
//! and documented in docs/testing.md) without the next daemon going wrong.

use super::*;
use jarfleet_daemon::persist::Faults;
use jarfleet_daemon::store::Write;

/// The simulated disk under the store.
#[derive(Clone)]
pub struct Disk {
    state: Arc<Mutex<DiskState>>,
    clock: Arc<ManualClock>,
}

struct DiskState {
    rng: Rng,
    /// This schedule has failing periods at all (half of them do).
    enabled: bool,
    /// Writes are refused until then (epoch ms).
    failing_until: u64,
    /// The share of writes refused meanwhile (percent).
    share: u64,
    /// A full disk (`SQLITE_FULL`) or an I/O error (`SQLITE_IOERR`).
    io_error: bool,
    refused: u64,
}

impl Disk {
    /// `faulty`: this schedule may have failing periods (half of those do).
    pub fn new(seed: u64, clock: Arc<ManualClock>, faulty: bool) -> Disk {
        let mut rng = Rng::new(seed ^ 0xD15C_FA11);
        let enabled = rng.chance(50) && faulty;
        Disk {
            state: Arc::new(Mutex::new(DiskState {
                rng,
                enabled,
                failing_until: 0,
                share: 100,
                io_error: false,
                refused: 0,
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes fail from now for `ms`, `share` percent of them.
    pub fn fail_for(&self, ms: u64, share: u64, io_error: bool) {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        st.failing_until = now + ms;
        st.share = share;
        st.io_error = io_error;
    }

    pub fn refused(&self) -> u64 {
        self.lock().refused
    }

    /// A step of the fault phase: maybe the disk begins to fail (what, for the trace).
    pub fn maybe_fail(&self) -> Option<String> {
        let (ms, share, io_error) = {
            let mut st = self.lock();
            if !st.enabled || !st.rng.chance(8) {
                return None;
            }
            let ms = 500 + st.rng.below(40_000);
            let share = [100, 100, 60, 25][st.rng.below(4) as usize];
            (ms, share, st.rng.chance(30))
        };
        self.fail_for(ms, share, io_error);
        let what = if io_error { "I/O errors" } else { "full" };
        Some(format!(
            "disk {what} for {ms} ms ({share}% of writes refused)"
        ))
    }
}

impl Faults for Disk {
    fn refuse(&self, _writes: &[&Write]) -> Option<anyhow::Error> {
        let now = self.clock.now_ms();
        let mut st = self.lock();
        if now >= st.failing_until {
            return None;
        }
        let share = st.share;
        if !st.rng.chance(share) {
            return None;
        }
        st.refused += 1;
        // What SQLite answers (as the real store passes it on).
        let (code, text) = if st.io_error {
            (rusqlite::ffi::SQLITE_IOERR_WRITE, "disk I/O error")
        } else {
            (rusqlite::ffi::SQLITE_FULL, "database or disk is full")
        };
        Some(anyhow::Error::new(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(code),
            Some(text.to_string()),
        )))
    }
}

/// The loop's store health, from `status`.
fn writable(status: &StatusReport) -> bool {
    status.daemon.store.as_ref().is_none_or(|s| s.writable)
}

impl Sim {
    /// `status` with nothing delivered after it (the loop's state as it is now: after a
    /// `pump`, what it wrote).
    pub(super) fn status_quiet(&mut self) -> Result<StatusReport, Failure> {
        let (reply, mut rx) = oneshot::channel();
        self.control()?.handle(ApiRequest::Status { reply }.into());
        match rx.try_recv() {
            Ok(r) => Ok(r),
            Err(_) => Err(self.fail("status got no answer")),
        }
    }

    /// The simulation's own connection to the store, for its checks: opened once per
    /// schedule, and kept across daemon crashes (as an operator's `events -f` would be).
    pub(super) fn store(&mut self) -> Result<Rc<Store>, Failure> {
        if let Some(store) = &self.reader {
            return Ok(store.clone());
        }
        let store = Store::open(&self.dirs().db())
            .map_err(|e| self.fail(format!("reading the store: {e:#}")))?;
        let store = Rc::new(store);
        self.reader = Some(store.clone());
        Ok(store)
    }

    /// Every event any daemon emitted is in the store, once, in the order emitted — but for
    /// those the daemon running now still keeps in memory while the store fails: the newest
    /// ones, none of them stored. Returns how many are kept.
    pub(super) fn check_events(&mut self) -> Result<usize, Failure> {
        self.pump()?;
        let status = self.status_quiet()?;
        if let Err(v) = self.collect_events() {
            return Err(self.fail(v));
        }
        // The events found stored at an earlier check are not read again: the store keeps what
        // it once had (nothing is pruned within a schedule), and what a crash lost was taken out
        // of `emitted` (so the checked part can only shrink with it).
        let verified = self.events_verified.min(self.emitted.len());
        let after = verified.checked_sub(1).map_or(0, |i| self.emitted[i].id);
        let stored = self
            .store()?
            .events_after(after, 1 << 20)
            .map_err(|e| self.fail(format!("reading events: {e:#}")))?;
        let emitted = &self.emitted[verified..];
        // Every stored event was emitted, in the same order, with the same content.
        let key = |e: &EventRecord| (e.id, e.kind.clone(), e.message.clone());
        let stored_keys: Vec<_> = stored.iter().map(key).collect();
        let emitted_keys: Vec<_> = emitted.iter().map(key).collect();
        if stored_keys.len() > emitted_keys.len()
            || stored_keys[..] != emitted_keys[..stored_keys.len()]
        {
            let at = stored_keys
                .iter()
                .zip(&emitted_keys)
                .position(|(a, b)| a != b)
                .unwrap_or(stored_keys.len().min(emitted_keys.len()));
            return Err(self.fail(format!(
                "the stored events are not the emitted ones, once each, in order: at #{} stored {:?}, emitted {:?} ({} stored, {} emitted)",
                verified + at,
                stored_keys.get(at),
                emitted_keys.get(at),
                verified + stored_keys.len(),
                verified + emitted_keys.len()
            )));
        }
        let kept = emitted_keys.len() - stored_keys.len();
        let now_verified = verified + stored_keys.len();
        if kept > 0 && writable(&status) {
            let first = &emitted[stored_keys.len()];
            return Err(self.fail(format!(
                "event {} ({}) was emitted but is not in the store, and the store takes writes ({kept} missing)",
                first.id, first.kind
            )));
        }
        let dropped = status.daemon.store.as_ref().map_or(0, |s| s.events_dropped);
        if dropped > 0 {
            return Err(self.fail(format!(
                "{dropped} events were dropped from the loop's queue of kept writes"
            )));
        }
        self.events_verified = now_verified;
        Ok(kept)
    }

    /// Once writes succeed again, the store holds what the loop holds: each instance's release,
    /// generation and process, the app's release, and the deployment under way (or none).
    fn check_records(&mut self, status: &StatusReport) -> Result<(), Failure> {
        let store = self.store()?;
        let instances = store
            .instances()
            .map_err(|e| self.fail(format!("reading instances: {e:#}")))?;
        let apps = store
            .apps()
            .map_err(|e| self.fail(format!("reading apps: {e:#}")))?;
        let deployments = store
            .deployments(Some(APP))
            .map_err(|e| self.fail(format!("reading deployments: {e:#}")))?;
        drop(store);
        for app in &status.apps {
            let held: BTreeMap<u32, (String, Option<u32>)> = app
                .instances
                .iter()
                .map(|i| (i.slot, (i.release.clone(), i.pid)))
                .collect();
            let stored: BTreeMap<u32, (String, Option<u32>)> = instances
                .iter()
                .filter(|r| r.instance.app == app.name)
                .map(|r| {
                    let pid = r.instance.process.as_ref().map(|p| p.pid);
                    (r.instance.slot, (r.instance.release.clone(), pid))
                })
                .collect();
            if held != stored {
                return Err(self.fail(format!(
                    "the store's instances of {} are not the loop's once writes succeed: loop {held:?}, store {stored:?}",
                    app.name
                )));
            }
            let release = apps
                .iter()
                .find(|(n, _)| *n == app.name)
                .map(|(_, r)| r.release.clone());
            if release.as_deref() != Some(app.release.as_str()) {
                return Err(self.fail(format!(
                    "the store says {} runs {release:?}, the loop {}",
                    app.name, app.release
                )));
            }
            let open: Vec<String> = deployments
                .iter()
                .filter(|d| d.outcome == "running" || d.outcome == "rolling-back")
                .map(|d| format!("#{} {} → {} {}", d.id, d.from, d.to, d.outcome))
                .collect();
            let want: Vec<String> = app.deployment.iter().cloned().collect();
            if open != want {
                return Err(self.fail(format!(
                    "the store's open deployments of {} are {open:?}, the loop's {want:?}",
                    app.name
                )));
            }
        }
        Ok(())
    }

    /// Before a daemon crash: with the store taking writes, it must hold exactly the loop's
    /// state. While writes fail, what the loop kept in memory is lost with it (known, and
    /// documented): its events are forgotten here (the next daemon hands out their ids again),
    /// and the shims whose records were lost are left running as strays by the real daemon —
    /// here the operator stops them (`jarfleet down --strays`) so that the fleet can be judged.
    /// Returns whether writes were lost.
    pub(super) fn before_crash(&mut self) -> Result<bool, Failure> {
        let kept = self.check_events()?;
        let status = self.status_quiet()?;
        if writable(&status) {
            self.check_records(&status)?;
            return Ok(false);
        }
        let stored = self.emitted.len() - kept;
        for e in self.emitted.split_off(stored) {
            let at = e.ts.saturating_sub(START_MS) as f64 / 1000.0;
            let line = e.message.lines().next().unwrap_or("").to_string();
            self.note(format!(
                "lost with the daemon: t={at:.1}s {} {:?} {line}",
                e.kind, e.slot
            ));
        }
        self.stats.lost_events += kept;
        self.stats.lossy_crashes += 1;
        Ok(true)
    }

    /// After a crash that lost kept writes, before the next daemon starts: shims no stored
    /// instance record accounts for (stray) are stopped, as an operator would (`jarfleet down
    /// --strays`; the real daemon leaves them running and reports them).
    pub(super) fn stop_strays(&mut self) -> Result<(), Failure> {
        let store = self.store()?;
        let records = store
            .instances()
            .map_err(|e| self.fail(format!("reading instances: {e:#}")))?;
        drop(store);
        let now = self.now();
        let mut st = self.host.lock();
        let mut stopped = Vec::new();
        // Those being stopped too: their shims kill them within the grace anyway, but the next
        // daemon does not know them and may start their slot again meanwhile.
        for p in st.procs.iter_mut().filter(|p| p.alive) {
            let known = records.iter().any(|r| {
                r.instance.app == p.app && r.instance.slot == p.slot && r.generation == p.generation
            });
            if !known {
                p.alive = false;
                p.reported = true;
                p.exit = Some(ExitInfo {
                    code: Some(143),
                    signal: Some(15),
                    stop_requested: true,
                    killed_after_timeout: false,
                    oom: false,
                    hs_err: None,
                    at: now,
                });
                stopped.push(format!("{}/{} gen {}", p.app, p.slot, p.generation));
            }
        }
        drop(st);
        if !stopped.is_empty() {
            self.stats.strays += stopped.len();
            self.note(format!(
                "strays stopped by the operator: {}",
                stopped.join(", ")
            ));
        }
        Ok(())
    }

    /// The settled fleet while the disk fails, with a scale up asking for writes: nothing
    /// healthy is stopped, the new instance becomes ready, and once the disk recovers the loop
    /// writes what it kept; a daemon crash then loses nothing.
    pub(super) async fn quiet_outage(&mut self) -> Result<(), Failure> {
        if !self.disk.lock().enabled {
            return Ok(());
        }
        let (ms, share, io_error) = {
            let mut st = self.disk.lock();
            (
                2_000 + st.rng.below(60_000),
                [100, 50][st.rng.below(2) as usize],
                st.rng.chance(50),
            )
        };
        let healthy: Vec<u32> = self
            .host
            .lock()
            .procs
            .iter()
            // Not those a daemon asked to stop before it crashed while writes failed: the next
            // one may take them for running, and they end as that one asked.
            .filter(|p| p.alive && !p.stop_requested)
            .map(|p| p.pid)
            .collect();
        self.disk.fail_for(ms, share, io_error);
        self.note(format!(
            "quiet: disk fails for {ms} ms ({share}% of writes refused)"
        ));
        let to = self.status()?.apps.first().map_or(1, |a| a.desired) + 1;
        let r = self.scale(to)?;
        self.note(format!("scale to {to}: {}", answer(&r)));
        let end = self.now() + ms;
        let from = self.emitted.len();
        while self.now() < end {
            self.advance(1_000)?;
            if self.emitted[from.min(self.emitted.len())..]
                .iter()
                .any(|e| e.kind == "deploy.started")
            {
                // An etcd change that waited (for a deployment, or for the store) went out: its
                // deployment replaces instances, which is not the outage's doing.
                self.note("quiet: a waiting etcd change went out".into());
                break;
            }
            let st = self.host.lock();
            let hurt: Vec<String> = st
                .procs
                .iter()
                .filter(|p| healthy.contains(&p.pid) && (!p.alive || p.stop_requested))
                .map(|p| {
                    format!(
                        "{}/{} gen {} (alive {}, asked to stop {}, exit {:?})",
                        p.app, p.slot, p.generation, p.alive, p.stop_requested, p.exit
                    )
                })
                .collect();
            drop(st);
            if !hurt.is_empty() {
                return Err(self.fail(format!(
                    "healthy instances were stopped while store writes failed: {}",
                    hurt.join(", ")
                )));
            }
        }
        let mut waited = 0;
        while let Some(why) = self.settled()? {
            if waited > 60_000 {
                return Err(self.fail(format!(
                    "not settled a minute after a store outage without other faults: {why}"
                )));
            }
            self.advance(1_000)?;
            waited += 1_000;
        }
        // The kept writes go out within a retry or two.
        let mut waited = 0;
        while !writable(&self.status()?) {
            if waited > 10_000 {
                return Err(self.fail(format!(
                    "the store is still not written {waited} ms after the disk recovered"
                )));
            }
            self.advance(500)?;
            waited += 500;
        }
        self.note("quiet: the store is written again".into());
        Ok(())
    }
}
