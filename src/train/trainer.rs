//! The multi-task CGPO trainer (docs/algorithm.md §3-§5), a [`Job`] of the
//! one training loop ([`super::RunLoop`]).
//!
//! One step, for each task `l` in order: collect its experience
//! ([`super::experience`]: `B_l` prompts, `K` responses each, judged,
//! scored, reference log-probs). Then for each epoch (1 except for a loss
//! that asks for more), each task's loss ([`super::task_loss`]: its
//! optimizer plus its own per-token KL penalty) is backpropagated on its
//! own, its gradient norm logged, the gradients merged as `Σ ρ_l g_l`,
//! clipped by global norm, and AdamW steps ([`super::AdamW::update`]).
//!
//! Everything random derives from the run's seed, the step and the task,
//! so a run is deterministic on the CPU and a resumed run continues exactly
//! (weights, AdamW moments, KL controllers and calibration baselines are in
//! the checkpoint). A non-finite loss or gradient skips the step.
//!
//! Build one from Rust values:
//!
//! ```
//! use std::sync::Arc;
//! use cgpo::data::PromptRecord;
//! use cgpo::judges::{LengthJudge, MixtureOfJudges};
//! use cgpo::optim::Crpg;
//! use cgpo::policy::{TinyLm, TinyLmConfig};
//! use cgpo::reward::{BaselineSource, CalibratedReward, LexicalReward};
//! use cgpo::task::TaskSpec;
//! use cgpo::train::{TrainConfig, Trainer};
//! let lm = TinyLm::new(&TinyLmConfig { hidden_size: 16, intermediate_size: 32, layers: 1, heads: 2, kv_heads: 1, context_len: 64 }, 0)?;
//! let task = TaskSpec::new(
//!     "short",
//!     MixtureOfJudges::new(vec![Box::new(LengthJudge::new("length", None, Some(3)))]).unwrap(),
//!     CalibratedReward::new(Arc::new(LexicalReward::new("rm", 0.1, [])), BaselineSource::PolicySample),
//!     Arc::new(Crpg::default()),
//! ).with_batch(2, 2);
//! let out = tempfile::tempdir().unwrap();
//! let mut config = TrainConfig { steps: 1, learning_rate: 1e-3, output_dir: out.path().into(), ..TrainConfig::default() };
//! config.sampling.max_new_tokens = 4;
//! let mut trainer = Trainer::builder(Box::new(lm.model), Arc::new(lm.tokenizer))
//!     .train_config(config)
//!     .task(task, [PromptRecord::new("a", "Hi."), PromptRecord::new("b", "Yo.")], Vec::<PromptRecord>::new())
//!     .build()?;
//! let summary = trainer.run()?;
//! assert_eq!((summary.steps, summary.last[0].samples), (1, 4));
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::adamw::{learning_rate, AdamW};
use super::config::TrainConfig;
use super::evaluate::{EvalSample, Evaluation, Evaluator};
use super::experience::{seed_of, seeded_order, Collector, TaskBatch};
use super::merge::{add_weighted, dot, global_norm, task_gradient, TaskGradient};
use super::metrics::{headline, TaskMetrics};
use super::monitor::{Alarm, AlarmAction, Example, HackingMonitor, StepObservation};
use super::run_loop::{Job, LoopSettings, LoopState, RunLoop, Stepped};
use super::task_loss::task_loss;
use crate::data::{PromptRecord, Sample};
use crate::error::{Error, Result};
use crate::kl::KlController;
use crate::kl::KlEstimator;
use crate::policy::{Policy, TextTokenizer};
use crate::reward::CachedBaseline;
use crate::run_dir::{OPTIMIZER_FILE, POLICY_FILE};
use crate::task::TaskSpec;

