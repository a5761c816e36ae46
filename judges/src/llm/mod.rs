//! LLM judges, as in the paper (section 7): a prompt template asks a
//! language model a yes/no question about the response, and the verdict
//! compares the probability of a positive token ("Yes") with that of a
//! negative token ("No") at the answer position.
//!
//! The model sits behind [`LlmBackend`]: an OpenAI-compatible HTTP endpoint
//! ([`OpenAiBackend`], in this crate) or a local candle model (in the `cgpo`
//! crate). Built-in templates: [`JudgeTemplate::factuality`],
//! [`JudgeTemplate::safety`], [`JudgeTemplate::false_refusal`],
//! [`JudgeTemplate::helpfulness`]. [`factory`] registers judges on a
//! backend given in code.
//!
//! ```
//! use std::sync::Arc;
//! use cgpo_judges::llm::{AnswerScore, JudgeTemplate, LlmBackend, LlmJudge, LlmRequest};
//! use cgpo_judges::{Judge, Prompt, SampleView};
//!
//! /// A stand-in model that says "Yes" when the response mentions Paris.
//! struct Toy;
//! impl LlmBackend for Toy {
//!     fn score(&self, requests: &[LlmRequest]) -> Vec<Result<AnswerScore, String>> {
//!         requests.iter().map(|r| {
//!             let yes = r.messages.last().unwrap().content.contains("Response: Paris");
//!             Ok(AnswerScore::from_logprobs(Some(if yes { -0.1 } else { -3.0 }), Some(-1.0)))
//!         }).collect()
//!     }
//! }
//!
//! let judge = LlmJudge::new("fact", JudgeTemplate::factuality(), Arc::new(Toy));
//! let (p, m) = (Prompt::from("Capital of France?"), serde_json::json!({"answer": "Paris"}));
//! let out = judge.judge(&[SampleView::new("a", &p, "Paris", &m), SampleView::new("b", &p, "Lyon", &m)]);
//! assert!(out[0].is_pass() && out[1].is_fail());
//! ```

mod http;
mod template;

pub use http::{OpenAiBackend, OpenAiConfig};
pub use template::JudgeTemplate;

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::{parse_params, Judge, JudgeError, Message, SampleView, Verdict};

/// One question for the model: the rendered messages and the two answer
/// tokens to compare.
#[derive(Clone, Debug, PartialEq)]
pub struct LlmRequest {
    pub messages: Vec<Message>,
    pub positive: String,
    pub negative: String,
}

/// What a backend learned about the answer: the log-probabilities of the
/// positive and negative tokens when it has them, and the answer text.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerScore {
    pub positive_logprob: Option<f32>,
    pub negative_logprob: Option<f32>,
    pub text: Option<String>,
}

impl AnswerScore {
    pub fn from_logprobs(positive: Option<f32>, negative: Option<f32>) -> Self {
        Self {
            positive_logprob: positive,
            negative_logprob: negative,
            text: None,
        }
    }

    pub fn from_text(text: impl Into<String>) -> Self {
        Self {
            text: Some(text.into()),
            ..Self::default()
        }
    }

    /// Positive beats negative when its probability is higher; a token the
    /// backend did not list is less likely than any it listed. Without
    /// probabilities for either, the answer text decides.
    pub fn verdict(&self, positive: &str, negative: &str) -> Verdict {
        let show =
            |lp: Option<f32>| lp.map_or("<unlisted>".to_string(), |v| format!("{:.3}", v.exp()));
        let detail = || {
            format!(
                "p({positive}) = {} vs p({negative}) = {}",
                show(self.positive_logprob),
                show(self.negative_logprob)
            )
        };
        match (self.positive_logprob, self.negative_logprob) {
            (Some(p), Some(n)) => Verdict::check(p > n, detail),
            (Some(_), None) => Verdict::Pass,
            (None, Some(_)) => Verdict::Fail(detail()),
            (None, None) => match &self.text {
                Some(text) if starts_with_word(text, positive) => Verdict::Pass,
                Some(text) if starts_with_word(text, negative) => {
                    Verdict::Fail(format!("the judge answered `{}`", text.trim()))
                }
                Some(text) => Verdict::Error(format!(
                    "the judge answered `{}`, neither `{positive}` nor `{negative}`",
                    text.trim()
                )),
                None => Verdict::error("the backend returned neither log-probabilities nor text"),
            },
        }
    }
}

