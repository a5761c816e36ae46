//! The fused ops on candle CUDA tensors (feature `candle-cuda`): the public
//! `cgpo::ops` functions on a CUDA device against the same functions on the
//! CPU, forward and backward through candle's autograd, in f32, bf16 and
//! f16; then timings through candle at the spec's sizes next to candle's
//! composed ops on the same device.

use std::time::Instant;

use candle_core::{DType as CDType, Device, Tensor, Var};
use cgpo::ops::{
    naive, retain_freed_device_memory, token_kl, token_logprobs, token_logprobs_and_grad,
};
use serde_json::{json, Value};

use crate::AnyResult;

struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 16.0 - 8.0
    }
}

fn host(n: usize, v: usize, seed: u64, extreme: bool) -> Vec<f32> {
    let mut r = Lcg(seed);
    (0..n * v)
        .map(|i| {
            let x = r.next();
            if extreme && i % 97 == 0 {
                if x > 0.0 {
                    1e4
                } else {
                    -1e4
                }
            } else if extreme && i % 101 == 0 {
                f32::NEG_INFINITY
            } else {
                x
            }
        })
        .collect()
}

/// Largest |a - b| / (1 + |b|), with equal non-finite values counted as 0.
fn max_rel(a: &Tensor, b: &Tensor) -> AnyResult<f32> {
    let a = a
        .to_device(&Device::Cpu)?
        .to_dtype(CDType::F32)?
        .flatten_all()?;
    let b = b
        .to_device(&Device::Cpu)?
        .to_dtype(CDType::F32)?
        .flatten_all()?;
    let (a, b) = (a.to_vec1::<f32>()?, b.to_vec1::<f32>()?);
    if a.len() != b.len() {
        return Ok(f32::INFINITY);
    }
    Ok(a.iter().zip(&b).fold(0f32, |m, (&x, &y)| {
        if x == y || (x.is_nan() && y.is_nan()) {
            m
        } else {
            m.max((x - y).abs() / (1.0 + y.abs()))
        }
    }))
}

struct Tally {
    checks: Vec<Value>,
    failed: usize,
}

impl Tally {
    fn record(&mut self, name: String, err: f32, tol: f32) {
        let ok = err <= tol;
        if !ok {
            self.failed += 1;
        }
        println!(
            "{} candle/{name}: max rel err {err:.3e} (tol {tol:.0e})",
            if ok { "ok  " } else { "FAIL" }
        );
        self.checks
            .push(json!({"name": name, "max_rel_err": err, "tol": tol, "pass": ok}));
    }
}

