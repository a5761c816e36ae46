//! Fused per-token log-probs and KL (docs/algorithm.md §4 and §6): the hot
//! paths of every rollout and loss.
//!
//! - [`token_logprobs`]: `log softmax(z)[y]` per row of `[N, V]` logits.
//! - [`token_kl`]: the exact KL(p || q) per row from policy and reference
//!   logits.
//! - [`kl_estimate`]: the k1 / k2 / k3 estimators on per-token log-probs.
//!
//! Both fused ops read each logits row once (an online max / sum-exp), never
//! materialise a `[N, V]` log-softmax, accumulate in f32/f64 whatever the
//! input dtype (f32, bf16, f16), return f32, skip masked rows (output 0,
//! gradient 0), and have a backward pass w.r.t. the (policy) logits, so they
//! compose with autograd. The [`naive`] module builds the same values from
//! candle ops, as the reference for tests and benchmarks.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use cgpo::ops::{naive, token_logprobs};
//! let z = Var::new(&[[1.0f32, 2.0, 3.0], [0.0, 0.0, 5.0]], &Device::Cpu)?;
//! let y = Tensor::new(&[2u32, 0], &Device::Cpu)?;
//! let logp = token_logprobs(z.as_tensor(), &y, None)?;
//! let want = naive::token_logprobs(z.as_tensor(), &y, None)?;
//! let diff = (logp.clone() - want)?.abs()?.max(0)?.to_scalar::<f32>()?;
//! assert!(diff < 1e-6);
//! let grads = logp.sum_all()?.backward()?;
//! assert_eq!(grads.get(&z).unwrap().dims(), &[2, 3]);
//! # Ok::<(), cgpo::Error>(())
//! ```

#[cfg(feature = "candle-cuda")]
mod candle_cuda;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod naive;
mod op;
pub mod simd;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Per-token KL estimators; p = policy, q = reference. Configs also take
/// the names verl gives them: `kl` (k1), `mse` (k2) and `low_var_kl` (k3);
/// `exact` is another name for `full`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlEstimator {
    /// log p - log q
    #[serde(alias = "kl")]
    K1,
    /// (log p - log q)^2 / 2
    #[serde(alias = "mse")]
    K2,
    /// exp(log q - log p) - (log q - log p) - 1, clamped to [-10, 10]
    #[default]
    #[serde(alias = "low_var_kl")]
    K3,
    /// |log p - log q|
    Abs,
    /// Exact over the vocabulary, from both logits rows.
    #[serde(alias = "exact")]
    Full,
}

/// `0 * Σ t` as a scalar f32: zero, with a (zero) gradient for everything
/// `t` depends on. (Multiplying by the number 0 would not do: candle's
/// backward prunes `affine` with a zero factor, and the variables would get
/// no gradient at all.)
pub(crate) fn connected_zero(t: &Tensor) -> Result<Tensor> {
    let sum = t.sum_all()?.to_dtype(DType::F32)?;
    let zero = Tensor::zeros((), DType::F32, t.device())?;
    Ok((sum * zero)?)
}

fn op_error(op: &'static str, message: impl Into<String>) -> Error {
    Error::Op {
        op,
        message: message.into(),
    }
}

/// Checks the logits and returns (N, V), with the logits made contiguous.
fn logits_2d(op: &'static str, logits: &Tensor) -> Result<(Tensor, usize, usize)> {
    let (n, v) = logits.dims2().map_err(|_| {
        op_error(
            op,
            format!("logits must be [N, V], got {:?}", logits.dims()),
        )
    })?;
    if !matches!(logits.dtype(), DType::F32 | DType::BF16 | DType::F16) {
        return Err(op_error(
            op,
            format!("logits must be f32, bf16 or f16, got {:?}", logits.dtype()),
        ));
    }
    if v == 0 {
        return Err(op_error(op, "the vocabulary is empty"));
    }
    Ok((logits.contiguous()?, n, v))
}

