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

use jarfleet_core::events::EventKind;
use std::collections::VecDeque;

use jarfleet_core::spec::OnChange;

use super::deploy::SUCCEEDED;
use super::*;

pub(super) struct RefreshRun {
    /// The release whose config goes out.
    release: String,
    /// Slots still to refresh, in order.
    queue: VecDeque<u32>,
    /// The slot being refreshed (its generation), waiting for its answer.
    current: Option<(u32, u64)>,
}

impl Control {
    /// A release prepared for an etcd change: refreshed live when the app says so, else
    /// rolled out like any deploy.
    pub(super) fn config_release(&mut self, app: &str, prepared: PreparedApp) {
        let on_change = self
            .apps
            .get(app)
            .map(|a| a.rec.spec.config_on_change.clone())
            .unwrap_or_default();
        if on_change == OnChange::Restart || prepared.spec.config_rendered.is_empty() {
            match self.deploy(app, prepared, None) {
                Ok(d) => self.emit(
                    EventKind::ConfigRollout,
                    Some(app),
                    None,
                    format!("etcd config changed: deployment #{} to {}", d.id, d.to),
                ),
                // A deployment is running: the change waits for it (see `finish`).
                Err(e) => self.emit(EventKind::ConfigDeferred, Some(app), None, e.message),
            }
            return;
        }
        if let Err(e) = self.refresh_start(app, prepared, &on_change) {
            self.emit(EventKind::ConfigDeferred, Some(app), None, e.message);
        }
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
            d.strategy = "refresh".into();
        }
        rt.refresh = Some(RefreshRun {
            release,
            queue: rt.slots.keys().copied().collect(),
            current: None,
        });
        self.record_step(
            app,
            format!("live refresh ({on_change}) of each instance in turn"),
            now,
        );
        self.refresh_next(app);
        Ok(())
    }

    /// Whether `app`'s deployment is a live refresh (the rollout planner leaves it alone).
    pub(super) fn refreshing(&self, app: &str) -> bool {
        self.apps.get(app).is_some_and(|a| a.refresh.is_some())
    }

    /// Refreshes the next instance, or ends the refresh when every one is done.
    fn refresh_next(&mut self, app: &str) {
        loop {
            let now = self.now_ms();
            let Some(rt) = self.apps.get_mut(app) else {
                return;
            };
            let Some(run) = rt.refresh.as_mut() else {
                return;
            };
            let Some(slot) = run.queue.pop_front() else {
                let release = run.release.clone();
                rt.refresh = None;
                self.sync_lb(app);
                self.finish(app, SUCCEEDED, &release, now);
                return;
            };
            let release = run.release.clone();
            let Some(s) = rt.slots.get(&slot) else {
                continue;
            };
            let port = s.record.instance.process.as_ref().map(|p| p.port);
            let generation = s.record.generation;
            let Some(port) = port else {
                // Not running: its next start renders the new config anyway.
                self.move_to_release(app, slot, &release);
                continue;
            };
            // on_change is a live setting: as the user set it last.
            let on_change = rt.rec.spec.config_on_change.clone();
            let (spec, _) = rt.rec.release(&release);
            let templates = spec.env.get(crate::config::TEMPLATES_ENV).cloned();
            let rendered = match templates {
                Some(t) => crate::config::render_instance(
                    std::path::Path::new(&t),
                    &launch::instance_config_dir(&self.dirs, app, slot),
                    &launch::instance_vars(&self.dirs, app, slot, port),
                )
                .map_err(|e| e.explained()),
                None => Err("the release has no config files".to_string()),
            };
            if let Err(e) = rendered {
                self.refresh_failed(app, slot, e);
                return;
            }
            if let Some(run) = self.apps.get_mut(app).and_then(|a| a.refresh.as_mut()) {
                run.current = Some((slot, generation));
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
                    let tx = self.tx.clone();
                    let app = app.to_string();
                    tokio::spawn(async move {
                        let call = probe::http_call(port, &method, &path);
                        let result = match tokio::time::timeout(REFRESH_TIMEOUT, call).await {
                            Ok(Ok(status)) if (200..300).contains(&status) => {
                                Ok(format!("{method} {path} answered {status}"))
                            }
                            Ok(Ok(status)) => Err(format!("{method} {path} answered {status}")),
                            Ok(Err(e)) => Err(match e.shortage {
                                // Not the instance's answer: said as such (the fallback, a
                                // rolling restart, waits for new instances to be ready).
                                Some(s) => format!(
                                    "{method} {path} could not be sent ({}): {e}",
                                    s.describe_here()
                                ),
                                None => format!("{method} {path}: {e}"),
                            }),
                            Err(_) => Err(format!(
                                "{method} {path}: no answer within {} s",
                                REFRESH_TIMEOUT.as_secs()
                            )),
                        };
                        let _ = tx
                            .send(Event::Refreshed {
                                app,
                                slot,
                                generation,
                                result,
                            })
                            .await;
                    });
                }
                OnChange::Restart => self.on_refreshed(app, slot, generation, Ok(String::new())),
            }
            return;
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
        let Some(run) = self.apps.get(app).and_then(|a| a.refresh.as_ref()) else {
            return;
        };
        if run.current != Some((slot, generation)) {
            return;
        }
        let release = run.release.clone();
        let still_there = self
            .apps
            .get(app)
            .and_then(|a| a.slots.get(&slot))
            .is_some_and(|s| s.record.generation == generation);
        match result {
            Ok(how) if still_there => {
                self.move_to_release(app, slot, &release);
                self.record_step(app, format!("{app}/{slot} refreshed: {how}"), self.now_ms());
                self.refresh_next(app);
            }
            Ok(_) => self.refresh_failed(app, slot, "it restarted meanwhile".into()),
            Err(e) => self.refresh_failed(app, slot, e),
        }
    }

    /// One instance could not be refreshed: the deployment goes on as a rolling restart.
    fn refresh_failed(&mut self, app: &str, slot: u32, error: String) {
        if let Some(rt) = self.apps.get_mut(app) {
            rt.refresh = None;
        }
        let message = format!(
            "{app}/{slot} could not be refreshed ({error}): a rolling restart brings the new config instead"
        );
        self.record_step(app, message.clone(), self.now_ms());
        self.emit(
            EventKind::ConfigRefreshFailed,
            Some(app),
            Some(slot),
            message,
        );
        self.drive(app);
    }

    /// The instance runs `release` now (its config was refreshed, or it will start with it).
    fn move_to_release(&mut self, app: &str, slot: u32, release: &str) {
        if let Some(s) = self.slot_mut(app, slot) {
            s.record.instance.release = release.to_string();
            s.record.dirty = true;
        }
        self.persist_dirty();
        self.sync_lb(app);
    }
}

/// How long an instance gets to answer its refresh request.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(30);
