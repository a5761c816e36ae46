//! The run configuration, in JSON: reward models by name, tasks (weight,
//! reward, judges, optimizer, K, batch size, KL), stratification and seed.
//! Unknown keys and bad values are errors that name the key, e.g.
//! `config `tasks[1].optimizer.beta`: must be > 0, got -1`.
//!
//! ```
//! use cgpo::config::RunConfig;
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
//! let crpg = &config.tasks[0].optimizer; // a loss by name, with its settings
//! assert_eq!((crpg.name.as_str(), &crpg.params["kl_max"]), ("crpg", &serde_json::json!(20.0)));
//! let err = RunConfig::from_json(r#"{"reward_models": {}, "tasks": [], "sed": 1}"#).unwrap_err();
//! assert!(err.to_string().contains("unknown field `sed`"));
//! ```

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cgpo_judges::JudgeRegistry;
use serde::{Deserialize, Serialize};

use crate::data::read_prompts;
use crate::error::{Error, Result};
pub use crate::kl::{KlConfig, KlEstimator, KlPlacement};
pub use crate::optim::{Advantage, LossRegistry, LossSpec, RewardKind};
use crate::policy::load_policy;
pub use crate::policy::{DeviceSpec, PolicyConfig};
pub use crate::reward::{BaselineSource, RewardModelSpec};
use crate::reward::{RewardModel, RewardRegistry};
pub use crate::rollout::Decoding;
pub use crate::strata::{ClassifierRule, StratifyConfig};
use crate::task::TaskSpec;
pub use crate::task::{RewardConfig, TaskConfig};
use crate::train::Trainer;
pub use crate::train::{Schedule, TrainConfig};

/// The registries a config's names are looked up in: judges, reward
/// models and losses. `default()` has the built-ins; add yours with each
/// registry's `register`.
#[derive(Clone)]
pub struct Registries {
    pub judges: JudgeRegistry,
    pub rewards: RewardRegistry,
    pub losses: LossRegistry,
}

