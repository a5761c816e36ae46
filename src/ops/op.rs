//! The kernels as candle custom ops, with backward passes that give the
//! gradient w.r.t. the (policy) logits only.
//!
//! Forward outputs carry what the backward needs: log-prob returns `[N, 2]`
//! (log-prob, log-sum-exp), KL returns `[N, 3]` (KL, lse_p, lse_q); the
//! public functions in `ops` narrow them to `[N]`. The backward ops hold the
//! per-row vectors (targets, mask, saved values, upstream gradients; all
//! `[N]`-sized) and stream the logits once to write the gradient.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use super::cpu;

/// The contiguous part of a storage slice that `layout` describes.
fn contiguous<'a, T>(data: &'a [T], layout: &Layout, what: &str) -> Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => bail!("{what} must be contiguous"),
    }
}

fn dims2(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.dims() {
        &[n, v] => Ok((n, v)),
        d => bail!("{what} must be [N, V], got {d:?}"),
    }
}

pub(super) struct LogProbFwd {
    pub mask: Vec<u8>,
}

impl CustomOp2 for LogProbFwd {
    fn name(&self) -> &'static str {
        "cgpo-token-logprobs"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims2(l1, "logits")?;
        let CpuStorage::U32(t) = s2 else {
            bail!("targets must be u32")
        };
        let targets = contiguous(t, l2, "targets")?;
        if targets.len() != n || self.mask.len() != n {
            bail!(
                "logits have {n} rows but targets have {} and the mask {}",
                targets.len(),
                self.mask.len()
            );
        }
        if let Some((i, &y)) = targets
            .iter()
            .enumerate()
            .find(|&(i, &y)| self.mask[i] != 0 && y as usize >= v)
        {
            bail!("target id {y} at row {i} is outside the vocabulary of {v}");
        }
        let mut out = vec![0f32; 2 * n];
        match s1 {
            CpuStorage::F32(z) => cpu::logprob_fwd(
                contiguous(z, l1, "logits")?,
                v,
                targets,
                &self.mask,
                &mut out,
            ),
            CpuStorage::BF16(z) => cpu::logprob_fwd(
                contiguous(z, l1, "logits")?,
                v,
                targets,
                &self.mask,
                &mut out,
            ),
            CpuStorage::F16(z) => cpu::logprob_fwd(
                contiguous(z, l1, "logits")?,
                v,
                targets,
                &self.mask,
                &mut out,
            ),
            other => bail!("logits must be f32, bf16 or f16, got {:?}", other.dtype()),
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 2))))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let op = LogProbBwd::new(
            targets,
            self.mask.clone(),
            res,
            grad.iter().map(|g| g[0]).collect(),
            grad.iter().map(|g| g[1]).collect(),
        )?;
        Ok((Some(logits.apply_op1_no_bwd(&op)?), None))
    }
}

impl LogProbBwd {
    /// From the forward's `[N, 2]` result and the upstream gradients of the
    /// log-prob (`g0`) and of the log-sum-exp (`g1`).
    pub(super) fn new(
        targets: &Tensor,
        mask: Vec<u8>,
        res: &Tensor,
        g0: Vec<f32>,
        g1: Vec<f32>,
    ) -> Result<Self> {
        let res = res.to_vec2::<f32>()?;
        Ok(Self {
            targets: targets.to_vec1::<u32>()?,
            mask,
            lse: res.iter().map(|r| r[1]).collect(),
            g0,
            g1,
        })
    }
}

/// A zeroed output buffer for a gradient. Large buffers are marked for
/// transparent huge pages before they are first touched: writing a fresh
/// 200 MB gradient otherwise takes ~50,000 page faults, which cost more than
/// the kernel itself.
fn gradient_buffer<T: cpu::Element>(len: usize) -> Vec<T> {
    let v = T::zeroed_vec(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = len * std::mem::size_of::<T>();
        if bytes >= 4 * HUGE {
            let start = v.as_ptr() as usize;
            let aligned = (start + HUGE - 1) & !(HUGE - 1);
            let end = (start + bytes) & !(HUGE - 1);
            if end > aligned {
                // SAFETY: the range lies inside the allocation; MADV_HUGEPAGE
                // is only a hint and does not change the memory's contents.
                unsafe {
                    libc::madvise(
                        aligned as *mut libc::c_void,
                        end - aligned,
                        libc::MADV_HUGEPAGE,
                    );
                }
            }
        }
    }
    v
}

