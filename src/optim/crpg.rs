//! CRPG, calibrated-regularized policy gradient (docs/algorithm.md §3):
//!
//! ```text
//! R_cr   = R_calib if y = 1 else 0
//! R~_cr  = max(1 - logratio / KL_max, 0) * R_cr
//! loss   = -(1/n) Σ_i seqlogp_w(a_i) (R~_cr,i - b_i)
//! ```
//!
//! with `logratio` the detached behaviour log-ratio and the baseline `b_i`
//! the mean of `R~_cr` over the whole minibatch (the paper) or over the K
//! samples of the same prompt ([`PgBaseline::PerPrompt`]). The KL weight is
//! not clipped above 1 in the paper, so a sample that moved *toward* the
//! reference (negative log-ratio) weighs more than its reward; with
//! `clip_kl_weight` the weight is at most 1. A sample past KL_max gets weight
//! 0, like a violating one. n = N.

use super::loss::{Settings, TaskLoss};
use super::{mean, LossInputs, LossOutput};
use crate::error::check_config;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Not given by the paper; a lenient threshold in nats per sequence.
pub const DEFAULT_KL_MAX: f64 = 10.0;

/// CRPG's settings (`{"name": "crpg", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Crpg {
    /// KL_max: samples with logratio >= kl_max get zero reward weight.
    pub kl_max: f64,
    pub baseline: PgBaseline,
    /// Clip the KL weight `1 - logratio / kl_max` above at 1.
    pub clip_kl_weight: bool,
}

impl Default for Crpg {
    fn default() -> Self {
        Self {
            kl_max: DEFAULT_KL_MAX,
            baseline: PgBaseline::Batch,
            clip_kl_weight: false,
        }
    }
}

impl TaskLoss for Crpg {
    fn name(&self) -> &str {
        "crpg"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        crpg_loss(inputs, self.kl_max, self.baseline, self.clip_kl_weight)
    }
}

impl Settings for Crpg {
    fn check(&self) -> Result<()> {
        check_config("kl_max", self.kl_max, "> 0", |v| v > 0.0)
    }
}

/// The policy-gradient baseline subtracted from CRPG rewards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgBaseline {
    /// Mean over the task's whole minibatch (the paper).
    #[default]
    Batch,
    /// Mean over the K samples of the same prompt.
    PerPrompt,
}

/// The KL weight `max(1 - logratio / kl_max, 0)`, at most 1 when `clip`.
pub fn kl_weight(logratio: f64, kl_max: f64, clip: bool) -> f64 {
    let w = (1.0 - logratio / kl_max).max(0.0);
    if clip {
        w.min(1.0)
    } else {
        w
    }
}

/// The regularized rewards `R~_cr,i` of every sample.
pub fn crpg_rewards(inputs: &LossInputs, kl_max: f64, clip_kl_weight: bool) -> Vec<f64> {
    inputs
        .logratio()
        .iter()
        .zip(&inputs.calibrated)
        .zip(&inputs.positive)
        .map(|((&lr, &r), &y)| {
            let r_cr = if y { r } else { 0.0 };
            kl_weight(lr, kl_max, clip_kl_weight) * r_cr
        })
        .collect()
}

/// The advantages `R_i - b_i` with the batch or per-prompt mean baseline.
pub fn advantages(inputs: &LossInputs, rewards: &[f64], baseline: PgBaseline) -> Vec<f64> {
    match baseline {
        PgBaseline::Batch => {
            let b = mean(rewards.iter().copied());
            rewards.iter().map(|r| r - b).collect()
        }
        PgBaseline::PerPrompt => {
            let per_prompt: Vec<f64> = inputs
                .groups()
                .iter()
                .map(|members| mean(members.iter().map(|&i| rewards[i])))
                .collect();
            rewards
                .iter()
                .zip(&inputs.group)
                .map(|(r, &g)| r - per_prompt[g])
                .collect()
        }
    }
}

/// The CRPG loss of one task's minibatch.
pub fn crpg_loss(
    inputs: &LossInputs,
    kl_max: f64,
    baseline: PgBaseline,
    clip_kl_weight: bool,
) -> Result<LossOutput> {
    inputs.validate()?;
    let rewards = crpg_rewards(inputs, kl_max, clip_kl_weight);
    let adv = advantages(inputs, &rewards, baseline);
    let n = inputs.len();
    let stats = stats(inputs, kl_max, &rewards, &adv);
    if n == 0 {
        return Ok(LossOutput {
            loss: inputs.zero_loss()?,
            stats,
        });
    }
    let weights: Vec<f64> = adv.iter().map(|a| -a / n as f64).collect();
    Ok(LossOutput {
        loss: inputs.weighted_seq_logp(&weights)?,
        stats,
    })
}

