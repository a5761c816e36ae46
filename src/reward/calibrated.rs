//! The calibrated reward (cgpo-spec section 2):
//! `R_calib(s, a) = sigmoid(r(s, a) - r(s, a_bar))`, the Bradley-Terry
//! probability that response `a` beats the prompt's baseline `a_bar`.
//!
//! The baseline is the record's reference response, or one response
//! produced per prompt by a [`BaselineGenerator`] (a sample from pi_ref),
//! chosen by [`BaselineSource`]. Either way it is scored once per prompt and
//! cached. Raw and calibrated values both stay on the sample.
//!
//! ```
//! use std::sync::Arc;
//! use cgpo::data::{PromptRecord, Sample};
//! use cgpo::reward::{BaselineSource, CalibratedReward, LexicalReward};
//! let rm = Arc::new(LexicalReward::new("len", 1.0, []));
//! let record = Arc::new(PromptRecord::new("p", "Describe the sea.").with_baseline("blue and wide"));
//! let calibrated = CalibratedReward::new(rm, BaselineSource::Dataset);
//! let mut samples = vec![Sample::new(record.clone(), "blue and wide"), Sample::new(record, "deep blue and very wide")];
//! calibrated.score(&mut samples, None).unwrap();
//! let r = samples[1].reward.unwrap();
//! assert_eq!((r.raw, r.baseline), (5.0, 3.0));
//! assert_eq!(samples[0].reward.unwrap().calibrated, 0.5);
//! assert!((r.calibrated - 0.880797).abs() < 1e-6);
//! ```

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::{checked_scores, RewardModel};
use crate::data::{PromptRecord, Sample};
use crate::error::{Error, Result};

/// `sigmoid(raw - baseline)`, kept strictly inside (0, 1) and monotone in
/// `raw`: where f32 would round to 0 or 1 it stops at the nearest value
/// inside.
pub fn calibrate(raw: f32, baseline: f32) -> f32 {
    let d = f64::from(raw) - f64::from(baseline);
    let p = 1.0 / (1.0 + (-d).exp());
    (p as f32).clamp(f32::MIN_POSITIVE, 1.0 - f32::EPSILON / 2.0)
}

/// Where the baseline response a_bar comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BaselineSource {
    /// The record's `baseline` field; a record without one is an error.
    Dataset,
    /// One response per prompt from the generator (a pi_ref sample).
    PolicySample,
    /// The record's `baseline` when present, else the generator.
    #[default]
    DatasetThenPolicySample,
}

/// Produces one baseline response per prompt, once, before it is needed
/// (typically greedy or sampled decoding from the frozen reference policy).
pub trait BaselineGenerator: Send + Sync {
    fn generate(&self, records: &[&PromptRecord]) -> Result<Vec<String>>;
}

/// The reward of one sample: raw, its prompt's baseline, and calibrated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardValues {
    pub raw: f32,
    pub baseline: f32,
    pub calibrated: f32,
}

/// One prompt's cached baseline: its text and raw score. Export and restore
/// the cache with [`CalibratedReward::cached`] and [`CalibratedReward::restore`]
/// so a resumed run does not regenerate baselines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CachedBaseline {
    pub id: String,
    pub text: String,
    pub raw: f32,
}

/// A reward model with per-prompt baselines.
pub struct CalibratedReward {
    model: Arc<dyn RewardModel>,
    source: BaselineSource,
    cache: Mutex<HashMap<String, CachedBaseline>>,
}

