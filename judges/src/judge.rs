//! The `Judge` trait: a batch of samples in, one [`Verdict`] per sample out.
//!
//! Batch-first so that judges with a fixed cost per call (an LLM forward, a
//! sandbox start) can amortize it. A judge that is naturally per-sample maps
//! over the slice, or is written as a closure with [`FnJudge`].
//!
//! A judge should return `Verdict::Error` when it cannot decide (missing
//! metadata, a timeout). It may also panic: [`MixtureOfJudges`](crate::MixtureOfJudges)
//! catches the panic and turns it into `Error` for the samples concerned.
//!
//! ```
//! use cgpo_judges::{FnJudge, Judge, Prompt, SampleView, Verdict};
//! let short = FnJudge::new("short", |s: &SampleView| {
//!     Verdict::check(s.response.len() <= 10, || format!("{} chars", s.response.len()))
//! });
//! let (p, m) = (Prompt::from("hi"), serde_json::Value::Null);
//! let batch = [SampleView::new("a", &p, "hello", &m), SampleView::new("b", &p, "hello there, friend", &m)];
//! assert_eq!(short.judge(&batch), vec![Verdict::Pass, Verdict::fail("19 chars")]);
//! ```

use crate::{SampleView, Verdict};

/// A constraint on responses. Implementations must be `Send + Sync`: the
/// mixture runs a task's judges in parallel.
pub trait Judge: Send + Sync {
    /// A short, stable name used in metrics and reasons.
    fn name(&self) -> &str;

    /// One verdict per sample, in order. Returning a different number of
    /// verdicts is a judge bug; the mixture reports it as `Error`.
    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict>;
}

/// A judge from a per-sample closure.
pub struct FnJudge<F> {
    name: String,
    f: F,
}

impl<F> FnJudge<F>
where
    F: Fn(&SampleView<'_>) -> Verdict + Send + Sync,
{
    pub fn new(name: impl Into<String>, f: F) -> Self {
        Self {
            name: name.into(),
            f,
        }
    }
}

impl<F> Judge for FnJudge<F>
where
    F: Fn(&SampleView<'_>) -> Verdict + Send + Sync,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn judge(&self, batch: &[SampleView<'_>]) -> Vec<Verdict> {
        batch.iter().map(&self.f).collect()
    }
}
