//! # cgpo-suites
//!
//! The experiments that measure cgpo, kept apart from the library a
//! trainer author depends on. Both suites build everything through
//! `cgpo`'s public API (run configs, the trainer and its loop, the
//! evaluator) and add their data, judges and reports:
//!
//! - [`ablation`]: four synthetic tasks with biased reward models, a
//!   warm-up (SFT, reward models, DPO), and CGPO against its ablations on
//!   held-out prompts (`cargo run --release -p cgpo-suites --example
//!   ablation`, `docs/ablations.md`).
//! - [`instruct`]: CGPO on SmolLM2-135M-Instruct with IFEval, math and
//!   helpfulness tasks (`examples/smollm2.rs`, `docs/smollm2.md`).

pub mod ablation;
pub mod instruct;
