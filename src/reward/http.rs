//! A reward model served elsewhere, behind a scoring endpoint
//! (`"http"` in the registry).
//!
//! **The JSON contract.** Each batch (at most `batch_size` samples) is one
//! `POST {url}` with `Content-Type: application/json` (and
//! `Authorization: Bearer <key>` when `api_key_env` names a variable):
//!
//! ```json
//! {"model": "rm-name or null",
//!  "samples": [{"id": "p1", "prompt": "text" | [{"role": "user", "content": "..."}],
//!               "response": "...", "metadata": {...}}]}
//! ```
//!
//! and the server answers HTTP 200 with one finite number per sample, in
//! order:
//!
//! ```json
//! {"scores": [0.7, -1.2]}
//! ```
//!
//! Each request has a timeout (`timeout_s`, the whole exchange); timeouts,
//! connection errors, HTTP 429 and 5xx are retried up to `retries` times
//! with exponential backoff from `backoff_s`; other statuses, malformed
//! JSON, a wrong number of scores or a non-finite score fail at once. A
//! failure is an [`Error::Reward`] naming the model, the URL and the
//! attempts.
//!
//! ```no_run
//! use cgpo::reward::{HttpReward, HttpRewardConfig};
//! let config: HttpRewardConfig = serde_json::from_str(
//!     r#"{"url": "http://127.0.0.1:8000/score", "timeout_s": 10, "retries": 3}"#).unwrap();
//! let rm = HttpReward::new("served_rm", config)?;
//! # Ok::<(), cgpo::Error>(())
//! ```

use cgpo_judges::http_client::JsonClient;
use cgpo_judges::SampleView;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::RewardModel;
use crate::error::{Error, Result};

/// Parameters of `"http"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRewardConfig {
    /// The scoring endpoint, e.g. `http://host:8000/score`.
    pub url: String,
    /// Sent as `model` (for servers that host several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The name of an environment variable holding a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// Per request, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_s: f64,
    /// Extra attempts after a retryable failure.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// The first backoff, doubled on each retry, seconds.
    #[serde(default = "default_backoff")]
    pub backoff_s: f64,
    /// Samples per request.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
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
fn default_batch() -> usize {
    32
}

pub struct HttpReward {
    name: String,
    config: HttpRewardConfig,
    client: JsonClient,
}

impl HttpReward {
    pub fn new(name: impl Into<String>, config: HttpRewardConfig) -> Result<Self> {
        let name = name.into();
        let bad = |message: String| Error::Reward {
            model: name.clone(),
            message,
        };
        if !(config.url.starts_with("http://") || config.url.starts_with("https://")) {
            return Err(bad(format!(
                "url must start with http:// or https://, got `{}`",
                config.url
            )));
        }
        if config.batch_size == 0 {
            return Err(bad("batch_size must be >= 1".into()));
        }
        let client = JsonClient::new(
            config.url.clone(),
            config.api_key_env.as_deref(),
            config.timeout_s,
            config.retries,
            config.backoff_s,
        )
        .map_err(bad)?;
        Ok(Self {
            name,
            config,
            client,
        })
    }

    /// From registry parameters (an [`HttpRewardConfig`] as JSON).
    pub fn from_params(name: &str, params: &Value) -> Result<Self> {
        let config: HttpRewardConfig =
            serde_json::from_value(params.clone()).map_err(|e| Error::Reward {
                model: name.to_owned(),
                message: format!("params: {e}"),
            })?;
        Self::new(name, config)
    }

    pub fn config(&self) -> &HttpRewardConfig {
        &self.config
    }

    fn body(&self, batch: &[SampleView<'_>]) -> String {
        let samples: Vec<Value> = batch
            .iter()
            .map(|s| {
                json!({"id": s.id, "prompt": s.prompt, "response": s.response, "metadata": s.metadata})
            })
            .collect();
        json!({"model": self.config.model, "samples": samples}).to_string()
    }

    /// One batch, with retries.
    fn request(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>> {
        let n = batch.len();
        self.client
            .post(&self.body(batch), |text| parse_scores(text, n))
            .map_err(|message| Error::Reward {
                model: self.name.clone(),
                message,
            })
    }
}

/// `{"scores": [...]}` with `n` finite numbers.
fn parse_scores(text: &str, n: usize) -> std::result::Result<Vec<f32>, String> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("malformed JSON in the response: {e}"))?;
    let scores = v
        .get("scores")
        .and_then(Value::as_array)
        .ok_or("the response has no `scores` list")?;
    if scores.len() != n {
        return Err(format!("{} scores for {n} samples", scores.len()));
    }
    scores
        .iter()
        .enumerate()
        .map(|(i, s)| match s.as_f64() {
            Some(x) if x.is_finite() => Ok(x as f32),
            _ => Err(format!("scores[{i}] is not a finite number: {s}")),
        })
        .collect()
}

impl RewardModel for HttpReward {
    fn name(&self) -> &str {
        &self.name
    }

    fn score(&self, batch: &[SampleView<'_>]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(batch.len());
        for chunk in batch.chunks(self.config.batch_size) {
            out.extend(self.request(chunk)?);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_are_checked() {
        assert_eq!(
            parse_scores(r#"{"scores": [1, -2.5]}"#, 2).unwrap(),
            [1.0, -2.5]
        );
        assert_eq!(
            parse_scores(r#"{"scores": [1]}"#, 2).unwrap_err(),
            "1 scores for 2 samples"
        );
        assert!(parse_scores(r#"{"scores": [1, "x"]}"#, 2)
            .unwrap_err()
            .starts_with("scores[1] is not a finite number"));
        assert!(parse_scores("{", 1)
            .unwrap_err()
            .starts_with("malformed JSON"));
        assert_eq!(
            parse_scores(r#"{"score": 1}"#, 1).unwrap_err(),
            "the response has no `scores` list"
        );
    }

    #[test]
    fn bad_settings_are_errors() {
        let ok = json!({"url": "http://127.0.0.1:1/score"});
        assert!(HttpReward::from_params("rm", &ok).is_ok());
        for (key, value) in [
            ("url", json!("127.0.0.1:1")),
            ("timeout_s", json!(0)),
            ("backoff_s", json!(-1)),
            ("batch_size", json!(0)),
            ("api_key_env", json!("CGPO_TEST_SURELY_UNSET_VAR")),
            ("retry", json!(1)),
        ] {
            let mut p = ok.clone();
            p[key] = value;
            let e = HttpReward::from_params("rm", &p).err().unwrap().to_string();
            assert!(e.starts_with("reward model `rm`:"), "{key}: {e}");
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
