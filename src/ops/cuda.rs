//! CUDA implementation of the fused per-token log-prob and KL kernels
//! (docs/algorithm.md §6), behind the `cuda` cargo feature.
//!
//! The sources in `kernels/` are embedded in the binary and compiled at run
//! time by NVRTC; `cudarc` loads `libcuda` and `libnvrtc` dynamically, so the
//! crate builds and links without a CUDA toolkit. NVRTC emits a CUBIN for the
//! device's exact architecture (`sm_XX`) rather than PTX: a PTX file from an
//! NVRTC newer than the driver cannot be JIT-compiled by that driver, while a
//! CUBIN loads on any driver of the same major version.
//!
//! Every kernel runs one block of [`BLOCK_THREADS`] threads per row of a
//! row-major `[N, V]` logits tensor, reads each row once (twice for the
//! backward passes, which recompute the softmax from the saved
//! log-sum-exp) and accumulates in f32 whatever the input dtype. Gradients
//! are written in the logits' dtype.

use std::ffi::{c_char, CString};
use std::sync::Arc;

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DriverError,
    LaunchArgs, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys, Ptx};

/// Threads per block for every kernel (`CGPO_BLOCK` in `kernels/common.cuh`;
/// the kernels' launch bounds assume it).
pub const BLOCK_THREADS: u32 = 256;

const COMMON_SRC: &str = include_str!("../../kernels/common.cuh");
const LOGPROB_SRC: &str = include_str!("../../kernels/logprob.cu");
const KL_SRC: &str = include_str!("../../kernels/kl.cu");

/// Where NVRTC usually lives; quoted in the error when it cannot be loaded.
#[cfg(not(feature = "candle-cuda"))]
const NVRTC_HINT: &str = "add the directory that holds libnvrtc.so.* to LD_LIBRARY_PATH: it ships \
with the CUDA toolkit (/usr/local/cuda/lib64, /usr/local/cuda/targets/x86_64-linux/lib) and with \
PyTorch's pip wheels (site-packages/nvidia/cu13/lib or site-packages/nvidia/cuda_nvrtc/lib)";

/// Errors of the CUDA kernels.
#[derive(Debug, thiserror::Error)]
pub enum CudaOpError {
    /// `libcuda` or `libnvrtc` could not be loaded.
    #[error("could not load the {library} library (tried {candidates:?}); {hint}")]
    LibraryMissing {
        /// Library stem, `nvrtc` or `cuda`.
        library: &'static str,
        /// File names handed to the dynamic loader.
        candidates: Vec<String>,
        /// How to fix it.
        hint: &'static str,
    },
    /// NVRTC rejected the kernel sources.
    #[error("NVRTC failed to compile the cgpo kernels for {arch}: {message}")]
    Compile {
        /// Target architecture, e.g. `sm_90`.
        arch: String,
        /// NVRTC status and program log.
        message: String,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] DriverError),
    /// Lengths, dtypes or sizes do not fit together.
    #[error("invalid kernel arguments: {0}")]
    Shape(String),
    /// A target token id is not below the vocabulary size.
    #[error("target id {target} out of range for vocabulary {vocab} at row {row}")]
    TargetOutOfRange {
        /// The offending target id.
        target: u32,
        /// The vocabulary size V.
        vocab: usize,
        /// The first row with an out-of-range target.
        row: usize,
    },
}

type Result<T> = std::result::Result<T, CudaOpError>;

/// Element type of a logits tensor. bf16 and f16 are stored as their `u16`
/// bit patterns in a `CudaSlice<u16>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    /// IEEE single precision.
    F32,
    /// bfloat16.
    Bf16,
    /// IEEE half precision.
    F16,
}

impl DType {
    fn index(self) -> usize {
        match self {
            DType::F32 => 0,
            DType::Bf16 => 1,
            DType::F16 => 2,
        }
    }

    /// Kernel name suffix (`f32`, `bf16`, `f16`).
    pub fn suffix(self) -> &'static str {
        ["f32", "bf16", "f16"][self.index()]
    }

    /// Bytes per element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }
}

#[derive(Clone, Copy)]
enum LogitsData<'a> {
    F32(&'a CudaSlice<f32>),
    Half(DType, &'a CudaSlice<u16>),
    F32View(&'a CudaView<'a, f32>),
    HalfView(DType, &'a CudaView<'a, u16>),
}

/// A borrowed row-major `[rows, vocab]` logits tensor on the device.
#[derive(Clone, Copy)]
pub struct Logits<'a> {
    data: LogitsData<'a>,
    rows: usize,
    vocab: usize,
}

