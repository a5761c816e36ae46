//! `TinyLm`: the Llama architecture at toy size with the byte tokenizer,
//! randomly initialised from a seed, so that tests and synthetic ablations
//! train in minutes on a CPU.
//!
//! ```
//! use cgpo::policy::{Policy, TinyLm, TinyLmConfig};
//! let a = TinyLm::new(&TinyLmConfig::default(), 1)?;
//! let b = TinyLm::new(&TinyLmConfig::default(), 1)?;
//! assert_eq!(a.vars().len(), b.vars().len()); // same seed, same weights
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::collections::HashMap;

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::llama::delegate_policy;
use super::tokenizer::ByteTokenizer;
use super::transformer::{Transformer, TransformerConfig};
use crate::error::Result;

/// Size of a [`TinyLm`]. The vocabulary is the byte tokenizer's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TinyLmConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub context_len: usize,
}

impl Default for TinyLmConfig {
    fn default() -> Self {
        Self {
            hidden_size: 64,
            intermediate_size: 172,
            layers: 2,
            heads: 4,
            kv_heads: 2,
            context_len: 512,
        }
    }
}

impl TinyLmConfig {
    pub fn transformer(&self) -> TransformerConfig {
        TransformerConfig {
            vocab_size: ByteTokenizer::VOCAB,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.layers,
            num_attention_heads: self.heads,
            num_key_value_heads: Some(self.kv_heads),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: self.context_len,
            tie_word_embeddings: true,
            hidden_act: None,
            rope_scaling: None,
        }
    }
}

/// A small trainable transformer over bytes.
pub struct TinyLm {
    pub model: Transformer,
    pub tokenizer: ByteTokenizer,
}

impl TinyLm {
    /// Random weights from `seed` (normal, std 0.02; norms at 1), on the CPU.
    pub fn new(cfg: &TinyLmConfig, seed: u64) -> Result<Self> {
        Self::on_device(cfg, seed, &Device::Cpu)
    }

    pub fn on_device(cfg: &TinyLmConfig, seed: u64, device: &Device) -> Result<Self> {
        let tcfg = cfg.transformer();
        let mut rng = StdRng::seed_from_u64(seed);
        let mut tensors = HashMap::new();
        for (name, shape) in tcfg.weight_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if shape.len() == 1 {
                vec![1.0; n]
            } else {
                (0..n).map(|_| 0.02 * normal(&mut rng)).collect()
            };
            tensors.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
        }
        let model = Transformer::from_tensors(tcfg, tensors, device, true, "TinyLm")?;
        Ok(Self {
            model,
            tokenizer: ByteTokenizer,
        })
    }
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut StdRng) -> f32 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
}

delegate_policy!(TinyLm);
