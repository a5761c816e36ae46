//! Experience collection, one task at a time: take the step's prompts (a
//! seeded permutation per pass over the task's data), sample K responses to
//! each from the policy, judge them with the task's mixture, score them
//! with its reward model (raw and calibrated), and compute the reference's
//! log-probs. Each response is one [`Sample`] (text, verdict, rewards)
//! beside its row of the [`Rollouts`] batch (token ids and behaviour
//! log-probs, what tensors are made of).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::Tensor;
use cgpo_judges::{MixtureReport, Outcome};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::metrics::{mean, JudgeRates, TaskMetrics, Timing};
use crate::data::{PromptRecord, Sample};
use crate::error::Result;
use crate::kl::KlEstimator;
use crate::ops::kl_estimate;
use crate::policy::{Policy, TextTokenizer};
use crate::reward::BaselineGenerator;
use crate::rollout::{
    generate, logprobs_from_logits, response_logits, sequence_logprobs, Decoding, Rollouts,
    SamplingConfig,
};
use crate::stats::Quantiles;
use crate::task::TaskSpec;

/// SplitMix64 over several words: independent seeds per step and task.
pub(crate) fn seed_of(words: &[u64]) -> u64 {
    words.iter().fold(0x243F_6A88_85A3_08D3u64, |acc, &w| {
        let mut z = acc ^ w.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// The indices into `len` records of minibatch `step` of size `batch`:
/// consecutive slices of a permutation per pass over the data, the
/// permutation of pass `p` seeded by `pass_seed(p)`.
///
/// ```
/// use cgpo::train::seeded_order;
/// let a = seeded_order(5, 2, 0, |p| p);
/// let b = seeded_order(5, 2, 1, |p| p);
/// let c = seeded_order(5, 2, 2, |p| p); // the last of pass 0, the first of pass 1
/// let mut first_pass: Vec<usize> = a.iter().chain(&b).chain(&c[..1]).copied().collect();
/// first_pass.sort();
/// assert_eq!(first_pass, [0, 1, 2, 3, 4]);
/// ```
pub fn seeded_order(
    len: usize,
    batch: usize,
    step: u64,
    pass_seed: impl Fn(u64) -> u64,
) -> Vec<usize> {
    let mut out = Vec::with_capacity(batch);
    let mut order: Option<(u64, Vec<usize>)> = None;
    for j in 0..batch as u64 {
        let i = step * batch as u64 + j;
        let pass = i / len as u64;
        if order.as_ref().is_none_or(|(p, _)| *p != pass) {
            let mut idx: Vec<usize> = (0..len).collect();
            idx.shuffle(&mut StdRng::seed_from_u64(pass_seed(pass)));
            order = Some((pass, idx));
        }
        if let Some((_, idx)) = &order {
            out.push(idx[(i % len as u64) as usize]);
        }
    }
    out
}

/// One task's experience at one step: judged, scored, with the
/// reference's log-probs; only the samples the loss uses (a sample whose
/// judge errored is dropped under `judge_errors: "drop"`).
pub(crate) struct TaskBatch {
    /// Token ids and behaviour log-probs, row i = `samples[i]`.
    pub rollouts: Rollouts,
    pub samples: Vec<Sample>,
    /// Reference log-probs `[N, R]` and, for the `full` estimator, logits.
    pub ref_logp: Tensor,
    pub ref_logits: Option<Tensor>,
    /// Per prompt: the baseline response when it passes every judge
    /// (CRRAFT's fallback), as token ids.
    pub baselines: Vec<Option<Vec<u32>>>,
    /// Per extra reward model of the task, the raw score of each sample.
    pub extra_rewards: Vec<Vec<f64>>,
    pub metrics: TaskMetrics,
}

impl TaskBatch {
    /// y(a) of each sample.
    pub fn positive(&self) -> Vec<bool> {
        self.samples
            .iter()
            .map(|s| s.judgement.as_ref().is_some_and(|j| j.is_positive()))
            .collect()
    }

    /// The raw reward of each sample.
    pub fn raw(&self) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| s.reward.map_or(0.0, |r| f64::from(r.raw)))
            .collect()
    }

    /// The reward the loss weights by: calibrated, or raw when the task
    /// turns calibration off.
    pub fn weighted_reward(&self, calibrated: bool) -> Vec<f64> {
        self.samples
            .iter()
            .map(|s| {
                s.reward.map_or(0.0, |r| {
                    f64::from(if calibrated { r.calibrated } else { r.raw })
                })
            })
            .collect()
    }
}

/// Baselines for calibration sampled greedily from the frozen reference.
pub(crate) struct ReferenceBaselines<'a> {
    pub reference: &'a dyn Policy,
    pub tokenizer: &'a dyn TextTokenizer,
    pub max_new_tokens: usize,
}

