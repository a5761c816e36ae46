//! Evaluation of a policy on fixed prompts (a dev or test split), the same
//! whatever it was trained with: responses sampled with fixed settings and
//! seeds, judged by each task's mixture of judges and scored by its reward
//! model (raw), and the KL of the policy from a reference on those samples.
//! The CGPO trainer evaluates with one on its schedule; experiments pass
//! their own (other judges, another split).
//!
//! KL is the sequence-level single-sample estimate `Σ_t (log pi(a_t) -
//! log pi_ref(a_t))` over a response's tokens (nats), averaged over the
//! samples: at temperature 1 without top-k / top-p an unbiased estimate of
//! `KL(pi || pi_ref)` per response, since the responses are drawn from
//! `pi`; otherwise the mean log-ratio under the tempered sampler.
//!
//! ```
//! use cgpo::train::evaluate::spread;
//! assert_eq!(spread(10, 4), vec![0, 2, 5, 7]);
//! assert_eq!(spread(3, 8), vec![0, 1, 2]);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::D;
use cgpo_judges::Outcome;
use serde::{Deserialize, Serialize};

use crate::data::PromptRecord;
use crate::error::Result;
use crate::policy::{Policy, TextTokenizer};
use crate::rollout::{generate, sequence_logprobs, SamplingConfig};
use crate::task::EvalTask;

/// One task's evaluation on one split's prompts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EvalPoint {
    /// Share of samples every judge of the task passes.
    pub eval_pass_rate: f64,
    /// Samples judged (prompts times responses per prompt) and how many
    /// passed.
    #[serde(default)]
    pub n: usize,
    #[serde(default)]
    pub passes: usize,
    /// The 95% Wilson interval of the pass rate over the `n` samples.
    /// Responses to one prompt are correlated, so with several per prompt
    /// it is narrower than an interval over prompts would be.
    #[serde(default)]
    pub pass_ci95: [f64; 2],
    /// Mean raw reward of the task's reward model.
    pub eval_reward: f64,
    /// Mean sequence-level KL from the warm-up (nats per response).
    pub kl: f64,
}

/// `n` indices spread evenly over `0..len` (all of them when `len <= n`).
pub fn spread(len: usize, n: usize) -> Vec<usize> {
    if len <= n {
        return (0..len).collect();
    }
    (0..n).map(|i| i * len / n).collect()
}

/// Prompts generated in one batch by [`Evaluator::evaluate`].
pub const EVAL_CHUNK: usize = 64;

/// Evaluates policies on fixed prompts: each task's judges and reward
/// model, and the KL from a reference.
pub struct Evaluator {
    tasks: Vec<EvalTask>,
    prompts: Vec<Vec<Arc<PromptRecord>>>,
    reference: Arc<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    sampling: SamplingConfig,
    split: String,
}

impl Evaluator {
    /// `prompts[l]` are the evaluation prompts of `tasks[l]`, the reference
    /// is the KL's, and `sampling` draws the responses (chunk c of
    /// [`EVAL_CHUNK`] prompts with `sampling.seed + c`; the KL is an
    /// unbiased estimate only at temperature 1 without top-k / top-p).
    pub fn new(
        tasks: Vec<EvalTask>,
        prompts: Vec<Vec<Arc<PromptRecord>>>,
        reference: Arc<dyn Policy>,
        tokenizer: Arc<dyn TextTokenizer>,
        sampling: SamplingConfig,
    ) -> Self {
        Self {
            tasks,
            prompts,
            reference,
            tokenizer,
            sampling,
            split: "eval".into(),
        }
    }

    /// Names the split the prompts come from (`dev`, `test`): metrics
    /// lines carry it. Default `eval`.
    pub fn with_split(mut self, split: impl Into<String>) -> Self {
        self.split = split.into();
        self
    }

    /// The split the prompts come from.
    pub fn split(&self) -> &str {
        &self.split
    }

    /// The reference of the KL.
    pub fn reference(&self) -> &dyn Policy {
        self.reference.as_ref()
    }

    /// Per task (by name): pass rate, raw reward and KL of `policy`.
    pub fn evaluate(&self, policy: &dyn Policy) -> Result<BTreeMap<String, EvalPoint>> {
        Ok(self.evaluate_with_samples(policy)?.points)
    }

