//! A learned reward model: a [`Policy`] backbone plus a scalar head, trained
//! with the Bradley-Terry loss `-log sigmoid(r(chosen) - r(rejected))`
//! (`cgpo reward train`, [`crate::pipeline::RewardTraining`]).
//!
//! **The head.** The score of a (prompt, response) is read at the last
//! token of the sequence (prompt with the chat template, response, stop
//! token): `r = w . z + b`, where `z` is the backbone's output logits
//! there (`[V]`) and `w: [V]`, `b: [1]` are learned, initialised to zero
//! and trained jointly with the backbone. The logits are a linear map of the
//! final (normed) hidden state `h`, `z = W_out h`, so the head is a linear
//! head on `h` through `W_out^T w`: as expressive as the usual
//! `score: [H] -> 1` when `V >= H`, and the backbone stays the unmodified
//! `Policy`. The cost: training computes full logits for every position
//! (`Policy::forward`), which is heavy for large vocabularies; scoring
//! without gradient reads only the last position (`Policy::decode`). `b`
//! cancels in the Bradley-Terry loss (it stays 0 when trained here; an
//! imported head may set it).
//!
//! **Files.** A reward model directory holds `policy.safetensors` (the
//! backbone, `Policy::save`), `score_head.safetensors` (`score_head.weight`
//! `[V]` and `score_head.bias` `[1]`, f32) and `reward_model.json` (the
//! backbone's [`PolicyConfig`], without weights). A checkpoint of
//! `cgpo reward train` is such a directory, and so is its output directory
//! through `latest`.
//!
//! **Limitation.** A Hugging Face `*ForSequenceClassification` checkpoint
//! (`score.weight: [1, H]` over hidden states, usually without `lm_head`)
//! does not load as is: its head would need the final hidden state, which
//! the `Policy` trait does not expose. Any `w` with `W_out^T w = score`
//! reproduces it exactly; converting checkpoints is not implemented.
//!
//! Sequences longer than the backbone's context keep their last
//! `context_len` tokens.
//!
//! ```
//! use std::sync::Arc;
//! use cgpo::policy::PolicyConfig;
//! use cgpo::policy::{TinyLm, TinyLmConfig};
//! use cgpo::reward::{BradleyTerryReward, RewardModel};
//! use cgpo::data::PromptRecord;
//! let lm = TinyLm::new(&TinyLmConfig::default(), 0)?;
//! let rm = BradleyTerryReward::new("rm", Box::new(lm.model), Arc::new(lm.tokenizer), PolicyConfig::default())?;
//! let record = PromptRecord::new("p", "Is 4 even or odd?");
//! // A fresh head scores everything 0.
//! assert_eq!(rm.score(&[record.view("even"), record.view("odd")])?, [0.0, 0.0]);
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Tensor, Var};
use cgpo_judges::SampleView;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::RewardModel;
use crate::error::{Error, Result};
use crate::optim::codpo::softplus;
use crate::policy::load_policy;
use crate::policy::PolicyConfig;
use crate::policy::{KvCache, Policy, TextTokenizer, TokenBatch};
use crate::run_dir::{self, POLICY_FILE};

/// The head's weights.
pub const HEAD_FILE: &str = "score_head.safetensors";
/// How to rebuild the backbone.
pub const MODEL_FILE: &str = "reward_model.json";

/// `reward_model.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelFile {
    /// `"bradley_terry"`.
    pub kind: String,
    /// Where the head reads: `"last_token_logits"`.
    pub head: String,
    /// The backbone, without `weights` (they are `policy.safetensors`).
    pub policy: PolicyConfig,
}

pub struct BradleyTerryReward {
    name: String,
    backbone: Box<dyn Policy>,
    tokenizer: Arc<dyn TextTokenizer>,
    policy: PolicyConfig,
    weight: Var,
    bias: Var,
    /// Sequences per forward when scoring.
    pub batch_size: usize,
}

