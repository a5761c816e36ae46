//! Training: the one training loop ([`RunLoop`], for every [`Job`]), the
//! multi-task CGPO trainer ([`Trainer`]) with its experience collection,
//! per-task losses and metrics, the evaluator ([`evaluate`]), AdamW and the
//! learning-rate schedule ([`adamw`]), the per-task gradient merge
//! ([`merge`]) and the reward-hacking monitor ([`monitor`]).
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
mod config;
pub mod evaluate;
mod experience;
pub mod merge;
mod metrics;
pub mod monitor;
mod run_loop;
mod task_loss;
mod trainer;

pub use adamw::{learning_rate, AdamW};
pub use config::{Schedule, TrainConfig};
pub use evaluate::{EvalPoint, EvalSample, Evaluation, Evaluator, TaskSamples};
pub use experience::seeded_order;
pub use metrics::{JudgeRates, TaskMetrics, Timing};
pub use monitor::{Alarm, AlarmAction, HackingMonitor, MonitorConfig};
pub use run_loop::{append_lines, Job, LoopSettings, LoopState, LoopSummary, RunLoop, Stepped};
pub use trainer::{RunSummary, Trainer, TrainerBuilder, TrainerState};
