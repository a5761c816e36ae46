//! Offline DPO on TinyLm from an SFT checkpoint: the implicit reward margin
//! on held-out pairs starts at exactly 0 (policy = reference) and rises;
//! the batched loss equals the formula on sequences scored one by one; bad
//! preference records refuse the run unless skipped, and are counted.

use std::path::Path;

use candle_core::D;
use cgpo::pipeline::synthetic::{answer, jsonl, parity_pairs, questions, sft_records, Rule};
use cgpo::pipeline::{
    dpo_loss, teacher_forced, Dpo, DpoConfig, Sft, SftConfig, Split, StageConfig, StageRunner,
};
use cgpo::policy::{ByteTokenizer, Policy, TextTokenizer};
use cgpo::rollout::{generate, sequence_logprobs, SamplingConfig};

const SIZE: &str = r#"{"hidden_size": 32, "intermediate_size": 64, "layers": 2, "heads": 2, "kv_heads": 1, "context_len": 96}"#;

fn write(dir: &Path, name: &str, text: impl AsRef<[u8]>) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// A briefly fine-tuned model in `dir/sft`.
fn sft(dir: &Path) {
    write(dir, "sft.jsonl", jsonl(sft_records(&questions(0..2), 20)));
    write(
        dir,
        "sft.json",
        format!(
            r#"{{"data": {{"train": "sft.jsonl"}}, "policy": {{"kind": "tiny", "size": {SIZE}}},
                "train": {{"steps": 60, "batch_size": 10, "learning_rate": 0.01, "output_dir": "sft"}}}}"#
        ),
    );
    let cfg = SftConfig::from_file(dir.join("sft.json")).unwrap();
    let (stage, _) = Sft::from_config(&cfg).unwrap();
    StageRunner::new(stage, &cfg.train, cfg.seed, serde_json::json!({}))
        .unwrap()
        .run()
        .unwrap();
}

fn dpo_config(dir: &Path, data: &str, train: &str) -> DpoConfig {
    write(
        dir,
        "dpo.json",
        format!(
            r#"{{"seed": 4, "beta": 0.1, "data": {data},
                "policy": {{"kind": "tiny", "size": {SIZE}, "weights": "sft"}}, "train": {train}}}"#
        ),
    );
    DpoConfig::from_file(dir.join("dpo.json")).unwrap()
}

#[test]
fn the_held_out_margin_rises_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    sft(dir.path());
    let q = questions(0..2);
    let train = parity_pairs(&q, 0..3, 200, Rule::Correct, 1);
    // Held out: both answers long, with a filler sentence training never
    // shows (so the margin reflects the answer, not the filler's tokens).
    let held_out: Vec<(String, String, String)> = q
        .iter()
        .map(|q| {
            (
                q.text(),
                answer(q.parity(), Some(3)),
                answer(q.wrong(), Some(3)),
            )
        })
        .collect();
    write(
        dir.path(),
        "pairs.jsonl",
        jsonl(train.iter().map(|p| p.record())),
    );
    write(
        dir.path(),
        "held_out.jsonl",
        jsonl(
            held_out
                .iter()
                .map(|(p, c, r)| serde_json::json!({"prompt": p, "chosen": c, "rejected": r})),
        ),
    );
    let cfg = dpo_config(
        dir.path(),
        r#"{"train": "pairs.jsonl", "eval": "held_out.jsonl"}"#,
        r#"{"steps": 50, "batch_size": 16, "learning_rate": 0.0003, "output_dir": "dpo"}"#,
    );
    let (dpo, _) = Dpo::from_config(&cfg).unwrap();
    let mut runner = StageRunner::new(dpo, &cfg.train, cfg.seed, serde_json::json!({})).unwrap();
    let summary = runner.run().unwrap();
    let (first, last) = (summary.first_eval.unwrap(), summary.last_eval.unwrap());
    eprintln!(
        "held-out implicit reward margin {:.4} -> {:.4} (accuracy {:.3} -> {:.3}, loss {:.4} -> {:.4}, chosen reward {:.4}, rejected reward {:.4})",
        first.stats["margin"],
        last.stats["margin"],
        first.stats["accuracy"],
        last.stats["accuracy"],
        first.loss,
        last.loss,
        last.stats["chosen_reward"],
        last.stats["rejected_reward"],
    );
    assert_eq!(first.stats["margin"], 0.0);
    assert!((first.loss - 2f64.ln()).abs() < 1e-6, "{}", first.loss);
    assert!(last.stats["margin"] > 0.3, "{}", last.stats["margin"]);
    assert!(last.stats["accuracy"] >= 0.9, "{}", last.stats["accuracy"]);
    assert!(last.loss < first.loss);

    // A warm-up must leave a usable policy: greedy answers keep the format.
    let t = ByteTokenizer;
    let prompts: Vec<Vec<u32>> = q
        .iter()
        .map(|q| t.encode_prompt(&q.text().as_str().into()).unwrap())
        .collect();
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 20,
        ..SamplingConfig::default()
    };
    let out = generate(runner.stage().policy(), &t, &prompts, &greedy).unwrap();
    let right = q
        .iter()
        .zip(&out.texts)
        .filter(|(q, a)| **a == answer(q.parity(), None))
        .count();
    eprintln!("greedy answers after DPO: {right}/{} correct", q.len());
    assert!(
        out.texts
            .iter()
            .all(|a| a == "ANSWER: even" || a == "ANSWER: odd"),
        "{:?}",
        out.texts
    );

    // The batched, padded loss equals the formula on each sequence scored
    // alone (no padding), with the policy now away from the reference.
    let dpo = runner.stage();
    let idx = [0, 5, 9];
    let batched = dpo.pair_loss(Split::Eval, &idx, false).unwrap();
    // The reference: the SFT model, as `policy.weights` names it.
    let (reference, _) = cgpo::policy::load_policy(&cfg.policy, 0).unwrap();
    let alone = |model: &dyn Policy, prompt: &str, response: &str| -> f32 {
        let p = t.encode_prompt(&prompt.into()).unwrap();
        let r = t.encode_response(response).unwrap();
        let ro = teacher_forced(vec![p], vec![r], ByteTokenizer::PAD);
        sequence_logprobs(model, &ro, false)
            .unwrap()
            .sum(D::Minus1)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0]
    };
    let col = |model: &dyn Policy, chosen: bool| -> candle_core::Tensor {
        let v: Vec<f32> = idx
            .iter()
            .map(|&i| {
                let (p, c, r) = &held_out[i];
                alone(model, p, if chosen { c } else { r })
            })
            .collect();
        candle_core::Tensor::new(v.as_slice(), &candle_core::Device::Cpu).unwrap()
    };
    let by_hand = dpo_loss(
        &col(dpo.policy(), true),
        &col(dpo.policy(), false),
        &col(reference.as_ref(), true),
        &col(reference.as_ref(), false),
        0.1,
    )
    .unwrap();
    for (a, b) in batched.margins.iter().zip(&by_hand.margins) {
        assert!(
            (a - b).abs() < 1e-4,
            "{:?} vs {:?}",
            batched.margins,
            by_hand.margins
        );
        assert!(*a != 0.0);
    }
    let (a, b) = (
        batched.loss.to_scalar::<f32>().unwrap(),
        by_hand.loss.to_scalar::<f32>().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
}

