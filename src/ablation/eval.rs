//! Evaluation of a policy on one split's prompts (dev or test), the same for every run
//! whatever it trains with: responses sampled with the run config's
//! sampling settings (temperature 1 in the ablation; seeded, the same seed
//! at every evaluation), judged by the task's full mixture of judges and
//! scored by its reward model (raw), and the KL of the policy from the
//! reference on those samples.
//!
//! KL is the sequence-level single-sample estimate `Σ_t (log pi(a_t) -
//! log pi_ref(a_t))` over a response's tokens (nats), averaged over the
//! samples: at temperature 1 without top-k / top-p an unbiased estimate of
//! `KL(pi || pi_ref)` per response, since the responses are drawn from
//! `pi`; otherwise the mean log-ratio under the tempered sampler.
//!
//! ```
//! use cgpo::ablation::eval::spread;
//! assert_eq!(spread(10, 4), vec![0, 2, 5, 7]);
//! assert_eq!(spread(3, 8), vec![0, 1, 2]);
//! ```

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use candle_core::D;
use cgpo_judges::Outcome;
use serde::{Deserialize, Serialize};

use crate::config::{Registries, RunConfig};
use crate::data::{read_prompts, PromptRecord};
use crate::error::{Error, Result};
use crate::policy::load_policy;
use crate::policy::{Policy, TextTokenizer};
use crate::rollout::{generate, sequence_logprobs, SamplingConfig};
use crate::task::TaskSpec;
use crate::train::Trainer;

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

/// Evaluates policies against the suite's judges, reward models and the
/// warm-up as the reference.
pub struct Evaluator {
    tasks: Vec<TaskSpec>,
    prompts: Vec<Vec<Arc<PromptRecord>>>,
    reference: Box<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    sampling: SamplingConfig,
    split: String,
}

impl Evaluator {
    /// From a run config with every task's judges (the ablation passes
    /// `cgpo-crpg`'s), built from `judges` and `rewards`, the evaluation
    /// prompts (`eval_prompts` per task, spread over the file's),
    /// `samples_per_prompt` responses to each, sampled as
    /// `config.train.sampling` says; names are looked up in `registries`.
    pub fn new(
        config: &RunConfig,
        registries: &Registries,
        eval_prompts: &std::path::Path,
        prompts_per_task: usize,
        samples_per_prompt: usize,
        seed: u64,
    ) -> Result<Self> {
        let tasks = config.build_tasks(registries)?;
        let names = config.task_names();
        let records = read_prompts(eval_prompts, Some(&names))?;
        let prompts = names
            .iter()
            .map(|n| {
                let of_task: Vec<Arc<PromptRecord>> = records
                    .iter()
                    .filter(|r| r.task.as_deref() == Some(n.as_str()))
                    .map(|r| Arc::new(r.clone()))
                    .collect();
                spread(of_task.len(), prompts_per_task)
                    .into_iter()
                    .map(|i| of_task[i].clone())
                    .collect()
            })
            .collect();
        let (reference, tokenizer) = load_policy(&config.policy, config.seed)?;
        let sampling = config.train.sampling.sampling(samples_per_prompt, seed);
        Ok(Self::from_parts(
            tasks, prompts, reference, tokenizer, sampling,
        ))
    }

