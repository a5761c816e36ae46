//! Test helpers for the losses: hand-built minibatches whose sequence
//! log-probs are a `Var` (so a loss's gradient w.r.t. them shows the
//! per-sample weights), and a tiny logits case checked against central
//! finite differences.

use candle_core::{DType, Device, Tensor, Var};

use super::LossInputs;
use crate::error::Result;

/// A hand-built minibatch. Defaults: seq_logp -1, ref and behaviour log-probs
/// 0, raw 0, calibrated 0.5, every sample positive, 2 tokens each, no
/// baseline responses, G = 1 + the largest group.
#[derive(Clone, Debug)]
pub(crate) struct Case {
    pub group: Vec<usize>,
    pub seq: Vec<f32>,
    pub reference: Vec<f64>,
    pub old: Vec<f64>,
    pub raw: Vec<f64>,
    pub calibrated: Vec<f64>,
    pub positive: Vec<bool>,
    pub lengths: Vec<usize>,
    pub baselines: Vec<Option<f32>>,
}

impl Case {
    pub fn new(group: &[usize]) -> Self {
        let n = group.len();
        let g = group.iter().max().map_or(0, |m| m + 1);
        Self {
            group: group.to_vec(),
            seq: vec![-1.0; n],
            reference: vec![0.0; n],
            old: vec![0.0; n],
            raw: vec![0.0; n],
            calibrated: vec![0.5; n],
            positive: vec![true; n],
            lengths: vec![2; n],
            baselines: vec![None; g],
        }
    }
    pub fn seq(mut self, v: &[f32]) -> Self {
        self.seq = v.to_vec();
        self
    }
    pub fn reference(mut self, v: &[f64]) -> Self {
        self.reference = v.to_vec();
        self
    }
    pub fn old(mut self, v: &[f64]) -> Self {
        self.old = v.to_vec();
        self
    }
    pub fn raw(mut self, v: &[f64]) -> Self {
        self.raw = v.to_vec();
        self
    }
    pub fn calibrated(mut self, v: &[f64]) -> Self {
        self.calibrated = v.to_vec();
        self
    }
    pub fn positive(mut self, v: &[bool]) -> Self {
        self.positive = v.to_vec();
        self
    }
    pub fn lengths(mut self, v: &[usize]) -> Self {
        self.lengths = v.to_vec();
        self
    }
    pub fn baselines(mut self, v: &[Option<f32>]) -> Self {
        self.baselines = v.to_vec();
        self
    }

    /// The inputs with `seq_logp` a `Var`; token tensors are zeros with the
    /// mask of `lengths`.
    pub fn build(&self) -> (Var, LossInputs) {
        let (var, _, inputs) = self.build_with_baselines();
        (var, inputs)
    }

    /// As [`Case::build`], also returning the baselines' `Var`s.
    pub fn build_with_baselines(&self) -> (Var, Vec<Option<Var>>, LossInputs) {
        let dev = Device::Cpu;
        let var = Var::new(self.seq.as_slice(), &dev).unwrap();
        let bases: Vec<Option<Var>> = self
            .baselines
            .iter()
            .map(|b| b.map(|x| Var::new(x, &dev).unwrap()))
            .collect();
        let n = self.group.len();
        let r = self.lengths.iter().copied().max().unwrap_or(0);
        let zeros = Tensor::zeros((n, r), DType::F32, &dev).unwrap();
        let inputs = LossInputs {
            seq_logp: var.as_tensor().clone(),
            seq_logp_ref: self.reference.clone(),
            seq_logp_old: self.old.clone(),
            token_logp: zeros.clone(),
            token_logp_old: zeros.clone(),
            token_logp_ref: zeros,
            mask: mask(&self.lengths, r),
            raw: self.raw.clone(),
            calibrated: self.calibrated.clone(),
            positive: self.positive.clone(),
            group: self.group.clone(),
            lengths: self.lengths.clone(),
            baseline_seq_logp: bases
                .iter()
                .map(|b| b.as_ref().map(|v| v.as_tensor().clone()))
                .collect(),
            logits: None,
        };
        (var, bases, inputs)
    }
}

