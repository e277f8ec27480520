//! The deployment's typed kind, phase and outcome, and the words they are stored as.

use serde::{Deserialize, Serialize};

use crate::Millis;
use crate::events::EventKind;
use crate::spec::Strategy;

/// How the deployment moves the app (stored as its `strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A few instances at a time (also a restart: a deployment to the same release).
    Rolling,
    /// The whole new set, then one switch of the traffic (the old set kept warm with
    /// `keep_old`).
    BlueGreen,
    /// The whole new set, then traffic steps judged from the balancer's counters.
    Canary,
    /// A live config refresh of each instance in turn.
    Refresh,
}

impl Kind {
    pub fn of_strategy(s: Strategy) -> Kind {
        match s {
            Strategy::Rolling => Kind::Rolling,
            Strategy::BlueGreen => Kind::BlueGreen,
            Strategy::Canary => Kind::Canary,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Rolling => "rolling",
            Kind::BlueGreen => "blue-green",
            Kind::Canary => "canary",
            Kind::Refresh => "refresh",
        }
    }

    /// The kind stored as `s`; a word this version does not know reads as rolling.
    pub fn parse(s: &str) -> Kind {
        match s {
            "blue-green" => Kind::BlueGreen,
            "canary" => Kind::Canary,
            "refresh" => Kind::Refresh,
            _ => Kind::Rolling,
        }
    }
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The app runs the new release.
    Succeeded,
    /// Something failed; the app is back on the old release.
    RolledBack,
    /// Something failed and there was nothing (more) to roll back to.
    Failed,
    /// Ended by an operator command: `abort` of a restart, or superseded by `stop` or a removal.
    Aborted,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Succeeded,
        Outcome::RolledBack,
        Outcome::Failed,
        Outcome::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::RolledBack => "rolled-back",
            Outcome::Failed => "failed",
            Outcome::Aborted => "aborted",
        }
    }

    /// The event that announces it.
    pub fn event(self) -> EventKind {
        match self {
            Outcome::Succeeded => EventKind::DeploySucceeded,
            Outcome::RolledBack => EventKind::DeployRolledBack,
            Outcome::Failed => EventKind::DeployFailed,
            Outcome::Aborted => EventKind::DeployAborted,
        }
    }
}

/// Where a deployment is (stored as its `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Moving towards the new release.
    Running,
    /// Walking back to the old release (after a failure or an `abort`).
    RollingBack,
    Ended(Outcome),
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::RollingBack => "rolling-back",
            Phase::Ended(o) => o.as_str(),
        }
    }

    /// The phase stored as `s`, if it is one.
    pub fn parse(s: &str) -> Option<Phase> {
        match s {
            "running" => Some(Phase::Running),
            "rolling-back" => Some(Phase::RollingBack),
            _ => Outcome::ALL
                .into_iter()
                .find(|o| o.as_str() == s)
                .map(Phase::Ended),
        }
    }
}

/// One recorded step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub at: Millis,
    pub message: String,
}

/// Where a canary is, as recorded: enough to resume it after a daemon restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Index of the current step in the release's `canary.steps`.
    pub step: u32,
    /// The canary's share of the traffic (0 before the first step and once it failed).
    pub percent: u8,
    pub paused: bool,
    pub passed: bool,
}
