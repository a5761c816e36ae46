//! The JSON configs of `cgpo sft`, `cgpo reward train` and `cgpo dpo`.
//!
//! The three share their sections: `seed`, `data` (files, token limit,
//! skipping of bad records), `policy` (the model to start from, as in a run
//! config, with `weights` to start from an earlier stage's checkpoint) and
//! `train` (steps, batch, AdamW, schedule, evaluation, checkpoints). DPO
//! adds `beta`. Unknown keys are errors, and every error names its key;
//! relative paths are relative to the config file.
//!
//! ```
//! use cgpo::pipeline::{DpoConfig, StageConfig};
//! let config = DpoConfig::from_json(r#"{
//!   "data": {"train": "prefs.jsonl", "eval": "prefs_eval.jsonl"},
//!   "policy": {"kind": "tiny", "weights": "runs/sft"},
//!   "beta": 0.2,
//!   "train": {"steps": 50, "batch_size": 4, "learning_rate": 1e-4}
//! }"#)?;
//! assert_eq!(config.beta, 0.2);
//! let err = DpoConfig::from_json(r#"{"data": {"train": "p.jsonl"}, "train": {"batch_size": 0}}"#).unwrap_err();
//! assert_eq!(err.to_string(), "config `train.batch_size`: must be >= 1");
//! let err = DpoConfig::from_json(r#"{"data": {"train": "p.jsonl", "skip_bad": true}}"#).unwrap_err();
//! assert!(err.to_string().starts_with("config `data.skip_bad`: unknown field `skip_bad`"), "{err}");
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::config::{parse_json, read_config_file, PolicyConfig, Schedule, TrainConfig};
use crate::error::{Error, Result};

/// Data files and what to do with bad records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageData {
    /// Training records (JSONL).
    pub train: PathBuf,
    /// Evaluation records (JSONL, never trained on), evaluated before, during and after training.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<PathBuf>,
    /// The longest record (prompt + response tokens); default: the model's
    /// context window. Longer records are bad records, never truncated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<usize>,
    /// Skip bad records (and count them) instead of refusing to start.
    #[serde(default)]
    pub skip_bad_records: bool,
}

/// The optimisation loop of a stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StageTrain {
    pub steps: u64,
    /// Records (SFT) or pairs (reward model, DPO) per step.
    pub batch_size: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub adam_eps: f64,
    pub warmup_steps: u64,
    pub schedule: Schedule,
    /// Global gradient-norm clip; 0 turns it off.
    pub max_grad_norm: f64,
    /// Evaluate on `data.eval` every this many steps; it is always
    /// evaluated before the first step and after the last.
    pub eval_every: u64,
    /// Evaluation records per evaluation (the first ones).
    pub eval_examples: usize,
    /// Write a checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoints and `metrics.jsonl`; default `runs/<stage>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_dir: Option<PathBuf>,
    /// Stop after this many consecutive steps skipped for a non-finite loss
    /// or gradient.
    pub max_consecutive_skips: u32,
}

impl Default for StageTrain {
    fn default() -> Self {
        Self {
            steps: 100,
            batch_size: 8,
            learning_rate: 1e-5,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            adam_eps: 1e-8,
            warmup_steps: 0,
            schedule: Schedule::Constant,
            max_grad_norm: 1.0,
            eval_every: 0,
            eval_examples: 512,
            checkpoint_every: 0,
            output_dir: None,
            max_consecutive_skips: 5,
        }
    }
}

