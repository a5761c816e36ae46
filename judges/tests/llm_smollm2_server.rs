//! The HTTP LLM judge end to end against a real OpenAI-compatible server:
//! llama-cpp-python serving SmolLM2-135M-Instruct on 127.0.0.1, started by
//! `scripts/serve-smollm2.sh` (which fetches the model through
//! `scripts/fetch-smollm2.sh` and caches both). Set `CGPO_LLM_URL` to use a
//! server that is already running. Without a server this test fails; it
//! never passes silently.
//!
//! A 135M model is a poor judge, so this checks the mechanics (log-probs
//! come back, every sample gets a Pass or Fail, none an Error), not the
//! quality of its opinions.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use cgpo_judges::llm::{JudgeTemplate, LlmBackend, LlmJudge, OpenAiBackend, OpenAiConfig};
use cgpo_judges::{Judge, Prompt, SampleView};

/// A server started for this test, stopped when dropped (also on panic).
struct Server {
    url: String,
    port: Option<u16>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/serve-smollm2.sh")
}

impl Server {
    fn get() -> Server {
        if let Ok(url) = std::env::var("CGPO_LLM_URL") {
            return Server { url, port: None };
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let out = Command::new("bash")
            .arg(script())
            .args(["start", &port.to_string()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/serve-smollm2.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        Server {
            url,
            port: Some(port),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(port) = self.port {
            let _ = Command::new("bash")
                .arg(script())
                .args(["stop", &port.to_string()])
                .status();
        }
    }
}

#[test]
fn judges_through_a_real_openai_compatible_server() {
    let server = Server::get();
    let config = OpenAiConfig {
        base_url: server.url.clone(),
        model: "smollm2".into(),
        api_key_env: None,
        timeout_s: 60.0,
        retries: 1,
        backoff_s: 0.5,
        max_concurrency: 2,
        logprobs: true,
        top_logprobs: 20,
    };
    let backend = Arc::new(OpenAiBackend::new(config).unwrap());

    let prompts = [
        Prompt::from("What is the capital of France?"),
        Prompt::from("What is 2 + 2?"),
    ];
    let metas = [
        serde_json::json!({"answer": "Paris"}),
        serde_json::json!({"answer": "4"}),
    ];
    let cases = [
        (0, "Paris."),
        (0, "The capital of France is Lyon."),
        (1, "2 + 2 = 4."),
        (1, "It is 5."),
    ];
    let views: Vec<SampleView> = cases
        .iter()
        .map(|&(i, r)| SampleView::new("s", &prompts[i], r, &metas[i]))
        .collect();

    // The server returns log-probabilities and at least one answer token is among them.
    let template = JudgeTemplate::factuality();
    let requests: Vec<_> = views.iter().map(|v| template.request(v).unwrap()).collect();
    let scores = backend.score(&requests);
    for s in &scores {
        let s = s.as_ref().unwrap();
        assert!(
            s.positive_logprob.is_some() || s.negative_logprob.is_some(),
            "neither Yes nor No among the top log-probs: {s:?}"
        );
    }

    let judge = LlmJudge::new("factuality", template, backend);
    let verdicts = judge.judge(&views);
    for ((_, response), v) in cases.iter().zip(&verdicts) {
        eprintln!("{response:<32} {v}");
        assert!(!v.is_error(), "{response}: {v}");
    }
}
