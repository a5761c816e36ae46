//! A task stratum, [`TaskSpec`]: the live objects (reward model with its
//! baseline cache, mixture of judges, loss) and the task's weight, K, batch
//! size and KL settings. Build one in code, or from its config
//! ([`TaskConfig::build`], with registries that map judge, reward-model and
//! loss names to code).
//!
//! ```
//! use std::sync::Arc;
//! use cgpo::data::{PromptRecord, Sample};
//! use cgpo::judges::{LengthJudge, MixtureOfJudges};
//! use cgpo::optim::Crraft;
//! use cgpo::reward::{BaselineSource, CalibratedReward, LexicalReward};
//! use cgpo::task::TaskSpec;
//! let judges = MixtureOfJudges::new(vec![Box::new(LengthJudge::new("length", None, Some(3)))]).unwrap();
//! let reward = CalibratedReward::new(Arc::new(LexicalReward::new("rm", 1.0, [])), BaselineSource::Dataset);
//! let task = TaskSpec::new("chat", judges, reward, Arc::new(Crraft::default())).with_batch(4, 2);
//! let record = Arc::new(PromptRecord::new("p", "Greet me.").with_baseline("Hello."));
//! let mut samples = vec![Sample::new(record.clone(), "Hi there."), Sample::new(record, "Hello to you, dear friend.")];
//! let report = task.assess(&mut samples, None).unwrap();
//! assert_eq!(report.stats[0].fail, 1);
//! assert!(samples[0].judgement.as_ref().unwrap().is_positive());
//! assert!(samples[1].reward.unwrap().calibrated > samples[0].reward.unwrap().calibrated);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use cgpo_judges::{
    ErrorPolicy, JudgeRegistry, JudgeSpec, MixtureOfJudges, MixtureReport, SampleView,
};
use serde::{Deserialize, Serialize};

use crate::data::Sample;
use crate::error::{check_config, Error, Result};
use crate::kl::KlConfig;
use crate::optim::advantage::RewardAggregation;
use crate::optim::{LossRegistry, LossSpec, TaskLoss};
use crate::reward::{BaselineGenerator, BaselineSource, CalibratedReward, RewardModel};

/// One task, ready to use.
pub struct TaskSpec {
    pub name: String,
    /// rho_l.
    pub weight: f64,
    pub reward: CalibratedReward,
    /// Whether the optimizer sees the calibrated (true) or raw reward.
    pub calibrated: bool,
    pub judges: Arc<MixtureOfJudges>,
    /// The task's optimizer: its loss (CRPG, CODPO, CRRAFT, a baseline or
    /// one of the user's).
    pub loss: Arc<dyn TaskLoss>,
    /// K, responses per prompt.
    pub generations_per_prompt: usize,
    /// B_l, prompts per step.
    pub batch_size: usize,
    /// The task's own KL penalty.
    pub kl: KlConfig,
    /// The weight of `reward` when the task has extra rewards.
    pub reward_weight: f64,
    /// More reward models (raw scores), combined with `reward` by
    /// `reward_aggregation` into the reward the loss sees.
    pub extra_rewards: Vec<ExtraReward>,
    pub reward_aggregation: RewardAggregation,
}

/// A task's additional reward model and its weight.
#[derive(Clone)]
pub struct ExtraReward {
    /// Its name in metrics (`rewards.<name>`).
    pub name: String,
    pub model: Arc<dyn RewardModel>,
    pub weight: f64,
}

impl TaskSpec {
    /// A task with weight 1, calibrated rewards, K = 4, B = 8 and no KL
    /// penalty; change them with the `with_*` methods.
    pub fn new(
        name: impl Into<String>,
        judges: MixtureOfJudges,
        reward: CalibratedReward,
        loss: Arc<dyn TaskLoss>,
    ) -> Self {
        Self {
            name: name.into(),
            weight: 1.0,
            reward,
            calibrated: true,
            judges: Arc::new(judges),
            loss,
            generations_per_prompt: DEFAULT_K,
            batch_size: DEFAULT_BATCH,
            kl: KlConfig::default(),
            reward_weight: 1.0,
            extra_rewards: Vec::new(),
            reward_aggregation: RewardAggregation::Sum,
        }
    }

