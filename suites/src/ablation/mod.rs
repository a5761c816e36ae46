//! Ablations on a built-in multi-task suite: what a single hackable reward
//! model does to a policy, and what judges and per-task settings prevent
//! (docs/algorithm.md §1 and §5). `examples/ablation.rs` drives it;
//! `docs/ablations.md` has the results.
//!
//! [`suite`] generates four tasks with judges and biased preference data;
//! [`warmup`] trains SFT, one Bradley-Terry reward model per task and the
//! DPO warm-up (cached by seed and config hash); [`runs`] builds the run
//! configs of the ablation; [`eval`] evaluates a policy the same way for
//! every run; [`run_ablation`] trains every run from the same warm-up,
//! evaluates it on the dev split during training and on the test split
//! before the first and after the last step, and returns a [`Summary`],
//! written to `summary.json` with a metrics JSONL per run; [`claims`]
//! checks the documented claims against a summary.
//!
//! ```no_run
//! use cgpo_suites::ablation::{run_ablation, AblationOptions};
//! let summary = run_ablation(&AblationOptions::quick("runs/ablation-quick"))?;
//! print!("{}", summary.table());
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod claims;
pub mod eval;
pub mod runs;
pub mod suite;
pub mod warmup;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use cgpo::config::Registries;
use cgpo::error::{Error, Result};
use cgpo::split::Split;
use cgpo::stats::Spread;
use cgpo::train::{EvalPoint, Evaluation, Evaluator};
use eval::{suite_evaluator, train_evaluated, TrainLoop};
use runs::{run_config, RunName, RunSettings};
use warmup::{Warmup, WarmupConfig};

/// What to run and where.
#[derive(Clone, Debug)]
pub struct AblationOptions {
    pub runs: Vec<RunName>,
    pub seeds: Vec<u64>,
    pub warmup: WarmupConfig,
    pub settings: RunSettings,
    /// Evaluate on dev every this many steps (and before the first, after
    /// the last).
    pub eval_every: u64,
    /// At most this many dev and test prompts per task (spread over the
    /// split's).
    pub eval_prompts_per_task: usize,
    pub eval_samples_per_prompt: usize,
    pub out: PathBuf,
    /// Progress bars on stderr.
    pub progress: bool,
    /// The split the summary reports: `Test` (the default) scores the test
    /// prompts before the first and after the last step; `Dev` never
    /// touches them (for choosing settings, `docs/evaluation.md`).
    pub report_split: Split,
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
            eval_prompts_per_task: 64,
            eval_samples_per_prompt: 4,
            out: out.into(),
            progress: false,
            report_split: Split::Test,
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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub name: String,
    pub seed: u64,
    /// Test split: each task's evaluation before the first step and after
    /// the last.
    pub tasks: BTreeMap<String, StartEnd>,
    /// Dev split: the same, from the curve.
    #[serde(default)]
    pub dev: BTreeMap<String, StartEnd>,
    /// Every dev evaluation: the step and each task's point.
    #[serde(skip)]
    pub curve: Vec<(u64, BTreeMap<String, EvalPoint>)>,
    #[serde(skip)]
    pub seconds: f64,
    /// The steps the run trained.
    #[serde(default)]
    pub steps: u64,
    /// Every alarm of the hacking monitor (training pass rate and dev
    /// evaluations), in order.
    #[serde(default)]
    pub alarms: Vec<AlarmBrief>,
    /// Per task, the first dev evaluation whose pass rate's 95% interval
    /// lies below the start's (when the fall became measurable).
    #[serde(default)]
    pub measurable_drop: BTreeMap<String, u64>,
    /// Seconds of training steps, and of the metrics computed beyond what
    /// training needs (`time_s.metrics`), summed over steps and tasks.
    #[serde(default)]
    pub step_seconds: f64,
    #[serde(default)]
    pub metrics_seconds: f64,
}

/// An alarm of the hacking monitor, as the summary keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AlarmBrief {
    pub step: u64,
    pub task: String,
    pub rule: String,
    pub message: String,
}