/// One case on both devices: forward values, autograd gradients of a
/// weighted sum, and `token_logprobs_and_grad`.
#[allow(clippy::too_many_arguments)]
fn case(
    t: &mut Tally,
    gpu: &Device,
    name: &str,
    n: usize,
    v: usize,
    dtype: CDType,
    masked: bool,
    extreme: bool,
    row_offset: usize,
) -> AnyResult<()> {
    let cpu = Device::Cpu;
    let rows = n + row_offset;
    let zp_all =
        Tensor::from_vec(host(rows, v, 7 + n as u64, extreme), (rows, v), &cpu)?.to_dtype(dtype)?;
    let zq_all =
        Tensor::from_vec(host(rows, v, 11 + v as u64, false), (rows, v), &cpu)?.to_dtype(dtype)?;
    let mut r = Lcg(3);
    let targets: Vec<u32> = (0..n)
        .map(|_| ((r.next() + 8.0) * 1e6) as u32 % v as u32)
        .collect();
    let w: Vec<f32> = (0..n).map(|_| r.next()).collect();
    let mask: Vec<f32> = (0..n)
        .map(|i| if masked && i % 3 == 1 { 0.0 } else { 1.0 })
        .collect();
    let tol_fwd = if dtype == CDType::F32 { 1e-5 } else { 1e-4 };
    let tol_bwd = if dtype == CDType::F32 { 1e-5 } else { 1e-2 };

    let mut outs = Vec::new();
    for dev in [&cpu, gpu] {
        // A row offset puts the logits at a non-zero offset in their storage.
        let zp = Var::from_tensor(&zp_all.to_device(dev)?)?;
        let zp_view = zp.as_tensor().narrow(0, row_offset, n)?;
        let zq = zq_all.to_device(dev)?.narrow(0, row_offset, n)?;
        let y = Tensor::new(targets.as_slice(), dev)?;
        let wt = Tensor::new(w.as_slice(), dev)?;
        let m = Tensor::new(mask.as_slice(), dev)?;
        let mask = masked.then_some(&m);
        let logp = token_logprobs(&zp_view, &y, mask)?;
        let g_logp = (logp.clone() * &wt)?.sum_all()?.backward()?;
        let g_logp = g_logp
            .get(zp.as_tensor())
            .ok_or("no log-prob gradient")?
            .clone();
        let kl = token_kl(&zp_view, &zq, mask)?;
        let g_kl = (kl.clone() * &wt)?.sum_all()?.backward()?;
        let g_kl = g_kl.get(zp.as_tensor()).ok_or("no KL gradient")?.clone();
        let (logp2, g_direct) = token_logprobs_and_grad(&zp_view, &y, mask, &wt)?;
        outs.push([logp, g_logp, kl, g_kl, logp2, g_direct]);
    }
    let labels = [
        "logp fwd",
        "logp bwd (autograd)",
        "kl fwd",
        "kl bwd (autograd)",
        "logp_and_grad fwd",
        "logp_and_grad bwd",
    ];
    for (i, label) in labels.iter().enumerate() {
        let tol = if label.contains("bwd") {
            tol_bwd
        } else {
            tol_fwd
        };
        // KL forward in half precision sums V products: allow a little more.
        let tol = if label.starts_with("kl") {
            tol * 10.0
        } else {
            tol
        };
        t.record(
            format!("{name} {dtype:?} {label}"),
            max_rel(&outs[1][i], &outs[0][i])?,
            tol,
        );
    }
    Ok(())
}

/// A target outside the vocabulary is an error on CUDA too.
fn out_of_range(t: &mut Tally, gpu: &Device) -> AnyResult<()> {
    let z = Tensor::zeros((3, 10), CDType::F32, gpu)?;
    let y = Tensor::new(&[1u32, 10, 2], gpu)?;
    let res = token_logprobs(&z, &y, None);
    let msg = match &res {
        Ok(_) => "no error".to_string(),
        Err(e) => e.to_string(),
    };
    let ok = res.is_err() && msg.contains("row 1");
    println!(
        "{} candle/out-of-range target: {msg}",
        if ok { "ok  " } else { "FAIL" }
    );
    if !ok {
        t.failed += 1;
    }
    t.checks
        .push(json!({"name": "out-of-range target", "message": msg, "pass": ok}));
    Ok(())
}

fn time_ms(dev: &Device, reps: usize, mut f: impl FnMut() -> AnyResult<()>) -> AnyResult<f64> {
    f()?;
    dev.synchronize()?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t0 = Instant::now();
        f()?;
        dev.synchronize()?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[reps / 2])
}

