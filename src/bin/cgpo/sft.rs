//! `cgpo sft --config sft.json [--resume] [--steps N] [--output-dir DIR]`:
//! supervised fine-tuning on `{prompt, response}` records (docs/pipeline.md).

use std::process::ExitCode;

use cgpo::pipeline::{Sft, SftConfig};

use crate::stage::{explain, StageArgs};

pub fn run(args: StageArgs) -> cgpo::Result<ExitCode> {
    let config: SftConfig = args.load()?;
    let (sft, skipped) = Sft::from_config(&config).map_err(explain)?;
    crate::stage::run(&args, &config, sft, &skipped)
}