/// Whether `text` starts with `word` (case-insensitive, ignoring leading
/// whitespace and punctuation after the word).
fn starts_with_word(text: &str, word: &str) -> bool {
    let t = text.trim_start().to_lowercase();
    let w = word.trim().to_lowercase();
    t.starts_with(&w)
        && t[w.len()..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric())
}

/// A language model that answers judge questions.
pub trait LlmBackend: Send + Sync {
    /// One result per request, in order; `Err` carries why this request
    /// failed (after any retries).
    fn score(&self, requests: &[LlmRequest]) -> Vec<Result<AnswerScore, String>>;
}

/// A judge that asks an LLM.
pub struct LlmJudge {
    name: String,
    template: JudgeTemplate,
    backend: Arc<dyn LlmBackend>,
}

impl LlmJudge {
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

    pub fn template(&self) -> &JudgeTemplate {
        &self.template
    }
}

impl Judge for LlmJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        // Render errors stay in place; only the rendered questions go to the backend.
        let mut requests = Vec::with_capacity(batch.len());
        let render_errors: Vec<Option<String>> = batch
            .iter()
            .map(|s| match self.template.request(s) {
                Ok(r) => {
                    requests.push(r);
                    None
                }
                Err(message) => Some(message),
            })
            .collect();
        let mut scores = self.backend.score(&requests).into_iter();
        let (pos, neg) = (&self.template.positive, &self.template.negative);
        render_errors
            .into_iter()
            .map(|r| match r {
                Some(message) => Verdict::Error(message),
                None => match scores.next() {
                    Some(Ok(score)) => score.verdict(pos, neg),
                    Some(Err(message)) => Verdict::Error(message),
                    None => Verdict::error("the backend returned fewer answers than questions"),
                },
            })
            .collect()
    }
}

/// Params of the registered `llm` judge.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmParams {
    /// A built-in template name, or a custom template object.
    template: TemplateParam,
    /// The OpenAI-compatible endpoint.
    http: OpenAiConfig,
}

/// A template as params give it: a built-in's name or a custom template.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum TemplateParam {
    Builtin(String),
    Custom(JudgeTemplate),
}

impl TemplateParam {
    /// The template; an unknown built-in name is an error naming `judge`.
    pub fn resolve(self, judge: &str) -> Result<JudgeTemplate, JudgeError> {
        match self {
            TemplateParam::Custom(t) => Ok(t),
            TemplateParam::Builtin(name) => {
                JudgeTemplate::builtin(&name).ok_or_else(|| JudgeError::Params {
                    judge: judge.to_owned(),
                    message: format!(
                        "unknown template `{name}` (built-in: {})",
                        JudgeTemplate::BUILTIN.join(", ")
                    ),
                })
            }
        }
    }
}

/// Params of a judge on a backend given in code ([`factory`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateOnly {
    template: TemplateParam,
}

