//! Every deployment strategy in the simulation, and the outside world a deployment reaches
//! besides shims and checks: a live refresh's HTTP request, the etcd watch and the preparation
//! of its changes, the training of a class data archive (`Host` methods the simulated host
//! answers from the schedule).
//!
//! Each seed picks its app's strategy: rolling (the default), blue-green with or without
//! `keep_old`, canary (steps, sometimes a pause; judged without traffic, as an app without
//! `listen` is today: it waits, so the operator promotes it), or a config change from etcd
//! refreshed live (`on_change` signal, http or restart). The operator's `promote` (plain or
//! full) and `abort` arrive at any moment.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use jarfleet_daemon::control::Notice;
use jarfleet_daemon::control::host::{
    ConfigPrepared, ConfigRequest, RefreshCall, Refreshed, TrainRequest, Trained, Watch,
};
use jarfleet_daemon::etcd_watch::EtcdNote;

/// Whether schedules pick their strategy (else every one is rolling).
const PICKED: bool = true;

/// The app's deployment strategy in one schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Strategy {
    Rolling,
    BlueGreen {
        keep_old_s: u64,
    },
    Canary {
        pause: bool,
    },
    /// Config changes from etcd, with this `on_change`.
    Refresh(&'static str),
}

impl Strategy {
    /// The schedule's strategy (its own generator: a seed's other choices stay the same).
    pub fn pick(seed: u64) -> Strategy {
        if !PICKED {
            return Strategy::Rolling;
        }
        let mut rng = Rng::new(seed ^ 0x057A_7E61);
        match rng.below(10) {
            0..=2 => Strategy::Rolling,
            3 => Strategy::BlueGreen { keep_old_s: 0 },
            4 => Strategy::BlueGreen { keep_old_s: 20 },
            5 | 6 => Strategy::Canary {
                pause: rng.chance(50),
            },
            7 => Strategy::Refresh("signal:HUP"),
            8 => Strategy::Refresh("http:POST /refresh"),
            _ => Strategy::Refresh("restart"),
        }
    }

    /// The spec's lines for it, after `[apps.web.deploy]`'s own.
    pub fn spec_lines(&self, templates: &Path) -> String {
        match self {
            Strategy::Rolling => String::new(),
            Strategy::BlueGreen { keep_old_s } => {
                format!("strategy = \"blue-green\"\nkeep_old = \"{keep_old_s}s\"\n")
            }
            Strategy::Canary { pause } => format!(
                "strategy = \"canary\"\n\n[apps.{APP}.deploy.canary]\nsteps = [25, 50, 100]\nstep_time = \"10s\"\npause = [{}]\n",
                if *pause { "50" } else { "" }
            ),
            Strategy::Refresh(on_change) => format!(
                "\n[apps.{APP}.config]\ntemplates = \"{}\"\netcd = {{ endpoints = [\"http://127.0.0.1:9\"], prefix = \"/sim/{APP}/\" }}\non_change = \"{on_change}\"\n",
                templates.display()
            ),
        }
    }

    /// Blue-green and canary start the whole new set beside the old one.
    fn switch(&self) -> bool {
        matches!(self, Strategy::BlueGreen { .. } | Strategy::Canary { .. })
    }
}

/// A refresh request's answer: what the instance said, or why it was not refreshed.
type Answer = Result<String, String>;

/// What the simulated host was asked beyond shims and checks, and its answers to come.
#[derive(Default)]
pub struct Outside {
    /// HTTP refresh requests: (answer due at, the call, what it answers; `None`: computed
    /// from the instance then).
    calls: Vec<(u64, RefreshCall, Option<Answer>)>,
    /// etcd watches running now (app, running).
    watches: Vec<(String, Arc<AtomicBool>)>,
    /// Config changes to prepare.
    prepares: VecDeque<ConfigRequest>,
    trains: VecDeque<TrainRequest>,
    /// The config releases prepared so far.
    configs: u32,
    /// The version of the app's etcd values now (0: never changed).
    etcd_version: u32,
    /// The releases prepared for each version of the values.
    prepared_for: BTreeMap<u32, Vec<String>>,
    /// What a watch reads first when it starts (the values now), to deliver.
    first_reads: Vec<Event>,
    /// The last preparation failed (the change is dropped until the next one: `config.failed`).
    last_prepare_failed: bool,
    /// Where the config templates live (a real directory: the loop renders them).
    pub templates: PathBuf,
}

