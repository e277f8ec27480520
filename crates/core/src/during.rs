//! What an operator command does to an app while a deployment of it runs: it goes ahead next to
//! the deployment, supersedes it (the deployment ends as `aborted`, then the command acts), turns
//! it around (`abort`), or is refused with the deployment named. Never silently ignored.
//!
//! One table, `decide`; the daemon asks it before any command that touches an app with a
//! deployment under way, and docs/deploys.md shows the same table.

use serde::{Deserialize, Serialize};

/// An operator command on an app (or one of its instances).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// `jarfleet stop APP`.
    Stop,
    /// `jarfleet stop APP/N`.
    StopInstance,
    /// `jarfleet start APP` or `start APP/N`.
    Start,
    /// `jarfleet restart APP`.
    Restart,
    /// `jarfleet restart APP/N`.
    RestartInstance,
    /// `jarfleet scale APP N`, or an `apply` that changes `instances`.
    Scale,
    /// `jarfleet deploy`.
    Deploy,
    /// `jarfleet rollback`.
    Rollback,
    /// An `apply` that gives the app another release than the deployment moves it to.
    ApplyRelease,
    /// An `apply` that changes only settings that apply live (health, logs, stop, …).
    ApplyLive,
    /// An `apply` without the app, or `down`: the app is removed.
    Remove,
    /// `jarfleet abort APP`.
    Abort,
}

/// The kind of deployment under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A rolling deploy to another release.
    Rolling,
    /// `restart APP`: a rolling deploy to the same release.
    Restart,
    BlueGreen,
    Canary,
    /// A live config refresh (`config.on_change`).
    Refresh,
}

/// A deployment as the table sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub kind: Kind,
    /// Walking back to the old release (after a failure or an `abort`).
    pub rolling_back: bool,
}

/// What a command does while a deployment runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Goes ahead; the deployment carries on.
    Alongside,
    /// The deployment ends now (recorded as `aborted`, superseded by the command), the app
    /// stays on the release it came from, then the command acts.
    Supersede,
    /// `abort`: the deployment turns around and walks back to the old release with the same
    /// planner (what is new goes, the old release returns to the full count).
    RollBack,
    /// `abort` of a restart: both sets run the same release, so it ends where it stands
    /// (recorded as `aborted`), the app trimmed or filled to its count.
    End,
    /// `abort` of a canary: the canary's own abort (weight 0 at once, then roll back).
    CanaryAbort,
    /// Refused; nothing changes. The error names the deployment and says what to do.
    Refuse(Refusal),
}

/// Why a command is refused, and so what the error suggests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Refusal {
    /// Wait for the deployment, or `jarfleet abort APP` first.
    WaitOrAbort,
    /// The deployment is already rolling back: wait for it.
    RollingBack,
    /// A config refresh cannot be turned around: wait for it.
    Refresh,
    /// `abort` with no deployment under way.
    NothingToAbort,
}

/// What `command` does to an app whose deployment is `deployment` (`None`: none runs).
pub fn decide(command: Command, deployment: Option<Deployment>) -> Outcome {
    use Command as C;
    use Outcome as O;
    let Some(d) = deployment else {
        return match command {
            C::Abort => O::Refuse(Refusal::NothingToAbort),
            _ => O::Alongside,
        };
    };
    // What a refusal suggests: `abort` only where abort can act.
    let wait = if d.rolling_back {
        Refusal::RollingBack
    } else if d.kind == Kind::Refresh {
        Refusal::Refresh
    } else {
        Refusal::WaitOrAbort
    };
    match command {
        // Stopping or removing the app is stronger than any deployment.
        C::Stop | C::Remove => O::Supersede,
        // Live settings move nothing the deployment moves.
        C::ApplyLive => O::Alongside,
        // Each of these would move the instances the deployment is moving (`start` would add
        // instances beside the ones it counts, beyond `instances + max_surge`).
        C::Start
        | C::StopInstance
        | C::Restart
        | C::RestartInstance
        | C::Scale
        | C::Deploy
        | C::Rollback
        | C::ApplyRelease => O::Refuse(wait),
        C::Abort => match (d.kind, d.rolling_back) {
            (_, true) | (Kind::Refresh, _) => O::Refuse(wait),
            (Kind::Restart, false) => O::End,
            (Kind::Canary, false) => O::CanaryAbort,
            (Kind::Rolling | Kind::BlueGreen, false) => O::RollBack,
        },
    }
}