/// `summary.json`: `{"runs": [{"name", "seed", "tasks": {TASK: {"start",
/// "end"}}, "dev": {...}}], "warmups": [...], "across_seeds": {...}}`;
/// `tasks` are test-split figures, `dev` dev-split ones.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The split of every run's `tasks`: `test`, or `dev` when the test
    /// split was not scored.
    #[serde(default)]
    pub split: String,
    pub runs: Vec<RunResult>,
    /// Per seed, the warm-up's measurements (reward models on test).
    #[serde(default)]
    pub warmups: Vec<Warmup>,
    /// Per run and task, the test pass rate at the start and the end over
    /// the seeds run (mean, sd, min, max).
    #[serde(default)]
    pub across_seeds: BTreeMap<String, BTreeMap<String, SeedSpread>>,
}

/// A run's test pass rate on one task over seeds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SeedSpread {
    pub start: Spread,
    pub end: Spread,
}

impl Summary {
    /// Fills [`Summary::across_seeds`] from the runs.
    pub fn aggregate(&mut self) {
        let mut values: BTreeMap<(String, String), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for r in &self.runs {
            for (task, se) in &r.tasks {
                let v = values.entry((r.name.clone(), task.clone())).or_default();
                v.0.push(se.start.eval_pass_rate);
                v.1.push(se.end.eval_pass_rate);
            }
        }
        self.across_seeds.clear();
        for ((run, task), (start, end)) in values {
            self.across_seeds.entry(run).or_default().insert(
                task,
                SeedSpread {
                    start: Spread::of(&start),
                    end: Spread::of(&end),
                },
            );
        }
    }

    /// One table per task: each run's test pass rate with n and its 95%
    /// interval, raw reward and KL at the start and the end; with several
    /// seeds, the mean and spread over seeds.
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
                "\n{task} ({} split)\n{:<18} {:>4} {:>4}  {:<22}  {:<22}  {:>17}  {:>15}\n",
                self.split,
                "run",
                "seed",
                "n",
                "pass start [95% CI]",
                "pass end [95% CI]",
                "reward start->end",
                "KL start->end"
            ));
            for r in &self.runs {
                if let Some(se) = r.tasks.get(task) {
                    out.push_str(&format!(
                        "{:<18} {:>4} {:>4}  {:<22}  {:<22}  {:>7.3} -> {:>6.3}  {:>6.3} -> {:>5.3}\n",
                        r.name,
                        r.seed,
                        se.end.n,
                        format_rate(&se.start),
                        format_rate(&se.end),
                        se.start.eval_reward,
                        se.end.eval_reward,
                        se.start.kl,
                        se.end.kl
                    ));
                }
            }
            let seeds = self
                .runs
                .iter()
                .map(|r| r.seed)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            if seeds > 1 {
                out.push_str(&format!(
                    "over {seeds} seeds: {} pass rate at the end, mean (sd) [min, max]\n",
                    self.split
                ));
                for (run, per_task) in &self.across_seeds {
                    if let Some(s) = per_task.get(task.as_str()) {
                        out.push_str(&format!(
                            "{run:<18} {:.3} ({:.3}) [{:.3}, {:.3}]  (start {:.3})\n",
                            s.end.mean, s.end.sd, s.end.min, s.end.max, s.start.mean
                        ));
                    }
                }
            }
        }
        out
    }

    /// The hacking monitor per run and seed: its alarms (task, step,
    /// rule), the step at which each task's dev pass rate fell measurably
    /// (its 95% interval below the start's), and what the metrics cost.
    pub fn monitor_table(&self) -> String {
        let mut out = String::from(
            "\nhacking monitor (alarms: task@step rule; dev fall measurable: task@step)\n",
        );
        let (mut metrics, mut steps) = (0.0, 0.0);
        for r in &self.runs {
            let alarms: Vec<String> = r
                .alarms
                .iter()
                .map(|a| format!("{}@{} {}", a.task, a.step, a.rule))
                .collect();
            let drops: Vec<String> = r
                .measurable_drop
                .iter()
                .map(|(t, s)| format!("{t}@{s}"))
                .collect();
            out.push_str(&format!(
                "{:<18} {:>4}  alarms: {:<40}  dev fall measurable: {}\n",
                r.name,
                r.seed,
                if alarms.is_empty() {
                    "none".to_string()
                } else {
                    alarms.join(", ")
                },
                if drops.is_empty() {
                    "none".to_string()
                } else {
                    drops.join(", ")
                }
            ));
            metrics += r.metrics_seconds;
            steps += r.step_seconds;
        }
        if steps > 0.0 {
            out.push_str(&format!(
                "metrics beyond training: {metrics:.2} s of {steps:.1} s of training steps ({:.2}%)\n",
                100.0 * metrics / steps
            ));
        }
        out
    }

    /// Writes `summary.json` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("summary.json");
        cgpo::data::write_json_atomic(&path, self)?;
        Ok(path)
    }
}

