//! Per-task losses (docs/algorithm.md §3 and §5) as pure functions of one
//! task's minibatch.
//!
//! A minibatch is `N = G x K` samples: G prompts, K responses each, in
//! [`LossInputs`]. Every loss returns a scalar, differentiable tensor and a
//! few statistics ([`LossOutput`]); the trainer backpropagates each task's
//! loss on its own and merges the gradients `g = Σ_l rho_l g_l`.
//!
//! The constrained optimizers of CGPO:
//! - [`crpg_loss`]: calibrated-regularized policy gradient,
//!   `-(1/n) Σ_i seqlogp(a_i) (R~_cr,i - mean R~_cr)` with
//!   `R~_cr = max(1 - logratio / KL_max, 0) * y * R_calib`.
//! - [`codpo_loss`]: constrained online DPO on the pair (best positive,
//!   worst negative) of each prompt, with an NLL term on the chosen response.
//! - [`crraft_loss`]: calibrated-regularized reward-ranked fine-tuning on the
//!   best positive within the KL budget, else the baseline response `a_bar`.
//!
//! and the baselines of the ablations (section 5): [`pg_loss`] (unconstrained
//! policy gradient, optionally with PPO's clipped ratio), [`online_dpo_loss`]
//! and [`raft_loss`], which ignore the judges. CRPG and PG share the
//! field's advantage estimators ([`advantage`]: GRPO, Dr. GRPO, RLOO,
//! REINFORCE++) and policy objectives ([`objective`]: PPO-clip, GSPO,
//! DAPO's clip-higher and dynamic sampling, four loss aggregations); the
//! registry names the recipes (`grpo`, `dapo`, ...; [`Pg::preset`]).
//!
//! Every weight is a detached number computed on the host (`f64`) from the
//! rewards, the judgements and the *behaviour* log-ratio
//! `logratio(a) = Σ_t (log pi_old - log pi_ref)` (a decision of docs/algorithm.md §3), and
//! only multiplies the differentiable sequence log-probs. A loss with
//! nothing to learn from (every prompt skipped) is a zero that is still
//! connected to the graph, so that `backward` works, and says so in its
//! statistics.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use cgpo::optim::{Crpg, LossInputs, TaskLoss};
//! let dev = Device::Cpu;
//! // One prompt, two one-token responses: the first passes its judges.
//! let seq = Var::new(&[-1.0f32, -2.0], &dev)?;
//! let tok = seq.as_tensor().reshape((2, 1))?;
//! let zeros = Tensor::zeros((2, 1), candle_core::DType::F32, &dev)?;
//! let inputs = LossInputs {
//!     seq_logp: seq.as_tensor().clone(),
//!     seq_logp_ref: vec![-1.0, -2.0],
//!     seq_logp_old: vec![-1.0, -2.0],
//!     token_logp: tok,
//!     token_logp_old: zeros.clone(),
//!     token_logp_ref: zeros,
//!     mask: Tensor::ones((2, 1), candle_core::DType::F32, &dev)?,
//!     raw: vec![1.0, 3.0],
//!     calibrated: vec![0.6, 0.9],
//!     positive: vec![true, false],
//!     group: vec![0, 0],
//!     lengths: vec![1, 1],
//!     baseline_seq_logp: vec![None],
//!     logits: None,
//! };
//! let out = Crpg { kl_max: 10.0, ..Crpg::default() }.loss(&inputs)?;
//! // R~_cr = [0.6, 0] (the second sample violates), advantages [0.3, -0.3]:
//! // loss = -(1/2) (-1 * 0.3 + -2 * -0.3) = -0.15.
//! assert!((out.loss.to_scalar::<f32>()? + 0.15).abs() < 1e-6);
//! let grads = out.loss.backward()?;
//! assert_eq!(grads.get(&seq).unwrap().to_vec1::<f32>()?, [-0.15, 0.15]);
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod advantage;
pub mod codpo;
pub mod crpg;
pub mod crraft;
mod loss;
pub mod objective;
pub mod online_dpo;
pub mod pg;
pub mod raft;
#[cfg(test)]
pub(crate) mod testutil;

use candle_core::{DType, Tensor};

pub use advantage::Advantage;
pub use codpo::codpo_loss;
pub use codpo::Codpo;
pub use crpg::crpg_loss;
pub use crpg::Crpg;
pub use crraft::crraft_loss;
pub use crraft::Crraft;
pub use loss::{LossFactory, LossRegistry, LossSpec, TaskLoss};
pub use objective::{Aggregation, ImportanceSampling};
pub use online_dpo::online_dpo_loss;
pub use online_dpo::OnlineDpo;
pub use pg::pg_loss;
pub use pg::{Pg, RewardKind};
pub use raft::raft_loss;
pub use raft::Raft;

use crate::error::{Error, Result};
use crate::ops::connected_zero;

