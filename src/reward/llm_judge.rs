//! A reward model that asks an LLM judge: the reward of a response is the
//! judge's log-odds of the positive answer, `log P(Yes) - log P(No)`, for a
//! yes/no question about it (by default [`JudgeTemplate::helpfulness`]).
//!
//! This is the reward signal to fall back on when no trained reward model is
//! at hand: a policy's own judgement of "good" (the paper's LLM judges, read
//! as a score instead of a verdict). It is as weak as the judge model is; a
//! small judge mostly rewards fluent, on-topic text. Calibration then
//! compares these log-odds with those of the prompt's baseline response.
//!
//! ```
//! use std::sync::Arc;
//! use cgpo::judges::llm::{AnswerScore, JudgeTemplate, LlmBackend, LlmRequest};
//! use cgpo::judges::{Prompt, SampleView};
//! use cgpo::reward::{LlmJudgeReward, RewardModel};
//!
//! /// P(Yes) = 0.8 when the question contains "Paris", else 0.2.
//! struct Toy;
//! impl LlmBackend for Toy {
//!     fn score(&self, r: &[LlmRequest]) -> Vec<Result<AnswerScore, String>> {
//!         r.iter().map(|q| {
//!             let yes = if q.messages[1].content.contains("Paris") { 0.8f32 } else { 0.2 };
//!             Ok(AnswerScore::from_logprobs(Some(yes.ln()), Some((1.0 - yes).ln())))
//!         }).collect()
//!     }
//! }
//! let rm = LlmJudgeReward::new("judge", JudgeTemplate::helpfulness(), Arc::new(Toy));
//! let (p, m) = (Prompt::from("Capital of France?"), serde_json::Value::Null);
//! let r = rm.score(&[SampleView::new("a", &p, "Paris", &m), SampleView::new("b", &p, "Lyon", &m)]).unwrap();
//! assert!((r[0] - 4f32.ln()).abs() < 1e-5 && (r[1] + 4f32.ln()).abs() < 1e-5);
//! ```

use std::sync::Arc;

use cgpo_judges::llm::{JudgeTemplate, LlmBackend, TemplateParam};
use cgpo_judges::SampleView;
use serde::Deserialize;
use serde_json::Value;

use super::RewardModel;
use crate::error::{Error, Result};

pub struct LlmJudgeReward {
    name: String,
    template: JudgeTemplate,
    backend: Arc<dyn LlmBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    /// A built-in template's name or a custom template; default
    /// `helpfulness`.
    #[serde(default)]
    template: Option<TemplateParam>,
}

impl LlmJudgeReward {
    pub fn new(
        name: impl Into<String>,
        template: JudgeTemplate,
        backend: Arc<dyn LlmBackend>,
    ) -> Self {
        Self {
            name: name.into(),
            template,
            backend,
        }
    }

    /// A [`super::RewardRegistry`] factory on `backend`: params
    /// `{"template"?: NAME | {system?, user, positive, negative}}`.
    pub fn factory(
        backend: Arc<dyn LlmBackend>,
    ) -> impl Fn(&str, &Value) -> Result<Arc<dyn RewardModel>> + Send + Sync + 'static {
        move |name, params| {
            let error = |message: String| Error::Reward {
                model: name.to_owned(),
                message,
            };
            let p: Params = serde_json::from_value(params.clone())
                .map_err(|e| error(format!("params: {e}")))?;
            let template = match p.template {
                Some(t) => t.resolve(name).map_err(|e| error(e.to_string()))?,
                None => JudgeTemplate::helpfulness(),
            };
            Ok(Arc::new(Self::new(name, template, backend.clone())))
        }
    }
}

impl RewardModel for LlmJudgeReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>> {
        let error = |id: &str, message: String| Error::Reward {
            model: self.name.clone(),
            message: format!("sample `{id}`: {message}"),
        };
        let requests = batch
            .iter()
            .map(|s| self.template.request(s).map_err(|m| error(s.id, m)))
            .collect::<Result<Vec<_>>>()?;
        let answers = self.backend.score(&requests);
        if answers.len() != batch.len() {
            return Err(Error::Reward {
                model: self.name.clone(),
                message: format!(
                    "the judge backend gave {} answers to {} questions",
                    answers.len(),
                    batch.len()
                ),
            });
        }
        batch
            .iter()
            .zip(answers)
            .map(|(s, answer)| {
                let a = answer.map_err(|m| error(s.id, m))?;
                match (a.positive_logprob, a.negative_logprob) {
                    (Some(p), Some(n)) => Ok(p - n),
                    _ => Err(error(
                        s.id,
                        format!(
                            "the judge gave no log-probability of both `{}` and `{}`",
                            self.template.positive, self.template.negative
                        ),
                    )),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cgpo_judges::llm::{AnswerScore, LlmRequest};
    use cgpo_judges::Prompt;
    use serde_json::json;

    struct Answers(Vec<std::result::Result<AnswerScore, String>>);

    impl LlmBackend for Answers {
        fn score(&self, _: &[LlmRequest]) -> Vec<std::result::Result<AnswerScore, String>> {
            self.0.clone()
        }
    }

    fn score(answers: Vec<std::result::Result<AnswerScore, String>>) -> Result<Vec<f32>> {
        let rm = LlmJudgeReward::new(
            "j",
            JudgeTemplate::helpfulness(),
            Arc::new(Answers(answers)),
        );
        let (p, m) = (Prompt::from("q"), Value::Null);
        rm.score(&[SampleView::new("s1", &p, "a", &m)])
    }

    #[test]
    fn missing_probabilities_and_backend_errors_name_the_sample() {
        let text_only = score(vec![Ok(AnswerScore::from_text("Yes"))]).unwrap_err();
        assert!(text_only.to_string().contains("sample `s1`"), "{text_only}");
        let failed = score(vec![Err("timed out".into())]).unwrap_err();
        assert!(failed.to_string().contains("timed out"), "{failed}");
        let short = score(vec![]).unwrap_err();
        assert!(short.to_string().contains("0 answers to 1"), "{short}");
    }

    #[test]
    fn factory_reads_templates_and_rejects_unknown_ones() {
        let f = LlmJudgeReward::factory(Arc::new(Answers(vec![])));
        assert!(f("r", &json!({})).is_ok());
        assert!(f("r", &json!({"template": "factuality"})).is_ok());
        let bad = f("r", &json!({"template": "nope"})).err().unwrap();
        assert!(bad.to_string().contains("unknown template `nope`"), "{bad}");
        let extra = f("r", &json!({"model": "x"})).err().unwrap();
        assert!(extra.to_string().contains("unknown field"), "{extra}");
    }
}
