//! The control loop under seeded fault schedules (docs/testing.md, "Simulation").
//! `JARFLEET_SIM_SEED=N` replays one schedule; `JARFLEET_SIM_SCHEDULES=N` runs more.

mod world;

/// The schedules a plain test run tries (`JARFLEET_SIM_SCHEDULES` for more; see
/// docs/testing.md for the figures).
const DEFAULT_SCHEDULES: u64 = 300;
const STEPS: usize = 40;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number (e.g. {name}=42)"),
    }
}

#[test]
fn seeded_schedules_keep_the_invariants() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the simulation");
    let seeds: Vec<u64> = match env_u64("JARFLEET_SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let n = env_u64("JARFLEET_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
            let base = env_u64("JARFLEET_SIM_BASE").unwrap_or(0);
            (base..base + n).collect()
        }
    };
    let mut total = world::Stats::default();
    for seed in &seeds {
        if std::env::var_os("JARFLEET_SIM_TRACE").is_some() {
            eprintln!("seed {seed}");
        }
        match rt.block_on(world::run_schedule(*seed, STEPS)) {
            Ok(s) => {
                if std::env::var_os("JARFLEET_SIM_TRACE").is_some() {
                    eprintln!("  {s:?}");
                }
                total.steps += s.steps;
                total.restarts += s.restarts;
                total.crashes += s.crashes;
                total.deploys += s.deploys;
                total.events += s.events;
                total.refused_writes += s.refused_writes;
                total.lost_events += s.lost_events;
                for (k, n) in s.outcomes {
                    *total.outcomes.entry(k).or_default() += n;
                }
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    eprintln!(
        "{} schedules: {} steps, {} daemon restarts, {} instance crashes, {} deploys, {} events, {} store writes refused, {} kept events lost with a crashed daemon",
        seeds.len(),
        total.steps,
        total.restarts,
        total.crashes,
        total.deploys,
        total.events,
        total.refused_writes,
        total.lost_events
    );
    eprintln!("deployments: {:?}", total.outcomes);
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
///   ran one more than `instances + max_surge`.
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
///   change. That refusal now begins one (`Persist::refused`).
#[test]
fn schedules_that_found_bugs_stay_fixed() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the simulation");
    for seed in [8, 52, 792, 1562] {
        if let Err(failure) = rt.block_on(world::run_plain_schedule(seed, STEPS)) {
            panic!("{failure}");
        }
    }
    for seed in [103, 207, 257, 762, 3877] {
        if let Err(failure) = rt.block_on(world::run_schedule(seed, STEPS)) {
            panic!("{failure}");
        }
    }
}
