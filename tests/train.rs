//! The multi-task trainer on TinyLm: per-task gradients merge by weight and
//! stay independent, a resumed run equals an uninterrupted one, and
//! non-finite steps are skipped and then stop the run.

use std::path::Path;
use std::sync::Arc;

mod common;

use candle_core::{Device, Tensor, Var};
use cgpo::config::{Registries, RunConfig};
use cgpo::policy::{KvCache, Policy, TinyLm, TinyLmConfig, TokenBatch};
use cgpo::train::Trainer;
use common::max_abs_diff;

use common::TWO_TASK_PROMPTS as PROMPTS;

fn config(dir: &Path, steps: u64, kl_a: f64) -> RunConfig {
    let json = format!(
        r#"{{
      "seed": 3,
      "data": {{"train": "{train}"}},
      "reward_models": {{"rm": {{"name": "lexical", "params": {{"per_word": 0.1}}}}}},
      "tasks": [
        {{"name": "short", "weight": 1.0, "reward": {{"model": "rm", "baseline": "policy_sample"}},
          "judges": [{{"name": "length", "params": {{"max_words": 3}}}}],
          "optimizer": {{"name": "crpg", "kl_max": 50.0}}, "generations_per_prompt": 2, "batch_size": 2,
          "kl": {{"coef": {kl_a}, "estimator": "k3"}}}},
        {{"name": "lower", "weight": 0.5, "reward": {{"model": "rm", "baseline": "policy_sample"}},
          "judges": [{{"name": "regex", "params": {{"pattern": "[A-Z]", "must_match": false}}}}],
          "optimizer": {{"name": "crraft", "kl_max": 50.0}}, "generations_per_prompt": 2, "batch_size": 2,
          "kl": {{"coef": 0.05, "estimator": "k1"}}}}
      ],
      "policy": {{"kind": "tiny", "size": {{"hidden_size": 32, "intermediate_size": 64, "layers": 1, "heads": 2, "kv_heads": 1, "context_len": 128}}}},
      "train": {{"steps": {steps}, "learning_rate": 0.01, "sampling": {{"max_new_tokens": 6}},
                 "checkpoint_every": 2, "output_dir": "{out}"}}
    }}"#,
        train = dir.join("prompts.jsonl").display(),
        out = dir.join("run").display()
    );
    RunConfig::from_json(&json).unwrap()
}

fn trainer(dir: &Path, steps: u64, kl_a: f64) -> Trainer {
    std::fs::write(dir.join("prompts.jsonl"), PROMPTS).unwrap();
    config(dir, steps, kl_a)
        .trainer(&Registries::default())
        .unwrap()
}

