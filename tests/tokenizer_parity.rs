//! SmolLM2's tokenizer, built from its GGUF file, against two independent
//! references on the same file (`tests/data/smollm2_tokenizer.jsonl`,
//! written by `benches/tokenizer_fixture.py`): transformers' GGUF
//! conversion and llama.cpp's tokenizer. 1,200 strings: chat-templated
//! conversations, multilingual and emoji text, whitespace runs and tabs,
//! digits and long numbers, code, and text with special-token strings.
//! Encode and decode must match exactly (llama.cpp's ids on every string;
//! transformers' on every string but the 40 with non-ASCII numerals, where
//! its GGUF conversion drops the family's digit split), and conversations
//! must render as `apply_chat_template` renders them. A tokenizer family the GGUF reader
//! does not support is an error naming the file and the family.
//!
//! The model is fetched (once, then cached) by `scripts/fetch-smollm2.sh`.

mod common;

use std::sync::OnceLock;

use candle_core::quantized::gguf_file;
use cgpo::judges::Message;
use cgpo::policy::{HfTokenizer, Llama, TextTokenizer};
use serde_json::Value;

const FIXTURE: &str = include_str!("data/smollm2_tokenizer.jsonl");

fn tokenizer() -> Option<&'static HfTokenizer> {
    static TOKENIZER: OnceLock<Option<HfTokenizer>> = OnceLock::new();
    TOKENIZER
        .get_or_init(|| common::fetch_smollm2().map(|p| HfTokenizer::from_gguf_file(&p).unwrap()))
        .as_ref()
}

fn records() -> Vec<Value> {
    FIXTURE
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn the_fixture_covers_what_it_says() {
    let records = records();
    assert!(records.len() >= 1000, "{}", records.len());
    for kind in [
        "chat",
        "multilingual",
        "whitespace",
        "digits",
        "code",
        "specials",
    ] {
        let n = records.iter().filter(|r| r["kind"] == kind).count();
        assert!(n >= 100, "{kind}: {n}");
    }
    // The references decode alike everywhere, and encode alike except on
    // numerals outside ASCII (`½`, `٣`, `४`): llama.cpp's `smollm` family
    // splits every `\p{N}` character off (as `tokenizers`'
    // `Digits(individual_digits)` does), while transformers' GGUF conversion
    // ignores the family and has no such step. Those are exactly the
    // strings where the ids differ.
    assert!(records.iter().all(|r| r.get("llama_cpp_decoded").is_none()));
    for r in &records {
        let text = r["text"].as_str().unwrap();
        let numeral = text.chars().any(|c| c.is_numeric() && !c.is_ascii());
        assert_eq!(r.get("llama_cpp_ids").is_some(), numeral, "{text:?}");
    }
}

/// llama.cpp's ids everywhere; those are transformers' too except on
/// non-ASCII numerals (see the fixture test above).
#[test]
fn encode_and_decode_match_the_references() {
    let Some(t) = tokenizer() else { return };
    let mut wrong = Vec::new();
    let records = records();
    for r in &records {
        let text = r["text"].as_str().unwrap();
        let expected = ids(r.get("llama_cpp_ids").unwrap_or(&r["ids"]));
        let got = t.encode(text).unwrap();
        if got != expected {
            wrong.push(format!(
                "encode {text:?}:\n  got  {got:?}\n  want {expected:?}"
            ));
            continue;
        }
        // The fixture writes decoded texts only where they differ from the
        // text (with special tokens) or from that (without them).
        let want = r.get("decoded").map_or(text, |d| d.as_str().unwrap());
        let want_skip = r.get("decoded_skip").map_or(want, |d| d.as_str().unwrap());
        let decoded = t.inner().decode(&expected, false).unwrap();
        if decoded != want {
            wrong.push(format!("decode {text:?}: got {decoded:?}"));
        }
        let skipped = t.decode(&expected).unwrap();
        if skipped != want_skip {
            wrong.push(format!("decode without specials {text:?}: got {skipped:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} strings differ:\n{}",
        wrong.len(),
        records.len(),
        wrong[..wrong.len().min(20)].join("\n")
    );
}

#[test]
fn conversations_render_as_apply_chat_template() {
    let Some(t) = tokenizer() else { return };
    let mut n = 0;
    for r in records().iter().filter(|r| r["kind"] == "chat") {
        let messages: Vec<Message> = serde_json::from_value(r["messages"].clone()).unwrap();
        assert_eq!(
            t.render_chat(&messages).unwrap(),
            r["text"].as_str().unwrap(),
            "{messages:?}"
        );
        n += 1;
    }
    assert!(n >= 200);
    // The default system prompt is the template's, and the prompt is the
    // tokens SmolLM2 was tuned on: `<|im_start|>`, `user`, `\n`.
    let ids = t.encode_chat(&[Message::new("user", "Hi")]).unwrap();
    let text = t.inner().decode(&ids, false).unwrap();
    assert!(
        text.starts_with("<|im_start|>system\nYou are a helpful AI assistant named SmolLM"),
        "{text:?}"
    );
    let user = t.encode("<|im_start|>user\n").unwrap();
    assert_eq!(user.len(), 3, "{user:?}");
}

#[test]
fn an_unsupported_family_is_an_error_naming_the_file_and_family() {
    let Some(path) = common::fetch_smollm2() else {
        return;
    };
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (key, value, want) in [
        (
            "tokenizer.ggml.pre",
            "llama-bpe",
            "tokenizer family `llama-bpe`",
        ),
        ("tokenizer.ggml.model", "llama", "tokenizer model `llama`"),
    ] {
        // A copy of SmolLM2's metadata with one value changed, and a tiny
        // embedding for the model config, which is read first.
        let out = dir.path().join(format!("{value}.gguf"));
        let changed = gguf_file::Value::String(value.into());
        let metadata: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), if k == key { &changed } else { v }))
            .collect();
        let embed = candle_core::quantized::QTensor::quantize(
            &candle_core::Tensor::zeros((2, 2), candle_core::DType::F32, &candle_core::Device::Cpu)
                .unwrap(),
            candle_core::quantized::GgmlDType::F32,
        )
        .unwrap();
        let mut w = std::fs::File::create(&out).unwrap();
        gguf_file::write(&mut w, &metadata, &[("token_embd.weight", &embed)]).unwrap();
        drop(w);
        for err in [
            HfTokenizer::from_gguf_file(&out).err().unwrap().to_string(),
            Llama::from_gguf(&out, &candle_core::Device::Cpu, false)
                .err()
                .unwrap()
                .to_string(),
        ] {
            assert!(
                err.contains(&out.display().to_string()) && err.contains(want),
                "{err}"
            );
        }
    }
}
