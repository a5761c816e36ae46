//! `cgpo reward train --config reward.json [--resume] [--steps N]
//! [--output-dir DIR]`: a Bradley-Terry reward model on `{prompt, chosen,
//! rejected}` records (docs/pipeline.md). Its output directory is what a
//! run config's `bradley_terry` reward model loads (`params.path`).

use std::process::ExitCode;

use cgpo::pipeline::{RewardTrainConfig, RewardTraining};
use clap::Subcommand;

use crate::stage::{explain, StageArgs};

#[derive(Subcommand)]
pub enum RewardCommand {
    /// Train a Bradley-Terry reward model on preference pairs.
    Train(StageArgs),
}

pub fn run(command: RewardCommand) -> cgpo::Result<ExitCode> {
    match command {
        RewardCommand::Train(args) => {
            let config: RewardTrainConfig = args.load()?;
            let (training, skipped) = RewardTraining::from_config(&config).map_err(explain)?;
            crate::stage::run(&args, &config, training, &skipped)
        }
    }
}
