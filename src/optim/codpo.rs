//! CODPO, constrained online DPO (docs/algorithm.md §3). Per prompt with K
//! samples:
//!
//! ```text
//! a+ = argmax over positives of r;   no positive -> skip the prompt
//! a- = argmin over negatives of r;   no negative -> argmin of r over all K
//! loss_s = -[ log sigmoid( beta (logratio(a+) - logratio(a-)) ) + (lambda / |a+|) seqlogp_w(a+) ]
//! ```
//!
//! Here `logratio(a) = seqlogp_w(a) - seqlogp_ref(a)` uses the current
//! policy, with gradient. The pair is chosen by comparisons over index sets
//! (never by multiplying rewards with 0/1 masks, which picks the wrong
//! sample when rewards are negative). When a+ and a- are the same sample
//! (no negative and every reward equal, or K = 1) the pair says nothing and
//! the prompt is skipped too. The loss is the mean of `loss_s` over the
//! prompts with a pair. `|a+|` is taken as at least 1.

use candle_core::Tensor;

use super::loss::{Settings, TaskLoss};
use super::{argmax, argmin, host_tensor, mean, LossInputs, LossOutput};
use crate::error::check_config;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// Constrained online DPO's settings (`{"name": "codpo", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Codpo {
    pub beta: f64,
    /// Weight of the NLL term on the chosen response.
    pub lambda: f64,
}

impl Default for Codpo {
    fn default() -> Self {
        Self {
            beta: 0.1,
            lambda: 5.0,
        }
    }
}

impl TaskLoss for Codpo {
    fn name(&self) -> &str {
        "codpo"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        codpo_loss(inputs, self.beta, self.lambda)
    }

    /// A pair needs two responses.
    fn min_generations(&self) -> usize {
        2
    }
}

impl Settings for Codpo {
    fn check(&self) -> Result<()> {
        check_config("beta", self.beta, "> 0", |v| v > 0.0)?;
        check_config("lambda", self.lambda, ">= 0", |v| v >= 0.0)
    }
}

/// A preference pair: sample indices of the chosen (a+) and rejected (a-)
/// responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pair {
    pub chosen: usize,
    pub rejected: usize,
}

/// How the prompts of a minibatch were paired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pairing {
    pub pairs: Vec<Pair>,
    /// Prompts without a positive sample.
    pub no_positive: usize,
    /// Prompts whose a+ and a- coincide.
    pub no_pair: usize,
    /// Pairs whose a- came from all K samples because none was negative.
    pub rejected_from_all: usize,
}

/// CODPO's pair of every prompt (see the module docs).
pub fn codpo_pairs(inputs: &LossInputs) -> Pairing {
    let mut out = Pairing::default();
    for members in inputs.groups() {
        let positives = members.iter().copied().filter(|&i| inputs.positive[i]);
        let Some(chosen) = argmax(positives, &inputs.raw) else {
            out.no_positive += 1;
            continue;
        };
        let negatives = members.iter().copied().filter(|&i| !inputs.positive[i]);
        let rejected = match argmin(negatives, &inputs.raw) {
            Some(r) => r,
            None => {
                out.rejected_from_all += 1;
                argmin(members.iter().copied(), &inputs.raw).unwrap_or(chosen)
            }
        };
        if rejected == chosen {
            out.no_pair += 1;
            continue;
        }
        out.pairs.push(Pair { chosen, rejected });
    }
    out
}

/// The CODPO loss of one task's minibatch.
pub fn codpo_loss(inputs: &LossInputs, beta: f64, lambda: f64) -> Result<LossOutput> {
    inputs.validate()?;
    let pairing = codpo_pairs(inputs);
    let mut out = dpo_loss(inputs, &pairing.pairs, beta, lambda)?;
    out.stats.extend([
        ("prompts_no_positive", pairing.no_positive as f64),
        ("prompts_no_pair", pairing.no_pair as f64),
        ("rejected_from_all", pairing.rejected_from_all as f64),
    ]);
    Ok(out)
}

