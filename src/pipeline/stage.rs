//! The stages before CGPO: a [`Stage`] says what is trained and what its
//! loss on a minibatch is; [`StageRunner`] makes it a [`Job`] of the one
//! training loop ([`crate::train::RunLoop`]: metrics, evaluations,
//! checkpoints, resume, the skip guard, a progress bar), with the CGPO
//! trainer's parts: seeded data order ([`crate::train::seeded_order`]),
//! AdamW with the warm-up / cosine schedule, global gradient clipping
//! ([`crate::train::AdamW::update`]).
//!
//! ```
//! use candle_core::{Tensor, Var};
//! use cgpo::pipeline::{BatchLoss, Split, Stage, StageRunner, StageTrain};
//! /// Fits `w` to the mean of some numbers.
//! struct Mean { w: Var, data: Vec<f32> }
//! impl Stage for Mean {
//!     fn name(&self) -> &'static str { "mean" }
//!     fn vars(&self) -> Vec<(String, Var)> { vec![("w".into(), self.w.clone())] }
//!     fn len(&self, split: Split) -> usize { if split == Split::Train { self.data.len() } else { 0 } }
//!     fn loss(&self, _: Split, idx: &[usize], _: bool) -> cgpo::Result<BatchLoss> {
//!         let x: Vec<f32> = idx.iter().map(|&i| self.data[i]).collect();
//!         let x = Tensor::new(x.as_slice(), self.w.device())?;
//!         let loss = x.broadcast_sub(self.w.as_tensor())?.sqr()?.mean_all()?;
//!         Ok(BatchLoss { loss, weight: idx.len() as f64, stats: vec![] })
//!     }
//!     fn save(&self, _: &std::path::Path) -> cgpo::Result<()> { Ok(()) }
//!     fn load(&mut self, _: &std::path::Path) -> cgpo::Result<()> { Ok(()) }
//! }
//! let out = tempfile::tempdir().unwrap();
//! let stage = Mean { w: Var::new(&[0f32], &candle_core::Device::Cpu)?, data: vec![1.0, 2.0, 3.0] };
//! let train = StageTrain { steps: 200, batch_size: 3, learning_rate: 0.05, output_dir: Some(out.path().into()), ..StageTrain::default() };
//! let mut runner = StageRunner::new(stage, &train, 0, serde_json::json!({}))?;
//! let summary = runner.run()?;
//! assert!((runner.stage().w.to_vec1::<f32>()?[0] - 2.0).abs() < 0.05);
//! assert_eq!(summary.steps, 200);
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::config::StageTrain;
use crate::error::{Error, Result};
use crate::run_dir::OPTIMIZER_FILE;
use crate::train::merge::task_gradient;
use crate::train::{
    learning_rate, seeded_order, AdamW, Job, LoopSettings, LoopState, RunLoop, Stepped, TrainConfig,
};

/// Which records a batch comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Eval,
}

/// The loss of one minibatch and what to log about it.
pub struct BatchLoss {
    /// A scalar f32 tensor; differentiable when asked for.
    pub loss: Tensor,
    /// How much this batch counts when evaluation averages over batches
    /// (tokens for SFT, pairs for the preference stages).
    pub weight: f64,
    /// Batch means (accuracy, margin, ...), weighted like the loss.
    pub stats: Vec<(&'static str, f64)>,
}

/// One stage before CGPO: what it trains and its loss.
pub trait Stage {
    /// `sft`, `reward`, `dpo`, ...: in metrics and checkpoints.
    fn name(&self) -> &'static str;

    /// The trainable variables with checkpoint names, in a fixed order.
    fn vars(&self) -> Vec<(String, Var)>;

    /// Records in a split.
    fn len(&self, split: Split) -> usize;

    /// The loss of records `idx` of `split`; `grad`: through the
    /// differentiable path (training), else without autograd (evaluation).
    fn loss(&self, split: Split, idx: &[usize], grad: bool) -> Result<BatchLoss>;

    /// Writes the trained model into a checkpoint directory.
    fn save(&self, dir: &Path) -> Result<()>;

    /// Reads what [`Stage::save`] wrote.
    fn load(&mut self, dir: &Path) -> Result<()>;
}

/// One `metrics.jsonl` line: a training step (`kind` "train", `step` its
/// 0-based index) or an evaluation (`kind` "eval", after `step` steps).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageMetrics {
    pub kind: String,
    pub stage: String,
    pub step: u64,
    /// Records in the batch or the evaluation.
    pub examples: usize,
    pub loss: f64,
    /// The stage's statistics (`accuracy`, `margin`, `tokens`, ...).
    #[serde(flatten)]
    pub stats: BTreeMap<String, f64>,
    /// Before clipping; training lines only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    /// A non-finite loss or gradient: no update was made.
    #[serde(default)]
    pub skipped: bool,
    pub time_s: f64,
}

