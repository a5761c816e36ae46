//! The mixture of judges (docs/algorithm.md §1): a sample is *positive* only
//! if every judge of its task says `Pass` (AND).
//!
//! The judges of one mixture run in parallel (rayon), each on the whole
//! batch. A judge that panics yields `Error` for the samples it panicked on,
//! never a crash: a panicking batch call is re-run one sample at a time so
//! that the other samples keep their real verdicts. Errors count as
//! violations by default ([`ErrorPolicy::Violation`]), or drop the sample
//! ([`ErrorPolicy::Drop`]); either way they are counted apart in the stats.
//! A definite `Fail` from any judge makes the sample a violation even when
//! another judge errored, since the AND is false whatever the error hid.
//!
//! ```
//! use cgpo_judges::{FnJudge, Judge, MixtureOfJudges, Outcome, Prompt, SampleView, Verdict};
//! let judges: Vec<Box<dyn Judge>> = vec![
//!     Box::new(FnJudge::new("nonempty", |s: &SampleView| Verdict::check(!s.response.is_empty(), || "empty".into()))),
//!     Box::new(FnJudge::new("polite", |s: &SampleView| Verdict::check(!s.response.contains("stupid"), || "rude".into()))),
//! ];
//! let mixture = MixtureOfJudges::new(judges).unwrap();
//! let (p, m) = (Prompt::from("hi"), serde_json::Value::Null);
//! let report = mixture.judge(&[SampleView::new("a", &p, "hello", &m), SampleView::new("b", &p, "stupid", &m)]);
//! assert_eq!(report.samples[0].outcome, Outcome::Satisfied);
//! assert_eq!(report.samples[1].outcome, Outcome::Violated);
//! assert_eq!(report.stats[1].fail, 1);
//! ```

use std::any::Any;
use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::slice;
use std::time::{Duration, Instant};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::{Judge, JudgeError, SampleView, Verdict};

/// What a judge `Error` does to its sample (docs/algorithm.md §1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorPolicy {
    /// The sample counts as violating the constraints (y = 0).
    #[default]
    Violation,
    /// The sample is left out of the loss.
    Drop,
}

/// The mixture's decision for one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every judge passed: y = 1.
    Satisfied,
    /// Some judge failed, or errored under `ErrorPolicy::Violation`: y = 0.
    Violated,
    /// Some judge errored under `ErrorPolicy::Drop` and none failed.
    Dropped,
}

/// All verdicts for one sample, in judge order, and their AND.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleJudgement {
    pub verdicts: Vec<Verdict>,
    pub outcome: Outcome,
}

impl SampleJudgement {
    /// y(a) of the spec: true only when every judge passed.
    pub fn is_positive(&self) -> bool {
        self.outcome == Outcome::Satisfied
    }

    /// Whether any judge errored on this sample.
    pub fn has_error(&self) -> bool {
        self.verdicts.iter().any(Verdict::is_error)
    }
}

/// Counts and wall time for one judge; `merge` accumulates across batches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JudgeStats {
    pub name: String,
    pub pass: usize,
    pub fail: usize,
    pub error: usize,
    /// Calls (batch or single-sample) that panicked; each is also an `error`.
    pub panics: usize,
    pub elapsed: Duration,
}

impl JudgeStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            ..Self::default()
        }
    }

    pub fn total(&self) -> usize {
        self.pass + self.fail + self.error
    }

    /// Pass rate over the samples judged; `None` before any.
    pub fn pass_rate(&self) -> Option<f64> {
        let n = self.total();
        (n > 0).then(|| self.pass as f64 / n as f64)
    }

    pub fn merge(&mut self, other: &JudgeStats) {
        self.pass += other.pass;
        self.fail += other.fail;
        self.error += other.error;
        self.panics += other.panics;
        self.elapsed += other.elapsed;
    }
}

/// The result of judging one batch.
#[derive(Clone, Debug)]
pub struct MixtureReport {
    pub samples: Vec<SampleJudgement>,
    /// One entry per judge, in the mixture's order.
    pub stats: Vec<JudgeStats>,
}

impl MixtureReport {
    pub fn count(&self, outcome: Outcome) -> usize {
        self.samples.iter().filter(|s| s.outcome == outcome).count()
    }

    /// Samples on which at least one judge errored.
    pub fn errored(&self) -> usize {
        self.samples.iter().filter(|s| s.has_error()).count()
    }
}

/// AND over a task's judges.
pub struct MixtureOfJudges {
    judges: Vec<Box<dyn Judge>>,
    policy: ErrorPolicy,
}

