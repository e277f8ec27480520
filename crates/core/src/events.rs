//! The kinds of event the daemon records: the stable `AREA.WHAT` names that `jarfleet events`,
//! the event streams and the store carry, each documented in `docs/events.md`
//! (`crates/core/tests/event_docs.rs` holds the two to each other).

use crate::instance::NoteKind;

macro_rules! event_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// One kind of event; [`EventKind::as_str`] is its name on the wire and in the store.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind {
            $($variant,)*
        }

        impl EventKind {
            /// Every kind, in the order of their names.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The stable name: `instance.ready`, `deploy.rolled-back`, …
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }
    };
}

event_kinds! {
    ApiListening => "api.listening",
    ApiStopped => "api.stopped",
    AppAdded => "app.added",
    AppRemoved => "app.removed",
    AppRemoving => "app.removing",
    AppRestart => "app.restart",
    AppScaled => "app.scaled",
    AppStart => "app.start",
    AppStop => "app.stop",
    AppUpdated => "app.updated",
    CdsFailed => "cds.failed",
    CdsTrained => "cds.trained",
    ClusterArtifact => "cluster.artifact",
    ClusterFailed => "cluster.failed",
    ClusterHolding => "cluster.holding",
    ClusterJoined => "cluster.joined",
    ClusterLeader => "cluster.leader",
    ClusterLeaseLost => "cluster.lease-lost",
    ClusterMoving => "cluster.moving",
    ClusterPeerDown => "cluster.peer-down",
    ClusterPeerUp => "cluster.peer-up",
    ClusterPlaced => "cluster.placed",
    ClusterReachable => "cluster.reachable",
    ClusterRefused => "cluster.refused",
    ClusterRollout => "cluster.rollout",
    ClusterUnplaced => "cluster.unplaced",
    ClusterUnreachable => "cluster.unreachable",
    ConfigDeferred => "config.deferred",
    ConfigFailed => "config.failed",
    ConfigMetrics => "config.metrics",
    ConfigReconnected => "config.reconnected",
    ConfigRefreshFailed => "config.refresh-failed",
    ConfigReloadFailed => "config.reload-failed",
    ConfigReloaded => "config.reloaded",
    ConfigRollout => "config.rollout",
    ConfigUnreachable => "config.unreachable",
    DaemonShortage => "daemon.shortage",
    DaemonStarted => "daemon.started",
    DaemonStopping => "daemon.stopping",
    DaemonStoreFailing => "daemon.store-failing",
    DaemonStoreRecovered => "daemon.store-recovered",
    DaemonStrayFound => "daemon.stray-found",
    DaemonStrayStopped => "daemon.stray-stopped",
    DeployAborted => "deploy.aborted",
    DeployFailed => "deploy.failed",
    DeployPaused => "deploy.paused",
    DeployRolledBack => "deploy.rolled-back",
    DeployRollingBack => "deploy.rolling-back",
    DeployStarted => "deploy.started",
    DeploySucceeded => "deploy.succeeded",
    InstanceAdopted => "instance.adopted",
    InstanceBackoffReset => "instance.backoff-reset",
    InstanceCrashLoop => "instance.crash-loop",
    InstanceExited => "instance.exited",
    InstanceGaveUp => "instance.gave-up",
    InstanceReady => "instance.ready",
    InstanceRecovered => "instance.recovered",
    InstanceRestartScheduled => "instance.restart-scheduled",
    InstanceSpawnFailed => "instance.spawn-failed",
    InstanceSpawnPostponed => "instance.spawn-postponed",
    InstanceSpawned => "instance.spawned",
    InstanceStandbyEnded => "instance.standby-ended",
    InstanceStartTimeout => "instance.start-timeout",
    InstanceStopped => "instance.stopped",
    InstanceStopping => "instance.stopping",
    InstanceUnhealthy => "instance.unhealthy",
    InstanceUnhealthyRestart => "instance.unhealthy-restart",
    LbBindFailed => "lb.bind-failed",
    LbListening => "lb.listening",
    LbReplaced => "lb.replaced",
    LbTakenBack => "lb.taken-back",
    ReleasePruned => "release.pruned",
    SecurityConnectionLimit => "security.connection-limit",
    SecurityForeignHost => "security.foreign-host",
    SecurityRefused => "security.refused",
    SecuritySlowRequest => "security.slow-request",
    SecurityWrongToken => "security.wrong-token",
}

impl EventKind {
    /// The event an instance's note is recorded as.
    pub fn of_note(kind: NoteKind) -> EventKind {
        match kind {
            NoteKind::Spawned => EventKind::InstanceSpawned,
            NoteKind::Ready => EventKind::InstanceReady,
            NoteKind::Unhealthy => EventKind::InstanceUnhealthy,
            NoteKind::Recovered => EventKind::InstanceRecovered,
            NoteKind::StartTimeout => EventKind::InstanceStartTimeout,
            NoteKind::UnhealthyRestart => EventKind::InstanceUnhealthyRestart,
            NoteKind::Stopping => EventKind::InstanceStopping,
            NoteKind::Stopped => EventKind::InstanceStopped,
            NoteKind::Exited => EventKind::InstanceExited,
            NoteKind::RestartScheduled => EventKind::InstanceRestartScheduled,
            NoteKind::CrashLoop => EventKind::InstanceCrashLoop,
            NoteKind::GaveUp => EventKind::InstanceGaveUp,
            NoteKind::SpawnFailed => EventKind::InstanceSpawnFailed,
            NoteKind::SpawnPostponed => EventKind::InstanceSpawnPostponed,
            NoteKind::BackoffReset => EventKind::InstanceBackoffReset,
        }
    }

    /// The event a deployment's end is recorded as, by its outcome's name (`succeeded`,
    /// `rolled-back`, `failed`, `aborted`); `None` for a name that is not an end.
    pub fn of_deployment_end(outcome: &str) -> Option<EventKind> {
        match outcome {
            "succeeded" => Some(EventKind::DeploySucceeded),
            "rolled-back" => Some(EventKind::DeployRolledBack),
            "failed" => Some(EventKind::DeployFailed),
            "aborted" => Some(EventKind::DeployAborted),
            _ => None,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_sorted_and_area_dot_what() {
        let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
        for name in names {
            let (area, what) = name.split_once('.').expect("AREA.WHAT");
            assert!(!area.is_empty() && !what.is_empty(), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '-'),
                "{name}"
            );
        }
    }

    #[test]
    fn every_note_is_an_instance_event_named_like_the_note() {
        for (note, name) in [
            (NoteKind::StartTimeout, "instance.start-timeout"),
            (NoteKind::SpawnPostponed, "instance.spawn-postponed"),
            (NoteKind::Ready, "instance.ready"),
        ] {
            assert_eq!(EventKind::of_note(note).as_str(), name);
        }
    }
}
