//! The one training loop. Every training job (CGPO's [`super::Trainer`],
//! and the SFT, reward-model and DPO stages of `crate::pipeline`) is a
//! [`Job`]: it knows how to take one optimizer step, evaluate, and save and
//! load its tensors. [`RunLoop`] does the rest, once for all of them: the
//! step schedule, evaluations (at the start, every `eval_every` steps, at
//! the end), `metrics.jsonl` (one JSON line per record, flushed as it
//! happens), checkpoints published atomically with a `latest` pointer
//! ([`crate::run_dir`]), resume (metrics after the checkpoint are dropped),
//! the guard that stops a run after too many consecutive non-finite steps,
//! and a progress bar. Callers add what they need with callbacks
//! ([`RunLoop::on_step`], [`RunLoop::on_eval`]).
//!
//! ```
//! use std::path::Path;
//! use cgpo::train::{Job, LoopState, RunLoop, LoopSettings, Stepped};
//! /// Counts to ten; "evaluates" to its count.
//! struct Count { n: u64, state: LoopState }
//! impl Job for Count {
//!     type Step = u64;
//!     type Eval = u64;
//!     fn name(&self) -> &str { "count" }
//!     fn state(&self) -> &LoopState { &self.state }
//!     fn state_mut(&mut self) -> &mut LoopState { &mut self.state }
//!     fn train_step(&mut self) -> cgpo::Result<Stepped<u64>> { self.n += 1; Ok(Stepped { record: self.n, skipped: false }) }
//!     fn evaluate(&mut self) -> cgpo::Result<Option<u64>> { Ok(Some(self.n)) }
//!     fn step_lines(&self, n: &u64) -> Vec<serde_json::Value> { vec![serde_json::json!({"kind": "train", "n": n})] }
//!     fn eval_lines(&self, n: &u64) -> Vec<serde_json::Value> { vec![serde_json::json!({"kind": "eval", "n": n})] }
//!     fn save(&self, _: &Path) -> cgpo::Result<serde_json::Value> { Ok(serde_json::json!({"n": self.n})) }
//!     fn load(&mut self, _: &Path, state: serde_json::Value) -> cgpo::Result<()> { self.n = state["n"].as_u64().unwrap(); Ok(()) }
//! }
//! let out = tempfile::tempdir().unwrap();
//! let settings = LoopSettings { steps: 10, eval_every: 5, output_dir: out.path().into(), ..LoopSettings::default() };
//! let mut job = Count { n: 0, state: LoopState::default() };
//! let mut evals = Vec::new();
//! let summary = RunLoop::new(&mut job, settings).on_eval(|step, n: &u64, _| evals.push((step, *n))).run()?;
//! assert_eq!((summary.steps, evals), (10, vec![(5, 5), (10, 10)]));
//! assert!(summary.checkpoint.unwrap().ends_with("step-000010"));
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::run_dir::{self, STATE_FILE};

/// Where a job stands in its run: the loop reads and writes it, the job
/// keeps it (so a job resumed, then run again, continues).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoopState {
    /// Steps completed.
    pub step: u64,
    /// Non-finite steps in a row, up to the last one.
    pub consecutive_skips: u32,
    /// The last checkpoint written or resumed from.
    pub last_checkpoint: Option<PathBuf>,
}

/// One training step's outcome.
#[derive(Clone, Debug)]
pub struct Stepped<T> {
    /// What the job reports (metrics).
    pub record: T,
    /// The loss or gradient was not finite: nothing was updated.
    pub skipped: bool,
}

/// What the loop trains.
pub trait Job {
    /// One step's report.
    type Step;
    /// One evaluation's report.
    type Eval;

    /// The job's kind (`cgpo`, `sft`, `reward`, `dpo`): in checkpoints, so
    /// that one kind never resumes from another's.
    fn name(&self) -> &str;

    /// The job's place in its run.
    fn state(&self) -> &LoopState;

    fn state_mut(&mut self) -> &mut LoopState;

    /// One optimizer step (the step's index is `state().step`; the loop
    /// counts it afterwards).
    fn train_step(&mut self) -> Result<Stepped<Self::Step>>;

    /// An evaluation of the current weights; `None` when there is nothing
    /// to evaluate on.
    fn evaluate(&mut self) -> Result<Option<Self::Eval>>;

    /// The metrics lines of a step.
    fn step_lines(&self, step: &Self::Step) -> Vec<serde_json::Value>;

    /// The metrics lines of an evaluation.
    fn eval_lines(&self, eval: &Self::Eval) -> Vec<serde_json::Value>;

    /// Why the run should stop now (checked after every step and
    /// evaluation; the loop then writes its final checkpoint and returns).
    fn stop_requested(&self) -> Option<String> {
        None
    }

    /// The progress bar's message after a step.
    fn headline(&self, _step: &Self::Step) -> String {
        String::new()
    }