impl Refusal {
    /// The hint of the error, for `app`.
    pub fn hint(self, app: &str) -> String {
        match self {
            Refusal::WaitOrAbort => format!(
                "wait for it (`jarfleet history {app}`), or `jarfleet abort {app}` first; `jarfleet stop {app}` ends it and stops the app"
            ),
            Refusal::RollingBack => format!(
                "it is rolling back to the old release; wait for it (`jarfleet history {app}`); `jarfleet stop {app}` ends it and stops the app"
            ),
            Refusal::Refresh => format!(
                "a config refresh tells one instance after the other and cannot be turned back; wait for it (`jarfleet history {app}`)"
            ),
            Refusal::NothingToAbort => format!(
                "no deployment of {app} is under way; `jarfleet history {app}` shows its deployments"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Command as C;
    use Outcome as O;

    fn running(kind: Kind) -> Option<Deployment> {
        Some(Deployment {
            kind,
            rolling_back: false,
        })
    }

    fn back(kind: Kind) -> Option<Deployment> {
        Some(Deployment {
            kind,
            rolling_back: true,
        })
    }

    const WAIT: O = O::Refuse(Refusal::WaitOrAbort);
    const BACK: O = O::Refuse(Refusal::RollingBack);
    const REFRESH: O = O::Refuse(Refusal::Refresh);

    #[test]
    fn the_table() {
        use Kind::*;
        // (command, rolling, restart, blue-green, canary, refresh, rolling back)
        let table: &[(Command, [Outcome; 6])] = &[
            (C::Stop, [O::Supersede; 6]),
            (C::Remove, [O::Supersede; 6]),
            (C::Start, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::ApplyLive, [O::Alongside; 6]),
            (C::StopInstance, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::Restart, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::RestartInstance, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::Scale, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::Deploy, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::Rollback, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (C::ApplyRelease, [WAIT, WAIT, WAIT, WAIT, REFRESH, BACK]),
            (
                C::Abort,
                [
                    O::RollBack,
                    O::End,
                    O::RollBack,
                    O::CanaryAbort,
                    REFRESH,
                    BACK,
                ],
            ),
        ];
        for (command, outcomes) in table {
            let states = [
                running(Rolling),
                running(Restart),
                running(BlueGreen),
                running(Canary),
                running(Refresh),
                back(Rolling),
            ];
            for (state, want) in states.iter().zip(outcomes) {
                assert_eq!(
                    decide(*command, *state),
                    *want,
                    "{command:?} during {state:?}"
                );
            }
        }
    }

    #[test]
    fn every_kind_rolling_back_refuses_abort_and_changes_but_yields_to_stop() {
        for kind in [
            Kind::Rolling,
            Kind::Restart,
            Kind::BlueGreen,
            Kind::Canary,
            Kind::Refresh,
        ] {
            assert_eq!(decide(C::Abort, back(kind)), BACK, "{kind:?}");
            assert_eq!(decide(C::Deploy, back(kind)), BACK, "{kind:?}");
            assert_eq!(decide(C::Stop, back(kind)), O::Supersede, "{kind:?}");
            assert_eq!(decide(C::ApplyLive, back(kind)), O::Alongside, "{kind:?}");
        }
    }

    #[test]
    fn without_a_deployment_everything_goes_ahead_but_abort() {
        for command in [
            C::Stop,
            C::StopInstance,
            C::Start,
            C::Restart,
            C::RestartInstance,
            C::Scale,
            C::Deploy,
            C::Rollback,
            C::ApplyRelease,
            C::ApplyLive,
            C::Remove,
        ] {
            assert_eq!(decide(command, None), O::Alongside, "{command:?}");
        }
        assert_eq!(decide(C::Abort, None), O::Refuse(Refusal::NothingToAbort));
    }

    #[test]
    fn hints_name_the_app_and_the_way_out() {
        assert!(
            Refusal::WaitOrAbort
                .hint("web")
                .contains("`jarfleet abort web`")
        );
        assert!(!Refusal::RollingBack.hint("web").contains("abort web"));
        assert!(!Refusal::Refresh.hint("web").contains("abort web"));
        assert!(Refusal::NothingToAbort.hint("web").contains("history web"));
    }
}
