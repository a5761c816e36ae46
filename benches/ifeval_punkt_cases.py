#!/usr/bin/env python3
"""Records NLTK's English Punkt sentence counts on generated texts, for
judges/tests/ifeval_punkt.rs:

    NLTK_DATA=/tmp/nltk_data python3 benches/ifeval_punkt_cases.py \\
        > judges/tests/data/punkt_counts.jsonl

(NLTK_DATA set up as in benches/ifeval_peer.py.) Texts join fragments rich in
abbreviations, initials, numbers, ellipses, quotes and brackets.
"""

import json
import random

import nltk

FRAGMENTS = [
    "Mr. Smith went to Washington.", "Dr. Brown arrived at 5 p.m.", "It cost $3.50 in the U.S.",
    "See Fig. 3 for details.", "J. K. Rowling wrote it.", "He said, \"Go home.\"", "(This is aside.)",
    "Wait...", "What?!", "Really?", "No!", "e.g. this one", "i.e. that one", "The 2nd. item",
    "Jan. 5th was cold.", "etc.", "vs. the others", "Prof. Jones disagreed.", "The U.N. met today.",
    "It was 10 a.m. sharp.", "Section 2. Results", "1. First point", "2. Second point",
    "'Quoted.'", "[Bracketed.]", "St. Louis is big.", "the end", "Inc. and Ltd. firms", "Gen. Lee",
    "a lowercase start.", "ALL CAPS HERE.", "Numbers like 3.14 and 2,000.", "-- a dash --",
    "“Curly quotes.”", "He left.\n\nShe stayed.", "No. 5 was missing.", "approx. 20 people",
]


def main():
    rng = random.Random(7)
    tok = nltk.data.load("nltk:tokenizers/punkt/english.pickle")
    for _ in range(600):
        parts = [rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 6))]
        text = "".join(p + rng.choice([" ", " ", "\n", "  ", ""]) for p in parts)
        print(json.dumps({"text": text, "count": len(tok.tokenize(text))}, ensure_ascii=False))


if __name__ == "__main__":
    main()
