//! Live config refresh (`[apps.NAME.config] on_change = "signal:HUP" | "http:POST /path"`): an
//! etcd change makes a new release as always, but instead of restarting, each instance in turn
//! gets the new release's config files rendered into its config dir and is told to re-read
//! them (a signal through its shim, or a request to its port that must answer 2xx). An
//! instance counts as on the new release once told.
//!
//! The refresh is a deployment (strategy `refresh`) so that nothing else deploys meanwhile and
//! the record shows every instance. If an instance cannot be refreshed, the same deployment
//! goes on as a rolling restart to the new release (the planner replaces the instances not on
//! it yet), so the config reaches every instance either way; a daemon restarted mid-refresh
//! finishes it the same way.

use jarfleet_core::deployment::{Input, Kind};
use jarfleet_core::events::EventKind;
use std::collections::BTreeMap;

use jarfleet_core::spec::OnChange;

use super::*;

impl Control {
    /// A release prepared for an etcd change: refreshed live when the app says so, else
    /// rolled out like any deploy.
    pub(super) fn config_release(&mut self, app: &str, prepared: PreparedApp) {
        let on_change = self
            .apps
            .get(app)
            .map(|a| a.rec.spec.config_on_change.clone())
            .unwrap_or_default();
        let values = prepared.spec.etcd_env.clone();
        if on_change == OnChange::Restart || prepared.spec.config_rendered.is_empty() {
            match self.deploy(app, prepared, None) {
                Ok(d) => self.emit(
                    EventKind::ConfigRollout,
                    Some(app),
                    None,
                    format!("etcd config changed: deployment #{} to {}", d.id, d.to),
                ),
                // A deployment is running, or the store cannot be written: the change waits
                // for the deployment's end (see `finish`) or the store's recovery.
                Err(e) => self.config_deferred(app, values, e.message),
            }
            return;
        }
        if let Err(e) = self.refresh_start(app, prepared, &on_change) {
            self.config_deferred(app, values, e.message);
        }
    }

    /// An etcd change that could not go out now: announced, and kept to go out after the
    /// running deployment, or once the store takes writes again.
    fn config_deferred(&mut self, app: &str, values: BTreeMap<String, String>, why: String) {
        self.etcd_pending.insert(app.to_string(), values);
        self.emit(EventKind::ConfigDeferred, Some(app), None, why);
    }

    fn refresh_start(
        &mut self,
        app: &str,
        prepared: PreparedApp,
        on_change: &OnChange,
    ) -> Result<(), ErrorBody> {
        let now = self.now_ms();
        let release = self.record_release(app, prepared, None);
        self.start_deployment(app, &release, &format!("etcd config changed: {on_change}"))?;
        let Some(rt) = self.apps.get_mut(app) else {
            return Ok(());
        };
        if let Some(d) = rt.deployment.as_mut() {
            d.kind = Kind::Refresh;
        }
        let slots = rt.slots.keys().copied().collect();
        let instances = self.refresh_instances(app);
        let input = Input::RefreshStart {
            slots,
            on_change: on_change.to_string(),
            instances: &instances,
        };
        self.feed(app, input, now);
        Ok(())
    }

    /// Whether `app`'s deployment is a live refresh (the rollout planner leaves it alone).
    pub(super) fn refreshing(&self, app: &str) -> bool {
        self.apps
            .get(app)
            .and_then(|a| a.deployment.as_ref())
            .is_some_and(|d| d.refresh.is_some())
    }

    /// Each instance's generation when it runs (`None` when it does not), for the refresh.
    fn refresh_instances(&self, app: &str) -> BTreeMap<u32, Option<u64>> {
        self.apps
            .get(app)
            .map(|a| {
                a.slots
                    .iter()
                    .map(|(slot, s)| {
                        let running = s.record.instance.process.is_some();
                        (*slot, running.then_some(s.record.generation))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tells the instance in `slot` to re-read its config: renders it, then the signal or the
    /// request of `on_change`; its answer comes back to `on_refreshed`.
    pub(super) fn refresh_send(&mut self, app: &str, slot: u32, generation: u64) {
        let Some(rt) = self.apps.get(app) else {
            return;
        };
        let Some(d) = rt.deployment.as_ref() else {
            return;
        };
        let release = d.to.clone();
        let Some(port) = rt
            .slots
            .get(&slot)
            .and_then(|s| s.record.instance.process.as_ref())
            .map(|p| p.port)
        else {
            let error = "it is not running".to_string();
            self.feed(app, Input::RefreshFailed { slot, error }, self.now_ms());
            return;
        };
        // on_change is a live setting: as the user set it last.
        let on_change = rt.rec.spec.config_on_change.clone();
        let (spec, _) = rt.rec.release(&release);
        let templates = spec
            .env
            .get(jarfleet_host::templates::TEMPLATES_ENV)
            .cloned();
        let rendered = match templates {
            Some(t) => jarfleet_host::templates::render_instance(
                std::path::Path::new(&t),
                &launch::instance_config_dir(&self.dirs, app, slot),
                &launch::instance_vars(&self.dirs, app, slot, port),
            )
            .map_err(|e| e.explained()),
            None => Err("the release has no config files".to_string()),
        };
        if let Err(error) = rendered {
            self.feed(app, Input::RefreshFailed { slot, error }, self.now_ms());
            return;
        }
        match on_change {
            OnChange::Signal { signal } => {
                let sent = self
                    .slot_mut(app, slot)
                    .and_then(|s| s.commands.as_ref())
                    .map(|c| {
                        c.send(ShimCommand::Signal {
                            signal: signal.clone(),
                        })
                    });
                let result = match sent {
                    Some(Ok(())) => Ok(format!("sent SIG{signal}")),
                    _ => Err("its shim is not connected".to_string()),
                };
                self.on_refreshed(app, slot, generation, result);
            }
            OnChange::Http { method, path } => {
                let call = super::host::RefreshCall {
                    app: app.to_string(),
                    slot,
                    generation,
                    port,
                    method,
                    path,
                    timeout: REFRESH_TIMEOUT,
                };
                self.host.refresh_call(call, self.tx.clone());
            }
            OnChange::Restart => self.on_refreshed(app, slot, generation, Ok(String::new())),
        }
    }

    /// An instance's answer to its refresh.
    pub(super) fn on_refreshed(
        &mut self,
        app: &str,
        slot: u32,
        generation: u64,
        result: Result<String, String>,
    ) {
        let still_there = self
            .apps
            .get(app)
            .and_then(|a| a.slots.get(&slot))
            .is_some_and(|s| s.record.generation == generation);
        let instances = self.refresh_instances(app);
        let input = Input::Refreshed {
            slot,
            generation,
            still_there,
            result,
            instances: &instances,
        };
        self.feed(app, input, self.now_ms());
    }

    /// The instance runs `release` now (its config was refreshed, or it will start with it).
    pub(super) fn move_to_release(&mut self, app: &str, slot: u32, release: &str) {
        if let Some(s) = self.slot_mut(app, slot) {
            s.record.instance.release = release.to_string();
            s.record.dirty = true;
        }
        self.persist_dirty();
        self.sync_lb(app);
    }
}

/// How long an instance gets to answer its refresh request.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
