//! `cgpo train --config run.json [--resume] [--steps N]`: the multi-task
//! CGPO loop of a run config. Metrics go to `<output_dir>/metrics.jsonl`
//! (one line per task per step), checkpoints to `<output_dir>/step-N/`.

use std::path::PathBuf;
use std::process::ExitCode;

use cgpo::config::{Registries, RunConfig};
use clap::Args;

#[derive(Args)]
pub struct TrainArgs {
    /// The run config (JSON); see docs/training.md.
    #[arg(long)]
    config: PathBuf,
    /// Continue from the latest checkpoint in the output directory.
    #[arg(long)]
    resume: bool,
    /// Override `train.steps`.
    #[arg(long)]
    steps: Option<u64>,
    /// Override `train.output_dir`.
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

pub fn run(args: TrainArgs) -> cgpo::Result<ExitCode> {
    let mut config = RunConfig::from_file(&args.config)?;
    if let Some(steps) = args.steps {
        config.train.steps = steps;
    }
    if let Some(dir) = args.output_dir {
        config.train.output_dir = dir;
    }
    config.validate()?;
    let mut trainer = config.trainer(&Registries::default())?;
    trainer.progress = true;
    if args.resume {
        if trainer.resume()? {
            eprintln!("resumed at step {}", trainer.step_count());
        } else {
            eprintln!("no checkpoint to resume from; starting at step 0");
        }
    }
    let summary = trainer.run()?;
    for m in &summary.last {
        eprintln!(
            "{:<12} pass {:.3}  reward raw {:.3} calibrated {:.3}  kl(k3) {:.4}  loss {:.4}",
            m.task, m.pass_rate, m.reward_raw, m.reward_calibrated, m.kl_k3, m.loss
        );
    }
    eprintln!(
        "{} steps; metrics: {}",
        summary.steps,
        summary.metrics.display()
    );
    if let Some(c) = &summary.checkpoint {
        eprintln!("checkpoint: {}", c.display());
    }
    Ok(ExitCode::SUCCESS)
}
