//! Unconstrained policy gradient, "PPO-like" without a critic (docs/algorithm.md
//! §5, the baseline CGPO is compared with). One reward (raw or
//! calibrated), no judges, a batch-mean baseline, the advantage of each
//! sequence broadcast to its tokens:
//!
//! ```text
//! A_i   = r_i - mean_j r_j
//! loss  = -(1/N) Σ_i seqlogp_w(a_i) A_i                          (no clipping: REINFORCE)
//! ratio = exp(logp_w(a_t) - logp_old(a_t))
//! loss  = -(1/T) Σ_i Σ_t min(ratio A_i, clip(ratio, 1-eps, 1+eps) A_i)   (clip_ratio = eps)
//! ```
//!
//! with T the number of response tokens in the minibatch. The clipped form
//! is the one to use over several epochs on the same rollouts (the trainer
//! reads `epochs` from the config); on the first pass ratio = 1 and both
//! forms have the same gradient up to the token weighting. The per-token KL
//! penalty is added by the trainer ([`crate::kl`]).

use candle_core::Tensor;

use super::crpg::advantages;
use super::loss::{Settings, TaskLoss};
use super::PgBaseline;
use super::{host_tensor, mean, LossInputs, LossOutput};
use crate::error::check_config;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// The policy-gradient baseline's settings (`{"name": "pg", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pg {
    /// The one reward it optimizes: `raw` (default) or `calibrated`.
    pub reward: RewardKind,
    /// eps of the clipped-ratio objective, in (0, 1); absent = plain
    /// REINFORCE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_ratio: Option<f64>,
    /// Gradient passes over the same rollouts.
    pub epochs: usize,
}

impl Default for Pg {
    fn default() -> Self {
        Self {
            reward: RewardKind::Raw,
            clip_ratio: None,
            epochs: 1,
        }
    }
}

impl TaskLoss for Pg {
    fn name(&self) -> &str {
        "pg"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        pg_loss(inputs, self.reward, self.clip_ratio)
    }

    fn epochs(&self) -> usize {
        self.epochs
    }
}

impl Settings for Pg {
    fn check(&self) -> Result<()> {
        if let Some(eps) = self.clip_ratio {
            check_config("clip_ratio", eps, "in (0, 1)", |v| v > 0.0 && v < 1.0)?;
        }
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be >= 1"));
        }
        Ok(())
    }
}

/// Which reward the unconstrained policy-gradient baseline optimizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// The reward model's raw score r.
    #[default]
    Raw,
    /// The calibrated reward sigmoid(r - r(a_bar)).
    Calibrated,
}

/// The reward the baseline optimizes.
pub fn pg_rewards(inputs: &LossInputs, reward: RewardKind) -> &[f64] {
    match reward {
        RewardKind::Raw => &inputs.raw,
        RewardKind::Calibrated => &inputs.calibrated,
    }
}

/// The policy-gradient loss of one task's minibatch (judges ignored);
/// `clip_ratio = Some(eps)` for the clipped-ratio objective.
pub fn pg_loss(
    inputs: &LossInputs,
    reward: RewardKind,
    clip_ratio: Option<f64>,
) -> Result<LossOutput> {
    inputs.validate()?;
    let rewards = pg_rewards(inputs, reward);
    let adv = advantages(inputs, rewards, PgBaseline::Batch);
    let mut stats = vec![
        ("samples", inputs.len() as f64),
        ("mean_reward", mean(rewards.iter().copied())),
        ("mean_abs_advantage", mean(adv.iter().map(|a| a.abs()))),
    ];
    let tokens: usize = inputs.lengths.iter().sum();
    let loss = match clip_ratio {
        _ if inputs.is_empty() || tokens == 0 => inputs.zero_loss()?,
        None => {
            let n = inputs.len() as f64;
            let weights: Vec<f64> = adv.iter().map(|a| -a / n).collect();
            inputs.weighted_seq_logp(&weights)?
        }
        Some(eps) => {
            let (loss, clipped) = clipped_objective(inputs, &adv, eps, tokens)?;
            stats.push(("clip_fraction", clipped));
            loss
        }
    };
    Ok(LossOutput { loss, stats })
}

