//! The policy-gradient objective shared by [`super::Pg`] and
//! [`super::Crpg`] (docs/algorithm.md §8): given one advantage `A_i` per
//! sample, a per-token loss `L_it` and its aggregation over the minibatch.
//!
//! ```text
//! none (REINFORCE)   L_it = -A_i log pi(a_t)
//! token (PPO-clip)   r_t = exp(log pi(a_t) - log pi_old(a_t))
//!                    L_it = -min(r_t A_i, clip(r_t, 1 - eps_low, 1 + eps_high) A_i)
//!                    dual clip c (A_i < 0 only): L_it = min(L_it, -c A_i)
//! sequence (GSPO)    s_i = exp(mean_t (log pi(a_t) - log pi_old(a_t)))
//!                    L_it = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)
//! ```
//!
//! | Aggregation | Loss |
//! |---|---|
//! | `token_mean` | `Σ_it L_it / T` (T response tokens) |
//! | `seq_mean_token_mean` | `(1/N) Σ_i (Σ_t L_it / len(a_i))` |
//! | `seq_mean_token_sum` | `(1/N) Σ_i Σ_t L_it` |
//! | `seq_mean_token_sum_norm` | `(1/N) Σ_i Σ_t L_it / C`, C a constant given by the config (Dr. GRPO) |
//!
//! The token log-ratio is clamped to ±20 and GSPO's sequence log-ratio to
//! at most 10 before `exp` (as verl does), so a stale sample cannot make
//! the loss infinite. With dynamic sampling (DAPO) the samples of a prompt
//! whose rewards are all equal leave the minibatch before the advantages
//! are estimated: they count in neither N nor T (the trainer's KL term
//! still averages over them). Under REINFORCE every aggregation is a weighted sum of the
//! sequence log-probs, computed as one.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::advantage::{advantages, informative, zero_variance_groups, Advantage};
use super::{host_tensor, loss_error, LossInputs};
use crate::error::Result;

/// Which importance ratio the clipped objective uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ImportanceSampling {
    /// One ratio per token (PPO, GRPO, DAPO).
    #[default]
    Token,
    /// One ratio per sequence, the geometric mean of its tokens' (GSPO).
    Sequence,
}

/// How per-token losses become the minibatch's loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    TokenMean,
    SeqMeanTokenMean,
    SeqMeanTokenSum,
    SeqMeanTokenSumNorm,
}

/// The objective's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Objective {
    /// `None`: REINFORCE (no ratio); `Some((eps_low, eps_high))`: clipped.
    pub clip: Option<(f64, f64)>,
    pub importance_sampling: ImportanceSampling,
    /// verl's dual clip `c > 1` for negative advantages (token level).
    pub dual_clip: Option<f64>,
    pub aggregation: Aggregation,
    /// C of `seq_mean_token_sum_norm` (which needs it).
    pub norm_constant: Option<f64>,
}

