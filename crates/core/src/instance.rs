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
    if exit.oom {
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
    Probe {
        ok: bool,
        error: Option<String>,
    },
    Exited {
        exit: ExitInfo,
    },
    /// Time passed; deadlines are checked.
    Tick,
}

/// What the daemon must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Spawn,
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
                let pid = process.pid;
                let port = process.port;
                self.process = Some(process);
                self.phase = Phase::Starting { since: now };
                self.probes = ProbeRun::default();
                self.probe_in_flight = false;
                vec![note(
                    NoteKind::Spawned,
                    format!("started pid {pid} on port {port}"),
                )]
            }
            Input::SpawnFailed { error } => {
                let mut effects = vec![note(
                    NoteKind::SpawnFailed,
                    format!("could not start: {error}"),
                )];
                effects.extend(self.after_failure(now, spec, jitter));
                effects
            }
            Input::Probe { ok, error } => self.on_probe(ok, error, now, spec),
            Input::Exited { exit } => self.on_exit(exit, now, spec, jitter),
            Input::Tick => self.on_tick(now, spec),
        }
    }

    fn on_start(&mut self, now: Millis) -> Vec<Effect> {
        match self.phase {
            Phase::Stopped | Phase::Failed { .. } => {
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
                self.phase = Phase::Stopping { since: now, then };
                vec![
                    note(NoteKind::Stopping, "stopping"),
                    Effect::StopProcess {
                        grace: spec.stop.stop_timeout,
                    },
                ]
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
                if now >= since + ms(h.start_timeout) {
                    self.phase = Phase::Stopping {
                        since: now,
                        then: AfterStop::RestartAfterFailure,
                    };
                    return vec![
                        note(
                            NoteKind::StartTimeout,
                            format!(
                                "not ready within start_timeout ({} s)",
                                h.start_timeout.as_secs()
                            ),
                        ),
                        Effect::StopProcess {
                            grace: spec.stop.stop_timeout,
                        },
                    ];
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
                if now >= since + ms(h.unhealthy_restart_after) {
                    self.phase = Phase::Stopping {
                        since: now,
                        then: AfterStop::RestartAfterFailure,
                    };
                    return vec![
                        note(
                            NoteKind::UnhealthyRestart,
                            format!(
                                "unhealthy for {} s (unhealthy_restart_after): restarting",
                                h.unhealthy_restart_after.as_secs()
                            ),
                        ),
                        Effect::StopProcess {
                            grace: spec.stop.stop_timeout,
                        },
                    ];
                }
                self.probe_if_due(now, spec, false, since)
            }
            _ => vec![],
        }
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
        match self.phase {
            Phase::Waiting {
                at,
                spawning: false,
            } => Some(at),
            Phase::Starting { since } => {
                let deadline = since + ms(h.start_timeout);
                Some(probe(true, since).map_or(deadline, |p| p.min(deadline)))
            }
            Phase::Ready { since } => {
                let reset =
                    (self.consecutive_crashes > 0).then(|| since + ms(spec.restart.reset_after));
                [probe(false, since), reset].into_iter().flatten().min()
            }
            Phase::Unhealthy { since } => {
                let deadline = since + ms(h.unhealthy_restart_after);
                Some(probe(false, since).map_or(deadline, |p| p.min(deadline)))
            }
            _ => None,
        }
    }
}
