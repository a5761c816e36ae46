//! AdamW (Loshchilov & Hutter) with decoupled weight decay, and the
//! learning-rate schedule. Written here rather than taken from candle-nn
//! because its moments must be saved in checkpoints and restored on resume.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use cgpo::train::AdamW;
//! let w = Var::new(&[1.0f32, -2.0], &Device::Cpu)?;
//! let mut opt = AdamW::new(&[("w".to_string(), w.clone())], 0.9, 0.999, 1e-8, 0.0)?;
//! let g = Tensor::new(&[0.5f32, -0.5], &Device::Cpu)?;
//! opt.step(&[Some(g)], 0.1)?;
//! // The first step moves each weight by lr against the gradient's sign.
//! let w = w.to_vec1::<f32>()?;
//! assert!((w[0] - 0.9).abs() < 1e-6 && (w[1] + 1.9).abs() < 1e-6);
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Tensor, Var};

use super::config::{Schedule, TrainConfig};
use crate::error::{Error, Result};

pub struct AdamW {
    names: Vec<String>,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
    /// Steps taken (for bias correction).
    t: u64,
}

impl AdamW {
    pub fn new(
        vars: &[(String, Var)],
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let zeros = |v: &Var| v.as_tensor().zeros_like();
        Ok(Self {
            names: vars.iter().map(|(n, _)| n.clone()).collect(),
            vars: vars.iter().map(|(_, v)| v.clone()).collect(),
            m: vars
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<_>>()?,
            v: vars
                .iter()
                .map(|(_, v)| zeros(v))
                .collect::<candle_core::Result<_>>()?,
            beta1,
            beta2,
            eps,
            weight_decay,
            t: 0,
        })
    }

    pub fn from_config(vars: &[(String, Var)], cfg: &TrainConfig) -> Result<Self> {
        Self::new(vars, cfg.beta1, cfg.beta2, cfg.adam_eps, cfg.weight_decay)
    }

    pub fn steps_taken(&self) -> u64 {
        self.t
    }

    /// One update with learning rate `lr`; `grads` aligned with the vars
    /// (`None`: no gradient, the var and its moments are left alone).
    /// The one place where a step's gradient becomes an update, for every
    /// training job: clip `grads` to `max_grad_norm` (0 = no clip) by their
    /// global norm, then step when that norm is finite. Returns the norm
    /// before clipping. (A data-parallel run would all-reduce `grads` here,
    /// before the clip, so that every replica takes the same step.)
    pub fn update(
        &mut self,
        grads: &mut [Option<Tensor>],
        max_grad_norm: f64,
        lr: f64,
    ) -> Result<f64> {
        let norm = super::merge::clip(grads, max_grad_norm)?;
        if norm.is_finite() {
            self.step(grads, lr)?;
        }
        Ok(norm)
    }

    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.vars.len() {
            return Err(Error::Op {
                op: "adamw",
                message: format!(
                    "{} gradients for {} variables",
                    grads.len(),
                    self.vars.len()
                ),
            });
        }
        self.t += 1;
        let t = self.t as i32;
        let (c1, c2) = (1.0 - self.beta1.powi(t), 1.0 - self.beta2.powi(t));
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let m = ((&self.m[i] * self.beta1)? + (g * (1.0 - self.beta1))?)?;
            let v = ((&self.v[i] * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let update = ((&m / c1)? / ((&v / c2)?.sqrt()? + self.eps)?)?;
            let w = self.vars[i].as_tensor();
            let decayed = (w * (1.0 - lr * self.weight_decay))?;
            self.vars[i].set(&(decayed - (update * lr)?)?)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(())
    }

    /// Writes the moments (safetensors); the step count goes in the
    /// checkpoint's state.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (i, n) in self.names.iter().enumerate() {
            map.insert(format!("m.{n}"), self.m[i].clone());
            map.insert(format!("v.{n}"), self.v[i].clone());
        }
        candle_core::safetensors::save(&map, path)
            .map_err(|e| Error::model(path.display(), e.to_string()))
    }

    /// Restores moments written by [`AdamW::save`] and the step count.
    pub fn load(&mut self, path: &Path, steps_taken: u64) -> Result<()> {
        let device = self
            .vars
            .first()
            .map(|v| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let map = candle_core::safetensors::load(path, &device)
            .map_err(|e| Error::model(path.display(), format!("optimizer state: {e}")))?;
        for (i, n) in self.names.iter().enumerate() {
            for (prefix, slot) in [("m", &mut self.m[i]), ("v", &mut self.v[i])] {
                let t = map.get(&format!("{prefix}.{n}")).ok_or_else(|| {
                    Error::model(path.display(), format!("missing `{prefix}.{n}`"))
                })?;
                if t.dims() != slot.dims() {
                    return Err(Error::model(
                        path.display(),
                        format!(
                            "`{prefix}.{n}` has shape {:?}, expected {:?}",
                            t.dims(),
                            slot.dims()
                        ),
                    ));
                }
                *slot = t.clone();
            }
        }
        self.t = steps_taken;
        Ok(())
    }
}

/// The learning rate at `step` (0-based): linear warm-up, then constant or
/// cosine decay to 0 at `cfg.steps`.
pub fn learning_rate(cfg: &TrainConfig, step: u64) -> f64 {
    let base = cfg.learning_rate;
    if step < cfg.warmup_steps {
        return base * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    match cfg.schedule {
        Schedule::Constant => base,
        Schedule::Cosine => {
            let span = cfg.steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
            base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn matches_a_hand_computed_second_step_with_decay() {
        let w = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = AdamW::new(&[("w".into(), w.clone())], 0.9, 0.99, 0.0, 0.1).unwrap();
        let g = |x: f32| Some(Tensor::new(&[x], &Device::Cpu).unwrap());
        opt.step(&[g(1.0)], 0.1).unwrap(); // w = 1 * (1 - 0.01) - 0.1 * 1 = 0.89
        opt.step(&[g(-1.0)], 0.1).unwrap();
        // m = 0.9*0.1 - 0.1 = -0.01, mhat = -0.01/0.19; v = 0.99*0.01 + 0.01 = 0.0199, vhat = 0.0199/0.0199 = 1
        let expected = 0.89 * (1.0 - 0.01) - 0.1 * (-0.01 / 0.19);
        let got = w.to_vec1::<f32>().unwrap()[0];
        assert!(
            (f64::from(got) - expected).abs() < 1e-6,
            "{got} vs {expected}"
        );
    }

    #[test]
    fn schedule_warms_up_then_decays() {
        let cfg = TrainConfig {
            steps: 10,
            warmup_steps: 2,
            learning_rate: 1.0,
            schedule: Schedule::Cosine,
            ..TrainConfig::default()
        };
        let lrs: Vec<f64> = (0..10).map(|s| learning_rate(&cfg, s)).collect();
        assert_eq!(&lrs[..3], &[0.5, 1.0, 1.0]);
        assert!(lrs.windows(2).skip(2).all(|w| w[1] < w[0]));
        let constant = TrainConfig {
            schedule: Schedule::Constant,
            ..cfg
        };
        assert_eq!(learning_rate(&constant, 9), 1.0);
    }
}