impl Outside {
    pub fn refresh_call(&mut self, call: RefreshCall, now: u64) {
        self.calls.push((now, call, None));
    }

    pub fn watch_etcd(&mut self, app: String) -> Watch {
        let running = Arc::new(AtomicBool::new(true));
        self.watches.retain(|(_, r)| r.load(Ordering::Relaxed));
        // A watch starts with a read of the values as they are.
        if self.etcd_version > 0 {
            let values = etcd_values(self.etcd_version);
            self.first_reads.push(
                EtcdNote::Values {
                    app: app.clone(),
                    values,
                }
                .into(),
            );
        }
        self.watches.push((app, running.clone()));
        Watch::new(move || running.store(false, Ordering::Relaxed))
    }

    pub fn prepare_config(&mut self, req: ConfigRequest) {
        self.prepares.push_back(req);
    }

    pub fn train(&mut self, req: TrainRequest) {
        self.trains.push_back(req);
    }

    /// The next deadline of an answer (a refresh request nobody answers times out).
    pub fn next_deadline(&self) -> Option<u64> {
        self.calls.iter().map(|(at, _, _)| *at).min()
    }
}

/// The app's etcd values at `version`.
fn etcd_values(version: u32) -> BTreeMap<String, String> {
    BTreeMap::from([("SIM_CONFIG".to_string(), format!("v{version}"))])
}

/// Whether a fake process answers requests now.
fn answering(p: &Proc, now: u64) -> bool {
    p.alive && !p.hung && now >= p.ready_at
}

