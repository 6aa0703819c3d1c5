"""Fréchet distance: ours against the ``scipy.linalg.sqrtm`` formula, in one process.

The reference is the formula of pytorch-fid and torchmetrics: ``np.cov`` of both sets, then
``scipy.linalg.sqrtm(S_r @ S_f)`` (a Schur decomposition of a non-symmetric matrix), real
part, traces. Ours (:mod:`lightning_embviz.suite`):

- ``frechet_distance(real, fake)``: fits the real side and computes the trace term from the
  eigenvalues of the symmetric ``F^T S_f F`` (``S_r = F F^T``, Cholesky), float64;
- ``FrechetReference(real)`` once, then ``ref.distance(fake)`` per fake set (what the callback
  keeps between validation runs: one GEMM for the fake covariance, two for ``F^T S_f F``, one
  symmetric eigenvalue problem);
- ``fd_infinity(ref, fake)``: FD at 5 nested subset sizes and the line in 1/n.

Printed: each time, the ratios to the reference (``sqrtm formula / ours``) and the relative
difference of the values (must stay below 1e-6). Timings are the best of ``--repeat`` runs;
``--cpu-time`` measures process CPU time instead of wall time (steadier on a shared machine).

Usage::

    python benchmarks/bench_fd.py                          # 5000 + 5000 x 1024
    python benchmarks/bench_fd.py --sizes 5000x1024,10000x2048 --repeat 1
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import torch

from lightning_embviz.metrics import FrechetReference, fd_infinity, frechet_distance


def sqrtm_formula(
    real: np.ndarray, fake: np.ndarray, clock: Callable[[], float]
) -> tuple[float, float]:
    """The pytorch-fid formula; returns (value, seconds spent in sqrtm alone)."""
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    start = clock()
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    root_time = clock() - start
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)), root_time


def timed(fn: Callable[[], Any], repeat: int, cpu: bool) -> tuple[Any, float]:
    clock = time.process_time if cpu else time.perf_counter
    best, out = float("inf"), None
    for _ in range(repeat):
        start = clock()
        out = fn()
        best = min(best, clock() - start)
    return out, best


def run(n: int, d: int, repeat: int, cpu: bool) -> None:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = (rng.standard_normal((n, d)) @ mix).astype(np.float32)
    fake = (rng.standard_normal((n, d)) @ mix * 1.05 + 0.02).astype(np.float32)
    clock = time.process_time if cpu else time.perf_counter
    (ref_value, root_time), t_ref = timed(lambda: sqrtm_formula(real, fake, clock), repeat, cpu)
    ours, t_ours = timed(lambda: frechet_distance(real, fake), repeat, cpu)
    fitted, t_fit = timed(lambda: FrechetReference(real), repeat, cpu)
    again, t_dist = timed(lambda: fitted.distance(fake), repeat, cpu)
    inf, t_inf = timed(lambda: fd_infinity(fitted, fake), repeat, cpu)
    rel = abs(ours - ref_value) / abs(ref_value)
    rel_again = abs(again - ref_value) / abs(ref_value)
    kind = "CPU" if cpu else "wall"
    print(f"\n{n} + {n} x {d} ({kind} seconds, {torch.get_num_threads()} threads)")
    print(f"  sqrtm formula          {t_ref:8.2f} s  (sqrtm alone {root_time:.2f} s)")
    print(f"  frechet_distance       {t_ours:8.2f} s  x{t_ref / t_ours:5.1f}  rel. {rel:.1e}")
    print(f"  FrechetReference fit   {t_fit:8.2f} s")
    print(f"  ref.distance(fake)     {t_dist:8.2f} s  x{t_ref / t_dist:5.1f}  rel. {rel_again:.1e}")
    print(
        f"  fd_infinity(ref, fake) {t_inf:8.2f} s  = {t_inf / t_ours:.2f} x frechet_distance "
        f"(FD {ref_value:.6g}, FD_inf {inf.fd_inf:.6g}, R^2 {inf.r_squared:.4f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x1024", help="comma-separated NxD")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--cpu-time", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for item in args.sizes.split(","):
        n, d = (int(v) for v in item.lower().split("x"))
        run(n, d, args.repeat, args.cpu_time)


if __name__ == "__main__":
    main()
