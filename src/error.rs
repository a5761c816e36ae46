//! One crate-wide error type. Data errors carry the file, line and field of
//! the bad record; config errors carry the key path (`tasks[1].optimizer.beta`).
//!
//! ```
//! use cgpo::data::parse_prompts;
//! let err = parse_prompts("{\"id\": \"a\", \"prompt\": 1}\n{\"prompt\": \"x\"}", "p.jsonl", None).unwrap_err();
//! let lines: Vec<String> = err.data_errors().iter().map(|e| e.to_string()).collect();
//! assert_eq!(lines, ["p.jsonl:1: field `prompt`: expected a string or a list of messages, found a number",
//!                    "p.jsonl:2: field `id`: missing"]);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use cgpo_judges::JudgeError;
use thiserror::Error;

/// Where a record came from: `file:line` (1-based).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Error)]
pub enum Error {
    /// One or more bad records (all of them, never only the first).
    #[error("{}", DataErrors(.0))]
    Data(Vec<DataError>),
    #[error("config `{key}`: {message}")]
    Config { key: String, message: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("reward model `{model}`: {message}")]
    Reward { model: String, message: String },
    #[error("baseline generator: {0}")]
    Baseline(String),
    #[error(transparent)]
    Judge(#[from] JudgeError),
    #[error("{op}: {message}")]
    Op { op: &'static str, message: String },
    /// A model, its weights or its tokenizer: `source` is the file (or the
    /// model's name when it was built in memory).
    #[error("{source_name}: {message}")]
    Model {
        source_name: String,
        message: String,
    },
    /// Bad generation input (a prompt longer than the context window, ...).
    #[error("rollout: {0}")]
    Rollout(String),
    /// The training loop had to stop (e.g. too many non-finite steps).
    #[error("training: {0}")]
    Train(String),
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    /// A bad config value at `key` (`tasks[1].kl.coef`).
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    /// A failed file operation on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A bad model or checkpoint file (`source` names it).
    pub fn model(source: impl fmt::Display, message: impl Into<String>) -> Self {
        Error::Model {
            source_name: source.to_string(),
            message: message.into(),
        }
    }

    /// The record errors, when this is a data error.
    pub fn data_errors(&self) -> &[DataError] {
        match self {
            Error::Data(errors) => errors,
            _ => &[],
        }
    }
}

/// One bad record: where it is, which field, what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataError {
    /// `file:line`; `None` for records built in memory.
    pub origin: Option<Origin>,
    /// The offending field; `None` when the line is not a JSON object at all.
    pub field: Option<String>,
    pub message: String,
}

impl DataError {
    pub fn new(origin: &Origin, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            origin: Some(origin.clone()),
            field: field.map(str::to_owned),
            message: message.into(),
        }
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(origin) = &self.origin {
            write!(f, "{origin}: ")?;
        }
        match &self.field {
            Some(field) => write!(f, "field `{field}`: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How many bad records are listed before "... and N more".
const SHOWN: usize = 20;

struct DataErrors<'a>(&'a [DataError]);

impl fmt::Display for DataErrors<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} bad records:", many.len())?;
                for e in many.iter().take(SHOWN) {
                    write!(f, "\n  {e}")?;
                }
                if many.len() > SHOWN {
                    write!(f, "\n  ... and {} more", many.len() - SHOWN)?;
                }
                Ok(())
            }
        }
    }
}

/// A config number check: `v` must be finite and pass `ok`, else an
/// [`Error::Config`] at `key` that states `rule`.
pub(crate) fn check_config(
    key: impl Into<String>,
    v: f64,
    rule: &str,
    ok: impl Fn(f64) -> bool,
) -> Result<()> {
    if v.is_finite() && ok(v) {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("must be finite and {rule}, got {v}"),
        ))
    }
}
