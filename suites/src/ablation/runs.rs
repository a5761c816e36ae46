//! The ablation's runs (docs/algorithm.md §5), each a [`RunConfig`] over the
//! suite's tasks from the same warm-up.
//!
//! | Run | Optimizer | Reward | Judges | KL |
//! |---|---|---|---|---|
//! | `cgpo-crpg` | CRPG | calibrated | the task's | per task |
//! | `cgpo-grpo` | CRPG's judge gate, GRPO's group normalization and clipped loss | calibrated | the task's | per task |
//! | `cgpo-codpo` | CODPO | (ranks by raw) | the task's | per task |
//! | `cgpo-crraft` | CRRAFT | calibrated | the task's | per task |
//! | `crpg-no-judges` | CRPG | calibrated | none | per task |
//! | `pg-unconstrained` | policy gradient | raw | none (ignored) | one global penalty |
//! | `grpo-unconstrained` | GRPO | raw | none (ignored) | one global penalty |
//! | `crpg-global-kl` | CRPG | calibrated | the task's | one setting for all |
//! | `crpg-raw-reward` | CRPG | raw | the task's | per task |
//!
//! Per task, CGPO's KL settings are lenient where judges are precise
//! (`math`, `format`: `kl_max` 20, penalty 0.01) and strict for `chat` and
//! `safety` (`kl_max` 5, penalty 0.05); the global setting is `kl_max` 10,
//! penalty 0.03 for every task.
//!
//! The two GRPO runs use the same objective (`advantage: grpo`, PPO-clip
//! 0.2, `seq_mean_token_mean`: the `grpo` preset), so they differ from each
//! other only by what differs between `pg-unconstrained` and `cgpo-crpg`.
//!
//! ```
//! use cgpo_suites::ablation::runs::RunName;
//! assert_eq!(RunName::parse("cgpo-crpg").unwrap(), RunName::CgpoCrpg);
//! assert_eq!(RunName::ALL.len(), 9);
//! assert!(RunName::parse("ppo").is_err());
//! ```

use std::path::Path;

use serde_json::{json, Value};

use super::suite::{SuiteTask, TASKS};
use super::warmup::Warmup;
use cgpo::config::RunConfig;
use cgpo::error::{Error, Result};

/// One of the ablation's runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunName {
    CgpoCrpg,
    CgpoGrpo,
    CgpoCodpo,
    CgpoCrraft,
    CrpgNoJudges,
    PgUnconstrained,
    GrpoUnconstrained,
    CrpgGlobalKl,
    CrpgRawReward,
}

impl RunName {
    pub const ALL: [RunName; 9] = [
        RunName::CgpoCrpg,
        RunName::CgpoGrpo,
        RunName::CgpoCodpo,
        RunName::CgpoCrraft,
        RunName::CrpgNoJudges,
        RunName::PgUnconstrained,
        RunName::GrpoUnconstrained,
        RunName::CrpgGlobalKl,
        RunName::CrpgRawReward,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunName::CgpoCrpg => "cgpo-crpg",
            RunName::CgpoGrpo => "cgpo-grpo",
            RunName::CgpoCodpo => "cgpo-codpo",
            RunName::CgpoCrraft => "cgpo-crraft",
            RunName::CrpgNoJudges => "crpg-no-judges",
            RunName::PgUnconstrained => "pg-unconstrained",
            RunName::GrpoUnconstrained => "grpo-unconstrained",
            RunName::CrpgGlobalKl => "crpg-global-kl",
            RunName::CrpgRawReward => "crpg-raw-reward",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|r| r.as_str()).collect();
                Error::config(
                    "--runs",
                    format!("unknown run `{name}`; known: {}", known.join(", ")),
                )
            })
    }

    /// The task's section of a run config.
    fn task(self, task: SuiteTask, k: usize, batch: usize) -> Value {
        let strict = matches!(task, SuiteTask::Chat | SuiteTask::Safety);
        let (kl_max, coef) = match self {
            RunName::CrpgGlobalKl | RunName::PgUnconstrained | RunName::GrpoUnconstrained => {
                (10.0, 0.03)
            }
            _ if strict => (5.0, 0.05),
            _ => (20.0, 0.01),
        };
        let optimizer = match self {
            RunName::CgpoCodpo => json!({"name": "codpo"}),
            RunName::CgpoCrraft => json!({"name": "crraft", "kl_max": kl_max}),
            RunName::PgUnconstrained => json!({"name": "pg", "reward": "raw"}),
            RunName::GrpoUnconstrained => json!({"name": "grpo", "reward": "raw"}),
            RunName::CgpoGrpo => json!({"name": "crpg", "kl_max": kl_max, "advantage": "grpo",
                                        "clip_ratio": 0.2, "aggregation": "seq_mean_token_mean"}),
            _ => json!({"name": "crpg", "kl_max": kl_max}),
        };
        // pg and grpo ignore y(a); their judges only fill the training metrics.
        let judges = match self {
            RunName::CrpgNoJudges => json!([]),
            _ => task.judges(),
        };
        json!({
            "name": task.name(),
            "reward": {"model": task.name(), "baseline": "policy_sample",
                       "calibrated": self != RunName::CrpgRawReward},
            "judges": judges,
            "optimizer": optimizer,
            "generations_per_prompt": k,
            "batch_size": batch,
            "kl": {"coef": coef, "estimator": "k3"}
        })
    }
}

