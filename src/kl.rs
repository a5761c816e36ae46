//! The per-task, per-token KL penalty (docs/algorithm.md §4):
//! `loss += coef * mean over response tokens of KL_t`, p = policy, q = reference,
//!
//! ```text
//! k1   = log p - log q
//! k2   = (log p - log q)^2 / 2
//! k3   = exp(log q - log p) - (log q - log p) - 1      (log-ratio clamped to ±20, k3 to ±10)
//! full = Σ_v p_v (log p_v - log q_v)                   (exact, from both logits rows)
//! ```
//!
//! [`kl_penalty`] takes per-token log-probs of the sampled tokens,
//! [`kl_penalty_full`] the logits; both are the masked mean over response
//! tokens, differentiable w.r.t. the policy side only. [`KlController`]
//! keeps the coefficient fixed or adapts it toward a target KL (Ziegler et
//! al. 2019).
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use cgpo::config::{KlConfig, KlEstimator};
//! use cgpo::kl::{kl_penalty, KlController};
//! let dev = Device::Cpu;
//! let logp = Tensor::new(&[[-1.0f32, -2.0], [-0.5, 0.0]], &dev)?;
//! let logq = Tensor::new(&[[-1.5f32, -1.0], [-0.5, 0.0]], &dev)?;
//! let mask = Tensor::new(&[[1.0f32, 1.0], [1.0, 0.0]], &dev)?;
//! // k1 over the three response tokens: (0.5 - 1 + 0) / 3.
//! let kl = kl_penalty(&logp, &logq, &mask, KlEstimator::K1)?.to_scalar::<f32>()?;
//! assert!((kl + 1.0 / 6.0).abs() < 1e-6);
//! let mut c = KlController::new(&KlConfig { coef: 0.1, target: Some(6.0), ..KlConfig::default() });
//! c.update(9.0, 1000); // KL above target: the coefficient grows
//! assert!((c.coef() - 0.102).abs() < 1e-12);
//! # Ok::<(), cgpo::Error>(())
//! ```

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{check_config, Error, Result};
pub use crate::ops::KlEstimator;
use crate::ops::{kl_estimate, token_kl};

/// The optional per-token KL penalty `coef * KL_t` (docs/algorithm.md §4).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KlConfig {
    /// 0 turns the penalty off.
    #[serde(default)]
    pub coef: f64,
    #[serde(default)]
    pub estimator: KlEstimator,
    /// With a target, `coef` adapts toward it (Ziegler et al.) over `horizon` samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default = "default_horizon")]
    pub horizon: u64,
    /// Where the penalty goes: `loss` (default; the masked token mean of
    /// the estimator on the current policy, differentiable) or `reward`
    /// (`coef * Σ_t KL_t` of the behaviour policy, detached, subtracted
    /// from each sample's reward before the loss's estimator).
    #[serde(default, skip_serializing_if = "KlPlacement::is_loss")]
    pub placement: KlPlacement,
}

/// Where a task's KL penalty goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KlPlacement {
    /// A term of the loss.
    #[default]
    Loss,
    /// A penalty on the reward (PPO-RLHF's, verl's `use_kl_in_reward`).
    Reward,
}

impl KlPlacement {
    fn is_loss(&self) -> bool {
        *self == KlPlacement::Loss
    }
}

fn default_horizon() -> u64 {
    10_000
}

impl Default for KlConfig {
    fn default() -> Self {
        Self {
            coef: 0.0,
            estimator: KlEstimator::default(),
            target: None,
            horizon: default_horizon(),
            placement: KlPlacement::Loss,
        }
    }
}

impl KlEstimator {
    /// Of the k1 and k3 estimates measured on the sampled tokens, the one
    /// the adaptive controller tracks: k1 for `k1`, else k3.
    pub fn tracked(self, k1: f64, k3: f64) -> f64 {
        match self {
            KlEstimator::K1 => k1,
            _ => k3,
        }
    }
}

impl KlConfig {
    /// Checks the settings; errors name `key` (the config's path, e.g.
    /// `tasks[0].kl`).
    pub fn validate(&self, key: &str) -> Result<()> {
        let key = |k: &str| format!("{key}.{k}");
        check_config(key("coef"), self.coef, ">= 0", |v| v >= 0.0)?;
        if self.placement == KlPlacement::Reward && self.estimator == KlEstimator::Full {
            return Err(Error::config(
                key("estimator"),
                "`full` needs the logits of the behaviour policy; with `placement: reward` use k1, k2, k3 or abs",
            ));
        }
        if let Some(target) = self.target {
            check_config(key("target"), target, "> 0", |v| v > 0.0)?;
            if self.horizon == 0 {
                return Err(Error::config(key("horizon"), "must be >= 1"));
            }
            if self.coef == 0.0 {
                return Err(Error::config(
                    key("coef"),
                    "must be > 0 when `kl.target` is set (the adaptive coefficient scales it)",
                ));
            }
        }
        Ok(())
    }

