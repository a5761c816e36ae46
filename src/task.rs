//! A built task stratum, [`TaskSpec`]: the live objects (reward model with
//! its baseline cache, mixture of judges) plus the task's optimizer, K,
//! batch size and KL settings. Built from a [`RunConfig`] with registries
//! that map judge and reward-model names to code.
//!
//! ```
//! use cgpo::config::RunConfig;
//! use cgpo::data::{PromptRecord, Sample};
//! use cgpo::judges::JudgeRegistry;
//! use cgpo::reward::RewardRegistry;
//! use cgpo::task::build_tasks;
//! use std::sync::Arc;
//! let config = RunConfig::from_json(r#"{
//!   "reward_models": {"rm": {"name": "lexical", "params": {"per_word": 1.0}}},
//!   "tasks": [{"name": "chat", "reward": {"model": "rm", "baseline": "dataset"},
//!              "judges": [{"name": "length", "params": {"max_words": 3}}],
//!              "optimizer": {"name": "crraft"}}]
//! }"#).unwrap();
//! let tasks = build_tasks(&config, &JudgeRegistry::with_builtins(), &RewardRegistry::with_builtins()).unwrap();
//! let record = Arc::new(PromptRecord::new("p", "Greet me.").with_baseline("Hello."));
//! let mut samples = vec![Sample::new(record.clone(), "Hi there."), Sample::new(record, "Hello to you, dear friend.")];
//! let report = tasks[0].assess(&mut samples, None).unwrap();
//! assert_eq!(report.stats[0].fail, 1);
//! assert!(samples[0].judgement.as_ref().unwrap().is_positive());
//! assert!(samples[1].reward.unwrap().calibrated > samples[0].reward.unwrap().calibrated);
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use cgpo_judges::{JudgeRegistry, MixtureOfJudges, MixtureReport};

use crate::config::{KlConfig, OptimizerConfig, RunConfig};
use crate::data::Sample;
use crate::error::{Error, Result};
use crate::reward::{BaselineGenerator, CalibratedReward, RewardModel, RewardRegistry};
use crate::strata::{KeywordClassifier, Stratifier};

/// One task, ready to use.
pub struct TaskSpec {
    pub name: String,
    /// rho_l.
    pub weight: f64,
    pub reward: CalibratedReward,
    /// Whether the optimizer sees the calibrated (true) or raw reward.
    pub calibrated: bool,
    pub judges: MixtureOfJudges,
    pub optimizer: OptimizerConfig,
    pub generations_per_prompt: usize,
    pub batch_size: usize,
    pub kl: KlConfig,
}

impl TaskSpec {
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

/// Builds every task of `config`. Each reward model is built once and
/// shared by the tasks that name it; errors name the config key.
pub fn build_tasks(
    config: &RunConfig,
    judges: &JudgeRegistry,
    rewards: &RewardRegistry,
) -> Result<Vec<TaskSpec>> {
    let mut models: BTreeMap<&str, Arc<dyn RewardModel>> = BTreeMap::new();
    for (name, spec) in &config.reward_models {
        let model = rewards.build(name, spec).map_err(|e| match e {
            Error::Reward { message, .. } => {
                Error::config(format!("reward_models.{name}"), message)
            }
            other => other,
        })?;
        models.insert(name, model);
    }
    config
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let built = t
                .judges
                .iter()
                .enumerate()
                .map(|(j, spec)| {
                    judges.build(spec).map_err(|e| {
                        Error::config(format!("tasks[{i}].judges[{j}]"), e.to_string())
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let mixture = MixtureOfJudges::new(built)
                .map_err(|e| Error::config(format!("tasks[{i}].judges"), e.to_string()))?
                .with_error_policy(t.judge_errors);
            let model = models
                .get(t.reward.model.as_str())
                .cloned()
                .ok_or_else(|| {
                    Error::config(
                        format!("tasks[{i}].reward.model"),
                        format!("unknown reward model `{}`", t.reward.model),
                    )
                })?;
            Ok(TaskSpec {
                name: t.name.clone(),
                weight: t.weight,
                reward: CalibratedReward::new(model, t.reward.baseline),
                calibrated: t.reward.calibrated,
                judges: mixture,
                optimizer: t.optimizer.clone(),
                generations_per_prompt: t.generations_per_prompt,
                batch_size: t.batch_size,
                kl: t.kl.clone(),
            })
        })
        .collect()
}

/// The stratifier `config.stratify` describes.
pub fn build_stratifier(config: &RunConfig) -> Result<Stratifier> {
    let mut stratifier = Stratifier::new(config.task_names());
    if !config.stratify.classifier.is_empty() {
        let rules = config
            .stratify
            .classifier
            .iter()
            .map(|r| (r.task.clone(), r.pattern.clone()));
        stratifier = stratifier.with_classifier(KeywordClassifier::new(rules)?);
    }
    if let Some(d) = &config.stratify.default_task {
        stratifier = stratifier.with_default_task(d.clone());
    }
    Ok(stratifier)
}
