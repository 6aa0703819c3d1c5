"""Fréchet distance: ours against the ``scipy.linalg.sqrtm`` formula, in one process.

The reference is the formula of pytorch-fid and torchmetrics: ``np.cov`` of both sets, then
``scipy.linalg.sqrtm(S_r @ S_f)`` (a Schur decomposition of a non-symmetric matrix), real
part, traces. Ours (:mod:`lightning_embviz.engine.frechet`), all float64:

- ``frechet_distance(real, fake)``: fits the real side (BLAS ``dsyrk`` over row blocks for
  ``S_r``, Cholesky ``S_r = L L^T``) and computes the trace term from the eigenvalues of
  ``L^T S_f L``;
- ``FrechetReference(real)`` once, then ``ref.distance(fake)`` per fake set (what the callback
  keeps between validation runs): ``dsyrk`` for ``S_f`` (``M D^2`` flops; on the CPU the
  blocks are centred in float64 by NumPy and the whole fake side stays in one BLAS), the
  triangular products ``L^T S_f L`` (``4/3 D^3``), one values-only symmetric eigenvalue
  problem (on one thread);
- ``fd_infinity(ref, fake)``: FD at 5 nested subset sizes and the line in 1/n.

Printed for each size: wall and process CPU seconds of each (the best of ``--repeat`` runs,
each measured separately), the ratios ``sqrtm formula / ours`` and the relative difference of
the values (must stay below 1e-6), the torch threads and the load average (``os.getloadavg``)
before and after: the machine may be shared. ``--parts`` also times the pieces of one
``ref.distance`` and the eigensolver on 1 thread against all threads.

Usage::

    python benchmarks/bench_fd.py                          # 5000 + 5000 x 1024
    python benchmarks/bench_fd.py --sizes 10000x2048 --repeat 3 --parts
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.linalg
import torch

from lightning_embviz.engine import frechet
from lightning_embviz.metrics import FrechetReference, fd_infinity, frechet_distance


def sqrtm_formula(real: np.ndarray, fake: np.ndarray) -> tuple[float, float]:
    """The pytorch-fid formula; returns (value, wall seconds spent in sqrtm alone)."""
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    start = time.perf_counter()
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    root_time = time.perf_counter() - start
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)), root_time


def timed(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, float]:
    """``(result, best wall seconds, best CPU seconds)`` over ``repeat`` runs."""
    wall, cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        cpu = min(cpu, time.process_time() - c)
        wall = min(wall, time.perf_counter() - w)
    return out, wall, cpu


def _row(name: str, wall: float, cpu: float, extra: str = "") -> None:
    print(f"  {name:<26}{wall:8.2f} s wall {cpu:8.2f} s CPU  {extra}")


def parts(fitted: FrechetReference, fake: np.ndarray, repeat: int) -> None:
    """The pieces of one ``ref.distance`` and the eigensolver's threads."""
    f = torch.from_numpy(fake)
    mean = frechet.mean64(f, fitted._chunk)
    d = fitted.width

    def gram() -> torch.Tensor:
        out = torch.zeros(d, d, dtype=torch.float64)
        for block in frechet._rows64(f, mean, fitted._chunk):
            frechet._gram_lower(block, out)
        return out

    cov, wall, cpu = timed(gram, repeat)
    _row("S_f by dsyrk", wall, cpu)
    cov = frechet._full_from_lower(cov) / (f.shape[0] - 1)
    full, wall, cpu = timed(lambda: fitted.factor.T @ cov @ fitted.factor, repeat)
    _row("L^T S_f L by two GEMMs", wall, cpu)
    mid, wall, cpu = timed(lambda: fitted._middle(cov), repeat)
    _row(
        "L^T S_f L triangular", wall, cpu, f"max diff {float((mid - full).tril().abs().max()):.1e}"
    )
    _, wall, cpu = timed(lambda: frechet._sqrt_eig_sum(mid), repeat)
    _row("eigvalsh, 1 thread", wall, cpu)
    _, wall, cpu = timed(lambda: torch.linalg.eigvalsh(mid, UPLO="L"), repeat)
    _row(f"eigvalsh, {torch.get_num_threads()} threads", wall, cpu)
    _, wall, cpu = timed(lambda: scipy.linalg.eigvalsh(mid.numpy(), check_finite=False), repeat)
    _row("scipy eigvalsh (OpenBLAS)", wall, cpu)


def run(n: int, d: int, repeat: int, show_parts: bool) -> None:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    real = (rng.standard_normal((n, d)) @ mix).astype(np.float32)
    fake = (rng.standard_normal((n, d)) @ mix * 1.05 + 0.02).astype(np.float32)
    load = os.getloadavg()[0]
    print(f"\n{n} + {n} x {d} float32, {torch.get_num_threads()} torch threads, load {load:.1f}")
    (ref_value, root), t_ref, c_ref = timed(lambda: sqrtm_formula(real, fake), repeat)
    _row("sqrtm formula", t_ref, c_ref, f"(sqrtm alone {root:.2f} s wall)  FD {ref_value:.9g}")
    ours, t_ours, c_ours = timed(lambda: frechet_distance(real, fake), repeat)
    rel = abs(ours - ref_value) / abs(ref_value)
    _row("frechet_distance", t_ours, c_ours, f"x{t_ref / t_ours:5.1f} wall  rel. {rel:.1e}")
    fitted, t_fit, c_fit = timed(lambda: FrechetReference(real), repeat)
    _row("FrechetReference fit", t_fit, c_fit)
    again, t_dist, c_dist = timed(lambda: fitted.distance(fake), repeat)
    rel = abs(again - ref_value) / abs(ref_value)
    _row("ref.distance(fake)", t_dist, c_dist, f"x{t_ref / t_dist:5.1f} wall  rel. {rel:.1e}")
    inf, t_inf, c_inf = timed(lambda: fd_infinity(fitted, fake), repeat)
    _row(
        "fd_infinity(ref, fake)",
        t_inf,
        c_inf,
        f"= {t_inf / t_dist:.2f} x ref.distance, {t_inf / t_ours:.2f} x frechet_distance "
        f"(wall); FD_inf {inf.fd_inf:.6g}, R^2 {inf.r_squared:.4f}",
    )
    if show_parts:
        parts(fitted, fake, repeat)
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="5000x1024", help="comma-separated NxD")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parts", action="store_true", help="time the pieces of ref.distance")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for item in args.sizes.split(","):
        n, d = (int(v) for v in item.lower().split("x"))
        run(n, d, args.repeat, args.parts)


if __name__ == "__main__":
    main()