/// `-(1/T) Σ mask * min(ratio A, clip(ratio, 1-eps, 1+eps) A)` and the
/// fraction of response tokens whose ratio is outside the clip range.
fn clipped_objective(
    inputs: &LossInputs,
    adv: &[f64],
    eps: f64,
    tokens: usize,
) -> Result<(Tensor, f64)> {
    let a = host_tensor(adv, &inputs.token_logp)?.unsqueeze(1)?;
    let ratio = (&inputs.token_logp - inputs.token_logp_old.detach())?.exp()?;
    let unclipped = ratio.broadcast_mul(&a)?;
    let clipped = ratio
        .clamp(1.0 - eps as f32, 1.0 + eps as f32)?
        .broadcast_mul(&a)?;
    let objective = (unclipped.minimum(&clipped)? * &inputs.mask)?;
    let loss = (objective.sum_all()? * (-1.0 / tokens as f64))?;
    let outside = ratio
        .detach()
        .flatten_all()?
        .to_vec1::<f32>()?
        .iter()
        .zip(inputs.mask.flatten_all()?.to_vec1::<f32>()?)
        .filter(|&(&r, m)| m != 0.0 && (f64::from(r) - 1.0).abs() > eps)
        .count();
    Ok((loss, outside as f64 / tokens as f64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};
    use candle_core::{Device, Var};

    #[test]
    fn reinforce_by_hand() {
        let case = Case::new(&[0, 0, 1, 1])
            .raw(&[1.0, 0.0, 3.0, 0.0])
            .calibrated(&[0.5, 0.2, 0.9, 0.2])
            .positive(&[false, true, false, true])
            .seq(&[-1.0, -2.0, -3.0, -4.0]);
        let (var, inputs) = case.build();
        // Raw: mean 1, A = [0, -1, 2, -1]; judges ignored.
        // loss = -(1/4)(0 + 2 - 6 + 4) = 0.
        let out = pg_loss(&inputs, RewardKind::Raw, None).unwrap();
        assert!(value(&out.loss).abs() < 1e-6);
        assert_close(&grad_of(&var, &out.loss), &[0.0, 0.25, -0.5, 0.25], 1e-6);
        // Calibrated: mean 0.45, A = [0.05, -0.25, 0.45, -0.25].
        let out = pg_loss(&inputs, RewardKind::Calibrated, None).unwrap();
        assert_close(
            &grad_of(&var, &out.loss),
            &[-0.05 / 4.0, 0.25 / 4.0, -0.45 / 4.0, 0.25 / 4.0],
            1e-6,
        );
        assert_eq!(out.stat("clip_fraction"), None);
    }

    #[test]
    fn clipped_ratio_by_hand() {
        // Three samples of two tokens (the last has one); raw = [1, -1, 0]
        // so A = [1, -1, 0]; eps = 0.2; token_logp - token_logp_old:
        //   sample 0: [0.1, 0.5]  -> ratios 1.105 (inside), 1.649 (A > 0: clipped to 1.2)
        //   sample 1: [-0.5, 0.3] -> ratios 0.607 (A < 0: min(-0.607, -0.8) = -0.8, clipped),
        //                            1.350 (A < 0: min(-1.350, -1.2) = -1.350, unclipped)
        //   sample 2: [0.05, pad] -> inside, A = 0.
        // T = 5 tokens.
        let dev = Device::Cpu;
        let (_, mut inputs) = Case::new(&[0, 0, 1])
            .raw(&[1.0, -1.0, 0.0])
            .lengths(&[2, 2, 1])
            .build();
        let logp = Var::new(&[[-1.0f32, -2.0], [-1.5, -0.5], [-0.7, 0.0]], &dev).unwrap();
        let old = Tensor::new(&[[-1.1f32, -2.5], [-1.0, -0.8], [-0.75, 0.0]], &dev).unwrap();
        inputs.token_logp = logp.as_tensor().clone();
        inputs.token_logp_old = old;
        let out = pg_loss(&inputs, RewardKind::Raw, Some(0.2)).unwrap();
        let (r00, r11) = (0.1f64.exp(), 0.3f64.exp());
        let want = -(r00 + 1.2 - 0.8 - r11) / 5.0;
        assert!(
            (value(&out.loss) - want).abs() < 1e-5,
            "{}",
            value(&out.loss)
        );
        // d obj / d logp = ratio * A on unclipped tokens, 0 on clipped ones.
        assert_close(
            &grad_of(&logp, &out.loss),
            &[-r00 / 5.0, 0.0, 0.0, r11 / 5.0, 0.0, 0.0],
            1e-6,
        );
        assert!((out.stat("clip_fraction").unwrap() - 3.0 / 5.0).abs() < 1e-12);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let lengths = [3, 2, 3, 1];
        let tiny = Tiny::new(&lengths, 3, 5, 19);
        let base = Case::new(&[0, 0, 1, 1])
            .raw(&[1.0, -2.0, 0.5, 3.0])
            .lengths(&lengths);
        // Behaviour log-probs = the current ones shifted per token so that
        // ratios sit inside and on both sides outside [0.8, 1.2], away from
        // the kinks.
        let shifts = Tensor::new(
            &[
                [0.0f32, 0.5, -0.5],
                [0.1, -0.4, 0.0],
                [0.3, -0.05, 0.6],
                [-0.3, 0.0, 0.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let z0 = Tensor::from_vec(tiny.logits.clone(), tiny.shape(), &Device::Cpu).unwrap();
        let old = (tiny.token_logp(&z0).unwrap() - shifts).unwrap();
        let old = (old * tiny.mask()).unwrap();
        for clip in [None, Some(0.2)] {
            check_gradient(&tiny.logits, tiny.shape(), |z| {
                let (_, mut inputs) = base.build();
                inputs.token_logp = tiny.token_logp(z)?;
                inputs.token_logp_old = old.clone();
                inputs.seq_logp = inputs.token_logp.sum(1)?;
                Ok(pg_loss(&inputs, RewardKind::Raw, clip)?.loss)
            });
        }
    }
}
