//! The multi-task gradient (docs/algorithm.md §3): each task's loss is
//! backpropagated on its own, its gradient norm logged, then
//! `g = Σ_l ρ_l g_l`, then one global gradient-norm clip.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use cgpo::train::merge::{add_weighted, global_norm, task_gradient};
//! let w = Var::new(&[1.0f32, 2.0], &Device::Cpu)?;
//! let vars = vec![("w".to_string(), w.clone())];
//! let a = task_gradient(&(w.as_tensor() * 3.0)?.sum_all()?, &vars)?; // g_a = [3, 3]
//! let b = task_gradient(&w.as_tensor().sqr()?.sum_all()?, &vars)?;   // g_b = [2, 4]
//! let mut merged = vec![None];
//! add_weighted(&mut merged, &a.grads, 1.0)?;
//! add_weighted(&mut merged, &b.grads, 0.5)?;
//! assert_eq!(merged[0].as_ref().unwrap().to_vec1::<f32>()?, [4.0, 5.0]);
//! assert!((global_norm(&merged)? - 41f64.sqrt()).abs() < 1e-6);
//! # Ok::<(), cgpo::Error>(())
//! ```

use candle_core::{Tensor, Var};

use crate::error::Result;

/// One task's gradient, aligned with the policy's vars.
pub struct TaskGradient {
    pub grads: Vec<Option<Tensor>>,
    /// Its L2 norm over every var.
    pub norm: f64,
}

/// Backpropagates one task's loss and keeps its gradient apart.
pub fn task_gradient(loss: &Tensor, vars: &[(String, Var)]) -> Result<TaskGradient> {
    let store = loss.backward()?;
    let grads: Vec<Option<Tensor>> = vars
        .iter()
        .map(|(_, v)| store.get(v.as_tensor()).cloned())
        .collect();
    let norm = global_norm(&grads)?;
    Ok(TaskGradient { grads, norm })
}

/// `merged += weight * grads`, var by var.
pub fn add_weighted(
    merged: &mut [Option<Tensor>],
    grads: &[Option<Tensor>],
    weight: f64,
) -> Result<()> {
    for (slot, g) in merged.iter_mut().zip(grads) {
        let Some(g) = g else { continue };
        let scaled = (g * weight)?;
        *slot = Some(match slot.take() {
            Some(acc) => (acc + scaled)?,
            None => scaled,
        });
    }
    Ok(())
}

/// L2 norm over all gradients (f64 accumulation); NaN or inf if any entry is.
pub fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let mut sum = 0.0f64;
    for g in grads.iter().flatten() {
        sum += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok(sum.sqrt())
}

/// `Σ_i <a_i, b_i>` over vars present in both (f64 accumulation).
pub fn dot(a: &[Option<Tensor>], b: &[Option<Tensor>]) -> Result<f64> {
    let mut sum = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        if let (Some(x), Some(y)) = (x, y) {
            sum += f64::from((x * y)?.sum_all()?.to_scalar::<f32>()?);
        }
    }
    Ok(sum)
}

/// Scales the gradients so that their global norm is at most `max_norm`
/// (0 = no clipping). Returns the norm before clipping.
pub fn clip(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm > max_norm && norm.is_finite() {
        let scale = max_norm / norm;
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}
