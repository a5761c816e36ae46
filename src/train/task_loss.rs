//! One task's loss on its experience with the current policy: its
//! optimizer's loss ([`crate::optim::TaskLoss`]) on the [`LossInputs`]
//! built from the batch, plus the task's own KL penalty
//! (docs/algorithm.md §3, §4).

use std::collections::BTreeMap;

use candle_core::{Tensor, D};

use super::experience::TaskBatch;
use super::metrics::mean;
use crate::error::Result;
use crate::kl::{kl_penalty, kl_penalty_full, sequence_kl, KlPlacement};
use crate::optim::advantage::{aggregate_rewards, DEFAULT_ADV_EPS};
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
    let rewards = rewards_for_loss(task, batch, &token_logp_old, &mask, kl_coef)?;
    let inputs = LossInputs {
        seq_logp: token_logp.sum(D::Minus1)?,
        seq_logp_ref: seq_ref,
        seq_logp_old: seq_old,
        token_logp: token_logp.clone(),
        token_logp_old,
        token_logp_ref: batch.ref_logp.clone(),
        mask: mask.clone(),
        raw: rewards.raw,
        calibrated: rewards.weighted,
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
    stats.extend(rewards.stats);
    let coef = kl_coef;
    let loss = if coef > 0.0 && task.kl.placement == KlPlacement::Loss {
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

/// The rewards a task's loss sees, and what to log about them.
struct LossRewards {
    raw: Vec<f64>,
    weighted: Vec<f64>,
    stats: Vec<(String, f64)>,
}

/// The raw and the weighted (calibrated, or raw) reward of each sample as
/// the loss sees them: with extra reward models, each combined with them
/// by the task's aggregation (docs/algorithm.md §8); with the KL penalty
/// in the reward, less `coef * Σ_t KL_t` of the behaviour policy.
fn rewards_for_loss(
    task: &TaskSpec,
    batch: &TaskBatch,
    token_logp_old: &Tensor,
    mask: &Tensor,
    kl_coef: f64,
) -> Result<LossRewards> {
    let mut raw = batch.raw();
    let mut weighted = batch.weighted_reward(task.calibrated);
    let mut stats = Vec::new();
    if !task.single_reward() {
        let group = &batch.rollouts.prompt_index;
        let weights: Vec<f64> = std::iter::once(task.reward_weight)
            .chain(task.extra_rewards.iter().map(|e| e.weight))
            .collect();
        let combine = |main: Vec<f64>| {
            let components: Vec<Vec<f64>> = std::iter::once(main)
                .chain(batch.extra_rewards.iter().cloned())
                .collect();
            aggregate_rewards(
                task.reward_aggregation,
                &components,
                &weights,
                group,
                DEFAULT_ADV_EPS,
            )
        };
        raw = combine(raw);
        weighted = combine(weighted);
        stats.push((
            "combined_reward".to_string(),
            mean(weighted.iter().copied()),
        ));
    }
    if task.kl.placement == KlPlacement::Reward && kl_coef > 0.0 && !raw.is_empty() {
        let kl = sequence_kl(token_logp_old, &batch.ref_logp, mask, task.kl.estimator)?;
        let penalty: Vec<f64> = kl.iter().map(|k| kl_coef * k).collect();
        for ((r, w), p) in raw.iter_mut().zip(weighted.iter_mut()).zip(&penalty) {
            *r -= p;
            *w -= p;
        }
        stats.push((
            "kl_reward_penalty".to_string(),
            mean(penalty.iter().copied()),
        ));
    }
    Ok(LossRewards {
        raw,
        weighted,
        stats,
    })
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
        entropy: vec![0.0; which.len()],
        pad: ro.pad,
    };
    let seq = sequence_logprobs(policy, &sub, true)?.sum(D::Minus1)?;
    for (k, &p) in which.iter().enumerate() {
        out[p] = Some(seq.get(k)?);
    }
    Ok(out)
}
