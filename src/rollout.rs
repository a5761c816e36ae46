//! Rollouts: batched sampling of K responses for each of B prompts with a
//! KV cache, and the per-token log-probs the optimizers need.
//!
//! Prompts are left-padded into one batch, prefilled in one pass, then
//! decoded one token per step for all rows together. Each sample has its
//! own random stream derived from the seed and its index, so the same seed
//! gives the same samples whatever the batch size. A row stops at a stop
//! token (kept as the response's last token) or after `max_new_tokens`.
//!
//! The behaviour log-prob of a sampled token is the model's own
//! `log_softmax(logits)[token]`: before temperature, top-k and top-p, which
//! only choose what is sampled. [`sequence_logprobs`] recomputes the same
//! quantity for whole sequences in one forward (the reference's, or the
//! policy's with gradient).
//!
//! ```
//! use cgpo::policy::{TinyLm, TinyLmConfig, TextTokenizer};
//! use cgpo::rollout::{generate, sequence_logprobs, SamplingConfig};
//! let lm = TinyLm::new(&TinyLmConfig::default(), 0)?;
//! let prompts = vec![lm.tokenizer.encode("2+2=")?, lm.tokenizer.encode("Hi")?];
//! let cfg = SamplingConfig { max_new_tokens: 5, samples_per_prompt: 2, ..SamplingConfig::default() };
//! let out = generate(&lm, &lm.tokenizer, &prompts, &cfg)?;
//! assert_eq!(out.len(), 4);
//! let reference = sequence_logprobs(&lm, &out, false)?; // [4, longest response]
//! assert_eq!(reference.dims()[0], 4);
//! # Ok::<(), cgpo::Error>(())
//! ```

use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::ops;
use crate::policy::{KvCache, Policy, TextTokenizer, TokenBatch};

/// How responses are sampled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = all.
    pub top_k: usize,
    /// Keep the smallest set of tokens with this much probability; 1 = all.
    pub top_p: f32,
    pub seed: u64,
    /// K: responses per prompt.
    pub samples_per_prompt: usize,
    /// Stop a response at the tokenizer's stop tokens (else always
    /// `max_new_tokens`, as benchmarks do).
    pub stop_at_eos: bool,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Decoding::default().sampling(1, 0)
    }
}

/// How responses are decoded, as a run config sets it (`train.sampling`).
/// The trainer adds the seed and K of each step and task
/// ([`Decoding::sampling`]), so a config has no field it would ignore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Decoding {
    pub max_new_tokens: usize,
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = all.
    pub top_k: usize,
    /// Keep the smallest set of tokens with this much probability; 1 = all.
    pub top_p: f32,
    /// Stop a response at the tokenizer's stop tokens.
    pub stop_at_eos: bool,
}

impl Default for Decoding {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            stop_at_eos: true,
        }
    }
}

impl Decoding {
    /// The sampling settings for `samples_per_prompt` responses per prompt
    /// from `seed`.
    pub fn sampling(&self, samples_per_prompt: usize, seed: u64) -> SamplingConfig {
        SamplingConfig {
            max_new_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed,
            samples_per_prompt,
            stop_at_eos: self.stop_at_eos,
        }
    }
}

impl SamplingConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Rollout(m));
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return bad(format!(
                "temperature must be >= 0, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.samples_per_prompt == 0 || self.max_new_tokens == 0 {
            return bad("samples_per_prompt and max_new_tokens must be positive".into());
        }
        Ok(())
    }
}

/// N = B x K sampled responses; sample `i` answers prompt `prompt_index[i]`
/// (a prompt's K samples are consecutive).
#[derive(Clone, Debug, PartialEq)]
pub struct Rollouts {
    pub prompt_index: Vec<usize>,
    pub prompts: Vec<Vec<u32>>,
    /// Sampled ids; the stop token, when one ended the response, is last.
    pub responses: Vec<Vec<u32>>,
    /// Decoded responses without special tokens (empty once a caller has
    /// moved them into its samples).
    pub texts: Vec<String>,
    /// Behaviour log-prob of each response token.
    pub logprobs: Vec<Vec<f32>>,
    /// Whether a stop token ended the response (else `max_new_tokens` did).
    pub finished: Vec<bool>,
    /// Per response, the sum over its tokens of the entropy (nats) of the
    /// untempered distribution each token was drawn from; 0 for responses
    /// that were not sampled (teacher-forced).
    pub entropy: Vec<f64>,
    pub pad: u32,
}

impl Rollouts {
    pub fn len(&self) -> usize {
        self.responses.len()
    }

    pub fn is_empty(&self) -> bool {
        self.responses.is_empty()
    }

