//! The reference versions of the fused ops, composed from candle ops (they
//! materialise the `[N, V]` log-softmax). Used by the tests and as the
//! "composed candle ops" line of the benchmarks.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! let z = Tensor::new(&[[0f32, 0.0]], &Device::Cpu)?;
//! let kl = cgpo::ops::naive::token_kl(&z, &z, None)?;
//! assert_eq!(kl.to_vec1::<f32>()?, [0.0]);
//! # Ok::<(), cgpo::Error>(())
//! ```

use candle_core::{DType, Tensor, D};

use crate::error::Result;

/// log-softmax over the last dimension, in f32.
pub fn log_softmax(logits: &Tensor) -> Result<Tensor> {
    let z = logits.to_dtype(DType::F32)?;
    let m = z.max_keepdim(D::Minus1)?.detach();
    let shifted = z.broadcast_sub(&m)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?)
}

fn apply_mask(x: Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    Ok(match mask {
        Some(m) => (x * m.to_dtype(DType::F32)?.ne(0f32)?.to_dtype(DType::F32)?)?,
        None => x,
    })
}

/// `log_softmax(z).gather(y)`.
pub fn token_logprobs(logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
    let lp = log_softmax(logits)?;
    let y = targets.to_dtype(DType::U32)?.unsqueeze(1)?;
    apply_mask(lp.gather(&y, 1)?.squeeze(1)?, mask)
}

/// `Σ_v softmax(zp) (log_softmax(zp) - log_softmax(zq))`.
pub fn token_kl(
    policy_logits: &Tensor,
    ref_logits: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    let lp = log_softmax(policy_logits)?;
    let lq = log_softmax(&ref_logits.detach())?;
    let kl = (lp.exp()? * (lp - lq)?)?.sum(D::Minus1)?;
    apply_mask(kl, mask)
}