fn weights(t: &Trainer) -> Vec<Vec<u32>> {
    t.policy()
        .vars()
        .iter()
        .map(|(_, v)| {
            v.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

/// Metrics lines without the wall-clock times.
fn metrics(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("time_s");
            v
        })
        .collect()
}

fn bits(t: &Option<Tensor>) -> Vec<u32> {
    t.as_ref()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

#[test]
fn merged_gradient_is_the_weighted_sum_and_tasks_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let t = trainer(dir.path(), 4, 0.0);
    let (per_task, merged) = t.gradients().unwrap();
    assert_eq!(per_task.len(), 2);
    for (i, m) in merged.iter().enumerate() {
        let expected = ((per_task[0].grads[i].as_ref().unwrap() * 1.0).unwrap()
            + (per_task[1].grads[i].as_ref().unwrap() * 0.5).unwrap())
        .unwrap();
        let diff = max_abs_diff(m.as_ref().unwrap(), &expected);
        assert!(diff < 1e-6, "var {i}: {diff}");
    }
    assert!(per_task.iter().all(|g| g.norm > 0.0 && g.norm.is_finite()));

    // Another KL setting for task `short` changes its gradient only.
    let dir2 = tempfile::tempdir().unwrap();
    let (other, _) = trainer(dir2.path(), 4, 0.5).gradients().unwrap();
    let changed = (0..per_task[0].grads.len())
        .any(|i| bits(&per_task[0].grads[i]) != bits(&other[0].grads[i]));
    assert!(
        changed,
        "the KL penalty of task `short` had no effect on its gradient"
    );
    for i in 0..per_task[1].grads.len() {
        assert_eq!(
            bits(&per_task[1].grads[i]),
            bits(&other[1].grads[i]),
            "task `lower` changed at var {i}"
        );
    }
}

#[test]
fn resume_equals_an_uninterrupted_run() {
    let a = tempfile::tempdir().unwrap();
    let mut whole = trainer(a.path(), 4, 0.1);
    whole.run().unwrap();

    let b = tempfile::tempdir().unwrap();
    trainer(b.path(), 2, 0.1).run().unwrap();
    let mut resumed = trainer(b.path(), 4, 0.1);
    assert!(resumed.resume().unwrap());
    assert_eq!(resumed.step_count(), 2);
    resumed.run().unwrap();

    let (ma, mb) = (
        metrics(&whole.metrics_path()),
        metrics(&resumed.metrics_path()),
    );
    // A train line and a samples line per task and step.
    assert_eq!(ma.len(), 16);
    assert_eq!(ma, mb);
    assert_eq!(weights(&whole), weights(&resumed));
    let train: Vec<_> = ma.iter().filter(|m| m["kind"] == "train").collect();
    assert_eq!(train.len(), 8);
    assert!(train.iter().any(|m| m["loss"].as_f64().unwrap() != 0.0));
}

/// A policy whose differentiable forward is NaN: every step is non-finite.
struct NanPolicy(TinyLm);

impl Policy for NanPolicy {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }
    fn context_len(&self) -> usize {
        self.0.context_len()
    }
    fn device(&self) -> &Device {
        Policy::device(&self.0)
    }
    fn forward(&self, b: &TokenBatch) -> cgpo::Result<Tensor> {
        Ok((self.0.forward(b)? * f64::NAN)?)
    }
    fn forward_no_grad(&self, b: &TokenBatch) -> cgpo::Result<Tensor> {
        self.0.forward_no_grad(b)
    }
    fn decode(&self, b: &TokenBatch, c: &mut KvCache) -> cgpo::Result<Tensor> {
        self.0.decode(b, c)
    }
    fn vars(&self) -> Vec<(String, Var)> {
        self.0.vars()
    }
    fn save(&self, p: &Path) -> cgpo::Result<()> {
        self.0.save(p)
    }
    fn load(&mut self, p: &Path) -> cgpo::Result<()> {
        self.0.load(p)
    }
    fn frozen(&self) -> cgpo::Result<Box<dyn Policy>> {
        self.0.frozen()
    }
}

#[test]
fn non_finite_steps_are_skipped_then_stop_the_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompts.jsonl"), PROMPTS).unwrap();
    let mut cfg = config(dir.path(), 10, 0.0);
    cfg.train.max_consecutive_skips = 3;
    let registries = Registries::default();
    let tasks = cfg.build_tasks(&registries).unwrap();
    let train = cfg.read_strata(&dir.path().join("prompts.jsonl")).unwrap();
    let tiny = TinyLm::new(
        &TinyLmConfig {
            hidden_size: 32,
            intermediate_size: 64,
            layers: 1,
            heads: 2,
            kv_heads: 1,
            context_len: 128,
        },
        3,
    )
    .unwrap();
    let tokenizer = Arc::new(tiny.tokenizer);
    let before: Vec<Vec<f32>> = tiny
        .vars()
        .iter()
        .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let mut builder = Trainer::builder(Box::new(NanPolicy(tiny)), tokenizer)
        .seed(cfg.seed)
        .train_config(cfg.train.clone());
    for (task, prompts) in tasks.into_iter().zip(train) {
        builder = builder.task(task, prompts, Vec::<Arc<cgpo::data::PromptRecord>>::new());
    }
    let mut t = builder.build().unwrap();
    let err = t.run().unwrap_err().to_string();
    assert!(err.contains("3 consecutive steps"), "{err}");
    // Checkpoint at step 2 was written before the third skip; weights never moved.
    assert!(err.contains("step-000002"), "{err}");
    let after: Vec<Vec<f32>> = t
        .policy()
        .vars()
        .iter()
        .map(|(_, v)| v.flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    assert_eq!(before, after);
    let lines = metrics(&t.metrics_path());
    let train: Vec<_> = lines.iter().filter(|m| m["kind"] == "train").collect();
    assert!(!train.is_empty() && train.iter().all(|m| m["skipped"] == true));
}

