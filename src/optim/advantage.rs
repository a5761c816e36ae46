//! Advantage estimators (docs/algorithm.md §8): pure functions from one
//! reward per sample, the prompt (group) of each sample and the response
//! lengths to one advantage per sample, which the policy-gradient losses
//! broadcast to the response's tokens.
//!
//! | Estimator | Advantage of sample i in group g (n samples) |
//! |---|---|
//! | `batch` | `r_i - mean(r)` over the minibatch (CGPO's CRPG) |
//! | `batch_normalized` | `(r_i - mean(r)) / (std(r) + eps)` over the minibatch |
//! | `per_prompt` (`group_mean`) | `r_i - mean_g(r)` (Dr. GRPO: no std division) |
//! | `grpo` | `(r_i - mean_g(r)) / (std_g(r) + eps)`, std with Bessel's correction |
//! | `rloo` | `r_i - mean of the other n-1 = n/(n-1) (r_i - mean_g(r))` |
//! | `reinforce_pp` | `r` whitened over the minibatch's response tokens |
//! | `reinforce_pp_baseline` | `r_i - mean_g(r)`, then whitened over the tokens |
//!
//! A group of one sample has no baseline of its own: `grpo`, `rloo`,
//! `per_prompt` and `reinforce_pp_baseline` take its mean as 0 and its std
//! as 1 (as verl does), so its advantage is its reward (before whitening).
//! Whitening ([`whiten_over_tokens`]) weighs each sample by its length, as
//! per-token whitening of a sequence reward broadcast to its tokens does:
//! `(r_i - m) / sqrt(v + 1e-8)` with `m` and `v` (Bessel-corrected) the
//! token-weighted mean and variance. REINFORCE++'s discount is 1 (an
//! outcome reward), so every token of a response has the same advantage.
//!
//! ```
//! use cgpo::optim::advantage::{advantages, Advantage};
//! let rewards = [1.0, 0.0, 0.5, 0.5];
//! let group = [0, 0, 1, 1];
//! let lengths = [3, 1, 2, 2];
//! let a = advantages(Advantage::Grpo, &rewards, &group, &lengths, 1e-6);
//! // Group 0: mean 0.5, std 0.707: ±0.707. Group 1: all equal, 0.
//! assert!((a[0] - 0.5f64.sqrt()).abs() < 1e-5 && a[2] == 0.0);
//! let a = advantages(Advantage::Rloo, &rewards, &group, &lengths, 1e-6);
//! assert_eq!(a, [1.0, -1.0, 0.0, 0.0]);
//! ```

use serde::{Deserialize, Serialize};

use super::mean;

/// How a sample's reward becomes its advantage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Advantage {
    /// The reward minus the mean over the whole minibatch (the paper's CRPG).
    #[default]
    Batch,
    /// The minibatch's mean subtracted, divided by its std + eps (the
    /// last step of TRL's GDPO).
    BatchNormalized,
    /// The reward minus its prompt's mean (Dr. GRPO's advantage).
    #[serde(alias = "group_mean")]
    PerPrompt,
    /// GRPO: the prompt's mean subtracted, divided by its std + eps.
    Grpo,
    /// RLOO: the reward minus the mean of the prompt's other samples.
    Rloo,
    /// REINFORCE++: the rewards whitened over the minibatch's tokens.
    ReinforcePp,
    /// REINFORCE++ with a group baseline: the prompt's mean subtracted,
    /// then whitened over the minibatch's tokens.
    ReinforcePpBaseline,
}

impl Advantage {
    /// Whether each sample is measured against the other samples of its
    /// prompt (so a prompt needs two or more).
    pub fn is_group(self) -> bool {
        matches!(
            self,
            Advantage::PerPrompt
                | Advantage::Grpo
                | Advantage::Rloo
                | Advantage::ReinforcePpBaseline
        )
    }
}

/// The eps of GRPO's std division when a config gives none (verl's).
pub const DEFAULT_ADV_EPS: f64 = 1e-6;

/// The eps under the square root of the whitening (verl's).
const WHITEN_EPS: f64 = 1e-8;

