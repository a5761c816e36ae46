//! The SmolLM2 instruction suite on the real model: two CGPO steps through
//! the library's loop. The model is fetched (once, then cached) by
//! `scripts/fetch-smollm2.sh`; see `tests/common` of the root package.

#[path = "../../tests/common/mod.rs"]
mod common;

use candle_core::Tensor;
use cgpo::judges::Message;
use cgpo::policy::{Policy, TextTokenizer, TokenBatch};
use cgpo::train::{RunLoop, TaskMetrics};
use common::max_abs_diff;

/// Two CGPO steps of the `cgpo_suites::instruct` suite on SmolLM2 (full
/// fine-tuning, three tasks, the model's own LLM judge): the policy's
/// weights move, the reference's do not, and every metric is finite.
#[test]
fn two_cgpo_steps_move_the_policy_and_not_the_reference() {
    use cgpo_suites::instruct::{build, InstructOptions};
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let opts = InstructOptions::quick(path, out.path());
    let mut built = build(&opts).unwrap();
    let trainer = &mut built.trainer;
    let probe = TokenBatch::left_padded(
        &[common::smollm2()
            .unwrap()
            .tokenizer
            .encode_chat(&[Message::new("user", "Name a fruit.")])
            .unwrap()],
        0,
    )
    .unwrap();
    let logits = |p: &dyn Policy| p.forward_no_grad(&probe).unwrap();
    let before: Vec<Tensor> = trainer
        .policy()
        .vars()
        .iter()
        .map(|(_, v)| v.as_tensor().copy().unwrap())
        .collect();
    let ref_before = logits(trainer.reference());
    let mut lines = Vec::new();
    let mut settings = trainer.loop_settings();
    settings.steps = 2;
    settings.final_checkpoint = false;
    settings.output_dir = out.path().join("loop");
    RunLoop::new(&mut *trainer, settings)
        .on_step(|_, m: &Vec<TaskMetrics>, _| lines.extend(m.iter().cloned()))
        .run()
        .unwrap();
    assert_eq!(trainer.step_count(), 2);
    assert_eq!(lines.len(), 6, "one metrics line per task and step");
    for m in &lines {
        assert!(!m.skipped, "{m:?}");
        for (name, v) in [
            ("loss", m.loss),
            ("grad_norm", m.grad_norm),
            ("reward_raw", m.reward_raw),
            ("reward_calibrated", m.reward_calibrated),
            ("pass_rate", m.pass_rate),
            ("kl_k1", m.kl_k1),
            ("kl_k3", m.kl_k3),
        ] {
            assert!(v.is_finite(), "{} step {}: {name} = {v}", m.task, m.step);
        }
        assert_eq!(m.samples, 2, "{m:?}");
    }
    let vars = trainer.policy().vars();
    let moved = vars
        .iter()
        .zip(&before)
        .filter(|((_, v), b)| {
            let d = max_abs_diff(v.as_tensor(), b);
            d > 0.0
        })
        .count();
    // AdamW moves every weight whose merged gradient is non-zero.
    assert!(
        moved * 10 >= vars.len() * 9,
        "only {moved} of {} weights changed",
        vars.len()
    );
    let ref_after = logits(trainer.reference());
    let ref_diff = max_abs_diff(&ref_after, &ref_before);
    assert_eq!(ref_diff, 0.0, "the reference moved");
    let policy_diff = max_abs_diff(&logits(trainer.policy()), &ref_after);
    assert!(policy_diff > 1e-4, "the policy's logits did not change");
}
