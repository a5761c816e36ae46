//! The model seam from outside the crate: a policy written here from
//! scratch on its own candle variables (an embedding, one attention layer
//! over a [`KvCache`], an output projection; nothing of cgpo's models)
//! trains with CGPO through the code-first API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use cgpo::data::PromptRecord;
use cgpo::judges::{LengthJudge, MixtureOfJudges};
use cgpo::optim::{Crpg, Crraft};
use cgpo::policy::{ByteTokenizer, KvCache, Policy, TokenBatch};
use cgpo::reward::{BaselineSource, CalibratedReward, LexicalReward};
use cgpo::task::TaskSpec;
use cgpo::train::{TrainConfig, Trainer};

const DIM: usize = 16;
const CONTEXT: usize = 256;

/// One attention layer over token embeddings; no positions (the mask
/// alone makes it causal).
struct Mini {
    embed: Var,
    query: Var,
    out: Var,
    device: Device,
    frozen: bool,
}

impl Mini {
    fn new(seed: u64, device: &Device) -> Mini {
        device.set_seed(seed).ok();
        let var = |rows, cols| {
            let t = Tensor::randn(0f32, 0.3, (rows, cols), device).unwrap();
            Var::from_tensor(&t).unwrap()
        };
        Mini {
            embed: var(ByteTokenizer::VOCAB, DIM),
            query: var(DIM, DIM),
            out: var(DIM, ByteTokenizer::VOCAB),
            device: device.clone(),
            frozen: false,
        }
    }

    fn named(&self) -> [(&'static str, &Var); 3] {
        [
            ("embed", &self.embed),
            ("query", &self.query),
            ("out", &self.out),
        ]
    }

    /// Logits `[B, T, V]` of the chunk `batch`, attending over `cache` and
    /// the chunk (a fresh cache when `cache` is None).
    fn run(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
        grad: bool,
    ) -> cgpo::Result<Tensor> {
        let w = |v: &Var| {
            if grad {
                v.as_tensor().clone()
            } else {
                v.as_tensor().detach()
            }
        };
        let mut scratch = KvCache::new();
        let cache = cache.unwrap_or(&mut scratch);
        let step = cache.advance(batch)?;
        let (b, t) = (batch.rows(), batch.len());
        let ids = batch.ids_tensor(&self.device)?.flatten_all()?;
        let x = w(&self.embed)
            .index_select(&ids, 0)?
            .reshape((b, 1, t, DIM))?;
        let (keys, _) = cache.append(0, x.clone(), x.clone())?;
        let q = x.broadcast_matmul(&w(&self.query))?;
        let mut scores = (q.matmul(&keys.transpose(2, 3)?)? / (DIM as f64).sqrt())?;
        if let Some(mask) = step.mask_tensor(&self.device)? {
            scores = scores.broadcast_add(&mask)?;
        }
        let attn = candle_nn::ops::softmax_last_dim(&scores)?;
        let h = (x + attn.matmul(&keys)?)?.reshape((b, t, DIM))?;
        Ok(h.broadcast_matmul(&w(&self.out))?)
    }
}

impl Policy for Mini {
    fn vocab_size(&self) -> usize {
        ByteTokenizer::VOCAB
    }

    fn context_len(&self) -> usize {
        CONTEXT
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward(&self, batch: &TokenBatch) -> cgpo::Result<Tensor> {
        self.run(batch, None, true)
    }

    fn forward_no_grad(&self, batch: &TokenBatch) -> cgpo::Result<Tensor> {
        self.run(batch, None, false)
    }

    fn decode(&self, batch: &TokenBatch, cache: &mut KvCache) -> cgpo::Result<Tensor> {
        let logits = self.run(batch, Some(cache), false)?;
        Ok(logits.i((.., batch.len() - 1, ..))?.contiguous()?)
    }

    fn vars(&self) -> Vec<(String, Var)> {
        if self.frozen {
            return Vec::new();
        }
        self.named()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.clone()))
            .collect()
    }

    fn save(&self, path: &Path) -> cgpo::Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .named()
            .into_iter()
            .map(|(n, v)| (n.to_string(), v.as_tensor().clone()))
            .collect();
        Ok(candle_core::safetensors::save(&tensors, path)?)
    }

    fn load(&mut self, path: &Path) -> cgpo::Result<()> {
        let tensors = candle_core::safetensors::load(path, &self.device)?;
        for (name, var) in self.named() {
            var.set(&tensors[name])?;
        }
        Ok(())
    }

    fn frozen(&self) -> cgpo::Result<Box<dyn Policy>> {
        let copy = |v: &Var| Var::from_tensor(&v.as_tensor().copy()?);
        Ok(Box::new(Mini {
            embed: copy(&self.embed)?,
            query: copy(&self.query)?,
            out: copy(&self.out)?,
            device: self.device.clone(),
            frozen: true,
        }))
    }
}

