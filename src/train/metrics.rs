//! What a CGPO step reports, per task: one `metrics.jsonl` line each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Seconds spent in each phase of one task's step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub rollout: f64,
    pub judge: f64,
    pub reward: f64,
    pub backward: f64,
}

/// One metrics line: one task at one step (`kind` "train"), or one task's
/// evaluation (`kind` "eval").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskMetrics {
    pub kind: String,
    pub step: u64,
    pub task: String,
    /// Samples judged (N = B x K) and those used (not dropped).
    pub samples: usize,
    pub used: usize,
    pub reward_raw: f64,
    pub reward_calibrated: f64,
    /// The mean raw score of each extra reward model of the task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewards: BTreeMap<String, f64>,
    /// Fraction of samples every judge passed (y = 1).
    pub pass_rate: f64,
    pub pass_rate_by_judge: BTreeMap<String, f64>,
    pub judge_errors: usize,
    /// Mean per-token KL of the behaviour policy from the reference on the
    /// sampled tokens (k1 and k3 estimates).
    pub kl_k1: f64,
    pub kl_k3: f64,
    pub kl_coef: f64,
    pub response_len: f64,
    pub loss: f64,
    pub grad_norm: f64,
    pub learning_rate: f64,
    pub skipped: bool,
    /// What the optimizer reported (samples used, prompts skipped, ...).
    pub loss_stats: BTreeMap<String, f64>,
    pub time_s: Timing,
}

pub(crate) fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// The progress bar's message: pass rate, calibrated reward and KL per task.
pub(crate) fn headline(metrics: &[TaskMetrics]) -> String {
    metrics
        .iter()
        .map(|m| {
            format!(
                "{} pass {:.2} r {:.3} kl {:.3}",
                m.task, m.pass_rate, m.reward_calibrated, m.kl_k3
            )
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