    /// Writes the job's tensors into a checkpoint directory and returns
    /// its other state (optimizer step count, controllers, ...).
    fn save(&self, dir: &Path) -> Result<serde_json::Value>;

    /// Reads what [`Job::save`] wrote.
    fn load(&mut self, dir: &Path, state: serde_json::Value) -> Result<()>;
}

/// The schedule of a run and where it writes.
#[derive(Clone, Debug, PartialEq)]
pub struct LoopSettings {
    /// Train until this many steps are done.
    pub steps: u64,
    /// Evaluate every this many steps (0 = never on a schedule).
    pub eval_every: u64,
    /// Evaluate before the first step of a fresh run.
    pub eval_at_start: bool,
    /// Evaluate after the last step (once, even off the schedule).
    pub eval_at_end: bool,
    /// Checkpoint every this many steps (0 = only at the end).
    pub checkpoint_every: u64,
    /// Checkpoint after the last step.
    pub final_checkpoint: bool,
    /// Stop after this many consecutive skipped steps.
    pub max_consecutive_skips: u32,
    /// Checkpoints and `metrics.jsonl` go here.
    pub output_dir: PathBuf,
    /// Draw a progress bar on stderr, labelled so.
    pub progress: Option<String>,
}

impl Default for LoopSettings {
    fn default() -> Self {
        Self {
            steps: 1,
            eval_every: 0,
            eval_at_start: false,
            eval_at_end: false,
            checkpoint_every: 0,
            final_checkpoint: true,
            max_consecutive_skips: 5,
            output_dir: PathBuf::from("runs/out"),
            progress: None,
        }
    }
}

/// Where a run ended.
#[derive(Clone, Debug)]
pub struct LoopSummary {
    pub steps: u64,
    /// The final checkpoint, if one was written.
    pub checkpoint: Option<PathBuf>,
    pub metrics: PathBuf,
    /// Why the run stopped before `steps` ([`Job::stop_requested`]).
    pub stopped: Option<String>,
}

/// The loop's part of `state.json`; the job's own state is under `job`.
#[derive(Serialize, Deserialize)]
struct CheckpointState {
    /// The job's kind.
    kind: String,
    step: u64,
    consecutive_skips: u32,
    job: serde_json::Value,
}

type StepCallback<'a, S> = Box<dyn FnMut(u64, &S, f64) + 'a>;
type EvalCallback<'a, E> = Box<dyn FnMut(u64, &E, f64) + 'a>;

/// Runs a [`Job`] to its number of steps.
pub struct RunLoop<'a, J: Job> {
    job: &'a mut J,
    settings: LoopSettings,
    on_step: Option<StepCallback<'a, J::Step>>,
    on_eval: Option<EvalCallback<'a, J::Eval>>,
}

impl<'a, J: Job> RunLoop<'a, J> {
    pub fn new(job: &'a mut J, settings: LoopSettings) -> Self {
        Self {
            job,
            settings,
            on_step: None,
            on_eval: None,
        }
    }

    /// Called after each step with the step count, the report and the
    /// step's wall-clock seconds.
    pub fn on_step(mut self, f: impl FnMut(u64, &J::Step, f64) + 'a) -> Self {
        self.on_step = Some(Box::new(f));
        self
    }

    /// Called after each evaluation with the step count, the report and
    /// the evaluation's wall-clock seconds.
    pub fn on_eval(mut self, f: impl FnMut(u64, &J::Eval, f64) + 'a) -> Self {
        self.on_eval = Some(Box::new(f));
        self
    }

    pub fn metrics_path(&self) -> PathBuf {
        self.settings.output_dir.join("metrics.jsonl")
    }

