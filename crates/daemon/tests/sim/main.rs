//! The control loop under seeded fault schedules (docs/testing.md, "Simulation").
//! `JARFLEET_SIM_SEED=N` replays one schedule; `JARFLEET_SIM_SCHEDULES=N` runs more.

mod balancer;
mod world;

/// The schedules a plain test run tries (`JARFLEET_SIM_SCHEDULES` for more; see
/// docs/testing.md for the figures).
const DEFAULT_SCHEDULES: u64 = 1_000;
/// Steps of a schedule before the faults stop. 25 keeps 10,000 schedules within CI's two
/// minutes; the schedules that found bugs replay with the 40 steps they had then.
const STEPS: usize = 25;
const STEPS_WHEN_FOUND: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number (e.g. {name}=42)"),
    }
}

/// Runs `seeds` on `threads` threads (each with its own runtime); stops early at a failure and
/// reports the failure of the lowest seed that failed, so a report names one seed to replay.
/// Which schedules [`run_seeds`] runs.
#[derive(Clone, Copy)]
enum Schedule {
    /// With the seed's strategy, balancer and failing store writes (`world::run_schedule`).
    Full,
    /// As the first schedules were: rolling, a disk that never fails (`world::run_plain_schedule`).
    Plain,
}

fn run_seeds(
    seeds: &[u64],
    threads: usize,
    schedule: Schedule,
    steps: usize,
) -> Result<world::Stats, world::Failure> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let trace = std::env::var_os("JARFLEET_SIM_TRACE").is_some();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let total = Mutex::new(world::Stats::default());
    let failures = Mutex::new(Vec::<world::Failure>::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime for the simulation");
                let mut mine = world::Stats::default();
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seed) = seeds.get(i) else { break };
                    let run = match schedule {
                        Schedule::Full => rt.block_on(world::run_schedule(*seed, steps)),
                        Schedule::Plain => rt.block_on(world::run_plain_schedule(*seed, steps)),
                    };
                    match run {
                        Ok(s) => {
                            if trace {
                                eprintln!("seed {seed}: {s:?}");
                            }
                            mine.add(&s);
                        }
                        Err(failure) => {
                            stop.store(true, Ordering::Relaxed);
                            failures
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(failure);
                        }
                    }
                }
                total.lock().unwrap_or_else(|e| e.into_inner()).add(&mine);
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|f| f.seed);
    match failures.into_iter().next() {
        Some(first) => Err(first),
        None => Ok(total.into_inner().unwrap_or_else(|e| e.into_inner())),
    }
}

/// Threads for the schedules: `JARFLEET_SIM_THREADS`, else one per core.
fn threads() -> usize {
    match env_u64("JARFLEET_SIM_THREADS") {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

#[test]
fn seeded_schedules_keep_the_invariants() {
    let seeds: Vec<u64> = match env_u64("JARFLEET_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = env_u64("JARFLEET_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
            let base = env_u64("JARFLEET_SIM_BASE").unwrap_or(0);
            (base..base + n).collect()
        }
    };
    let started = std::time::Instant::now();
    let threads = threads();
    let steps = env_u64("JARFLEET_SIM_STEPS").map_or(STEPS, |n| n as usize);
    let schedule = if std::env::var_os("JARFLEET_SIM_PLAIN").is_some() {
        Schedule::Plain
    } else {
        Schedule::Full
    };
    let total = match run_seeds(&seeds, threads, schedule, steps) {
        Ok(total) => total,
        Err(failure) => panic!("{failure}"),
    };
    eprintln!(
        "{} schedules on {threads} thread(s) in {:.1} s: {} steps, {} daemon restarts, {} instance crashes, {} deploys, {} events, {} store writes refused, {} kept events lost with a crashed daemon, {} ready instances taken out by a deployment (each judged against max_unavailable); balancer: {:?}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.steps,
        total.restarts,
        total.crashes,
        total.deploys,
        total.events,
        total.refused_writes,
        total.lost_events,
        total.take_outs,
        total.traffic
    );
    eprintln!("deployments: {:?}", total.outcomes);
    // Half the schedules have a listener: their stops must have gone through real drains.
    if seeds.len() >= 50 {
        let t = total.traffic;
        assert!(
            t.requests > 0 && t.drained > 0 && t.drain_timeouts > 0,
            "the simulated balancer carried no traffic or saw no drain: {t:?}"
        );
    }
}

/// Schedules that found real bugs, kept as plain regression tests (run as they were then:
/// rolling, a disk that never fails — `run_plain_schedule`):
/// - seed 8: a rolling restart that failed (an instance crashed mid-way) left the instances it
///   had started beyond `instances` running for good (4 ready of 3 wanted);
/// - seed 52: `stop APP` during a scale down turned the removal of an instance into a halt, and
///   the next `start` ran one instance too many;
/// - seed 792: a rollback that ended while a crashed instance's replacement and one the
///   rollback started both ran kept the surplus (4 ready of 3 wanted);
/// - seed 1562: `start` of an app whose instance was still being stopped, during a rollback:
///   the planner counted that instance as gone, started another beside it, and the deployment
///   ran one more than `instances + max_surge`. Once ports could be taken by other processes
///   (another draw of the dice), the same seed found a second one: `stop APP`, `deploy`, then
///   `start` during its rollback brought back an instance stopped before the deployment beside
///   the ones it counted (again one more than `instances + max_surge`); `start` now waits for
///   a deployment like `scale` does (`jarfleet_core::during`).
///
/// Replayed with the schedule's strategy and failing store writes (`run_schedule`):
/// - seed 103: a new deployment's record (its id comes from the store) was written straight
///   through while older writes were kept, and a daemon crash then lost the kept "succeeded"
///   of the one before: the store held two open deployments. The kept writes now go first
///   (the deployment is refused while they cannot);
/// - seed 207: an etcd change whose deployment was refused while store writes failed was
///   announced (`config.deferred`) but never went out. It now waits like one that meets a
///   running deployment, and goes out once the store takes writes again;
/// - seed 257: a daemon died while writes failed, after a scale down's new count was stored
///   but not its instance's removal; the next daemon ran 4 instances of 3 for good. Adoption
///   now trims the slots to the stored count outside a deployment;
/// - seed 762: a canary (`promote --full` while its set started) rolled back to r1 with five
///   instances counted as old (two of r1 from before a `restart`, three of r2) and three new
///   ones: eight running of a ceiling of `2 × instances`, so the fourth never started and the
///   old set never went — rolling back for good. A switch now retires old instances beyond
///   `instances` (`rollout::next_steps`). It also streamed an event whose write began a
///   failing period after `daemon.store-failing` (the next id): events are streamed before
///   they are written;
/// - seed 3877: the same as 207 when the new deployment's own record (written straight to the
///   store) was the write refused: no failing period began, so no recovery ever sent the
///   change. That refusal now begins one (`Persist::refused`);
/// - seed 9018: a blue-green set kept warm after a switch (`keep_old`) kept the count it had
///   when the app was scaled down, and ran beside both sets of the next deployment (4 of a
///   ceiling of `3 × instances`). A scale now trims the warm set to the new count.
#[test]
fn schedules_that_found_bugs_stay_fixed() {
    if let Err(failure) = run_seeds(&[8, 52, 792, 1562], 1, Schedule::Plain, STEPS_WHEN_FOUND) {
        panic!("{failure}");
    }
    if let Err(failure) = run_seeds(
        &[103, 207, 257, 762, 3877, 9018],
        1,
        Schedule::Full,
        STEPS_WHEN_FOUND,
    ) {
        panic!("{failure}");
    }
}