impl BaselineGenerator for ReferenceBaselines<'_> {
    fn generate(&self, records: &[&PromptRecord]) -> Result<Vec<String>> {
        let prompts = records
            .iter()
            .map(|r| self.tokenizer.encode_prompt(&r.prompt))
            .collect::<Result<Vec<_>>>()?;
        let cfg = SamplingConfig {
            temperature: 0.0,
            max_new_tokens: self.max_new_tokens,
            ..SamplingConfig::default()
        };
        Ok(generate(self.reference, self.tokenizer, &prompts, &cfg)?.texts)
    }
}

/// What collection reads besides the task.
pub(crate) struct Collector<'a> {
    pub policy: &'a dyn Policy,
    pub reference: &'a dyn Policy,
    pub tokenizer: &'a dyn TextTokenizer,
    pub decoding: &'a Decoding,
    /// The run's seed and the step.
    pub seed: u64,
    pub step: u64,
}

impl Collector<'_> {
    /// Rollouts, judgements, rewards and reference log-probs of task `l`
    /// on `records`; `kl_coef` is the task's current KL coefficient (for
    /// the metrics).
    pub fn collect(
        &self,
        l: usize,
        task: &TaskSpec,
        records: &[Arc<PromptRecord>],
        kl_coef: f64,
    ) -> Result<TaskBatch> {
        let prompts = records
            .iter()
            .map(|r| self.tokenizer.encode_prompt(&r.prompt))
            .collect::<Result<Vec<_>>>()?;
        let sampling = self.decoding.sampling(
            task.generations_per_prompt,
            seed_of(&[self.seed, self.step, l as u64, 2]),
        );
        let mut timing = Timing::default();
        let t = Instant::now();
        let mut rollouts = generate(self.policy, self.tokenizer, &prompts, &sampling)?;
        timing.rollout = t.elapsed().as_secs_f64();

        let texts = std::mem::take(&mut rollouts.texts);
        let mut samples: Vec<Sample> = rollouts
            .prompt_index
            .iter()
            .zip(texts)
            .map(|(&p, text)| Sample::new(records[p].clone(), text))
            .collect();
        let t = Instant::now();
        let report = {
            let views: Vec<_> = samples.iter().map(Sample::view).collect();
            task.judges.judge(&views)
        };
        timing.judge = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let generator = ReferenceBaselines {
            reference: self.reference,
            tokenizer: self.tokenizer,
            max_new_tokens: self.decoding.max_new_tokens,
        };
        task.reward.score(&mut samples, Some(&generator))?;
        let extra = extra_rewards(task, &samples)?;
        timing.reward = t.elapsed().as_secs_f64();

        let keep: Vec<usize> = (0..samples.len())
            .filter(|&i| report.samples[i].outcome != Outcome::Dropped)
            .collect();
        let mut metrics = metrics_of(
            task, self.step, &samples, &report, &rollouts, kl_coef, timing,
        );
        metrics.used = keep.len();
        for (e, values) in task.extra_rewards.iter().zip(&extra) {
            metrics
                .rewards
                .insert(e.name.clone(), mean(values.iter().copied()));
        }
        let extra_rewards = extra
            .iter()
            .map(|v| keep.iter().map(|&i| v[i]).collect())
            .collect();
        for (sample, judgement) in samples.iter_mut().zip(report.samples) {
            sample.judgement = Some(judgement);
        }
        samples.retain(|s| {
            s.judgement
                .as_ref()
                .is_some_and(|j| j.outcome != Outcome::Dropped)
        });
        let rollouts = rollouts.select(&keep);
        let mut batch = TaskBatch {
            ref_logp: Tensor::zeros((0, 0), candle_core::DType::F32, self.policy.device())?,
            ref_logits: None,
            baselines: vec![None; records.len()],
            rollouts,
            samples,
            extra_rewards,
            metrics,
        };
        if !batch.rollouts.is_empty() {
            if task.kl.needs_logits() {
                let logits = response_logits(self.reference, &batch.rollouts, false)?;
                batch.ref_logp = logprobs_from_logits(&logits, &batch.rollouts)?;
                batch.ref_logits = Some(logits);
            } else {
                batch.ref_logp = sequence_logprobs(self.reference, &batch.rollouts, false)?;
            }
            let (k1, k3) = behaviour_kl(self.policy, &batch.rollouts, &batch.ref_logp)?;
            batch.metrics.kl_k1 = k1;
            batch.metrics.kl_k3 = k3;
        }
        if task.loss.needs_baselines() {
            batch.baselines = self.passing_baselines(task, records)?;
        }
        Ok(batch)
    }

    /// CRRAFT's fallback: each prompt's cached baseline response, tokenized
    /// (with a stop token), when it passes every judge of the task.
    fn passing_baselines(
        &self,
        task: &TaskSpec,
        records: &[Arc<PromptRecord>],
    ) -> Result<Vec<Option<Vec<u32>>>> {
        let cached: BTreeMap<String, String> = task
            .reward
            .cached()
            .into_iter()
            .map(|c| (c.id, c.text))
            .collect();
        let texts: Vec<Option<&String>> = records.iter().map(|r| cached.get(&r.id)).collect();
        let with_text: Vec<usize> = (0..records.len()).filter(|&i| texts[i].is_some()).collect();
        let views: Vec<_> = with_text
            .iter()
            .map(|&i| records[i].view(texts[i].expect("filtered")))
            .collect();
        let report = task.judges.judge(&views);
        let mut out = vec![None; records.len()];
        for (k, &i) in with_text.iter().enumerate() {
            if report.samples[k].is_positive() {
                let ids = self
                    .tokenizer
                    .encode_response(texts[i].expect("filtered"))?;
                if !ids.is_empty() {
                    out[i] = Some(ids);
                }
            }
        }
        Ok(out)
    }
}

