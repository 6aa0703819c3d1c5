"""Cost of the Vendi score: the (D, D) moment route, its exact fixed-point sum, the Gram route.

1. ``vendi_score`` at n = 10 000 rows of width 512 and 2048 (the (D, D) route, blocks of
   2048 rows added up in 64-bit fixed point so that any split over ranks gives the same
   bits) against the plain float64 sum of the same block products (the overhead of the
   exact sum), and the (n, n) Gram route forced on the same set (what n >= D avoids).
2. n < D: the Gram route ``vendi_score`` takes against the (D, D) route forced.

Each time is the best of ``--repeat`` runs, in one process with the machine's threads.

Usage::

    python benchmarks/bench_vendi.py             # a few minutes on 2 cores
    python benchmarks/bench_vendi.py --quick     # smaller, for a smoke test
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from lightning_embviz.engine import kernels
from lightning_embviz.metrics import vendi_score


def _best(fn: Callable[[torch.Tensor], float], x: torch.Tensor, repeat: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn(x)
        times.append(time.perf_counter() - start)
    return min(times), value


def _plain(x: torch.Tensor, chunk: int = 2048) -> float:
    """The same blocks summed in float64 (not exact, not split-independent)."""
    n, width = x.shape
    moment = torch.zeros(width, width, dtype=torch.float64)
    for start in range(0, n, chunk):
        block = kernels._unit_rows(x[start : start + chunk])
        moment += block.T @ block
    return kernels._vendi_of(moment, n, width, 1.0)


def _moment_route(x: torch.Tensor, chunk: int = 2048) -> float:
    n, width = x.shape
    limbs = kernels._moment_limbs(x, chunk, range(kernels._num_blocks(n, chunk)))
    return kernels._vendi_of(kernels._from_limbs(limbs), n, width, 1.0)


def _gram_route(x: torch.Tensor, chunk: int = 2048) -> float:
    n, width = x.shape
    return kernels._vendi_of(kernels._gram(x, chunk), n, width, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--gram", action="store_true", help="also force the Gram route at n >= D")
    args = parser.parse_args()
    n = 2000 if args.quick else 10_000
    g = torch.Generator().manual_seed(0)
    print(f"torch threads: {torch.get_num_threads()}")
    print("| n | D | route | vendi_score | plain float64 sum | other route |")
    print("|---|---|---|---|---|---|")
    for width in (512, 2048):
        x = torch.randn(n, width, generator=g)
        t_exact, v_exact = _best(vendi_score, x, args.repeat)
        t_plain, v_plain = _best(_plain, x, args.repeat)
        other = "-"
        if args.gram:
            t_gram, v_gram = _best(_gram_route, x, 1)
            other = f"Gram {t_gram:.2f} s"
        rel = abs(v_exact - v_plain) / v_plain
        print(
            f"| {n} | {width} | (D, D) | {t_exact:.2f} s | {t_plain:.2f} s "
            f"(rel. diff {rel:.0e}) | {other} |"
        )
    for rows in (500, 1000) if not args.quick else (200,):
        x = torch.randn(rows, 2048, generator=g)
        t_gram, v_gram = _best(vendi_score, x, args.repeat)
        t_moment, v_moment = _best(_moment_route, x, args.repeat)
        rel = abs(v_gram - v_moment) / v_moment
        print(
            f"| {rows} | 2048 | (n, n) Gram | {t_gram:.2f} s | - | "
            f"(D, D) {t_moment:.2f} s (rel. diff {rel:.0e}) |"
        )


if __name__ == "__main__":
    main()