/// The mask as one byte per row (non-zero = keep); all rows when `None`.
fn mask_bytes(op: &'static str, mask: Option<&Tensor>, n: usize) -> Result<Vec<u8>> {
    let Some(mask) = mask else {
        return Ok(vec![1; n]);
    };
    if mask.dims() != [n] {
        return Err(op_error(
            op,
            format!("the mask must be [{n}], got {:?}", mask.dims()),
        ));
    }
    let m = mask.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(m.into_iter().map(|x| u8::from(x != 0.0)).collect())
}

/// `[N]` integer targets as contiguous u32.
fn u32_targets(op: &'static str, targets: &Tensor, n: usize) -> Result<Tensor> {
    if targets.dims() != [n] {
        return Err(op_error(
            op,
            format!("targets must be [{n}], got {:?}", targets.dims()),
        ));
    }
    Ok(match targets.dtype() {
        DType::U32 => targets.contiguous()?,
        DType::U8 | DType::I64 | DType::I32 | DType::I16 => {
            let t = targets.to_dtype(DType::I64)?.to_vec1::<i64>()?;
            if let Some((i, y)) = t
                .iter()
                .enumerate()
                .find(|(_, &y)| !(0..=i64::from(u32::MAX)).contains(&y))
            {
                return Err(op_error(
                    op,
                    format!("target id {y} at row {i} is negative or too large"),
                ));
            }
            Tensor::new(
                t.into_iter().map(|y| y as u32).collect::<Vec<_>>(),
                targets.device(),
            )?
        }
        other => {
            return Err(op_error(
                op,
                format!("targets must be integers, got {other:?}"),
            ))
        }
    })
}

/// The fused ops run on the CPU and, with the `candle-cuda` feature, on
/// CUDA devices.
fn supported_device(op: &'static str, t: &Tensor) -> Result<()> {
    match t.device() {
        Device::Cpu => Ok(()),
        #[cfg(feature = "candle-cuda")]
        Device::Cuda(_) => Ok(()),
        other => Err(op_error(
            op,
            format!("tensors on {other:?} are not supported by this build's fused ops; CUDA tensors need the `candle-cuda` feature (scripts/build-cuda.sh)"),
        )),
    }
}

/// Keeps memory the process frees in the C heap for reuse instead of
/// returning it to the kernel (glibc on Linux: `M_MMAP_MAX = 0` and an
/// unbounded `M_TRIM_THRESHOLD`); returns whether the allocator accepted
/// both settings, `false` elsewhere.
///
/// By default glibc serves every allocation above a few MB with a fresh
/// `mmap` and unmaps it when freed, so each `[N, V]` temporary (a gradient,
/// candle's autograd accumulator) pays one page fault per 4 KiB page on its
/// first write: at N = 1,024, V = 49,152 that is about 50,000 faults per
/// tensor, more time than the fused kernels take. With this setting the
/// freed pages are reused. It is process-wide and the heap never shrinks,
/// so call it once at the start of a training process that owns the
/// machine, not from a library. Measured effect: docs/performance.md.
pub fn retain_freed_host_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; it is safe to
        // call at any time, and later allocations follow the new settings.
        unsafe {
            libc::mallopt(libc::M_MMAP_MAX, 0) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// On a CUDA device, keeps freed memory cached in the device's memory pool
/// ([`cuda::retain_freed_memory`]); a no-op on the CPU. Without it every
/// `[N, V]` gradient and autograd temporary is mapped afresh after each
/// synchronisation.
pub fn retain_freed_device_memory(device: &Device) -> Result<()> {
    match device {
        #[cfg(feature = "candle-cuda")]
        Device::Cuda(d) => cuda::retain_freed_memory(&d.cuda_stream())
            .map_err(|e| op_error("retain_freed_device_memory", e.to_string())),
        _ => Ok(()),
    }
}

/// Log-probability of each row's target: `z[i, y_i] - logsumexp(z[i])`,
/// `[N, V]` logits (f32 / bf16 / f16) and `[N]` integer targets -> `[N]` f32.
/// Masked rows (mask 0) give 0 and no gradient. Differentiable w.r.t. the
/// logits.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    const OP: &str = "token_logprobs";
    let (logits, n, _) = logits_2d(OP, logits)?;
    supported_device(OP, &logits)?;
    let targets = u32_targets(OP, targets, n)?;
    let mask = mask_bytes(OP, mask, n)?;
    let out = logits.apply_op2(&targets, op::LogProbFwd { mask })?;
    Ok(out.get(0)?)
}