fn prompts(prefix: &str, texts: &[&str]) -> Vec<PromptRecord> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| PromptRecord::new(format!("{prefix}{i}"), *t))
        .collect()
}

fn values(p: &dyn Policy) -> Vec<Vec<f32>> {
    p.vars()
        .iter()
        .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect()
}

#[test]
fn decoding_through_the_cache_matches_the_full_forward() {
    let m = Mini::new(1, &Device::Cpu);
    let seqs = [vec![72u32, 105, 33, 10], vec![65, 66]];
    let full = m
        .forward_no_grad(&TokenBatch::left_padded(&seqs, ByteTokenizer::PAD).unwrap())
        .unwrap();
    // Prefill the first two columns, then decode the last two one at a time.
    let padded = TokenBatch::left_padded(&seqs, ByteTokenizer::PAD).unwrap();
    let mut cache = KvCache::new();
    let head = TokenBatch::new(
        (0..2).flat_map(|r| padded.row(r)[..2].to_vec()).collect(),
        (0..2)
            .flat_map(|r| padded.mask()[r * 4..r * 4 + 2].to_vec())
            .collect(),
        2,
        2,
    )
    .unwrap();
    m.decode(&head, &mut cache).unwrap();
    let mut last = None;
    for c in 2..4 {
        let col: Vec<u32> = (0..2).map(|r| padded.row(r)[c]).collect();
        last = Some(m.decode(&TokenBatch::column(&col), &mut cache).unwrap());
    }
    let want = full.i((.., 3, ..)).unwrap();
    let diff = (last.unwrap() - want)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(diff < 1e-5, "cached decoding differs by {diff}");
}

#[test]
fn a_policy_written_outside_the_crate_trains_with_cgpo() {
    let out = tempfile::tempdir().unwrap();
    let policy = Box::new(Mini::new(7, &Device::Cpu));
    let before = values(policy.as_ref());
    let reward = |name: &str| {
        CalibratedReward::new(
            Arc::new(LexicalReward::new(name, 0.1, [])),
            BaselineSource::PolicySample,
        )
    };
    let short = TaskSpec::new(
        "short",
        MixtureOfJudges::new(vec![Box::new(LengthJudge::new("length", None, Some(3)))]).unwrap(),
        reward("rm_short"),
        Arc::new(Crpg {
            kl_max: 50.0,
            ..Crpg::default()
        }),
    )
    .with_batch(2, 2);
    let long = TaskSpec::new(
        "long",
        MixtureOfJudges::new(vec![Box::new(LengthJudge::new("length", Some(2), None))]).unwrap(),
        reward("rm_long"),
        Arc::new(Crraft { kl_max: 50.0 }),
    )
    .with_weight(0.5)
    .with_batch(2, 2);
    let mut train = TrainConfig {
        steps: 2,
        learning_rate: 0.05,
        output_dir: out.path().to_path_buf(),
        ..TrainConfig::default()
    };
    train.sampling.max_new_tokens = 8;
    let mut trainer = Trainer::builder(policy, Arc::new(ByteTokenizer))
        .seed(5)
        .train_config(train)
        .task(
            short,
            prompts("s", &["Say hi.", "Greet me."]),
            Vec::<PromptRecord>::new(),
        )
        .task(
            long,
            prompts("l", &["Tell me about cats.", "Describe rain."]),
            Vec::<PromptRecord>::new(),
        )
        .build()
        .unwrap();
    let summary = trainer.run().unwrap();
    assert_eq!(summary.steps, 2);
    assert_eq!(summary.last.len(), 2);
    for m in &summary.last {
        assert!(
            m.loss.is_finite() && m.grad_norm.is_finite() && !m.skipped,
            "{m:?}"
        );
        assert_eq!(m.samples, 4, "B x K samples of task {}", m.task);
    }
    let after = values(trainer.policy());
    assert_ne!(before, after, "two steps left the weights unchanged");
    // The reference is the frozen copy: it did not move.
    assert!(trainer.reference().vars().is_empty());
    // The final checkpoint holds this policy's own tensors.
    let file = summary.checkpoint.unwrap().join("policy.safetensors");
    let saved = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    assert_eq!(saved["query"].dims(), [DIM, DIM]);
    assert_eq!(saved["embed"].dtype(), DType::F32);
}
