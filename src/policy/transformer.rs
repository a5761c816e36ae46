//! The Llama-family decoder (RMSNorm, rotary positions, grouped-query
//! attention, SwiGLU) on candle, in f32, used by both [`super::Llama`] and
//! [`super::TinyLm`].
//!
//! Weights are kept under their Hugging Face names (`model.layers.0.
//! self_attn.q_proj.weight`, ...) with the Hugging Face rotary layout (the
//! two halves of each head rotate together). A trainable model holds them
//! as [`Var`]s; a frozen one as plain tensors.
//!
//! Two numerical paths share one definition: with gradients, RMSNorm,
//! rotary embedding and softmax are differentiable compositions (candle-nn's
//! fused versions have no backward and would silently stop gradients);
//! without, the fused kernels are used.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use serde::{Deserialize, Serialize};

use super::batch::{KvCache, TokenBatch};
use super::Policy;
use crate::error::{Error, Result};

/// The hyper-parameters, with the field names of a Hugging Face
/// `config.json` for `LlamaForCausalLM` (unknown keys there are ignored).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransformerConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no grouping).
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Only `silu` is supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden_act: Option<String>,
    /// Rotary scaling is not supported; present and non-null is an error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_theta() -> f64 {
    10_000.0
}

/// Tensors per layer, in checkpoint order.
const LAYER_TENSORS: [&str; 9] = [
    "input_layernorm",
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "post_attention_layernorm",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
];

impl TransformerConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Checks the numbers fit together; the message says which do not.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("max_position_embeddings", self.max_position_embeddings),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("`{name}` must be positive"));
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return Err(format!(
                "`num_attention_heads` ({}) is not a multiple of `num_key_value_heads` ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 || self.head_dim() == 0 {
            return Err(format!("head dimension {} must be even", self.head_dim()));
        }
        if let Some(act) = &self.hidden_act {
            if act != "silu" {
                return Err(format!(
                    "`hidden_act` {act:?} is not supported (only \"silu\")"
                ));
            }
        }
        if self.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
            return Err("`rope_scaling` is not supported".into());
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return Err("`rms_norm_eps` and `rope_theta` must be positive".into());
        }
        Ok(())
    }

    /// Every weight's name and shape, in checkpoint order.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, v) = (self.hidden_size, self.intermediate_size, self.vocab_size);
        let (q, kv) = (
            self.num_attention_heads * self.head_dim(),
            self.kv_heads() * self.head_dim(),
        );
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.num_hidden_layers {
            let shapes = [
                vec![h],
                vec![q, h],
                vec![kv, h],
                vec![kv, h],
                vec![h, q],
                vec![h],
                vec![i, h],
                vec![i, h],
                vec![h, i],
            ];
            for (name, shape) in LAYER_TENSORS.iter().zip(shapes) {
                out.push((format!("model.layers.{l}.{name}.weight"), shape));
            }
        }
        out.push(("model.norm.weight".into(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".into(), vec![v, h]));
        }
        out
    }

    /// Number of parameters.
    pub fn num_params(&self) -> usize {
        self.weight_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }
}

/// A Llama-family decoder with its weights.
pub struct Transformer {
    cfg: TransformerConfig,
    names: Vec<String>,
    tensors: Vec<Tensor>,
    /// Same order as `tensors`; empty when frozen.
    vars: Vec<Var>,
    cos: Tensor,
    sin: Tensor,
    device: Device,
    /// Where the weights came from, for error messages.
    source: String,
}