impl<'a> Logits<'a> {
    /// f32 logits; `data.len()` must be `rows * vocab`.
    pub fn f32(data: &'a CudaSlice<f32>, rows: usize, vocab: usize) -> Result<Self> {
        Self::checked(LogitsData::F32(data), data.len(), rows, vocab)
    }

    /// bf16 logits as bit patterns; `data.len()` must be `rows * vocab`.
    pub fn bf16(data: &'a CudaSlice<u16>, rows: usize, vocab: usize) -> Result<Self> {
        Self::checked(LogitsData::Half(DType::Bf16, data), data.len(), rows, vocab)
    }

    /// f16 logits as bit patterns; `data.len()` must be `rows * vocab`.
    pub fn f16(data: &'a CudaSlice<u16>, rows: usize, vocab: usize) -> Result<Self> {
        Self::checked(LogitsData::Half(DType::F16, data), data.len(), rows, vocab)
    }

    /// f32 logits in a view (e.g. a sub-range of a larger buffer, such as a
    /// candle tensor's storage at its offset).
    pub fn f32_view(data: &'a CudaView<'a, f32>, rows: usize, vocab: usize) -> Result<Self> {
        Self::checked(LogitsData::F32View(data), data.len(), rows, vocab)
    }

    /// bf16 or f16 logits (as bit patterns) in a view.
    pub fn half_view(
        dtype: DType,
        data: &'a CudaView<'a, u16>,
        rows: usize,
        vocab: usize,
    ) -> Result<Self> {
        if dtype == DType::F32 {
            return Err(CudaOpError::Shape(
                "half_view takes bf16 or f16 logits; use f32_view for f32".to_string(),
            ));
        }
        Self::checked(LogitsData::HalfView(dtype, data), data.len(), rows, vocab)
    }

    fn checked(data: LogitsData<'a>, len: usize, rows: usize, vocab: usize) -> Result<Self> {
        if rows == 0 || vocab == 0 {
            return Err(CudaOpError::Shape(format!(
                "logits must have at least one row and one column, got [{rows}, {vocab}]"
            )));
        }
        // The grid has one block per row, and grid.x is at most 2^31 - 1.
        if rows > i32::MAX as usize {
            return Err(CudaOpError::Shape(format!(
                "{rows} rows exceed the launch limit of {}",
                i32::MAX
            )));
        }
        let expected = rows.checked_mul(vocab).ok_or_else(|| {
            CudaOpError::Shape(format!("[{rows}, {vocab}] overflows the element count"))
        })?;
        if len != expected {
            return Err(CudaOpError::Shape(format!(
                "logits hold {len} elements, expected rows * vocab = {rows} * {vocab} = {expected}"
            )));
        }
        Ok(Self { data, rows, vocab })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self.data {
            LogitsData::F32(_) | LogitsData::F32View(_) => DType::F32,
            LogitsData::Half(dtype, _) | LogitsData::HalfView(dtype, _) => dtype,
        }
    }

    /// Number of rows N.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Vocabulary size V.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    fn push<'b>(&'b self, args: &mut LaunchArgs<'b>) {
        match &self.data {
            LogitsData::F32(z) => args.arg(*z),
            LogitsData::Half(_, z) => args.arg(*z),
            LogitsData::F32View(z) => args.arg(*z),
            LogitsData::HalfView(_, z) => args.arg(*z),
        };
    }
}

/// An owned device tensor in a logits dtype (the gradients).
#[derive(Debug)]
pub enum LogitsBuf {
    /// f32 values.
    F32(CudaSlice<f32>),
    /// bf16 bit patterns.
    Bf16(CudaSlice<u16>),
    /// f16 bit patterns.
    F16(CudaSlice<u16>),
}

