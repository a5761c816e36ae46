//! The HTTP LLM backend against a small local server this test controls:
//! success, retried 5xx, timeouts, malformed JSON, refused connections, and
//! the concurrency limit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cgpo_judges::llm::{JudgeTemplate, LlmJudge, OpenAiBackend, OpenAiConfig};
use cgpo_judges::{Judge, Prompt, SampleView, Verdict};

#[derive(Clone, Copy)]
enum Reply {
    /// 200 with "Yes" more likely than "No" (or the reverse).
    Answer {
        yes: bool,
    },
    Status(u16),
    Malformed,
    /// Wait, then answer "Yes".
    Slow(Duration),
}

struct Server {
    url: String,
    requests: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

/// Serves `script[i]` to the i-th request (the last entry repeats).
fn serve(script: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let (r, f, m) = (requests.clone(), in_flight.clone(), max_in_flight.clone());
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let (r, f, m, script) = (r.clone(), f.clone(), m.clone(), script.clone());
            thread::spawn(move || {
                let now = f.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                handle(stream, &r, &script);
                f.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        url,
        requests,
        max_in_flight,
    }
}

fn handle(mut stream: TcpStream, counter: &AtomicUsize, script: &[Reply]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(request["max_tokens"], 1);
    assert_eq!(request["logprobs"], true);
    let i = counter.fetch_add(1, Ordering::SeqCst);
    let reply = script[i.min(script.len() - 1)];
    let (status, text) = match reply {
        Reply::Answer { yes } => (200, answer(yes)),
        Reply::Slow(d) => {
            thread::sleep(d);
            (200, answer(true))
        }
        Reply::Status(s) => (s, "{\"error\": \"scripted\"}".to_string()),
        Reply::Malformed => (200, "{\"choices\": [".to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn answer(yes: bool) -> String {
    let (y, n) = if yes { (-0.2, -2.0) } else { (-2.0, -0.2) };
    serde_json::json!({"choices": [{"message": {"content": if yes { "Yes" } else { "No" }},
        "logprobs": {"content": [{"token": "Yes", "logprob": y,
            "top_logprobs": [{"token": "Yes", "logprob": y}, {"token": "No", "logprob": n}]}]}}]})
    .to_string()
}

fn judge(url: &str, timeout_s: f64, retries: u32, max_concurrency: usize) -> LlmJudge {
    let config = OpenAiConfig {
        base_url: url.to_string(),
        model: "test".into(),
        api_key_env: None,
        timeout_s,
        retries,
        backoff_s: 0.05,
        max_concurrency,
        logprobs: true,
        top_logprobs: 5,
    };
    LlmJudge::new(
        "safety",
        JudgeTemplate::safety(),
        Arc::new(OpenAiBackend::new(config).unwrap()),
    )
}

fn run(judge: &LlmJudge, n: usize) -> Vec<Verdict> {
    let (p, m) = (Prompt::from("q"), serde_json::json!({}));
    let views: Vec<_> = (0..n).map(|_| SampleView::new("id", &p, "r", &m)).collect();
    judge.judge(&views)
}

#[test]
fn answers_become_verdicts() {
    let server = serve(vec![
        Reply::Answer { yes: true },
        Reply::Answer { yes: false },
    ]);
    let out = run(&judge(&server.url, 5.0, 0, 1), 2);
    assert!(out[0].is_pass(), "{}", out[0]);
    assert!(
        matches!(&out[1], Verdict::Fail(r) if r.contains("p(Yes) = 0.135 vs p(No) = 0.819")),
        "{}",
        out[1]
    );
}

#[test]
fn server_errors_are_retried_then_succeed() {
    let server = serve(vec![
        Reply::Status(500),
        Reply::Status(503),
        Reply::Answer { yes: true },
    ]);
    let out = run(&judge(&server.url, 5.0, 2, 1), 1);
    assert!(out[0].is_pass(), "{}", out[0]);
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn retries_are_bounded() {
    let server = serve(vec![Reply::Status(500)]);
    let out = run(&judge(&server.url, 5.0, 2, 1), 1);
    assert!(
        matches!(&out[0], Verdict::Error(m) if m.contains("HTTP 500") && m.contains("after 3 attempts")),
        "{}",
        out[0]
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let server = serve(vec![Reply::Status(400)]);
    let out = run(&judge(&server.url, 5.0, 3, 1), 1);
    assert!(
        matches!(&out[0], Verdict::Error(m) if m.contains("HTTP 400")),
        "{}",
        out[0]
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn timeouts_are_errors_within_the_budget() {
    let server = serve(vec![Reply::Slow(Duration::from_secs(3))]);
    let start = Instant::now();
    let out = run(&judge(&server.url, 0.3, 1, 1), 1);
    let elapsed = start.elapsed();
    assert!(
        matches!(&out[0], Verdict::Error(m) if m.contains("after 2 attempts")),
        "{}",
        out[0]
    );
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
}

#[test]
fn malformed_json_is_an_error_without_retry() {
    let server = serve(vec![Reply::Malformed]);
    let out = run(&judge(&server.url, 5.0, 3, 1), 1);
    assert!(
        matches!(&out[0], Verdict::Error(m) if m.contains("malformed JSON")),
        "{}",
        out[0]
    );
    assert_eq!(server.requests.load(Ordering::SeqCst), 1);
}

#[test]
fn refused_connections_are_errors() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&judge(&format!("http://127.0.0.1:{port}"), 1.0, 1, 1), 2);
    for v in out {
        assert!(
            matches!(&v, Verdict::Error(m) if m.contains("failed") && m.contains("after 2 attempts")),
            "{v}"
        );
    }
}

#[test]
fn concurrency_is_limited() {
    let server = serve(vec![Reply::Slow(Duration::from_millis(150))]);
    let out = run(&judge(&server.url, 5.0, 0, 2), 6);
    assert!(out.iter().all(Verdict::is_pass));
    assert_eq!(server.requests.load(Ordering::SeqCst), 6);
    assert_eq!(server.max_in_flight.load(Ordering::SeqCst), 2);
}
