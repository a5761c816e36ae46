//! The tokenizer a GGUF file describes, built as llama.cpp reads it:
//! byte-level BPE over `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`;
//! the pre-tokenizer of the family that `tokenizer.ggml.pre` names;
//! control, user-defined and unknown tokens (`tokenizer.ggml.token_type` 3,
//! 4 and 2) matched as whole tokens in text; no space added before the
//! text (`tokenizer.ggml.add_space_prefix`); the BOS token before a
//! prompt when `tokenizer.ggml.add_bos_token` says so.
//!
//! A tokenizer model, pre-tokenizer family or flag that is not supported
//! is an error naming the file and the value, never a guess: a model fed
//! tokens it was not trained on still runs, and nothing would show it.
//!
//! Families:
//! - `smollm`: each numeral on its own, then GPT-2's split (llama.cpp's
//!   `\p{N}` before the GPT-2 pattern; here `Digits(individual_digits)`,
//!   which splits on `char::is_numeric`, before `ByteLevel`).
//! - `gpt-2`: GPT-2's split alone.
//!
//! Parity with transformers and llama.cpp on SmolLM2 is pinned by
//! `tests/tokenizer_parity.rs`.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};

/// The pre-tokenizer families built here (`tokenizer.ggml.pre`).
pub const SUPPORTED_FAMILIES: [&str; 2] = ["smollm", "gpt-2"];

/// A GGUF file's tokenizer and the special ids it names.
pub(crate) struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// Whether prompts start with the BOS token.
    pub add_bos: bool,
}

/// llama.cpp's token types.
const UNKNOWN: u32 = 2;
const CONTROL: u32 = 3;
const USER_DEFINED: u32 = 4;

pub(crate) fn from_gguf(content: &Content, source: &str) -> Result<GgufTokenizer> {
    let bad = |message: String| Error::model(source, message);
    let model = string(content, "tokenizer.ggml.model", source)?;
    if model != "gpt2" {
        return Err(bad(format!(
            "tokenizer model `{model}` (tokenizer.ggml.model) is not supported: only byte-level \
             BPE (`gpt2`) is"
        )));
    }
    let family = match content.metadata.get("tokenizer.ggml.pre") {
        Some(v) => v
            .to_string()
            .map_err(|e| bad(format!("tokenizer.ggml.pre: {e}")))?
            .clone(),
        None => {
            return Err(bad(
                "tokenizer.ggml.pre is missing, so the pre-tokenizer family is unknown".into(),
            ))
        }
    };
    let pre = pre_tokenizer(&family).ok_or_else(|| {
        bad(format!(
            "tokenizer family `{family}` (tokenizer.ggml.pre) is not supported; supported: {}",
            SUPPORTED_FAMILIES.join(", ")
        ))
    })?;
    if flag(content, "tokenizer.ggml.add_space_prefix", source)? {
        return Err(bad(
            "tokenizer.ggml.add_space_prefix = true is not supported for byte-level BPE".into(),
        ));
    }
    if flag(content, "tokenizer.ggml.add_eos_token", source)? {
        return Err(bad(
            "tokenizer.ggml.add_eos_token = true is not supported: a prompt cannot end a sequence"
                .into(),
        ));
    }
    let tokens = strings(content, "tokenizer.ggml.tokens", source)?;
    let merges = strings(content, "tokenizer.ggml.merges", source)?
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_owned(), b.to_owned())),
            None => Err(bad(format!(
                "tokenizer.ggml.merges[{i}] `{m}` is not `a b`"
            ))),
        })
        .collect::<Result<Vec<_>>>()?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    if vocab.len() != tokens.len() {
        return Err(bad("tokenizer.ggml.tokens has duplicate tokens".into()));
    }
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| bad(format!("tokenizer: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));
    let types = match content.metadata.get("tokenizer.ggml.token_type") {
        Some(v) => v
            .to_vec()
            .map_err(|e| bad(format!("tokenizer.ggml.token_type: {e}")))?
            .iter()
            .map(|t| integer(t).ok_or_else(|| bad(format!("tokenizer.ggml.token_type: {t:?}"))))
            .collect::<Result<Vec<u32>>>()?,
        None => Vec::new(),
    };
    let mut specials = Vec::new();
    let mut user_defined = Vec::new();
    for (token, ty) in tokens.iter().zip(&types) {
        match *ty {
            UNKNOWN | CONTROL => specials.push(AddedToken::from(token.clone(), true)),
            USER_DEFINED => {
                user_defined.push(AddedToken::from(token.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(specials)
        .and_then(|_| tokenizer.add_tokens(user_defined))
        .map_err(|e| bad(format!("tokenizer: special tokens: {e}")))?;
    let id = |key: &str| -> Result<Option<u32>> {
        match content.metadata.get(key) {
            None => Ok(None),
            Some(v) => integer(v)
                .filter(|&i| (i as usize) < tokens.len())
                .map(Some)
                .ok_or_else(|| bad(format!("{key}: not a token id: {v:?}"))),
        }
    };
    let (bos, eos) = (
        id("tokenizer.ggml.bos_token_id")?,
        id("tokenizer.ggml.eos_token_id")?,
    );
    let add_bos = flag(content, "tokenizer.ggml.add_bos_token", source)?;
    if add_bos && bos.is_none() {
        return Err(bad(
            "tokenizer.ggml.add_bos_token is true but tokenizer.ggml.bos_token_id is missing"
                .into(),
        ));
    }
    Ok(GgufTokenizer {
        tokenizer,
        bos,
        eos,
        add_bos,
    })
}

/// The pre-tokenizer of a supported family.
fn pre_tokenizer(family: &str) -> Option<PreTokenizerWrapper> {
    let gpt2 = ByteLevel::new(false, false, true);
    Some(match family {
        "smollm" => Sequence::new(vec![Digits::new(true).into(), gpt2.into()]).into(),
        "gpt-2" => gpt2.into(),
        _ => return None,
    })
}

fn string(content: &Content, key: &str, source: &str) -> Result<String> {
    match content.metadata.get(key) {
        Some(v) => v
            .to_string()
            .cloned()
            .map_err(|e| Error::model(source, format!("{key}: {e}"))),
        None => Err(Error::model(source, format!("{key} is missing"))),
    }
}

fn strings(content: &Content, key: &str, source: &str) -> Result<Vec<String>> {
    let values = match content.metadata.get(key) {
        Some(v) => v
            .to_vec()
            .map_err(|e| Error::model(source, format!("{key}: {e}")))?,
        None => return Err(Error::model(source, format!("{key} is missing"))),
    };
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.to_string()
                .cloned()
                .map_err(|e| Error::model(source, format!("{key}[{i}]: {e}")))
        })
        .collect()
}

/// A boolean flag; absent is false.
fn flag(content: &Content, key: &str, source: &str) -> Result<bool> {
    match content.metadata.get(key) {
        None => Ok(false),
        Some(v) => v
            .to_bool()
            .map_err(|e| Error::model(source, format!("{key}: {e}"))),
    }
}

fn integer(v: &Value) -> Option<u32> {
    match v {
        Value::U8(x) => Some(u32::from(*x)),
        Value::U16(x) => Some(u32::from(*x)),
        Value::U32(x) => Some(*x),
        Value::I8(x) => u32::try_from(*x).ok(),
        Value::I16(x) => u32::try_from(*x).ok(),
        Value::I32(x) => u32::try_from(*x).ok(),
        Value::U64(x) => u32::try_from(*x).ok(),
        Value::I64(x) => u32::try_from(*x).ok(),
        _ => None,
    }
}