fn stats(
    inputs: &LossInputs,
    kl_max: f64,
    rewards: &[f64],
    adv: &[f64],
) -> Vec<(&'static str, f64)> {
    let lr = inputs.logratio();
    let past_kl = lr.iter().filter(|&&l| l >= kl_max).count();
    let positives = inputs.positive.iter().filter(|&&y| y).count();
    vec![
        ("samples", inputs.len() as f64),
        ("positives", positives as f64),
        ("past_kl_max", past_kl as f64),
        ("mean_logratio", mean(lr.iter().copied())),
        ("mean_reward", mean(rewards.iter().copied())),
        ("mean_abs_advantage", mean(adv.iter().map(|a| a.abs()))),
        (
            "zero_advantage",
            f64::from(u8::from(adv.iter().all(|&a| a == 0.0))),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};

    /// Two prompts, two samples each; logratio = old - ref = [5, 0, -5, 12]
    /// with KL_max = 10, so KL weights are [0.5, 1, 1.5, 0].
    fn case() -> Case {
        Case::new(&[0, 0, 1, 1])
            .seq(&[-1.0, -2.0, -3.0, -4.0])
            .reference(&[-20.0; 4])
            .old(&[-15.0, -20.0, -25.0, -8.0])
            .calibrated(&[0.8, 0.9, 0.6, 0.7])
            .positive(&[true, false, true, true])
    }

    #[test]
    fn batch_baseline_weights_by_hand() {
        let (var, inputs) = case().build();
        // R~_cr = [0.5*0.8, 0 (violates), 1.5*0.6 (negative logratio, > R), 0 (past KL_max)]
        //       = [0.4, 0, 0.9, 0]; batch mean 0.325;
        // advantages [0.075, -0.325, 0.575, -0.325].
        let rewards = crpg_rewards(&inputs, 10.0, false);
        for (r, want) in rewards.iter().zip([0.4, 0.0, 0.9, 0.0]) {
            assert!((r - want).abs() < 1e-12, "{rewards:?}");
        }
        let out = crpg_loss(&inputs, 10.0, PgBaseline::Batch, false).unwrap();
        // loss = -(1/4)(-1*0.075 - 2*-0.325 - 3*0.575 - 4*-0.325) = -(1/4)(0.15)
        assert!((value(&out.loss) + 0.0375).abs() < 1e-6);
        // d loss / d seq_logp_i = -A_i / n
        assert_close(
            &grad_of(&var, &out.loss),
            &[-0.075 / 4.0, 0.325 / 4.0, -0.575 / 4.0, 0.325 / 4.0],
            1e-6,
        );
        assert_eq!(out.stat("past_kl_max"), Some(1.0));
        assert_eq!(out.stat("positives"), Some(3.0));
    }

    #[test]
    fn per_prompt_baseline_by_hand() {
        let (var, inputs) = case().build();
        // R~_cr = [0.4, 0 | 0.9, 0]: prompt means 0.2 and 0.45.
        let out = crpg_loss(&inputs, 10.0, PgBaseline::PerPrompt, false).unwrap();
        assert_close(
            &grad_of(&var, &out.loss),
            &[-0.2 / 4.0, 0.2 / 4.0, -0.45 / 4.0, 0.45 / 4.0],
            1e-6,
        );
    }

    #[test]
    fn clipped_kl_weight_by_hand() {
        let (var, inputs) = case().build();
        // The negative log-ratio's weight 1.5 is clipped to 1: R~_cr = [0.4, 0, 0.6, 0],
        // mean 0.25, advantages [0.15, -0.25, 0.35, -0.25].
        let out = crpg_loss(&inputs, 10.0, PgBaseline::Batch, true).unwrap();
        assert_close(
            &grad_of(&var, &out.loss),
            &[-0.15 / 4.0, 0.25 / 4.0, -0.35 / 4.0, 0.25 / 4.0],
            1e-6,
        );
        assert_eq!(kl_weight(-5.0, 10.0, true), 1.0);
        assert_eq!(kl_weight(-5.0, 10.0, false), 1.5);
        assert_eq!(kl_weight(10.0, 10.0, false), 0.0);
    }

    #[test]
    fn negative_rewards_only_is_a_connected_zero() {
        let (var, inputs) = case().positive(&[false; 4]).build();
        let out = crpg_loss(&inputs, 10.0, PgBaseline::Batch, false).unwrap();
        assert_eq!(value(&out.loss), 0.0);
        assert_eq!(out.stat("zero_advantage"), Some(1.0));
        assert_close(&grad_of(&var, &out.loss), &[0.0; 4], 0.0);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let tiny = Tiny::new(&[3, 2, 3, 1], 3, 5, 7);
        let base = case().lengths(&tiny.lengths);
        for baseline in [PgBaseline::Batch, PgBaseline::PerPrompt] {
            check_gradient(&tiny.logits, tiny.shape(), |z| {
                let (_, mut inputs) = base.build();
                inputs.token_logp = tiny.token_logp(z)?;
                inputs.seq_logp = inputs.token_logp.sum(1)?;
                Ok(crpg_loss(&inputs, 10.0, baseline, false)?.loss)
            });
        }
    }
}
