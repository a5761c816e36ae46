//! Chat templates: how a conversation becomes the text the model was
//! trained on, ending where the assistant's answer begins.
//!
//! Checkpoints describe their template in Jinja; rather than embed a Jinja
//! engine, the common templates are recognised from it: ChatML (SmolLM2,
//! Qwen, ...), including a default system prompt that the template inserts
//! when the conversation has none.
//!
//! ```
//! use cgpo::judges::Message;
//! use cgpo::policy::ChatTemplate;
//! let t = ChatTemplate::ChatMl { default_system: Some("Be brief.".into()) };
//! assert_eq!(
//!     t.render(&[Message::new("user", "Hi")]),
//!     "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
//! );
//! ```

use cgpo_judges::Message;
use regex::Regex;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `<|im_start|>{role}\n{content}<|im_end|>\n` per message, then
    /// `<|im_start|>assistant\n`.
    ChatMl { default_system: Option<String> },
    /// `{role}: {content}\n` per message, then `assistant: ` (byte-level toy
    /// models).
    Plain,
}

impl ChatTemplate {
    /// Recognises a Jinja chat template; `None` when it is not one we know.
    pub fn from_jinja(source: &str) -> Option<Self> {
        if !source.contains("<|im_start|>") {
            return None;
        }
        // The default system prompt, if the template writes one literally.
        let re = Regex::new(r"<\|im_start\|>system(?:\\n|\n)(.*?)<\|im_end\|>").ok()?;
        let default_system = re
            .captures(source)
            .map(|c| c[1].replace("\\n", "\n"))
            .filter(|s| !s.contains("{{") && !s.contains("{%"));
        Some(ChatTemplate::ChatMl { default_system })
    }

    /// The conversation rendered up to the start of the assistant's turn.
    pub fn render(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                let has_system = messages.first().is_some_and(|m| m.role == "system");
                if let (false, Some(system)) = (has_system, default_system) {
                    out.push_str(&format!("<|im_start|>system\n{system}<|im_end|>\n"));
                }
                for m in messages {
                    out.push_str(&format!(
                        "<|im_start|>{}\n{}<|im_end|>\n",
                        m.role, m.content
                    ));
                }
                out.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Plain => {
                for m in messages {
                    out.push_str(&format!("{}: {}\n", m.role, m.content));
                }
                out.push_str("assistant: ");
            }
        }
        out
    }

    /// Tokens (as text) that end an assistant turn in this template.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self {
            ChatTemplate::ChatMl { .. } => Some("<|im_end|>"),
            ChatTemplate::Plain => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_chatml_with_default_system_prompt() {
        let jinja = r"{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are SmolLM<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        assert_eq!(
            ChatTemplate::from_jinja(jinja),
            Some(ChatTemplate::ChatMl {
                default_system: Some("You are SmolLM".into())
            })
        );
        assert_eq!(ChatTemplate::from_jinja("{{ bos_token }}[INST]"), None);
        let t = ChatTemplate::ChatMl {
            default_system: Some("S".into()),
        };
        let with_system = t.render(&[Message::new("system", "Mine"), Message::new("user", "Q")]);
        assert!(with_system.starts_with("<|im_start|>system\nMine<|im_end|>"));
        assert!(!with_system.contains("\nS<|im_end|>"));
    }
}