/// The objective's loss on `inputs` with advantages `adv` over the samples
/// with `keep[i]`, and what to log about it (`clip_fraction` when clipped).
pub fn policy_loss(
    inputs: &LossInputs,
    adv: &[f64],
    keep: &[bool],
    obj: &Objective,
) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
    if adv.len() != inputs.len() || keep.len() != inputs.len() {
        return Err(loss_error(format!(
            "{} advantages and {} keep flags for {} samples",
            adv.len(),
            keep.len(),
            inputs.len()
        )));
    }
    let norm =
        match (obj.aggregation, obj.norm_constant) {
            (Aggregation::SeqMeanTokenSumNorm, None) => return Err(loss_error(
                "seq_mean_token_sum_norm needs a norm_constant (Dr. GRPO: the generation budget)",
            )),
            (_, c) => c.unwrap_or(1.0),
        };
    let kept: Vec<usize> = (0..inputs.len()).filter(|&i| keep[i]).collect();
    let tokens: usize = kept.iter().map(|&i| inputs.lengths[i]).sum();
    if kept.is_empty() || tokens == 0 {
        return Ok((inputs.zero_loss()?, Vec::new()));
    }
    let n = kept.len() as f64;
    // Per sample, the denominator of its row sum of L in the aggregation
    // (infinite: the sample does not count).
    let denominators: Vec<f64> = (0..inputs.len())
        .map(|i| {
            let len = inputs.lengths[i] as f64;
            if !keep[i] || len == 0.0 {
                return f64::INFINITY;
            }
            match obj.aggregation {
                Aggregation::TokenMean => tokens as f64,
                Aggregation::SeqMeanTokenMean => n * len,
                Aggregation::SeqMeanTokenSum => n,
                Aggregation::SeqMeanTokenSumNorm => n * norm,
            }
        })
        .collect();
    let Some((lo, hi)) = obj.clip else {
        // Σ_t -A_i log pi(a_t) = -A_i seq_logp_i.
        let weights: Vec<f64> = adv.iter().zip(&denominators).map(|(a, d)| -a / d).collect();
        return Ok((inputs.weighted_seq_logp(&weights)?, Vec::new()));
    };
    let a = host_tensor(adv, &inputs.token_logp)?.unsqueeze(1)?;
    let log_ratio = (&inputs.token_logp - inputs.token_logp_old.detach())?;
    let (row_loss, outside) = match obj.importance_sampling {
        ImportanceSampling::Token => {
            let ratio = log_ratio.clamp(-20f32, 20f32)?.exp()?;
            let objective = clipped(&ratio, &a, lo, hi)?;
            let objective = match obj.dual_clip {
                Some(c) => dual_clipped(&objective, &a, c)?,
                None => objective,
            };
            let rows = (objective * &inputs.mask)?.sum(1)?.neg()?;
            let outside = outside_count(&ratio, &inputs.mask, keep, lo, hi)?;
            (rows, outside as f64 / tokens as f64)
        }
        ImportanceSampling::Sequence => {
            let lengths: Vec<f64> = inputs.lengths.iter().map(|&l| l.max(1) as f64).collect();
            let len = host_tensor(&lengths, &log_ratio)?;
            let seq_log = ((log_ratio * &inputs.mask)?.sum(1)? / len)?;
            let ratio = seq_log.minimum(10f32)?.exp()?.unsqueeze(1)?;
            let objective = clipped(&ratio, &a, lo, hi)?.squeeze(1)?;
            let counts: Vec<f64> = inputs.lengths.iter().map(|&l| l as f64).collect();
            let rows = (objective * host_tensor(&counts, &inputs.token_logp)?)?.neg()?;
            let ones = Tensor::ones_like(&ratio)?;
            let outside = outside_count(&ratio, &ones, keep, lo, hi)?;
            (rows, outside as f64 / n)
        }
    };
    let scale: Vec<f64> = denominators.iter().map(|d| 1.0 / d).collect();
    let loss = (row_loss * host_tensor(&scale, &inputs.token_logp)?)?.sum_all()?;
    Ok((loss, vec![("clip_fraction", outside)]))
}

/// `min(r A, clip(r, 1 - lo, 1 + hi) A)`.
fn clipped(ratio: &Tensor, a: &Tensor, lo: f64, hi: f64) -> Result<Tensor> {
    let unclipped = ratio.broadcast_mul(a)?;
    let clipped = ratio
        .clamp(1.0 - lo as f32, 1.0 + hi as f32)?
        .broadcast_mul(a)?;
    Ok(unclipped.minimum(&clipped)?)
}

/// For `A < 0`: `max(objective, c A)`; else the objective.
fn dual_clipped(objective: &Tensor, a: &Tensor, c: f64) -> Result<Tensor> {
    let floor = (a * c)?.broadcast_as(objective.shape())?;
    let negative = a.lt(0f32)?.broadcast_as(objective.shape())?;
    Ok(negative.where_cond(&objective.maximum(&floor)?, objective)?)
}

