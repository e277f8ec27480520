//! The scheduler as `crates/cluster/src/scheduler.rs` runs it: it leads when its mirror shows
//! the leader key with its name on its current lease; it campaigns with a create-if-absent put
//! of that key on its lease when its mirror shows none; while leading, every change of the
//! mirror or session and every tick is a pass (`schedule::reconcile` on the mirror's view)
//! whose writes go one after the other, each fenced as `write_fenced` fences it, the first
//! that does not hold ending the pass. While the scheduler's own registration is new (a new
//! boot id seen less than a lease's TTL ago; not the renewal of the lease the daemon kept),
//! the nodes not registered that still have slots are `returning`: their slots stay.

use jarfleet_core::cluster::records::LeaderRecord;
use jarfleet_core::cluster::schedule::{self, Write};

use crate::etcd::{Compare, Op, Value};
use crate::world::{LEASE_TTL, Step, World, short};

impl World {
    /// The scheduler's loop, woken by a change or its tick.
    pub fn scheduler_wake(&mut self, n: usize) {
        let now = self.now;
        let name = self.nodes[n].name.clone();
        let Some(p) = self.nodes[n].process.as_mut() else {
            return;
        };
        if p.scheduler.pass_epoch.is_some() {
            p.scheduler.dirty = true;
            return;
        }
        // A registration the scheduler has not seen yet (a new boot id) is new for a lease's
        // TTL, unless it renewed the lease the daemon kept.
        if let Some(s) = p.session.info.as_ref()
            && p.scheduler
                .registered
                .as_ref()
                .is_none_or(|(boot, _)| *boot != s.boot_id)
        {
            let kept = p.scheduler.kept_boot.as_deref() == Some(s.boot_id.as_str());
            let new_until = if kept { now } else { now + LEASE_TTL };
            p.scheduler.registered = Some((s.boot_id.clone(), new_until));
        }
        let newly_registered = p
            .scheduler
            .registered
            .as_ref()
            .is_some_and(|(_, until)| now < *until);
        let (Some(m), Some(s)) = (p.mirror.as_ref(), p.session.info.clone()) else {
            return;
        };
        let mine = m
            .leader
            .as_ref()
            .filter(|l| l.record.node == name && l.lease == s.lease)
            .map(|l| (l.epoch, l.lease));
        let leader_seen = m.leader.is_some();
        let changed = mine != p.scheduler.leading;
        p.scheduler.leading = mine;
        let writes = mine.map(|_| {
            let mut view = m.view();
            if newly_registered {
                view.returning = m
                    .allocs
                    .values()
                    .map(|p| p.record.node.clone())
                    .filter(|node| !view.nodes.contains_key(node))
                    .collect();
            }
            schedule::reconcile(&view, now).writes
        });
        if changed {
            let what = match mine {
                Some((epoch, _)) => format!("believes it leads (epoch {epoch})"),
                None => "believes it no longer leads".to_string(),
            };
            self.say_node(n, &what);
        }
        match (mine, writes) {
            (Some((epoch, _)), Some(writes)) => {
                if writes.is_empty() {
                    return;
                }
                let Some(p) = self.nodes[n].process.as_mut() else {
                    return;
                };
                p.scheduler.pass_epoch = Some(epoch);
                p.scheduler.pending = writes.into();
                let at = now + self.rtt();
                self.step_at(n, at, Step::SchedulerWrite);
            }
            (None, _) if !leader_seen => self.campaign(n, s.lease, s.boot_id),
            _ => {}
        }
    }

    /// Takes the leader key if nobody holds it.
    fn campaign(&mut self, n: usize, lease: i64, boot_id: String) {
        if !self.nodes[n].reaches_etcd() {
            return;
        }
        let key = self.keys.leader();
        let record = LeaderRecord {
            node: self.nodes[n].name.clone(),
            boot_id,
            since_ms: self.now,
        };
        let won = self.etcd.txn(
            &[Compare::CreateRevision(key.clone(), 0)],
            vec![Op::Put {
                key,
                value: Value::Leader(record),
                lease,
            }],
        );
        if won == Ok(true) {
            self.say_node(n, "campaigned and took the leader key");
        }
    }

    /// The pass's next write.
    pub fn scheduler_write(&mut self, n: usize) {
        let Some(p) = self.nodes[n].process.as_mut() else {
            return;
        };
        let (Some(epoch), Some(write)) = (p.scheduler.pass_epoch, p.scheduler.pending.pop_front())
        else {
            return;
        };
        let mut go_on = false;
        if self.nodes[n].reaches_etcd() {
            self.check_one_leader_at_write(n);
            let (key, expect, op) = match &write {
                Write::Put {
                    app,
                    slot,
                    record,
                    expect,
                } => {
                    let key = self.keys.alloc(app, *slot);
                    let op = Op::Put {
                        key: key.clone(),
                        value: Value::Alloc(record.clone()),
                        lease: 0,
                    };
                    (key, *expect, op)
                }
                Write::Delete { app, slot, expect } => {
                    let key = self.keys.alloc(app, *slot);
                    (key.clone(), *expect, Op::Delete(key))
                }
            };
            let compares = [
                Compare::CreateRevision(self.keys.leader(), epoch),
                Compare::ModRevision(key.clone(), expect),
            ];
            let landed = self.etcd.txn(&compares, vec![op]) == Ok(true);
            let what = match &write {
                Write::Put { record, .. } => format!(
                    "epoch {epoch} put {} -> {} gen {} ({}) expecting r{expect}: {}",
                    short(&key),
                    record.node,
                    record.generation,
                    record.reason,
                    if landed { "landed" } else { "refused" }
                ),
                Write::Delete { .. } => format!(
                    "epoch {epoch} delete {} expecting r{expect}: {}",
                    short(&key),
                    if landed { "landed" } else { "refused" }
                ),
            };
            self.say_node(n, &what);
            if landed {
                self.check_landed_write(n, epoch);
                go_on = true;
            }
        }
        let Some(p) = self.nodes[n].process.as_mut() else {
            return;
        };
        if go_on && !p.scheduler.pending.is_empty() {
            let at = self.now + self.rtt();
            self.step_at(n, at, Step::SchedulerWrite);
            return;
        }
        // The pass is over (done, refused, or etcd out of reach): the next decides again.
        p.scheduler.pending.clear();
        p.scheduler.pass_epoch = None;
        if std::mem::take(&mut p.scheduler.dirty) {
            self.scheduler_wake(n);
        }
    }
}