    /// [`Evaluator::evaluate`] with the judged samples, per task.
    pub fn evaluate_with_samples(&self, policy: &dyn Policy) -> Result<Evaluation> {
        let mut out = BTreeMap::new();
        let mut samples = BTreeMap::new();
        for (task, records) in self.tasks.iter().zip(&self.prompts) {
            if records.is_empty() {
                continue;
            }
            let mut judged: Vec<EvalSample> = Vec::new();
            let mut kl_sum = 0.0f64;
            // Chunks of prompts bound the memory of one generation; chunk c
            // samples with seed + c.
            for (c, chunk) in records.chunks(EVAL_CHUNK).enumerate() {
                let prompts = chunk
                    .iter()
                    .map(|r| self.tokenizer.encode_prompt(&r.prompt))
                    .collect::<Result<Vec<_>>>()?;
                let sampling = SamplingConfig {
                    seed: self.sampling.seed.wrapping_add(c as u64),
                    ..self.sampling.clone()
                };
                let ro = generate(policy, self.tokenizer.as_ref(), &prompts, &sampling)?;
                let views: Vec<_> = ro
                    .prompt_index
                    .iter()
                    .zip(&ro.texts)
                    .map(|(&p, t)| chunk[p].view(t))
                    .collect();
                let report = task.judges.judge(&views);
                let raw = task.raw_scores(&views)?;
                let device = policy.device();
                let mask = ro.response_mask(device)?;
                let logp = ro.behaviour_logprobs(device)?;
                let logp_ref = sequence_logprobs(self.reference.as_ref(), &ro, false)?;
                let kl = ((logp - logp_ref)? * mask)?
                    .sum(D::Minus1)?
                    .to_vec1::<f32>()?;
                kl_sum += kl.iter().map(|&k| f64::from(k)).sum::<f64>();
                judged.extend(
                    views
                        .iter()
                        .zip(&report.samples)
                        .zip(&raw)
                        .map(|((v, j), &r)| EvalSample {
                            id: v.id.to_owned(),
                            response: v.response.to_owned(),
                            pass: j.outcome == Outcome::Satisfied,
                            reward: r,
                        }),
                );
            }
            let passes = judged.iter().filter(|s| s.pass).count();
            let (lo, hi) = crate::stats::wilson(passes, judged.len());
            let n = judged.len().max(1) as f64;
            out.insert(
                task.name.clone(),
                EvalPoint {
                    eval_pass_rate: passes as f64 / n,
                    n: judged.len(),
                    passes,
                    pass_ci95: [lo, hi],
                    eval_reward: judged.iter().map(|s| f64::from(s.reward)).sum::<f64>() / n,
                    kl: kl_sum / n,
                },
            );
            samples.insert(task.name.clone(), judged);
        }
        Ok(Evaluation {
            split: self.split.clone(),
            points: out,
            samples,
        })
    }
}

/// Judged evaluation samples by task name.
pub type TaskSamples = BTreeMap<String, Vec<EvalSample>>;

/// One judged evaluation sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalSample {
    /// The prompt's id.
    pub id: String,
    pub response: String,
    /// Every judge of the task passed.
    pub pass: bool,
    /// Raw reward.
    pub reward: f32,
}

/// One evaluation: each task's point and judged samples.
#[derive(Clone, Debug, Default)]
pub struct Evaluation {
    /// The split the prompts come from.
    pub split: String,
    pub points: BTreeMap<String, EvalPoint>,
    pub samples: TaskSamples,
}

impl Evaluation {
    /// The metrics lines after `step` steps, one per task:
    /// `{"kind": "eval", "split", "step", "task", ...EvalPoint}`.
    pub fn lines(&self, step: u64) -> Vec<serde_json::Value> {
        self.points
            .iter()
            .filter_map(|(task, point)| {
                serde_json::to_value(EvalLine {
                    kind: "eval",
                    split: &self.split,
                    step,
                    task,
                    point,
                })
                .ok()
            })
            .collect()
    }
}

/// One evaluation line of `metrics.jsonl`.
#[derive(Serialize)]
struct EvalLine<'a> {
    kind: &'static str,
    split: &'a str,
    step: u64,
    task: &'a str,
    #[serde(flatten)]
    point: &'a EvalPoint,
}