/// How many of the kept rows' masked ratios lie outside `[1 - lo, 1 + hi]`.
fn outside_count(ratio: &Tensor, mask: &Tensor, keep: &[bool], lo: f64, hi: f64) -> Result<usize> {
    let r = ratio.detach().to_vec2::<f32>()?;
    let m = mask.to_vec2::<f32>()?;
    let mut count = 0;
    for ((row, mrow), &k) in r.iter().zip(&m).zip(keep) {
        if !k {
            continue;
        }
        count += row
            .iter()
            .zip(mrow)
            .filter(|&(&x, &mm)| mm != 0.0 && (f64::from(x) < 1.0 - lo || f64::from(x) > 1.0 + hi))
            .count();
    }
    Ok(count)
}

/// The policy-gradient settings [`super::Pg`] and [`super::Crpg`] share,
/// checked and turned into an [`Objective`].
pub(crate) struct PgSettings {
    pub clip_ratio: Option<f64>,
    pub clip_ratio_high: Option<f64>,
    pub dual_clip: Option<f64>,
    pub importance_sampling: ImportanceSampling,
    pub aggregation: Option<Aggregation>,
    pub norm_constant: Option<f64>,
    pub advantage: Advantage,
    pub adv_eps: Option<f64>,
    pub dynamic_sampling: bool,
    pub epochs: usize,
}

impl PgSettings {
    /// A bad value as `Error::config(field, message)`.
    pub fn check(&self) -> Result<()> {
        use crate::error::{check_config, Error};
        if let Some(eps) = self.clip_ratio {
            check_config("clip_ratio", eps, "in (0, 1)", |v| v > 0.0 && v < 1.0)?;
        }
        if let Some(eps) = self.clip_ratio_high {
            if self.clip_ratio.is_none() {
                return Err(Error::config("clip_ratio_high", "needs `clip_ratio`"));
            }
            check_config("clip_ratio_high", eps, "> 0", |v| v > 0.0)?;
        }
        if let Some(c) = self.dual_clip {
            if self.clip_ratio.is_none() || self.importance_sampling != ImportanceSampling::Token {
                return Err(Error::config(
                    "dual_clip",
                    "needs `clip_ratio` and token-level importance sampling",
                ));
            }
            check_config("dual_clip", c, "> 1", |v| v > 1.0)?;
        }
        if self.importance_sampling == ImportanceSampling::Sequence && self.clip_ratio.is_none() {
            return Err(Error::config(
                "importance_sampling",
                "`sequence` (GSPO) needs `clip_ratio`",
            ));
        }
        if self.aggregation() == Aggregation::SeqMeanTokenSumNorm && self.norm_constant.is_none() {
            return Err(Error::config(
                "norm_constant",
                "`aggregation: seq_mean_token_sum_norm` needs it: a constant such as the generation budget (train.sampling.max_new_tokens), as Dr. GRPO divides by",
            ));
        }
        if let Some(c) = self.norm_constant {
            check_config("norm_constant", c, "> 0", |v| v > 0.0)?;
            if self.aggregation() != Aggregation::SeqMeanTokenSumNorm {
                return Err(Error::config(
                    "norm_constant",
                    "only `aggregation: seq_mean_token_sum_norm` uses it",
                ));
            }
        }
        if let Some(eps) = self.adv_eps {
            check_config("adv_eps", eps, "> 0", |v| v > 0.0)?;
            if !matches!(self.advantage, Advantage::Grpo | Advantage::BatchNormalized) {
                return Err(Error::config(
                    "adv_eps",
                    "only `advantage: grpo` and `batch_normalized` divide by a std",
                ));
            }
        }
        if self.epochs == 0 {
            return Err(Error::config("epochs", "must be >= 1"));
        }
        Ok(())
    }

    /// 2 when a sample is measured against its prompt's others (a group
    /// estimator, or dynamic sampling, which drops prompts of one sample).
    pub fn min_generations(&self) -> usize {
        if self.advantage.is_group() || self.dynamic_sampling {
            2
        } else {
            1
        }
    }

