"""Do the intervals of ``prdc_intervals`` cover what they claim? A simulation.

For each sample size N = M and each kind of fake set, the script draws many independent
(real, fake) pairs (Gaussian, D = 64 by default):

- ``same``: fakes from the real distribution, N(0, I);
- ``shifted``: fakes from N(0.1 * 1, 1.1^2 I), shifted by 0.1 in every coordinate and scaled
  by 1.1 (precision about 0.35, recall 0.93, coverage 0.62 at N = 1000).

On every draw it computes the point estimates and the 95 % intervals of
``lightning_embviz.intervals.prdc_intervals``. The target of an interval is the expected
value of the statistic at that sample size, estimated by the mean over all draws; the script
reports for each metric the fraction of intervals that contain it (with its Monte Carlo
standard error, sqrt(p (1 - p) / draws)), the mean width, the standard deviation of the
statistic over draws and the mean estimated standard error. A method is right when the
fraction is near the confidence level; required here: between 0.90 and 0.98 everywhere.

It also reports the cost of one ``prdc_intervals`` call relative to one ``compute_prdc`` (best
of three runs each, on the first draw), and that cost for several ``n_splits`` at the largest
size.

Usage::

    python benchmarks/bench_intervals.py                  # N = 1000 (200 draws), 5000 (100)
    python benchmarks/bench_intervals.py --sizes 1000 --draws 50
    python benchmarks/bench_intervals.py --n-splits 8 --confidence 0.9
    python benchmarks/bench_intervals.py --threads 1   # on a shared machine
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from lightning_embviz import compute_prdc, frechet_distance
from lightning_embviz.intervals import INTERVAL_METRICS, prdc_intervals

SETTINGS = {
    "same": (0.0, 1.0),
    "shifted": (0.1, 1.1),
}
BAND = (0.90, 0.98)


def draw_sets(
    rng: np.random.Generator, n: int, dim: int, shift: float, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    real = rng.normal(size=(n, dim)).astype(np.float32)
    fake = (shift + scale * rng.normal(size=(n, dim))).astype(np.float32)
    return real, fake


def best_of(fn: Callable[[], Any], repeat: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def run_setting(
    n: int, setting: str, draws: int, args: argparse.Namespace
) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    shift, scale = SETTINGS[setting]
    rng = np.random.default_rng([args.seed, n, list(SETTINGS).index(setting)])
    values = {key: np.empty(draws) for key in INTERVAL_METRICS}
    lows = {key: np.empty(draws) for key in INTERVAL_METRICS}
    highs = {key: np.empty(draws) for key in INTERVAL_METRICS}
    ses = {key: np.empty(draws) for key in INTERVAL_METRICS}
    cost: dict[str, float] = {}
    start = time.perf_counter()
    for i in range(draws):
        real, fake = draw_sets(rng, n, args.dim, shift, scale)
        if i == 0:
            t_prdc = best_of(lambda r=real, f=fake: compute_prdc(r, f, args.k))
            t_fd = best_of(lambda r=real, f=fake: frechet_distance(r, f))
            t_int = best_of(
                lambda r=real, f=fake: prdc_intervals(
                    r, f, args.k, args.confidence, seed=0, n_splits=args.n_splits
                )
            )
            cost = {"prdc_s": t_prdc, "fd_s": t_fd, "intervals_s": t_int}
        out = prdc_intervals(real, fake, args.k, args.confidence, seed=i, n_splits=args.n_splits)
        for key in INTERVAL_METRICS:
            values[key][i] = out[key]
            lows[key][i] = out[f"{key}_low"]
            highs[key][i] = out[f"{key}_high"]
            ses[key][i] = out[f"{key}_se"]
        if (i + 1) % max(draws // 10, 1) == 0:
            print(
                f"  N={n} {setting}: {i + 1}/{draws} draws, {time.perf_counter() - start:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    rows = {}
    for key in INTERVAL_METRICS:
        target = float(values[key].mean())
        inside = (lows[key] <= target) & (target <= highs[key])
        p = float(inside.mean())
        rows[key] = {
            "mean": target,
            "sd": float(values[key].std(ddof=1)),
            "se": float(ses[key].mean()),
            "coverage": p,
            "mc_se": math.sqrt(p * (1 - p) / draws),
            "width": float((highs[key] - lows[key]).mean()),
        }
    return rows, cost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000", help="comma-separated N = M")
    parser.add_argument("--draws", default="200,100", help="draws per size (comma-separated)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--confidence", type=float, default=0.95)
    parser.add_argument("--n-splits", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    draws = [int(s) for s in args.draws.split(",")]
    if len(draws) == 1:
        draws = draws * len(sizes)
    if len(draws) != len(sizes):
        parser.error("--draws needs one value, or one per size")

    total_start = time.perf_counter()
    table = []
    costs = []
    for n, n_draws in zip(sizes, draws):
        for setting in SETTINGS:
            rows, cost = run_setting(n, setting, n_draws, args)
            costs.append((n, setting, cost))
            table.extend((n, setting, n_draws, key, row) for key, row in rows.items())

    level = f"{args.confidence:.0%}"
    print(
        f"\nCoverage of {level} intervals, D = {args.dim}, k = {args.k}, "
        f"n_splits = {args.n_splits}, {torch.get_num_threads()} torch thread(s); target: the "
        "mean of the statistic over all draws.\n"
    )
    print(
        "| N = M | fakes | draws | metric | mean | sd over draws | mean est. se "
        "| coverage ± MC se | mean width |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    failures = 0
    for n, setting, n_draws, key, row in table:
        ok = BAND[0] <= row["coverage"] <= BAND[1]
        failures += not ok
        flag = "" if ok else " **outside 0.90-0.98**"
        print(
            f"| {n} | {setting} | {n_draws} | {key} | {row['mean']:.4f} | {row['sd']:.4f} "
            f"| {row['se']:.4f} | {row['coverage']:.3f} ± {row['mc_se']:.3f}{flag} "
            f"| {row['width']:.4f} |"
        )
    print("\nCost of one call (best of 3, first draw):\n")
    print(
        "| N = M | fakes | compute_prdc | frechet_distance | prdc_intervals "
        "| ratio to compute_prdc | ratio to compute_prdc + frechet_distance |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, setting, cost in costs:
        print(
            f"| {n} | {setting} | {cost['prdc_s']:.3f} s | {cost['fd_s']:.3f} s "
            f"| {cost['intervals_s']:.3f} s | {cost['intervals_s'] / cost['prdc_s']:.1f}x "
            f"| {cost['intervals_s'] / (cost['prdc_s'] + cost['fd_s']):.1f}x |"
        )
    n, dim = sizes[-1], args.dim
    real, fake = draw_sets(np.random.default_rng(args.seed), n, dim, *SETTINGS["shifted"])
    base = best_of(lambda: compute_prdc(real, fake, args.k))
    print(f"\nCost against n_splits (N = M = {n}, shifted; compute_prdc {base:.3f} s):\n")
    print("| n_splits | prdc_intervals | ratio to compute_prdc |")
    print("|---|---|---|")
    for splits in (2, 3, 4, 8):
        seconds = best_of(
            lambda s=splits: prdc_intervals(real, fake, args.k, args.confidence, n_splits=s)
        )
        print(f"| {splits} | {seconds:.3f} s | {seconds / base:.1f}x |")
    print(
        f"\n{len(table) - failures} of {len(table)} coverage fractions within "
        f"{BAND[0]:.2f}-{BAND[1]:.2f}; total time {time.perf_counter() - total_start:.0f} s."
    )


if __name__ == "__main__":
    main()
