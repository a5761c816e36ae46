//! Bradley-Terry reward models on TinyLm, made the way real ones are: from
//! an SFT backbone, on preference pairs. On the synthetic parity task
//! (`pipeline::synthetic`) a learnable rule (the correct answer is
//! preferred) reaches >= 90% held-out pairwise accuracy; a length bias in
//! the pairs (the longer answer preferred in 80% of pairs, whichever is
//! correct) yields a model that prefers long wrong answers to short correct
//! ones. Held-out pairs use a filler sentence training never saw.

use std::path::{Path, PathBuf};

use cgpo::data::PromptRecord;
use cgpo::pipeline::synthetic::{answer, jsonl, parity_pairs, questions, sft_records, Rule};
use cgpo::pipeline::{
    RewardTrainConfig, RewardTraining, Sft, SftConfig, StageConfig, StageRunner, StageSummary,
};
use cgpo::reward::{BradleyTerryReward, RewardModel, RewardModelSpec, RewardRegistry};

const SIZE: &str = r#"{"hidden_size": 32, "intermediate_size": 64, "layers": 2, "heads": 2, "kv_heads": 1, "context_len": 96}"#;

/// The SFT model every reward model starts from.
fn sft(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("sft.jsonl"),
        jsonl(sft_records(&questions(0..1), 10)),
    )
    .unwrap();
    let json = format!(
        r#"{{"seed": 1, "data": {{"train": "sft.jsonl"}}, "policy": {{"kind": "tiny", "size": {SIZE}}},
            "train": {{"steps": 100, "batch_size": 10, "learning_rate": 0.01, "output_dir": "sft"}}}}"#
    );
    std::fs::write(dir.join("sft.json"), json).unwrap();
    let cfg = SftConfig::from_file(dir.join("sft.json")).unwrap();
    let (stage, _) = Sft::from_config(&cfg).unwrap();
    StageRunner::new(stage, &cfg.train, cfg.seed, serde_json::json!({}))
        .unwrap()
        .run()
        .unwrap();
    dir.join("sft")
}

/// Trains a reward model from the SFT weights on pairs labelled by `rule`;
/// the held-out pairs always prefer the correct answer.
fn train(dir: &Path, name: &str, rule: Rule) -> (RewardTraining, StageSummary) {
    let q = questions(0..1);
    let train = parity_pairs(&q, 0..3, 400, rule, 7);
    let held_out = parity_pairs(&q, 3..4, 40, Rule::Correct, 8);
    std::fs::write(
        dir.join(format!("{name}.jsonl")),
        jsonl(train.iter().map(|p| p.record())),
    )
    .unwrap();
    std::fs::write(
        dir.join("held_out.jsonl"),
        jsonl(held_out.iter().map(|p| p.record())),
    )
    .unwrap();
    let json = format!(
        r#"{{"seed": 2, "data": {{"train": "{name}.jsonl", "eval": "held_out.jsonl"}},
            "policy": {{"kind": "tiny", "size": {SIZE}, "weights": "sft"}},
            "train": {{"steps": 100, "batch_size": 16, "learning_rate": 0.003, "warmup_steps": 10,
                       "output_dir": "{name}"}}}}"#
    );
    std::fs::write(dir.join(format!("{name}.json")), json).unwrap();
    let cfg = RewardTrainConfig::from_file(dir.join(format!("{name}.json"))).unwrap();
    let (stage, skipped) = RewardTraining::from_config(&cfg).unwrap();
    assert!(skipped.is_empty());
    let mut runner = StageRunner::new(stage, &cfg.train, cfg.seed, serde_json::json!({})).unwrap();
    let summary = runner.run().unwrap();
    (runner.into_stage(), summary)
}

/// Over every held-out question: the fraction of (long wrong, short
/// correct) answers where the model scores the long wrong one higher.
fn prefers_long_wrong(rm: &dyn RewardModel) -> f64 {
    let q = questions(0..1);
    let records: Vec<PromptRecord> = q
        .iter()
        .map(|q| PromptRecord::new(format!("{}", q.n), q.text().as_str()))
        .collect();
    let long_wrong: Vec<String> = q.iter().map(|q| answer(q.wrong(), Some(3))).collect();
    let short_right: Vec<String> = q.iter().map(|q| answer(q.parity(), None)).collect();
    let views = |answers: &[String]| -> Vec<f32> {
        let v: Vec<_> = records
            .iter()
            .zip(answers)
            .map(|(r, a)| r.view(a))
            .collect();
        rm.score(&v).unwrap()
    };
    let (a, b) = (views(&long_wrong), views(&short_right));
    a.iter().zip(&b).filter(|(a, b)| a > b).count() as f64 / q.len() as f64
}

#[test]
fn learnable_preferences_are_learned_and_a_length_bias_is_learned_too() {
    let dir = tempfile::tempdir().unwrap();
    sft(dir.path());

    let (fair, summary) = train(dir.path(), "fair", Rule::Correct);
    let (first, last) = (summary.first_eval.unwrap(), summary.last_eval.unwrap());
    let accuracy = last.stats["accuracy"];
    eprintln!(
        "fair preferences: held-out accuracy {:.3} (loss {:.4} -> {:.4}, margin {:.3})",
        accuracy, first.loss, last.loss, last.stats["margin"]
    );
    assert!(accuracy >= 0.9, "{accuracy}");
    assert!(last.loss < first.loss);

    let (biased, summary) = train(dir.path(), "biased", Rule::Longer(0.8));
    let biased_accuracy = summary.last_eval.unwrap().stats["accuracy"];
    let fair_rate = prefers_long_wrong(fair.model());
    let biased_rate = prefers_long_wrong(biased.model());
    eprintln!(
        "long wrong answer scored above the short correct one: {:.0}% of held-out questions (fair data), {:.0}% (length-biased data); held-out accuracy of the biased model {:.3}",
        100.0 * fair_rate,
        100.0 * biased_rate,
        biased_accuracy
    );
    assert!(biased_rate >= 0.8, "{biased_rate}");
    assert!(fair_rate <= 0.2, "{fair_rate}");

    // The trained model, from its output directory through the registry,
    // scores as it did in training.
    let spec: RewardModelSpec = serde_json::from_value(serde_json::json!({
        "name": "bradley_terry", "params": {"path": dir.path().join("fair"), "batch_size": 3}
    }))
    .unwrap();
    let loaded = RewardRegistry::with_builtins().build("rm", &spec).unwrap();
    let record = PromptRecord::new("q", "Is 4 even or odd?");
    let views: Vec<_> = [
        "ANSWER: even",
        "ANSWER: odd",
        "ANSWER: odd. Sure.",
        "ANSWER: even. No doubt.",
    ]
    .iter()
    .map(|a| record.view(a))
    .collect();
    let trained: &BradleyTerryReward = fair.model();
    let (a, b) = (
        loaded.score(&views).unwrap(),
        trained.score(&views).unwrap(),
    );
    for (a, b) in a.iter().zip(&b) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
    }
    assert_eq!(loaded.name(), "rm");
}
