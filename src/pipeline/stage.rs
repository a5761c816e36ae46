//! The loop every stage before CGPO shares: a [`Stage`] says what is
//! trained and what its loss on a minibatch is; [`StageRunner`] does the
//! rest with the CGPO trainer's parts: seeded data order (a permutation per
//! pass), AdamW with the warm-up / cosine schedule
//! ([`crate::train::AdamW`], [`crate::train::learning_rate`]), global
//! gradient clipping ([`crate::train::merge::clip`]), skipping of
//! non-finite steps, evaluation on the eval records, `metrics.jsonl`,
//! checkpoints published atomically with a `latest` pointer
//! ([`crate::train::checkpoint`]), resume and a progress bar.
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
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::config::StageTrain;
use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::train::checkpoint::{self, OPTIMIZER_FILE, STATE_FILE};
use crate::train::merge::{clip, task_gradient};
use crate::train::{learning_rate, truncate_metrics, AdamW};

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

/// Checkpoint state beside the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageState {
    pub stage: String,
    /// Steps completed.
    pub step: u64,
    pub optimizer_steps: u64,
    pub consecutive_skips: u32,
    /// The stage's config, as run.
    pub config: serde_json::Value,
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

pub struct StageRunner<S: Stage> {
    stage: S,
    cfg: StageTrain,
    optimizer_cfg: TrainConfig,
    seed: u64,
    config: serde_json::Value,
    vars: Vec<(String, Var)>,
    optimizer: AdamW,
    step: u64,
    consecutive_skips: u32,
    out_dir: PathBuf,
    last_checkpoint: Option<PathBuf>,
    /// Draw a progress bar on stderr.
    pub progress: bool,
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
        let out_dir = cfg.output_dir(stage.name());
        Ok(Self {
            stage,
            cfg: cfg.clone(),
            optimizer_cfg,
            seed,
            config,
            vars,
            optimizer,
            step: 0,
            consecutive_skips: 0,
            out_dir,
            last_checkpoint: None,
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
        self.step
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.out_dir.join("metrics.jsonl")
    }

    /// Loads the latest checkpoint in the output directory, if any; returns
    /// whether it did. Metrics lines after it are removed.
    pub fn resume(&mut self) -> Result<bool> {
        let Some(dir) = checkpoint::latest(&self.out_dir)? else {
            return Ok(false);
        };
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let state: StageState = serde_json::from_str(&text)
            .map_err(|e| Error::model(path.display(), format!("not a stage checkpoint: {e}")))?;
        if state.stage != self.stage.name() {
            return Err(Error::model(
                dir.display(),
                format!(
                    "a `{}` checkpoint, not `{}`",
                    state.stage,
                    self.stage.name()
                ),
            ));
        }
        self.stage.load(&dir)?;
        self.optimizer
            .load(&dir.join(OPTIMIZER_FILE), state.optimizer_steps)?;
        self.step = state.step;
        self.consecutive_skips = state.consecutive_skips;
        self.last_checkpoint = Some(dir);
        truncate_metrics(&self.metrics_path(), self.step)?;
        Ok(true)
    }

    /// Writes a checkpoint of the current state.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let state = StageState {
            stage: self.stage.name().to_string(),
            step: self.step,
            optimizer_steps: self.optimizer.steps_taken(),
            consecutive_skips: self.consecutive_skips,
            config: self.config.clone(),
        };
        let dir = checkpoint::publish(&self.out_dir, self.step, |tmp| {
            self.stage.save(tmp)?;
            self.optimizer.save(&tmp.join(OPTIMIZER_FILE))?;
            let path = tmp.join(STATE_FILE);
            let text = serde_json::to_string_pretty(&state)
                .map_err(|e| Error::model(path.display(), e.to_string()))?;
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
        })?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// The records of step `step`: a seeded permutation per pass.
    fn batch_indices(&self, step: u64) -> Vec<usize> {
        let n = self.stage.len(Split::Train) as u64;
        let b = self.cfg.batch_size as u64;
        let mut out = Vec::with_capacity(b as usize);
        let mut order: Option<(u64, Vec<usize>)> = None;
        for j in 0..b {
            let i = step * b + j;
            let pass = i / n;
            if order.as_ref().is_none_or(|(p, _)| *p != pass) {
                let mut idx: Vec<usize> = (0..n as usize).collect();
                idx.shuffle(&mut StdRng::seed_from_u64(mix(self.seed, pass)));
                order = Some((pass, idx));
            }
            if let Some((_, idx)) = &order {
                out.push(idx[(i % n) as usize]);
            }
        }
        out
    }

