//! The training loop's settings: steps, AdamW and its schedule, decoding,
//! evaluation, checkpoints, the output directory.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::monitor::MonitorConfig;

use crate::error::{check_config, Error, Result};
use crate::rollout::Decoding;

/// The learning-rate schedule after warm-up.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    #[default]
    Constant,
    /// Cosine decay to 0 at the last step.
    Cosine,
}

/// The training loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub steps: u64,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    /// Linear warm-up from 0 over this many steps.
    pub warmup_steps: u64,
    pub schedule: Schedule,
    /// Global gradient-norm clip after the merge; 0 turns it off.
    pub max_grad_norm: f64,
    /// How rollouts are decoded; each task's K and each step's seed come
    /// from the task and the run's seed.
    pub sampling: Decoding,
    /// Evaluate on the evaluation prompts every this many steps (0 = never).
    pub eval_every: u64,
    /// Evaluation prompts per task and evaluation.
    pub eval_prompts: usize,
    /// Greedy (true) or sampled evaluation.
    pub eval_greedy: bool,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Where checkpoints and metrics go (relative to the config file).
    pub output_dir: PathBuf,
    /// Stop after this many consecutive steps skipped for a non-finite loss
    /// or gradient.
    pub max_consecutive_skips: u32,
    /// Log each task's gradient cosine to the merged gradient
    /// (`grad_cosine`); holds every task's gradient until the merge.
    pub grad_cosine: bool,
    /// The reward-hacking monitor ([`super::monitor`]).
    pub monitor: MonitorConfig,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            learning_rate: 1e-5,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            max_grad_norm: 1.0,
            sampling: Decoding::default(),
            eval_every: 0,
            eval_prompts: 32,
            eval_greedy: true,
            checkpoint_every: 0,
            output_dir: PathBuf::from("runs/cgpo"),
            max_consecutive_skips: 5,
            grad_cosine: true,
            monitor: MonitorConfig::default(),
        }
    }
}

impl TrainConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let key = |k: &str| format!("train.{k}");
        check_config(key("learning_rate"), self.learning_rate, "> 0", |v| v > 0.0)?;
        check_config(key("weight_decay"), self.weight_decay, ">= 0", |v| v >= 0.0)?;
        check_config(key("beta1"), self.beta1, "in [0, 1)", |v| {
            (0.0..1.0).contains(&v)
        })?;
        check_config(key("beta2"), self.beta2, "in [0, 1)", |v| {
            (0.0..1.0).contains(&v)
        })?;
        check_config(key("adam_eps"), self.adam_eps, "> 0", |v| v > 0.0)?;
        check_config(key("max_grad_norm"), self.max_grad_norm, ">= 0", |v| {
            v >= 0.0
        })?;
        let s = &self.sampling;
        check_config(
            key("sampling.temperature"),
            f64::from(s.temperature),
            ">= 0",
            |v| v >= 0.0,
        )?;
        check_config(
            key("sampling.top_p"),
            f64::from(s.top_p),
            "in (0, 1]",
            |v| v > 0.0 && v <= 1.0,
        )?;
        if s.max_new_tokens == 0 {
            return Err(Error::config(
                key("sampling.max_new_tokens"),
                "must be >= 1",
            ));
        }
        if self.steps == 0 {
            return Err(Error::config(key("steps"), "must be >= 1"));
        }
        self.monitor.validate("train.monitor")
    }
}