/// One task's minibatch as the losses see it: `N = G x K` samples (a
/// prompt's samples are usually consecutive, but the losses only use
/// `group`). Per-sample vectors have length N; per-token tensors are
/// `[N, R]` f32 with R the longest response, 0 on padding.
#[derive(Clone, Debug)]
pub struct LossInputs {
    /// `[N]` f32: Σ_t log pi_theta(a_t) over each response's tokens, with
    /// gradient (from the current policy's forward).
    pub seq_logp: Tensor,
    /// `[N]` Σ_t log pi_ref (detached numbers).
    pub seq_logp_ref: Vec<f64>,
    /// `[N]` Σ_t behaviour (rollout-time) log-probs (detached numbers).
    pub seq_logp_old: Vec<f64>,
    /// `[N, R]` f32 per-token log pi_theta with gradient, 0 on padding.
    pub token_logp: Tensor,
    /// `[N, R]` f32 per-token behaviour log-probs (detached), 0 on padding.
    pub token_logp_old: Tensor,
    /// `[N, R]` f32 per-token reference log-probs (detached), 0 on padding.
    pub token_logp_ref: Tensor,
    /// `[N, R]` f32, 1 on response tokens, 0 on padding; row i sums to
    /// `lengths[i]`.
    pub mask: Tensor,
    /// The raw reward r(s, a).
    pub raw: Vec<f64>,
    /// The calibrated reward `R_calib = sigmoid(r - r(a_bar))` in (0, 1), or
    /// whatever reward the task weights samples by (the raw reward under the
    /// raw-reward ablation).
    pub calibrated: Vec<f64>,
    /// y(a): every judge of the task passed.
    pub positive: Vec<bool>,
    /// The prompt (0..G) of each sample.
    pub group: Vec<usize>,
    /// Response tokens per sample, |a|.
    pub lengths: Vec<usize>,
    /// Per prompt (length G): Σ_t log pi_theta of the baseline response
    /// a_bar (a scalar tensor with gradient) when a_bar exists and passes
    /// every judge; `None` otherwise. Used by the CRRAFT fallback only.
    pub baseline_seq_logp: Vec<Option<Tensor>>,
    /// `[N, R, V]` f32 logits of the policy over the response positions,
    /// with gradient, when the loss asks for them
    /// ([`TaskLoss::needs_logits`]); else `None`.
    pub logits: Option<Tensor>,
}

/// A loss and what it did.
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// Scalar f32, differentiable w.r.t. the policy.
    pub loss: Tensor,
    /// Named statistics for metrics, e.g. `("samples_used", 5.0)`,
    /// `("prompts_skipped", 1.0)`, `("mean_weight", 0.3)`.
    pub stats: Vec<(&'static str, f64)>,
}

impl LossOutput {
    /// The statistic called `name`, if the loss reported it.
    pub fn stat(&self, name: &str) -> Option<f64> {
        self.stats.iter().find(|(k, _)| *k == name).map(|&(_, v)| v)
    }
}

/// An `Error::Op` of the losses.
pub(crate) fn loss_error(message: impl Into<String>) -> Error {
    Error::Op {
        op: "loss",
        message: message.into(),
    }
}

impl LossInputs {
    /// The detached sequence log-ratio of docs/algorithm.md §3,
    /// `logratio(a) = seq_logp_old - seq_logp_ref` per sample.
    pub fn logratio(&self) -> Vec<f64> {
        self.seq_logp_old
            .iter()
            .zip(&self.seq_logp_ref)
            .map(|(old, r)| old - r)
            .collect()
    }

    /// N, the number of samples.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// G, the number of prompts.
    pub fn prompts(&self) -> usize {
        self.baseline_seq_logp.len()
    }

    /// Checks that every length and shape agrees, every tensor is f32 on the
    /// device of `seq_logp`, every number is finite, every group is below G
    /// and the mask's rows sum to `lengths`.
    pub fn validate(&self) -> Result<()> {
        let n = self.check_seq_logp()?;
        self.check_host_lengths(n)?;
        self.check_host_values()?;
        self.check_tokens(n)?;
        self.check_baselines()
    }

