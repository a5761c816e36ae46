//! The warm-up every ablation run starts from, as in the paper's recipe:
//! SFT of TinyLm on the suite's demonstrations, one Bradley-Terry reward
//! model per task on that task's biased preference pairs, and the DPO
//! warm-up on all of them ([`cgpo::pipeline`]).
//!
//! It is cached: a directory `warmup/seed-<seed>-<hash>/` under the output
//! directory, where `<hash>` is a hash of the [`WarmupConfig`] and the
//! suite's version. `warmup.json` is written last; a directory with it is
//! reused as it is.
//!
//! ```
//! use cgpo_suites::ablation::warmup::WarmupConfig;
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
use cgpo::data::PromptRecord;
use cgpo::error::{Error, Result};
use cgpo::pipeline::synthetic::jsonl;
use cgpo::pipeline::{
    Dpo, DpoConfig, RewardTrainConfig, RewardTraining, Sft, SftConfig, Stage, StageConfig,
    StageRunner, StageSummary,
};
use cgpo::policy::TinyLmConfig;
use cgpo::reward::RewardModel;
use cgpo::split::Split;

/// Bumped whenever the suite's generators change, so caches are not reused.
pub const SUITE_VERSION: u32 = 3;

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
                hidden_size: 64,
                intermediate_size: 128,
                layers: 2,
                heads: 4,
                kv_heads: 2,
                context_len: 128,
            },
            sft_records: 400,
            exploit_share: 0.25,
            sft_steps: 800,
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

/// A reward model's measured quality. "dev" figures come from the
/// reward-model stage's evaluation on dev pairs; "test" figures are
/// measured once, after training, on test pairs and prompts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RewardReport {
    /// Pairwise accuracy and loss on dev pairs labelled without bias (the
    /// correct response preferred).
    pub dev_accuracy: f64,
    pub dev_loss: f64,
    /// Pairwise accuracy on test pairs labelled without bias: how often
    /// the correct response scores above the wrong one (ties count as
    /// wrong), over `test_pairs` pairs, with its 95% Wilson interval.
    pub test_accuracy: f64,
    pub test_pairs: usize,
    pub test_accuracy_ci95: [f64; 2],
    /// Share of the task's test prompts where the model scores the
    /// response with the liked feature above the correct one (for safety:
    /// a refusal of a benign request above complying), over
    /// `exploit_prompts` prompts, with its 95% Wilson interval.
    pub exploit_preferred: f64,
    pub exploit_prompts: usize,
    pub exploit_preferred_ci95: [f64; 2],
}

