//! The CPU kernels: rayon over rows, and within a row one pass over blocks
//! of `BLOCK` elements. Each block is read from memory once: its max, then
//! its sum of exp against the running max (the block is still in L1), with
//! the running sum rescaled when the max grows. Accumulation is f32 within
//! a block and f64 across blocks, whatever the input dtype; bf16 and f16
//! blocks are converted to f32 in a stack buffer.

use half::vec::HalfBitsVecExt;
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::simd;

/// Elements per block: 16 KiB of f32, well inside L1 with its converted copy.
const BLOCK: usize = 4096;

/// An input element type: f32, bf16 or f16.
pub trait Element: Copy + Send + Sync + 'static {
    /// The slice itself when it is already f32.
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]>;
    fn to_f32(src: &[Self], dst: &mut [f32]);
    fn from_f32(src: &[f32], dst: &mut [Self]);
    fn get(self) -> f32;
    fn add_f32(&mut self, v: f32);
    /// A zeroed vector, allocated zeroed (calloc) rather than written.
    fn zeroed_vec(len: usize) -> Vec<Self>;
}

impl Element for f32 {
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
    fn as_f32_mut(s: &mut [Self]) -> Option<&mut [f32]> {
        Some(s)
    }
    fn to_f32(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src)
    }
    fn from_f32(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src)
    }
    fn get(self) -> f32 {
        self
    }
    fn add_f32(&mut self, v: f32) {
        *self += v
    }
    fn zeroed_vec(len: usize) -> Vec<Self> {
        vec![0.0; len]
    }
}

macro_rules! half_element {
    ($t:ty) => {
        impl Element for $t {
            fn as_f32(_: &[Self]) -> Option<&[f32]> {
                None
            }
            fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
                None
            }
            fn to_f32(src: &[Self], dst: &mut [f32]) {
                src.convert_to_f32_slice(dst)
            }
            fn from_f32(src: &[f32], dst: &mut [Self]) {
                dst.convert_from_f32_slice(src)
            }
            fn get(self) -> f32 {
                self.to_f32()
            }
            fn add_f32(&mut self, v: f32) {
                *self = <$t>::from_f32(self.to_f32() + v)
            }
            fn zeroed_vec(len: usize) -> Vec<Self> {
                vec![0u16; len].reinterpret_into()
            }
        }
    };
}
half_element!(bf16);
half_element!(f16);

/// Calls `f` with the block as f32, converting through `buf` if needed.
#[inline]
fn with_f32<T: Element, R>(block: &[T], buf: &mut [f32; BLOCK], f: impl FnOnce(&[f32]) -> R) -> R {
    match T::as_f32(block) {
        Some(s) => f(s),
        None => {
            let b = &mut buf[..block.len()];
            T::to_f32(block, b);
            f(b)
        }
    }
}

/// A running (max, sum of exp against it) over blocks.
#[derive(Clone, Copy)]
struct Online {
    max: f32,
    sum: f64,
}

impl Online {
    fn new() -> Self {
        Self {
            max: f32::NEG_INFINITY,
            sum: 0.0,
        }
    }

    /// Raises the running max to include `block_max`; returns the factor
    /// by which sums taken against the old max must be scaled.
    fn raise(&mut self, block_max: f32) -> f64 {
        if block_max > self.max {
            let scale = if self.max == f32::NEG_INFINITY {
                0.0
            } else {
                f64::from(self.max - block_max).exp()
            };
            self.max = block_max;
            self.sum *= scale;
            scale
        } else {
            1.0
        }
    }

    fn lse(&self) -> f64 {
        f64::from(self.max) + self.sum.ln()
    }
}

/// log-sum-exp of one row.
fn row_lse<T: Element>(z: &[T]) -> f64 {
    let mut buf = [0f32; BLOCK];
    let mut acc = Online::new();
    for block in z.chunks(BLOCK) {
        with_f32(block, &mut buf, |b| {
            let bm = simd::max(b);
            if bm == f32::NEG_INFINITY {
                // All -inf adds nothing, but a NaN hidden by the max must not vanish.
                if b.iter().any(|v| v.is_nan()) {
                    acc.sum = f64::NAN;
                }
                return;
            }
            acc.raise(bm);
            acc.sum += f64::from(simd::sum_exp(b, acc.max));
        });
    }
    acc.lse()
}

/// Forward log-prob: `out` is `[N, 2]` = (log p(target), log-sum-exp) per row.
pub fn logprob_fwd<T: Element>(z: &[T], v: usize, targets: &[u32], mask: &[u8], out: &mut [f32]) {
    out.par_chunks_mut(2)
        .zip(z.par_chunks(v))
        .zip(targets.par_iter().zip(mask.par_iter()))
        .for_each(|((o, row), (&y, &live))| {
            if live == 0 {
                o.fill(0.0);
                return;
            }
            let lse = row_lse(row);
            o[0] = (f64::from(row[y as usize].get()) - lse) as f32;
            o[1] = lse as f32;
        });
}

/// Backward of `logprob_fwd` w.r.t. the logits, for upstream gradients
/// `g0` (of the log-prob) and `g1` (of the log-sum-exp):
/// `grad_v = g0 [v == y] + (g1 - g0) softmax_v`.
#[allow(clippy::too_many_arguments)]
pub fn logprob_bwd<T: Element>(
    z: &[T],
    v: usize,
    targets: &[u32],
    mask: &[u8],
    lse: &[f32],
    g0: &[f32],
    g1: &[f32],
    grad: &mut [T],
) {
    grad.par_chunks_mut(v)
        .zip(z.par_chunks(v))
        .enumerate()
        .for_each(|(i, (gr, row))| {
            if mask[i] == 0 {
                fill_zero(gr);
                return;
            }
            let c = g1[i] - g0[i];
            let mut buf = [0f32; BLOCK];
            let mut obuf = [0f32; BLOCK];
            for (gb, zb) in gr.chunks_mut(BLOCK).zip(row.chunks(BLOCK)) {
                with_f32(zb, &mut buf, |b| match T::as_f32_mut(gb) {
                    Some(g) => simd::scaled_softmax(b, lse[i], c, g),
                    None => {
                        let o = &mut obuf[..b.len()];
                        simd::scaled_softmax(b, lse[i], c, o);
                        T::from_f32(o, gb);
                    }
                });
            }
            gr[targets[i] as usize].add_f32(g0[i]);
        });
}

