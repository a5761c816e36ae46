//! Errors from building judges and mixtures (never from judging: a judge
//! that fails on a sample says so with `Verdict::Error`).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum JudgeError {
    #[error("two judges in one mixture are named `{0}`; give one a `label`")]
    DuplicateName(String),
    #[error("unknown judge `{name}` (known: {})", known.join(", "))]
    UnknownJudge { name: String, known: Vec<String> },
    #[error("judge `{judge}`: {message}")]
    Params { judge: String, message: String },
}
