//! What the trainer reports about each task at each step (docs/monitoring.md)
//! and what the hacking monitor's actions do, on TinyLm.

use std::path::Path;

mod common;

use cgpo::config::{Registries, RunConfig};
use cgpo::train::Trainer;
use serde_json::Value;

use common::TWO_TASK_PROMPTS as PROMPTS;

/// Two tasks (weights 1 and 0.5) with the given `train.monitor` settings.
fn config(dir: &Path, steps: u64, monitor: &str) -> cgpo::Result<RunConfig> {
    std::fs::write(dir.join("prompts.jsonl"), PROMPTS).unwrap();
    let json = format!(
        r#"{{
      "seed": 5,
      "data": {{"train": "{train}"}},
      "reward_models": {{"rm": {{"name": "lexical", "params": {{"per_word": 0.1}}}}}},
      "tasks": [
        {{"name": "short", "weight": 1.0, "reward": {{"model": "rm", "baseline": "policy_sample"}},
          "judges": [{{"name": "length", "params": {{"max_words": 3}}}}, {{"name": "regex", "params": {{"pattern": "zzz", "must_match": false}}}}],
          "optimizer": {{"name": "crpg", "kl_max": 50.0}}, "generations_per_prompt": 2, "batch_size": 2,
          "kl": {{"coef": 0.1, "estimator": "k3"}}}},
        {{"name": "lower", "weight": 0.5, "reward": {{"model": "rm", "baseline": "policy_sample"}},
          "judges": [{{"name": "regex", "params": {{"pattern": "[A-Z]", "must_match": false}}}}],
          "optimizer": {{"name": "pg"}}, "generations_per_prompt": 2, "batch_size": 2,
          "kl": {{"coef": 0.05, "estimator": "full"}}}}
      ],
      "policy": {{"kind": "tiny", "size": {{"hidden_size": 32, "intermediate_size": 64, "layers": 1, "heads": 2, "kv_heads": 1, "context_len": 128}}}},
      "train": {{"steps": {steps}, "learning_rate": 0.01, "sampling": {{"max_new_tokens": 6}},
                 "output_dir": "{out}", "monitor": {monitor}}}
    }}"#,
        train = dir.join("prompts.jsonl").display(),
        out = dir.join("run").display()
    );
    RunConfig::from_json(&json)
}

fn trainer(dir: &Path, steps: u64, monitor: &str) -> Trainer {
    config(dir, steps, monitor)
        .unwrap()
        .trainer(&Registries::default())
        .unwrap()
}