fn bench(gpu: &Device, pool: &str) -> AnyResult<Vec<Value>> {
    let mut rows = Vec::new();
    println!(
        "\ncandle route timings, memory pool {pool} (median, ms; GB/s = logits bytes read / time):"
    );
    println!("| N x V | fused logp fwd | fused logp fwd+bwd (autograd) | fused logp fwd+bwd (token_logprobs_and_grad) | fused KL fwd | fused KL fwd+bwd (autograd) | candle ops logp fwd | candle ops logp fwd+bwd |");
    println!("|---|---|---|---|---|---|---|---|");
    for (n, v) in [(1024usize, 49_152usize), (8192, 151_936)] {
        let z = Var::from_tensor(&Tensor::rand(-8f32, 8f32, (n, v), gpu)?)?;
        let zq = Tensor::rand(-8f32, 8f32, (n, v), gpu)?;
        let y = Tensor::arange(0u32, n as u32, gpu)?;
        let ones = Tensor::ones(n, CDType::F32, gpu)?;
        let gb = (n * v * 4) as f64 / 1e9;
        let fwd = time_ms(gpu, 20, || {
            token_logprobs(z.as_tensor(), &y, None)?;
            Ok(())
        })?;
        let fwd_bwd = time_ms(gpu, 10, || {
            token_logprobs(z.as_tensor(), &y, None)?
                .sum_all()?
                .backward()?;
            Ok(())
        })?;
        let direct = time_ms(gpu, 10, || {
            token_logprobs_and_grad(z.as_tensor(), &y, None, &ones)?;
            Ok(())
        })?;
        let kl = time_ms(gpu, 20, || {
            token_kl(z.as_tensor(), &zq, None)?;
            Ok(())
        })?;
        let kl_bwd = time_ms(gpu, 10, || {
            token_kl(z.as_tensor(), &zq, None)?.sum_all()?.backward()?;
            Ok(())
        })?;
        let naive_fwd = time_ms(gpu, 10, || {
            naive::token_logprobs(z.as_tensor(), &y, None)?;
            Ok(())
        })?;
        let naive_fwd_bwd = time_ms(gpu, 5, || {
            naive::token_logprobs(z.as_tensor(), &y, None)?
                .sum_all()?
                .backward()?;
            Ok(())
        })?;
        println!(
            "| {n} x {v} | {fwd:.3} ({:.0} GB/s) | {fwd_bwd:.3} | {direct:.3} | {kl:.3} ({:.0} GB/s, two tensors) | {kl_bwd:.3} | {naive_fwd:.3} | {naive_fwd_bwd:.3} |",
            gb / fwd * 1e3,
            2.0 * gb / kl * 1e3
        );
        rows.push(json!({
            "n": n, "v": v, "dtype": "f32", "memory_pool": pool,
            "fused_logp_fwd_ms": fwd, "fused_logp_fwd_gbps": gb / fwd * 1e3,
            "fused_logp_fwd_bwd_autograd_ms": fwd_bwd,
            "fused_logp_fwd_bwd_direct_ms": direct,
            "fused_kl_fwd_ms": kl, "fused_kl_fwd_gbps": 2.0 * gb / kl * 1e3,
            "fused_kl_fwd_bwd_autograd_ms": kl_bwd,
            "candle_ops_logp_fwd_ms": naive_fwd,
            "candle_ops_logp_fwd_bwd_ms": naive_fwd_bwd,
        }));
    }
    Ok(rows)
}

/// Runs the candle-route checks (and timings unless `skip_bench`); returns
/// the JSON section and whether every check passed.
pub fn run(skip_bench: bool) -> AnyResult<(Value, bool)> {
    let gpu = Device::new_cuda(0)?;
    let mut t = Tally {
        checks: Vec::new(),
        failed: 0,
    };
    for dtype in [CDType::F32, CDType::BF16, CDType::F16] {
        case(&mut t, &gpu, "N=1 V=7", 1, 7, dtype, false, false, 0)?;
        case(
            &mut t,
            &gpu,
            "N=5 V=1000 masked",
            5,
            1000,
            dtype,
            true,
            false,
            0,
        )?;
        case(
            &mut t,
            &gpu,
            "N=6 V=49153 offset",
            6,
            49_153,
            dtype,
            false,
            false,
            2,
        )?;
        case(
            &mut t,
            &gpu,
            "N=4 V=4099 extreme masked",
            4,
            4099,
            dtype,
            true,
            true,
            1,
        )?;
    }
    case(
        &mut t,
        &gpu,
        "N=9 V=151936",
        9,
        151_936,
        CDType::F32,
        true,
        false,
        3,
    )?;
    out_of_range(&mut t, &gpu)?;
    let bench = if skip_bench {
        Vec::new()
    } else {
        // First with the driver's default pool (freed memory released at
        // every synchronisation), then with freed memory kept cached.
        let mut rows = bench(&gpu, "default")?;
        retain_freed_device_memory(&gpu)?;
        rows.extend(bench(&gpu, "retained")?);
        rows
    };
    println!(
        "candle route: {} checks, {} failed",
        t.checks.len(),
        t.failed
    );
    Ok((
        json!({"checks": t.checks, "failed": t.failed, "bench": bench}),
        t.failed == 0,
    ))
}
