//! Tokenizers: text <-> token ids, the chat template and the stop tokens.
//!
//! [`HfTokenizer`] wraps the `tokenizers` crate, built from a Hugging Face
//! `tokenizer.json` or from a GGUF file's metadata as llama.cpp reads it
//! (the GGUF tokenizer module: byte-level BPE, the pre-tokenizer family the
//! file names, its special tokens and flags), with the model's own Jinja
//! chat template. [`ByteTokenizer`] maps bytes to ids for the toy model.
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
use cgpo_judges::{Message, Prompt};
use tokenizers::Tokenizer;

use super::chat::ChatTemplate;
use crate::error::{Error, Result};

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
    fn render_chat(&self, messages: &[Message]) -> Result<String>;

    /// Ids of the rendered conversation (after the BOS token where the
    /// model's tokenizer adds one).
    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        self.encode(&self.render_chat(messages)?)
    }

    /// A prompt's ids: its messages through the chat template, ready for
    /// the answer.
    fn encode_prompt(&self, prompt: &Prompt) -> Result<Vec<u32>> {
        self.encode_chat(&prompt.messages())
    }

    /// A response's ids: its text, then the first stop token.
    fn encode_response(&self, response: &str) -> Result<Vec<u32>> {
        let mut ids = self.encode(response)?;
        ids.extend(self.stop_tokens().first());
        Ok(ids)
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

    fn render_chat(&self, messages: &[Message]) -> Result<String> {
        ChatTemplate::Plain
            .render(messages)
            .map_err(|e| Error::model("tokenizer", e))
    }
}

/// A `tokenizers` tokenizer with its chat template and stop tokens.
#[derive(Clone)]
pub struct HfTokenizer {
    inner: Tokenizer,
    chat: ChatTemplate,
    stop: Vec<u32>,
    pad: u32,
    /// Put before every encoded conversation.
    bos: Option<u32>,
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
            bos: None,
        })
    }

    /// Starts every encoded conversation with `bos` (GGUF
    /// `tokenizer.ggml.add_bos_token`), unless the template wrote it.
    pub fn with_bos(mut self, bos: Option<u32>) -> Self {
        self.bos = bos;
        self
    }

    /// From a GGUF file's `tokenizer.ggml.*` metadata (see the GGUF
    /// tokenizer module) and its `tokenizer.chat_template`. An unsupported
    /// tokenizer family is an error naming `source` and the family.
    pub fn from_gguf(content: &gguf_file::Content, source: &str) -> Result<Self> {
        let gguf = super::gguf_tokenizer::from_gguf(content, source)?;
        let text = |id: Option<u32>| {
            id.and_then(|i| gguf.tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        let chat = match content.metadata.get("tokenizer.chat_template") {
            Some(v) => {
                let jinja = v
                    .to_string()
                    .map_err(|e| Error::model(source, format!("tokenizer.chat_template: {e}")))?;
                ChatTemplate::jinja(jinja, &text(gguf.bos), &text(gguf.eos))
                    .map_err(|e| Error::model(source, e))?
            }
            None => ChatTemplate::Plain,
        };
        let bos = gguf.bos.filter(|_| gguf.add_bos);
        Ok(Self::new(gguf.tokenizer, chat, gguf.eos, source)?.with_bos(bos))
    }

    /// The tokenizer of a GGUF file, without its weights.
    pub fn from_gguf_file(path: &Path) -> Result<Self> {
        let (content, _) = super::gguf::read_content(path)?;
        Self::from_gguf(&content, &path.display().to_string())
    }

    /// From a Hugging Face `tokenizer.json`, with the chat template and the
    /// BOS and EOS tokens read from `tokenizer_config.json` next to it when
    /// present.
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
        let token_text = |key: &str| match &config[key] {
            serde_json::Value::String(s) => Some(s.clone()),
            v => v["content"].as_str().map(str::to_owned),
        };
        let (bos_text, eos_text) = (token_text("bos_token"), token_text("eos_token"));
        let chat = match config["chat_template"].as_str() {
            Some(jinja) => ChatTemplate::jinja(
                jinja,
                bos_text.as_deref().unwrap_or_default(),
                eos_text.as_deref().unwrap_or_default(),
            )
            .map_err(|e| Error::model(config_path.display(), e))?,
            None => ChatTemplate::Plain,
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

    fn render_chat(&self, messages: &[Message]) -> Result<String> {
        self.chat
            .render(messages)
            .map_err(|e| Error::model("tokenizer", e))
    }

    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        let mut ids = self.encode(&self.render_chat(messages)?)?;
        if let Some(bos) = self.bos {
            if ids.first() != Some(&bos) {
                ids.insert(0, bos);
            }
        }
        Ok(ids)
    }
}