impl MixtureOfJudges {
    /// A mixture with the default error policy. Judge names must be unique,
    /// so that stats and reasons can name them. An empty mixture accepts
    /// every sample (the "no judges" ablation).
    pub fn new(judges: Vec<Box<dyn Judge>>) -> Result<Self, JudgeError> {
        let mut seen = HashSet::new();
        for j in &judges {
            if !seen.insert(j.name().to_owned()) {
                return Err(JudgeError::DuplicateName(j.name().to_owned()));
            }
        }
        Ok(Self {
            judges,
            policy: ErrorPolicy::default(),
        })
    }

    pub fn with_error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.policy = policy;
        self
    }

    pub fn error_policy(&self) -> ErrorPolicy {
        self.policy
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.judges.iter().map(|j| j.name())
    }

    pub fn len(&self) -> usize {
        self.judges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.judges.is_empty()
    }

    /// Runs every judge on the batch (in parallel) and combines by AND.
    pub fn judge(&self, batch: &[SampleView<'_>]) -> MixtureReport {
        let (per_judge, stats): (Vec<Vec<Verdict>>, Vec<JudgeStats>) = self
            .judges
            .par_iter()
            .map(|j| run_guarded(j.as_ref(), batch))
            .unzip();
        // Transpose judge-major verdicts to sample-major by moving, not cloning.
        let mut columns: Vec<_> = per_judge.into_iter().map(Vec::into_iter).collect();
        let samples = (0..batch.len())
            .map(|_| {
                let verdicts: Vec<Verdict> = columns
                    .iter_mut()
                    .map(|c| {
                        c.next()
                            .expect("run_guarded returns one verdict per sample")
                    })
                    .collect();
                let outcome = combine(&verdicts, self.policy);
                SampleJudgement { verdicts, outcome }
            })
            .collect();
        MixtureReport { samples, stats }
    }
}

fn combine(verdicts: &[Verdict], policy: ErrorPolicy) -> Outcome {
    if verdicts.iter().any(Verdict::is_fail) {
        Outcome::Violated
    } else if verdicts.iter().any(Verdict::is_error) {
        match policy {
            ErrorPolicy::Violation => Outcome::Violated,
            ErrorPolicy::Drop => Outcome::Dropped,
        }
    } else {
        Outcome::Satisfied
    }
}

