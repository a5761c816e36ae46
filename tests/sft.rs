//! SFT on TinyLm: on the synthetic parity task the held-out loss falls and
//! greedy decoding then produces the demonstrated format on held-out
//! prompts; bad records refuse the run unless skipped, and are counted.

use std::path::Path;

use cgpo::pipeline::synthetic::{jsonl, questions, sft_records};
use cgpo::pipeline::{Sft, SftConfig, StageConfig, StageRunner};
use cgpo::policy::{ByteTokenizer, TextTokenizer};
use cgpo::rollout::{generate, SamplingConfig};
use cgpo::Error;

const SIZE: &str = r#"{"hidden_size": 32, "intermediate_size": 64, "layers": 2, "heads": 2, "kv_heads": 1, "context_len": 96}"#;

fn config(dir: &Path, extra_data: &str, train: &str) -> SftConfig {
    let json = format!(
        r#"{{"seed": 3, "data": {{"train": "train.jsonl", "eval": "eval.jsonl"{extra_data}}},
            "policy": {{"kind": "tiny", "size": {SIZE}}},
            "train": {train}}}"#
    );
    let path = dir.join("sft.json");
    std::fs::write(&path, json).unwrap();
    SftConfig::from_file(&path).unwrap()
}

#[test]
fn held_out_loss_falls_and_the_format_is_learned() {
    let dir = tempfile::tempdir().unwrap();
    // Templates 0-2 to train on; template 3 is never seen in training.
    std::fs::write(
        dir.path().join("train.jsonl"),
        jsonl(sft_records(&questions(0..3), 30)),
    )
    .unwrap();
    let held_out = questions(3..4);
    std::fs::write(
        dir.path().join("eval.jsonl"),
        jsonl(sft_records(&held_out, 10)),
    )
    .unwrap();
    let cfg = config(
        dir.path(),
        "",
        r#"{"steps": 60, "batch_size": 16, "learning_rate": 0.01, "warmup_steps": 5, "eval_every": 30}"#,
    );
    let (sft, skipped) = Sft::from_config(&cfg).unwrap();
    assert!(skipped.is_empty());
    let (seed, _, _, train) = cfg.sections();
    let mut runner = StageRunner::new(sft, train, seed, serde_json::json!({})).unwrap();
    let summary = runner.run().unwrap();
    let (first, last) = (summary.first_eval.unwrap(), summary.last_eval.unwrap());
    eprintln!(
        "held-out loss per token: {:.4} at step 0, {:.4} at step {}",
        first.loss, last.loss, last.step
    );
    assert!(first.loss > 4.0, "a random model: {}", first.loss);
    assert!(
        last.loss < 0.1 * first.loss,
        "{} -> {}",
        first.loss,
        last.loss
    );

    let t = ByteTokenizer;
    let prompts: Vec<Vec<u32>> = held_out
        .iter()
        .map(|q| t.encode_prompt(&q.text().as_str().into()).unwrap())
        .collect();
    let cfg = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 20,
        ..SamplingConfig::default()
    };
    let out = generate(runner.stage().policy(), &t, &prompts, &cfg).unwrap();
    let format = regex::Regex::new(r"^ANSWER: (even|odd)$").unwrap();
    let right = held_out
        .iter()
        .zip(&out.texts)
        .filter(|(q, a)| **a == format!("ANSWER: {}", q.parity()))
        .count();
    eprintln!(
        "greedy answers to held-out prompts: {:?}; {right}/10 with the right parity",
        out.texts
    );
    for (text, finished) in out.texts.iter().zip(&out.finished) {
        assert!(format.is_match(text) && *finished, "{text:?}");
    }

    // Checkpoint and metrics as the trainer writes them.
    let latest = std::fs::read_to_string(dir.path().join("runs/sft/latest")).unwrap();
    assert_eq!(latest.trim(), "step-000060");
    assert!(dir
        .path()
        .join("runs/sft/step-000060/policy.safetensors")
        .is_file());
    let metrics = std::fs::read_to_string(&summary.metrics).unwrap();
    let kinds: Vec<String> = metrics
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "train").count(), 60);
    assert_eq!(kinds.iter().filter(|k| *k == "eval").count(), 3); // steps 0, 30, 60
}

#[test]
fn bad_records_refuse_the_run_unless_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let good = r#"{"prompt": "Is 2 even or odd?", "response": "ANSWER: even"}"#;
    let lines = [
        good,
        r#"{"prompt": "Is 3 even or odd?"}"#,
        r#"{"prompt": "Is 4 even or odd?", "response": ""}"#,
        r#"{"prompt": "Is 5 even or odd?", "response": "ANSWER: odd. I am certain, absolutely certain, beyond any doubt."}"#,
        r#"{"prompt": "Is 6 even or odd?", "response": "ANSWER: even""#,
        good,
    ];
    std::fs::write(dir.path().join("train.jsonl"), lines.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("eval.jsonl"),
        format!("{good}\n{{\"response\": \"x\"}}\n"),
    )
    .unwrap();
    let train = r#"{"steps": 1, "batch_size": 2}"#;
    let err = match Sft::from_config(&config(dir.path(), r#", "max_tokens": 64"#, train)) {
        Err(e) => e,
        Ok(_) => panic!("bad records were accepted"),
    };
    assert!(matches!(err, Error::Data(_)));
    let f = |name: &str| dir.path().join(name).display().to_string();
    let got: Vec<String> = err.data_errors().iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 5, "{got:#?}");
    assert_eq!(
        got[0],
        format!("{}:2: field `response`: missing", f("train.jsonl"))
    );
    assert_eq!(
        got[1],
        format!(
            "{}:3: field `response`: must not be empty",
            f("train.jsonl")
        )
    );
    assert!(got[2].starts_with(&format!("{}:4: field `response`: too long: 35 prompt + 65 response tokens exceed the limit of 64 (data.max_tokens)", f("train.jsonl"))), "{}", got[2]);
    assert!(
        got[3].starts_with(&format!("{}:5: invalid JSON", f("train.jsonl"))),
        "{}",
        got[3]
    );
    assert_eq!(
        got[4],
        format!("{}:2: field `prompt`: missing", f("eval.jsonl"))
    );

    let cfg = config(
        dir.path(),
        r#", "max_tokens": 64, "skip_bad_records": true"#,
        train,
    );
    let (sft, skipped) = Sft::from_config(&cfg).unwrap();
    let counts: Vec<(usize, usize)> = skipped.iter().map(|r| (r.skipped, r.total)).collect();
    assert_eq!(counts, [(4, 6), (1, 2)]);
    assert_eq!(
        skipped[0].to_string(),
        format!("{}: skipped 4 of 6 records", f("train.jsonl"))
    );
    let (seed, _, _, train) = cfg.sections();
    let mut runner = StageRunner::new(sft, train, seed, serde_json::json!({})).unwrap();
    assert_eq!(runner.run().unwrap().steps, 1);
}
