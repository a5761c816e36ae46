#!/usr/bin/env bash
# Creates (once) the Python venv of the PyTorch peers (benches/torch_peer.py,
# benches/transformers_peer.py) in ~/.cache/cgpo/torch-venv and prints its
# python. Versions are the ones the figures in docs/performance.md used.
set -euo pipefail
CACHE=${CGPO_CACHE:-$HOME/.cache/cgpo}
VENV=$CACHE/torch-venv
if ! "$VENV/bin/python" -c "import torch, transformers, gguf, accelerate" 2>/dev/null; then
    mkdir -p "$CACHE"
    python3 -m venv "$VENV" >&2
    "$VENV/bin/pip" install --quiet torch==2.15.0 transformers==5.24.0 gguf==0.19.0 accelerate==1.15.0 >&2
fi
echo "$VENV/bin/python"
