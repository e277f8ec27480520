//! Membership as `crates/cluster/src/session.rs` keeps it: register (the lease kept from the
//! previous daemon if etcd still has it, else a new one; this host's own earlier registration
//! revoked; the node key put only if absent), renew every second, and when the lease is lost
//! (etcd says it is gone, or no renewal got through within its TTL) register again.

use jarfleet_core::cluster::records::NodeRecord;

use crate::etcd::{Compare, Op, Value};
use crate::node::SessionInfo;
use crate::world::{KEEPALIVE, LEASE_TTL, Step, World};

impl World {
    /// One attempt to register; a failure is tried again after a doubling wait.
    pub fn register(&mut self, n: usize) {
        if self.session_of(n).is_some() {
            return;
        }
        if !self.nodes[n].reaches_etcd() {
            self.register_later(n);
            return;
        }
        let now = self.now;
        // Only a daemon's first registration tries the lease it kept on disk.
        let previous = self.nodes[n]
            .process
            .as_mut()
            .and_then(|p| p.previous_lease.take());
        let kept = previous.filter(|(lease, _)| self.etcd.keep_alive(*lease, now).is_some());
        let (lease, boot_id) = match kept {
            Some(k) => k,
            None => (self.etcd.grant(LEASE_TTL, now), self.new_boot_id(n)),
        };
        let name = self.nodes[n].name.clone();
        let node_key = self.keys.node(&name);
        if let Some(theirs) = self.etcd.get(&node_key).map(|kv| kv.lease)
            && theirs != lease
        {
            // This host's own earlier registration (the simulation gives every host its own
            // name): it goes now rather than after its TTL.
            self.etcd.revoke(theirs);
        }
        let record = NodeRecord {
            name: name.clone(),
            address: format!("10.0.0.{}", n + 1),
            peer_port: 9901,
            relay_port: None,
            labels: Default::default(),
            memory: self.nodes[n].memory,
            version: "sim".into(),
            build: None,
            boot_id: boot_id.clone(),
            registered_ms: now,
        };
        let txn = self.etcd.txn(
            &[Compare::CreateRevision(node_key.clone(), 0)],
            vec![
                Op::Put {
                    key: node_key.clone(),
                    value: Value::Node(record.clone()),
                    lease,
                },
                Op::Put {
                    key: self.keys.known(&name),
                    value: Value::Known(record),
                    lease: 0,
                },
            ],
        );
        let ours = match txn {
            Ok(true) => true,
            // Our own key on this lease (a kept registration), or someone else's.
            Ok(false) => self.etcd.get(&node_key).is_some_and(|kv| kv.lease == lease),
            Err(_) => false,
        };
        if !ours {
            self.etcd.revoke(lease);
            self.register_later(n);
            return;
        }
        self.nodes[n].saved_lease = Some((lease, boot_id.clone()));
        let Some(p) = self.nodes[n].process.as_mut() else {
            return;
        };
        p.session.info = Some(SessionInfo { lease, boot_id });
        p.session.expires = now + LEASE_TTL;
        p.session.backoff = 0;
        self.say_node(n, &format!("registered on lease {lease:x}"));
        self.step_at(n, now + KEEPALIVE, Step::KeepAlive);
        self.session_changed(n);
    }

    fn register_later(&mut self, n: usize) {
        let Some(p) = self.nodes[n].process.as_mut() else {
            return;
        };
        p.session.backoff = (p.session.backoff * 2).clamp(200, 2_000);
        let at = self.now + p.session.backoff;
        self.step_at(n, at, Step::Register);
    }

    /// One keep-alive of the lease keeper.
    pub fn keep_alive(&mut self, n: usize) {
        let Some(info) = self.session_of(n) else {
            return;
        };
        let now = self.now;
        let expires = self.nodes[n]
            .process
            .as_ref()
            .map_or(0, |p| p.session.expires);
        // Past its own deadline the keeper gives up without asking (`timeout_at(expires, …)`).
        let answer = if now >= expires {
            None
        } else if self.nodes[n].reaches_etcd() {
            Some(self.etcd.keep_alive(info.lease, now))
        } else {
            None
        };
        let lost = match answer {
            Some(Some(_)) => {
                if let Some(p) = self.nodes[n].process.as_mut() {
                    p.session.expires = now + LEASE_TTL;
                }
                None
            }
            Some(None) => Some("etcd says it is gone"),
            None if now >= expires => Some("no renewal within its TTL"),
            None => None,
        };
        match lost {
            None => {
                // The keeper never sleeps past the expiry.
                let expires = self.nodes[n]
                    .process
                    .as_ref()
                    .map_or(0, |p| p.session.expires);
                let at = (now + KEEPALIVE).min(expires.max(now + 1));
                self.step_at(n, at, Step::KeepAlive);
            }
            Some(why) => {
                self.say_node(
                    n,
                    &format!("lease {:x} lost ({why}): registering again", info.lease),
                );
                if let Some(p) = self.nodes[n].process.as_mut() {
                    p.session.info = None;
                }
                self.session_changed(n);
                self.step_at(n, now, Step::Register);
            }
        }
    }

    pub fn session_of(&self, n: usize) -> Option<SessionInfo> {
        self.nodes[n].process.as_ref()?.session.info.clone()
    }

    /// The session's watchers: the scheduler and the publisher.
    fn session_changed(&mut self, n: usize) {
        self.scheduler_wake(n);
        self.publish(n);
    }
}
