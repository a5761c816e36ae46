//! Checkpoints: a directory `step-N/` with the policy weights, the AdamW
//! moments and `state.json` (step, optimizer step count, KL controllers,
//! cached calibration baselines, the config). It is written under a
//! temporary name and renamed, then `latest` (one line, the directory name)
//! is replaced atomically, so a crash never leaves a half checkpoint behind
//! `latest`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::RunConfig;
use crate::error::{Error, Result};
use crate::kl::KlController;
use crate::reward::CachedBaseline;

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
    pub config: RunConfig,
}

pub const POLICY_FILE: &str = "policy.safetensors";
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
pub const STATE_FILE: &str = "state.json";

/// Writes a checkpoint directory through `write(tmp_dir)` and publishes it.
pub fn publish(out: &Path, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    let name = format!("step-{step:06}");
    let dir = out.join(&name);
    let tmp = out.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    write(&tmp)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    }
    std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
    let latest = out.join("latest");
    let latest_tmp = out.join(".latest.partial");
    std::fs::write(&latest_tmp, format!("{name}\n")).map_err(|e| Error::io(&latest_tmp, e))?;
    std::fs::rename(&latest_tmp, &latest).map_err(|e| Error::io(&latest, e))?;
    Ok(dir)
}

/// The directory `latest` points to, if any.
pub fn latest(out: &Path) -> Result<Option<PathBuf>> {
    let path = out.join("latest");
    match std::fs::read_to_string(&path) {
        Ok(name) => {
            let dir = out.join(name.trim());
            if dir.join(STATE_FILE).is_file() {
                Ok(Some(dir))
            } else {
                Err(Error::model(
                    path.display(),
                    format!("points to {}, which is not a checkpoint", dir.display()),
                ))
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
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