/// The `[N, R]` f32 mask of the first `lengths[i]` tokens of each row.
pub(crate) fn mask(lengths: &[usize], r: usize) -> Tensor {
    let m: Vec<f32> = lengths
        .iter()
        .flat_map(|&len| (0..r).map(move |t| if t < len { 1.0 } else { 0.0 }))
        .collect();
    Tensor::from_vec(m, (lengths.len(), r), &Device::Cpu).unwrap()
}

/// The gradient of `loss` w.r.t. `var`, as numbers.
pub(crate) fn grad_of(var: &Var, loss: &Tensor) -> Vec<f32> {
    let grads = loss.backward().unwrap();
    grads
        .get(var)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Asserts `got ≈ want` elementwise within `tol` (absolute).
pub(crate) fn assert_close(got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "index {i}: got {g}, want {w} (all: {got:?} vs {want:?})"
        );
    }
}

/// The scalar value of a loss.
pub(crate) fn value(loss: &Tensor) -> f64 {
    f64::from(loss.to_scalar::<f32>().unwrap())
}

/// Deterministic pseudo-random numbers in `[-scale, scale)`.
pub(crate) fn random(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * u - 1.0) * scale
        })
        .collect()
}

/// A tiny policy output: N responses of up to R tokens over a vocabulary of
/// V, as logits `[N * R, V]` with targets and a padding mask.
pub(crate) struct Tiny {
    pub n: usize,
    pub r: usize,
    pub v: usize,
    pub lengths: Vec<usize>,
    pub logits: Vec<f32>,
    targets: Tensor,
    row_mask: Tensor,
}

impl Tiny {
    pub fn new(lengths: &[usize], r: usize, v: usize, seed: u64) -> Self {
        let n = lengths.len();
        let logits = random(seed, n * r * v, 2.0);
        let targets: Vec<u32> = random(seed + 1, n * r, 1.0)
            .iter()
            .map(|x| ((x + 1.0) * 0.5 * v as f32) as u32 % v as u32)
            .collect();
        let targets = Tensor::from_vec(targets, n * r, &Device::Cpu).unwrap();
        let row_mask = mask(lengths, r).flatten_all().unwrap();
        Self {
            n,
            r,
            v,
            lengths: lengths.to_vec(),
            logits,
            targets,
            row_mask,
        }
    }

    /// `(N * R, V)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n * self.r, self.v)
    }

    /// Per-token log-probs `[N, R]` (0 on padding) from logits `[N * R, V]`
    /// through the fused op.
    pub fn token_logp(&self, logits: &Tensor) -> Result<Tensor> {
        let t = crate::ops::token_logprobs(logits, &self.targets, Some(&self.row_mask))?;
        Ok(t.reshape((self.n, self.r))?)
    }

    /// The `[N, R]` mask.
    pub fn mask(&self) -> Tensor {
        mask(&self.lengths, self.r)
    }
}

/// Checks the autograd gradient of `loss` w.r.t. logits `[rows, V]`
/// (starting at `logits0`) against central finite differences on every
/// entry, and that the gradient is not trivially zero. Returns the gradient.
pub(crate) fn check_gradient(
    logits0: &[f32],
    shape: (usize, usize),
    loss: impl Fn(&Tensor) -> Result<Tensor>,
) -> Vec<f32> {
    let dev = Device::Cpu;
    let var = Var::from_tensor(&Tensor::from_vec(logits0.to_vec(), shape, &dev).unwrap()).unwrap();
    let auto = grad_of(&var, &loss(var.as_tensor()).unwrap());
    let at = |x: &[f32]| value(&loss(&Tensor::from_vec(x.to_vec(), shape, &dev).unwrap()).unwrap());
    let eps = 1e-2f32;
    let fd: Vec<f64> = (0..logits0.len())
        .map(|i| {
            let mut x = logits0.to_vec();
            x[i] += eps;
            let plus = at(&x);
            x[i] -= 2.0 * eps;
            let minus = at(&x);
            (plus - minus) / (2.0 * f64::from(eps))
        })
        .collect();
    let scale = fd.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    assert!(
        scale > 1e-3,
        "the loss does not depend on the logits: {fd:?}"
    );
    for (i, (&a, &f)) in auto.iter().zip(&fd).enumerate() {
        let tol = 1e-2 * f.abs().max(0.05 * scale) + 1e-4;
        assert!(
            (f64::from(a) - f).abs() <= tol,
            "logit {i}: autograd {a} vs finite differences {f} (scale {scale})"
        );
    }
    auto
}
