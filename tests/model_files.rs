//! GGUF files the loader must refuse with a message naming the file and
//! the problem: another architecture, missing metadata, an unknown tensor
//! type. The files are written here with candle's GGUF writer.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use cgpo::policy::Llama;

fn write_gguf(path: &Path, arch: &str) {
    let embed = QTensor::quantize(
        &Tensor::zeros((8, 4), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let arch = Value::String(arch.into());
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &arch)],
        &[("token_embd.weight", &embed)],
    )
    .unwrap();
}

#[test]
fn unsupported_architecture_missing_metadata_and_unknown_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    let gpt2 = dir.path().join("gpt2.gguf");
    write_gguf(&gpt2, "gpt2");
    let err = Llama::from_gguf(&gpt2, &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("gpt2.gguf") && err.contains("architecture `gpt2` is not supported"),
        "{err}"
    );

    let llama = dir.path().join("llama.gguf");
    write_gguf(&llama, "llama");
    let err = Llama::from_gguf(&llama, &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("llama.gguf") && err.contains("missing"),
        "{err}"
    );

    // Patch the tensor's ggml type (the u32 after its name, rank and dims).
    let mut bytes = std::fs::read(&llama).unwrap();
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len();
    let type_at = at + 4 + 2 * 8;
    assert_eq!(
        &bytes[type_at..type_at + 4],
        &0u32.to_le_bytes(),
        "F32 is type 0"
    );
    bytes[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let odd = dir.path().join("odd-type.gguf");
    std::fs::write(&odd, bytes).unwrap();
    let err = Llama::from_gguf(&odd, &Device::Cpu, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("odd-type.gguf") && err.contains("77"), "{err}");
}
