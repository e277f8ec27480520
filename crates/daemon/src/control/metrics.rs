//! The control loop's side of `/metrics`: what it counts where things happen (exits by class,
//! restarts, health-check latencies, deployments by outcome, its own events), and the
//! [`Snapshot`] it hands out for a scrape (a copy of figures; the IO and the encoding happen
//! off the loop, in `crate::metrics`).
//!
//! Counting is always on (a few map updates per event); `[daemon] metrics = false` only takes
//! `/metrics` away. Series live as long as what they describe: an instance's are dropped when
//! its slot is forgotten or its release pruned, an app's with the app.

use crate::metrics::{AppNow, InstanceKey, InstanceNow, InstanceTally, LoopFigures, Snapshot};
use jarfleet_core::events::EventKind;

use super::*;

#[derive(Default)]
pub(super) struct Tally {
    instances: BTreeMap<InstanceKey, InstanceTally>,
    /// Ended deployments by (app, strategy, outcome).
    deployments: BTreeMap<(String, String, String), u64>,
    /// Events handled and the time spent on them, by kind (`timers` for the loop's own work
    /// between events: deadlines, deployments, load balancer sync, store writes).
    events: BTreeMap<&'static str, u64>,
    busy: BTreeMap<&'static str, Duration>,
}

impl Tally {
    /// One event of `kind` took `took` of the loop's time.
    pub(super) fn event(&mut self, kind: &'static str, took: Duration) {
        *self.events.entry(kind).or_default() += 1;
        self.busy(kind, took);
    }

    pub(super) fn busy(&mut self, kind: &'static str, took: Duration) {
        *self.busy.entry(kind).or_default() += took;
    }
}

impl Event {
    /// Whether the event is work that may have mapped code the idle loop does not run: everything
    /// but health-check results and read-only queries.
    pub(super) fn is_work(&self) -> bool {
        !matches!(
            self,
            Event::Probe(_)
                | Event::Api(
                    ApiRequest::Status { .. }
                        | ApiRequest::Metrics { .. }
                        | ApiRequest::CurrentSpec { .. }
                        | ApiRequest::History { .. }
                )
        )
    }

    /// The event's kind, as `jarfleet_control_events_total` labels it.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Event::Api(req) => match req {
                ApiRequest::Apply { .. } => "apply",
                ApiRequest::Action { .. } => "action",
                ApiRequest::DaemonSettings { .. } => "daemon-settings",
                ApiRequest::Scale { .. } => "scale",
                ApiRequest::Status { .. } => "status",
                ApiRequest::Metrics { .. } => "metrics",
                ApiRequest::CurrentSpec { .. } => "current-spec",
                ApiRequest::Deploy { .. } => "deploy",
                ApiRequest::Rollback { .. } => "rollback",
                ApiRequest::Canary { .. } => "canary",
                ApiRequest::History { .. } => "history",
                ApiRequest::Shutdown { .. } => "shutdown",
                ApiRequest::HandOver { .. } => "upgrade",
                ApiRequest::TakeStrays { .. } => "take-strays",
            },
            Event::Shim(_) => "shim",
            Event::Probe(_) => "probe",
            Event::Notice(_) => "emit",
            Event::Etcd(EtcdNote::Values { .. }) => "etcd-values",
            Event::ConfigRelease { .. } => "config-release",
            Event::Refreshed(_) => "refreshed",
            Event::Trained(_) => "trained",
            Event::Balancer(BalancerNote::Drained { .. }) => "drained",
            Event::Cluster(_) => "cluster",
        }
    }
}

impl Control {
    fn instance_key(&self, app: &str, slot: u32) -> Option<InstanceKey> {
        let s = self.apps.get(app)?.slots.get(&slot)?;
        Some(InstanceKey {
            app: app.to_string(),
            slot,
            release: s.record.instance.release.clone(),
        })
    }

    fn tally_of(&mut self, app: &str, slot: u32) -> Option<&mut InstanceTally> {
        let key = self.instance_key(app, slot)?;
        Some(self.metrics.instances.entry(key).or_default())
    }

