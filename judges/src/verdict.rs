//! A judge's answer for one sample: satisfied, violated (with a reason), or
//! the judge could not decide (with a message).
//!
//! `Error` is a separate state, not a kind of `Fail`: the mixture decides by
//! its [`ErrorPolicy`](crate::ErrorPolicy) whether an error counts as a
//! violation or drops the sample, and metrics count errors apart.
//!
//! ```
//! use cgpo_judges::Verdict;
//! assert!(Verdict::Pass.is_pass());
//! assert!(!Verdict::fail("too long").is_pass());
//! assert_eq!(Verdict::error("timeout").to_string(), "error: timeout");
//! ```

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The constraint is satisfied.
    Pass,
    /// The constraint is violated; the reason says how.
    Fail(String),
    /// The judge failed to run (panic, timeout, bad metadata).
    Error(String),
}

impl Verdict {
    pub fn fail(reason: impl Into<String>) -> Self {
        Verdict::Fail(reason.into())
    }

    pub fn error(message: impl Into<String>) -> Self {
        Verdict::Error(message.into())
    }

    /// `Pass` when `ok`, else `Fail(reason())`.
    pub fn check(ok: bool, reason: impl FnOnce() -> String) -> Self {
        if ok {
            Verdict::Pass
        } else {
            Verdict::Fail(reason())
        }
    }

    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }

    pub fn is_fail(&self) -> bool {
        matches!(self, Verdict::Fail(_))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Verdict::Error(_))
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail(r) => write!(f, "fail: {r}"),
            Verdict::Error(m) => write!(f, "error: {m}"),
        }
    }
}
