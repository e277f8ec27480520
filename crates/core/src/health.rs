//! Health thresholds: when to probe, and what a run of probe results means.

use crate::Millis;
use crate::spec::HealthSpec;

/// While starting, readiness is polled every 50 ms for the first 3 s, so a small JVM (ready in a
/// few hundred ms) is seen within 50 ms of being ready: a restart adds no polling delay.
pub const START_POLL_FAST_MS: Millis = 50;
pub const START_POLL_FAST_FOR_MS: Millis = 3_000;
/// After that, every 250 ms until `start_timeout` (DESIGN §6).
pub const START_POLL_MS: Millis = 250;

/// The start-time polling period, `elapsed` ms after the instance was spawned.
pub fn start_poll_period(elapsed: Millis) -> Millis {
    if elapsed < START_POLL_FAST_FOR_MS {
        START_POLL_FAST_MS
    } else {
        START_POLL_MS
    }
}

/// Consecutive probe results, kept per instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeRun {
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_probe_at: Option<Millis>,
    pub last_error: Option<String>,
}

impl ProbeRun {
    pub fn record(&mut self, ok: bool, at: Millis, error: Option<String>) {
        self.last_probe_at = Some(at);
        if ok {
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
            self.last_error = None;
        } else {
            self.consecutive_failures += 1;
            self.consecutive_successes = 0;
            self.last_error = error;
        }
    }

    /// `failures` consecutive failures turn a ready instance unhealthy.
    pub fn is_failing(&self, spec: &HealthSpec) -> bool {
        self.consecutive_failures >= spec.failures.max(1)
    }
}

/// When the next probe is due: fast while starting (see [`start_poll_period`]), every
/// `interval` afterwards.
pub fn next_probe_at(spec: &HealthSpec, run: &ProbeRun, starting: bool, since: Millis) -> Millis {
    let interval = spec.interval.as_millis() as Millis;
    match (run.last_probe_at, starting) {
        (Some(last), true) if last >= since => last + start_poll_period(last - since),
        (Some(last), false) if last >= since => last + interval,
        (_, true) => since + START_POLL_FAST_MS,
        (_, false) => since + interval,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::spec::HealthCheck;

    fn spec() -> HealthSpec {
        HealthSpec {
            check: HealthCheck::Tcp,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            failures: 3,
            start_timeout: Duration::from_secs(120),
            unhealthy_restart_after: Duration::from_secs(45),
        }
    }

    #[test]
    fn polls_fast_early_in_a_start_then_every_250ms_then_at_interval() {
        let s = spec();
        let mut run = ProbeRun::default();
        assert_eq!(next_probe_at(&s, &run, true, 1_000), 1_050);
        run.record(false, 1_050, Some("refused".into()));
        assert_eq!(next_probe_at(&s, &run, true, 1_000), 1_100);
        // After the first 3 s of a start: every 250 ms.
        run.record(false, 4_000, Some("refused".into()));
        assert_eq!(next_probe_at(&s, &run, true, 1_000), 4_250);
        run.record(true, 1_500, None);
        assert_eq!(next_probe_at(&s, &run, false, 1_500), 6_500);
        // a probe from before `since` (an older phase) does not count
        assert_eq!(next_probe_at(&s, &run, false, 2_000), 7_000);
    }

    #[test]
    fn failures_must_be_consecutive() {
        let s = spec();
        let mut run = ProbeRun::default();
        for (i, ok) in [false, false, true, false, false].into_iter().enumerate() {
            run.record(ok, i as Millis, None);
            assert!(!run.is_failing(&s), "after probe {i}");
        }
        run.record(false, 10, Some("503".into()));
        assert!(run.is_failing(&s));
        assert_eq!(run.last_error.as_deref(), Some("503"));
    }
}
