//! Ablations on a built-in multi-task suite: what a single hackable reward
//! model does to a policy, and what judges and per-task settings prevent
//! (cgpo-spec sections 1 and 5). `examples/ablation.rs` drives it;
//! `docs/ablations.md` has the results.
//!
//! [`suite`] generates four tasks with judges and biased preference data;
//! [`warmup`] trains SFT, one Bradley-Terry reward model per task and the
//! DPO warm-up (cached by seed and config hash); [`runs`] builds the run
//! configs of the ablation; [`eval`] evaluates a policy the same way for
//! every run; [`run_ablation`] trains every run from the same warm-up and
//! returns a [`Summary`], written to `summary.json` with a metrics JSONL per
//! run.
//!
//! ```no_run
//! use cgpo::ablation::{run_ablation, AblationOptions};
//! let summary = run_ablation(&AblationOptions::quick("runs/ablation-quick"))?;
//! print!("{}", summary.table());
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod eval;
pub mod runs;
pub mod suite;
pub mod warmup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::judges::JudgeRegistry;
use crate::reward::RewardRegistry;
use crate::train::Trainer;
use eval::{train_evaluated, EvalPoint, Evaluator, TrainLoop};
use runs::{run_config, RunName, RunSettings};
use warmup::{Warmup, WarmupConfig};

/// What to run and where.
#[derive(Clone, Debug)]
pub struct AblationOptions {
    pub runs: Vec<RunName>,
    pub seeds: Vec<u64>,
    pub warmup: WarmupConfig,
    pub settings: RunSettings,
    /// Evaluate every this many steps (and before the first, after the last).
    pub eval_every: u64,
    pub eval_prompts_per_task: usize,
    pub eval_samples_per_prompt: usize,
    pub out: PathBuf,
    /// Progress bars on stderr.
    pub progress: bool,
}

impl AblationOptions {
    /// The default ablation: every run, seed 0.
    pub fn new(out: impl Into<PathBuf>) -> Self {
        Self {
            runs: RunName::ALL.to_vec(),
            seeds: vec![0],
            warmup: WarmupConfig::default(),
            settings: RunSettings::default(),
            eval_every: 10,
            eval_prompts_per_task: 16,
            eval_samples_per_prompt: 4,
            out: out.into(),
            progress: false,
        }
    }

    /// A few steps of everything on a smaller model, for CI.
    pub fn quick(out: impl Into<PathBuf>) -> Self {
        Self {
            warmup: WarmupConfig::quick(),
            settings: RunSettings {
                steps: 3,
                learning_rate: 1e-2,
                generations_per_prompt: 2,
                batch_size: 2,
                ..RunSettings::default()
            },
            eval_every: 1,
            eval_prompts_per_task: 4,
            eval_samples_per_prompt: 2,
            ..Self::new(out)
        }
    }
}

/// A task's evaluation before and after a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartEnd {
    pub start: EvalPoint,
    pub end: EvalPoint,
}

impl StartEnd {
    /// Each task of `start` with its point in `end` (default when absent).
    pub fn per_task(
        start: &BTreeMap<String, EvalPoint>,
        end: &BTreeMap<String, EvalPoint>,
    ) -> BTreeMap<String, StartEnd> {
        start
            .iter()
            .map(|(task, s)| {
                let e = end.get(task).copied().unwrap_or_default();
                (task.clone(), StartEnd { start: *s, end: e })
            })
            .collect()
    }
}

/// One run of one seed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub seed: u64,
    pub tasks: BTreeMap<String, StartEnd>,
    /// Every evaluation: the step and each task's point.
    #[serde(skip)]
    pub curve: Vec<(u64, BTreeMap<String, EvalPoint>)>,
    #[serde(skip)]
    pub seconds: f64,
}

/// `summary.json`: `{"runs": [{"name", "seed", "tasks": {TASK: {"start",
/// "end"}}}]}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub runs: Vec<RunResult>,
    /// Per seed, the warm-up's measurements (not in `summary.json`).
    #[serde(skip)]
    pub warmups: Vec<Warmup>,
}

impl Summary {
    /// One table per task: each run's pass rate, raw reward and KL at the
    /// start and the end.
    pub fn table(&self) -> String {
        let mut tasks: Vec<&String> = Vec::new();
        for r in &self.runs {
            for t in r.tasks.keys() {
                if !tasks.contains(&t) {
                    tasks.push(t);
                }
            }
        }
        let mut out = String::new();
        for task in tasks {
            out.push_str(&format!(
                "\n{task}\n{:<18} {:>4}  {:>15}  {:>17}  {:>15}\n",
                "run", "seed", "pass start->end", "reward start->end", "KL start->end"
            ));
            for r in &self.runs {
                if let Some(se) = r.tasks.get(task) {
                    out.push_str(&format!(
                        "{:<18} {:>4}  {:>6.3} -> {:>5.3}  {:>7.3} -> {:>6.3}  {:>6.3} -> {:>5.3}\n",
                        r.name,
                        r.seed,
                        se.start.eval_pass_rate,
                        se.end.eval_pass_rate,
                        se.start.eval_reward,
                        se.end.eval_reward,
                        se.start.kl,
                        se.end.kl
                    ));
                }
            }
        }
        out
    }

