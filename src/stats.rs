//! Uncertainty of the rates this library reports: the Wilson score
//! interval of a binomial proportion, and the mean and spread of a figure
//! over seeds. Pure functions; evaluation code attaches them to every pass
//! rate it reports.
//!
//! ```
//! use cgpo::stats::{wilson, Spread};
//! let (lo, hi) = wilson(12, 48);
//! assert!((lo - 0.149).abs() < 1e-3 && (hi - 0.388).abs() < 1e-3);
//! assert_eq!(wilson(0, 0), (0.0, 1.0));
//! let s = Spread::of(&[0.5, 0.7, 0.6]);
//! assert!((s.mean - 0.6).abs() < 1e-12 && s.min == 0.5 && s.max == 0.7);
//! ```

use serde::{Deserialize, Serialize};

/// The normal quantile of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The 95% Wilson score interval of `successes` out of `n` trials.
/// `(0, 1)` when `n` is 0: nothing was measured.
pub fn wilson(successes: usize, n: usize) -> (f64, f64) {
    wilson_z(successes, n, Z95)
}

/// [`wilson`] at the normal quantile `z`.
pub fn wilson_z(successes: usize, n: usize, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = successes.min(n as usize) as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// Whether two intervals share no point.
pub fn disjoint(a: (f64, f64), b: (f64, f64)) -> bool {
    a.1 < b.0 || b.1 < a.0
}

/// A figure over seeds: mean, sample standard deviation (0 for one seed),
/// smallest and largest value, and how many seeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub mean: f64,
    pub sd: f64,
    pub min: f64,
    pub max: f64,
    pub seeds: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let n = values.len();
        if n == 0 {
            return Self::default();
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Self {
            mean,
            sd: var.sqrt(),
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            seeds: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_published_values_and_stays_in_the_unit_interval() {
        // Newcombe (1998), table I: 81/263 -> 0.2553 to 0.3662.
        let (lo, hi) = wilson(81, 263);
        assert!(
            (lo - 0.2553).abs() < 1e-4 && (hi - 0.3662).abs() < 1e-4,
            "{lo} {hi}"
        );
        // 0/10 and 10/10: one-sided, never outside [0, 1].
        let (lo, hi) = wilson(0, 10);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.2775).abs() < 1e-4, "{hi}");
        let (lo, hi) = wilson(10, 10);
        assert!(
            (lo - 0.7225).abs() < 1e-4 && (hi - 1.0).abs() < 1e-12,
            "{lo} {hi}"
        );
        for n in 1..40 {
            for k in 0..=n {
                let (lo, hi) = wilson(k, n);
                let p = k as f64 / n as f64;
                assert!(lo <= p + 1e-12 && p <= hi + 1e-12 && lo >= 0.0 && hi <= 1.0);
            }
        }
    }

    #[test]
    fn disjointness_and_spread() {
        assert!(disjoint((0.1, 0.2), (0.3, 0.4)));
        assert!(!disjoint((0.1, 0.3), (0.3, 0.4)));
        let s = Spread::of(&[1.0, 3.0]);
        assert_eq!((s.mean, s.min, s.max, s.seeds), (2.0, 1.0, 3.0, 2));
        assert!((s.sd - std::f64::consts::SQRT_2).abs() < 1e-12);
        assert_eq!(Spread::of(&[4.0]).sd, 0.0);
    }
}

/// The 10th, 50th and 90th percentiles of a sample, linearly interpolated
/// between order statistics (NumPy's default); all 0 for an empty sample.
///
/// ```
/// use cgpo::stats::Quantiles;
/// let q = Quantiles::of(&[4.0, 1.0, 3.0, 2.0, 5.0]);
/// assert_eq!((q.p10, q.p50, q.p90), (1.4, 3.0, 4.6));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

impl Quantiles {
    pub fn of(values: &[f64]) -> Self {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| {
            let pos = q * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Self {
            p10: at(0.1),
            p50: at(0.5),
            p90: at(0.9),
        }
    }
}

/// The pooled two-proportion z statistic of a change from rate `p0` over
/// `n0` trials to `p1` over `n1` (negative when the rate fell); 0 when
/// either side is empty or both rates are 0 or both 1.
///
/// ```
/// use cgpo::stats::two_proportion_z;
/// let z = two_proportion_z(0.4, 100, 0.2, 100);
/// assert!((z + 3.086).abs() < 1e-3, "{z}");
/// ```
pub fn two_proportion_z(p0: f64, n0: usize, p1: f64, n1: usize) -> f64 {
    if n0 == 0 || n1 == 0 {
        return 0.0;
    }
    let (a, b) = (n0 as f64, n1 as f64);
    let pooled = (p0 * a + p1 * b) / (a + b);
    let var = pooled * (1.0 - pooled) * (1.0 / a + 1.0 / b);
    if var <= 0.0 {
        return 0.0;
    }
    (p1 - p0) / var.sqrt()
}

/// Welch's t statistic of the change in mean from sample `before` to
/// sample `after` (positive when it rose); 0 when either has fewer than 2
/// values or both have no variance.
///
/// ```
/// use cgpo::stats::welch_t;
/// let t = welch_t(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
/// assert!((t - 3.674).abs() < 1e-3, "{t}");
/// ```
pub fn welch_t(before: &[f64], after: &[f64]) -> f64 {
    let moments = |v: &[f64]| {
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        (mean, var / n)
    };
    if before.len() < 2 || after.len() < 2 {
        return 0.0;
    }
    let (m0, s0) = moments(before);
    let (m1, s1) = moments(after);
    if s0 + s1 <= 0.0 {
        return 0.0;
    }
    (m1 - m0) / (s0 + s1).sqrt()
}
