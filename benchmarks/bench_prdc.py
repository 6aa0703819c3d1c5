"""Speed and memory of compute_prdc against the reference ``prdc.compute_prdc``.

Both run in one process on the same float32 data (a fresh process per size, ours first so
that its memory is measured on a fresh heap). The script checks that the results are
identical, and prints wall time, the time per distance pair (``ns/pair``, over the 2 N^2
pairs of N = M; ``cpu ns`` the same in process CPU time, steadier on a shared machine), peak
extra memory (resident set size sampled every 2 ms
above the level before the call) and the ratios. It also measures this machine's float32
GEMM throughput and reports which fraction of it the engine reaches, counting the
unavoidable work: the real-fake matrix and half of each symmetric real-real / fake-fake
matrix, 2 * D * (N^2 / 2 + M^2 / 2 + N * M) flops.

Usage::

    python benchmarks/bench_prdc.py                 # the full table (about 10 minutes)
    python benchmarks/bench_prdc.py --sizes 10000x512 --repeat 3
    python benchmarks/bench_prdc.py --sizes 50000x512 --no-reference
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
import torch

from lightning_embviz import compute_prdc

DEFAULT_SIZES = [
    "5000x64",
    "5000x512",
    "5000x2048",
    "10000x64",
    "10000x512",
    "10000x2048",
    "20000x64",
    "20000x512",
    "20000x2048",
    "50000x512",
]
# The reference holds three full float32 distance matrices plus float64 blocks: at
# 50 000 points that is over 30 GB, more than this machine has.
REFERENCE_LIMIT = 20000


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


LAST_CPU_SECONDS = [0.0]  # CPU time (all threads) of the last measure() call


def measure(fn: Callable[[], Any]) -> tuple[Any, float, int]:
    """Run fn; return (result, seconds, peak RSS above the starting level in bytes).

    The process CPU time of the call is left in ``LAST_CPU_SECONDS[0]``.
    """
    gc.collect()
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    cpu_start = time.process_time()
    try:
        out = fn()
    finally:
        seconds = time.perf_counter() - start
        LAST_CPU_SECONDS[0] = time.process_time() - cpu_start
        done.set()
        sampler.join()
    peak[0] = max(peak[0], rss_bytes())
    return out, seconds, peak[0] - base


def gemm_gflops(n: int = 8192, d: int = 512, repeat: int = 3) -> float:
    a = torch.randn(n, d)
    b = torch.randn(n, d)
    a @ b.T  # warm-up
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        a @ b.T
        best = min(best, time.perf_counter() - start)
    return 2.0 * n * n * d / best / 1e9


def reference_prdc(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    import prdc

    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints set sizes
        out = prdc.compute_prdc(real, fake, k)
    return {key: float(value) for key, value in out.items()}


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d), dtype=np.float32)
    fake = (rng.standard_normal((n, d), dtype=np.float32) * 1.05 + 0.02).astype(np.float32)
    return real, fake


def run_one(n: int, d: int, k: int, repeat: int, with_reference: bool, peak: float) -> str:
    """Measure one size; ours first, so that its memory is measured on a fresh heap."""
    real, fake = make_data(n, d)
    ours_s = float("inf")
    ours_cpu = float("inf")
    ours_mem = 0
    ours: dict[str, float] = {}
    for _ in range(repeat):
        ours, seconds, mem = measure(partial(compute_prdc, real, fake, k))
        ours_s = min(ours_s, seconds)
        ours_cpu = min(ours_cpu, LAST_CPU_SECONDS[0])
        ours_mem = max(ours_mem, mem)
    pairs = 2.0 * n * n  # N^2/2 + M^2/2 + N*M with N = M
    frac = 2.0 * d * pairs / ours_s / 1e9 / peak
    per_pair = f"{1e9 * ours_s / pairs:7.2f} {1e9 * ours_cpu / pairs:7.2f}"
    if not with_reference:
        return (
            f"{n:>6} {d:>5} | {'n/a':>7} {'n/a':>9} | {ours_s:7.2f} {ours_mem / 2**20:9.0f} |"
            f" {per_pair} | {'':>8} {'':>9} | {100 * frac:5.0f}% | (reference not run)"
        )
    ref, ref_s, ref_mem = measure(partial(reference_prdc, real, fake, k))
    same = "yes" if ref == ours else f"NO: {ref} vs {ours}"
    return (
        f"{n:>6} {d:>5} | {ref_s:7.2f} {ref_mem / 2**20:9.0f} | {ours_s:7.2f}"
        f" {ours_mem / 2**20:9.0f} | {per_pair} | {ref_s / ours_s:7.1f}x"
        f" {ours_mem / max(ref_mem, 1):9.2f} | {100 * frac:5.0f}% | {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(DEFAULT_SIZES), help="NxD,NxD,...")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="best of R runs of ours")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # NxD: measure in this process
    parser.add_argument("--peak", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.one:
        n, d = (int(v) for v in args.one.lower().split("x"))
        with_ref = not args.no_reference and n <= REFERENCE_LIMIT
        print(run_one(n, d, args.k, args.repeat, with_ref, args.peak), flush=True)
        return

    peak = gemm_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"float32 GEMM peak on this machine: {peak:.0f} GFLOP/s")
    print("(each size runs in a fresh process: ours first, then the reference, same data)")
    header = (
        f"{'N=M':>6} {'D':>5} | {'prdc s':>7} {'prdc MiB':>9} | {'ours s':>7} {'ours MiB':>9} |"
        f" {'ns/pair':>7} {'cpu ns':>7} | {'speed-up':>8} {'mem ratio':>9} | {'GEMM %':>6} | same"
    )
    print(header)
    print("-" * len(header), flush=True)
    for spec in args.sizes.split(","):
        cmd = [sys.executable, __file__, "--one", spec, "-k", str(args.k), "--peak", str(peak)]
        cmd += ["--repeat", str(args.repeat)] + (["--no-reference"] if args.no_reference else [])
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
