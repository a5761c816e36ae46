//! TinyLm as a policy: gradients reach every weight, padding is invisible,
//! sampled log-probs match a full forward, the reference stays frozen,
//! checkpoints round-trip, and bad inputs are errors.

mod common;

use candle_core::{Tensor, D};
use cgpo::policy::{Policy, TextTokenizer, TinyLm, TinyLmConfig, TokenBatch};
use cgpo::rollout::{generate, sequence_logprobs, SamplingConfig};
use common::max_abs_diff;

fn tiny() -> TinyLm {
    TinyLm::new(&TinyLmConfig::default(), 42).unwrap()
}

/// Mean log-prob of each next token of the unpadded positions.
fn lm_loss(model: &dyn Policy, batch: &TokenBatch) -> Tensor {
    let logits = model.forward(batch).unwrap();
    let (b, t, v) = logits.dims3().unwrap();
    let logp =
        candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1).unwrap(), D::Minus1).unwrap();
    let targets = batch
        .ids_tensor(model.device())
        .unwrap()
        .narrow(1, 1, t - 1)
        .unwrap();
    let picked = logp
        .reshape((b * (t - 1), v))
        .unwrap()
        .gather(&targets.reshape((b * (t - 1), 1)).unwrap(), 1)
        .unwrap();
    picked.mean_all().unwrap().neg().unwrap()
}

#[test]
fn every_var_gets_a_nonzero_gradient() {
    let lm = tiny();
    let t = &lm.tokenizer;
    let batch = TokenBatch::left_padded(
        &[t.encode("hello world").unwrap(), t.encode("abc").unwrap()],
        t.pad_token(),
    )
    .unwrap();
    let grads = lm_loss(&lm, &batch).backward().unwrap();
    let vars = lm.vars();
    assert_eq!(vars.len(), 2 * 9 + 2);
    for (name, var) in &vars {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

#[test]
fn greedy_decoding_is_the_same_alone_and_in_a_padded_batch() {
    let lm = tiny();
    let t = &lm.tokenizer;
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 12,
        stop_at_eos: false,
        ..SamplingConfig::default()
    };
    let target = t.encode("The cat sat").unwrap();
    let alone = generate(&lm, t, std::slice::from_ref(&target), &greedy).unwrap();
    let batch = vec![
        t.encode("a much longer neighbour prompt here").unwrap(),
        target,
        t.encode("x").unwrap(),
    ];
    let together = generate(&lm, t, &batch, &greedy).unwrap();
    assert_eq!(alone.responses[0], together.responses[1]);
    assert_eq!(alone.responses[0].len(), 12);
}

#[test]
fn behaviour_logprobs_match_a_full_forward() {
    let lm = tiny();
    let t = &lm.tokenizer;
    let prompts = vec![
        t.encode("Once upon a time").unwrap(),
        t.encode("Q:").unwrap(),
    ];
    let cfg = SamplingConfig {
        max_new_tokens: 20,
        samples_per_prompt: 3,
        seed: 9,
        ..SamplingConfig::default()
    };
    let out = generate(&lm, t, &prompts, &cfg).unwrap();
    assert_eq!(out.prompt_index, [0, 0, 0, 1, 1, 1]);
    let again = generate(&lm, t, &prompts, &cfg).unwrap();
    assert_eq!(out, again, "same seed, same samples");
    let device = lm.device();
    let behaviour = out.behaviour_logprobs(device).unwrap();
    for grad in [false, true] {
        let full = sequence_logprobs(&lm, &out, grad).unwrap();
        let diff = max_abs_diff(&full, &behaviour);
        assert!(diff < 1e-4, "grad={grad}: max |diff| = {diff}");
    }
}

#[test]
fn a_step_changes_the_policy_but_not_the_reference_and_checkpoints_round_trip() {
    let lm = tiny();
    let reference = lm.frozen().unwrap();
    let t = &lm.tokenizer;
    let batch = TokenBatch::left_padded(&[t.encode("train me").unwrap()], t.pad_token()).unwrap();
    let before_ref = reference.forward_no_grad(&batch).unwrap();
    let before = lm.forward_no_grad(&batch).unwrap();
    let grads = lm_loss(&lm, &batch).backward().unwrap();
    for (_, var) in lm.vars() {
        let g = grads.get(&var).unwrap();
        var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap())
            .unwrap();
    }
    assert!(max_abs_diff(&before, &lm.forward_no_grad(&batch).unwrap()) > 1e-3);
    assert_eq!(
        max_abs_diff(&before_ref, &reference.forward_no_grad(&batch).unwrap()),
        0.0
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.safetensors");
    lm.save(&path).unwrap();
    let mut fresh = TinyLm::new(&TinyLmConfig::default(), 1).unwrap();
    fresh.load(&path).unwrap();
    for ((n, a), (_, b)) in lm.vars().iter().zip(fresh.vars().iter()) {
        let a: Vec<u32> = a
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        let b: Vec<u32> = b
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(a, b, "{n} differs after save -> load");
    }
}

#[test]
fn bad_checkpoints_and_prompts_are_errors_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let mut lm = tiny();
    let missing = dir.path().join("nope.safetensors");
    let err = lm.load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("nope.safetensors") && err.contains("no such file"),
        "{err}"
    );

    let path = dir.path().join("p.safetensors");
    lm.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let truncated = dir.path().join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = lm.load(&truncated).unwrap_err().to_string();
    assert!(err.contains("truncated.safetensors"), "{err}");
    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"\xff\xff\xff\xff\xff\xff\xff\x7fnot a header").unwrap();
    assert!(lm
        .load(&garbage)
        .unwrap_err()
        .to_string()
        .contains("garbage.safetensors"));

    // A checkpoint of another size: every mismatch is named.
    let other = TinyLm::new(
        &TinyLmConfig {
            hidden_size: 32,
            ..TinyLmConfig::default()
        },
        0,
    )
    .unwrap();
    let other_path = dir.path().join("other.safetensors");
    other.save(&other_path).unwrap();
    let err = lm.load(&other_path).unwrap_err().to_string();
    assert!(
        err.contains("model.embed_tokens.weight") && err.contains("[258, 32]"),
        "{err}"
    );

    let long = vec![65u32; 600];
    let err = generate(&lm, &lm.tokenizer, &[long], &SamplingConfig::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("context window of 512"), "{err}");
    let err = lm
        .forward(&TokenBatch::column(&[999]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("999"), "{err}");
}

#[test]
fn batched_next_token_logits_match_one_at_a_time() {
    use cgpo::local_judge::CausalLm;
    let lm = tiny();
    let t = &lm.tokenizer;
    let seqs = vec![
        t.encode("is this a good answer?").unwrap(),
        t.encode("no").unwrap(),
        t.encode("a middle one").unwrap(),
    ];
    let batched = lm.next_token_logits_batch(&seqs).unwrap();
    assert_eq!(batched.dims(), [3, lm.model.vocab_size()]);
    for (i, s) in seqs.iter().enumerate() {
        let one = lm.next_token_logits(s).unwrap();
        let diff = max_abs_diff(&batched.get(i).unwrap(), &one);
        assert!(diff < 1e-4, "row {i}: {diff}");
    }
}