#[test]
fn bad_preference_records_refuse_the_run_unless_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    sft(dir.path());
    let good =
        r#"{"prompt": "Is 2 even or odd?", "chosen": "ANSWER: even", "rejected": "ANSWER: odd"}"#;
    let lines = [
        good,
        r#"{"prompt": "Is 3 even or odd?", "chosen": "ANSWER: odd"}"#,
        r#"{"prompt": "Is 4 even or odd?", "chosen": "", "rejected": "ANSWER: odd"}"#,
        r#"{"prompt": "Is 5 even or odd?", "chosen": "ANSWER: odd", "rejected": "ANSWER: odd"}"#,
        r#"{"prompt": "Is 6 even or odd?", "chosen": "ANSWER: even", "rejected": "ANSWER: odd. Trust me, this is what it is, no doubt at all."}"#,
        r#"{"chosen": "a", "rejected": "b", "score": 1}"#,
        good,
    ];
    write(dir.path(), "pairs.jsonl", lines.join("\n"));
    let train = r#"{"steps": 1, "batch_size": 2, "output_dir": "dpo"}"#;
    let cfg = dpo_config(
        dir.path(),
        r#"{"train": "pairs.jsonl", "max_tokens": 64}"#,
        train,
    );
    let err = match Dpo::from_config(&cfg) {
        Err(e) => e,
        Ok(_) => panic!("bad records were accepted"),
    };
    let file = dir.path().join("pairs.jsonl").display().to_string();
    let got: Vec<String> = err.data_errors().iter().map(ToString::to_string).collect();
    let want = [
        "2: field `rejected`: missing",
        "3: field `chosen`: must not be empty",
        "4: field `rejected`: identical to `chosen`",
        "5: field `rejected`: too long: 35 prompt + 60 rejected tokens exceed the limit of 64 (data.max_tokens)",
        "6: field `prompt`: missing",
        "6: field `score`: unknown field",
    ]
    .map(|w| format!("{file}:{w}"));
    assert_eq!(got, want);

    let cfg = dpo_config(
        dir.path(),
        r#"{"train": "pairs.jsonl", "max_tokens": 64, "skip_bad_records": true}"#,
        train,
    );
    let (dpo, skipped) = Dpo::from_config(&cfg).unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(
        (
            skipped[0].skipped,
            skipped[0].total,
            skipped[0].errors.len()
        ),
        (5, 7, 6)
    );
    let mut runner = StageRunner::new(dpo, &cfg.train, cfg.seed, serde_json::json!({})).unwrap();
    assert_eq!(runner.run().unwrap().steps, 1);
}
