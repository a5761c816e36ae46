"""Writes tests/data/smollm2_tokenizer.jsonl: SmolLM2's tokenization of
generated strings by two independent references, for tests/tokenizer_parity.rs.

References, both reading the same GGUF file (scripts/fetch-smollm2.sh):
- transformers' GGUF tokenizer conversion (AutoTokenizer with gguf_file),
  encode without special tokens, decode with and without them, and
  apply_chat_template(add_generation_prompt=True) for conversations;
- llama.cpp's tokenizer (llama-cpp-python, vocab only), tokenize with
  special-token parsing and no BOS, detokenize with special tokens.

Each line: {"kind", "text", "ids", "decoded"?, "decoded_skip"?}: ids are
transformers'; "decoded" (with special tokens) is written only where it is
not the text itself, "decoded_skip" (without them) only where it is not
"decoded". Where llama.cpp differs, its ids or decoded text are written as
"llama_cpp_ids" / "llama_cpp_decoded" and counted on stderr. Chat lines add
"messages" (text is then the rendered conversation). 1,200 strings,
deterministic (seed 0).

    TORCH_PY=$(scripts/torch-venv.sh)
    LLAMA_PY=$CGPO_CACHE/llama-server-venv/bin/python   # scripts/serve-smollm2.sh installs it
    $TORCH_PY benches/tokenizer_fixture.py "$(scripts/fetch-smollm2.sh)" "$LLAMA_PY" > tests/data/smollm2_tokenizer.jsonl
"""
import json
import os
import random
import subprocess
import sys

LLAMA_SIDE = r"""
import json, sys, llama_cpp
m = llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)
for line in sys.stdin:
    text = json.loads(line)
    ids = m.tokenize(text.encode("utf-8"), add_bos=False, special=True)
    raw = m.detokenize(ids, special=True)
    print(json.dumps({"ids": ids, "text": raw.decode("utf-8", "replace")}), flush=True)
"""

WORDS = ("the a river quiet engine paper window seven orange bright follow table garden "
         "remember under small question answer because through market silver climb "
         "morning letter simple yellow carry forest number doctor laugh travel").split()
SENTENCES = [
    "Write a short poem about the sea.",
    "What is the capital of France?",
    "Explain how a bicycle stays upright.",
    "Summarize the following paragraph in two sentences.",
    "I can't believe it's already December!",
    "Could you list three uses of baking soda?",
    "Don't forget: the meeting's at 3pm, not 4pm.",
    "She said, \"It's fine,\" and left.",
    "Translate 'good morning' into Spanish.",
    "Give me a recipe that uses lentils and rice.",
]
MULTILINGUAL = [
    "Bonjour, ça va très bien, merci !", "Grüße aus München — schön, dass du da bist.",
    "¿Dónde está la biblioteca? ¡Gracias!", "Привет, как дела? Всё хорошо.",
    "你好，世界！今天天气很好。", "日本語のテキスト、カタカナとひらがな。", "مرحبا بالعالم، كيف حالك؟",
    "नमस्ते, आप कैसे हैं?", "안녕하세요, 반갑습니다.", "Καλημέρα, τι κάνεις;", "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬",
    "naïve café résumé coöperate", "e\u0301 a\u0300 o\u0302 (combining accents)", "ﬁ ﬂ ligatures and ß ẞ",
    "Türkçe: İstanbul, ılık, ığdır", "Tiếng Việt có dấu: Hà Nội", "עברית: שלום עולם",
]
EMOJI = ["😀", "🤖", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🏳️‍🌈", "❤️", "✨", "🧪", "🐍", "1️⃣", "🫠"]
CODE = [
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i];\n}\n",
    "fn main() {\n    println!(\"{}\", 1 + 2);\n}\n",
    "SELECT name, COUNT(*) FROM users WHERE age >= 18 GROUP BY name;",
    "const f = (x) => x ** 2; // square\nconsole.log(f(12));",
    "if __name__ == '__main__':\n    import sys\n    sys.exit(main(sys.argv[1:]))\n",
    "<div class=\"box\">\n  <p>Hello &amp; welcome</p>\n</div>",
    "x = {'a': [1, 2, 3], \"b\": None, 'c': {'d': 4.5e-3}}",
    "#include <stdio.h>\nint main(void) { printf(\"%d\\n\", 42); return 0; }",
    "git commit -m 'fix: handle\ttabs' && echo $?",
    "    indented\n        more\n\t\ttabs\n",
    "λx. x + 1  # lambda\r\nwindows line\r\n",
]
SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>",
            "<filename>", "<gh_stars>", "<jupyter_code>", "<empty_output>"]
