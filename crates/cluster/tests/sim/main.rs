//! The cluster protocol under seeded faults: several nodes, each with the agent's session,
//! mirror, scheduler, assignment and publisher, against an in-memory etcd on a fake clock,
//! deciding with `jarfleet_core::cluster`'s real `reconcile` and `assign`. Hosts crash and
//! come back, daemons restart with their instances kept, nodes are cut off and healed,
//! daemons freeze and resume with a stale view, the operator scales and applies. The
//! invariants are in `check.rs`; the model's parts in the modules below.
//!
//! - `JARFLEET_CLUSTER_SIM_SEEDS=N`: how many seeds (default [`DEFAULT_SEEDS`]), from
//!   `JARFLEET_CLUSTER_SIM_FIRST` (default 0).
//! - `JARFLEET_CLUSTER_SIM_SEED=N`: that seed alone; with `JARFLEET_CLUSTER_SIM_TRACE=1` its
//!   whole history is printed.
//! - `JARFLEET_CLUSTER_SIM_STRICT=1`: nothing tolerated, not even the race below.
//!
//! The model follows the code as it is; the one violation tolerated is the race no protocol
//! that decides on reports closes: a replacement whose host died within a probe interval of
//! the stop of the copy it replaced (`world::RACE_WINDOW`). Every bug the seeds found and the
//! code fixed is replayed by a regression test below; the one still open by an ignored
//! `known_bug_` test (two nodes lost at once pack the third for good, and a slot capped per
//! node can then find no room: jarfleet does not rebalance). It shows in about one seed in a
//! few thousand, none of the default ones.

mod agent;
mod check;
mod etcd;
mod faults;
mod mirror;
mod node;
mod queue;
mod rng;
mod scheduler;
mod session;
mod trace;
mod world;

use std::collections::BTreeMap;
use std::sync::Mutex;

use check::{Kind, Violation};
use faults::Plan;
use world::World;

/// Seeds a test run tries (a few seconds on 2 cores in a debug build).
const DEFAULT_SEEDS: u64 = 800;

/// The only violation tolerated: a replacement that died within a probe interval of the stop
/// (`world::RACE_WINDOW`).
const UNAVOIDABLE: [Kind; 1] = [Kind::StoppedInRace];

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    match v.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a number (e.g. {name}=42)"),
    }
}

/// A seed whose history broke an invariant.
struct Failure {
    seed: u64,
    violations: Vec<Violation>,
    tail: String,
}

impl Failure {
    fn report(&self) -> String {
        let mut out = format!("seed {} broke the protocol's invariants:\n", self.seed);
        for v in &self.violations {
            out.push_str(&format!("  {:?}: {}\n", v.kind, v.message));
        }
        out.push_str(&format!(
            "the last events:\n{}replay it: JARFLEET_CLUSTER_SIM_SEED={} JARFLEET_CLUSTER_SIM_TRACE=1 cargo nextest run -p jarfleet-cluster --test sim --no-capture\n",
            self.tail, self.seed
        ));
        out
    }
}

/// One seed's history: the kinds of violation it broke that are `tolerated`, or a failure
/// when it broke one that is not.
fn run_seed(seed: u64, mut tolerated: &[Kind], echo: bool) -> Result<Vec<Kind>, Failure> {
    if std::env::var_os("JARFLEET_CLUSTER_SIM_STRICT").is_some() {
        tolerated = &[];
    }
    let mut world = World::new(seed);
    world.trace.echo = echo;
    world.tolerated = tolerated.to_vec();
    let plan = Plan::new(&mut world.rng, world.nodes.len());
    let (violations, tail) = world.run(&plan);
    if violations.iter().all(|v| tolerated.contains(&v.kind)) {
        Ok(violations.iter().map(|v| v.kind).collect())
    } else {
        Err(Failure {
            seed,
            violations,
            tail,
        })
    }
}

/// What a run of seeds found.
#[derive(Default)]
struct Outcome {
    /// Every failure, lowest seed first.
    failures: Vec<Failure>,
    /// Per kind tolerated, the seeds that broke it (and passed).
    tolerated: BTreeMap<Kind, Vec<u64>>,
}

/// Runs `seeds` on two threads.
fn run_seeds(seeds: Vec<u64>, tolerated: &[Kind]) -> Outcome {
    let next = Mutex::new(seeds.into_iter());
    let outcome = Mutex::new(Outcome::default());
    let echo = std::env::var_os("JARFLEET_CLUSTER_SIM_TRACE").is_some();
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                loop {
                    let seed = next.lock().unwrap_or_else(|e| e.into_inner()).next();
                    let Some(seed) = seed else { break };
                    let result = run_seed(seed, tolerated, echo);
                    let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
                    match result {
                        Ok(kinds) => {
                            for kind in kinds {
                                let seeds = outcome.tolerated.entry(kind).or_default();
                                if !seeds.contains(&seed) {
                                    seeds.push(seed);
                                }
                            }
                        }
                        Err(f) => outcome.failures.push(f),
                    }
                }
            });
        }
    });
    let mut outcome = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
    outcome.failures.sort_by_key(|f| f.seed);
    for seeds in outcome.tolerated.values_mut() {
        seeds.sort_unstable();
    }
    outcome
}

