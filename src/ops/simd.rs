//! Vectorised inner loops over one block of a logits row (f32): max,
//! sum of exp, the KL terms, and the two gradient rows.
//!
//! x86-64 with AVX2 and FMA uses 8-wide loops with a polynomial `exp`
//! (Cephes-style range reduction, about 1 ulp on the range used here);
//! everything else, and the tails, use scalar loops with `f32::exp`. The
//! choice is made once at run time (`is_x86_feature_detected!`), so the
//! binary needs no `-C target-cpu=native`. Inputs to `exp` here are
//! always `<= 0` (logits minus a row max or a log-sum-exp); arguments below
//! ln(f32::MIN_POSITIVE) give exactly 0, and NaN stays NaN.

use std::sync::OnceLock;

fn use_avx2() -> bool {
    static AVX2: OnceLock<bool> = OnceLock::new();
    *AVX2.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// Which path the kernels take on this machine, for benchmark reports.
pub fn path_name() -> &'static str {
    if use_avx2() {
        "avx2+fma"
    } else {
        "scalar"
    }
}

/// Scalar `exp` with the same underflow rule as the vector one.
#[inline]
fn exp0(x: f32) -> f32 {
    if x < MIN_ARG {
        0.0
    } else {
        x.exp()
    }
}

/// ln(f32::MIN_POSITIVE): below it the result would be subnormal.
const MIN_ARG: f32 = -87.336_55;

/// The largest element (NaN-ignoring, like `f32::max`); `-inf` when empty.
pub fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: the CPU supports AVX2 and FMA (checked above).
        return unsafe { avx2::max(x) };
    }
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Σ exp(x - m).
pub fn sum_exp(x: &[f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: as in `max`.
        return unsafe { avx2::sum_exp(x, m) };
    }
    x.iter().map(|&v| exp0(v - m)).sum()
}

/// (Σ e_v, Σ e_v ((p_v - mp) - (q_v - mq))) with e_v = exp(p_v - mp); a
/// term whose e_v is 0 contributes 0 even where the difference is not
/// finite. Differences are taken after the shifts so that large logits do
/// not cancel catastrophically.
pub fn kl_terms(p: &[f32], q: &[f32], mp: f32, mq: f32) -> (f32, f32) {
    debug_assert_eq!(p.len(), q.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: as in `max`.
        return unsafe { avx2::kl_terms(p, q, mp, mq) };
    }
    scalar_kl_terms(p, q, mp, mq)
}

fn scalar_kl_terms(p: &[f32], q: &[f32], mp: f32, mq: f32) -> (f32, f32) {
    let (mut s, mut a) = (0.0f32, 0.0f32);
    for (&pv, &qv) in p.iter().zip(q) {
        let x = pv - mp;
        let e = exp0(x);
        s += e;
        if e != 0.0 {
            a += e * (x - (qv - mq));
        }
    }
    (s, a)
}

/// out_v = c * exp(z_v - lse): the softmax part of the log-prob gradient.
pub fn scaled_softmax(z: &[f32], lse: f32, c: f32, out: &mut [f32]) {
    debug_assert_eq!(z.len(), out.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: as in `max`.
        return unsafe { avx2::scaled_softmax(z, lse, c, out) };
    }
    for (o, &v) in out.iter_mut().zip(z) {
        *o = c * exp0(v - lse);
    }
}

/// The constants of one row's KL gradient.
#[derive(Clone, Copy)]
pub struct KlRow {
    pub lse_p: f32,
    pub lse_q: f32,
    pub kl: f32,
    /// Upstream gradient of the KL.
    pub g0: f32,
    /// Upstream gradient of lse_p.
    pub g1: f32,
}

/// out_v = p_v (g0 ((log p_v - log q_v) - KL) + g1), with
/// log p_v = zp_v - lse_p, p_v = exp(log p_v), and 0 where p_v is 0: the KL
/// gradient w.r.t. the policy logits.
pub fn kl_grad(zp: &[f32], zq: &[f32], r: KlRow, out: &mut [f32]) {
    debug_assert!(zp.len() == zq.len() && zp.len() == out.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: as in `max`.
        return unsafe { avx2::kl_grad(zp, zq, r, out) };
    }
    scalar_kl_grad(zp, zq, r, out)
}

