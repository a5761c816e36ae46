//! Llama-family checkpoints (SmolLM2, Llama 2/3 without rope scaling,
//! TinyLlama, ...) as a trainable [`Policy`] with its tokenizer.
//!
//! Two sources: a Hugging Face directory (`config.json`, `*.safetensors`,
//! `tokenizer.json`) or a GGUF file (quantized tensors are dequantized to
//! f32; the tokenizer is built from the metadata). Errors name the file and
//! the problem: a missing or truncated file, an unsupported architecture or
//! tensor type, a config that disagrees with the weights, a tokenizer whose
//! vocabulary differs from the model's.
//!
//! ```no_run
//! use candle_core::Device;
//! use cgpo::judges::Message;
//! use cgpo::policy::{Llama, TextTokenizer};
//! let llama = Llama::from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf".as_ref(), &Device::Cpu, true)?;
//! let prompt = llama.tokenizer.encode_chat(&[Message::new("user", "Hi!")])?;
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::Device;

use super::gguf;
use super::tokenizer::{HfTokenizer, TextTokenizer};
use super::transformer::{Transformer, TransformerConfig};
use super::Policy;
use crate::error::{Error, Result};

/// A Llama-family model and its tokenizer.
pub struct Llama {
    pub model: Transformer,
    pub tokenizer: HfTokenizer,
}

impl Llama {
    /// Loads a GGUF file of the `llama` architecture. `trainable`: hold the
    /// weights as variables (for the policy) or as plain tensors.
    pub fn from_gguf(path: &Path, device: &Device, trainable: bool) -> Result<Self> {
        let source = path.display().to_string();
        let (content, mut file) = gguf::read_content(path)?;
        let cfg = gguf::config(&content, &source)?;
        let tokenizer = HfTokenizer::from_gguf(&content, &source)?;
        let tensors = gguf::tensors(&content, &mut file, &cfg, &source)?;
        let model = Transformer::from_tensors(cfg, tensors, device, trainable, &source)?;
        Self::new(model, tokenizer, &source)
    }

    /// Loads a Hugging Face directory: `config.json`, the weights in
    /// `model.safetensors` (or every `*.safetensors` shard) and
    /// `tokenizer.json` (+ `tokenizer_config.json`).
    pub fn from_hf_dir(dir: &Path, device: &Device, trainable: bool) -> Result<Self> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let cfg: TransformerConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            Error::model(
                config_path.display(),
                format!("`{}`: {}", e.path(), e.inner()),
            )
        })?;
        let mut shards: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        shards.sort();
        if shards.is_empty() {
            return Err(Error::model(
                dir.display(),
                "no *.safetensors weights in the directory",
            ));
        }
        let mut tensors = HashMap::new();
        for shard in &shards {
            let part = candle_core::safetensors::load(shard, &Device::Cpu).map_err(|e| {
                Error::model(
                    shard.display(),
                    format!("not a readable safetensors file: {e}"),
                )
            })?;
            tensors.extend(part);
        }
        let source = if shards.len() == 1 {
            shards[0].display().to_string()
        } else {
            format!("{} ({} shards)", dir.display(), shards.len())
        };
        let model = Transformer::from_tensors(cfg, tensors, device, trainable, &source)?;
        let tokenizer = HfTokenizer::from_file(&dir.join("tokenizer.json"))?;
        Self::new(model, tokenizer, &source)
    }

    /// Pairs a model with a tokenizer; their vocabulary sizes must agree.
    pub fn new(model: Transformer, tokenizer: HfTokenizer, source: &str) -> Result<Self> {
        let (m, t) = (model.config().vocab_size, tokenizer.vocab_size());
        if m != t {
            return Err(Error::model(
                source,
                format!("the tokenizer has {t} tokens, the model's vocabulary has {m}"),
            ));
        }
        Ok(Self { model, tokenizer })
    }

    /// Writes a Hugging Face directory (`config.json`, `model.safetensors`,
    /// `tokenizer.json`) that [`Llama::from_hf_dir`] reads back.
    pub fn save_hf_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let config = serde_json::to_string_pretty(self.model.config())
            .map_err(|e| Error::model("config", e.to_string()))?;
        let path = dir.join("config.json");
        std::fs::write(&path, config).map_err(|e| Error::io(&path, e))?;
        self.model.save(&dir.join("model.safetensors"))?;
        let path = dir.join("tokenizer.json");
        self.tokenizer
            .inner()
            .save(&path, false)
            .map_err(|e| Error::model(path.display(), e.to_string()))?;
        let eos = self
            .tokenizer
            .stop_tokens()
            .first()
            .and_then(|&id| self.tokenizer.inner().id_to_token(id));
        let chat_template = self.tokenizer.chat_template().source();
        let config = serde_json::json!({"eos_token": eos, "chat_template": chat_template});
        let path = dir.join("tokenizer_config.json");
        std::fs::write(&path, config.to_string()).map_err(|e| Error::io(&path, e))
    }
}

/// Implements [`Policy`] for a wrapper by forwarding to its `model` field.
macro_rules! delegate_policy {
    ($ty:ty) => {
        impl $crate::policy::Policy for $ty {
            fn vocab_size(&self) -> usize {
                self.model.vocab_size()
            }
            fn context_len(&self) -> usize {
                self.model.context_len()
            }
            fn device(&self) -> &candle_core::Device {
                $crate::policy::Policy::device(&self.model)
            }
            fn forward(
                &self,
                batch: &$crate::policy::TokenBatch,
            ) -> $crate::Result<candle_core::Tensor> {
                self.model.forward(batch)
            }
            fn forward_no_grad(
                &self,
                batch: &$crate::policy::TokenBatch,
            ) -> $crate::Result<candle_core::Tensor> {
                self.model.forward_no_grad(batch)
            }
            fn decode(
                &self,
                batch: &$crate::policy::TokenBatch,
                cache: &mut $crate::policy::KvCache,
            ) -> $crate::Result<candle_core::Tensor> {
                self.model.decode(batch, cache)
            }
            fn vars(&self) -> Vec<(String, candle_core::Var)> {
                self.model.vars()
            }
            fn save(&self, path: &std::path::Path) -> $crate::Result<()> {
                self.model.save(path)
            }
            fn load(&mut self, path: &std::path::Path) -> $crate::Result<()> {
                self.model.load(path)
            }
            fn frozen(&self) -> $crate::Result<Box<dyn $crate::policy::Policy>> {
                self.model.frozen()
            }
        }
    };
}
pub(crate) use delegate_policy;

delegate_policy!(Llama);