/// `mean over pairs of softplus(-z) - (lambda / |a+|) seqlogp_w(a+)` with
/// `z = beta ((s+ - ref+) - (s- - ref-))`; `-log sigmoid(z) = softplus(-z)`.
/// Shared by CODPO and online DPO; a connected zero without pairs.
pub(crate) fn dpo_loss(
    inputs: &LossInputs,
    pairs: &[Pair],
    beta: f64,
    lambda: f64,
) -> Result<LossOutput> {
    let stats = dpo_stats(inputs, pairs, beta)?;
    if pairs.is_empty() {
        return Ok(LossOutput {
            loss: inputs.zero_loss()?,
            stats,
        });
    }
    let dev = inputs.seq_logp.device();
    let ids = |f: fn(&Pair) -> usize| {
        let v: Vec<u32> = pairs.iter().map(|p| f(p) as u32).collect();
        Tensor::from_vec(v, pairs.len(), dev)
    };
    let s_plus = inputs.seq_logp.index_select(&ids(|p| p.chosen)?, 0)?;
    let s_minus = inputs.seq_logp.index_select(&ids(|p| p.rejected)?, 0)?;
    let ref_diff: Vec<f64> = pairs
        .iter()
        .map(|p| inputs.seq_logp_ref[p.chosen] - inputs.seq_logp_ref[p.rejected])
        .collect();
    let z = (((s_plus.clone() - s_minus)? - host_tensor(&ref_diff, &s_plus)?)? * beta)?;
    let nll: Vec<f64> = pairs
        .iter()
        .map(|p| lambda / inputs.lengths[p.chosen].max(1) as f64)
        .collect();
    let per_pair = (softplus(&z.neg()?)? - (s_plus * host_tensor(&nll, &z)?)?)?;
    Ok(LossOutput {
        loss: (per_pair.sum_all()? / pairs.len() as f64)?,
        stats,
    })
}

/// `log(1 + exp(x))` computed stably as `relu(x) + log(1 + exp(-|x|))`.
pub(crate) fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok((x.relu()? + tail)?)
}

