//! Judging a canary step from the load balancer's own figures: the canary set's error rate and
//! p99 latency over the step, against thresholds and against the stable set over the same
//! window. Pure: the daemon hands in the counters.

use serde::{Deserialize, Serialize};

use crate::spec::CanarySpec;

/// One set's traffic over a step: responses, failures (5xx and connection failures), and its
/// latency histogram (bucket counts; the bounds are the caller's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetFigures {
    pub requests: u64,
    pub failures: u64,
    pub buckets: Vec<u64>,
}

impl SetFigures {
    /// What happened between `before` and `self` (counters only grow).
    pub fn since(&self, before: &SetFigures) -> SetFigures {
        SetFigures {
            requests: self.requests.saturating_sub(before.requests),
            failures: self.failures.saturating_sub(before.failures),
            buckets: self
                .buckets
                .iter()
                .enumerate()
                .map(|(i, b)| b.saturating_sub(before.buckets.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    pub fn add(&mut self, other: &SetFigures) {
        self.requests += other.requests;
        self.failures += other.failures;
        if self.buckets.len() < other.buckets.len() {
            self.buckets.resize(other.buckets.len(), 0);
        }
        for (i, b) in other.buckets.iter().enumerate() {
            self.buckets[i] += b;
        }
    }

    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.failures as f64 / self.requests as f64
        }
    }

    /// The upper bound of the bucket holding the `q` quantile (`bounds[i]` for bucket `i`; the
    /// last bucket has no bound and counts as twice the last one).
    pub fn quantile_us(&self, q: f64, bounds: &[u64]) -> Option<u64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b;
            if seen >= rank {
                return Some(
                    bounds
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| bounds.last().copied().unwrap_or(0) * 2),
                );
            }
        }
        None
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Pass {
        figures: String,
    },
    Fail {
        figures: String,
        why: String,
    },
    /// Fewer canary requests than `min_requests` yet: the step goes on.
    Wait {
        figures: String,
    },
}

/// Judges one step.
pub fn judge(
    spec: &CanarySpec,
    canary: &SetFigures,
    stable: &SetFigures,
    bounds: &[u64],
) -> Verdict {
    let c99 = canary.quantile_us(0.99, bounds);
    let s99 = stable.quantile_us(0.99, bounds);
    let ms = |v: Option<u64>| {
        v.map_or("–".to_string(), |us| {
            format!("{:.1} ms", us as f64 / 1000.0)
        })
    };
    let figures = format!(
        "canary {} requests, {:.2} % failed, p99 {}; stable {} requests, {:.2} % failed, p99 {}",
        canary.requests,
        100.0 * canary.error_rate(),
        ms(c99),
        stable.requests,
        100.0 * stable.error_rate(),
        ms(s99)
    );
    if canary.requests < spec.min_requests {
        return Verdict::Wait { figures };
    }
    if canary.error_rate() > spec.max_error_rate {
        let why = format!(
            "error rate {:.2} % above max_error_rate {:.2} %",
            100.0 * canary.error_rate(),
            100.0 * spec.max_error_rate
        );
        return Verdict::Fail { figures, why };
    }
    if let (Some(c), Some(s)) = (c99, s99)
        && s > 0
        && c as f64 / s as f64 > spec.max_p99_ratio
    {
        let why = format!(
            "p99 {:.1}× the stable set's, above max_p99_ratio {}",
            c as f64 / s as f64,
            spec.max_p99_ratio
        );
        return Verdict::Fail { figures, why };
    }
    Verdict::Pass { figures }
}

/// Backend weights that give the canary set `percent` % of the traffic: (each stable, each
/// canary). 0 means no new traffic.
pub fn weights(percent: u8, stable: usize, canary: usize) -> (u32, u32) {
    let p = u32::from(percent.min(100));
    let each = |share: u32, n: usize| {
        if n == 0 || share == 0 {
            0
        } else {
            (share * 100 / n as u32).max(1)
        }
    };
    (each(100 - p, stable), each(p, canary))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDS: [u64; 4] = [1_000, 2_000, 5_000, 10_000];

    fn figures(requests: u64, failures: u64, buckets: &[u64]) -> SetFigures {
        SetFigures {
            requests,
            failures,
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn judging_a_step() {
        let spec = CanarySpec::default();
        let stable = figures(1000, 0, &[900, 90, 10, 0, 0]);
        let good = figures(100, 0, &[90, 9, 1, 0, 0]);
        assert!(matches!(
            judge(&spec, &good, &stable, &BOUNDS),
            Verdict::Pass { .. }
        ));
        let erroring = figures(100, 30, &[90, 9, 1, 0, 0]);
        let Verdict::Fail { why, .. } = judge(&spec, &erroring, &stable, &BOUNDS) else {
            panic!("30 % errors must fail");
        };
        assert!(why.contains("error rate 30.00 %"), "{why}");
        let slow = figures(100, 0, &[0, 0, 10, 80, 10]);
        let Verdict::Fail { why, .. } = judge(&spec, &slow, &stable, &BOUNDS) else {
            panic!("a 5x p99 must fail");
        };
        assert!(why.contains("p99"), "{why}");
        assert!(matches!(
            judge(&spec, &figures(5, 5, &[5, 0, 0, 0, 0]), &stable, &BOUNDS),
            Verdict::Wait { .. }
        ));
    }

    #[test]
    fn weights_split_the_traffic() {
        assert_eq!(weights(20, 3, 3), (2666, 666));
        assert_eq!(weights(100, 3, 3), (0, 3333));
        assert_eq!(weights(0, 3, 3), (3333, 0));
        let (s, c) = weights(5, 2, 2);
        let share = f64::from(2 * c) / f64::from(2 * c + 2 * s);
        assert!((share - 0.05).abs() < 0.01, "{share}");
    }

    #[test]
    fn deltas_and_quantiles() {
        let before = figures(10, 1, &[5, 5, 0, 0, 0]);
        let now = figures(30, 2, &[5, 5, 10, 10, 0]);
        let d = now.since(&before);
        assert_eq!((d.requests, d.failures), (20, 1));
        assert_eq!(d.quantile_us(0.5, &BOUNDS), Some(5_000));
        assert_eq!(d.quantile_us(0.99, &BOUNDS), Some(10_000));
    }
}
