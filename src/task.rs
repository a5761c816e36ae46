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

use cgpo_judges::{JudgeRegistry, MixtureOfJudges, MixtureReport, SampleView};

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
    /// The raw reward-model score of each view (no calibration, no
    /// judges); a scoring error names this task.
    pub fn raw_scores(&self, views: &[SampleView<'_>]) -> Result<Vec<f32>> {
        self.reward.model().score(views).map_err(|e| Error::Reward {
            model: self.name.clone(),
            message: e.to_string(),
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::PromptRecord;
    use serde_json::json;

    fn config(tasks: serde_json::Value) -> RunConfig {
        RunConfig::from_json(
            &json!({"reward_models": {"rm": {"name": "lexical", "params": {"per_word": 1.0}}}, "tasks": tasks}).to_string(),
        )
        .unwrap()
    }

    fn build(c: &RunConfig) -> Result<Vec<TaskSpec>> {
        build_tasks(
            c,
            &JudgeRegistry::with_builtins(),
            &RewardRegistry::with_builtins(),
        )
    }

    fn build_err(c: &RunConfig) -> String {
        build(c).err().expect("expected a build error").to_string()
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
        let tasks = build_tasks(&c, &judges, &RewardRegistry::with_builtins()).unwrap();
        let record = Arc::new(PromptRecord::new("p", "q").with_baseline("b"));
        let mut samples = vec![Sample::new(record, "r")];
        let report = tasks[0].assess(&mut samples, None).unwrap();
        assert_eq!(report.stats[0].fail, 1);
        assert!(!samples[0].judgement.as_ref().unwrap().is_positive());
        assert_eq!(samples[0].reward.unwrap().calibrated, 0.5);
    }

    #[test]
    fn the_stratifier_follows_the_config() {
        let mut c = config(json!([
            {"name": "math", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}},
            {"name": "chat", "reward": {"model": "rm"}, "optimizer": {"name": "crpg"}}
        ]));
        c.stratify.classifier = vec![crate::config::ClassifierRule {
            task: "math".into(),
            pattern: r"\d".into(),
        }];
        let records = || vec![PromptRecord::new("a", "1+1"), PromptRecord::new("b", "hi")];
        assert!(build_stratifier(&c).unwrap().stratify(records()).is_err());
        c.stratify.default_task = Some("chat".into());
        let s = build_stratifier(&c).unwrap().stratify(records()).unwrap();
        assert_eq!((s.records("math").len(), s.records("chat").len()), (1, 1));
    }
}
