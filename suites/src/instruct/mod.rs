//! CGPO on a real instruction-tuned chat model (SmolLM2-135M-Instruct from
//! `scripts/fetch-smollm2.sh`, or any Llama-family GGUF with a chat
//! template): three tasks of generated prompts ([`prompts`]), each with its
//! own judges, one LLM-judge reward model, evaluation on the dev or test split before and
//! after, and a [`InstructSummary`] with pass rates, KL, seconds per step
//! and peak memory. `examples/smollm2.rs` drives it; `docs/smollm2.md` has
//! the results.
//!
//! | Task | Judges | Optimizer |
//! |---|---|---|
//! | `instruction` | `ifeval` (the prompt's IFEval constraint) | CRRAFT |
//! | `math` | `math` ("The final answer is X.", X = the answer) | CRRAFT |
//! | `helpful` | `refusal` (must not refuse) AND `local_llm` with the `false_refusal` template | CRPG |
//!
//! (Optimizers and weights are options: [`InstructOptions::optimizers`].)
//!
//! **Reward.** We know of no reward model for this model that ships as a
//! package on the registries this project can reach, so the reward is the
//! model's own judgement: [`cgpo::reward::LlmJudgeReward`] asks a frozen
//! copy of the *initial* policy the `helpfulness` question and scores the
//! log-odds of "Yes". The same frozen model answers the `false_refusal` judge's
//! question, in-process ([`cgpo::local_judge::LocalLlmBackend`]). Rewards
//! are calibrated against greedy reference answers (docs/algorithm.md §2).
//!
//! **Fine-tuning.** Full fine-tuning: every weight of the policy is trained
//! (AdamW); the reference and the judge stay frozen.
//!
//! ```no_run
//! use cgpo_suites::instruct::{run, InstructOptions};
//! let opts = InstructOptions::new("SmolLM2-135M-Instruct.Q4_1.gguf", "runs/smollm2");
//! let summary = run(&opts)?;
//! print!("{}", summary.table());
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod prompts;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use candle_core::Device;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::ablation::eval::{suite_evaluator, train_evaluated, TrainLoop};
use crate::ablation::StartEnd;
use cgpo::config::{Registries, RunConfig};
use cgpo::data::{write_json_atomic, write_jsonl_atomic};
use cgpo::error::{Error, Result};
use cgpo::judges::llm;
use cgpo::local_judge::LocalLlmBackend;
use cgpo::policy::Llama;
use cgpo::reward::LlmJudgeReward;
use cgpo::train::Trainer;
use cgpo::train::{EvalPoint, EvalSample, Evaluator};
use prompts::{records, Split, TASKS};

/// The registered name of the judge and reward model on the frozen model.
pub const LOCAL_LLM: &str = "local_llm";

/// What to run and where.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructOptions {
    /// The GGUF file of the policy (and of the judge).
    pub model: PathBuf,
    /// Prompts, metrics, `summary.json` and the trained policy go here.
    pub out: PathBuf,
    pub seed: u64,
    pub steps: u64,
    /// Evaluate on the `eval_split` prompts every this many steps (and at the
    /// end).
    pub eval_every: u64,
    pub learning_rate: f64,
    /// K, responses per prompt.
    pub generations_per_prompt: usize,
    /// Prompts per step of each task, in [`TASKS`] order.
    pub batch_sizes: [usize; 3],
    /// rho, each task's weight in the gradient merge, in [`TASKS`] order.
    pub weights: [f64; 3],
    /// Each task's constrained optimizer (`crpg`, `crraft` or `codpo`), in
    /// [`TASKS`] order.
    pub optimizers: [String; 3],
    pub max_new_tokens: usize,
    /// Sampling temperature of training and evaluation responses.
    pub temperature: f32,
    /// Training prompts per task.
    pub train_prompts: usize,
    /// The split evaluated before and after training: `dev` while choosing
    /// settings, `test` once per configuration (`docs/evaluation.md`).
    pub eval_split: Split,
    /// Evaluation prompts per task (in [`TASKS`] order) and responses to
    /// each; [`InstructOptions::eval_prompts_for`] gives each split's
    /// default.
    pub eval_prompts: [usize; 3],
    pub eval_samples_per_prompt: usize,
    /// KL_max of CRPG (nats per response).
    pub kl_max: f64,
    /// Per-token KL penalty coefficient (k3).
    pub kl_coef: f64,
    /// Questions per forward pass of the judge model.
    pub judge_batch: usize,
    /// Save the trained policy as `policy.safetensors`.
    pub save_policy: bool,
    /// Progress bar on stderr.
    pub progress: bool,
}

