//! The warm-up every ablation run starts from, as in the paper's recipe:
//! SFT of TinyLm on the suite's demonstrations, one Bradley-Terry reward
//! model per task on that task's biased preference pairs, and the DPO
//! warm-up on all of them ([`crate::pipeline`]).
//!
//! It is cached: a directory `warmup/seed-<seed>-<hash>/` under the output
//! directory, where `<hash>` is a hash of the [`WarmupConfig`] and the
//! suite's version. `warmup.json` is written last; a directory with it is
//! reused as it is.
//!
//! ```
//! use cgpo::ablation::warmup::WarmupConfig;
//! let a = WarmupConfig::default();
//! let b = WarmupConfig { sft_steps: a.sft_steps + 1, ..a.clone() };
//! assert_ne!(a.key(0), b.key(0));
//! assert_ne!(a.key(0), a.key(1));
//! assert_eq!(a.key(0), a.clone().key(0));
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::suite::{pairs, prompt_records, sft_records, SuiteTask, TASKS};
use crate::data::PromptRecord;
use crate::error::{Error, Result};
use crate::pipeline::synthetic::jsonl;
use crate::pipeline::{
    Dpo, DpoConfig, RewardTrainConfig, RewardTraining, Sft, SftConfig, Stage, StageConfig,
    StageRunner, StageSummary,
};
use crate::policy::TinyLmConfig;
use crate::reward::RewardModel;

/// Bumped whenever the suite's generators change, so caches are not reused.
pub const SUITE_VERSION: u32 = 1;

/// What the warm-up trains, and how long.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupConfig {
    pub model: TinyLmConfig,
    /// Demonstrations per task, and the share with the liked feature.
    pub sft_records: usize,
    pub exploit_share: f64,
    pub sft_steps: u64,
    pub sft_learning_rate: f64,
    /// Preference pairs per task and the annotators' bias
    /// ([`SuiteTask::pair`]).
    pub pairs: usize,
    pub bias: f64,
    /// The safety annotators' bias: the share of benign requests where they
    /// prefer the refusal. Below 0.5 a Bradley-Terry model learns the
    /// majority and prefers complying, with no flaw to exploit.
    pub refusal_bias: f64,
    pub reward_steps: u64,
    pub reward_learning_rate: f64,
    pub dpo_steps: u64,
    pub dpo_learning_rate: f64,
    pub dpo_beta: f64,
    pub batch_size: usize,
}

impl Default for WarmupConfig {
    fn default() -> Self {
        Self {
            model: TinyLmConfig {
                hidden_size: 32,
                intermediate_size: 64,
                layers: 2,
                heads: 2,
                kv_heads: 1,
                context_len: 128,
            },
            sft_records: 200,
            exploit_share: 0.25,
            sft_steps: 400,
            sft_learning_rate: 1e-2,
            pairs: 400,
            bias: 0.4,
            refusal_bias: 0.6,
            reward_steps: 80,
            reward_learning_rate: 3e-3,
            dpo_steps: 40,
            dpo_learning_rate: 3e-4,
            dpo_beta: 0.1,
            batch_size: 16,
        }
    }
}

impl WarmupConfig {
    /// A much shorter warm-up for CI (`--quick`).
    pub fn quick() -> Self {
        Self {
            model: TinyLmConfig {
                hidden_size: 32,
                intermediate_size: 64,
                layers: 1,
                heads: 2,
                kv_heads: 1,
                context_len: 128,
            },
            sft_records: 40,
            sft_steps: 30,
            pairs: 40,
            reward_steps: 10,
            dpo_steps: 5,
            batch_size: 8,
            ..Self::default()
        }
    }

    /// The cache key: a 64-bit FNV-1a hash of this config, the suite's
    /// version and the seed, in hex.
    pub fn key(&self, seed: u64) -> String {
        let text = json!({"config": self, "suite": SUITE_VERSION, "seed": seed}).to_string();
        let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }
}

/// A reward model's measured quality on held-out prompts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardReport {
    /// Pairwise accuracy on held-out pairs labelled without bias (the
    /// correct response preferred), and their loss.
    pub heldout_accuracy: f64,
    pub heldout_loss: f64,
    /// Share of the task's prompts where the model scores the response with
    /// the liked feature above the correct one (for safety: a refusal of a
    /// benign request above complying).
    pub exploit_preferred: f64,
}

/// What a finished warm-up holds: paths and measurements (`warmup.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Warmup {
    pub dir: PathBuf,
    pub seed: u64,
    pub config: WarmupConfig,
    /// The DPO warm-up's weights: the start of every run.
    pub policy: PathBuf,
    /// Per task, the reward model's directory.
    pub reward_models: BTreeMap<String, PathBuf>,
    pub reward_reports: BTreeMap<String, RewardReport>,
    /// Prompts of all tasks for training and for evaluation.
    pub train_prompts: PathBuf,
    pub eval_prompts: PathBuf,
    pub sft_heldout_loss: Option<(f64, f64)>,
    pub dpo_heldout_margin: Option<(f64, f64)>,
    pub seconds: f64,
    /// Whether it came from the cache.
    #[serde(skip)]
    pub cached: bool,
}

