//! The run directory a training job writes: checkpoints `step-N/` published
//! atomically (written under a temporary name, then renamed), and `latest`,
//! one line naming the newest complete checkpoint, replaced atomically too,
//! so a crash never leaves a half checkpoint behind `latest`. Every stage
//! (SFT, reward model, DPO, CGPO) uses this layout, and a later stage finds
//! an earlier one's weights through [`weights_file`].

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

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

/// The safetensors file `weights` names: the file itself, a checkpoint
/// directory's `policy.safetensors`, or that of an output directory's
/// `latest` checkpoint.
pub fn weights_file(weights: &Path) -> Result<PathBuf> {
    if !weights.is_dir() {
        return Ok(weights.to_path_buf());
    }
    let dir = match latest(weights)? {
        Some(latest) => latest,
        None => weights.to_path_buf(),
    };
    let file = dir.join(POLICY_FILE);
    if file.is_file() {
        Ok(file)
    } else {
        Err(Error::model(
            weights.display(),
            format!(
                "neither a checkpoint nor an output directory with a `latest` checkpoint: no {}",
                file.display()
            ),
        ))
    }
}
