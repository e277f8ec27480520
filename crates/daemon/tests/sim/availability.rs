//! `max_unavailable`, judged at the moment a deployment takes a ready instance out of service.
//!
//! A plain count of ready instances cannot be the check: crashes, failed probes and commands
//! lower it legitimately, and a deployment must then wait rather than make it worse. What
//! `max_unavailable` forbids is the deployment's own move: taking an instance the loop holds as
//! ready out (its `instance.stopping`) when that leaves fewer than `instances - max_unavailable`
//! ready ones. The loop's view is followed through its own event stream, in order, so "before"
//! and "after" are the exact moments around the take-out, not a status read a step later.

use std::collections::BTreeSet;

use jarfleet_api::{EventRecord, StatusReport};

/// The loop's view of one app's ready instances, as its events tell it.
#[derive(Default)]
pub(super) struct Availability {
    /// Slots whose instance the loop last reported ready.
    ready: BTreeSet<u32>,
    /// A deployment runs (between its `deploy.started` and its end).
    deploying: bool,
    /// `instances` as the loop last showed it; `None` after a scale until the next status.
    desired: Option<u32>,
    /// Take-outs of a ready instance judged against the bound.
    pub checked: usize,
}

impl Availability {
    /// The view of a status taken with nothing delivered after it (a new daemon's, or the one
    /// after a step).
    pub fn seed(&mut self, app: &str, status: &StatusReport) {
        let Some(a) = status.apps.iter().find(|a| a.name == app) else {
            *self = Availability {
                checked: self.checked,
                ..Availability::default()
            };
            return;
        };
        self.ready = a
            .instances
            .iter()
            .filter(|i| i.state == "ready")
            .map(|i| i.slot)
            .collect();
        self.deploying = a.deployment.is_some();
        self.desired = Some(a.desired);
    }

    /// Follows one event; an error says how the bound was broken.
    pub fn follow(
        &mut self,
        app: &str,
        e: &EventRecord,
        max_unavailable: u32,
    ) -> Result<(), String> {
        if e.app.as_deref() != Some(app) {
            return Ok(());
        }
        match (e.kind.as_str(), e.slot) {
            ("instance.ready" | "instance.recovered", Some(slot)) => {
                self.ready.insert(slot);
            }
            ("instance.stopping", Some(slot)) => {
                let was_ready = self.ready.remove(&slot);
                if was_ready
                    && self.deploying
                    && let Some(desired) = self.desired
                {
                    self.checked += 1;
                    let floor = desired.saturating_sub(max_unavailable);
                    let left = self.ready.len() as u32;
                    if left < floor {
                        return Err(format!(
                            "a deployment took ready instance {app}/{slot} out, leaving {left} ready, fewer than {floor} (instances {desired}, max_unavailable {max_unavailable}); ready now: {:?} (event #{}: {})",
                            self.ready, e.id, e.message
                        ));
                    }
                }
            }
            (
                "instance.unhealthy"
                | "instance.exited"
                | "instance.stopped"
                | "instance.standby-ended"
                | "instance.start-timeout"
                | "instance.spawned",
                Some(slot),
            ) => {
                self.ready.remove(&slot);
            }
            ("deploy.started", _) => self.deploying = true,
            ("deploy.succeeded" | "deploy.rolled-back" | "deploy.failed" | "deploy.aborted", _) => {
                self.deploying = false
            }
            ("app.scaled" | "app.updated" | "app.removing", _) => self.desired = None,
            _ => {}
        }
        Ok(())
    }
}