/// The seeds asked for in the environment, or `default` of them.
fn seeds_asked(default: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("JARFLEET_CLUSTER_SIM_SEED") {
        return vec![seed];
    }
    let first = env_u64("JARFLEET_CLUSTER_SIM_FIRST").unwrap_or(0);
    let count = env_u64("JARFLEET_CLUSTER_SIM_SEEDS").unwrap_or(default);
    (first..first + count).collect()
}

/// Fails with the first failure's report and, per kind, the seeds that broke it; says what
/// was tolerated (seen with `--nocapture`, or in a failure's output).
fn assert_none_failed(outcome: &Outcome) {
    if !outcome.tolerated.is_empty() {
        eprintln!("tolerated, per kind: {:?}", outcome.tolerated);
    }
    let Some(first) = outcome.failures.first() else {
        return;
    };
    let mut by_kind: BTreeMap<Kind, Vec<u64>> = BTreeMap::new();
    for f in &outcome.failures {
        for v in &f.violations {
            let seeds = by_kind.entry(v.kind).or_default();
            if seeds.last() != Some(&f.seed) {
                seeds.push(f.seed);
            }
        }
    }
    panic!(
        "{} seed(s) failed: {by_kind:?}\n{}",
        outcome.failures.len(),
        first.report()
    );
}

#[test]
fn seeded_fault_histories_keep_the_cluster_protocol_safe_and_live() {
    assert_none_failed(&run_seeds(seeds_asked(DEFAULT_SEEDS), &UNAVOIDABLE));
}

/// Replays `seeds` with nothing tolerated (regressions: each once broke an invariant).
fn replay_strict(seeds: &[u64]) {
    assert_none_failed(&run_seeds(seeds.to_vec(), &[]));
}

// The regressions. A seed replays the same faults whatever the model, but its history
// diverges from the one that found the bug once the code behaves differently (a status
// published, a decision not taken, and so different draws of the same generator); each test
// replays the seed that found the bug and, where that one no longer reaches the bug's
// situation, one that does under the code as it is (noted, with the time).

/// A node cut off learns, once healed, that its copy's slot moved to a node whose host died
/// since: the replacement's status rides a lease that outlives it. Seed 941, which broke the
/// same way under the old code, replays that history up to 24.9 s, when node-2 reads etcd
/// again and keeps its copy of api/2 (node-1, whose status says ready, does not answer its
/// probes); in 510 node-4's restarted daemon deletes the status its predecessor left (27.9 s).
#[test]
fn a_copy_is_not_stopped_for_a_dead_replacement() {
    replay_strict(&[510, 941]);
}

/// A daemon restarted with its instances kept, while one of them is handed over to a
/// replacement still starting: its first assignment must keep that copy (the daemon reports
/// every slot it runs before its first assignment, and the agent waits for that report). In
/// seed 123 node-2's daemon restarts at 16.8 s keeping web/1, placed on node-1 where it is
/// still starting, and stops it only once that one is ready (22.1 s); in 47 the restarted
/// daemon reads etcd only after the replacements are ready.
#[test]
fn a_restarted_daemon_keeps_the_copies_it_hands_over() {
    replay_strict(&[47, 123]);
}

/// etcd cut off from every node for longer than the TTL: the first node to register again
/// must not take every slot of the others, still registering (a `max_per_node` slot would be
/// stranded): its scheduler's registration is new, so their slots stay for a TTL (node-1,
/// registered again at 65.0 s and elected, leaves node-3's slots until 71.0 s).
#[test]
fn a_cluster_wide_cut_neither_packs_one_node_nor_strands_a_slot() {
    replay_strict(&[2291]);
}

/// A daemon restarted on the lease it kept takes the status keys its predecessor wrote on it
/// as written: those of instances it no longer runs are deleted (node-1 at 44.8 s).
#[test]
fn a_restarted_daemon_deletes_its_predecessors_statuses() {
    replay_strict(&[45]);
}

/// A daemon frozen for seconds resumed with its probes' last word: a peer that answered
/// before the pause still counted as answering until the next round of probes had run, and
/// the watch's backlog was decided on first. Here node-3 freezes at 25.5 s for 7.3 s; meanwhile
/// node-1's replacement for web/5 becomes ready and node-1's host dies (29.6 s, its status
/// still in etcd for a TTL); at 32.8 s node-3 resumes and stops its copy for it.
/// Fixed: a peer's answer counts only while it is fresh (`PeerView::answering`), so a
/// resumed daemon no longer acts on its probes' word from before the pause.
#[test]
fn a_resumed_daemon_does_not_trust_answers_from_before_its_pause() {
    replay_strict(&[1423]);
}

/// Two of three nodes lose their leases at once, for real (node-1 cut off from 19.0 s to
/// 30.2 s, node-3, the scheduler, frozen from 19.3 s to 28.7 s): node-2, registered long
/// enough before its election at 27.1 s not to wait for anyone, rightly moves every slot of
/// theirs onto itself; they come back, nothing moves back, and `batch` (one per node),
/// applied at 41.6 s, finds no room on node-2 for batch/2 (web and api fill it), so it stays
/// unplaced although the whole demand fits spread out.
#[test]
#[ignore = "known bug: after a failover packed one node nothing moves back, and a slot capped per node is stranded"]
fn known_bug_a_failover_onto_one_node_strands_a_capped_slot() {
    replay_strict(&[7081]);
}
