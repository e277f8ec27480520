//! Health thresholds: when to probe, and what a run of probe results means.

use crate::Millis;
use crate::spec::HealthSpec;

/// While starting, readiness is polled every 50 ms for the first 3 s, so a small JVM (ready in a
/// few hundred ms) is seen within 50 ms of being ready: a restart adds no polling delay.
pub const START_POLL_FAST_MS: Millis = 50;
pub const START_POLL_FAST_FOR_MS: Millis = 3_000;
/// After that, every 250 ms until `start_timeout` (DESIGN §6).
pub const START_POLL_MS: Millis = 250;
/// A check the daemon could not run at all (out of file descriptors, memory or local ports) is
/// tried again this soon, or at the usual period when that is shorter.
pub const INCONCLUSIVE_RETRY_MS: Millis = 1_000;

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
    /// Since when every attempt was *inconclusive*: the daemon could not run the check at all
    /// (a shortage of its own: file descriptors, memory, local ports). Neither a pass nor a
    /// failure; cleared by the next real result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_since: Option<Millis>,
    /// The latest inconclusive attempt (the retry is scheduled from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_inconclusive_at: Option<Millis>,
}

impl ProbeRun {
    pub fn record(&mut self, ok: bool, at: Millis, error: Option<String>) {
        self.last_probe_at = Some(at);
        self.inconclusive_since = None;
        self.last_inconclusive_at = None;
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

    /// An attempt that could not be run: the counts stay as they are (no failure, no success).
    pub fn record_inconclusive(&mut self, at: Millis) {
        self.inconclusive_since.get_or_insert(at);
        self.last_inconclusive_at = Some(at);
    }

    /// The latest attempt could not be run, so nothing is known about the instance since
    /// [`ProbeRun::inconclusive_since`]: no deadline is enforced on the strength of it.
    pub fn is_inconclusive(&self) -> bool {
        self.inconclusive_since.is_some()
    }

    /// `failures` consecutive failures turn a ready instance unhealthy.
    pub fn is_failing(&self, spec: &HealthSpec) -> bool {
        self.consecutive_failures >= spec.failures.max(1)
    }
}

/// When the next probe is due: fast while starting (see [`start_poll_period`]), every
/// `interval` afterwards; after an inconclusive attempt, within [`INCONCLUSIVE_RETRY_MS`].
pub fn next_probe_at(spec: &HealthSpec, run: &ProbeRun, starting: bool, since: Millis) -> Millis {
    let interval = spec.interval.as_millis() as Millis;
    if let Some(at) = run.last_inconclusive_at.filter(|at| *at >= since) {
        let period = if starting {
            start_poll_period(at - since)
        } else {
            interval
        };
        return at + period.min(INCONCLUSIVE_RETRY_MS);
    }
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

    #[test]
    fn an_inconclusive_attempt_counts_for_nothing_and_is_retried_soon() {
        let s = spec();
        // (results: Some(ok) or None = inconclusive; failures, successes, inconclusive since)
        type Row<'a> = (&'a [Option<bool>], u32, u32, Option<Millis>);
        let table: [Row<'_>; 6] = [
            (&[None], 0, 0, Some(0)),
            (&[Some(false), None], 1, 0, Some(1)),
            (&[Some(false), None, None, Some(false)], 2, 0, None),
            (&[Some(true), Some(true), None], 0, 2, Some(2)),
            (&[Some(false), None, Some(true)], 0, 1, None),
            (&[None, None, None], 0, 0, Some(0)),
        ];
        for (results, failures, successes, since) in table {
            let mut run = ProbeRun::default();
            for (at, r) in results.iter().enumerate() {
                match r {
                    Some(ok) => run.record(*ok, at as Millis, (!ok).then(|| "503".into())),
                    None => run.record_inconclusive(at as Millis),
                }
            }
            let what = format!("{results:?}");
            assert_eq!(run.consecutive_failures, failures, "{what}");
            assert_eq!(run.consecutive_successes, successes, "{what}");
            assert_eq!(run.inconclusive_since, since, "{what}");
            assert_eq!(run.is_inconclusive(), since.is_some(), "{what}");
        }

        // Retried within a second (interval 5 s), or at the fast start-up period.
        let mut run = ProbeRun::default();
        run.record(true, 10_000, None);
        assert_eq!(next_probe_at(&s, &run, false, 1_000), 15_000);
        run.record_inconclusive(15_000);
        assert_eq!(next_probe_at(&s, &run, false, 1_000), 16_000);
        run.record_inconclusive(16_000);
        assert_eq!(next_probe_at(&s, &run, false, 1_000), 17_000);
        run.record(true, 17_000, None);
        assert_eq!(next_probe_at(&s, &run, false, 1_000), 22_000);
        let mut starting = ProbeRun::default();
        starting.record_inconclusive(1_100);
        assert_eq!(next_probe_at(&s, &starting, true, 1_000), 1_150);
        starting.record_inconclusive(5_000);
        assert_eq!(next_probe_at(&s, &starting, true, 1_000), 5_250);
        // An interval under a second is kept.
        let fast = HealthSpec {
            interval: Duration::from_millis(300),
            ..spec()
        };
        assert_eq!(next_probe_at(&fast, &run, false, 1_000), 17_300);
        run.record_inconclusive(17_300);
        assert_eq!(next_probe_at(&fast, &run, false, 1_000), 17_600);
    }
}
