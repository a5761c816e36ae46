//! `cgpo dpo --config dpo.json [--resume] [--steps N] [--output-dir DIR]`:
//! offline DPO on `{prompt, chosen, rejected}` records, from the policy as
//! loaded (frozen as the reference), the warm-up before `cgpo train`
//! (docs/pipeline.md).

use std::process::ExitCode;

use cgpo::pipeline::{Dpo, DpoConfig};

use crate::stage::{explain, StageArgs};

pub fn run(args: StageArgs) -> cgpo::Result<ExitCode> {
    let config: DpoConfig = args.load()?;
    let (dpo, skipped) = Dpo::from_config(&config).map_err(explain)?;
    crate::stage::run(&args, &config, dpo, &skipped)
}
