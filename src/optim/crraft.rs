//! CRRAFT, calibrated-regularized reward-ranked fine-tuning (docs/algorithm.md
//! §3). Per prompt:
//!
//! ```text
//! a* = argmax of r over samples with y = 1 and logratio <= KL_max
//! none left -> a_bar if it passes every judge (weight sigmoid(0) = 0.5), else skip
//! loss = -(1/n) Σ_s R_calib(a*_s) seqlogp_w(a*_s)
//! ```
//!
//! n is the number of prompts used (not skipped); `logratio` is the detached
//! behaviour log-ratio. Negatives get no gradient. The baseline response's
//! log-prob comes from [`LossInputs::baseline_seq_logp`], which is `Some`
//! only when a_bar exists and passes every judge.

use candle_core::Tensor;

use super::crpg::DEFAULT_KL_MAX;
use super::loss::{Settings, TaskLoss};
use super::{argmax, mean, LossInputs, LossOutput};
use crate::error::check_config;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// CRRAFT's settings (`{"name": "crraft", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Crraft {
    pub kl_max: f64,
}

impl Default for Crraft {
    fn default() -> Self {
        Self {
            kl_max: DEFAULT_KL_MAX,
        }
    }
}

impl TaskLoss for Crraft {
    fn name(&self) -> &str {
        "crraft"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        crraft_loss(inputs, self.kl_max)
    }

    /// The fallback to a passing baseline response.
    fn needs_baselines(&self) -> bool {
        true
    }
}

impl Settings for Crraft {
    fn check(&self) -> Result<()> {
        check_config("kl_max", self.kl_max, "> 0", |v| v > 0.0)
    }
}

/// The calibrated reward of the baseline response against itself,
/// `sigmoid(r(a_bar) - r(a_bar)) = sigmoid(0)`.
pub const BASELINE_WEIGHT: f64 = 0.5;

/// What CRRAFT learns from for one prompt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Choice {
    /// Sample `index`, weighted by its calibrated reward.
    Sample { index: usize, weight: f64 },
    /// The prompt's baseline response a_bar, weighted 0.5.
    Baseline { prompt: usize },
    /// Nothing: no admissible sample and no passing a_bar.
    Skip,
}

/// The choice of every prompt (length G).
pub fn crraft_choices(inputs: &LossInputs, kl_max: f64) -> Vec<Choice> {
    let lr = inputs.logratio();
    inputs
        .groups()
        .iter()
        .enumerate()
        .map(|(g, members)| {
            let admissible = members
                .iter()
                .copied()
                .filter(|&i| inputs.positive[i] && lr[i] <= kl_max);
            match argmax(admissible, &inputs.raw) {
                Some(index) => Choice::Sample {
                    index,
                    weight: inputs.calibrated[index],
                },
                None if inputs.baseline_seq_logp[g].is_some() => Choice::Baseline { prompt: g },
                None => Choice::Skip,
            }
        })
        .collect()
}

/// The CRRAFT loss of one task's minibatch.
pub fn crraft_loss(inputs: &LossInputs, kl_max: f64) -> Result<LossOutput> {
    inputs.validate()?;
    let choices = crraft_choices(inputs, kl_max);
    let stats = stats(inputs, kl_max, &choices);
    let used = choices.iter().filter(|c| **c != Choice::Skip).count();
    if used == 0 {
        return Ok(LossOutput {
            loss: inputs.zero_loss()?,
            stats,
        });
    }
    let scale = -1.0 / used as f64;
    let mut weights = vec![0.0; inputs.len()];
    let mut loss = Tensor::zeros((), candle_core::DType::F32, inputs.seq_logp.device())?;
    for choice in &choices {
        match *choice {
            Choice::Sample { index, weight } => weights[index] = scale * weight,
            Choice::Baseline { prompt } => {
                if let Some(b) = &inputs.baseline_seq_logp[prompt] {
                    let term = (b.flatten_all()?.sum_all()? * (scale * BASELINE_WEIGHT))?;
                    loss = (loss + term)?;
                }
            }
            Choice::Skip => {}
        }
    }
    Ok(LossOutput {
        loss: (loss + inputs.weighted_seq_logp(&weights)?)?,
        stats,
    })
}