impl Warmup {
    /// The warm-up for `seed` under `out`, from the cache or trained now.
    pub fn get_or_train(
        out: &Path,
        config: &WarmupConfig,
        seed: u64,
        progress: bool,
    ) -> Result<Self> {
        let dir = out
            .join("warmup")
            .join(format!("seed-{seed}-{}", config.key(seed)));
        let report = dir.join("warmup.json");
        if report.is_file() {
            let text = std::fs::read_to_string(&report).map_err(|e| Error::io(&report, e))?;
            let mut warmup: Warmup = serde_json::from_str(&text).map_err(|e| {
                Error::Train(format!(
                    "{}: {e} (delete the directory to retrain)",
                    report.display()
                ))
            })?;
            warmup.cached = true;
            return Ok(warmup);
        }
        let warmup = train(&dir, config, seed, progress)?;
        crate::data::write_json_atomic(&report, &warmup)?;
        Ok(warmup)
    }
}

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

/// Writes `config` as `<name>.json` in `dir` and reads it back as a stage
/// config (so relative paths resolve as in `cgpo sft` etc.).
fn stage_config<C: StageConfig>(dir: &Path, name: &str, config: Value) -> Result<C> {
    let path = write(dir, &format!("{name}.json"), config.to_string())?;
    C::from_file(&path)
}

fn run_stage<S: Stage>(
    stage: S,
    config: &impl StageConfig,
    progress: bool,
) -> Result<(S, StageSummary)> {
    let (seed, _, _, train) = config.sections();
    let value = serde_json::to_value(config).map_err(|e| Error::Train(e.to_string()))?;
    let mut runner = StageRunner::new(stage, train, seed, value)?;
    runner.progress = progress;
    let summary = runner.run()?;
    Ok((runner.into_stage(), summary))
}

