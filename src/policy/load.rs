//! Building a policy from its config: which model ([`PolicyConfig`]), on
//! which device ([`DeviceSpec`]), from which weights.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::{Llama, Policy, TextTokenizer, TinyLm, TinyLmConfig};
use crate::error::{Error, Result};
use crate::run_dir::weights_file;

/// Which model is the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// The toy byte-level model, randomly initialised from the run's seed.
    Tiny {
        #[serde(default)]
        size: TinyLmConfig,
        /// Trained weights to load over the initialisation (see [`PolicyConfig::weights`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights: Option<PathBuf>,
        /// Where the model runs: `"cpu"` (default), `"cuda"` or `"cuda:N"`.
        #[serde(default, skip_serializing_if = "DeviceSpec::is_cpu")]
        device: DeviceSpec,
    },
    /// A GGUF file of the `llama` architecture (e.g. SmolLM2).
    Gguf {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights: Option<PathBuf>,
        /// Where the model runs: `"cpu"` (default), `"cuda"` or `"cuda:N"`.
        #[serde(default, skip_serializing_if = "DeviceSpec::is_cpu")]
        device: DeviceSpec,
    },
    /// A Hugging Face directory: config.json, *.safetensors, tokenizer.json.
    HfDir {
        path: PathBuf,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weights: Option<PathBuf>,
        /// Where the model runs: `"cpu"` (default), `"cuda"` or `"cuda:N"`.
        #[serde(default, skip_serializing_if = "DeviceSpec::is_cpu")]
        device: DeviceSpec,
    },
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig::Tiny {
            size: TinyLmConfig::default(),
            weights: None,
            device: DeviceSpec::Cpu,
        }
    }
}

impl PolicyConfig {
    /// Weights that replace the model's after it is built: a safetensors
    /// file written by `Policy::save`, a checkpoint directory (`step-N/`,
    /// its `policy.safetensors`) or an output directory (its `latest`
    /// checkpoint). This is how a stage starts from the one before it
    /// (SFT -> reward model / DPO -> CGPO).
    pub fn weights(&self) -> Option<&Path> {
        match self {
            PolicyConfig::Tiny { weights, .. }
            | PolicyConfig::Gguf { weights, .. }
            | PolicyConfig::HfDir { weights, .. } => weights.as_deref(),
        }
    }

    /// The device the model is built on.
    pub fn device(&self) -> DeviceSpec {
        match self {
            PolicyConfig::Tiny { device, .. }
            | PolicyConfig::Gguf { device, .. }
            | PolicyConfig::HfDir { device, .. } => *device,
        }
    }

    /// The same model without `weights`.
    pub fn without_weights(&self) -> Self {
        let mut out = self.clone();
        match &mut out {
            PolicyConfig::Tiny { weights, .. }
            | PolicyConfig::Gguf { weights, .. }
            | PolicyConfig::HfDir { weights, .. } => *weights = None,
        }
        out
    }

    /// Makes relative paths (the model's, its `weights`) relative to `dir`,
    /// the config file's folder.
    pub(crate) fn resolve_paths(&mut self, dir: &Path) {
        let (path, weights) = match self {
            PolicyConfig::Tiny { weights, .. } => (None, weights),
            PolicyConfig::Gguf { path, weights, .. }
            | PolicyConfig::HfDir { path, weights, .. } => (Some(path), weights),
        };
        for p in path.into_iter().chain(weights.as_mut()) {
            if p.is_relative() {
                *p = dir.join(&*p);
            }
        }
    }
}

/// Where a model runs, as configs write it: `"cpu"`, `"cuda"` (GPU 0) or
/// `"cuda:N"`. Every tensor of a run is made on its policy's device.
///
/// ```
/// use cgpo::policy::DeviceSpec;
/// assert_eq!("cuda:1".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cuda(1));
/// assert_eq!(DeviceSpec::Cuda(0).to_string(), "cuda:0");
/// assert!("tpu".parse::<DeviceSpec>().unwrap_err().contains("cpu, cuda or cuda:N"));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    pub fn is_cpu(&self) -> bool {
        *self == DeviceSpec::Cpu
    }

    /// The candle device; CUDA needs the `candle-cuda` feature and a GPU.
    pub fn device(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(i) => Device::new_cuda(*i).map_err(|e| {
                Error::model(
                    self,
                    format!("cannot open the device ({e}); CUDA needs the `candle-cuda` feature"),
                )
            }),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|i| i.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: expected cpu, cuda or cuda:N")),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Builds a model from a policy config on its [`PolicyConfig::device`]
/// (TinyLm from `seed`), then loads its `weights` when given (see
/// [`PolicyConfig::weights`]).
pub fn load_policy(
    policy: &PolicyConfig,
    seed: u64,
) -> Result<(Box<dyn Policy>, Arc<dyn TextTokenizer>)> {
    let device = policy.device().device()?;
    let (mut model, tokenizer): (Box<dyn Policy>, Arc<dyn TextTokenizer>) = match policy {
        PolicyConfig::Tiny { size, .. } => {
            let tiny = TinyLm::on_device(size, seed, &device)?;
            (Box::new(tiny.model), Arc::new(tiny.tokenizer))
        }
        PolicyConfig::Gguf { path, .. } => {
            let llama = Llama::from_gguf(path, &device, true)?;
            (Box::new(llama.model), Arc::new(llama.tokenizer))
        }
        PolicyConfig::HfDir { path, .. } => {
            let llama = Llama::from_hf_dir(path, &device, true)?;
            (Box::new(llama.model), Arc::new(llama.tokenizer))
        }
    };
    if let Some(weights) = policy.weights() {
        model.load(&weights_file(weights)?)?;
    }
    Ok((model, tokenizer))
}
