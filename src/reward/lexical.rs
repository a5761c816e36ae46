//! A heuristic reward model: a score per word plus a weight per phrase the
//! response contains. It is deliberately simple and *hackable* (longer
//! answers and stock phrases score higher), which makes it a stand-in for the
//! biased reward models that judges must guard against, in demos and tests.

use std::collections::BTreeMap;

use cgpo_judges::SampleView;
use serde::Deserialize;
use serde_json::Value;

use super::RewardModel;
use crate::error::{Error, Result};

pub struct LexicalReward {
    name: String,
    per_word: f32,
    /// Lower-cased phrase -> weight.
    phrases: Vec<(String, f32)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LexicalParams {
    #[serde(default)]
    per_word: f32,
    #[serde(default)]
    phrases: BTreeMap<String, f32>,
}

impl LexicalReward {
    pub fn new(
        name: impl Into<String>,
        per_word: f32,
        phrases: impl IntoIterator<Item = (String, f32)>,
    ) -> Self {
        Self {
            name: name.into(),
            per_word,
            phrases: phrases
                .into_iter()
                .map(|(p, w)| (p.to_lowercase(), w))
                .collect(),
        }
    }

    pub fn from_params(name: &str, params: &Value) -> Result<Self> {
        let p: LexicalParams =
            serde_json::from_value(params.clone()).map_err(|e| Error::Reward {
                model: name.to_owned(),
                message: format!("params: {e}"),
            })?;
        Ok(Self::new(name, p.per_word, p.phrases))
    }
}

impl RewardModel for LexicalReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>> {
        Ok(batch
            .iter()
            .map(|s| {
                let lower = s.response.to_lowercase();
                let words = s.response.split_whitespace().count() as f32;
                let bonus: f32 = self
                    .phrases
                    .iter()
                    .filter(|(p, _)| lower.contains(p.as_str()))
                    .map(|(_, w)| w)
                    .sum();
                self.per_word * words + bonus
            })
            .collect())
    }
}
