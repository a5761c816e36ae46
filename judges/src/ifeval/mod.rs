//! The instruction-following judge (`"ifeval"`): IFEval's 25 verifiable
//! instructions, checked in the reference's strict mode.
//!
//! Each sample's metadata carries IFEval's format, `{"instruction_id_list":
//! [...], "kwargs": [{...}, ...]}`; the sample passes only if every listed
//! instruction holds. A failure names each instruction that failed and why;
//! metadata that cannot be read (unknown id, missing or ill-typed argument,
//! lists of different lengths) gives `Verdict::Error`. A response that is
//! empty after stripping whitespace fails every instruction, as in the
//! reference. Counting rules follow Google's `instruction_following_eval`
//! (see docs/judges-ifeval.md for each rule and the known differences).
//!
//! ```
//! use cgpo_judges::{IfevalJudge, Judge, Prompt, SampleView, Verdict};
//! let judge = IfevalJudge::new("ifeval");
//! let prompt = Prompt::from("Write a haiku about rain in under 20 words, no commas.");
//! let meta = serde_json::json!({
//!     "instruction_id_list": ["length_constraints:number_words", "punctuation:no_comma"],
//!     "kwargs": [{"num_words": 20, "relation": "less than"}, {}],
//! });
//! let good = "Soft rain on the roof\nslow drops gather on the glass\nthe garden drinks deep";
//! let bad = "Rain, rain, go away.";
//! let verdicts = judge.judge(&[
//!     SampleView::new("p0", &prompt, good, &meta),
//!     SampleView::new("p0", &prompt, bad, &meta),
//! ]);
//! assert_eq!(verdicts[0], Verdict::Pass);
//! assert_eq!(verdicts[1], Verdict::fail("punctuation:no_comma: 2 commas"));
//! ```

mod case;
mod content;
mod format;
mod instruction;
mod keywords;
mod language;
mod length;
pub mod punkt;
mod shape;
pub mod text;

use rayon::prelude::*;
use serde::Deserialize;
use serde_json::Value;

use crate::{parse_params, Judge, JudgeError, SampleView, Verdict};

pub use instruction::INSTRUCTION_IDS;

/// Batches at least this large are judged in parallel.
const PARALLEL_MIN_BATCH: usize = 64;

/// Checks IFEval instructions from each sample's metadata.
pub struct IfevalJudge {
    name: String,
}

/// The reference's evaluation modes; only strict is implemented (the loose
/// mode retries with markdown stripped and first/last lines removed, an
/// upper bound meant for reporting rather than for a training constraint).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    #[default]
    Strict,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IfevalParams {
    #[serde(default)]
    #[allow(dead_code)]
    mode: Mode,
}

impl IfevalJudge {
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// Params: `{}` or `{"mode": "strict"}`.
    pub fn from_params(name: &str, params: &Value) -> Result<Self, JudgeError> {
        let _: IfevalParams = parse_params(name, params)?;
        Ok(Self::new(name))
    }

    /// The verdict for one response against IFEval metadata.
    pub fn judge_one(&self, response: &str, metadata: &Value) -> Verdict {
        let instructions = match instruction::parse_metadata(metadata) {
            Ok(list) => list,
            Err(e) => return Verdict::Error(e),
        };
        if text::py_strip(response).is_empty() {
            let ids: Vec<&str> = instructions.iter().map(|(id, _)| id.as_str()).collect();
            return Verdict::Fail(format!("{}: empty response", ids.join(", ")));
        }
        let failures: Vec<String> = instructions
            .iter()
            .filter_map(|(id, ins)| ins.check(response).err().map(|why| format!("{id}: {why}")))
            .collect();
        if failures.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Fail(failures.join("; "))
        }
    }
}

impl Judge for IfevalJudge {
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        let one = |s: &SampleView<'_>| self.judge_one(s.response, s.metadata);
        if batch.len() >= PARALLEL_MIN_BATCH {
            batch.par_iter().map(one).collect()
        } else {
            batch.iter().map(one).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn empty_response_fails_every_instruction() {
        let judge = IfevalJudge::new("ifeval");
        let meta = json!({"instruction_id_list": ["punctuation:no_comma", "keywords:forbidden_words"],
            "kwargs": [{}, {"forbidden_words": ["x"]}]});
        assert_eq!(
            judge.judge_one(" \n", &meta),
            Verdict::fail("punctuation:no_comma, keywords:forbidden_words: empty response")
        );
    }

    #[test]
    fn every_failure_is_named() {
        let judge = IfevalJudge::new("ifeval");
        let meta = json!({"instruction_id_list": ["length_constraints:number_words", "startend:quotation"],
            "kwargs": [{"num_words": 3, "relation": "less than"}, {}]});
        assert_eq!(
            judge.judge_one("one two three", &meta),
            Verdict::fail(
                "length_constraints:number_words: 3 words, expected less than 3; \
                 startend:quotation: not wrapped in double quotation marks"
            )
        );
        assert_eq!(judge.judge_one("\"one two\"", &meta), Verdict::Pass);
    }

    #[test]
    fn bad_metadata_is_an_error_and_params_are_checked() {
        let judge = IfevalJudge::new("ifeval");
        assert!(judge.judge_one("x", &Value::Null).is_error());
        assert!(IfevalJudge::from_params("ifeval", &json!({"mode": "strict"})).is_ok());
        assert!(IfevalJudge::from_params("ifeval", &json!({"mode": "loose"})).is_err());
        assert!(IfevalJudge::from_params("ifeval", &json!({"strict": true})).is_err());
    }
}