/// One advantage per sample. `group[i]` is the prompt of sample i,
/// `lengths[i]` its response tokens (used by the REINFORCE++ whitening
/// only); `eps` is GRPO's. All three slices have the same length.
pub fn advantages(
    estimator: Advantage,
    rewards: &[f64],
    group: &[usize],
    lengths: &[usize],
    eps: f64,
) -> Vec<f64> {
    match estimator {
        Advantage::Batch => {
            let m = mean(rewards.iter().copied());
            rewards.iter().map(|r| r - m).collect()
        }
        Advantage::BatchNormalized => {
            let stats = group_stats(rewards, &vec![0; rewards.len()]);
            let s = stats.first().copied().unwrap_or(GroupStats {
                n: 0,
                mean: 0.0,
                std: 1.0,
            });
            rewards
                .iter()
                .map(|r| (r - s.mean) / (s.std + eps))
                .collect()
        }
        Advantage::PerPrompt => {
            let stats = group_stats(rewards, group);
            centred(rewards, group, &stats)
        }
        Advantage::Grpo => {
            let stats = group_stats(rewards, group);
            rewards
                .iter()
                .zip(group)
                .map(|(r, &g)| (r - stats[g].mean) / (stats[g].std + eps))
                .collect()
        }
        Advantage::Rloo => {
            let stats = group_stats(rewards, group);
            rewards
                .iter()
                .zip(group)
                .map(|(r, &g)| {
                    let n = stats[g].n as f64;
                    if stats[g].n > 1 {
                        n / (n - 1.0) * (r - stats[g].mean)
                    } else {
                        *r
                    }
                })
                .collect()
        }
        Advantage::ReinforcePp => whiten_over_tokens(rewards, lengths),
        Advantage::ReinforcePpBaseline => {
            let stats = group_stats(rewards, group);
            whiten_over_tokens(&centred(rewards, group, &stats), lengths)
        }
    }
}

/// How a task with several rewards combines them into the one reward its
/// loss sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardAggregation {
    /// The weighted sum (then the loss's estimator).
    #[default]
    Sum,
    /// GDPO: each reward normalized inside its group, then the weighted sum.
    NormalizeThenSum,
}

/// The one reward per sample of `components` (reward k of sample i is
/// `components[k][i]`) with `weights`; `eps` is the group normalization's.
pub fn aggregate_rewards(
    aggregation: RewardAggregation,
    components: &[Vec<f64>],
    weights: &[f64],
    group: &[usize],
    eps: f64,
) -> Vec<f64> {
    match aggregation {
        RewardAggregation::Sum => weighted_sum(components, weights),
        RewardAggregation::NormalizeThenSum => normalize_then_sum(components, weights, group, eps),
    }
}

/// Each component normalized within its group as GRPO does
/// (`(r - mean_g) / (std_g + eps)`), then weighted and summed: GDPO's
/// `normalize_then_sum`. `components[k][i]` is reward k of sample i.
pub fn normalize_then_sum(
    components: &[Vec<f64>],
    weights: &[f64],
    group: &[usize],
    eps: f64,
) -> Vec<f64> {
    let n = group.len();
    let mut out = vec![0.0; n];
    for (values, w) in components.iter().zip(weights) {
        let normalized = advantages(Advantage::Grpo, values, group, &vec![0; n], eps);
        for (o, a) in out.iter_mut().zip(normalized) {
            *o += w * a;
        }
    }
    out
}

/// The weighted sum of the components (`sum`).
pub fn weighted_sum(components: &[Vec<f64>], weights: &[f64]) -> Vec<f64> {
    let n = components.first().map_or(0, Vec::len);
    let mut out = vec![0.0; n];
    for (values, w) in components.iter().zip(weights) {
        for (o, v) in out.iter_mut().zip(values) {
            *o += w * v;
        }
    }
    out
}

/// Per group (0..=max group): whether its rewards are not all equal; a
/// group without samples is `None`.
fn group_varies(rewards: &[f64], group: &[usize]) -> Vec<Option<bool>> {
    let groups = group.iter().max().map_or(0, |g| g + 1);
    let mut range: Vec<Option<(f64, f64)>> = vec![None; groups];
    for (&r, &g) in rewards.iter().zip(group) {
        let (lo, hi) = range[g].get_or_insert((r, r));
        *lo = lo.min(r);
        *hi = hi.max(r);
    }
    range.iter().map(|r| r.map(|(lo, hi)| hi > lo)).collect()
}

/// Per sample: whether its group's rewards are not all equal (a group
/// whose rewards are all equal has zero advantage under every group
/// estimator and teaches nothing; DAPO's dynamic sampling drops it).
pub fn informative(rewards: &[f64], group: &[usize]) -> Vec<bool> {
    let varies = group_varies(rewards, group);
    group.iter().map(|&g| varies[g] == Some(true)).collect()
}

/// The number of groups (with at least one sample) whose rewards are all
/// equal.
pub fn zero_variance_groups(rewards: &[f64], group: &[usize]) -> usize {
    group_varies(rewards, group)
        .iter()
        .filter(|v| **v == Some(false))
        .count()
}