    /// Writes `summary.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("summary.json");
        crate::data::write_json_atomic(&path, self)?;
        Ok(path)
    }
}

/// The directory of one run's metrics and checkpoint.
pub fn run_dir(out: &Path, run: RunName, seed: u64) -> PathBuf {
    out.join("runs")
        .join(format!("{}-seed{seed}", run.as_str()))
}

/// Trains every run of `opts` for every seed from that seed's warm-up and
/// writes `summary.json` and each run's `metrics.jsonl` under `opts.out`.
pub fn run_ablation(opts: &AblationOptions) -> Result<Summary> {
    if opts.runs.is_empty() || opts.seeds.is_empty() {
        return Err(Error::config("--runs/--seeds", "nothing to run"));
    }
    std::fs::create_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    let mut summary = Summary::default();
    for &seed in &opts.seeds {
        let warmup = Warmup::get_or_train(&opts.out, &opts.warmup, seed, opts.progress)?;
        // The evaluator's reward models and judges: CGPO's full config.
        let full = run_config(RunName::CgpoCrpg, &warmup, &opts.settings, seed, &opts.out)?;
        let evaluator = Evaluator::new(
            &full,
            &JudgeRegistry::with_builtins(),
            &RewardRegistry::with_builtins(),
            &warmup.eval_prompts,
            opts.eval_prompts_per_task,
            opts.eval_samples_per_prompt,
            seed ^ 0x5EED,
        )?;
        let start = evaluator.evaluate(evaluator.reference())?;
        for &run in &opts.runs {
            summary
                .runs
                .push(train_run(opts, run, seed, &warmup, &evaluator, &start)?);
            summary.write(&opts.out)?;
        }
        summary.warmups.push(warmup);
    }
    Ok(summary)
}

fn train_run(
    opts: &AblationOptions,
    run: RunName,
    seed: u64,
    warmup: &Warmup,
    evaluator: &Evaluator,
    start: &BTreeMap<String, EvalPoint>,
) -> Result<RunResult> {
    let t0 = Instant::now();
    let dir = run_dir(&opts.out, run, seed);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let config = run_config(run, warmup, &opts.settings, seed, &dir)?;
    let steps = config.train.steps;
    let mut trainer = Trainer::new(
        config,
        &JudgeRegistry::with_builtins(),
        &RewardRegistry::with_builtins(),
    )?;
    let curve = train_evaluated(
        &mut trainer,
        evaluator,
        start,
        &TrainLoop {
            steps,
            eval_every: opts.eval_every,
            metrics: dir.join("metrics.jsonl"),
            label: format!("{} seed {seed}", run.as_str()),
            progress: opts.progress,
        },
    )?
    .points;
    let tasks = StartEnd::per_task(start, &curve.last().expect("start is in the curve").1);
    Ok(RunResult {
        name: run.as_str().to_string(),
        seed,
        tasks,
        curve,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_serializes_to_the_documented_schema_and_tabulates() {
        let point = |p: f64| EvalPoint {
            eval_pass_rate: p,
            eval_reward: 2.0 * p,
            kl: p / 10.0,
        };
        let run = RunResult {
            name: "cgpo-crpg".into(),
            seed: 2,
            tasks: [(
                "math".to_string(),
                StartEnd {
                    start: point(0.25),
                    end: point(0.5),
                },
            )]
            .into(),
            curve: vec![(0, BTreeMap::new())],
            seconds: 3.0,
        };
        let summary = Summary {
            runs: vec![run],
            warmups: Vec::new(),
        };
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(
            json,
            json!({"runs": [{"name": "cgpo-crpg", "seed": 2, "tasks": {"math": {
                "start": {"eval_pass_rate": 0.25, "eval_reward": 0.5, "kl": 0.025},
                "end": {"eval_pass_rate": 0.5, "eval_reward": 1.0, "kl": 0.05}}}}]})
        );
        let table = summary.table();
        assert!(table.contains("\nmath\n"), "{table}");
        assert!(
            table.contains(
                "cgpo-crpg             2   0.250 -> 0.500    0.500 ->  1.000   0.025 -> 0.050"
            ),
            "{table}"
        );
    }
}
