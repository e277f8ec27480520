use super::*;

const MIB: u64 = 1024 * 1024;

fn node(name: &str, memory_mib: u64) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        address: format!("10.0.0.{}", name.len()),
        peer_port: 9901,
        relay_port: None,
        labels: BTreeMap::new(),
        memory: memory_mib * MIB,
        version: "0.1.0".into(),
        build: None,
        boot_id: format!("boot-{name}"),
        registered_ms: 0,
    }
}

fn demand(instances: u32) -> Demand {
    Demand {
        instances,
        memory: 512 * MIB,
        max_per_node: None,
        node_labels: BTreeMap::new(),
    }
}

fn view(nodes: &[&str], apps: &[(&str, u32)]) -> View {
    View {
        apps: apps
            .iter()
            .map(|(a, n)| (a.to_string(), demand(*n)))
            .collect(),
        nodes: nodes
            .iter()
            .map(|n| (n.to_string(), node(n, 4096)))
            .collect(),
        ..View::default()
    }
}

/// Carries out a pass's writes as etcd would (each at the next revision), checking each
/// write's expectation like a compare-and-swap.
fn apply(view: &mut View, pass: &Pass, revision: &mut i64) {
    for w in &pass.writes {
        *revision += 1;
        match w {
            Write::Put {
                app,
                slot,
                record,
                expect,
            } => {
                let key = (app.clone(), *slot);
                let now = view.allocs.get(&key).map_or(0, |p| p.mod_revision);
                assert_eq!(now, *expect, "a stale put for {app}/{slot}");
                view.allocs.insert(
                    key,
                    Placed {
                        record: record.clone(),
                        mod_revision: *revision,
                    },
                );
            }
            Write::Delete { app, slot, expect } => {
                let key = (app.clone(), *slot);
                let now = view.allocs.get(&key).map_or(0, |p| p.mod_revision);
                assert_eq!(now, *expect, "a stale delete for {app}/{slot}");
                view.allocs.remove(&key);
            }
        }
    }
}

fn on(view: &View, node: &str) -> Vec<(String, u32)> {
    view.allocs
        .iter()
        .filter(|(_, p)| p.record.node == node)
        .map(|(k, _)| k.clone())
        .collect()
}

/// Every write of `pass` moves a slot that was on `from` elsewhere, with the next generation,
/// `reason`, and the revision it was read at.
fn assert_all_moved_off(
    pass: &Pass,
    before: &BTreeMap<(String, u32), Placed>,
    from: &str,
    reason: &str,
) {
    for w in &pass.writes {
        let Write::Put {
            app,
            slot,
            record,
            expect,
        } = w
        else {
            panic!("only puts: {w:?}");
        };
        let old = &before[&(app.clone(), *slot)];
        assert_eq!(old.record.node, from);
        assert_eq!(*expect, old.mod_revision);
        assert_eq!(record.generation, old.record.generation + 1);
        assert_eq!(record.reason, reason);
        assert_ne!(record.node, from);
    }
}

#[test]
fn a_new_app_is_spread_across_the_nodes_and_a_second_pass_changes_nothing() {
    let mut v = view(&["a", "b", "c"], &[("web", 4)]);
    let mut rev = 0;
    let pass = reconcile(&v, 1000);
    assert!(pass.unplaced.is_empty(), "{:?}", pass.unplaced);
    assert_eq!(pass.writes.len(), 4);
    assert!(pass.writes.iter().all(|w| matches!(
        w,
        Write::Put { record, expect: 0, .. } if record.generation == 1 && record.reason == "placed"
    )));
    apply(&mut v, &pass, &mut rev);
    let mut counts: Vec<usize> = ["a", "b", "c"].iter().map(|n| on(&v, n).len()).collect();
    counts.sort();
    assert_eq!(counts, vec![1, 1, 2]);
    assert_eq!(reconcile(&v, 2000), Pass::default());
}

#[test]
fn a_lost_nodes_slots_are_placed_anew_at_once_and_the_others_stay() {
    let mut v = view(&["a", "b", "c"], &[("web", 6)]);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    let before = v.allocs.clone();
    let lost = on(&v, "b");
    assert_eq!(lost.len(), 2);

    v.nodes.remove("b");
    let pass = reconcile(&v, 5000);
    assert_eq!(pass.writes.len(), 2, "{:?}", pass.writes);
    assert_all_moved_off(&pass, &before, "b", "node b lost");
    apply(&mut v, &pass, &mut rev);
    assert_eq!(on(&v, "a").len(), 3);
    assert_eq!(on(&v, "c").len(), 3);
    for (key, p) in &before {
        if p.record.node != "b" {
            assert_eq!(v.allocs[key], *p, "{key:?} moved although its node is up");
        }
    }
    // b coming back gets nothing moved to it: no rebalancing.
    v.nodes.insert("b".into(), node("b", 4096));
    assert_eq!(reconcile(&v, 6000), Pass::default());
}