fn stats(inputs: &LossInputs, kl_max: f64, choices: &[Choice]) -> Vec<(&'static str, f64)> {
    let lr = inputs.logratio();
    let count = |f: fn(&Choice) -> bool| choices.iter().filter(|c| f(c)).count() as f64;
    let kl_filtered = (0..inputs.len())
        .filter(|&i| inputs.positive[i] && lr[i] > kl_max)
        .count();
    let weights = choices.iter().filter_map(|c| match *c {
        Choice::Sample { weight, .. } => Some(weight),
        Choice::Baseline { .. } => Some(BASELINE_WEIGHT),
        Choice::Skip => None,
    });
    vec![
        ("prompts_used", count(|c| *c != Choice::Skip)),
        (
            "prompts_baseline",
            count(|c| matches!(c, Choice::Baseline { .. })),
        ),
        ("prompts_skipped", count(|c| *c == Choice::Skip)),
        ("positives_past_kl_max", kl_filtered as f64),
        ("mean_weight", mean(weights)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};

    /// KL_max = 4, K = 2, logratio = old - ref (ref = 0):
    /// 0: y = [1, 1], r = [1, 2], logratio = [1, 6]: sample 1 is past KL_max,
    ///    so a* = 0 with weight R_calib = 0.7.
    /// 1: y = [0, 0], a_bar passes: the baseline with weight 0.5.
    /// 2: y = [0, 1], logratio = [0, 5]: nothing admissible, no a_bar: skip.
    /// 3: y = [1, 1], r = [3, -1], logratio = [4, 0]: a* = 6 (logratio equal
    ///    to KL_max is allowed), weight 0.9; a_bar is not needed.
    fn case() -> Case {
        Case::new(&[0, 0, 1, 1, 2, 2, 3, 3])
            .positive(&[true, true, false, false, false, true, true, true])
            .raw(&[1.0, 2.0, 5.0, 6.0, 1.0, 1.0, 3.0, -1.0])
            .old(&[1.0, 6.0, 0.0, 0.0, 0.0, 5.0, 4.0, 0.0])
            .calibrated(&[0.7, 0.8, 0.5, 0.5, 0.5, 0.5, 0.9, 0.1])
            .seq(&[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0, -7.0, -8.0])
            .baselines(&[None, Some(-2.5), None, Some(-1.0)])
    }

    #[test]
    fn choices_by_hand() {
        let (_, inputs) = case().build();
        assert_eq!(
            crraft_choices(&inputs, 4.0),
            [
                Choice::Sample {
                    index: 0,
                    weight: 0.7
                },
                Choice::Baseline { prompt: 1 },
                Choice::Skip,
                Choice::Sample {
                    index: 6,
                    weight: 0.9
                }
            ]
        );
    }

    #[test]
    fn loss_and_gradient_by_hand() {
        let (var, bases, inputs) = case().build_with_baselines();
        let out = crraft_loss(&inputs, 4.0).unwrap();
        // n = 3 prompts used: loss = -(1/3)(0.7 * -1 + 0.5 * -2.5 + 0.9 * -7) = 8.25 / 3.
        assert!((value(&out.loss) - 8.25 / 3.0).abs() < 1e-5);
        let grads = out.loss.backward().unwrap();
        let g = grads.get(&var).unwrap().to_vec1::<f32>().unwrap();
        let w = -1.0 / 3.0;
        assert_close(&g, &[0.7 * w, 0.0, 0.0, 0.0, 0.0, 0.0, 0.9 * w, 0.0], 1e-6);
        let b1 = grads.get(bases[1].as_ref().unwrap()).unwrap();
        assert_close(&[b1.to_scalar::<f32>().unwrap()], &[0.5 * w], 1e-6);
        assert!(grads.get(bases[3].as_ref().unwrap()).is_none());
        assert_eq!(out.stat("prompts_used"), Some(3.0));
        assert_eq!(out.stat("prompts_baseline"), Some(1.0));
        assert_eq!(out.stat("prompts_skipped"), Some(1.0));
        assert_eq!(out.stat("positives_past_kl_max"), Some(2.0));
        assert!((out.stat("mean_weight").unwrap() - 0.7).abs() < 1e-12);
    }

    #[test]
    fn everything_skipped_is_a_connected_zero() {
        let (var, inputs) = case().positive(&[false; 8]).baselines(&[None; 4]).build();
        let out = crraft_loss(&inputs, 4.0).unwrap();
        assert_eq!(value(&out.loss), 0.0);
        assert_eq!(out.stat("prompts_skipped"), Some(4.0));
        assert_close(&grad_of(&var, &out.loss), &[0.0; 8], 0.0);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        // Rows 0..4 are the samples of two prompts, row 4 the baseline
        // response of prompt 1 (whose samples all violate).
        let lengths = [2, 3, 3, 1, 3];
        let tiny = Tiny::new(&lengths, 3, 4, 17);
        let base = Case::new(&[0, 0, 1, 1])
            .positive(&[true, true, false, false])
            .raw(&[1.0, 2.0, 3.0, 4.0])
            .calibrated(&[0.3, 0.6, 0.9, 0.9])
            .lengths(&lengths[..4])
            .baselines(&[None, Some(0.0)]);
        check_gradient(&tiny.logits, tiny.shape(), |z| {
            let (_, mut inputs) = base.build();
            let all = tiny.token_logp(z)?;
            inputs.token_logp = all.narrow(0, 0, 4)?;
            inputs.seq_logp = inputs.token_logp.sum(1)?;
            inputs.baseline_seq_logp[1] = Some(all.get(4)?.sum_all()?);
            Ok(crraft_loss(&inputs, 10.0)?.loss)
        });
    }
}
