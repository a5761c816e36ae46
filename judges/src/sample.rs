//! What a judge sees: a prompt (plain text or chat messages), one response,
//! and the prompt's metadata (gold answer, unit tests, instruction list, ...).
//!
//! Judges get raw messages and metadata rather than one chat-templated
//! string, so a rule judge never has to parse a template back apart.
//!
//! ```
//! use cgpo_judges::{Message, Prompt, SampleView};
//! let prompt = Prompt::Messages(vec![Message::new("user", "What is 2+2?")]);
//! let meta = serde_json::json!({"answer": "4"});
//! let view = SampleView::new("p1", &prompt, "The final answer is 4.", &meta);
//! assert_eq!(view.prompt.last_user_text(), Some("What is 2+2?"));
//! assert_eq!(view.metadata["answer"], "4");
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One chat message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A prompt: either plain text or a list of chat messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Messages(Vec<Message>),
}

impl Prompt {
    /// The text a user asked: the plain text, or the last `user` message.
    pub fn last_user_text(&self) -> Option<&str> {
        match self {
            Prompt::Text(t) => Some(t),
            Prompt::Messages(ms) => ms
                .iter()
                .rev()
                .find(|m| m.role == "user")
                .map(|m| m.content.as_str()),
        }
    }

    /// The prompt as chat messages: plain text is one `user` message.
    pub fn messages(&self) -> Vec<Message> {
        match self {
            Prompt::Text(t) => vec![Message::new("user", t.as_str())],
            Prompt::Messages(ms) => ms.clone(),
        }
    }

    /// Every piece of text in the prompt, in order (for keyword matching).
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        let (single, many) = match self {
            Prompt::Text(t) => (Some(t.as_str()), &[][..]),
            Prompt::Messages(ms) => (None, ms.as_slice()),
        };
        single
            .into_iter()
            .chain(many.iter().map(|m| m.content.as_str()))
    }
}

impl From<&str> for Prompt {
    fn from(s: &str) -> Self {
        Prompt::Text(s.to_owned())
    }
}

/// A borrowed view of one (prompt, response) pair with its metadata: the
/// unit that judges and reward models score.
#[derive(Clone, Copy, Debug)]
pub struct SampleView<'a> {
    /// The prompt record's id (stable across rollouts of the same prompt).
    pub id: &'a str,
    pub prompt: &'a Prompt,
    pub response: &'a str,
    pub metadata: &'a Value,
}

impl<'a> SampleView<'a> {
    pub fn new(id: &'a str, prompt: &'a Prompt, response: &'a str, metadata: &'a Value) -> Self {
        Self {
            id,
            prompt,
            response,
            metadata,
        }
    }
}
