//! The math answer judge (docs/algorithm.md §7), registered as `"math"`.
//!
//! A response passes when its last sentence reads "The final answer is X"
//! ([`sentence`]) and X is mathematically equivalent ([`equivalent`]) to
//! the gold answer in the prompt's metadata (`metadata.answer` by default,
//! a string or a number). A right answer in the wrong format fails, and
//! the reason says which rule broke and what was found and expected. Bad
//! metadata is `Verdict::Error`, never a panic.
//!
//! ```
//! use cgpo_judges::{Judge, MathJudge, Prompt, SampleView, Verdict};
//! let judge = MathJudge::new("math");
//! let (p, m) = (Prompt::from("What is 3/4 of 1?"), serde_json::json!({"answer": "0.75"}));
//! let out = judge.judge(&[
//!     SampleView::new("a", &p, r"So it is 3/4. The final answer is $\frac{3}{4}$.", &m),
//!     SampleView::new("b", &p, "The answer is 0.75.", &m),
//! ]);
//! assert_eq!(out[0], Verdict::Pass);
//! assert!(matches!(&out[1], Verdict::Fail(r) if r.starts_with("format:")));
//! ```

mod equiv;
pub mod normalize;
mod num;
mod parse;
pub mod sentence;

pub use equiv::equivalent;
pub use num::Num;
pub use parse::{parse_answer, Answer, Shape};

use serde::Deserialize;
use serde_json::Value;

use crate::{parse_params, Judge, JudgeError, SampleView, Verdict};
use sentence::{final_answer, FinalAnswer};

/// The default relative tolerance for inexact numbers (surds, pi).
pub const DEFAULT_REL_TOL: f64 = 1e-9;

/// Quoted text in reasons is cut to this many characters.
const QUOTE_CHARS: usize = 80;

/// Checks "The final answer is X" against a gold answer in the metadata.
pub struct MathJudge {
    name: String,
    answer_key: String,
    rel_tol: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MathParams {
    #[serde(default = "default_answer_key")]
    answer_key: String,
    #[serde(default = "default_rel_tol")]
    rel_tol: f64,
}

fn default_answer_key() -> String {
    "answer".into()
}

fn default_rel_tol() -> f64 {
    DEFAULT_REL_TOL
}

impl MathJudge {
    /// A judge reading `metadata.answer` with the default tolerance.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            answer_key: default_answer_key(),
            rel_tol: DEFAULT_REL_TOL,
        }
    }

    /// From registry params `{"answer_key": "answer", "rel_tol": 1e-9}`,
    /// both optional.
    pub fn from_params(name: &str, params: &Value) -> Result<Self, JudgeError> {
        let p: MathParams = parse_params(name, params)?;
        if p.answer_key.is_empty() {
            return Err(JudgeError::Params {
                judge: name.to_owned(),
                message: "answer_key must not be empty".into(),
            });
        }
        if !(p.rel_tol.is_finite() && p.rel_tol >= 0.0) {
            return Err(JudgeError::Params {
                judge: name.to_owned(),
                message: format!("rel_tol must be a finite number >= 0, got {}", p.rel_tol),
            });
        }
        Ok(Self {
            name: name.to_owned(),
            answer_key: p.answer_key,
            rel_tol: p.rel_tol,
        })
    }

    /// The gold answer as text, or why it cannot be read.
    fn gold(&self, metadata: &Value) -> Result<String, String> {
        let Value::Object(map) = metadata else {
            return Err(format!("metadata is {}, not an object", kind(metadata)));
        };
        match map.get(&self.answer_key) {
            None => Err(format!("metadata has no `{}`", self.answer_key)),
            Some(Value::String(s)) if s.trim().is_empty() => {
                Err(format!("metadata `{}` is empty", self.answer_key))
            }
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(format!(
                "metadata `{}` must be a string or a number, got {}",
                self.answer_key,
                kind(other)
            )),
        }
    }

    fn judge_one(&self, s: &SampleView<'_>) -> Verdict {
        let gold = match self.gold(s.metadata) {
            Ok(g) => g,
            Err(e) => return Verdict::Error(e),
        };
        let matches = |x: &str| equivalent(&parse_answer(x), &parse_answer(&gold), self.rel_tol);
        match final_answer(s.response) {
            FinalAnswer::Found(x) if matches(x) => Verdict::Pass,
            FinalAnswer::Found(x) => Verdict::Fail(format!(
                "wrong answer: found `{}`, expected `{}`",
                quote(x),
                quote(&gold)
            )),
            FinalAnswer::Missing { last_sentence } => Verdict::Fail(format!(
                "format: the last sentence is not \"The final answer is X\" (it is `{}`); expected `{}`",
                quote(last_sentence),
                quote(&gold)
            )),
            FinalAnswer::Empty => Verdict::Fail(format!(
                "format: \"The final answer is\" is not followed by an answer; expected `{}`",
                quote(&gold)
            )),
            FinalAnswer::NotLast { answer, after } => Verdict::Fail(format!(
                "format: text follows the final-answer sentence (`{}`); found `{}` ({}), expected `{}`",
                quote(after),
                quote(answer),
                if matches(answer) { "right value" } else { "wrong value" },
                quote(&gold)
            )),
        }
    }
}

impl Judge for MathJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        batch.iter().map(|s| self.judge_one(s)).collect()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `s` cut to [`QUOTE_CHARS`] characters, so that reasons stay one line.
fn quote(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(QUOTE_CHARS) {
        Some((k, _)) => format!("{}...", &flat[..k]),
        None => flat,
    }
}

#[cfg(test)]
mod tests;