    /// A note from an instance's state machine: exits and restarts are counted here.
    pub(super) fn count_note(&mut self, app: &str, slot: u32, kind: &NoteKind) {
        match kind {
            NoteKind::Exited => {
                let class = self
                    .apps
                    .get(app)
                    .and_then(|a| a.slots.get(&slot))
                    .and_then(|s| s.record.instance.last_exit.as_ref())
                    .map(|(_, class)| class.label());
                if let Some(class) = class
                    && let Some(t) = self.tally_of(app, slot)
                {
                    *t.exits.entry(class).or_default() += 1;
                }
            }
            NoteKind::RestartScheduled => {
                if let Some(t) = self.tally_of(app, slot) {
                    t.restarts += 1;
                }
            }
            _ => {}
        }
    }

    /// A health check's result and how long it took.
    pub(super) fn count_probe(&mut self, app: &str, slot: u32, ok: bool, took: Duration) {
        if let Some(t) = self.tally_of(app, slot) {
            let h = if ok {
                &mut t.health_ok
            } else {
                &mut t.health_failed
            };
            h.get_or_insert_with(Default::default).observe(took);
        }
    }

    /// A deployment ended with `outcome`.
    pub(super) fn count_deployment(&mut self, app: &str, strategy: &str, outcome: &str) {
        *self
            .metrics
            .deployments
            .entry((app.to_string(), strategy.to_string(), outcome.to_string()))
            .or_default() += 1;
    }

    /// Drops the series of `app` that describe nothing any more: forgotten slots, pruned
    /// releases, or the whole app once it is gone.
    pub(super) fn prune_metrics(&mut self, app: &str) {
        let rt = self.apps.get(app);
        self.metrics.instances.retain(|k, _| {
            if k.app != app {
                return true;
            }
            let Some(rt) = rt else { return false };
            let Some(s) = rt.slots.get(&k.slot) else {
                return false;
            };
            s.record.instance.release == k.release || rt.rec.releases.contains_key(&k.release)
        });
        if rt.is_none() {
            self.metrics.deployments.retain(|(a, _, _), _| a != app);
        }
    }

    /// `/metrics` on or off (`[daemon] metrics`), kept in the store for the next daemon.
    pub(super) fn set_metrics_enabled(&mut self, on: bool) {
        if self.metrics_on == on {
            return;
        }
        self.metrics_on = on;
        self.write(crate::store::Write::Meta {
            key: "metrics".into(),
            value: if on { "on" } else { "off" }.into(),
        });
        self.emit(
            EventKind::ConfigMetrics,
            None,
            None,
            format!(
                "/metrics turned {} ([daemon] metrics = {on})",
                if on { "on" } else { "off" }
            ),
        );
    }

    /// The figures of one scrape; `None` while `/metrics` is off.
    pub(super) fn metrics_snapshot(&self) -> Option<Snapshot> {
        if !self.metrics_on {
            return None;
        }
        let mut instances = Vec::new();
        let mut apps = Vec::new();
        for (name, rt) in &self.apps {
            for (slot, s) in &rt.slots {
                let i = &s.record.instance;
                instances.push(InstanceNow {
                    key: InstanceKey {
                        app: name.clone(),
                        slot: *slot,
                        release: i.release.clone(),
                    },
                    up: i.process.is_some(),
                    ready: i.is_ready(),
                    pid: i.process.as_ref().map(|p| p.pid),
                    started_at_ms: i.process.as_ref().map(|p| p.started_at),
                });
            }
            let deployments = self
                .metrics
                .deployments
                .iter()
                .filter(|((a, _, _), _)| a == name)
                .map(|((_, strategy, outcome), n)| ((strategy.clone(), outcome.clone()), *n))
                .collect();
            let (listener_up, listener_bind_failures) = self.listener_figures(name);
            apps.push(AppNow {
                name: name.clone(),
                desired: if rt.removing {
                    0
                } else {
                    rt.rec.spec.instances
                },
                deploying: rt.deployment.is_some(),
                deployments,
                listener_up,
                listener_bind_failures,
            });
        }
        Some(Snapshot {
            instances,
            tallies: self
                .metrics
                .instances
                .iter()
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect(),
            apps,
            listeners: self.lb_listeners(),
            relay: self.relay_active(),
            control: LoopFigures {
                events: self.metrics.events.clone(),
                busy: self.metrics.busy.clone(),
                queued: self.tx.max_capacity() - self.tx.capacity(),
                started_at_ms: self.started_at_ms,
                store: self.store_report(),
            },
        })
    }
}