#[test]
fn the_five_task_example_config_is_valid() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/configs/paper_five_tasks.json"
    );
    let cfg = RunConfig::from_file(path).unwrap();
    assert_eq!(
        cfg.task_names(),
        ["chat", "instruction", "math", "code", "safety"]
    );
    let names: Vec<&str> = cfg
        .tasks
        .iter()
        .map(|t| t.optimizer.name.as_str())
        .collect();
    assert_eq!(names, ["crraft", "crpg", "crpg", "crpg", "codpo"]);
}

#[test]
fn evaluation_lines_follow_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompts.jsonl"), PROMPTS).unwrap();
    std::fs::write(
        dir.path().join("eval.jsonl"),
        PROMPTS.replace("\"id\": \"", "\"id\": \"eval-"),
    )
    .unwrap();
    let mut cfg = config(dir.path(), 2, 0.0);
    cfg.data.eval = Some(dir.path().join("eval.jsonl"));
    cfg.train.eval_every = 1;
    cfg.train.eval_prompts = 2;
    let mut t = cfg.trainer(&Registries::default()).unwrap();
    t.run().unwrap();
    let lines = metrics(&t.metrics_path());
    let eval: Vec<_> = lines.iter().filter(|m| m["kind"] == "eval").collect();
    assert_eq!(eval.len(), 4, "two evaluations of two tasks");
    assert!(eval.iter().all(|m| m["n"] == 2
        && m["split"] == "eval"
        && m["eval_pass_rate"].as_f64().is_some()
        && m["pass_ci95"].as_array().is_some_and(|ci| ci.len() == 2)));
    assert_eq!(eval[2]["step"], 2);
}

#[test]
fn an_uncalibrated_task_optimizes_the_raw_reward() {
    let dir = tempfile::tempdir().unwrap();
    let calibrated = trainer(dir.path(), 1, 0.0);
    let (with, _) = calibrated.gradients().unwrap();

    let dir2 = tempfile::tempdir().unwrap();
    std::fs::write(dir2.path().join("prompts.jsonl"), PROMPTS).unwrap();
    let mut cfg = config(dir2.path(), 1, 0.0);
    cfg.tasks[0].reward.calibrated = false;
    let raw = cfg.trainer(&Registries::default()).unwrap();
    let (without, _) = raw.gradients().unwrap();
    // Same rollouts (same seed), another reward for task `short` only.
    let changed =
        (0..with[0].grads.len()).any(|i| bits(&with[0].grads[i]) != bits(&without[0].grads[i]));
    assert!(
        changed,
        "`reward.calibrated: false` had no effect on the loss"
    );
    for i in 0..with[1].grads.len() {
        assert_eq!(bits(&with[1].grads[i]), bits(&without[1].grads[i]));
    }
}

/// The loss seam from a config: a loss the program registers by name is
/// built with its settings and trains like a built-in; without the
/// registration the name is an error naming the key.
#[test]
fn a_loss_registered_by_the_program_trains_from_a_config() {
    use cgpo::optim::{LossInputs, LossOutput, LossSpec, TaskLoss};

    /// Behaviour cloning of the positive samples, scaled.
    #[derive(Debug)]
    struct PositiveNll {
        scale: f64,
    }
    impl TaskLoss for PositiveNll {
        fn name(&self) -> &str {
            "positive_nll"
        }
        fn loss(&self, x: &LossInputs) -> cgpo::Result<LossOutput> {
            let w: Vec<f32> = x
                .positive
                .iter()
                .map(|&p| if p { -(self.scale as f32) } else { 0.0 })
                .collect();
            let w = Tensor::new(w.as_slice(), x.seq_logp.device())?;
            let loss = (x.seq_logp.mul(&w)?.sum_all()? / x.positive.len().max(1) as f64)?;
            Ok(LossOutput {
                loss,
                stats: vec![("scale", self.scale)],
            })
        }
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompts.jsonl"), PROMPTS).unwrap();
    let mut cfg = config(dir.path(), 1, 0.0);
    cfg.tasks[0].optimizer = LossSpec::new("positive_nll", serde_json::json!({"scale": 2.0}));
    let err = cfg
        .trainer(&Registries::default())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("tasks[0].optimizer.name") && err.contains("unknown optimizer `positive_nll`"),
        "{err}"
    );
    let mut registries = Registries::default();
    registries.losses.register("positive_nll", |params| {
        let scale = params["scale"]
            .as_f64()
            .ok_or_else(|| cgpo::Error::config("scale", "a number is needed"))?;
        Ok(Arc::new(PositiveNll { scale }))
    });
    let mut t = cfg.trainer(&registries).unwrap();
    let summary = t.run().unwrap();
    let short = &summary.last[0];
    assert_eq!(short.loss_stats["scale"], 2.0);
    assert!(short.loss.is_finite() && short.grad_norm.is_finite());
    cfg.tasks[0].optimizer = LossSpec::new("positive_nll", serde_json::json!({}));
    let err = cfg.trainer(&registries).err().unwrap().to_string();
    assert!(err.contains("tasks[0].optimizer.scale"), "{err}");
}

