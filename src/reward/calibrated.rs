//! The calibrated reward (docs/algorithm.md §2):
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
pub use crate::data::RewardValues;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reward::LexicalReward;
    use cgpo_judges::SampleView;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    proptest! {
        #[test]
        fn calibrated_is_strictly_inside_0_1(r in any::<f32>().prop_filter("finite", |v| v.is_finite()),
                                            b in any::<f32>().prop_filter("finite", |v| v.is_finite())) {
            let c = calibrate(r, b);
            prop_assert!(c > 0.0 && c < 1.0, "calibrate({r}, {b}) = {c}");
        }

        #[test]
        fn calibrated_is_one_half_at_the_baseline(r in any::<f32>().prop_filter("finite", |v| v.is_finite())) {
            prop_assert_eq!(calibrate(r, r), 0.5);
        }

        #[test]
        fn calibrated_is_monotone_in_the_raw_reward(a in -1e6f32..1e6, d in 0f32..1e3, b in -1e6f32..1e6) {
            prop_assert!(calibrate(a, b) <= calibrate(a + d, b));
        }

        #[test]
        fn calibrated_is_strictly_monotone_near_the_baseline(a in -5f32..5.0, d in 1e-3f32..5.0) {
            prop_assert!(calibrate(a, 0.0) < calibrate(a + d, 0.0));
        }
    }

    /// Scores = number of chars; counts calls and scored samples.
    #[derive(Default)]
    struct Counting {
        calls: AtomicUsize,
        scored: AtomicUsize,
    }

    impl RewardModel for Counting {
        fn name(&self) -> &str {
            "counting"
        }
        fn score(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.scored.fetch_add(batch.len(), Ordering::SeqCst);
            Ok(batch.iter().map(|s| s.response.len() as f32).collect())
        }
    }

    struct Fixed(&'static str, AtomicUsize);

    impl BaselineGenerator for Fixed {
        fn generate(&self, records: &[&PromptRecord]) -> Result<Vec<String>> {
            self.1.fetch_add(records.len(), Ordering::SeqCst);
            Ok(records.iter().map(|_| self.0.to_owned()).collect())
        }
    }

    fn record(id: &str, baseline: Option<&str>) -> Arc<PromptRecord> {
        let r = PromptRecord::new(id, "q");
        Arc::new(match baseline {
            Some(b) => r.with_baseline(b),
            None => r,
        })
    }

    #[test]
    fn baselines_are_scored_once_per_prompt_and_cached() {
        let model = Arc::new(Counting::default());
        let cr = CalibratedReward::new(model.clone(), BaselineSource::DatasetThenPolicySample);
        let generator = Fixed("gen", AtomicUsize::new(0));
        let (a, b) = (record("a", Some("abcd")), record("b", None));
        let mut samples = vec![
            Sample::new(a.clone(), "ab"),
            Sample::new(a.clone(), "abcdef"),
            Sample::new(b.clone(), "gen"),
        ];
        cr.score(&mut samples, Some(&generator)).unwrap();
        // One batch for the samples, one for the two baselines.
        assert_eq!(model.calls.load(Ordering::SeqCst), 2);
        assert_eq!(model.scored.load(Ordering::SeqCst), 5);
        assert_eq!(
            generator.1.load(Ordering::SeqCst),
            1,
            "only the prompt without a dataset baseline"
        );
        let r: Vec<RewardValues> = samples.iter().map(|s| s.reward.unwrap()).collect();
        assert_eq!((r[0].raw, r[0].baseline), (2.0, 4.0));
        assert!(r[0].calibrated < 0.5 && r[1].calibrated > 0.5);
        assert_eq!(r[2].calibrated, 0.5);
        // A second round reuses the cache: only the samples are scored.
        let mut again = vec![Sample::new(b, "x"), Sample::new(a, "y")];
        cr.score(&mut again, Some(&generator)).unwrap();
        assert_eq!(model.calls.load(Ordering::SeqCst), 3);
        assert_eq!(generator.1.load(Ordering::SeqCst), 1);
        let ids: Vec<String> = cr.cached().into_iter().map(|c| c.id).collect();
        assert_eq!(ids, ["a", "b"]);
    }

    #[test]
    fn a_restored_cache_is_not_recomputed() {
        let model = Arc::new(Counting::default());
        let cr = CalibratedReward::new(model.clone(), BaselineSource::PolicySample);
        cr.restore([CachedBaseline {
            id: "a".into(),
            text: "t".into(),
            raw: 1.0,
        }]);
        let mut s = vec![Sample::new(record("a", None), "x")];
        cr.score(&mut s, None).unwrap();
        assert_eq!(model.calls.load(Ordering::SeqCst), 1);
        assert_eq!(s[0].reward.unwrap().calibrated, 0.5);
    }

    #[test]
    fn the_policy_sample_source_ignores_dataset_baselines() {
        let cr = CalibratedReward::new(Arc::new(Counting::default()), BaselineSource::PolicySample);
        let generator = Fixed("12345", AtomicUsize::new(0));
        let mut s = vec![Sample::new(record("a", Some("1")), "12345")];
        cr.score(&mut s, Some(&generator)).unwrap();
        assert_eq!(s[0].reward.unwrap().baseline, 5.0);
    }

    #[test]
    fn missing_baselines_are_errors_that_name_the_prompt() {
        let dataset = CalibratedReward::new(Arc::new(Counting::default()), BaselineSource::Dataset);
        let mut s = vec![Sample::new(record("a", None), "x")];
        let err = dataset.score(&mut s, None).unwrap_err().to_string();
        assert!(
            err.contains("id `a`") && err.contains("source is `dataset`"),
            "{err}"
        );
        let auto = CalibratedReward::new(
            Arc::new(Counting::default()),
            BaselineSource::DatasetThenPolicySample,
        );
        let err = auto.score(&mut s, None).unwrap_err().to_string();
        assert!(err.contains("no generator was given"), "{err}");
        assert!(s[0].reward.is_none());
    }

    #[test]
    fn non_finite_or_missing_scores_are_errors() {
        struct Bad(f32, usize);
        impl RewardModel for Bad {
            fn name(&self) -> &str {
                "bad"
            }
            fn score(&self, _: &[SampleView<'_>]) -> Result<Vec<f32>> {
                Ok(vec![self.0; self.1])
            }
        }
        let mut s = vec![Sample::new(record("a", Some("b")), "x")];
        let nan = CalibratedReward::new(Arc::new(Bad(f32::NAN, 1)), BaselineSource::Dataset);
        assert_eq!(
            nan.score(&mut s, None).unwrap_err().to_string(),
            "reward model `bad`: non-finite score NaN for prompt `a`"
        );
        let short = CalibratedReward::new(Arc::new(Bad(1.0, 0)), BaselineSource::Dataset);
        assert!(short
            .score(&mut s, None)
            .unwrap_err()
            .to_string()
            .contains("0 scores for 1 samples"));
    }

    #[test]
    fn lexical_reward_prefers_length_and_phrases() {
        let rm = LexicalReward::new("lex", 0.5, [("Great".to_string(), 2.0)]);
        let r = PromptRecord::new("p", "q");
        let s = rm.score(&[r.view("a great idea"), r.view("ok")]).unwrap();
        assert_eq!(s, [3.5, 0.5]);
    }
}
