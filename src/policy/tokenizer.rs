//! Tokenizers: text <-> token ids, the chat template and the stop tokens.
//!
//! [`HfTokenizer`] wraps the `tokenizers` crate, built from a Hugging Face
//! `tokenizer.json` or from a GGUF file's metadata (byte-level BPE vocab and
//! merges). [`ByteTokenizer`] maps bytes to ids for the toy model.
//!
//! ```
//! use cgpo::policy::{ByteTokenizer, TextTokenizer};
//! let t = ByteTokenizer;
//! let ids = t.encode("héllo")?;
//! assert_eq!(ids.len(), 6); // é is two UTF-8 bytes
//! assert_eq!(t.decode(&ids)?, "héllo");
//! # Ok::<(), cgpo::Error>(())
//! ```

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::quantized::tokenizer::TokenizerFromGguf;
use cgpo_judges::Message;
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use crate::error::{Error, Result};
use crate::local_judge::ChatTokenizer;

/// What rollouts need from a tokenizer.
pub trait TextTokenizer: Send + Sync {
    /// Number of ids, special tokens included.
    fn vocab_size(&self) -> usize;

    /// Ids of `text`; special-token strings in it become their ids.
    fn encode(&self, text: &str) -> Result<Vec<u32>>;

    /// Text of `ids`, special tokens left out.
    fn decode(&self, ids: &[u32]) -> Result<String>;

    /// Ids that end a response (end of sequence, end of turn).
    fn stop_tokens(&self) -> &[u32];

    /// The id used to pad (never attended to).
    fn pad_token(&self) -> u32;

    /// The conversation rendered with the chat template, ready for the
    /// assistant's answer.
    fn render_chat(&self, messages: &[Message]) -> String;

    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode(&self.render_chat(messages))
    }
}

/// Byte-level tokenizer: ids 0-255 are bytes, 256 ends a response, 257
/// pads. The chat template is [`ChatTemplate::Plain`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ByteTokenizer;

impl ByteTokenizer {
    pub const EOS: u32 = 256;
    pub const PAD: u32 = 257;
    pub const VOCAB: usize = 258;
}

impl TextTokenizer for ByteTokenizer {
    fn vocab_size(&self) -> usize {
        Self::VOCAB
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(text.bytes().map(u32::from).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        let bytes: Vec<u8> = ids.iter().filter_map(|&i| u8::try_from(i).ok()).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    fn stop_tokens(&self) -> &[u32] {
        &[Self::EOS]
    }

    fn pad_token(&self) -> u32 {
        Self::PAD
    }

    fn render_chat(&self, messages: &[Message]) -> String {
        ChatTemplate::Plain.render(messages)
    }
}

/// A `tokenizers` tokenizer with its chat template and stop tokens.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: Tokenizer,
    chat: ChatTemplate,
    stop: Vec<u32>,
    pad: u32,
}

impl HfTokenizer {
    /// Wraps a tokenizer. The stop tokens are `eos` plus the chat
    /// template's end-of-turn token when the vocabulary has it; padding
    /// uses the first stop token.
    pub fn new(
        inner: Tokenizer,
        chat: ChatTemplate,
        eos: Option<u32>,
        source: &str,
    ) -> Result<Self> {
        let mut stop: Vec<u32> = eos.into_iter().collect();
        if let Some(id) = chat.end_of_turn().and_then(|t| inner.token_to_id(t)) {
            if !stop.contains(&id) {
                stop.push(id);
            }
        }
        let pad = *stop
            .first()
            .ok_or_else(|| Error::model(source, "the tokenizer has no end-of-sequence token"))?;
        Ok(Self {
            inner,
            chat,
            stop,
            pad,
        })
    }

    /// From a GGUF file's `tokenizer.ggml.*` metadata (byte-level BPE) and
    /// its `tokenizer.chat_template`.
    pub fn from_gguf(content: &gguf_file::Content, source: &str) -> Result<Self> {
        let inner = Tokenizer::from_gguf(content)
            .map_err(|e| Error::model(source, format!("tokenizer: {e}")))?;
        let chat = match content.metadata.get("tokenizer.chat_template") {
            Some(v) => {
                let jinja = v
                    .to_string()
                    .map_err(|e| Error::model(source, format!("tokenizer.chat_template: {e}")))?;
                ChatTemplate::from_jinja(jinja).unwrap_or(ChatTemplate::Plain)
            }
            None => ChatTemplate::Plain,
        };
        let eos =
            match content.metadata.get("tokenizer.ggml.eos_token_id") {
                Some(v) => Some(v.to_u32().map_err(|e| {
                    Error::model(source, format!("tokenizer.ggml.eos_token_id: {e}"))
                })?),
                None => None,
            };
        Self::new(inner, chat, eos, source)
    }

    /// From a Hugging Face `tokenizer.json`, with the chat template and the
    /// end-of-sequence token read from `tokenizer_config.json` next to it
    /// when present.
    pub fn from_file(path: &Path) -> Result<Self> {
        let source = path.display().to_string();
        if !path.is_file() {
            return Err(Error::model(&source, "no such file"));
        }
        let inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(&source, format!("not a tokenizer.json: {e}")))?;
        let config_path = path.with_file_name("tokenizer_config.json");
        let config: serde_json::Value = match std::fs::read_to_string(&config_path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| Error::model(config_path.display(), e.to_string()))?,
            Err(_) => serde_json::Value::Null,
        };
        let chat = config["chat_template"]
            .as_str()
            .and_then(ChatTemplate::from_jinja)
            .unwrap_or(ChatTemplate::Plain);
        let eos_text = match &config["eos_token"] {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v["content"].as_str().map(str::to_owned),
        };
        let eos = eos_text.and_then(|t| inner.token_to_id(&t));
        Self::new(inner, chat, eos, &source)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }
}

impl TextTokenizer for HfTokenizer {
    fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| Error::model("tokenizer", format!("encode: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, true)
            .map_err(|e| Error::model("tokenizer", format!("decode: {e}")))
    }

    fn stop_tokens(&self) -> &[u32] {
        &self.stop
    }

    fn pad_token(&self) -> u32 {
        self.pad
    }

    fn render_chat(&self, messages: &[Message]) -> String {
        self.chat.render(messages)
    }
}

/// Single-token spellings of an answer word: as given, lower-case and
/// capitalised, each with and without a leading space.
fn answer_variants(t: &dyn TextTokenizer, word: &str) -> Result<Vec<u32>> {
    let lower = word.to_lowercase();
    let capital: String = lower
        .chars()
        .take(1)
        .flat_map(char::to_uppercase)
        .chain(lower.chars().skip(1))
        .collect();
    let mut ids = Vec::new();
    for w in [word, &lower, &capital] {
        for v in [w.to_string(), format!(" {w}")] {
            if let [id] = t.encode(&v)?.as_slice() {
                if !ids.contains(id) {
                    ids.push(*id);
                }
            }
        }
    }
    Ok(ids)
}

impl ChatTokenizer for HfTokenizer {
    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        TextTokenizer::encode_chat(self, messages)
    }

    fn answer_tokens(&self, word: &str) -> Result<Vec<u32>> {
        answer_variants(self, word)
    }
}

impl ChatTokenizer for ByteTokenizer {
    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        TextTokenizer::encode_chat(self, messages)
    }

    fn answer_tokens(&self, word: &str) -> Result<Vec<u32>> {
        answer_variants(self, word)
    }
}