impl InstructOptions {
    /// The default run (`docs/smollm2.md`).
    pub fn new(model: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            model: model.into(),
            out: out.into(),
            seed: 0,
            steps: 16,
            eval_every: 16,
            learning_rate: 2e-5,
            generations_per_prompt: 4,
            batch_sizes: [4, 2, 1],
            weights: [1.0, 1.0, 0.1],
            optimizers: ["crraft", "crraft", "crpg"].map(String::from),
            max_new_tokens: 64,
            temperature: 0.7,
            train_prompts: 128,
            eval_split: Split::Test,
            eval_prompts: Self::eval_prompts_for(Split::Test),
            eval_samples_per_prompt: 1,
            kl_max: 40.0,
            kl_coef: 0.01,
            judge_batch: 8,
            save_policy: true,
            progress: true,
        }
    }

    /// The default number of evaluation prompts per task of `split`: every
    /// helpful request of the split, 200 instruction and 48 math prompts on
    /// test, 48 and 24 on dev.
    pub fn eval_prompts_for(split: Split) -> [usize; 3] {
        match split {
            Split::Test => [200, 48, 16],
            Split::Dev => [48, 24, 8],
            Split::Train => [48, 24, 8],
        }
    }

    /// Two small steps: the integration test's setting.
    pub fn quick(model: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        Self {
            steps: 2,
            eval_every: 2,
            batch_sizes: [1, 1, 1],
            generations_per_prompt: 2,
            max_new_tokens: 16,
            train_prompts: 4,
            eval_prompts: [1, 1, 1],
            eval_samples_per_prompt: 1,
            save_policy: false,
            progress: false,
            ..Self::new(model, out)
        }
    }
}

