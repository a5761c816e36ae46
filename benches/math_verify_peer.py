"""Times Math-Verify (pip install math-verify) on the pairs the Rust bench
judges (judges/benches/math_pairs.jsonl), in one process, excluding start-up
and imports: parse(gold), parse(response), verify(gold, response) per pair.
Prints answers/s. Run from the worktree root:

    python3 benches/math_verify_peer.py [--rounds 3]

Math-Verify extracts the last LaTeX or plain-number answer from the whole
response; it does not check the "The final answer is X" format, so it does
less than the Rust judge.
"""

import argparse
import json
import time

from math_verify import parse, verify


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", default="judges/benches/math_pairs.jsonl")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with open(args.pairs) as f:
        pairs = [json.loads(line) for line in f if line.strip()]

    def judge_all():
        passed = 0
        for p in pairs:
            gold = parse("$" + str(p["answer"]) + "$")
            pred = parse(p["response"])
            passed += bool(verify(gold, pred))
        return passed

    passed = judge_all()  # warm-up: imports, sympy caches, regex compilation
    # CPU time is reported next to wall time: on a shared machine it is the
    # steadier of the two.
    best = best_cpu = 0.0
    for r in range(args.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        judge_all()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        rate, cpu_rate = len(pairs) / dt, len(pairs) / dc
        best, best_cpu = max(best, rate), max(best_cpu, cpu_rate)
        print(
            f"round {r}: {len(pairs)} answers in {dt:.3f} s wall ({rate:.0f} answers/s), "
            f"{dc:.3f} s CPU ({cpu_rate:.0f} answers/CPU-s)"
        )
    print(
        f"math-verify: {len(pairs)} answers, {passed} pass; "
        f"best {best:.0f} answers/s wall, {best_cpu:.0f} answers/CPU-s"
    )


if __name__ == "__main__":
    main()