    fn check_seq_logp(&self) -> Result<usize> {
        let n = match self.seq_logp.dims() {
            [n] => *n,
            d => return Err(loss_error(format!("seq_logp must be [N], got {d:?}"))),
        };
        check_f32("seq_logp", &self.seq_logp)?;
        let v = self.seq_logp.to_vec1::<f32>()?;
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(loss_error(format!("seq_logp[{i}] is {}", v[i])));
        }
        Ok(n)
    }

    fn check_host_lengths(&self, n: usize) -> Result<()> {
        let lens = [
            ("seq_logp_ref", self.seq_logp_ref.len()),
            ("seq_logp_old", self.seq_logp_old.len()),
            ("raw", self.raw.len()),
            ("calibrated", self.calibrated.len()),
            ("positive", self.positive.len()),
            ("group", self.group.len()),
            ("lengths", self.lengths.len()),
        ];
        if let Some((name, len)) = lens.iter().find(|(_, len)| *len != n) {
            return Err(loss_error(format!(
                "{name} has {len} entries but seq_logp has {n}"
            )));
        }
        let g = self.prompts();
        if let Some((i, p)) = self.group.iter().enumerate().find(|(_, &p)| p >= g) {
            return Err(loss_error(format!(
                "group[{i}] = {p} but there are {g} prompts (baseline_seq_logp)"
            )));
        }
        Ok(())
    }

    fn check_host_values(&self) -> Result<()> {
        let vecs = [
            ("seq_logp_ref", &self.seq_logp_ref),
            ("seq_logp_old", &self.seq_logp_old),
            ("raw", &self.raw),
            ("calibrated", &self.calibrated),
        ];
        for (name, v) in vecs {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(loss_error(format!("{name}[{i}] is {}", v[i])));
            }
        }
        Ok(())
    }

    fn check_tokens(&self, n: usize) -> Result<()> {
        let r = self.mask.dims2().map(|(_, r)| r).unwrap_or(0);
        let tensors = [
            ("token_logp", &self.token_logp),
            ("token_logp_old", &self.token_logp_old),
            ("token_logp_ref", &self.token_logp_ref),
            ("mask", &self.mask),
        ];
        for (name, t) in tensors {
            if t.dims() != [n, r] {
                return Err(loss_error(format!(
                    "{name} must be [N, R] = [{n}, {r}], got {:?}",
                    t.dims()
                )));
            }
            check_f32(name, t)?;
            self.check_device(name, t)?;
            let total = t.sum_all()?.to_scalar::<f32>()?;
            if !total.is_finite() {
                return Err(loss_error(format!("{name} has non-finite values")));
            }
        }
        let rows = self.mask.sum(1)?.to_vec1::<f32>()?;
        for (i, (&m, &len)) in rows.iter().zip(&self.lengths).enumerate() {
            if m != len as f32 {
                return Err(loss_error(format!(
                    "mask row {i} has {m} response tokens but lengths[{i}] = {len}"
                )));
            }
        }
        Ok(())
    }

    fn check_baselines(&self) -> Result<()> {
        for (g, b) in self.baseline_seq_logp.iter().enumerate() {
            let Some(b) = b else { continue };
            let name = "baseline_seq_logp";
            if b.elem_count() != 1 {
                return Err(loss_error(format!(
                    "{name}[{g}] must be a scalar, got {:?}",
                    b.dims()
                )));
            }
            check_f32(name, b)?;
            self.check_device(name, b)?;
            let v = b.flatten_all()?.to_vec1::<f32>()?[0];
            if !v.is_finite() {
                return Err(loss_error(format!("{name}[{g}] is {v}")));
            }
        }
        Ok(())
    }

    fn check_device(&self, name: &str, t: &Tensor) -> Result<()> {
        if t.device().same_device(self.seq_logp.device()) {
            Ok(())
        } else {
            Err(loss_error(format!(
                "{name} is on {:?} but seq_logp is on {:?}",
                t.device(),
                self.seq_logp.device()
            )))
        }
    }

    /// The sample indices of each prompt, in sample order (length G).
    pub(crate) fn groups(&self) -> Vec<Vec<usize>> {
        let mut groups = vec![Vec::new(); self.prompts()];
        for (i, &g) in self.group.iter().enumerate() {
            groups[g].push(i);
        }
        groups
    }

    /// A zero loss that is still connected to the graph (so `backward`
    /// works when every prompt was skipped).
    pub(crate) fn zero_loss(&self) -> Result<Tensor> {
        connected_zero(&self.seq_logp)
    }

    /// `Σ_i w_i seq_logp_i` with detached host weights (length N).
    pub(crate) fn weighted_seq_logp(&self, weights: &[f64]) -> Result<Tensor> {
        let w = host_tensor(weights, &self.seq_logp)?;
        Ok((&self.seq_logp * w)?.sum_all()?)
    }
}

fn check_f32(name: &str, t: &Tensor) -> Result<()> {
    if t.dtype() == DType::F32 {
        Ok(())
    } else {
        Err(loss_error(format!(
            "{name} must be f32, got {:?}",
            t.dtype()
        )))
    }
}

/// Host numbers as an f32 tensor `[len]` on the device of `like`.
pub(crate) fn host_tensor(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let v: Vec<f32> = values.iter().map(|&x| x as f32).collect();
    Ok(Tensor::from_vec(v, values.len(), like.device())?)
}

