//! Warnings the data plane could emit thousands of times a second (an accept failing every
//! 20 ms while the process is out of descriptors, a 503 per request): each kind is logged at
//! most once a second, the next line saying how many were left out.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const EVERY: Duration = Duration::from_secs(1);

#[derive(Default)]
pub(crate) struct Warnings {
    pub accept_failed: Throttle,
    pub local_error: Throttle,
    pub tls_refused: Throttle,
}

/// One kind of warning: when it was last logged, and how many were left out since.
#[derive(Default)]
pub(crate) struct Throttle(Mutex<Option<(Instant, u64)>>);

impl Throttle {
    /// `Some(suffix)` when this one may be logged now; the suffix names the ones left out
    /// before it (empty when none were).
    pub fn allow(&self, now: Instant) -> Option<String> {
        let mut state = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match *state {
            Some((last, ref mut skipped)) if now.saturating_duration_since(last) < EVERY => {
                *skipped += 1;
                None
            }
            Some((_, skipped)) => {
                *state = Some((now, 0));
                Some(if skipped == 0 {
                    String::new()
                } else {
                    format!(" ({skipped} more like it in the last second, not logged)")
                })
            }
            None => {
                *state = Some((now, 0));
                Some(String::new())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_a_second_with_a_count_of_what_was_left_out() {
        let t = Throttle::default();
        let start = Instant::now();
        assert_eq!(t.allow(start).as_deref(), Some(""));
        for ms in [1, 200, 999] {
            assert_eq!(t.allow(start + Duration::from_millis(ms)), None);
        }
        let next = t
            .allow(start + Duration::from_millis(1000))
            .expect("a second later");
        assert!(next.contains("3 more"), "{next}");
        assert_eq!(
            t.allow(start + Duration::from_millis(2500)).as_deref(),
            Some("")
        );
    }
}
