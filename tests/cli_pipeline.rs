//! The four stages from the command line on the bundled example
//! (`examples/configs/pipeline_*.json`, `examples/data/pipeline/`), copied
//! to a temporary directory and run as docs/pipeline.md writes them, for a
//! few steps each: `cgpo sft`, `cgpo reward train`, `cgpo dpo`, then
//! `cgpo train` from the warm-up with the trained reward model. Also:
//! `--resume`, config keys and bad records in errors, and the bundled data
//! being what `pipeline::synthetic` generates.

use std::path::{Path, PathBuf};
use std::process::Command;

use cgpo::pipeline::synthetic::{answer, jsonl, parity_pairs, questions, sft_records, Rule};
use serde_json::{json, Value};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The bundled data files and how they are made.
fn bundled_data() -> Vec<(&'static str, String)> {
    let q0 = questions(0..1);
    // DPO's held-out pairs: both answers with the filler training never
    // shows, so that the margin measures the answer, not the filler's tokens.
    let dpo_held_out = q0.iter().map(|q| {
        json!({"prompt": q.text(), "chosen": answer(q.parity(), Some(3)), "rejected": answer(q.wrong(), Some(3))})
    });
    let prompts = q0.iter().map(|q| {
        json!({"id": format!("parity-{}", q.n), "prompt": q.text(), "task": "parity", "metadata": {"answer": q.parity()}})
    });
    let pairs = |fillers, count, seed| {
        jsonl(
            parity_pairs(&q0, fillers, count, Rule::Correct, seed)
                .iter()
                .map(|p| p.record()),
        )
    };
    vec![
        ("sft.jsonl", jsonl(sft_records(&questions(0..2), 20))),
        ("sft_eval.jsonl", jsonl(sft_records(&questions(3..4), 10))),
        ("preferences.jsonl", pairs(0..3, 200, 1)),
        // The reward model's held-out pairs: one answer long, with the
        // filler training never shows.
        ("preferences_eval.jsonl", pairs(3..4, 20, 2)),
        ("dpo_eval.jsonl", jsonl(dpo_held_out)),
        ("prompts.jsonl", jsonl(prompts)),
    ]
}

#[test]
fn bundled_data_is_what_the_generator_makes() {
    let dir = Path::new(ROOT).join("examples/data/pipeline");
    for (name, text) in bundled_data() {
        let path = dir.join(name);
        if std::env::var_os("CGPO_BLESS").is_some() {
            std::fs::write(&path, &text).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == text,
            "{} differs from pipeline::synthetic's output; regenerate with CGPO_BLESS=1 cargo test --test cli_pipeline",
            path.display()
        );
    }
}

