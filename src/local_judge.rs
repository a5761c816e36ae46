//! The local backend for LLM judges: a causal LM run in-process with
//! candle, behind the same [`LlmBackend`] trait as the HTTP backend.
//!
//! For each judge question the messages are rendered with the model's chat
//! template (ending at the start of the assistant turn), one forward pass
//! gives the next-token logits, and the log-probabilities of the positive
//! and negative answer words are read from the log-softmax: each word's
//! probability is the sum over the tokens that spell it at the start of an
//! answer ("Yes", " Yes", "yes", ...), as the tokenizer lists them.
//!
//! Any model implements [`CausalLm`] by returning its last-position logits;
//! the tokenizer side is [`ChatTokenizer`].
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::{Device, Tensor};
//! use cgpo::judges::llm::{JudgeTemplate, LlmJudge};
//! use cgpo::judges::{Judge, Message, Prompt, SampleView};
//! use cgpo::local_judge::{CausalLm, ChatTokenizer, LocalLlmBackend};
//!
//! /// Vocabulary: 0 = "Yes", 1 = "No", 2 = anything else. Says "Yes" when the
//! /// rendered question contains "Paris".
//! struct Toy;
//! impl ChatTokenizer for Toy {
//!     fn encode_chat(&self, messages: &[Message]) -> cgpo::Result<Vec<u32>> {
//!         Ok(messages.iter().flat_map(|m| m.content.split_whitespace()).map(|w| if w == "Paris" { 0 } else { 2 }).collect())
//!     }
//!     fn answer_tokens(&self, word: &str) -> cgpo::Result<Vec<u32>> {
//!         Ok(vec![if word == "Yes" { 0 } else { 1 }])
//!     }
//! }
//! impl CausalLm for Toy {
//!     fn next_token_logits(&self, tokens: &[u32]) -> cgpo::Result<Tensor> {
//!         let yes = if tokens.contains(&0) { 2.0f32 } else { -2.0 };
//!         Ok(Tensor::new(&[yes, 0.0, -5.0], &Device::Cpu)?)
//!     }
//! }
//!
//! let backend = LocalLlmBackend::new(Arc::new(Toy), Arc::new(Toy));
//! let judge = LlmJudge::new("fact", JudgeTemplate::factuality(), Arc::new(backend));
//! let (p, m) = (Prompt::from("Capital of France?"), serde_json::json!({"answer": "a city"}));
//! let out = judge.judge(&[SampleView::new("a", &p, "Paris", &m), SampleView::new("b", &p, "Lyon", &m)]);
//! assert!(out[0].is_pass() && out[1].is_fail());
//! ```

use std::sync::Arc;

use candle_core::{DType, Tensor, D};
use cgpo_judges::llm::{AnswerScore, LlmBackend, LlmRequest};
use cgpo_judges::Message;

use crate::error::Result;
use crate::policy::{KvCache, Policy, TextTokenizer, TokenBatch};

/// A language model that gives next-token logits for one token sequence.
pub trait CausalLm: Send + Sync {
    /// Logits over the vocabulary for the token after `tokens`, shape `[V]`.
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Tensor>;

    /// Next-token logits `[B, V]` for several sequences; by default one
    /// [`CausalLm::next_token_logits`] call each. Models override it with
    /// one padded forward.
    fn next_token_logits_batch(&self, seqs: &[Vec<u32>]) -> Result<Tensor> {
        let rows = seqs
            .iter()
            .map(|s| self.next_token_logits(s))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::stack(&rows, 0)?)
    }
}

/// The tokenizer side of a local judge model.
pub trait ChatTokenizer: Send + Sync {
    /// The messages rendered with the chat template, up to and including the
    /// start of the assistant's turn, as token ids.
    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>>;

    /// The token ids that begin an answer consisting of `word` (its case and
    /// leading-space variants that are single tokens).
    fn answer_tokens(&self, word: &str) -> Result<Vec<u32>>;
}

/// Every [`Policy`] is a judge model: one left-padded forward pass through
/// a fresh cache gives the last position's logits.
impl<P: Policy + ?Sized> CausalLm for P {
    fn next_token_logits(&self, tokens: &[u32]) -> Result<Tensor> {
        last_logits(self, tokens)
    }

    fn next_token_logits_batch(&self, seqs: &[Vec<u32>]) -> Result<Tensor> {
        last_logits_batch(self, seqs)
    }
}

