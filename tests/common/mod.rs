//! Helpers shared by the integration tests (`mod common;` in each).

use candle_core::Tensor;

/// max |a - b| over all elements of two f32 tensors of one shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("max |a - b| of two f32 tensors of one shape")
}
