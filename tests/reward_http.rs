//! The HTTP reward model against a local scoring server this test
//! controls: the JSON contract, batching, retried 5xx and 429, bounded
//! retries, client errors without retry, timeouts, malformed answers and
//! refused connections; built through the registry as a run config would.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use cgpo::data::PromptRecord;
use cgpo::judges::Message;
use cgpo::reward::{RewardModel, RewardModelSpec, RewardRegistry};
use serde_json::{json, Value};

#[derive(Clone, Copy)]
enum Reply {
    /// 200 with `len(response)` as each sample's score.
    Scores,
    Status(u16),
    /// 200 with a body that is not the contract.
    Body(&'static str),
    /// Wait, then answer with scores.
    Slow(Duration),
}

struct Server {
    url: String,
    /// Every request body received, in order.
    requests: Arc<Mutex<Vec<Value>>>,
}

/// Serves `script[i]` to the i-th request (the last entry repeats).
fn serve(script: Vec<Reply>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            let (seen, script) = (seen.clone(), script.clone());
            thread::spawn(move || handle(stream, &seen, &script));
        }
    });
    Server { url, requests }
}

fn handle(mut stream: TcpStream, seen: &Mutex<Vec<Value>>, script: &[Reply]) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let (mut length, mut first) = (0, String::new());
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if first.is_empty() {
            first = line.clone();
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    assert!(first.starts_with("POST /score "), "{first}");
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let request: Value = serde_json::from_slice(&body).unwrap();
    let i = {
        let mut seen = seen.lock().unwrap();
        seen.push(request.clone());
        seen.len() - 1
    };
    let scores = || {
        let s: Vec<f64> = request["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["response"].as_str().unwrap().len() as f64)
            .collect();
        json!({ "scores": s }).to_string()
    };
    let (status, text) = match script[i.min(script.len() - 1)] {
        Reply::Scores => (200, scores()),
        Reply::Slow(d) => {
            thread::sleep(d);
            (200, scores())
        }
        Reply::Status(s) => (s, "{\"error\": \"scripted\"}".to_string()),
        Reply::Body(b) => (200, b.to_string()),
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

fn model(url: &str, extra: Value) -> Arc<dyn RewardModel> {
    let mut params = json!({"url": url, "timeout_s": 2.0, "retries": 2, "backoff_s": 0.02});
    for (k, v) in extra.as_object().unwrap() {
        params[k] = v.clone();
    }
    let spec: RewardModelSpec =
        serde_json::from_value(json!({"name": "http", "params": params})).unwrap();
    RewardRegistry::with_builtins()
        .build("served", &spec)
        .unwrap()
}

fn records() -> Vec<PromptRecord> {
    vec![
        PromptRecord::new("a", "Is 4 even or odd?").with_metadata(json!({"answer": "even"})),
        PromptRecord::new(
            "b",
            cgpo::judges::Prompt::Messages(vec![
                Message::new("system", "Be brief."),
                Message::new("user", "Hi"),
            ]),
        ),
        PromptRecord::new("c", "x"),
    ]
}

fn score(rm: &dyn RewardModel, responses: &[&str]) -> cgpo::Result<Vec<f32>> {
    let rs = records();
    let views: Vec<_> = rs
        .iter()
        .cycle()
        .zip(responses)
        .map(|(r, a)| r.view(a))
        .collect();
    rm.score(&views)
}

#[test]
fn scores_follow_the_contract_in_batches() {
    let server = serve(vec![Reply::Scores]);
    let rm = model(&server.url, json!({"model": "rm-7", "batch_size": 2}));
    assert_eq!(rm.name(), "served");
    let got = score(
        rm.as_ref(),
        &["even", "Hello there", "", "ANSWER: odd", "z"],
    )
    .unwrap();
    assert_eq!(got, [4.0, 11.0, 0.0, 11.0, 1.0]);
    let requests = server.requests.lock().unwrap();
    assert_eq!(requests.len(), 3, "5 samples in batches of 2");
    assert_eq!(
        requests[0],
        json!({"model": "rm-7", "samples": [
            {"id": "a", "prompt": "Is 4 even or odd?", "response": "even", "metadata": {"answer": "even"}},
            {"id": "b", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
             "response": "Hello there", "metadata": {}}
        ]})
    );
    assert_eq!(requests[2]["samples"].as_array().unwrap().len(), 1);
}

#[test]
fn server_errors_and_429_are_retried_then_succeed() {
    let server = serve(vec![Reply::Status(503), Reply::Status(429), Reply::Scores]);
    let got = score(model(&server.url, json!({})).as_ref(), &["ab"]).unwrap();
    assert_eq!(got, [2.0]);
    assert_eq!(server.requests.lock().unwrap().len(), 3);
}

#[test]
fn retries_are_bounded() {
    let server = serve(vec![Reply::Status(500)]);
    let e = score(model(&server.url, json!({})).as_ref(), &["ab"])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("reward model `served`: "), "{e}");
    assert!(
        e.contains("HTTP 500") && e.contains("after 3 attempts"),
        "{e}"
    );
    assert_eq!(server.requests.lock().unwrap().len(), 3);
}

#[test]
fn client_errors_are_not_retried() {
    let server = serve(vec![Reply::Status(400)]);
    let e = score(model(&server.url, json!({})).as_ref(), &["ab"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 400") && !e.contains("attempts"), "{e}");
    assert_eq!(server.requests.lock().unwrap().len(), 1);
}

#[test]
fn timeouts_are_errors_within_the_budget() {
    let server = serve(vec![Reply::Slow(Duration::from_secs(3))]);
    let rm = model(&server.url, json!({"timeout_s": 0.3, "retries": 1}));
    let start = Instant::now();
    let e = score(rm.as_ref(), &["ab"]).unwrap_err().to_string();
    assert!(e.contains("after 2 attempts"), "{e}");
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn answers_outside_the_contract_are_errors_without_retry() {
    for (body, want) in [
        ("{\"scores\": [", "malformed JSON"),
        ("{\"score\": 1}", "no `scores` list"),
        ("{\"scores\": [1, 2]}", "2 scores for 1 samples"),
        ("{\"scores\": [null]}", "scores[0] is not a finite number"),
    ] {
        let server = serve(vec![Reply::Body(body)]);
        let e = score(model(&server.url, json!({})).as_ref(), &["ab"])
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{body}: {e}");
        assert_eq!(server.requests.lock().unwrap().len(), 1, "{body}");
    }
}

#[test]
fn refused_connections_are_retried_then_reported() {
    // A port nothing listens on: bind, read the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/score");
    let e = score(model(&url, json!({"retries": 1})).as_ref(), &["ab"])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("request to") && e.contains("after 2 attempts"),
        "{e}"
    );
}
