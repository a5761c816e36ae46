#!/usr/bin/env bash
# Builds the CUDA check example (no CUDA toolkit needed: cudarc loads libcuda
# and libnvrtc at run time) and prints the binary's path, to be carried to a
# GPU machine and run there with scripts/gpu-check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --features cuda --example cuda_check >&2
bin="$CARGO_TARGET_DIR/release/examples/cuda_check"
test -x "$bin"
echo "$bin"