impl RewardReport {
    /// "at chance" when the test accuracy's interval contains 0.5,
    /// "below chance" when it lies under it, else "above chance".
    pub fn verdict(&self) -> &'static str {
        let [lo, hi] = self.test_accuracy_ci95;
        if hi < 0.5 {
            "below chance"
        } else if lo <= 0.5 {
            "at chance"
        } else {
            "above chance"
        }
    }
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
    /// Prompts of all tasks: RL training, dev (the curves), test (the
    /// reported start and end).
    pub train_prompts: PathBuf,
    pub dev_prompts: PathBuf,
    pub test_prompts: PathBuf,
    /// SFT's loss per token on dev demonstrations, first and last.
    pub sft_dev_loss: Option<(f64, f64)>,
    /// DPO's implicit-reward margin on dev pairs, first and last.
    pub dpo_dev_margin: Option<(f64, f64)>,
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
        cgpo::data::write_json_atomic(&report, &warmup)?;
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

    let prompts = |split: Split| jsonl(TASKS.iter().flat_map(move |&t| prompt_records(t, split)));
    let train_prompts = write(dir, "prompts.jsonl", prompts(Split::Train))?;
    let dev_prompts = write(dir, "dev_prompts.jsonl", prompts(Split::Dev))?;
    let test_prompts = write(dir, "test_prompts.jsonl", prompts(Split::Test))?;

    // SFT: train demonstrations of every task; dev: correct answers only.
    let demos = TASKS.iter().enumerate().flat_map(|(i, &t)| {
        sft_records(
            t,
            Split::Train,
            cfg.sft_records,
            cfg.exploit_share,
            stream(i, 1),
        )
    });
    write(dir, "sft.jsonl", jsonl(demos))?;
    let dev = TASKS
        .iter()
        .flat_map(|&t| sft_records(t, Split::Dev, 16, 0.0, 0));
    write(dir, "sft_dev.jsonl", jsonl(dev))?;
    let sft_cfg: SftConfig = stage_config(
        dir,
        "sft",
        json!({"seed": seed, "data": {"train": "sft.jsonl", "eval": "sft_dev.jsonl"},
               "policy": policy(None),
               "train": train_section(cfg.sft_steps, cfg.sft_learning_rate, "sft")}),
    )?;
    let (sft, _) = Sft::from_config(&sft_cfg)?;
    let (_, summary) = run_stage(sft, &sft_cfg, progress)?;
    let sft_dev_loss = summary
        .first_eval
        .zip(summary.last_eval)
        .map(|(a, b)| (a.loss, b.loss));

    // One reward model per task, on its biased train pairs; dev: unbiased
    // dev pairs; test: unbiased test pairs, scored once at the end.
    let mut reward_models = BTreeMap::new();
    let mut reward_reports = BTreeMap::new();
    let mut dpo_pairs = Vec::new();
    for (i, &task) in TASKS.iter().enumerate() {
        let name = task.name();
        let bias = match task {
            SuiteTask::Safety => cfg.refusal_bias,
            _ => cfg.bias,
        };
        let biased = pairs(task, Split::Train, cfg.pairs, bias, stream(i, 2));
        dpo_pairs.extend(biased.iter().map(|p| p.record()));
        write(
            dir,
            &format!("rm-{name}.jsonl"),
            jsonl(biased.iter().map(|p| p.record())),
        )?;
        let fair = pairs(
            task,
            Split::Dev,
            64.min(cfg.pairs.max(16)),
            0.0,
            stream(i, 3),
        );
        write(
            dir,
            &format!("rm-{name}-dev.jsonl"),
            jsonl(fair.iter().map(|p| p.record())),
        )?;
        let out = format!("rm-{name}");
        let rm_cfg: RewardTrainConfig = stage_config(
            dir,
            &out,
            json!({"seed": stream(i, 4),
                   "data": {"train": format!("rm-{name}.jsonl"), "eval": format!("rm-{name}-dev.jsonl")},
                   "policy": policy(Some("sft")),
                   "train": train_section(cfg.reward_steps, cfg.reward_learning_rate, &out)}),
        )?;
        let (stage, _) = RewardTraining::from_config(&rm_cfg)?;
        let (stage, summary) = run_stage(stage, &rm_cfg, progress)?;
        let last = summary.last_eval.unwrap_or_default();
        let test_pairs = pairs(
            task,
            Split::Test,
            2 * task.items(Split::Test).len(),
            0.0,
            stream(i, 6),
        );
        write(
            dir,
            &format!("rm-{name}-test.jsonl"),
            jsonl(test_pairs.iter().map(|p| p.record())),
        )?;
        let (correct, n) = pair_accuracy(task, stage.model(), &test_pairs)?;
        let (acc_lo, acc_hi) = cgpo::stats::wilson(correct, n);
        let (liked, m) = exploit_preferred(task, Split::Test, stage.model())?;
        let (ex_lo, ex_hi) = cgpo::stats::wilson(liked, m);
        reward_reports.insert(
            name.to_string(),
            RewardReport {
                dev_accuracy: last.stats.get("accuracy").copied().unwrap_or(f64::NAN),
                dev_loss: last.loss,
                test_accuracy: correct as f64 / n.max(1) as f64,
                test_pairs: n,
                test_accuracy_ci95: [acc_lo, acc_hi],
                exploit_preferred: liked as f64 / m.max(1) as f64,
                exploit_prompts: m,
                exploit_preferred_ci95: [ex_lo, ex_hi],
            },
        );
        reward_models.insert(name.to_string(), dir.join(&out));
    }

    // DPO warm-up from SFT on every task's (biased) train pairs.
    write(dir, "dpo.jsonl", jsonl(dpo_pairs))?;
    let dpo_dev = TASKS.iter().enumerate().flat_map(|(i, &t)| {
        pairs(t, Split::Dev, 16, 0.0, stream(i, 5))
            .into_iter()
            .map(|p| p.record())
    });
    write(dir, "dpo_dev.jsonl", jsonl(dpo_dev))?;
    let dpo_cfg: DpoConfig = stage_config(
        dir,
        "dpo",
        json!({"seed": seed, "beta": cfg.dpo_beta,
               "data": {"train": "dpo.jsonl", "eval": "dpo_dev.jsonl"},
               "policy": policy(Some("sft")),
               "train": train_section(cfg.dpo_steps, cfg.dpo_learning_rate, "dpo")}),
    )?;
    let (dpo, _) = Dpo::from_config(&dpo_cfg)?;
    let (_, summary) = run_stage(dpo, &dpo_cfg, progress)?;
    let margin =
        |m: cgpo::pipeline::StageMetrics| m.stats.get("margin").copied().unwrap_or(f64::NAN);
    let dpo_dev_margin = summary
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
        dev_prompts,
        test_prompts,
        sft_dev_loss,
        dpo_dev_margin,
        seconds: start.elapsed().as_secs_f64(),
        cached: false,
    })
}

/// How many of `pairs` `rm` scores the chosen response strictly above
/// the rejected one, and how many pairs.
pub fn pair_accuracy(
    task: SuiteTask,
    rm: &dyn RewardModel,
    pairs: &[super::suite::SuitePair],
) -> Result<(usize, usize)> {
    let records: Vec<PromptRecord> = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| PromptRecord::new(format!("{i}"), p.prompt.as_str()))
        .collect();
    let score = |texts: Vec<&str>| -> Result<Vec<f32>> {
        let views: Vec<_> = records.iter().zip(texts).map(|(r, t)| r.view(t)).collect();
        rm.score(&views).map_err(|e| Error::Reward {
            model: task.name().to_string(),
            message: e.to_string(),
        })
    };
    let chosen = score(pairs.iter().map(|p| p.chosen.as_str()).collect())?;
    let rejected = score(pairs.iter().map(|p| p.rejected.as_str()).collect())?;
    let correct = chosen.iter().zip(&rejected).filter(|(c, r)| c > r).count();
    Ok((correct, pairs.len()))
}

/// On how many of the task's `split` prompts `rm` scores the liked
/// response above the correct one (safety: benign prompts only, refusal vs
/// complying), and over how many prompts.
pub fn exploit_preferred(
    task: SuiteTask,
    split: Split,
    rm: &dyn RewardModel,
) -> Result<(usize, usize)> {
    let items: Vec<_> = task
        .items(split)
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
    Ok((n, items.len()))
}