    /// The aggregation; absent: `seq_mean_token_sum` for REINFORCE (the
    /// paper's CRPG), `token_mean` with a clipped ratio (PPO).
    pub fn aggregation(&self) -> Aggregation {
        self.aggregation.unwrap_or(if self.clip_ratio.is_some() {
            Aggregation::TokenMean
        } else {
            Aggregation::SeqMeanTokenSum
        })
    }

    pub fn objective(&self) -> Objective {
        Objective {
            clip: self
                .clip_ratio
                .map(|lo| (lo, self.clip_ratio_high.unwrap_or(lo))),
            importance_sampling: self.importance_sampling,
            dual_clip: self.dual_clip,
            aggregation: self.aggregation(),
            norm_constant: self.norm_constant,
        }
    }
}

/// The advantages of `rewards` under `advantage`, and which samples the
/// loss keeps. With dynamic sampling the prompts whose rewards are all
/// equal (a prompt with one sample among them) leave first and the
/// estimator sees only the rest, as DAPO filters before it normalizes;
/// a dropped sample's advantage is 0.
pub(crate) fn kept_advantages(
    inputs: &LossInputs,
    rewards: &[f64],
    advantage: Advantage,
    eps: f64,
    dynamic_sampling: bool,
) -> (Vec<f64>, Vec<bool>) {
    if !dynamic_sampling {
        let adv = advantages(advantage, rewards, &inputs.group, &inputs.lengths, eps);
        return (adv, vec![true; inputs.len()]);
    }
    let keep = informative(rewards, &inputs.group);
    let kept: Vec<usize> = (0..inputs.len()).filter(|&i| keep[i]).collect();
    let pick = |v: &[f64]| kept.iter().map(|&i| v[i]).collect::<Vec<_>>();
    let group: Vec<usize> = kept.iter().map(|&i| inputs.group[i]).collect();
    let lengths: Vec<usize> = kept.iter().map(|&i| inputs.lengths[i]).collect();
    let sub = advantages(advantage, &pick(rewards), &group, &lengths, eps);
    let mut adv = vec![0.0; inputs.len()];
    for (&i, a) in kept.iter().zip(sub) {
        adv[i] = a;
    }
    (adv, keep)
}