impl LogitsBuf {
    /// Allocates `len` elements of `dtype` (contents unspecified until a
    /// kernel writes them; the backward kernels write every element).
    pub fn alloc(stream: &Arc<CudaStream>, dtype: DType, len: usize) -> Result<Self> {
        Ok(match dtype {
            DType::F32 => LogitsBuf::F32(stream.alloc_zeros::<f32>(len)?),
            DType::Bf16 => LogitsBuf::Bf16(stream.alloc_zeros::<u16>(len)?),
            DType::F16 => LogitsBuf::F16(stream.alloc_zeros::<u16>(len)?),
        })
    }

    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            LogitsBuf::F32(_) => DType::F32,
            LogitsBuf::Bf16(_) => DType::Bf16,
            LogitsBuf::F16(_) => DType::F16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            LogitsBuf::F32(s) => s.len(),
            LogitsBuf::Bf16(s) | LogitsBuf::F16(s) => s.len(),
        }
    }

    /// Whether the buffer holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Views the buffer as `[rows, vocab]` logits.
    pub fn as_logits(&self, rows: usize, vocab: usize) -> Result<Logits<'_>> {
        match self {
            LogitsBuf::F32(s) => Logits::f32(s, rows, vocab),
            LogitsBuf::Bf16(s) => Logits::bf16(s, rows, vocab),
            LogitsBuf::F16(s) => Logits::f16(s, rows, vocab),
        }
    }

    /// Copies the values to the host as f32 (bf16/f16 widened exactly).
    pub fn to_host_f32(&self, stream: &Arc<CudaStream>) -> Result<Vec<f32>> {
        Ok(match self {
            LogitsBuf::F32(s) => stream.clone_dtoh(s)?,
            LogitsBuf::Bf16(s) => stream
                .clone_dtoh(s)?
                .into_iter()
                .map(bf16_bits_to_f32)
                .collect(),
            LogitsBuf::F16(s) => stream
                .clone_dtoh(s)?
                .into_iter()
                .map(f16_bits_to_f32)
                .collect(),
        })
    }

    /// The whole buffer as a gradient destination.
    pub fn as_grad_out(&mut self) -> GradOut<'_> {
        match self {
            LogitsBuf::F32(g) => GradOut::F32(g.as_view_mut()),
            LogitsBuf::Bf16(g) => GradOut::Half(DType::Bf16, g.as_view_mut()),
            LogitsBuf::F16(g) => GradOut::Half(DType::F16, g.as_view_mut()),
        }
    }
}

/// Where a backward kernel writes the gradient: a mutable view in the
/// logits' dtype (bf16 / f16 as bit patterns), e.g. of a [`LogitsBuf`] or
/// of a buffer another library allocated.
#[derive(Debug)]
pub enum GradOut<'a> {
    /// f32 values.
    F32(CudaViewMut<'a, f32>),
    /// bf16 or f16 bit patterns.
    Half(DType, CudaViewMut<'a, u16>),
}

impl GradOut<'_> {
    /// Element type.
    pub fn dtype(&self) -> DType {
        match self {
            GradOut::F32(_) => DType::F32,
            GradOut::Half(dtype, _) => *dtype,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            GradOut::F32(g) => g.len(),
            GradOut::Half(_, g) => g.len(),
        }
    }

    /// Whether the view holds no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push<'b>(&'b mut self, args: &mut LaunchArgs<'b>) {
        match self {
            GradOut::F32(g) => args.arg(g),
            GradOut::Half(_, g) => args.arg(g),
        };
    }
}

/// bf16 bits to f32 (exact).
pub fn bf16_bits_to_f32(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// f32 to bf16 bits, round to nearest even; NaN stays NaN.
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 0x0040) as u16;
    }
    let rounded = u.wrapping_add(0x7fff + ((u >> 16) & 1));
    (rounded >> 16) as u16
}

/// f16 bits to f32 (exact).
pub fn f16_bits_to_f32(bits: u16) -> f32 {
    let sign = u32::from(bits >> 15) << 31;
    let exp = u32::from((bits >> 10) & 0x1f);
    let mant = u32::from(bits & 0x3ff);
    let magnitude = match (exp, mant) {
        (0, 0) => 0.0,
        // Subnormal: mant * 2^-24.
        (0, m) => m as f32 * f32::from_bits(0x3380_0000),
        (31, 0) => f32::INFINITY,
        (31, _) => f32::NAN,
        (e, m) => f32::from_bits(((e + 112) << 23) | (m << 13)),
    };
    f32::from_bits(sign | magnitude.to_bits())
}

/// f32 to f16 bits, round to nearest even; overflow gives infinity.
pub fn f32_to_f16_bits(x: f32) -> u16 {
    let u = x.to_bits();
    let sign = ((u >> 16) & 0x8000) as u16;
    let a = f32::from_bits(u & 0x7fff_ffff);
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal range: units of 2^-24, rounded to nearest even.
        let q = a * 16_777_216.0;
        return sign | (q.round_ties_even() as u16);
    }
    let bits = a.to_bits();
    let exp = (bits >> 23) as i32 - 127 + 15;
    let mant = bits & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rest = mant & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && h & 1 == 1) {
        // A carry out of the mantissa correctly bumps the exponent.
        h += 1;
    }
    sign | h as u16
}