/// How long and how wide a run trains.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSettings {
    pub steps: u64,
    pub learning_rate: f64,
    /// K and B per task.
    pub generations_per_prompt: usize,
    pub batch_size: usize,
    pub max_new_tokens: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            steps: 60,
            learning_rate: 1e-3,
            generations_per_prompt: 4,
            batch_size: 4,
            max_new_tokens: 40,
        }
    }
}

/// The run config of `run` from `warmup`, writing to `out`.
pub fn run_config(
    run: RunName,
    warmup: &Warmup,
    settings: &RunSettings,
    seed: u64,
    out: &Path,
) -> Result<RunConfig> {
    let path = |p: &Path| p.display().to_string();
    let mut reward_models = serde_json::Map::new();
    for task in TASKS {
        let dir = warmup.reward_models.get(task.name()).ok_or_else(|| {
            Error::Train(format!(
                "the warm-up has no reward model for `{}`",
                task.name()
            ))
        })?;
        reward_models.insert(
            task.name().into(),
            json!({"name": "bradley_terry", "params": {"path": path(dir), "batch_size": 32}}),
        );
    }
    let tasks: Vec<Value> = TASKS
        .iter()
        .map(|&t| run.task(t, settings.generations_per_prompt, settings.batch_size))
        .collect();
    let config = json!({
        "seed": seed,
        "data": {"train": path(&warmup.train_prompts)},
        "reward_models": reward_models,
        "tasks": tasks,
        "policy": {"kind": "tiny", "size": warmup.config.model, "weights": path(&warmup.policy)},
        "train": {"steps": settings.steps, "learning_rate": settings.learning_rate,
                  "sampling": {"max_new_tokens": settings.max_new_tokens},
                  "output_dir": path(out)}
    });
    RunConfig::from_json(&config.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::ablation::warmup::WarmupConfig;

    fn warmup() -> Warmup {
        let dir = PathBuf::from("/nonexistent/warmup");
        Warmup {
            dir: dir.clone(),
            seed: 0,
            config: WarmupConfig::quick(),
            policy: dir.join("dpo"),
            reward_models: TASKS
                .iter()
                .map(|t| (t.name().to_string(), dir.join(t.name())))
                .collect(),
            reward_reports: BTreeMap::new(),
            train_prompts: dir.join("prompts.jsonl"),
            dev_prompts: dir.join("dev_prompts.jsonl"),
            test_prompts: dir.join("test_prompts.jsonl"),
            sft_dev_loss: None,
            dpo_dev_margin: None,
            seconds: 0.0,
            cached: false,
        }
    }

    #[test]
    fn each_run_changes_what_its_name_says() {
        let w = warmup();
        let s = RunSettings::default();
        let out = Path::new("/tmp/out");
        let cfg = |r| run_config(r, &w, &s, 1, out).unwrap();
        let full = cfg(RunName::CgpoCrpg);
        assert_eq!(full.task_names(), ["math", "format", "chat", "safety"]);
        assert!(full
            .tasks
            .iter()
            .all(|t| !t.judges.is_empty() && t.reward.calibrated));
        let optimizer = |c: &RunConfig, l: usize| {
            let o = &c.tasks[l].optimizer;
            (o.name.clone(), serde_json::Value::Object(o.params.clone()))
        };
        let kl_max: Vec<serde_json::Value> = (0..4)
            .map(|l| optimizer(&full, l).1["kl_max"].clone())
            .collect();
        assert!((0..4).all(|l| optimizer(&full, l).0 == "crpg"));
        assert_eq!(kl_max, [20.0, 20.0, 5.0, 5.0]);

        let no_judges = cfg(RunName::CrpgNoJudges);
        assert!(no_judges.tasks.iter().all(|t| t.judges.is_empty()));
        let raw = cfg(RunName::CrpgRawReward);
        assert!(raw.tasks.iter().all(|t| !t.reward.calibrated));
        let global = cfg(RunName::CrpgGlobalKl);
        assert!((0..4).all(|l| global.tasks[l].kl.coef == 0.03
            && optimizer(&global, l) == ("crpg".into(), json!({"kl_max": 10.0}))));
        let pg = cfg(RunName::PgUnconstrained);
        assert!((0..4).all(|l| pg.tasks[l].kl.coef == 0.03
            && optimizer(&pg, l) == ("pg".into(), json!({"reward": "raw"}))));
        let grpo = cfg(RunName::GrpoUnconstrained);
        assert!((0..4).all(|l| grpo.tasks[l].kl.coef == 0.03
            && optimizer(&grpo, l) == ("grpo".into(), json!({"reward": "raw"}))));
        let cgpo_grpo = cfg(RunName::CgpoGrpo);
        assert!((0..4).all(|l| !cgpo_grpo.tasks[l].judges.is_empty()
            && cgpo_grpo.tasks[l].kl == full.tasks[l].kl
            && optimizer(&cgpo_grpo, l).1["advantage"] == "grpo"
            && optimizer(&cgpo_grpo, l).1["kl_max"] == kl_max[l]));
        assert_eq!(optimizer(&cgpo_grpo, 0).0, "crpg");
        assert_eq!(optimizer(&cfg(RunName::CgpoCodpo), 0).0, "codpo");
        assert_eq!(
            optimizer(&cfg(RunName::CgpoCrraft), 3),
            ("crraft".into(), json!({"kl_max": 5.0}))
        );
        for r in RunName::ALL {
            let c = cfg(r);
            assert_eq!(c.seed, 1);
            assert_eq!(c.train.output_dir, out);
            assert_eq!(c.policy.weights(), Some(w.policy.as_path()));
        }
    }
}
