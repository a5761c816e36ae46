//! CRPG, calibrated-regularized policy gradient (docs/algorithm.md §3):
//!
//! ```text
//! R_cr   = R_calib if y = 1 else 0             (else `violation_reward`, 0 by default)
//! R~_cr  = max(1 - logratio / KL_max, 0) * R_cr
//! loss   = -(1/n) Σ_i seqlogp_w(a_i) (R~_cr,i - b_i)
//! ```
//!
//! with `logratio` the detached behaviour log-ratio and the baseline `b_i`
//! the mean of `R~_cr` over the whole minibatch (the paper). The KL weight is
//! not clipped above 1 in the paper, so a sample that moved *toward* the
//! reference (negative log-ratio) weighs more than its reward; with
//! `clip_kl_weight` the weight is at most 1. A sample past KL_max gets weight
//! 0, like a violating one. n = N.
//!
//! The judge gate acts on the reward before any estimator: `advantage`
//! takes any of [`super::advantage`]'s (`grpo` for CGPO with GRPO's group
//! normalization; `per_prompt` is the mean of the K samples of the same
//! prompt), and the objective any of [`super::objective`]'s (`clip_ratio`,
//! `aggregation`, ...), as in [`super::Pg`]. A prompt whose samples all
//! violate has rewards all 0 and, under a group estimator, no signal: the
//! statistic `zero_variance_groups` counts such prompts.

use super::advantage::{Advantage, DEFAULT_ADV_EPS};
use super::loss::{Settings, TaskLoss};
use super::objective::{
    kept_advantages, loss_of_advantages, Aggregation, ImportanceSampling, PgSettings,
};
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
    /// How the regularized rewards become advantages (default `batch`,
    /// the paper's; the key `baseline` is an older name for it).
    #[serde(alias = "baseline")]
    pub advantage: Advantage,
    /// Clip the KL weight `1 - logratio / kl_max` above at 1.
    pub clip_kl_weight: bool,
    /// The reward of a sample that violates a judge (the paper: 0). CRPG's
    /// formula assumes rewards >= 0, as the calibrated reward is; with
    /// rewards that can be negative (raw, combined by
    /// `normalize_then_sum`, or less a KL penalty) set it below their
    /// range, or a violation can outscore a pass.
    pub violation_reward: f64,
    /// As [`super::Pg`]'s: absent = REINFORCE (the paper).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_ratio: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_ratio_high: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dual_clip: Option<f64>,
    pub importance_sampling: ImportanceSampling,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_constant: Option<f64>,
    pub dynamic_sampling: bool,
    /// The eps of `grpo`'s and `batch_normalized`'s std division
    /// (default 1e-6, verl's; TRL uses 1e-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adv_eps: Option<f64>,
    pub epochs: usize,
}

impl Default for Crpg {
    fn default() -> Self {
        Self {
            kl_max: DEFAULT_KL_MAX,
            advantage: Advantage::Batch,
            clip_kl_weight: false,
            violation_reward: 0.0,
            clip_ratio: None,
            clip_ratio_high: None,
            dual_clip: None,
            importance_sampling: ImportanceSampling::Token,
            aggregation: None,
            norm_constant: None,
            dynamic_sampling: false,
            adv_eps: None,
            epochs: 1,
        }
    }
}

impl Crpg {
    pub(crate) fn settings(&self) -> PgSettings {
        PgSettings {
            clip_ratio: self.clip_ratio,
            clip_ratio_high: self.clip_ratio_high,
            dual_clip: self.dual_clip,
            importance_sampling: self.importance_sampling,
            aggregation: self.aggregation,
            norm_constant: self.norm_constant,
            advantage: self.advantage,
            adv_eps: self.adv_eps,
            dynamic_sampling: self.dynamic_sampling,
            epochs: self.epochs,
        }
    }
}

impl TaskLoss for Crpg {
    fn name(&self) -> &str {
        "crpg"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        crpg_loss(inputs, self)
    }

    fn epochs(&self) -> usize {
        self.epochs
    }

    fn min_generations(&self) -> usize {
        self.settings().min_generations()
    }
}