/// The run config of `opts`: training prompts in `train_prompts`, output
/// under `out`.
pub fn run_config(opts: &InstructOptions, train_prompts: &Path, out: &Path) -> Result<RunConfig> {
    let judges: [Value; 3] = [
        json!([{"name": "ifeval"}]),
        json!([{"name": "math"}]),
        json!([{"name": "refusal", "params": {"mode": "must_not_refuse"}},
               {"name": LOCAL_LLM, "label": "false_refusal", "params": {"template": "false_refusal"}}]),
    ];
    let optimizers = opts
        .optimizers
        .iter()
        .map(|name| match name.as_str() {
            "crpg" => Ok(json!({"name": "crpg", "kl_max": opts.kl_max, "advantage": "per_prompt"})),
            "crraft" => Ok(json!({"name": "crraft", "kl_max": opts.kl_max})),
            "codpo" => Ok(json!({"name": "codpo"})),
            other => Err(Error::config(
                "optimizers",
                format!("unknown optimizer `{other}` (crpg, crraft or codpo)"),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let tasks: Vec<Value> = TASKS
        .iter()
        .zip(judges)
        .zip(optimizers)
        .zip(opts.batch_sizes)
        .zip(opts.weights)
        .map(|((((name, judges), optimizer), batch), weight)| {
            json!({
                "name": name,
                "weight": weight,
                "reward": {"model": "judge"},
                "judges": judges,
                "optimizer": optimizer,
                "generations_per_prompt": opts.generations_per_prompt,
                "batch_size": batch,
                "kl": {"coef": opts.kl_coef, "estimator": "k3"},
            })
        })
        .collect();
    let config = json!({
        "seed": opts.seed,
        "data": {"train": train_prompts},
        "reward_models": {"judge": {"name": LOCAL_LLM, "params": {"template": "helpfulness"}}},
        "tasks": tasks,
        "policy": {"kind": "gguf", "path": opts.model},
        "train": {"steps": opts.steps, "learning_rate": opts.learning_rate,
                  "sampling": {"max_new_tokens": opts.max_new_tokens, "temperature": opts.temperature},
                  "output_dir": out},
    });
    RunConfig::from_json(&config.to_string())
}

/// The trainer and the evaluator of a run, sharing one frozen judge model.
pub struct Built {
    pub config: RunConfig,
    pub trainer: Trainer,
    pub evaluator: Arc<Evaluator>,
}

/// Writes the prompts (`train_prompts.jsonl` and `test_prompts.jsonl` or `dev_prompts.jsonl` in
/// `opts.out`), loads the judge model and builds the trainer and the
/// evaluator.
pub fn build(opts: &InstructOptions) -> Result<Built> {
    if !opts.model.is_file() {
        return Err(Error::model(
            opts.model.display(),
            "no such file; scripts/fetch-smollm2.sh fetches SmolLM2-135M-Instruct and prints its path",
        ));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let write = |name: &str, split: Split, n: [usize; 3]| -> Result<PathBuf> {
        let path = opts.out.join(name);
        let lines = TASKS
            .iter()
            .zip(n)
            .flat_map(|(t, n)| records(t, split, n, opts.seed));
        write_jsonl_atomic(&path, lines)?;
        Ok(path)
    };
    if opts.eval_split == Split::Train {
        return Err(Error::config(
            "eval_split",
            "evaluate on `dev` or `test`, not on the training prompts",
        ));
    }
    let train = write("train_prompts.jsonl", Split::Train, [opts.train_prompts; 3])?;
    let eval_name = format!("{}_prompts.jsonl", opts.eval_split.as_str());
    let eval = write(&eval_name, opts.eval_split, opts.eval_prompts)?;

    // Bad options (an unknown optimizer, say) fail here, before the model loads.
    let config = run_config(opts, &train, &opts.out.join("train"))?;

    let judge = Arc::new(Llama::from_gguf(&opts.model, &Device::Cpu, false)?);
    let backend = Arc::new(
        LocalLlmBackend::new(judge.clone(), Arc::new(judge.tokenizer.clone()))
            .with_batch_size(opts.judge_batch),
    );
    let mut registries = Registries::default();
    registries
        .judges
        .register(LOCAL_LLM, llm::factory(backend.clone()));
    registries
        .rewards
        .register(LOCAL_LLM, LlmJudgeReward::factory(backend));

    let trainer = config.trainer(&registries)?;
    let evaluator = Arc::new(
        suite_evaluator(
            &config,
            &registries,
            &eval,
            opts.eval_prompts.iter().copied().max().unwrap_or(0),
            opts.eval_samples_per_prompt,
            opts.seed ^ 0x5EED,
        )?
        .with_split(opts.eval_split.as_str()),
    );
    Ok(Built {
        config,
        trainer,
        evaluator,
    })
}

/// An evaluation prompt's response before and after training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BeforeAfter {
    pub id: String,
    pub before: EvalSample,
    pub after: EvalSample,
}

/// `summary.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstructSummary {
    pub options: InstructOptions,
    /// `full`: every weight trained.
    pub fine_tuning: String,
    pub trainable_parameters: usize,
    pub steps: u64,
    /// Mean wall-clock seconds of a training step (all tasks).
    pub seconds_per_step: f64,
    pub train_seconds: f64,
    pub eval_seconds: f64,
    pub total_seconds: f64,
    /// The process's peak resident memory (VmHWM), MiB.
    pub peak_rss_mib: Option<f64>,
    /// Per task: pass rate (with n and its 95% Wilson interval), raw
    /// reward and KL before and after, on `options.eval_split`.
    pub tasks: BTreeMap<String, StartEnd>,
    /// Every evaluation: the step and each task's point.
    pub curve: Vec<(u64, BTreeMap<String, EvalPoint>)>,
    /// The first samples of each task before and after.
    pub examples: BTreeMap<String, Vec<BeforeAfter>>,
}

impl InstructSummary {
    /// Per task: n, pass rate with its 95% interval, reward and KL, start
    /// -> end, and the costs.
    pub fn table(&self) -> String {
        let mut out = format!(
            "split {} (seed {})\n{:<12} {:>4}  {:<24}  {:<24}  {:>18}  {:>14}\n",
            self.options.eval_split.as_str(),
            self.options.seed,
            "task",
            "n",
            "pass start [95% CI]",
            "pass end [95% CI]",
            "reward start->end",
            "KL start->end"
        );
        for (task, se) in &self.tasks {
            out.push_str(&format!(
                "{task:<12} {:>4}  {:<24}  {:<24}  {:>7.3} -> {:>7.3}  {:>5.2} -> {:>5.2}\n",
                se.end.n,
                crate::ablation::format_rate(&se.start),
                crate::ablation::format_rate(&se.end),
                se.start.eval_reward,
                se.end.eval_reward,
                se.start.kl,
                se.end.kl
            ));
        }
        out.push_str(&format!(
            "{} steps, {:.1} s/step, train {:.0} s, eval {:.0} s, total {:.0} s, peak RSS {}\n",
            self.steps,
            self.seconds_per_step,
            self.train_seconds,
            self.eval_seconds,
            self.total_seconds,
            self.peak_rss_mib
                .map_or("unknown".into(), |m| format!("{m:.0} MiB"))
        ));
        out
    }

    /// Writes `summary.json` into `dir` (through a temporary file).
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("summary.json");
        write_json_atomic(&path, self)?;
        Ok(path)
    }
}

/// The process's peak resident set size in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Up to `n` samples per task before and after, paired by position.
fn pair_examples(
    before: &BTreeMap<String, Vec<EvalSample>>,
    after: &BTreeMap<String, Vec<EvalSample>>,
    n: usize,
) -> BTreeMap<String, Vec<BeforeAfter>> {
    before
        .iter()
        .map(|(task, b)| {
            let a = after.get(task).map(Vec::as_slice).unwrap_or_default();
            let pairs = b
                .iter()
                .zip(a)
                .take(n)
                .map(|(b, a)| BeforeAfter {
                    id: b.id.clone(),
                    before: b.clone(),
                    after: a.clone(),
                })
                .collect();
            (task.clone(), pairs)
        })
        .collect()
}

/// Builds, evaluates the initial policy, trains with evaluations on
/// schedule, and writes `metrics.jsonl`, `summary.json` and (with
/// `save_policy`) `policy.safetensors` under `opts.out`.
pub fn run(opts: &InstructOptions) -> Result<InstructSummary> {
    let t0 = Instant::now();
    let Built {
        mut trainer,
        evaluator,
        ..
    } = build(opts)?;
    if opts.progress {
        eprintln!(
            "evaluating the initial policy on {:?} {} prompts ({} responses each)...",
            opts.eval_prompts,
            opts.eval_split.as_str(),
            opts.eval_samples_per_prompt
        );
    }
    let t_eval = Instant::now();
    let start = evaluator.evaluate_with_samples(trainer.policy())?;
    let mut eval_seconds = t_eval.elapsed().as_secs_f64();
    if opts.progress {
        eprintln!(
            "evaluated in {eval_seconds:.0} s (peak RSS so far {}); training {} steps",
            peak_rss_mib().map_or("unknown".into(), |m| format!("{m:.0} MiB")),
            opts.steps
        );
    }
    let curve = train_evaluated(
        &mut trainer,
        evaluator.clone(),
        &start,
        &TrainLoop {
            steps: opts.steps,
            eval_every: opts.eval_every,
            // The trained weights are saved below (`save_policy`), without
            // the AdamW moments a checkpoint would add.
            dir: opts.out.clone(),
            checkpoint: false,
            label: "cgpo".into(),
            progress: opts.progress,
        },
    )?;
    let train_seconds: f64 = curve.step_seconds.iter().sum();
    eval_seconds += curve.eval_seconds;
    let tasks = StartEnd::per_task(
        &start.points,
        &curve.points.last().expect("start is in the curve").1,
    );
    if opts.save_policy {
        let path = opts.out.join("policy.safetensors");
        trainer.policy().save(&path)?;
    }
    let summary = InstructSummary {
        options: opts.clone(),
        fine_tuning: "full".into(),
        trainable_parameters: trainer
            .policy()
            .vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum(),
        steps: trainer.step_count(),
        seconds_per_step: train_seconds / curve.step_seconds.len().max(1) as f64,
        train_seconds,
        eval_seconds,
        total_seconds: t0.elapsed().as_secs_f64(),
        peak_rss_mib: peak_rss_mib(),
        tasks,
        examples: pair_examples(&start.samples, &curve.last_samples, 3),
        curve: curve.points,
    };
    summary.write(&opts.out)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_options_give_three_tasks_with_their_optimizers_and_weights() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InstructOptions::new(dir.path().join("m.gguf"), dir.path().join("out"));
        let config = run_config(&opts, &dir.path().join("p.jsonl"), dir.path()).unwrap();
        let tasks: Vec<_> = config.tasks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(tasks, TASKS);
        let weights: Vec<f64> = config.tasks.iter().map(|t| t.weight).collect();
        assert_eq!(weights, opts.weights.to_vec());
    }

    #[test]
    fn an_unknown_optimizer_is_reported_before_the_model_loads() {
        let dir = tempfile::tempdir().unwrap();
        // Not a GGUF file: loading it would fail with a model error.
        let model = dir.path().join("not-a-model.gguf");
        std::fs::write(&model, b"junk").unwrap();
        let mut opts = InstructOptions::new(model, dir.path().join("out"));
        opts.optimizers[1] = "ppo".into();
        match build(&opts) {
            Err(Error::Config { key, message }) => {
                assert_eq!(key, "optimizers");
                assert!(message.contains("`ppo`"), "{message}");
            }
            Err(other) => panic!("expected a config error, got {other}"),
            Ok(_) => panic!("expected a config error, got a built run"),
        }
    }
}