fn lines(dir: &Path, kind: &str) -> Vec<Value> {
    std::fs::read_to_string(dir.join("run/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] == kind)
        .collect()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn every_train_line_has_the_documented_fields_with_consistent_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(dir.path(), 2, "{}");
    let vocab = t.policy().vocab_size() as f64;
    // The gradients step 0 will take, and their cosines to the merge.
    let (per_task, merged) = t.gradients().unwrap();
    let merged_norm = cgpo::train::merge::global_norm(&merged).unwrap();
    let cosines: Vec<f64> = per_task
        .iter()
        .map(|g| cgpo::train::merge::dot(&g.grads, &merged).unwrap() / (g.norm * merged_norm))
        .collect();
    t.run().unwrap();
    let train = lines(dir.path(), "train");
    assert_eq!(train.len(), 4);
    for m in &train {
        let task = m["task"].as_str().unwrap();
        let n = f(&m["samples"]);
        // Per judge: pass + violation + error = 1.
        let judges = m["judges"].as_object().unwrap();
        assert_eq!(judges.len(), if task == "short" { 2 } else { 1 }, "{m}");
        for (name, rates) in judges {
            let total = f(&m["pass_rate_by_judge"][name])
                + f(&rates["violation_rate"])
                + f(&rates["error_rate"]);
            assert!((total - 1.0).abs() < 1e-9, "{name}: {total}");
            assert!(f(&rates["violation_rate"]) * n == (f(&rates["violation_rate"]) * n).round());
        }
        for key in ["reward_raw_quantiles", "reward_calibrated_quantiles"] {
            let q = &m[key];
            assert!(
                f(&q["p10"]) <= f(&q["p50"]) && f(&q["p50"]) <= f(&q["p90"]),
                "{key}: {q}"
            );
        }
        let truncated = f(&m["truncated"]);
        assert!((0.0..=1.0).contains(&truncated));
        assert!((truncated * n - (truncated * n).round()).abs() < 1e-9);
        // A freshly initialised TinyLm is close to uniform over its vocabulary.
        let entropy = f(&m["entropy"]);
        assert!(
            entropy > 1.0 && entropy <= vocab.ln() + 1e-6,
            "entropy {entropy}"
        );
        let cos = f(&m["grad_cosine"]);
        assert!((-1.0..=1.0).contains(&cos));
        let estimator = m["kl_estimator"].as_str().unwrap();
        assert_eq!(estimator, if task == "short" { "k3" } else { "full" });
        // The exact KL is reported where the reference's logits are at hand.
        assert_eq!(m.get("kl_exact").is_some(), task == "lower", "{m}");
        assert!(f(&m["time_s"]["metrics"]) >= 0.0);
    }
    // Step 0's cosines are those of the gradients computed beforehand.
    for (l, expected) in cosines.iter().enumerate() {
        let got = f(&train[l]["grad_cosine"]);
        assert!(
            (got - expected).abs() < 1e-4,
            "task {l}: {got} vs {expected}"
        );
    }
    // Step 0: the policy is the reference, so the exact KL is ~0; step 1 it moved.
    assert!(f(&train[1]["kl_exact"]).abs() < 1e-4, "{}", train[1]);
    assert!(f(&train[3]["kl_exact"]) > 0.0, "{}", train[3]);
    // Two responses per task and step, with their verdict and reward.
    let samples = lines(dir.path(), "samples");
    assert_eq!(samples.len(), 4);
    for s in &samples {
        let list = s["samples"].as_array().unwrap();
        assert_eq!(list.len(), 2, "{s}");
        assert!(list[0]["prompt"].as_str().unwrap().ends_with('.'), "{s}");
        assert!(list[0]["passed"].is_boolean() && list[0]["reward_raw"].is_number());
    }
}

#[test]
fn an_alarm_with_action_stop_ends_the_run_with_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(
        dir.path(),
        8,
        r#"{"window": 1, "max_kl": 1e-6, "action": "stop"}"#,
    );
    let summary = t.run().unwrap();
    assert!(summary.steps < 8, "ran all {} steps", summary.steps);
    let reason = summary.stopped.expect("stopped");
    assert!(reason.contains("KL"), "{reason}");
    assert!(summary.checkpoint.is_some());
    let alarms = lines(dir.path(), "alarm");
    assert!(!alarms.is_empty());
    assert_eq!(alarms[0]["rule"], "kl_drift");
    assert_eq!(alarms[0]["action"], "stop");
    assert_eq!(f(&alarms[0]["step"]) as u64 + 1, summary.steps);
    assert_eq!(summary.alarms.len(), alarms.len());
}

#[test]
fn an_alarm_with_action_raise_kl_multiplies_the_tasks_coefficient() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(
        dir.path(),
        4,
        r#"{"window": 1, "max_kl": 1e-6, "action": "raise_kl", "kl_factor": 3.0}"#,
    );
    t.run().unwrap();
    let alarms = lines(dir.path(), "alarm");
    let first = alarms
        .iter()
        .find(|a| a["task"] == "short")
        .expect("an alarm on `short`");
    let step = f(&first["step"]) as u64;
    assert!(step < 3, "fired at {step}");
    let coef = |s: u64| {
        lines(dir.path(), "train")
            .iter()
            .find(|m| m["task"] == "short" && m["step"] == s)
            .map(|m| f(&m["kl_coef"]))
            .unwrap()
    };
    assert!((coef(step) - 0.1).abs() < 1e-12);
    assert!((coef(step + 1) - 0.3).abs() < 1e-12, "{}", coef(step + 1));
}

#[test]
fn bad_monitor_settings_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let err = config(dir.path(), 2, r#"{"window": 0}"#)
        .and_then(|c| c.trainer(&Registries::default()))
        .err()
        .expect("window 0 is refused")
        .to_string();
    assert!(err.contains("train.monitor.window"), "{err}");
    let json = r#"{"monitor": {"windo": 3}}"#;
    let err = serde_json::from_str::<cgpo::train::TrainConfig>(json).unwrap_err();
    assert!(err.to_string().contains("windo"), "{err}");
}