pub(super) struct LogProbBwd {
    targets: Vec<u32>,
    mask: Vec<u8>,
    lse: Vec<f32>,
    g0: Vec<f32>,
    g1: Vec<f32>,
}

impl CustomOp1 for LogProbBwd {
    fn name(&self) -> &'static str {
        "cgpo-token-logprobs-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims2(l, "logits")?;
        macro_rules! run {
            ($z:expr, $t:ty, $variant:ident) => {{
                let z = contiguous($z, l, "logits")?;
                let mut g = gradient_buffer::<$t>(n * v);
                cpu::logprob_bwd(
                    z,
                    v,
                    &self.targets,
                    &self.mask,
                    &self.lse,
                    &self.g0,
                    &self.g1,
                    &mut g,
                );
                CpuStorage::$variant(g)
            }};
        }
        let out = match s {
            CpuStorage::F32(z) => run!(z, f32, F32),
            CpuStorage::BF16(z) => run!(z, bf16, BF16),
            CpuStorage::F16(z) => run!(z, f16, F16),
            other => bail!("logits must be f32, bf16 or f16, got {:?}", other.dtype()),
        };
        Ok((out, Shape::from((n, v))))
    }
}

pub(super) struct KlFwd {
    pub mask: Vec<u8>,
}

impl CustomOp2 for KlFwd {
    fn name(&self) -> &'static str {
        "cgpo-token-kl"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims2(l1, "policy logits")?;
        if l2.dims() != l1.dims() {
            bail!(
                "policy logits are {:?} but reference logits are {:?}",
                l1.dims(),
                l2.dims()
            );
        }
        if self.mask.len() != n {
            bail!("logits have {n} rows but the mask has {}", self.mask.len());
        }
        let mut out = vec![0f32; 3 * n];
        match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(q)) => cpu::kl_fwd(
                contiguous(p, l1, "policy logits")?,
                contiguous(q, l2, "reference logits")?,
                v,
                &self.mask,
                &mut out,
            ),
            (CpuStorage::BF16(p), CpuStorage::BF16(q)) => cpu::kl_fwd(
                contiguous(p, l1, "policy logits")?,
                contiguous(q, l2, "reference logits")?,
                v,
                &self.mask,
                &mut out,
            ),
            (CpuStorage::F16(p), CpuStorage::F16(q)) => cpu::kl_fwd(
                contiguous(p, l1, "policy logits")?,
                contiguous(q, l2, "reference logits")?,
                v,
                &self.mask,
                &mut out,
            ),
            (a, b) => bail!(
                "policy and reference logits must share one of f32, bf16, f16; got {:?} and {:?}",
                a.dtype(),
                b.dtype()
            ),
        }
        Ok((CpuStorage::F32(out), Shape::from((n, 3))))
    }

    fn bwd(
        &self,
        zp: &Tensor,
        zq: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let op = KlBwd {
            mask: self.mask.clone(),
            res: res.flatten_all()?.to_vec1::<f32>()?,
            g0: grad.iter().map(|g| g[0]).collect(),
            g1: grad.iter().map(|g| g[1]).collect(),
        };
        // The reference logits get no gradient.
        Ok((Some(zp.apply_op2_no_bwd(zq, &op)?), None))
    }
}

struct KlBwd {
    mask: Vec<u8>,
    res: Vec<f32>,
    g0: Vec<f32>,
    g1: Vec<f32>,
}

impl CustomOp2 for KlBwd {
    fn name(&self) -> &'static str {
        "cgpo-token-kl-bwd"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims2(l1, "policy logits")?;
        macro_rules! run {
            ($p:expr, $q:expr, $t:ty, $variant:ident) => {{
                let (p, q) = (
                    contiguous($p, l1, "policy logits")?,
                    contiguous($q, l2, "reference logits")?,
                );
                let mut g = gradient_buffer::<$t>(n * v);
                cpu::kl_bwd(p, q, v, &self.mask, &self.res, &self.g0, &self.g1, &mut g);
                CpuStorage::$variant(g)
            }};
        }
        let out = match (s1, s2) {
            (CpuStorage::F32(p), CpuStorage::F32(q)) => run!(p, q, f32, F32),
            (CpuStorage::BF16(p), CpuStorage::BF16(q)) => run!(p, q, bf16, BF16),
            (CpuStorage::F16(p), CpuStorage::F16(q)) => run!(p, q, f16, F16),
            (a, b) => bail!(
                "mismatched logits dtypes {:?} and {:?}",
                a.dtype(),
                b.dtype()
            ),
        };
        Ok((out, Shape::from((n, v))))
    }
}
