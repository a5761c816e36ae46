//! What `cgpo sft`, `cgpo reward train` and `cgpo dpo` share: the flags,
//! the report of skipped records, running the stage and the summary.

use std::path::PathBuf;
use std::process::ExitCode;

use cgpo::pipeline::{SkipReport, Stage, StageConfig, StageRunner};
use clap::Args;

#[derive(Args)]
pub struct StageArgs {
    /// The stage's config (JSON); see docs/pipeline.md.
    #[arg(long)]
    pub config: PathBuf,
    /// Continue from the latest checkpoint in the output directory.
    #[arg(long)]
    pub resume: bool,
    /// Override `train.steps`.
    #[arg(long)]
    pub steps: Option<u64>,
    /// Override `train.output_dir`.
    #[arg(long)]
    pub output_dir: Option<PathBuf>,
}

impl StageArgs {
    /// The config with the flags' overrides, validated.
    pub fn load<C: StageConfig>(&self) -> cgpo::Result<C> {
        let mut config = C::from_file(&self.config)?;
        let (_, _, train) = config.sections_mut();
        if let Some(steps) = self.steps {
            train.steps = steps;
        }
        if let Some(dir) = &self.output_dir {
            train.output_dir = Some(dir.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

/// Bad records refuse a run; say how to skip them.
pub fn explain(e: cgpo::Error) -> cgpo::Error {
    if !e.data_errors().is_empty() {
        eprintln!(
            "hint: fix these records, or set `data.skip_bad_records: true` to skip and count them"
        );
    }
    e
}

/// Runs a built stage to the end and prints where things are.
pub fn run<S: Stage, C: StageConfig>(
    args: &StageArgs,
    config: &C,
    stage: S,
    skipped: &[SkipReport],
) -> cgpo::Result<ExitCode> {
    for report in skipped {
        eprintln!("{report} (data.skip_bad_records):");
        for e in &report.errors {
            eprintln!("  {e}");
        }
    }
    let (seed, _, _, train) = config.sections();
    let json =
        serde_json::to_value(config).map_err(|e| cgpo::Error::Train(format!("config: {e}")))?;
    let mut runner = StageRunner::new(stage, train, seed, json)?;
    runner.progress = true;
    if args.resume {
        if runner.resume()? {
            eprintln!("resumed at step {}", runner.step_count());
        } else {
            eprintln!("no checkpoint to resume from; starting at step 0");
        }
    }
    let summary = runner.run()?;
    let line = |m: &cgpo::pipeline::StageMetrics| {
        let stats: Vec<String> = m.stats.iter().map(|(k, v)| format!("{k} {v:.3}")).collect();
        format!("loss {:.4} {}", m.loss, stats.join(" "))
    };
    if let Some(m) = &summary.last_train {
        eprintln!("last step: {}", line(m));
    }
    if let (Some(first), Some(last)) = (&summary.first_eval, &summary.last_eval) {
        eprintln!("eval at step {}: {}", first.step, line(first));
        eprintln!("eval at step {}: {}", last.step, line(last));
    }
    eprintln!(
        "{} steps; metrics: {}",
        summary.steps,
        summary.metrics.display()
    );
    eprintln!("checkpoint: {}", summary.checkpoint.display());
    Ok(ExitCode::SUCCESS)
}
