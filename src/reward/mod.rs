//! Reward models: the [`RewardModel`] trait (batch scores), a registry of
//! models by name, and the calibrated reward of docs/algorithm.md §2.
//!
//! ```
//! use cgpo::reward::{RewardModel, RewardRegistry, RewardModelSpec};
//! use cgpo::data::PromptRecord;
//! let spec: RewardModelSpec = serde_json::from_str(
//!     r#"{"name": "lexical", "params": {"per_word": 0.1, "phrases": {"great": 1.0}}}"#).unwrap();
//! let rm = RewardRegistry::with_builtins().build("chat_rm", &spec).unwrap();
//! let record = PromptRecord::new("p", "Say something.");
//! let scores = rm.score(&[record.view("a great day")]).unwrap();
//! assert!((scores[0] - 1.3).abs() < 1e-6);
//! ```

mod bradley_terry;
mod calibrated;
mod http;
mod lexical;
mod llm_judge;

use std::collections::BTreeMap;
use std::sync::Arc;

use cgpo_judges::SampleView;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use bradley_terry::{
    bradley_terry_loss, BradleyTerryReward, RewardModelFile, HEAD_FILE, MODEL_FILE,
};
pub use calibrated::{
    calibrate, BaselineGenerator, BaselineSource, CachedBaseline, CalibratedReward, RewardValues,
};
pub use http::{HttpReward, HttpRewardConfig};
pub use lexical::LexicalReward;
pub use llm_judge::LlmJudgeReward;

use crate::error::{Error, Result};

/// Scores (prompt, response) pairs; higher is better. Scores are on the
/// model's own scale (a Bradley-Terry logit, say); calibration makes them
/// comparable across prompts.
pub trait RewardModel: Send + Sync {
    fn name(&self) -> &str;

    /// One finite score per sample, in order.
    fn score(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>>;
}

/// A reward model as written in a run config: a registered name and params.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardModelSpec {
    pub name: String,
    #[serde(default = "empty_object")]
    pub params: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

/// Builds a reward model from (instance name, params).
pub type RewardFactory = Arc<dyn Fn(&str, &Value) -> Result<Arc<dyn RewardModel>> + Send + Sync>;

/// Name -> factory, like [`cgpo_judges::JudgeRegistry`].
#[derive(Clone, Default)]
pub struct RewardRegistry {
    factories: BTreeMap<String, RewardFactory>,
}

impl RewardRegistry {
    pub fn empty() -> Self {
        Self::default()
    }

    pub fn with_builtins() -> Self {
        let mut r = Self::empty();
        r.register("lexical", |name, params| {
            Ok(Arc::new(LexicalReward::from_params(name, params)?))
        });
        r.register("bradley_terry", |name, params| {
            Ok(Arc::new(BradleyTerryReward::from_params(name, params)?))
        });
        r.register("http", |name, params| {
            Ok(Arc::new(HttpReward::from_params(name, params)?))
        });
        r
    }

    pub fn register<F>(&mut self, name: impl Into<String>, factory: F) -> &mut Self
    where
        F: Fn(&str, &Value) -> Result<Arc<dyn RewardModel>> + Send + Sync + 'static,
    {
        self.factories.insert(name.into(), Arc::new(factory));
        self
    }

    /// Builds the model `spec` names; `instance` is its name in the config.
    pub fn build(&self, instance: &str, spec: &RewardModelSpec) -> Result<Arc<dyn RewardModel>> {
        let factory = self
            .factories
            .get(&spec.name)
            .ok_or_else(|| Error::Reward {
                model: instance.to_owned(),
                message: format!(
                    "unknown reward model `{}` (known: {})",
                    spec.name,
                    self.factories
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })?;
        factory(instance, &spec.params)
    }
}

/// Checks a model's answer: one finite score per sample.
pub(crate) fn checked_scores(
    model: &dyn RewardModel,
    batch: &[SampleView<'_>],
) -> Result<Vec<f32>> {
    let scores = model.score(batch)?;
    let bad = |message: String| Error::Reward {
        model: model.name().to_owned(),
        message,
    };
    if scores.len() != batch.len() {
        return Err(bad(format!(
            "returned {} scores for {} samples",
            scores.len(),
            batch.len()
        )));
    }
    if let Some((s, v)) = scores.iter().zip(batch).find(|(s, _)| !s.is_finite()) {
        return Err(bad(format!("non-finite score {s} for prompt `{}`", v.id)));
    }
    Ok(scores)
}
