//! The fused ops against the composed candle reference: random shapes,
//! extreme logits, masked rows, all dtypes, gradients (against autograd of
//! the composed ops and against finite differences), and bad inputs.

use candle_core::{DType, Device, Tensor, Var};
use proptest::prelude::*;

use super::KlEstimator;
use super::{kl_estimate, naive, token_kl, token_logprobs};

fn close(a: &[f32], b: &[f32], rel: f32) -> std::result::Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("lengths {} vs {}", a.len(), b.len()));
    }
    for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
        let same_inf = x.is_infinite() && x == y;
        // Written so that a NaN on either side fails.
        let within = (x - y).abs() <= rel * y.abs().max(1.0);
        if !same_inf && !within {
            return Err(format!("index {i}: fused {x} vs reference {y}"));
        }
    }
    Ok(())
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Logits `[n, v]` from a seed-free strategy: values, then a scale.
fn logits_strategy() -> impl Strategy<Value = (usize, usize, Vec<f32>, Vec<u32>, Vec<u8>)> {
    (1usize..6, 1usize..300).prop_flat_map(|(n, v)| {
        (
            Just(n),
            Just(v),
            prop::collection::vec(-30f32..30.0, n * v),
            prop::collection::vec(0..v as u32, n),
            prop::collection::vec(prop::bool::weighted(0.8).prop_map(u8::from), n),
        )
    })
}

fn check_logprobs(
    z: &Tensor,
    y: &Tensor,
    mask: Option<&Tensor>,
) -> std::result::Result<(), String> {
    let fused = token_logprobs(z, y, mask).map_err(|e| e.to_string())?;
    let want = naive::token_logprobs(z, y, mask).map_err(|e| e.to_string())?;
    close(&flat(&fused), &flat(&want), 1e-5)
}

fn check_kl(zp: &Tensor, zq: &Tensor, mask: Option<&Tensor>) -> std::result::Result<(), String> {
    let fused = token_kl(zp, zq, mask).map_err(|e| e.to_string())?;
    let want = naive::token_kl(zp, zq, mask).map_err(|e| e.to_string())?;
    close(&flat(&fused), &flat(&want), 1e-5)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn logprobs_match_the_composed_ops((n, v, data, targets, mask) in logits_strategy()) {
        let dev = Device::Cpu;
        let z = Tensor::from_vec(data, (n, v), &dev).unwrap();
        let y = Tensor::new(targets, &dev).unwrap();
        let m = Tensor::new(mask, &dev).unwrap();
        prop_assert_eq!(check_logprobs(&z, &y, Some(&m)), Ok(()));
    }

    #[test]
    fn kl_matches_the_composed_ops((n, v, data, _t, mask) in logits_strategy(), shift in -3f32..3.0) {
        let dev = Device::Cpu;
        let zp = Tensor::from_vec(data, (n, v), &dev).unwrap();
        // A reference that differs from the policy by a smooth perturbation.
        let zq = ((zp.sin().unwrap() * shift as f64).unwrap() + &zp).unwrap();
        let m = Tensor::new(mask, &dev).unwrap();
        prop_assert_eq!(check_kl(&zp, &zq, Some(&m)), Ok(()));
    }

    #[test]
    fn gradients_match_autograd_of_the_composed_ops((n, v, data, targets, mask) in logits_strategy()) {
        let dev = Device::Cpu;
        let z = Var::from_tensor(&Tensor::from_vec(data, (n, v), &dev).unwrap()).unwrap();
        let zq = (z.as_tensor().cos().unwrap() * 2.0).unwrap();
        let y = Tensor::new(targets, &dev).unwrap();
        let m = Tensor::new(mask, &dev).unwrap();
        let w = Tensor::arange(1f32, n as f32 + 1.0, &dev).unwrap();
        // A weighted sum so each row's upstream gradient differs.
        let loss = |lp: Tensor, kl: Tensor| ((lp * &w).unwrap().sum_all().unwrap() + (kl * &w).unwrap().sum_all().unwrap()).unwrap();
        let fused = loss(token_logprobs(z.as_tensor(), &y, Some(&m)).unwrap(), token_kl(z.as_tensor(), &zq, Some(&m)).unwrap());
        let naive_loss = loss(naive::token_logprobs(z.as_tensor(), &y, Some(&m)).unwrap(), naive::token_kl(z.as_tensor(), &zq, Some(&m)).unwrap());
        let g_fused = fused.backward().unwrap().get(&z).unwrap().clone();
        let g_naive = naive_loss.backward().unwrap().get(&z).unwrap().clone();
        prop_assert_eq!(close(&flat(&g_fused), &flat(&g_naive), 1e-4), Ok(()));
    }
}