    /// One optimizer step on the next minibatch.
    pub fn train_step(&mut self) -> Result<StageMetrics> {
        let start = Instant::now();
        let idx = self.batch_indices(self.step);
        let lr = learning_rate(&self.optimizer_cfg, self.step);
        let batch = self.stage.loss(Split::Train, &idx, true)?;
        let loss = f64::from(
            batch
                .loss
                .to_dtype(candle_core::DType::F32)?
                .to_scalar::<f32>()?,
        );
        let (grad_norm, skipped) = if loss.is_finite() {
            let mut grads = task_gradient(&batch.loss, &self.vars)?.grads;
            let norm = clip(&mut grads, self.cfg.max_grad_norm)?;
            if norm.is_finite() {
                self.optimizer.step(&grads, lr)?;
            }
            (norm, !norm.is_finite())
        } else {
            (f64::NAN, true)
        };
        let metrics = StageMetrics {
            kind: "train".into(),
            stage: self.stage.name().into(),
            step: self.step,
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
        self.step += 1;
        if skipped {
            self.consecutive_skips += 1;
            if self.consecutive_skips >= self.cfg.max_consecutive_skips {
                let last = self
                    .last_checkpoint
                    .as_ref()
                    .map_or("none".to_string(), |p| p.display().to_string());
                return Err(Error::Train(format!(
                    "{}: {} consecutive steps had a non-finite loss or gradient (last at step {}); stopping. Last good checkpoint: {last}",
                    self.stage.name(),
                    self.consecutive_skips,
                    self.step
                )));
            }
        } else {
            self.consecutive_skips = 0;
        }
        Ok(metrics)
    }

    /// Loss and statistics on the first `eval_examples` eval records,
    /// averaged by the batches' weights; `None` without eval records.
    pub fn evaluate(&self) -> Result<Option<StageMetrics>> {
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
            step: self.step,
            examples: n,
            loss: loss / total,
            stats: stats.into_iter().map(|(k, v)| (k, v / total)).collect(),
            time_s: start.elapsed().as_secs_f64(),
            ..StageMetrics::default()
        }))
    }

    fn append_metrics(&self, m: &StageMetrics) -> Result<()> {
        let path = self.metrics_path();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let line = serde_json::to_string(m).map_err(|e| Error::Train(e.to_string()))?;
        writeln!(f, "{line}").map_err(|e| Error::io(&path, e))
    }

    /// Trains until `train.steps`: metrics, evaluations (before the first
    /// step of a fresh run, every `eval_every` steps, after the last),
    /// checkpoints (every `checkpoint_every` steps and at the end).
    pub fn run(&mut self) -> Result<StageSummary> {
        std::fs::create_dir_all(&self.out_dir).map_err(|e| Error::io(&self.out_dir, e))?;
        let total = self.cfg.steps;
        let bar = if self.progress {
            let bar = ProgressBar::new(total);
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{} {{bar:30}} {{pos}}/{{len}} steps {{elapsed}}<{{eta}} {{msg}}",
                    self.stage.name()
                ))
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_position(self.step);
            bar
        } else {
            ProgressBar::hidden()
        };
        let (mut first_eval, mut last_eval, mut last_train) = (None, None, None);
        let mut evaluate = |runner: &Self| -> Result<()> {
            if let Some(m) = runner.evaluate()? {
                runner.append_metrics(&m)?;
                first_eval.get_or_insert_with(|| m.clone());
                last_eval = Some(m);
            }
            Ok(())
        };
        if self.step == 0 {
            evaluate(self)?;
        }
        while self.step < total {
            let m = self.train_step()?;
            self.append_metrics(&m)?;
            bar.set_position(self.step);
            bar.set_message(headline(&m));
            last_train = Some(m);
            let every = self.cfg.checkpoint_every;
            if every > 0 && self.step % every == 0 && self.step < total {
                self.checkpoint()?;
            }
            let eval_every = self.cfg.eval_every;
            if eval_every > 0 && self.step % eval_every == 0 && self.step < total {
                evaluate(self)?;
            }
        }
        bar.finish_and_clear();
        evaluate(self)?;
        let checkpoint = self.checkpoint()?;
        Ok(StageSummary {
            steps: self.step,
            last_train,
            first_eval,
            last_eval,
            checkpoint,
            metrics: self.metrics_path(),
        })
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
