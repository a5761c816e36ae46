//! Rollout throughput: generated tokens per second of batched sampling with
//! a KV cache, for SmolLM2-135M-Instruct (f32, dequantized from the GGUF)
//! at several batch sizes and for TinyLm, optionally side by side with the
//! PyTorch `transformers` peer (`benches/transformers_peer.py`) on the same
//! GGUF, prompts, thread count and token count.
//!
//!     cargo run --release --example bench_rollout                 # ours only
//!     cargo run --release --example bench_rollout -- --peer       # + transformers
//!
//! Every row generates exactly `--new-tokens` tokens (stop tokens ignored,
//! like the peer's `min_new_tokens`), sampling at temperature 1 without
//! top-k / top-p. One warm-up run per case, then the median of `--reps`.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use candle_core::Device;
use cgpo::judges::Message;
use cgpo::policy::{Llama, Policy, TextTokenizer, TinyLm, TinyLmConfig};
use cgpo::rollout::{generate, SamplingConfig};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// The SmolLM2 GGUF; default: what `scripts/fetch-smollm2.sh` prints.
    #[arg(long)]
    gguf: Option<PathBuf>,
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16])]
    batches: Vec<usize>,
    #[arg(long, default_value_t = 64)]
    new_tokens: usize,
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Also run the transformers peer (needs torch, transformers, gguf).
    #[arg(long)]
    peer: bool,
    /// Python for the peer; default: the venv `scripts/torch-venv.sh` makes
    /// (~/.cache/cgpo/torch-venv).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Write the figures as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// The questions both this benchmark and the peer use (benches/data).
fn questions() -> cgpo::Result<Vec<String>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/data/rollout_prompts.json"
    );
    let text =
        std::fs::read_to_string(path).map_err(|e| cgpo::Error::Rollout(format!("{path}: {e}")))?;
    serde_json::from_str(&text).map_err(|e| cgpo::Error::Rollout(format!("{path}: {e}")))
}

/// Median generated tokens per second over `reps` runs after a warm-up.
fn throughput(
    policy: &dyn Policy,
    tok: &dyn TextTokenizer,
    prompts: &[Vec<u32>],
    new_tokens: usize,
    reps: usize,
) -> cgpo::Result<f64> {
    let cfg = SamplingConfig {
        max_new_tokens: new_tokens,
        stop_at_eos: false,
        seed: 1,
        ..SamplingConfig::default()
    };
    generate(policy, tok, prompts, &cfg)?;
    let mut rates = Vec::new();
    for rep in 0..reps {
        let cfg = SamplingConfig {
            seed: 2 + rep as u64,
            ..cfg.clone()
        };
        let start = Instant::now();
        let out = generate(policy, tok, prompts, &cfg)?;
        let tokens: usize = out.responses.iter().map(Vec::len).sum();
        rates.push(tokens as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

fn main() -> cgpo::Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let gguf = match args.gguf.clone() {
        Some(p) => p,
        None => {
            let out = Command::new("bash")
                .arg(root.join("scripts/fetch-smollm2.sh"))
                .output()
                .map_err(|e| cgpo::Error::Rollout(format!("fetch-smollm2.sh: {e}")))?;
            if !out.status.success() {
                return Err(cgpo::Error::Rollout(format!(
                    "fetch-smollm2.sh failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        }
    };
    let threads = rayon::current_num_threads();
    println!("threads: {threads} (rayon; candle's matmul uses the same count)");
    let questions = questions()?;
    let llama = Llama::from_gguf(&gguf, &Device::Cpu, false)?;
    let chat = |q: &String| {
        llama
            .tokenizer
            .encode_chat(&[Message::new("user", q.as_str())])
    };
    let mut figures = serde_json::Map::new();
    for &b in &args.batches {
        let prompts = questions
            .iter()
            .cycle()
            .take(b)
            .map(chat)
            .collect::<cgpo::Result<Vec<_>>>()?;
        let rate = throughput(
            &llama,
            &llama.tokenizer,
            &prompts,
            args.new_tokens,
            args.reps,
        )?;
        println!("cgpo   SmolLM2-135M f32  batch {b:>3}: {rate:8.2} tok/s");
        figures.insert(format!("smollm2_batch{b}_tok_s"), json!(rate));
    }
    let tiny = TinyLm::new(&TinyLmConfig::default(), 0)?;
    for &b in &args.batches {
        let prompts = questions
            .iter()
            .cycle()
            .take(b)
            .map(|q| {
                tiny.tokenizer
                    .encode_chat(&[Message::new("user", q.as_str())])
            })
            .collect::<cgpo::Result<Vec<_>>>()?;
        let rate = throughput(&tiny, &tiny.tokenizer, &prompts, args.new_tokens, args.reps)?;
        println!("cgpo   TinyLm (default)  batch {b:>3}: {rate:8.2} tok/s");
        figures.insert(format!("tinylm_batch{b}_tok_s"), json!(rate));
    }
    if args.peer {
        let python = args.python.clone().unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default())
                .join(".cache/cgpo/torch-venv/bin/python")
        });
        let batches: Vec<String> = args.batches.iter().map(|b| b.to_string()).collect();
        let out = Command::new(&python)
            .arg(root.join("benches/transformers_peer.py"))
            .args([
                "--gguf",
                &gguf.display().to_string(),
                "--batches",
                &batches.join(","),
                "--new-tokens",
                &args.new_tokens.to_string(),
                "--reps",
                &args.reps.to_string(),
            ])
            .output()
            .map_err(|e| cgpo::Error::Rollout(format!("{}: {e}", python.display())))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        let peer: serde_json::Value = stdout
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())
            .ok_or_else(|| {
                cgpo::Error::Rollout(format!(
                    "the peer printed no JSON line: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            })?;
        for &b in &args.batches {
            let ours = figures[&format!("smollm2_batch{b}_tok_s")]
                .as_f64()
                .unwrap_or(0.0);
            if let Some(theirs) = peer[format!("batch{b}_tok_s")].as_f64() {
                println!("batch {b:>3}: cgpo {ours:.2} tok/s, transformers {theirs:.2} tok/s, speed-up {:.2}x", ours / theirs);
            }
        }
        figures.insert("peer".into(), peer);
    }
    if let Some(path) = &args.json {
        std::fs::write(
            path,
            serde_json::to_string_pretty(&figures).unwrap_or_default(),
        )
        .map_err(|e| cgpo::Error::Rollout(format!("{}: {e}", path.display())))?;
    }
    Ok(())
}