#[test]
fn a_node_that_may_be_returning_keeps_its_slots_and_gets_nothing_new() {
    let mut v = view(&["a", "b"], &[("web", 2)]);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    let on_b = on(&v, "b");
    v.nodes.remove("b");
    v.returning.insert("b".into());
    v.apps.insert("web".into(), demand(3));
    let pass = reconcile(&v, 1);
    apply(&mut v, &pass, &mut rev);
    assert_eq!(on(&v, "b"), on_b, "b's slot stays while it may come back");
    assert_eq!(on(&v, "a").len(), 2, "the new slot goes to a");
    // Once it is no longer expected back, its slot moves.
    v.returning.clear();
    let pass = reconcile(&v, 2);
    apply(&mut v, &pass, &mut rev);
    assert!(on(&v, "b").is_empty());
    assert_eq!(on(&v, "a").len(), 3);
}

#[test]
fn scaling_down_and_removing_an_app_delete_placements() {
    let mut v = view(&["a", "b"], &[("web", 4), ("api", 2)]);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    v.apps.insert("web".into(), demand(2));
    v.apps.remove("api");
    let pass = reconcile(&v, 1);
    let mut deleted: Vec<(String, u32)> = pass
        .writes
        .iter()
        .map(|w| match w {
            Write::Delete { app, slot, expect } => {
                assert_eq!(*expect, v.allocs[&(app.clone(), *slot)].mod_revision);
                (app.clone(), *slot)
            }
            other => panic!("only deletes: {other:?}"),
        })
        .collect();
    deleted.sort();
    assert_eq!(
        deleted,
        vec![
            ("api".into(), 0),
            ("api".into(), 1),
            ("web".into(), 2),
            ("web".into(), 3)
        ]
    );
}

#[test]
fn a_failing_slot_moves_to_another_node_or_stays_saying_why() {
    let mut v = view(&["a", "b"], &[("web", 1)]);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    let from = v.allocs[&("web".to_string(), 0)].record.node.clone();
    v.failed.insert(("web".into(), 0, 1));
    let pass = reconcile(&v, 1);
    let [Write::Put { record, .. }] = pass.writes.as_slice() else {
        panic!("{pass:?}");
    };
    assert_ne!(record.node, from);
    assert_eq!(record.reason, format!("failed on node {from}"));

    // With nowhere else to go it stays.
    v.nodes.retain(|n, _| *n == from);
    let pass = reconcile(&v, 2);
    assert!(pass.writes.is_empty());
    assert_eq!(pass.unplaced.len(), 1);
    assert!(
        pass.unplaced[0].why.contains("the instance failed there"),
        "{:?}",
        pass.unplaced
    );
}

#[test]
fn an_ineligible_node_keeps_what_it_runs_and_gets_nothing_new() {
    let mut v = view(&["a", "b"], &[("web", 2)]);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    assert_eq!(on(&v, "a").len(), 1);
    v.admin.insert(
        "a".into(),
        AdminRecord {
            ineligible: true,
            ..AdminRecord::default()
        },
    );
    assert_eq!(reconcile(&v, 1), Pass::default());
    v.apps.insert("web".into(), demand(4));
    let pass = reconcile(&v, 2);
    apply(&mut v, &pass, &mut rev);
    assert_eq!(on(&v, "a").len(), 1);
    assert_eq!(on(&v, "b").len(), 3);
}

#[test]
fn a_draining_node_s_slots_all_move_at_once_and_one_with_nowhere_to_go_stays_saying_why() {
    let mut v = view(&["a", "b", "c"], &[("web", 6), ("api", 1)]);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    let before = v.allocs.clone();
    let leaving = on(&v, "b");
    assert!(leaving.len() >= 2, "{leaving:?}");
    v.admin.insert(
        "b".into(),
        AdminRecord {
            draining: true,
            drain_deadline_ms: Some(60_000),
            ..AdminRecord::default()
        },
    );
    let pass = reconcile(&v, 10);
    assert!(pass.unplaced.is_empty(), "{:?}", pass.unplaced);
    assert_eq!(pass.writes.len(), leaving.len(), "{:?}", pass.writes);
    assert_all_moved_off(&pass, &before, "b", "node b drained");
    apply(&mut v, &pass, &mut rev);
    assert!(on(&v, "b").is_empty());
    for (key, p) in &before {
        if p.record.node != "b" {
            assert_eq!(v.allocs[key], *p, "{key:?} moved although its node stays");
        }
    }
    // Done: the next pass changes nothing, and nothing new goes to b.
    assert_eq!(reconcile(&v, 20), Pass::default());
    v.apps.insert("api".into(), demand(3));
    let pass = reconcile(&v, 30);
    apply(&mut v, &pass, &mut rev);
    assert!(on(&v, "b").is_empty());

    // A slot with nowhere else to go stays on the draining node and says why.
    let mut v = view(&["a", "b"], &[("web", 2)]);
    v.apps.get_mut("web").expect("web").max_per_node = Some(1);
    let mut rev = 0;
    let first = reconcile(&v, 0);
    apply(&mut v, &first, &mut rev);
    v.admin.insert(
        "a".into(),
        AdminRecord {
            draining: true,
            ..AdminRecord::default()
        },
    );
    let pass = reconcile(&v, 1);
    assert!(pass.writes.is_empty(), "{:?}", pass.writes);
    let [stuck] = pass.unplaced.as_slice() else {
        panic!("{pass:?}");
    };
    assert!(
        stuck
            .why
            .starts_with("it stays on draining node a for now: no node fits (")
            && stuck.why.contains("max_per_node = 1"),
        "{stuck:?}"
    );
    assert_eq!(on(&v, "a").len(), 1);
    // Undrained, it stays where it is.
    v.admin.clear();
    assert_eq!(reconcile(&v, 2), Pass::default());
}

