//! The load balancer's data plane, simulated: the loop's [`DataPlane`] without sockets.
//!
//! It keeps the last snapshot the loop pushed per app and, as simulated time passes, "sends
//! requests" to the backends of that snapshot with a weight above 0 (picked by weight); a
//! request lasts a random while (mostly short, now and then longer than a drain timeout), and
//! each backend's requests in flight are tracked, also after it left the snapshot. A request to
//! a backend whose fake process is dead fails, and so do those in flight on a process that
//! dies (counted). `in_flight` answers from that; a drain being watched is reported
//! (`BalancerNote::Drained`) once its backend has nothing in flight or its timeout passed.
//!
//! It is part of the daemon: a daemon crash takes it down with the requests in flight
//! ([`SimBalancer::crash`]), and the next daemon starts with no listener.
//!
//! What it checks ([`SimBalancer::round`], [`SimBalancer::check_snapshot`],
//! [`SimBalancer::check_settled`]):
//! - no fake process gets its stop command while requests are in flight on it, unless its
//!   drain timeout had passed (the loop then stops it anyway, by design) — a process that died
//!   first gets no stop command at all;
//! - a backend in a snapshot with a weight above 0 is a ready instance whose process is alive
//!   (or has just crashed and the loop has not been told yet);
//! - once the fleet has settled, every ready instance is in its app's snapshot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jarfleet_api::StatusReport;
use jarfleet_daemon::clock::{Clock, ManualClock};
use jarfleet_daemon::control::Event;
use jarfleet_daemon::control::data_plane::{BackendEntry, BalancerNote, DataPlane, DrainRequest};
use jarfleet_proxy::{BackendStats, CounterView, FrontView, ListenerConfig, ListenerStats};
use tokio::sync::mpsc;

use crate::world::Rng;

/// A fake process as the balancer needs to know it (from the simulated host).
#[derive(Debug, Clone)]
pub struct ProcView {
    pub app: String,
    pub slot: u32,
    pub generation: u64,
    pub pid: u32,
    pub alive: bool,
    /// Its exit was reported to the loop.
    pub reported: bool,
}

/// One backend the data plane knows: in the snapshot, or removed with requests still in flight.
#[derive(Debug, Clone)]
struct BackendState {
    entry: BackendEntry,
    in_snapshot: bool,
    /// When each request in flight ends (simulated ms).
    in_flight: Vec<u64>,
    /// Requests answered.
    answered: u64,
    /// Requests that failed: sent to a dead process, or in flight when it died.
    failed: u64,
}

#[derive(Debug)]
struct SimListener {
    listen: SocketAddr,
    backends: BTreeMap<String, BackendState>,
    /// Requests that found no backend with a weight above 0.
    no_backend: u64,
}

#[derive(Debug)]
struct Watch {
    req: DrainRequest,
    started: u64,
    /// `Drained` was sent; kept (for the stop check) while the backend is known.
    done: bool,
}

impl Watch {
    fn deadline(&self) -> u64 {
        self.started
            .saturating_add(u64::try_from(self.req.timeout.as_millis()).unwrap_or(u64::MAX))
    }
}

/// What the simulated balancer did in one schedule (for the summary).
#[derive(Debug, Default, Clone, Copy)]
pub struct Traffic {
    pub requests: u64,
    pub failed: u64,
    /// Drains that ended with nothing in flight any more.
    pub drained: u64,
    /// Drains that ran out of time with requests still in flight.
    pub drain_timeouts: u64,
    /// Stops sent while requests were in flight, after the drain timeout (allowed).
    pub stopped_after_timeout: u64,
}

struct State {
    rng: Rng,
    listeners: BTreeMap<String, SimListener>,
    watches: Vec<Watch>,
    /// The time requests have been sent up to.
    sent_until: u64,
    traffic: Traffic,
}

/// The simulated data plane (cheap to clone: one shared state).
#[derive(Clone)]
pub struct SimBalancer {
    state: Arc<Mutex<State>>,
    clock: Arc<ManualClock>,
}

/// Requests per simulated second to each app with a listener.
const REQUESTS_PER_SECOND: u64 = 10;
/// At most this many requests are simulated in one round (a long hop sends fewer).
const MAX_PER_ROUND: u64 = 400;

