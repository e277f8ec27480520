//! A live config refresh: each instance in turn is told to re-read its config (the daemon
//! renders it and sends a signal or a request); an instance counts as on the new release once
//! told. If one cannot be refreshed, the same deployment goes on as a rolling restart to the new
//! release, so the config reaches every instance either way.

use std::collections::{BTreeMap, VecDeque};

use super::{Deployment, Effect, Outcome};
use crate::Millis;
use crate::events::EventKind;

/// The refresh's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRun {
    /// Slots still to refresh, in order.
    pub queue: VecDeque<u32>,
    /// The slot being refreshed (its generation), waiting for its answer.
    pub current: Option<(u32, u64)>,
}

impl Deployment {
    pub(super) fn refresh_start(
        &mut self,
        slots: Vec<u32>,
        on_change: &str,
        instances: &BTreeMap<u32, Option<u64>>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        self.refresh = Some(RefreshRun {
            queue: slots.into(),
            current: None,
        });
        self.log(
            now,
            format!("live refresh ({on_change}) of each instance in turn"),
        );
        fx.push(Effect::Record);
        self.refresh_next(instances, now, fx);
    }

    /// Refreshes the next instance, or ends the refresh when every one is done.
    /// `instances`: each slot's generation when it runs (`None` when it does not).
    fn refresh_next(
        &mut self,
        instances: &BTreeMap<u32, Option<u64>>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let release = self.to.clone();
        loop {
            let Some(run) = self.refresh.as_mut() else {
                return;
            };
            let Some(slot) = run.queue.pop_front() else {
                self.refresh = None;
                fx.push(Effect::SyncLb);
                self.finish(Outcome::Succeeded, &release, now, fx);
                return;
            };
            match instances.get(&slot) {
                None => continue,
                Some(None) => {
                    // Not running: its next start renders the new config anyway.
                    fx.push(Effect::MoveToRelease {
                        slot,
                        release: release.clone(),
                    });
                }
                Some(Some(generation)) => {
                    run.current = Some((slot, *generation));
                    fx.push(Effect::Refresh {
                        slot,
                        generation: *generation,
                    });
                    return;
                }
            }
        }
    }

    /// An instance's answer to its refresh.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn refreshed(
        &mut self,
        slot: u32,
        generation: u64,
        still_there: bool,
        result: Result<String, String>,
        instances: &BTreeMap<u32, Option<u64>>,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        let Some(run) = self.refresh.as_ref() else {
            return;
        };
        if run.current != Some((slot, generation)) {
            return;
        }
        match result {
            Ok(how) if still_there => {
                fx.push(Effect::MoveToRelease {
                    slot,
                    release: self.to.clone(),
                });
                self.log(now, format!("{}/{slot} refreshed: {how}", self.app));
                fx.push(Effect::Record);
                self.refresh_next(instances, now, fx);
            }
            Ok(_) => self.refresh_failed(slot, "it restarted meanwhile".into(), now, fx),
            Err(e) => self.refresh_failed(slot, e, now, fx),
        }
    }

    /// One instance could not be refreshed: the deployment goes on as a rolling restart.
    pub(super) fn refresh_failed(
        &mut self,
        slot: u32,
        error: String,
        now: Millis,
        fx: &mut Vec<Effect>,
    ) {
        if self.refresh.take().is_none() {
            return;
        }
        let message = format!(
            "{}/{slot} could not be refreshed ({error}): a rolling restart brings the new config instead",
            self.app
        );
        self.log(now, message.clone());
        fx.push(Effect::Record);
        fx.push(Effect::Emit {
            kind: EventKind::ConfigRefreshFailed,
            slot: Some(slot),
            message,
        });
        fx.push(Effect::Drive);
    }
}
