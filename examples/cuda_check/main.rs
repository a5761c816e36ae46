//! Correctness and bandwidth check of the fused CUDA log-prob / KL kernels
//! (`cgpo::ops::cuda`) on a GPU machine.
//!
//! ```text
//! scripts/build-cuda.sh        # feature candle-cuda; or --features cuda alone
//! cuda_check [--json PATH] [--skip-bench] [--only-candle] [--compile-only [--arch sm_90]]
//! ```
//!
//! (a) every kernel, forward and backward, in f32, bf16 and f16, against a
//! naive f64 CPU reference (`cpu_reference_*`); (b) timings at the spec's
//! sizes with a device-to-device memcpy as the practical bandwidth
//! reference; (c) a table on stdout and JSON at `--json PATH`. Exits
//! non-zero if any correctness case fails. `--compile-only` runs NVRTC
//! without a GPU, which is how the sources are checked on a build machine.
//!
//! Built with `candle-cuda`, it then runs the same ops on candle CUDA
//! tensors through `cgpo::ops` against the CPU path, forward and backward
//! through candle's autograd ([`candle_route`]), and times them.
//!
//! NVRTC and libcuda are loaded at run time; if NVRTC is not found, add the
//! directory of `libnvrtc.so.*` to `LD_LIBRARY_PATH` (scripts/gpu-check.sh
//! does this).

#[cfg(feature = "candle-cuda")]
mod candle_route;

use std::process::ExitCode;
use std::sync::Arc;

use cgpo::ops::cuda::{
    self, bf16_bits_to_f32, f16_bits_to_f32, f32_to_bf16_bits, f32_to_f16_bits, CudaKernels,
    CudaOpError, DType, Logits, LogitsBuf,
};
use cudarc::driver::{
    sys::CUevent_flags, CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig,
    PushKernelArg,
};
use serde_json::{json, Value};

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    json: Option<String>,
    skip_bench: bool,
    only_candle: bool,
    compile_only: bool,
    arch: String,
}

