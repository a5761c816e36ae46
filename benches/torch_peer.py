"""PyTorch-eager peer for the cgpo fused log-prob / KL kernel benchmarks.

Times, in one process and excluding start-up, imports and input generation,
the plain PyTorch expressions that the fused Rust kernels (src/ops/, and the
CUDA kernels in kernels/) replace, on the same shapes:

  logprob_fwd     torch.log_softmax(z, -1).gather(-1, t[:, None]).squeeze(-1)
  logprob_fwdbwd  the same with z.requires_grad_(), then .sum().backward();
                  forward and backward timed together
  kl_fwd          exact full KL per row, forward only:
                  p = softmax(zp); (p * (log_softmax(zp) - log_softmax(zq))).sum(-1)

z, zp, zq are [N, V] logits (random normal * 3, fixed seed, generated once
per shape), t is [N] int64 targets. Each case gets warm-up runs, then the
median of repeated runs (by default as many as fill about 1.5 s, at least 3).
GB/s is the logits read per call divided by the median time: N*V*bytes for
the log-prob cases (one tensor), 2*N*V*bytes for KL (two tensors). It is an
"effective" bandwidth: eager PyTorch moves several times more memory than
that through its intermediates, a fused kernel ideally reads the logits once.

On CPU the numbers depend on the allocator: with glibc defaults each large
intermediate is a fresh mmap, so every call pays page faults on it. Raising
MALLOC_MMAP_THRESHOLD_ (environment) makes them reusable; the script leaves
the defaults, so it measures what a stock PyTorch install does. Also CPU
threads spin-wait, so a busy machine inflates times far beyond its load.

This is the peer for `cargo bench` / the Rust benchmark example; run both on
the same machine and thread count. Needs only torch (numpy is not used):

    python benches/torch_peer.py                           # CPU, 2 threads
    python benches/torch_peer.py --device cpu --threads 2 --json out.json
    python benches/torch_peer.py --device cuda             # adds N = 8192
    python benches/torch_peer.py --n 1024 --v 49152 --dtype bf16 --iters 20

Exit code 2 if torch is not installed or --device cuda finds no GPU.
"""

import argparse
import json
import statistics
import sys
import time

OPS = ("logprob_fwd", "logprob_fwdbwd", "kl_fwd")
# Rough peak memory per op, in [N, V] tensors of the benchmark dtype (inputs
# plus eager intermediates), used only to skip cases that cannot fit.
PEAK_TENSORS = {"logprob_fwd": 2, "logprob_fwdbwd": 4, "kl_fwd": 6}


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch.set_num_threads on CPU (default 2)")
    ap.add_argument("--n", type=int, nargs="+",
                    help="rows (default 1024 4096, plus 8192 on cuda)")
    ap.add_argument("--v", type=int, nargs="+", default=[49152, 151936],
                    help="vocabulary sizes (default 49152 151936)")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    ap.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    ap.add_argument("--iters", type=int, default=0,
                    help="timed runs per case (default: adaptive, ~1.5 s)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write results here")
    return ap.parse_args()


def available_bytes(torch, device):
    """Free memory on the device, or None if it cannot be read."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def make_ops(torch, z, zq, targets):
    """Zero-argument closures, one per op; each returns a tensor to keep."""
    def logprob_fwd():
        return torch.log_softmax(z, -1).gather(-1, targets[:, None]).squeeze(-1)

    def logprob_fwdbwd():
        z.grad = None  # a fresh gradient each call, no accumulation
        lp = torch.log_softmax(z, -1).gather(-1, targets[:, None]).squeeze(-1)
        lp.sum().backward()
        return z.grad

    def kl_fwd():
        p = torch.softmax(z, -1)
        return (p * (torch.log_softmax(z, -1) - torch.log_softmax(zq, -1))).sum(-1)

    return {"logprob_fwd": logprob_fwd, "logprob_fwdbwd": logprob_fwdbwd,
            "kl_fwd": kl_fwd}


def time_case(torch, fn, device, iters, warmup):
    """Median wall time of fn in seconds, with device synchronisation."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def once():
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        return time.perf_counter() - t0

    t = 0.0
    for _ in range(max(1, warmup)):
        t = once()
        if t > 1.0:  # slow case: one warm-up is enough
            break
    if iters <= 0:  # adaptive: fill about 1.5 s, between 3 and 200 runs
        iters = min(200, max(3, round(1.5 / max(t, 1e-6))))
    return statistics.median(once() for _ in range(iters)), iters


def main():
    args = parse_args()
    try:
        import torch
    except ImportError:
        print("torch_peer.py: PyTorch is not installed; "
              "`pip install torch` (in a venv) and rerun.", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("torch_peer.py: --device cuda but torch.cuda.is_available() is "
              f"False (torch {torch.__version__}); no usable GPU.",
              file=sys.stderr)
        return 2

    dev = args.device
    if dev == "cpu":
        torch.set_num_threads(args.threads)
        threads = torch.get_num_threads()
        where = f"cpu, {threads} threads"
    else:
        threads = None
        where = f"cuda: {torch.cuda.get_device_name()}"
    ns = args.n or ([1024, 4096, 8192] if dev == "cuda" else [1024, 4096])
    dtype = {"f32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    esize = torch.tensor([], dtype=dtype).element_size()
    print(f"torch {torch.__version__}, {where}, dtype {args.dtype}")
    print(f"{'case':<16}{'N':>7}{'V':>8}  {'dtype':<6}{'ms':>10}"
          f"{'GB/s':>9}{'iters':>7}")

    results = []
    for n in ns:
        for v in args.v:
            ops = list(args.ops)
            need = max(PEAK_TENSORS[o] for o in ops) * n * v * esize
            avail = available_bytes(torch, dev)
            if avail is not None and need > 0.9 * avail:
                print(f"{'(skipped)':<16}{n:>7}{v:>8}  needs ~{need / 1e9:.1f} "
                      f"GB, {avail / 1e9:.1f} GB available")
                continue
            # Inputs once per shape, fixed seed, generated on the device.
            gen = torch.Generator(device=dev).manual_seed(args.seed)
            z = torch.randn(n, v, generator=gen, device=dev).mul_(3).to(dtype)
            zq = torch.randn(n, v, generator=gen, device=dev).mul_(3).to(dtype)
            targets = torch.randint(0, v, (n,), generator=gen, device=dev)
            fns = make_ops(torch, z, zq, targets)
            for op in ops:
                if op == "logprob_fwdbwd":
                    z.requires_grad_(True)
                    sec, iters = time_case(torch, fns[op], dev,
                                           args.iters, args.warmup)
                    z.requires_grad_(False)
                    z.grad = None
                else:
                    with torch.no_grad():
                        sec, iters = time_case(torch, fns[op], dev,
                                               args.iters, args.warmup)
                read = (2 if op == "kl_fwd" else 1) * n * v * esize
                ms, gbps = sec * 1e3, read / sec / 1e9
                print(f"{op:<16}{n:>7}{v:>8}  {args.dtype:<6}{ms:>10.2f}"
                      f"{gbps:>9.2f}{iters:>7}", flush=True)
                results.append({"op": op, "n": n, "v": v, "dtype": args.dtype,
                                "device": dev, "ms": round(ms, 4),
                                "gbps": round(gbps, 3),
                                "torch": torch.__version__,
                                "threads": threads})
            del z, zq, targets, fns
            if dev == "cuda":
                torch.cuda.empty_cache()

    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