/// `(x_i - m) / sqrt(v + 1e-8)` with `m` and `v` the mean and the
/// Bessel-corrected variance of `x` over the response tokens (sample i
/// counts `lengths[i]` times). Fewer than two tokens: the values centred,
/// not scaled.
pub fn whiten_over_tokens(values: &[f64], lengths: &[usize]) -> Vec<f64> {
    let tokens: usize = lengths.iter().sum();
    if tokens == 0 {
        return vec![0.0; values.len()];
    }
    let t = tokens as f64;
    let m = values
        .iter()
        .zip(lengths)
        .map(|(x, &l)| x * l as f64)
        .sum::<f64>()
        / t;
    if tokens < 2 {
        return values.iter().map(|x| x - m).collect();
    }
    let v = values
        .iter()
        .zip(lengths)
        .map(|(x, &l)| (x - m).powi(2) * l as f64)
        .sum::<f64>()
        / (t - 1.0);
    let scale = 1.0 / (v + WHITEN_EPS).sqrt();
    values.iter().map(|x| (x - m) * scale).collect()
}

#[derive(Clone, Copy, Debug)]
struct GroupStats {
    n: usize,
    mean: f64,
    /// Bessel-corrected; 1 for a group of one (verl).
    std: f64,
}

fn group_stats(rewards: &[f64], group: &[usize]) -> Vec<GroupStats> {
    let groups = group.iter().max().map_or(0, |g| g + 1);
    let mut members: Vec<Vec<f64>> = vec![Vec::new(); groups];
    for (&r, &g) in rewards.iter().zip(group) {
        members[g].push(r);
    }
    members
        .iter()
        .map(|v| match v.len() {
            0 | 1 => GroupStats {
                n: v.len(),
                mean: 0.0,
                std: 1.0,
            },
            n => {
                let m = mean(v.iter().copied());
                let var = v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n as f64 - 1.0);
                GroupStats {
                    n,
                    mean: m,
                    std: var.sqrt(),
                }
            }
        })
        .collect()
}

fn centred(rewards: &[f64], group: &[usize], stats: &[GroupStats]) -> Vec<f64> {
    rewards
        .iter()
        .zip(group)
        .map(|(r, &g)| r - stats[g].mean)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn group_estimators_by_hand() {
        // Group 0: [1, 2, 6] (mean 3, sample std sqrt(7)); group 1: [4] alone.
        let r = [1.0, 2.0, 6.0, 4.0];
        let g = [0, 0, 0, 1];
        let l = [1, 1, 1, 1];
        close(
            &advantages(Advantage::Batch, &r, &g, &l, 0.0),
            &[-2.25, -1.25, 2.75, 0.75],
        );
        close(
            &advantages(Advantage::PerPrompt, &r, &g, &l, 0.0),
            &[-2.0, -1.0, 3.0, 4.0],
        );
        let s = 7f64.sqrt();
        close(
            &advantages(Advantage::Grpo, &r, &g, &l, 0.0),
            &[-2.0 / s, -1.0 / s, 3.0 / s, 4.0],
        );
        // Leave one out: 1 - (2 + 6)/2 = -3, 2 - 3.5 = -1.5, 6 - 1.5 = 4.5.
        close(
            &advantages(Advantage::Rloo, &r, &g, &l, 0.0),
            &[-3.0, -1.5, 4.5, 4.0],
        );
    }

    #[test]
    fn whitening_weighs_samples_by_length() {
        // Tokens: 1 (x3), 3 (x1): mean 1.5, Bessel variance (3*0.25 + 2.25)/3 = 1.
        let w = whiten_over_tokens(&[1.0, 3.0], &[3, 1]);
        close(
            &w,
            &[-0.5 / (1.0 + 1e-8f64).sqrt(), 1.5 / (1.0 + 1e-8f64).sqrt()],
        );
        assert_eq!(whiten_over_tokens(&[2.0], &[1]), [0.0]);
        assert_eq!(whiten_over_tokens(&[2.0, 5.0], &[0, 0]), [0.0, 0.0]);
        let b = advantages(
            Advantage::ReinforcePpBaseline,
            &[1.0, 3.0, 7.0],
            &[0, 0, 1],
            &[3, 1, 2],
            0.0,
        );
        // Centred per group: [-1, 1, 7 (alone: mean 0)], then whitened.
        close(&b, &whiten_over_tokens(&[-1.0, 1.0, 7.0], &[3, 1, 2]));
    }

    #[test]
    fn zero_variance_groups_are_found() {
        let r = [0.5, 0.5, 1.0, 0.0, 2.0];
        let g = [0, 0, 1, 1, 2];
        assert_eq!(informative(&r, &g), [false, false, true, true, false]);
        assert_eq!(zero_variance_groups(&r, &g), 2);
    }

    #[test]
    fn gdpo_normalizes_each_reward_in_its_group() {
        // Reward 0 varies on a scale of 100, reward 1 on a scale of 1: after
        // the per-group normalization both count equally.
        let c = vec![vec![100.0, 300.0], vec![1.0, 0.0]];
        let g = [0, 0];
        let s = normalize_then_sum(&c, &[1.0, 1.0], &g, 0.0);
        close(&s, &[0.0, 0.0]);
        close(&weighted_sum(&c, &[1.0, 2.0]), &[102.0, 300.0]);
    }
}
