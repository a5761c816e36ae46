//! Criterion benches of the fused CPU ops against the composed candle ops at
//! N = 1024, V = 49,152 (f32). `examples/bench_kernels.rs` prints the wider
//! table (more shapes, the streaming-read floor, GB/s).

use candle_core::{Device, Tensor, Var};
use cgpo::ops::{naive, token_kl, token_logprobs};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn kernels(c: &mut Criterion) {
    let (n, v) = (1024, 49_152);
    let dev = Device::Cpu;
    let data: Vec<f32> = (0..n * v)
        .map(|i| {
            ((i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as f32 / (1u64 << 24) as f32
                * 16.0
                - 8.0
        })
        .collect();
    let z = Var::from_tensor(&Tensor::from_vec(data, (n, v), &dev).unwrap()).unwrap();
    let zq = (z.as_tensor() * 0.9).unwrap();
    let y = Tensor::new(
        (0..n).map(|i| ((i * 7919) % v) as u32).collect::<Vec<_>>(),
        &dev,
    )
    .unwrap();
    let mut g = c.benchmark_group("logits_1024x49152_f32");
    g.sample_size(20);
    g.throughput(Throughput::Bytes((n * v * 4) as u64));
    g.bench_function("fused_logp_fwd", |b| {
        b.iter(|| token_logprobs(z.as_tensor(), &y, None).unwrap())
    });
    g.bench_function("candle_logp_fwd", |b| {
        b.iter(|| naive::token_logprobs(z.as_tensor(), &y, None).unwrap())
    });
    g.bench_function("fused_logp_fwd_bwd", |b| {
        b.iter(|| {
            token_logprobs(z.as_tensor(), &y, None)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
        })
    });
    g.bench_function("fused_kl_fwd", |b| {
        b.iter(|| token_kl(z.as_tensor(), &zq, None).unwrap())
    });
    g.bench_function("candle_kl_fwd", |b| {
        b.iter(|| naive::token_kl(z.as_tensor(), &zq, None).unwrap())
    });
    g.finish();
}

criterion_group!(benches, kernels);
criterion_main!(benches);
