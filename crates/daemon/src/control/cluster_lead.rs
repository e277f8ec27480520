//! This node's part of a canary or blue-green rollout across the cluster. Every node that holds
//! the app's slots runs its own deployment of the release (its new set beside the old one),
//! led by the rollout's record (`jarfleet_core::cluster::rollout`): the scheduler gives the new
//! release each canary step's share of every balancer's traffic, judges the step on the sum of
//! every node's figures, then releases the old sets (or switches a blue-green) on every node
//! with one write, or rolls the release back everywhere.
//!
//! Here the loop feeds its deployments what the record says ([`Control::follow_leads`]) and
//! hands the agent its figures of each new set ([`Control::publish_set_stats`]).

use jarfleet_cluster::publish::SetStatsView;
use jarfleet_core::canary::StepFigures;
use jarfleet_core::cluster::records::{
    RolloutRecord, RolloutState, RolloutStrategy, SetStatsRecord,
};
use jarfleet_core::deployment::{Input, Kind, Phase as DeployPhase};

use super::*;

/// While a led deployment runs, the loop wakes at least this often (its figures, the record).
const LEAD_EVERY_MS: u64 = 500;

/// What a led deployment is to do.
enum Follow {
    Share { step: u32, percent: u8 },
    Release,
    RollBack(String),
}

impl Control {
    /// Whether a deployment of `app` from `from` to `to` is this node's part of a cluster-wide
    /// canary or blue-green rollout of `to`.
    pub(super) fn led_by_cluster(&self, app: &str, from: &str, to: &str) -> bool {
        from != to
            && self
                .cluster_lead(app)
                .is_some_and(|r| r.release == to && r.state == RolloutState::Rolling)
    }

    fn cluster_lead(&self, app: &str) -> Option<&RolloutRecord> {
        self.cluster.as_ref()?.leads.get(app)
    }

    /// A deployment resumed by a daemon of a cluster node: a canary or blue-green to another
    /// release was the node's part of a rollout, and follows it again.
    pub(super) fn lead_resumed(&mut self) {
        if !crate::cluster_link::was_joined(&self.dirs) {
            return;
        }
        for rt in self.apps.values_mut() {
            if let Some(d) = rt.deployment.as_mut()
                && d.from != d.to
                && matches!(d.walks_as, Kind::Canary | Kind::BlueGreen)
            {
                d.lead = Some(Default::default());
            }
        }
    }

    /// Feeds each led deployment what its rollout's record says now.
    pub(super) fn follow_leads(&mut self) {
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        if c.assigned.is_none() {
            // The cluster has not been read yet.
            return;
        }
        let mut todo = Vec::new();
        for (app, rt) in &self.apps {
            let Some(d) = rt
                .deployment
                .as_ref()
                .filter(|d| d.lead.is_some() && d.phase == DeployPhase::Running)
            else {
                continue;
            };
            let record = c.leads.get(app).filter(|r| r.release == d.to);
            let follow = match record {
                None => {
                    Follow::RollBack(format!("the cluster no longer rolls out release {}", d.to))
                }
                Some(r) if r.state == RolloutState::RolledBack => {
                    Follow::RollBack(r.why.clone().unwrap_or_else(|| {
                        format!("release {} was rolled back across the cluster", d.to)
                    }))
                }
                Some(r) if r.released => {
                    if !d.held_by_cluster() {
                        continue;
                    }
                    Follow::Release
                }
                Some(r) if r.strategy == RolloutStrategy::Canary && r.percent > 0 => {
                    let same = d.canary.as_ref().is_some_and(|run| {
                        run.started.is_some()
                            && run.step == r.step as usize
                            && run.percent == r.percent
                    });
                    if same {
                        continue;
                    }
                    Follow::Share {
                        step: r.step,
                        percent: r.percent,
                    }
                }
                _ => continue,
            };
            todo.push((app.clone(), follow));
        }
        for (app, follow) in todo {
            let now = self.now_ms();
            match follow {
                Follow::Share { step, percent } => {
                    let counters = self.canary_counters(&app);
                    let input = Input::LeadShare {
                        step,
                        percent,
                        counters: &counters,
                    };
                    self.feed(&app, input, now);
                    self.canary_observe(Some(&app));
                }
                Follow::Release => self.feed(&app, Input::LeadRelease, now),
                Follow::RollBack(reason) => self.feed(&app, Input::LeadRollBack { reason }, now),
            }
        }
    }

    /// This node's figures of each led deployment's new set, handed to the agent (which
    /// publishes them as `stats/<node>/<app>`): taken from the data plane at most every
    /// [`LEAD_EVERY_MS`], not at every turn of the loop.
    pub(super) fn publish_set_stats(&mut self) {
        let now = self.now_ms();
        let Some(c) = self.cluster.as_mut() else {
            return;
        };
        if now < c.stats_due {
            return;
        }
        c.stats_due = now + LEAD_EVERY_MS;
        let Some(c) = self.cluster.as_ref() else {
            return;
        };
        let mut view = SetStatsView::new();
        for (app, rt) in &self.apps {
            let Some(d) = rt.deployment.as_ref() else {
                continue;
            };
            let Some(lead) = d.lead.as_ref().filter(|_| d.phase == DeployPhase::Running) else {
                continue;
            };
            let (step, percent, figures) = match d.canary.as_ref() {
                Some(run) if run.started.is_some() => (
                    run.step as u32,
                    run.percent,
                    run.step_figures(&self.canary_counters(app)),
                ),
                _ => (0, 0, StepFigures::default()),
            };
            view.insert(
                app.clone(),
                SetStatsRecord {
                    release: d.to.clone(),
                    ready: lead.ready,
                    step,
                    percent,
                    figures,
                    bounds: jarfleet_proxy::LATENCY_BOUNDS_US.to_vec(),
                },
            );
        }
        c.stats.send_if_modified(|old| {
            if *old == view {
                false
            } else {
                *old = view;
                true
            }
        });
    }

    /// While a led deployment runs, the loop wakes now and then to follow it.
    pub(super) fn lead_wakeup(&self) -> Option<u64> {
        self.apps
            .values()
            .any(|rt| {
                rt.deployment
                    .as_ref()
                    .is_some_and(|d| d.lead.is_some() && d.is_active())
            })
            .then(|| self.now_ms() + LEAD_EVERY_MS)
    }

    /// A led blue-green's new set takes no traffic until the cluster switches every node.
    pub(super) fn held_blue_green(&self, app: &str) -> Option<String> {
        let d = self.apps.get(app)?.deployment.as_ref()?;
        (d.walks_as == Kind::BlueGreen && d.held_by_cluster()).then(|| d.to.clone())
    }
}