    /// The longest prompt and the longest response.
    pub fn shape(&self) -> (usize, usize) {
        let p = self.prompts.iter().map(Vec::len).max().unwrap_or(0);
        let r = self.responses.iter().map(Vec::len).max().unwrap_or(0);
        (p, r)
    }

    /// Prompt (left-padded) + response (right-padded) per sample: `[N, P + R]`
    /// with `(P, R) = shape()`. The response starts at column `P`.
    pub fn sequences(&self) -> Result<TokenBatch> {
        let (p, r) = self.shape();
        let mut ids = Vec::with_capacity(self.len() * (p + r));
        let mut mask = Vec::with_capacity(self.len() * (p + r));
        for (prompt, resp) in self.prompts.iter().zip(&self.responses) {
            let (lp, lr) = (p - prompt.len(), r - resp.len());
            ids.extend(std::iter::repeat_n(self.pad, lp));
            ids.extend(prompt.iter().chain(resp));
            ids.extend(std::iter::repeat_n(self.pad, lr));
            mask.extend(std::iter::repeat_n(false, lp));
            mask.extend(std::iter::repeat_n(true, prompt.len() + resp.len()));
            mask.extend(std::iter::repeat_n(false, lr));
        }
        TokenBatch::new(ids, mask, self.len(), p + r)
    }

    /// The samples at `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Rollouts {
        Rollouts {
            prompt_index: idx.iter().map(|&i| self.prompt_index[i]).collect(),
            prompts: idx.iter().map(|&i| self.prompts[i].clone()).collect(),
            responses: idx.iter().map(|&i| self.responses[i].clone()).collect(),
            texts: if self.texts.is_empty() {
                Vec::new()
            } else {
                idx.iter().map(|&i| self.texts[i].clone()).collect()
            },
            logprobs: idx.iter().map(|&i| self.logprobs[i].clone()).collect(),
            finished: idx.iter().map(|&i| self.finished[i]).collect(),
            entropy: idx
                .iter()
                .map(|&i| self.entropy.get(i).copied().unwrap_or(0.0))
                .collect(),
            pad: self.pad,
        }
    }

    /// `[N, R]` f32: 1 on response tokens, 0 on padding.
    pub fn response_mask(&self, device: &Device) -> Result<Tensor> {
        let (_, r) = self.shape();
        let m: Vec<f32> = self
            .responses
            .iter()
            .flat_map(|resp| (0..r).map(move |j| f32::from(u8::from(j < resp.len()))))
            .collect();
        Ok(Tensor::from_vec(m, (self.len(), r), device)?)
    }

    /// `[N, R]` behaviour log-probs, 0 on padding.
    pub fn behaviour_logprobs(&self, device: &Device) -> Result<Tensor> {
        let (_, r) = self.shape();
        let v: Vec<f32> = self
            .logprobs
            .iter()
            .flat_map(|lp| (0..r).map(move |j| lp.get(j).copied().unwrap_or(0.0)))
            .collect();
        Ok(Tensor::from_vec(v, (self.len(), r), device)?)
    }
}

/// Samples `samples_per_prompt` responses to each prompt (token ids, e.g.
/// from [`TextTokenizer::encode_chat`]).
pub fn generate(
    policy: &dyn Policy,
    tokenizer: &dyn TextTokenizer,
    prompts: &[Vec<u32>],
    cfg: &SamplingConfig,
) -> Result<Rollouts> {
    cfg.validate()?;
    let k = cfg.samples_per_prompt;
    let context = policy.context_len();
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(Error::Rollout(format!("prompt {i} is empty")));
        }
        if p.len() + cfg.max_new_tokens > context {
            return Err(Error::Rollout(format!(
                "prompt {i} has {} tokens; with max_new_tokens = {} it exceeds the context window of {context}",
                p.len(),
                cfg.max_new_tokens
            )));
        }
    }
    let prompt_index: Vec<usize> = (0..prompts.len())
        .flat_map(|i| std::iter::repeat_n(i, k))
        .collect();
    let rows: Vec<Vec<u32>> = prompt_index.iter().map(|&i| prompts[i].clone()).collect();
    let n = rows.len();
    let pad = tokenizer.pad_token();
    let stop: &[u32] = if cfg.stop_at_eos {
        tokenizer.stop_tokens()
    } else {
        &[]
    };
    let mut rngs: Vec<StdRng> = (0..n as u64)
        .map(|i| StdRng::seed_from_u64(mix(cfg.seed, i)))
        .collect();
    let mut responses = vec![Vec::new(); n];
    let mut logprobs = vec![Vec::new(); n];
    let mut finished = vec![false; n];
    let mut entropy = vec![0.0f64; n];
    let mut cache = KvCache::new();
    let mut logits = policy.decode(&TokenBatch::left_padded(&rows, pad)?, &mut cache)?;
    for step in 0..cfg.max_new_tokens {
        let host = logits.to_dtype(candle_core::DType::F32)?.to_vec2::<f32>()?;
        let picks: Vec<Option<(u32, f32, f64)>> = host
            .par_iter()
            .zip(rngs.par_iter_mut())
            .zip(finished.par_iter())
            .map(|((row, rng), &done)| (!done).then(|| sample(row, cfg, rng)))
            .collect();
        let mut next = vec![pad; n];
        for (r, pick) in picks.into_iter().enumerate() {
            if let Some((token, lp, h)) = pick {
                responses[r].push(token);
                logprobs[r].push(lp);
                entropy[r] += h;
                next[r] = token;
                finished[r] = stop.contains(&token);
            }
        }
        if finished.iter().all(|&f| f) || step + 1 == cfg.max_new_tokens {
            break;
        }
        logits = policy.decode(&TokenBatch::column(&next), &mut cache)?;
    }
    let texts = responses
        .iter()
        .map(|r| tokenizer.decode(r))
        .collect::<Result<Vec<_>>>()?;
    Ok(Rollouts {
        prompt_index,
        prompts: rows,
        responses,
        texts,
        logprobs,
        finished,
        entropy,
        pad,
    })
}

