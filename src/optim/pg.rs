//! Unconstrained policy gradient (docs/algorithm.md §5 and §8), the
//! baseline CGPO is compared with, and the group-relative estimators the
//! field trains with (GRPO, Dr. GRPO, DAPO, GSPO, RLOO, REINFORCE++). One
//! reward (raw or calibrated), no judges; an advantage estimator
//! ([`super::advantage`]) and a policy objective ([`super::objective`]):
//!
//! ```text
//! A_i   = estimator(r)_i                       (default: r_i - mean_j r_j)
//! loss  = -(1/N) Σ_i seqlogp_w(a_i) A_i        (no clipping: REINFORCE)
//! ratio = exp(logp_w(a_t) - logp_old(a_t))
//! loss  = -(1/T) Σ_i Σ_t min(ratio A_i, clip(ratio, 1-eps, 1+eps) A_i)   (clip_ratio = eps)
//! ```
//!
//! with T the number of response tokens in the minibatch. The clipped form
//! is the one to use over several epochs on the same rollouts (the trainer
//! reads `epochs` from the config); on the first pass ratio = 1 and both
//! forms have the same gradient up to the token weighting. The per-token KL
//! penalty is added by the trainer ([`crate::kl`]).
//!
//! The registry also holds the field's recipes as presets of `pg` (a
//! config's keys override them): see [`Pg::preset`].
//!
//! ```
//! use cgpo::optim::Pg;
//! let grpo = Pg::preset("grpo").unwrap();
//! assert_eq!(grpo.clip_ratio, Some(0.2));
//! assert!(Pg::preset("ppo2").is_none());
//! ```

use super::advantage::{Advantage, DEFAULT_ADV_EPS};
use super::loss::{Settings, TaskLoss};
use super::objective::{
    kept_advantages, loss_of_advantages, Aggregation, ImportanceSampling, PgSettings,
};
use super::{mean, LossInputs, LossOutput};
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// The policy-gradient baseline's settings (`{"name": "pg", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pg {
    /// The one reward it optimizes: `raw` (default) or `calibrated`.
    pub reward: RewardKind,
    /// How rewards become advantages (default `batch`).
    pub advantage: Advantage,
    /// eps (the lower one) of the clipped-ratio objective, in (0, 1);
    /// absent = plain REINFORCE.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_ratio: Option<f64>,
    /// DAPO's clip-higher: the upper eps (default `clip_ratio`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_ratio_high: Option<f64>,
    /// verl's dual clip c > 1 for negative advantages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dual_clip: Option<f64>,
    /// `token` (PPO) or `sequence` (GSPO) ratios.
    pub importance_sampling: ImportanceSampling,
    /// Absent: `seq_mean_token_sum` for REINFORCE, `token_mean` clipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregation: Option<Aggregation>,
    /// C of `seq_mean_token_sum_norm` (default: the padded length).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub norm_constant: Option<f64>,
    /// DAPO: drop the prompts whose rewards are all equal.
    pub dynamic_sampling: bool,
    /// The eps of `grpo`'s and `batch_normalized`'s std division
    /// (default 1e-6, verl's; TRL uses 1e-4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adv_eps: Option<f64>,
    /// Gradient passes over the same rollouts.
    pub epochs: usize,
    /// The preset's name, when built from one (its name in metrics).
    #[serde(skip)]
    pub preset: Option<&'static str>,
}

impl Default for Pg {
    fn default() -> Self {
        Self {
            reward: RewardKind::Raw,
            advantage: Advantage::Batch,
            clip_ratio: None,
            clip_ratio_high: None,
            dual_clip: None,
            importance_sampling: ImportanceSampling::Token,
            aggregation: None,
            norm_constant: None,
            dynamic_sampling: false,
            adv_eps: None,
            epochs: 1,
            preset: None,
        }
    }
}

impl Pg {
    /// The registered presets, each a `pg` with these settings:
    ///
    /// | Name | Advantage | Objective | Aggregation |
    /// |---|---|---|---|
    /// | `grpo` | `grpo` | PPO-clip 0.2 | `seq_mean_token_mean` |
    /// | `dr_grpo` | `per_prompt` | PPO-clip 0.2 | `seq_mean_token_sum_norm` (give `norm_constant`) |
    /// | `dapo` | `grpo` | PPO-clip 0.2 / 0.28, dynamic sampling | `token_mean` |
    /// | `gspo` | `grpo` | sequence ratio, clip 3e-4 / 4e-4 | `seq_mean_token_mean` |
    /// | `rloo` | `rloo` | REINFORCE | `seq_mean_token_sum` |
    /// | `reinforce_pp` | `reinforce_pp` | PPO-clip 0.2 | `token_mean` |
    pub fn preset(name: &str) -> Option<Self> {
        let clip = |lo: f64, hi: Option<f64>, agg: Aggregation| Pg {
            clip_ratio: Some(lo),
            clip_ratio_high: hi,
            aggregation: Some(agg),
            ..Pg::default()
        };
        let (name, pg) = match name {
            "grpo" => (
                "grpo",
                Pg {
                    advantage: Advantage::Grpo,
                    ..clip(0.2, None, Aggregation::SeqMeanTokenMean)
                },
            ),
            "dr_grpo" => (
                "dr_grpo",
                Pg {
                    advantage: Advantage::PerPrompt,
                    ..clip(0.2, None, Aggregation::SeqMeanTokenSumNorm)
                },
            ),
            "dapo" => (
                "dapo",
                Pg {
                    advantage: Advantage::Grpo,
                    dynamic_sampling: true,
                    ..clip(0.2, Some(0.28), Aggregation::TokenMean)
                },
            ),
            "gspo" => (
                "gspo",
                Pg {
                    advantage: Advantage::Grpo,
                    importance_sampling: ImportanceSampling::Sequence,
                    ..clip(3e-4, Some(4e-4), Aggregation::SeqMeanTokenMean)
                },
            ),
            "rloo" => (
                "rloo",
                Pg {
                    advantage: Advantage::Rloo,
                    ..Pg::default()
                },
            ),
            "reinforce_pp" => (
                "reinforce_pp",
                Pg {
                    advantage: Advantage::ReinforcePp,
                    ..clip(0.2, None, Aggregation::TokenMean)
                },
            ),
            _ => return None,
        };
        Some(Pg {
            preset: Some(name),
            ..pg
        })
    }

