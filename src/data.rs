//! Prompt records, samples, and JSONL reading that never drops a record.
//!
//! A prompt record is one JSON object per line:
//! `{"id", "prompt" (text or [{"role", "content"}]), "task"?, "metadata"?, "baseline"?}`.
//! Every bad line is reported with file, line and field (bad JSON, missing
//! field, wrong type, unknown field, unknown task, duplicate id), all of them
//! at once; blank lines are skipped.
//!
//! ```
//! use cgpo::data::parse_prompts;
//! let text = r#"{"id": "m1", "prompt": "2+2?", "task": "math", "metadata": {"answer": "4"}}
//! {"id": "m2", "prompt": "3+3?", "task": "poetry"}"#;
//! let tasks = ["math".to_string()];
//! let err = parse_prompts(text, "train.jsonl", Some(&tasks)).unwrap_err();
//! assert_eq!(err.to_string(), "train.jsonl:2: field `task`: unknown task `poetry` (tasks: math)");
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cgpo_judges::{Message, Prompt, SampleJudgement, SampleView};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use crate::error::Origin;
use crate::error::{DataError, Error, Result};

/// The reward of one sample: raw, its prompt's baseline, and calibrated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RewardValues {
    pub raw: f32,
    pub baseline: f32,
    pub calibrated: f32,
}

/// One training or evaluation prompt.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PromptRecord {
    pub id: String,
    pub prompt: Prompt,
    /// The task label; set by the stratifier when the data has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// Judge inputs: gold answer, unit tests, instruction kwargs, ...
    pub metadata: Value,
    /// A reference response used as the calibration baseline a_bar.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<String>,
    #[serde(skip)]
    pub origin: Option<Origin>,
}

impl PromptRecord {
    pub fn new(id: impl Into<String>, prompt: impl Into<Prompt>) -> Self {
        Self {
            id: id.into(),
            prompt: prompt.into(),
            task: None,
            metadata: Value::Object(Map::new()),
            baseline: None,
            origin: None,
        }
    }

    pub fn with_task(mut self, task: impl Into<String>) -> Self {
        self.task = Some(task.into());
        self
    }

    pub fn with_metadata(mut self, metadata: Value) -> Self {
        self.metadata = metadata;
        self
    }

    pub fn with_baseline(mut self, baseline: impl Into<String>) -> Self {
        self.baseline = Some(baseline.into());
        self
    }

    /// The record's place for messages: `file:line` or `id`.
    pub fn locate(&self) -> String {
        match &self.origin {
            Some(o) => format!("{o} (id `{}`)", self.id),
            None => format!("id `{}`", self.id),
        }
    }

    /// A view of this prompt with some response, for judges and reward models.
    pub fn view<'a>(&'a self, response: &'a str) -> SampleView<'a> {
        SampleView::new(&self.id, &self.prompt, response, &self.metadata)
    }
}

/// A prompt and one response, with what the pipeline learns about it: the
/// one record of a sample through judging and rewarding. (Its token ids and
/// behaviour log-probs stay in the rollout batch they were sampled in,
/// where the tensors are made from; the trainer keeps the two side by
/// side, row i with sample i.)
#[derive(Clone, Debug)]
pub struct Sample {
    pub record: Arc<PromptRecord>,
    pub response: String,
    /// Raw and calibrated reward, once scored.
    pub reward: Option<RewardValues>,
    /// The mixture's verdicts, once judged.
    pub judgement: Option<SampleJudgement>,
}

impl Sample {
    pub fn new(record: Arc<PromptRecord>, response: impl Into<String>) -> Self {
        Self {
            record,
            response: response.into(),
            reward: None,
            judgement: None,
        }
    }

    pub fn view(&self) -> SampleView<'_> {
        self.record.view(&self.response)
    }
}

/// Reads prompt records from a JSONL file. With `known_tasks`, a label
/// outside that list is an error.
pub fn read_prompts(
    path: impl AsRef<Path>,
    known_tasks: Option<&[String]>,
) -> Result<Vec<PromptRecord>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_prompts(&text, path, known_tasks)
}