/// Next-token logits of one sequence through a fresh cache.
fn last_logits(model: &(impl Policy + ?Sized), tokens: &[u32]) -> Result<Tensor> {
    let batch = TokenBatch::left_padded(&[tokens.to_vec()], 0)?;
    Ok(model.decode(&batch, &mut KvCache::new())?.squeeze(0)?)
}

/// Next-token logits `[B, V]` of several sequences in one left-padded pass.
fn last_logits_batch(model: &(impl Policy + ?Sized), seqs: &[Vec<u32>]) -> Result<Tensor> {
    let batch = TokenBatch::left_padded(seqs, 0)?;
    model.decode(&batch, &mut KvCache::new())
}

/// Every [`TextTokenizer`] serves a judge: its chat template, and the
/// answer words' single-token spellings.
impl<T: TextTokenizer + ?Sized> ChatTokenizer for T {
    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        TextTokenizer::encode_chat(self, messages)
    }

    fn answer_tokens(&self, word: &str) -> Result<Vec<u32>> {
        answer_variants(self, word)
    }
}

/// Single-token spellings of an answer word: as given, lower-case and
/// capitalised, each with and without a leading space.
fn answer_variants(t: &(impl TextTokenizer + ?Sized), word: &str) -> Result<Vec<u32>> {
    let lower = word.to_lowercase();
    let capital: String = lower
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(lower.chars().skip(1))
        .collect();
    let mut ids = Vec::new();
    for w in [word, &lower, &capital] {
        for v in [w.to_string(), format!(" {w}")] {
            if let [id] = t.encode(&v)?.as_slice() {
                if !ids.contains(id) {
                    ids.push(*id);
                }
            }
        }
    }
    Ok(ids)
}

pub struct LocalLlmBackend {
    model: Arc<dyn CausalLm>,
    tokenizer: Arc<dyn ChatTokenizer>,
    batch_size: usize,
}

impl LocalLlmBackend {
    /// Questions go to the model 8 at a time.
    pub fn new(model: Arc<dyn CausalLm>, tokenizer: Arc<dyn ChatTokenizer>) -> Self {
        Self {
            model,
            tokenizer,
            batch_size: 8,
        }
    }

    /// Questions per forward pass (at least 1).
    pub fn with_batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// The answer words' log-probabilities for a batch of rendered questions.
    fn ask(&self, requests: &[&LlmRequest], tokens: &[Vec<u32>]) -> Result<Vec<AnswerScore>> {
        let logits = self
            .model
            .next_token_logits_batch(tokens)?
            .to_dtype(DType::F32)?;
        let log_probs = log_softmax(&logits)?;
        requests
            .iter()
            .zip(&log_probs)
            .map(|(request, row)| {
                let word = |w: &str| -> Result<Option<f32>> {
                    let ids = self.tokenizer.answer_tokens(w)?;
                    let probs: Vec<f64> = ids
                        .iter()
                        .filter_map(|&i| row.get(i as usize))
                        .map(|&lp| f64::from(lp).exp())
                        .collect();
                    Ok((!probs.is_empty()).then(|| probs.iter().sum::<f64>().ln() as f32))
                };
                Ok(AnswerScore::from_logprobs(
                    word(&request.positive)?,
                    word(&request.negative)?,
                ))
            })
            .collect()
    }
}

/// Row-wise log-softmax of `[B, V]` logits, in f32.
fn log_softmax(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    let max = logits.max_keepdim(D::Minus1)?;
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&lse)?.to_vec2::<f32>()?)
}

