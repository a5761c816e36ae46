//! The records of the stages before CGPO, and their tokenization.
//!
//! - SFT records: `{"prompt", "response", "id"?, "metadata"?}`.
//! - Preference records (reward model, DPO): `{"prompt", "chosen",
//!   "rejected", "id"?, "metadata"?}`.
//!
//! `prompt` is text or a list of `{"role", "content"}` messages, as in
//! prompt records; the tokenizer's chat template turns it into the prompt
//! tokens, and a response is its text followed by the tokenizer's first
//! stop token (the model learns to stop).
//!
//! Every bad record is reported with `file:line` and field: bad JSON,
//! missing, empty or mistyped fields, unknown fields, `chosen` identical
//! to `rejected`, and, once tokenized, a record longer than the token
//! limit. [`Loaded`] keeps the good records and the errors apart; a stage
//! refuses to start on errors unless it is told to skip bad records
//! (`data.skip_bad_records`), and then counts what it skipped
//! ([`SkipReport`]).
//!
//! ```
//! use cgpo::pipeline::data::parse_preferences;
//! let text = r#"{"prompt": "Is 4 even or odd?", "chosen": "even", "rejected": "odd"}
//! {"prompt": "Is 3 even or odd?", "chosen": "odd", "rejected": "odd"}
//! {"prompt": "Is 5 even or odd?", "chosen": ""}"#;
//! let loaded = parse_preferences(text, "prefs.jsonl");
//! assert_eq!(loaded.records.len(), 1);
//! let errors: Vec<String> = loaded.errors.iter().map(|e| e.to_string()).collect();
//! assert_eq!(errors, ["prefs.jsonl:2: field `rejected`: identical to `chosen`",
//!                     "prefs.jsonl:3: field `chosen`: must not be empty",
//!                     "prefs.jsonl:3: field `rejected`: missing"]);
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use cgpo_judges::Prompt;
use serde_json::{Map, Value};

use crate::data::{parse_lines, Fields, Origin};
use crate::error::{DataError, Error, Result};
use crate::policy::TextTokenizer;

/// A demonstration: the response to imitate.
#[derive(Clone, Debug, PartialEq)]
pub struct SftRecord {
    pub id: Option<String>,
    pub prompt: Prompt,
    pub response: String,
    pub metadata: Value,
    pub origin: Option<Origin>,
}

/// A preference: `chosen` is better than `rejected`.
#[derive(Clone, Debug, PartialEq)]
pub struct PreferenceRecord {
    pub id: Option<String>,
    pub prompt: Prompt,
    pub chosen: String,
    pub rejected: String,
    pub metadata: Value,
    pub origin: Option<Origin>,
}

/// The good records of a file and the errors of the bad ones.
#[derive(Clone, Debug)]
pub struct Loaded<T> {
    pub records: Vec<T>,
    pub errors: Vec<DataError>,
    /// Records read, good and bad.
    pub total: usize,
}

impl<T> Loaded<T> {
    fn new(records: Vec<T>, errors: Vec<DataError>) -> Self {
        let bad = bad_lines(&errors);
        Self {
            total: records.len() + bad,
            records,
            errors,
        }
    }

    /// The records when there are no errors; with `skip`, the good records
    /// and a count of the skipped ones; else every error.
    pub fn accept(self, file: &Path, skip: bool) -> Result<(Vec<T>, SkipReport)> {
        if !self.errors.is_empty() && !skip {
            return Err(Error::Data(self.errors));
        }
        let report = SkipReport {
            file: file.to_path_buf(),
            total: self.total,
            skipped: bad_lines(&self.errors),
            errors: self.errors,
        };
        Ok((self.records, report))
    }
}

/// Distinct records (lines) among `errors`.
fn bad_lines(errors: &[DataError]) -> usize {
    errors
        .iter()
        .map(|e| e.origin.as_ref().map(|o| o.line))
        .collect::<BTreeSet<_>>()
        .len()
}

/// What a stage skipped in one file (`data.skip_bad_records`).
#[derive(Clone, Debug, PartialEq)]
pub struct SkipReport {
    pub file: PathBuf,
    /// Records in the file.
    pub total: usize,
    /// Records skipped.
    pub skipped: usize,
    /// Why, record by record.
    pub errors: Vec<DataError>,
}

impl fmt::Display for SkipReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: skipped {} of {} records",
            self.file.display(),
            self.skipped,
            self.total
        )
    }
}

/// Parses SFT records (JSONL text); `file` names it in errors.
pub fn parse_sft(text: &str, file: impl AsRef<Path>) -> Loaded<SftRecord> {
    let (records, errors) = parse_lines(text, file.as_ref(), |origin, value| {
        let mut f = Fields::new(value, origin)?;
        let id = optional_id(&mut f);
        let prompt = f.prompt();
        let response = f.required_string("response", false);
        let metadata = f.metadata();
        f.finish()?;
        Ok(SftRecord {
            id: id.flatten(),
            prompt: prompt.expect("checked by finish"),
            response: response.expect("checked by finish"),
            metadata: metadata.unwrap_or_else(empty),
            origin: Some(origin.clone()),
        })
    });
    Loaded::new(records, errors)
}