impl Transformer {
    /// Builds the model from named tensors (any float dtype; converted to
    /// f32). Every expected weight must be present with its shape; names
    /// the architecture does not use are an error, except rotary buffers
    /// (`*.rotary_emb.inv_freq`) and, with tied embeddings, `lm_head.weight`.
    pub fn from_tensors(
        cfg: TransformerConfig,
        mut tensors: HashMap<String, Tensor>,
        device: &Device,
        trainable: bool,
        source: &str,
    ) -> Result<Self> {
        cfg.validate().map_err(|m| Error::model(source, m))?;
        crate::threads::pin_candle_threads();
        let mut names = Vec::new();
        let mut values = Vec::new();
        let mut problems = Vec::new();
        for (name, shape) in cfg.weight_shapes() {
            match tensors.remove(&name) {
                None => problems.push(format!("missing tensor `{name}`")),
                Some(t) if t.dims() != shape.as_slice() => problems.push(format!(
                    "tensor `{name}` has shape {:?}, the config implies {shape:?}",
                    t.dims()
                )),
                Some(t) => {
                    values.push(t.to_dtype(DType::F32)?.to_device(device)?);
                    names.push(name);
                }
            }
        }
        let mut extra: Vec<_> = tensors
            .into_keys()
            .filter(|n| {
                let buffer = n.ends_with("rotary_emb.inv_freq");
                let tied_head = cfg.tie_word_embeddings && n == "lm_head.weight";
                !(buffer || tied_head)
            })
            .collect();
        extra.sort();
        if !extra.is_empty() {
            problems.push(format!("unexpected tensors: {}", extra.join(", ")));
        }
        if !problems.is_empty() {
            let shown: Vec<_> = problems.iter().take(8).cloned().collect();
            let more = problems.len().saturating_sub(8);
            let tail = if more > 0 {
                format!("; ... and {more} more")
            } else {
                String::new()
            };
            return Err(Error::model(source, format!("{}{tail}", shown.join("; "))));
        }
        let (vars, tensors) = if trainable {
            let vars = values
                .iter()
                .map(Var::from_tensor)
                .collect::<candle_core::Result<Vec<_>>>()?;
            let tensors = vars.iter().map(|v| v.as_tensor().clone()).collect();
            (vars, tensors)
        } else {
            (Vec::new(), values)
        };
        let (cos, sin) = rotary_tables(&cfg, device)?;
        Ok(Self {
            cfg,
            names,
            tensors,
            vars,
            cos,
            sin,
            device: device.clone(),
            source: source.to_string(),
        })
    }

    pub fn config(&self) -> &TransformerConfig {
        &self.cfg
    }

    /// The named weights (variables' tensors when trainable).
    pub fn named_tensors(&self) -> impl Iterator<Item = (&str, &Tensor)> {
        self.names.iter().map(String::as_str).zip(&self.tensors)
    }

    fn embed(&self) -> &Tensor {
        &self.tensors[0]
    }

    fn layer(&self, l: usize, i: usize) -> &Tensor {
        &self.tensors[1 + l * LAYER_TENSORS.len() + i]
    }

    fn final_norm(&self) -> &Tensor {
        &self.tensors[1 + self.cfg.num_hidden_layers * LAYER_TENSORS.len()]
    }

    fn lm_head(&self) -> &Tensor {
        if self.cfg.tie_word_embeddings {
            self.embed()
        } else {
            &self.tensors[2 + self.cfg.num_hidden_layers * LAYER_TENSORS.len()]
        }
    }

