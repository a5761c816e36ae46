//! The fused ops on candle's CUDA tensors (feature `candle-cuda`): the
//! custom ops' `cuda_fwd` hooks call these, which run the NVRTC kernels of
//! [`super::cuda`] on candle's own stream and device buffers, reading the
//! logits in place (at their storage offset, no copy) and wrapping the
//! outputs as candle storage.
//!
//! Kernels are compiled once per stream (about a second of NVRTC) and
//! cached for the life of the process. The `[N]`-sized inputs (targets,
//! saved log-sum-exps, upstream gradients) are copied into fresh device
//! buffers before a launch; the mask is uploaded from the host.

use std::sync::{Arc, Mutex, OnceLock};

use candle_core::backend::BackendStorage;
use candle_core::{bail, CudaStorage, Layout, Result, Shape, Storage, Tensor};
use cudarc::driver::{CudaSlice, CudaStream, CudaView};
use half::{bf16, f16};

use super::cuda::{CudaKernels, CudaOpError, DType, GradOut, Logits};

fn wrap(e: CudaOpError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

/// The compiled kernels for `stream`, compiled on first use.
fn kernels(stream: &Arc<CudaStream>) -> Result<Arc<CudaKernels>> {
    type Cache = Mutex<Vec<(usize, Arc<CudaKernels>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = Arc::as_ptr(stream) as usize;
    let mut cache = CACHE
        .get_or_init(|| Mutex::new(Vec::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, k)) = cache.iter().find(|(k, _)| *k == key) {
        return Ok(k.clone());
    }
    let k = Arc::new(CudaKernels::new(stream.clone()).map_err(wrap)?);
    cache.push((key, k.clone()));
    Ok(k)
}

fn dims2(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.dims() {
        &[n, v] => Ok((n, v)),
        d => bail!("{what} must be [N, V], got {d:?}"),
    }
}

fn offsets(layout: &Layout, what: &str) -> Result<(usize, usize)> {
    match layout.contiguous_offsets() {
        Some(o) => Ok(o),
        None => bail!("{what} must be contiguous"),
    }
}

/// Runs `f` on the logits in `s` (at `l`'s offsets) as kernel [`Logits`].
fn with_logits<R>(
    s: &CudaStorage,
    l: &Layout,
    what: &str,
    f: impl FnOnce(Logits<'_>) -> Result<R>,
) -> Result<R> {
    let (n, v) = dims2(l, what)?;
    let (start, end) = offsets(l, what)?;
    match s.dtype() {
        candle_core::DType::F32 => {
            let view = s.as_cuda_slice::<f32>()?.slice(start..end);
            f(Logits::f32_view(&view, n, v).map_err(wrap)?)
        }
        candle_core::DType::BF16 => {
            let view = s.as_cuda_slice::<bf16>()?.slice(start..end);
            // SAFETY: bf16 and u16 have the same size and alignment; the
            // kernels read the bit patterns.
            let Some(bits) = (unsafe { view.transmute::<u16>(end - start) }) else {
                bail!("{what}: cannot view bf16 storage as bits")
            };
            f(Logits::half_view(DType::Bf16, &bits, n, v).map_err(wrap)?)
        }
        candle_core::DType::F16 => {
            let view = s.as_cuda_slice::<f16>()?.slice(start..end);
            // SAFETY: as above, for f16.
            let Some(bits) = (unsafe { view.transmute::<u16>(end - start) }) else {
                bail!("{what}: cannot view f16 storage as bits")
            };
            f(Logits::half_view(DType::F16, &bits, n, v).map_err(wrap)?)
        }
        other => bail!("{what} must be f32, bf16 or f16, got {other:?}"),
    }
}

/// A fresh device copy of the `[N]` u32 values in `s` at `l`.
fn rows_u32(stream: &Arc<CudaStream>, s: &CudaStorage, l: &Layout) -> Result<CudaSlice<u32>> {
    let (start, end) = offsets(l, "targets")?;
    let view: CudaView<'_, u32> = s.as_cuda_slice::<u32>()?.slice(start..end);
    stream
        .clone_dtod(&view)
        .map_err(CudaOpError::from)
        .map_err(wrap)
}

/// A fresh device copy of an `[N]` f32 tensor.
fn tensor_f32(stream: &Arc<CudaStream>, t: &Tensor) -> Result<CudaSlice<f32>> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("expected a CUDA tensor, got one on {:?}", t.device())
    };
    let (start, end) = offsets(layout, "row values")?;
    let view: CudaView<'_, f32> = s.as_cuda_slice::<f32>()?.slice(start..end);
    stream
        .clone_dtod(&view)
        .map_err(CudaOpError::from)
        .map_err(wrap)
}

fn tensor_u32(stream: &Arc<CudaStream>, t: &Tensor) -> Result<CudaSlice<u32>> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        bail!("expected a CUDA tensor, got one on {:?}", t.device())
    };
    rows_u32(stream, s, layout)
}

