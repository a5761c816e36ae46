//! The run configuration, in JSON: reward models by name, tasks (weight,
//! reward, judges, optimizer, K, batch size, KL), stratification and seed.
//! Unknown keys and bad values are errors that name the key, e.g.
//! `config `tasks[1].optimizer.beta`: must be > 0, got -1`.
//!
//! ```
//! use cgpo::config::{OptimizerConfig, RunConfig};
//! let config = RunConfig::from_json(r#"{
//!   "reward_models": {"rm": {"name": "lexical", "params": {"per_word": 0.1}}},
//!   "tasks": [
//!     {"name": "math", "reward": {"model": "rm"},
//!      "judges": [{"name": "regex", "params": {"pattern": "final answer is"}}],
//!      "optimizer": {"name": "crpg", "kl_max": 20.0}},
//!     {"name": "chat", "weight": 2.0, "reward": {"model": "rm"},
//!      "optimizer": {"name": "crraft", "kl_max": 5.0}}
//!   ]
//! }"#).unwrap();
//! assert!(matches!(config.tasks[0].optimizer, OptimizerConfig::Crpg { kl_max, .. } if kl_max == 20.0));
//! let err = RunConfig::from_json(r#"{"reward_models": {}, "tasks": [], "sed": 1}"#).unwrap_err();
//! assert!(err.to_string().contains("unknown field `sed`"));
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use cgpo_judges::{ErrorPolicy, JudgeSpec};
use serde::{Deserialize, Serialize};

use crate::error::{check_config, Error, Result};
pub use crate::kl::{KlConfig, KlEstimator};
pub use crate::optim::{OptimizerConfig, PgBaseline, RewardKind};
pub use crate::policy::{DeviceSpec, PolicyConfig};
use crate::reward::{BaselineSource, RewardModelSpec};
use crate::rollout::SamplingConfig;

/// A whole run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub data: DataConfig,
    /// Reward models by instance name; tasks refer to them, and several tasks
    /// may share one.
    pub reward_models: BTreeMap<String, RewardModelSpec>,
    pub tasks: Vec<TaskConfig>,
    #[serde(default)]
    pub stratify: StratifyConfig,
    /// The policy to train (and, frozen, the reference).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// The optimisation loop: steps, AdamW, schedule, sampling, evaluation,
    /// checkpoints.
    #[serde(default)]
    pub train: TrainConfig,
}

/// Prompt files (JSONL); relative paths are relative to the config file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eval: Option<PathBuf>,
}

/// How unlabeled prompts find their task.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StratifyConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_task: Option<String>,
    /// Keyword rules, first match wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifier: Vec<ClassifierRule>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierRule {
    pub task: String,
    /// A regex (Rust `regex` syntax) matched against the prompt's text.
    pub pattern: String,
}

/// One task stratum's settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    /// rho_l, the weight of this task's gradient in the merge.
    #[serde(default = "one")]
    pub weight: f64,
    pub reward: RewardConfig,
    /// ANDed into y(a); empty = no constraints (an ablation).
    #[serde(default)]
    pub judges: Vec<JudgeSpec>,
    /// What a judge error does: `violation` (default) or `drop`.
    #[serde(default)]
    pub judge_errors: ErrorPolicy,
    pub optimizer: OptimizerConfig,
    /// K, generations per prompt.
    #[serde(default = "default_k")]
    pub generations_per_prompt: usize,
    /// B_l, prompts per step.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    #[serde(default)]
    pub kl: KlConfig,
}

fn one() -> f64 {
    1.0
}
fn default_k() -> usize {
    4
}
fn default_batch() -> usize {
    8
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardConfig {
    /// A key of `reward_models`.
    pub model: String,
    /// Use sigmoid(r - r(baseline)) (default) or the raw reward (ablation).
    #[serde(default = "yes")]
    pub calibrated: bool,
    #[serde(default)]
    pub baseline: BaselineSource,
}

fn yes() -> bool {
    true
}

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
    /// Rollout sampling; `seed` and `samples_per_prompt` are set per step
    /// and task (from the run's seed and the task's K).
    pub sampling: SamplingConfig,
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
            sampling: SamplingConfig::default(),
            eval_every: 0,
            eval_prompts: 32,
            eval_greedy: true,
            checkpoint_every: 0,
            output_dir: PathBuf::from("runs/cgpo"),
            max_consecutive_skips: 5,
        }
    }
}

impl TrainConfig {
    fn validate(&self) -> Result<()> {
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
        Ok(())
    }
}