/// Where a run stands after [`Trainer::run`].
#[derive(Clone, Debug)]
pub struct RunSummary {
    pub steps: u64,
    /// The last step's metrics, one per task.
    pub last: Vec<TaskMetrics>,
    pub checkpoint: Option<PathBuf>,
    pub metrics: PathBuf,
    /// Why the run stopped early (an alarm with `action: stop`).
    pub stopped: Option<String>,
    /// Every alarm the hacking monitor raised.
    pub alarms: Vec<Alarm>,
}

/// The trainer's part of a checkpoint's state, beside the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    pub optimizer_steps: u64,
    /// Per task, in order.
    pub kl: Vec<KlController>,
    /// Per task, in order.
    pub baselines: Vec<Vec<CachedBaseline>>,
    /// The run's configuration as recorded by its caller.
    pub config: serde_json::Value,
    /// The hacking monitor's history (absent in older checkpoints).
    #[serde(default)]
    pub monitor: Option<HackingMonitor>,
}

/// The CGPO trainer; build one with [`Trainer::builder`] or
/// [`crate::config::RunConfig::trainer`].
pub struct Trainer {
    seed: u64,
    train_config: TrainConfig,
    /// The run's config as its caller recorded it (a `RunConfig`'s JSON),
    /// kept in every checkpoint.
    recorded: serde_json::Value,
    tasks: Vec<TaskSpec>,
    train: Vec<Vec<Arc<PromptRecord>>>,
    evaluator: Option<Arc<Evaluator>>,
    policy: Box<dyn Policy>,
    reference: Arc<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    kl: Vec<KlController>,
    state: LoopState,
    monitor: HackingMonitor,
    /// Every alarm raised in this process, in order.
    alarms: Vec<Alarm>,
    /// The alarms of the latest evaluation (for its metrics lines).
    eval_alarms: Vec<Alarm>,
    /// Why the run should stop (an alarm with `action: stop`).
    stop: Option<String>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The evaluator of `train.eval_prompts` prompts per task from `eval`,
/// one response each (greedy with `eval_greedy`); `None` without prompts.
fn default_evaluator(
    tasks: &[TaskSpec],
    eval: &[Vec<Arc<PromptRecord>>],
    reference: &Arc<dyn Policy>,
    tokenizer: &Arc<dyn TextTokenizer>,
    config: &TrainConfig,
    seed: u64,
) -> Option<Arc<Evaluator>> {
    if eval.iter().all(Vec::is_empty) || config.eval_prompts == 0 {
        return None;
    }
    let prompts = eval
        .iter()
        .map(|records| records.iter().take(config.eval_prompts).cloned().collect())
        .collect();
    let mut sampling = config.sampling.sampling(1, seed_of(&[seed, 3]));
    if config.eval_greedy {
        sampling.temperature = 0.0;
    }
    Some(Arc::new(Evaluator::new(
        tasks.iter().map(TaskSpec::eval_task).collect(),
        prompts,
        reference.clone(),
        tokenizer.clone(),
        sampling,
    )))
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
    evaluator: Option<Arc<Evaluator>>,
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

    /// Evaluate with `evaluator` (its own prompts, judges, reference and
    /// sampling) instead of the tasks on their evaluation prompts.
    pub fn evaluator(mut self, evaluator: Arc<Evaluator>) -> Self {
        self.evaluator = Some(evaluator);
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
        let reference: Arc<dyn Policy> = Arc::from(self.policy.frozen()?);
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
        let evaluator = match self.evaluator {
            Some(e) => Some(e),
            None => default_evaluator(
                &self.tasks,
                &self.eval,
                &reference,
                &self.tokenizer,
                &self.train_config,
                self.seed,
            ),
        };
        if self.train_config.eval_every > 0 && evaluator.is_none() {
            return Err(Error::config(
                "train.eval_every",
                "evaluation needs prompts: give tasks evaluation prompts or an evaluator (or leave `eval_every` at 0)",
            ));
        }
        let monitor = HackingMonitor::new(self.train_config.monitor.clone());
        Ok(Trainer {
            seed: self.seed,
            train_config: self.train_config,
            recorded: self.recorded,
            tasks: self.tasks,
            train: self.train,
            evaluator,
            policy: self.policy,
            reference,
            tokenizer: self.tokenizer,
            vars,
            optimizer,
            kl,
            state: LoopState::default(),
            monitor,
            alarms: Vec::new(),
            eval_alarms: Vec::new(),
            stop: None,
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
            evaluator: None,
        }
    }

    /// The tasks, in the order they were added.
    pub fn tasks(&self) -> &[TaskSpec] {
        &self.tasks
    }

    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    /// pi_ref: the frozen copy of the policy as it was built.
    pub fn reference(&self) -> &dyn Policy {
        self.reference.as_ref()
    }

    /// The evaluator of [`Job::evaluate`], if there is one.
    pub fn evaluator(&self) -> Option<&Evaluator> {
        self.evaluator.as_deref()
    }

    /// Evaluate with `evaluator` from now on.
    pub fn set_evaluator(&mut self, evaluator: Arc<Evaluator>) {
        self.evaluator = Some(evaluator);
    }

    /// Every alarm the hacking monitor raised in this process.
    pub fn alarms(&self) -> &[Alarm] {
        &self.alarms
    }

    /// Shows the hacking monitor an evaluation of the current policy
    /// (the first one it sees is its held-out reference: pass one made
    /// before training when the loop does not evaluate at the start);
    /// applies and returns the alarms it raises.
    pub fn observe_evaluation(&mut self, eval: &Evaluation) -> Vec<Alarm> {
        let step = self.state.step;
        let k = self.monitor.config().examples;
        let mut raised = Vec::new();
        for (task, point) in &eval.points {
            let examples: Vec<Example> = eval
                .samples
                .get(task)
                .map(|v| {
                    v.iter()
                        .take(k.max(1) * 4)
                        .map(|s| eval_example(step, s))
                        .collect()
                })
                .unwrap_or_default();
            if let Some(mut alarm) = self.monitor.observe_eval(step, task, point, &examples) {
                alarm.examples_before.truncate(k);
                alarm.examples_after.truncate(k);
                raised.push(alarm);
            }
        }
        for alarm in &raised {
            self.apply(alarm);
        }
        raised
    }

    /// Reports an alarm on stderr and carries out its action.
    fn apply(&mut self, alarm: &Alarm) {
        eprintln!("cgpo: ALARM at step {}: {}", alarm.step, alarm.message);
        match alarm.action {
            AlarmAction::Log => {}
            AlarmAction::Stop => {
                self.stop.get_or_insert_with(|| alarm.message.clone());
            }
            AlarmAction::RaiseKl => {
                if let Some(l) = self.tasks.iter().position(|t| t.name == alarm.task) {
                    let factor = self.monitor.config().kl_factor;
                    self.kl[l].coef *= factor;
                    eprintln!(
                        "cgpo: task `{}`: KL coefficient raised to {}",
                        alarm.task, self.kl[l].coef
                    );
                }
            }
        }
        self.alarms.push(alarm.clone());
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.train_config.output_dir.join("metrics.jsonl")
    }

    /// The loop's schedule from the train config: evaluation every
    /// `eval_every` steps, checkpoints every `checkpoint_every` and at the
    /// end.
    pub fn loop_settings(&self) -> LoopSettings {
        let c = &self.train_config;
        LoopSettings {
            steps: c.steps,
            eval_every: c.eval_every,
            eval_at_start: false,
            eval_at_end: false,
            checkpoint_every: c.checkpoint_every,
            final_checkpoint: true,
            max_consecutive_skips: c.max_consecutive_skips,
            output_dir: c.output_dir.clone(),
            progress: self.progress.then(|| "cgpo".to_string()),
        }
    }

    /// Loads the latest checkpoint in the output directory, if there is
    /// one; returns whether it did. Metrics lines after it are removed.
    pub fn resume(&mut self) -> Result<bool> {
        let settings = self.loop_settings();
        RunLoop::new(self, settings).resume()
    }

    /// Writes a checkpoint of the current state.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let settings = self.loop_settings();
        RunLoop::new(self, settings).checkpoint()
    }

    /// Trains until `train.steps`, with evaluation, metrics and checkpoints
    /// (the loop of [`Trainer::loop_settings`]).
    pub fn run(&mut self) -> Result<RunSummary> {
        let settings = self.loop_settings();
        let mut last = Vec::new();
        let summary = RunLoop::new(self, settings)
            .on_step(|_, metrics: &Vec<TaskMetrics>, _| last = metrics.clone())
            .run()?;
        Ok(RunSummary {
            steps: summary.steps,
            last,
            checkpoint: summary.checkpoint,
            metrics: summary.metrics,
            stopped: summary.stopped,
            alarms: self.alarms.clone(),
        })
    }

    /// Experience of task `l` at the current step.
    fn collect(&self, l: usize) -> Result<TaskBatch> {
        let task = &self.tasks[l];
        let data = &self.train[l];
        let seed = self.seed;
        let records: Vec<Arc<PromptRecord>> =
            seeded_order(data.len(), task.batch_size, self.state.step, |pass| {
                seed_of(&[seed, l as u64, pass, 1])
            })
            .into_iter()
            .map(|i| data[i].clone())
            .collect();
        let collector = Collector {
            policy: self.policy.as_ref(),
            reference: self.reference.as_ref(),
            tokenizer: self.tokenizer.as_ref(),
            decoding: &self.train_config.sampling,
            seed: self.seed,
            step: self.state.step,
        };
        collector.collect(l, task, &records, self.kl[l].coef())
    }

    /// Each task's gradient at the current step (rollouts as a step would
    /// draw them) and their merge `Σ ρ_l g_l`, before clipping; nothing is
    /// updated. For inspection and tests.
    pub fn gradients(&self) -> Result<(Vec<TaskGradient>, Vec<Option<Tensor>>)> {
        let mut merged: Vec<Option<Tensor>> = vec![None; self.vars.len()];
        let mut per_task = Vec::new();
        for (l, task) in self.tasks.iter().enumerate() {
            let batch = self.collect(l)?;
            let (loss, _) = task_loss(self.policy.as_ref(), task, &batch, self.kl[l].coef())?
                .ok_or_else(|| {
                    Error::Train(format!("task `{}`: non-finite log-probs", task.name))
                })?;
            let grad = task_gradient(&loss, &self.vars)?;
            add_weighted(&mut merged, &grad.grads, task.weight)?;
            per_task.push(grad);
        }
        Ok((per_task, merged))
    }
}

impl Job for Trainer {
    type Step = Vec<TaskMetrics>;
    type Eval = Evaluation;

