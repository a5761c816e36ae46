#!/usr/bin/env bash
# Builds the CUDA check example with candle's CUDA backend (feature
# `candle-cuda`) on a machine without a CUDA toolkit or GPU, and prints the
# binary's path, to be carried to a GPU machine and run there with
# scripts/gpu-check.sh.
#
# candle's `cuda` feature needs nvcc (its own kernels are compiled to PTX at
# build time) and links libcuda, libnvrtc, libcublas(Lt) and libcurand. The
# script gets CUDA 13.0 from PyPI (NVIDIA's `nvidia-*` wheels: nvcc, headers,
# cccl, nvvm, nvrtc, cublas, curand), unpacks it under
# ${CGPO_CACHE:-~/.cache/cgpo}/cuda-13.0, and stands in for the driver library
# with a stub libcuda.so (SONAME libcuda.so.1) that defines the driver
# symbols cudarc declares: the real driver provides them at run time.
#
#   scripts/build-cuda.sh                # feature candle-cuda (needs the above)
#   CGPO_CUDA_FEATURE=cuda scripts/build-cuda.sh
#                                        # kernels on cudarc buffers only: no
#                                        # toolkit, cudarc loads libcuda/libnvrtc
#                                        # at run time
#
# CUDA_COMPUTE_CAP (default 90: H100 / H200) selects the PTX target of
# candle's kernels; our own kernels are compiled at run time by NVRTC for
# whatever device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
feature="${CGPO_CUDA_FEATURE:-candle-cuda}"

if [ "$feature" = "candle-cuda" ]; then
    cache="${CGPO_CACHE:-$HOME/.cache/cgpo}"
    root="$cache/cuda-13.0"
    cu="$root/nvidia/cu13"
    if [ ! -x "$cu/bin/nvcc" ] || [ ! -e "$cu/lib/libcublas.so.13" ]; then
        echo "== fetching CUDA 13.0 build tools from PyPI into $root" >&2
        wheels="$cache/cuda-13.0-wheels"
        mkdir -p "$wheels" "$root"
        python3 -m pip download --no-deps --quiet --dest "$wheels" \
            nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 \
            nvidia-cuda-cccl==13.0.85 nvidia-nvvm==13.0.88 \
            nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 \
            nvidia-cublas==13.0.2.14 nvidia-curand==10.4.5.25 >&2
        for w in "$wheels"/*.whl; do
            python3 -m zipfile -e "$w" "$root" >&2
        done
        chmod +x "$cu"/bin/* "$cu"/nvvm/bin/* 2>/dev/null || true
    fi
    # Unversioned names for the linker.
    for lib in nvrtc.so.13 cublas.so.13 cublasLt.so.13 curand.so.10 cudart.so.13; do
        ln -sf "lib$lib" "$cu/lib/lib${lib%%.so*}.so"
    done
    if [ ! -e "$cu/lib/libcuda.so" ]; then
        echo "== building a stub libcuda.so (link time only)" >&2
        cargo fetch >&2
        sys=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/src" -path '*/cudarc-0.19.*/src/driver/sys/mod.rs' | sort | tail -n 1)
        [ -n "$sys" ] || { echo "cudarc sources not found" >&2; exit 1; }
        grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$sys" | awk '{print "void " $4 "(void) {}"}' | sort -u >"$cu/lib/cuda_stub.c"
        cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$cu/lib/libcuda.so" "$cu/lib/cuda_stub.c"
    fi
    export CUDA_ROOT="$cu" CUDA_HOME="$cu" CUDA_PATH="$cu"
    export PATH="$cu/bin:$PATH"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
    # nvcc finds thrust/cub/libcu++ under include/cccl in the wheel layout.
    export NVCC_APPEND_FLAGS="${NVCC_APPEND_FLAGS:-} -I$cu/include/cccl"
    export LIBRARY_PATH="$cu/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
    export RUSTFLAGS="${RUSTFLAGS:-} -L native=$cu/lib"
    # A separate target directory: RUSTFLAGS and candle's cuda feature would
    # otherwise rebuild the CPU artifacts.
    export CARGO_TARGET_DIR="$CARGO_TARGET_DIR/cuda"
fi

cargo build --release --features "$feature" --example cuda_check >&2
bin="$CARGO_TARGET_DIR/release/examples/cuda_check"
test -x "$bin"
echo "$bin"