/// Parses preference records (JSONL text); `file` names it in errors.
pub fn parse_preferences(text: &str, file: impl AsRef<Path>) -> Loaded<PreferenceRecord> {
    let (records, errors) = parse_lines(text, file.as_ref(), |origin, value| {
        let mut f = Fields::new(value, origin)?;
        let id = optional_id(&mut f);
        let prompt = f.prompt();
        let chosen = f.required_string("chosen", false);
        let rejected = f.required_string("rejected", false);
        if let (Some(c), Some(r)) = (&chosen, &rejected) {
            if c.trim() == r.trim() {
                f.error("rejected", "identical to `chosen`");
            }
        }
        let metadata = f.metadata();
        f.finish()?;
        Ok(PreferenceRecord {
            id: id.flatten(),
            prompt: prompt.expect("checked by finish"),
            chosen: chosen.expect("checked by finish"),
            rejected: rejected.expect("checked by finish"),
            metadata: metadata.unwrap_or_else(empty),
            origin: Some(origin.clone()),
        })
    });
    Loaded::new(records, errors)
}

/// `None`: bad; `Some(None)`: absent.
fn optional_id(f: &mut Fields<'_>) -> Option<Option<String>> {
    if f.has("id") {
        f.id().map(Some)
    } else {
        Some(None)
    }
}

fn empty() -> Value {
    Value::Object(Map::new())
}

/// Reads SFT records from a JSONL file.
pub fn read_sft(path: impl AsRef<Path>) -> Result<Loaded<SftRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_sft(&text, path))
}

/// Reads preference records from a JSONL file.
pub fn read_preferences(path: impl AsRef<Path>) -> Result<Loaded<PreferenceRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(parse_preferences(&text, path))
}

/// An SFT record as tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct SftExample {
    pub prompt: Vec<u32>,
    pub response: Vec<u32>,
}

/// A preference record as tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct PairExample {
    pub prompt: Vec<u32>,
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Tokenizes SFT records; a record with more than `max_tokens` tokens
/// (prompt + response) is an error of its own.
pub fn encode_sft(
    loaded: Loaded<SftRecord>,
    tokenizer: &dyn TextTokenizer,
    max_tokens: usize,
) -> Result<Loaded<SftExample>> {
    let mut errors = loaded.errors;
    let mut out = Vec::with_capacity(loaded.records.len());
    for r in &loaded.records {
        let prompt = tokenizer.encode_prompt(&r.prompt)?;
        let response = tokenizer.encode_response(&r.response)?;
        match too_long(
            r.origin.as_ref(),
            "response",
            prompt.len(),
            response.len(),
            max_tokens,
        ) {
            Some(e) => errors.push(e),
            None => out.push(SftExample { prompt, response }),
        }
    }
    Ok(Loaded {
        total: loaded.total,
        records: out,
        errors: sorted(errors),
    })
}

/// Tokenizes preference records; prompt + chosen and prompt + rejected
/// must each fit in `max_tokens`.
pub fn encode_preferences(
    loaded: Loaded<PreferenceRecord>,
    tokenizer: &dyn TextTokenizer,
    max_tokens: usize,
) -> Result<Loaded<PairExample>> {
    let mut errors = loaded.errors;
    let mut out = Vec::with_capacity(loaded.records.len());
    for r in &loaded.records {
        let prompt = tokenizer.encode_prompt(&r.prompt)?;
        let chosen = tokenizer.encode_response(&r.chosen)?;
        let rejected = tokenizer.encode_response(&r.rejected)?;
        let o = r.origin.as_ref();
        let bad: Vec<DataError> = [("chosen", chosen.len()), ("rejected", rejected.len())]
            .into_iter()
            .filter_map(|(field, n)| too_long(o, field, prompt.len(), n, max_tokens))
            .collect();
        if bad.is_empty() {
            out.push(PairExample {
                prompt,
                chosen,
                rejected,
            });
        } else {
            errors.extend(bad);
        }
    }
    Ok(Loaded {
        total: loaded.total,
        records: out,
        errors: sorted(errors),
    })
}

fn too_long(
    origin: Option<&Origin>,
    field: &str,
    prompt: usize,
    response: usize,
    max_tokens: usize,
) -> Option<DataError> {
    (prompt + response > max_tokens).then(|| DataError {
        origin: origin.cloned(),
        field: Some(field.to_string()),
        message: format!(
            "too long: {prompt} prompt + {response} {field} tokens exceed the limit of {max_tokens} (data.max_tokens)"
        ),
    })
}

