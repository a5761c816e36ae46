//! GGUF checkpoints of the `llama` architecture: the hyper-parameters from
//! the metadata, the tensors dequantized to f32 and renamed to the Hugging
//! Face names, and the rotary layout converted back.
//!
//! llama.cpp's converter permutes the rows of each query and key head for
//! interleaved rotary embedding (pairs `(x0, x1), (x2, x3), ...`); the model
//! here rotates halves (`x_i` with `x_{i + d/2}`), so the permutation is
//! undone on load: `reshape(heads, d/2, 2, in).transpose(1, 2)`.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};

use super::transformer::TransformerConfig;
use crate::error::{Error, Result};

/// Reads the header (metadata and tensor index) of a GGUF file.
pub(crate) fn read_content(path: &Path) -> Result<(Content, File)> {
    let source = path.display();
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let content = Content::read(&mut file)
        .map_err(|e| Error::model(&source, format!("not a readable GGUF file: {e}")))?;
    Ok((content, file))
}

fn meta<'a>(content: &'a Content, key: &str, source: &str) -> Result<&'a Value> {
    content
        .metadata
        .get(key)
        .ok_or_else(|| Error::model(source, format!("GGUF metadata `{key}` is missing")))
}

fn meta_usize(content: &Content, key: &str, source: &str) -> Result<usize> {
    let v = meta(content, key, source)?;
    let n = match v {
        Value::U8(x) => u64::from(*x),
        Value::U16(x) => u64::from(*x),
        Value::U32(x) => u64::from(*x),
        Value::U64(x) => *x,
        Value::I32(x) if *x >= 0 => *x as u64,
        Value::I64(x) if *x >= 0 => *x as u64,
        other => {
            return Err(Error::model(
                source,
                format!("GGUF metadata `{key}`: expected a non-negative integer, found {other:?}"),
            ))
        }
    };
    Ok(n as usize)
}

fn meta_f64(content: &Content, key: &str, source: &str) -> Result<Option<f64>> {
    Ok(match content.metadata.get(key) {
        None => None,
        Some(Value::F32(x)) => Some(f64::from(*x)),
        Some(Value::F64(x)) => Some(*x),
        Some(other) => {
            return Err(Error::model(
                source,
                format!("GGUF metadata `{key}`: expected a float, found {other:?}"),
            ))
        }
    })
}

/// The model's hyper-parameters from `llama.*` metadata.
pub(crate) fn config(content: &Content, source: &str) -> Result<TransformerConfig> {
    let arch = meta(content, "general.architecture", source)?
        .to_string()
        .map_err(|e| Error::model(source, format!("general.architecture: {e}")))?;
    if arch != "llama" {
        return Err(Error::model(
            source,
            format!("GGUF architecture `{arch}` is not supported (only `llama`)"),
        ));
    }
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(Error::model(
            source,
            "rotary frequency scaling (`rope_freqs.weight`) is not supported",
        ));
    }
    let embed = content
        .tensor_infos
        .get("token_embd.weight")
        .ok_or_else(|| Error::model(source, "tensor `token_embd.weight` is missing"))?;
    let vocab_size = embed.shape.dims()[0];
    let heads = meta_usize(content, "llama.attention.head_count", source)?;
    let kv_heads = match content.metadata.get("llama.attention.head_count_kv") {
        Some(_) => meta_usize(content, "llama.attention.head_count_kv", source)?,
        None => heads,
    };
    let hidden = meta_usize(content, "llama.embedding_length", source)?;
    let head_dim = match content.metadata.get("llama.rope.dimension_count") {
        Some(_) => meta_usize(content, "llama.rope.dimension_count", source)?,
        None => hidden / heads.max(1),
    };
    Ok(TransformerConfig {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: meta_usize(content, "llama.feed_forward_length", source)?,
        num_hidden_layers: meta_usize(content, "llama.block_count", source)?,
        num_attention_heads: heads,
        num_key_value_heads: Some(kv_heads),
        head_dim: Some(head_dim),
        rms_norm_eps: meta_f64(content, "llama.attention.layer_norm_rms_epsilon", source)?
            .unwrap_or(1e-5),
        rope_theta: meta_f64(content, "llama.rope.freq_base", source)?.unwrap_or(10_000.0),
        max_position_embeddings: meta_usize(content, "llama.context_length", source)?,
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        hidden_act: None,
        rope_scaling: None,
    })
}

/// The Hugging Face name of a GGUF tensor, if the architecture uses it.
fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let part = match tail {
        "attn_norm.weight" => "input_layernorm",
        "attn_q.weight" => "self_attn.q_proj",
        "attn_k.weight" => "self_attn.k_proj",
        "attn_v.weight" => "self_attn.v_proj",
        "attn_output.weight" => "self_attn.o_proj",
        "ffn_norm.weight" => "post_attention_layernorm",
        "ffn_gate.weight" => "mlp.gate_proj",
        "ffn_up.weight" => "mlp.up_proj",
        "ffn_down.weight" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{part}.weight"))
}

/// Undoes llama.cpp's interleaving permutation of a `[heads * d, in]`
/// query or key weight.
fn unpermute(w: &Tensor, heads: usize) -> Result<Tensor> {
    let (out, inp) = w.dims2()?;
    let d = out / heads;
    Ok(w.reshape((heads, d / 2, 2, inp))?
        .transpose(1, 2)?
        .reshape((out, inp))?)
}

/// Every tensor dequantized to f32, under its Hugging Face name.
pub(crate) fn tensors(
    content: &Content,
    file: &mut File,
    cfg: &TransformerConfig,
    source: &str,
) -> Result<HashMap<String, Tensor>> {
    let cpu = Device::Cpu;
    let mut out = HashMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else {
            return Err(Error::model(
                source,
                format!("GGUF tensor `{name}` is not part of the llama architecture"),
            ));
        };
        let q = content.tensor(file, name, &cpu).map_err(|e| {
            Error::model(
                source,
                format!("tensor `{name}`: {e} (truncated or corrupted file?)"),
            )
        })?;
        let t = q
            .dequantize(&cpu)
            .map_err(|e| Error::model(source, format!("tensor `{name}` ({:?}): {e}", q.dtype())))?;
        let t = if name.ends_with("attn_q.weight") {
            unpermute(&t, cfg.num_attention_heads)?
        } else if name.ends_with("attn_k.weight") {
            unpermute(&t, cfg.kv_heads())?
        } else {
            t
        };
        out.insert(hf, t);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight").as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn unpermute_inverts_the_interleaving() {
        // One head of d = 4 over in = 1: HF rows [a, b, c, d] are stored by
        // llama.cpp as [a, c, b, d] (pairs of the two halves).
        let gguf = Tensor::new(&[[0f32], [2.], [1.], [3.]], &Device::Cpu).unwrap();
        let hf = unpermute(&gguf, 1).unwrap();
        assert_eq!(
            hf.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0., 1., 2., 3.]
        );
    }
}