/// The mask on the device, or `None` when every row is kept.
fn device_mask(stream: &Arc<CudaStream>, mask: &[u8]) -> Result<Option<CudaSlice<u8>>> {
    if mask.iter().all(|&m| m != 0) {
        return Ok(None);
    }
    Ok(Some(
        stream
            .clone_htod(mask)
            .map_err(CudaOpError::from)
            .map_err(wrap)?,
    ))
}

/// `rows` f32 device vectors of length n stacked into one `[rows, n]`
/// storage.
fn stack_rows(
    s: &CudaStorage,
    stream: &Arc<CudaStream>,
    parts: &[&CudaSlice<f32>],
    n: usize,
) -> Result<(CudaStorage, Shape)> {
    let mut out = unsafe { stream.alloc::<f32>(parts.len() * n) }
        .map_err(CudaOpError::from)
        .map_err(wrap)?;
    for (i, part) in parts.iter().enumerate() {
        let mut dst = out.slice_mut(i * n..(i + 1) * n);
        stream
            .memcpy_dtod(*part, &mut dst)
            .map_err(CudaOpError::from)
            .map_err(wrap)?;
    }
    Ok((
        CudaStorage::wrap_cuda_slice(out, s.device.clone()),
        Shape::from((parts.len(), n)),
    ))
}

/// The saved rows and upstream gradient a backward op needs, as device
/// tensors: `saved` is the forward's `[k, N]` result, `g0` the gradient of
/// its row 0.
pub(super) struct DeviceRows {
    pub targets: Option<Tensor>,
    pub saved: Tensor,
    pub g0: Tensor,
}

pub(super) fn logprob_fwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    mask: &[u8],
) -> Result<(CudaStorage, Shape)> {
    let stream = s1.device.cuda_stream();
    let k = kernels(&stream)?;
    let (n, _) = dims2(l1, "logits")?;
    let targets = rows_u32(&stream, s2, l2)?;
    if targets.len() != n || mask.len() != n {
        bail!(
            "logits have {n} rows but targets have {} and the mask {}",
            targets.len(),
            mask.len()
        );
    }
    let mask = device_mask(&stream, mask)?;
    let out = with_logits(s1, l1, "logits", |z| {
        k.token_logprobs_fwd(z, &targets, mask.as_ref())
            .map_err(wrap)
    })?;
    stack_rows(s1, &stream, &[&out.logp, &out.lse], n)
}

