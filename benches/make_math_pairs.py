"""Writes judges/benches/math_pairs.jsonl: the (response, gold answer) pairs
that both the Rust bench (judges/benches/math_judge.rs) and the Math-Verify
peer (benches/math_verify_peer.py) judge, so that both time the same work.

Responses have a few sentences of working and end in "The final answer is X";
about a quarter give a wrong value and a sixth break the format.
Run from the worktree root: python3 benches/make_math_pairs.py
"""

import json
import random

# (gold, right answers as a model might write them, a wrong answer)
ITEMS = [
    ("42", ["42", "$42$", r"$\boxed{42}$"], "41"),
    ("1000000", ["1,000,000", "1{,}000{,}000", "1000000"], "100000"),
    ("-3", ["-3", "$-3$", r"\boxed{-3}"], "3"),
    ("0.5", ["0.5", r"$\frac{1}{2}$", "1/2"], "0.25"),
    (r"\frac{3}{4}", [r"$\frac{3}{4}$", "0.75", r"$\dfrac34$"], r"$\frac{4}{3}$"),
    ("3/2", [r"$1\frac{1}{2}$", "1.5", r"$\frac{3}{2}$"], "2.5"),
    (r"2\sqrt{3}", [r"$2\sqrt{3}$", r"$\sqrt{12}$", r"$\boxed{2\sqrt3}$"], r"$3\sqrt{2}$"),
    (r"\frac{\pi}{2}", [r"$\frac{\pi}{2}$", r"$\pi/2$", r"$\boxed{\dfrac{\pi}{2}}$"], r"$\pi$"),
    (r"(-\infty, 3]", [r"$(-\infty, 3]$", r"$(-\infty,3]$", r"$\left(-\infty, 3\right]$"], r"$(-\infty, 3)$"),
    ("[0, 1)", ["$[0, 1)$", "$[0,1)$", r"$\boxed{[0, 1)}$"], "$[0, 1]$"),
    ("(1, 2)", ["$(1, 2)$", "$(1,2)$", r"$\left( 1, 2 \right)$"], "$(2, 1)$"),
    ("18", ["$18", r"\$18.00", "18 dollars"], "$20"),
    ("30", [r"$30^\circ$", "30 degrees", "30"], r"$60^\circ$"),
    ("12", ["12 cm", r"$12\text{ cm}$", "12"], "14 cm"),
    ("25%", ["25%", r"$25\%$", "25"], "20%"),
    ("yes", ["yes", r"$\text{Yes}$", "Yes"], "no"),
    ("x = 5", ["5", "$x = 5$", "x=5"], "$x = -5$"),
    ("144", ["144", r"$12^2$", r"$\boxed{144}$"], "121"),
    ("2.25", ["2.25", r"$\frac{9}{4}$", r"$2\frac{1}{4}$"], "2.5"),
    ("-\\frac{1}{3}", [r"$-\frac{1}{3}$", r"$\frac{-1}{3}$", "-1/3"], r"$\frac{1}{3}$"),
]

WORKING = [
    "We start by writing down what is given.",
    "Let $x$ be the unknown quantity and set up the equation.",
    "Substituting the values, we get $2x + 3 = 13$, which simplifies nicely.",
    "Using the formula for the area, $A = \\frac{1}{2}bh$, we compute step by step.",
    "Multiplying both sides by 4 gives the next line of the computation.",
    "Checking the result against the original condition confirms it.",
    "Factoring the quadratic, $(x-2)(x+3) = 0$, gives the candidate roots.",
    "The total cost is the sum of the individual costs.",
]

BAD_FORMAT = [
    "The answer is {x}.",
    "So we get {x}.",
    "The final answer is {x}. I hope it is correct.",
    "Therefore the final answer is {x}.",
]


def main():
    rng = random.Random(20240930)
    lines = []
    for _ in range(25):
        for gold, rights, wrong in ITEMS:
            working = " ".join(rng.sample(WORKING, rng.randint(2, 4)))
            roll = rng.random()
            if roll < 0.6:
                final = "The final answer is " + rng.choice(rights) + "."
            elif roll < 0.85:
                final = "The final answer is " + wrong + "."
            else:
                final = rng.choice(BAD_FORMAT).format(x=rng.choice(rights))
            lines.append({"response": working + "\n\n" + final, "answer": gold})
    with open("judges/benches/math_pairs.jsonl", "w") as f:
        for line in lines:
            f.write(json.dumps(line) + "\n")
    print(f"wrote {len(lines)} pairs")


if __name__ == "__main__":
    main()