impl LlmBackend for LocalLlmBackend {
    fn score(&self, requests: &[LlmRequest]) -> Vec<std::result::Result<AnswerScore, String>> {
        let fail = |e: crate::Error| format!("local judge model: {e}");
        let mut out: Vec<std::result::Result<AnswerScore, String>> = requests
            .iter()
            .map(|_| Err("not asked".to_owned()))
            .collect();
        // Questions that fail to encode keep their own error; the rest go
        // to the model in batches.
        let (mut ready, mut tokens) = (Vec::new(), Vec::new());
        for (i, r) in requests.iter().enumerate() {
            match self.tokenizer.encode_chat(&r.messages) {
                Ok(t) => {
                    ready.push(i);
                    tokens.push(t);
                }
                Err(e) => out[i] = Err(fail(e)),
            }
        }
        let n = self.batch_size;
        for (indices, tokens) in ready.chunks(n).zip(tokens.chunks(n)) {
            let asked: Vec<&LlmRequest> = indices.iter().map(|&i| &requests[i]).collect();
            match self.ask(&asked, tokens) {
                Ok(scores) => {
                    for (&i, score) in indices.iter().zip(scores) {
                        out[i] = Ok(score);
                    }
                }
                Err(e) => {
                    let message = fail(e);
                    for &i in indices {
                        out[i] = Err(message.clone());
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    struct Fixed(Vec<f32>, bool);

    impl CausalLm for Fixed {
        fn next_token_logits(&self, _: &[u32]) -> Result<Tensor> {
            if self.1 {
                return Err(crate::Error::Baseline("model broke".into()));
            }
            Ok(Tensor::new(self.0.as_slice(), &Device::Cpu)?)
        }
    }

    struct Words;

    impl ChatTokenizer for Words {
        fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
            if messages[0].content == "unencodable" {
                return Err(crate::Error::Baseline("cannot encode".into()));
            }
            Ok(vec![3])
        }
        fn answer_tokens(&self, word: &str) -> Result<Vec<u32>> {
            Ok(match word {
                "Yes" => vec![0, 1],
                "No" => vec![2],
                _ => vec![99],
            })
        }
    }

    fn request() -> LlmRequest {
        LlmRequest {
            messages: vec![Message::new("user", "q")],
            positive: "Yes".into(),
            negative: "No".into(),
        }
    }

    #[test]
    fn word_probabilities_sum_their_token_variants() {
        // softmax([ln .2, ln .3, ln .4, ln .1]) = [.2, .3, .4, .1]
        let logits = [0.2f32, 0.3, 0.4, 0.1].map(f32::ln).to_vec();
        let backend = LocalLlmBackend::new(Arc::new(Fixed(logits, false)), Arc::new(Words));
        let s = backend.score(&[request()]).remove(0).unwrap();
        assert!((s.positive_logprob.unwrap().exp() - 0.5).abs() < 1e-6);
        assert!((s.negative_logprob.unwrap().exp() - 0.4).abs() < 1e-6);
        assert!(s.verdict("Yes", "No").is_pass());
    }

    #[test]
    fn out_of_vocabulary_words_and_model_errors() {
        let backend = LocalLlmBackend::new(Arc::new(Fixed(vec![0.0; 4], false)), Arc::new(Words));
        let mut r = request();
        r.negative = "Nope".into();
        let s = backend.score(&[r]).remove(0).unwrap();
        assert_eq!(s.negative_logprob, None);
        let broken = LocalLlmBackend::new(Arc::new(Fixed(vec![], true)), Arc::new(Words));
        assert!(broken
            .score(&[request()])
            .remove(0)
            .unwrap_err()
            .contains("model broke"));
    }

    /// Answers "Yes" with probability `.5 + .1 * (question length)`.
    struct ByLength;

    impl CausalLm for ByLength {
        fn next_token_logits(&self, tokens: &[u32]) -> Result<Tensor> {
            let yes = 0.5 + 0.1 * tokens.len() as f32;
            Ok(Tensor::new(
                &[yes.ln(), f32::MIN, (1.0 - yes).ln()],
                &Device::Cpu,
            )?)
        }
    }

    struct Lengths;

    impl ChatTokenizer for Lengths {
        fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
            Words.encode_chat(messages)?;
            Ok(vec![7; messages[0].content.len()])
        }
        fn answer_tokens(&self, word: &str) -> Result<Vec<u32>> {
            Words.answer_tokens(word)
        }
    }

    #[test]
    fn batches_keep_order_and_an_encoding_error_stays_with_its_question() {
        let backend =
            LocalLlmBackend::new(Arc::new(ByLength), Arc::new(Lengths)).with_batch_size(2);
        let ask = |q: &str| LlmRequest {
            messages: vec![Message::new("user", q)],
            ..request()
        };
        let out = backend.score(&[ask("a"), ask("unencodable"), ask("abc"), ask("ab")]);
        assert!(out[1].as_ref().unwrap_err().contains("cannot encode"));
        for (i, n) in [(0, 1), (2, 3), (3, 2)] {
            let p = out[i].as_ref().unwrap().positive_logprob.unwrap().exp();
            assert!(
                (p - (0.5 + 0.1 * n as f32)).abs() < 1e-5,
                "question {i}: {p}"
            );
        }
    }
}
