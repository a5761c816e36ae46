//! Offline DPO (Rafailov et al. 2023), the warm-up before CGPO: on
//! preference pairs, with a frozen reference pi_ref (the policy as loaded,
//! usually the SFT model),
//!
//! ```text
//! r(x, y) = beta * (log pi(y | x) - log pi_ref(y | x))      (implicit reward)
//! loss    = mean over pairs of -log sigmoid(r(x, chosen) - r(x, rejected))
//! ```
//!
//! with sequence log-probs summed over response tokens. The statistics are
//! the implicit reward margin `r(chosen) - r(rejected)`, the fraction of
//! pairs where it is positive (`accuracy`), and the mean implicit reward of
//! each side (a negative `chosen_reward` means the chosen responses became
//! less likely than under the reference: DPO's known drift, which a small
//! learning rate or `nll_weight` holds back).
//!
//! With `nll_weight = lambda > 0` the loss adds
//! `lambda * mean(-log pi(chosen) / |chosen|)`, the per-token NLL of the
//! chosen response (as CODPO's lambda term, and RPO); 0 (the default) is
//! plain DPO. The loss is CODPO's without judges (`optim::codpo`), on fixed
//! pairs instead of sampled ones.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cgpo::pipeline::dpo_loss;
//! let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
//! // The policy equals the reference: every margin is 0, the loss ln 2.
//! let out = dpo_loss(&t(&[-3.0]), &t(&[-4.0]), &t(&[-3.0]), &t(&[-4.0]), 0.1)?;
//! assert!((out.loss.to_scalar::<f32>()? - 2f32.ln()).abs() < 1e-6);
//! assert_eq!(out.margins, [0.0]);
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::path::Path;

use candle_core::{Tensor, Var, D};

use super::data::PairExample;
use super::stage::{BatchLoss, Split, Stage};
use super::teacher_forced;
use crate::error::{Error, Result};
use crate::optim::codpo::softplus;
use crate::policy::Policy;
use crate::rollout::sequence_logprobs;
use crate::run_dir::POLICY_FILE;

/// The DPO loss of a batch of pairs and its per-pair numbers.
pub struct DpoLoss {
    /// Mean over pairs of `softplus(-margin)`.
    pub loss: Tensor,
    /// Per pair, `r(chosen) - r(rejected)` (detached).
    pub margins: Vec<f64>,
    /// Per pair, the implicit rewards `r(chosen)` and `r(rejected)`.
    pub chosen_rewards: Vec<f64>,
    pub rejected_rewards: Vec<f64>,
    /// The chosen responses' mean per-token NLL, when their lengths are
    /// known ([`dpo_nll_loss`]).
    pub chosen_nll: Option<f64>,
}

/// The sigmoid DPO loss from sequence log-probs `[N]`: the policy's
/// (differentiable) and the reference's (treated as constants) of the
/// chosen and the rejected responses. See [`dpo_nll_loss`] for the NLL term.
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    reference_chosen: &Tensor,
    reference_rejected: &Tensor,
    beta: f64,
) -> Result<DpoLoss> {
    let n = policy_chosen.dim(0)?;
    for t in [policy_rejected, reference_chosen, reference_rejected] {
        if t.dims() != [n] {
            return Err(Error::Op {
                op: "dpo_loss",
                message: format!("expected four [{n}] tensors, got {:?}", t.dims()),
            });
        }
    }
    if n == 0 {
        return Err(Error::Op {
            op: "dpo_loss",
            message: "no pairs".into(),
        });
    }
    let chosen = ((policy_chosen - reference_chosen.detach())? * beta)?;
    let rejected = ((policy_rejected - reference_rejected.detach())? * beta)?;
    let margin = (&chosen - &rejected)?;
    let loss = softplus(&margin.neg()?)?.mean_all()?;
    let host = |t: &Tensor| -> Result<Vec<f64>> {
        Ok(t.to_vec1::<f32>()?.into_iter().map(f64::from).collect())
    };
    Ok(DpoLoss {
        loss,
        margins: host(&margin)?,
        chosen_rewards: host(&chosen)?,
        rejected_rewards: host(&rejected)?,
        chosen_nll: None,
    })
}

