#!/usr/bin/env python3
"""Hugging Face transformers peer for cgpo's rollout (generation) throughput.

Generates with SmolLM2-135M-Instruct, loaded from the same Q4_1 GGUF file
that the Rust side uses (scripts/fetch-smollm2.sh), and prints generated
tokens per second at batch 1 and batch 16. Run it on the same machine and
thread count as the Rust rollout benchmark.

What is timed (per batch size B, in one process, excluding start-up, imports
and model loading):

  * weights: transformers de-quantises the GGUF tensors (Q4_1, the embedding
    Q8_0, norms F32) to f32 when it loads them; all compute is f32, on CPU,
    with torch.set_num_threads(--threads), default 2. Attention is
    transformers' default (sdpa); the output head is tied to the embedding.
  * prompts: the first B of the 16 user questions in PROMPTS, each rendered
    with the GGUF's ChatML chat template (tokenizer.apply_chat_template,
    add_generation_prompt=True, which also inserts SmolLM's default system
    message), tokenized without extra special tokens and left-padded to the
    longest prompt in the batch (pad = <|im_end|>, id 2, masked out).
  * generation: model.generate with the KV cache, exactly --new-tokens new
    tokens per row (min_new_tokens = max_new_tokens, so <|im_end|> is masked
    and never ends a row early), by pure ancestral sampling: do_sample=True,
    temperature 1.0, top_k 0, top_p 1.0, i.e. a multinomial draw from the
    full softmax and no logits warpers. top_k=0 must be given explicitly:
    left unset, transformers falls back to top_k=50. The only logits
    processors that run are the two EOS masks min_new_tokens implies
    (MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor).
  * one untimed warm-up generate per batch size, then --reps timed ones
    (torch.manual_seed(--seed) before each). The figure is
    B * new_tokens * reps / total seconds; the time includes the prompt
    prefill (about 40 tokens per row) and transformers' per-step overhead,
    which is what a user of model.generate pays for a rollout.

Run it on an otherwise idle machine: torch's CPU threads spin-wait, and on
the 2-core development VM a concurrent `cargo build` cut the figures by
4-8x (batch 1 from ~16 to 2.4-4 tok/s, batch 16 from ~104 to 13-28 tok/s).

The last line of output is one JSON object, e.g.

  {"peer": "transformers", "batch1_tok_s": ..., "batch16_tok_s": ...,
   "threads": 2, "torch": "...", "transformers": "...", ...}

Two other modes, which replace the benchmark (they can be combined):

  --greedy-check        greedy (do_sample=False) answer, at most 32 new
                        tokens, to "What is the capital of France?"; it
                        should say Paris.
  --dump-logits OUT     one forward pass over the chat-rendered prompt for
                        "What is the capital of France?"; writes OUT as JSON
                        with the token ids, the argmax of the logits at every
                        position and the full logits of the last position,
                        for comparison with the Rust implementation.

Nothing is fetched from the Hugging Face hub (HF_HUB_OFFLINE=1,
local_files_only=True); tokenizer and config come from the GGUF metadata.

Setup: a venv with torch 2.15.0 from PyPI plus, for GGUF loading,
transformers, gguf and accelerate (transformers refuses to load a GGUF
without accelerate). The versions these figures were taken with:

    python3 -m venv ~/.cache/cgpo/torch-venv
    ~/.cache/cgpo/torch-venv/bin/pip install torch==2.15.0 \\
        transformers==5.24.0 gguf==0.19.0 accelerate==1.15.0

Usage:

    ~/.cache/cgpo/torch-venv/bin/python benches/transformers_peer.py
    ~/.cache/cgpo/torch-venv/bin/python benches/transformers_peer.py \\
        --batches 1,16 --new-tokens 64 --reps 2 --threads 2
    ~/.cache/cgpo/torch-venv/bin/python benches/transformers_peer.py --greedy-check
    ~/.cache/cgpo/torch-venv/bin/python benches/transformers_peer.py \\
        --dump-logits /tmp/smollm2_logits.json

Exit code 2 if torch/transformers/gguf/accelerate are missing.
"""

import argparse
import json
import os
import subprocess
import sys
import time

