//! The ablation's `--quick` configuration end to end (what CI runs): the
//! warm-up, every run for a few steps, `summary.json`'s schema and the
//! metrics files; that training ran (the policies moved, pass rates
//! changed), not what it achieved; and the warm-up cache.
//!
//! The documented claims on three seeds of the default configuration are
//! an ignored test (about 10 minutes in release mode on 2 cores):
//! `cargo test --release --test ablation -- --ignored`.

use cgpo_suites::ablation::claims::check;
use cgpo_suites::ablation::runs::RunName;
use cgpo_suites::ablation::suite::TASKS;
use cgpo_suites::ablation::{run_ablation, run_dir, AblationOptions};
use serde_json::Value;

#[test]
fn quick_ablation_writes_the_summary_and_trains_every_run() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AblationOptions::quick(dir.path());
    let summary = run_ablation(&opts).unwrap();
    assert_eq!(summary.runs.len(), RunName::ALL.len());

    let text = std::fs::read_to_string(dir.path().join("summary.json")).unwrap();
    let json: Value = serde_json::from_str(&text).unwrap();
    let top: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(top, ["across_seeds", "runs", "split", "warmups"]);
    assert_eq!(json["split"], "test");
    let reports = json["warmups"][0]["reward_reports"].as_object().unwrap();
    assert_eq!(reports.len(), TASKS.len());
    for (task, r) in reports {
        assert!(r["test_pairs"].as_u64().unwrap() > 0, "{task}");
        assert!(r["exploit_prompts"].as_u64().unwrap() > 0, "{task}");
        let acc = r["test_accuracy"].as_f64().unwrap();
        let ci = r["test_accuracy_ci95"].as_array().unwrap();
        assert!(ci[0].as_f64().unwrap() <= acc && acc <= ci[1].as_f64().unwrap());
    }
    let runs = json["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let expected: Vec<&str> = RunName::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(names, expected);
    let mut pass_changed = 0;
    for run in runs {
        assert_eq!(run["seed"], 0);
        let tasks = run["tasks"].as_object().unwrap();
        let mut task_names: Vec<&str> = tasks.keys().map(String::as_str).collect();
        task_names.sort_unstable();
        let mut want: Vec<&str> = TASKS.iter().map(|t| t.name()).collect();
        want.sort_unstable();
        assert_eq!(task_names, want);
        let mut moved = false;
        assert_eq!(run["dev"].as_object().unwrap().len(), TASKS.len());
        for (task, se) in tasks {
            for point in ["start", "end"] {
                let p = se[point].as_object().unwrap();
                let mut keys: Vec<&str> = p.keys().map(String::as_str).collect();
                keys.sort_unstable();
                assert_eq!(
                    keys,
                    [
                        "eval_pass_rate",
                        "eval_reward",
                        "kl",
                        "n",
                        "pass_ci95",
                        "passes"
                    ],
                    "{task}"
                );
                let rate = p["eval_pass_rate"].as_f64().unwrap();
                assert!((0.0..=1.0).contains(&rate), "{task} {point}: {rate}");
                let n = p["n"].as_u64().unwrap();
                // Test prompts (at most 4 per task in --quick), 2 responses each.
                assert_eq!(n, 8, "{task} {point}");
                let ci: Vec<f64> = p["pass_ci95"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert!(ci[0] <= rate && rate <= ci[1], "{task} {point}: {ci:?}");
                assert!(p["eval_reward"].as_f64().unwrap().is_finite());
                assert!(p["kl"].as_f64().unwrap().is_finite());
            }
            // The start is the warm-up itself: no KL from the reference
            // (up to decoding with a KV cache vs. one forward).
            let kl0 = se["start"]["kl"].as_f64().unwrap();
            assert!(kl0.abs() < 1e-3, "{task}: {kl0}");
            moved |= se["end"]["kl"].as_f64().unwrap().abs() > 1e-2;
            if se["start"]["eval_pass_rate"] != se["end"]["eval_pass_rate"] {
                pass_changed += 1;
            }
        }
        assert!(moved, "{}: the policy never left the warm-up", run["name"]);

        // Metrics: a train line per task per step, eval lines every step.
        let name = RunName::parse(run["name"].as_str().unwrap()).unwrap();
        let metrics =
            std::fs::read_to_string(run_dir(dir.path(), name, 0).join("metrics.jsonl")).unwrap();
        let lines: Vec<Value> = metrics
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let train = lines.iter().filter(|l| l["kind"] == "train").count();
        let eval = lines.iter().filter(|l| l["kind"] == "eval").count();
        // The curve is the dev split's; test is scored at the start and end only.
        assert!(lines
            .iter()
            .filter(|l| l["kind"] == "eval")
            .all(|l| l["split"] == "dev" && l["n"].as_u64().is_some()));
        let steps = opts.settings.steps as usize;
        assert_eq!(train, steps * TASKS.len());
        assert_eq!(eval, (steps + 1) * TASKS.len());
        assert!(lines
            .iter()
            .filter(|l| l["kind"] == "train")
            .all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)));
    }
    assert!(pass_changed > 0, "no pass rate changed in any run");
    assert_eq!(summary.warmups.len(), 1);
    assert!(!summary.warmups[0].cached);

    // A second invocation reuses the warm-up.
    let again = AblationOptions {
        runs: vec![RunName::CgpoCrpg],
        ..AblationOptions::quick(dir.path())
    };
    let second = run_ablation(&again).unwrap();
    assert!(second.warmups[0].cached);
    assert_eq!(second.warmups[0].dir, summary.warmups[0].dir);
    assert_eq!(second.runs[0].tasks, summary.runs[0].tasks);
}

/// The documented claims (`cgpo_suites::ablation::claims`) on three seeds of the
/// default configuration, test split. Ignored: it trains 21 runs. As
/// `docs/ablations.md` reports, it fails today: in seed 1 the
/// unconstrained run does not hack any task by the claim's criterion.
#[test]
#[ignore]
fn the_documented_claims_hold_on_three_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let opts = AblationOptions {
        seeds: vec![0, 1, 2],
        ..AblationOptions::new(dir.path())
    };
    let summary = run_ablation(&opts).unwrap();
    let checks = check(&summary);
    for c in &checks {
        println!("{c}");
    }
    assert!(checks.iter().all(|c| c.holds), "a claim failed; see above");
}