fn scalar_kl_grad(zp: &[f32], zq: &[f32], r: KlRow, out: &mut [f32]) {
    for ((o, &p), &q) in out.iter_mut().zip(zp).zip(zq) {
        let lp = p - r.lse_p;
        let e = exp0(lp);
        *o = if e == 0.0 {
            0.0
        } else {
            e * (r.g0 * (lp - (q - r.lse_q) - r.kl) + r.g1)
        };
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{exp0, MIN_ARG};

    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n * LN2_HI is exact for the n that occur here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Minimax coefficients of (e^r - 1 - r) / r^2 on [-ln2/2, ln2/2].
    const P: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        0.5,
    ];

    /// e^x for x <= 0; exactly 0 below MIN_ARG; NaN stays NaN.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn exp8(x: __m256) -> __m256 {
        let underflow = _mm256_cmp_ps(x, _mm256_set1_ps(MIN_ARG), _CMP_LT_OQ);
        // max(c, x) returns x when x is NaN, so NaN propagates.
        let xc = _mm256_max_ps(_mm256_set1_ps(MIN_ARG), x);
        let n = _mm256_round_ps(
            _mm256_mul_ps(xc, _mm256_set1_ps(LOG2E)),
            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), xc);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for &c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let p = _mm256_fmadd_ps(p, r2, _mm256_add_ps(r, _mm256_set1_ps(1.0)));
        let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_andnot_ps(underflow, _mm256_mul_ps(p, _mm256_castsi256_ps(pow2)))
    }

    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
        _mm_cvtss_f32(s)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn max(x: &[f32]) -> f32 {
        let mut acc = _mm256_set1_ps(f32::NEG_INFINITY);
        let chunks = x.chunks_exact(8);
        let tail = chunks.remainder();
        for c in chunks {
            acc = _mm256_max_ps(acc, _mm256_loadu_ps(c.as_ptr()));
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        lanes
            .iter()
            .chain(tail)
            .copied()
            .fold(f32::NEG_INFINITY, f32::max)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sum_exp(x: &[f32], m: f32) -> f32 {
        let mv = _mm256_set1_ps(m);
        // Two accumulators hide the add latency.
        let (mut a0, mut a1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let pairs = x.chunks_exact(16);
        let rest = pairs.remainder();
        for c in pairs {
            a0 = _mm256_add_ps(a0, exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv)));
            a1 = _mm256_add_ps(
                a1,
                exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr().add(8)), mv)),
            );
        }
        let singles = rest.chunks_exact(8);
        let tail = singles.remainder();
        for c in singles {
            a0 = _mm256_add_ps(a0, exp8(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv)));
        }
        hsum(_mm256_add_ps(a0, a1)) + tail.iter().map(|&v| exp0(v - m)).sum::<f32>()
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kl_terms(p: &[f32], q: &[f32], mp: f32, mq: f32) -> (f32, f32) {
        let (mv, mqv) = (_mm256_set1_ps(mp), _mm256_set1_ps(mq));
        let zero = _mm256_setzero_ps();
        let (mut s, mut a) = (zero, zero);
        let n8 = p.len() / 8 * 8;
        let mut i = 0;
        while i < n8 {
            let pv = _mm256_loadu_ps(p.as_ptr().add(i));
            let qv = _mm256_loadu_ps(q.as_ptr().add(i));
            let x = _mm256_sub_ps(pv, mv);
            let e = exp8(x);
            s = _mm256_add_ps(s, e);
            let term = _mm256_mul_ps(e, _mm256_sub_ps(x, _mm256_sub_ps(qv, mqv)));
            let live = _mm256_cmp_ps(e, zero, _CMP_NEQ_UQ);
            a = _mm256_add_ps(a, _mm256_and_ps(live, term));
            i += 8;
        }
        let (ts, ta) = super::scalar_kl_terms(&p[n8..], &q[n8..], mp, mq);
        (hsum(s) + ts, hsum(a) + ta)
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn scaled_softmax(z: &[f32], lse: f32, c: f32, out: &mut [f32]) {
        let (lv, cv) = (_mm256_set1_ps(lse), _mm256_set1_ps(c));
        let n8 = z.len() / 8 * 8;
        let mut i = 0;
        while i < n8 {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(z.as_ptr().add(i)), lv));
            _mm256_storeu_ps(out.as_mut_ptr().add(i), _mm256_mul_ps(cv, e));
            i += 8;
        }
        for (o, &v) in out[n8..].iter_mut().zip(&z[n8..]) {
            *o = c * exp0(v - lse);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn kl_grad(zp: &[f32], zq: &[f32], r: super::KlRow, out: &mut [f32]) {
        let (lpv, lqv, klv) = (
            _mm256_set1_ps(r.lse_p),
            _mm256_set1_ps(r.lse_q),
            _mm256_set1_ps(r.kl),
        );
        let (g0v, g1v, zero) = (
            _mm256_set1_ps(r.g0),
            _mm256_set1_ps(r.g1),
            _mm256_setzero_ps(),
        );
        let n8 = zp.len() / 8 * 8;
        let mut i = 0;
        while i < n8 {
            let p = _mm256_loadu_ps(zp.as_ptr().add(i));
            let q = _mm256_loadu_ps(zq.as_ptr().add(i));
            let lp = _mm256_sub_ps(p, lpv);
            let e = exp8(lp);
            let d = _mm256_sub_ps(_mm256_sub_ps(lp, _mm256_sub_ps(q, lqv)), klv);
            let t = _mm256_fmadd_ps(g0v, d, g1v);
            let live = _mm256_cmp_ps(e, zero, _CMP_NEQ_UQ);
            _mm256_storeu_ps(
                out.as_mut_ptr().add(i),
                _mm256_and_ps(live, _mm256_mul_ps(e, t)),
            );
            i += 8;
        }
        super::scalar_kl_grad(&zp[n8..], &zq[n8..], r, &mut out[n8..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vector_exp_matches_std_within_two_ulp() {
        let xs: Vec<f32> = (0..20_000).map(|i| -(i as f32) * 0.0045).collect();
        let mut out = vec![0.0; xs.len()];
        scaled_softmax(&xs, 0.0, 1.0, &mut out);
        for (&x, &y) in xs.iter().zip(&out) {
            let want = exp0(x);
            let ulp = (want.to_bits() as i64 - y.to_bits() as i64).abs();
            assert!(ulp <= 2, "exp({x}) = {y}, want {want} ({ulp} ulp)");
        }
    }

    #[test]
    fn underflow_is_zero_and_nan_stays_nan() {
        let xs = [
            -1e4f32,
            f32::NEG_INFINITY,
            -88.0,
            -87.0,
            f32::NAN,
            0.0,
            -1.0,
            -2.0,
            -3.0,
        ];
        let mut out = [0.0f32; 9];
        scaled_softmax(&xs, 0.0, 1.0, &mut out);
        assert_eq!(&out[..3], &[0.0, 0.0, 0.0]);
        assert!(out[3] > 0.0 && out[4].is_nan() && out[5] == 1.0);
        assert_eq!(max(&[1.0, 5.0, -2.0, 3.0, 4.0, 0.0, 1.0, 2.0, 7.0]), 7.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn kl_terms_ignore_dead_entries() {
        let p = [
            0.0f32,
            f32::NEG_INFINITY,
            1.0,
            -1.0,
            0.5,
            0.0,
            0.0,
            0.0,
            2.0,
            -3.0,
        ];
        let q = [
            0.5f32,
            f32::NEG_INFINITY,
            0.0,
            -1.0,
            0.5,
            1.0,
            0.0,
            0.0,
            2.0,
            1.0,
        ];
        let (s, a) = kl_terms(&p, &q, 2.0, 1.0);
        let (ws, wa) = scalar_kl_terms(&p, &q, 2.0, 1.0);
        assert!(
            (s - ws).abs() < 1e-6 && (a - wa).abs() < 1e-6,
            "{s} {a} vs {ws} {wa}"
        );
        assert!(a.is_finite());
    }
}