#[test]
fn rows_longer_than_a_block_with_a_growing_max() {
    let dev = Device::Cpu;
    // V spans several 4096-element blocks, is odd, and the max moves late.
    let v = 3 * 4096 + 77;
    let data: Vec<f32> = (0..2 * v)
        .map(|i| ((i % v) as f32 * 0.001).sin() * 5.0 + (i % v) as f32 * 1e-3)
        .collect();
    let z = Tensor::from_vec(data, (2, v), &dev).unwrap();
    let zq = z.cos().unwrap();
    let y = Tensor::new(&[0u32, (v - 1) as u32], &dev).unwrap();
    check_logprobs(&z, &y, None).unwrap();
    check_kl(&z, &zq, None).unwrap();
}

#[test]
fn extreme_logits() {
    let dev = Device::Cpu;
    let ninf = f32::NEG_INFINITY;
    let rows: [[f32; 5]; 5] = [
        [1e4, -1e4, 0.0, 1e4, -1e4],
        [-1e4, -1e4, -1e4, -1e4, -1e4],
        [3.0, 3.0, 3.0, 3.0, 3.0],
        [ninf, 0.0, ninf, 2.0, 1.0],
        [0.0, ninf, ninf, ninf, ninf],
    ];
    let z = Tensor::new(&rows, &dev).unwrap();
    let y = Tensor::new(&[0u32, 4, 2, 3, 0], &dev).unwrap();
    check_logprobs(&z, &y, None).unwrap();
    // A -inf target has log-prob -inf, as in the reference.
    let lp =
        flat(&token_logprobs(&z, &Tensor::new(&[0u32, 0, 0, 0, 1], &dev).unwrap(), None).unwrap());
    assert_eq!(lp[3], f32::NEG_INFINITY);
    assert_eq!(lp[4], f32::NEG_INFINITY);
    // KL: identical rows give 0; -inf in both is no contribution; -inf in q only where p > 0 is +inf.
    // (The composed reference gives NaN for 0 * (-inf - -inf); the fused op
    // treats a zero-probability entry as no contribution.)
    check_kl(
        &z.narrow(0, 0, 3).unwrap(),
        &z.narrow(0, 0, 3).unwrap().cos().unwrap(),
        None,
    )
    .unwrap();
    assert!(flat(&token_kl(&z, &z, None).unwrap())
        .iter()
        .all(|&k| k.abs() < 1e-6));
    let zq = Tensor::new(&[[0f32, 0.0, 0.0, 0.0, ninf]; 5], &dev).unwrap();
    let kl = flat(&token_kl(&z, &zq, None).unwrap());
    // Row 0: p = (1/2, 0, 0, 1/2, 0) against q uniform on the first four.
    assert!((kl[0] - std::f32::consts::LN_2).abs() < 1e-6, "{}", kl[0]);
    // Row 3 puts mass on the column where q is -inf.
    assert_eq!(kl[3], f32::INFINITY);
    assert!((kl[4] - 4f32.ln()).abs() < 1e-6, "{}", kl[4]);
}