/// The step's metrics of one task, from all its samples (dropped ones
/// included); the caller sets `used`.
fn metrics_of(
    task: &TaskSpec,
    step: u64,
    samples: &[Sample],
    report: &MixtureReport,
    rollouts: &Rollouts,
    kl_coef: f64,
    timing: Timing,
) -> TaskMetrics {
    let t = Instant::now();
    let n = samples.len();
    let values: Vec<_> = samples.iter().filter_map(|s| s.reward).collect();
    let raw: Vec<f64> = values.iter().map(|v| f64::from(v.raw)).collect();
    let calibrated: Vec<f64> = values.iter().map(|v| f64::from(v.calibrated)).collect();
    let tokens: usize = rollouts.responses.iter().map(Vec::len).sum();
    let mut m = TaskMetrics {
        kind: "train".into(),
        step,
        task: task.name.clone(),
        samples: n,
        reward_raw: mean(raw.iter().copied()),
        reward_calibrated: mean(calibrated.iter().copied()),
        reward_raw_quantiles: Quantiles::of(&raw),
        reward_calibrated_quantiles: Quantiles::of(&calibrated),
        pass_rate: report.count(Outcome::Satisfied) as f64 / n.max(1) as f64,
        pass_rate_by_judge: report
            .stats
            .iter()
            .map(|s| (s.name.clone(), s.pass as f64 / n.max(1) as f64))
            .collect(),
        judges: report
            .stats
            .iter()
            .map(|s| {
                let rates = JudgeRates {
                    violation_rate: s.fail as f64 / n.max(1) as f64,
                    error_rate: s.error as f64 / n.max(1) as f64,
                };
                (s.name.clone(), rates)
            })
            .collect(),
        judge_errors: report.errored(),
        kl_estimator: estimator_name(task.kl.estimator).into(),
        kl_coef,
        response_len: mean(rollouts.responses.iter().map(|r| r.len() as f64)),
        truncated: mean(rollouts.finished.iter().map(|&f| f64::from(u8::from(!f)))),
        entropy: rollouts.entropy.iter().sum::<f64>() / tokens.max(1) as f64,
        time_s: timing,
        ..TaskMetrics::default()
    };
    m.time_s.metrics += t.elapsed().as_secs_f64();
    m
}

/// The config name of a KL estimator, as metrics lines write it.
fn estimator_name(e: KlEstimator) -> &'static str {
    match e {
        KlEstimator::K1 => "k1",
        KlEstimator::K2 => "k2",
        KlEstimator::K3 => "k3",
        KlEstimator::Abs => "abs",
        KlEstimator::Full => "full",
    }
}

/// The raw score of every sample under each of the task's extra reward
/// models; an error names the task and the model.
fn extra_rewards(task: &TaskSpec, samples: &[Sample]) -> Result<Vec<Vec<f64>>> {
    if task.extra_rewards.is_empty() {
        return Ok(Vec::new());
    }
    let views: Vec<_> = samples.iter().map(Sample::view).collect();
    task.extra_rewards
        .iter()
        .map(|e| {
            let scores = e
                .model
                .score(&views)
                .map_err(|err| crate::error::Error::Reward {
                    model: format!("{} (task {})", e.name, task.name),
                    message: err.to_string(),
                })?;
            Ok(scores.into_iter().map(f64::from).collect())
        })
        .collect()
}

/// Mean per-token k1 and k3 of the behaviour policy from the reference on
/// the sampled tokens.
fn behaviour_kl(policy: &dyn Policy, rollouts: &Rollouts, ref_logp: &Tensor) -> Result<(f64, f64)> {
    let device = policy.device();
    let old = rollouts.behaviour_logprobs(device)?;
    let mask = rollouts.response_mask(device)?;
    let tokens = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
    let k1 = ((&old - ref_logp)? * &mask)?
        .sum_all()?
        .to_scalar::<f32>()?
        / tokens;
    let k3 = (kl_estimate(&old, ref_logp, KlEstimator::K3)? * &mask)?
        .sum_all()?
        .to_scalar::<f32>()?
        / tokens;
    Ok((f64::from(k1), f64::from(k3)))
}
