//! # cgpo-judges
//!
//! Judges for CGPO (Xu et al. 2024, "The Perfect Blend"): the [`Judge`]
//! trait, its [`Verdict`]s, and the [`MixtureOfJudges`] that ANDs a task's
//! judges into the constraint indicator y(a). No candle dependency: any
//! trainer can use these judges.
//!
//! ```
//! use cgpo_judges::{Judge, MixtureOfJudges, Prompt, SampleView, Verdict};
//!
//! struct EndsWithPeriod;
//! impl Judge for EndsWithPeriod {
//!     fn name(&self) -> &str { "ends_with_period" }
//!     fn judge(&self, batch: &[SampleView]) -> Vec<Verdict> {
//!         batch.iter().map(|s| Verdict::check(s.response.ends_with('.'), || "no final period".into())).collect()
//!     }
//! }
//!
//! let mixture = MixtureOfJudges::new(vec![Box::new(EndsWithPeriod)]).unwrap();
//! let (p, m) = (Prompt::from("Say hi."), serde_json::json!({}));
//! let report = mixture.judge(&[SampleView::new("p0", &p, "Hi.", &m)]);
//! assert!(report.samples[0].is_positive());
//! ```

mod code;
mod error;
pub mod http_client;
pub mod ifeval;
mod judge;
pub mod llm;
pub mod math;
mod mixture;
mod refusal;
mod registry;
mod rules;
mod sample;
mod verdict;

pub use code::{extract as code_extract, CodeJudge, CodeParams};
pub use error::JudgeError;
pub use ifeval::IfevalJudge;
pub use judge::{FnJudge, Judge};
pub use math::MathJudge;
pub use mixture::{
    ErrorPolicy, JudgeStats, MixtureOfJudges, MixtureReport, Outcome, SampleJudgement,
};
pub use refusal::{RefusalJudge, RefusalMode};
pub use registry::{parse_params, JudgeFactory, JudgeRegistry, JudgeSpec};
pub use rules::{LengthJudge, RegexJudge};
pub use sample::{Message, Prompt, SampleView};
pub use verdict::Verdict;
