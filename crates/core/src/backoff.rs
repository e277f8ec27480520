//! Restart backoff: the first restart after a crash is immediate, repeated crashes back off
//! exponentially (initial → max) with ±20 % jitter; a long enough healthy run resets it.

use std::time::Duration;

use crate::spec::RestartSpec;

/// Consecutive crashes at which an instance is shown as crash-looping.
pub const CRASH_LOOP_AFTER: u32 = 3;

/// Delay before restart number `consecutive_crashes` (1 = first crash since the last reset).
/// `jitter` is a caller-provided value in `[0, 1)` (the daemon draws it; tests fix it).
pub fn restart_delay(spec: &RestartSpec, consecutive_crashes: u32, jitter: f64) -> Duration {
    if consecutive_crashes <= 1 {
        return Duration::ZERO;
    }
    let exponent = (consecutive_crashes - 2).min(30);
    let base = spec
        .backoff_initial
        .saturating_mul(1u32 << exponent)
        .min(spec.backoff_max);
    // ±20 %: factor in [0.8, 1.2), never above the cap.
    let factor = 0.8 + 0.4 * jitter.clamp(0.0, 0.999_999);
    base.mul_f64(factor).min(spec.backoff_max)
}

/// Delay before the next attempt to bind a load balancer listener after `failures` failed
/// attempts in a row: 1 s, 2 s, 4 s, … up to 30 s.
pub fn listener_retry_delay(failures: u32) -> Duration {
    const MAX: Duration = Duration::from_secs(30);
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX)
}

/// Whether the restart budget (`max_restarts`) is used up.
pub fn gave_up(spec: &RestartSpec, restarts: u32) -> bool {
    spec.max_restarts.is_some_and(|max| restarts >= max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_retries_back_off_to_30_s() {
        let table = [
            (0, 1),
            (1, 1),
            (2, 2),
            (3, 4),
            (4, 8),
            (5, 16),
            (6, 30),
            (7, 30),
            (u32::MAX, 30),
        ];
        for (failures, secs) in table {
            assert_eq!(
                listener_retry_delay(failures),
                Duration::from_secs(secs),
                "after {failures} failure(s)"
            );
        }
    }

    fn spec() -> RestartSpec {
        RestartSpec {
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            reset_after: Duration::from_secs(60),
            max_restarts: None,
        }
    }

    #[test]
    fn delays_grow_exponentially_and_cap() {
        let s = spec();
        let table = [
            (1, 0),
            (2, 1_000),
            (3, 2_000),
            (4, 4_000),
            (5, 8_000),
            (10, 256_000),
            (11, 300_000),
            (40, 300_000),
        ];
        for (crashes, want_ms) in table {
            // jitter 0.5 → factor 1.0
            let got = restart_delay(&s, crashes, 0.5).as_millis() as u64;
            assert_eq!(got, want_ms, "crashes={crashes}");
        }
    }

    #[test]
    fn jitter_stays_within_twenty_percent_and_under_cap() {
        let s = spec();
        assert_eq!(restart_delay(&s, 3, 0.0), Duration::from_millis(1_600));
        assert!(restart_delay(&s, 3, 0.999) < Duration::from_millis(2_400));
        assert_eq!(restart_delay(&s, 20, 0.999), Duration::from_secs(300));
    }

    #[test]
    fn max_restarts_gives_up() {
        let mut s = spec();
        assert!(!gave_up(&s, 1_000_000));
        s.max_restarts = Some(3);
        assert!(!gave_up(&s, 2));
        assert!(gave_up(&s, 3));
    }
}
