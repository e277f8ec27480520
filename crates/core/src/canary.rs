//! Judging a canary step from the load balancer's own figures: the canary set's error rate and
//! latency over the step against the stable set's over the same window, with tests that tell a
//! real difference from chance (Fisher's exact test on failures, a Mann–Whitney rank test on
//! the latency histograms) and floors below which a difference does not matter. A canary
//! instance's first `warmup_requests` responses are not judged for latency ([`WarmUp`]): a fresh
//! JVM is slow until its code is compiled. Pure: the daemon hands in the counters.

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
    /// At most this many latency buckets in a figure read from elsewhere (the balancer keeps
    /// far fewer).
    pub const MAX_BUCKETS: usize = 64;

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

    /// The `q` quantile, interpolated linearly inside its bucket (`bounds[i]` is bucket `i`'s
    /// upper bound, 0 the first one's lower; the last bucket counts as up to twice the last
    /// bound). `None` without samples.
    pub fn estimate_us(&self, q: f64, bounds: &[u64]) -> Option<f64> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).max(0.0);
        let mut seen = 0.0;
        let last = bounds.last().copied().unwrap_or(0) as f64;
        for (i, &b) in self.buckets.iter().enumerate() {
            let lower = if i == 0 {
                0.0
            } else {
                bounds.get(i - 1).map_or(last, |&v| v as f64)
            };
            let upper = bounds.get(i).map_or(2.0 * last, |&v| v as f64);
            let b = b as f64;
            if b > 0.0 && seen + b >= rank {
                return Some(lower + (upper - lower) * ((rank - seen) / b).clamp(0.0, 1.0));
            }
            seen += b;
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
    /// Fewer canary requests than `min_requests` yet (or fewer warm ones to judge its
    /// latency): the step goes on.
    Wait {
        figures: String,
    },
}

/// Significance level of both tests: a difference that chance explains with a probability of
/// 1 % or more is not held against the canary.
pub const ALPHA: f64 = 0.01;

/// One canary instance's warm-up: the latency of its first `warmup_requests` responses (after
/// it was first seen by the judge, i.e. once it was ready) is not judged — a freshly started JVM
/// interprets and compiles its code while it serves them. Fed with the instance's cumulative
/// counters as they grow (the daemon looks a few times a second while an instance warms up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WarmUp {
    first: Option<SetFigures>,
    warm: Option<SetFigures>,
}

impl WarmUp {
    /// Takes the instance's cumulative counters now.
    pub fn observe(&mut self, counters: &SetFigures, warmup_requests: u64) {
        let first = self.first.get_or_insert_with(|| counters.clone());
        if self.warm.is_none()
            && counters.requests.saturating_sub(first.requests) >= warmup_requests
        {
            self.warm = Some(counters.clone());
        }
    }

    pub fn is_warm(&self) -> bool {
        self.warm.is_some()
    }

    /// The latency (buckets only) this instance's warm responses contributed since
    /// `window_start` (its counters when the step began): nothing while it warms up.
    pub fn warm_since(&self, now: &SetFigures, window_start: &SetFigures) -> SetFigures {
        let Some(warm) = &self.warm else {
            return SetFigures::default();
        };
        // Counters only grow: the later of the two snapshots is the one with more requests.
        let from = if warm.requests >= window_start.requests {
            warm
        } else {
            window_start
        };
        let d = now.since(from);
        SetFigures {
            requests: d.buckets.iter().sum(),
            failures: 0,
            buckets: d.buckets,
        }
    }
}

/// One step's figures: both sets' responses over the step, and the latency of the canary's
/// warm responses only ([`WarmUp`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFigures {
    pub canary: SetFigures,
    pub canary_warm: SetFigures,
    pub stable: SetFigures,
}

