//! The JSON-over-HTTP client shared by the HTTP judge backend
//! ([`crate::llm::OpenAiBackend`]) and cgpo's HTTP reward model: one POST
//! per call with a whole-exchange timeout, an optional bearer token from an
//! environment variable, and bounded retries with exponential backoff on
//! transport errors, HTTP 429 and 5xx. Other statuses and answers the
//! caller's parser rejects fail at once. Errors are messages naming the URL
//! and, after retries, the number of attempts.
//!
//! ```
//! use cgpo_judges::http_client::JsonClient;
//! assert!(JsonClient::new("http://127.0.0.1:9/score", None, 0.0, 1, 0.5).is_err()); // timeout_s
//! let client = JsonClient::new("http://127.0.0.1:9/score", None, 1.0, 0, 0.0).unwrap();
//! assert_eq!(client.url(), "http://127.0.0.1:9/score");
//! ```

use std::time::Duration;

pub struct JsonClient {
    url: String,
    api_key: Option<String>,
    agent: ureq::Agent,
    retries: u32,
    backoff_s: f64,
}

/// Why one attempt failed, and whether another may succeed.
struct Failure {
    message: String,
    retryable: bool,
}

impl JsonClient {
    /// Checks `timeout_s` (> 0) and `backoff_s` (>= 0) and reads the key
    /// from the variable `api_key_env` names.
    pub fn new(
        url: impl Into<String>,
        api_key_env: Option<&str>,
        timeout_s: f64,
        retries: u32,
        backoff_s: f64,
    ) -> Result<Self, String> {
        if !(timeout_s.is_finite() && timeout_s > 0.0) {
            return Err(format!("timeout_s must be > 0, got {timeout_s}"));
        }
        if !(backoff_s.is_finite() && backoff_s >= 0.0) {
            return Err(format!("backoff_s must be >= 0, got {backoff_s}"));
        }
        let api_key = match api_key_env {
            None => None,
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| format!("environment variable {var} (api_key_env) is not set"))?,
            ),
        };
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs_f64(timeout_s)))
            .http_status_as_error(false)
            .build()
            .into();
        Ok(Self {
            url: url.into(),
            api_key,
            agent,
            retries,
            backoff_s,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// POSTs `body` (JSON) and parses the HTTP 200 answer's text with
    /// `parse`, retrying retryable failures.
    pub fn post<T>(
        &self,
        body: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        let mut backoff = self.backoff_s;
        let mut attempt = 0;
        loop {
            match self.attempt(body, &parse) {
                Ok(value) => return Ok(value),
                Err(f) if f.retryable && attempt < self.retries => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_secs_f64(backoff));
                    backoff *= 2.0;
                }
                Err(f) => {
                    let tries = attempt + 1;
                    return Err(if tries > 1 {
                        format!("{} (after {tries} attempts)", f.message)
                    } else {
                        f.message
                    });
                }
            }
        }
    }

    fn attempt<T>(
        &self,
        body: &str,
        parse: &impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, Failure> {
        let url = &self.url;
        let mut call = self
            .agent
            .post(url)
            .header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            call = call.header("Authorization", &format!("Bearer {key}"));
        }
        let mut response = call.send(body).map_err(|e| Failure {
            message: format!("request to {url} failed: {e}"),
            retryable: true,
        })?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string().map_err(|e| Failure {
            message: format!("reading the response from {url} failed: {e}"),
            retryable: true,
        })?;
        if status != 200 {
            let snippet: String = text.chars().take(200).collect();
            return Err(Failure {
                message: format!("{url} answered HTTP {status}: {snippet}"),
                retryable: status == 429 || status >= 500,
            });
        }
        parse(&text).map_err(|message| Failure {
            message: format!("{url}: {message}"),
            retryable: false,
        })
    }
}