    /// Adds a reward model whose raw score is combined with the task's
    /// reward (weighted `reward_weight`) by `aggregation`.
    pub fn with_extra_reward(
        mut self,
        name: impl Into<String>,
        model: Arc<dyn RewardModel>,
        weight: f64,
    ) -> Self {
        self.extra_rewards.push(ExtraReward {
            name: name.into(),
            model,
            weight,
        });
        self
    }

    /// How the rewards combine, and the weight of the task's own reward.
    pub fn with_reward_aggregation(
        mut self,
        aggregation: RewardAggregation,
        reward_weight: f64,
    ) -> Self {
        self.reward_aggregation = aggregation;
        self.reward_weight = reward_weight;
        self
    }

    /// Whether the loss sees one reward model's value unchanged (with one
    /// reward, `normalize_then_sum` still normalizes it within its group).
    pub fn single_reward(&self) -> bool {
        self.extra_rewards.is_empty()
            && self.reward_weight == 1.0
            && self.reward_aggregation == RewardAggregation::Sum
    }

    /// rho_l, the weight of this task's gradient in the merge.
    pub fn with_weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// K responses per prompt, B prompts per step.
    pub fn with_batch(mut self, generations_per_prompt: usize, batch_size: usize) -> Self {
        self.generations_per_prompt = generations_per_prompt;
        self.batch_size = batch_size;
        self
    }

    pub fn with_kl(mut self, kl: KlConfig) -> Self {
        self.kl = kl;
        self
    }

    /// Whether the loss sees the calibrated reward (true) or the raw one.
    pub fn with_calibrated(mut self, calibrated: bool) -> Self {
        self.calibrated = calibrated;
        self
    }

    /// Checks the settings the types do not; errors name `key` (the
    /// task's config path, e.g. `tasks[1]`).
    pub fn validate(&self, key: &str) -> Result<()> {
        let weights = std::iter::once(("reward.weight".to_string(), self.reward_weight)).chain(
            self.extra_rewards
                .iter()
                .enumerate()
                .map(|(k, e)| (format!("reward.extra[{k}].weight"), e.weight)),
        );
        for (field, w) in weights {
            if !w.is_finite() {
                return Err(Error::config(
                    format!("{key}.{field}"),
                    format!("must be finite, got {w}"),
                ));
            }
        }
        check_settings(
            key,
            &self.name,
            self.weight,
            (self.generations_per_prompt, self.batch_size),
            &self.kl,
            Some(self.loss.as_ref()),
        )
    }

    /// What an evaluation of this task needs: its judges and its reward
    /// model, shared.
    pub fn eval_task(&self) -> EvalTask {
        EvalTask {
            name: self.name.clone(),
            judges: self.judges.clone(),
            reward: self.reward.model().clone(),
        }
    }

    /// Judges and scores samples of this task, setting `judgement` and
    /// `reward` on each; returns the mixture's report (per-judge stats).
    pub fn assess(
        &self,
        samples: &mut [Sample],
        generator: Option<&dyn BaselineGenerator>,
    ) -> Result<MixtureReport> {
        let report = {
            let views: Vec<_> = samples.iter().map(Sample::view).collect();
            self.judges.judge(&views)
        };
        self.reward.score(samples, generator)?;
        for (sample, judgement) in samples.iter_mut().zip(&report.samples) {
            sample.judgement = Some(judgement.clone());
        }
        Ok(report)
    }
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
    /// The loss by name with its settings (`{"name": "crpg", "kl_max": 20}`).
    pub optimizer: LossSpec,
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
    DEFAULT_K
}
fn default_batch() -> usize {
    DEFAULT_BATCH
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
    /// The weight of this reward when there are `extra` ones.
    #[serde(default = "one")]
    pub weight: f64,
    /// More reward models (keys of `reward_models`; raw scores) for this
    /// task, each with a weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra: Vec<ExtraRewardConfig>,
    /// `sum` (default) or `normalize_then_sum` (GDPO).
    #[serde(default)]
    pub aggregation: RewardAggregation,
}

/// One more reward model of a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraRewardConfig {
    /// A key of `reward_models`.
    pub model: String,
    #[serde(default = "one")]
    pub weight: f64,
}

fn yes() -> bool {
    true
}

const DEFAULT_K: usize = 4;
const DEFAULT_BATCH: usize = 8;

/// A task as an evaluation sees it: its name, judges and reward model.
#[derive(Clone)]
pub struct EvalTask {
    pub name: String,
    pub judges: Arc<MixtureOfJudges>,
    pub reward: Arc<dyn RewardModel>,
}