/// SplitMix64 of the seed and a sample index: independent streams.
fn mix(seed: u64, i: u64) -> u64 {
    let mut z = seed ^ i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Picks a token from one row of logits; returns it with its (untempered)
/// log-prob and the entropy of the untempered distribution,
/// `H = lse - Σ_v p_v z_v` (one more pass over the weights already made).
fn sample(logits: &[f32], cfg: &SamplingConfig, rng: &mut StdRng) -> (u32, f32, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // exp(z - max) once, in f32 (the costly part over a large vocabulary);
    // sums in f64. At temperature 1 the same values are the weights.
    let unit: Vec<f32> = logits.iter().map(|&z| (z - max).exp()).collect();
    let (mass, weighted) = unit
        .iter()
        .zip(logits)
        .fold((0.0f64, 0.0f64), |(m, wz), (&w, &z)| {
            (m + f64::from(w), wz + f64::from(w) * f64::from(z - max))
        });
    let lse = f64::from(max) + mass.ln();
    let entropy = (mass.ln() - weighted / mass).max(0.0);
    let logprob = |t: usize| (f64::from(logits[t]) - lse) as f32;
    if cfg.temperature == 0.0 {
        let best = argmax(logits);
        return (best as u32, logprob(best), entropy);
    }
    let inv_t = 1.0 / cfg.temperature;
    let weight = |t: usize| -> f64 {
        if inv_t == 1.0 {
            f64::from(unit[t])
        } else {
            f64::from(((logits[t] - max) * inv_t).exp())
        }
    };
    let token = if cfg.top_k == 0 && cfg.top_p >= 1.0 {
        let weights: Vec<f64> = if inv_t == 1.0 {
            unit.iter().map(|&w| f64::from(w)).collect()
        } else {
            (0..logits.len()).map(weight).collect()
        };
        let total: f64 = weights.iter().sum();
        let mut u = rng.random::<f64>() * total;
        let mut pick = argmax(logits);
        for (t, w) in weights.iter().enumerate() {
            u -= w;
            if u <= 0.0 {
                pick = t;
                break;
            }
        }
        pick
    } else {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        let keep = if cfg.top_k == 0 {
            logits.len()
        } else {
            cfg.top_k.min(logits.len())
        };
        let by_logit = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]);
        if keep < order.len() {
            order.select_nth_unstable_by(keep - 1, by_logit);
            order.truncate(keep);
        }
        order.sort_unstable_by(by_logit);
        let weights: Vec<f64> = order.iter().map(|&t| weight(t)).collect();
        let total: f64 = weights.iter().sum();
        let mut kept = 0.0;
        let mut cut = order.len();
        for (i, w) in weights.iter().enumerate() {
            kept += w / total;
            if kept >= f64::from(cfg.top_p) {
                cut = i + 1;
                break;
            }
        }
        let kept_total: f64 = weights[..cut].iter().sum();
        let mut u = rng.random::<f64>() * kept_total;
        let mut pick = order[0];
        for (i, w) in weights[..cut].iter().enumerate() {
            u -= w;
            if u <= 0.0 {
                pick = order[i];
                break;
            }
        }
        pick
    };
    (token as u32, logprob(token), entropy)
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv {
                (i, x)
            } else {
                (bi, bv)
            }
        })
        .0
}