/// The first index of `candidates` with the largest `key` (comparisons
/// only, so negative keys work).
pub(crate) fn argmax(candidates: impl IntoIterator<Item = usize>, key: &[f64]) -> Option<usize> {
    candidates.into_iter().fold(None, |best, i| match best {
        Some(b) if key[b] >= key[i] => Some(b),
        _ => Some(i),
    })
}

/// The first index of `candidates` with the smallest `key`.
pub(crate) fn argmin(candidates: impl IntoIterator<Item = usize>, key: &[f64]) -> Option<usize> {
    candidates.into_iter().fold(None, |best, i| match best {
        Some(b) if key[b] <= key[i] => Some(b),
        _ => Some(i),
    })
}

/// The mean, 0 for no values.
pub(crate) fn mean(values: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::Case;
    use super::*;

    #[test]
    fn argmax_and_argmin_use_comparisons_and_take_the_first_tie() {
        let key = [-3.0, -1.0, -1.0, -2.0];
        assert_eq!(argmax([0, 1, 2, 3], &key), Some(1));
        assert_eq!(argmin([0, 1, 2, 3], &key), Some(0));
        assert_eq!(argmax([0, 3], &key), Some(3));
        assert_eq!(argmin([], &key), None);
        assert_eq!(mean([]), 0.0);
    }

    #[test]
    fn logratio_groups_and_validation() {
        let case = Case::new(&[0, 0, 1]);
        let (_, inputs) = case.build();
        assert_eq!(inputs.len(), 3);
        assert_eq!(inputs.prompts(), 2);
        assert_eq!(inputs.groups(), [vec![0, 1], vec![2]]);
        assert_eq!(inputs.logratio(), [0.0, 0.0, 0.0]);
        inputs.validate().unwrap();
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_field() {
        type Edit = Box<dyn Fn(&mut LossInputs)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|i| {
                    i.raw.pop();
                }),
                "raw has 2 entries",
            ),
            (
                Box::new(|i| i.calibrated[1] = f64::NAN),
                "calibrated[1] is NaN",
            ),
            (
                Box::new(|i| i.group[2] = 2),
                "group[2] = 2 but there are 2 prompts",
            ),
            (
                Box::new(|i| i.token_logp = i.token_logp.narrow(1, 0, 1).unwrap()),
                "token_logp must be [N, R] = [3, 2], got [3, 1]",
            ),
            (
                Box::new(|i| i.mask = i.mask.to_dtype(DType::U8).unwrap()),
                "mask must be f32, got U8",
            ),
            (
                Box::new(|i| i.lengths[0] = 1),
                "mask row 0 has 2 response tokens but lengths[0] = 1",
            ),
            (
                Box::new(|i| i.seq_logp = i.seq_logp.reshape((3, 1)).unwrap()),
                "seq_logp must be [N], got [3, 1]",
            ),
            (
                Box::new(|i| {
                    let t = Tensor::new(&[1.0f32, 2.0], i.seq_logp.device()).unwrap();
                    i.baseline_seq_logp[0] = Some(t);
                }),
                "baseline_seq_logp[0] must be a scalar, got [2]",
            ),
            (
                Box::new(|i| {
                    let t = Tensor::new(f32::INFINITY, i.seq_logp.device()).unwrap();
                    i.baseline_seq_logp[1] = Some(t);
                }),
                "baseline_seq_logp[1] is inf",
            ),
        ];
        let case = Case::new(&[0, 0, 1]).lengths(&[2, 1, 2]);
        for (edit, want) in cases {
            let (_, mut inputs) = case.build();
            edit(&mut inputs);
            let err = inputs.validate().unwrap_err();
            assert!(
                matches!(&err, Error::Op { op: "loss", message } if message.contains(want)),
                "{want}: {err}"
            );
            assert!(Raft {}.loss(&inputs).is_err(), "{want}");
        }
    }

    #[test]
    fn an_empty_minibatch_gives_a_connected_zero() {
        let (var, inputs) = Case::new(&[]).build();
        let cfgs: [Box<dyn TaskLoss>; 6] = [
            Box::new(Crpg {
                kl_max: 1.0,
                ..Crpg::default()
            }),
            Box::new(Codpo {
                beta: 0.1,
                lambda: 1.0,
            }),
            Box::new(Crraft { kl_max: 1.0 }),
            Box::new(Pg {
                clip_ratio: Some(0.2),
                ..Pg::default()
            }),
            Box::new(OnlineDpo {
                beta: 0.1,
                lambda: 1.0,
            }),
            Box::new(Raft {}),
        ];
        for cfg in cfgs {
            let out = cfg.loss(&inputs).unwrap();
            assert_eq!(out.loss.to_scalar::<f32>().unwrap(), 0.0, "{}", cfg.name());
            let grads = out.loss.backward().unwrap();
            assert_eq!(grads.get(&var).unwrap().dims(), [0], "{}", cfg.name());
        }
    }
}