/// The objective's loss with advantages `adv` over the samples with
/// `keep`: what [`super::Pg`] and [`super::Crpg`] do after choosing their
/// rewards and estimating. Logs `zero_variance_groups` (prompts whose
/// rewards are all equal, which a group estimator gives no signal),
/// `groups_dropped` with dynamic sampling, and the objective's statistics.
pub(crate) fn loss_of_advantages(
    inputs: &LossInputs,
    rewards: &[f64],
    adv: &[f64],
    keep: &[bool],
    dynamic_sampling: bool,
    obj: &Objective,
) -> Result<(Tensor, Vec<(&'static str, f64)>)> {
    let flat_groups = zero_variance_groups(rewards, &inputs.group);
    let mut stats = vec![("zero_variance_groups", flat_groups as f64)];
    if dynamic_sampling {
        stats.push(("groups_dropped", flat_groups as f64));
    }
    let (loss, more) = policy_loss(inputs, adv, keep, obj)?;
    stats.extend(more);
    Ok((loss, stats))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};
    use crate::optim::{Advantage, Crpg, Pg, TaskLoss};
    use candle_core::Device;

    fn objective(
        clip: Option<(f64, f64)>,
        level: ImportanceSampling,
        dual_clip: Option<f64>,
        aggregation: Aggregation,
    ) -> Objective {
        Objective {
            clip,
            importance_sampling: level,
            dual_clip,
            aggregation,
            norm_constant: Some(4.0),
        }
    }

    /// Every objective's gradient w.r.t. the logits, against central
    /// finite differences, with behaviour log-probs shifted so that ratios
    /// fall inside and on both sides outside the clip range (and past the
    /// dual clip), away from the kinks.
    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let lengths = [3, 2, 3, 1];
        let tiny = Tiny::new(&lengths, 3, 5, 23);
        let base = Case::new(&[0, 0, 1, 1]).lengths(&lengths);
        let shifts = Tensor::new(
            &[
                [0.0f32, 0.5, -0.5],
                [0.1, -1.3, 0.0],
                [0.3, -0.05, 0.6],
                [-0.3, 0.0, 0.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let z0 = Tensor::from_vec(tiny.logits.clone(), tiny.shape(), &Device::Cpu).unwrap();
        let old = ((tiny.token_logp(&z0).unwrap() - shifts).unwrap() * tiny.mask()).unwrap();
        let adv = [0.7, -1.1, 0.4, -0.2];
        let aggs = [
            Aggregation::TokenMean,
            Aggregation::SeqMeanTokenMean,
            Aggregation::SeqMeanTokenSum,
            Aggregation::SeqMeanTokenSumNorm,
        ];
        let token = ImportanceSampling::Token;
        let mut objectives = Vec::new();
        for agg in aggs {
            objectives.push(objective(None, token, None, agg));
            objectives.push(objective(Some((0.2, 0.28)), token, None, agg));
            objectives.push(objective(Some((0.2, 0.2)), token, Some(3.0), agg));
            objectives.push(objective(
                Some((0.3, 0.4)),
                ImportanceSampling::Sequence,
                None,
                agg,
            ));
        }
        for obj in objectives {
            for keep in [[true; 4], [false, false, true, true]] {
                check_gradient(&tiny.logits, tiny.shape(), |z| {
                    let (_, mut inputs) = base.build();
                    inputs.token_logp = tiny.token_logp(z)?;
                    inputs.token_logp_old = old.clone();
                    inputs.seq_logp = inputs.token_logp.sum(1)?;
                    Ok(policy_loss(&inputs, &adv, &keep, &obj)?.0)
                });
            }
        }
    }

    #[test]
    fn aggregations_by_hand_under_reinforce() {
        // seq_logp = [-1, -2, -3]; lengths [2, 1, 3] (T = 6); A = [1, -1, 2].
        let (_, inputs) = Case::new(&[0, 0, 1])
            .seq(&[-1.0, -2.0, -3.0])
            .lengths(&[2, 1, 3])
            .build();
        let adv = [1.0, -1.0, 2.0];
        let keep = [true; 3];
        let at = |agg| {
            let obj = objective(None, ImportanceSampling::Token, None, agg);
            value(&policy_loss(&inputs, &adv, &keep, &obj).unwrap().0)
        };
        // -Σ A_i seqlogp_i = -(-1 + 2 - 6) = 5.
        assert!((at(Aggregation::TokenMean) - 5.0 / 6.0).abs() < 1e-6);
        assert!((at(Aggregation::SeqMeanTokenSum) - 5.0 / 3.0).abs() < 1e-6);
        // (1/3)(1/2 - 2/1 + 6/3) = 0.5/3.
        assert!((at(Aggregation::SeqMeanTokenMean) - 0.5 / 3.0).abs() < 1e-6);
        assert!((at(Aggregation::SeqMeanTokenSumNorm) - 5.0 / 12.0).abs() < 1e-6);
        // Dropping the last sample: N = 2, T = 3, -Σ = -(-1 + 2) = -1.
        let obj = objective(
            None,
            ImportanceSampling::Token,
            None,
            Aggregation::TokenMean,
        );
        let v = value(
            &policy_loss(&inputs, &adv, &[true, true, false], &obj)
                .unwrap()
                .0,
        );
        assert!((v + 1.0 / 3.0).abs() < 1e-6);
        // Nothing kept: a connected zero.
        let v = value(&policy_loss(&inputs, &adv, &[false; 3], &obj).unwrap().0);
        assert_eq!(v, 0.0);
    }

    #[test]
    fn grpo_on_a_group_whose_samples_all_violate_gives_no_signal() {
        // CRPG gates both samples of prompt 1 to 0: their GRPO advantages
        // are 0, so they get no gradient, and the prompt is counted; with
        // dynamic sampling it is dropped.
        let case = Case::new(&[0, 0, 1, 1])
            .calibrated(&[0.9, 0.2, 0.8, 0.7])
            .positive(&[true, true, false, false]);
        let (var, inputs) = case.build();
        let crpg = Crpg {
            advantage: Advantage::Grpo,
            ..Crpg::default()
        };
        let out = crpg.loss(&inputs).unwrap();
        assert_eq!(out.stat("zero_variance_groups"), Some(1.0));
        assert_eq!(out.stat("groups_dropped"), None);
        let g = grad_of(&var, &out.loss);
        assert!(
            g[0] < 0.0 && g[1] > 0.0 && g[2] == 0.0 && g[3] == 0.0,
            "{g:?}"
        );
        let (var, inputs) = case.build();
        let out = Crpg {
            dynamic_sampling: true,
            ..crpg.clone()
        }
        .loss(&inputs)
        .unwrap();
        assert_eq!(out.stat("groups_dropped"), Some(1.0));
        let g = grad_of(&var, &out.loss);
        assert!(g[2] == 0.0 && g[3] == 0.0, "{g:?}");
        // The batch baseline does push the violations down...
        let (var, inputs) = case.build();
        let g = grad_of(&var, &Crpg::default().loss(&inputs).unwrap().loss);
        assert!(g[2] > 0.0 && g[3] > 0.0, "{g:?}");
        // ...unless dynamic sampling drops them first; the baseline is then
        // the mean of the kept samples: R~ = [0.9, 0.2], A = [0.35, -0.35].
        let (var, inputs) = case.build();
        let out = Crpg {
            dynamic_sampling: true,
            ..Crpg::default()
        }
        .loss(&inputs)
        .unwrap();
        assert_close(
            &grad_of(&var, &out.loss),
            &[-0.35 / 2.0, 0.35 / 2.0, 0.0, 0.0],
            1e-6,
        );
    }

    #[test]
    fn bad_settings_are_errors_naming_the_key() {
        let cases = [
            (
                Pg {
                    clip_ratio_high: Some(0.3),
                    ..Pg::default()
                },
                "clip_ratio_high",
            ),
            (
                Pg {
                    clip_ratio: Some(0.2),
                    dual_clip: Some(0.5),
                    ..Pg::default()
                },
                "dual_clip",
            ),
            (
                Pg {
                    dual_clip: Some(3.0),
                    ..Pg::default()
                },
                "dual_clip",
            ),
            (
                Pg {
                    importance_sampling: ImportanceSampling::Sequence,
                    ..Pg::default()
                },
                "importance_sampling",
            ),
            (
                Pg {
                    aggregation: Some(Aggregation::SeqMeanTokenSumNorm),
                    ..Pg::default()
                },
                "norm_constant",
            ),
            (
                Pg {
                    advantage: Advantage::Grpo,
                    adv_eps: Some(0.0),
                    ..Pg::default()
                },
                "adv_eps",
            ),
            (
                Pg {
                    adv_eps: Some(1e-4),
                    ..Pg::default()
                },
                "adv_eps",
            ),
            (
                Pg {
                    norm_constant: Some(8.0),
                    ..Pg::default()
                },
                "norm_constant",
            ),
            (
                Pg {
                    advantage: Advantage::Grpo,
                    adv_eps: Some(-1.0),
                    ..Pg::default()
                },
                "adv_eps",
            ),
            (
                Pg {
                    epochs: 0,
                    ..Pg::default()
                },
                "epochs",
            ),
        ];
        for (pg, key) in cases {
            let settings = pg.settings();
            let err = settings.check().unwrap_err().to_string();
            assert!(err.contains(&format!("`{key}`")), "{key}: {err}");
        }
    }
}
