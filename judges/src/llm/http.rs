//! An OpenAI-compatible chat-completions backend for LLM judges.
//!
//! Each question is one `POST {base_url}/v1/chat/completions` with
//! `max_tokens = 1`, `temperature = 0` and, by default, `logprobs = true`
//! with `top_logprobs`; the probabilities of the answer tokens are read from
//! the first generated position (variants such as " yes" / "YES" are summed).
//! Servers without log-probabilities are asked for the answer text instead
//! (`logprobs: false`). Each request has a timeout; timeouts, connection
//! errors, 429 and 5xx are retried a bounded number of times with
//! exponential backoff; other failures are reported at once. At most
//! `max_concurrency` requests are in flight.
//!
//! ```no_run
//! use cgpo_judges::llm::{OpenAiBackend, OpenAiConfig};
//! let config: OpenAiConfig = serde_json::from_str(
//!     r#"{"base_url": "http://127.0.0.1:8080", "model": "smollm2", "timeout_s": 20}"#).unwrap();
//! let backend = OpenAiBackend::new(config).unwrap();
//! ```

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{AnswerScore, LlmBackend, LlmRequest};
use crate::http_client::JsonClient;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenAiConfig {
    /// `http://host:port` or `http://host:port/v1`.
    pub base_url: String,
    pub model: String,
    /// The name of an environment variable holding the API key, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Per-request timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Extra attempts after a retryable failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first backoff, doubled on each retry, seconds.
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
    #[serde(default = "default_concurrency")]
    pub max_concurrency: usize,
    /// Ask for log-probabilities (else the answer text decides).
    #[serde(default = "yes")]
    pub logprobs: bool,
    #[serde(default = "default_top")]
    pub top_logprobs: u32,
}

fn default_timeout() -> f64 {
    30.0
}
fn default_retries() -> u32 {
    2
}
fn default_backoff() -> f64 {
    0.5
}
fn default_concurrency() -> usize {
    4
}
fn yes() -> bool {
    true
}
fn default_top() -> u32 {
    20
}

pub struct OpenAiBackend {
    config: OpenAiConfig,
    client: JsonClient,
}

impl OpenAiBackend {
    pub fn new(config: OpenAiConfig) -> Result<Self, String> {
        if config.max_concurrency == 0 {
            return Err("max_concurrency must be >= 1".into());
        }
        let base = config.base_url.trim_end_matches('/');
        let url = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let client = JsonClient::new(
            url,
            config.api_key_env.as_deref(),
            config.timeout_s,
            config.retries,
            config.backoff_s,
        )?;
        Ok(Self { config, client })
    }

    fn body(&self, request: &LlmRequest) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "messages": request.messages,
            "temperature": 0.0,
            "max_tokens": if self.config.logprobs { 1 } else { 3 },
        });
        if self.config.logprobs {
            body["logprobs"] = json!(true);
            body["top_logprobs"] = json!(self.config.top_logprobs);
        }
        body
    }

    fn ask(&self, request: &LlmRequest) -> Result<AnswerScore, String> {
        let body = self.body(request).to_string();
        self.client.post(&body, |text| parse_answer(text, request))
    }
}

impl LlmBackend for OpenAiBackend {
    fn score(&self, requests: &[LlmRequest]) -> Vec<Result<AnswerScore, String>> {
        let next = AtomicUsize::new(0);
        let results: Vec<Mutex<Option<Result<AnswerScore, String>>>> =
            requests.iter().map(|_| Mutex::new(None)).collect();
        let workers = self.config.max_concurrency.min(requests.len());
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = requests.get(i) else {
                        break;
                    };
                    let answer = self.ask(request);
                    *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(answer);
                });
            }
        });
        results
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|e| e.into_inner())
                    .unwrap_or_else(|| Err("no answer (a worker stopped early)".into()))
            })
            .collect()
    }
}