# Before transformers / huggingface_hub are imported: never reach the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# The GGUF loader's plain tqdm bar ("Converting and de-quantizing ...").
os.environ.setdefault("TQDM_DISABLE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
FETCH = os.path.join(HERE, "..", "scripts", "fetch-smollm2.sh")

# Sixteen short user questions of varying length; batch B uses the first B.
PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Name three primary colors.",
    "How many legs does a spider have?",
    "Explain in one sentence why the sky is blue.",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "Translate 'good morning' into Spanish.",
    "What is the boiling point of water in Celsius at sea level?",
    "Suggest a name for a pet goldfish.",
    "Who wrote Romeo and Juliet?",
    "List two benefits of regular exercise.",
    "What does a CPU do in a computer? Answer briefly.",
    "Write a short sentence using the word 'lantern'.",
    "Is a tomato a fruit or a vegetable?",
    "Describe the taste of lemon in a few words.",
]
CHECK_PROMPT = PROMPTS[0]


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gguf", metavar="PATH",
                    help="GGUF file (default: the path printed by "
                         "scripts/fetch-smollm2.sh)")
    ap.add_argument("--batches", default="1,16",
                    help="comma-separated batch sizes, each <= 16 "
                         "(default 1,16)")
    ap.add_argument("--new-tokens", type=int, default=64,
                    help="new tokens generated per row (default 64)")
    ap.add_argument("--reps", type=int, default=1,
                    help="timed generate calls per batch size, after one "
                         "warm-up (default 1)")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--greedy-check", action="store_true",
                    help="print the greedy 32-token answer to "
                         f"{CHECK_PROMPT!r} instead of benchmarking")
    ap.add_argument("--dump-logits", metavar="OUT",
                    help="write ids, per-position argmax and last-position "
                         f"logits for {CHECK_PROMPT!r} to OUT (JSON) instead "
                         "of benchmarking")
    ap.add_argument("--json", metavar="PATH",
                    help="also write the final JSON object here")
    args = ap.parse_args()
    try:
        args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        ap.error("--batches takes comma-separated integers, e.g. 1,16")
    if not args.batches or any(not 1 <= b <= len(PROMPTS) for b in args.batches):
        ap.error(f"batch sizes must be between 1 and {len(PROMPTS)}")
    if args.new_tokens < 1 or args.reps < 1 or args.threads < 1:
        ap.error("--new-tokens, --reps and --threads must be positive")
    return args


def gguf_path(arg):
    if arg:
        return os.path.abspath(arg)
    out = subprocess.run(["bash", FETCH], check=True, stdout=subprocess.PIPE,
                         text=True).stdout.strip()
    return out.splitlines()[-1]


def gguf_summary(path):
    """A few header fields and the tensor types, read with the gguf package
    (memory-mapped; cheap)."""
    from collections import Counter
    from gguf import GGUFReader

    reader = GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()

    def field(key):
        f = reader.fields.get(key)
        return None if f is None else f.contents()

    keys = ["block_count", "embedding_length", "feed_forward_length",
            "attention.head_count", "attention.head_count_kv",
            "context_length", "rope.freq_base", "rope.dimension_count",
            "rope.scaling.type", "attention.layer_norm_rms_epsilon",
            "vocab_size"]
    meta = {"architecture": arch, "name": field("general.name"),
            "file_type": field("general.file_type")}
    for k in keys:
        v = field(f"{arch}.{k}")
        if v is not None:
            meta[k] = v
    meta["tensor_types"] = dict(Counter(t.tensor_type.name
                                        for t in reader.tensors))
    meta["tied_output"] = not any(t.name == "output.weight"
                                  for t in reader.tensors)
    return meta


def render(tok, question):
    return tok.apply_chat_template([{"role": "user", "content": question}],
                                   add_generation_prompt=True, tokenize=False)


def encode(tok, questions):
    texts = [render(tok, q) for q in questions]
    return tok(texts, return_tensors="pt", padding=True,
               add_special_tokens=False)


def greedy_check(torch, tok, model):
    enc = encode(tok, [CHECK_PROMPT])
    with torch.inference_mode():
        out = model.generate(**enc, do_sample=False, max_new_tokens=32,
                             pad_token_id=tok.pad_token_id)
    new = out[0, enc.input_ids.shape[1]:]
    print(f"greedy-check prompt: {CHECK_PROMPT!r}")
    print(f"greedy-check ids:    {new.tolist()}")
    print(f"greedy-check answer: {tok.decode(new, skip_special_tokens=True)!r}")
    print(f"greedy-check raw:    {tok.decode(new)!r}")