impl StageTrain {
    /// The optimizer and schedule settings as the CGPO trainer's, for
    /// [`crate::train::AdamW::from_config`] and [`crate::train::learning_rate`].
    pub fn optimizer(&self) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            learning_rate: self.learning_rate,
            weight_decay: self.weight_decay,
            beta1: self.beta1,
            beta2: self.beta2,
            adam_eps: self.adam_eps,
            warmup_steps: self.warmup_steps,
            schedule: self.schedule,
            max_grad_norm: self.max_grad_norm,
            ..TrainConfig::default()
        }
    }

    /// The output directory, `runs/<stage>` when the config has none.
    pub fn output_dir(&self, stage: &str) -> PathBuf {
        self.output_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(stage))
    }

    fn validate(&self) -> Result<()> {
        let key = |k: &str| format!("train.{k}");
        let check = |k: &str, v: f64, what: &str, ok: bool| {
            if ok && v.is_finite() {
                Ok(())
            } else {
                Err(Error::config(key(k), format!("must be {what}, got {v}")))
            }
        };
        check(
            "learning_rate",
            self.learning_rate,
            "> 0",
            self.learning_rate > 0.0,
        )?;
        check(
            "weight_decay",
            self.weight_decay,
            ">= 0",
            self.weight_decay >= 0.0,
        )?;
        check(
            "beta1",
            self.beta1,
            "in [0, 1)",
            (0.0..1.0).contains(&self.beta1),
        )?;
        check(
            "beta2",
            self.beta2,
            "in [0, 1)",
            (0.0..1.0).contains(&self.beta2),
        )?;
        check("adam_eps", self.adam_eps, "> 0", self.adam_eps > 0.0)?;
        check(
            "max_grad_norm",
            self.max_grad_norm,
            ">= 0",
            self.max_grad_norm >= 0.0,
        )?;
        for (k, v) in [
            ("steps", self.steps),
            ("batch_size", self.batch_size as u64),
            ("eval_examples", self.eval_examples as u64),
            (
                "max_consecutive_skips",
                u64::from(self.max_consecutive_skips),
            ),
        ] {
            if v == 0 {
                return Err(Error::config(key(k), "must be >= 1"));
            }
        }
        Ok(())
    }
}

/// `cgpo sft`: supervised fine-tuning on demonstrations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftConfig {
    /// Seeds the data order and TinyLm's initialisation.
    #[serde(default)]
    pub seed: u64,
    /// SFT records `{prompt, response}`.
    pub data: StageData,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub train: StageTrain,
}

/// `cgpo reward train`: a Bradley-Terry reward model on preferences.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardTrainConfig {
    #[serde(default)]
    pub seed: u64,
    /// Preference records `{prompt, chosen, rejected}`.
    pub data: StageData,
    /// The backbone (usually the SFT model: `"weights": "runs/sft"`).
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub train: StageTrain,
}

/// `cgpo dpo`: offline DPO, the warm-up before CGPO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpoConfig {
    #[serde(default)]
    pub seed: u64,
    /// Preference records `{prompt, chosen, rejected}`.
    pub data: StageData,
    /// The policy to warm up (usually the SFT model); frozen as loaded, it
    /// is also the reference.
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub train: StageTrain,
    /// The DPO temperature: the implicit reward is `beta * log(pi / pi_ref)`.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Weight of the chosen responses' per-token NLL added to the loss
    /// (0 = plain DPO).
    #[serde(default)]
    pub nll_weight: f64,
}

fn default_beta() -> f64 {
    0.1
}

/// What the three configs share.
pub trait StageConfig: Serialize + DeserializeOwned {
    /// `sft`, `reward` or `dpo`: names the default output directory and
    /// the stage in metrics and checkpoints.
    const STAGE: &'static str;

    fn sections(&self) -> (u64, &StageData, &PolicyConfig, &StageTrain);

    fn sections_mut(&mut self) -> (&mut StageData, &mut PolicyConfig, &mut StageTrain);

    /// Checks what serde's types do not; the common sections by default.
    fn validate(&self) -> Result<()> {
        let (_, data, _, train) = self.sections();
        validate_sections(data, train)
    }

    /// Parses and validates a config; errors name the key.
    fn from_json(text: &str) -> Result<Self> {
        let config: Self = parse_json(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file; relative paths become relative to its folder,
    /// and the output directory defaults to `runs/<stage>` there.
    fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut config = read_config_file(path, Self::from_json)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let (data, policy, train) = config.sections_mut();
        policy.resolve_paths(dir);
        train.output_dir = Some(dir.join(train.output_dir(Self::STAGE)));
        data.train = dir.join(&data.train);
        if let Some(eval) = &mut data.eval {
            *eval = dir.join(&*eval);
        }
        Ok(config)
    }

    fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serializes")
    }
}

impl StageConfig for SftConfig {
    const STAGE: &'static str = "sft";