/// `0.469 [0.350, 0.591]`: a pass rate and its 95% interval.
pub fn format_rate(p: &EvalPoint) -> String {
    format!(
        "{:.3} [{:.3}, {:.3}]",
        p.eval_pass_rate, p.pass_ci95[0], p.pass_ci95[1]
    )
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
    let mut summary = Summary {
        split: opts.report_split.as_str().into(),
        ..Summary::default()
    };
    for &seed in &opts.seeds {
        let warmup = Warmup::get_or_train(&opts.out, &opts.warmup, seed, opts.progress)?;
        // The evaluators' reward models and judges: CGPO's full config.
        let full = run_config(RunName::CgpoCrpg, &warmup, &opts.settings, seed, &opts.out)?;
        let evaluator = |split: Split, prompts: &Path| -> Result<Arc<Evaluator>> {
            Ok(Arc::new(
                suite_evaluator(
                    &full,
                    &Registries::default(),
                    prompts,
                    opts.eval_prompts_per_task,
                    opts.eval_samples_per_prompt,
                    seed ^ 0x5EED,
                )?
                .with_split(split.as_str()),
            ))
        };
        let dev = evaluator(Split::Dev, &warmup.dev_prompts)?;
        let test = match opts.report_split {
            Split::Test => Some(evaluator(Split::Test, &warmup.test_prompts)?),
            _ => None,
        };
        let start = Start {
            dev: dev.evaluate_with_samples(dev.reference())?,
            test: match &test {
                Some(t) => Some(t.evaluate(t.reference())?),
                None => None,
            },
        };
        for &run in &opts.runs {
            summary.runs.push(train_run(
                opts,
                run,
                seed,
                &warmup,
                (&dev, test.as_deref()),
                &start,
            )?);
            summary.aggregate();
            summary.write(&opts.out)?;
        }
        summary.warmups.push(warmup);
        summary.write(&opts.out)?;
    }
    Ok(summary)
}

/// Each split's evaluation of the warm-up.
struct Start {
    dev: Evaluation,
    /// `None` when the test split is not scored.
    test: Option<BTreeMap<String, EvalPoint>>,
}