fn cgpo(cwd: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cgpo"))
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run_ok(cwd: &Path, args: &[&str]) -> String {
    let (ok, stderr) = cgpo(cwd, args);
    assert!(ok, "cgpo {}: {stderr}", args.join(" "));
    stderr
}

/// The example's configs and data in `<tmp>/examples/...`, outputs in
/// `<tmp>/runs/pipeline/...` as in the repository.
fn copy_example(tmp: &Path) {
    let configs = tmp.join("examples/configs");
    std::fs::create_dir_all(&configs).unwrap();
    for stage in ["sft", "reward", "dpo", "cgpo"] {
        let name = format!("pipeline_{stage}.json");
        std::fs::copy(
            Path::new(ROOT).join("examples/configs").join(&name),
            configs.join(&name),
        )
        .unwrap();
    }
    let data = tmp.join("examples/data/pipeline");
    std::fs::create_dir_all(&data).unwrap();
    for (name, _) in bundled_data() {
        std::fs::copy(
            Path::new(ROOT).join("examples/data/pipeline").join(name),
            data.join(name),
        )
        .unwrap();
    }
}

fn metrics(path: PathBuf) -> Vec<Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn latest(dir: PathBuf) -> String {
    std::fs::read_to_string(dir.join("latest"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn the_four_stages_run_from_the_bundled_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    copy_example(root);
    let runs = root.join("runs/pipeline");

    let out = run_ok(
        root,
        &[
            "sft",
            "--config",
            "examples/configs/pipeline_sft.json",
            "--steps",
            "2",
        ],
    );
    assert!(
        out.contains("2 steps; metrics:") && out.contains("eval at step 0"),
        "{out}"
    );
    let m = metrics(runs.join("sft/metrics.jsonl"));
    let kinds: Vec<(&str, u64)> = m
        .iter()
        .map(|l| (l["kind"].as_str().unwrap(), l["step"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("eval", 0), ("train", 0), ("train", 1), ("eval", 2)]
    );
    assert!(m[1]["loss"].as_f64().unwrap() > 0.0 && m[1]["grad_norm"].as_f64().is_some());
    assert_eq!(latest(runs.join("sft")), "step-000002");
    assert!(runs.join("sft/step-000002/policy.safetensors").is_file());
    assert!(runs.join("sft/step-000002/optimizer.safetensors").is_file());

    // Resume continues from the checkpoint; its metrics lines are kept.
    let out = run_ok(
        root,
        &[
            "sft",
            "--config",
            "examples/configs/pipeline_sft.json",
            "--steps",
            "3",
            "--resume",
        ],
    );
    assert!(out.contains("resumed at step 2"), "{out}");
    let m = metrics(runs.join("sft/metrics.jsonl"));
    assert_eq!(m.len(), 6);
    assert_eq!(
        (m[4]["kind"].as_str(), m[4]["step"].as_u64()),
        (Some("train"), Some(2))
    );
    assert_eq!(latest(runs.join("sft")), "step-000003");

    let out = run_ok(
        root,
        &[
            "reward",
            "train",
            "--config",
            "examples/configs/pipeline_reward.json",
            "--steps",
            "2",
        ],
    );
    assert!(out.contains("accuracy"), "{out}");
    let rm = runs.join("reward").join(latest(runs.join("reward")));
    for f in [
        "policy.safetensors",
        "score_head.safetensors",
        "reward_model.json",
        "state.json",
    ] {
        assert!(rm.join(f).is_file(), "{f}");
    }
    assert!(metrics(runs.join("reward/metrics.jsonl"))[1]["accuracy"].is_number());

    let out = run_ok(
        root,
        &[
            "dpo",
            "--config",
            "examples/configs/pipeline_dpo.json",
            "--steps",
            "2",
        ],
    );
    assert!(out.contains("margin"), "{out}");
    let m = metrics(runs.join("dpo/metrics.jsonl"));
    assert_eq!(m[0]["margin"], 0.0, "the policy starts as its reference");

    // CGPO from the warm-up, scored by the trained reward model.
    let out = run_ok(
        root,
        &[
            "train",
            "--config",
            "examples/configs/pipeline_cgpo.json",
            "--steps",
            "1",
        ],
    );
    assert!(out.contains("1 steps"), "{out}");
    let m = metrics(runs.join("cgpo/metrics.jsonl"));
    assert_eq!(m[0]["task"], "parity");
    assert!(m[0]["reward_raw"].as_f64().unwrap().is_finite());
}

#[test]
fn config_and_record_errors_name_where() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::write(
        root.join("sft.jsonl"),
        "{\"prompt\": \"p\", \"response\": \"r\"}\n{\"prompt\": \"p\"}\n",
    )
    .unwrap();
    std::fs::write(
        root.join("bad.json"),
        r#"{"data": {"train": "sft.jsonl"}, "train": {"steps": 1, "batchsize": 2}}"#,
    )
    .unwrap();
    let (ok, err) = cgpo(root, &["sft", "--config", "bad.json"]);
    assert!(!ok);
    assert!(
        err.contains("config `train.batchsize`: unknown field `batchsize`"),
        "{err}"
    );

    std::fs::write(
        root.join("sft.json"),
        r#"{"data": {"train": "sft.jsonl"}, "train": {"steps": 1, "output_dir": "out"}}"#,
    )
    .unwrap();
    let (ok, err) = cgpo(root, &["sft", "--config", "sft.json"]);
    assert!(!ok);
    assert!(
        err.contains("sft.jsonl:2: field `response`: missing"),
        "{err}"
    );
    assert!(err.contains("data.skip_bad_records"), "{err}");
    assert!(!root.join("out").exists(), "a refused run writes nothing");

    std::fs::write(
        root.join("sft.json"),
        r#"{"data": {"train": "sft.jsonl", "skip_bad_records": true}, "train": {"steps": 1, "output_dir": "out"}}"#,
    )
    .unwrap();
    let out = run_ok(root, &["sft", "--config", "sft.json"]);
    assert!(out.contains("sft.jsonl: skipped 1 of 2 records"), "{out}");
    assert!(
        out.contains("sft.jsonl:2: field `response`: missing"),
        "{out}"
    );

    let (ok, err) = cgpo(root, &["dpo", "--config", "missing.json"]);
    assert!(!ok && err.contains("missing.json"), "{err}");
}
