"""Epoch-end evaluation time of the second and later validation runs, with and without reuse.

The callback keeps the fitted real set (``RealReference``) while the validation reals stay
bit-identical. This runs ``_evaluate.evaluate`` (cap, finiteness, PRDC, Fréchet distance) on
the same 10 000 reals and a new 10 000 fakes per "epoch", once refitting every time (version
0.1's behaviour) and once reusing the previous run's reference, and prints the times.

    python benchmarks/bench_epoch_end.py [--n 10000] [--width 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import time

import torch

from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.evaluation import evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    real = torch.randn(args.n, args.width, generator=g)
    keys = torch.arange(args.n)
    fakes = [
        torch.randn(args.n, args.width, generator=g) * 1.05 + 0.02 for _ in range(args.runs + 1)
    ]

    def run(reuse: bool) -> list[float]:
        reference = None
        times = []
        for fake in fakes:
            start = time.perf_counter()
            out = evaluate(
                EmbeddingSet(real, keys),
                EmbeddingSet(fake, keys),
                nearest_k=5,
                max_samples=None,
                reference=reference if reuse else None,
            )
            times.append(time.perf_counter() - start)
            reference = out.reference
        return times[1:]  # the second and later runs

    evaluate(
        EmbeddingSet(real[:500], keys[:500]),
        EmbeddingSet(fakes[0][:500], keys[:500]),
        nearest_k=5,
        max_samples=None,
    )  # warm-up
    refit = run(reuse=False)
    reuse = run(reuse=True)
    print(f"{args.n} + {args.n} x {args.width}, k = 5, runs 2..{args.runs + 1}:")
    print(f"  refit every run : {' '.join(f'{t:.2f}' for t in refit)} s")
    print(f"  reuse reference : {' '.join(f'{t:.2f}' for t in reuse)} s")
    print(
        f"  ratio (median)  : {sorted(reuse)[len(reuse) // 2] / sorted(refit)[len(refit) // 2]:.2f}"
    )


if __name__ == "__main__":
    main()