    fn name(&self) -> &str {
        "cgpo"
    }

    fn state(&self) -> &LoopState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut LoopState {
        &mut self.state
    }

    /// One step over every task; one metrics line per task.
    fn train_step(&mut self) -> Result<Stepped<Vec<TaskMetrics>>> {
        let mut batches = Vec::with_capacity(self.tasks.len());
        for l in 0..self.tasks.len() {
            batches.push(self.collect(l)?);
        }
        let epochs = self
            .tasks
            .iter()
            .map(|t| t.loss.epochs())
            .max()
            .unwrap_or(1);
        let lr = learning_rate(&self.train_config, self.state.step);
        let mut skipped = false;
        for epoch in 0..epochs {
            let mut merged: Vec<Option<Tensor>> = vec![None; self.vars.len()];
            // Epoch 0's task gradients, kept for their cosine to the merge.
            let mut kept: Vec<(usize, TaskGradient)> = Vec::new();
            let mut finite = true;
            for (l, batch) in batches.iter_mut().enumerate() {
                let task = &self.tasks[l];
                if epoch >= task.loss.epochs() || batch.rollouts.is_empty() {
                    continue;
                }
                let t = Instant::now();
                let Some((loss, stats)) =
                    task_loss(self.policy.as_ref(), task, batch, self.kl[l].coef())?
                else {
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
                    if task.kl.estimator == KlEstimator::Full {
                        // At epoch 0 the policy is the behaviour policy.
                        m.kl_exact = stats.get("kl_penalty").copied();
                    }
                    m.loss_stats = stats;
                }
                finite &= value.is_finite() && grad.norm.is_finite();
                add_weighted(&mut merged, &grad.grads, task.weight)?;
                if epoch == 0 && self.train_config.grad_cosine {
                    kept.push((l, grad));
                }
            }
            if !finite {
                skipped = true;
                break;
            }
            if !kept.is_empty() {
                let t = Instant::now();
                let norm = global_norm(&merged)?;
                let share = t.elapsed().as_secs_f64() / kept.len() as f64;
                for (l, grad) in kept.drain(..) {
                    let t = Instant::now();
                    let d = dot(&grad.grads, &merged)?;
                    let m = &mut batches[l].metrics;
                    // Clamped: f32 sums can put a parallel pair a hair above 1.
                    m.grad_cosine = (grad.norm > 0.0 && norm > 0.0)
                        .then(|| (d / (grad.norm * norm)).clamp(-1.0, 1.0));
                    m.time_s.metrics += share + t.elapsed().as_secs_f64();
                }
            }
            self.optimizer
                .update(&mut merged, self.train_config.max_grad_norm, lr)?;
        }
        let mut out = Vec::with_capacity(batches.len());
        let k = self.monitor.config().examples;
        for (l, b) in batches.into_iter().enumerate() {
            let mut m = b.metrics;
            m.learning_rate = lr;
            m.skipped = skipped;
            let kl = self.tasks[l].kl.estimator.tracked(m.kl_k1, m.kl_k3);
            if !skipped {
                self.kl[l].update(kl, m.used);
            }
            let t = Instant::now();
            m.examples = examples_of(&b.samples, m.step, k);
            let alarms = self.monitor.observe_step(StepObservation {
                step: m.step,
                task: m.task.clone(),
                samples: m.samples,
                pass_rate: m.pass_rate,
                reward_raw: m.reward_raw,
                response_len: m.response_len,
                kl,
                examples: examples_of(&b.samples, m.step, 4 * k.max(1)),
            });
            m.time_s.metrics += t.elapsed().as_secs_f64();
            for mut alarm in alarms {
                alarm.examples_before.truncate(k);
                alarm.examples_after.truncate(k);
                self.apply(&alarm);
                m.alarms.push(alarm);
            }
            out.push(m);
        }
        Ok(Stepped {
            record: out,
            skipped,
        })
    }