fn fill_zero<T: Element>(g: &mut [T]) {
    let zeros = [0f32; BLOCK];
    for b in g.chunks_mut(BLOCK) {
        T::from_f32(&zeros[..b.len()], b);
    }
}

/// Forward exact KL(p || q) per row from policy logits `zp` and reference
/// logits `zq`: `out` is `[N, 3]` = (KL, lse_p, lse_q).
pub fn kl_fwd<T: Element>(zp: &[T], zq: &[T], v: usize, mask: &[u8], out: &mut [f32]) {
    out.par_chunks_mut(3)
        .zip(zp.par_chunks(v).zip(zq.par_chunks(v)))
        .zip(mask.par_iter())
        .for_each(|((o, (rp, rq)), &live)| {
            if live == 0 {
                o.fill(0.0);
                return;
            }
            let (kl, lse_p, lse_q) = kl_row(rp, rq);
            o[0] = kl as f32;
            o[1] = lse_p as f32;
            o[2] = lse_q as f32;
        });
}

fn kl_row<T: Element>(rp: &[T], rq: &[T]) -> (f64, f64, f64) {
    let (mut bp, mut bq) = ([0f32; BLOCK], [0f32; BLOCK]);
    let (mut p, mut q) = (Online::new(), Online::new());
    // a = Σ exp(zp - max_p) ((zp - max_p) - (zq - max_q)) against the
    // running maxes; KL = a / sum_p - (ln sum_p - ln sum_q). Keeping the
    // differences shifted avoids cancellation between large logits.
    let mut a = 0f64;
    for (cp, cq) in rp.chunks(BLOCK).zip(rq.chunks(BLOCK)) {
        with_f32(cp, &mut bp, |fp| {
            with_f32(cq, &mut bq, |fq| {
                let (mp, mq) = (simd::max(fp), simd::max(fq));
                if mq > q.max {
                    // Earlier terms' (zq - max_q) shrink by the rise.
                    // (Infinite when p already had mass where q had none.)
                    if p.sum > 0.0 {
                        a += (f64::from(mq) - f64::from(q.max)) * p.sum;
                    }
                    q.raise(mq);
                } else if mq == f32::NEG_INFINITY && fq.iter().any(|x| x.is_nan()) {
                    q.sum = f64::NAN;
                }
                if mq > f32::NEG_INFINITY {
                    q.sum += f64::from(simd::sum_exp(fq, q.max));
                }
                if mp > p.max {
                    let rise = if p.max == f32::NEG_INFINITY {
                        0.0
                    } else {
                        f64::from(mp) - f64::from(p.max)
                    };
                    let sum_before = p.sum;
                    let scale = p.raise(mp);
                    a = scale * (a - rise * sum_before);
                } else if mp == f32::NEG_INFINITY && fp.iter().any(|x| x.is_nan()) {
                    p.sum = f64::NAN;
                }
                if mp > f32::NEG_INFINITY {
                    let (s, t) = simd::kl_terms(fp, fq, p.max, q.max);
                    p.sum += f64::from(s);
                    a += f64::from(t);
                }
            })
        });
    }
    let (lse_p, lse_q) = (p.lse(), q.lse());
    (a / p.sum - (p.sum.ln() - q.sum.ln()), lse_p, lse_q)
}

/// Backward of `kl_fwd` w.r.t. the policy logits, for upstream gradients
/// `g0` (of the KL) and `g1` (of lse_p):
/// `grad_v = p_v (g0 ((log p_v - log q_v) - KL) + g1)`.
#[allow(clippy::too_many_arguments)]
pub fn kl_bwd<T: Element>(
    zp: &[T],
    zq: &[T],
    v: usize,
    mask: &[u8],
    res: &[f32],
    g0: &[f32],
    g1: &[f32],
    grad: &mut [T],
) {
    grad.par_chunks_mut(v)
        .zip(zp.par_chunks(v).zip(zq.par_chunks(v)))
        .enumerate()
        .for_each(|(i, (gr, (rp, rq)))| {
            if mask[i] == 0 {
                fill_zero(gr);
                return;
            }
            let row = simd::KlRow {
                kl: res[3 * i],
                lse_p: res[3 * i + 1],
                lse_q: res[3 * i + 2],
                g0: g0[i],
                g1: g1[i],
            };
            let (mut bp, mut bq, mut obuf) = ([0f32; BLOCK], [0f32; BLOCK], [0f32; BLOCK]);
            for ((gb, cp), cq) in gr
                .chunks_mut(BLOCK)
                .zip(rp.chunks(BLOCK))
                .zip(rq.chunks(BLOCK))
            {
                with_f32(cp, &mut bp, |fp| {
                    with_f32(cq, &mut bq, |fq| match T::as_f32_mut(gb) {
                        Some(g) => simd::kl_grad(fp, fq, row, g),
                        None => {
                            let o = &mut obuf[..fp.len()];
                            simd::kl_grad(fp, fq, row, o);
                            T::from_f32(o, gb);
                        }
                    })
                });
            }
        });
}