    /// From built parts: `prompts[l]` are task `l`'s evaluation prompts, the
    /// reference is the KL's, and `sampling` draws the responses (KL is an
    /// unbiased estimate only at temperature 1 without top-k / top-p).
    pub fn from_parts(
        tasks: Vec<TaskSpec>,
        prompts: Vec<Vec<Arc<PromptRecord>>>,
        reference: Box<dyn Policy>,
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

    /// The warm-up, the reference of the KL.
    pub fn reference(&self) -> &dyn Policy {
        self.reference.as_ref()
    }

    /// Per task (by name): pass rate, raw reward and KL of `policy`.
    pub fn evaluate(&self, policy: &dyn Policy) -> Result<BTreeMap<String, EvalPoint>> {
        Ok(self.evaluate_with_samples(policy)?.0)
    }

    /// [`Evaluator::evaluate`] with the judged samples, per task.
    pub fn evaluate_with_samples(
        &self,
        policy: &dyn Policy,
    ) -> Result<(BTreeMap<String, EvalPoint>, TaskSamples)> {
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
        Ok((out, samples))
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

/// How [`train_evaluated`] trains.
#[derive(Clone, Debug)]
pub struct TrainLoop {
    pub steps: u64,
    /// Evaluate every this many steps (and after the last).
    pub eval_every: u64,
    /// The metrics JSONL written (replaced): train lines, eval lines.
    pub metrics: PathBuf,
    /// The progress bar's label.
    pub label: String,
    pub progress: bool,
}

/// What [`train_evaluated`] measured.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    /// Every evaluation: the step and each task's point, `start` first.
    pub points: Vec<(u64, BTreeMap<String, EvalPoint>)>,
    /// Wall-clock seconds of each training step (evaluations excluded).
    pub step_seconds: Vec<f64>,
    /// Seconds spent in the evaluations after `start`.
    pub eval_seconds: f64,
    /// The judged samples of the last evaluation.
    pub last_samples: TaskSamples,
}

/// Trains `trainer` to `run.steps` steps, evaluating with `evaluator` on
/// schedule; `start` is the evaluation before the first step. Each step's
/// metrics and each evaluation go to `run.metrics` as they happen.
pub fn train_evaluated(
    trainer: &mut Trainer,
    evaluator: &Evaluator,
    start: &BTreeMap<String, EvalPoint>,
    run: &TrainLoop,
) -> Result<Curve> {
    let path = &run.metrics;
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    let mut metrics = BufWriter::new(file);
    let mut line = |value: serde_json::Value| -> Result<()> {
        writeln!(metrics, "{value}")
            .and_then(|_| metrics.flush())
            .map_err(|e| Error::io(path, e))
    };
    let split = evaluator.split();
    let eval_lines = |step: u64, points: &BTreeMap<String, EvalPoint>| {
        points
            .iter()
            .map(|(task, p)| {
                json!({"kind": "eval", "split": split, "step": step, "task": task,
                       "eval_pass_rate": p.eval_pass_rate, "n": p.n, "pass_ci95": p.pass_ci95,
                       "eval_reward": p.eval_reward, "kl": p.kl})
            })
            .collect::<Vec<_>>()
    };
    for l in eval_lines(trainer.step_count(), start) {
        line(l)?;
    }
    let bar = if run.progress {
        let bar = ProgressBar::new(run.steps);
        bar.set_style(
            ProgressStyle::with_template(&format!(
                "{} {{bar:30}} {{pos}}/{{len}} steps {{elapsed}}<{{eta}} {{msg}}",
                run.label
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_position(trainer.step_count());
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut curve = Curve {
        points: vec![(trainer.step_count(), start.clone())],
        ..Curve::default()
    };
    while trainer.step_count() < run.steps {
        let t = Instant::now();
        let step_metrics = trainer.train_step()?;
        curve.step_seconds.push(t.elapsed().as_secs_f64());
        for m in step_metrics {
            line(serde_json::to_value(&m).map_err(|e| Error::Train(e.to_string()))?)?;
        }
        let step = trainer.step_count();
        bar.set_position(step);
        if step % run.eval_every.max(1) == 0 || step == run.steps {
            let t = Instant::now();
            let (points, samples) = evaluator.evaluate_with_samples(trainer.policy())?;
            curve.eval_seconds += t.elapsed().as_secs_f64();
            curve.last_samples = samples;
            bar.set_message(
                points
                    .iter()
                    .map(|(t, p)| format!("{t} {:.2}", p.eval_pass_rate))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
            for l in eval_lines(step, &points) {
                line(l)?;
            }
            curve.points.push((step, points));
        }
    }
    bar.finish_and_clear();
    Ok(curve)
}