/// Where a stage stands after [`StageRunner::run`].
#[derive(Clone, Debug)]
pub struct StageSummary {
    pub steps: u64,
    pub last_train: Option<StageMetrics>,
    /// The first and the last evaluation of this run (eval records only).
    pub first_eval: Option<StageMetrics>,
    pub last_eval: Option<StageMetrics>,
    pub checkpoint: PathBuf,
    pub metrics: PathBuf,
}

/// A stage as a [`Job`] of the one training loop.
pub struct StageRunner<S: Stage> {
    stage: S,
    cfg: StageTrain,
    optimizer_cfg: TrainConfig,
    seed: u64,
    config: serde_json::Value,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    state: LoopState,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// The stage's part of a checkpoint's state.
#[derive(Serialize, Deserialize)]
struct StageState {
    optimizer_steps: u64,
    /// The stage's config, as run.
    config: serde_json::Value,
}

impl<S: Stage> StageRunner<S> {
    /// `config` is stored in checkpoints (the stage's whole config).
    pub fn new(stage: S, cfg: &StageTrain, seed: u64, config: serde_json::Value) -> Result<Self> {
        let vars = stage.vars();
        if vars.is_empty() {
            return Err(Error::Train(format!(
                "{}: the model has no trainable variables",
                stage.name()
            )));
        }
        if stage.len(Split::Train) == 0 {
            return Err(Error::Train(format!(
                "{}: no training records",
                stage.name()
            )));
        }
        let optimizer_cfg = cfg.optimizer();
        let optimizer = AdamW::from_config(&vars, &optimizer_cfg)?;
        Ok(Self {
            stage,
            cfg: cfg.clone(),
            optimizer_cfg,
            seed,
            config,
            vars,
            optimizer,
            state: LoopState::default(),
            progress: false,
        })
    }

    pub fn stage(&self) -> &S {
        &self.stage
    }

    pub fn into_stage(self) -> S {
        self.stage
    }

    pub fn step_count(&self) -> u64 {
        self.state.step
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.cfg.output_dir(self.stage.name()).join("metrics.jsonl")
    }

    /// The loop's schedule: evaluation before the first step, every
    /// `eval_every` steps and after the last; checkpoints every
    /// `checkpoint_every` steps and at the end.
    pub fn loop_settings(&self) -> LoopSettings {
        LoopSettings {
            steps: self.cfg.steps,
            eval_every: self.cfg.eval_every,
            eval_at_start: true,
            eval_at_end: true,
            checkpoint_every: self.cfg.checkpoint_every,
            final_checkpoint: true,
            max_consecutive_skips: self.cfg.max_consecutive_skips,
            output_dir: self.cfg.output_dir(self.stage.name()),
            progress: self.progress.then(|| self.stage.name().to_string()),
        }
    }

    /// Loads the latest checkpoint in the output directory, if any; returns
    /// whether it did. Metrics lines after it are removed.
    pub fn resume(&mut self) -> Result<bool> {
        let settings = self.loop_settings();
        RunLoop::new(self, settings).resume()
    }

    /// Writes a checkpoint of the current state.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let settings = self.loop_settings();
        RunLoop::new(self, settings).checkpoint()
    }

    /// Trains until `train.steps` on the loop of
    /// [`StageRunner::loop_settings`].
    pub fn run(&mut self) -> Result<StageSummary> {
        let settings = self.loop_settings();
        let (mut first_eval, mut last_eval, mut last_train) = (None, None, None);
        let summary = RunLoop::new(self, settings)
            .on_step(|_, m: &StageMetrics, _| last_train = Some(m.clone()))
            .on_eval(|_, m: &StageMetrics, _| {
                first_eval.get_or_insert_with(|| m.clone());
                last_eval = Some(m.clone());
            })
            .run()?;
        Ok(StageSummary {
            steps: summary.steps,
            last_train,
            first_eval,
            last_eval,
            checkpoint: summary
                .checkpoint
                .expect("the stage loop checkpoints at the end"),
            metrics: summary.metrics,
        })
    }
}

impl<S: Stage> Job for StageRunner<S> {
    type Step = StageMetrics;
    type Eval = StageMetrics;

    fn name(&self) -> &str {
        self.stage.name()
    }