/// The logits that predict each response token, `[N * R, V]` (row
/// `i * R + j` predicts token `j` of sample `i`; padding rows are
/// arbitrary), from one batched forward over the sequences. `grad`: through
/// the differentiable path (the policy in a loss); else without autograd.
pub fn response_logits(policy: &dyn Policy, rollouts: &Rollouts, grad: bool) -> Result<Tensor> {
    let batch = rollouts.sequences()?;
    let (p, r) = rollouts.shape();
    let logits = if grad {
        policy.forward(&batch)?
    } else {
        policy.forward_no_grad(&batch)?
    };
    let v = logits.dim(2)?;
    // The logits at column c predict the token at column c + 1.
    Ok(logits
        .narrow(1, p - 1, r)?
        .reshape((rollouts.len() * r, v))?)
}

/// Log-probs `[N, R]` of the response tokens from [`response_logits`]
/// (0 on padding), through the fused `ops::token_logprobs`.
pub fn logprobs_from_logits(logits: &Tensor, rollouts: &Rollouts) -> Result<Tensor> {
    let device = logits.device();
    let (_, r) = rollouts.shape();
    let n = rollouts.len();
    let targets: Vec<u32> = rollouts
        .responses
        .iter()
        .flat_map(|resp| (0..r).map(move |j| resp.get(j).copied().unwrap_or(0)))
        .collect();
    let targets = Tensor::from_vec(targets, n * r, device)?;
    let mask = rollouts.response_mask(device)?.reshape(n * r)?;
    let lp = ops::token_logprobs(logits, &targets, Some(&mask))?;
    Ok(lp.reshape((n, r))?)
}

/// Log-probs `[N, R]` of the sampled response tokens under `policy`, from
/// one batched forward over the sequences (0 on padding). `grad`: through
/// the differentiable path (the policy in a loss); else without autograd
/// (the reference, or old log-probs).
pub fn sequence_logprobs(policy: &dyn Policy, rollouts: &Rollouts, grad: bool) -> Result<Tensor> {
    logprobs_from_logits(&response_logits(policy, rollouts, grad)?, rollouts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_head() {
        let logits = [0.0f32, 3.0, 1.0, 2.9];
        let mut rng = StdRng::seed_from_u64(1);
        let cfg = SamplingConfig {
            top_k: 1,
            ..SamplingConfig::default()
        };
        for _ in 0..20 {
            assert_eq!(sample(&logits, &cfg, &mut rng).0, 1);
        }
        let cfg = SamplingConfig {
            top_p: 0.5,
            ..SamplingConfig::default()
        };
        for _ in 0..50 {
            let t = sample(&logits, &cfg, &mut rng).0;
            assert!(t == 1 || t == 3, "top_p 0.5 sampled {t}");
        }
        let (t, lp, h) = sample(
            &logits,
            &SamplingConfig {
                temperature: 0.0,
                ..SamplingConfig::default()
            },
            &mut rng,
        );
        let lse = logits.iter().map(|&z| f64::from(z).exp()).sum::<f64>().ln();
        assert_eq!(t, 1);
        assert!((f64::from(lp) - (3.0 - lse)).abs() < 1e-6);
        // H = -Σ p log p of the untempered distribution, by hand.
        let by_hand: f64 = logits
            .iter()
            .map(|&z| {
                let lp = f64::from(z) - lse;
                -lp.exp() * lp
            })
            .sum();
        assert!((h - by_hand).abs() < 1e-6, "{h} vs {by_hand}");
    }

    #[test]
    fn entropy_of_uniform_and_of_a_point_mass() {
        let mut rng = StdRng::seed_from_u64(3);
        let cfg = SamplingConfig::default();
        let (_, _, h) = sample(&[1.5f32; 8], &cfg, &mut rng);
        assert!((h - 8f64.ln()).abs() < 1e-6, "{h}");
        let (_, _, h) = sample(&[0.0f32, 80.0, 0.0], &cfg, &mut rng);
        assert!(h < 1e-6, "{h}");
    }

    #[test]
    fn full_sampling_follows_the_distribution() {
        let logits = [0.0f32, (3.0f32).ln()]; // p = 0.25, 0.75
        let mut rng = StdRng::seed_from_u64(7);
        let cfg = SamplingConfig::default();
        let ones = (0..4000)
            .filter(|_| sample(&logits, &cfg, &mut rng).0 == 1)
            .count();
        assert!((2850..3150).contains(&ones), "{ones} of 4000");
    }

    #[test]
    fn bad_sampling_config_is_an_error() {
        for cfg in [
            SamplingConfig {
                top_p: 0.0,
                ..SamplingConfig::default()
            },
            SamplingConfig {
                temperature: -1.0,
                ..SamplingConfig::default()
            },
            SamplingConfig {
                samples_per_prompt: 0,
                ..SamplingConfig::default()
            },
        ] {
            assert!(cfg.validate().is_err());
        }
    }
}