/// A gradient buffer in the logits' dtype, written in full by `f`.
fn gradient(
    s: &CudaStorage,
    stream: &Arc<CudaStream>,
    len: usize,
    f: impl FnOnce(GradOut<'_>) -> Result<()>,
) -> Result<CudaStorage> {
    let dev = s.device.clone();
    // SAFETY (all three): the backward kernels write every element (0 on
    // masked rows, NaN on rows with a bad target) before anything reads it.
    Ok(match s.dtype() {
        candle_core::DType::F32 => {
            let mut g = unsafe { stream.alloc::<f32>(len) }
                .map_err(CudaOpError::from)
                .map_err(wrap)?;
            f(GradOut::F32(g.as_view_mut()))?;
            CudaStorage::wrap_cuda_slice(g, dev)
        }
        candle_core::DType::BF16 => {
            let mut g = unsafe { stream.alloc::<bf16>(len) }
                .map_err(CudaOpError::from)
                .map_err(wrap)?;
            let Some(bits) = (unsafe { g.transmute_mut::<u16>(len) }) else {
                bail!("cannot view a bf16 buffer as bits")
            };
            f(GradOut::Half(DType::Bf16, bits))?;
            CudaStorage::wrap_cuda_slice(g, dev)
        }
        candle_core::DType::F16 => {
            let mut g = unsafe { stream.alloc::<f16>(len) }
                .map_err(CudaOpError::from)
                .map_err(wrap)?;
            let Some(bits) = (unsafe { g.transmute_mut::<u16>(len) }) else {
                bail!("cannot view an f16 buffer as bits")
            };
            f(GradOut::Half(DType::F16, bits))?;
            CudaStorage::wrap_cuda_slice(g, dev)
        }
        other => bail!("logits must be f32, bf16 or f16, got {other:?}"),
    })
}

pub(super) fn logprob_bwd(
    s: &CudaStorage,
    l: &Layout,
    rows: &DeviceRows,
    mask: &[u8],
) -> Result<(CudaStorage, Shape)> {
    let stream = s.device.cuda_stream();
    let k = kernels(&stream)?;
    let (n, v) = dims2(l, "logits")?;
    let Some(targets) = &rows.targets else {
        bail!("the log-prob backward needs the targets")
    };
    let targets = tensor_u32(&stream, targets)?;
    let lse = tensor_f32(&stream, &rows.saved.get(1)?)?;
    let g0 = tensor_f32(&stream, &rows.g0)?;
    let mask = device_mask(&stream, mask)?;
    let grad = gradient(s, &stream, n * v, |out| {
        with_logits(s, l, "logits", |z| {
            let check = k
                .token_logprobs_bwd_view(z, &targets, &lse, &g0, mask.as_ref(), out)
                .map_err(wrap)?;
            k.finish_target_check(check, &targets).map_err(wrap)
        })
    })?;
    Ok((grad, Shape::from((n, v))))
}

pub(super) fn kl_fwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    mask: &[u8],
) -> Result<(CudaStorage, Shape)> {
    let stream = s1.device.cuda_stream();
    let k = kernels(&stream)?;
    let (n, _) = dims2(l1, "policy logits")?;
    if l2.dims() != l1.dims() {
        bail!(
            "policy logits are {:?} but reference logits are {:?}",
            l1.dims(),
            l2.dims()
        );
    }
    if mask.len() != n {
        bail!("logits have {n} rows but the mask has {}", mask.len());
    }
    let mask = device_mask(&stream, mask)?;
    let out = with_logits(s1, l1, "policy logits", |p| {
        with_logits(s2, l2, "reference logits", |q| {
            k.token_kl_fwd(p, q, mask.as_ref()).map_err(wrap)
        })
    })?;
    stack_rows(s1, &stream, &[&out.kl, &out.lse_p, &out.lse_q], n)
}

pub(super) fn kl_bwd(
    s1: &CudaStorage,
    l1: &Layout,
    s2: &CudaStorage,
    l2: &Layout,
    rows: &DeviceRows,
    mask: &[u8],
) -> Result<(CudaStorage, Shape)> {
    let stream = s1.device.cuda_stream();
    let k = kernels(&stream)?;
    let (n, v) = dims2(l1, "policy logits")?;
    let fwd = super::cuda::TokenKl {
        kl: tensor_f32(&stream, &rows.saved.get(0)?)?,
        lse_p: tensor_f32(&stream, &rows.saved.get(1)?)?,
        lse_q: tensor_f32(&stream, &rows.saved.get(2)?)?,
    };
    let g0 = tensor_f32(&stream, &rows.g0)?;
    let mask = device_mask(&stream, mask)?;
    let grad = gradient(s1, &stream, n * v, |out| {
        with_logits(s1, l1, "policy logits", |p| {
            with_logits(s2, l2, "reference logits", |q| {
                k.token_kl_bwd_view(p, q, &fwd, &g0, mask.as_ref(), out)
                    .map_err(wrap)
            })
        })
    })?;
    Ok((grad, Shape::from((n, v))))
}