/// Parses JSONL text; `file` names it in errors.
pub fn parse_prompts(
    text: &str,
    file: impl AsRef<Path>,
    known_tasks: Option<&[String]>,
) -> Result<Vec<PromptRecord>> {
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    collect_lines(text, file.as_ref(), |origin, value| {
        let record = parse_record(value, origin, known_tasks)?;
        if let Some(line) = first_seen.insert(record.id.clone(), origin.line) {
            return Err(vec![DataError::new(
                origin,
                Some("id"),
                format!("duplicate id `{}` (first at line {line})", record.id),
            )]);
        }
        Ok(record)
    })
}

/// Reads `{"id", "response"}` lines and pairs each with its prompt record.
pub fn read_responses(
    path: impl AsRef<Path>,
    records: &[Arc<PromptRecord>],
) -> Result<Vec<Sample>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_responses(&text, path, records)
}

/// Parses `{"id", "response"}` JSONL text against known prompt records.
pub fn parse_responses(
    text: &str,
    file: impl AsRef<Path>,
    records: &[Arc<PromptRecord>],
) -> Result<Vec<Sample>> {
    let by_id: HashMap<&str, &Arc<PromptRecord>> =
        records.iter().map(|r| (r.id.as_str(), r)).collect();
    collect_lines(text, file.as_ref(), |origin, value| {
        let mut fields = Fields::new(value, origin)?;
        let id = fields.id();
        let response = fields.required_string("response", true);
        fields.finish()?;
        let (id, response) = (
            id.expect("checked by finish"),
            response.expect("checked by finish"),
        );
        let record = by_id.get(id.as_str()).ok_or_else(|| {
            vec![DataError::new(
                origin,
                Some("id"),
                format!("no prompt has id `{id}`"),
            )]
        })?;
        Ok(Sample::new(Arc::clone(record), response))
    })
}

/// Parses self-contained samples: a prompt record plus a `response` field
/// on each line (`{"id", "prompt", "response", "metadata"?, ...}`), as the
/// `cgpo judge` command reads them. Ids need not be unique here: one prompt
/// may come with several responses.
pub fn parse_samples(text: &str, file: impl AsRef<Path>) -> Result<Vec<Sample>> {
    collect_lines(text, file.as_ref(), |origin, mut value| {
        let response = match value.as_object_mut().map(|m| m.remove("response")) {
            Some(Some(Value::String(r))) => Ok(r),
            Some(Some(other)) => Err(DataError::new(
                origin,
                Some("response"),
                format!("expected a string, found {}", kind(&other)),
            )),
            Some(None) => Err(DataError::new(origin, Some("response"), "missing")),
            None => Err(DataError::new(
                origin,
                None,
                format!("expected a JSON object, found {}", kind(&value)),
            )),
        };
        let record = parse_record(value, origin, None);
        match (record, response) {
            (Ok(record), Ok(response)) => Ok(Sample::new(Arc::new(record), response)),
            (Err(mut errors), Err(e)) => {
                if e.field.is_some() {
                    errors.insert(0, e);
                }
                Err(errors)
            }
            (Err(errors), Ok(_)) => Err(errors),
            (Ok(_), Err(e)) => Err(vec![e]),
        }
    })
}

/// Writes JSON lines to `path` atomically: a temp file, then a rename, so a
/// crash never leaves a half-written file behind.
pub fn write_jsonl_atomic<T: Serialize>(
    path: impl AsRef<Path>,
    items: impl IntoIterator<Item = T>,
) -> Result<()> {
    let path = path.as_ref();
    let mut out = Vec::new();
    for item in items {
        serde_json::to_writer(&mut out, &item).map_err(|e| Error::io(path, e.into()))?;
        out.push(b'\n');
    }
    write_atomic(path, &out)
}