/// A registry factory for LLM judges on `backend` (an in-process model,
/// say): params `{"template": NAME | {system?, user, positive, negative}}`.
///
/// ```
/// # use std::sync::Arc;
/// # use cgpo_judges::llm::{factory, AnswerScore, LlmBackend, LlmRequest};
/// # use cgpo_judges::{JudgeRegistry, JudgeSpec};
/// struct AlwaysYes;
/// impl LlmBackend for AlwaysYes {
///     fn score(&self, r: &[LlmRequest]) -> Vec<Result<AnswerScore, String>> {
///         r.iter().map(|_| Ok(AnswerScore::from_text("Yes"))).collect()
///     }
/// }
/// let mut judges = JudgeRegistry::with_builtins();
/// judges.register("local_llm", factory(Arc::new(AlwaysYes)));
/// let spec: JudgeSpec = serde_json::from_str(
///     r#"{"name": "local_llm", "params": {"template": "false_refusal"}}"#).unwrap();
/// assert!(judges.build(&spec).is_ok());
/// ```
pub fn factory(
    backend: Arc<dyn LlmBackend>,
) -> impl Fn(&str, &Value) -> Result<Box<dyn Judge>, JudgeError> + Send + Sync + 'static {
    move |name, params| {
        let p: TemplateOnly = parse_params(name, params)?;
        let template = p.template.resolve(name)?;
        Ok(Box::new(LlmJudge::new(name, template, backend.clone())))
    }
}

/// The registry's `llm` factory: a template and an HTTP backend.
pub(crate) fn from_params(name: &str, params: &Value) -> Result<Box<dyn Judge>, JudgeError> {
    let p: LlmParams = parse_params(name, params)?;
    let template = p.template.resolve(name)?;
    let backend = OpenAiBackend::new(p.http).map_err(|message| JudgeError::Params {
        judge: name.to_owned(),
        message,
    })?;
    Ok(Box::new(LlmJudge::new(name, template, Arc::new(backend))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_decide_when_present() {
        let v = |p, n| AnswerScore::from_logprobs(p, n).verdict("Yes", "No");
        assert!(v(Some(-0.5), Some(-1.0)).is_pass());
        assert!(v(Some(-1.0), Some(-0.5)).is_fail());
        assert!(v(Some(-1.0), Some(-1.0)).is_fail(), "a tie is not a pass");
        assert!(v(Some(-9.0), None).is_pass());
        assert!(matches!(v(None, Some(-9.0)), Verdict::Fail(r) if r.contains("<unlisted>")));
    }

    #[test]
    fn the_text_decides_without_probabilities() {
        let v = |t: &str| AnswerScore::from_text(t).verdict("Yes", "No");
        assert!(v(" yes").is_pass());
        assert!(v("Yes, it is.").is_pass());
        assert!(v("No.").is_fail());
        assert!(v("Yesterday").is_error());
        assert!(v("Maybe").is_error());
        assert!(AnswerScore::default().verdict("Yes", "No").is_error());
    }

    struct Failing;
    impl LlmBackend for Failing {
        fn score(&self, requests: &[LlmRequest]) -> Vec<Result<AnswerScore, String>> {
            requests
                .iter()
                .map(|_| Err("server down".to_string()))
                .collect()
        }
    }

    #[test]
    fn backend_and_template_errors_become_error_verdicts() {
        let judge = LlmJudge::new("f", JudgeTemplate::factuality(), Arc::new(Failing));
        let p = crate::Prompt::from("q");
        let (with, without) = (serde_json::json!({"answer": "x"}), serde_json::json!({}));
        let out = judge.judge(&[
            SampleView::new("a", &p, "r", &with),
            SampleView::new("b", &p, "r", &without),
        ]);
        assert_eq!(out[0], Verdict::error("server down"));
        assert!(matches!(&out[1], Verdict::Error(m) if m.contains("metadata.answer")));
    }

    #[test]
    fn params_pick_templates_and_reject_unknown_ones() {
        let ok = serde_json::json!({"template": "safety", "http": {"base_url": "http://127.0.0.1:1", "model": "m"}});
        assert_eq!(from_params("s", &ok).unwrap().name(), "s");
        let custom = serde_json::json!({"template": {"user": "Is {response} polite?", "positive": "Yes", "negative": "No"},
                                        "http": {"base_url": "http://127.0.0.1:1", "model": "m"}});
        assert!(from_params("c", &custom).is_ok());
        let bad = serde_json::json!({"template": "truthiness", "http": {"base_url": "http://x", "model": "m"}});
        assert!(from_params("t", &bad)
            .err()
            .unwrap()
            .to_string()
            .contains("unknown template `truthiness`"));
    }
}