/// Outputs of [`CudaKernels::token_logprobs_fwd`], each of length N.
#[derive(Debug)]
pub struct TokenLogprobs {
    /// log p(y_i | z_i); 0 on masked rows, NaN on rows with a bad target.
    pub logp: CudaSlice<f32>,
    /// logsumexp(z_i), saved for the backward pass; 0 on masked rows.
    pub lse: CudaSlice<f32>,
}

/// The device-side out-of-range flag of a launch whose targets have not been
/// checked yet; pass it to [`CudaKernels::finish_target_check`].
#[derive(Debug)]
#[must_use = "an unchecked launch may have hit an out-of-range target"]
pub struct PendingTargetCheck {
    err: CudaSlice<u32>,
    vocab: usize,
}

/// Outputs of [`CudaKernels::token_kl_fwd`], each of length N.
#[derive(Debug)]
pub struct TokenKl {
    /// KL(p_i || q_i); 0 on masked rows.
    pub kl: CudaSlice<f32>,
    /// logsumexp of the policy logits.
    pub lse_p: CudaSlice<f32>,
    /// logsumexp of the reference logits.
    pub lse_q: CudaSlice<f32>,
}

/// Library file names `cudarc` hands to the dynamic loader for `lib`
/// (`"nvrtc"` or `"cuda"`).
#[cfg(not(feature = "candle-cuda"))]
pub fn library_candidates(lib: &str) -> Vec<String> {
    cudarc::get_lib_name_candidates(lib)
}

/// With `candle-cuda` the libraries are linked (candle's choice), so the
/// dynamic loader resolves them before `main`; these are their sonames.
#[cfg(feature = "candle-cuda")]
pub fn library_candidates(lib: &str) -> Vec<String> {
    match lib {
        "cuda" => vec!["libcuda.so.1".to_string()],
        "nvrtc" => vec!["libnvrtc.so.13".to_string()],
        other => vec![format!("lib{other}.so")],
    }
}

/// Checks that NVRTC can be loaded; `cudarc` would panic on first use otherwise.
#[cfg(not(feature = "candle-cuda"))]
pub fn ensure_nvrtc() -> Result<()> {
    // SAFETY: only attempts to dlopen the candidate names and closes them.
    if unsafe { nvrtc_sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaOpError::LibraryMissing {
            library: "nvrtc",
            candidates: library_candidates("nvrtc"),
            hint: NVRTC_HINT,
        })
    }
}

/// Checks that the CUDA driver library can be loaded.
#[cfg(not(feature = "candle-cuda"))]
pub fn ensure_driver() -> Result<()> {
    // SAFETY: only attempts to dlopen the candidate names and closes them.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(CudaOpError::LibraryMissing {
            library: "cuda",
            candidates: library_candidates("cuda"),
            hint:
                "install the NVIDIA driver or add the directory of libcuda.so.1 to LD_LIBRARY_PATH",
        })
    }
}

/// Linked NVRTC: present if the program started.
#[cfg(feature = "candle-cuda")]
pub fn ensure_nvrtc() -> Result<()> {
    Ok(())
}

/// Linked driver library: present if the program started.
#[cfg(feature = "candle-cuda")]
pub fn ensure_driver() -> Result<()> {
    Ok(())
}

/// Keeps memory freed on `stream`'s device in the device's default memory
/// pool instead of handing it back to the driver at every synchronisation
/// (the pool's release threshold becomes unbounded).
///
/// cudarc, and so candle, allocate stream-ordered from that pool. With the
/// driver's default threshold of 0, every large temporary (a `[N, V]`
/// gradient, candle's autograd accumulators) is mapped afresh after each
/// synchronisation, which costs more than the kernels that fill it. This is
/// the caching that PyTorch's allocator does by default. It is
/// process-wide for the device and never shrinks the pool: call it once,
/// when the process owns the GPU.
pub fn retain_freed_memory(stream: &Arc<CudaStream>) -> Result<()> {
    use cudarc::driver::{result as driver_result, sys as driver_sys};
    let ctx = stream.context();
    ctx.bind_to_thread()?;
    // SAFETY: the device comes from a live context; the attribute takes a
    // u64 (cuuint64_t) as documented for CU_MEMPOOL_ATTR_RELEASE_THRESHOLD.
    unsafe {
        let pool = driver_result::device::get_default_mem_pool(ctx.cu_device())?;
        let mut threshold: u64 = u64::MAX;
        driver_result::mem_pool::set_attribute(
            pool,
            driver_sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )?;
    }
    Ok(())
}

/// NVRTC version (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32)> {
    ensure_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: plain out-parameters.
    unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaOpError::Compile {
            arch: String::new(),
            message: format!("nvrtcVersion failed: {e:?}"),
        })?;
    Ok((major, minor))
}