impl HostState {
    /// The answers of the outside world due at `now`.
    pub(super) fn outside_round(&mut self, now: u64, out: &mut Vec<Event>) {
        let faults = self.faults;
        // Requests just made: answered now, later, or never (then the request times out).
        for (at, call, answer) in self.outside.calls.iter_mut() {
            if answer.is_some() {
                continue;
            }
            let target = self.procs.iter().rev().find(|p| {
                p.app == call.app && p.slot == call.slot && p.generation == call.generation
            });
            let what = format!("{} {}", call.method, call.path);
            *answer = Some(match target {
                Some(p) if answering(p, now) => {
                    let roll = if faults { self.rng.below(10) } else { 0 };
                    match roll {
                        0..=7 => Ok(format!("{what} answered 200")),
                        8 => Err(format!("{what} answered 500")),
                        _ => {
                            *at = now + call.timeout.as_millis() as u64;
                            Err(format!(
                                "{what}: no answer within {} s",
                                call.timeout.as_secs()
                            ))
                        }
                    }
                }
                _ => Err(format!("{what}: connection refused")),
            });
        }
        let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.outside.calls)
            .into_iter()
            .partition(|(at, _, _)| *at <= now);
        self.outside.calls = waiting;
        for (_, call, answer) in due {
            out.push(
                Refreshed {
                    app: call.app,
                    slot: call.slot,
                    generation: call.generation,
                    result: answer.unwrap_or_else(|| Err("no answer".into())),
                }
                .into(),
            );
        }
        while let Some(req) = self.outside.prepares.pop_front() {
            let failed = faults && self.rng.chance(5);
            self.outside.last_prepare_failed = failed;
            if failed {
                out.push(
                    Notice {
                        kind: jarfleet_core::events::EventKind::ConfigFailed,
                        app: Some(req.app),
                        message: "the new etcd config cannot be prepared: simulated".into(),
                    }
                    .into(),
                );
                continue;
            }
            self.outside.configs += 1;
            let mut spec = req.spec;
            let text = format!(
                "greeting=${{SIM_CONFIG}} {}\n",
                spec.etcd_env.get("SIM_CONFIG").cloned().unwrap_or_default()
            );
            spec.config_rendered = BTreeMap::from([("app.conf".to_string(), text)]);
            spec.env.insert(
                jarfleet_host::templates::TEMPLATES_ENV.into(),
                self.outside.templates.display().to_string(),
            );
            let release = format!("c{}", self.outside.configs);
            if let Some(v) = spec
                .etcd_env
                .get("SIM_CONFIG")
                .and_then(|v| v.strip_prefix('v'))
                .and_then(|v| v.parse().ok())
            {
                self.outside
                    .prepared_for
                    .entry(v)
                    .or_default()
                    .push(release.clone());
            }
            out.push(
                ConfigPrepared {
                    app: req.app,
                    prepared: Box::new(PreparedApp {
                        spec,
                        release: release.clone(),
                        legacy_release: None,
                        runtime: runtime(),
                        release_record: serde_json::json!({ "release": release }),
                    }),
                }
                .into(),
            );
        }
        out.append(&mut self.outside.first_reads);
        while let Some(req) = self.outside.trains.pop_front() {
            out.push(
                Trained {
                    app: req.app,
                    release: req.release,
                    result: Ok("simulated archive".into()),
                }
                .into(),
            );
        }
    }

    /// An etcd change of the app's values, if its watch runs.
    fn etcd_change(&mut self) -> Option<Event> {
        let app = self
            .outside
            .watches
            .iter()
            .find(|(_, r)| r.load(Ordering::Relaxed))
            .map(|(a, _)| a.clone())?;
        self.outside.etcd_version += 1;
        let values = etcd_values(self.outside.etcd_version);
        Some(EtcdNote::Values { app, values }.into())
    }
}