/// Several rewards per task (GDPO's `normalize_then_sum`) change the loss
/// of their task only, and the metrics log each reward.
#[test]
fn extra_rewards_reach_the_loss_of_their_task() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = trainer(dir.path(), 1, 0.0).gradients().unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompts.jsonl"), PROMPTS).unwrap();
    let mut cfg = config(dir.path(), 1, 0.0);
    let rm2 = serde_json::json!({"name": "lexical", "params": {"per_word": -0.3}});
    cfg.reward_models
        .insert("rm2".into(), serde_json::from_value(rm2).unwrap());
    let reward = &mut cfg.tasks[0].reward;
    reward.extra =
        vec![serde_json::from_value(serde_json::json!({"model": "rm2", "weight": 2.0})).unwrap()];
    reward.aggregation = serde_json::from_value(serde_json::json!("normalize_then_sum")).unwrap();
    let mut t = cfg.trainer(&Registries::default()).unwrap();
    let (grads, _) = t.gradients().unwrap();
    let changed = |task: usize| {
        (0..base[task].grads.len())
            .any(|i| bits(&base[task].grads[i]) != bits(&grads[task].grads[i]))
    };
    assert!(changed(0), "the extra reward had no effect on the loss");
    assert!(!changed(1), "the extra reward changed the other task");
    t.run().unwrap();
    let lines = metrics(&t.metrics_path());
    let short = lines.iter().find(|m| m["task"] == "short").unwrap();
    // per_word -0.3: the mean score of the extra model is negative.
    assert!(short["rewards"]["rm2"].as_f64().unwrap() < 0.0, "{short}");
    assert!(
        short["loss_stats"]["combined_reward"].as_f64().is_some(),
        "{short}"
    );
}

/// The KL penalty in the reward: zero while the policy is the reference,
/// then `coef * Σ_t k3` of the behaviour policy, logged per step; the
/// penalty in the loss is then off for that task.
#[test]
fn the_kl_in_the_reward_is_the_behaviour_policys_and_grows_once_it_moves() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("prompts.jsonl"), PROMPTS).unwrap();
    let mut cfg = config(dir.path(), 3, 0.0);
    cfg.tasks[0].kl = serde_json::from_value(
        serde_json::json!({"coef": 0.5, "estimator": "k3", "placement": "reward"}),
    )
    .unwrap();
    let mut t = cfg.trainer(&Registries::default()).unwrap();
    t.run().unwrap();
    let lines = metrics(&t.metrics_path());
    let short: Vec<_> = lines
        .iter()
        .filter(|m| m["task"] == "short" && m["kind"] == "train")
        .collect();
    let penalty = |m: &serde_json::Value| m["loss_stats"]["kl_reward_penalty"].as_f64().unwrap();
    assert!(penalty(short[0]) < 1e-6, "{}", short[0]);
    // k3 is non-negative and, once the policy moved, positive: the loss saw
    // rewards lowered by 0.5 * Σ_t k3 of the sampled responses.
    let last = short.last().unwrap();
    assert!(penalty(last) > 1e-4, "{last}");
    assert!(last["loss_stats"].get("kl_penalty").is_none(), "{last}");
}
