//! Online DPO without judges (docs/algorithm.md §5, an ablation of CODPO):
//! per prompt the pair is chosen by the raw reward only,
//!
//! ```text
//! a+ = argmax over all K of r;   a- = argmin over all K of r
//! loss_s = -[ log sigmoid( beta (logratio(a+) - logratio(a-)) ) + (lambda / |a+|) seqlogp_w(a+) ]
//! ```
//!
//! the same loss as CODPO (mean over paired prompts, current-policy
//! log-ratio). A prompt whose samples all have the same reward is skipped.

use super::codpo::{dpo_loss, Pair};
use super::loss::{Settings, TaskLoss};
use super::{argmax, argmin, LossInputs, LossOutput};
use crate::error::check_config;
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// The online-DPO baseline's settings (`{"name": "online_dpo", ...}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnlineDpo {
    pub beta: f64,
    /// Weight of the NLL term on the chosen response.
    pub lambda: f64,
}

impl Default for OnlineDpo {
    fn default() -> Self {
        Self {
            beta: 0.1,
            lambda: 5.0,
        }
    }
}

impl TaskLoss for OnlineDpo {
    fn name(&self) -> &str {
        "online_dpo"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        online_dpo_loss(inputs, self.beta, self.lambda)
    }

    /// A pair needs two responses.
    fn min_generations(&self) -> usize {
        2
    }
}

impl Settings for OnlineDpo {
    fn check(&self) -> Result<()> {
        check_config("beta", self.beta, "> 0", |v| v > 0.0)?;
        check_config("lambda", self.lambda, ">= 0", |v| v >= 0.0)
    }
}

/// The (argmax r, argmin r) pair of every prompt whose rewards differ, and
/// how many prompts were skipped.
pub fn online_dpo_pairs(inputs: &LossInputs) -> (Vec<Pair>, usize) {
    let mut pairs = Vec::new();
    let mut skipped = 0;
    for members in inputs.groups() {
        let best = argmax(members.iter().copied(), &inputs.raw);
        let worst = argmin(members.iter().copied(), &inputs.raw);
        match (best, worst) {
            (Some(chosen), Some(rejected)) if inputs.raw[chosen] > inputs.raw[rejected] => {
                pairs.push(Pair { chosen, rejected })
            }
            _ => skipped += 1,
        }
    }
    (pairs, skipped)
}

/// The online DPO loss of one task's minibatch (judges ignored).
pub fn online_dpo_loss(inputs: &LossInputs, beta: f64, lambda: f64) -> Result<LossOutput> {
    inputs.validate()?;
    let (pairs, skipped) = online_dpo_pairs(inputs);
    let mut out = dpo_loss(inputs, &pairs, beta, lambda)?;
    out.stats.push(("prompts_equal_reward", skipped as f64));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Prompt 0: r = [0.5, -1, 2], every sample violating (ignored):
    /// a+ = 2, a- = 1. Prompt 1: r = [1, 1, 1]: skipped.
    fn case() -> Case {
        Case::new(&[0, 0, 0, 1, 1, 1])
            .raw(&[0.5, -1.0, 2.0, 1.0, 1.0, 1.0])
            .positive(&[false; 6])
            .seq(&[-1.0, -3.0, -2.0, -1.0, -1.0, -1.0])
            .reference(&[0.0, -1.0, -2.0, 0.0, 0.0, 0.0])
            .lengths(&[2, 2, 4, 2, 2, 2])
    }

    #[test]
    fn pairs_by_raw_reward_only() {
        let (_, inputs) = case().build();
        assert_eq!(
            online_dpo_pairs(&inputs),
            (
                vec![Pair {
                    chosen: 2,
                    rejected: 1
                }],
                1
            )
        );
    }

    #[test]
    fn loss_and_gradient_by_hand() {
        let (var, inputs) = case().build();
        let (beta, lambda) = (0.1, 5.0);
        let out = online_dpo_loss(&inputs, beta, lambda).unwrap();
        // logratio(a+) = -2 - -2 = 0, logratio(a-) = -3 - -1 = -2: z = 0.1 * 2 = 0.2.
        // loss = -log sigmoid(0.2) - (5 / 4) * -2 = 0.59814 + 2.5 (one pair).
        let want = -sigmoid(0.2).ln() + 2.5;
        assert!(
            (value(&out.loss) - want).abs() < 1e-5,
            "{}",
            value(&out.loss)
        );
        let g = beta * sigmoid(-0.2);
        assert_close(
            &grad_of(&var, &out.loss),
            &[0.0, g, -g - 1.25, 0.0, 0.0, 0.0],
            1e-6,
        );
        assert_eq!(out.stat("prompts_equal_reward"), Some(1.0));
    }

    #[test]
    fn equal_rewards_everywhere_is_a_connected_zero() {
        let (var, inputs) = case().raw(&[1.0; 6]).build();
        let out = online_dpo_loss(&inputs, 0.1, 5.0).unwrap();
        assert_eq!(value(&out.loss), 0.0);
        assert_close(&grad_of(&var, &out.loss), &[0.0; 6], 0.0);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let lengths = [2, 3, 1, 3];
        let tiny = Tiny::new(&lengths, 3, 4, 13);
        let base = Case::new(&[0, 0, 1, 1])
            .raw(&[-1.0, -2.0, 2.0, 1.0])
            .reference(&[-3.0, -2.5, -1.0, -4.0])
            .lengths(&lengths);
        check_gradient(&tiny.logits, tiny.shape(), |z| {
            let (_, mut inputs) = base.build();
            inputs.token_logp = tiny.token_logp(z)?;
            inputs.seq_logp = inputs.token_logp.sum(1)?;
            Ok(online_dpo_loss(&inputs, 0.5, 1.0)?.loss)
        });
    }
}
