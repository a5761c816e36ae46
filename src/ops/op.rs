//! The kernels as candle custom ops, with backward passes that give the
//! gradient w.r.t. the (policy) logits only.
//!
//! Forward outputs carry what the backward needs, one row per quantity:
//! log-prob returns `[2, N]` (log-prob, log-sum-exp), KL returns `[3, N]`
//! (KL, lse_p, lse_q); the public functions in `ops` take row 0. The
//! backward ops hold the per-row inputs (targets, mask, saved values,
//! upstream gradients; all `[N]`-sized: host vectors on the CPU, device
//! tensors on CUDA) and stream the logits once to write the gradient.
//!
//! With the `candle-cuda` feature the same ops run on CUDA tensors through
//! `super::candle_cuda`. The upstream gradients of the saved log-sum-exps
//! are dropped there: the public functions never expose those rows, so
//! they are always zero.

use candle_core::backend::BackendStorage;
use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use half::{bf16, f16};

use super::cpu;

/// `[N, k]` interleaved rows (as the CPU kernels write them) to `[k, N]`.
fn planar(interleaved: &[f32], k: usize) -> Vec<f32> {
    let n = interleaved.len() / k;
    (0..k)
        .flat_map(|j| (0..n).map(move |i| interleaved[i * k + j]))
        .collect()
}

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
        Ok((CpuStorage::F32(planar(&out, 2)), Shape::from((2, n))))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::candle_cuda::logprob_fwd(s1, l1, s2, l2, &self.mask)
    }

    fn bwd(
        &self,
        logits: &Tensor,
        targets: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let op = LogProbBwd::new(
            targets,
            self.mask.clone(),
            res,
            &grad.get(0)?,
            &grad.get(1)?,
        )?;
        Ok((Some(logits.apply_op1_no_bwd(&op)?), None))
    }
}

/// The `[N]`-sized inputs of a backward op, where its kernel reads them.
pub(super) enum RowInputs<H> {
    /// Host vectors, for the CPU kernels.
    Host(H),
    /// Device tensors, for the CUDA kernels.
    #[cfg(feature = "candle-cuda")]
    Device(super::candle_cuda::DeviceRows),
}

impl<H> RowInputs<H> {
    fn host(&self) -> Result<&H> {
        match self {
            RowInputs::Host(h) => Ok(h),
            #[cfg(feature = "candle-cuda")]
            RowInputs::Device(_) => {
                bail!("the backward inputs are on a device but the logits are on the CPU")
            }
        }
    }
}

pub(super) struct LogProbHost {
    targets: Vec<u32>,
    lse: Vec<f32>,
    g0: Vec<f32>,
    g1: Vec<f32>,
}

impl LogProbBwd {
    /// From the forward's `[2, N]` result and the upstream gradients of the
    /// log-prob (`g0`) and of the log-sum-exp (`g1`), all on the logits'
    /// device.
    pub(super) fn new(
        targets: &Tensor,
        mask: Vec<u8>,
        res: &Tensor,
        g0: &Tensor,
        g1: &Tensor,
    ) -> Result<Self> {
        let g0 = g0.to_dtype(DType::F32)?;
        #[cfg(feature = "candle-cuda")]
        if targets.device().is_cuda() {
            return Ok(Self {
                mask,
                rows: RowInputs::Device(super::candle_cuda::DeviceRows {
                    targets: Some(targets.clone()),
                    saved: res.clone(),
                    g0,
                }),
            });
        }
        Ok(Self {
            mask,
            rows: RowInputs::Host(LogProbHost {
                targets: targets.to_vec1::<u32>()?,
                lse: res.get(1)?.to_vec1::<f32>()?,
                g0: g0.to_vec1::<f32>()?,
                g1: g1.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            }),
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
    mask: Vec<u8>,
    rows: RowInputs<LogProbHost>,
}

impl CustomOp1 for LogProbBwd {
    fn name(&self) -> &'static str {
        "cgpo-token-logprobs-bwd"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, v) = dims2(l, "logits")?;
        let h = self.rows.host()?;
        macro_rules! run {
            ($z:expr, $t:ty, $variant:ident) => {{
                let z = contiguous($z, l, "logits")?;
                let mut g = gradient_buffer::<$t>(n * v);
                cpu::logprob_bwd(z, v, &h.targets, &self.mask, &h.lse, &h.g0, &h.g1, &mut g);
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

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let RowInputs::Device(rows) = &self.rows else {
            bail!("the backward inputs are on the CPU but the logits are on a CUDA device")
        };
        super::candle_cuda::logprob_bwd(s, l, rows, &self.mask)
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
        Ok((CpuStorage::F32(planar(&out, 3)), Shape::from((3, n))))
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        super::candle_cuda::kl_fwd(s1, l1, s2, l2, &self.mask)
    }

    fn bwd(
        &self,
        zp: &Tensor,
        zq: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g0 = grad.get(0)?.to_dtype(DType::F32)?;
        #[cfg(feature = "candle-cuda")]
        if zp.device().is_cuda() {
            let op = KlBwd {
                mask: self.mask.clone(),
                rows: RowInputs::Device(super::candle_cuda::DeviceRows {
                    targets: None,
                    saved: res.clone(),
                    g0,
                }),
            };
            return Ok((Some(zp.apply_op2_no_bwd(zq, &op)?), None));
        }
        let op = KlBwd {
            mask: self.mask.clone(),
            rows: RowInputs::Host(KlHost {
                // The CPU kernel reads (kl, lse_p, lse_q) interleaved per row.
                res: res.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?,
                g0: g0.to_vec1::<f32>()?,
                g1: grad.get(1)?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            }),
        };
        // The reference logits get no gradient.
        Ok((Some(zp.apply_op2_no_bwd(zq, &op)?), None))
    }
}

struct KlHost {
    res: Vec<f32>,
    g0: Vec<f32>,
    g1: Vec<f32>,
}

struct KlBwd {
    mask: Vec<u8>,
    rows: RowInputs<KlHost>,
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
        let h = self.rows.host()?;
        macro_rules! run {
            ($p:expr, $q:expr, $t:ty, $variant:ident) => {{
                let (p, q) = (
                    contiguous($p, l1, "policy logits")?,
                    contiguous($q, l2, "reference logits")?,
                );
                let mut g = gradient_buffer::<$t>(n * v);
                cpu::kl_bwd(p, q, v, &self.mask, &h.res, &h.g0, &h.g1, &mut g);
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
    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        let RowInputs::Device(rows) = &self.rows else {
            bail!("the backward inputs are on the CPU but the logits are on a CUDA device")
        };
        super::candle_cuda::kl_bwd(s1, l1, s2, l2, rows, &self.mask)
    }
}