/// The complete kernel source handed to NVRTC.
pub fn kernel_source() -> String {
    format!("{COMMON_SRC}\n{LOGPROB_SRC}\n{KL_SRC}")
}

/// Destroys an NVRTC program on every exit path.
struct Program(nvrtc_sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: created by create_program and destroyed only here. A failure
        // to free compiler memory is not worth a panic in drop.
        let _ = unsafe { nvrtc_result::destroy_program(self.0) };
    }
}

/// Compiles the kernels with NVRTC into a CUBIN for `arch` (e.g. `sm_90`).
/// Needs NVRTC but no GPU.
pub fn compile_cubin(arch: &str) -> Result<Vec<u8>> {
    compile_cubin_with(&kernel_source(), "cgpo_kernels.cu", arch)
}

/// Compiles any CUDA C++ source with NVRTC into a CUBIN for `arch`, with the
/// options used for the cgpo kernels (`--std=c++17`, no include path).
pub fn compile_cubin_with(source: &str, name: &str, arch: &str) -> Result<Vec<u8>> {
    ensure_nvrtc()?;
    let fail = |message: String| CudaOpError::Compile {
        arch: arch.to_string(),
        message,
    };
    let src = CString::new(source).map_err(|e| fail(e.to_string()))?;
    let name = CString::new(name).map_err(|e| fail(e.to_string()))?;
    let prog = Program(
        nvrtc_result::create_program(&src, Some(&name)).map_err(|e| fail(format!("{e:?}")))?,
    );
    let options = [
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
    ];
    // SAFETY: prog is a live program; options are plain strings.
    if let Err(e) = unsafe { nvrtc_result::compile_program(prog.0, &options) } {
        // SAFETY: as above.
        let log = unsafe { nvrtc_result::get_program_log(prog.0) }
            .map(|chars| c_chars_to_string(&chars))
            .unwrap_or_default();
        return Err(fail(format!("{e:?} with options {options:?}\n{log}")));
    }
    let mut size = 0usize;
    // SAFETY: prog compiled successfully; size is an out-parameter.
    unsafe { nvrtc_sys::nvrtcGetCUBINSize(prog.0, &mut size) }
        .result()
        .map_err(|e| fail(format!("nvrtcGetCUBINSize: {e:?}")))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: the buffer holds exactly the size NVRTC reported.
    unsafe { nvrtc_sys::nvrtcGetCUBIN(prog.0, cubin.as_mut_ptr() as *mut c_char) }
        .result()
        .map_err(|e| fail(format!("nvrtcGetCUBIN: {e:?}")))?;
    Ok(cubin)
}