/// [`dpo_loss`] plus `nll_weight * mean(-policy_chosen / chosen_len)`:
/// the per-token negative log-likelihood of the chosen responses.
pub fn dpo_nll_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    reference_chosen: &Tensor,
    reference_rejected: &Tensor,
    chosen_len: &[usize],
    beta: f64,
    nll_weight: f64,
) -> Result<DpoLoss> {
    let mut out = dpo_loss(
        policy_chosen,
        policy_rejected,
        reference_chosen,
        reference_rejected,
        beta,
    )?;
    if chosen_len.len() != out.margins.len() {
        return Err(Error::Op {
            op: "dpo_loss",
            message: format!(
                "{} chosen lengths for {} pairs",
                chosen_len.len(),
                out.margins.len()
            ),
        });
    }
    let inv: Vec<f32> = chosen_len.iter().map(|&n| 1.0 / n.max(1) as f32).collect();
    let inv = Tensor::new(inv.as_slice(), policy_chosen.device())?;
    let nll = (policy_chosen * inv)?.mean_all()?.neg()?;
    out.chosen_nll = Some(f64::from(nll.to_scalar::<f32>()?));
    if nll_weight != 0.0 {
        out.loss = (out.loss + (nll * nll_weight)?)?;
    }
    Ok(out)
}

pub struct Dpo {
    policy: Box<dyn Policy>,
    reference: Box<dyn Policy>,
    beta: f64,
    /// Weight of the chosen responses' per-token NLL; 0 = plain DPO.
    pub nll_weight: f64,
    pad: u32,
    train: Vec<PairExample>,
    eval: Vec<PairExample>,
}

