//! What a CGPO step reports, per task: one `metrics.jsonl` line each.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::monitor::{Alarm, Example};
use crate::stats::Quantiles;

/// Seconds spent in each phase of one task's step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub rollout: f64,
    pub judge: f64,
    pub reward: f64,
    pub backward: f64,
    /// Computing this line's statistics (quantiles, entropy, gradient
    /// cosine, the hacking monitor), beyond what training needs anyway.
    #[serde(default)]
    pub metrics: f64,
}

/// One judge's rates over a task's samples at one step.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct JudgeRates {
    /// Fraction of samples the judge failed (a definite `Fail`).
    pub violation_rate: f64,
    /// Fraction of samples on which it returned `Error` (panics included).
    pub error_rate: f64,
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
    /// Percentiles of the raw and calibrated rewards over the samples.
    #[serde(default)]
    pub reward_raw_quantiles: Quantiles,
    #[serde(default)]
    pub reward_calibrated_quantiles: Quantiles,
    /// The mean raw score of each extra reward model of the task.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewards: BTreeMap<String, f64>,
    /// Fraction of samples every judge passed (y = 1).
    pub pass_rate: f64,
    pub pass_rate_by_judge: BTreeMap<String, f64>,
    /// Each judge's violation and error rate.
    #[serde(default)]
    pub judges: BTreeMap<String, JudgeRates>,
    pub judge_errors: usize,
    /// Mean per-token KL of the behaviour policy from the reference on the
    /// sampled tokens (k1 and k3 estimates).
    pub kl_k1: f64,
    pub kl_k3: f64,
    /// The estimator of the task's KL penalty (`k1`, `k2`, `k3`, `abs`,
    /// `full`) and, when it is `full` (the reference's logits are at hand),
    /// the exact mean per-token KL of the behaviour policy.
    #[serde(default)]
    pub kl_estimator: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl_exact: Option<f64>,
    pub kl_coef: f64,
    /// Mean response length in tokens, and the fraction of responses cut
    /// at `max_new_tokens` (no stop token).
    pub response_len: f64,
    #[serde(default)]
    pub truncated: f64,
    /// Mean per-token entropy (nats) of the untempered policy at the
    /// sampled positions.
    #[serde(default)]
    pub entropy: f64,
    pub loss: f64,
    pub grad_norm: f64,
    /// Cosine between this task's gradient and the merged gradient
    /// `Σ ρ_l g_l` (negative: the task is pulled against the merge);
    /// absent when `train.grad_cosine` is off or the step was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_cosine: Option<f64>,
    pub learning_rate: f64,
    pub skipped: bool,
    /// What the optimizer reported (samples used, prompts skipped, ...).
    pub loss_stats: BTreeMap<String, f64>,
    pub time_s: Timing,
    /// The alarms the hacking monitor raised on this task at this step
    /// (written as their own `alarm` lines).
    #[serde(skip)]
    pub alarms: Vec<Alarm>,
    /// A few of the step's responses (written as a `samples` line).
    #[serde(skip)]
    pub examples: Vec<Example>,
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