fn dpo_stats(inputs: &LossInputs, pairs: &[Pair], beta: f64) -> Result<Vec<(&'static str, f64)>> {
    let s = inputs.seq_logp.to_vec1::<f32>()?;
    let lr = |i: usize| f64::from(s[i]) - inputs.seq_logp_ref[i];
    let margins: Vec<f64> = pairs
        .iter()
        .map(|p| beta * (lr(p.chosen) - lr(p.rejected)))
        .collect();
    Ok(vec![
        ("pairs", pairs.len() as f64),
        ("prompts_skipped", (inputs.prompts() - pairs.len()) as f64),
        (
            "mean_reward_gap",
            mean(
                pairs
                    .iter()
                    .map(|p| inputs.raw[p.chosen] - inputs.raw[p.rejected]),
            ),
        ),
        ("mean_margin", mean(margins.iter().copied())),
        (
            "pair_accuracy",
            mean(margins.iter().map(|&m| f64::from(u8::from(m > 0.0)))),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Four prompts of K = 3 (samples 3g..3g+3):
    /// 0: r = [-3, -1, -2], y = [1, 1, 0]: all rewards negative.
    ///    a+ = 1 (r = -1); a- = 2, the only negative. (Masking rewards with
    ///    0/1 would score the negative sample 2 as 0 and pick it as a+.)
    /// 1: no positive: skipped.
    /// 2: r = [1, 3, 2], all positive: a+ = 7, a- = argmin over all = 6.
    /// 3: r = [-1, -1, -1], all positive: a+ = a- = 9: skipped.
    fn case() -> Case {
        Case::new(&[0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
            .raw(&[
                -3.0, -1.0, -2.0, -0.5, -0.2, -0.9, 1.0, 3.0, 2.0, -1.0, -1.0, -1.0,
            ])
            .positive(&[
                true, true, false, false, false, false, true, true, true, true, true, true,
            ])
            .seq(&[
                -9.0, -4.0, -6.0, -1.0, -1.0, -1.0, -3.0, -2.0, -5.0, -1.0, -1.0, -1.0,
            ])
            .reference(&[
                0.0, -5.0, -5.0, 0.0, 0.0, 0.0, -3.0, -4.0, -3.0, 0.0, 0.0, 0.0,
            ])
            .lengths(&[2, 4, 2, 2, 2, 2, 2, 5, 2, 2, 2, 2])
    }

    #[test]
    fn pairs_are_chosen_by_comparisons() {
        let (_, inputs) = case().build();
        let pairing = codpo_pairs(&inputs);
        assert_eq!(
            pairing.pairs,
            [
                Pair {
                    chosen: 1,
                    rejected: 2
                },
                Pair {
                    chosen: 7,
                    rejected: 6
                }
            ]
        );
        assert_eq!(
            (
                pairing.no_positive,
                pairing.no_pair,
                pairing.rejected_from_all
            ),
            (1, 1, 2)
        );
    }

    #[test]
    fn loss_and_gradient_by_hand() {
        let (var, inputs) = case().build();
        let (beta, lambda) = (0.5, 2.0);
        let out = codpo_loss(&inputs, beta, lambda).unwrap();
        // Pair (1, 2): logratios -4 - -5 = 1 and -6 - -5 = -1, z = 0.5 * 2 = 1;
        //   |a+| = 4: loss = -log sigmoid(1) - (2 / 4) * -4 = 0.31326 + 2.
        // Pair (7, 6): logratios -2 - -4 = 2 and -3 - -3 = 0, z = 1;
        //   |a+| = 5: loss = 0.31326 - (2 / 5) * -2 = 0.31326 + 0.8.
        let nls1 = -sigmoid(1.0).ln();
        let want = ((nls1 + 2.0) + (nls1 + 0.8)) / 2.0;
        assert!(
            (value(&out.loss) - want).abs() < 1e-5,
            "{}",
            value(&out.loss)
        );
        // d/ds+ = (-beta sigmoid(-z) - lambda/|a+|) / 2, d/ds- = beta sigmoid(-z) / 2.
        let g = beta * sigmoid(-1.0) / 2.0;
        let mut grad = [0.0; 12];
        grad[1] = -g - 0.5 / 2.0;
        grad[2] = g;
        grad[7] = -g - 0.4 / 2.0;
        grad[6] = g;
        assert_close(&grad_of(&var, &out.loss), &grad, 1e-6);
        assert_eq!(out.stat("pairs"), Some(2.0));
        assert_eq!(out.stat("prompts_skipped"), Some(2.0));
        assert_eq!(out.stat("pair_accuracy"), Some(1.0));
    }

    #[test]
    fn no_positive_anywhere_is_a_connected_zero() {
        let (var, inputs) = case().positive(&[false; 12]).build();
        let out = codpo_loss(&inputs, 0.1, 5.0).unwrap();
        assert_eq!(value(&out.loss), 0.0);
        assert_eq!(out.stat("prompts_no_positive"), Some(4.0));
        assert_close(&grad_of(&var, &out.loss), &[0.0; 12], 0.0);
    }

    #[test]
    fn softplus_is_stable() {
        let x = Tensor::new(&[-100.0f32, 0.0, 100.0], &candle_core::Device::Cpu).unwrap();
        let y = softplus(&x).unwrap().to_vec1::<f32>().unwrap();
        assert_close(&y, &[0.0, std::f64::consts::LN_2, 100.0], 1e-6);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let lengths = [2, 3, 1, 3, 2, 3];
        let tiny = Tiny::new(&lengths, 3, 4, 11);
        let base = Case::new(&[0, 0, 0, 1, 1, 1])
            .raw(&[-1.0, -2.0, -3.0, 2.0, 1.0, 0.5])
            .positive(&[true, false, true, true, true, true])
            .reference(&[-3.0, -2.5, -1.0, -4.0, -3.0, -3.5])
            .lengths(&lengths);
        check_gradient(&tiny.logits, tiny.shape(), |z| {
            let (_, mut inputs) = base.build();
            inputs.token_logp = tiny.token_logp(z)?;
            inputs.seq_logp = inputs.token_logp.sum(1)?;
            Ok(codpo_loss(&inputs, 0.5, 1.0)?.loss)
        });
    }
}
