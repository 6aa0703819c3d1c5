"""Epoch-end evaluation time of the second and later validation runs, with and without reuse.

The callback keeps the fitted real set (``RealReference``) and the Fréchet real side
(``FrechetReference``) while the validation reals stay bit-identical. This runs
``callback.evaluation.evaluate`` (cap, finiteness, PRDC, Fréchet distance) on the same N reals
and a new N fakes per "epoch", once refitting every time (version 0.1's behaviour) and once
reusing the previous run's fitted real side, and prints the times. With ``--extra-metrics``
it also times the callback's whole evaluation (``RunEvaluator``, reuse on) with
``EmbeddingMonitor(extra_metrics=...)`` and each extra metric alone.

    python benchmarks/bench_epoch_end.py [--n 10000] [--width 512] [--runs 3]
        [--extra-metrics vendi,kd,fd_inf,clipped] [--no-refit] [--only-all]

``--no-refit`` skips the refit-every-run mode, ``--only-all`` times the extra metrics together
only (not each alone): for large sets on a loaded machine.

Prints the torch threads and the load average (``os.getloadavg``) before and after: on a shared
machine the wall times below grow with the load.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from lightning_embviz.callback.buffer import EmbeddingSet
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.evaluation import RunEvaluator, evaluate


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _walls(pairs: list[tuple[float, float]]) -> list[float]:
    return [wall for wall, _ in pairs]


def _show(pairs: list[tuple[float, float]]) -> str:
    """``wall s (CPU s)`` of each timed run."""
    return " ".join(f"{wall:.2f} s (CPU {cpu:.2f} s)" for wall, cpu in pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--extra-metrics", default="", help="e.g. vendi,kd,fd_inf,clipped")
    parser.add_argument("--no-refit", action="store_true", help="skip the refit mode")
    parser.add_argument("--only-all", action="store_true", help="extras together only")
    args = parser.parse_args()
    extras = tuple(m for m in args.extra_metrics.split(",") if m)
    g = torch.Generator().manual_seed(0)
    real = torch.randn(args.n, args.width, generator=g)
    keys = torch.arange(args.n)
    fakes = [
        torch.randn(args.n, args.width, generator=g) * 1.05 + 0.02 for _ in range(args.runs + 1)
    ]

    def run(reuse: bool) -> list[tuple[float, float]]:
        reference, frechet = None, None
        times = []
        for fake in fakes:
            start, cpu = time.perf_counter(), time.process_time()
            out = evaluate(
                EmbeddingSet(real, keys),
                EmbeddingSet(fake, keys),
                nearest_k=5,
                max_samples=None,
                reference=reference if reuse else None,
                frechet=frechet if reuse else None,
            )
            times.append((time.perf_counter() - start, time.process_time() - cpu))
            reference, frechet = out.reference, out.frechet
        return times[1:]  # the second and later runs

    def run_callback(names: tuple[str, ...]) -> list[tuple[float, float]]:
        config = MonitorConfig.from_arguments(views=None, max_samples=None, extra_metrics=names)
        evaluator, times = RunEvaluator(config), []
        for fake in fakes:
            start, cpu = time.perf_counter(), time.process_time()
            evaluator(EmbeddingSet(real, keys), EmbeddingSet(fake, keys))
            times.append((time.perf_counter() - start, time.process_time() - cpu))
        return times[1:]

    evaluate(
        EmbeddingSet(real[:500], keys[:500]),
        EmbeddingSet(fakes[0][:500], keys[:500]),
        nearest_k=5,
        max_samples=None,
    )  # warm-up
    refit = [] if args.no_refit else run(reuse=False)
    reuse = run(reuse=True)
    load = os.getloadavg()[0]
    print(
        f"{args.n} + {args.n} x {args.width}, k = 5, runs 2..{args.runs + 1} "
        f"(wall and process CPU seconds, {torch.get_num_threads()} threads, load {load:.1f}):"
    )
    if refit:
        print(f"  refit every run : {_show(refit)}")
    print(f"  reuse reference : {_show(reuse)}")
    if refit:
        print(f"  ratio (median)  : {_median(_walls(reuse)) / _median(_walls(refit)):.2f}")
    if extras:
        base = run_callback(())
        print(f"  RunEvaluator, no extras        : {_show(base)}")
        alone = () if args.only_all else tuple((name,) for name in extras)
        for names in (*alone, extras):
            times = run_callback(names)
            extra = _median(_walls(times)) - _median(_walls(base))
            print(f"  RunEvaluator + {','.join(names):<16}: {_show(times)} (+{extra:.2f} s)")
    print(f"  load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