#[test]
fn bf16_and_f16_accumulate_in_f32() {
    let dev = Device::Cpu;
    let data: Vec<f32> = (0..3 * 1001)
        .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
        .collect();
    let z32 = Tensor::from_vec(data, (3, 1001), &dev).unwrap();
    let y = Tensor::new(&[5u32, 500, 1000], &dev).unwrap();
    for dt in [DType::BF16, DType::F16] {
        let z = z32.to_dtype(dt).unwrap();
        let zq = z.cos().unwrap();
        let fused = token_logprobs(&z, &y, None).unwrap();
        assert_eq!(fused.dtype(), DType::F32);
        // The reference on the same (rounded) values, widened to f32.
        let want = naive::token_logprobs(&z.to_dtype(DType::F32).unwrap(), &y, None).unwrap();
        close(&flat(&fused), &flat(&want), 1e-5).unwrap();
        let kl = token_kl(&z, &zq, None).unwrap();
        let want = naive::token_kl(
            &z.to_dtype(DType::F32).unwrap(),
            &zq.to_dtype(DType::F32).unwrap(),
            None,
        )
        .unwrap();
        close(&flat(&kl), &flat(&want), 1e-5).unwrap();
        // The gradient comes back in the logits' dtype.
        let var = Var::from_tensor(&z).unwrap();
        let g = token_logprobs(var.as_tensor(), &y, None)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(g.get(&var).unwrap().dtype(), dt);
    }
}

#[test]
fn finite_differences_agree_with_the_backward() {
    let dev = Device::Cpu;
    let base: Vec<f32> = vec![0.3, -1.2, 2.0, 0.0, 0.7, -0.4, 1.1, 0.9];
    let q = Tensor::new(&[[0.1f32, 0.2, -0.3, 0.0], [1.0, -1.0, 0.5, 0.2]], &dev).unwrap();
    let y = Tensor::new(&[2u32, 1], &dev).unwrap();
    let f = |d: &[f32]| -> f64 {
        let z = Tensor::from_vec(d.to_vec(), (2, 4), &dev).unwrap();
        let lp = flat(&token_logprobs(&z, &y, None).unwrap());
        let kl = flat(&token_kl(&z, &q, None).unwrap());
        f64::from(lp[0] + 2.0 * lp[1] + 3.0 * kl[0] + kl[1])
    };
    let z = Var::from_tensor(&Tensor::from_vec(base.clone(), (2, 4), &dev).unwrap()).unwrap();
    let lp = token_logprobs(z.as_tensor(), &y, None).unwrap();
    let kl = token_kl(z.as_tensor(), &q, None).unwrap();
    let w = |a: f64, b: f64| Tensor::new(&[a as f32, b as f32], &dev).unwrap();
    let loss = ((lp * w(1.0, 2.0)).unwrap().sum_all().unwrap()
        + (kl * w(3.0, 1.0)).unwrap().sum_all().unwrap())
    .unwrap();
    let g = flat(loss.backward().unwrap().get(&z).unwrap());
    let h = 1e-2f32;
    for i in 0..base.len() {
        let (mut up, mut down) = (base.clone(), base.clone());
        up[i] += h;
        down[i] -= h;
        let fd = (f(&up) - f(&down)) / f64::from(2.0 * h);
        assert!(
            (fd - f64::from(g[i])).abs() < 2e-3,
            "d/dz[{i}]: finite difference {fd} vs backward {}",
            g[i]
        );
    }
}

#[test]
fn masked_rows_give_zero_and_no_gradient() {
    let dev = Device::Cpu;
    let z = Var::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
    // The masked row's target is out of range: it must not be read.
    let y = Tensor::new(&[1u32, 99], &dev).unwrap();
    let m = Tensor::new(&[1u8, 0], &dev).unwrap();
    let lp = token_logprobs(z.as_tensor(), &y, Some(&m)).unwrap();
    assert_eq!(flat(&lp)[1], 0.0);
    let g = flat(lp.sum_all().unwrap().backward().unwrap().get(&z).unwrap());
    assert_eq!(&g[3..], &[0.0, 0.0, 0.0]);
}

