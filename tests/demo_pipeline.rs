//! The bundled demo end to end, from files: config -> prompts -> strata ->
//! responses -> judges + calibrated rewards. Pins the data the README's
//! first command runs on.

use std::path::Path;
use std::sync::Arc;

use cgpo::config::{Registries, RunConfig};
use cgpo::data::{read_prompts, read_responses, Sample};
use cgpo::judges::{FnJudge, JudgeRegistry, Outcome, SampleView, Verdict};

fn demo(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/data/demo")
        .join(file)
}

#[test]
fn the_demo_stratifies_judges_and_scores_every_response() {
    let config = RunConfig::from_file(demo("run.json")).unwrap();
    // Stand-ins for the example's own judges: only their names matter here.
    let mut judges = JudgeRegistry::with_builtins();
    for name in ["final_answer", "refusal"] {
        judges.register(name, |n, _| {
            Ok(Box::new(FnJudge::new(n, |s: &SampleView| {
                Verdict::check(s.response.len() < 60, || "long".into())
            })))
        });
    }
    let tasks = config
        .build_tasks(&Registries {
            judges,
            ..Registries::default()
        })
        .unwrap();
    let records = read_prompts(demo("prompts.jsonl"), Some(&config.task_names())).unwrap();
    let strata = config
        .stratify
        .stratifier(&config.task_names())
        .unwrap()
        .stratify(records)
        .unwrap();
    let counts: Vec<(&str, usize)> = strata.iter().map(|(t, s)| (t, s.records.len())).collect();
    assert_eq!(
        counts,
        [("chat", 3), ("instruction", 2), ("math", 3), ("safety", 2)]
    );

    let all: Vec<Arc<_>> = strata
        .iter()
        .flat_map(|(_, s)| s.records.iter().cloned())
        .collect();
    let samples = read_responses(demo("responses.jsonl"), &all).unwrap();
    assert_eq!(samples.len(), 20);
    let mut judged = 0;
    for task in &tasks {
        let mut mine: Vec<Sample> = samples
            .iter()
            .filter(|s| s.record.task.as_deref() == Some(&*task.name))
            .cloned()
            .collect();
        let report = task.assess(&mut mine, None).unwrap();
        judged += mine.len();
        assert!(mine.iter().all(|s| s
            .reward
            .is_some_and(|r| r.calibrated > 0.0 && r.calibrated < 1.0)));
        assert_eq!(report.errored(), 0, "{}", task.name);
        if task.name == "chat" {
            // The flattering answers fail `no_flattery` and score higher on the hackable model.
            let raw = |o: Outcome| {
                mine.iter()
                    .filter(|s| s.judgement.as_ref().unwrap().outcome == o)
                    .map(|s| s.reward.unwrap().raw)
                    .fold(f32::NAN, f32::max)
            };
            assert_eq!(report.count(Outcome::Violated), 2);
            assert!(raw(Outcome::Violated) > raw(Outcome::Satisfied));
        }
    }
    assert_eq!(judged, samples.len());
}