impl Settings for Crpg {
    fn check(&self) -> Result<()> {
        check_config("kl_max", self.kl_max, "> 0", |v| v > 0.0)?;
        if !self.violation_reward.is_finite() {
            return Err(crate::error::Error::config(
                "violation_reward",
                format!("must be finite, got {}", self.violation_reward),
            ));
        }
        self.settings().check()
    }
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

/// The regularized rewards `R~_cr,i` of every sample; a violating sample
/// gets `violation_reward` (the paper: 0).
pub fn crpg_rewards(
    inputs: &LossInputs,
    kl_max: f64,
    clip_kl_weight: bool,
    violation_reward: f64,
) -> Vec<f64> {
    inputs
        .logratio()
        .iter()
        .zip(&inputs.calibrated)
        .zip(&inputs.positive)
        .map(|((&lr, &r), &y)| {
            if y {
                kl_weight(lr, kl_max, clip_kl_weight) * r
            } else {
                violation_reward
            }
        })
        .collect()
}

/// The CRPG loss of one task's minibatch.
pub fn crpg_loss(inputs: &LossInputs, settings: &Crpg) -> Result<LossOutput> {
    inputs.validate()?;
    let rewards = crpg_rewards(
        inputs,
        settings.kl_max,
        settings.clip_kl_weight,
        settings.violation_reward,
    );
    let (adv, keep) = kept_advantages(
        inputs,
        &rewards,
        settings.advantage,
        settings.adv_eps.unwrap_or(DEFAULT_ADV_EPS),
        settings.dynamic_sampling,
    );
    let mut stats = stats(inputs, settings.kl_max, &rewards, &adv);
    let (loss, more) = loss_of_advantages(
        inputs,
        &rewards,
        &adv,
        &keep,
        settings.dynamic_sampling,
        &settings.settings().objective(),
    )?;
    stats.extend(more);
    Ok(LossOutput { loss, stats })
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

    fn crpg(advantage: Advantage, clip_kl_weight: bool) -> Crpg {
        Crpg {
            kl_max: 10.0,
            advantage,
            clip_kl_weight,
            ..Crpg::default()
        }
    }

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
        let rewards = crpg_rewards(&inputs, 10.0, false, 0.0);
        for (r, want) in rewards.iter().zip([0.4, 0.0, 0.9, 0.0]) {
            assert!((r - want).abs() < 1e-12, "{rewards:?}");
        }
        let out = crpg_loss(&inputs, &crpg(Advantage::Batch, false)).unwrap();
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
        let out = crpg_loss(&inputs, &crpg(Advantage::PerPrompt, false)).unwrap();
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
        let out = crpg_loss(&inputs, &crpg(Advantage::Batch, true)).unwrap();
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
    fn a_violation_reward_below_the_range_ranks_violations_last() {
        // Rewards that can be negative: the violating sample 1 (reward 0
        // by default) would outscore sample 0 (0.5 * -0.8 = -0.4).
        let (var, inputs) = case().calibrated(&[-0.8, 0.9, -0.6, -0.7]).build();
        let paper = crpg_rewards(&inputs, 10.0, false, 0.0);
        assert!(paper[1] > paper[0], "{paper:?}");
        let settings = Crpg {
            violation_reward: -2.0,
            ..crpg(Advantage::Batch, false)
        };
        let r = crpg_rewards(&inputs, 10.0, false, -2.0);
        assert!(r[1] < r[0] && r[1] == -2.0, "{r:?}");
        // R~ = [-0.4, -2, -0.9, 0 (past KL_max)], mean -0.825.
        let out = crpg_loss(&inputs, &settings).unwrap();
        assert_close(
            &grad_of(&var, &out.loss),
            &[-0.425 / 4.0, 1.175 / 4.0, 0.075 / 4.0, -0.825 / 4.0],
            1e-6,
        );
    }

    #[test]
    fn negative_rewards_only_is_a_connected_zero() {
        let (var, inputs) = case().positive(&[false; 4]).build();
        let out = crpg_loss(&inputs, &crpg(Advantage::Batch, false)).unwrap();
        assert_eq!(value(&out.loss), 0.0);
        assert_eq!(out.stat("zero_advantage"), Some(1.0));
        assert_close(&grad_of(&var, &out.loss), &[0.0; 4], 0.0);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let tiny = Tiny::new(&[3, 2, 3, 1], 3, 5, 7);
        let base = case().lengths(&tiny.lengths);
        for baseline in [Advantage::Batch, Advantage::PerPrompt, Advantage::Grpo] {
            check_gradient(&tiny.logits, tiny.shape(), |z| {
                let (_, mut inputs) = base.build();
                inputs.token_logp = tiny.token_logp(z)?;
                inputs.seq_logp = inputs.token_logp.sum(1)?;
                Ok(crpg_loss(&inputs, &crpg(baseline, false))?.loss)
            });
        }
    }
}
