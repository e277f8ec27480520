//! The instance state machine: `(instance, input, now, spec) → effects`. Pure.
//!
//! ```text
//!   Waiting ──spawn──▶ Starting ──probe ok──▶ Ready ◀──probe ok── Unhealthy
//!      ▲                  │ start_timeout       │ `failures` fails ──▶ │
//!      │ backoff          ▼                     ▼                      │ unhealthy_restart_after
//!      └──── exit ◀── Stopping ◀──── stop ── (any running phase) ◀─────┘
//! ```
//! A crash (an exit we did not ask for) goes straight back to `Waiting` with a backoff delay.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::Millis;
use crate::backoff::{self, CRASH_LOOP_AFTER};
use crate::health::{self, ProbeRun};
use crate::spec::AppSpec;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum Phase {
    /// To be spawned at `at`; `spawning` once the daemon was told to spawn it.
    Waiting {
        at: Millis,
        spawning: bool,
    },
    /// Spawned, not ready yet.
    Starting {
        since: Millis,
    },
    Ready {
        since: Millis,
    },
    /// Was ready; `failures` consecutive probes failed. Out of any load balancer.
    Unhealthy {
        since: Millis,
    },
    /// Our stop sequence is running; `then` says what follows the exit.
    Stopping {
        since: Millis,
        then: AfterStop,
    },
    /// Stopped on purpose; stays down until started.
    Stopped,
    /// Gave up after `max_restarts`.
    Failed {
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AfterStop {
    /// Stay stopped.
    Halt,
    /// Start again at once (user restart, config change). Not a failure.
    Restart,
    /// Start again, counted as a failure (start timeout, unhealthy too long).
    RestartAfterFailure,
    /// The instance is removed (scale down, app removed).
    Remove,
}

/// The process of a running instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessRef {
    pub shim_pid: u32,
    pub pid: u32,
    pub port: u16,
    pub started_at: Millis,
}

/// How a JVM ended, as reported by its shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// We had asked it to stop (SIGTERM sent by the stop sequence).
    pub stop_requested: bool,
    /// We had to SIGKILL it after `stop_timeout`.
    pub killed_after_timeout: bool,
    /// The JVM reported `java.lang.OutOfMemoryError` on its way out.
    pub oom: bool,
    /// Path of an `hs_err_pid*.log` the JVM wrote while crashing.
    pub hs_err: Option<String>,
    pub at: Millis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "class")]
pub enum ExitClass {
    /// Ended by our own stop sequence (143/130 after SIGTERM/SIGINT, or 0).
    Clean,
    /// Killed by us after `stop_timeout`.
    KilledAfterTimeout,
    /// Exited 0 without being asked to.
    Completed,
    /// Exited with a non-zero status.
    Error {
        code: i32,
    },
    /// Died from a signal we did not send.
    Signal {
        signal: i32,
    },
    OutOfMemory,
    /// The JVM itself crashed (hs_err file written).
    JvmCrash {
        hs_err: String,
    },
}

pub fn classify(exit: &ExitInfo) -> ExitClass {
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // A JVM that printed an OutOfMemoryError and then exited on its own (not on our signal).
    if exit.oom && !exit.stop_requested {
        return ExitClass::OutOfMemory;
    }
    if let Some(path) = &exit.hs_err {
        return ExitClass::JvmCrash {
            hs_err: path.clone(),
        };
    }
    if exit.stop_requested {
        if exit.killed_after_timeout {
            return ExitClass::KilledAfterTimeout;
        }
        match (exit.code, exit.signal) {
            (Some(0 | 130 | 143), _) | (_, Some(SIGTERM | SIGINT)) => return ExitClass::Clean,
            _ => {}
        }
    }
    match (exit.code, exit.signal) {
        (_, Some(signal)) => ExitClass::Signal { signal },
        (Some(0), None) => ExitClass::Completed,
        (Some(code), None) => ExitClass::Error { code },
        (None, None) => ExitClass::Error { code: -1 },
    }
}

impl ExitClass {
    /// A short fixed word for the class (a metric label, a filter): `clean`,
    /// `killed-after-timeout`, `completed`, `error`, `signal`, `out-of-memory`, `jvm-crash`.
    pub fn label(&self) -> &'static str {
        match self {
            ExitClass::Clean => "clean",
            ExitClass::KilledAfterTimeout => "killed-after-timeout",
            ExitClass::Completed => "completed",
            ExitClass::Error { .. } => "error",
            ExitClass::Signal { .. } => "signal",
            ExitClass::OutOfMemory => "out-of-memory",
            ExitClass::JvmCrash { .. } => "jvm-crash",
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ExitClass::Clean => "stopped cleanly".into(),
            ExitClass::KilledAfterTimeout => "killed (SIGKILL) after stop_timeout".into(),
            ExitClass::Completed => "exited with status 0 without being asked to".into(),
            ExitClass::Error { code } => format!("exited with status {code}"),
            ExitClass::Signal { signal } => format!("killed by signal {signal}"),
            ExitClass::OutOfMemory => "ran out of memory (java.lang.OutOfMemoryError)".into(),
            ExitClass::JvmCrash { hs_err } => format!("JVM crashed (see {hs_err})"),
        }
    }
}

/// What an instance reports about itself, persisted in the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub app: String,
    pub slot: u32,
    pub phase: Phase,
    pub process: Option<ProcessRef>,
    pub release: String,
    /// Restarts since the instance was created (crash or failure restarts).
    pub restarts: u32,
    /// Crashes since the last healthy period of `reset_after`; drives the backoff.
    pub consecutive_crashes: u32,
    pub last_exit: Option<(ExitInfo, ExitClass)>,
    pub probes: ProbeRun,
    #[serde(default)]
    pub probe_in_flight: bool,
    /// While stopping: SIGTERM has been asked for (the instance was drained, or the drain timed
    /// out).
    #[serde(default)]
    pub signalled: bool,
}

/// Inputs to the state machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Run (first start, or after a user stop / give-up).
    Start,
    /// Run the stop sequence; `then` says what follows.
    Stop {
        then: AfterStop,
    },
    Spawned {
        process: ProcessRef,
    },
    SpawnFailed {
        error: String,
    },
    /// The instance could not be started for a reason of the daemon's own (out of file
    /// descriptors, memory or processes; its ports could not be checked): not a failure of the
    /// app. Tried again after [`SPAWN_RETRY_MS`]; no restart is counted and the backoff does not
    /// grow.
    SpawnPostponed {
        reason: String,
    },
    Probe {
        ok: bool,
        error: Option<String>,
    },
    /// The check could not be run at all for a reason of the daemon's own (out of file
    /// descriptors, memory or local ports): neither a pass nor a failure. Tried again soon
    /// ([`crate::health::INCONCLUSIVE_RETRY_MS`]); while nothing is known, `start_timeout` and
    /// `unhealthy_restart_after` are not enforced.
    ProbeInconclusive {
        reason: String,
    },
    Exited {
        exit: ExitInfo,
    },
    /// The load balancer has no request in flight on this instance any more.
    Drained,
    /// Time passed; deadlines are checked.
    Tick,
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Spawn,
    /// Take the instance out of the load balancer and report `Drained` once its in-flight
    /// requests reach zero (the instance gets a `Tick` at `timeout` regardless).
    Drain {
        timeout: Duration,
    },
    /// Run the stop sequence: SIGTERM, wait `grace`, thread dump, SIGKILL the group.
    StopProcess {
        grace: Duration,
    },
    Probe,
    Notify(Note),
    /// The instance is gone for good (after a `Remove` stop).
    Forget,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NoteKind {
    Spawned,
    Ready,
    Unhealthy,
    Recovered,
    StartTimeout,
    UnhealthyRestart,
    Stopping,
    Stopped,
    Exited,
    RestartScheduled,
    CrashLoop,
    GaveUp,
    SpawnFailed,
    /// A start put off because the daemon was short of resources (not counted).
    SpawnPostponed,
    BackoffReset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: NoteKind,
    pub message: String,
}

fn note(kind: NoteKind, message: impl Into<String>) -> Effect {
    Effect::Notify(Note {
        kind,
        message: message.into(),
    })
}

fn ms(d: Duration) -> Millis {
    d.as_millis() as Millis
}

/// A start postponed for a shortage of the daemon's own is tried again this much later: fixed,
/// short, and never counted as a restart.
pub const SPAWN_RETRY_MS: Millis = 2_000;

impl Instance {
    pub fn new(app: &str, slot: u32, release: &str, now: Millis) -> Instance {
        Instance {
            app: app.to_string(),
            slot,
            phase: Phase::Waiting {
                at: now,
                spawning: false,
            },
            process: None,
            release: release.to_string(),
            restarts: 0,
            consecutive_crashes: 0,
            last_exit: None,
            probes: ProbeRun::default(),
            probe_in_flight: false,
            signalled: false,
        }
    }

