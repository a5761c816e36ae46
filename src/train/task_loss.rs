//! One task's loss on its experience with the current policy: its
//! optimizer's loss ([`crate::optim::TaskLoss`]) on the [`LossInputs`]
//! built from the batch, plus the task's own KL penalty
//! (docs/algorithm.md §3, §4).

use std::collections::BTreeMap;

use candle_core::{Tensor, D};

use super::experience::TaskBatch;
use crate::error::Result;
use crate::kl::{kl_penalty, kl_penalty_full};
use crate::optim::LossInputs;
use crate::policy::Policy;
use crate::rollout::{logprobs_from_logits, response_logits, sequence_logprobs, Rollouts};
use crate::task::TaskSpec;

/// One task's loss on its batch with the current policy.
/// `None` when the policy's log-probs are not finite (the step is
/// then skipped rather than failed).
pub(crate) fn task_loss(
    policy: &dyn Policy,
    task: &TaskSpec,
    batch: &TaskBatch,
    kl_coef: f64,
) -> Result<Option<(Tensor, BTreeMap<String, f64>)>> {
    let ro = &batch.rollouts;
    let device = policy.device();
    let (policy_logits, token_logp) = if batch.ref_logits.is_some() || task.loss.needs_logits() {
        let logits = response_logits(policy, ro, true)?;
        let lp = logprobs_from_logits(&logits, ro)?;
        (Some(logits), lp)
    } else {
        (None, sequence_logprobs(policy, ro, true)?)
    };
    let mask = ro.response_mask(device)?;
    let token_logp_old = ro.behaviour_logprobs(device)?;
    let seq_ref: Vec<f64> = batch
        .ref_logp
        .sum(D::Minus1)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect();
    let seq_old: Vec<f64> = ro
        .logprobs
        .iter()
        .map(|lp| lp.iter().map(|&x| f64::from(x)).sum())
        .collect();
    let groups = ro.prompt_index.clone();
    let n_groups = batch.baselines.len();
    let baseline_seq_logp = baseline_logps(policy, ro, &batch.baselines)?;
    if !token_logp.sum_all()?.to_scalar::<f32>()?.is_finite() {
        return Ok(None);
    }
    let inputs = LossInputs {
        seq_logp: token_logp.sum(D::Minus1)?,
        seq_logp_ref: seq_ref,
        seq_logp_old: seq_old,
        token_logp: token_logp.clone(),
        token_logp_old,
        token_logp_ref: batch.ref_logp.clone(),
        mask: mask.clone(),
        raw: batch.raw(),
        calibrated: batch.weighted_reward(task.calibrated),
        positive: batch.positive(),
        group: groups,
        lengths: ro.responses.iter().map(Vec::len).collect(),
        baseline_seq_logp,
        logits: policy_logits.clone().filter(|_| task.loss.needs_logits()),
    };
    debug_assert_eq!(inputs.baseline_seq_logp.len(), n_groups);
    let out = task.loss.loss(&inputs)?;
    let mut stats: BTreeMap<String, f64> =
        out.stats.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    let coef = kl_coef;
    let loss = if coef > 0.0 {
        let penalty = match (&policy_logits, &batch.ref_logits) {
            (Some(p), Some(q)) => kl_penalty_full(p, q, &mask.flatten_all()?)?,
            _ => kl_penalty(&token_logp, &batch.ref_logp, &mask, task.kl.estimator)?,
        };
        stats.insert("kl_penalty".into(), f64::from(penalty.to_scalar::<f32>()?));
        (out.loss + (penalty * coef)?)?
    } else {
        out.loss
    };
    Ok(Some((loss, stats)))
}

/// Per prompt of the batch, Σ log pi_theta of its passing baseline.
fn baseline_logps(
    policy: &dyn Policy,
    ro: &Rollouts,
    baselines: &[Option<Vec<u32>>],
) -> Result<Vec<Option<Tensor>>> {
    let mut prompt_ids: Vec<Option<Vec<u32>>> = vec![None; baselines.len()];
    for (i, &p) in ro.prompt_index.iter().enumerate() {
        prompt_ids[p].get_or_insert_with(|| ro.prompts[i].clone());
    }
    let which: Vec<usize> = (0..baselines.len())
        .filter(|&p| baselines[p].is_some() && prompt_ids[p].is_some())
        .collect();
    let mut out = vec![None; baselines.len()];
    if which.is_empty() {
        return Ok(out);
    }
    let sub = Rollouts {
        prompt_index: which.clone(),
        prompts: which
            .iter()
            .map(|&p| prompt_ids[p].clone().expect("filtered"))
            .collect(),
        responses: which
            .iter()
            .map(|&p| baselines[p].clone().expect("filtered"))
            .collect(),
        texts: vec![String::new(); which.len()],
        logprobs: which
            .iter()
            .map(|&p| vec![0.0; baselines[p].as_ref().map_or(0, Vec::len)])
            .collect(),
        finished: vec![true; which.len()],
        pad: ro.pad,
    };
    let seq = sequence_logprobs(policy, &sub, true)?.sum(D::Minus1)?;
    for (k, &p) in which.iter().enumerate() {
        out[p] = Some(seq.get(k)?);
    }
    Ok(out)
}