    /// The names [`Pg::preset`] knows.
    pub const PRESETS: [&'static str; 6] =
        ["grpo", "dr_grpo", "dapo", "gspo", "rloo", "reinforce_pp"];

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

impl TaskLoss for Pg {
    fn name(&self) -> &str {
        self.preset.unwrap_or("pg")
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        pg_loss(inputs, self)
    }

    fn epochs(&self) -> usize {
        self.epochs
    }

    fn min_generations(&self) -> usize {
        self.settings().min_generations()
    }
}

impl Settings for Pg {
    fn check(&self) -> Result<()> {
        self.settings().check()
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

/// The policy-gradient loss of one task's minibatch (judges ignored).
pub fn pg_loss(inputs: &LossInputs, settings: &Pg) -> Result<LossOutput> {
    inputs.validate()?;
    let rewards = pg_rewards(inputs, settings.reward);
    let (adv, keep) = kept_advantages(
        inputs,
        rewards,
        settings.advantage,
        settings.adv_eps.unwrap_or(DEFAULT_ADV_EPS),
        settings.dynamic_sampling,
    );
    let (loss, more) = loss_of_advantages(
        inputs,
        rewards,
        &adv,
        &keep,
        settings.dynamic_sampling,
        &settings.settings().objective(),
    )?;
    let mut stats = vec![
        ("samples", inputs.len() as f64),
        ("mean_reward", mean(rewards.iter().copied())),
        ("mean_abs_advantage", mean(adv.iter().map(|a| a.abs()))),
    ];
    stats.extend(more);
    Ok(LossOutput { loss, stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};
    use candle_core::{Device, Tensor, Var};

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
        let out = pg_loss(&inputs, &Pg::default()).unwrap();
        assert!(value(&out.loss).abs() < 1e-6);
        assert_close(&grad_of(&var, &out.loss), &[0.0, 0.25, -0.5, 0.25], 1e-6);
        // Calibrated: mean 0.45, A = [0.05, -0.25, 0.45, -0.25].
        let out = pg_loss(
            &inputs,
            &Pg {
                reward: RewardKind::Calibrated,
                ..Pg::default()
            },
        )
        .unwrap();
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
        let out = pg_loss(
            &inputs,
            &Pg {
                clip_ratio: Some(0.2),
                ..Pg::default()
            },
        )
        .unwrap();
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
                Ok(pg_loss(
                    &inputs,
                    &Pg {
                        clip_ratio: clip,
                        ..Pg::default()
                    },
                )?
                .loss)
            });
        }
    }

    #[test]
    fn presets_build_by_name_take_overrides_and_train() {
        use crate::optim::{LossRegistry, LossSpec};
        use serde_json::json;
        let registry = LossRegistry::with_builtins();
        let (_, inputs) = Case::new(&[0, 0, 1, 1]).raw(&[1.0, 0.0, 0.5, 0.25]).build();
        for name in Pg::PRESETS {
            // Dr. GRPO's constant normalizer has no default: the budget.
            let params = if name == "dr_grpo" {
                json!({"norm_constant": 64})
            } else {
                json!({})
            };
            let loss = registry.build(&LossSpec::new(name, params), "o").unwrap();
            assert_eq!(loss.name(), name);
            let out = loss.loss(&inputs).unwrap();
            assert!(value(&out.loss).is_finite(), "{name}");
            assert_eq!(out.stat("zero_variance_groups"), Some(0.0), "{name}");
        }
        let spec = LossSpec::new("grpo", json!({"reward": "calibrated", "clip_ratio": 0.1}));
        let got = format!("{:?}", registry.build(&spec, "o").unwrap());
        let want = Pg {
            reward: RewardKind::Calibrated,
            clip_ratio: Some(0.1),
            ..Pg::preset("grpo").unwrap()
        };
        assert_eq!(got, format!("{want:?}"));
        let err = registry
            .build(&LossSpec::new("dr_grpo", json!({})), "o")
            .unwrap_err()
            .to_string();
        assert!(err.contains("o.norm_constant"), "{err}");
        let spec = LossSpec::new("dapo", json!({"clip_ratio_hi": 0.3}));
        let err = registry
            .build(&spec, "tasks[0].optimizer")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("tasks[0].optimizer") && err.contains("clip_ratio_hi"),
            "{err}"
        );
        let spec = LossSpec::new(
            "gspo",
            json!({"importance_sampling": "sequence", "clip_ratio": 2.0}),
        );
        let err = registry
            .build(&spec, "tasks[0].optimizer")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tasks[0].optimizer.clip_ratio"), "{err}");
    }
}