/// Registry parameters of `"bradley_terry"`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// A reward model directory, a checkpoint or an output directory.
    path: PathBuf,
    #[serde(default = "default_batch")]
    batch_size: usize,
}

fn default_batch() -> usize {
    16
}

impl BradleyTerryReward {
    /// A zero head on `backbone`; `policy` describes the backbone for
    /// [`BradleyTerryReward::save`] (its `weights`, if any, are dropped).
    pub fn new(
        name: impl Into<String>,
        backbone: Box<dyn Policy>,
        tokenizer: Arc<dyn TextTokenizer>,
        policy: PolicyConfig,
    ) -> Result<Self> {
        let v = backbone.vocab_size();
        let device = backbone.device().clone();
        Ok(Self {
            name: name.into(),
            tokenizer,
            policy: policy.without_weights(),
            weight: Var::zeros(v, DType::F32, &device)?,
            bias: Var::zeros(1, DType::F32, &device)?,
            backbone,
            batch_size: default_batch(),
        })
    }

    /// Loads a reward model directory (or the `latest` checkpoint of an
    /// output directory).
    pub fn from_dir(name: impl Into<String>, dir: &Path) -> Result<Self> {
        let dir = resolve(dir)?;
        let path = dir.join(MODEL_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let file: RewardModelFile =
            serde_json::from_str(&text).map_err(|e| Error::model(path.display(), e.to_string()))?;
        if file.kind != "bradley_terry" || file.head != "last_token_logits" {
            return Err(Error::model(
                path.display(),
                format!(
                    "a `{}` model with a `{}` head; this is a bradley_terry model with a last_token_logits head",
                    file.kind, file.head
                ),
            ));
        }
        let (backbone, tokenizer) = load_policy(&file.policy, 0)?;
        let mut rm = Self::new(name, backbone, tokenizer, file.policy)?;
        rm.load(&dir)?;
        Ok(rm)
    }

    /// From registry parameters `{"path", "batch_size"?}`.
    pub fn from_params(name: &str, params: &Value) -> Result<Self> {
        let p: Params = serde_json::from_value(params.clone()).map_err(|e| Error::Reward {
            model: name.to_owned(),
            message: format!("params: {e}"),
        })?;
        if p.batch_size == 0 {
            return Err(Error::Reward {
                model: name.to_owned(),
                message: "params: batch_size must be >= 1".into(),
            });
        }
        let mut rm = Self::from_dir(name, &p.path)?;
        rm.batch_size = p.batch_size;
        Ok(rm)
    }

    /// Writes the three files into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        self.backbone.save(&dir.join(POLICY_FILE))?;
        let map: HashMap<String, Tensor> = [
            (
                "score_head.weight".to_string(),
                self.weight.as_tensor().clone(),
            ),
            ("score_head.bias".to_string(), self.bias.as_tensor().clone()),
        ]
        .into();
        let path = dir.join(HEAD_FILE);
        candle_core::safetensors::save(&map, &path)
            .map_err(|e| Error::model(path.display(), e.to_string()))?;
        let file = RewardModelFile {
            kind: "bradley_terry".into(),
            head: "last_token_logits".into(),
            policy: self.policy.clone(),
        };
        let path = dir.join(MODEL_FILE);
        let text = serde_json::to_string_pretty(&file)
            .map_err(|e| Error::model(path.display(), e.to_string()))?;
        std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
    }