impl Dpo {
    /// The reference is a frozen copy of `policy` as given.
    pub fn new(
        policy: Box<dyn Policy>,
        beta: f64,
        pad: u32,
        train: Vec<PairExample>,
        eval: Vec<PairExample>,
    ) -> Result<Self> {
        let reference = policy.frozen()?;
        Ok(Self {
            policy,
            reference,
            beta,
            nll_weight: 0.0,
            pad,
            train,
            eval,
        })
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    pub fn into_policy(self) -> Box<dyn Policy> {
        self.policy
    }

    fn split(&self, split: Split) -> &[PairExample] {
        match split {
            Split::Train => &self.train,
            Split::Eval => &self.eval,
        }
    }

    /// The loss of records `idx` of `split`: chosen and rejected in one
    /// forward of the policy (`grad`: with autograd) and one of the reference.
    pub fn pair_loss(&self, split: Split, idx: &[usize], grad: bool) -> Result<DpoLoss> {
        let data = self.split(split);
        let pairs = idx
            .iter()
            .map(|&i| {
                data.get(i)
                    .ok_or_else(|| Error::Train(format!("dpo: no record {i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let n = pairs.len();
        let prompts = pairs.iter().map(|p| p.prompt.clone());
        let ro = teacher_forced(
            prompts.clone().chain(prompts).collect(),
            pairs
                .iter()
                .map(|p| p.chosen.clone())
                .chain(pairs.iter().map(|p| p.rejected.clone()))
                .collect(),
            self.pad,
        );
        let policy = sequence_logprobs(self.policy.as_ref(), &ro, grad)?.sum(D::Minus1)?;
        let reference = sequence_logprobs(self.reference.as_ref(), &ro, false)?.sum(D::Minus1)?;
        let chosen_len: Vec<usize> = pairs.iter().map(|p| p.chosen.len()).collect();
        dpo_nll_loss(
            &policy.narrow(0, 0, n)?,
            &policy.narrow(0, n, n)?,
            &reference.narrow(0, 0, n)?,
            &reference.narrow(0, n, n)?,
            &chosen_len,
            self.beta,
            self.nll_weight,
        )
    }
}

impl Stage for Dpo {
    fn name(&self) -> &'static str {
        "dpo"
    }

    fn vars(&self) -> Vec<(String, Var)> {
        self.policy.vars()
    }

    fn len(&self, split: Split) -> usize {
        self.split(split).len()
    }

    fn loss(&self, split: Split, idx: &[usize], grad: bool) -> Result<BatchLoss> {
        let out = self.pair_loss(split, idx, grad)?;
        let n = out.margins.len() as f64;
        let mean = |v: &[f64]| v.iter().sum::<f64>() / n;
        let mut stats = vec![
            (
                "accuracy",
                out.margins.iter().filter(|&&m| m > 0.0).count() as f64 / n,
            ),
            ("margin", mean(&out.margins)),
            ("chosen_reward", mean(&out.chosen_rewards)),
            ("rejected_reward", mean(&out.rejected_rewards)),
        ];
        stats.extend(out.chosen_nll.map(|v| ("chosen_nll", v)));
        Ok(BatchLoss {
            stats,
            loss: out.loss,
            weight: n,
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.policy.save(&dir.join(POLICY_FILE))
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.policy.load(&dir.join(POLICY_FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Two pairs, beta = 0.5, by hand:
    /// pair 0: (pc - rc) - (pr - rr) = (-2 - -3) - (-5 - -4) = 1 - (-1) = 2, z = 1
    /// pair 1: (-6 - -5) - (-4 - -4) = -1, z = -0.5
    /// loss = (softplus(-1) + softplus(0.5)) / 2
    /// d loss / d pc_i = -(beta / 2) sigmoid(-z_i), d loss / d pr_i = +(beta / 2) sigmoid(-z_i).
    #[test]
    fn loss_and_gradients_match_a_hand_computed_case() {
        let dev = Device::Cpu;
        let pc = Var::new(&[-2.0f32, -6.0], &dev).unwrap();
        let pr = Var::new(&[-5.0f32, -4.0], &dev).unwrap();
        let rc = Tensor::new(&[-3.0f32, -5.0], &dev).unwrap();
        let rr = Tensor::new(&[-4.0f32, -4.0], &dev).unwrap();
        let out = dpo_loss(pc.as_tensor(), pr.as_tensor(), &rc, &rr, 0.5).unwrap();
        let softplus = |x: f64| (1.0 + x.exp()).ln();
        let want = (softplus(-1.0) + softplus(0.5)) / 2.0;
        let got = f64::from(out.loss.to_scalar::<f32>().unwrap());
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        assert_eq!(out.margins, [1.0, -0.5]);
        assert_eq!(out.chosen_rewards, [0.5, -0.5]);
        assert_eq!(out.rejected_rewards, [-0.5, 0.0]);
        let grads = out.loss.backward().unwrap();
        let g = |v: &Var| grads.get(v.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let (g0, g1) = (0.25 * sigmoid(-1.0), 0.25 * sigmoid(0.5));
        for (got, want) in g(&pc).iter().zip([-g0, -g1]) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
        for (got, want) in g(&pr).iter().zip([g0, g1]) {
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    /// The NLL term on the same case, lengths 4 and 2, lambda = 2: it adds
    /// 2 * mean(2/4, 6/2) = 3.5, and `-(2 / 2) / len_i` to the gradient on
    /// `pc_i`.
    #[test]
    fn the_nll_term_matches_by_hand() {
        let dev = Device::Cpu;
        let pc = Var::new(&[-2.0f32, -6.0], &dev).unwrap();
        let pr = Tensor::new(&[-5.0f32, -4.0], &dev).unwrap();
        let rc = Tensor::new(&[-3.0f32, -5.0], &dev).unwrap();
        let rr = Tensor::new(&[-4.0f32, -4.0], &dev).unwrap();
        let plain = dpo_loss(pc.as_tensor(), &pr, &rc, &rr, 0.5).unwrap();
        let out = dpo_nll_loss(pc.as_tensor(), &pr, &rc, &rr, &[4, 2], 0.5, 2.0).unwrap();
        let diff = out.loss.to_scalar::<f32>().unwrap() - plain.loss.to_scalar::<f32>().unwrap();
        assert!((diff - 3.5).abs() < 1e-6, "{diff}");
        assert_eq!(out.margins, plain.margins);
        assert!((out.chosen_nll.unwrap() - 1.75).abs() < 1e-6);
        let g = out.loss.backward().unwrap();
        let g = g.get(pc.as_tensor()).unwrap().to_vec1::<f32>().unwrap();
        let dpo = [-0.25 * sigmoid(-1.0), -0.25 * sigmoid(0.5)];
        for ((got, d), len) in g.iter().zip(dpo).zip([4.0, 2.0]) {
            let want = d - 1.0 / len;
            assert!((f64::from(*got) - want).abs() < 1e-6, "{got} vs {want}");
        }
        assert!(dpo_nll_loss(pc.as_tensor(), &pr, &rc, &rr, &[4], 0.5, 2.0).is_err());
    }

    #[test]
    fn the_reference_gets_no_gradient_and_shapes_are_checked() {
        let dev = Device::Cpu;
        let p = Var::new(&[-1.0f32], &dev).unwrap();
        let r = Var::new(&[-2.0f32], &dev).unwrap();
        let out = dpo_loss(
            p.as_tensor(),
            p.as_tensor(),
            r.as_tensor(),
            r.as_tensor(),
            1.0,
        )
        .unwrap();
        let grads = out.loss.backward().unwrap();
        assert!(grads.get(r.as_tensor()).is_none());
        let two = Tensor::new(&[0f32, 0.0], &dev).unwrap();
        assert!(dpo_loss(p.as_tensor(), &two, r.as_tensor(), r.as_tensor(), 1.0).is_err());
    }
}
