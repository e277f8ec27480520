//! Driving a deployment with the rolling planner ([`crate::rollout`]): rolling, blue-green
//! (`keep_old`), a canary's hold of the old set, and the end, rollback or failure that follows.

use std::collections::BTreeMap;

use super::{Deployment, Effect, Outcome, Phase};
use crate::Millis;
use crate::rollout::{self, Member, MemberState, RolloutParams};

/// Where the instances stand and how the target release may move.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan<'a> {
    /// The target release's rollout settings (`hold` is the machine's own: it is ignored).
    pub params: RolloutParams,
    /// Each instance as the planner sees it (on the target release or not).
    pub members: &'a [Member],
    /// Blue-green: how long the old set stays warm after the switch.
    pub keep_old_ms: Millis,
    /// Roll back when a new instance fails.
    pub auto_rollback: bool,
    /// The target release's canary steps (percentages).
    pub canary_steps: &'a [u8],
    /// Why each failed instance failed, in words.
    pub failures: &'a BTreeMap<u32, String>,
    /// The balancer's counters now, for a canary's first window.
    pub counters: &'a super::Counters,
    /// Slot numbers new instances take first (a cluster node's assigned slots); empty: the
    /// lowest free ones.
    pub preferred_slots: &'a [u32],
}

impl Deployment {
    pub(super) fn drive(&mut self, plan: &Plan<'_>, now: Millis, fx: &mut Vec<Effect>) {
        if self.refresh.is_some() {
            // A live config refresh moves the instances itself.
            return;
        }
        let target = self.target().to_string();
        let params = RolloutParams {
            hold: self.canary_holds() || self.held_by_cluster(),
            // Led by the cluster, the old set does not stay warm: the cluster's slots are
            // brought back to their numbers on the new release once it ends.
            keep_old: plan.params.keep_old && self.lead.is_none(),
            ..plan.params
        };
        let steps = rollout::next_steps_in(&params, plan.members, plan.preferred_slots, now);
        if params.hold {
            let min_healthy = params.min_healthy.as_millis() as Millis;
            let healthy = plan
                .members
                .iter()
                .filter(|m| {
                    m.target
                        && matches!(m.state, MemberState::Ready { since } if now >= since + min_healthy)
                })
                .count() as u32;
            let whole = healthy >= params.instances;
            if let Some(lead) = self.lead.as_mut() {
                lead.ready = whole;
            }
            if self.walks_as == super::Kind::Canary {
                self.canary_begin(whole, plan.canary_steps, plan.counters, now, fx);
            }
        }
        let app = self.app.clone();
        let mut log = Vec::new();
        for slot in &steps.start {
            fx.push(Effect::Start {
                slot: *slot,
                release: target.clone(),
            });
            log.push(format!("start {app}/{slot} on {target}"));
        }
        for slot in &steps.activate {
            fx.push(Effect::Activate { slot: *slot });
            log.push(format!("switch back to the warm {app}/{slot}"));
        }
        for slot in &steps.standby {
            fx.push(Effect::Standby {
                slot: *slot,
                until: now + plan.keep_old_ms,
            });
            log.push(format!(
                "{app}/{slot} out of traffic, kept warm for {} s",
                plan.keep_old_ms / 1000
            ));
        }
        if !steps.standby.is_empty() || !steps.activate.is_empty() {
            fx.push(Effect::PersistInstances);
            fx.push(Effect::SyncLb);
        }
        for slot in &steps.retire {
            log.push(format!("retire {app}/{slot}"));
            fx.push(Effect::Retire { slot: *slot });
        }
        match steps.outcome {
            None => {}
            Some(rollout::Outcome::Done) => {
                let outcome = if self.phase == Phase::RollingBack {
                    Outcome::RolledBack
                } else {
                    Outcome::Succeeded
                };
                self.finish(outcome, &target, now, fx);
                return;
            }
            Some(rollout::Outcome::Failed { slot, .. }) => {
                let reason = plan
                    .failures
                    .get(&slot)
                    .cloned()
                    .unwrap_or_else(|| format!("{app}/{slot} failed"));
                // A restart has nothing to roll back to; the supervisor keeps restarting.
                if self.phase == Phase::RollingBack || !plan.auto_rollback || self.is_restart() {
                    self.log(now, format!("failed: {reason}"));
                    self.reason = Some(
                        self.reason
                            .clone()
                            .map_or(reason.clone(), |r| format!("{r}; then {reason}")),
                    );
                    let from = self.from.clone();
                    self.finish(Outcome::Failed, &from, now, fx);
                } else {
                    self.roll_back(&reason, now, fx);
                }
                return;
            }
        }
        if !log.is_empty() {
            for message in log {
                self.log(now, message);
            }
            fx.push(Effect::Record);
        }
    }
}