    /// Reads the backbone and head weights of a directory written by
    /// [`BradleyTerryReward::save`] into this model.
    pub fn load(&mut self, dir: &Path) -> Result<()> {
        self.backbone.load(&dir.join(POLICY_FILE))?;
        let path = dir.join(HEAD_FILE);
        if !path.is_file() {
            return Err(Error::model(path.display(), "no such file"));
        }
        let map = candle_core::safetensors::load(&path, self.backbone.device()).map_err(|e| {
            Error::model(
                path.display(),
                format!("not a readable safetensors file: {e}"),
            )
        })?;
        let v = self.backbone.vocab_size();
        for (name, var, len) in [
            ("score_head.weight", &self.weight, v),
            ("score_head.bias", &self.bias, 1),
        ] {
            let t = map
                .get(name)
                .ok_or_else(|| Error::model(path.display(), format!("missing `{name}`")))?;
            if t.dims() != [len] {
                return Err(Error::model(
                    path.display(),
                    format!("`{name}` has shape {:?}, expected [{len}]", t.dims()),
                ));
            }
            var.set(&t.to_dtype(DType::F32)?)?;
        }
        Ok(())
    }

    /// The backbone's variables, then `score_head.weight` and `score_head.bias`.
    pub fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.backbone.vars();
        vars.push(("score_head.weight".into(), self.weight.clone()));
        vars.push(("score_head.bias".into(), self.bias.clone()));
        vars
    }

    pub fn backbone(&self) -> &dyn Policy {
        self.backbone.as_ref()
    }

    pub fn tokenizer(&self) -> &dyn TextTokenizer {
        self.tokenizer.as_ref()
    }

    /// Sets the head (e.g. one brought from elsewhere): `weight: [V]`, `bias`.
    pub fn set_head(&self, weight: &Tensor, bias: f32) -> Result<()> {
        let v = self.backbone.vocab_size();
        if weight.dims() != [v] {
            return Err(Error::model(
                &self.name,
                format!("head weight of shape {:?}, expected [{v}]", weight.dims()),
            ));
        }
        self.weight.set(&weight.to_dtype(DType::F32)?)?;
        self.bias
            .set(&Tensor::new(&[bias], self.backbone.device())?)?;
        Ok(())
    }

    /// The tokens the model scores: prompt (chat template), response, stop
    /// token; the last `context_len` of them when longer.
    pub fn encode(&self, view: &SampleView<'_>) -> Result<Vec<u32>> {
        let mut ids = self.tokenizer.encode_prompt(view.prompt)?;
        ids.extend(self.tokenizer.encode_response(view.response)?);
        let context = self.backbone.context_len();
        if ids.len() > context {
            ids.drain(..ids.len() - context);
        }
        Ok(ids)
    }

    /// Scores `[B]` of whole sequences (prompt + response tokens). `grad`:
    /// differentiable with respect to [`BradleyTerryReward::vars`]; else
    /// without autograd, reading only the last position.
    pub fn score_tokens(&self, sequences: &[Vec<u32>], grad: bool) -> Result<Tensor> {
        if let Some(i) = sequences.iter().position(Vec::is_empty) {
            return Err(Error::Reward {
                model: self.name.clone(),
                message: format!("sequence {i} is empty"),
            });
        }
        // Left padding puts every row's last token in the last column.
        let batch = TokenBatch::left_padded(sequences, self.tokenizer.pad_token())?;
        let last = if grad {
            let logits = self.backbone.forward(&batch)?;
            logits.narrow(1, batch.len() - 1, 1)?.squeeze(1)?
        } else {
            self.backbone.decode(&batch, &mut KvCache::new())?
        };
        let w = if grad {
            self.weight.as_tensor().clone()
        } else {
            self.weight.as_tensor().detach()
        };
        let scores = last.matmul(&w.unsqueeze(1)?)?.squeeze(1)?;
        Ok(scores.broadcast_add(self.bias.as_tensor())?)
    }
}