    /// The shared forward pass. `cache`: decode against it (and store the
    /// new keys/values) or `None` for a whole-sequence pass. `last_only`:
    /// logits of each row's last position only (`[B, V]`), else `[B, T, V]`.
    fn run(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        grad: bool,
        last_only: bool,
    ) -> Result<Tensor> {
        let (b, t) = (batch.rows(), batch.len());
        if batch.is_empty() {
            return Err(Error::Rollout("empty token batch".into()));
        }
        let vocab = self.cfg.vocab_size as u32;
        if let Some(bad) = batch.ids().iter().find(|&&id| id >= vocab) {
            return Err(Error::model(
                &self.source,
                format!("token id {bad} is outside the vocabulary of {vocab}"),
            ));
        }
        let mut scratch = KvCache::new();
        let store = cache.is_some();
        let cache = cache.unwrap_or(&mut scratch);
        let step = cache.advance(batch)?;
        let max_pos = step.positions.iter().copied().max().unwrap_or(0) as usize;
        if max_pos >= self.cfg.max_position_embeddings {
            return Err(Error::Rollout(format!(
                "sequence of {} tokens exceeds the context window of {}",
                max_pos + 1,
                self.cfg.max_position_embeddings
            )));
        }
        let mask = step.mask_tensor(&self.device)?;
        let pos = step.positions_tensor(&self.device)?;
        let half = self.cfg.head_dim() / 2;
        let cos = self.cos.index_select(&pos, 0)?.reshape((b, t, half))?;
        let sin = self.sin.index_select(&pos, 0)?.reshape((b, t, half))?;

        // Without gradients the weights are used detached: a variable would
        // make candle record every op, and the KV cache would then keep the
        // whole graph of every decoding step alive.
        let weight = |w: &Tensor| if grad { w.clone() } else { w.detach() };
        let ids = Tensor::from_slice(batch.ids(), b * t, &self.device)?;
        let mut x =
            weight(self.embed())
                .index_select(&ids, 0)?
                .reshape((b, t, self.cfg.hidden_size))?;
        let eps = self.cfg.rms_norm_eps;
        let (nh, nkv, hd) = (
            self.cfg.num_attention_heads,
            self.cfg.kv_heads(),
            self.cfg.head_dim(),
        );
        for l in 0..self.cfg.num_hidden_layers {
            let h = rms_norm(&x, &weight(self.layer(l, 0)), eps, grad)?;
            let heads = |w: &Tensor, n: usize| -> Result<Tensor> {
                Ok(linear(&h, w)?
                    .reshape((b, t, n, hd))?
                    .transpose(1, 2)?
                    .contiguous()?)
            };
            let q = rope(&heads(&weight(self.layer(l, 1)), nh)?, &cos, &sin, grad)?;
            let k = rope(&heads(&weight(self.layer(l, 2)), nkv)?, &cos, &sin, grad)?;
            let v = heads(&weight(self.layer(l, 3)), nkv)?;
            let (k, v) = if store {
                cache.append(l, k, v)?
            } else {
                (k, v)
            };
            let a = attention(&q, &k, &v, mask.as_ref(), grad)?
                .transpose(1, 2)?
                .reshape((b, t, nh * hd))?;
            x = (x + linear(&a, &weight(self.layer(l, 4)))?)?;
            let h = rms_norm(&x, &weight(self.layer(l, 5)), eps, grad)?;
            let gate = linear(&h, &weight(self.layer(l, 6)))?.silu()?;
            let up = linear(&h, &weight(self.layer(l, 7)))?;
            x = (x + linear(&(gate * up)?, &weight(self.layer(l, 8)))?)?;
        }
        if last_only {
            x = x.narrow(1, t - 1, 1)?;
        }
        let x = rms_norm(&x, &weight(self.final_norm()), eps, grad)?;
        let logits = linear(&x, &weight(self.lm_head()))?;
        Ok(if last_only {
            logits.squeeze(1)?
        } else {
            logits
        })
    }

    fn check_loaded(&self, path: &Path, map: &HashMap<String, Tensor>) -> Result<()> {
        let mut problems = Vec::new();
        for (name, t) in self.named_tensors() {
            match map.get(name) {
                None => problems.push(format!("missing tensor `{name}`")),
                Some(l) if l.dims() != t.dims() => problems.push(format!(
                    "tensor `{name}` has shape {:?}, the model has {:?}",
                    l.dims(),
                    t.dims()
                )),
                Some(l) if l.dtype() != DType::F32 => {
                    problems.push(format!("tensor `{name}` is {:?}, expected f32", l.dtype()))
                }
                Some(_) => {}
            }
        }
        if map.len() != self.names.len() && problems.is_empty() {
            problems.push(format!(
                "{} tensors in the file, the model has {}",
                map.len(),
                self.names.len()
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::model(path.display(), problems.join("; ")))
        }
    }
}

/// `cos`/`sin` of `position * theta^(-2i/d)`, `[max_positions, head_dim/2]`.
fn rotary_tables(cfg: &TransformerConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim() / 2;
    let n = cfg.max_position_embeddings;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for p in 0..n {
        for i in 0..half {
            let freq = cfg
                .rope_theta
                .powf(-((2 * i) as f64) / cfg.head_dim() as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok((
        Tensor::from_vec(cos, (n, half), device)?,
        Tensor::from_vec(sin, (n, half), device)?,
    ))
}

/// `x @ w^T` over the last dimension of a `[B, T, in]` input.
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, t, i) = x.dims3()?;
    let out = w.dim(0)?;
    Ok(x.reshape((b * t, i))?
        .matmul(&w.t()?)?
        .reshape((b, t, out))?)
}

fn rms_norm(x: &Tensor, w: &Tensor, eps: f64, grad: bool) -> Result<Tensor> {
    if grad {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        Ok(x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)?)
    } else {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, w, eps as f32)?)
    }
}