fn train_run(
    opts: &AblationOptions,
    run: RunName,
    seed: u64,
    warmup: &Warmup,
    (dev, test): (&Arc<Evaluator>, Option<&Evaluator>),
    start: &Start,
) -> Result<RunResult> {
    let t0 = Instant::now();
    let dir = run_dir(&opts.out, run, seed);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let config = run_config(run, warmup, &opts.settings, seed, &dir)?;
    let steps = config.train.steps;
    let mut trainer = config.trainer(&Registries::default())?;
    let trained = train_evaluated(
        &mut trainer,
        dev.clone(),
        &start.dev,
        &TrainLoop {
            steps,
            eval_every: opts.eval_every,
            dir: dir.clone(),
            checkpoint: true,
            label: format!("{} seed {seed}", run.as_str()),
            progress: opts.progress,
        },
    )?;
    let curve = trained.points;
    let dev_end = StartEnd::per_task(
        &start.dev.points,
        &curve.last().expect("start is in the curve").1,
    );
    // The test split: once, after the last step.
    let tasks = match (test, &start.test) {
        (Some(test), Some(test_start)) => {
            StartEnd::per_task(test_start, &test.evaluate(trainer.policy())?)
        }
        _ => dev_end.clone(),
    };
    Ok(RunResult {
        name: run.as_str().to_string(),
        seed,
        tasks,
        dev: dev_end,
        measurable_drop: measurable_drops(&curve),
        curve,
        seconds: t0.elapsed().as_secs_f64(),
        steps,
        alarms: trainer
            .alarms()
            .iter()
            .map(|a| AlarmBrief {
                step: a.step,
                task: a.task.clone(),
                rule: a.rule.as_str().into(),
                message: a.message.clone(),
            })
            .collect(),
        step_seconds: trained.step_seconds.iter().sum(),
        metrics_seconds: trained.metrics_seconds,
    })
}

/// Per task, the first evaluation of `curve` (after its first point, the
/// start) whose 95% interval lies entirely below the start's.
pub fn measurable_drops(curve: &[(u64, BTreeMap<String, EvalPoint>)]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Some((_, start)) = curve.first() else {
        return out;
    };
    for (step, points) in &curve[1..] {
        for (task, p) in points {
            let Some(s) = start.get(task) else { continue };
            if p.pass_ci95[1] < s.pass_ci95[0] {
                out.entry(task.clone()).or_insert(*step);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_summary_serializes_to_the_documented_schema_and_tabulates() {
        let point = |passes: usize, n: usize| {
            let p = passes as f64 / n as f64;
            let (lo, hi) = cgpo::stats::wilson(passes, n);
            EvalPoint {
                eval_pass_rate: p,
                n,
                passes,
                pass_ci95: [lo, hi],
                eval_reward: 2.0 * p,
                kl: p / 10.0,
            }
        };
        let run = |seed: u64, end: usize| RunResult {
            name: "cgpo-crpg".into(),
            seed,
            tasks: [(
                "math".to_string(),
                StartEnd {
                    start: point(16, 64),
                    end: point(end, 64),
                },
            )]
            .into(),
            dev: BTreeMap::new(),
            curve: vec![(0, BTreeMap::new())],
            seconds: 3.0,
            ..RunResult::default()
        };
        let mut summary = Summary {
            split: "test".into(),
            runs: vec![run(2, 32)],
            ..Summary::default()
        };
        summary.aggregate();
        let json = serde_json::to_value(&summary).unwrap();
        let end = &json["runs"][0]["tasks"]["math"]["end"];
        assert_eq!(end["eval_pass_rate"], json!(0.5));
        assert_eq!(end["n"], json!(64));
        assert_eq!(end["passes"], json!(32));
        let ci = end["pass_ci95"].as_array().unwrap();
        assert!((ci[0].as_f64().unwrap() - 0.381).abs() < 1e-3, "{ci:?}");
        assert!((ci[1].as_f64().unwrap() - 0.619).abs() < 1e-3, "{ci:?}");
        assert_eq!(
            json["across_seeds"]["cgpo-crpg"]["math"]["end"]["mean"],
            json!(0.5)
        );
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back.runs[0].tasks, summary.runs[0].tasks);
        let table = summary.table();
        assert!(table.contains("\nmath (test split)\n"), "{table}");
        assert!(
            table.contains(
                "cgpo-crpg             2   64  0.250 [0.160, 0.368]    0.500 [0.381, 0.619]"
            ),
            "{table}"
        );
        assert!(!table.contains("over 2 seeds"), "{table}");
        summary.runs.push(run(3, 48));
        summary.aggregate();
        let table = summary.table();
        assert!(
            table.contains("over 2 seeds: test pass rate at the end, mean (sd) [min, max]\ncgpo-crpg          0.625 (0.177) [0.500, 0.750]"),
            "{table}"
        );
    }
}