impl EvalTask {
    /// The raw reward-model score of each view (no calibration, no
    /// judges); a scoring error names this task.
    pub fn raw_scores(&self, views: &[SampleView<'_>]) -> Result<Vec<f32>> {
        self.reward.score(views).map_err(|e| Error::Reward {
            model: self.name.clone(),
            message: e.to_string(),
        })
    }
}

/// The checks shared by [`TaskSpec::validate`] and [`TaskConfig::validate`]:
/// a name, weight >= 0, K and B >= 1, K enough for the loss, the KL
/// settings.
fn check_settings(
    key: &str,
    name: &str,
    weight: f64,
    (k, batch): (usize, usize),
    kl: &KlConfig,
    loss: Option<&dyn TaskLoss>,
) -> Result<()> {
    let key = |k: &str| format!("{key}.{k}");
    if name.trim().is_empty() {
        return Err(Error::config(key("name"), "must not be empty"));
    }
    check_config(key("weight"), weight, ">= 0", |w| w >= 0.0)?;
    if k == 0 {
        return Err(Error::config(key("generations_per_prompt"), "must be >= 1"));
    }
    if batch == 0 {
        return Err(Error::config(key("batch_size"), "must be >= 1"));
    }
    if let Some(loss) = loss {
        if k < loss.min_generations() {
            return Err(Error::config(
                key("generations_per_prompt"),
                format!(
                    "{} needs at least {} generations per prompt to form a pair",
                    loss.name(),
                    loss.min_generations()
                ),
            ));
        }
    }
    kl.validate(&key("kl"))
}

impl TaskConfig {
    /// Checks what can be checked without building: the settings, and the
    /// loss's parameters when `losses` knows its name (a loss registered
    /// later is checked by [`TaskConfig::build`]). `key`: `tasks[1]`.
    pub fn validate(&self, key: &str, losses: &LossRegistry) -> Result<()> {
        let loss = if losses.names().contains(&self.optimizer.name.as_str()) {
            Some(losses.build(&self.optimizer, &format!("{key}.optimizer"))?)
        } else {
            None
        };
        check_settings(
            key,
            &self.name,
            self.weight,
            (self.generations_per_prompt, self.batch_size),
            &self.kl,
            loss.as_deref(),
        )
    }

    /// The live task: its judges and loss from the registries, its reward
    /// model from `models` (built once per instance, shared by the tasks
    /// that name it). `key` is the task's config path (`tasks[1]`).
    pub fn build(
        &self,
        key: &str,
        judges: &JudgeRegistry,
        models: &BTreeMap<String, Arc<dyn RewardModel>>,
        losses: &LossRegistry,
    ) -> Result<TaskSpec> {
        let built = self
            .judges
            .iter()
            .enumerate()
            .map(|(j, spec)| {
                judges
                    .build(spec)
                    .map_err(|e| Error::config(format!("{key}.judges[{j}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let mixture = MixtureOfJudges::new(built)
            .map_err(|e| Error::config(format!("{key}.judges"), e.to_string()))?
            .with_error_policy(self.judge_errors);
        let model_of = |name: &str, field: String| {
            models.get(name).cloned().ok_or_else(|| {
                Error::config(
                    format!("{key}.{field}"),
                    format!("unknown reward model `{name}`"),
                )
            })
        };
        let model = model_of(&self.reward.model, "reward.model".into())?;
        let loss = losses.build(&self.optimizer, &format!("{key}.optimizer"))?;
        let mut extras = Vec::new();
        for (k, extra) in self.reward.extra.iter().enumerate() {
            let model = model_of(&extra.model, format!("reward.extra[{k}].model"))?;
            extras.push(ExtraReward {
                name: extra.model.clone(),
                model,
                weight: extra.weight,
            });
        }
        let mut task = TaskSpec::new(
            self.name.clone(),
            mixture,
            CalibratedReward::new(model, self.reward.baseline),
            loss,
        )
        .with_weight(self.weight)
        .with_batch(self.generations_per_prompt, self.batch_size)
        .with_kl(self.kl.clone())
        .with_calibrated(self.reward.calibrated)
        .with_reward_aggregation(self.reward.aggregation, self.reward.weight);
        task.extra_rewards = extras;
        task.validate(key)?;
        Ok(task)
    }
}