impl Default for Registries {
    fn default() -> Self {
        Self {
            judges: JudgeRegistry::with_builtins(),
            rewards: RewardRegistry::with_builtins(),
            losses: LossRegistry::with_builtins(),
        }
    }
}

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

    /// Every task, built. Each reward model is built once and shared by the
    /// tasks that name it; errors name the config key.
    pub fn build_tasks(&self, registries: &Registries) -> Result<Vec<TaskSpec>> {
        let mut models: BTreeMap<String, Arc<dyn RewardModel>> = BTreeMap::new();
        for (name, spec) in &self.reward_models {
            let model = registries.rewards.build(name, spec).map_err(|e| match e {
                Error::Reward { message, .. } => {
                    Error::config(format!("reward_models.{name}"), message)
                }
                other => other,
            })?;
            models.insert(name.clone(), model);
        }
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| {
                t.build(
                    &format!("tasks[{i}]"),
                    &registries.judges,
                    &models,
                    &registries.losses,
                )
            })
            .collect()
    }

    /// The records of a JSONL prompt file, per task in config order (sorted
    /// by the `stratify` settings).
    pub fn read_strata(&self, path: &Path) -> Result<Vec<Vec<Arc<crate::data::PromptRecord>>>> {
        let names = self.task_names();
        let strata = self
            .stratify
            .stratifier(&names)?
            .stratify(read_prompts(path, Some(&names))?)?;
        Ok(names.iter().map(|n| strata.records(n).to_vec()).collect())
    }

    /// The trainer this config describes: its tasks (from `registries`), its
    /// data (`data.train`, optional `data.eval`), its policy (a frozen copy
    /// is the reference) and loop. The config's JSON is recorded in every
    /// checkpoint.
    pub fn trainer(&self, registries: &Registries) -> Result<Trainer> {
        let tasks = self.build_tasks(registries)?;
        let train_path = self
            .data
            .train
            .as_deref()
            .ok_or_else(|| Error::config("data.train", "a training set is needed"))?;
        let train = self.read_strata(train_path)?;
        let eval = match &self.data.eval {
            Some(path) => self.read_strata(path)?,
            None => vec![Vec::new(); tasks.len()],
        };
        let (policy, tokenizer) = load_policy(&self.policy, self.seed)?;
        let recorded = serde_json::to_value(self).map_err(|e| Error::config(".", e.to_string()))?;
        let mut builder = Trainer::builder(policy, tokenizer)
            .seed(self.seed)
            .train_config(self.train.clone())
            .record_config(recorded);
        for ((task, train), eval) in tasks.into_iter().zip(train).zip(eval) {
            builder = builder.task(task, train, eval);
        }
        builder.build()
    }

    /// Checks every value that serde's types do not: ranges, references
    /// between sections, uniqueness.
    pub fn validate(&self) -> Result<()> {
        self.train.validate()?;
        if self.tasks.is_empty() {
            return Err(Error::config("tasks", "at least one task is needed"));
        }
        let builtins = LossRegistry::with_builtins();
        let mut names = HashSet::new();
        for (i, t) in self.tasks.iter().enumerate() {
            let key = format!("tasks[{i}]");
            t.validate(&key, &builtins)?;
            if !names.insert(t.name.as_str()) {
                return Err(Error::config(
                    format!("{key}.name"),
                    format!("duplicate task `{}`", t.name),
                ));
            }
            if !self.reward_models.contains_key(&t.reward.model) {
                return Err(Error::config(
                    format!("{key}.reward.model"),
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
        }
        if self.tasks.iter().all(|t| t.weight == 0.0) {
            return Err(Error::config(
                "tasks",
                "every task has weight 0; at least one must be > 0",
            ));
        }
        // Evaluation settings without evaluation prompts (or prompts
        // without a schedule) would be accepted and ignored.
        match (&self.data.eval, self.train.eval_every) {
            (None, n) if n > 0 => {
                return Err(Error::config(
                    "train.eval_every",
                    "evaluation needs prompts: set `data.eval` (or leave `eval_every` at 0)",
                ))
            }
            (Some(_), 0) => {
                return Err(Error::config(
                    "data.eval",
                    "evaluation prompts are read only with `train.eval_every` > 0",
                ))
            }
            _ => {}
        }
        self.stratify.validate(&self.task_names())
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
        assert_eq!(t.judge_errors, cgpo_judges::ErrorPolicy::Violation);
        assert_eq!(
            loss_of(&t.optimizer),
            format!("{:?}", crate::optim::Crpg::default())
        );
        assert_eq!(t.kl, KlConfig::default());
        let codpo = RunConfig::from_json(
            &json!({"reward_models": {"rm": {"name": "lexical"}},
                    "tasks": [{"name": "c", "reward": {"model": "rm"}, "optimizer": {"name": "codpo"}}]})
            .to_string(),
        )
        .unwrap();
        assert_eq!(
            loss_of(&codpo.tasks[0].optimizer),
            format!(
                "{:?}",
                crate::optim::Codpo {
                    beta: 0.1,
                    lambda: 5.0
                }
            )
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
            "stratify": {"default_task": "chat", "classifier": [{"task": "math", "pattern": "\\d"}]},
            "train": {"eval_every": 10},
            "policy": {"kind": "tiny", "device": "cuda:1"}
        })
        .to_string();
        let c = RunConfig::from_json(&text).unwrap();
        assert_eq!(c.tasks[0].kl.estimator, KlEstimator::Full);
        assert_eq!(c.policy.device(), DeviceSpec::Cuda(1));
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
                "tasks[0].optimizer.klmax",
                "unknown field `klmax`",
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
            (
                // The trainer sets each step's seed and K: not config fields.
                Box::new(|v| v["train"] = json!({"sampling": {"seed": 3}})),
                "train.sampling.seed",
                "unknown field `seed`",
            ),
            (
                Box::new(|v| v["train"] = json!({"sampling": {"samples_per_prompt": 2}})),
                "train.sampling.samples_per_prompt",
                "unknown field `samples_per_prompt`",
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
                // serde reports errors inside a tagged enum at the enum's key.
                Box::new(|v| v["policy"] = json!({"kind": "tiny", "device": "tpu"})),
                "policy",
                "expected cpu, cuda or cuda:N",
            ),
            (
                Box::new(|v| v["train"] = json!({"eval_every": 5})),
                "train.eval_every",
                "evaluation needs prompts",
            ),
            (
                Box::new(|v| v["data"] = json!({"eval": "eval.jsonl"})),
                "data.eval",
                "only with `train.eval_every` > 0",
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
        v["train"] = json!({"eval_every": 5});
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

    /// The built loss `spec` names, as its Debug form.
    fn loss_of(spec: &LossSpec) -> String {
        let loss = LossRegistry::with_builtins().build(spec, "t").unwrap();
        format!("{loss:?}")
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
        use crate::optim::{OnlineDpo, Pg, Raft, RewardKind};
        use serde_json::json;
        let cases = [
            (json!({"name": "pg"}), format!("{:?}", Pg::default())),
            (
                json!({"name": "pg", "reward": "calibrated", "clip_ratio": 0.2, "epochs": 4}),
                format!(
                    "{:?}",
                    Pg {
                        reward: RewardKind::Calibrated,
                        clip_ratio: Some(0.2),
                        epochs: 4,
                        ..Pg::default()
                    }
                ),
            ),
            (
                json!({"name": "online_dpo"}),
                format!("{:?}", OnlineDpo::default()),
            ),
            (json!({"name": "raft"}), format!("{:?}", Raft {})),
        ];
        for (json, want) in cases {
            let c = config_with(json.clone(), 4).unwrap();
            assert_eq!(loss_of(&c.tasks[0].optimizer), want, "{json}");
            assert_eq!(c.tasks[0].optimizer.name, json["name"].as_str().unwrap());
            let again = RunConfig::from_json(&c.to_json()).unwrap();
            assert_eq!(again, c);
        }
        let epochs = |json| {
            let c = config_with(json, 4).unwrap();
            let losses = LossRegistry::with_builtins();
            losses.build(&c.tasks[0].optimizer, "t").unwrap().epochs()
        };
        assert_eq!(epochs(json!({"name": "pg", "epochs": 3})), 3);
        assert_eq!(epochs(json!({"name": "codpo"})), 1);
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
                "tasks[0].optimizer.reward",
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
                "tasks[0].optimizer.kl_max",
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

#[cfg(test)]
mod build_tests {
    use super::*;
    use crate::data::{PromptRecord, Sample};
    use serde_json::json;

    fn config(tasks: serde_json::Value) -> RunConfig {
        RunConfig::from_json(
            &json!({"reward_models": {"rm": {"name": "lexical", "params": {"per_word": 1.0}}}, "tasks": tasks}).to_string(),
        )
        .unwrap()
    }

    fn build(c: &RunConfig) -> Result<Vec<TaskSpec>> {
        c.build_tasks(&Registries::default())
    }

    fn build_err(c: &RunConfig) -> String {
        build(c).err().expect("expected a build error").to_string()
    }

    #[test]
    fn extra_rewards_and_the_kl_placement_from_a_config() {
        let c = config(json!([
            {"name": "a", "reward": {"model": "rm", "weight": 0.5, "aggregation": "normalize_then_sum",
                                     "extra": [{"model": "rm", "weight": 2.0}]},
             "optimizer": {"name": "grpo"}, "kl": {"coef": 0.1, "estimator": "low_var_kl", "placement": "reward"}}
        ]));
        let tasks = build(&c).unwrap();
        let t = &tasks[0];
        assert_eq!((t.reward_weight, t.extra_rewards.len()), (0.5, 1));
        assert_eq!(t.extra_rewards[0].weight, 2.0);
        assert_eq!(
            t.reward_aggregation,
            crate::optim::advantage::RewardAggregation::NormalizeThenSum
        );
        assert_eq!(
            (t.kl.placement, t.kl.estimator),
            (KlPlacement::Reward, KlEstimator::K3)
        );
        assert_eq!(t.loss.name(), "grpo");

        let c = config(json!([
            {"name": "a", "reward": {"model": "rm", "extra": [{"model": "rm9"}]}, "optimizer": {"name": "crpg"}}
        ]));
        let msg = build_err(&c);
        assert!(
            msg.contains("tasks[0].reward.extra[0].model") && msg.contains("rm9"),
            "{msg}"
        );
        let msg = RunConfig::from_json(
            &json!({"reward_models": {}, "tasks": [{"name": "a", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"},
                    "kl": {"coef": 0.1, "estimator": "full", "placement": "reward"}}]}).to_string(),
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains("tasks[0].kl.estimator"), "{msg}");
        let err = RunConfig::from_json(
            &json!({"reward_models": {}, "tasks": [{"name": "a", "reward": {"model": "rm", "extra": [{"modl": "x"}]},
                    "optimizer": {"name": "crpg"}}]}).to_string(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("modl"), "{err}");
    }

    #[test]
    fn tasks_share_a_reward_model_but_not_settings() {
        let c = config(json!([
            {"name": "a", "weight": 0.25, "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}, "batch_size": 3},
            {"name": "b", "reward": {"model": "rm", "calibrated": false}, "optimizer": {"name": "crraft", "kl_max": 1.0},
             "judges": [{"name": "length", "params": {"max_words": 2}}, {"name": "length", "label": "long", "params": {"min_words": 1}}]}
        ]));
        let tasks = build(&c).unwrap();
        assert!(Arc::ptr_eq(
            tasks[0].reward.model(),
            tasks[1].reward.model()
        ));
        assert_eq!(
            (tasks[0].weight, tasks[0].batch_size, tasks[0].judges.len()),
            (0.25, 3, 0)
        );
        assert!(!tasks[1].calibrated);
        assert_eq!(
            tasks[1].judges.names().collect::<Vec<_>>(),
            ["length", "long"]
        );
    }

    #[test]
    fn judge_problems_name_the_config_key() {
        let unknown = config(
            json!([{"name": "a", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"},
            "judges": [{"name": "length", "params": {"max_words": 2}}, {"name": "ifevil"}]}]),
        );
        let msg = build_err(&unknown);
        assert!(
            msg.starts_with(
                "config `tasks[0].judges[1]`: unknown judge `ifevil` (known: code, ifeval, length, llm, math, refusal, regex)"
            ),
            "{msg}"
        );
        let params = config(
            json!([{"name": "a", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"},
            "judges": [{"name": "regex", "params": {"pattern": "x", "must": true}}]}]),
        );
        assert!(
            build_err(&params).contains("tasks[0].judges[0]`: judge `regex`: unknown field `must`")
        );
        let dup = config(
            json!([{"name": "a", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"},
            "judges": [{"name": "regex", "params": {"pattern": "x"}}, {"name": "regex", "params": {"pattern": "y"}}]}]),
        );
        assert!(build_err(&dup)
            .contains("tasks[0].judges`: two judges in one mixture are named `regex`"));
    }

    #[test]
    fn reward_model_problems_name_the_config_key() {
        let mut c = config(
            json!([{"name": "a", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}}]),
        );
        c.reward_models.get_mut("rm").unwrap().name = "bt".into();
        assert!(build_err(&c)
            .starts_with("config `reward_models.rm`: unknown reward model `bt` (known: bradley_terry, http, lexical)"));
        c.reward_models.get_mut("rm").unwrap().name = "lexical".into();
        c.reward_models.get_mut("rm").unwrap().params = json!({"per_wrd": 1});
        assert!(build_err(&c).contains("unknown field `per_wrd`"));
    }

    #[test]
    fn user_judges_and_models_register_by_name() {
        let mut judges = JudgeRegistry::with_builtins();
        judges.register("always_fail", |name, _| {
            Ok(Box::new(cgpo_judges::FnJudge::new(
                name,
                |_: &cgpo_judges::SampleView| cgpo_judges::Verdict::fail("no"),
            )))
        });
        let c = config(
            json!([{"name": "a", "reward": {"model": "rm", "baseline": "dataset"}, "optimizer": {"name": "crpg"},
            "judges": [{"name": "always_fail"}]}]),
        );
        let registries = Registries {
            judges,
            ..Registries::default()
        };
        let tasks = c.build_tasks(&registries).unwrap();
        let record = Arc::new(PromptRecord::new("p", "q").with_baseline("b"));
        let mut samples = vec![Sample::new(record, "r")];
        let report = tasks[0].assess(&mut samples, None).unwrap();
        assert_eq!(report.stats[0].fail, 1);
        assert!(!samples[0].judgement.as_ref().unwrap().is_positive());
        assert_eq!(samples[0].reward.unwrap().calibrated, 0.5);
    }

    #[test]
    fn an_unknown_optimizer_is_an_error_when_built() {
        let c = config(
            json!([{"name": "a", "reward": {"model": "rm"}, "optimizer": {"name": "crpgg"}}]),
        );
        let msg = build_err(&c);
        assert!(
            msg.starts_with("config `tasks[0].optimizer.name`: unknown optimizer `crpgg` (registered: codpo, crpg, crraft, dapo, dr_grpo, grpo, gspo, online_dpo, pg, raft, reinforce_pp, rloo)"),
            "{msg}"
        );
    }

    #[test]
    fn the_stratifier_follows_the_config() {
        let mut c = config(json!([
            {"name": "math", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}},
            {"name": "chat", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}}
        ]));
        c.stratify.classifier = vec![ClassifierRule {
            task: "math".into(),
            pattern: r"\d".into(),
        }];
        let records = || vec![PromptRecord::new("a", "1+1"), PromptRecord::new("b", "hi")];
        assert!(c
            .stratify
            .stratifier(&c.task_names())
            .unwrap()
            .stratify(records())
            .is_err());
        c.stratify.default_task = Some("chat".into());
        let s = c
            .stratify
            .stratifier(&c.task_names())
            .unwrap()
            .stratify(records())
            .unwrap();
        assert_eq!((s.records("math").len(), s.records("chat").len()), (1, 1));
    }
}
