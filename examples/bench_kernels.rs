//! Times the fused per-token log-prob and exact-KL ops against the same
//! computation composed from candle ops, and a plain 2-thread streaming read
//! of the same bytes (the memory floor), on the CPU. Prints a table of
//! milliseconds and effective GB/s of logits read; `benches/torch_peer.py`
//! times PyTorch eager on the same shapes.
//!
//!     cargo run --release --example bench_kernels
//!     cargo run --release --example bench_kernels -- --n 1024 --v 49152 --json out.json
//!
//! The composed candle ops materialise several [N, V] tensors, so they are
//! skipped above `--composed-max` elements. `fwd+bwd` rows go through candle's
//! autograd (which accumulates each gradient into a fresh zeroed [N, V]
//! tensor); the `fwd+bwd*` row calls the fused forward and backward kernels
//! directly (`token_logprobs_and_grad`).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor, Var};
use cgpo::ops::{naive, simd, token_kl, token_logprobs, token_logprobs_and_grad};
use clap::Parser;
use rayon::prelude::*;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Rows (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1024, 4096])]
    n: Vec<usize>,
    /// Vocabulary sizes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [49_152, 151_936])]
    v: Vec<usize>,
    /// Largest N * V for the composed candle ops.
    #[arg(long, default_value_t = 1024 * 151_936)]
    composed_max: usize,
    /// Seconds of timed runs per case (at least 3 runs).
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// Keep freed memory in the C heap (`cgpo::ops::retain_freed_host_memory`)
    /// so that large temporaries do not page-fault afresh. For the PyTorch
    /// peer the same setting is `GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736`.
    #[arg(long)]
    retain_host_memory: bool,
}

/// Median wall time of `f` after one warm-up run.
fn time(seconds: f64, mut f: impl FnMut() -> cgpo::Result<()>) -> cgpo::Result<Duration> {
    f()?;
    let mut runs = Vec::new();
    let start = Instant::now();
    while runs.len() < 3 || (start.elapsed().as_secs_f64() < seconds && runs.len() < 200) {
        let t = Instant::now();
        f()?;
        runs.push(t.elapsed());
    }
    runs.sort();
    Ok(runs[runs.len() / 2])
}

fn main() -> cgpo::Result<()> {
    let args = Args::parse();
    let dev = Device::Cpu;
    let retained = args.retain_host_memory && cgpo::ops::retain_freed_host_memory();
    println!(
        "CPU kernels: {} path, {} rayon threads, freed memory {}",
        simd::path_name(),
        rayon::current_num_threads(),
        if retained {
            "kept in the heap"
        } else {
            "returned to the OS (allocator default)"
        }
    );
    println!(
        "{:<22} {:>6} {:>8} {:>10} {:>8}",
        "case", "N", "V", "ms", "GB/s"
    );
    let mut rows = Vec::new();
    for &n in &args.n {
        for &v in &args.v {
            // Deterministic pseudo-random logits in about [-8, 8].
            let data: Vec<f32> = (0..n * v)
                .into_par_iter()
                .map(|i| {
                    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                    (x as f32 / (1u64 << 24) as f32 - 0.5) * 16.0
                })
                .collect();
            let z = Var::from_tensor(&Tensor::from_vec(data, (n, v), &dev)?)?;
            let zq = (z.as_tensor() * 0.9)?;
            let y = Tensor::new(
                (0..n).map(|i| ((i * 7919) % v) as u32).collect::<Vec<_>>(),
                &dev,
            )?;
            let bytes = (n * v * 4) as f64;
            let mut report = |case: &str, d: Duration, b: f64| {
                let gbps = b / d.as_secs_f64() / 1e9;
                println!(
                    "{case:<22} {n:>6} {v:>8} {:>10.2} {gbps:>8.1}",
                    d.as_secs_f64() * 1e3
                );
                rows.push(json!({"case": case, "n": n, "v": v, "ms": d.as_secs_f64() * 1e3, "gbps": gbps}));
            };

            // The memory floor: a vectorised max over the same bytes (one
            // load and one op per 8 floats), row by row like the kernels.
            let flat = z.as_tensor().flatten_all()?;
            let slice = flat.to_vec1::<f32>()?;
            let d = time(args.seconds, || {
                let s = slice
                    .par_chunks(v)
                    .map(simd::max)
                    .reduce(|| f32::MIN, f32::max);
                std::hint::black_box(s);
                Ok(())
            })?;
            report("streaming read", d, bytes);
            drop(slice);

            let d = time(args.seconds, || {
                std::hint::black_box(token_logprobs(z.as_tensor(), &y, None)?);
                Ok(())
            })?;
            report("fused logp fwd", d, bytes);
            let d = time(args.seconds, || {
                let g = token_logprobs(z.as_tensor(), &y, None)?
                    .sum_all()?
                    .backward()?;
                std::hint::black_box(g);
                Ok(())
            })?;
            report("fused logp fwd+bwd", d, bytes);
            let ones = Tensor::ones(n, candle_core::DType::F32, &dev)?;
            let d = time(args.seconds, || {
                std::hint::black_box(token_logprobs_and_grad(z.as_tensor(), &y, None, &ones)?);
                Ok(())
            })?;
            report("fused logp fwd+bwd*", d, bytes);
            let d = time(args.seconds, || {
                std::hint::black_box(token_kl(z.as_tensor(), &zq, None)?);
                Ok(())
            })?;
            report("fused KL fwd", d, 2.0 * bytes);
            let d = time(args.seconds, || {
                let g = token_kl(z.as_tensor(), &zq, None)?.sum_all()?.backward()?;
                std::hint::black_box(g);
                Ok(())
            })?;
            report("fused KL fwd+bwd", d, 2.0 * bytes);

            if n * v <= args.composed_max {
                let d = time(args.seconds, || {
                    std::hint::black_box(naive::token_logprobs(z.as_tensor(), &y, None)?);
                    Ok(())
                })?;
                report("candle logp fwd", d, bytes);
                let d = time(args.seconds, || {
                    let g = naive::token_logprobs(z.as_tensor(), &y, None)?
                        .sum_all()?
                        .backward()?;
                    std::hint::black_box(g);
                    Ok(())
                })?;
                report("candle logp fwd+bwd", d, bytes);
                let d = time(args.seconds, || {
                    std::hint::black_box(naive::token_kl(z.as_tensor(), &zq, None)?);
                    Ok(())
                })?;
                report("candle KL fwd", d, 2.0 * bytes);
            }
        }
    }
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| cgpo::Error::Op {
            op: "bench",
            message: e.to_string(),
        })?;
        std::fs::write(&path, text).map_err(|e| cgpo::Error::Io { path, source: e })?;
    }
    Ok(())
}