    /// The evaluator's report on the current policy, shown to the hacking
    /// monitor; `None` without an evaluator.
    fn evaluate(&mut self) -> Result<Option<Evaluation>> {
        let eval = match &self.evaluator {
            Some(e) => e.evaluate_with_samples(self.policy.as_ref())?,
            None => return Ok(None),
        };
        self.eval_alarms = self.observe_evaluation(&eval);
        Ok(Some(eval))
    }

    fn stop_requested(&self) -> Option<String> {
        self.stop.clone()
    }

    /// A `train` line per task, then its `alarm` lines and its `samples`
    /// line.
    fn step_lines(&self, metrics: &Vec<TaskMetrics>) -> Vec<serde_json::Value> {
        let mut lines = Vec::new();
        for m in metrics {
            lines.extend(serde_json::to_value(m).ok());
            lines.extend(m.alarms.iter().filter_map(alarm_line));
            if !m.examples.is_empty() {
                lines.push(serde_json::json!({
                    "kind": "samples", "split": "train", "step": m.step, "task": m.task,
                    "samples": m.examples,
                }));
            }
        }
        lines
    }

    /// The evaluation's lines, its alarms, and a `samples` line per task
    /// (the first `monitor.examples` responses).
    fn eval_lines(&self, eval: &Evaluation) -> Vec<serde_json::Value> {
        let step = self.state.step;
        let mut lines = eval.lines(step);
        lines.extend(self.eval_alarms.iter().filter_map(alarm_line));
        let k = self.monitor.config().examples;
        for (task, samples) in &eval.samples {
            if k == 0 || samples.is_empty() {
                continue;
            }
            let examples: Vec<Example> = samples
                .iter()
                .take(k)
                .map(|s| eval_example(step, s))
                .collect();
            lines.push(serde_json::json!({
                "kind": "samples", "split": eval.split, "step": step, "task": task,
                "samples": examples,
            }));
        }
        lines
    }

