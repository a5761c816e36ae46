//! The `cgpo` command line. Subcommands:
//!
//! - `cgpo judge`: runs judges over a JSONL file of samples (see `judge.rs`).

mod judge;

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
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Judge(args) => judge::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