/// Reads the answer tokens' log-probabilities (summing case and whitespace
/// variants) and the answer text from a chat-completions response.
fn parse_answer(text: &str, request: &LlmRequest) -> Result<AnswerScore, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON in the response: {e}"))?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or("the response has no choices[0]")?;
    let content = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let top = choice
        .pointer("/logprobs/content/0/top_logprobs")
        .and_then(Value::as_array);
    let Some(top) = top else {
        return match content {
            Some(t) => Ok(AnswerScore::from_text(t)),
            None => Err("the response has neither logprobs nor message.content".into()),
        };
    };
    let total = |word: &str| -> Option<f32> {
        let word = word.trim().to_lowercase();
        let probs: Vec<f64> = top
            .iter()
            .filter(|e| {
                e.get("token")
                    .and_then(Value::as_str)
                    .is_some_and(|t| t.trim().to_lowercase() == word)
            })
            .filter_map(|e| e.get("logprob").and_then(Value::as_f64))
            .map(f64::exp)
            .collect();
        (!probs.is_empty()).then(|| probs.iter().sum::<f64>().ln() as f32)
    };
    Ok(AnswerScore {
        positive_logprob: total(&request.positive),
        negative_logprob: total(&request.negative),
        text: content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn request() -> LlmRequest {
        LlmRequest {
            messages: vec![Message::new("user", "q")],
            positive: "Yes".into(),
            negative: "No".into(),
        }
    }

    #[test]
    fn variants_of_a_token_are_summed() {
        let body = json!({"choices": [{"message": {"content": "Yes"}, "logprobs": {"content": [{"token": "Yes", "logprob": -1.0,
            "top_logprobs": [{"token": "Yes", "logprob": (0.3f64).ln()}, {"token": " yes", "logprob": (0.2f64).ln()},
                             {"token": "No", "logprob": (0.4f64).ln()}, {"token": "Maybe", "logprob": -5.0}]}]}}]});
        let s = parse_answer(&body.to_string(), &request()).unwrap();
        assert!((s.positive_logprob.unwrap().exp() - 0.5).abs() < 1e-6);
        assert!((s.negative_logprob.unwrap().exp() - 0.4).abs() < 1e-6);
        assert!(s.verdict("Yes", "No").is_pass());
    }

    #[test]
    fn text_only_responses_and_malformed_ones() {
        let text = json!({"choices": [{"message": {"content": "No."}}]}).to_string();
        assert!(parse_answer(&text, &request())
            .unwrap()
            .verdict("Yes", "No")
            .is_fail());
        assert!(parse_answer("{not json", &request())
            .unwrap_err()
            .starts_with("malformed JSON"));
        assert!(parse_answer("{}", &request())
            .unwrap_err()
            .contains("choices[0]"));
    }

    #[test]
    fn urls_and_bad_settings() {
        let config = |base: &str| OpenAiConfig {
            base_url: base.into(),
            model: "m".into(),
            api_key_env: None,
            timeout_s: 1.0,
            retries: 0,
            backoff_s: 0.0,
            max_concurrency: 1,
            logprobs: true,
            top_logprobs: 5,
        };
        assert_eq!(
            OpenAiBackend::new(config("http://h:1/"))
                .unwrap()
                .client
                .url(),
            "http://h:1/v1/chat/completions"
        );
        assert_eq!(
            OpenAiBackend::new(config("http://h:1/v1"))
                .unwrap()
                .client
                .url(),
            "http://h:1/v1/chat/completions"
        );
        let mut c = config("http://h:1");
        c.max_concurrency = 0;
        assert!(OpenAiBackend::new(c).is_err());
        let mut c = config("http://h:1");
        c.api_key_env = Some("CGPO_TEST_SURELY_UNSET_VAR".into());
        assert!(OpenAiBackend::new(c)
            .err()
            .unwrap()
            .contains("CGPO_TEST_SURELY_UNSET_VAR"));
    }
}