/// Rotary embedding, Hugging Face layout, per-row positions: `x` is
/// `[B, H, T, D]`, `cos`/`sin` `[B, T, D/2]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, grad: bool) -> Result<Tensor> {
    if !grad {
        return Ok(candle_nn::rotary_emb::rope(x, cos, sin)?);
    }
    let half = x.dim(D::Minus1)? / 2;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.unsqueeze(1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.unsqueeze(1)?;
    let x1 = x.narrow(D::Minus1, 0, half)?;
    let x2 = x.narrow(D::Minus1, half, half)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    Ok((x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?)
}

/// Grouped-query attention without copying the key/value heads: the query
/// heads that share a key/value head are stacked along the time axis.
/// `q` `[B, H, T, D]`, `k`/`v` `[B, KVH, Tk, D]`, `mask` `[B, 1, T, Tk]`.
fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: Option<&Tensor>,
    grad: bool,
) -> Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (kvh, tk) = (k.dim(1)?, k.dim(2)?);
    let rep = h / kvh;
    let q = q.reshape((b, kvh, rep * t, d))?;
    let scores = (q.matmul(&k.t()?)? * (1.0 / (d as f64).sqrt()))?.reshape((b, h, t, tk))?;
    let scores = match mask {
        Some(m) => scores.broadcast_add(m)?,
        None => scores,
    };
    let probs = if grad {
        candle_nn::ops::softmax(&scores, D::Minus1)?
    } else {
        candle_nn::ops::softmax_last_dim(&scores)?
    };
    Ok(probs
        .reshape((b, kvh, rep * t, tk))?
        .matmul(v)?
        .reshape((b, h, t, d))?)
}

impl Policy for Transformer {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }

    fn context_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward(&self, batch: &TokenBatch) -> Result<Tensor> {
        self.run(batch, None, true, false)
    }

    fn forward_no_grad(&self, batch: &TokenBatch) -> Result<Tensor> {
        Ok(self.run(batch, None, false, false)?.detach())
    }

    fn decode(&self, batch: &TokenBatch, cache: &mut KvCache) -> Result<Tensor> {
        Ok(self.run(batch, Some(cache), false, true)?.detach())
    }

    fn vars(&self) -> Vec<(String, Var)> {
        self.names
            .iter()
            .cloned()
            .zip(self.vars.iter().cloned())
            .collect()
    }

    fn save(&self, path: &Path) -> Result<()> {
        let map: HashMap<String, Tensor> = self
            .named_tensors()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect();
        let tmp = path.with_extension("safetensors.partial");
        candle_core::safetensors::save(&map, &tmp)
            .map_err(|e| Error::model(tmp.display(), e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    }

    fn load(&mut self, path: &Path) -> Result<()> {
        if !path.is_file() {
            return Err(Error::model(path.display(), "no such file"));
        }
        let map = candle_core::safetensors::load(path, &self.device).map_err(|e| {
            Error::model(
                path.display(),
                format!("not a readable safetensors file: {e}"),
            )
        })?;
        self.check_loaded(path, &map)?;
        for (i, name) in self.names.iter().enumerate() {
            let t = &map[name];
            if self.vars.is_empty() {
                self.tensors[i] = t.clone();
            } else {
                self.vars[i].set(t)?;
            }
        }
        Ok(())
    }

    fn frozen(&self) -> Result<Box<dyn Policy>> {
        let tensors = self
            .tensors
            .iter()
            .map(|t| Ok(t.copy()?.detach()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Self {
            cfg: self.cfg.clone(),
            names: self.names.clone(),
            tensors,
            vars: Vec::new(),
            cos: self.cos.clone(),
            sin: self.sin.clone(),
            device: self.device.clone(),
            source: format!("{} (frozen)", self.source),
        }))
    }
}

#[cfg(test)]
mod tests {
    use crate::policy::{KvCache, Policy, TinyLm, TinyLmConfig, TokenBatch};

    #[test]
    fn no_grad_paths_record_no_graph_on_trainable_weights() {
        let tiny = TinyLm::new(&TinyLmConfig::default(), 3).unwrap();
        assert!(!tiny.model.vars().is_empty());
        let batch = TokenBatch::left_padded(&[vec![5, 6, 7], vec![8]], 0).unwrap();
        let mut cache = KvCache::new();
        let logits = tiny.model.decode(&batch, &mut cache).unwrap();
        assert!(!logits.track_op());
        for (k, v) in (0..2).filter_map(|l| cache.layer(l)) {
            assert!(!k.track_op() && !v.track_op(), "the KV cache holds a graph");
        }
        assert!(!tiny.model.forward_no_grad(&batch).unwrap().track_op());
        assert!(tiny.model.forward(&batch).unwrap().track_op());
    }
}
