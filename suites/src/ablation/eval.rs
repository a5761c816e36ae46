//! The experiments' evaluation: the library's [`Evaluator`] on one split's
//! prompts (dev or test), the same for every run whatever it trains with
//! (the judges and reward models of CGPO's full config, the warm-up as the
//! reference, the run config's sampling: temperature 1 and a fixed seed),
//! and the training loop with the curve it draws.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cgpo::config::{Registries, RunConfig};
use cgpo::data::{read_prompts, PromptRecord};
use cgpo::error::Result;
use cgpo::policy::load_policy;
use cgpo::task::TaskSpec;
use cgpo::train::evaluate::spread;
use cgpo::train::{append_lines, EvalPoint, Evaluation, Evaluator, RunLoop, TaskSamples, Trainer};

/// The evaluator of `config`'s tasks (with every judge: the ablation
/// passes `cgpo-crpg`'s config) on `prompts_per_task` prompts per task of
/// the file `eval_prompts`, spread over it, `samples_per_prompt` responses
/// to each, sampled as `config.train.sampling` says from `seed`; the KL's
/// reference is the config's policy. Names are looked up in `registries`.
pub fn suite_evaluator(
    config: &RunConfig,
    registries: &Registries,
    eval_prompts: &Path,
    prompts_per_task: usize,
    samples_per_prompt: usize,
    seed: u64,
) -> Result<Evaluator> {
    let tasks = config.build_tasks(registries)?;
    let names = config.task_names();
    let records = read_prompts(eval_prompts, Some(&names))?;
    let prompts = names
        .iter()
        .map(|n| {
            let of_task: Vec<Arc<PromptRecord>> = records
                .iter()
                .filter(|r| r.task.as_deref() == Some(n.as_str()))
                .map(|r| Arc::new(r.clone()))
                .collect();
            spread(of_task.len(), prompts_per_task)
                .into_iter()
                .map(|i| of_task[i].clone())
                .collect()
        })
        .collect();
    let (reference, tokenizer) = load_policy(&config.policy, config.seed)?;
    let sampling = config.train.sampling.sampling(samples_per_prompt, seed);
    Ok(Evaluator::new(
        tasks.iter().map(TaskSpec::eval_task).collect(),
        prompts,
        Arc::from(reference),
        tokenizer,
        sampling,
    ))
}

/// How [`train_evaluated`] trains.
#[derive(Clone, Debug)]
pub struct TrainLoop {
    pub steps: u64,
    /// Evaluate every this many steps (and after the last).
    pub eval_every: u64,
    /// The run's directory: `metrics.jsonl` (train lines, eval lines) and,
    /// with `checkpoint`, the final checkpoint.
    pub dir: PathBuf,
    pub checkpoint: bool,
    /// The progress bar's label.
    pub label: String,
    pub progress: bool,
}

/// What [`train_evaluated`] measured.
#[derive(Clone, Debug, Default)]
pub struct Curve {
    /// Every evaluation: the step and each task's point, `start` first.
    pub points: Vec<(u64, BTreeMap<String, EvalPoint>)>,
    /// Wall-clock seconds of each training step (evaluations excluded).
    pub step_seconds: Vec<f64>,
    /// Seconds spent in the evaluations after `start`.
    pub eval_seconds: f64,
    /// The judged samples of the last evaluation.
    pub last_samples: TaskSamples,
    /// Seconds the trainer spent on metrics beyond training
    /// (`time_s.metrics` summed over steps and tasks).
    pub metrics_seconds: f64,
}

/// Trains `trainer` to `run.steps` steps on the library's loop, evaluating
/// with `evaluator` on schedule; `start` is the evaluation before the first
/// step (computed once, shared by every run), written first.
pub fn train_evaluated(
    trainer: &mut Trainer,
    evaluator: Arc<Evaluator>,
    start: &Evaluation,
    run: &TrainLoop,
) -> Result<Curve> {
    trainer.set_evaluator(evaluator);
    // The start is the hacking monitor's held-out reference.
    trainer.observe_evaluation(start);
    let mut settings = trainer.loop_settings();
    settings.steps = run.steps;
    settings.eval_every = run.eval_every.max(1);
    settings.eval_at_end = true;
    settings.output_dir = run.dir.clone();
    settings.final_checkpoint = run.checkpoint;
    settings.progress = run.progress.then(|| run.label.clone());
    append_lines(
        &run.dir.join("metrics.jsonl"),
        &start.lines(trainer.step_count()),
    )?;
    let mut curve = Curve {
        points: vec![(trainer.step_count(), start.points.clone())],
        ..Curve::default()
    };
    RunLoop::new(trainer, settings)
        .on_step(|_, metrics: &Vec<cgpo::train::TaskMetrics>, seconds| {
            curve.step_seconds.push(seconds);
            curve.metrics_seconds += metrics.iter().map(|m| m.time_s.metrics).sum::<f64>();
        })
        .on_eval(|step, eval: &Evaluation, seconds| {
            curve.eval_seconds += seconds;
            curve.points.push((step, eval.points.clone()));
            curve.last_samples = eval.samples.clone();
        })
        .run()?;
    Ok(curve)
}
