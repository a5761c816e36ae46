//! The `cgpo` command line. Subcommands:
//!
//! - `cgpo judge`: runs judges over a JSONL file of samples (see `judge.rs`).
//! - `cgpo train`: the multi-task CGPO training loop (see `train.rs`).
//! - `cgpo sft`, `cgpo reward train`, `cgpo dpo`: the stages before CGPO
//!   (`sft.rs`, `reward.rs`, `dpo.rs`, sharing `stage.rs`).
//! - `cgpo report`: an HTML report of runs' metrics (see `report.rs`).

mod dpo;
mod judge;
mod report;
mod reward;
mod sft;
mod stage;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cgpo",
    version,
    about = "Constrained multi-task RLHF with a mixture of judges"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Judge responses with built-in or configured judges.
    Judge(judge::JudgeArgs),
    /// Train a policy with the multi-task CGPO loop of a run config.
    Train(train::TrainArgs),
    /// Supervised fine-tuning on prompt/response records.
    Sft(stage::StageArgs),
    /// Reward models.
    #[command(subcommand)]
    Reward(reward::RewardCommand),
    /// Offline DPO on preference pairs (the warm-up before CGPO).
    Dpo(stage::StageArgs),
    /// Write an HTML report (curves, alarms, samples) of run directories.
    Report(report::ReportArgs),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Judge(args) => judge::run(args),
        Command::Train(args) => train::run(args),
        Command::Sft(args) => sft::run(args),
        Command::Reward(command) => reward::run(command),
        Command::Dpo(args) => dpo::run(args),
        Command::Report(args) => report::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
