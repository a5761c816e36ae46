//! The stages before CGPO, as in the paper's recipe: supervised fine-tuning
//! ([`Sft`]), Bradley-Terry reward models ([`RewardTraining`], which trains a
//! [`crate::reward::BradleyTerryReward`]) and the offline DPO warm-up
//! ([`Dpo`]); CGPO then starts from the warm-up (`cgpo train` with
//! `policy.weights`). `docs/pipeline.md` runs the four stages.
//!
//! Each stage is a [`Stage`] (its variables and its minibatch loss) run by
//! the shared [`StageRunner`] (data order, AdamW, clipping, evaluation,
//! metrics, checkpoints, resume); its config ([`SftConfig`],
//! [`RewardTrainConfig`], [`DpoConfig`]) builds it with `from_config`, which
//! loads the model and the records ([`data`]) and refuses bad records unless
//! `data.skip_bad_records` is set.
//!
//! ```no_run
//! use cgpo::pipeline::{Sft, SftConfig, StageConfig, StageRunner};
//! let config = SftConfig::from_file("examples/pipeline/sft.json")?;
//! let (sft, skipped) = Sft::from_config(&config)?;
//! for report in &skipped {
//!     eprintln!("{report}");
//! }
//! let (seed, _, _, train) = config.sections();
//! let mut runner = StageRunner::new(sft, train, seed, serde_json::to_value(&config).unwrap())?;
//! let summary = runner.run()?;
//! println!("eval loss {:?} -> {:?}", summary.first_eval.map(|m| m.loss), summary.last_eval.map(|m| m.loss));
//! # Ok::<(), cgpo::Error>(())
//! ```

mod config;
pub mod data;
mod dpo;
mod reward_model;
mod sft;
mod stage;
pub mod synthetic;

use std::sync::Arc;

pub use config::{DpoConfig, RewardTrainConfig, SftConfig, StageConfig, StageData, StageTrain};
pub use data::{PairExample, SftExample, SkipReport};
pub use dpo::{dpo_loss, dpo_nll_loss, Dpo, DpoLoss};
pub use reward_model::RewardTraining;
pub use sft::Sft;
pub use stage::{BatchLoss, Split, Stage, StageMetrics, StageRunner, StageSummary};

use crate::error::{DataError, Error, Result};
use crate::policy::load_policy;
use crate::policy::TextTokenizer;
use crate::reward::BradleyTerryReward;
use crate::rollout::Rollouts;

/// Fixed prompt + response pairs in the layout of sampled rollouts (prompts
/// left-padded, responses right-padded), so that
/// [`crate::rollout::sequence_logprobs`] scores them.
pub fn teacher_forced(prompts: Vec<Vec<u32>>, responses: Vec<Vec<u32>>, pad: u32) -> Rollouts {
    let n = responses.len();
    Rollouts {
        prompt_index: (0..n).collect(),
        prompts,
        texts: vec![String::new(); n],
        logprobs: vec![Vec::new(); n],
        finished: vec![true; n],
        entropy: vec![0.0; n],
        responses,
        pad,
    }
}

/// A stage's records, tokenized and checked.
pub struct StageInputs<T> {
    pub train: Vec<T>,
    pub eval: Vec<T>,
    /// What was skipped, per file (with `data.skip_bad_records`).
    pub skipped: Vec<SkipReport>,
}

/// The token limit: `data.max_tokens`, at most the context window.
fn max_tokens(data: &StageData, context_len: usize) -> Result<usize> {
    match data.max_tokens {
        None => Ok(context_len),
        Some(m) if m <= context_len => Ok(m),
        Some(m) => Err(Error::config(
            "data.max_tokens",
            format!("{m} exceeds the model's context window of {context_len}"),
        )),
    }
}

/// Loads both files, then refuses every error of both at once unless told
/// to skip.
fn accept_both<T>(
    data: &StageData,
    mut load: impl FnMut(&std::path::Path) -> Result<data::Loaded<T>>,
) -> Result<StageInputs<T>> {
    let train = load(&data.train)?;
    let eval = match &data.eval {
        Some(path) => Some((path, load(path)?)),
        None => None,
    };
    if !data.skip_bad_records {
        let errors: Vec<DataError> = train
            .errors
            .iter()
            .chain(eval.iter().flat_map(|(_, l)| l.errors.iter()))
            .cloned()
            .collect();
        if !errors.is_empty() {
            return Err(Error::Data(errors));
        }
    }
    let (train, train_report) = train.accept(&data.train, true)?;
    let mut skipped = vec![train_report];
    let eval = match eval {
        Some((path, loaded)) => {
            let (records, report) = loaded.accept(path, true)?;
            skipped.push(report);
            records
        }
        None => Vec::new(),
    };
    skipped.retain(|r| r.skipped > 0);
    Ok(StageInputs {
        train,
        eval,
        skipped,
    })
}

/// SFT records of `data`, tokenized with the chat template.
pub fn load_sft_data(
    data: &StageData,
    tokenizer: &dyn TextTokenizer,
    context_len: usize,
) -> Result<StageInputs<SftExample>> {
    let limit = max_tokens(data, context_len)?;
    accept_both(data, |path| {
        data::encode_sft(data::read_sft(path)?, tokenizer, limit)
    })
}

/// Preference records of `data`, tokenized with the chat template.
pub fn load_preference_data(
    data: &StageData,
    tokenizer: &dyn TextTokenizer,
    context_len: usize,
) -> Result<StageInputs<PairExample>> {
    let limit = max_tokens(data, context_len)?;
    accept_both(data, |path| {
        data::encode_preferences(data::read_preferences(path)?, tokenizer, limit)
    })
}

impl Sft {
    /// The policy and records a config names; also what was skipped.
    pub fn from_config(config: &SftConfig) -> Result<(Self, Vec<SkipReport>)> {
        let (policy, tokenizer) = load_policy(&config.policy, config.seed)?;
        let inputs = load_sft_data(&config.data, tokenizer.as_ref(), policy.context_len())?;
        let sft = Sft::new(policy, tokenizer.pad_token(), inputs.train, inputs.eval);
        Ok((sft, inputs.skipped))
    }
}

impl RewardTraining {
    /// A zero head on the backbone a config names, and its records.
    pub fn from_config(config: &RewardTrainConfig) -> Result<(Self, Vec<SkipReport>)> {
        let (backbone, tokenizer) = load_policy(&config.policy, config.seed)?;
        let inputs =
            load_preference_data(&config.data, tokenizer.as_ref(), backbone.context_len())?;
        let model = BradleyTerryReward::new(
            "reward_model",
            backbone,
            Arc::clone(&tokenizer),
            config.policy.clone(),
        )?;
        Ok((
            RewardTraining::new(model, inputs.train, inputs.eval),
            inputs.skipped,
        ))
    }
}

impl Dpo {
    /// The policy a config names (frozen as loaded: the reference), and
    /// its records.
    pub fn from_config(config: &DpoConfig) -> Result<(Self, Vec<SkipReport>)> {
        let (policy, tokenizer) = load_policy(&config.policy, config.seed)?;
        let inputs = load_preference_data(&config.data, tokenizer.as_ref(), policy.context_len())?;
        let mut dpo = Dpo::new(
            policy,
            config.beta,
            tokenizer.pad_token(),
            inputs.train,
            inputs.eval,
        )?;
        dpo.nll_weight = config.nll_weight;
        Ok((dpo, inputs.skipped))
    }
}