#[test]
fn memory_is_never_overcommitted() {
    let mut v = view(&[], &[("web", 5)]);
    v.nodes.insert("a".into(), node("a", 1024));
    v.nodes.insert("b".into(), node("b", 1536));
    let mut rev = 0;
    let pass = reconcile(&v, 0);
    apply(&mut v, &pass, &mut rev);
    assert_eq!(on(&v, "a").len(), 2);
    assert_eq!(on(&v, "b").len(), 3);
    v.apps.insert("web".into(), demand(6));
    let pass = reconcile(&v, 1);
    assert!(pass.writes.is_empty());
    assert_eq!(pass.unplaced.len(), 1);
    assert!(pass.unplaced[0].why.starts_with("no node fits"), "{pass:?}");
    let empty = View {
        apps: v.apps.clone(),
        ..View::default()
    };
    let pass = reconcile(&empty, 0);
    assert_eq!(pass.unplaced.len(), 6);
    assert_eq!(pass.unplaced[0].why, "no node has joined the cluster");
}

/// A small deterministic generator (core takes no randomness from outside its parameters).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

#[test]
fn over_random_histories_nothing_moves_while_its_node_is_up_and_every_slot_finds_a_node() {
    let names = ["a", "b", "c", "d", "e"];
    for seed in 0..300 {
        let mut rng = Lcg(seed);
        let mut v = view(&["a", "b", "c"], &[("web", 4), ("api", 2)]);
        let mut rev = 0;
        for step in 0..40 {
            match rng.below(5) {
                0 => {
                    let n = names[rng.below(5) as usize];
                    v.nodes.remove(n);
                }
                1 => {
                    let n = names[rng.below(5) as usize];
                    v.nodes.entry(n.into()).or_insert_with(|| node(n, 4096));
                }
                2 => {
                    let app = if rng.below(2) == 0 { "web" } else { "api" };
                    v.apps.insert(app.into(), demand(1 + rng.below(6) as u32));
                }
                _ => {}
            }
            let before = v.allocs.clone();
            let pass = reconcile(&v, step);
            apply(&mut v, &pass, &mut rev);
            for (key, p) in &before {
                let still_wanted = v.apps.get(&key.0).is_some_and(|d| key.1 < d.instances);
                if still_wanted && v.nodes.contains_key(&p.record.node) {
                    assert_eq!(v.allocs.get(key), Some(p), "seed {seed} step {step}: moved");
                }
            }
            let capacity: u64 = v.nodes.values().map(|n| n.memory / (512 * MIB)).sum();
            let wanted: u64 = v.apps.values().map(|d| u64::from(d.instances)).sum();
            if wanted <= capacity {
                for (app, d) in &v.apps {
                    for slot in 0..d.instances {
                        let p = v.allocs.get(&(app.clone(), slot));
                        assert!(
                            p.is_some_and(|p| v.nodes.contains_key(&p.record.node)),
                            "seed {seed} step {step}: {app}/{slot} has no live node"
                        );
                    }
                }
            }
            for n in v.nodes.values() {
                let used: u64 = v
                    .allocs
                    .iter()
                    .filter(|(k, p)| p.record.node == n.name && v.apps.contains_key(&k.0))
                    .count() as u64
                    * 512
                    * MIB;
                assert!(
                    used <= n.memory,
                    "seed {seed} step {step}: {} overcommitted",
                    n.name
                );
            }
            let again = reconcile(&v, step);
            assert!(
                again.writes.is_empty(),
                "seed {seed}: not settled: {again:?}"
            );
        }
    }
}