/// Parses one JSON document into `T`. A missing, unknown or mistyped key is
/// an [`Error::Config`] naming its path (`tasks[1].optimizer.kind`), and
/// trailing content is an error; semantic checks are the caller's.
///
/// ```
/// use cgpo::config::parse_json;
/// #[derive(Debug, serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct Cfg { steps: u32 }
/// let err = parse_json::<Cfg>(r#"{"steps": "ten"}"#).unwrap_err();
/// assert!(err.to_string().contains("steps"));
/// assert!(parse_json::<Cfg>(r#"{"steps": 1} {}"#).is_err());
/// ```
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let key = e.path().to_string();
        Error::config(key, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| Error::config(".", e.to_string()))?;
    Ok(value)
}

/// Reads the config file at `path` and parses it with `parse`; a config
/// error gets the file's name appended (`... (in runs/a.json)`), an
/// unreadable file is an [`Error::Io`] naming it.
pub fn read_config_file<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse(&text).map_err(|e| match e {
        Error::Config { key, message } => Error::Config {
            key,
            message: format!("{message} (in {})", path.display()),
        },
        other => other,
    })
}

impl RunConfig {
    /// Parses and validates a config; errors name the key.
    pub fn from_json(text: &str) -> Result<Self> {
        let config: RunConfig = parse_json(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a config file; relative data paths become relative to its folder.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut config = read_config_file(path, Self::from_json)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        config.policy.resolve_paths(dir);
        for p in [&mut config.data.train, &mut config.data.eval]
            .into_iter()
            .flatten()
            .chain(Some(&mut config.train.output_dir))
        {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
        // A reward model's `params.path` (a trained model's directory) is
        // relative to the config file too.
        for spec in config.reward_models.values_mut() {
            if let Some(serde_json::Value::String(p)) = spec.params.get_mut("path") {
                if Path::new(p.as_str()).is_relative() {
                    *p = dir.join(p.as_str()).display().to_string();
                }
            }
        }
        Ok(config)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a config always serializes")
    }

    pub fn task_names(&self) -> Vec<String> {
        self.tasks.iter().map(|t| t.name.clone()).collect()
    }

    /// Checks every value that serde's types do not: ranges, references
    /// between sections, uniqueness.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        if self.tasks.is_empty() {
            return Err(Error::config("tasks", "at least one task is needed"));
        }
        let mut names = HashSet::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let key = |k: &str| format!("tasks[{i}].{k}");
            if t.name.trim().is_empty() {
                return Err(Error::config(key("name"), "must not be empty"));
            }
            if !names.insert(t.name.as_str()) {
                return Err(Error::config(
                    key("name"),
                    format!("duplicate task `{}`", t.name),
                ));
            }
            check_config(key("weight"), t.weight, ">= 0", |w| w >= 0.0)?;
            if !self.reward_models.contains_key(&t.reward.model) {
                return Err(Error::config(
                    key("reward.model"),
                    format!(
                        "unknown reward model `{}` (reward_models: {})",
                        t.reward.model,
                        self.reward_models
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            if t.generations_per_prompt == 0 {
                return Err(Error::config(key("generations_per_prompt"), "must be >= 1"));
            }
            if t.batch_size == 0 {
                return Err(Error::config(key("batch_size"), "must be >= 1"));
            }
            t.optimizer.validate(key, t.generations_per_prompt)?;
            check_config(key("kl.coef"), t.kl.coef, ">= 0", |v| v >= 0.0)?;
            if let Some(target) = t.kl.target {
                check_config(key("kl.target"), target, "> 0", |v| v > 0.0)?;
                if t.kl.horizon == 0 {
                    return Err(Error::config(key("kl.horizon"), "must be >= 1"));
                }
                if t.kl.coef == 0.0 {
                    return Err(Error::config(
                        key("kl.coef"),
                        "must be > 0 when `kl.target` is set (the adaptive coefficient scales it)",
                    ));
                }
            }
        }
        if self.tasks.iter().all(|t| t.weight == 0.0) {
            return Err(Error::config(
                "tasks",
                "every task has weight 0; at least one must be > 0",
            ));
        }
        let known = |name: &str| self.tasks.iter().any(|t| t.name == name);
        let listed = || self.task_names().join(", ");
        if let Some(d) = &self.stratify.default_task {
            if !known(d) {
                return Err(Error::config(
                    "stratify.default_task",
                    format!("unknown task `{d}` (tasks: {})", listed()),
                ));
            }
        }
        for (i, rule) in self.stratify.classifier.iter().enumerate() {
            if !known(&rule.task) {
                return Err(Error::config(
                    format!("stratify.classifier[{i}].task"),
                    format!("unknown task `{}` (tasks: {})", rule.task, listed()),
                ));
            }
            regex::Regex::new(&rule.pattern).map_err(|e| {
                Error::config(format!("stratify.classifier[{i}].pattern"), e.to_string())
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> serde_json::Value {
        json!({
            "reward_models": {"rm": {"name": "lexical"}},
            "tasks": [{"name": "chat", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}}]
        })
    }

    /// A change to `base()`.
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;

    /// The error for `base()` changed by `edit`, as `(key, message)`.
    fn error_of(edit: impl FnOnce(&mut serde_json::Value)) -> (String, String) {
        let mut v = base();
        edit(&mut v);
        match RunConfig::from_json(&v.to_string()) {
            Err(Error::Config { key, message }) => (key, message),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_fill_a_minimal_config() {
        let c = RunConfig::from_json(&base().to_string()).unwrap();
        let t = &c.tasks[0];
        assert_eq!(
            (t.weight, t.generations_per_prompt, t.batch_size),
            (1.0, 4, 8)
        );
        assert!(t.reward.calibrated && t.judges.is_empty());
        assert_eq!(t.reward.baseline, BaselineSource::DatasetThenPolicySample);
        assert_eq!(t.judge_errors, ErrorPolicy::Violation);
        assert_eq!(
            t.optimizer,
            OptimizerConfig::Crpg {
                kl_max: 10.0,
                baseline: PgBaseline::Batch,
                clip_kl_weight: false
            }
        );
        assert_eq!(t.kl, KlConfig::default());
        let codpo = RunConfig::from_json(
            &json!({"reward_models": {"rm": {"name": "lexical"}},
                    "tasks": [{"name": "c", "reward": {"model": "rm"}, "optimizer": {"name": "codpo"}}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            codpo.tasks[0].optimizer,
            OptimizerConfig::Codpo {
                beta: 0.1,
                lambda: 5.0
            }
        );
    }

    #[test]
    fn a_full_config_round_trips_through_json() {
        let text = json!({
            "seed": 7,
            "data": {"train": "train.jsonl", "eval": "eval.jsonl"},
            "reward_models": {
                "rm_a": {"name": "lexical", "params": {"per_word": 0.1}},
                "rm_b": {"name": "lexical", "params": {"phrases": {"sure": 1.0}}}
            },
            "tasks": [
                {"name": "math", "weight": 0.5, "reward": {"model": "rm_a", "calibrated": false, "baseline": "dataset"},
                 "judges": [{"name": "regex", "label": "fmt", "params": {"pattern": "final answer"}}],
                 "judge_errors": "drop",
                 "optimizer": {"name": "crpg", "kl_max": 30.0, "baseline": "per_prompt", "clip_kl_weight": true},
                 "generations_per_prompt": 8, "batch_size": 16,
                 "kl": {"coef": 0.05, "estimator": "full", "target": 6.0, "horizon": 500}},
                {"name": "chat", "weight": 2.0, "reward": {"model": "rm_b", "baseline": "policy_sample"},
                 "optimizer": {"name": "codpo", "beta": 0.2, "lambda": 1.0}, "kl": {"estimator": "k1"}},
                {"name": "safety", "reward": {"model": "rm_b"}, "optimizer": {"name": "crraft", "kl_max": 2.5},
                 "generations_per_prompt": 1}
            ],
            "stratify": {"default_task": "chat", "classifier": [{"task": "math", "pattern": "\\d"}]}
        })
        .to_string();
        let c = RunConfig::from_json(&text).unwrap();
        assert_eq!(c.tasks[0].kl.estimator, KlEstimator::Full);
        assert_eq!(c.tasks[1].reward.baseline, BaselineSource::PolicySample);
        let again = RunConfig::from_json(&c.to_json()).unwrap();
        assert_eq!(again, c);
        // Serializing twice gives the same text: nothing is lost or reordered.
        assert_eq!(again.to_json(), c.to_json());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                Box::new(|v| v["sede"] = json!(1)),
                "sede",
                "unknown field `sede`",
            ),
            (
                Box::new(|v| v["tasks"][0]["wieght"] = json!(1)),
                "tasks[0].wieght",
                "unknown field `wieght`",
            ),
            (
                Box::new(|v| v["tasks"][0]["reward"]["calibrate"] = json!(true)),
                "tasks[0].reward.calibrate",
                "unknown field `calibrate`",
            ),
            (
                Box::new(|v| v["tasks"][0]["kl"] = json!({"coeff": 1.0})),
                "tasks[0].kl.coeff",
                "unknown field `coeff`",
            ),
            (
                Box::new(|v| v["tasks"][0]["optimizer"]["klmax"] = json!(1.0)),
                "tasks[0].optimizer",
                "unknown field `klmax`",
            ),
            (
                Box::new(|v| v["tasks"][0]["optimizer"]["name"] = json!("ppo")),
                "tasks[0].optimizer.name",
                "unknown variant `ppo`",
            ),
            (
                Box::new(|v| v["tasks"][0]["judges"] = json!([{"name": "regex", "param": {}}])),
                "tasks[0].judges[0].param",
                "unknown field `param`",
            ),
            (
                Box::new(|v| v["reward_models"]["rm"]["kind"] = json!("x")),
                "reward_models.rm.kind",
                "unknown field `kind`",
            ),
            (
                Box::new(|v| v["stratify"] = json!({"default": "chat"})),
                "stratify.default",
                "unknown field `default`",
            ),
        ];
        for (edit, key, message) in cases {
            let (k, m) = error_of(edit);
            assert_eq!(k, key, "{m}");
            assert!(m.contains(message), "{key}: {m}");
        }
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let cases: Vec<(Edit, &str, &str)> = vec![
            (
                Box::new(|v| v["tasks"][0]["weight"] = json!("heavy")),
                "tasks[0].weight",
                "invalid type",
            ),
            (
                Box::new(|v| v["tasks"][0]["weight"] = json!(-1.0)),
                "tasks[0].weight",
                "must be finite and >= 0, got -1",
            ),
            (
                Box::new(|v| v["tasks"][0]["weight"] = json!(0.0)),
                "tasks",
                "weight 0",
            ),
            (
                Box::new(|v| v["tasks"][0]["batch_size"] = json!(0)),
                "tasks[0].batch_size",
                "must be >= 1",
            ),
            (
                Box::new(|v| v["tasks"][0]["generations_per_prompt"] = json!(-2)),
                "tasks[0].generations_per_prompt",
                "invalid value",
            ),
            (
                Box::new(|v| v["tasks"][0]["reward"]["model"] = json!("rm2")),
                "tasks[0].reward.model",
                "unknown reward model `rm2`",
            ),
            (
                Box::new(|v| v["tasks"][0]["optimizer"]["kl_max"] = json!(0.0)),
                "tasks[0].optimizer.kl_max",
                "> 0",
            ),
            (
                Box::new(|v| v["tasks"][0]["optimizer"] = json!({"name": "codpo", "beta": -1.0})),
                "tasks[0].optimizer.beta",
                "got -1",
            ),
            (
                Box::new(|v| {
                    v["tasks"][0]["optimizer"] = json!({"name": "codpo"});
                    v["tasks"][0]["generations_per_prompt"] = json!(1);
                }),
                "tasks[0].generations_per_prompt",
                "at least 2",
            ),
            (
                Box::new(|v| v["tasks"][0]["kl"] = json!({"coef": -0.1})),
                "tasks[0].kl.coef",
                ">= 0",
            ),
            (
                Box::new(|v| v["tasks"][0]["kl"] = json!({"estimator": "k4"})),
                "tasks[0].kl.estimator",
                "unknown variant `k4`",
            ),
            (
                Box::new(|v| v["tasks"][0]["judge_errors"] = json!("ignore")),
                "tasks[0].judge_errors",
                "unknown variant `ignore`",
            ),
            (
                Box::new(|v| v["tasks"] = json!([])),
                "tasks",
                "at least one task",
            ),
            (
                Box::new(|v| {
                    let t = v["tasks"][0].clone();
                    v["tasks"] = json!([t.clone(), t]);
                }),
                "tasks[1].name",
                "duplicate task `chat`",
            ),
            (
                Box::new(|v| v["stratify"] = json!({"default_task": "math"})),
                "stratify.default_task",
                "unknown task `math`",
            ),
            (
                Box::new(|v| {
                    v["stratify"] = json!({"classifier": [{"task": "chat", "pattern": "("}]})
                }),
                "stratify.classifier[0].pattern",
                "regex parse error",
            ),
            (
                Box::new(|v| {
                    v["tasks"][0].as_object_mut().unwrap().remove("optimizer");
                }),
                "tasks[0]",
                "missing field `optimizer`",
            ),
        ];
        for (edit, key, message) in cases {
            let (k, m) = error_of(edit);
            assert_eq!(k, key, "{m}");
            assert!(m.contains(message), "{key}: {m}");
        }
    }

    #[test]
    fn trailing_text_is_an_error() {
        let err = RunConfig::from_json(&format!("{} x", base())).unwrap_err();
        assert!(err.to_string().contains("trailing characters"), "{err}");
    }

    #[test]
    fn files_resolve_data_paths_next_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = base();
        v["data"] = json!({"train": "train.jsonl", "eval": "/abs/eval.jsonl"});
        let path = dir.path().join("run.json");
        std::fs::write(&path, v.to_string()).unwrap();
        let c = RunConfig::from_file(&path).unwrap();
        assert_eq!(c.data.train.unwrap(), dir.path().join("train.jsonl"));
        assert_eq!(c.data.eval.unwrap(), PathBuf::from("/abs/eval.jsonl"));
        std::fs::write(&path, "{\"tasks\": 1}").unwrap();
        let msg = RunConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            msg.contains("run.json") && msg.starts_with("config `tasks`"),
            "{msg}"
        );
    }

    fn config_with(optimizer: serde_json::Value, k: usize) -> Result<RunConfig> {
        let v = serde_json::json!({
            "reward_models": {"rm": {"name": "lexical"}},
            "tasks": [{"name": "t", "reward": {"model": "rm"}, "optimizer": optimizer,
                       "generations_per_prompt": k}]
        });
        RunConfig::from_json(&v.to_string())
    }

    #[test]
    fn baseline_optimizers_parse_with_defaults_and_round_trip() {
        use crate::optim::RewardKind;
        use serde_json::json;
        let cases = [
            (
                json!({"name": "pg"}),
                OptimizerConfig::Pg {
                    reward: RewardKind::Raw,
                    clip_ratio: None,
                    epochs: 1,
                },
            ),
            (
                json!({"name": "pg", "reward": "calibrated", "clip_ratio": 0.2, "epochs": 4}),
                OptimizerConfig::Pg {
                    reward: RewardKind::Calibrated,
                    clip_ratio: Some(0.2),
                    epochs: 4,
                },
            ),
            (
                json!({"name": "online_dpo"}),
                OptimizerConfig::OnlineDpo {
                    beta: 0.1,
                    lambda: 5.0,
                },
            ),
            (json!({"name": "raft"}), OptimizerConfig::Raft {}),
        ];
        for (json, want) in cases {
            let c = config_with(json.clone(), 4).unwrap();
            assert_eq!(c.tasks[0].optimizer, want, "{json}");
            assert_eq!(c.tasks[0].optimizer.name(), json["name"].as_str().unwrap());
            let again = RunConfig::from_json(&c.to_json()).unwrap();
            assert_eq!(again, c);
        }
        assert_eq!(
            config_with(json!({"name": "pg", "epochs": 3}), 4)
                .unwrap()
                .tasks[0]
                .optimizer
                .epochs(),
            3
        );
        assert_eq!(
            config_with(json!({"name": "codpo"}), 4).unwrap().tasks[0]
                .optimizer
                .epochs(),
            1
        );
    }

    #[test]
    fn baseline_optimizer_errors_name_the_key() {
        use serde_json::json;
        let cases = [
            (
                json!({"name": "pg", "clip_ratio": 0.0}),
                4,
                "tasks[0].optimizer.clip_ratio",
                "in (0, 1)",
            ),
            (
                json!({"name": "pg", "clip_ratio": 1.5}),
                4,
                "tasks[0].optimizer.clip_ratio",
                "got 1.5",
            ),
            (
                json!({"name": "pg", "epochs": 0}),
                4,
                "tasks[0].optimizer.epochs",
                ">= 1",
            ),
            (
                json!({"name": "pg", "reward": "both"}),
                4,
                "tasks[0].optimizer",
                "unknown variant `both`",
            ),
            (
                json!({"name": "online_dpo", "beta": 0.0}),
                4,
                "tasks[0].optimizer.beta",
                "> 0",
            ),
            (
                json!({"name": "online_dpo"}),
                1,
                "tasks[0].generations_per_prompt",
                "online_dpo needs at least 2",
            ),
            (
                json!({"name": "raft", "kl_max": 1.0}),
                4,
                "tasks[0].optimizer",
                "unknown field `kl_max`",
            ),
        ];
        for (json, k, key, message) in cases {
            match config_with(json.clone(), k) {
                Err(Error::Config {
                    key: got,
                    message: m,
                }) => {
                    assert_eq!(got, key, "{json}: {m}");
                    assert!(m.contains(message), "{json}: {m}");
                }
                other => panic!("{json}: expected a config error, got {other:?}"),
            }
        }
    }
}