    pub fn name(&self) -> String {
        format!("{}/{}", self.app, self.slot)
    }

    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Ready { .. })
    }

    /// A short state word for listings.
    pub fn state_word(&self) -> &'static str {
        match &self.phase {
            Phase::Waiting { .. } if self.consecutive_crashes >= CRASH_LOOP_AFTER => "crash-loop",
            Phase::Waiting { .. } if self.consecutive_crashes > 0 => "backoff",
            Phase::Waiting { .. } => "pending",
            Phase::Starting { .. } => "starting",
            Phase::Ready { .. } => "ready",
            Phase::Unhealthy { .. } => "unhealthy",
            Phase::Stopping { .. } => "stopping",
            Phase::Stopped => "stopped",
            Phase::Failed { .. } => "failed",
        }
    }

    /// Feed one input; returns the effects to carry out, in order.
    pub fn step(&mut self, input: Input, now: Millis, spec: &AppSpec, jitter: f64) -> Vec<Effect> {
        match input {
            Input::Start => self.on_start(now),
            Input::Stop { then } => self.on_stop(then, now, spec),
            Input::Spawned { process } => {
                // A stop asked for while the spawn was under way is carried out now.
                let stop = match self.phase {
                    Phase::Stopping { then, .. } => Some(then),
                    _ => None,
                };
                let pid = process.pid;
                let port = process.port;
                self.process = Some(process);
                self.phase = Phase::Starting { since: now };
                self.probes = ProbeRun::default();
                self.probe_in_flight = false;
                let mut effects = vec![note(
                    NoteKind::Spawned,
                    format!("started pid {pid} on port {port}"),
                )];
                if let Some(then) = stop {
                    effects.extend(self.on_stop(then, now, spec));
                }
                effects
            }
            Input::SpawnFailed { error } => {
                let mut effects = vec![note(
                    NoteKind::SpawnFailed,
                    format!("could not start: {error}"),
                )];
                match self.phase {
                    // Stopped or removed while the spawn was under way: nothing to restart.
                    Phase::Stopping {
                        then: then @ (AfterStop::Halt | AfterStop::Remove),
                        ..
                    } => {
                        self.phase = Phase::Stopped;
                        effects.extend(self.on_stop(then, now, spec));
                    }
                    _ => effects.extend(self.after_failure(now, spec, jitter)),
                }
                effects
            }
            Input::SpawnPostponed { reason } => {
                let mut effects = vec![note(
                    NoteKind::SpawnPostponed,
                    format!(
                        "could not start: {reason}; not a failure of the app (no restart counted): trying again in {} s",
                        SPAWN_RETRY_MS / 1000
                    ),
                )];
                match self.phase {
                    Phase::Stopping {
                        then: then @ (AfterStop::Halt | AfterStop::Remove),
                        ..
                    } => {
                        self.phase = Phase::Stopped;
                        effects.extend(self.on_stop(then, now, spec));
                    }
                    _ => {
                        self.process = None;
                        self.phase = Phase::Waiting {
                            at: now + SPAWN_RETRY_MS,
                            spawning: false,
                        };
                    }
                }
                effects
            }
            Input::Probe { ok, error } => self.on_probe(ok, error, now, spec),
            Input::ProbeInconclusive { reason: _ } => {
                self.probe_in_flight = false;
                if matches!(
                    self.phase,
                    Phase::Starting { .. } | Phase::Ready { .. } | Phase::Unhealthy { .. }
                ) {
                    self.probes.record_inconclusive(now);
                }
                vec![]
            }
            Input::Exited { exit } => self.on_exit(exit, now, spec, jitter),
            Input::Drained => self.signal(spec),
            Input::Tick => self.on_tick(now, spec),
        }
    }

    fn on_start(&mut self, now: Millis) -> Vec<Effect> {
        match self.phase {
            Phase::Stopped | Phase::Failed { .. } => {
                if matches!(self.phase, Phase::Failed { .. }) {
                    // A manual start after a give-up grants a fresh `max_restarts` budget.
                    self.restarts = 0;
                }
                self.consecutive_crashes = 0;
                self.phase = Phase::Waiting {
                    at: now,
                    spawning: false,
                };
                vec![]
            }
            Phase::Stopping {
                since,
                then: AfterStop::Halt,
            } => {
                self.phase = Phase::Stopping {
                    since,
                    then: AfterStop::Restart,
                };
                vec![]
            }
            _ => vec![],
        }
    }

    fn on_stop(&mut self, then: AfterStop, now: Millis, spec: &AppSpec) -> Vec<Effect> {
        match &self.phase {
            Phase::Starting { .. } | Phase::Ready { .. } | Phase::Unhealthy { .. } => {
                self.begin_stop(then, now, spec, note(NoteKind::Stopping, "stopping"))
            }
            Phase::Stopping { since, .. } => {
                // Already stopping: only the follow-up changes.
                self.phase = Phase::Stopping {
                    since: *since,
                    then,
                };
                vec![]
            }
            Phase::Waiting { spawning: true, .. } => {
                // The spawn is under way; stop as soon as it reports.
                self.phase = Phase::Stopping { since: now, then };
                vec![]
            }
            Phase::Waiting { .. } | Phase::Stopped | Phase::Failed { .. } => match then {
                AfterStop::Remove => {
                    self.phase = Phase::Stopped;
                    vec![Effect::Forget]
                }
                AfterStop::Halt => {
                    self.phase = Phase::Stopped;
                    vec![note(NoteKind::Stopped, "stopped")]
                }
                AfterStop::Restart | AfterStop::RestartAfterFailure => {
                    self.phase = Phase::Waiting {
                        at: now,
                        spawning: false,
                    };
                    vec![]
                }
            },
        }
    }

    fn on_probe(
        &mut self,
        ok: bool,
        error: Option<String>,
        now: Millis,
        spec: &AppSpec,
    ) -> Vec<Effect> {
        self.probe_in_flight = false;
        match self.phase {
            Phase::Starting { since } => {
                self.probes.record(ok, now, error);
                if ok {
                    self.phase = Phase::Ready { since: now };
                    vec![note(
                        NoteKind::Ready,
                        format!("ready after {} ms", now.saturating_sub(since)),
                    )]
                } else {
                    vec![]
                }
            }
            Phase::Ready { .. } => {
                self.probes.record(ok, now, error.clone());
                if !ok && self.probes.is_failing(&spec.health) {
                    self.phase = Phase::Unhealthy { since: now };
                    let why = error.unwrap_or_else(|| "check failed".into());
                    vec![note(
                        NoteKind::Unhealthy,
                        format!(
                            "unhealthy after {} failed checks: {why}",
                            self.probes.consecutive_failures
                        ),
                    )]
                } else {
                    vec![]
                }
            }
            Phase::Unhealthy { .. } => {
                self.probes.record(ok, now, error);
                if ok {
                    self.phase = Phase::Ready { since: now };
                    vec![note(NoteKind::Recovered, "healthy again")]
                } else {
                    vec![]
                }
            }
            _ => vec![],
        }
    }

    fn on_exit(&mut self, exit: ExitInfo, now: Millis, spec: &AppSpec, jitter: f64) -> Vec<Effect> {
        let class = classify(&exit);
        let pid = self.process.as_ref().map(|p| p.pid).unwrap_or(0);
        self.process = None;
        self.probe_in_flight = false;
        let mut effects = vec![note(
            NoteKind::Exited,
            format!("pid {pid} {}", class.describe()),
        )];
        self.last_exit = Some((exit, class));
        match self.phase.clone() {
            Phase::Stopping { then, .. } => match then {
                AfterStop::Halt => {
                    self.phase = Phase::Stopped;
                    effects.push(note(NoteKind::Stopped, "stopped"));
                }
                AfterStop::Remove => {
                    self.phase = Phase::Stopped;
                    effects.push(Effect::Forget);
                }
                AfterStop::Restart => {
                    self.phase = Phase::Waiting {
                        at: now,
                        spawning: false,
                    };
                    effects.extend(self.on_tick(now, spec));
                }
                AfterStop::RestartAfterFailure => {
                    effects.extend(self.after_failure(now, spec, jitter))
                }
            },
            Phase::Stopped | Phase::Failed { .. } => {}
            _ => effects.extend(self.after_failure(now, spec, jitter)),
        }
        effects
    }

    /// A crash or failed start: count it, then restart after the backoff delay or give up.
    fn after_failure(&mut self, now: Millis, spec: &AppSpec, jitter: f64) -> Vec<Effect> {
        self.process = None;
        self.consecutive_crashes += 1;
        if backoff::gave_up(&spec.restart, self.restarts) {
            let reason = format!("gave up after {} restarts (max_restarts)", self.restarts);
            self.phase = Phase::Failed {
                reason: reason.clone(),
            };
            return vec![note(NoteKind::GaveUp, reason)];
        }
        self.restarts += 1;
        let delay = backoff::restart_delay(&spec.restart, self.consecutive_crashes, jitter);
        self.phase = Phase::Waiting {
            at: now + ms(delay),
            spawning: false,
        };
        let mut effects = Vec::new();
        if self.consecutive_crashes == CRASH_LOOP_AFTER {
            effects.push(note(
                NoteKind::CrashLoop,
                format!("crash loop: {} failures in a row", self.consecutive_crashes),
            ));
        }
        effects.push(note(
            NoteKind::RestartScheduled,
            format!("restart #{} in {} ms", self.restarts, ms(delay)),
        ));
        if delay.is_zero() {
            effects.extend(self.on_tick(now, spec));
        }
        effects
    }

    fn on_tick(&mut self, now: Millis, spec: &AppSpec) -> Vec<Effect> {
        let h = &spec.health;
        match self.phase.clone() {
            Phase::Waiting {
                at,
                spawning: false,
            } if at <= now => {
                self.phase = Phase::Waiting { at, spawning: true };
                vec![Effect::Spawn]
            }
            Phase::Starting { since } => {
                if now >= since + ms(h.start_timeout) && !self.probes.is_inconclusive() {
                    let why = note(
                        NoteKind::StartTimeout,
                        format!(
                            "not ready within start_timeout ({} s)",
                            h.start_timeout.as_secs()
                        ),
                    );
                    return self.begin_stop(AfterStop::RestartAfterFailure, now, spec, why);
                }
                self.probe_if_due(now, spec, true, since)
            }
            Phase::Ready { since } => {
                let mut effects = Vec::new();
                if self.consecutive_crashes > 0 && now >= since + ms(spec.restart.reset_after) {
                    self.consecutive_crashes = 0;
                    effects.push(note(
                        NoteKind::BackoffReset,
                        "healthy long enough: backoff reset",
                    ));
                }
                effects.extend(self.probe_if_due(now, spec, false, since));
                effects
            }
            Phase::Unhealthy { since } => {
                if now >= since + ms(h.unhealthy_restart_after) && !self.probes.is_inconclusive() {
                    let why = note(
                        NoteKind::UnhealthyRestart,
                        format!(
                            "unhealthy for {} s (unhealthy_restart_after): restarting",
                            h.unhealthy_restart_after.as_secs()
                        ),
                    );
                    return self.begin_stop(AfterStop::RestartAfterFailure, now, spec, why);
                }
                self.probe_if_due(now, spec, false, since)
            }
            Phase::Stopping { since, .. }
                if !self.signalled && now >= since + ms(spec.stop.drain_timeout) =>
            {
                // Still requests in flight after `drain_timeout`: stop anyway.
                self.signal(spec)
            }
            _ => vec![],
        }
    }

    /// Out of the load balancer first; the signal follows once drained (see [`Self::signal`]).
    fn begin_stop(
        &mut self,
        then: AfterStop,
        now: Millis,
        spec: &AppSpec,
        why: Effect,
    ) -> Vec<Effect> {
        self.phase = Phase::Stopping { since: now, then };
        self.signalled = false;
        vec![
            why,
            Effect::Drain {
                timeout: spec.stop.drain_timeout,
            },
        ]
    }

    /// Drained (or out of time to drain): run the signal part of the stop sequence, once.
    fn signal(&mut self, spec: &AppSpec) -> Vec<Effect> {
        if !matches!(self.phase, Phase::Stopping { .. }) || self.signalled || self.process.is_none()
        {
            return vec![];
        }
        self.signalled = true;
        vec![Effect::StopProcess {
            grace: spec.stop.stop_timeout,
        }]
    }

    fn probe_if_due(
        &mut self,
        now: Millis,
        spec: &AppSpec,
        starting: bool,
        since: Millis,
    ) -> Vec<Effect> {
        if self.probe_in_flight {
            return vec![];
        }
        if health::next_probe_at(&spec.health, &self.probes, starting, since) <= now {
            self.probe_in_flight = true;
            vec![Effect::Probe]
        } else {
            vec![]
        }
    }

    /// The earliest time at which a `Tick` could change something; `None` = only inputs will.
    pub fn next_wakeup(&self, spec: &AppSpec) -> Option<Millis> {
        let h = &spec.health;
        let probe = |starting: bool, since: Millis| {
            (!self.probe_in_flight).then(|| health::next_probe_at(h, &self.probes, starting, since))
        };
        // While the daemon could not check the instance, its deadline waits for a real result.
        let deadline = |at: Millis| (!self.probes.is_inconclusive()).then_some(at);
        match self.phase {
            Phase::Waiting {
                at,
                spawning: false,
            } => Some(at),
            Phase::Starting { since } => {
                [probe(true, since), deadline(since + ms(h.start_timeout))]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Phase::Ready { since } => {
                let reset =
                    (self.consecutive_crashes > 0).then(|| since + ms(spec.restart.reset_after));
                [probe(false, since), reset].into_iter().flatten().min()
            }
            Phase::Unhealthy { since } => [
                probe(false, since),
                deadline(since + ms(h.unhealthy_restart_after)),
            ]
            .into_iter()
            .flatten()
            .min(),
            Phase::Stopping { since, .. } if !self.signalled && self.process.is_some() => {
                Some(since + ms(spec.stop.drain_timeout))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{
        NO_JITTER, T0, crash, exited, fresh, messages, probe, shape, spawned, spec, spec_with,
        stopped,
    };

    /// `ms` after the test origin.
    fn t(ms: Millis) -> Millis {
        T0 + ms
    }

    const STOP: &str = "StopProcess { grace: 7s }";
    const DRAIN: &str = "Drain { timeout: 3s }";

    /// One scripted step: at `now`, feed the input; expect these effects, then this phase.
    type Row<'a> = (Millis, Input, &'a [&'a str], Phase);

    /// Runs a script and returns every step's effects.
    fn run(i: &mut Instance, spec: &AppSpec, script: &[Row<'_>]) -> Vec<Vec<Effect>> {
        let mut all = Vec::new();
        for (n, (now, input, want, phase)) in script.iter().enumerate() {
            let what = format!("step {n}: {input:?} at +{} ms", now - T0);
            let got = i.step(input.clone(), *now, spec, NO_JITTER);
            assert_eq!(shape(&got), *want, "{what}");
            assert_eq!(&i.phase, phase, "{what}");
            all.push(got);
        }
        all
    }

    fn step(i: &mut Instance, spec: &AppSpec, input: Input, now: Millis) -> Vec<String> {
        shape(&i.step(input, now, spec, NO_JITTER))
    }

    /// Spawned at `at`, not probed yet.
    fn starting(spec: &AppSpec, at: Millis) -> Instance {
        let mut i = fresh(at);
        assert_eq!(step(&mut i, spec, Input::Tick, at), ["Spawn"]);
        assert_eq!(step(&mut i, spec, spawned(at), at), ["Spawned"]);
        assert_eq!(i.phase, Phase::Starting { since: at });
        i
    }

    /// Ready since `at` (spawned 250 ms earlier, first poll ok).
    fn ready(spec: &AppSpec, at: Millis) -> Instance {
        let mut i = starting(spec, at - 250);
        assert_eq!(step(&mut i, spec, Input::Tick, at), ["Probe"]);
        assert_eq!(step(&mut i, spec, probe(true), at), ["Ready"]);
        assert_eq!(i.phase, Phase::Ready { since: at });
        i
    }

    /// Unhealthy since `at` (ready at `at - 2000`, two failed probes).
    fn unhealthy(spec: &AppSpec, at: Millis) -> Instance {
        let mut i = ready(spec, at - 2_000);
        for (now, want) in [(at - 1_000, vec![]), (at, vec!["Unhealthy"])] {
            assert_eq!(step(&mut i, spec, Input::Tick, now), ["Probe"]);
            assert_eq!(step(&mut i, spec, probe(false), now), want);
        }
        assert_eq!(i.phase, Phase::Unhealthy { since: at });
        i
    }

    type Build = fn(&AppSpec, Millis) -> Instance;

    /// The phases with a live process, each with a builder taking the time it was entered.
    const RUNNING: [(&str, Build); 3] = [
        ("starting", starting),
        ("ready", ready),
        ("unhealthy", unhealthy),
    ];

    /// An instance of slot 0 in `phase` with `crashes` consecutive crashes, built directly.
    fn in_phase(phase: Phase, crashes: u32) -> Instance {
        Instance {
            phase,
            consecutive_crashes: crashes,
            ..fresh(t(0))
        }
    }

    #[test]
    fn start_spawns_polls_fast_and_turns_ready() {
        let spec = spec();
        let mut i = fresh(t(0));
        assert_eq!(i.state_word(), "pending");
        assert_eq!(i.next_wakeup(&spec), Some(t(0)));
        let spawning = Phase::Waiting {
            at: t(0),
            spawning: true,
        };
        let starting = Phase::Starting { since: t(100) };
        let out = run(
            &mut i,
            &spec,
            &[
                (t(0), Input::Tick, &["Spawn"], spawning.clone()),
                // the spawn is under way: no second one
                (t(50), Input::Tick, &[], spawning.clone()),
                (t(100), spawned(t(100)), &["Spawned"], starting.clone()),
                // every 50 ms early in a start
                (t(149), Input::Tick, &[], starting.clone()),
                (t(150), Input::Tick, &["Probe"], starting.clone()),
                // due again, but the first probe has not answered yet
                (t(600), Input::Tick, &[], starting.clone()),
                (t(820), probe(false), &[], starting.clone()),
                (t(869), Input::Tick, &[], starting.clone()),
                (t(870), Input::Tick, &["Probe"], starting.clone()),
                (
                    t(900),
                    probe(true),
                    &["Ready"],
                    Phase::Ready { since: t(900) },
                ),
            ],
        );
        assert_eq!(messages(&out[2]), ["started pid 4242 on port 9100"]);
        assert_eq!(messages(&out[9]), ["ready after 800 ms"]);
        assert_eq!(i.state_word(), "ready");
        assert!(i.is_ready());
        assert_eq!(i.process.as_ref().map(|p| p.pid), Some(4_242));
        assert_eq!((i.restarts, i.consecutive_crashes), (0, 0));
    }

    #[test]
    fn start_timeout_stops_the_jvm_and_counts_as_a_failure() {
        let spec = spec();
        let mut i = starting(&spec, t(0));
        let stopping = Phase::Stopping {
            since: t(10_000),
            then: AfterStop::RestartAfterFailure,
        };
        let out = run(
            &mut i,
            &spec,
            &[
                (
                    t(9_999),
                    Input::Tick,
                    &["Probe"],
                    Phase::Starting { since: t(0) },
                ),
                (t(9_999), probe(false), &[], Phase::Starting { since: t(0) }),
                (
                    t(10_000),
                    Input::Tick,
                    &["StartTimeout", DRAIN],
                    stopping.clone(),
                ),
                // the stop sequence is not started twice
                (t(10_500), Input::Tick, &[], stopping),
                (
                    t(12_000),
                    exited(stopped(Some(143), None, t(12_000))),
                    // first failure: restarted at once
                    &["Exited", "RestartScheduled", "Spawn"],
                    Phase::Waiting {
                        at: t(12_000),
                        spawning: true,
                    },
                ),
            ],
        );
        assert_eq!(messages(&out[2]), ["not ready within start_timeout (10 s)"]);
        assert_eq!((i.restarts, i.consecutive_crashes), (1, 1));
        assert_eq!(i.state_word(), "backoff");
        assert_eq!(i.last_exit.as_ref().map(|e| &e.1), Some(&ExitClass::Clean));
        assert_eq!(i.process, None);

        // The second start timeout in a row waits `backoff_initial`.
        run(
            &mut i,
            &spec,
            &[
                (
                    t(12_100),
                    spawned(t(12_100)),
                    &["Spawned"],
                    Phase::Starting { since: t(12_100) },
                ),
                (
                    t(22_100),
                    Input::Tick,
                    &["StartTimeout", DRAIN],
                    Phase::Stopping {
                        since: t(22_100),
                        then: AfterStop::RestartAfterFailure,
                    },
                ),
                (
                    t(22_200),
                    exited(stopped(Some(143), None, t(22_200))),
                    &["Exited", "RestartScheduled"],
                    Phase::Waiting {
                        at: t(23_200),
                        spawning: false,
                    },
                ),
            ],
        );
        assert_eq!((i.restarts, i.consecutive_crashes), (2, 2));
        assert_eq!(i.next_wakeup(&spec), Some(t(23_200)));
        assert_eq!(i.state_word(), "backoff");
    }

    #[test]
    fn classify_exits() {
        let oom = ExitInfo {
            oom: true,
            ..crash(Some(3), None, 0)
        };
        let hs_err = ExitInfo {
            hs_err: Some("/w/hs_err_pid42.log".into()),
            ..crash(None, Some(6), 0)
        };
        let killed = ExitInfo {
            killed_after_timeout: true,
            ..stopped(None, Some(9), 0)
        };
        let table = [
            (
                "sigkill from outside",
                crash(None, Some(9), 0),
                ExitClass::Signal { signal: 9 },
            ),
            (
                "status 1",
                crash(Some(1), None, 0),
                ExitClass::Error { code: 1 },
            ),
            ("out of memory", oom, ExitClass::OutOfMemory),
            // an OOM marker seen earlier does not make our own clean stop a crash
            (
                "oom marker, then our SIGTERM",
                ExitInfo {
                    oom: true,
                    ..stopped(Some(143), None, 0)
                },
                ExitClass::Clean,
            ),
            (
                "hs_err",
                hs_err,
                ExitClass::JvmCrash {
                    hs_err: "/w/hs_err_pid42.log".into(),
                },
            ),
            (
                "status 0 unasked",
                crash(Some(0), None, 0),
                ExitClass::Completed,
            ),
            (
                "status 0 asked",
                stopped(Some(0), None, 0),
                ExitClass::Clean,
            ),
            (
                "143 after our SIGTERM",
                stopped(Some(143), None, 0),
                ExitClass::Clean,
            ),
            (
                "130 after our SIGINT",
                stopped(Some(130), None, 0),
                ExitClass::Clean,
            ),
            (
                "SIGTERM we sent",
                stopped(None, Some(15), 0),
                ExitClass::Clean,
            ),
            (
                "SIGINT we sent",
                stopped(None, Some(2), 0),
                ExitClass::Clean,
            ),
            (
                "143 nobody asked for",
                crash(Some(143), None, 0),
                ExitClass::Error { code: 143 },
            ),
            (
                "SIGTERM from outside",
                crash(None, Some(15), 0),
                ExitClass::Signal { signal: 15 },
            ),
            (
                "status 1 while stopping",
                stopped(Some(1), None, 0),
                ExitClass::Error { code: 1 },
            ),
            (
                "killed after stop_timeout",
                killed,
                ExitClass::KilledAfterTimeout,
            ),
            (
                "nothing reported",
                crash(None, None, 0),
                ExitClass::Error { code: -1 },
            ),
        ];
        for (name, exit, want) in table {
            assert_eq!(classify(&exit), want, "{name}");
        }
    }

    #[test]
    fn describe_exit_classes() {
        let table = [
            (ExitClass::Clean, "stopped cleanly"),
            (
                ExitClass::KilledAfterTimeout,
                "killed (SIGKILL) after stop_timeout",
            ),
            (
                ExitClass::Completed,
                "exited with status 0 without being asked to",
            ),
            (ExitClass::Error { code: 3 }, "exited with status 3"),
            (ExitClass::Signal { signal: 9 }, "killed by signal 9"),
            (
                ExitClass::OutOfMemory,
                "ran out of memory (java.lang.OutOfMemoryError)",
            ),
            (
                ExitClass::JvmCrash {
                    hs_err: "h.log".into(),
                },
                "JVM crashed (see h.log)",
            ),
        ];
        for (class, want) in table {
            assert_eq!(class.describe(), want);
            // The label is the class's name in the stored JSON (its serde tag).
            let json = serde_json::to_value(&class).expect("serialises");
            assert_eq!(json["class"], class.label(), "{class:?}");
        }
    }

    #[test]
    fn a_crash_is_classified_and_restarted_at_once() {
        let spec = spec();
        let oom = ExitInfo {
            oom: true,
            ..crash(Some(3), None, 0)
        };
        let hs_err = ExitInfo {
            hs_err: Some("hs_err_pid4242.log".into()),
            ..crash(None, Some(6), 0)
        };
        let table = [
            (
                crash(None, Some(9), 0),
                ExitClass::Signal { signal: 9 },
                "pid 4242 killed by signal 9",
            ),
            (
                crash(Some(1), None, 0),
                ExitClass::Error { code: 1 },
                "pid 4242 exited with status 1",
            ),
            (
                oom,
                ExitClass::OutOfMemory,
                "pid 4242 ran out of memory (java.lang.OutOfMemoryError)",
            ),
            (
                hs_err,
                ExitClass::JvmCrash {
                    hs_err: "hs_err_pid4242.log".into(),
                },
                "pid 4242 JVM crashed (see hs_err_pid4242.log)",
            ),
            (
                crash(Some(0), None, 0),
                ExitClass::Completed,
                "pid 4242 exited with status 0 without being asked to",
            ),
        ];
        for (from, build) in RUNNING {
            for (exit, class, message) in &table {
                let now = t(60_000);
                let mut i = build(&spec, t(50_000));
                let out = i.step(exited(exit.clone()), now, &spec, NO_JITTER);
                let what = format!("{class:?} while {from}");
                assert_eq!(
                    shape(&out),
                    ["Exited", "RestartScheduled", "Spawn"],
                    "{what}"
                );
                assert_eq!(messages(&out), [*message, "restart #1 in 0 ms"], "{what}");
                let spawning = Phase::Waiting {
                    at: now,
                    spawning: true,
                };
                assert_eq!(i.phase, spawning, "{what}");
                assert_eq!(i.last_exit.as_ref().map(|e| &e.1), Some(class), "{what}");
                assert_eq!(i.process, None, "{what}");
                assert_eq!((i.restarts, i.consecutive_crashes), (1, 1), "{what}");
            }
        }
    }

    #[test]
    fn repeated_crashes_back_off_and_show_a_crash_loop_once() {
        let spec = spec();
        // (crash in a row, delay in ms with jitter 0.5, CrashLoop note, state word while waiting)
        let table = [
            (1, 0, false, "backoff"),
            (2, 1_000, false, "backoff"),
            (3, 2_000, true, "crash-loop"),
            (4, 4_000, false, "crash-loop"),
            (5, 8_000, false, "crash-loop"),
            (6, 16_000, false, "crash-loop"),
            (7, 32_000, false, "crash-loop"),
            (8, 60_000, false, "crash-loop"), // capped by backoff_max
            (9, 60_000, false, "crash-loop"),
        ];
        let mut now = t(0);
        let mut i = starting(&spec, now);
        let mut crash_loop_notes = 0;
        for (n, delay, loop_note, word) in table {
            now += 500;
            let out = i.step(exited(crash(Some(1), None, now)), now, &spec, NO_JITTER);
            let mut want = vec!["Exited"];
            if loop_note {
                want.push("CrashLoop");
            }
            want.push("RestartScheduled");
            if delay == 0 {
                want.push("Spawn");
            }
            assert_eq!(shape(&out), want, "crash {n}");
            assert_eq!(
                messages(&out).last().map(String::as_str),
                Some(format!("restart #{n} in {delay} ms").as_str()),
                "crash {n}"
            );
            crash_loop_notes += shape(&out).iter().filter(|k| *k == "CrashLoop").count();
            let waiting = Phase::Waiting {
                at: now + delay,
                spawning: delay == 0,
            };
            assert_eq!(i.phase, waiting, "crash {n}");
            assert_eq!((i.consecutive_crashes, i.restarts), (n, n), "crash {n}");
            assert_eq!(i.state_word(), word, "crash {n}");
            if delay > 0 {
                assert_eq!(i.next_wakeup(&spec), Some(now + delay), "crash {n}");
                assert!(step(&mut i, &spec, Input::Tick, now + delay - 1).is_empty());
                now += delay;
                assert_eq!(
                    step(&mut i, &spec, Input::Tick, now),
                    ["Spawn"],
                    "crash {n}"
                );
            }
            now += 100;
            assert_eq!(step(&mut i, &spec, spawned(now), now), ["Spawned"]);
            assert_eq!(i.state_word(), "starting");
        }
        assert_eq!(crash_loop_notes, 1);
    }

    #[test]
    fn the_restart_delay_uses_the_given_jitter() {
        let spec = spec();
        for (jitter, want) in [(0.0, 800), (0.25, 900), (0.5, 1_000), (0.75, 1_100)] {
            // twice: same inputs, same answer
            for _ in 0..2 {
                let mut i = starting(&spec, t(0));
                i.step(exited(crash(Some(1), None, t(1))), t(1), &spec, jitter);
                i.step(spawned(t(2)), t(2), &spec, jitter);
                i.step(exited(crash(Some(1), None, t(3))), t(3), &spec, jitter);
                let waiting = Phase::Waiting {
                    at: t(3 + want),
                    spawning: false,
                };
                assert_eq!(i.phase, waiting, "jitter {jitter}");
            }
        }
    }

    #[test]
    fn backoff_resets_after_reset_after_of_health() {
        let spec = spec();
        // (ready for, then a crash: its effects and restart delay)
        let table: [(Millis, &[&str], Millis); 3] = [
            (1_000, &["Exited", "RestartScheduled"], 4_000),
            (29_000, &["Exited", "RestartScheduled"], 4_000),
            (30_000, &["Exited", "RestartScheduled", "Spawn"], 0),
        ];
        for (ready_for, want, delay) in table {
            // Three crashes in a row, then ready at `r`.
            let mut i = starting(&spec, t(0));
            let crash_at =
                |i: &mut Instance, at| step(i, &spec, exited(crash(Some(1), None, at)), at);
            assert_eq!(
                crash_at(&mut i, t(100)),
                ["Exited", "RestartScheduled", "Spawn"]
            );
            step(&mut i, &spec, spawned(t(200)), t(200));
            assert_eq!(crash_at(&mut i, t(300)), ["Exited", "RestartScheduled"]);
            assert_eq!(step(&mut i, &spec, Input::Tick, t(1_300)), ["Spawn"]);
            step(&mut i, &spec, spawned(t(1_400)), t(1_400));
            assert_eq!(
                crash_at(&mut i, t(1_500)),
                ["Exited", "CrashLoop", "RestartScheduled"]
            );
            assert_eq!(step(&mut i, &spec, Input::Tick, t(3_500)), ["Spawn"]);
            step(&mut i, &spec, spawned(t(3_600)), t(3_600));
            assert_eq!(step(&mut i, &spec, Input::Tick, t(3_850)), ["Probe"]);
            assert_eq!(step(&mut i, &spec, probe(true), t(3_850)), ["Ready"]);
            let r = t(3_850);
            assert_eq!(i.consecutive_crashes, 3);

            let mut resets = 0;
            for k in 1..=ready_for / 1_000 {
                let now = r + k * 1_000;
                assert_eq!(i.next_wakeup(&spec), Some(now), "ready for {k} s");
                let out = step(&mut i, &spec, Input::Tick, now);
                if now >= r + 30_000 {
                    assert_eq!(out, ["BackoffReset", "Probe"], "ready for {k} s");
                    resets += 1;
                } else {
                    assert_eq!(out, ["Probe"], "ready for {k} s");
                }
                assert!(step(&mut i, &spec, probe(true), now).is_empty());
            }
            assert_eq!(resets, usize::from(ready_for >= 30_000));
            let crashes_left = if ready_for >= 30_000 { 0 } else { 3 };
            assert_eq!(i.consecutive_crashes, crashes_left, "ready for {ready_for}");

            let now = r + ready_for + 500;
            let out = step(&mut i, &spec, exited(crash(None, Some(9), now)), now);
            assert_eq!(out, want, "ready for {ready_for}");
            let waiting = Phase::Waiting {
                at: now + delay,
                spawning: delay == 0,
            };
            assert_eq!(i.phase, waiting, "ready for {ready_for}");
        }
    }

    #[test]
    fn max_restarts_gives_up() {
        for max in [0, 1, 2, 5] {
            let spec = spec_with(&[(
                "reset_after = \"30s\"",
                &format!("reset_after = \"30s\"\nmax_restarts = {max}"),
            )]);
            assert_eq!(spec.restart.max_restarts, Some(max));
            let mut now = t(0);
            let mut i = starting(&spec, now);
            for n in 0..max {
                now += 100;
                let out = step(&mut i, &spec, exited(crash(Some(1), None, now)), now);
                assert!(
                    out.contains(&"RestartScheduled".to_string()),
                    "max {max}, crash {n}"
                );
                if let Phase::Waiting {
                    at,
                    spawning: false,
                } = i.phase
                {
                    now = at;
                    assert_eq!(step(&mut i, &spec, Input::Tick, now), ["Spawn"]);
                }
                step(&mut i, &spec, spawned(now), now);
            }
            now += 100;
            let out = i.step(exited(crash(Some(1), None, now)), now, &spec, NO_JITTER);
            assert_eq!(shape(&out), ["Exited", "GaveUp"], "max {max}");
            let reason = format!("gave up after {max} restarts (max_restarts)");
            assert_eq!(messages(&out)[1], reason);
            assert_eq!(i.phase, Phase::Failed { reason }, "max {max}");
            assert_eq!(i.restarts, max);
            assert_eq!(i.state_word(), "failed");
            assert_eq!(i.next_wakeup(&spec), None);
            assert!(step(&mut i, &spec, Input::Tick, now + 86_400_000).is_empty());

            // Only a user start brings it back.
            assert!(step(&mut i, &spec, Input::Start, now + 1).is_empty());
            let pending = Phase::Waiting {
                at: now + 1,
                spawning: false,
            };
            assert_eq!(i.phase, pending);
            assert_eq!(i.state_word(), "pending");
            assert_eq!(step(&mut i, &spec, Input::Tick, now + 1), ["Spawn"]);
        }
    }

    #[test]
    fn stop_sequence_then_exit() {
        let spec = spec();
        let killed = ExitInfo {
            killed_after_timeout: true,
            ..stopped(None, Some(9), 0)
        };
        let spawn_now = |now| Phase::Waiting {
            at: now,
            spawning: true,
        };
        let stopped_phase = |_| Phase::Stopped;
        // (then, exit, effects of the exit, phase after it, class, restarts)
        type After = fn(Millis) -> Phase;
        type Case<'a> = (AfterStop, ExitInfo, &'a [&'a str], After, ExitClass, u32);
        let table: [Case<'_>; 8] = [
            (
                AfterStop::Halt,
                stopped(Some(143), None, 0),
                &["Exited", "Stopped"],
                stopped_phase,
                ExitClass::Clean,
                0,
            ),
            (
                AfterStop::Halt,
                stopped(Some(130), None, 0),
                &["Exited", "Stopped"],
                stopped_phase,
                ExitClass::Clean,
                0,
            ),
            (
                AfterStop::Halt,
                stopped(Some(0), None, 0),
                &["Exited", "Stopped"],
                stopped_phase,
                ExitClass::Clean,
                0,
            ),
            (
                AfterStop::Halt,
                stopped(None, Some(15), 0),
                &["Exited", "Stopped"],
                stopped_phase,
                ExitClass::Clean,
                0,
            ),
            (
                AfterStop::Halt,
                killed,
                &["Exited", "Stopped"],
                stopped_phase,
                ExitClass::KilledAfterTimeout,
                0,
            ),
            (
                AfterStop::Restart,
                stopped(Some(143), None, 0),
                &["Exited", "Spawn"],
                spawn_now,
                ExitClass::Clean,
                0,
            ),
            (
                AfterStop::Remove,
                stopped(Some(143), None, 0),
                &["Exited", "Forget"],
                stopped_phase,
                ExitClass::Clean,
                0,
            ),
            (
                AfterStop::RestartAfterFailure,
                stopped(Some(143), None, 0),
                &["Exited", "RestartScheduled", "Spawn"],
                spawn_now,
                ExitClass::Clean,
                1,
            ),
        ];
        for (from, build) in RUNNING {
            for (then, exit, want, phase, class, restarts) in &table {
                let what = format!("{then:?} from {from}, {class:?}");
                let mut i = build(&spec, t(50_000));
                let stopping = Phase::Stopping {
                    since: t(60_000),
                    then: *then,
                };
                run(
                    &mut i,
                    &spec,
                    &[
                        (
                            t(60_000),
                            Input::Stop { then: *then },
                            &["Stopping", DRAIN],
                            stopping.clone(),
                        ),
                        (t(60_100), Input::Drained, &[STOP], stopping.clone()),
                        // the shim owns the SIGKILL deadline: no timer here
                        (t(600_000), Input::Tick, &[], stopping),
                    ],
                );
                assert_eq!(i.state_word(), "stopping", "{what}");
                assert_eq!(i.next_wakeup(&spec), None, "{what}");
                let now = t(600_001);
                assert_eq!(
                    step(&mut i, &spec, exited(exit.clone()), now),
                    *want,
                    "{what}"
                );
                assert_eq!(i.phase, phase(now), "{what}");
                assert_eq!(i.last_exit.as_ref().map(|e| &e.1), Some(class), "{what}");
                assert_eq!(i.restarts, *restarts, "{what}");
                assert_eq!(i.process, None, "{what}");
                if i.phase == Phase::Stopped {
                    assert_eq!(i.next_wakeup(&spec), None, "{what}");
                    assert!(step(&mut i, &spec, Input::Tick, now + 86_400_000).is_empty());
                    assert_eq!(i.phase, Phase::Stopped, "{what}: no restart");
                }
            }
        }
    }

    #[test]
    fn stop_and_start_when_no_process_runs() {
        let spec = spec();
        let now = t(9_000);
        let pending = || {
            in_phase(
                Phase::Waiting {
                    at: t(0),
                    spawning: false,
                },
                0,
            )
        };
        let backoff = || {
            in_phase(
                Phase::Waiting {
                    at: t(20_000),
                    spawning: false,
                },
                2,
            )
        };
        let failed = || {
            in_phase(
                Phase::Failed {
                    reason: "gave up".into(),
                },
                4,
            )
        };
        let stopping = |then| in_phase(Phase::Stopping { since: t(5), then }, 0);
        let waiting_now = Phase::Waiting {
            at: now,
            spawning: false,
        };
        let halt = Input::Stop {
            then: AfterStop::Halt,
        };
        let remove = Input::Stop {
            then: AfterStop::Remove,
        };
        let restart = Input::Stop {
            then: AfterStop::Restart,
        };
        type Case<'a> = (&'a str, Instance, Input, &'a [&'a str], Phase, &'a str);
        let table: Vec<Case<'_>> = vec![
            (
                "pending + halt",
                pending(),
                halt.clone(),
                &["Stopped"],
                Phase::Stopped,
                "stopped",
            ),
            (
                "pending + remove",
                pending(),
                remove.clone(),
                &["Forget"],
                Phase::Stopped,
                "stopped",
            ),
            (
                "pending + restart",
                pending(),
                restart.clone(),
                &[],
                waiting_now.clone(),
                "pending",
            ),
            (
                "backoff + halt",
                backoff(),
                halt.clone(),
                &["Stopped"],
                Phase::Stopped,
                "stopped",
            ),
            // a restart skips the rest of the backoff wait
            (
                "backoff + restart",
                backoff(),
                restart.clone(),
                &[],
                waiting_now.clone(),
                "backoff",
            ),
            (
                "stopped + halt",
                in_phase(Phase::Stopped, 0),
                halt.clone(),
                &["Stopped"],
                Phase::Stopped,
                "stopped",
            ),
            (
                "stopped + start",
                in_phase(Phase::Stopped, 0),
                Input::Start,
                &[],
                waiting_now.clone(),
                "pending",
            ),
            (
                "failed + start",
                failed(),
                Input::Start,
                &[],
                waiting_now.clone(),
                "pending",
            ),
            (
                "failed + remove",
                failed(),
                remove.clone(),
                &["Forget"],
                Phase::Stopped,
                "stopped",
            ),
            (
                "starting + start",
                in_phase(Phase::Starting { since: t(1) }, 0),
                Input::Start,
                &[],
                Phase::Starting { since: t(1) },
                "starting",
            ),
            (
                "ready + start",
                in_phase(Phase::Ready { since: t(1) }, 0),
                Input::Start,
                &[],
                Phase::Ready { since: t(1) },
                "ready",
            ),
            // start while stopping: run again after the exit
            (
                "stopping(halt) + start",
                stopping(AfterStop::Halt),
                Input::Start,
                &[],
                Phase::Stopping {
                    since: t(5),
                    then: AfterStop::Restart,
                },
                "stopping",
            ),
            (
                "stopping(remove) + start",
                stopping(AfterStop::Remove),
                Input::Start,
                &[],
                Phase::Stopping {
                    since: t(5),
                    then: AfterStop::Remove,
                },
                "stopping",
            ),
            // already stopping: only the follow-up changes, the sequence is not restarted
            (
                "stopping(halt) + remove",
                stopping(AfterStop::Halt),
                remove.clone(),
                &[],
                Phase::Stopping {
                    since: t(5),
                    then: AfterStop::Remove,
                },
                "stopping",
            ),
        ];
        for (name, mut i, input, want, phase, word) in table {
            assert_eq!(step(&mut i, &spec, input, now), want, "{name}");
            assert_eq!(i.phase, phase, "{name}");
            assert_eq!(i.state_word(), word, "{name}");
            if i.phase == waiting_now {
                assert_eq!(i.next_wakeup(&spec), Some(now), "{name}");
                assert_eq!(step(&mut i, &spec, Input::Tick, now), ["Spawn"], "{name}");
            }
        }
    }

    #[test]
    fn a_stop_during_the_spawn_is_carried_out_when_the_spawn_reports() {
        let spec = spec();
        let failed_spawn = || Input::SpawnFailed {
            error: "no free port".into(),
        };
        // (follow-up, what the spawn reports, effects, phase after)
        let table: Vec<(AfterStop, Input, &[&str], Phase)> = vec![
            (
                AfterStop::Halt,
                spawned(t(20)),
                &["Spawned", "Stopping", DRAIN],
                Phase::Stopping {
                    since: t(20),
                    then: AfterStop::Halt,
                },
            ),
            (
                AfterStop::Remove,
                spawned(t(20)),
                &["Spawned", "Stopping", DRAIN],
                Phase::Stopping {
                    since: t(20),
                    then: AfterStop::Remove,
                },
            ),
            (
                AfterStop::Restart,
                spawned(t(20)),
                &["Spawned", "Stopping", DRAIN],
                Phase::Stopping {
                    since: t(20),
                    then: AfterStop::Restart,
                },
            ),
            (
                AfterStop::Halt,
                failed_spawn(),
                &["SpawnFailed", "Stopped"],
                Phase::Stopped,
            ),
            (
                AfterStop::Remove,
                failed_spawn(),
                &["SpawnFailed", "Forget"],
                Phase::Stopped,
            ),
            // a restart was wanted anyway: the failed spawn counts like any other
            (
                AfterStop::Restart,
                failed_spawn(),
                &["SpawnFailed", "RestartScheduled", "Spawn"],
                Phase::Waiting {
                    at: t(20),
                    spawning: true,
                },
            ),
        ];
        for (then, report, want, phase) in table {
            let what = format!("{then:?}, {report:?}");
            let mut i = fresh(t(0));
            assert_eq!(step(&mut i, &spec, Input::Tick, t(0)), ["Spawn"]);
            assert!(
                step(&mut i, &spec, Input::Stop { then }, t(10)).is_empty(),
                "{what}"
            );
            assert_eq!(i.phase, Phase::Stopping { since: t(10), then }, "{what}");
            assert_eq!(step(&mut i, &spec, report, t(20)), want, "{what}");
            assert_eq!(i.phase, phase, "{what}");
            let restarts = u32::from(matches!(i.phase, Phase::Waiting { .. }));
            assert_eq!(i.restarts, restarts, "{what}");
        }
    }

    #[test]
    fn a_failed_spawn_is_retried_like_a_crash() {
        let spec = spec();
        let mut i = fresh(t(0));
        let failed = || Input::SpawnFailed {
            error: "no free port in 9100-9199".into(),
        };
        let out = run(
            &mut i,
            &spec,
            &[
                (
                    t(0),
                    Input::Tick,
                    &["Spawn"],
                    Phase::Waiting {
                        at: t(0),
                        spawning: true,
                    },
                ),
                (
                    t(10),
                    failed(),
                    &["SpawnFailed", "RestartScheduled", "Spawn"],
                    Phase::Waiting {
                        at: t(10),
                        spawning: true,
                    },
                ),
                (
                    t(20),
                    failed(),
                    &["SpawnFailed", "RestartScheduled"],
                    Phase::Waiting {
                        at: t(1_020),
                        spawning: false,
                    },
                ),
            ],
        );
        assert_eq!(
            messages(&out[1])[0],
            "could not start: no free port in 9100-9199"
        );
        assert_eq!(i.state_word(), "backoff");
    }

    #[test]
    fn failed_checks_must_be_consecutive_to_turn_unhealthy() {
        let spec = spec();
        assert_eq!(spec.health.failures, 2);
        // (probe results, one per interval; index of the one that turns the instance unhealthy)
        let table: [(&[bool], Option<usize>); 7] = [
            (&[true, true, true], None),
            (&[false], None),
            (&[false, false], Some(1)),
            (&[false, true, false], None),
            (&[false, true, false, false], Some(3)),
            (&[true, true, false, true, false, true], None),
            (&[true, false, false], Some(2)),
        ];
        for (results, turns) in table {
            let r = t(10_000);
            let mut i = ready(&spec, r);
            for (k, ok) in results.iter().enumerate() {
                let now = r + 1_000 * (k as Millis + 1);
                let what = format!("{results:?}, probe {k}");
                assert_eq!(i.next_wakeup(&spec), Some(now), "{what}");
                assert_eq!(step(&mut i, &spec, Input::Tick, now), ["Probe"], "{what}");
                let out = i.step(probe(*ok), now, &spec, NO_JITTER);
                if turns == Some(k) {
                    assert_eq!(shape(&out), ["Unhealthy"], "{what}");
                    assert_eq!(
                        messages(&out),
                        ["unhealthy after 2 failed checks: HTTP 503"]
                    );
                    assert_eq!(i.phase, Phase::Unhealthy { since: now }, "{what}");
                    assert_eq!(i.state_word(), "unhealthy");
                    assert!(!i.is_ready());
                } else {
                    assert!(out.is_empty(), "{what}");
                    assert_eq!(i.phase, Phase::Ready { since: r }, "{what}");
                }
            }
        }
    }

    #[test]
    fn unhealthy_recovers_on_the_first_good_check() {
        let spec = spec();
        let u = t(10_000);
        let mut i = unhealthy(&spec, u);
        let out = run(
            &mut i,
            &spec,
            &[
                (u + 999, Input::Tick, &[], Phase::Unhealthy { since: u }),
                (
                    u + 1_000,
                    Input::Tick,
                    &["Probe"],
                    Phase::Unhealthy { since: u },
                ),
                (u + 1_000, probe(false), &[], Phase::Unhealthy { since: u }),
                (
                    u + 2_000,
                    Input::Tick,
                    &["Probe"],
                    Phase::Unhealthy { since: u },
                ),
                (
                    u + 2_000,
                    probe(true),
                    &["Recovered"],
                    Phase::Ready { since: u + 2_000 },
                ),
            ],
        );
        assert_eq!(messages(&out[4]), ["healthy again"]);
        assert_eq!(i.next_wakeup(&spec), Some(u + 3_000));
        assert_eq!(i.probes.consecutive_failures, 0);
    }

    #[test]
    fn unhealthy_too_long_is_restarted_as_a_failure() {
        let spec = spec();
        let u = t(10_000);
        let mut i = unhealthy(&spec, u);
        let mut script: Vec<Row<'_>> = Vec::new();
        for k in 1..=4 {
            script.push((
                u + k * 1_000,
                Input::Tick,
                &["Probe"],
                Phase::Unhealthy { since: u },
            ));
            script.push((
                u + k * 1_000,
                probe(false),
                &[],
                Phase::Unhealthy { since: u },
            ));
        }
        script.push((u + 4_999, Input::Tick, &[], Phase::Unhealthy { since: u }));
        let stopping = Phase::Stopping {
            since: u + 5_000,
            then: AfterStop::RestartAfterFailure,
        };
        script.push((
            u + 5_000,
            Input::Tick,
            &["UnhealthyRestart", DRAIN],
            stopping.clone(),
        ));
        // a late probe answer changes nothing
        script.push((u + 5_100, probe(true), &[], stopping));
        script.push((
            u + 6_000,
            exited(stopped(Some(143), None, u + 6_000)),
            &["Exited", "RestartScheduled", "Spawn"],
            Phase::Waiting {
                at: u + 6_000,
                spawning: true,
            },
        ));
        let out = run(&mut i, &spec, &script);
        assert_eq!(
            messages(&out[9]),
            ["unhealthy for 5 s (unhealthy_restart_after): restarting"]
        );
        assert_eq!((i.restarts, i.consecutive_crashes), (1, 1));
        // The new process starts with a clean probe record: the old errors are not its own.
        assert_eq!(i.probes.last_error.as_deref(), Some("HTTP 503"));
        assert_eq!(
            step(&mut i, &spec, spawned(u + 6_100), u + 6_100),
            ["Spawned"]
        );
        assert_eq!(i.probes, ProbeRun::default());
        assert_eq!(i.next_wakeup(&spec), Some(u + 6_150));
    }

    #[test]
    fn next_wakeup_is_the_earliest_deadline_and_a_tick_then_acts() {
        let spec = spec();
        let (s, r, u) = (t(1_000), t(2_000), t(3_000));
        let with = |phase: Phase, crashes: u32, last_probe: Option<Millis>, in_flight: bool| {
            let mut i = in_phase(phase, crashes);
            i.probes.last_probe_at = last_probe;
            i.probe_in_flight = in_flight;
            i
        };
        let waiting = |at, spawning| Phase::Waiting { at, spawning };
        let table = [
            ("new", fresh(t(0)), Some(t(0))),
            (
                "backoff",
                with(waiting(t(5_000), false), 2, None, false),
                Some(t(5_000)),
            ),
            ("spawning", with(waiting(t(0), true), 0, None, false), None),
            (
                "starting, first poll",
                with(Phase::Starting { since: s }, 0, None, false),
                Some(s + 50),
            ),
            (
                "starting, polled at +1 s",
                with(Phase::Starting { since: s }, 0, Some(s + 1_000), false),
                Some(s + 1_050),
            ),
            (
                "starting, polled at +5 s",
                with(Phase::Starting { since: s }, 0, Some(s + 5_000), false),
                Some(s + 5_250),
            ),
            // a probe from before the start (an older process) does not count
            (
                "starting, old probe",
                with(Phase::Starting { since: s }, 0, Some(s - 100), false),
                Some(s + 50),
            ),
            (
                "starting, probe in flight",
                with(Phase::Starting { since: s }, 0, Some(s + 1_000), true),
                Some(s + 10_000),
            ),
            (
                "starting, next poll after the deadline",
                with(Phase::Starting { since: s }, 0, Some(s + 9_900), false),
                Some(s + 10_000),
            ),
            (
                "ready",
                with(Phase::Ready { since: r }, 0, Some(r), false),
                Some(r + 1_000),
            ),
            (
                "ready, probe in flight",
                with(Phase::Ready { since: r }, 0, Some(r), true),
                None,
            ),
            (
                "ready after crashes",
                with(Phase::Ready { since: r }, 3, Some(r), false),
                Some(r + 1_000),
            ),
            (
                "ready after crashes, probe in flight",
                with(Phase::Ready { since: r }, 3, Some(r), true),
                Some(r + 30_000),
            ),
            (
                "ready after crashes, reset before the next probe",
                with(Phase::Ready { since: r }, 1, Some(r + 29_500), false),
                Some(r + 30_000),
            ),
            (
                "unhealthy",
                with(Phase::Unhealthy { since: u }, 0, Some(u), false),
                Some(u + 1_000),
            ),
            (
                "unhealthy, probe in flight",
                with(Phase::Unhealthy { since: u }, 0, Some(u), true),
                Some(u + 5_000),
            ),
            (
                "stopping",
                with(
                    Phase::Stopping {
                        since: s,
                        then: AfterStop::Halt,
                    },
                    0,
                    None,
                    false,
                ),
                None,
            ),
            ("stopped", with(Phase::Stopped, 0, None, false), None),
            (
                "failed",
                with(Phase::Failed { reason: "x".into() }, 9, None, false),
                None,
            ),
        ];
        for (name, i, want) in table {
            assert_eq!(i.next_wakeup(&spec), want, "{name}");
            match want {
                Some(at) => {
                    // nothing happens a millisecond early, something happens on time
                    let mut early = i.clone();
                    assert!(
                        step(&mut early, &spec, Input::Tick, at - 1).is_empty(),
                        "{name}"
                    );
                    assert_eq!(early, i, "{name}: an early tick changed the instance");
                    let mut on_time = i.clone();
                    assert!(
                        !step(&mut on_time, &spec, Input::Tick, at).is_empty(),
                        "{name}"
                    );
                }
                None => {
                    let mut later = i.clone();
                    let day = 86_400_000;
                    assert!(
                        step(&mut later, &spec, Input::Tick, t(day)).is_empty(),
                        "{name}"
                    );
                    assert_eq!(later, i, "{name}");
                }
            }
        }
    }

    #[test]
    fn state_words() {
        let table = [
            (
                Phase::Waiting {
                    at: 0,
                    spawning: false,
                },
                0,
                "pending",
            ),
            (
                Phase::Waiting {
                    at: 0,
                    spawning: true,
                },
                0,
                "pending",
            ),
            (
                Phase::Waiting {
                    at: 0,
                    spawning: false,
                },
                1,
                "backoff",
            ),
            (
                Phase::Waiting {
                    at: 0,
                    spawning: true,
                },
                2,
                "backoff",
            ),
            (
                Phase::Waiting {
                    at: 0,
                    spawning: false,
                },
                3,
                "crash-loop",
            ),
            (
                Phase::Waiting {
                    at: 0,
                    spawning: false,
                },
                7,
                "crash-loop",
            ),
            (Phase::Starting { since: 0 }, 5, "starting"),
            (Phase::Ready { since: 0 }, 5, "ready"),
            (Phase::Unhealthy { since: 0 }, 0, "unhealthy"),
            (
                Phase::Stopping {
                    since: 0,
                    then: AfterStop::Restart,
                },
                0,
                "stopping",
            ),
            (Phase::Stopped, 3, "stopped"),
            (Phase::Failed { reason: "x".into() }, 3, "failed"),
        ];
        for (phase, crashes, want) in table {
            let i = in_phase(phase.clone(), crashes);
            assert_eq!(i.state_word(), want, "{phase:?} after {crashes} crashes");
        }
    }

    #[test]
    fn a_stop_drains_first_then_signals_once() {
        let spec = spec();
        let mut i = fresh(t(0));
        step(&mut i, &spec, Input::Tick, t(0));
        step(&mut i, &spec, spawned(t(10)), t(10));
        step(&mut i, &spec, probe(true), t(60));
        assert!(i.is_ready());
        let stop = Input::Stop {
            then: AfterStop::Halt,
        };
        assert_eq!(step(&mut i, &spec, stop, t(1_000)), ["Stopping", DRAIN]);
        assert!(!i.signalled);
        // nothing is signalled before the drain is over or `drain_timeout` has passed
        assert_eq!(i.next_wakeup(&spec), Some(t(4_000)));
        assert!(step(&mut i, &spec, Input::Tick, t(3_999)).is_empty());
        assert_eq!(step(&mut i, &spec, Input::Drained, t(2_000)), [STOP]);
        assert!(i.signalled);
        // once only: a late drain report or the drain deadline change nothing
        assert!(step(&mut i, &spec, Input::Drained, t(2_100)).is_empty());
        assert!(step(&mut i, &spec, Input::Tick, t(4_000)).is_empty());
        assert_eq!(i.next_wakeup(&spec), None);
    }

    #[test]
    fn a_drain_that_takes_too_long_is_cut_short() {
        let spec = spec();
        let mut i = fresh(t(0));
        step(&mut i, &spec, Input::Tick, t(0));
        step(&mut i, &spec, spawned(t(10)), t(10));
        step(&mut i, &spec, probe(true), t(60));
        let stop = Input::Stop {
            then: AfterStop::Restart,
        };
        assert_eq!(step(&mut i, &spec, stop, t(1_000)), ["Stopping", DRAIN]);
        assert_eq!(step(&mut i, &spec, Input::Tick, t(4_000)), [STOP]);
        assert!(step(&mut i, &spec, Input::Drained, t(4_100)).is_empty());
    }

    fn inconclusive() -> Input {
        Input::ProbeInconclusive {
            reason: "out of file descriptors".into(),
        }
    }

    #[test]
    fn an_inconclusive_check_is_neither_a_pass_nor_a_failure() {
        // interval 5 s, so the retry within a second shows
        let spec = spec_with(&[("interval = \"1s\"", "interval = \"5s\"")]);
        assert_eq!(spec.health.failures, 2);
        // (results: Some(ok) or None = could not be run; the index that turns it unhealthy)
        let table: [(&[Option<bool>], Option<usize>); 6] = [
            (&[None, None, None, None, None], None),
            (&[Some(false), None, None, None], None),
            (&[Some(false), None, Some(false)], Some(2)),
            (&[None, Some(false), None, None, Some(false)], Some(4)),
            (&[Some(false), None, Some(true), Some(false)], None),
            (&[None, Some(true), None, Some(false), Some(false)], Some(4)),
        ];
        for (results, turns) in table {
            let r = t(10_000);
            let mut i = ready(&spec, r);
            let mut now = r;
            for (k, result) in results.iter().enumerate() {
                let what = format!("{results:?}, probe {k}");
                now = i.next_wakeup(&spec).expect("a probe is due");
                assert_eq!(step(&mut i, &spec, Input::Tick, now), ["Probe"], "{what}");
                let input = match result {
                    Some(ok) => probe(*ok),
                    None => inconclusive(),
                };
                let out = step(&mut i, &spec, input, now);
                if turns == Some(k) {
                    assert_eq!(out, ["Unhealthy"], "{what}");
                } else {
                    assert!(out.is_empty(), "{what}");
                    assert!(i.is_ready(), "{what}");
                }
                // Retried a second later, not a whole interval.
                let retry = if result.is_none() { 1_000 } else { 5_000 };
                assert_eq!(i.next_wakeup(&spec), Some(now + retry), "{what}");
            }
            assert!(now > r, "{results:?}");
            assert_eq!(i.restarts, 0, "{results:?}");
        }
    }

    #[test]
    fn deadlines_wait_for_a_check_that_could_be_run() {
        let spec = spec();
        // start_timeout (10 s) passes while no check can be run: not a start failure
        let mut i = starting(&spec, t(0));
        for at in [t(9_000), t(9_900), t(10_500), t(11_500)] {
            assert_eq!(step(&mut i, &spec, Input::Tick, at), ["Probe"], "at {at}");
            assert!(
                step(&mut i, &spec, inconclusive(), at).is_empty(),
                "at {at}"
            );
            // the next wake-up is the retry, not the deadline that passed
            assert!(i.next_wakeup(&spec).is_some_and(|w| w > at), "at {at}");
        }
        assert!(matches!(i.phase, Phase::Starting { .. }));
        // the check runs again and passes: ready, late but not killed
        let mut late = i.clone();
        assert_eq!(step(&mut late, &spec, Input::Tick, t(12_000)), ["Probe"]);
        assert_eq!(step(&mut late, &spec, probe(true), t(12_000)), ["Ready"]);
        // or fails: now the deadline counts
        assert_eq!(step(&mut i, &spec, Input::Tick, t(12_000)), ["Probe"]);
        assert!(step(&mut i, &spec, probe(false), t(12_000)).is_empty());
        assert_eq!(i.next_wakeup(&spec), Some(t(10_000)));
        assert_eq!(
            step(&mut i, &spec, Input::Tick, t(12_000)),
            ["StartTimeout", DRAIN]
        );

        // unhealthy_restart_after (5 s) likewise
        let u = t(100_000);
        let mut i = unhealthy(&spec, u);
        for at in [u + 1_000, u + 2_000, u + 5_000, u + 6_000] {
            assert_eq!(step(&mut i, &spec, Input::Tick, at), ["Probe"], "at {at}");
            assert!(
                step(&mut i, &spec, inconclusive(), at).is_empty(),
                "at {at}"
            );
            assert!(step(&mut i, &spec, Input::Tick, at).is_empty(), "at {at}");
        }
        assert_eq!(i.phase, Phase::Unhealthy { since: u });
        assert_eq!(step(&mut i, &spec, Input::Tick, u + 7_000), ["Probe"]);
        assert!(step(&mut i, &spec, probe(false), u + 7_000).is_empty());
        assert_eq!(
            step(&mut i, &spec, Input::Tick, u + 7_000),
            ["UnhealthyRestart", DRAIN]
        );
    }

    #[test]
    fn an_inconclusive_answer_outside_a_running_phase_changes_nothing() {
        let spec = spec();
        let mut i = fresh(t(0));
        step(&mut i, &spec, Input::Tick, t(0));
        let before = i.clone();
        assert!(step(&mut i, &spec, inconclusive(), t(5)).is_empty());
        assert_eq!(i, before);
    }

    #[test]
    fn a_postponed_spawn_is_retried_soon_and_never_counted() {
        let spec = spec();
        let postponed = || Input::SpawnPostponed {
            reason: "out of file descriptors (open-file limit 512)".into(),
        };
        // (consecutive crashes before, state word while waiting)
        for (crashes, word) in [(0, "pending"), (1, "backoff"), (3, "crash-loop")] {
            let mut i = in_phase(
                Phase::Waiting {
                    at: t(0),
                    spawning: false,
                },
                crashes,
            );
            i.restarts = crashes;
            let mut now = t(0);
            for round in 0..5 {
                let what = format!("{crashes} crashes, round {round}");
                assert_eq!(step(&mut i, &spec, Input::Tick, now), ["Spawn"], "{what}");
                let out = i.step(postponed(), now + 10, &spec, NO_JITTER);
                assert_eq!(shape(&out), ["SpawnPostponed"], "{what}");
                assert_eq!(
                    messages(&out),
                    [
                        "could not start: out of file descriptors (open-file limit 512); not a failure of the app (no restart counted): trying again in 2 s"
                    ],
                    "{what}"
                );
                assert_eq!(
                    i.phase,
                    Phase::Waiting {
                        at: now + 10 + SPAWN_RETRY_MS,
                        spawning: false
                    },
                    "{what}"
                );
                assert_eq!(
                    (i.restarts, i.consecutive_crashes),
                    (crashes, crashes),
                    "{what}"
                );
                assert_eq!(i.state_word(), word, "{what}");
                now = i.next_wakeup(&spec).expect("a retry is due");
                assert_eq!(now, t(round * 2_010 + 2_010), "{what}");
            }
        }
        // stopped or removed while the spawn was under way: nothing to retry
        for (then, want) in [
            (AfterStop::Halt, &["SpawnPostponed", "Stopped"]),
            (AfterStop::Remove, &["SpawnPostponed", "Forget"]),
        ] {
            let mut i = fresh(t(0));
            step(&mut i, &spec, Input::Tick, t(0));
            step(&mut i, &spec, Input::Stop { then }, t(5));
            assert_eq!(step(&mut i, &spec, postponed(), t(10)), want, "{then:?}");
            assert_eq!(i.phase, Phase::Stopped, "{then:?}");
        }
    }
}
