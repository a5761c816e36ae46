//! Training: the multi-task CGPO loop ([`Trainer`]), AdamW and the
//! learning-rate schedule ([`adamw`]), the per-task gradient merge
//! ([`merge`]) and checkpoints ([`checkpoint`]).
//!
//! ```no_run
//! use cgpo::config::{Registries, RunConfig};
//! let config = RunConfig::from_file("run.json")?;
//! let mut trainer = config.trainer(&Registries::default())?;
//! trainer.resume()?; // continues from the latest checkpoint, if any
//! let summary = trainer.run()?;
//! println!("{} steps, metrics in {}", summary.steps, summary.metrics.display());
//! # Ok::<(), cgpo::Error>(())
//! ```

pub mod adamw;
pub mod checkpoint;
mod config;
pub mod merge;
mod trainer;

pub use adamw::{learning_rate, AdamW};
pub use config::{Schedule, TrainConfig};
pub(crate) use trainer::truncate_metrics;
pub use trainer::{RunSummary, TaskMetrics, Timing, Trainer, TrainerBuilder};
