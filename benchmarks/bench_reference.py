"""Cost of comparing against a fitted RealReference, and of a sweep over k, as ratios.

Everything runs in one process on the same float32 data (the ratios are what matter; the
absolute times depend on the machine and its load):

- ``compare / full``: ``RealReference(real, k).compare(fake)`` on an already fitted reference
  against a full ``compute_prdc(real, fake, k)`` (the real radius pass is saved; the
  fake-fake pass is still needed for recall);
- ``sweep / single``: ``ref.sweep(fake)`` over k = 1..K against ``ref.compare(fake, k)`` for one
  k, both on a reference fitted for 1..K (one fake radius pass and one real-fake pass each);
- ``fit``: the one-off cost of fitting, for scale.

Each timing is the best of ``--repeat`` runs, interleaved; ``--cpu-time`` measures the
process's CPU time instead of wall time (steadier on a machine shared with other work,
best with ``--threads 1``). The results are checked: the comparison equals
``compute_prdc`` and the sweep's values for a few k equal single-k runs.

Usage::

    python benchmarks/bench_reference.py                       # 10 000 + 10 000 x 512
    python benchmarks/bench_reference.py --sizes 5000x64,10000x512 --repeat 3 --max-k 20
    python benchmarks/bench_reference.py --threads 1 --cpu-time
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lightning_embviz import RealReference, compute_prdc


def make_data(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((n, d), dtype=np.float32)
    fake = (rng.standard_normal((n, d), dtype=np.float32) * 1.05 + 0.02).astype(np.float32)
    return real, fake


CLOCK = time.perf_counter


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = CLOCK()
    out = fn()
    return out, CLOCK() - start


def run(n: int, d: int, k: int, max_k: int, repeat: int) -> None:
    real, fake = make_data(n, d)
    ref, fit_s = timed(lambda: RealReference(real, nearest_k=k))
    ref_many, fit_many_s = timed(lambda: RealReference(real, nearest_k=range(1, max_k + 1)))
    best = {"full": np.inf, "compare": np.inf, "single": np.inf, "sweep": np.inf}
    outputs: dict[str, Any] = {}
    jobs: dict[str, Callable[[], Any]] = {
        "full": lambda: compute_prdc(real, fake, k),
        "compare": lambda: ref.compare(fake),
        "single": lambda: ref_many.compare(fake, nearest_k=k),
        "sweep": lambda: ref_many.sweep(fake),
    }
    for _ in range(repeat):
        for name, job in jobs.items():
            outputs[name], seconds = timed(job)
            best[name] = min(best[name], seconds)
    assert outputs["compare"] == outputs["full"] == outputs["single"] == outputs["sweep"][k]
    checked = sorted({1, max_k})
    for kk in checked:
        assert outputs["sweep"][kk] == ref_many.compare(fake, nearest_k=kk), kk
    print(
        f"{n:>6} {d:>5} | {fit_s:>6.2f} {fit_many_s:>7.2f} | {best['full']:>6.2f} "
        f"{best['compare']:>7.2f} {best['compare'] / best['full']:>6.1%} | "
        f"{best['single']:>6.2f} {best['sweep']:>6.2f} {best['sweep'] / best['single']:>6.2f}x | "
        f"yes (k={k}; sweep checked at k={checked})",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000x512", help="comma-separated NxD (N = M)")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--max-k", type=int, default=20, help="sweep over k = 1..max_k")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--cpu-time", action="store_true", help="process CPU time, not wall")
    args = parser.parse_args()
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    clock = "CPU" if args.cpu_time else "wall"
    print(
        f"best of {args.repeat}; {clock} seconds; {torch.get_num_threads()} thread(s); "
        f"sweep over k = 1..{args.max_k}"
    )
    header = (
        f"{'N=M':>6} {'D':>5} | {'fit k':>6} {'fit 1..K':>7} | {'full':>6} {'compare':>7} "
        f"{'ratio':>6} | {'single':>6} {'sweep':>6} {'ratio':>7} | same"
    )
    print(header)
    print("-" * len(header), flush=True)
    for spec in args.sizes.split(","):
        n, d = (int(v) for v in spec.lower().split("x"))
        run(n, d, args.k, args.max_k, args.repeat)


if __name__ == "__main__":
    main()