/// Writes `value` as pretty JSON to `path` atomically, as
/// [`write_jsonl_atomic`] does.
pub fn write_json_atomic<T: Serialize>(path: impl AsRef<Path>, value: &T) -> Result<()> {
    let path = path.as_ref();
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::io(path, e.into()))?;
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `<path>.partial`, then renames it to `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Runs `parse` on every non-blank line; returns all values or all errors.
fn collect_lines<T>(
    text: &str,
    file: &Path,
    parse: impl FnMut(&Origin, Value) -> std::result::Result<T, Vec<DataError>>,
) -> Result<Vec<T>> {
    let (items, errors) = parse_lines(text, file, parse);
    if errors.is_empty() {
        Ok(items)
    } else {
        Err(Error::Data(errors))
    }
}

/// Runs `parse` on every non-blank line; returns the good values and the
/// errors of the bad lines, for callers that may skip bad records.
pub(crate) fn parse_lines<T>(
    text: &str,
    file: &Path,
    mut parse: impl FnMut(&Origin, Value) -> std::result::Result<T, Vec<DataError>>,
) -> (Vec<T>, Vec<DataError>) {
    let file: Arc<Path> = Arc::from(file);
    let mut items = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = if i == 0 {
            line.trim_start_matches('\u{feff}')
        } else {
            line
        };
        if line.trim().is_empty() {
            continue;
        }
        let origin = Origin {
            file: Arc::clone(&file),
            line: i + 1,
        };
        let parsed = serde_json::from_str::<Value>(line)
            .map_err(|e| {
                vec![DataError::new(
                    &origin,
                    None,
                    format!("invalid JSON at column {}: {e}", e.column()),
                )]
            })
            .and_then(|v| parse(&origin, v));
        match parsed {
            Ok(item) => items.push(item),
            Err(mut e) => errors.append(&mut e),
        }
    }
    (items, errors)
}

fn parse_record(
    value: Value,
    origin: &Origin,
    known_tasks: Option<&[String]>,
) -> std::result::Result<PromptRecord, Vec<DataError>> {
    let mut f = Fields::new(value, origin)?;
    let id = f.id();
    let prompt = f.prompt();
    let task = f.optional_string("task");
    if let (Some(Some(task)), Some(known)) = (&task, known_tasks) {
        if !known.iter().any(|k| k == task) {
            f.error(
                "task",
                format!("unknown task `{task}` (tasks: {})", known.join(", ")),
            );
        }
    }
    let metadata = f.metadata();
    let baseline = f.optional_string("baseline");
    f.finish()?;
    Ok(PromptRecord {
        id: id.expect("checked by finish"),
        prompt: prompt.expect("checked by finish"),
        task: task.flatten(),
        metadata: metadata.unwrap_or_else(|| Value::Object(Map::new())),
        baseline: baseline.flatten(),
        origin: Some(origin.clone()),
    })
}

/// Takes fields out of one JSON object, collecting an error per bad field;
/// `finish` reports them together with any field left over (unknown).
pub(crate) struct Fields<'o> {
    map: Map<String, Value>,
    origin: &'o Origin,
    errors: Vec<DataError>,
}

impl<'o> Fields<'o> {
    pub(crate) fn new(
        value: Value,
        origin: &'o Origin,
    ) -> std::result::Result<Self, Vec<DataError>> {
        match value {
            Value::Object(map) => Ok(Self {
                map,
                origin,
                errors: Vec::new(),
            }),
            other => Err(vec![DataError::new(
                origin,
                None,
                format!("expected a JSON object, found {}", kind(&other)),
            )]),
        }
    }

    pub(crate) fn has(&self, field: &str) -> bool {
        self.map.contains_key(field)
    }

    pub(crate) fn error(&mut self, field: &str, message: impl Into<String>) {
        self.errors
            .push(DataError::new(self.origin, Some(field), message));
    }

    fn required(&mut self, field: &str) -> Option<Value> {
        let v = self.map.remove(field);
        if v.is_none() {
            self.error(field, "missing");
        }
        v
    }

    pub(crate) fn required_string(&mut self, field: &str, allow_empty: bool) -> Option<String> {
        match self.required(field)? {
            Value::String(s) if allow_empty || !s.trim().is_empty() => Some(s),
            Value::String(_) => {
                self.error(field, "must not be empty");
                None
            }
            other => {
                self.error(field, format!("expected a string, found {}", kind(&other)));
                None
            }
        }
    }

    /// `None`: bad; `Some(None)`: absent or null.
    fn optional_string(&mut self, field: &str) -> Option<Option<String>> {
        match self.map.remove(field) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s)),
            Some(other) => {
                self.error(field, format!("expected a string, found {}", kind(&other)));
                None
            }
        }
    }

    /// Ids are strings; integer ids are accepted and kept as their decimal text.
    pub(crate) fn id(&mut self) -> Option<String> {
        match self.required("id")? {
            Value::String(s) if !s.trim().is_empty() => Some(s),
            Value::String(_) => {
                self.error("id", "must not be empty");
                None
            }
            Value::Number(n) if n.is_u64() || n.is_i64() => Some(n.to_string()),
            other => {
                self.error(
                    "id",
                    format!("expected a string or integer, found {}", kind(&other)),
                );
                None
            }
        }
    }

    pub(crate) fn prompt(&mut self) -> Option<Prompt> {
        match self.required("prompt")? {
            Value::String(s) if !s.trim().is_empty() => Some(Prompt::Text(s)),
            Value::String(_) => {
                self.error("prompt", "must not be empty");
                None
            }
            Value::Array(items) if !items.is_empty() => {
                let n = items.len();
                let mut messages = Vec::with_capacity(n);
                for (i, item) in items.into_iter().enumerate() {
                    if let Some(m) = self.message(i, item) {
                        messages.push(m);
                    }
                }
                (messages.len() == n).then_some(Prompt::Messages(messages))
            }
            Value::Array(_) => {
                self.error("prompt", "must have at least one message");
                None
            }
            other => {
                self.error(
                    "prompt",
                    format!(
                        "expected a string or a list of messages, found {}",
                        kind(&other)
                    ),
                );
                None
            }
        }
    }

    fn message(&mut self, i: usize, item: Value) -> Option<Message> {
        let at = |k: &str| format!("prompt[{i}].{k}");
        let Value::Object(mut m) = item else {
            self.error(
                &format!("prompt[{i}]"),
                format!("expected a message object, found {}", kind(&item)),
            );
            return None;
        };
        let origin = self.origin;
        let text = |m: &mut Map<String, Value>, key: &str, errors: &mut Vec<DataError>| match m
            .remove(key)
        {
            Some(Value::String(s)) => Some(s),
            Some(other) => {
                errors.push(DataError::new(
                    origin,
                    Some(&at(key)),
                    format!("expected a string, found {}", kind(&other)),
                ));
                None
            }
            None => {
                errors.push(DataError::new(origin, Some(&at(key)), "missing"));
                None
            }
        };
        let role = text(&mut m, "role", &mut self.errors);
        let content = text(&mut m, "content", &mut self.errors);
        for key in m.keys() {
            self.errors
                .push(DataError::new(self.origin, Some(&at(key)), "unknown field"));
        }
        Some(Message::new(role?, content?))
    }

    pub(crate) fn metadata(&mut self) -> Option<Value> {
        match self.map.remove("metadata") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v),
            Some(other) => {
                self.error(
                    "metadata",
                    format!("expected an object, found {}", kind(&other)),
                );
                None
            }
        }
    }

    pub(crate) fn finish(mut self) -> std::result::Result<(), Vec<DataError>> {
        let unknown: Vec<String> = self.map.keys().cloned().collect();
        for key in unknown {
            self.error(&key, "unknown field");
        }
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(self.errors)
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tasks() -> Vec<String> {
        vec!["math".into(), "chat".into()]
    }

    /// Parses `text` and returns its errors as `(line, field, message)`.
    fn errors(text: &str) -> Vec<(usize, Option<String>, String)> {
        let err = parse_prompts(text, "p.jsonl", Some(&tasks())).unwrap_err();
        err.data_errors()
            .iter()
            .map(|e| {
                (
                    e.origin.as_ref().unwrap().line,
                    e.field.clone(),
                    e.message.clone(),
                )
            })
            .collect()
    }

    fn one_error(text: &str) -> (usize, Option<String>, String) {
        let mut es = errors(text);
        assert_eq!(es.len(), 1, "{es:?}");
        es.remove(0)
    }

    #[test]
    fn good_records_parse_in_both_prompt_forms() {
        let text = "\n{\"id\": \"a\", \"prompt\": \"hi\", \"task\": \"chat\"}\n\n{\"id\": 7, \"prompt\": [{\"role\": \"system\", \"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"2+2?\"}], \"metadata\": {\"answer\": \"4\"}, \"baseline\": \"4\"}\n";
        let rs = parse_prompts(text, "p.jsonl", Some(&tasks())).unwrap();
        assert_eq!(rs.len(), 2);
        assert_eq!(rs[0].task.as_deref(), Some("chat"));
        assert_eq!(rs[0].metadata, serde_json::json!({}));
        assert_eq!(rs[0].origin.as_ref().unwrap().line, 2);
        assert_eq!(rs[1].id, "7");
        assert_eq!(rs[1].prompt.last_user_text(), Some("2+2?"));
        assert_eq!(rs[1].baseline.as_deref(), Some("4"));
        assert_eq!(rs[1].origin.as_ref().unwrap().to_string(), "p.jsonl:4");
    }

    #[test]
    fn bad_json_names_line_and_column() {
        let (line, field, msg) =
            one_error("{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"b\", \"prompt\": }");
        assert_eq!((line, field), (2, None));
        assert!(msg.starts_with("invalid JSON at column 23"), "{msg}");
    }

    #[test]
    fn not_an_object() {
        let (line, field, msg) = one_error("[1, 2]");
        assert_eq!(
            (line, field.as_deref(), msg.as_str()),
            (1, None, "expected a JSON object, found a list")
        );
    }

    #[test]
    fn missing_fields() {
        assert_eq!(
            one_error(r#"{"prompt": "x"}"#),
            (1, Some("id".into()), "missing".into())
        );
        assert_eq!(
            one_error(r#"{"id": "a"}"#),
            (1, Some("prompt".into()), "missing".into())
        );
        let e = one_error(r#"{"id": "a", "prompt": [{"role": "user"}]}"#);
        assert_eq!(e, (1, Some("prompt[0].content".into()), "missing".into()));
    }

    #[test]
    fn wrong_types() {
        let cases = [
            (
                r#"{"id": 1.5, "prompt": "x"}"#,
                "id",
                "expected a string or integer, found a number",
            ),
            (
                r#"{"id": "a", "prompt": 3}"#,
                "prompt",
                "expected a string or a list of messages, found a number",
            ),
            (
                r#"{"id": "a", "prompt": ["hi"]}"#,
                "prompt[0]",
                "expected a message object, found a string",
            ),
            (
                r#"{"id": "a", "prompt": [{"role": 1, "content": "c"}]}"#,
                "prompt[0].role",
                "expected a string, found a number",
            ),
            (
                r#"{"id": "a", "prompt": "x", "task": 2}"#,
                "task",
                "expected a string, found a number",
            ),
            (
                r#"{"id": "a", "prompt": "x", "metadata": "m"}"#,
                "metadata",
                "expected an object, found a string",
            ),
            (
                r#"{"id": "a", "prompt": "x", "baseline": ["b"]}"#,
                "baseline",
                "expected a string, found a list",
            ),
            (r#"{"id": "", "prompt": "x"}"#, "id", "must not be empty"),
            (
                r#"{"id": "a", "prompt": " "}"#,
                "prompt",
                "must not be empty",
            ),
            (
                r#"{"id": "a", "prompt": []}"#,
                "prompt",
                "must have at least one message",
            ),
        ];
        for (text, field, msg) in cases {
            assert_eq!(
                one_error(text),
                (1, Some(field.into()), msg.into()),
                "{text}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_tasks() {
        assert_eq!(
            one_error(r#"{"id": "a", "prompt": "x", "metdata": {}}"#),
            (1, Some("metdata".into()), "unknown field".into())
        );
        assert_eq!(
            one_error(r#"{"id": "a", "prompt": [{"role": "user", "content": "c", "name": "n"}]}"#),
            (1, Some("prompt[0].name".into()), "unknown field".into())
        );
        assert_eq!(
            one_error(r#"{"id": "a", "prompt": "x", "task": "poetry"}"#),
            (
                1,
                Some("task".into()),
                "unknown task `poetry` (tasks: math, chat)".into()
            )
        );
    }

    #[test]
    fn duplicate_ids() {
        let e = one_error("{\"id\": \"a\", \"prompt\": \"x\"}\n{\"id\": \"a\", \"prompt\": \"y\"}");
        assert_eq!(
            e,
            (
                2,
                Some("id".into()),
                "duplicate id `a` (first at line 1)".into()
            )
        );
    }

    #[test]
    fn every_bad_record_is_reported_and_none_dropped() {
        let text = [
            r#"{"id": "ok1", "prompt": "x"}"#,
            r#"{"id": "b1", "prompt": 5, "extra": true}"#,
            r#"{"id": "ok2", "prompt": "x"}"#,
            r#"not json"#,
            r#"{"id": "b3", "prompt": "x", "task": "art"}"#,
        ]
        .join("\n");
        let es = errors(&text);
        let where_: Vec<(usize, Option<&str>)> =
            es.iter().map(|(l, f, _)| (*l, f.as_deref())).collect();
        assert_eq!(
            where_,
            [
                (2, Some("prompt")),
                (2, Some("extra")),
                (4, None),
                (5, Some("task"))
            ]
        );
        let shown = parse_prompts(&text, "p.jsonl", Some(&tasks()))
            .unwrap_err()
            .to_string();
        assert!(
            shown.starts_with("4 bad records:\n  p.jsonl:2: field `prompt`:"),
            "{shown}"
        );
    }

    #[test]
    fn files_are_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.jsonl");
        std::fs::write(&path, "{\"id\": \"a\"}\n").unwrap();
        let msg = read_prompts(&path, None).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!("{}:1: field `prompt`: missing", path.display())
        );
        let missing = read_prompts(dir.path().join("nope.jsonl"), None).unwrap_err();
        assert!(matches!(missing, Error::Io { .. }));
    }

    #[test]
    fn responses_pair_with_their_prompts() {
        let records: Vec<_> = parse_prompts("{\"id\": \"a\", \"prompt\": \"x\"}", "p.jsonl", None)
            .unwrap()
            .into_iter()
            .map(Arc::new)
            .collect();
        let samples =
            parse_responses("{\"id\": \"a\", \"response\": \"r\"}", "r.jsonl", &records).unwrap();
        assert_eq!(
            (samples[0].record.id.as_str(), samples[0].response.as_str()),
            ("a", "r")
        );
        let err = parse_responses(
            "{\"id\": \"zz\", \"response\": \"r\"}\n{\"id\": \"a\"}\n{\"id\": \"a\", \"response\": \"\", \"x\": 1}",
            "r.jsonl",
            &records,
        )
        .unwrap_err();
        let lines: Vec<String> = err.data_errors().iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                "r.jsonl:1: field `id`: no prompt has id `zz`",
                "r.jsonl:2: field `response`: missing",
                "r.jsonl:3: field `x`: unknown field"
            ]
        );
    }

    #[test]
    fn self_contained_samples_parse_and_report_bad_fields() {
        let ok = "{\"id\": \"a\", \"prompt\": \"q\", \"response\": \"r\", \"metadata\": {\"k\": 1}}\n{\"id\": \"a\", \"prompt\": \"q\", \"response\": \"s\"}";
        let samples = parse_samples(ok, "s.jsonl").unwrap();
        assert_eq!((samples.len(), samples[1].response.as_str()), (2, "s"));
        assert_eq!(samples[0].record.metadata["k"], 1);
        let bad = "{\"id\": \"a\", \"prompt\": \"q\"}\n{\"id\": \"b\", \"response\": 3}\n[1]";
        let lines: Vec<String> = parse_samples(bad, "s.jsonl")
            .unwrap_err()
            .data_errors()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            lines,
            [
                "s.jsonl:1: field `response`: missing",
                "s.jsonl:2: field `response`: expected a string, found a number",
                "s.jsonl:2: field `prompt`: missing",
                "s.jsonl:3: expected a JSON object, found a list"
            ]
        );
    }

    #[test]
    fn atomic_write_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let records = vec![
            PromptRecord::new("a", "x").with_task("chat"),
            PromptRecord::new("b", "y"),
        ];
        write_jsonl_atomic(&path, &records).unwrap();
        let back = read_prompts(&path, None).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].task.as_deref(), Some("chat"));
        assert!(!dir.path().join("out.jsonl.tmp").exists());
    }
}
