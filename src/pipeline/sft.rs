//! Supervised fine-tuning: maximise the log-likelihood of the demonstrated
//! responses, with the loss on response tokens only (the prompt, chat
//! template applied, is context), averaged over the batch's response tokens.
//! Sequences are padded (prompts left, responses right), as rollouts are,
//! and the log-probs come from [`crate::rollout::sequence_logprobs`].
//!
//! ```
//! use cgpo::pipeline::{Sft, SftExample, Split, Stage};
//! use cgpo::policy::{ByteTokenizer, TextTokenizer, TinyLm, TinyLmConfig};
//! let lm = TinyLm::new(&TinyLmConfig::default(), 0)?;
//! let ex = SftExample { prompt: lm.tokenizer.encode("Q: ")?, response: vec![b'A'.into(), ByteTokenizer::EOS] };
//! let sft = Sft::new(Box::new(lm.model), ByteTokenizer::PAD, vec![ex], vec![]);
//! let batch = sft.loss(Split::Train, &[0], true)?;
//! // A random model: about ln(258) nats per token.
//! let nll = batch.loss.to_scalar::<f32>()?;
//! assert!((nll - 258f32.ln()).abs() < 0.5, "{nll}");
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::path::Path;

use candle_core::Var;

use super::data::SftExample;
use super::stage::{BatchLoss, Split, Stage};
use super::teacher_forced;
use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::rollout::sequence_logprobs;
use crate::run_dir::POLICY_FILE;

pub struct Sft {
    policy: Box<dyn Policy>,
    pad: u32,
    train: Vec<SftExample>,
    eval: Vec<SftExample>,
}

impl Sft {
    /// `pad`: the tokenizer's padding id.
    pub fn new(
        policy: Box<dyn Policy>,
        pad: u32,
        train: Vec<SftExample>,
        eval: Vec<SftExample>,
    ) -> Self {
        Self {
            policy,
            pad,
            train,
            eval,
        }
    }

    pub fn policy(&self) -> &dyn Policy {
        self.policy.as_ref()
    }

    pub fn into_policy(self) -> Box<dyn Policy> {
        self.policy
    }

    fn split(&self, split: Split) -> &[SftExample] {
        match split {
            Split::Train => &self.train,
            Split::Eval => &self.eval,
        }
    }
}

impl Stage for Sft {
    fn name(&self) -> &'static str {
        "sft"
    }

    fn vars(&self) -> Vec<(String, Var)> {
        self.policy.vars()
    }

    fn len(&self, split: Split) -> usize {
        self.split(split).len()
    }

    fn loss(&self, split: Split, idx: &[usize], grad: bool) -> Result<BatchLoss> {
        let data = self.split(split);
        let examples = idx
            .iter()
            .map(|&i| {
                data.get(i)
                    .ok_or_else(|| Error::Train(format!("sft: no record {i}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let ro = teacher_forced(
            examples.iter().map(|e| e.prompt.clone()).collect(),
            examples.iter().map(|e| e.response.clone()).collect(),
            self.pad,
        );
        let logp = sequence_logprobs(self.policy.as_ref(), &ro, grad)?;
        let tokens: usize = ro.responses.iter().map(Vec::len).sum();
        // Padding has log-prob 0, so the sum is over response tokens only.
        let loss = (logp.sum_all()?.neg()? / tokens.max(1) as f64)?;
        Ok(BatchLoss {
            loss,
            weight: tokens as f64,
            stats: Vec::new(),
        })
    }

    fn save(&self, dir: &Path) -> Result<()> {
        self.policy.save(&dir.join(POLICY_FILE))
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.policy.load(&dir.join(POLICY_FILE))
    }
}
