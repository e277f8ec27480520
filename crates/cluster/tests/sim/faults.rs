//! The seed's history of faults and operator actions on the fake clock, and what each does to
//! the world. Faults come for [`FAULT_PHASE`] (a random share of it); then every host is
//! brought back and healed, and after [`SETTLE`] liveness is judged.

use std::collections::BTreeMap;

use jarfleet_core::cluster::schedule::Demand;

use crate::etcd::Ms;
use crate::rng::Rng;
use crate::world::{LEASE_TTL, MIB, SCHEDULER_TICK, START_TIME, Step, World};

/// How long faults may come.
pub const FAULT_PHASE: (Ms, Ms) = (20_000, 70_000);
/// From the last fault to the judgement: the longest pause (10 s), a lease's TTL and a
/// keep-alive, a few scheduler ticks, the slowest catch-up of a mirror (10 s) and the slowest
/// start, with room.
pub const SETTLE: Ms =
    10_000 + LEASE_TTL + 1_000 + 3 * SCHEDULER_TICK + 10_000 + START_TIME.1 + 5_000;

/// The apps the operator plays with; `web` is never removed (an emptied cluster is held on
/// purpose, see `assign`).
const APPS: [&str; 3] = ["web", "api", "batch"];

#[derive(Debug, Clone)]
pub enum Fault {
    /// The daemon starts (or starts again, with what it keeps on disk).
    Start {
        node: usize,
    },
    /// The daemon dies; with `host`, the host goes down and its instances with it; without,
    /// the instances keep running (`jarfleet down --keep`, a daemon that crashed alone).
    Crash {
        node: usize,
        host: bool,
    },
    /// Cut off from etcd and from every peer; its instances keep serving locally.
    Partition {
        node: usize,
    },
    Heal {
        node: usize,
    },
    /// The daemon freezes this long (a stop-the-world pause, a suspended VM).
    Pause {
        node: usize,
        ms: Ms,
    },
    /// The operator applies an app (`None`: removes it).
    Apply {
        app: String,
        demand: Option<Demand>,
    },
}

/// A seed's history.
pub struct Plan {
    pub faults: Vec<(Ms, Fault)>,
    pub judge_at: Ms,
}

/// The demand of `app` with `instances`.
fn demand(app: &str, instances: u32) -> Demand {
    let (memory, max_per_node) = match app {
        "web" => (512 * MIB, None),
        "api" => (1024 * MIB, None),
        _ => (256 * MIB, Some(1)),
    };
    Demand {
        instances,
        memory,
        max_per_node,
        node_labels: BTreeMap::new(),
    }
}

/// A random demand that every node together can always hold, whatever the spread: `batch`
/// (one per node) never asks for more than the smallest cluster has nodes.
fn random_demand(rng: &mut Rng, app: &str) -> Demand {
    let instances = match app {
        "web" => rng.between(1, 6),
        "api" => rng.between(0, 4),
        _ => rng.between(0, 3),
    };
    demand(app, instances as u32)
}

impl Plan {
    pub fn new(rng: &mut Rng, nodes: usize) -> Plan {
        let mut faults = Vec::new();
        for node in 0..nodes {
            faults.push((rng.between(0, 1_000), Fault::Start { node }));
        }
        let apps_at = rng.between(0, 3_000);
        for app in APPS {
            if app == "web" || rng.percent(60) {
                faults.push((
                    apps_at,
                    Fault::Apply {
                        app: app.into(),
                        demand: Some(random_demand(rng, app)),
                    },
                ));
            }
        }
        let end = rng.between(FAULT_PHASE.0, FAULT_PHASE.1);
        let count = rng.between(2, 14);
        for _ in 0..count {
            let at = rng.between(3_000, end);
            let node = rng.below(nodes as u64) as usize;
            match rng.below(100) {
                0..5 => {
                    // etcd cut off from every node at once (its network, not its process:
                    // leases run out as usual).
                    let heal = at + rng.between(500, 15_000);
                    for node in 0..nodes {
                        faults.push((at, Fault::Partition { node }));
                        faults.push((heal, Fault::Heal { node }));
                    }
                }
                5..20 => {
                    let host = rng.percent(70);
                    faults.push((at, Fault::Crash { node, host }));
                    let down = if host {
                        rng.between(500, 20_000)
                    } else {
                        rng.between(200, 5_000)
                    };
                    faults.push((at + down, Fault::Start { node }));
                }
                20..45 => {
                    faults.push((at, Fault::Partition { node }));
                    faults.push((at + rng.between(500, 20_000), Fault::Heal { node }));
                }
                45..70 => {
                    let ms = rng.between(500, 10_000);
                    faults.push((at, Fault::Pause { node, ms }));
                }
                _ => {
                    let app = *rng.pick(&APPS);
                    let demand = if app != "web" && rng.percent(25) {
                        None
                    } else {
                        Some(random_demand(rng, app))
                    };
                    faults.push((
                        at,
                        Fault::Apply {
                            app: app.into(),
                            demand,
                        },
                    ));
                }
            }
        }
        // The end of the faults: every host back and connected.
        let last = faults.iter().map(|(at, _)| *at).max().unwrap_or(0).max(end);
        for node in 0..nodes {
            faults.push((last + 1, Fault::Heal { node }));
            faults.push((last + 1, Fault::Start { node }));
        }
        faults.sort_by_key(|(at, _)| *at);
        Plan {
            faults,
            judge_at: last + SETTLE,
        }
    }
}

impl World {
    pub fn fault(&mut self, fault: Fault) {
        match fault {
            Fault::Start { node } => self.start_daemon(node),
            Fault::Crash { node, host } => {
                if self.nodes[node].process.is_none() {
                    return;
                }
                self.nodes[node].process = None;
                let what = if host {
                    let ids: Vec<String> = self.nodes[node]
                        .instances
                        .values()
                        .map(|i| format!("#{}", i.id))
                        .collect();
                    self.nodes[node].instances.clear();
                    self.nodes[node].crashed_at = Some(self.now);
                    format!("HOST CRASH (instances {} die)", ids.join(" "))
                } else {
                    "DAEMON CRASH (instances keep running)".to_string()
                };
                self.say_node(node, &what);
            }
            Fault::Partition { node } => {
                if !self.nodes[node].partitioned {
                    self.nodes[node].partitioned = true;
                    self.say_node(node, "PARTITIONED from etcd and peers");
                }
            }
            Fault::Heal { node } => {
                if self.nodes[node].partitioned {
                    self.nodes[node].partitioned = false;
                    self.say_node(node, "HEALED");
                    self.catch_up_later(node);
                    if self.nodes[node].process.is_some() {
                        // The tasks that were failing try again at their next turn; the
                        // publisher's retry is already due.
                        let at = self.now + self.rng.between(0, 300);
                        self.step_at(node, at, Step::PublishRetry);
                    }
                }
            }
            Fault::Pause { node, ms } => {
                if self.nodes[node].process.is_some() {
                    let until = self.now + ms;
                    self.nodes[node].frozen_until = self.nodes[node].frozen_until.max(until);
                    self.say_node(node, &format!("PAUSED for {ms} ms"));
                }
            }
            Fault::Apply { app, demand } => self.apply_app(&app, demand),
        }
    }
}
