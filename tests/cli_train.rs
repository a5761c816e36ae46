//! `cgpo train` end to end on the bundled TinyLm config: metrics and
//! checkpoints are written, `--resume` continues where the run stopped.

use std::process::Command;

fn cgpo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cgpo"))
}

#[test]
fn trains_checkpoints_and_resumes() {
    let out = tempfile::tempdir().unwrap();
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/configs/tiny_demo.json"
    );
    let run = |extra: &[&str]| {
        let o = cgpo()
            .args(["train", "--config", config, "--output-dir"])
            .arg(out.path())
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let first = run(&["--steps", "2"]);
    assert!(first.contains("2 steps"), "{first}");
    let lines = |n: usize| {
        let text = std::fs::read_to_string(out.path().join("metrics.jsonl")).unwrap();
        // The train lines (a samples line follows each).
        let v: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "train")
            .collect();
        assert_eq!(v.len(), n, "{text}");
        v
    };
    let m = lines(8);
    let tasks: Vec<&str> = m[..4].iter().map(|l| l["task"].as_str().unwrap()).collect();
    assert_eq!(tasks, ["math", "instruction", "chat", "safety"]);
    assert!(out.path().join("step-000002/policy.safetensors").is_file());
    let second = run(&["--steps", "3", "--resume"]);
    assert!(second.contains("resumed at step 2"), "{second}");
    let m = lines(12);
    assert_eq!(m[11]["step"], 2);
    assert_eq!(
        std::fs::read_to_string(out.path().join("latest"))
            .unwrap()
            .trim(),
        "step-000003"
    );

    let bad = cgpo()
        .args(["train", "--config", "/nonexistent/run.json"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent/run.json"));
}
