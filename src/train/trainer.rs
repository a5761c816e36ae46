//! The multi-task CGPO trainer (cgpo-spec sections 3-5).
//!
//! One step, for each task `l` in config order: take its next `B_l`
//! prompts (a seeded permutation per pass over the task's data), sample `K`
//! responses per prompt from the policy, judge them with the task's mixture,
//! score them with its reward model (raw and calibrated), and compute the
//! reference log-probs. Then for each epoch (1 except for `pg` with several),
//! each task's loss (its optimizer plus its own per-token KL penalty) is
//! backpropagated on its own, its gradient norm logged, the gradients merged
//! as `Σ ρ_l g_l`, clipped by global norm, and AdamW steps.
//!
//! Everything random derives from the run's seed, the step and the task,
//! so a run is deterministic on the CPU and a resumed run continues exactly
//! (weights, AdamW moments, KL controllers and calibration baselines are in
//! the checkpoint). A non-finite loss or gradient skips the step; after
//! `max_consecutive_skips` in a row the run stops with its last checkpoint
//! intact.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Tensor, Var, D};
use cgpo_judges::Outcome;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::adamw::{learning_rate, AdamW};
use super::checkpoint::{self, TrainerState};
use super::config::TrainConfig;
use super::merge::{add_weighted, clip, task_gradient, TaskGradient};
use crate::data::{PromptRecord, Sample};
use crate::error::{Error, Result};
use crate::kl::{kl_penalty, kl_penalty_full, KlController, KlEstimator};
use crate::ops::kl_estimate;
use crate::optim::LossInputs;
use crate::policy::{Policy, TextTokenizer};
use crate::reward::BaselineGenerator;
use crate::rollout::{generate, logprobs_from_logits, response_logits, Rollouts, SamplingConfig};
use crate::task::TaskSpec;

/// Seconds spent in each phase of one task's step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub rollout: f64,
    pub judge: f64,
    pub reward: f64,
    pub backward: f64,
}

/// One metrics line: one task at one step (`kind` "train"), or one task's
/// evaluation (`kind` "eval").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub kind: String,
    pub step: u64,
    pub task: String,
    /// Samples judged (N = B x K) and those used (not dropped).
    pub samples: usize,
    pub used: usize,
    pub reward_raw: f64,
    pub reward_calibrated: f64,
    /// Fraction of samples every judge passed (y = 1).
    pub pass_rate: f64,
    pub pass_rate_by_judge: BTreeMap<String, f64>,
    pub judge_errors: usize,
    /// Mean per-token KL of the behaviour policy from the reference on the
    /// sampled tokens (k1 and k3 estimates).
    pub kl_k1: f64,
    pub kl_k3: f64,
    pub kl_coef: f64,
    pub response_len: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub skipped: bool,
    /// What the optimizer reported (samples used, prompts skipped, ...).
    pub loss_stats: BTreeMap<String, f64>,
    pub time_s: Timing,
}

/// Where a run stands after [`Trainer::run`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub steps: u64,
    pub last: Vec<TaskMetrics>,
    pub checkpoint: Option<PathBuf>,
    pub metrics: PathBuf,
}

/// One task's rollouts of a step, judged and scored.
struct TaskBatch {
    rollouts: Rollouts,
    raw: Vec<f64>,
    calibrated: Vec<f64>,
    positive: Vec<bool>,
    /// Reference log-probs `[N, R]` and, for the `full` estimator, logits.
    ref_logp: Tensor,
    ref_logits: Option<Tensor>,
    /// Per prompt: the baseline response when it passes every judge
    /// (CRRAFT's fallback), as token ids.
    baselines: Vec<Option<Vec<u32>>>,
    metrics: TaskMetrics,
}

/// Baselines for calibration sampled greedily from the frozen reference.
struct ReferenceBaselines<'a> {
    reference: &'a dyn Policy,
    tokenizer: &'a dyn TextTokenizer,
    max_new_tokens: usize,
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