    fn sections(&self) -> (u64, &StageData, &PolicyConfig, &StageTrain) {
        (self.seed, &self.data, &self.policy, &self.train)
    }

    fn sections_mut(&mut self) -> (&mut StageData, &mut PolicyConfig, &mut StageTrain) {
        (&mut self.data, &mut self.policy, &mut self.train)
    }
}

impl StageConfig for RewardTrainConfig {
    const STAGE: &'static str = "reward";

    fn sections(&self) -> (u64, &StageData, &PolicyConfig, &StageTrain) {
        (self.seed, &self.data, &self.policy, &self.train)
    }

    fn sections_mut(&mut self) -> (&mut StageData, &mut PolicyConfig, &mut StageTrain) {
        (&mut self.data, &mut self.policy, &mut self.train)
    }
}

impl StageConfig for DpoConfig {
    const STAGE: &'static str = "dpo";

    fn sections(&self) -> (u64, &StageData, &PolicyConfig, &StageTrain) {
        (self.seed, &self.data, &self.policy, &self.train)
    }

    fn sections_mut(&mut self) -> (&mut StageData, &mut PolicyConfig, &mut StageTrain) {
        (&mut self.data, &mut self.policy, &mut self.train)
    }

    fn validate(&self) -> Result<()> {
        if !(self.beta > 0.0 && self.beta.is_finite()) {
            return Err(Error::config(
                "beta",
                format!("must be > 0, got {}", self.beta),
            ));
        }
        if !(self.nll_weight >= 0.0 && self.nll_weight.is_finite()) {
            return Err(Error::config(
                "nll_weight",
                format!("must be >= 0, got {}", self.nll_weight),
            ));
        }
        validate_sections(&self.data, &self.train)
    }
}

fn validate_sections(data: &StageData, train: &StageTrain) -> Result<()> {
    if data.max_tokens == Some(0) {
        return Err(Error::config("data.max_tokens", "must be >= 1"));
    }
    train.validate()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_errors_name_the_key() {
        let c = SftConfig::from_json(r#"{"data": {"train": "s.jsonl"}}"#).unwrap();
        assert_eq!(c.train, StageTrain::default());
        assert_eq!(c.train.output_dir("sft"), PathBuf::from("runs/sft"));
        assert!(!c.data.skip_bad_records);
        for (json, key) in [
            (r#"{}"#, "."),
            (
                r#"{"data": {"train": "s"}, "train": {"learning_rate": -1}}"#,
                "train.learning_rate",
            ),
            (
                r#"{"data": {"train": "s"}, "train": {"stpes": 3}}"#,
                "train.stpes",
            ),
            (
                r#"{"data": {"train": "s"}, "policy": {"kind": "tiny", "wieghts": "w"}}"#,
                "policy",
            ),
            (
                r#"{"data": {"train": "s", "max_tokens": 0}}"#,
                "data.max_tokens",
            ),
        ] {
            match SftConfig::from_json(json) {
                Err(Error::Config { key: k, .. }) => assert_eq!(k, key, "{json}"),
                other => panic!("{json}: {other:?}"),
            }
        }
        let e = DpoConfig::from_json(r#"{"data": {"train": "s"}, "beta": 0}"#).unwrap_err();
        assert_eq!(e.to_string(), "config `beta`: must be > 0, got 0");
        // `beta` is DPO's alone.
        assert!(SftConfig::from_json(r#"{"data": {"train": "s"}, "beta": 1}"#).is_err());
    }

    #[test]
    fn paths_are_relative_to_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rm.json");
        std::fs::write(
            &path,
            r#"{"data": {"train": "p.jsonl", "eval": "/abs/e.jsonl"}, "policy": {"kind": "tiny", "weights": "runs/sft"}}"#,
        )
        .unwrap();
        let c = RewardTrainConfig::from_file(&path).unwrap();
        assert_eq!(c.data.train, dir.path().join("p.jsonl"));
        assert_eq!(c.data.eval.as_deref(), Some(Path::new("/abs/e.jsonl")));
        assert_eq!(
            c.policy.weights(),
            Some(dir.path().join("runs/sft").as_path())
        );
        assert_eq!(c.train.output_dir, Some(dir.path().join("runs/reward")));
    }
}
