//! Small built-in rule judges that need no metadata: a regex that must (or
//! must not) match, and a word-count range. The paper's task judges (math
//! answers, IFEval instructions, code verifiers, LLM judges) have their own
//! modules.
//!
//! ```
//! use cgpo_judges::{Judge, LengthJudge, Prompt, SampleView, Verdict};
//! let judge = LengthJudge::new("brief", None, Some(3));
//! let (p, m) = (Prompt::from("hi"), serde_json::Value::Null);
//! let out = judge.judge(&[SampleView::new("a", &p, "one two three four", &m)]);
//! assert_eq!(out, vec![Verdict::fail("4 words, more than 3")]);
//! ```

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use crate::{parse_params, Judge, JudgeError, SampleView, Verdict};

/// Passes when the response matches `pattern` (or, with `must_match =
/// false`, when it does not).
pub struct RegexJudge {
    name: String,
    regex: Regex,
    must_match: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegexParams {
    pattern: String,
    #[serde(default = "yes")]
    must_match: bool,
}

fn yes() -> bool {
    true
}

impl RegexJudge {
    pub fn new(
        name: impl Into<String>,
        pattern: &str,
        must_match: bool,
    ) -> Result<Self, JudgeError> {
        let name = name.into();
        let regex = Regex::new(pattern).map_err(|e| JudgeError::Params {
            judge: name.clone(),
            message: format!("pattern: {e}"),
        })?;
        Ok(Self {
            name,
            regex,
            must_match,
        })
    }

    pub fn from_params(name: &str, params: &Value) -> Result<Self, JudgeError> {
        let p: RegexParams = parse_params(name, params)?;
        Self::new(name, &p.pattern, p.must_match)
    }
}

impl Judge for RegexJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        batch
            .iter()
            .map(|s| match (self.regex.find(s.response), self.must_match) {
                (Some(_), true) | (None, false) => Verdict::Pass,
                (None, true) => Verdict::Fail(format!("does not match /{}/", self.regex)),
                (Some(m), false) => {
                    Verdict::Fail(format!("matches /{}/ at `{}`", self.regex, m.as_str()))
                }
            })
            .collect()
    }
}

/// Passes when the response's whitespace-separated word count is within
/// `[min_words, max_words]` (either bound optional).
pub struct LengthJudge {
    name: String,
    min_words: Option<usize>,
    max_words: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LengthParams {
    #[serde(default)]
    min_words: Option<usize>,
    #[serde(default)]
    max_words: Option<usize>,
}

impl LengthJudge {
    pub fn new(
        name: impl Into<String>,
        min_words: Option<usize>,
        max_words: Option<usize>,
    ) -> Self {
        Self {
            name: name.into(),
            min_words,
            max_words,
        }
    }

    pub fn from_params(name: &str, params: &Value) -> Result<Self, JudgeError> {
        let p: LengthParams = parse_params(name, params)?;
        match (p.min_words, p.max_words) {
            (None, None) => Err(JudgeError::Params {
                judge: name.to_owned(),
                message: "set min_words, max_words or both".into(),
            }),
            (Some(lo), Some(hi)) if lo > hi => Err(JudgeError::Params {
                judge: name.to_owned(),
                message: format!("min_words ({lo}) is greater than max_words ({hi})"),
            }),
            (lo, hi) => Ok(Self::new(name, lo, hi)),
        }
    }
}

impl Judge for LengthJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        batch
            .iter()
            .map(|s| {
                let n = s.response.split_whitespace().count();
                match (self.min_words, self.max_words) {
                    (Some(lo), _) if n < lo => Verdict::Fail(format!("{n} words, fewer than {lo}")),
                    (_, Some(hi)) if n > hi => Verdict::Fail(format!("{n} words, more than {hi}")),
                    _ => Verdict::Pass,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Prompt;

    fn verdicts(judge: &dyn Judge, responses: &[&str]) -> Vec<Verdict> {
        let (p, m) = (Prompt::from("q"), Value::Null);
        let views: Vec<_> = responses
            .iter()
            .map(|r| SampleView::new("id", &p, r, &m))
            .collect();
        judge.judge(&views)
    }

    #[test]
    fn regex_must_and_must_not_match() {
        let must = RegexJudge::new("must", r"answer is \d+", true).unwrap();
        let must_not = RegexJudge::new("must_not", r"(?i)sorry", false).unwrap();
        let rs = ["The answer is 4", "Sorry, no"];
        assert_eq!(verdicts(&must, &rs)[0], Verdict::Pass);
        assert!(verdicts(&must, &rs)[1].is_fail());
        assert_eq!(verdicts(&must_not, &rs)[0], Verdict::Pass);
        assert_eq!(
            verdicts(&must_not, &rs)[1],
            Verdict::fail("matches /(?i)sorry/ at `Sorry`")
        );
    }

    #[test]
    fn length_bounds_are_inclusive() {
        let j = LengthJudge::new("len", Some(2), Some(3));
        let v = verdicts(&j, &["one", "one two", "one two three", "a b c d"]);
        assert_eq!(
            v.iter().map(Verdict::is_pass).collect::<Vec<_>>(),
            [false, true, true, false]
        );
    }

    #[test]
    fn bad_params_name_the_problem() {
        let e = |r: Result<LengthJudge, JudgeError>| r.err().unwrap().to_string();
        assert!(
            e(LengthJudge::from_params("len", &serde_json::json!({}))).contains("set min_words")
        );
        assert!(e(LengthJudge::from_params(
            "len",
            &serde_json::json!({"min_words": 5, "max_words": 2})
        ))
        .contains("greater"));
        assert!(e(LengthJudge::from_params(
            "len",
            &serde_json::json!({"max_words": "ten"})
        ))
        .contains("invalid type"));
        let r = RegexJudge::from_params("re", &serde_json::json!({"pattern": "("}));
        assert!(r
            .err()
            .unwrap()
            .to_string()
            .starts_with("judge `re`: pattern:"));
    }
}