    /// Loads the latest checkpoint of the output directory, if any, and
    /// drops the metrics lines after it; returns whether it did.
    pub fn resume(&mut self) -> Result<bool> {
        let Some(dir) = run_dir::latest(&self.settings.output_dir)? else {
            return Ok(false);
        };
        let path = dir.join(STATE_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let state: CheckpointState = serde_json::from_str(&text)
            .map_err(|e| Error::model(path.display(), format!("not a checkpoint: {e}")))?;
        if state.kind != self.job.name() {
            return Err(Error::model(
                dir.display(),
                format!("a `{}` checkpoint, not `{}`", state.kind, self.job.name()),
            ));
        }
        self.job.load(&dir, state.job)?;
        let s = self.job.state_mut();
        s.step = state.step;
        s.consecutive_skips = state.consecutive_skips;
        s.last_checkpoint = Some(dir);
        truncate_metrics(&self.metrics_path(), state.step)?;
        Ok(true)
    }

    /// Publishes a checkpoint of the job as it is now.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        let job = &*self.job;
        let state = job.state();
        let (step, consecutive_skips) = (state.step, state.consecutive_skips);
        let dir = run_dir::publish(&self.settings.output_dir, step, |tmp| {
            let state = CheckpointState {
                kind: job.name().to_string(),
                step,
                consecutive_skips,
                job: job.save(tmp)?,
            };
            let path = tmp.join(STATE_FILE);
            let text = serde_json::to_string_pretty(&state)
                .map_err(|e| Error::model(path.display(), e.to_string()))?;
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
        })?;
        self.job.state_mut().last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    fn evaluate(&mut self) -> Result<()> {
        let t = Instant::now();
        if let Some(eval) = self.job.evaluate()? {
            let seconds = t.elapsed().as_secs_f64();
            append_lines(&self.metrics_path(), &self.job.eval_lines(&eval))?;
            if let Some(f) = &mut self.on_eval {
                f(self.job.state().step, &eval, seconds);
            }
        }
        Ok(())
    }

    /// Trains until `steps` are done: metrics, evaluations and checkpoints
    /// on the schedule, a final checkpoint (unless `final_checkpoint` is
    /// off). A run that has reached `steps` already only writes that.
    pub fn run(mut self) -> Result<LoopSummary> {
        let out = self.settings.output_dir.clone();
        std::fs::create_dir_all(&out).map_err(|e| Error::io(&out, e))?;
        let total = self.settings.steps;
        let bar = match &self.settings.progress {
            Some(label) => {
                let bar = ProgressBar::new(total);
                bar.set_style(
                    ProgressStyle::with_template(&format!(
                        "{label} {{bar:30}} {{pos}}/{{len}} steps {{elapsed}}<{{eta}} {{msg}}"
                    ))
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                );
                bar.set_position(self.job.state().step);
                bar
            }
            None => ProgressBar::hidden(),
        };
        if self.settings.eval_at_start && self.job.state().step == 0 {
            self.evaluate()?;
        }
        let mut stopped = None;
        while self.job.state().step < total {
            let t = Instant::now();
            let stepped = self.job.train_step()?;
            let seconds = t.elapsed().as_secs_f64();
            let state = self.job.state_mut();
            state.step += 1;
            let step = state.step;
            if stepped.skipped {
                state.consecutive_skips += 1;
            } else {
                state.consecutive_skips = 0;
            }
            append_lines(&self.metrics_path(), &self.job.step_lines(&stepped.record))?;
            bar.set_position(step);
            bar.set_message(self.job.headline(&stepped.record));
            if let Some(f) = &mut self.on_step {
                f(step, &stepped.record, seconds);
            }
            let skips = self.job.state().consecutive_skips;
            if skips >= self.settings.max_consecutive_skips {
                let last = self
                    .job
                    .state()
                    .last_checkpoint
                    .as_ref()
                    .map_or("none".to_string(), |p| p.display().to_string());
                return Err(Error::Train(format!(
                    "{}: {skips} consecutive steps had a non-finite loss or gradient (last at step {step}); stopping. Last good checkpoint: {last}",
                    self.job.name()
                )));
            }
            let every = self.settings.checkpoint_every;
            if every > 0 && step % every == 0 && step < total {
                self.checkpoint()?;
            }
            let eval_every = self.settings.eval_every;
            let last = step == total && self.settings.eval_at_end;
            if (eval_every > 0 && step % eval_every == 0) || last {
                self.evaluate()?;
            }
            if let Some(reason) = self.job.stop_requested() {
                bar.println(format!(
                    "{}: stopping after step {step}: {reason}",
                    self.job.name()
                ));
                stopped = Some(reason);
                break;
            }
        }
        bar.finish_and_clear();
        let step = self.job.state().step;
        let checkpoint = if self.settings.final_checkpoint {
            Some(self.checkpoint()?)
        } else {
            None
        };
        Ok(LoopSummary {
            steps: step,
            checkpoint,
            metrics: self.metrics_path(),
            stopped,
        })
    }
}

/// Appends JSON lines to `path` (created when missing), flushed.
pub fn append_lines(path: &Path, lines: &[serde_json::Value]) -> Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    for line in lines {
        writeln!(f, "{line}").map_err(|e| Error::io(path, e))?;
    }
    f.flush().map_err(|e| Error::io(path, e))
}

/// Keeps only the metrics lines a checkpoint at `step` covers: `train`
/// lines of earlier steps, other lines (evaluations) up to `step`.
pub(crate) fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut kept = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| Error::io(path, e))?;
        // Only `kind` and `step` are read: skipped steps have a null loss.
        let Ok(m) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let at = m["step"].as_u64().unwrap_or(u64::MAX);
        let covered = if m["kind"] == "train" {
            at < step
        } else {
            at <= step
        };
        if covered {
            kept.push(line);
        }
    }
    let tmp = path.with_extension("jsonl.partial");
    std::fs::write(
        &tmp,
        kept.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
