//! Training: the multi-task CGPO loop ([`Trainer`]), AdamW and the
//! learning-rate schedule ([`adamw`]), the per-task gradient merge
//! ([`merge`]) and checkpoints ([`checkpoint`]).
//!
//! ```no_run
//! use cgpo::config::RunConfig;
//! use cgpo::judges::JudgeRegistry;
//! use cgpo::reward::RewardRegistry;
//! use cgpo::train::Trainer;
//! let config = RunConfig::from_file("run.json")?;
//! let mut trainer = Trainer::new(config, &JudgeRegistry::with_builtins(), &RewardRegistry::with_builtins())?;
//! trainer.resume()?; // continues from the latest checkpoint, if any
//! let summary = trainer.run()?;
//! println!("{} steps, metrics in {}", summary.steps, summary.metrics.display());
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod adamw;
pub mod checkpoint;
pub mod merge;
mod trainer;

pub use adamw::{learning_rate, AdamW};
pub(crate) use trainer::truncate_metrics;
pub use trainer::{build_policy, RunSummary, TaskMetrics, Timing, Trainer};