/// Calls the judge, turning panics and wrong-length answers into `Error`.
fn run_guarded(judge: &dyn Judge, batch: &[SampleView<'_>]) -> (Vec<Verdict>, JudgeStats) {
    let start = Instant::now();
    let mut stats = JudgeStats::new(judge.name());
    let verdicts = match call(judge, batch) {
        Ok(vs) => vs,
        Err(message) => {
            stats.panics += 1;
            if batch.len() == 1 {
                vec![Verdict::Error(message)]
            } else {
                batch
                    .iter()
                    .map(|s| {
                        call(judge, slice::from_ref(s))
                            .map(|mut v| v.remove(0))
                            .unwrap_or_else(|m| {
                                stats.panics += 1;
                                Verdict::Error(m)
                            })
                    })
                    .collect()
            }
        }
    };
    for v in &verdicts {
        match v {
            Verdict::Pass => stats.pass += 1,
            Verdict::Fail(_) => stats.fail += 1,
            Verdict::Error(_) => stats.error += 1,
        }
    }
    stats.elapsed = start.elapsed();
    (verdicts, stats)
}

/// One guarded call: `Err` carries a panic message; a wrong-length answer
/// becomes `Error` verdicts (a bug in the judge, but not a panic).
fn call(judge: &dyn Judge, batch: &[SampleView<'_>]) -> Result<Vec<Verdict>, String> {
    match catch_unwind(AssertUnwindSafe(|| judge.judge(batch))) {
        Ok(vs) if vs.len() == batch.len() => Ok(vs),
        Ok(vs) => {
            let msg = format!(
                "judge `{}` returned {} verdicts for {} samples",
                judge.name(),
                vs.len(),
                batch.len()
            );
            Ok(vec![Verdict::Error(msg); batch.len()])
        }
        Err(payload) => Err(format!(
            "judge `{}` panicked: {}",
            judge.name(),
            panic_message(payload.as_ref())
        )),
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FnJudge, Prompt};
    use serde_json::Value;

    /// A judge whose verdict is spelled out in the response: for judge `i`,
    /// character `i` is P (pass), F (fail), E (error) or ! (panic).
    fn scripted(i: usize) -> Box<dyn Judge> {
        Box::new(FnJudge::new(
            format!("j{i}"),
            move |s: &SampleView| match s.response.as_bytes()[i] {
                b'P' => Verdict::Pass,
                b'F' => Verdict::fail("scripted"),
                b'E' => Verdict::error("scripted"),
                _ => panic!("scripted panic on {}", s.response),
            },
        ))
    }

    fn run(n_judges: usize, policy: ErrorPolicy, responses: &[&str]) -> MixtureReport {
        let mixture = MixtureOfJudges::new((0..n_judges).map(scripted).collect())
            .unwrap()
            .with_error_policy(policy);
        let (p, m) = (Prompt::from("q"), Value::Null);
        let views: Vec<_> = responses
            .iter()
            .map(|r| SampleView::new("id", &p, r, &m))
            .collect();
        mixture.judge(&views)
    }

    #[test]
    fn and_over_pass_fail_error_mixes() {
        use Outcome::*;
        let cases = [
            ("PP", Satisfied, Satisfied),
            ("PF", Violated, Violated),
            ("FF", Violated, Violated),
            ("PE", Violated, Dropped),
            ("EE", Violated, Dropped),
            ("FE", Violated, Violated),
            ("EF", Violated, Violated),
        ];
        let responses: Vec<&str> = cases.iter().map(|c| c.0).collect();
        let as_violation = run(2, ErrorPolicy::Violation, &responses);
        let as_drop = run(2, ErrorPolicy::Drop, &responses);
        for (i, (case, violation, drop)) in cases.iter().enumerate() {
            assert_eq!(
                as_violation.samples[i].outcome, *violation,
                "{case} as violation"
            );
            assert_eq!(as_drop.samples[i].outcome, *drop, "{case} as drop");
        }
        assert_eq!(as_violation.count(Satisfied), 1);
        assert_eq!(as_violation.errored(), 4);
        assert_eq!(as_drop.count(Dropped), 2);
        let j0 = &as_violation.stats[0];
        assert_eq!((j0.pass, j0.fail, j0.error), (3, 2, 2));
    }

    #[test]
    fn empty_mixture_accepts_everything() {
        let report = run(0, ErrorPolicy::Violation, &["", "x"]);
        assert!(report.samples.iter().all(SampleJudgement::is_positive));
        assert!(report.stats.is_empty());
    }

    #[test]
    fn a_panicking_judge_errors_only_its_samples() {
        let report = run(2, ErrorPolicy::Violation, &["PP", "!P", "FP", "!F", "PP"]);
        let v0: Vec<_> = report
            .samples
            .iter()
            .map(|s| s.verdicts[0].clone())
            .collect();
        assert!(v0[0].is_pass() && v0[2].is_fail() && v0[4].is_pass());
        for i in [1, 3] {
            match &v0[i] {
                Verdict::Error(m) => assert!(m.contains("j0") && m.contains("panicked"), "{m}"),
                other => panic!("sample {i}: expected an error, got {other}"),
            }
        }
        // The other judge is untouched.
        let v1: Vec<_> = report
            .samples
            .iter()
            .map(|s| s.verdicts[1].is_pass())
            .collect();
        assert_eq!(v1, [true, true, true, false, true]);
        assert_eq!(report.stats[0].error, 2);
        // One batch call panicked, then the two single-sample re-runs did.
        assert_eq!(report.stats[0].panics, 3);
        assert_eq!(report.stats[1].panics, 0);
        assert_eq!(report.count(Outcome::Satisfied), 2);
    }

    #[test]
    fn a_wrong_number_of_verdicts_is_an_error_for_every_sample() {
        struct Short;
        impl Judge for Short {
            fn name(&self) -> &str {
                "short"
            }
            fn judge(&self, _: &[SampleView<'_>]) -> Vec<Verdict> {
                vec![Verdict::Pass]
            }
        }
        let mixture = MixtureOfJudges::new(vec![Box::new(Short)]).unwrap();
        let (p, m) = (Prompt::from("q"), Value::Null);
        let report = mixture.judge(&[
            SampleView::new("a", &p, "x", &m),
            SampleView::new("b", &p, "y", &m),
        ]);
        assert_eq!(report.stats[0].error, 2);
        assert!(
            matches!(&report.samples[0].verdicts[0], Verdict::Error(m) if m.contains("1 verdicts for 2 samples"))
        );
    }

    #[test]
    fn duplicate_judge_names_are_rejected() {
        let err = MixtureOfJudges::new(vec![scripted(0), scripted(0)])
            .err()
            .unwrap();
        assert_eq!(err, JudgeError::DuplicateName("j0".into()));
    }

    #[test]
    fn stats_merge_and_rate() {
        let a = run(1, ErrorPolicy::Violation, &["P", "F"]).stats.remove(0);
        let mut total = a.clone();
        total.merge(&run(1, ErrorPolicy::Violation, &["P", "P", "E"]).stats[0]);
        assert_eq!(
            (total.pass, total.fail, total.error, total.total()),
            (3, 1, 1, 5)
        );
        assert_eq!(total.pass_rate(), Some(0.6));
        assert_eq!(JudgeStats::default().pass_rate(), None);
    }
}
