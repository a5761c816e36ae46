#!/usr/bin/env bash
# Runs ON a GPU machine, from the repository root:
#
#   OUT=/some/dir scripts/gpu-check.sh PATH/TO/cuda_check
#
# The machine needs no Rust toolchain: the binary comes from
# scripts/build-cuda.sh. This script finds libnvrtc and libcuda (CUDA
# toolkit, PyTorch's pip wheels, the ldconfig cache), exports LD_LIBRARY_PATH
# for cudarc's dynamic loading, prints nvidia-smi, runs the kernel check with
# --json $OUT/cuda_check.json and then, if present, the PyTorch peer bench
# (benches/torch_peer.py). Everything is tee'd into $OUT/gpu.log. A failure of
# the Rust part does not stop the PyTorch part; the exit status is non-zero
# if either failed. CUDA_CHECK_ARGS adds arguments to cuda_check (e.g.
# --only-candle); SKIP_TORCH=1 skips the PyTorch part.
set -u

bin="${1:-}"
if [ -z "$bin" ]; then
    echo "usage: OUT=DIR scripts/gpu-check.sh PATH/TO/cuda_check" >&2
    exit 2
fi
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu.log") 2>&1

echo "== gpu-check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"

# Directories that may hold libnvrtc.so.* / libcuda.so.*, best first.
dirs=()
add_dir() {
    local d
    for d in "$@"; do
        [ -d "$d" ] || continue
        case " ${dirs[*]:-} " in *" $d "*) ;; *) dirs+=("$d") ;; esac
    done
}
for root in /usr/local/cuda /usr/local/cuda-* /opt/cuda; do
    add_dir "$root/lib64" "$root/lib" "$root"/targets/*/lib
done
if command -v python3 >/dev/null 2>&1; then
    # PyTorch's wheels: nvidia/cu13/lib (CUDA 13) or nvidia/cuda_nvrtc/lib (CUDA 12), and torch/lib.
    pydirs=$(python3 - <<'PY' 2>/dev/null
import glob, os
roots = []
try:
    import nvidia
    roots += list(nvidia.__path__)
except Exception:
    pass
try:
    import torch
    roots.append(os.path.join(os.path.dirname(torch.__file__), "lib"))
except Exception:
    pass
seen = []
for r in roots:
    hits = []
    for lib in ("libnvrtc.so*", "libcublas.so*", "libcurand.so*", "libcudart.so*"):
        hits += glob.glob(os.path.join(r, "**", lib), recursive=True) + glob.glob(os.path.join(r, lib))
    for f in hits:
        d = os.path.dirname(f)
        if d not in seen:
            seen.append(d)
print("\n".join(seen))
PY
)
    while IFS= read -r d; do [ -n "$d" ] && add_dir "$d"; done <<<"$pydirs"
fi
if command -v ldconfig >/dev/null 2>&1; then
    while IFS= read -r f; do add_dir "$(dirname "$f")"; done < <(ldconfig -p | awk '/libnvrtc\.so|libcuda\.so/ {print $NF}')
fi

nvrtc_dirs=()
for d in "${dirs[@]:-}"; do
    [ -n "$d" ] || continue
    if compgen -G "$d/libnvrtc.so*" >/dev/null || compgen -G "$d/libcuda.so*" >/dev/null \
        || compgen -G "$d/libcublas.so*" >/dev/null || compgen -G "$d/libcurand.so*" >/dev/null; then
        nvrtc_dirs+=("$d")
        echo "found: $(cd "$d" && ls libnvrtc.so* libnvrtc-builtins.so* libcuda.so* libcublas.so* libcurand.so* libcudart.so* 2>/dev/null | tr '\n' ' ') in $d"
    fi
done
if [ "${#nvrtc_dirs[@]}" -eq 0 ]; then
    echo "warning: no libnvrtc.so* found in /usr/local/cuda*, python site-packages (nvidia/*, torch/lib) or ldconfig"
fi
ld=$(IFS=:; echo "${nvrtc_dirs[*]:-}")
export LD_LIBRARY_PATH="${ld}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

nvidia-smi || echo "warning: nvidia-smi failed"

status=0
if [ ! -x "$bin" ]; then
    # Carried files may lose the executable bit.
    cp "$bin" /tmp/cuda_check.$$ && chmod +x /tmp/cuda_check.$$ && bin=/tmp/cuda_check.$$
fi
# A binary built with candle-cuda links the CUDA libraries: show what the
# loader resolves (a "not found" here explains a failure to start).
ldd "$bin" | grep -E "cuda|nvrtc|cublas|curand" || true
echo "== $bin --json $OUT/cuda_check.json ${CUDA_CHECK_ARGS:-}"
# shellcheck disable=SC2086
"$bin" --json "$OUT/cuda_check.json" ${CUDA_CHECK_ARGS:-}
rc=$?
echo "== cuda_check exit status $rc"
[ "$rc" -eq 0 ] || status=1

if [ -n "${SKIP_TORCH:-}" ]; then
    echo "== SKIP_TORCH set: PyTorch peer skipped"
elif [ -f benches/torch_peer.py ]; then
    echo "== python3 benches/torch_peer.py --device cuda --json $OUT/torch_cuda.json"
    python3 benches/torch_peer.py --device cuda --json "$OUT/torch_cuda.json"
    rc=$?
    echo "== torch_peer exit status $rc"
    [ "$rc" -eq 0 ] || status=1
else
    echo "== benches/torch_peer.py not present, skipped"
fi
exit "$status"