/// SplitMix64 over several words: independent seeds per step and task.
fn seed_of(words: &[u64]) -> u64 {
    words.iter().fold(0x243F_6A88_85A3_08D3u64, |acc, &w| {
        let mut z = acc ^ w.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

pub struct Trainer {
    seed: u64,
    train_config: TrainConfig,
    /// The run's config as its caller recorded it (a `RunConfig`'s JSON),
    /// kept in every checkpoint.
    recorded: serde_json::Value,
    tasks: Vec<TaskSpec>,
    train: Vec<Vec<Arc<PromptRecord>>>,
    eval: Vec<Vec<Arc<PromptRecord>>>,
    policy: Box<dyn Policy>,
    reference: Box<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    kl: Vec<KlController>,
    step: u64,
    consecutive_skips: u32,
    out_dir: PathBuf,
    last_checkpoint: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// A trainer from Rust values: a policy and its tokenizer, tasks with
/// their training (and evaluation) prompts, the loop's settings and a seed.
/// [`crate::config::RunConfig::trainer`] fills one from a JSON config.
pub struct TrainerBuilder {
    policy: Box<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    seed: u64,
    train_config: TrainConfig,
    recorded: serde_json::Value,
    tasks: Vec<TaskSpec>,
    train: Vec<Vec<Arc<PromptRecord>>>,
    eval: Vec<Vec<Arc<PromptRecord>>>,
}

impl TrainerBuilder {
    /// The seed of everything random: data order, sampling, evaluation.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Steps, AdamW, decoding, evaluation, checkpoints, output directory.
    pub fn train_config(mut self, config: TrainConfig) -> Self {
        self.train_config = config;
        self
    }

    /// Adds a task with its training prompts and its evaluation prompts
    /// (may be empty).
    pub fn task<T, E>(mut self, task: TaskSpec, train: T, eval: E) -> Self
    where
        T: IntoIterator,
        T::Item: Into<Arc<PromptRecord>>,
        E: IntoIterator,
        E::Item: Into<Arc<PromptRecord>>,
    {
        self.tasks.push(task);
        self.train.push(train.into_iter().map(Into::into).collect());
        self.eval.push(eval.into_iter().map(Into::into).collect());
        self
    }

    /// A JSON record of the run's configuration, written into every
    /// checkpoint (the run config's JSON when built from one).
    pub fn record_config(mut self, config: serde_json::Value) -> Self {
        self.recorded = config;
        self
    }

    /// Checks the settings and the tasks (errors name `tasks[l]`), freezes
    /// a copy of the policy as the reference and sets up AdamW.
    pub fn build(self) -> Result<Trainer> {
        self.train_config.validate()?;
        if self.tasks.is_empty() {
            return Err(Error::config("tasks", "at least one task is needed"));
        }
        let mut names = std::collections::HashSet::new();
        for (l, (task, data)) in self.tasks.iter().zip(&self.train).enumerate() {
            task.validate(&format!("tasks[{l}]"))?;
            if !names.insert(task.name.as_str()) {
                return Err(Error::config(
                    format!("tasks[{l}].name"),
                    format!("duplicate task `{}`", task.name),
                ));
            }
            if data.is_empty() {
                return Err(Error::config(
                    "data.train",
                    format!("task `{}` has no training prompts", task.name),
                ));
            }
        }
        if self.tasks.iter().all(|t| t.weight == 0.0) {
            return Err(Error::config(
                "tasks",
                "every task has weight 0; at least one must be > 0",
            ));
        }
        let reference = self.policy.frozen()?;
        let vars = self.policy.vars();
        if vars.is_empty() {
            return Err(Error::Train("the policy has no trainable variables".into()));
        }
        let optimizer = AdamW::from_config(&vars, &self.train_config)?;
        let kl = self
            .tasks
            .iter()
            .map(|t| KlController::new(&t.kl))
            .collect();
        let out_dir = self.train_config.output_dir.clone();
        Ok(Trainer {
            seed: self.seed,
            train_config: self.train_config,
            recorded: self.recorded,
            tasks: self.tasks,
            train: self.train,
            eval: self.eval,
            policy: self.policy,
            reference,
            tokenizer: self.tokenizer,
            vars,
            optimizer,
            kl,
            step: 0,
            consecutive_skips: 0,
            out_dir,
            last_checkpoint: None,
            progress: false,
        })
    }
}

impl Trainer {
    /// Starts a trainer of `policy` (its frozen copy is the reference).
    pub fn builder(policy: Box<dyn Policy>, tokenizer: Arc<dyn TextTokenizer>) -> TrainerBuilder {
        TrainerBuilder {
            policy,
            tokenizer,
            seed: 0,
            train_config: TrainConfig::default(),
            recorded: serde_json::Value::Null,
            tasks: Vec::new(),
            train: Vec::new(),
            eval: Vec::new(),
        }
    }

    /// The tasks, in the order they were added.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    pub fn step_count(&self) -> u64 {
        self.step
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// pi_ref: the frozen copy of the policy as it was built.
    pub fn reference(&self) -> &dyn Policy {
        self.reference.as_ref()
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.out_dir.join("metrics.jsonl")
    }

    /// Loads the latest checkpoint in the output directory, if there is
    /// one; returns whether it did. Metrics lines after it are removed.
    pub fn resume(&mut self) -> Result<bool> {
        let Some(dir) = checkpoint::latest(&self.out_dir)? else {
            return Ok(false);
        };
        let state = checkpoint::read_state(&dir)?;
        if state.kl.len() != self.tasks.len() || state.baselines.len() != self.tasks.len() {
            return Err(Error::model(
                dir.display(),
                "the checkpoint is of a run with other tasks",
            ));
        }
        self.policy.load(&dir.join(checkpoint::POLICY_FILE))?;
        self.optimizer
            .load(&dir.join(checkpoint::OPTIMIZER_FILE), state.optimizer_steps)?;
        self.kl = state.kl;
        for (task, cached) in self.tasks.iter().zip(state.baselines) {
            task.reward.restore(cached);
        }
        self.step = state.step;
        self.consecutive_skips = state.consecutive_skips;
        self.last_checkpoint = Some(dir);
        truncate_metrics(&self.metrics_path(), self.step)?;
        Ok(true)
    }

    /// Writes a checkpoint of the current state.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let state = TrainerState {
            step: self.step,
            optimizer_steps: self.optimizer.steps_taken(),
            consecutive_skips: self.consecutive_skips,
            kl: self.kl.clone(),
            baselines: self.tasks.iter().map(|t| t.reward.cached()).collect(),
            config: self.recorded.clone(),
        };
        let dir = checkpoint::publish(&self.out_dir, self.step, |tmp| {
            self.policy.save(&tmp.join(checkpoint::POLICY_FILE))?;
            self.optimizer.save(&tmp.join(checkpoint::OPTIMIZER_FILE))?;
            checkpoint::write_state(tmp, &state)
        })?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// Trains until `train.steps`, with evaluation, metrics and checkpoints.
    pub fn run(&mut self) -> Result<RunSummary> {
        std::fs::create_dir_all(&self.out_dir).map_err(|e| Error::io(&self.out_dir, e))?;
        let total = self.train_config.steps;
        let bar = if self.progress {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps {elapsed}<{eta} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(self.step);
            bar
        } else {
            ProgressBar::hidden()
        };
        let mut last = Vec::new();
        while self.step < total {
            let metrics = self.train_step()?;
            self.append_metrics(&metrics)?;
            bar.set_position(self.step);
            bar.set_message(headline(&metrics));
            last = metrics;
            let every = self.train_config.checkpoint_every;
            if every > 0 && self.step % every == 0 && self.step < total {
                self.checkpoint()?;
            }
            let eval_every = self.train_config.eval_every;
            if eval_every > 0 && self.step % eval_every == 0 {
                let eval = self.evaluate()?;
                self.append_metrics(&eval)?;
            }
        }
        bar.finish_and_clear();
        let checkpoint = Some(self.checkpoint()?);
        Ok(RunSummary {
            steps: self.step,
            last,
            checkpoint,
            metrics: self.metrics_path(),
        })
    }

    fn append_metrics(&self, lines: &[TaskMetrics]) -> Result<()> {
        let path = self.metrics_path();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        for m in lines {
            let line = serde_json::to_string(m).map_err(|e| Error::Train(e.to_string()))?;
            writeln!(f, "{line}").map_err(|e| Error::io(&path, e))?;
        }
        f.flush().map_err(|e| Error::io(&path, e))
    }

    /// The prompts of task `l` at `step`: a seeded permutation per pass
    /// over its data.
    fn batch_records(&self, l: usize, step: u64) -> Vec<Arc<PromptRecord>> {
        let data = &self.train[l];
        let b = self.tasks[l].batch_size;
        let mut out = Vec::with_capacity(b);
        let mut order: Option<(u64, Vec<usize>)> = None;
        for j in 0..b as u64 {
            let i = step * b as u64 + j;
            let pass = i / data.len() as u64;
            if order.as_ref().is_none_or(|(p, _)| *p != pass) {
                let mut idx: Vec<usize> = (0..data.len()).collect();
                idx.shuffle(&mut StdRng::seed_from_u64(seed_of(&[
                    self.seed, l as u64, pass, 1,
                ])));
                order = Some((pass, idx));
            }
            let (_, idx) = order.as_ref().expect("set above");
            out.push(data[idx[(i % data.len() as u64) as usize]].clone());
        }
        out
    }

    /// Rollouts, judges, rewards and reference log-probs of one task.
    fn prepare(&self, l: usize) -> Result<TaskBatch> {
        let task = &self.tasks[l];
        let records = self.batch_records(l, self.step);
        let prompts = records
            .iter()
            .map(|r| self.tokenizer.encode_prompt(&r.prompt))
            .collect::<Result<Vec<_>>>()?;
        let sampling = self.train_config.sampling.sampling(
            task.generations_per_prompt,
            seed_of(&[self.seed, self.step, l as u64, 2]),
        );
        let mut timing = Timing::default();
        let t = Instant::now();
        let rollouts = generate(
            self.policy.as_ref(),
            self.tokenizer.as_ref(),
            &prompts,
            &sampling,
        )?;
        timing.rollout = t.elapsed().as_secs_f64();

        let mut samples: Vec<Sample> = rollouts
            .prompt_index
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let mut s = Sample::new(records[p].clone(), rollouts.texts[i].clone());
                s.token_ids = rollouts.responses[i].clone();
                s.behaviour_logprobs = rollouts.logprobs[i].clone();
                s
            })
            .collect();
        let t = Instant::now();
        let report = {
            let views: Vec<_> = samples.iter().map(Sample::view).collect();
            task.judges.judge(&views)
        };
        timing.judge = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let generator = ReferenceBaselines {
            reference: self.reference.as_ref(),
            tokenizer: self.tokenizer.as_ref(),
            max_new_tokens: self.train_config.sampling.max_new_tokens,
        };
        task.reward.score(&mut samples, Some(&generator))?;
        timing.reward = t.elapsed().as_secs_f64();

        let n = samples.len();
        let keep: Vec<usize> = (0..n)
            .filter(|&i| report.samples[i].outcome != Outcome::Dropped)
            .collect();
        let values: Vec<_> = samples
            .iter()
            .map(|s| s.reward.expect("scored above"))
            .collect();
        let mut metrics = TaskMetrics {
            kind: "train".into(),
            step: self.step,
            task: task.name.clone(),
            samples: n,
            used: keep.len(),
            reward_raw: mean(values.iter().map(|v| f64::from(v.raw))),
            reward_calibrated: mean(values.iter().map(|v| f64::from(v.calibrated))),
            pass_rate: report.count(Outcome::Satisfied) as f64 / n.max(1) as f64,
            pass_rate_by_judge: report
                .stats
                .iter()
                .map(|s| (s.name.clone(), s.pass as f64 / n.max(1) as f64))
                .collect(),
            judge_errors: report.errored(),
            kl_coef: self.kl[l].coef(),
            response_len: mean(rollouts.responses.iter().map(|r| r.len() as f64)),
            time_s: timing,
            ..TaskMetrics::default()
        };
        let rollouts = rollouts.select(&keep);
        let positive: Vec<bool> = keep
            .iter()
            .map(|&i| report.samples[i].is_positive())
            .collect();
        let raw = keep.iter().map(|&i| f64::from(values[i].raw)).collect();
        // With `reward.calibrated: false` the optimizer sees the raw reward
        // in place of the calibrated one; the metrics keep both.
        let calibrated = keep
            .iter()
            .map(|&i| {
                f64::from(if task.calibrated {
                    values[i].calibrated
                } else {
                    values[i].raw
                })
            })
            .collect();

        let (ref_logp, ref_logits) = if rollouts.is_empty() {
            (
                Tensor::zeros((0, 0), candle_core::DType::F32, self.policy.device())?,
                None,
            )
        } else if task.kl.needs_logits() {
            let logits = response_logits(self.reference.as_ref(), &rollouts, false)?;
            (logprobs_from_logits(&logits, &rollouts)?, Some(logits))
        } else {
            (
                crate::rollout::sequence_logprobs(self.reference.as_ref(), &rollouts, false)?,
                None,
            )
        };
        if !rollouts.is_empty() {
            let device = self.policy.device();
            let old = rollouts.behaviour_logprobs(device)?;
            let mask = rollouts.response_mask(device)?;
            let tokens = mask.sum_all()?.to_scalar::<f32>()?.max(1.0);
            let k1 = ((&old - &ref_logp)? * &mask)?
                .sum_all()?
                .to_scalar::<f32>()?
                / tokens;
            let k3 = (kl_estimate(&old, &ref_logp, KlEstimator::K3)? * &mask)?
                .sum_all()?
                .to_scalar::<f32>()?
                / tokens;
            metrics.kl_k1 = f64::from(k1);
            metrics.kl_k3 = f64::from(k3);
        }
        let baselines = if task.loss.needs_baselines() {
            self.passing_baselines(task, &records)?
        } else {
            vec![None; records.len()]
        };
        Ok(TaskBatch {
            rollouts,
            raw,
            calibrated,
            positive,
            ref_logp,
            ref_logits,
            baselines,
            metrics,
        })
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
                let mut ids = self.tokenizer.encode(texts[i].expect("filtered"))?;
                ids.extend(self.tokenizer.stop_tokens().first());
                if !ids.is_empty() {
                    out[i] = Some(ids);
                }
            }
        }
        Ok(out)
    }

    /// One task's loss on its batch with the current policy.
    /// `None` when the policy's log-probs are not finite (the step is
    /// then skipped rather than failed).
    fn task_loss(
        &self,
        l: usize,
        batch: &TaskBatch,
    ) -> Result<Option<(Tensor, BTreeMap<String, f64>)>> {
        let task = &self.tasks[l];
        let ro = &batch.rollouts;
        let device = self.policy.device();
        let (policy_logits, token_logp) = if batch.ref_logits.is_some() || task.loss.needs_logits()
        {
            let logits = response_logits(self.policy.as_ref(), ro, true)?;
            let lp = logprobs_from_logits(&logits, ro)?;
            (Some(logits), lp)
        } else {
            (
                None,
                crate::rollout::sequence_logprobs(self.policy.as_ref(), ro, true)?,
            )
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
        let baseline_seq_logp = self.baseline_logps(ro, &batch.baselines)?;
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
            raw: batch.raw.clone(),
            calibrated: batch.calibrated.clone(),
            positive: batch.positive.clone(),
            group: groups,
            lengths: ro.responses.iter().map(Vec::len).collect(),
            baseline_seq_logp,
            logits: policy_logits.clone().filter(|_| task.loss.needs_logits()),
        };
        debug_assert_eq!(inputs.baseline_seq_logp.len(), n_groups);
        let out = task.loss.loss(&inputs)?;
        let mut stats: BTreeMap<String, f64> =
            out.stats.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let coef = self.kl[l].coef();
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
        &self,
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
        let seq =
            crate::rollout::sequence_logprobs(self.policy.as_ref(), &sub, true)?.sum(D::Minus1)?;
        for (k, &p) in which.iter().enumerate() {
            out[p] = Some(seq.get(k)?);
        }
        Ok(out)
    }

    /// Each task's gradient at the current step (rollouts as `train_step`
    /// would draw them) and their merge `Σ ρ_l g_l`, before clipping;
    /// nothing is updated. For inspection and tests.
    pub fn gradients(&self) -> Result<(Vec<TaskGradient>, Vec<Option<Tensor>>)> {
        let mut merged: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        let mut per_task = Vec::new();
        for l in 0..self.tasks.len() {
            let batch = self.prepare(l)?;
            let (loss, _) = self.task_loss(l, &batch)?.ok_or_else(|| {
                Error::Train(format!(
                    "task `{}`: non-finite log-probs",
                    self.tasks[l].name
                ))
            })?;
            let grad = task_gradient(&loss, &self.vars)?;
            add_weighted(&mut merged, &grad.grads, self.tasks[l].weight)?;
            per_task.push(grad);
        }
        Ok((per_task, merged))
    }

    /// One training step over every task; returns one metrics line per task.
    pub fn train_step(&mut self) -> Result<Vec<TaskMetrics>> {
        let mut batches = Vec::with_capacity(self.tasks.len());
        for l in 0..self.tasks.len() {
            batches.push(self.prepare(l)?);
        }
        let epochs = self
            .tasks
            .iter()
            .map(|t| t.loss.epochs())
            .max()
            .unwrap_or(1);
        let lr = learning_rate(&self.train_config, self.step);
        let mut skipped = false;
        for epoch in 0..epochs {
            let mut merged: Vec<Option<Tensor>> = vec![None; self.vars.len()];
            let mut finite = true;
            for (l, batch) in batches.iter_mut().enumerate() {
                if epoch >= self.tasks[l].loss.epochs() || batch.rollouts.is_empty() {
                    continue;
                }
                let t = Instant::now();
                let Some((loss, stats)) = self.task_loss(l, batch)? else {
                    batch.metrics.loss = f64::NAN;
                    finite = false;
                    continue;
                };
                let value = f64::from(loss.to_scalar::<f32>()?);
                let grad = task_gradient(&loss, &self.vars)?;
                let m = &mut batch.metrics;
                m.time_s.backward += t.elapsed().as_secs_f64();
                if epoch == 0 {
                    m.loss = value;
                    m.grad_norm = grad.norm;
                    m.loss_stats = stats;
                }
                finite &= value.is_finite() && grad.norm.is_finite();
                add_weighted(&mut merged, &grad.grads, self.tasks[l].weight)?;
            }
            if !finite {
                skipped = true;
                break;
            }
            clip(&mut merged, self.train_config.max_grad_norm)?;
            self.optimizer.step(&merged, lr)?;
        }
        let mut out = Vec::with_capacity(batches.len());
        for (l, b) in batches.into_iter().enumerate() {
            let mut m = b.metrics;
            m.learning_rate = lr;
            m.skipped = skipped;
            if !skipped {
                let kl = self.tasks[l].kl.estimator.tracked(m.kl_k1, m.kl_k3);
                self.kl[l].update(kl, m.used);
            }
            out.push(m);
        }
        self.step += 1;
        if skipped {
            self.consecutive_skips += 1;
            if self.consecutive_skips >= self.train_config.max_consecutive_skips {
                let last = self
                    .last_checkpoint
                    .as_ref()
                    .map_or("none".to_string(), |p| p.display().to_string());
                return Err(Error::Train(format!(
                    "{} consecutive steps had a non-finite loss or gradient (last at step {}); stopping. Last good checkpoint: {last}",
                    self.consecutive_skips, self.step
                )));
            }
        } else {
            self.consecutive_skips = 0;
        }
        Ok(out)
    }

    /// Pass rate and mean raw reward on each task's evaluation prompts.
    pub fn evaluate(&self) -> Result<Vec<TaskMetrics>> {
        let mut out = Vec::new();
        for (l, task) in self.tasks.iter().enumerate() {
            let records: Vec<_> = self.eval[l]
                .iter()
                .take(self.train_config.eval_prompts)
                .cloned()
                .collect();
            if records.is_empty() {
                continue;
            }
            let prompts = records
                .iter()
                .map(|r| self.tokenizer.encode_prompt(&r.prompt))
                .collect::<Result<Vec<_>>>()?;
            let mut cfg = self
                .train_config
                .sampling
                .sampling(1, seed_of(&[self.seed, l as u64, 3]));
            if self.train_config.eval_greedy {
                cfg.temperature = 0.0;
            }
            let t = Instant::now();
            let ro = generate(
                self.policy.as_ref(),
                self.tokenizer.as_ref(),
                &prompts,
                &cfg,
            )?;
            let rollout = t.elapsed().as_secs_f64();
            let views: Vec<_> = records
                .iter()
                .zip(&ro.texts)
                .map(|(r, t)| r.view(t))
                .collect();
            let report = task.judges.judge(&views);
            let raw = task.raw_scores(&views)?;
            let n = records.len();
            out.push(TaskMetrics {
                kind: "eval".into(),
                step: self.step,
                task: task.name.clone(),
                samples: n,
                used: n,
                reward_raw: mean(raw.iter().map(|&r| f64::from(r))),
                pass_rate: report.count(Outcome::Satisfied) as f64 / n as f64,
                pass_rate_by_judge: report
                    .stats
                    .iter()
                    .map(|s| (s.name.clone(), s.pass as f64 / n as f64))
                    .collect(),
                judge_errors: report.errored(),
                response_len: mean(ro.responses.iter().map(|r| r.len() as f64)),
                time_s: Timing {
                    rollout,
                    ..Timing::default()
                },
                ..TaskMetrics::default()
            });
        }
        Ok(out)
    }
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The progress bar's message: pass rate, calibrated reward and KL per task.
fn headline(metrics: &[TaskMetrics]) -> String {
    metrics
        .iter()
        .map(|m| {
            format!(
                "{} pass {:.2} r {:.3} kl {:.3}",
                m.task, m.pass_rate, m.reward_calibrated, m.kl_k3
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Keeps only the metrics lines up to `step` (those a checkpoint covers):
/// `train` lines of earlier steps, other lines (evaluations) up to `step`.
pub(crate) fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        // Only `kind` and `step` are read: skipped steps have a null loss.
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let at = m["step"].as_u64().unwrap_or(u64::MAX);
        let covered = if m["kind"] == "train" {
            at < step
        } else {
            at <= step
        };
        if covered {
            kept.push(line);
        }
    }
    let tmp = path.with_extension("jsonl.partial");
    std::fs::write(
        &tmp,
        kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