/// Errors in file order (parse errors first were collected apart from
/// length errors).
fn sorted(mut errors: Vec<DataError>) -> Vec<DataError> {
    errors.sort_by_key(|e| e.origin.as_ref().map(|o| o.line));
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ByteTokenizer;

    fn messages(errors: &[DataError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn sft_records_parse_in_both_prompt_forms() {
        let text = "{\"prompt\": \"Hi\", \"response\": \"Hello\"}\n\n{\"id\": 3, \"prompt\": [{\"role\": \"user\", \"content\": \"Q\"}], \"response\": \"A\", \"metadata\": {\"k\": 1}}";
        let l = parse_sft(text, "s.jsonl");
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert_eq!((l.total, l.records.len()), (2, 2));
        assert_eq!(l.records[1].id.as_deref(), Some("3"));
        assert_eq!(l.records[1].metadata["k"], 1);
        assert_eq!(
            l.records[1].origin.as_ref().unwrap().to_string(),
            "s.jsonl:3"
        );
    }

    #[test]
    fn bad_sft_records_name_line_and_field() {
        let text = [
            r#"{"prompt": "ok", "response": "fine"}"#,
            r#"{"prompt": "x"}"#,
            r#"{"prompt": "x", "response": "  "}"#,
            r#"{"prompt": "", "response": 3}"#,
            r#"{"prompt": "x", "response": "y", "answer": "z"}"#,
            r#"{"prompt": "x", "response": "y""#,
        ]
        .join("\n");
        let l = parse_sft(&text, "s.jsonl");
        assert_eq!((l.records.len(), l.total), (1, 6));
        let got = messages(&l.errors);
        assert_eq!(
            got[..5],
            [
                "s.jsonl:2: field `response`: missing",
                "s.jsonl:3: field `response`: must not be empty",
                "s.jsonl:4: field `prompt`: must not be empty",
                "s.jsonl:4: field `response`: expected a string, found a number",
                "s.jsonl:5: field `answer`: unknown field",
            ]
        );
        assert!(got[5].starts_with("s.jsonl:6: invalid JSON"), "{}", got[5]);
    }

    #[test]
    fn bad_preferences_name_line_and_field() {
        let text = [
            r#"{"prompt": "p", "rejected": "r"}"#,
            r#"{"prompt": "p", "chosen": "c", "rejected": ""}"#,
            r#"{"prompt": "p", "chosen": " same", "rejected": "same "}"#,
            r#"{"chosen": "c", "rejected": "r"}"#,
            r#"{"prompt": "p", "chosen": "c", "rejected": "r"}"#,
        ]
        .join("\n");
        let l = parse_preferences(&text, "p.jsonl");
        assert_eq!((l.records.len(), l.total), (1, 5));
        assert_eq!(
            messages(&l.errors),
            [
                "p.jsonl:1: field `chosen`: missing",
                "p.jsonl:2: field `rejected`: must not be empty",
                "p.jsonl:3: field `rejected`: identical to `chosen`",
                "p.jsonl:4: field `prompt`: missing",
            ]
        );
    }

    #[test]
    fn over_long_records_are_errors_after_tokenizing() {
        let text = "{\"prompt\": \"Hi\", \"response\": \"short\"}\n{\"prompt\": \"Hi\", \"response\": \"a much longer response\"}";
        // "user: Hi\nassistant: " is 20 bytes; + "short" + EOS = 26.
        let l = encode_sft(parse_sft(text, "s.jsonl"), &ByteTokenizer, 26).unwrap();
        assert_eq!(l.records.len(), 1);
        assert_eq!(l.records[0].response.last(), Some(&ByteTokenizer::EOS));
        assert_eq!(messages(&l.errors), [
            "s.jsonl:2: field `response`: too long: 20 prompt + 23 response tokens exceed the limit of 26 (data.max_tokens)"
        ]);
        let prefs =
            "{\"prompt\": \"Hi\", \"chosen\": \"no\", \"rejected\": \"a much longer response\"}";
        let l =
            encode_preferences(parse_preferences(prefs, "p.jsonl"), &ByteTokenizer, 26).unwrap();
        assert!(l.records.is_empty());
        assert_eq!(l.errors.len(), 1);
        assert_eq!(l.errors[0].field.as_deref(), Some("rejected"));
    }

    #[test]
    fn accept_refuses_or_skips_and_counts() {
        let text =
            "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\"}\n{\"prompt\": \"p\"}\n[]";
        let refused = parse_preferences(text, "p.jsonl").accept(Path::new("p.jsonl"), false);
        let err = refused.unwrap_err();
        assert_eq!(err.data_errors().len(), 3);
        let (records, report) = parse_preferences(text, "p.jsonl")
            .accept(Path::new("p.jsonl"), true)
            .unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(
            (report.total, report.skipped, report.errors.len()),
            (3, 2, 3)
        );
        assert_eq!(report.to_string(), "p.jsonl: skipped 2 of 3 records");
    }
}
