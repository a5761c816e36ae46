"""Honest samples for the code judge, from HumanEval (scripts/fetch-humaneval.sh).

For each of the 164 problems, three samples in the `cgpo judge` input format
(`{"id", "prompt", "response", "metadata"}`), each response a fenced block:

- `<task>/completion`: the canonical solution as a completion of the prompt;
- `<task>/function`: the prompt and canonical solution as one whole program;
- `<task>/mutant`: the canonical completion with one honest-looking bug (the
  first of a fixed list of operator swaps that changes the code), or none
  when no swap applies.

Canonical solutions should pass; mutants mostly fail (HumanEval's tests are
not complete, so a few survive). Used to check that two verifiers agree on
honest code:

    python3 benches/humaneval_samples.py "$(scripts/fetch-humaneval.sh)" > /tmp/he.jsonl
    cargo run --release --bin cgpo -- judge --judge code --input /tmp/he.jsonl --output /tmp/verdicts.jsonl
"""
import json
import sys

# (old, new) swaps, tried in order; the first that occurs is applied once.
SWAPS = [(" + ", " - "), (" < ", " <= "), (" > ", " >= "), (" == ", " != "),
         ("True", "False"), (" - ", " + "), (" * ", " + "), ("[1:]", "[2:]"),
         ("return ", "return not ")]


def mutate(code):
    for old, new in SWAPS:
        if old in code:
            return code.replace(old, new, 1)
    return None


def fenced(code):
    return "```python\n" + code.rstrip("\n") + "\n```\n"


def main(path):
    with open(path) as f:
        problems = [json.loads(line) for line in f if line.strip()]
    for p in problems:
        meta = {"prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"]}
        samples = [("completion", p["canonical_solution"]),
                   ("function", p["prompt"] + p["canonical_solution"])]
        mutant = mutate(p["canonical_solution"])
        if mutant is not None:
            samples.append(("mutant", mutant))
        for kind, code in samples:
            print(json.dumps({"id": f'{p["task_id"]}/{kind}', "prompt": p["prompt"],
                              "response": fenced(code), "metadata": meta}))


if __name__ == "__main__":
    main(sys.argv[1])