fn c_chars_to_string(chars: &[c_char]) -> String {
    let bytes: Vec<u8> = chars
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Kernel handles indexed by [`DType`].
struct KernelSet([CudaFunction; 3]);

impl KernelSet {
    fn load(module: &Arc<cudarc::driver::CudaModule>, stem: &str) -> Result<Self> {
        let get = |suffix: &str| module.load_function(&format!("{stem}_{suffix}"));
        Ok(Self([get("f32")?, get("bf16")?, get("f16")?]))
    }

    fn get(&self, dtype: DType) -> &CudaFunction {
        &self.0[dtype.index()]
    }
}

/// The compiled kernels for one device, bound to one stream. Create once and
/// reuse: construction runs NVRTC (about a second).
pub struct CudaKernels {
    stream: Arc<CudaStream>,
    arch: String,
    logprob_fwd: KernelSet,
    logprob_bwd: KernelSet,
    kl_fwd: KernelSet,
    kl_bwd: KernelSet,
    /// Passed for an absent mask (the kernels then ignore it) so that every
    /// launch has a valid pointer.
    no_mask: CudaSlice<u8>,
}

impl CudaKernels {
    /// Compiles the kernels for the stream's device and loads them.
    pub fn new(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = stream.context().clone();
        let (major, minor) = ctx.compute_capability()?;
        let arch = format!("sm_{major}{minor}");
        let cubin = compile_cubin(&arch)?;
        let module = ctx.load_module(Ptx::from_binary(cubin))?;
        let no_mask = stream.alloc_zeros::<u8>(1)?;
        Ok(Self {
            logprob_fwd: KernelSet::load(&module, "logprob_fwd")?,
            logprob_bwd: KernelSet::load(&module, "logprob_bwd")?,
            kl_fwd: KernelSet::load(&module, "kl_fwd")?,
            kl_bwd: KernelSet::load(&module, "kl_bwd")?,
            stream,
            arch,
            no_mask,
        })
    }

    /// Opens device `ordinal` and uses its default stream.
    pub fn for_device(ordinal: usize) -> Result<Self> {
        ensure_driver()?;
        ensure_nvrtc()?;
        let ctx = CudaContext::new(ordinal)?;
        Self::new(ctx.default_stream())
    }

    /// The stream every kernel is launched on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The architecture the kernels were compiled for, e.g. `sm_90`.
    pub fn arch(&self) -> &str {
        &self.arch
    }

    fn launch_config(rows: usize) -> LaunchConfig {
        LaunchConfig {
            // Logits::checked bounds rows by i32::MAX.
            grid_dim: (rows as u32, 1, 1),
            block_dim: (BLOCK_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    fn mask_arg<'b>(
        &'b self,
        mask: Option<&'b CudaSlice<u8>>,
        rows: usize,
    ) -> Result<(&'b CudaSlice<u8>, i32)> {
        match mask {
            None => Ok((&self.no_mask, 0)),
            Some(m) if m.len() == rows => Ok((m, 1)),
            Some(m) => Err(CudaOpError::Shape(format!(
                "mask holds {} elements, expected one per row ({rows})",
                m.len()
            ))),
        }
    }

    fn check_len(what: &str, len: usize, rows: usize) -> Result<()> {
        if len == rows {
            Ok(())
        } else {
            Err(CudaOpError::Shape(format!(
                "{what} holds {len} elements, expected one per row ({rows})"
            )))
        }
    }

    /// Reads the out-of-range flag written by a launch (this synchronises the
    /// stream) and turns it into an error naming the first offending row.
    fn check_targets(
        &self,
        err: &CudaSlice<u32>,
        targets: &CudaSlice<u32>,
        vocab: usize,
    ) -> Result<()> {
        let flag = self.stream.clone_dtoh(err)?;
        let flag = flag.first().copied().unwrap_or(0);
        if flag == 0 {
            return Ok(());
        }
        let row = (u32::MAX - flag) as usize;
        let target = match targets.try_slice(row..row + 1) {
            Some(t) => self.stream.clone_dtoh(&t)?.first().copied(),
            None => None,
        }
        .unwrap_or(u32::MAX);
        Err(CudaOpError::TargetOutOfRange { target, vocab, row })
    }

    /// Forward log-probabilities of `targets` (length N) under `logits`.
    /// Rows with `mask[i] == 0` are not read and get 0. A target id >= V
    /// returns [`CudaOpError::TargetOutOfRange`] for the first such row.
    /// Checking the targets synchronises the stream; see
    /// [`Self::token_logprobs_fwd_deferred`] to check later instead.
    pub fn token_logprobs_fwd(
        &self,
        logits: Logits<'_>,
        targets: &CudaSlice<u32>,
        mask: Option<&CudaSlice<u8>>,
    ) -> Result<TokenLogprobs> {
        let (out, check) = self.token_logprobs_fwd_deferred(logits, targets, mask)?;
        self.finish_target_check(check, targets)?;
        Ok(out)
    }

    /// [`Self::token_logprobs_fwd`] without waiting for the kernel: the
    /// target check is left to [`Self::finish_target_check`], so several
    /// launches can be queued before one synchronisation. Until then, rows
    /// with an out-of-range target hold NaN.
    pub fn token_logprobs_fwd_deferred(
        &self,
        logits: Logits<'_>,
        targets: &CudaSlice<u32>,
        mask: Option<&CudaSlice<u8>>,
    ) -> Result<(TokenLogprobs, PendingTargetCheck)> {
        let (n, v) = (logits.rows, logits.vocab);
        Self::check_len("targets", targets.len(), n)?;
        let (mask, has_mask) = self.mask_arg(mask, n)?;
        // SAFETY: the kernel writes every row of logp and lse (value, 0 for a
        // masked row or NaN for a bad target) before anything reads them.
        let mut logp = unsafe { self.stream.alloc::<f32>(n) }?;
        let mut lse = unsafe { self.stream.alloc::<f32>(n) }?;
        let mut err = self.stream.alloc_zeros::<u32>(1)?;
        let (n_arg, v_arg) = (n as i64, v as i64);
        let mut args = self
            .stream
            .launch_builder(self.logprob_fwd.get(logits.dtype()));
        logits.push(&mut args);
        args.arg(targets)
            .arg(mask)
            .arg(&has_mask)
            .arg(&n_arg)
            .arg(&v_arg)
            .arg(&mut logp)
            .arg(&mut lse)
            .arg(&mut err);
        // SAFETY: argument order and types match logprob_fwd_* in
        // kernels/logprob.cu; lengths were checked above.
        unsafe { args.launch(Self::launch_config(n)) }?;
        Ok((
            TokenLogprobs { logp, lse },
            PendingTargetCheck { err, vocab: v },
        ))
    }

    /// Waits for the launch behind `check` and reports its first
    /// out-of-range target; `targets` must be the slice passed to it.
    pub fn finish_target_check(
        &self,
        check: PendingTargetCheck,
        targets: &CudaSlice<u32>,
    ) -> Result<()> {
        self.check_targets(&check.err, targets, check.vocab)
    }

    /// Gradient of `sum_i grad_out[i] * logp[i]` w.r.t. the logits, in the
    /// logits' dtype. `lse` is [`TokenLogprobs::lse`] from the forward pass.
    pub fn token_logprobs_bwd(
        &self,
        logits: Logits<'_>,
        targets: &CudaSlice<u32>,
        lse: &CudaSlice<f32>,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
    ) -> Result<LogitsBuf> {
        let mut grad = LogitsBuf::alloc(&self.stream, logits.dtype(), logits.rows * logits.vocab)?;
        self.token_logprobs_bwd_into(logits, targets, lse, grad_out, mask, &mut grad)?;
        Ok(grad)
    }

    /// [`Self::token_logprobs_bwd`] into a caller-provided buffer (same dtype
    /// and length as the logits), e.g. reused across steps.
    pub fn token_logprobs_bwd_into(
        &self,
        logits: Logits<'_>,
        targets: &CudaSlice<u32>,
        lse: &CudaSlice<f32>,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
        grad: &mut LogitsBuf,
    ) -> Result<()> {
        let check = self.token_logprobs_bwd_deferred(logits, targets, lse, grad_out, mask, grad)?;
        self.finish_target_check(check, targets)
    }

    /// [`Self::token_logprobs_bwd_into`] with the target check left to
    /// [`Self::finish_target_check`].
    pub fn token_logprobs_bwd_deferred(
        &self,
        logits: Logits<'_>,
        targets: &CudaSlice<u32>,
        lse: &CudaSlice<f32>,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
        grad: &mut LogitsBuf,
    ) -> Result<PendingTargetCheck> {
        self.token_logprobs_bwd_view(logits, targets, lse, grad_out, mask, grad.as_grad_out())
    }

    /// [`Self::token_logprobs_bwd_deferred`] into any [`GradOut`] view.
    pub fn token_logprobs_bwd_view(
        &self,
        logits: Logits<'_>,
        targets: &CudaSlice<u32>,
        lse: &CudaSlice<f32>,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
        mut grad: GradOut<'_>,
    ) -> Result<PendingTargetCheck> {
        let (n, v) = (logits.rows, logits.vocab);
        Self::check_len("targets", targets.len(), n)?;
        Self::check_len("lse", lse.len(), n)?;
        Self::check_len("grad_out", grad_out.len(), n)?;
        Self::check_grad(&grad, &logits)?;
        let (mask, has_mask) = self.mask_arg(mask, n)?;
        let mut err = self.stream.alloc_zeros::<u32>(1)?;
        let (n_arg, v_arg) = (n as i64, v as i64);
        let mut args = self
            .stream
            .launch_builder(self.logprob_bwd.get(logits.dtype()));
        logits.push(&mut args);
        args.arg(targets)
            .arg(lse)
            .arg(grad_out)
            .arg(mask)
            .arg(&has_mask)
            .arg(&n_arg)
            .arg(&v_arg);
        grad.push(&mut args);
        args.arg(&mut err);
        // SAFETY: argument order and types match logprob_bwd_* in
        // kernels/logprob.cu; lengths and dtypes were checked above.
        unsafe { args.launch(Self::launch_config(n)) }?;
        Ok(PendingTargetCheck { err, vocab: v })
    }

    fn check_grad(grad: &GradOut<'_>, logits: &Logits<'_>) -> Result<()> {
        if grad.dtype() != logits.dtype() || grad.len() != logits.rows * logits.vocab {
            return Err(CudaOpError::Shape(format!(
                "gradient buffer is {:?} x {}, expected {:?} x {}",
                grad.dtype(),
                grad.len(),
                logits.dtype(),
                logits.rows * logits.vocab
            )));
        }
        Ok(())
    }

    fn check_pair(policy: &Logits<'_>, reference: &Logits<'_>) -> Result<()> {
        if policy.dtype() != reference.dtype()
            || policy.rows != reference.rows
            || policy.vocab != reference.vocab
        {
            return Err(CudaOpError::Shape(format!(
                "policy logits are {:?} [{}, {}] but reference logits are {:?} [{}, {}]",
                policy.dtype(),
                policy.rows,
                policy.vocab,
                reference.dtype(),
                reference.rows,
                reference.vocab
            )));
        }
        Ok(())
    }

    /// Exact full-vocabulary KL(softmax(policy) || softmax(reference)) per
    /// row, in one pass over both tensors. Masked rows get 0.
    pub fn token_kl_fwd(
        &self,
        policy: Logits<'_>,
        reference: Logits<'_>,
        mask: Option<&CudaSlice<u8>>,
    ) -> Result<TokenKl> {
        Self::check_pair(&policy, &reference)?;
        let (n, v) = (policy.rows, policy.vocab);
        let (mask, has_mask) = self.mask_arg(mask, n)?;
        // SAFETY: the kernel writes every row of the three outputs (0 for a
        // masked row) before anything reads them.
        let mut kl = unsafe { self.stream.alloc::<f32>(n) }?;
        let mut lse_p = unsafe { self.stream.alloc::<f32>(n) }?;
        let mut lse_q = unsafe { self.stream.alloc::<f32>(n) }?;
        let (n_arg, v_arg) = (n as i64, v as i64);
        let mut args = self.stream.launch_builder(self.kl_fwd.get(policy.dtype()));
        policy.push(&mut args);
        reference.push(&mut args);
        args.arg(mask)
            .arg(&has_mask)
            .arg(&n_arg)
            .arg(&v_arg)
            .arg(&mut kl)
            .arg(&mut lse_p)
            .arg(&mut lse_q);
        // SAFETY: argument order and types match kl_fwd_* in kernels/kl.cu;
        // shapes were checked above.
        unsafe { args.launch(Self::launch_config(n)) }?;
        Ok(TokenKl { kl, lse_p, lse_q })
    }

    /// Gradient of `sum_i grad_out[i] * kl[i]` w.r.t. the policy logits, in
    /// their dtype; `fwd` comes from [`Self::token_kl_fwd`].
    pub fn token_kl_bwd(
        &self,
        policy: Logits<'_>,
        reference: Logits<'_>,
        fwd: &TokenKl,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
    ) -> Result<LogitsBuf> {
        let mut grad = LogitsBuf::alloc(&self.stream, policy.dtype(), policy.rows * policy.vocab)?;
        self.token_kl_bwd_into(policy, reference, fwd, grad_out, mask, &mut grad)?;
        Ok(grad)
    }

    /// [`Self::token_kl_bwd`] into a caller-provided buffer.
    pub fn token_kl_bwd_into(
        &self,
        policy: Logits<'_>,
        reference: Logits<'_>,
        fwd: &TokenKl,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
        grad: &mut LogitsBuf,
    ) -> Result<()> {
        self.token_kl_bwd_view(policy, reference, fwd, grad_out, mask, grad.as_grad_out())
    }

    /// [`Self::token_kl_bwd_into`] into any [`GradOut`] view.
    pub fn token_kl_bwd_view(
        &self,
        policy: Logits<'_>,
        reference: Logits<'_>,
        fwd: &TokenKl,
        grad_out: &CudaSlice<f32>,
        mask: Option<&CudaSlice<u8>>,
        mut grad: GradOut<'_>,
    ) -> Result<()> {
        Self::check_pair(&policy, &reference)?;
        let n = policy.rows;
        Self::check_len("kl", fwd.kl.len(), n)?;
        Self::check_len("lse_p", fwd.lse_p.len(), n)?;
        Self::check_len("lse_q", fwd.lse_q.len(), n)?;
        Self::check_len("grad_out", grad_out.len(), n)?;
        Self::check_grad(&grad, &policy)?;
        let (mask, has_mask) = self.mask_arg(mask, n)?;
        let (n_arg, v_arg) = (n as i64, policy.vocab as i64);
        let mut args = self.stream.launch_builder(self.kl_bwd.get(policy.dtype()));
        policy.push(&mut args);
        reference.push(&mut args);
        args.arg(&fwd.lse_p)
            .arg(&fwd.lse_q)
            .arg(&fwd.kl)
            .arg(grad_out)
            .arg(mask)
            .arg(&has_mask)
            .arg(&n_arg)
            .arg(&v_arg);
        grad.push(&mut args);
        // SAFETY: argument order and types match kl_bwd_* in kernels/kl.cu;
        // shapes and dtypes were checked above.
        unsafe { args.launch(Self::launch_config(n)) }?;
        Ok(())
    }
}