/// A reward model directory: `dir` itself, or its `latest` checkpoint.
fn resolve(dir: &Path) -> Result<PathBuf> {
    if dir.join(MODEL_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    match run_dir::latest(dir)? {
        Some(latest) => Ok(latest),
        None => Err(Error::model(
            dir.display(),
            format!("not a reward model directory (no {MODEL_FILE}) nor an output directory with a `latest` checkpoint"),
        )),
    }
}

/// The Bradley-Terry loss `mean(-log sigmoid(chosen - rejected))` of two
/// `[N]` score tensors.
pub fn bradley_terry_loss(chosen: &Tensor, rejected: &Tensor) -> Result<Tensor> {
    Ok(softplus(&(rejected - chosen)?)?.mean_all()?)
}

impl RewardModel for BradleyTerryReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(self.batch_size.max(1)) {
            let seqs = chunk
                .iter()
                .map(|v| self.encode(v))
                .collect::<Result<Vec<_>>>()?;
            out.extend(self.score_tokens(&seqs, false)?.to_vec1::<f32>()?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{TinyLm, TinyLmConfig};
    use candle_core::Device;

    fn tiny() -> BradleyTerryReward {
        let cfg = TinyLmConfig {
            hidden_size: 16,
            intermediate_size: 32,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            context_len: 64,
        };
        let lm = TinyLm::new(&cfg, 5).unwrap();
        let policy = PolicyConfig::Tiny {
            size: cfg,
            weights: Some("ignored".into()),
            device: Default::default(),
        };
        BradleyTerryReward::new("rm", Box::new(lm.model), Arc::new(lm.tokenizer), policy).unwrap()
    }

    #[test]
    fn loss_is_log_sigmoid_of_the_difference() {
        let t = |v: &[f32]| Tensor::new(v, &Device::Cpu).unwrap();
        let loss = bradley_terry_loss(&t(&[2.0, 0.0]), &t(&[1.0, 3.0])).unwrap();
        let want = ((1.0 + (-1f64).exp()).ln() + (1.0 + 3f64.exp()).ln()) / 2.0;
        assert!((f64::from(loss.to_scalar::<f32>().unwrap()) - want).abs() < 1e-6);
    }

    #[test]
    fn grad_and_no_grad_scores_agree_and_padding_is_invisible() {
        let rm = tiny();
        let w: Vec<f32> = (0..258)
            .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.1)
            .collect();
        rm.set_head(&Tensor::new(w.as_slice(), &Device::Cpu).unwrap(), 0.5)
            .unwrap();
        let a: Vec<u32> = "user: hi\nassistant: yes".bytes().map(u32::from).collect();
        let b: Vec<u32> = "no".bytes().map(u32::from).collect();
        let both = rm
            .score_tokens(&[a.clone(), b], true)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let fast = rm
            .score_tokens(std::slice::from_ref(&a), false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!((both[0] - fast[0]).abs() < 1e-4, "{both:?} vs {fast:?}");
        assert!(both[0] != 0.5);
        assert!(rm.score_tokens(&[vec![]], false).is_err());
    }

    #[test]
    fn saves_and_loads_and_checks_shapes() {
        let rm = tiny();
        let w = Tensor::new(&[0.25f32; 258], &Device::Cpu).unwrap();
        rm.set_head(&w, -1.0).unwrap();
        let dir = tempfile::tempdir().unwrap();
        rm.save(dir.path()).unwrap();
        let file: RewardModelFile =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(MODEL_FILE)).unwrap())
                .unwrap();
        assert_eq!(file.policy.weights(), None);
        let back = BradleyTerryReward::from_dir("back", dir.path()).unwrap();
        let seq: Vec<u32> = b"some text".iter().map(|&b| u32::from(b)).collect();
        let x = rm
            .score_tokens(std::slice::from_ref(&seq), false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let y = back
            .score_tokens(&[seq], false)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(x, y);
        assert!(rm
            .set_head(&Tensor::new(&[1f32; 3], &Device::Cpu).unwrap(), 0.0)
            .is_err());
        let missing = BradleyTerryReward::from_dir("x", &dir.path().join("nope"))
            .err()
            .unwrap();
        assert!(
            missing.to_string().contains("not a reward model directory"),
            "{missing}"
        );
        std::fs::remove_file(dir.path().join(HEAD_FILE)).unwrap();
        let e = BradleyTerryReward::from_dir("x", dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .contains("score_head.safetensors: no such file"),
            "{e}"
        );
    }
}