impl Traffic {
    pub fn add(&mut self, o: &Traffic) {
        self.requests += o.requests;
        self.failed += o.failed;
        self.drained += o.drained;
        self.drain_timeouts += o.drain_timeouts;
        self.stopped_after_timeout += o.stopped_after_timeout;
    }
}

impl SimBalancer {
    pub fn new(seed: u64, clock: Arc<ManualClock>) -> SimBalancer {
        let now = clock.now_ms();
        SimBalancer {
            state: Arc::new(Mutex::new(State {
                rng: Rng::new(seed ^ 0x0BA1_A9CE_D0DA_7A00),
                listeners: BTreeMap::new(),
                watches: Vec::new(),
                sent_until: now,
                traffic: Traffic::default(),
            })),
            clock,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn traffic(&self) -> Traffic {
        self.lock().traffic
    }

    /// The daemon died, and its data plane with it: every request in flight fails, every
    /// listener and watch is gone.
    pub fn crash(&self) {
        let mut st = self.lock();
        let lost: u64 = st
            .listeners
            .values()
            .flat_map(|l| l.backends.values())
            .map(|b| b.in_flight.len() as u64)
            .sum();
        st.traffic.failed += lost;
        st.listeners.clear();
        st.watches.clear();
    }

    /// When a watched drain next ends (its last request or its timeout), for the clock's hops.
    pub fn next_deadline(&self) -> u64 {
        let st = self.lock();
        st.watches
            .iter()
            .filter(|w| !w.done)
            .map(|w| {
                let timeout = w.deadline();
                let last = st
                    .listeners
                    .get(&w.req.app)
                    .and_then(|l| l.backends.get(&w.req.backend))
                    .and_then(|b| b.in_flight.iter().max().copied())
                    .unwrap_or(0);
                timeout.min(last)
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// One round at `now`: first the stop commands the host just received are checked against
    /// what is in flight (the state the loop saw when it sent them), then requests are sent over
    /// the time since the last round, ended ones are answered, those on dead processes fail,
    /// and drains that are over are reported. `Err`: an invariant broke.
    pub fn round(
        &self,
        now: u64,
        stops: &[(String, u32, u64)],
        procs: &[ProcView],
    ) -> Result<Vec<Event>, String> {
        let mut st = self.lock();
        for (app, slot, generation) in stops {
            let Some(b) = st.listeners.get(app).and_then(|l| {
                l.backends
                    .values()
                    .find(|b| b.entry.slot == *slot && b.entry.generation == *generation)
            }) else {
                continue;
            };
            let in_flight = b.in_flight.len();
            if in_flight == 0 {
                continue;
            }
            let id = b.entry.id.clone();
            let timed_out = st
                .watches
                .iter()
                .any(|w| w.req.app == *app && w.req.backend == id && now >= w.deadline());
            // The drain timeout passed with requests still running: the loop stops the
            // instance anyway (`drain_timeout`), which is what it is for.
            if timed_out {
                st.traffic.stopped_after_timeout += 1;
                continue;
            }
            let watch = st
                .watches
                .iter()
                .find(|w| w.req.app == *app && w.req.backend == id)
                .map(|w| format!("its drain began at t={:.1}s", rel(w.started)))
                .unwrap_or_else(|| "no drain was asked for".into());
            return Err(format!(
                "{app}/{slot} gen {generation} was told to stop with {in_flight} request(s) in flight on it ({watch})"
            ));
        }
        let alive = |app: &str, slot: u32, generation: u64| {
            procs
                .iter()
                .any(|p| p.alive && p.app == app && p.slot == slot && p.generation == generation)
        };
        let State {
            rng,
            listeners,
            watches,
            sent_until,
            traffic,
        } = &mut *st;
        let from = *sent_until;
        *sent_until = now.max(from);
        for (app, l) in listeners.iter_mut() {
            // New requests over [from, now), to the snapshot as it was then.
            let n = (now.saturating_sub(from) * REQUESTS_PER_SECOND / 1000).min(MAX_PER_ROUND);
            let targets: Vec<(String, u32)> = l
                .backends
                .values()
                .filter(|b| b.in_snapshot && b.entry.weight > 0)
                .map(|b| (b.entry.id.clone(), b.entry.weight))
                .collect();
            let total: u64 = targets.iter().map(|(_, w)| u64::from(*w)).sum();
            for _ in 0..n {
                traffic.requests += 1;
                if total == 0 {
                    l.no_backend += 1;
                    continue;
                }
                let start = from + rng.below(now - from);
                let mut pick = rng.below(total);
                let id = targets
                    .iter()
                    .find(|(_, w)| {
                        let hit = pick < u64::from(*w);
                        pick = pick.saturating_sub(u64::from(*w));
                        hit
                    })
                    .map(|(id, _)| id.clone());
                let Some(b) = id.and_then(|id| l.backends.get_mut(&id)) else {
                    continue;
                };
                if !alive(app, b.entry.slot, b.entry.generation) {
                    b.failed += 1;
                    traffic.failed += 1;
                    continue;
                }
                let end = start + duration(rng);
                if end <= now {
                    b.answered += 1;
                } else {
                    b.in_flight.push(end);
                }
            }
            // Requests that ended are answered; those on a dead process fail.
            for b in l.backends.values_mut() {
                if !alive(app, b.entry.slot, b.entry.generation) {
                    b.failed += b.in_flight.len() as u64;
                    traffic.failed += b.in_flight.len() as u64;
                    b.in_flight.clear();
                    continue;
                }
                let before = b.in_flight.len();
                b.in_flight.retain(|end| *end > now);
                b.answered += (before - b.in_flight.len()) as u64;
            }
            // A removed backend is forgotten once drained (as the proxy does).
            l.backends
                .retain(|_, b| b.in_snapshot || !b.in_flight.is_empty());
        }
        let mut notes = Vec::new();
        let known = |w: &Watch| {
            listeners
                .get(&w.req.app)
                .is_some_and(|l| l.backends.contains_key(&w.req.backend))
        };
        watches.retain(|w| !w.done || known(w));
        for w in watches.iter_mut().filter(|w| !w.done) {
            let in_flight = listeners
                .get(&w.req.app)
                .and_then(|l| l.backends.get(&w.req.backend))
                .map_or(0, |b| b.in_flight.len());
            if in_flight > 0 && now < w.deadline() {
                continue;
            }
            w.done = true;
            if in_flight == 0 {
                traffic.drained += 1;
            } else {
                traffic.drain_timeouts += 1;
            }
            notes.push(
                BalancerNote::Drained {
                    app: w.req.app.clone(),
                    slot: w.req.slot,
                    generation: w.req.generation,
                }
                .into(),
            );
        }
        Ok(notes)
    }

    /// Every backend with a weight above 0 is a ready instance whose process is alive, or has
    /// just crashed and not been reported yet.
    pub fn check_snapshot(&self, status: &StatusReport, procs: &[ProcView]) -> Result<(), String> {
        let st = self.lock();
        for (app, l) in &st.listeners {
            for b in l.backends.values() {
                if !b.in_snapshot || b.entry.weight == 0 {
                    continue;
                }
                let e = &b.entry;
                // The newest process of that name: a daemon that crashed while store writes
                // failed may hand a generation out again.
                let Some(p) = procs
                    .iter()
                    .rev()
                    .find(|p| p.app == *app && p.slot == e.slot && p.generation == e.generation)
                else {
                    return Err(format!(
                        "the balancer sends traffic to {} (weight {}), which no process ever was",
                        e.id, e.weight
                    ));
                };
                if !p.alive {
                    if p.reported {
                        return Err(format!(
                            "the balancer still sends traffic to {} (weight {}) after the loop was told its process exited",
                            e.id, e.weight
                        ));
                    }
                    continue;
                }
                let ready = status
                    .apps
                    .iter()
                    .filter(|a| a.name == *app)
                    .flat_map(|a| &a.instances)
                    .any(|i| i.slot == e.slot && i.pid == Some(p.pid) && i.ready);
                if !ready {
                    let state = status
                        .apps
                        .iter()
                        .filter(|a| a.name == *app)
                        .flat_map(|a| &a.instances)
                        .find(|i| i.slot == e.slot)
                        .map_or("gone".to_string(), |i| {
                            format!("{} (pid {:?})", i.state, i.pid)
                        });
                    return Err(format!(
                        "the balancer sends traffic to {} (weight {}, pid {}), which is not a ready instance: {app}/{} is {state}",
                        e.id, e.weight, p.pid, e.slot
                    ));
                }
            }
        }
        Ok(())
    }

    /// Once settled: every ready instance of an app with a listener is in its snapshot.
    pub fn check_settled(
        &self,
        status: &StatusReport,
        procs: &[ProcView],
        listen: bool,
    ) -> Result<(), String> {
        if !listen {
            return Ok(());
        }
        let st = self.lock();
        for app in &status.apps {
            let Some(l) = st.listeners.get(&app.name) else {
                return Err(format!("{} has a listen address but no listener", app.name));
            };
            for i in app.instances.iter().filter(|i| i.ready) {
                let generation = procs
                    .iter()
                    .find(|p| p.alive && p.app == app.name && Some(p.pid) == i.pid)
                    .map(|p| p.generation);
                let listed = l.backends.values().any(|b| {
                    b.in_snapshot
                        && b.entry.weight > 0
                        && b.entry.slot == i.slot
                        && Some(b.entry.generation) == generation
                });
                if !listed {
                    return Err(format!(
                        "{}/{} is ready (pid {:?}) but not in the balancer's snapshot once settled",
                        app.name, i.slot, i.pid
                    ));
                }
            }
        }
        Ok(())
    }
}

/// How long a request takes: mostly short, sometimes seconds, now and then longer than a
/// drain timeout.
fn duration(rng: &mut Rng) -> u64 {
    match rng.below(1000) {
        0..=1 => 5_000 + rng.below(35_000),
        2..=49 => 500 + rng.below(2_500),
        _ => 5 + rng.below(500),
    }
}

/// Seconds since the schedule began.
fn rel(ms: u64) -> f64 {
    ms.saturating_sub(crate::world::START_MS) as f64 / 1000.0
}

impl DataPlane for SimBalancer {
    fn bind(&self, app: &str, cfg: &ListenerConfig) -> Result<(), String> {
        let mut st = self.lock();
        let replaced = st.listeners.insert(
            app.to_string(),
            SimListener {
                listen: cfg.listen,
                backends: BTreeMap::new(),
                no_backend: 0,
            },
        );
        // A listener bound again (another address) drops what ran through the old one.
        if let Some(l) = replaced {
            st.traffic.failed += l
                .backends
                .values()
                .map(|b| b.in_flight.len() as u64)
                .sum::<u64>();
        }
        Ok(())
    }

    fn configure(&self, _app: &str, _cfg: &ListenerConfig) {}

    fn close(&self, app: &str) {
        let mut st = self.lock();
        if let Some(l) = st.listeners.remove(app) {
            let lost: u64 = l.backends.values().map(|b| b.in_flight.len() as u64).sum();
            st.traffic.failed += lost;
        }
    }

    fn update(&self, app: &str, backends: Vec<BackendEntry>) {
        let mut st = self.lock();
        let Some(l) = st.listeners.get_mut(app) else {
            return;
        };
        for b in l.backends.values_mut() {
            b.in_snapshot = false;
        }
        for entry in backends {
            let b = l
                .backends
                .entry(entry.id.clone())
                .or_insert_with(|| BackendState {
                    entry: entry.clone(),
                    in_snapshot: true,
                    in_flight: Vec::new(),
                    answered: 0,
                    failed: 0,
                });
            b.entry = entry;
            b.in_snapshot = true;
        }
        l.backends
            .retain(|_, b| b.in_snapshot || !b.in_flight.is_empty());
    }

    fn in_flight(&self, app: &str, backend: &str) -> u64 {
        self.lock()
            .listeners
            .get(app)
            .and_then(|l| l.backends.get(backend))
            .map_or(0, |b| b.in_flight.len() as u64)
    }

    fn watch_drain(&self, req: DrainRequest, _tx: mpsc::Sender<Event>) {
        // Answered by `round`, with the loop's other messages.
        let started = self.clock.now_ms();
        self.lock().watches.push(Watch {
            req,
            started,
            done: false,
        });
    }

    fn stats(&self, app: &str) -> Option<ListenerStats> {
        let st = self.lock();
        let l = st.listeners.get(app)?;
        let backends: Vec<BackendStats> = l
            .backends
            .values()
            .map(|b| {
                let mut counters = CounterView::default();
                counters.requests[1] = b.answered;
                counters.errors = b.failed;
                BackendStats {
                    id: b.entry.id.clone(),
                    addr: b.entry.addr,
                    labels: BTreeMap::from([
                        ("release".to_string(), b.entry.release.clone()),
                        ("slot".to_string(), b.entry.slot.to_string()),
                    ]),
                    in_snapshot: b.in_snapshot,
                    weight: b.entry.weight,
                    effective_weight: u64::from(b.entry.weight),
                    ejected: false,
                    ejected_reason: None,
                    hung: false,
                    in_flight: b.in_flight.len() as u64,
                    idle_connections: 0,
                    via: b.entry.via.clone(),
                    counters,
                }
            })
            .collect();
        let mut totals = CounterView::default();
        for b in &backends {
            totals.requests[1] += b.counters.requests[1];
            totals.errors += b.counters.errors;
        }
        Some(ListenerStats {
            name: app.to_string(),
            listen: l.listen,
            no_backend: l.no_backend,
            connections: 0,
            front: FrontView::default(),
            totals,
            backends,
        })
    }

    fn can_listen(&self, _addr: SocketAddr) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long a drain may take in a simulated spec with a listener.
pub fn drain_timeout(rng: &mut Rng) -> Duration {
    Duration::from_secs([2, 10, 30][rng.below(3) as usize])
}

/// The checks themselves can fail: a stop while requests are in flight is caught until the
/// drain timeout passed, a drain is reported only once nothing is in flight (or at its
/// timeout), and traffic to a dead process fails.
#[test]
fn the_simulated_balancer_catches_a_stop_with_requests_in_flight() {
    let start = crate::world::START_MS;
    let clock = Arc::new(ManualClock::new(start));
    let lb = SimBalancer::new(7, clock.clone());
    let addr = SocketAddr::from(([127, 0, 0, 1], 47080));
    let cfg = ListenerConfig::new("web", addr, jarfleet_proxy::Mode::Http);
    lb.bind("web", &cfg).expect("a simulated bind never fails");
    // A ready backend of web/SLOT, generation GEN, at full weight.
    let entry = |slot: u32, generation: u64| BackendEntry {
        id: format!("web/{slot}#{generation}"),
        slot,
        generation,
        addr: SocketAddr::from(([127, 0, 0, 1], 47100 + slot as u16)),
        weight: 100,
        ready_for: Duration::from_secs(60),
        release: "r1".into(),
        via: None,
    };
    lb.update("web", vec![entry(0, 1)]);
    let mut procs = vec![ProcView {
        app: "web".into(),
        slot: 0,
        generation: 1,
        pid: 1 << 30,
        alive: true,
        reported: false,
    }];
    // Traffic until something is still running at the end of a round.
    let mut now = start;
    while lb.in_flight("web", "web/0#1") == 0 {
        now += 1_000;
        assert!(now < start + 600_000, "no request ever in flight");
        clock.set(now);
        lb.round(now, &[], &procs).expect("no stop yet");
    }
    // Drained: out of the snapshot, and a drain watched.
    lb.update("web", vec![]);
    let (tx, _rx) = mpsc::channel(1);
    let timeout = Duration::from_secs(600);
    lb.watch_drain(
        DrainRequest {
            app: "web".into(),
            slot: 0,
            generation: 1,
            backend: "web/0#1".into(),
            timeout,
        },
        tx,
    );
    let stop = [("web".to_string(), 0, 1)];
    match lb.round(now, &stop, &procs) {
        Err(e) => assert!(e.contains("in flight"), "{e}"),
        Ok(_) => panic!("a stop with requests in flight passed the check"),
    }
    // Requests end; the drain is reported once, when nothing runs any more.
    let mut notes = 0;
    while lb.in_flight("web", "web/0#1") > 0 {
        now += 100;
        clock.set(now);
        notes += lb.round(now, &[], &procs).expect("no stop").len();
        assert_eq!(notes, usize::from(lb.in_flight("web", "web/0#1") == 0));
    }
    assert_eq!(notes, 1);
    lb.round(now, &stop, &procs)
        .expect("nothing in flight: the stop is fine");
    assert_eq!(lb.traffic().drained, 1);
    // A dead process: what is sent to it fails.
    lb.update("web", vec![entry(1, 2)]);
    procs.push(ProcView {
        app: "web".into(),
        slot: 1,
        generation: 2,
        pid: (1 << 30) + 1,
        alive: false,
        reported: false,
    });
    let failed = lb.traffic().failed;
    now += 10_000;
    lb.round(now, &[], &procs).expect("no stop");
    assert!(lb.traffic().failed > failed);
    assert_eq!(lb.in_flight("web", "web/1#2"), 0);
}