/// Judges one step.
///
/// * **Errors**: the canary fails when its error rate is above `max_error_rate` *and* (when the
///   stable set served at least `min_requests` in the window) significantly above the stable
///   set's — Fisher's exact test, one-sided, p < [`ALPHA`]. A stable set failing as often is
///   no reason to roll back; a few failures in a small sample are not either.
/// * **Latency**, on the canary's warm responses only: slower when a Mann–Whitney U test over
///   the two latency histograms says the canary is slower (one-sided, p < [`ALPHA`]) *and* its
///   median is both more than `latency_floor` above the stable set's and more than
///   `max_p99_ratio` times it (the key keeps its name; the p99 is shown, not judged). Judged once the canary has `min_requests` warm responses and the
///   stable set `min_requests` responses; until the canary has them the step goes on (`Wait`),
///   and with a stable set without traffic (a 100 % step) latency is not judged.
pub fn judge(spec: &CanarySpec, step: &StepFigures, bounds: &[u64]) -> Verdict {
    let (canary, warm, stable) = (&step.canary, &step.canary_warm, &step.stable);
    let ms = |v: Option<f64>| v.map_or("–".to_string(), |us| format!("{:.1} ms", us / 1000.0));
    let (c50, c99) = (
        warm.estimate_us(0.5, bounds),
        warm.estimate_us(0.99, bounds),
    );
    let (s50, s99) = (
        stable.estimate_us(0.5, bounds),
        stable.estimate_us(0.99, bounds),
    );
    let figures = format!(
        "canary {} requests, {:.2} % failed, {} warm: median {}, p99 {}; stable {} requests, {:.2} % failed, median {}, p99 {}",
        canary.requests,
        100.0 * canary.error_rate(),
        warm.requests,
        ms(c50),
        ms(c99),
        stable.requests,
        100.0 * stable.error_rate(),
        ms(s50),
        ms(s99)
    );
    if canary.requests < spec.min_requests {
        return Verdict::Wait { figures };
    }
    let stable_counts = stable.requests >= spec.min_requests;
    if canary.error_rate() > spec.max_error_rate {
        let p = if stable_counts {
            fisher_greater(
                canary.failures.min(canary.requests),
                canary.requests,
                stable.failures.min(stable.requests),
                stable.requests,
            )
        } else {
            0.0
        };
        if p < ALPHA {
            let why = if stable_counts {
                format!(
                    "error rate {:.2} % above max_error_rate {:.2} % and above the stable set's {:.2} % (p = {p:.1e})",
                    100.0 * canary.error_rate(),
                    100.0 * spec.max_error_rate,
                    100.0 * stable.error_rate()
                )
            } else {
                format!(
                    "error rate {:.2} % above max_error_rate {:.2} %",
                    100.0 * canary.error_rate(),
                    100.0 * spec.max_error_rate
                )
            };
            return Verdict::Fail { figures, why };
        }
    }
    if !stable_counts {
        return Verdict::Pass { figures };
    }
    if warm.requests < spec.min_requests {
        return Verdict::Wait { figures };
    }
    let p = mann_whitney_greater(&warm.buckets, &stable.buckets);
    if p >= ALPHA {
        return Verdict::Pass { figures };
    }
    let floor = spec.latency_floor.as_secs_f64() * 1e6;
    let slower = |c: Option<f64>, s: Option<f64>| match (c, s) {
        (Some(c), Some(s)) => c - s > floor && c > spec.max_p99_ratio * s,
        _ => false,
    };
    // The rank test measures a shift of the whole distribution; its effect size is the
    // median's. A fresh JVM's tail stays heavier for a while (the JIT compiles on the same
    // cores), so the p99 is shown, not judged.
    let which = slower(c50, s50).then_some(("median", c50, s50));
    match which {
        Some((name, Some(c), Some(s))) => {
            let why = format!(
                "slower than the stable set (rank test p = {p:.1e}): {name} {} vs {}, more than latency_floor {} ms above it and more than max_p99_ratio {} times it",
                ms(Some(c)),
                ms(Some(s)),
                spec.latency_floor.as_millis(),
                spec.max_p99_ratio
            );
            Verdict::Fail { figures, why }
        }
        _ => Verdict::Pass { figures },
    }
}

