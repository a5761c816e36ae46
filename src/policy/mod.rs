//! Policies: the trainable language model pi_theta, its frozen reference
//! pi_ref, and their tokenizers.
//!
//! A [`Policy`] maps a padded batch of token ids to next-token logits, in
//! two ways: [`Policy::forward`] over whole sequences (differentiable, for
//! the losses) and [`Policy::decode`] one chunk at a time against a
//! [`KvCache`] (no gradient, for rollouts). [`Policy::frozen`] gives the
//! reference copy: the same weights as plain tensors, detached, so it gets
//! no gradients and no optimizer state.
//!
//! Two models ship: [`Llama`] (Llama-family checkpoints from Hugging Face
//! safetensors or GGUF, e.g. SmolLM2) and [`TinyLm`] (the same architecture
//! at toy size with a byte tokenizer, for tests and synthetic ablations).
//! `docs/models.md` shows how to plug in another candle model.
//!
//! ```
//! use cgpo::policy::{Policy, TinyLm, TinyLmConfig, TokenBatch};
//! let model = TinyLm::new(&TinyLmConfig::default(), 7)?;
//! // Two rows, the shorter one left-padded; mask marks the real tokens.
//! let batch = TokenBatch::left_padded(&[vec![72, 105, 33], vec![79, 75]], 0)?;
//! let logits = model.forward(&batch)?;
//! assert_eq!(logits.dims(), &[2, 3, model.vocab_size()]);
//! let reference = model.frozen()?;
//! assert!(reference.vars().is_empty());
//! # Ok::<(), cgpo::Error>(())
//! ```

mod batch;
mod chat;
mod gguf;
mod gguf_tokenizer;
mod llama;
mod load;
mod tiny;
mod tokenizer;
mod transformer;

use std::path::Path;

use candle_core::{Device, Tensor, Var};

use crate::error::Result;

pub use batch::{CacheStep, KvCache, TokenBatch};
pub use chat::ChatTemplate;
pub use gguf_tokenizer::SUPPORTED_FAMILIES as SUPPORTED_TOKENIZER_FAMILIES;
pub use llama::Llama;
pub use load::{load_policy, DeviceSpec, PolicyConfig};
pub use tiny::{TinyLm, TinyLmConfig};
pub use tokenizer::{ByteTokenizer, HfTokenizer, TextTokenizer};
pub use transformer::{Transformer, TransformerConfig};

/// A causal language model usable as policy and reference.
pub trait Policy: Send + Sync {
    /// Size of the output distribution.
    fn vocab_size(&self) -> usize;

    /// The longest sequence (prompt + response) the model accepts.
    fn context_len(&self) -> usize;

    fn device(&self) -> &Device;

    /// Logits `[B, T, V]` (f32) for every position of a padded batch.
    /// Padding (mask 0) is neither attended to nor counted in positions.
    /// Differentiable with respect to [`Policy::vars`].
    fn forward(&self, batch: &TokenBatch) -> Result<Tensor>;

    /// The same logits without autograd, on the fused (faster) kernels; for
    /// the reference and behaviour log-probs.
    fn forward_no_grad(&self, batch: &TokenBatch) -> Result<Tensor>;

    /// Appends `batch` (one chunk of new tokens per row) to `cache` and
    /// returns the logits of each row's last position, `[B, V]` f32. Start
    /// with [`KvCache::new`]; the first call is the prompt (prefill), the
    /// next ones one token each. A model keeps its keys and values with
    /// [`KvCache::advance`] (positions, mask) and [`KvCache::append`].
    fn decode(&self, batch: &TokenBatch, cache: &mut KvCache) -> Result<Tensor>;

    /// The trainable parameters with their checkpoint names, in a fixed
    /// order; empty for a frozen copy.
    fn vars(&self) -> Vec<(String, Var)>;

    /// Writes the weights as one safetensors file.
    fn save(&self, path: &Path) -> Result<()>;

    /// Reads weights written by [`Policy::save`] into this model; every
    /// name and shape must match.
    fn load(&mut self, path: &Path) -> Result<()>;

    /// A frozen deep copy (pi_ref): later steps on `self` do not change it.
    fn frozen(&self) -> Result<Box<dyn Policy>>;
}