#[test]
fn bad_inputs_are_clear_errors() {
    let dev = Device::Cpu;
    let z = Tensor::new(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev).unwrap();
    let err = |r: crate::Result<Tensor>| r.expect_err("an error").to_string();
    let y = Tensor::new(&[1u32, 3], &dev).unwrap();
    assert!(err(token_logprobs(&z, &y, None))
        .contains("target id 3 at row 1 is outside the vocabulary of 3"));
    assert!(err(token_logprobs(
        &z,
        &Tensor::new(&[1u32], &dev).unwrap(),
        None
    ))
    .contains("targets must be [2]"));
    assert!(err(token_logprobs(
        &z,
        &Tensor::new(&[-1i64, 0], &dev).unwrap(),
        None
    ))
    .contains("negative"));
    assert!(err(token_logprobs(
        &z,
        &Tensor::new(&[0.5f32, 0.0], &dev).unwrap(),
        None
    ))
    .contains("integers"));
    assert!(
        err(token_logprobs(&z.to_dtype(DType::U32).unwrap(), &y, None))
            .contains("f32, bf16 or f16")
    );
    assert!(err(token_logprobs(&z.flatten_all().unwrap(), &y, None)).contains("[N, V]"));
    assert!(err(token_logprobs(
        &z,
        &Tensor::new(&[1u32, 0], &dev).unwrap(),
        Some(&Tensor::new(&[1u8], &dev).unwrap())
    ))
    .contains("mask"));
    let zq = Tensor::new(&[[1f32, 2.0], [4.0, 5.0]], &dev).unwrap();
    assert!(err(token_kl(&z, &zq, None)).contains("reference logits are [2, 2]"));
    assert!(err(token_kl(&z, &z.to_dtype(DType::BF16).unwrap(), None)).contains("BF16"));
    // Non-contiguous inputs are made contiguous.
    let t = z.t().unwrap();
    assert!(!t.is_contiguous());
    check_logprobs(&t, &Tensor::new(&[0u32, 1, 1], &dev).unwrap(), None).unwrap();
}

#[test]
fn estimators_follow_their_formulas() {
    let dev = Device::Cpu;
    let lp = Tensor::new(&[-1.0f32, -2.0, -30.0, 0.0], &dev).unwrap();
    let lq = Tensor::new(&[-1.5f32, -1.0, 0.0, -40.0], &dev).unwrap();
    let k1 = flat(&kl_estimate(&lp, &lq, KlEstimator::K1).unwrap());
    assert_eq!(k1, [0.5, -1.0, -30.0, 40.0]);
    let k2 = flat(&kl_estimate(&lp, &lq, KlEstimator::K2).unwrap());
    assert_eq!(k2, [0.125, 0.5, 450.0, 800.0]);
    let abs = flat(&kl_estimate(&lp, &lq, KlEstimator::Abs).unwrap());
    assert_eq!(abs, [0.5, 1.0, 30.0, 40.0]);
    // At p = q its gradient is 0, as |x|'s subgradient in the peers.
    let v = candle_core::Var::new(&[-1.0f32, -2.0], &dev).unwrap();
    let same = v.as_tensor().detach();
    let kl = kl_estimate(v.as_tensor(), &same, KlEstimator::Abs).unwrap();
    let grads = kl.sum_all().unwrap().backward().unwrap();
    assert_eq!(flat(grads.get(&v).unwrap()), [0.0, 0.0]);
    let k3 = flat(&kl_estimate(&lp, &lq, KlEstimator::K3).unwrap());
    let want = |r: f32| (r.exp() - r - 1.0).clamp(-10.0, 10.0);
    close(&k3[..2], &[want(-0.5), want(1.0)], 1e-6).unwrap();
    // The log-ratio clamps at 20 and k3 at 10.
    assert_eq!(k3[2], 10.0);
    close(&k3[3..], &[want(-20.0)], 1e-6).unwrap();
    assert!(kl_estimate(&lp, &lq, KlEstimator::Full).is_err());
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn glibc_accepts_the_retained_heap_settings() {
    assert!(super::retain_freed_host_memory());
    // Large allocations still work and are zeroed as asked.
    let z = Tensor::zeros((64, 1 << 16), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert_eq!(z.sum_all().unwrap().to_scalar::<f32>().unwrap(), 0.0);
}