/// One-sided Mann–Whitney U test on two latency histograms with the same buckets: the
/// probability of the canary (`a`) ranking at least this far above the stable set (`b`) if
/// both came from one distribution. Samples in one bucket are ties (mid-ranks, with the tie
/// correction of the variance); normal approximation with continuity correction. 1 when either
/// side is empty or every sample is in one bucket.
pub fn mann_whitney_greater(a: &[u64], b: &[u64]) -> f64 {
    let n1: f64 = a.iter().map(|&x| x as f64).sum();
    let n2: f64 = b.iter().map(|&x| x as f64).sum();
    if n1 == 0.0 || n2 == 0.0 {
        return 1.0;
    }
    let len = a.len().max(b.len());
    let (mut u, mut below, mut ties) = (0.0, 0.0, 0.0);
    for i in 0..len {
        let ai = a.get(i).copied().unwrap_or(0) as f64;
        let bi = b.get(i).copied().unwrap_or(0) as f64;
        // Pairs where the canary sample is slower, ties counting half.
        u += ai * (below + 0.5 * bi);
        below += bi;
        let t = ai + bi;
        ties += t * t * t - t;
    }
    let n = n1 + n2;
    let mean = n1 * n2 / 2.0;
    let var = n1 * n2 / 12.0 * ((n + 1.0) - ties / (n * (n - 1.0)));
    if var <= 0.0 || !var.is_finite() {
        return 1.0;
    }
    let z = (u - mean - 0.5) / var.sqrt();
    normal_sf(z)
}

/// One-sided Fisher's exact test: the probability of the canary having at least `fa` failures
/// among its `na` responses if failures were spread over both sets (`fb` of `nb` for the stable
/// set) at random — the upper tail of the hypergeometric distribution.
pub fn fisher_greater(fa: u64, na: u64, fb: u64, nb: u64) -> f64 {
    let (fa, fb) = (fa.min(na), fb.min(nb));
    let n = (na + nb) as f64;
    let k = (fa + fb) as f64;
    let draws = na as f64;
    let hi = (fa + fb).min(na);
    let ln_pmf = |x: f64| ln_choose(k, x) + ln_choose(n - k, draws - x) - ln_choose(n, draws);
    let mut term = ln_pmf(fa as f64).exp();
    let mut sum = term;
    let mut x = fa as f64;
    while (x as u64) < hi {
        // pmf(x + 1) / pmf(x)
        term *= (k - x) * (draws - x) / ((x + 1.0) * (n - k - draws + x + 1.0));
        sum += term;
        x += 1.0;
        if term < sum * 1e-15 {
            break;
        }
    }
    sum.min(1.0)
}