impl Sim {
    /// The operator's and etcd's part of a step, by the schedule's strategy (its own
    /// generator).
    pub(super) fn strategy_step(&mut self) -> Result<(), Failure> {
        match self.strategy {
            Strategy::Canary { .. } if self.mix.chance(15) => {
                let full = self.mix.chance(40);
                let r = self.ask(|reply| ApiRequest::Canary {
                    req: jarfleet_api::CanaryRequest {
                        app: APP.into(),
                        promote: true,
                        full,
                    },
                    reply,
                })?;
                let what = if full { "promote --full" } else { "promote" };
                self.note(format!("{what}: {}", answer(&r)));
            }
            Strategy::Refresh(_) if self.mix.chance(20) => {
                let change = self.host.lock().etcd_change();
                if let Some(ev) = change {
                    self.note("etcd: the app's values change".into());
                    self.control()?.handle(ev);
                    self.pump()?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// How many instances not asked to stop a deployment may run: `instances + max_surge`
    /// rolling (a refresh falls back to a rolling restart), a whole second set blue-green and
    /// canary (and the set kept warm by `keep_old`).
    pub(super) fn surge_bound(&self, desired: u32) -> u32 {
        if let Strategy::BlueGreen { keep_old_s } = self.strategy
            && keep_old_s > 0
        {
            // The old set of the last switch stays warm out of traffic until `keep_old` ends,
            // beside both sets of a deployment started meanwhile (the planner counts it as
            // gone: it holds no traffic).
            3 * desired
        } else if self.strategy.switch() {
            2 * desired
        } else {
            desired + self.spec.deploy.max_surge.max(1)
        }
    }

    /// A canary without traffic waits at its step: once faults stop, the operator promotes it.
    pub(super) fn promote_waiting_canary(&mut self) -> Result<(), Failure> {
        if !matches!(self.strategy, Strategy::Canary { .. }) {
            return Ok(());
        }
        let holds = self.status()?.apps.iter().any(|a| a.canary.is_some());
        if holds {
            let r = self.ask(|reply| ApiRequest::Canary {
                req: jarfleet_api::CanaryRequest {
                    app: APP.into(),
                    promote: true,
                    full: true,
                },
                reply,
            })?;
            self.note(format!(
                "promote --full (no traffic to judge): {}",
                answer(&r)
            ));
        }
        Ok(())
    }

    /// How the schedule's deployments ended, by strategy (for the summary).
    pub(super) fn tally_outcomes(&mut self) -> Result<(), Failure> {
        let store = self.store()?;
        let deployments = store
            .deployments(Some(APP))
            .map_err(|e| self.fail(format!("reading deployments: {e:#}")))?;
        for d in deployments {
            *self
                .stats
                .outcomes
                .entry(format!("{} {}", d.strategy, d.outcome))
                .or_default() += 1;
        }
        let refreshed = self
            .emitted
            .iter()
            .filter(|e| e.kind == "config.refresh-failed")
            .count();
        *self
            .stats
            .outcomes
            .entry("refreshes fallen back to a restart".into())
            .or_default() += refreshed;
        Ok(())
    }

    /// The settled fleet runs the release the last deployment that ended well installed (its
    /// target; a rollback's or abort's old release), every instance of it.
    pub(super) fn check_release(&mut self) -> Result<(), Failure> {
        let status = self.status()?;
        let store = self.store()?;
        let deployments = store
            .deployments(Some(APP))
            .map_err(|e| self.fail(format!("reading deployments: {e:#}")))?;
        drop(store);
        // The last etcd change went out once prepared (a change refused meanwhile waits for the
        // running deployment or the store; a watch's first read brings it to a new daemon) —
        // unless its last preparation failed: then it waits for the next change.
        let (version, prepared, dropped) = {
            let st = self.host.lock();
            let v = st.outside.etcd_version;
            (
                v,
                st.outside.prepared_for.get(&v).cloned().unwrap_or_default(),
                st.outside.last_prepare_failed,
            )
        };
        if version > 0 && !prepared.is_empty() && !dropped && self.stats.lossy_crashes == 0 {
            let out = deployments.iter().any(|d| prepared.contains(&d.to));
            if !out {
                return Err(self.fail(format!(
                    "the last etcd change (v{version}, prepared as {prepared:?}) never went out"
                )));
            }
        }
        for app in &status.apps {
            // Judged after the last deployment that ended well; a failed one stops where it
            // is (documented: the fleet may stay mixed), an aborted one (superseded by
            // `stop`) leaves each instance on its release.
            let want = match deployments.last() {
                None => Some(app.release.clone()),
                Some(d) if self.stats.lossy_crashes > 0 => {
                    // A daemon crashed while writes failed: the stored record may be older
                    // than what the next daemon did (see `before_crash`).
                    let _ = d;
                    None
                }
                Some(d) if d.outcome == "succeeded" => Some(d.to.clone()),
                Some(d) if d.outcome == "rolled-back" => Some(d.from.clone()),
                Some(_) => None,
            };
            let Some(want) = want else { continue };
            let last = deployments
                .last()
                .map(|d| format!("#{} {} → {} {}", d.id, d.from, d.to, d.outcome))
                .unwrap_or_else(|| "none".into());
            let wrong: Vec<String> = app
                .instances
                .iter()
                .filter(|i| i.release != want)
                .map(|i| format!("{}/{} on {}", i.app, i.slot, i.release))
                .collect();
            if app.release != want || !wrong.is_empty() {
                return Err(self.fail(format!(
                    "settled, {} runs {} ({}), but the last deployment ({last}) installed {want}",
                    app.name,
                    app.release,
                    wrong.join(", ")
                )));
            }
        }
        Ok(())
    }
}