/// The log-probs and, in the same call and outside autograd, the gradient
/// of `Σ_i g_i logp_i` w.r.t. the logits (`g` = `grad_out`, `[N]`): for
/// hand-written backward passes, and to time the fused kernels without the
/// autograd engine's gradient accumulation.
pub fn token_logprobs_and_grad(
    logits: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
    grad_out: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "token_logprobs_and_grad";
    let (logits, n, _) = logits_2d(OP, logits)?;
    if grad_out.dims() != [n] {
        return Err(op_error(
            OP,
            format!("grad_out must be [{n}], got {:?}", grad_out.dims()),
        ));
    }
    let targets = u32_targets(OP, targets, n)?;
    let mask = mask_bytes(OP, mask, n)?;
    supported_device(OP, &logits)?;
    let res = logits.apply_op2_no_bwd(&targets, &op::LogProbFwd { mask: mask.clone() })?;
    let grad_out = grad_out.to_device(logits.device())?;
    let no_lse_grad = Tensor::zeros(n, DType::F32, logits.device())?;
    let bwd = op::LogProbBwd::new(&targets, mask, &res, &grad_out, &no_lse_grad)?;
    let grad = logits.apply_op1_no_bwd(&bwd)?;
    Ok((res.get(0)?, grad))
}

/// The exact KL(p || q) = Σ_v p_v (log p_v - log q_v) per row, from policy
/// logits (p) and reference logits (q) of the same shape and dtype -> `[N]`
/// f32. The gradient flows to the policy logits only.
pub fn token_kl(
    policy_logits: &Tensor,
    ref_logits: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    const OP: &str = "token_kl";
    let (zp, n, _) = logits_2d(OP, policy_logits)?;
    let (zq, _, _) = logits_2d(OP, ref_logits)?;
    if zp.dims() != zq.dims() || zp.dtype() != zq.dtype() {
        return Err(op_error(
            OP,
            format!(
                "policy logits are {:?} {:?} but reference logits are {:?} {:?}",
                zp.dims(),
                zp.dtype(),
                zq.dims(),
                zq.dtype()
            ),
        ));
    }
    supported_device(OP, &zp)?;
    let mask = mask_bytes(OP, mask, n)?;
    let out = zp.apply_op2(&zq.detach(), op::KlFwd { mask })?;
    Ok(out.get(0)?)
}

/// Per-token KL estimates from the log-probs of the sampled tokens under the
/// policy (`logp`) and the reference (`logq`), elementwise:
/// k1 = logp - logq; k2 = (logp - logq)^2 / 2;
/// k3 = exp(logq - logp) - (logq - logp) - 1 with the log-ratio clamped to
/// ±20 and k3 to ±10 (as peers do); abs = |logp - logq|. `Full` needs
/// logits: use [`token_kl`].
pub fn kl_estimate(logp: &Tensor, logq: &Tensor, estimator: KlEstimator) -> Result<Tensor> {
    let d = (logp - logq)?;
    Ok(match estimator {
        KlEstimator::K1 => d,
        KlEstimator::K2 => (d.sqr()? * 0.5)?,
        // relu(d) + relu(-d): |d| with gradient 0 at d = 0 (candle's `abs`
        // has gradient 1 there, which would push every token at step 0).
        KlEstimator::Abs => (d.relu()? + d.neg()?.relu()?)?,
        KlEstimator::K3 => {
            let r = d.neg()?.clamp(-20f32, 20f32)?;
            ((r.exp()? - r)? - 1.0)?.clamp(-10f32, 10f32)?
        }
        KlEstimator::Full => {
            return Err(op_error(
                "kl_estimate",
                "the `full` estimator needs both logits rows: use token_kl",
            ))
        }
    })
}

#[cfg(test)]
mod tests;