fn ln_choose(n: f64, k: f64) -> f64 {
    if k < 0.0 || k > n {
        return f64::NEG_INFINITY;
    }
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7; about 15 significant digits).
fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// P(Z > z) for a standard normal Z.
fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (Chebyshev fit, relative error < 1.2e-7).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 { r } else { 2.0 - r }
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

    /// The proxy's bucket bounds (µs), as the daemon passes them.
    const LB: [u64; 18] = [
        100, 250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 25_000, 50_000, 100_000, 250_000,
        500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
    ];

    /// A histogram over `LB` from (latency in µs, count) pairs.
    fn hist(samples: &[(u64, u64)]) -> Vec<u64> {
        let mut b = vec![0; LB.len() + 1];
        for &(us, n) in samples {
            let i = LB.iter().position(|&bound| us <= bound).unwrap_or(LB.len());
            b[i] += n;
        }
        b
    }

    fn set(failures: u64, samples: &[(u64, u64)]) -> SetFigures {
        let buckets = hist(samples);
        SetFigures {
            requests: buckets.iter().sum(),
            failures,
            buckets,
        }
    }

    /// A step whose canary responses were all warm.
    fn step(canary: SetFigures, stable: SetFigures) -> StepFigures {
        StepFigures {
            canary_warm: SetFigures {
                failures: 0,
                ..canary.clone()
            },
            canary,
            stable,
        }
    }

    /// A spread like a warm fixture JVM's: most around 1 ms, a tail to 3 ms, scaled by `n`.
    fn warm_like(n: u64) -> Vec<(u64, u64)> {
        vec![
            (400, n * 30 / 100),
            (900, n * 50 / 100),
            (1_800, n * 15 / 100),
            (2_800, n * 5 / 100),
        ]
    }

    #[derive(Debug, PartialEq)]
    enum V {
        Pass,
        Fail(&'static str),
        Wait,
    }

    #[test]
    fn judging_a_step() {
        let spec = CanarySpec::default();
        let stable = set(0, &warm_like(2000));
        let shifted = |by: u64, n: u64| -> Vec<(u64, u64)> {
            warm_like(n)
                .into_iter()
                .map(|(us, c)| (us + by, c))
                .collect()
        };
        let table: Vec<(&str, StepFigures, V)> = vec![
            (
                "same distribution, small sample",
                step(set(0, &warm_like(20)), stable.clone()),
                V::Pass,
            ),
            (
                "same distribution, large sample",
                step(set(0, &warm_like(1000)), stable.clone()),
                V::Pass,
            ),
            (
                "30 % 500s fail at the first step",
                step(set(30, &warm_like(100)), stable.clone()),
                V::Fail("error rate 30.00 %"),
            ),
            (
                "3x slower by 20 ms fails",
                step(set(0, &[(30_000, 200)]), set(0, &[(10_000, 2000)])),
                V::Fail("median"),
            ),
            (
                "2 ms against 1 ms passes: below the 5 ms floor",
                step(set(0, &[(2_000, 400)]), set(0, &[(1_000, 2000)])),
                V::Pass,
            ),
            (
                "1 ms slower everywhere passes, however significant",
                step(set(0, &shifted(1_000, 1000)), stable.clone()),
                V::Pass,
            ),
            (
                "300 ms slower fails",
                step(set(0, &shifted(300_000, 100)), stable.clone()),
                V::Fail("slower than the stable set"),
            ),
            (
                "a slow tail alone is not a significant shift",
                step(
                    set(
                        0,
                        &[(400, 30), (900, 47), (1_800, 14), (2_800, 4), (40_000, 5)],
                    ),
                    stable.clone(),
                ),
                V::Pass,
            ),
            (
                "a slow majority: the median moves far, the rank test agrees",
                step(set(0, &[(900, 80), (40_000, 120)]), stable.clone()),
                V::Fail("median"),
            ),
            (
                "a fresh JVM's heavier tail with a close median passes",
                step(
                    set(0, &[(400, 20), (900, 40), (2_500, 30), (40_000, 10)]),
                    set(0, &[(400, 600), (900, 1000), (1_800, 300), (20_000, 100)]),
                ),
                V::Pass,
            ),
            (
                "one failure in 25 is not significant against a clean stable set",
                step(set(1, &warm_like(25)), stable.clone()),
                V::Pass,
            ),
            (
                "a stable set failing as often: not the canary's fault",
                step(set(30, &warm_like(100)), set(600, &warm_like(2000))),
                V::Pass,
            ),
            (
                "the absolute bound stands when the stable set has no traffic",
                step(set(30, &warm_like(100)), set(0, &[])),
                V::Fail("above max_error_rate"),
            ),
            (
                "too few canary requests",
                step(set(5, &warm_like(10)), stable.clone()),
                V::Wait,
            ),
        ];
        for (name, figures, want) in table {
            let got = match judge(&spec, &figures, &LB) {
                Verdict::Pass { .. } => V::Pass,
                Verdict::Wait { .. } => V::Wait,
                Verdict::Fail { why, figures } => {
                    let needle = match &want {
                        V::Fail(n) => *n,
                        _ => "",
                    };
                    assert!(why.contains(needle), "{name}: {why} ({figures})");
                    if let V::Fail(n) = want {
                        V::Fail(n)
                    } else {
                        V::Fail("unexpected")
                    }
                }
            };
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn cold_outliers_of_the_first_requests_are_not_judged() {
        let spec = CanarySpec::default();
        let stable = set(0, &warm_like(2000));
        // A fresh canary instance: its first 199 responses take 25-60 ms, then it is warm.
        let mut w = WarmUp::default();
        let at_ready = SetFigures::default();
        w.observe(&at_ready, spec.warmup_requests);
        let cold = set(0, &[(25_000, 150), (60_000, 49)]);
        w.observe(&cold, spec.warmup_requests);
        assert!(!w.is_warm());
        let mut now = cold.clone();
        now.add(&set(0, &warm_like(60)));
        w.observe(&now, spec.warmup_requests);
        assert!(w.is_warm(), "{} requests", now.requests);
        let mut end = now.clone();
        end.add(&set(0, &warm_like(100)));
        let warm = w.warm_since(&end, &at_ready);
        assert_eq!(warm.requests, 100);
        let figures = StepFigures {
            canary: end.clone(),
            canary_warm: warm,
            stable: stable.clone(),
        };
        assert!(
            matches!(judge(&spec, &figures, &LB), Verdict::Pass { .. }),
            "{:?}",
            judge(&spec, &figures, &LB)
        );
        // Judged with its cold responses, the same canary fails: the warm-up is what saves it.
        let all = step(end, stable);
        assert!(matches!(judge(&spec, &all, &LB), Verdict::Fail { .. }));
        // Not warm yet: the step waits for warm responses rather than judge cold ones.
        let mut w = WarmUp::default();
        w.observe(&at_ready, spec.warmup_requests);
        w.observe(&cold, spec.warmup_requests);
        let figures = StepFigures {
            canary: cold.clone(),
            canary_warm: w.warm_since(&cold, &at_ready),
            stable: set(0, &warm_like(2000)),
        };
        assert!(matches!(judge(&spec, &figures, &LB), Verdict::Wait { .. }));
        // A later step's window starts after the warm-up: only its own responses count.
        let mut later = end_of(&cold, 500);
        let window_start = later.clone();
        later.add(&set(0, &warm_like(100)));
        let mut w = WarmUp::default();
        w.observe(&at_ready, spec.warmup_requests);
        w.observe(&window_start, spec.warmup_requests);
        assert_eq!(w.warm_since(&later, &window_start).requests, 100);
    }

    fn end_of(base: &SetFigures, more: u64) -> SetFigures {
        let mut s = base.clone();
        s.add(&set(0, &warm_like(more)));
        s
    }

    #[test]
    fn rank_test_and_fisher_match_known_values() {
        // Identical samples: no evidence either way.
        let a = hist(&warm_like(100));
        let p = mann_whitney_greater(&a, &a);
        assert!((0.4..=0.6).contains(&p), "{p}");
        // Completely separated samples of 10 and 10: exact p = 1/184756; the normal
        // approximation gives about 8e-5.
        let p = mann_whitney_greater(&hist(&[(5_000, 10)]), &hist(&[(1_000, 10)]));
        assert!(p < 2e-4, "{p}");
        assert_eq!(mann_whitney_greater(&hist(&[]), &a), 1.0);
        assert_eq!(
            mann_whitney_greater(&hist(&[(900, 5)]), &hist(&[(900, 5)])),
            1.0
        );
        // Fisher: 3 of 3 against 0 of 3 is 1/20; the tea-tasting table (3 of 4 vs 1 of 4) 17/70.
        assert!((fisher_greater(3, 3, 0, 3) - 0.05).abs() < 1e-9);
        assert!((fisher_greater(3, 4, 1, 4) - 17.0 / 70.0).abs() < 1e-9);
        assert!((fisher_greater(0, 10, 0, 10) - 1.0).abs() < 1e-9);
        // Large samples stay finite and small.
        let p = fisher_greater(30_000, 100_000, 100, 1_000_000);
        assert!(p.is_finite() && p < 1e-100, "{p}");
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(1.959_964) - 0.025).abs() < 1e-6);
    }

    #[test]
    fn interpolated_quantiles() {
        let f = set(0, &[(1_500, 10)]);
        // All ten in (1 ms, 2 ms]: the median half-way.
        assert_eq!(f.estimate_us(0.5, &LB), Some(1_500.0));
        assert_eq!(SetFigures::default().estimate_us(0.5, &LB), None);
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