impl CalibratedReward {
    pub fn new(model: Arc<dyn RewardModel>, source: BaselineSource) -> Self {
        Self {
            model,
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn model(&self) -> &Arc<dyn RewardModel> {
        &self.model
    }

    pub fn source(&self) -> BaselineSource {
        self.source
    }

    /// Scores the samples and sets `sample.reward`. Baselines missing from
    /// the cache are produced (from the record or `generator`), scored in one
    /// batch, and cached.
    pub fn score(
        &self,
        samples: &mut [Sample],
        generator: Option<&dyn BaselineGenerator>,
    ) -> Result<()> {
        let views: Vec<_> = samples.iter().map(Sample::view).collect();
        let raw = checked_scores(self.model.as_ref(), &views)?;
        let records: Vec<&PromptRecord> = samples.iter().map(|s| s.record.as_ref()).collect();
        self.ensure_baselines(&records, generator)?;
        let cache = self.lock();
        for (sample, raw) in samples.iter_mut().zip(raw) {
            let baseline = cache[&sample.record.id].raw;
            sample.reward = Some(RewardValues {
                raw,
                baseline,
                calibrated: calibrate(raw, baseline),
            });
        }
        Ok(())
    }

    /// Produces and scores the baselines of every record not yet cached.
    pub fn ensure_baselines(
        &self,
        records: &[&PromptRecord],
        generator: Option<&dyn BaselineGenerator>,
    ) -> Result<()> {
        let missing: Vec<&PromptRecord> = {
            let cache = self.lock();
            let mut seen = HashSet::new();
            records
                .iter()
                .copied()
                .filter(|r| !cache.contains_key(&r.id) && seen.insert(r.id.as_str()))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let texts = self.baseline_texts(&missing, generator)?;
        let views: Vec<_> = missing.iter().zip(&texts).map(|(r, t)| r.view(t)).collect();
        let raw = checked_scores(self.model.as_ref(), &views)?;
        let mut cache = self.lock();
        for ((r, text), raw) in missing.iter().zip(texts).zip(raw) {
            cache.insert(
                r.id.clone(),
                CachedBaseline {
                    id: r.id.clone(),
                    text,
                    raw,
                },
            );
        }
        Ok(())
    }

    fn baseline_texts(
        &self,
        records: &[&PromptRecord],
        generator: Option<&dyn BaselineGenerator>,
    ) -> Result<Vec<String>> {
        let use_dataset = self.source != BaselineSource::PolicySample;
        let mut texts: Vec<Option<String>> = records
            .iter()
            .map(|r| {
                if use_dataset {
                    r.baseline.clone()
                } else {
                    None
                }
            })
            .collect();
        let need: Vec<usize> = (0..records.len()).filter(|&i| texts[i].is_none()).collect();
        if need.is_empty() {
            return Ok(texts.into_iter().flatten().collect());
        }
        let first = records[need[0]];
        let generator = match (self.source, generator) {
            (BaselineSource::Dataset, _) => {
                return Err(Error::Baseline(format!(
                    "{} has no `baseline` and the baseline source is `dataset` ({} such prompts)",
                    first.locate(),
                    need.len()
                )))
            }
            (_, None) => {
                return Err(Error::Baseline(format!(
                    "{} needs a generated baseline but no generator was given ({} such prompts)",
                    first.locate(),
                    need.len()
                )))
            }
            (_, Some(g)) => g,
        };
        let asked: Vec<&PromptRecord> = need.iter().map(|&i| records[i]).collect();
        let generated = generator.generate(&asked)?;
        if generated.len() != asked.len() {
            return Err(Error::Baseline(format!(
                "returned {} baselines for {} prompts",
                generated.len(),
                asked.len()
            )));
        }
        for (i, text) in need.into_iter().zip(generated) {
            texts[i] = Some(text);
        }
        Ok(texts.into_iter().flatten().collect())
    }

    /// The cached baselines, sorted by prompt id.
    pub fn cached(&self) -> Vec<CachedBaseline> {
        let mut all: Vec<_> = self.lock().values().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Puts previously cached baselines back (after a resume).
    pub fn restore(&self, baselines: impl IntoIterator<Item = CachedBaseline>) {
        let mut cache = self.lock();
        for b in baselines {
            cache.insert(b.id.clone(), b);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, CachedBaseline>> {
        // A panic while holding the lock cannot leave a half-inserted entry.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}
