//! Backend selection: pure functions of (weights, loads, eligibility, randomness).
//!
//! Nothing here reads a clock or does IO; the caller passes the elapsed time and the random
//! numbers, so every choice is unit-testable.

use std::time::Duration;

/// Fraction (per mille) of its weight a backend gets at the very start of its slow-start ramp.
const RAMP_START_PERMILLE: u64 = 100;

/// A backend's effective weight `elapsed` after it became ready: a linear ramp from ~10% to 100%
/// of `base` over `ramp`. Never 0 for a non-zero base, so a fresh backend still gets some traffic.
pub fn slow_start_weight(base: u32, elapsed: Duration, ramp: Duration) -> u64 {
    let base = u64::from(base);
    if base == 0 {
        return 0;
    }
    if ramp.is_zero() || elapsed >= ramp {
        return base;
    }
    let frac = elapsed.as_micros() * 1000 / ramp.as_micros().max(1); // 0..1000
    let permille = RAMP_START_PERMILLE + (1000 - RAMP_START_PERMILLE) * frac as u64 / 1000;
    (base * permille / 1000).max(1)
}

/// Smooth weighted round-robin (nginx's algorithm): every eligible backend gains its weight,
/// the one with the highest `current` wins and loses the sum of the eligible weights.
/// Ties go to the lowest index. Backends with weight 0 or not `eligible` are skipped and keep
/// their `current` value. Returns `None` when nothing is eligible.
pub fn swrr(
    current: &mut [i64],
    weights: &[u64],
    eligible: impl Fn(usize) -> bool,
) -> Option<usize> {
    debug_assert_eq!(current.len(), weights.len());
    let mut total: i64 = 0;
    let mut best: Option<usize> = None;
    for i in 0..weights.len() {
        if weights[i] == 0 || !eligible(i) {
            continue;
        }
        let w = weights[i] as i64;
        current[i] += w;
        total += w;
        match best {
            Some(b) if current[b] >= current[i] => {}
            _ => best = Some(i),
        }
    }
    if let Some(b) = best {
        current[b] -= total;
    }
    best
}

/// Power of two choices for least-request: of two distinct random eligible candidates, the one
/// with fewer in-flight requests per unit of weight wins (ties: the first).
///
/// `r1` and `r2` are random numbers; `candidates` are indexes of eligible backends.
pub fn p2c(
    candidates: &[usize],
    load: impl Fn(usize) -> (u64, u64),
    r1: u64,
    r2: u64,
) -> Option<usize> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        n => {
            let a = (r1 % n as u64) as usize;
            let mut b = (r2 % (n as u64 - 1)) as usize;
            if b >= a {
                b += 1;
            }
            let (a, b) = (candidates[a], candidates[b]);
            let (la, wa) = load(a);
            let (lb, wb) = load(b);
            // la / wa <= lb / wb, without division (weights are non-zero for candidates).
            if u128::from(la) * u128::from(wb.max(1)) <= u128::from(lb) * u128::from(wa.max(1)) {
                Some(a)
            } else {
                Some(b)
            }
        }
    }
}

/// HTTP methods that RFC 9110 §9.2.2 calls idempotent: only these are retried on another
/// backend after the request reached one.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sequence(weights: &[u64], n: usize) -> String {
        let mut current = vec![0; weights.len()];
        (0..n)
            .map(|_| match swrr(&mut current, weights, |_| true) {
                Some(i) => (b'a' + i as u8) as char,
                None => '-',
            })
            .collect()
    }

    #[test]
    fn swrr_sequences() {
        let table: &[(&[u64], usize, &str)] = &[
            (&[5, 1, 1], 14, "aabacaaaabacaa"),
            (&[1, 1, 1], 6, "abcabc"),
            (&[2, 1], 6, "abaaba"),
            (&[0, 3], 3, "bbb"),
            (&[0, 0], 2, "--"),
            (&[], 1, "-"),
        ];
        for (weights, n, want) in table {
            assert_eq!(sequence(weights, *n), *want, "weights {weights:?}");
        }
    }

    #[test]
    fn swrr_skips_ineligible_and_keeps_their_state() {
        let weights = [5, 1, 1];
        let mut current = vec![0; 3];
        let picks: Vec<_> = (0..4)
            .map(|_| swrr(&mut current, &weights, |i| i != 0))
            .collect();
        assert_eq!(picks, vec![Some(1), Some(2), Some(1), Some(2)]);
        assert_eq!(current[0], 0);
        assert_eq!(swrr(&mut current, &weights, |_| false), None);
    }

    #[test]
    fn slow_start_ramp() {
        let ramp = Duration::from_secs(30);
        let table = [
            (100, 0, 10),
            (100, 15, 55),
            (100, 30, 100),
            (100, 300, 100),
            (1, 0, 1),
            (0, 100, 0),
        ];
        for (base, secs, want) in table {
            assert_eq!(
                slow_start_weight(base, Duration::from_secs(secs), ramp),
                want,
                "base {base} at {secs}s"
            );
        }
        assert_eq!(slow_start_weight(100, Duration::ZERO, Duration::ZERO), 100);
    }

    #[test]
    fn p2c_prefers_less_loaded_per_weight() {
        let loads = [(10u64, 100u64), (2, 100), (4, 400)];
        let load = |i: usize| loads[i];
        // Every pair of distinct candidates, both orders.
        for r1 in 0..3 {
            for r2 in 0..2 {
                let got = p2c(&[0, 1, 2], load, r1, r2).expect("a candidate");
                let a = r1 as usize;
                let b = if (r2 as usize) >= a {
                    r2 as usize + 1
                } else {
                    r2 as usize
                };
                assert_ne!(a, b);
                let want = if loads[a].0 * loads[b].1 <= loads[b].0 * loads[a].1 {
                    a
                } else {
                    b
                };
                assert_eq!(got, want);
            }
        }
        // Index 0 is the most loaded: it never wins against another.
        assert_eq!(p2c(&[0, 1], load, 0, 0), Some(1));
        assert_eq!(p2c(&[7], load, 5, 5), Some(7));
        assert_eq!(p2c(&[], load, 5, 5), None);
    }

    #[test]
    fn idempotent_methods() {
        for m in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
            assert!(is_idempotent(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get"] {
            assert!(!is_idempotent(m), "{m}");
        }
    }
}
