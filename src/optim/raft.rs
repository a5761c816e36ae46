//! RAFT, reward-ranked fine-tuning without judges or KL filter (docs/algorithm.md
//! §5, an ablation of CRRAFT). Per prompt:
//!
//! ```text
//! a* = argmax over all K of r
//! loss = -(1/n) Σ_s seqlogp_w(a*_s)
//! ```
//!
//! with n the number of prompts that have samples; every chosen sample
//! weighs 1.

use super::loss::{Settings, TaskLoss};
use super::{argmax, mean, LossInputs, LossOutput};
use crate::error::Result;
use serde::{Deserialize, Serialize};

/// The RAFT baseline: no settings (`{"name": "raft"}`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Raft {}

impl TaskLoss for Raft {
    fn name(&self) -> &str {
        "raft"
    }

    fn loss(&self, inputs: &LossInputs) -> Result<LossOutput> {
        raft_loss(inputs)
    }
}

impl Settings for Raft {
    fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// The best sample of every prompt that has samples.
pub fn raft_choices(inputs: &LossInputs) -> Vec<usize> {
    inputs
        .groups()
        .into_iter()
        .filter_map(|members| argmax(members, &inputs.raw))
        .collect()
}

/// The RAFT loss of one task's minibatch (judges and KL ignored).
pub fn raft_loss(inputs: &LossInputs) -> Result<LossOutput> {
    inputs.validate()?;
    let chosen = raft_choices(inputs);
    let stats = vec![
        ("prompts_used", chosen.len() as f64),
        ("mean_reward", mean(chosen.iter().map(|&i| inputs.raw[i]))),
    ];
    if chosen.is_empty() {
        return Ok(LossOutput {
            loss: inputs.zero_loss()?,
            stats,
        });
    }
    let mut weights = vec![0.0; inputs.len()];
    for &i in &chosen {
        weights[i] = -1.0 / chosen.len() as f64;
    }
    Ok(LossOutput {
        loss: inputs.weighted_seq_logp(&weights)?,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, grad_of, value, Case, Tiny};

    #[test]
    fn loss_and_gradient_by_hand() {
        // Prompt 0: r = [0.1, 0.3, 0.2] -> a* = 1 (it violates and is far
        // past any KL budget: both ignored). Prompt 1: r = [-1, -3, -2] -> a* = 3.
        let (var, inputs) = Case::new(&[0, 0, 0, 1, 1, 1])
            .raw(&[0.1, 0.3, 0.2, -1.0, -3.0, -2.0])
            .positive(&[true, false, true, false, false, false])
            .old(&[0.0, 1000.0, 0.0, 0.0, 0.0, 0.0])
            .seq(&[-1.0, -2.0, -3.0, -4.0, -5.0, -6.0])
            .build();
        let out = raft_loss(&inputs).unwrap();
        // loss = -(1/2)(-2 + -4) = 3
        assert!((value(&out.loss) - 3.0).abs() < 1e-6);
        assert_close(
            &grad_of(&var, &out.loss),
            &[0.0, -0.5, 0.0, -0.5, 0.0, 0.0],
            1e-7,
        );
        assert_eq!(out.stat("prompts_used"), Some(2.0));
        assert!((out.stat("mean_reward").unwrap() + 0.35).abs() < 1e-12);
    }

    #[test]
    fn gradient_wrt_logits_matches_finite_differences() {
        let lengths = [2, 3, 3, 1];
        let tiny = Tiny::new(&lengths, 3, 4, 23);
        let base = Case::new(&[0, 0, 1, 1])
            .raw(&[1.0, 2.0, -1.0, -2.0])
            .lengths(&lengths);
        check_gradient(&tiny.logits, tiny.shape(), |z| {
            let (_, mut inputs) = base.build();
            inputs.token_logp = tiny.token_logp(z)?;
            inputs.seq_logp = inputs.token_logp.sum(1)?;
            Ok(raft_loss(&inputs)?.loss)
        });
    }
}
