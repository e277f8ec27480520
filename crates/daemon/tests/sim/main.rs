//! The control loop under seeded fault schedules (docs/testing.md, "Simulation").
//! `JARFLEET_SIM_SEED=N` replays one schedule; `JARFLEET_SIM_SCHEDULES=N` runs more.

mod balancer;
mod world;

/// The schedules a plain test run tries (`JARFLEET_SIM_SCHEDULES` for more; see
/// docs/testing.md for the figures).
const DEFAULT_SCHEDULES: u64 = 1_000;
const STEPS: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number (e.g. {name}=42)"),
    }
}

/// Runs `seeds` on `threads` threads (each with its own runtime); stops early at a failure and
/// reports the failure of the lowest seed that failed, so a report names one seed to replay.
fn run_seeds(seeds: &[u64], threads: usize) -> Result<world::Stats, world::Failure> {
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
                    match rt.block_on(world::run_schedule(*seed, STEPS)) {
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
    let total = match run_seeds(&seeds, threads) {
        Ok(total) => total,
        Err(failure) => panic!("{failure}"),
    };
    eprintln!(
        "{} schedules on {threads} thread(s) in {:.1} s: {} steps, {} daemon restarts, {} instance crashes, {} deploys, {} events; balancer: {:?}",
        seeds.len(),
        started.elapsed().as_secs_f64(),
        total.steps,
        total.restarts,
        total.crashes,
        total.deploys,
        total.events,
        total.traffic
    );
    // Half the schedules have a listener: their stops must have gone through real drains.
    if seeds.len() >= 50 {
        let t = total.traffic;
        assert!(
            t.requests > 0 && t.drained > 0 && t.drain_timeouts > 0,
            "the simulated balancer carried no traffic or saw no drain: {t:?}"
        );
    }
}

/// Schedules that found real bugs, kept as plain regression tests:
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
#[test]
fn schedules_that_found_bugs_stay_fixed() {
    if let Err(failure) = run_seeds(&[8, 52, 792, 1562], 1) {
        panic!("{failure}");
    }
}
