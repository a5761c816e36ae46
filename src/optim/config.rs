//! A task's optimizer as configs name it: one of CGPO's constrained
//! optimizers or a baseline of the ablations, with its settings.

use serde::{Deserialize, Serialize};

use crate::error::{check_config, Error, Result};

/// The optimizer of a task: one of CGPO's constrained optimizers
/// (cgpo-spec section 3) or a baseline of the ablations (section 5). The
/// losses are in [`crate::optim`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Calibrated-regularized policy gradient.
    Crpg {
        /// KL_max: samples with logratio >= kl_max get zero reward weight.
        #[serde(default = "default_kl_max")]
        kl_max: f64,
        #[serde(default)]
        baseline: PgBaseline,
        /// Clip the KL weight `1 - logratio / kl_max` above at 1.
        #[serde(default)]
        clip_kl_weight: bool,
    },
    /// Constrained online DPO.
    Codpo {
        #[serde(default = "default_beta")]
        beta: f64,
        /// Weight of the NLL term on the chosen response.
        #[serde(default = "default_lambda")]
        lambda: f64,
    },
    /// Calibrated-regularized reward-ranked fine-tuning.
    Crraft {
        #[serde(default = "default_kl_max")]
        kl_max: f64,
    },
    /// Baseline: unconstrained policy gradient ("PPO-like", no critic, no
    /// judges, batch-mean baseline).
    Pg {
        /// The one reward it optimizes: `raw` (default) or `calibrated`.
        #[serde(default)]
        reward: RewardKind,
        /// eps of the clipped-ratio objective, in (0, 1); absent = plain
        /// REINFORCE.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        clip_ratio: Option<f64>,
        /// Gradient passes over the same rollouts.
        #[serde(default = "default_epochs")]
        epochs: usize,
    },
    /// Baseline: online DPO with pairs by raw reward only (no judges).
    OnlineDpo {
        #[serde(default = "default_beta")]
        beta: f64,
        #[serde(default = "default_lambda")]
        lambda: f64,
    },
    /// Baseline: reward-ranked fine-tuning without judges or KL filter.
    Raft {},
}

impl OptimizerConfig {
    /// The name used in configs and metrics: `crpg`, `codpo`, `crraft`,
    /// `pg`, `online_dpo` or `raft`.
    pub fn name(&self) -> &'static str {
        match self {
            OptimizerConfig::Crpg { .. } => "crpg",
            OptimizerConfig::Codpo { .. } => "codpo",
            OptimizerConfig::Crraft { .. } => "crraft",
            OptimizerConfig::Pg { .. } => "pg",
            OptimizerConfig::OnlineDpo { .. } => "online_dpo",
            OptimizerConfig::Raft {} => "raft",
        }
    }

    /// Gradient passes over the same rollouts: `epochs` for `pg`, 1 for the
    /// others (on-policy).
    pub fn epochs(&self) -> usize {
        match self {
            OptimizerConfig::Pg { epochs, .. } => *epochs,
            _ => 1,
        }
    }

    /// Checks the optimizer's settings; `key` makes the key path of a
    /// setting (e.g. `tasks[0].optimizer.beta`), `k` is the task's K.
    pub(crate) fn validate(&self, key: impl Fn(&str) -> String, k: usize) -> Result<()> {
        match self {
            OptimizerConfig::Crpg { kl_max, .. } | OptimizerConfig::Crraft { kl_max } => {
                check_config(key("optimizer.kl_max"), *kl_max, "> 0", |v| v > 0.0)
            }
            OptimizerConfig::Codpo { beta, lambda }
            | OptimizerConfig::OnlineDpo { beta, lambda } => {
                check_config(key("optimizer.beta"), *beta, "> 0", |v| v > 0.0)?;
                check_config(key("optimizer.lambda"), *lambda, ">= 0", |v| v >= 0.0)?;
                if k < 2 {
                    return Err(Error::config(
                        key("generations_per_prompt"),
                        format!(
                            "{} needs at least 2 generations per prompt to form a pair",
                            self.name()
                        ),
                    ));
                }
                Ok(())
            }
            OptimizerConfig::Pg {
                clip_ratio, epochs, ..
            } => {
                if let Some(eps) = clip_ratio {
                    check_config(key("optimizer.clip_ratio"), *eps, "in (0, 1)", |v| {
                        v > 0.0 && v < 1.0
                    })?;
                }
                if *epochs == 0 {
                    return Err(Error::config(key("optimizer.epochs"), "must be >= 1"));
                }
                Ok(())
            }
            OptimizerConfig::Raft {} => Ok(()),
        }
    }
}

/// Not given by the paper; a lenient threshold in nats per sequence.
fn default_kl_max() -> f64 {
    10.0
}
fn default_beta() -> f64 {
    0.1
}
fn default_lambda() -> f64 {
    5.0
}
fn default_epochs() -> usize {
    1
}

/// Which reward the unconstrained policy-gradient baseline optimizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// The reward model's raw score r.
    #[default]
    Raw,
    /// The calibrated reward sigmoid(r - r(a_bar)).
    Calibrated,
}

/// The policy-gradient baseline subtracted from CRPG rewards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PgBaseline {
    /// Mean over the task's whole minibatch (the paper).
    #[default]
    Batch,
    /// Mean over the K samples of the same prompt.
    PerPrompt,
}