fn parse_args() -> AnyResult<Args> {
    let mut args = Args {
        json: None,
        skip_bench: false,
        only_candle: false,
        compile_only: false,
        arch: "sm_90".to_string(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--json" => args.json = Some(it.next().ok_or("--json needs a path")?),
            "--arch" => args.arch = it.next().ok_or("--arch needs a value such as sm_90")?,
            "--skip-bench" => args.skip_bench = true,
            "--only-candle" => args.only_candle = true,
            "--compile-only" => args.compile_only = true,
            "-h" | "--help" => {
                println!("cuda_check [--json PATH] [--skip-bench] [--only-candle] [--compile-only [--arch sm_90]]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("cuda_check: FAILED (see the FAIL lines above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("cuda_check: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn run() -> AnyResult<bool> {
    let args = parse_args()?;
    println!("NVRTC candidates: {:?}", cuda::library_candidates("nvrtc"));
    println!("driver candidates: {:?}", cuda::library_candidates("cuda"));
    if let Ok(dirs) = std::env::var("LD_LIBRARY_PATH") {
        println!("LD_LIBRARY_PATH={dirs}");
    }
    cuda::ensure_nvrtc()?;
    let (maj, min) = cuda::nvrtc_version()?;
    println!("NVRTC {maj}.{min}");
    if args.compile_only {
        let cubin = cuda::compile_cubin(&args.arch)?;
        println!(
            "compiled the kernels for {}: {} bytes of CUBIN",
            args.arch,
            cubin.len()
        );
        return Ok(true);
    }
    cuda::ensure_driver()?;
    let ctx = CudaContext::new(0)?;
    let stream = ctx.default_stream();
    let kernels = CudaKernels::new(stream.clone())?;
    let device = ctx.name()?;
    println!(
        "device: {device} ({}), block = {} threads, grid = one block per row",
        kernels.arch(),
        cuda::BLOCK_THREADS
    );

    let (correct, mut all_ok) = if args.only_candle {
        (Vec::new(), true)
    } else {
        correctness(&kernels)?
    };
    let bench = if args.skip_bench || args.only_candle {
        Vec::new()
    } else {
        bench(&kernels)?
    };
    #[cfg(feature = "candle-cuda")]
    let candle = {
        let (section, ok) = candle_route::run(args.skip_bench)?;
        all_ok &= ok;
        section
    };
    #[cfg(not(feature = "candle-cuda"))]
    let candle = Value::Null;

    if let Some(path) = &args.json {
        let doc = json!({
            "device": device,
            "arch": kernels.arch(),
            "nvrtc": format!("{maj}.{min}"),
            "block_threads": cuda::BLOCK_THREADS,
            "correctness_pass": all_ok,
            "correctness": correct,
            "bench": bench,
            "candle_route": candle,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        println!("wrote {path}");
    }
    Ok(all_ok)
}

// ---------------------------------------------------------------------------
// Naive f64 CPU reference (docs/algorithm.md §6).

fn row_lse(row: &[f32]) -> f64 {
    let m = row
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(f64::from(x)));
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + row
        .iter()
        .map(|&x| (f64::from(x) - m).exp())
        .sum::<f64>()
        .ln()
}

fn masked(mask: Option<&[u8]>, i: usize) -> bool {
    mask.is_some_and(|m| m[i] == 0)
}

/// (logp, kl) per row from the crate's fused CPU ops on the same (rounded)
/// inputs; `None` where the CPU path rejects the case (an out-of-range target).
fn cpu_fused(
    zp: &[f32],
    zq: &[f32],
    n: usize,
    v: usize,
    y: &[u32],
    mask: Option<&[u8]>,
) -> Option<(Vec<f64>, Vec<f64>)> {
    use candle_core::{Device, Tensor};
    let dev = Device::Cpu;
    let p = Tensor::from_vec(zp.to_vec(), (n, v), &dev).ok()?;
    let q = Tensor::from_vec(zq.to_vec(), (n, v), &dev).ok()?;
    let t = Tensor::new(y.to_vec(), &dev).ok()?;
    let m = match mask {
        Some(m) => Some(Tensor::new(m.to_vec(), &dev).ok()?),
        None => None,
    };
    let lp = cgpo::ops::token_logprobs(&p, &t, m.as_ref())
        .ok()?
        .to_vec1::<f32>()
        .ok()?;
    let kl = cgpo::ops::token_kl(&p, &q, m.as_ref())
        .ok()?
        .to_vec1::<f32>()
        .ok()?;
    Some((
        lp.into_iter().map(f64::from).collect(),
        kl.into_iter().map(f64::from).collect(),
    ))
}

/// (logp, lse) per row.
fn cpu_reference_logprob_fwd(
    z: &[f32],
    n: usize,
    v: usize,
    y: &[u32],
    mask: Option<&[u8]>,
) -> (Vec<f64>, Vec<f64>) {
    (0..n)
        .map(|i| {
            if masked(mask, i) {
                return (0.0, 0.0);
            }
            let row = &z[i * v..(i + 1) * v];
            let lse = row_lse(row);
            (f64::from(row[y[i] as usize]) - lse, lse)
        })
        .unzip()
}

fn cpu_reference_logprob_bwd(
    z: &[f32],
    n: usize,
    v: usize,
    y: &[u32],
    g: &[f32],
    mask: Option<&[u8]>,
) -> Vec<f64> {
    let mut out = vec![0.0; n * v];
    for i in 0..n {
        if masked(mask, i) {
            continue;
        }
        let row = &z[i * v..(i + 1) * v];
        let lse = row_lse(row);
        for (j, &x) in row.iter().enumerate() {
            let onehot = if j == y[i] as usize { 1.0 } else { 0.0 };
            out[i * v + j] = f64::from(g[i]) * (onehot - (f64::from(x) - lse).exp());
        }
    }
    out
}

/// (kl, lse_p, lse_q) per row.
fn cpu_reference_kl_fwd(
    zp: &[f32],
    zq: &[f32],
    n: usize,
    v: usize,
    mask: Option<&[u8]>,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut kl = vec![0.0; n];
    let mut lp = vec![0.0; n];
    let mut lq = vec![0.0; n];
    for i in 0..n {
        if masked(mask, i) {
            continue;
        }
        let (p, q) = (&zp[i * v..(i + 1) * v], &zq[i * v..(i + 1) * v]);
        lp[i] = row_lse(p);
        lq[i] = row_lse(q);
        kl[i] = p
            .iter()
            .zip(q)
            .filter(|(&a, _)| a != f32::NEG_INFINITY)
            .map(|(&a, &b)| {
                let logp = f64::from(a) - lp[i];
                logp.exp() * (logp - (f64::from(b) - lq[i]))
            })
            .sum();
    }
    (kl, lp, lq)
}

fn cpu_reference_kl_bwd(
    zp: &[f32],
    zq: &[f32],
    n: usize,
    v: usize,
    g: &[f32],
    mask: Option<&[u8]>,
) -> Vec<f64> {
    let (kl, lp, lq) = cpu_reference_kl_fwd(zp, zq, n, v, mask);
    let mut out = vec![0.0; n * v];
    for i in 0..n {
        if masked(mask, i) {
            continue;
        }
        for j in 0..v {
            let (a, b) = (zp[i * v + j], zq[i * v + j]);
            if a == f32::NEG_INFINITY {
                continue;
            }
            let logp = f64::from(a) - lp[i];
            let logq = f64::from(b) - lq[i];
            out[i * v + j] = f64::from(g[i]) * logp.exp() * ((logp - logq) - kl[i]);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Test data.

/// SplitMix64: reproducible without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
    fn below(&mut self, k: usize) -> usize {
        (self.next_u64() % k as u64) as usize
    }
}

/// Rounds to the dtype and back so that the reference sees exactly what the
/// kernel reads.
fn round_to(dtype: DType, x: f32) -> f32 {
    match dtype {
        DType::F32 => x,
        DType::Bf16 => bf16_bits_to_f32(f32_to_bf16_bits(x)),
        DType::F16 => f16_bits_to_f32(f32_to_f16_bits(x)),
    }
}

struct Case {
    name: String,
    n: usize,
    v: usize,
    zp: Vec<f32>,
    zq: Vec<f32>,
    y: Vec<u32>,
    g: Vec<f32>,
    mask: Option<Vec<u8>>,
    /// Logits around ±1e4: the f32-rounded saved lse limits the backward
    /// passes to ~1e-3 relative accuracy.
    extreme: bool,
    /// The KL is +inf somewhere, so its gradient is not meaningful.
    skip_kl_bwd: bool,
}

#[derive(Clone, Copy)]
enum Fill {
    Normal(f64),
    Equal(f32, f32),
    Extreme,
    NegInf,
    InfKl,
}

fn make_case(name: &str, n: usize, v: usize, fill: Fill, with_mask: bool, seed: u64) -> Case {
    let mut rng = Rng(seed);
    let mut zp = vec![0f32; n * v];
    let mut zq = vec![0f32; n * v];
    for k in 0..n * v {
        let (a, b) = match fill {
            Fill::Normal(s) => {
                let a = rng.normal() * s;
                (a, a + 0.5 * rng.normal())
            }
            Fill::Equal(a, b) => (f64::from(a), f64::from(b)),
            Fill::Extreme => {
                let pick = |r: &mut Rng| match r.below(4) {
                    0 => 1e4,
                    1 => -1e4,
                    _ => (r.uniform() * 2.0 - 1.0) * 1e4,
                };
                (pick(&mut rng), pick(&mut rng))
            }
            Fill::NegInf | Fill::InfKl => (rng.normal() * 2.0, rng.normal() * 2.0),
        };
        zp[k] = a as f32;
        zq[k] = b as f32;
    }
    let mut y: Vec<u32> = (0..n).map(|_| rng.below(v) as u32).collect();
    match fill {
        Fill::NegInf => {
            // Every third column is -inf in both tensors, every fifth only in
            // the policy; row 0's target sits on a -inf column.
            for i in 0..n {
                for j in 0..v {
                    if j % 3 == 1 {
                        zp[i * v + j] = f32::NEG_INFINITY;
                        zq[i * v + j] = f32::NEG_INFINITY;
                    } else if j % 5 == 2 {
                        zp[i * v + j] = f32::NEG_INFINITY;
                    }
                }
            }
            if v > 1 {
                y[0] = 1;
            }
        }
        Fill::InfKl => {
            // The reference rules out a token the policy allows: KL = +inf.
            for i in 0..n {
                zq[i * v + (i * 7) % v] = f32::NEG_INFINITY;
            }
        }
        _ => {}
    }
    let g = (0..n).map(|_| (rng.uniform() * 4.0 - 2.0) as f32).collect();
    let mask = with_mask.then(|| (0..n).map(|i| u8::from(i % 3 != 2)).collect());
    Case {
        name: name.to_string(),
        n,
        v,
        zp,
        zq,
        y,
        g,
        mask,
        extreme: matches!(fill, Fill::Extreme),
        skip_kl_bwd: matches!(fill, Fill::InfKl),
    }
}

fn cases() -> Vec<Case> {
    vec![
        make_case("odd V=1003, masked", 6, 1003, Fill::Normal(3.0), true, 1),
        make_case("V=4099", 3, 4099, Fill::Normal(2.0), false, 2),
        make_case("N=1 V=50001", 1, 50001, Fill::Normal(4.0), false, 3),
        make_case("N=64 V=32000", 64, 32000, Fill::Normal(3.0), true, 4),
        make_case("V=1", 3, 1, Fill::Normal(1.0), false, 5),
        make_case("V=3", 4, 3, Fill::Normal(1.0), true, 6),
        make_case("V=7", 5, 7, Fill::Normal(1.0), false, 7),
        make_case("V=300 (< 256 x vec)", 9, 300, Fill::Normal(1.0), false, 8),
        make_case("extreme +-1e4", 5, 2049, Fill::Extreme, true, 9),
        make_case("all-equal rows", 4, 1001, Fill::Equal(3.0, -1.5), false, 10),
        make_case("-inf entries", 4, 1001, Fill::NegInf, true, 11),
        make_case("KL = +inf", 3, 517, Fill::InfKl, false, 12),
    ]
}

// ---------------------------------------------------------------------------
// Comparison.

#[derive(Clone, Copy)]
struct Tol {
    atol: f64,
    rtol: f64,
}

struct Check {
    rows: Vec<Value>,
    ok: bool,
}

impl Check {
    fn compare(
        &mut self,
        case: &str,
        dtype: DType,
        output: &str,
        got: &[f32],
        want: &[f64],
        tol: Tol,
    ) {
        let mut max_abs = 0f64;
        let mut max_rel = 0f64;
        let mut bad = 0usize;
        let mut first_bad = None;
        if got.len() != want.len() {
            bad = usize::MAX;
        } else {
            for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
                let g = f64::from(g);
                let pass = if w.is_finite() {
                    let abs = (g - w).abs();
                    if abs.is_finite() {
                        max_abs = max_abs.max(abs);
                        if w.abs() > tol.atol {
                            max_rel = max_rel.max(abs / w.abs());
                        }
                    }
                    abs <= tol.atol + tol.rtol * w.abs()
                } else {
                    (w.is_nan() && g.is_nan()) || g == w
                };
                if !pass {
                    bad += 1;
                    first_bad.get_or_insert((k, g, w));
                }
            }
        }
        let pass = bad == 0;
        self.ok &= pass;
        let verdict = if pass { "PASS" } else { "FAIL" };
        println!(
            "{verdict}  {case:<22} {:<5} {output:<12} max_abs {max_abs:9.3e}  max_rel {max_rel:9.3e}  (atol {:.0e}, rtol {:.0e}){}",
            dtype.suffix(),
            tol.atol,
            tol.rtol,
            match first_bad {
                Some((k, g, w)) => format!("  {bad} bad, first at {k}: got {g} want {w}"),
                None if bad > 0 => "  length mismatch".to_string(),
                None => String::new(),
            }
        );
        self.rows.push(json!({
            "case": case, "dtype": dtype.suffix(), "output": output,
            "max_abs": max_abs, "max_rel": max_rel, "atol": tol.atol, "rtol": tol.rtol,
            "mismatches": bad, "pass": pass,
        }));
    }

    fn expect(&mut self, case: &str, what: &str, pass: bool, detail: String) {
        self.ok &= pass;
        println!(
            "{}  {case:<22} {what}: {detail}",
            if pass { "PASS" } else { "FAIL" }
        );
        self.rows
            .push(json!({ "case": case, "output": what, "detail": detail, "pass": pass }));
    }
}

enum DevLogits {
    F32(CudaSlice<f32>),
    Half(DType, CudaSlice<u16>),
}

impl DevLogits {
    fn upload(stream: &Arc<CudaStream>, dtype: DType, values: &[f32]) -> AnyResult<Self> {
        Ok(match dtype {
            DType::F32 => DevLogits::F32(stream.clone_htod(values)?),
            DType::Bf16 => {
                let bits: Vec<u16> = values.iter().map(|&x| f32_to_bf16_bits(x)).collect();
                DevLogits::Half(dtype, stream.clone_htod(&bits)?)
            }
            DType::F16 => {
                let bits: Vec<u16> = values.iter().map(|&x| f32_to_f16_bits(x)).collect();
                DevLogits::Half(dtype, stream.clone_htod(&bits)?)
            }
        })
    }

    fn logits(&self, n: usize, v: usize) -> Result<Logits<'_>, CudaOpError> {
        match self {
            DevLogits::F32(s) => Logits::f32(s, n, v),
            DevLogits::Half(DType::Bf16, s) => Logits::bf16(s, n, v),
            DevLogits::Half(_, s) => Logits::f16(s, n, v),
        }
    }
}

fn grad_tol(dtype: DType, extreme: bool) -> Tol {
    let base = match dtype {
        DType::F32 => Tol {
            atol: 2e-6,
            rtol: 2e-4,
        },
        DType::Bf16 => Tol {
            atol: 1e-5,
            rtol: 1.6e-2,
        },
        DType::F16 => Tol {
            atol: 2e-6,
            rtol: 3e-3,
        },
    };
    if extreme {
        Tol {
            atol: base.atol.max(4e-3),
            rtol: base.rtol.max(4e-3),
        }
    } else {
        base
    }
}

fn run_case(k: &CudaKernels, case: &Case, dtype: DType, check: &mut Check) -> AnyResult<()> {
    let stream = k.stream();
    let (n, v) = (case.n, case.v);
    let zp: Vec<f32> = case.zp.iter().map(|&x| round_to(dtype, x)).collect();
    let zq: Vec<f32> = case.zq.iter().map(|&x| round_to(dtype, x)).collect();
    let mask = case.mask.as_deref();
    let dp = DevLogits::upload(stream, dtype, &zp)?;
    let dq = DevLogits::upload(stream, dtype, &zq)?;
    let dy = stream.clone_htod(&case.y)?;
    let dg = stream.clone_htod(&case.g)?;
    let dmask = match mask {
        Some(m) => Some(stream.clone_htod(m)?),
        None => None,
    };
    let (lp, lq) = (dp.logits(n, v)?, dq.logits(n, v)?);
    let name = case.name.as_str();
    // Per-row outputs are f32 from an f64 finish whatever the input dtype.
    let row_tol = Tol {
        atol: 1e-4,
        rtol: 2e-5,
    };

    let fwd = k.token_logprobs_fwd(lp, &dy, dmask.as_ref())?;
    let (want_logp, want_lse) = cpu_reference_logprob_fwd(&zp, n, v, &case.y, mask);
    check.compare(
        name,
        dtype,
        "logp",
        &stream.clone_dtoh(&fwd.logp)?,
        &want_logp,
        row_tol,
    );
    check.compare(
        name,
        dtype,
        "lse",
        &stream.clone_dtoh(&fwd.lse)?,
        &want_lse,
        row_tol,
    );

    let grad = k.token_logprobs_bwd(lp, &dy, &fwd.lse, &dg, dmask.as_ref())?;
    let want = cpu_reference_logprob_bwd(&zp, n, v, &case.y, &case.g, mask);
    check.compare(
        name,
        dtype,
        "logp grad",
        &grad.to_host_f32(stream)?,
        &want,
        grad_tol(dtype, case.extreme),
    );

    let kl = k.token_kl_fwd(lp, lq, dmask.as_ref())?;
    let (want_kl, want_lp, want_lq) = cpu_reference_kl_fwd(&zp, &zq, n, v, mask);
    let kl_tol = if case.extreme {
        Tol {
            atol: 1e-2,
            rtol: 1e-5,
        }
    } else {
        Tol {
            atol: 1e-4,
            rtol: 1e-4,
        }
    };
    check.compare(
        name,
        dtype,
        "kl",
        &stream.clone_dtoh(&kl.kl)?,
        &want_kl,
        kl_tol,
    );
    // The same outputs against the crate's fused CPU path (cgpo::ops).
    if let Some((cpu_logp, cpu_kl)) = cpu_fused(&zp, &zq, n, v, &case.y, mask) {
        check.compare(
            name,
            dtype,
            "logp vs cpu ops",
            &stream.clone_dtoh(&fwd.logp)?,
            &cpu_logp,
            row_tol,
        );
        check.compare(
            name,
            dtype,
            "kl vs cpu ops",
            &stream.clone_dtoh(&kl.kl)?,
            &cpu_kl,
            kl_tol,
        );
    }
    check.compare(
        name,
        dtype,
        "lse_p",
        &stream.clone_dtoh(&kl.lse_p)?,
        &want_lp,
        row_tol,
    );
    check.compare(
        name,
        dtype,
        "lse_q",
        &stream.clone_dtoh(&kl.lse_q)?,
        &want_lq,
        row_tol,
    );

    if !case.skip_kl_bwd {
        let grad = k.token_kl_bwd(lp, lq, &kl, &dg, dmask.as_ref())?;
        let want = cpu_reference_kl_bwd(&zp, &zq, n, v, &case.g, mask);
        check.compare(
            name,
            dtype,
            "kl grad",
            &grad.to_host_f32(stream)?,
            &want,
            grad_tol(dtype, case.extreme),
        );
    }
    Ok(())
}

fn out_of_range(k: &CudaKernels, dtype: DType, check: &mut Check) -> AnyResult<()> {
    let stream = k.stream();
    let (n, v) = (6usize, 1003usize);
    let case = make_case("out-of-range target", n, v, Fill::Normal(1.0), false, 13);
    let mut y = case.y.clone();
    y[2] = v as u32;
    y[4] = v as u32 + 5;
    let dp = DevLogits::upload(stream, dtype, &case.zp)?;
    let dy = stream.clone_htod(&y)?;
    let dg = stream.clone_htod(&case.g)?;
    let lp = dp.logits(n, v)?;
    let expected = format!("target id {v} out of range for vocabulary {v} at row 2");
    let verdict = |r: Result<String, CudaOpError>| match r {
        Err(CudaOpError::TargetOutOfRange { target, vocab, row }) => {
            let pass = target == v as u32 && vocab == v && row == 2;
            (
                pass,
                format!(
                    "error: target id {target} out of range for vocabulary {vocab} at row {row}"
                ),
            )
        }
        Err(e) => (false, format!("unexpected error {e}")),
        Ok(s) => (false, format!("no error ({s})")),
    };
    let fwd = k
        .token_logprobs_fwd(lp, &dy, None)
        .map(|_| "fwd returned".to_string());
    let (pass, detail) = verdict(fwd);
    check.expect(
        &format!("{} {}", case.name, dtype.suffix()),
        &format!("fwd, expect \"{expected}\""),
        pass,
        detail,
    );

    let lse = stream.clone_htod(&vec![0f32; n])?;
    let bwd = k
        .token_logprobs_bwd(lp, &dy, &lse, &dg, None)
        .map(|_| "bwd returned".to_string());
    let (pass, detail) = verdict(bwd);
    check.expect(
        &format!("{} {}", case.name, dtype.suffix()),
        "bwd",
        pass,
        detail,
    );

    // The bad rows must hold NaN and the good rows real values.
    let (out, pending) = k.token_logprobs_fwd_deferred(lp, &dy, None)?;
    let logp = stream.clone_dtoh(&out.logp)?;
    let pass = logp
        .iter()
        .enumerate()
        .all(|(i, x)| x.is_nan() == (i == 2 || i == 4));
    check.expect(
        &format!("{} {}", case.name, dtype.suffix()),
        "NaN rows",
        pass,
        format!("{logp:?}"),
    );
    let again = k
        .finish_target_check(pending, &dy)
        .map(|_| "deferred check returned".to_string());
    let (pass, detail) = verdict(again);
    check.expect(
        &format!("{} {}", case.name, dtype.suffix()),
        "deferred check",
        pass,
        detail,
    );

    let short = stream.clone_htod(&y[..n - 1])?;
    let pass = matches!(
        k.token_logprobs_fwd(lp, &short, None),
        Err(CudaOpError::Shape(_))
    );
    check.expect(
        &format!("{} {}", case.name, dtype.suffix()),
        "short targets",
        pass,
        "shape error before launch".into(),
    );
    Ok(())
}

fn correctness(k: &CudaKernels) -> AnyResult<(Vec<Value>, bool)> {
    println!("\n== correctness against the f64 CPU reference ==");
    let mut check = Check {
        rows: Vec::new(),
        ok: true,
    };
    for case in cases() {
        for dtype in [DType::F32, DType::Bf16, DType::F16] {
            if let Err(e) = run_case(k, &case, dtype, &mut check) {
                check.expect(&case.name, dtype.suffix(), false, format!("error: {e}"));
            }
        }
    }
    for dtype in [DType::F32, DType::Bf16] {
        if let Err(e) = out_of_range(k, dtype, &mut check) {
            check.expect(
                "out-of-range target",
                dtype.suffix(),
                false,
                format!("error: {e}"),
            );
        }
    }
    let failed = check.rows.iter().filter(|r| r["pass"] == false).count();
    println!("correctness: {} checks, {failed} failed", check.rows.len());
    Ok((check.rows, check.ok))
}

// ---------------------------------------------------------------------------
// Bandwidth.

const FILL_SRC: &str = r#"
typedef unsigned int u32;
typedef long long i64;
__device__ __forceinline__ u32 mix(u32 x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}
// Roughly normal logits (sum of four uniforms) with standard deviation ~scale.
__device__ __forceinline__ float logit(i64 k, u32 seed, float scale) {
    u32 h = mix((u32)k ^ mix((u32)(k >> 32) + seed));
    float s = 0.f;
    for (int r = 0; r < 4; ++r) { h = mix(h + 0x9e3779b9U); s += (float)(h >> 8) * (1.0f / 16777216.0f); }
    return (s - 2.0f) * 1.7320508f * scale;
}
extern "C" __global__ void fill_f32(float* out, i64 n, u32 seed, float scale) {
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x)
        out[k] = logit(k, seed, scale);
}
extern "C" __global__ void fill_bf16(unsigned short* out, i64 n, u32 seed, float scale) {
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x)
        out[k] = (unsigned short)(__float_as_uint(logit(k, seed, scale)) >> 16);
}
extern "C" __global__ void fill_u32(u32* out, i64 n, u32 seed, u32 modulo) {
    for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x)
        out[k] = mix((u32)k + seed) % modulo;
}
"#;

struct Filler {
    f32: CudaFunction,
    bf16: CudaFunction,
    u32: CudaFunction,
}

const FILL_CFG: LaunchConfig = LaunchConfig {
    grid_dim: (4096, 1, 1),
    block_dim: (256, 1, 1),
    shared_mem_bytes: 0,
};

impl Filler {
    fn new(k: &CudaKernels) -> AnyResult<Self> {
        let cubin = cuda::compile_cubin_with(FILL_SRC, "fill.cu", k.arch())?;
        let module = k
            .stream()
            .context()
            .load_module(cudarc::nvrtc::Ptx::from_binary(cubin))?;
        Ok(Self {
            f32: module.load_function("fill_f32")?,
            bf16: module.load_function("fill_bf16")?,
            u32: module.load_function("fill_u32")?,
        })
    }

    fn logits(
        &self,
        s: &Arc<CudaStream>,
        dtype: DType,
        len: usize,
        seed: u32,
    ) -> AnyResult<LogitsBuf> {
        let n = len as i64;
        let scale = 3.0f32;
        let mut buf = match dtype {
            DType::F32 => LogitsBuf::F32(unsafe { s.alloc::<f32>(len) }?),
            _ => LogitsBuf::Bf16(unsafe { s.alloc::<u16>(len) }?),
        };
        match &mut buf {
            LogitsBuf::F32(b) => {
                let mut a = s.launch_builder(&self.f32);
                a.arg(b).arg(&n).arg(&seed).arg(&scale);
                // SAFETY: matches fill_f32(float*, i64, u32, float).
                unsafe { a.launch(FILL_CFG) }?;
            }
            LogitsBuf::Bf16(b) | LogitsBuf::F16(b) => {
                let mut a = s.launch_builder(&self.bf16);
                a.arg(b).arg(&n).arg(&seed).arg(&scale);
                // SAFETY: matches fill_bf16(unsigned short*, i64, u32, float).
                unsafe { a.launch(FILL_CFG) }?;
            }
        }
        Ok(buf)
    }

    fn targets(&self, s: &Arc<CudaStream>, n: usize, v: usize) -> AnyResult<CudaSlice<u32>> {
        let mut out = unsafe { s.alloc::<u32>(n) }?;
        let (len, seed, modulo) = (n as i64, 7u32, v as u32);
        let mut a = s.launch_builder(&self.u32);
        a.arg(&mut out).arg(&len).arg(&seed).arg(&modulo);
        // SAFETY: matches fill_u32(u32*, i64, u32, u32).
        unsafe { a.launch(FILL_CFG) }?;
        Ok(out)
    }
}

/// Mean milliseconds per call of `f`, timed with CUDA events after warm-up;
/// about 150 ms of work per measurement, at least 5 calls.
fn time_ms(
    stream: &Arc<CudaStream>,
    mut f: impl FnMut() -> AnyResult<()>,
) -> AnyResult<(f64, usize)> {
    let ctx = stream.context();
    let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    for _ in 0..2 {
        f()?;
    }
    stream.synchronize()?;
    start.record(stream)?;
    f()?;
    end.record(stream)?;
    end.synchronize()?;
    let once = f64::from(start.elapsed_ms(&end)?).max(1e-3);
    let iters = ((150.0 / once) as usize).clamp(5, 500);
    start.record(stream)?;
    for _ in 0..iters {
        f()?;
    }
    end.record(stream)?;
    end.synchronize()?;
    Ok((f64::from(start.elapsed_ms(&end)?) / iters as f64, iters))
}

struct Row {
    op: &'static str,
    dtype: DType,
    n: usize,
    v: usize,
    ms: f64,
    iters: usize,
    bytes: f64,
    memcpy_gbps: f64,
}

impl Row {
    fn gbps(&self) -> f64 {
        self.bytes / (self.ms * 1e-3) / 1e9
    }
    fn print(&self) {
        println!(
            "{:<24} {:<5} {:>5} {:>7} {:>10.4} {:>9.1} {:>9.1} {:>6.1}% {:>5}",
            self.op,
            self.dtype.suffix(),
            self.n,
            self.v,
            self.ms,
            self.gbps(),
            self.memcpy_gbps,
            100.0 * self.gbps() / self.memcpy_gbps,
            self.iters
        );
    }
    fn json(&self) -> Value {
        json!({
            "op": self.op, "dtype": self.dtype.suffix(), "n": self.n, "v": self.v,
            "ms": self.ms, "iters": self.iters, "bytes": self.bytes, "gbps": self.gbps(),
            "memcpy_gbps": self.memcpy_gbps, "pct_of_memcpy": 100.0 * self.gbps() / self.memcpy_gbps,
        })
    }
}

fn bench_config(
    k: &CudaKernels,
    fill: &Filler,
    dtype: DType,
    n: usize,
    v: usize,
    full: bool,
) -> AnyResult<Vec<Row>> {
    let s = k.stream();
    let len = n * v;
    let tensor = (len * dtype.size_bytes()) as f64;
    let zp = fill.logits(s, dtype, len, 1)?;
    let y = fill.targets(s, n, v)?;
    let g = s.clone_htod(&vec![1f32; n])?;
    let lp = zp.as_logits(n, v)?;

    // Practical bandwidth: a device-to-device copy of one logits tensor,
    // counted as read + write.
    let mut dst = LogitsBuf::alloc(s, dtype, len)?;
    let (copy_ms, _) = time_ms(s, || {
        match (&zp, &mut dst) {
            (LogitsBuf::F32(a), LogitsBuf::F32(b)) => s.memcpy_dtod(a, b)?,
            (LogitsBuf::Bf16(a), LogitsBuf::Bf16(b)) => s.memcpy_dtod(a, b)?,
            _ => return Err("dtype mismatch in memcpy".into()),
        }
        Ok(())
    })?;
    let memcpy_gbps = 2.0 * tensor / (copy_ms * 1e-3) / 1e9;
    let row = |op, ms, iters, reads_writes: f64| Row {
        op,
        dtype,
        n,
        v,
        ms,
        iters,
        bytes: reads_writes * tensor,
        memcpy_gbps,
    };
    let mut rows = Vec::new();

    // Timed with the target check deferred to the end, so no per-call
    // host synchronisation sits between the launches.
    let (ms, it) = time_ms(s, || {
        let (_out, check) = k.token_logprobs_fwd_deferred(lp, &y, None)?;
        k.finish_target_check(check, &y)?;
        Ok(())
    })?;
    rows.push(row("logprob fwd (checked)", ms, it, 1.0));
    let mut pending = Vec::new();
    let (ms, it) = time_ms(s, || {
        let (_out, check) = k.token_logprobs_fwd_deferred(lp, &y, None)?;
        pending.push(check);
        Ok(())
    })?;
    for check in pending.drain(..) {
        k.finish_target_check(check, &y)?;
    }
    rows.push(row("logprob fwd", ms, it, 1.0));

    let mut grad = LogitsBuf::alloc(s, dtype, len)?;
    let (ms, it) = time_ms(s, || {
        let (out, c1) = k.token_logprobs_fwd_deferred(lp, &y, None)?;
        let c2 = k.token_logprobs_bwd_deferred(lp, &y, &out.lse, &g, None, &mut grad)?;
        pending.push(c1);
        pending.push(c2);
        Ok(())
    })?;
    for check in pending.drain(..) {
        k.finish_target_check(check, &y)?;
    }
    rows.push(row("logprob fwd+bwd", ms, it, 3.0));

    if full {
        let zq = fill.logits(s, dtype, len, 2)?;
        let lq = zq.as_logits(n, v)?;
        let (ms, it) = time_ms(s, || {
            k.token_kl_fwd(lp, lq, None)?;
            Ok(())
        })?;
        rows.push(row("kl fwd", ms, it, 2.0));
        let (ms, it) = time_ms(s, || {
            let out = k.token_kl_fwd(lp, lq, None)?;
            k.token_kl_bwd_into(lp, lq, &out, &g, None, &mut grad)?;
            Ok(())
        })?;
        rows.push(row("kl fwd+bwd", ms, it, 5.0));
    }
    s.synchronize()?;
    Ok(rows)
}

fn bench(k: &CudaKernels) -> AnyResult<Vec<Value>> {
    println!("\n== bandwidth (CUDA events; GB/s = logits bytes moved / time; memcpy = D2D copy read+write) ==");
    println!("fwd reads the logits once; fwd+bwd reads them twice and writes the gradient; kl fwd reads two tensors; kl fwd+bwd reads four and writes one");
    println!(
        "{:<24} {:<5} {:>5} {:>7} {:>10} {:>9} {:>9} {:>7} {:>5}",
        "op", "dtype", "N", "V", "ms", "GB/s", "memcpy", "% copy", "iters"
    );
    let fill = Filler::new(k)?;
    let mut out = Vec::new();
    let mut configs: Vec<(DType, usize, usize, bool)> = Vec::new();
    for v in [49_152usize, 151_936] {
        for n in [1024usize, 4096, 8192] {
            configs.push((DType::F32, n, v, true));
        }
    }
    configs.push((DType::Bf16, 8192, 151_936, false));
    for (dtype, n, v, full) in configs {
        match bench_config(k, &fill, dtype, n, v, full) {
            Ok(rows) => {
                for r in rows {
                    r.print();
                    out.push(r.json());
                }
            }
            Err(e) => {
                println!("bench {} N={n} V={v} failed: {e}", dtype.suffix());
                out.push(
                    json!({ "dtype": dtype.suffix(), "n": n, "v": v, "error": e.to_string() }),
                );
            }
        }
    }
    Ok(out)
}