def dump_logits(torch, tok, model, out_path, meta):
    enc = encode(tok, [CHECK_PROMPT])
    ids = enc.input_ids
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[0].float()
    argmax = logits.argmax(-1)
    last = logits[-1]
    top = torch.topk(last, 5)
    doc = {
        "prompt": CHECK_PROMPT,
        "rendered": render(tok, CHECK_PROMPT),
        "token_ids": ids[0].tolist(),
        "tokens": tok.convert_ids_to_tokens(ids[0].tolist()),
        "argmax": argmax.tolist(),
        "last_logits": last.tolist(),
        "last_top5": {"ids": top.indices.tolist(),
                      "logits": top.values.tolist(),
                      "tokens": tok.convert_ids_to_tokens(top.indices.tolist())},
        "vocab_size": int(last.shape[0]),
        "dtype": "f32",
        "gguf": meta["path"],
        "torch": torch.__version__,
        "transformers": meta["transformers"],
    }
    with open(out_path, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print(f"dump-logits: {len(doc['token_ids'])} prompt tokens, "
          f"vocab {doc['vocab_size']}, wrote {out_path}")
    print(f"dump-logits: last-position top 5: "
          + ", ".join(f"{t!r} ({i}) {v:.3f}" for t, i, v in
                      zip(doc["last_top5"]["tokens"], doc["last_top5"]["ids"],
                          doc["last_top5"]["logits"])))


def bench(torch, tok, model, args):
    from transformers import GenerationConfig

    n = args.new_tokens
    gen_cfg = GenerationConfig(
        do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
        min_new_tokens=n, max_new_tokens=n, use_cache=True,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id)
    print(f"{'batch':>5}{'prompt':>8}{'new':>5}{'rep':>5}{'s':>10}"
          f"{'tok/s':>10}")
    figures = {}
    for b in args.batches:
        enc = encode(tok, PROMPTS[:b])
        plen = enc.input_ids.shape[1]
        with torch.inference_mode():
            torch.manual_seed(args.seed)
            model.generate(**enc, generation_config=gen_cfg)  # warm-up
            total = 0.0
            for rep in range(args.reps):
                torch.manual_seed(args.seed + 1 + rep)
                t0 = time.perf_counter()
                out = model.generate(**enc, generation_config=gen_cfg)
                sec = time.perf_counter() - t0
                if out.shape != (b, plen + n):
                    raise RuntimeError(f"expected output shape {(b, plen + n)}"
                                       f", got {tuple(out.shape)}")
                total += sec
                print(f"{b:>5}{plen:>8}{n:>5}{rep + 1:>5}{sec:>10.2f}"
                      f"{b * n / sec:>10.2f}", flush=True)
        figures[b] = b * n * args.reps / total
        print(f"batch {b}: {figures[b]:.2f} generated tok/s "
              f"({b} x {n} tokens x {args.reps} reps in {total:.2f} s)",
              flush=True)
    return figures


def main():
    args = parse_args()
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        import gguf  # noqa: F401  (needed by transformers' GGUF loader)
        import accelerate  # noqa: F401  (likewise)
    except ImportError as e:
        print(f"transformers_peer.py: {e}; install torch, transformers, gguf "
              "and accelerate in a venv (see the top of this file).",
              file=sys.stderr)
        return 2
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()

    path = gguf_path(args.gguf)
    meta = gguf_summary(path)
    meta["path"] = path
    meta["transformers"] = transformers.__version__
    torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}"
          f", cpu, {threads} threads")
    print(f"gguf {path}")
    print("gguf " + ", ".join(f"{k} {v}" for k, v in meta.items()
                              if k not in ("path", "transformers")))

    t0 = time.perf_counter()
    d, name = os.path.split(path)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name,
                                        local_files_only=True)
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(
        d, gguf_file=name, local_files_only=True, dtype=torch.float32)
    model.eval()
    print(f"loaded and de-quantised to f32 in {time.perf_counter() - t0:.1f} s"
          f" ({sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters, attention {model.config._attn_implementation})",
          flush=True)

    if args.greedy_check or args.dump_logits:
        if args.greedy_check:
            greedy_check(torch, tok, model)
        if args.dump_logits:
            dump_logits(torch, tok, model, args.dump_logits, meta)
        return 0

    figures = bench(torch, tok, model, args)
    result = {"peer": "transformers"}
    result.update({f"batch{b}_tok_s": round(v, 3) for b, v in figures.items()})
    result.update({
        "new_tokens": args.new_tokens, "reps": args.reps, "threads": threads,
        "sampling": "do_sample temperature=1.0 top_k=0 top_p=1.0, "
                    "min_new_tokens=max_new_tokens",
        "dtype": "f32", "device": "cpu",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "gguf": os.path.basename(path),
    })
    line = json.dumps(result)
    if args.json:
        with open(args.json, "w") as f:
            f.write(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
