//! # cgpo
//!
//! Constrained Generative Policy Optimization with a Mixture of Judges
//! (Xu et al. 2024, "The Perfect Blend: Redefining RLHF with Mixture of
//! Judges") for multi-task RLHF in Rust.
//!
//! Prompts are sorted into task strata ([`strata`]); each task
//! ([`task::TaskSpec`]) has its own judges ([`judges`]), reward model with
//! calibrated rewards ([`reward`]), constrained optimizer (a loss,
//! [`optim::TaskLoss`]) and KL settings ([`kl`]). [`train::Trainer`] runs
//! the multi-task loop on any [`policy::Policy`]; build it from Rust values
//! ([`train::Trainer::builder`], the README shows a whole run) or from a
//! JSON run config ([`config::RunConfig::trainer`]). The algorithm, with
//! every decision, is `docs/algorithm.md`; the module map
//! `docs/architecture.md`.
//!
//! Defining a judge takes one trait impl; a mixture ANDs a task's judges:
//!
//! ```
//! use cgpo::judges::{Judge, MixtureOfJudges, SampleView, Verdict};
//! use cgpo::data::PromptRecord;
//!
//! /// Math answers must end with "The final answer is <metadata.answer>."
//! struct FinalAnswer;
//! impl Judge for FinalAnswer {
//!     fn name(&self) -> &str { "final_answer" }
//!     fn judge(&self, batch: &[SampleView]) -> Vec<Verdict> {
//!         batch.iter().map(|s| match s.metadata["answer"].as_str() {
//!             None => Verdict::error("metadata.answer is missing"),
//!             Some(gold) => Verdict::check(s.response.trim_end().ends_with(&format!("The final answer is {gold}.")),
//!                                          || format!("expected final answer {gold}")),
//!         }).collect()
//!     }
//! }
//!
//! let mixture = MixtureOfJudges::new(vec![Box::new(FinalAnswer)]).unwrap();
//! let record = PromptRecord::new("m1", "What is 6 * 7?").with_metadata(serde_json::json!({"answer": "42"}));
//! let report = mixture.judge(&[record.view("6 * 7 = 42. The final answer is 42."), record.view("It is 41.")]);
//! assert!(report.samples[0].is_positive() && !report.samples[1].is_positive());
//! ```

pub mod config;
pub mod data;
pub mod error;
pub mod kl;
pub mod local_judge;
pub mod ops;
pub mod optim;
pub mod pipeline;
pub mod policy;
pub mod report;
pub mod reward;
pub mod rollout;
pub mod run_dir;
pub mod split;
pub mod stats;
pub mod strata;
pub mod task;
pub mod threads;
pub mod train;

/// The README's examples run as doctests, so they cannot go stale.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The judges crate, `cgpo-judges`, re-exported.
pub use cgpo_judges as judges;
pub use error::{DataError, Error, Result};