    fn headline(&self, metrics: &Vec<TaskMetrics>) -> String {
        headline(metrics)
    }

    fn save(&self, dir: &Path) -> Result<serde_json::Value> {
        self.policy.save(&dir.join(POLICY_FILE))?;
        self.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
        let state = TrainerState {
            optimizer_steps: self.optimizer.steps_taken(),
            kl: self.kl.clone(),
            baselines: self.tasks.iter().map(|t| t.reward.cached()).collect(),
            config: self.recorded.clone(),
            monitor: Some(self.monitor.clone()),
        };
        serde_json::to_value(state).map_err(|e| Error::Train(e.to_string()))
    }

    fn load(&mut self, dir: &Path, state: serde_json::Value) -> Result<()> {
        let state: TrainerState = serde_json::from_value(state)
            .map_err(|e| Error::model(dir.display(), format!("not a CGPO checkpoint: {e}")))?;
        if state.kl.len() != self.tasks.len() || state.baselines.len() != self.tasks.len() {
            return Err(Error::model(
                dir.display(),
                "the checkpoint is of a run with other tasks",
            ));
        }
        self.policy.load(&dir.join(POLICY_FILE))?;
        self.optimizer
            .load(&dir.join(OPTIMIZER_FILE), state.optimizer_steps)?;
        self.kl = state.kl;
        if let Some(m) = state.monitor {
            self.monitor = m.with_config(self.train_config.monitor.clone());
        }
        for (task, cached) in self.tasks.iter().zip(state.baselines) {
            task.reward.restore(cached);
        }
        Ok(())
    }
}

/// An alarm as a metrics line: `{"kind": "alarm", ...}`.
fn alarm_line(alarm: &Alarm) -> Option<serde_json::Value> {
    let mut v = serde_json::to_value(alarm).ok()?;
    v.as_object_mut()?
        .insert("kind".into(), serde_json::Value::from("alarm"));
    Some(v)
}

/// An evaluation's response as evidence (its prompt by id).
fn eval_example(step: u64, s: &EvalSample) -> Example {
    Example {
        step,
        prompt: s.id.clone(),
        response: s.response.clone(),
        passed: s.pass,
        reward_raw: f64::from(s.reward),
    }
}

/// Up to `k` of a step's responses, spread over its samples (and so over
/// its prompts), with their verdict and raw reward.
fn examples_of(samples: &[Sample], step: u64, k: usize) -> Vec<Example> {
    crate::train::evaluate::spread(samples.len(), k)
        .into_iter()
        .map(|i| {
            let s = &samples[i];
            Example {
                step,
                prompt: s.record.prompt.last_user_text().unwrap_or("").to_string(),
                response: s.response.clone(),
                passed: s.judgement.as_ref().is_some_and(|j| j.is_positive()),
                reward_raw: s.reward.map_or(0.0, |r| f64::from(r.raw)),
            }
        })
        .collect()
}