NEAR_SPECIALS = ["<|im_start", "im_end|>", "< |im_end| >", "<|IM_END|>", "<|endoftext |>", "<file sep>"]
ROLES_SYSTEM = ["You are a concise assistant.", "Answer in French.", "You are SmolLM.",
                "Always answer with a number.", ""]


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def number(rng):
    return rng.choice([
        str(rng.randint(0, 9)), str(rng.randint(10, 999)), str(rng.randint(1000, 10**12)),
        f"{rng.uniform(-1e4, 1e4):.{rng.randint(1, 6)}f}", f"{rng.randint(1, 999):,}",
        "3.14159265358979323846", "1e-10", "0x1F", "2024-12-03", "+1 (555) 010-9999",
        str(rng.randint(10**20, 10**30)), f"{rng.randint(1, 99)}%", "½ ¼ ¾ ² ³ ٣ ४ ๕",
    ])


def plain(rng):
    return rng.choice([
        lambda: rng.choice(SENTENCES),
        lambda: words(rng, rng.randint(1, 25)).capitalize() + rng.choice([".", "?", "!", "", "..."]),
        lambda: "The " + words(rng, rng.randint(1, 8)),
        lambda: rng.choice(SENTENCES) + " " + rng.choice(SENTENCES),
    ])()


def multilingual(rng):
    parts = [rng.choice(MULTILINGUAL) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.6:
        parts.insert(rng.randint(0, len(parts)), "".join(rng.choice(EMOJI) for _ in range(rng.randint(1, 4))))
    return rng.choice([" ", "", "\n", " — "]).join(parts)


def whitespace(rng):
    pieces = []
    for _ in range(rng.randint(2, 8)):
        pieces.append(rng.choice([words(rng, rng.randint(1, 3)), rng.choice(SENTENCES)]))
        pieces.append(rng.choice([" ", "  ", "   ", "\t", "\t\t", " \t ", "\n", "\n\n", "\n \n", "    ",
                                  "\r\n", "\u00a0", "\u3000", " \n\t", "        "]))
    text = "".join(pieces)
    if rng.random() < 0.3:
        text = rng.choice([" ", "  ", "\n", "\t"]) + text
    return text


def digits(rng):
    return " ".join(rng.choice([number(rng), number(rng) + rng.choice(WORDS), words(rng, 1)])
                    for _ in range(rng.randint(1, 6)))


def code(rng):
    snippet = rng.choice(CODE)
    if rng.random() < 0.5:
        snippet = "```python\n" + snippet + "```" if "def " in snippet else snippet + "\n" + rng.choice(CODE)
    return snippet


def specials(rng):
    parts = []
    for _ in range(rng.randint(1, 5)):
        parts.append(rng.choice([rng.choice(SPECIALS), rng.choice(NEAR_SPECIALS), plain(rng),
                                 rng.choice(["user", "assistant", "system"]) + "\n"]))
    return rng.choice(["", " ", "\n"]).join(parts)


def conversation(rng):
    messages = []
    system = rng.choice(ROLES_SYSTEM + [None, None])
    if system is not None:
        messages.append({"role": "system", "content": system})
    gen = [plain, multilingual, whitespace, digits, code]
    for turn in range(rng.randint(1, 3)):
        messages.append({"role": "user", "content": rng.choice(gen)(rng)})
        if turn + 1 < 3 and rng.random() < 0.6:
            messages.append({"role": "assistant", "content": rng.choice(gen)(rng)})
    if messages[-1]["role"] == "assistant" and rng.random() < 0.5:
        messages.append({"role": "user", "content": plain(rng)})
    return messages


KINDS = [("plain", plain, 150), ("multilingual", multilingual, 200), ("whitespace", whitespace, 200),
         ("digits", digits, 150), ("code", code, 150), ("specials", specials, 100)]
CHATS = 250


def main(gguf, llama_python):
    from transformers import AutoTokenizer
    rng = random.Random(0)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    records = []
    for kind, gen, n in KINDS:
        for _ in range(n):
            records.append({"kind": kind, "text": gen(rng)})
    for _ in range(CHATS):
        messages = conversation(rng)
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        records.append({"kind": "chat", "messages": messages, "text": text})
    llama = subprocess.Popen([llama_python, "-c", LLAMA_SIDE, gguf], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    disagreements = 0
    for r in records:
        ids = tok.encode(r["text"], add_special_tokens=False)
        llama.stdin.write(json.dumps(r["text"]) + "\n")
        llama.stdin.flush()
        ref = json.loads(llama.stdout.readline())
        r["ids"] = ids
        decoded = tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
        skipped = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        if decoded != r["text"]:
            r["decoded"] = decoded
        if skipped != decoded:
            r["decoded_skip"] = skipped
        if ref["ids"] != ids:
            r["llama_cpp_ids"] = ref["ids"]
            disagreements += 1
        if ref["text"] != decoded:
            r["llama_cpp_decoded"] = ref["text"]
            disagreements += 1
        print(json.dumps(r, ensure_ascii=False, separators=(",", ":")))
    llama.stdin.close()
    llama.wait()
    print(f"{len(records)} strings; {disagreements} disagreements between transformers and llama.cpp",
          file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