    fn state(&self) -> &LoopState {
        &self.state
    }

    fn state_mut(&mut self) -> &mut LoopState {
        &mut self.state
    }

    /// One optimizer step on the next minibatch (a seeded permutation per
    /// pass over the records).
    fn train_step(&mut self) -> Result<Stepped<StageMetrics>> {
        let start = Instant::now();
        let step = self.state.step;
        let seed = self.seed;
        let idx = seeded_order(
            self.stage.len(Split::Train),
            self.cfg.batch_size,
            step,
            |pass| mix(seed, pass),
        );
        let lr = learning_rate(&self.optimizer_cfg, step);
        let batch = self.stage.loss(Split::Train, &idx, true)?;
        let loss = f64::from(
            batch
                .loss
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?,
        );
        let (grad_norm, skipped) = if loss.is_finite() {
            let mut grads = task_gradient(&batch.loss, &self.vars)?.grads;
            let norm = self
                .optimizer
                .update(&mut grads, self.cfg.max_grad_norm, lr)?;
            (norm, !norm.is_finite())
        } else {
            (f64::NAN, true)
        };
        let record = StageMetrics {
            kind: "train".into(),
            stage: self.stage.name().into(),
            step,
            examples: idx.len(),
            loss,
            stats: batch
                .stats
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            grad_norm: Some(grad_norm),
            learning_rate: Some(lr),
            skipped,
            time_s: start.elapsed().as_secs_f64(),
        };
        Ok(Stepped { record, skipped })
    }

    /// Loss and statistics on the first `eval_examples` eval records,
    /// averaged by the batches' weights; `None` without eval records.
    fn evaluate(&mut self) -> Result<Option<StageMetrics>> {
        let n = self.stage.len(Split::Eval).min(self.cfg.eval_examples);
        if n == 0 {
            return Ok(None);
        }
        let start = Instant::now();
        let (mut loss, mut total) = (0.0, 0.0);
        let mut stats: BTreeMap<String, f64> = BTreeMap::new();
        let all: Vec<usize> = (0..n).collect();
        for idx in all.chunks(self.cfg.batch_size) {
            let b = self.stage.loss(Split::Eval, idx, false)?;
            let value = f64::from(
                b.loss
                    .to_dtype(candle_core::DType::F32)?
                    .to_scalar::<f32>()?,
            );
            loss += value * b.weight;
            total += b.weight;
            for (k, v) in b.stats {
                *stats.entry(k.to_string()).or_default() += v * b.weight;
            }
        }
        let total = if total > 0.0 { total } else { 1.0 };
        Ok(Some(StageMetrics {
            kind: "eval".into(),
            stage: self.stage.name().into(),
            step: self.state.step,
            examples: n,
            loss: loss / total,
            stats: stats.into_iter().map(|(k, v)| (k, v / total)).collect(),
            time_s: start.elapsed().as_secs_f64(),
            ..StageMetrics::default()
        }))
    }

    fn step_lines(&self, m: &StageMetrics) -> Vec<serde_json::Value> {
        serde_json::to_value(m).into_iter().collect()
    }

    fn eval_lines(&self, m: &StageMetrics) -> Vec<serde_json::Value> {
        serde_json::to_value(m).into_iter().collect()
    }

    fn headline(&self, m: &StageMetrics) -> String {
        headline(m)
    }

    fn save(&self, dir: &Path) -> Result<serde_json::Value> {
        self.stage.save(dir)?;
        self.optimizer.save(&dir.join(OPTIMIZER_FILE))?;
        serde_json::to_value(StageState {
            optimizer_steps: self.optimizer.steps_taken(),
            config: self.config.clone(),
        })
        .map_err(|e| Error::Train(e.to_string()))
    }

    fn load(&mut self, dir: &Path, state: serde_json::Value) -> Result<()> {
        let state: StageState = serde_json::from_value(state)
            .map_err(|e| Error::model(dir.display(), format!("not a stage checkpoint: {e}")))?;
        self.stage.load(dir)?;
        self.optimizer
            .load(&dir.join(OPTIMIZER_FILE), state.optimizer_steps)
    }
}

/// The progress bar's message: loss and the stage's statistics.
fn headline(m: &StageMetrics) -> String {
    let mut out = format!("loss {:.4}", m.loss);
    for (k, v) in &m.stats {
        out.push_str(&format!(" {k} {v:.3}"));
    }
    out
}

/// SplitMix64 of the seed and a pass: one permutation per pass.
fn mix(seed: u64, pass: u64) -> u64 {
    let mut z = seed ^ pass.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
