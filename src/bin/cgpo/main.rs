//! The `cgpo` command line. Subcommands:
//!
//! - `cgpo judge`: runs judges over a JSONL file of samples (see `judge.rs`).
//! - `cgpo train`: the multi-task CGPO training loop (see `train.rs`).

mod judge;
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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Judge(args) => judge::run(args),
        Command::Train(args) => train::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
