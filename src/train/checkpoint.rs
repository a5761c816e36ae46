//! Checkpoints: a directory `step-N/` with the policy weights, the AdamW
//! moments and `state.json` (step, optimizer step count, KL controllers,
//! cached calibration baselines, the config). It is written under a
//! temporary name and renamed, then `latest` (one line, the directory name)
//! is replaced atomically, so a crash never leaves a half checkpoint behind
//! `latest`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kl::KlController;
use crate::reward::CachedBaseline;
pub use crate::run_dir::{latest, publish, OPTIMIZER_FILE, POLICY_FILE, STATE_FILE};

/// Everything but the tensors.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainerState {
    /// Steps completed.
    pub step: u64,
    pub optimizer_steps: u64,
    pub consecutive_skips: u32,
    /// Per task, in config order.
    pub kl: Vec<KlController>,
    /// Per task, in config order.
    pub baselines: Vec<Vec<CachedBaseline>>,
    /// The run's configuration as recorded by its caller.
    pub config: serde_json::Value,
}

pub fn write_state(dir: &Path, state: &TrainerState) -> Result<()> {
    let path = dir.join(STATE_FILE);
    let text = serde_json::to_string_pretty(state)
        .map_err(|e| Error::model(path.display(), e.to_string()))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
}

pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::model(path.display(), e.to_string()))
}