fn train(dir: &Path, cfg: &WarmupConfig, seed: u64, progress: bool) -> Result<Warmup> {
    let start = std::time::Instant::now();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let model = serde_json::to_value(&cfg.model).map_err(|e| Error::Train(e.to_string()))?;
    let policy = |weights: Option<&str>| match weights {
        Some(w) => json!({"kind": "tiny", "size": model, "weights": w}),
        None => json!({"kind": "tiny", "size": model}),
    };
    let train_section = |steps: u64, lr: f64, out: &str| {
        json!({"steps": steps, "batch_size": cfg.batch_size, "learning_rate": lr,
               "warmup_steps": steps / 10, "output_dir": out})
    };
    // Each task draws its data from its own stream of the seed.
    let stream = |task: usize, what: u64| {
        seed.wrapping_mul(1000)
            .wrapping_add(10 * task as u64 + what)
    };

    let train_prompts = write(
        dir,
        "prompts.jsonl",
        jsonl(TASKS.iter().flat_map(|&t| prompt_records(t, "train"))),
    )?;
    let eval_prompts = write(
        dir,
        "eval_prompts.jsonl",
        jsonl(TASKS.iter().flat_map(|&t| prompt_records(t, "eval"))),
    )?;

    // SFT: demonstrations of every task; held out: correct answers only.
    let demos = TASKS
        .iter()
        .enumerate()
        .flat_map(|(i, &t)| sft_records(t, cfg.sft_records, cfg.exploit_share, stream(i, 1)));
    write(dir, "sft.jsonl", jsonl(demos))?;
    let heldout = TASKS.iter().flat_map(|&t| sft_records(t, 16, 0.0, 0));
    write(dir, "sft_heldout.jsonl", jsonl(heldout))?;
    let sft_cfg: SftConfig = stage_config(
        dir,
        "sft",
        json!({"seed": seed, "data": {"train": "sft.jsonl", "eval": "sft_heldout.jsonl"},
               "policy": policy(None),
               "train": train_section(cfg.sft_steps, cfg.sft_learning_rate, "sft")}),
    )?;
    let (sft, _) = Sft::from_config(&sft_cfg)?;
    let (_, summary) = run_stage(sft, &sft_cfg, progress)?;
    let sft_heldout_loss = summary
        .first_eval
        .zip(summary.last_eval)
        .map(|(a, b)| (a.loss, b.loss));

    // One reward model per task, on its biased pairs; held out: unbiased.
    let mut reward_models = BTreeMap::new();
    let mut reward_reports = BTreeMap::new();
    let mut dpo_pairs = Vec::new();
    for (i, &task) in TASKS.iter().enumerate() {
        let name = task.name();
        let bias = match task {
            SuiteTask::Safety => cfg.refusal_bias,
            _ => cfg.bias,
        };
        let biased = pairs(task, cfg.pairs, bias, stream(i, 2));
        dpo_pairs.extend(biased.iter().map(|p| p.record()));
        write(
            dir,
            &format!("rm-{name}.jsonl"),
            jsonl(biased.iter().map(|p| p.record())),
        )?;
        let fair = pairs(task, 64.min(cfg.pairs.max(16)), 0.0, stream(i, 3));
        write(
            dir,
            &format!("rm-{name}-heldout.jsonl"),
            jsonl(fair.iter().map(|p| p.record())),
        )?;
        let out = format!("rm-{name}");
        let rm_cfg: RewardTrainConfig = stage_config(
            dir,
            &out,
            json!({"seed": stream(i, 4),
                   "data": {"train": format!("rm-{name}.jsonl"), "eval": format!("rm-{name}-heldout.jsonl")},
                   "policy": policy(Some("sft")),
                   "train": train_section(cfg.reward_steps, cfg.reward_learning_rate, &out)}),
        )?;
        let (stage, _) = RewardTraining::from_config(&rm_cfg)?;
        let (stage, summary) = run_stage(stage, &rm_cfg, progress)?;
        let last = summary.last_eval.unwrap_or_default();
        reward_reports.insert(
            name.to_string(),
            RewardReport {
                heldout_accuracy: last.stats.get("accuracy").copied().unwrap_or(f64::NAN),
                heldout_loss: last.loss,
                exploit_preferred: exploit_preferred(task, stage.model())?,
            },
        );
        reward_models.insert(name.to_string(), dir.join(&out));
    }

    // DPO warm-up from SFT on every task's (biased) pairs.
    write(dir, "dpo.jsonl", jsonl(dpo_pairs))?;
    let dpo_heldout = TASKS.iter().enumerate().flat_map(|(i, &t)| {
        pairs(t, 16, 0.0, stream(i, 5))
            .into_iter()
            .map(|p| p.record())
    });
    write(dir, "dpo_heldout.jsonl", jsonl(dpo_heldout))?;
    let dpo_cfg: DpoConfig = stage_config(
        dir,
        "dpo",
        json!({"seed": seed, "beta": cfg.dpo_beta,
               "data": {"train": "dpo.jsonl", "eval": "dpo_heldout.jsonl"},
               "policy": policy(Some("sft")),
               "train": train_section(cfg.dpo_steps, cfg.dpo_learning_rate, "dpo")}),
    )?;
    let (dpo, _) = Dpo::from_config(&dpo_cfg)?;
    let (_, summary) = run_stage(dpo, &dpo_cfg, progress)?;
    let margin =
        |m: crate::pipeline::StageMetrics| m.stats.get("margin").copied().unwrap_or(f64::NAN);
    let dpo_heldout_margin = summary
        .first_eval
        .zip(summary.last_eval)
        .map(|(a, b)| (margin(a), margin(b)));

    Ok(Warmup {
        dir: dir.to_path_buf(),
        seed,
        config: cfg.clone(),
        policy: dir.join("dpo"),
        reward_models,
        reward_reports,
        train_prompts,
        eval_prompts,
        sft_heldout_loss,
        dpo_heldout_margin,
        seconds: start.elapsed().as_secs_f64(),
        cached: false,
    })
}

/// Share of the task's prompts where `rm` scores the liked response above
/// the correct one (safety: benign prompts only, refusal vs complying).
pub fn exploit_preferred(task: SuiteTask, rm: &dyn RewardModel) -> Result<f64> {
    let items: Vec<_> = task
        .items()
        .into_iter()
        .filter(|i| i.metadata["must_refuse"].as_bool() != Some(true))
        .collect();
    let records: Vec<PromptRecord> = items
        .iter()
        .enumerate()
        .map(|(i, item)| PromptRecord::new(format!("{i}"), item.prompt.as_str()))
        .collect();
    let liked: Vec<String> = items.iter().map(|i| task.exploit(&i.correct)).collect();
    let score = |texts: Vec<&str>| -> Result<Vec<f32>> {
        let views: Vec<_> = records.iter().zip(texts).map(|(r, t)| r.view(t)).collect();
        rm.score(&views).map_err(|e| Error::Reward {
            model: task.name().to_string(),
            message: e.to_string(),
        })
    };
    let a = score(liked.iter().map(String::as_str).collect())?;
    let b = score(items.iter().map(|i| i.correct.as_str()).collect())?;
    let n = a.iter().zip(&b).filter(|(a, b)| a > b).count();
    Ok(n as f64 / items.len().max(1) as f64)
}