    /// Whether the penalty needs both models' full logits (the `full`
    /// estimator with a non-zero coefficient).
    pub fn needs_logits(&self) -> bool {
        self.estimator == KlEstimator::Full
            && self.coef > 0.0
            && self.placement == KlPlacement::Loss
    }
}

/// Per sample, `Σ_t KL_t` of the behaviour policy from the reference over
/// its response tokens (detached numbers): the penalty of
/// `placement: reward`, `coef` times this. `full` is an error.
pub fn sequence_kl(
    token_logp_old: &Tensor,
    token_logp_ref: &Tensor,
    mask: &Tensor,
    estimator: KlEstimator,
) -> Result<Vec<f64>> {
    let kl = (kl_estimate(token_logp_old, token_logp_ref, estimator)? * mask)?;
    Ok(kl
        .sum(1)?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

fn kl_error(op: &'static str, message: String) -> Error {
    Error::Op { op, message }
}

/// The mean per-token KL penalty over response tokens, from per-token
/// log-probs `[N, R]` of the policy (with gradient) and the reference
/// (detached here), and a `[N, R]` mask (1 = response token). Estimator
/// k1, k2 or k3 ([`crate::ops::kl_estimate`]); `Full` is an error (it needs
/// the logits: [`kl_penalty_full`]). A mask without tokens gives a zero
/// still connected to `token_logp`.
pub fn kl_penalty(
    token_logp: &Tensor,
    token_logp_ref: &Tensor,
    mask: &Tensor,
    estimator: KlEstimator,
) -> Result<Tensor> {
    const OP: &str = "kl_penalty";
    if token_logp.dims() != token_logp_ref.dims() || token_logp.dims() != mask.dims() {
        return Err(kl_error(
            OP,
            format!(
                "token_logp {:?}, token_logp_ref {:?} and mask {:?} must have the same shape",
                token_logp.dims(),
                token_logp_ref.dims(),
                mask.dims()
            ),
        ));
    }
    if estimator == KlEstimator::Full {
        return Err(kl_error(
            OP,
            "the `full` estimator needs the logits: use kl_penalty_full".into(),
        ));
    }
    let logq = token_logp_ref.to_dtype(token_logp.dtype())?.detach();
    let kl = kl_estimate(token_logp, &logq, estimator)?;
    masked_mean(&kl, mask)
}

/// The exact per-token KL(p || q) from policy logits `[M, V]` (with
/// gradient) and reference logits `[M, V]` (detached), masked mean over the
/// rows with mask `[M]` non-zero ([`crate::ops::token_kl`]).
pub fn kl_penalty_full(
    policy_logits: &Tensor,
    ref_logits: &Tensor,
    mask: &Tensor,
) -> Result<Tensor> {
    let kl = token_kl(policy_logits, ref_logits, Some(mask))?;
    masked_mean(&kl, mask)
}

/// `Σ kl * mask / Σ mask`, or a connected zero when the mask is empty.
fn masked_mean(kl: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.ne(0f32)?.to_dtype(kl.dtype())?;
    let tokens = mask.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    let total = (kl * &mask)?.sum_all()?;
    if tokens == 0.0 {
        return crate::ops::connected_zero(kl);
    }
    Ok((total / tokens)?)
}

/// The KL coefficient: fixed, or adaptive toward a target KL (Ziegler et
/// al. 2019): after each step with measured KL `kl` over `n` samples,
/// `error = clamp(kl / target - 1, -0.2, 0.2)` and
/// `coef *= 1 + error * n / horizon`. Serializable: it is checkpointed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KlController {
    /// The current coefficient.
    pub coef: f64,
    target: Option<f64>,
    horizon: u64,
}

impl KlController {
    /// Starts at `cfg.coef`; adaptive when `cfg.target` is set. (A start of
    /// 0 stays 0: the update is multiplicative.)
    pub fn new(cfg: &KlConfig) -> Self {
        Self {
            coef: cfg.coef,
            target: cfg.target,
            horizon: cfg.horizon,
        }
    }

    /// The coefficient to use for the next step.
    pub fn coef(&self) -> f64 {
        self.coef
    }

    /// Adapts the coefficient to the KL measured over `n` samples; does
    /// nothing when fixed, or when `kl` is not finite.
    pub fn update(&mut self, kl: f64, n: usize) {
        let Some(target) = self.target else { return };
        if !kl.is_finite() || self.horizon == 0 {
            return;
        }
        let error = (kl / target - 1.0).clamp(-0.2, 0.2);
        self.coef *= 1.0 + error * n as f64 / self.horizon as f64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::testutil::{assert_close, check_gradient, random, Tiny};
    use candle_core::Device;

    fn tokens() -> (Tensor, Tensor, Tensor) {
        let dev = Device::Cpu;
        (
            Tensor::new(&[[-1.0f32, -2.0], [-0.5, 0.0]], &dev).unwrap(),
            Tensor::new(&[[-1.5f32, -1.0], [-0.5, 0.0]], &dev).unwrap(),
            Tensor::new(&[[1.0f32, 1.0], [1.0, 0.0]], &dev).unwrap(),
        )
    }

    #[test]
    fn estimators_by_hand() {
        let (p, q, m) = tokens();
        // log p - log q on the three response tokens: [0.5, -1, 0].
        let at = |e| {
            f64::from(
                kl_penalty(&p, &q, &m, e)
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
            )
        };
        assert!((at(KlEstimator::K1) - (0.5 - 1.0) / 3.0).abs() < 1e-6);
        assert!((at(KlEstimator::K2) - (0.125 + 0.5) / 3.0).abs() < 1e-6);
        // k3 with r = log q - log p = [-0.5, 1, 0]: exp(r) - r - 1.
        let k3 = ((-0.5f64).exp() - 0.5) + (1f64.exp() - 2.0);
        assert!((at(KlEstimator::K3) - k3 / 3.0).abs() < 1e-6);
        let err = kl_penalty(&p, &q, &m, KlEstimator::Full).unwrap_err();
        assert!(err.to_string().contains("kl_penalty_full"), "{err}");
    }

    #[test]
    fn shape_mismatch_and_empty_mask() {
        let (p, q, m) = tokens();
        let err = kl_penalty(&p, &q.narrow(1, 0, 1).unwrap(), &m, KlEstimator::K3).unwrap_err();
        assert!(err.to_string().starts_with("kl_penalty: "), "{err}");
        let zero = (m.clone() * 0.0).unwrap();
        let kl = kl_penalty(&p, &q, &zero, KlEstimator::K3).unwrap();
        assert_eq!(kl.to_scalar::<f32>().unwrap(), 0.0);
    }

    #[test]
    fn estimator_gradients_wrt_logits_match_finite_differences() {
        let tiny = Tiny::new(&[3, 1, 2], 3, 5, 29);
        let logq = Tensor::from_vec(random(31, 9, 1.0), (3, 3), &Device::Cpu).unwrap();
        let logq = ((logq - 1.5).unwrap() * tiny.mask()).unwrap();
        for e in [KlEstimator::K1, KlEstimator::K2, KlEstimator::K3] {
            check_gradient(&tiny.logits, tiny.shape(), |z| {
                kl_penalty(&tiny.token_logp(z)?, &logq, &tiny.mask(), e)
            });
        }
    }

    #[test]
    fn full_kl_by_hand_and_gradient() {
        let dev = Device::Cpu;
        // Row 0: p = softmax([0, ln 3]) = [1/4, 3/4], q uniform:
        // KL = 1/4 ln(1/2) + 3/4 ln(3/2). Row 1 is masked.
        let zp = Tensor::new(&[[0.0f32, 3f32.ln()], [5.0, 0.0]], &dev).unwrap();
        let zq = Tensor::new(&[[0.0f32, 0.0], [0.0, 5.0]], &dev).unwrap();
        let m = Tensor::new(&[1.0f32, 0.0], &dev).unwrap();
        let want = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        let kl = kl_penalty_full(&zp, &zq, &m)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert_close(&[kl], &[want], 1e-6);

        let (rows, v) = (5, 6);
        let zp = random(37, rows * v, 2.0);
        let zq = Tensor::from_vec(random(41, rows * v, 2.0), (rows, v), &dev).unwrap();
        let m = Tensor::new(&[1.0f32, 1.0, 0.0, 1.0, 1.0], &dev).unwrap();
        let g = check_gradient(&zp, (rows, v), |z| kl_penalty_full(z, &zq, &m));
        assert!(g[2 * v..3 * v].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn fixed_controller_stays_fixed() {
        let mut c = KlController::new(&KlConfig {
            coef: 0.05,
            ..KlConfig::default()
        });
        c.update(100.0, 1000);
        assert_eq!(c.coef(), 0.05);
    }

    #[test]
    fn adaptive_controller_moves_toward_the_target() {
        let cfg = KlConfig {
            coef: 0.1,
            target: Some(6.0),
            horizon: 10_000,
            ..KlConfig::default()
        };
        let mut c = KlController::new(&cfg);
        // kl = 6.6: error = 6.6 / 6 - 1 = 0.1; coef = 0.1 * (1 + 0.1 * 1000 / 10000) = 0.101.
        c.update(6.6, 1000);
        assert!((c.coef() - 0.101).abs() < 1e-12);
        // kl = 3: error = -0.5, clamped to -0.2: coef = 0.101 * (1 - 0.2 * 0.1) = 0.09898.
        c.update(3.0, 1000);
        assert!((c.coef() - 0.09898).abs() < 1e-12);
        // A non-finite measurement changes nothing.
        c.update(f64::NAN, 1000);
        assert!((c.coef() - 0.09898).abs() < 1e-12);
        // The state round-trips through serde (checkpoints).
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<KlController>(&json).unwrap(), c);
    }
}
