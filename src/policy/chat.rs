//! Chat templates: how a conversation becomes the text the model was
//! trained on, ending where the assistant's answer begins.
//!
//! A checkpoint's own Jinja template (GGUF `tokenizer.chat_template`, or
//! `chat_template` in `tokenizer_config.json`) is rendered by minijinja set
//! up as transformers sets up Jinja for `apply_chat_template`: blocks
//! trimmed (`trim_blocks`, `lstrip_blocks`), `break`/`continue`, Python's
//! string and dict methods, `raise_exception`, and the variables
//! `messages`, `add_generation_prompt` (true: the text ends where the
//! answer begins), `bos_token` and `eos_token`. Rendering SmolLM2's
//! template this way gives the strings `apply_chat_template` gives
//! (`tests/tokenizer_parity.rs`).
//!
//! ```
//! use cgpo::judges::Message;
//! use cgpo::policy::ChatTemplate;
//! let jinja = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}\
//!              {% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
//! let t = ChatTemplate::jinja(jinja, "", "<|im_end|>")?;
//! assert_eq!(
//!     t.render(&[Message::new("user", "Hi")])?,
//!     "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
//! );
//! assert_eq!(t.end_of_turn(), Some("<|im_end|>"));
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::sync::Arc;

use cgpo_judges::Message;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{context, Environment, Error as JinjaError, ErrorKind, Value};

/// How a conversation is rendered.
#[derive(Clone)]
pub enum ChatTemplate {
    /// The model's Jinja template.
    Jinja(JinjaTemplate),
    /// `{role}: {content}\n` per message, then `assistant: ` (byte-level toy
    /// models).
    Plain,
}

/// A parsed Jinja chat template with the special tokens it may print.
#[derive(Clone)]
pub struct JinjaTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
    env: Arc<Environment<'static>>,
}

const NAME: &str = "chat_template";

/// End-of-turn tokens of the common template families, in the order they
/// are looked for in a template's source.
const END_OF_TURN: [&str; 4] = ["<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>"];

impl ChatTemplate {
    /// Parses a Jinja template; `bos_token` and `eos_token` are the texts
    /// the template sees under those names.
    pub fn jinja(source: &str, bos_token: &str, eos_token: &str) -> Result<Self, String> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| format!("chat template: {e}"))?;
        env.set_syntax(syntax);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| format!("chat template: {e}"))?;
        Ok(ChatTemplate::Jinja(JinjaTemplate {
            source: source.to_owned(),
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
            env: Arc::new(env),
        }))
    }

    /// The conversation rendered up to the start of the assistant's turn.
    pub fn render(&self, messages: &[Message]) -> Result<String, String> {
        match self {
            ChatTemplate::Jinja(t) => {
                let template = t
                    .env
                    .get_template(NAME)
                    .map_err(|e| format!("chat template: {e}"))?;
                template
                    .render(context! {
                        messages => Value::from(Serde(messages)),
                        add_generation_prompt => true,
                        bos_token => &t.bos_token,
                        eos_token => &t.eos_token,
                    })
                    .map_err(|e| format!("chat template: {e}"))
            }
            ChatTemplate::Plain => {
                let mut out = String::new();
                for m in messages {
                    out.push_str(&format!("{}: {}\n", m.role, m.content));
                }
                out.push_str("assistant: ");
                Ok(out)
            }
        }
    }

    /// The token (as text) that ends an assistant turn in this template,
    /// when it is one of the common families'.
    pub fn end_of_turn(&self) -> Option<&'static str> {
        match self {
            ChatTemplate::Jinja(t) => END_OF_TURN.into_iter().find(|e| t.source.contains(e)),
            ChatTemplate::Plain => None,
        }
    }

    /// The Jinja source, if any.
    pub fn source(&self) -> Option<&str> {
        match self {
            ChatTemplate::Jinja(t) => Some(&t.source),
            ChatTemplate::Plain => None,
        }
    }
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChatTemplate::Jinja(t) => f
                .debug_struct("Jinja")
                .field("source", &t.source)
                .field("bos_token", &t.bos_token)
                .field("eos_token", &t.eos_token)
                .finish(),
            ChatTemplate::Plain => f.write_str("Plain"),
        }
    }
}

/// `raise_exception(message)`, which templates call on a conversation they
/// do not accept (transformers defines it the same way).
fn raise_exception(message: String) -> Result<Value, JinjaError> {
    Err(JinjaError::new(ErrorKind::InvalidOperation, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nYou are SmolLM<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn renders_the_default_system_prompt_only_without_one() {
        let t = ChatTemplate::jinja(SMOLLM2, "", "<|im_end|>").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "Q")]).unwrap(),
            "<|im_start|>system\nYou are SmolLM<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
        );
        let mine = t
            .render(&[Message::new("system", "Mine"), Message::new("user", "Q")])
            .unwrap();
        assert!(mine.starts_with("<|im_start|>system\nMine<|im_end|>"));
        assert!(!mine.contains("You are SmolLM"));
    }

    #[test]
    fn python_methods_trimmed_blocks_and_exceptions() {
        let src = "{% for m in messages %}\n  {% if m.role == 'user' %}\n[{{ m.content.strip() | upper }}]\n  {% else %}\n{{ raise_exception('only users: ' + m.role) }}\n  {% endif %}\n{% endfor %}";
        let t = ChatTemplate::jinja(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  hi ")]).unwrap(),
            "[HI]\n"
        );
        let e = t.render(&[Message::new("tool", "x")]).unwrap_err();
        assert!(e.contains("only users: tool"), "{e}");
        assert!(ChatTemplate::jinja("{% for %}", "", "").is_err());
        assert_eq!(t.end_of_turn(), None);
    }
}
