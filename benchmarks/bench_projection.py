"""Time the 2-D projections and the whole epoch-end path of lightning-embviz.

Usage::

    python benchmarks/bench_projection.py                 # the README table
    python benchmarks/bench_projection.py --sizes 1000 --methods pca,tsne --sklearn

Part 1: each projection at 1 000 / 2 000 / 5 000 points per set (width 512): fit on the real
set, place the fake set (for scikit-learn's t-SNE: one joint fit on both sets).
Part 2: the epoch-end work for 5 000 + 5 000 embeddings of width 512 with the defaults:
``compute_prdc_details`` + ``frechet_distance`` + ``ViewBuilder().build`` (first call fits the
frames; later calls only place the fakes) + rendering every figure to PNG.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
import warnings

import numpy as np
import torch

from lightning_embviz import compute_prdc_details, frechet_distance
from lightning_embviz.plotting import figure_to_png
from lightning_embviz.projection import DEFAULT_MAX_SAMPLES, TSNEProjection, make_projection
from lightning_embviz.views import ViewBuilder

WIDTH = 512


def mixture(n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(size=(10, WIDTH)) * 2.0
    labels = rng.integers(0, 10, n)
    return (centres[labels] + rng.normal(size=(n, WIDTH)) + shift).astype(np.float32)


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def best_of(repeats: int, fn) -> float:
    # The minimum over repeats: the machine is shared, and noise only ever adds time.
    return min(timed(fn)[0] for _ in range(repeats))


def bench_methods(sizes: list[int], methods: list[str], sklearn: bool, repeats: int) -> None:
    print(f"\n## Projections, width {WIDTH}: fit on N real, place N fake (seconds, best of")
    print(f"{repeats}; umap at 5000 once)\n")
    print("| method | N | fit | place fakes | total |")
    print("|---|---:|---:|---:|---:|")
    # Warm-up: numba JIT (openTSNE, umap) and BLAS start-up are not part of the numbers.
    warm_real, warm_fake = mixture(200, 0), mixture(200, 1)
    for method in methods:
        make_projection(method).project(warm_real, warm_fake)
    for n in sizes:
        real, fake = mixture(n, 0), mixture(n, 1, shift=0.2)
        for method in methods:
            reps = 1 if (method == "umap" and n >= 5000) else repeats
            fitted = make_projection(method).fit(real)
            t_fit = best_of(reps, lambda m=method, r=real: make_projection(m).fit(r))
            t_tr = best_of(reps, lambda p=fitted, f=fake: p.transform(f))
            name = f"{method} (openTSNE)" if method == "tsne" else method
            print(f"| {name} | {n} | {t_fit:.2f} | {t_tr:.2f} | {t_fit + t_tr:.2f} |", flush=True)
        if sklearn:
            proj = TSNEProjection(backend="sklearn")
            t_joint, _ = timed(lambda proj=proj, r=real, f=fake: proj.project(r, f))
            print(f"| tsne (scikit-learn, joint) | {n} | {t_joint:.2f} | - | {t_joint:.2f} |")


def epoch_end(real: np.ndarray, fake: np.ndarray, views: ViewBuilder) -> list[float]:
    t_prdc, details = timed(lambda: compute_prdc_details(real, fake, 5))
    t_fd, _ = timed(lambda: frechet_distance(real, fake))
    t_views, figures = timed(lambda: views.build(real, fake, details))
    t_png, _ = timed(lambda: [figure_to_png(f) for f in figures.values()])
    return [t_prdc, t_fd, t_views, t_png, t_prdc + t_fd + t_views + t_png]


def bench_epoch_end(n: int, repeats: int) -> None:
    real, fake = mixture(n, 0), mixture(n, 1, shift=0.2)
    print(
        f"\n## Epoch end, {n} real + {n} fake, width {WIDTH}, defaults "
        f"(max_samples={DEFAULT_MAX_SAMPLES}, methods pca,tsne) (seconds, best of {repeats})\n"
    )
    print("| step | first call (fits frames) | later call (frames kept) |")
    print("|---|---:|---:|")
    first: list[list[float]] = []
    later: list[list[float]] = []
    for _ in range(repeats):
        views = ViewBuilder()  # a fresh builder: its first call fits the frames
        first.append(epoch_end(real, fake, views))
        later.append(epoch_end(real, fake, views))
    labels = (
        "compute_prdc_details (k=5)",
        "frechet_distance",
        "ViewBuilder.build (project + draw)",
        "render figures to PNG",
        "**total**",
    )
    best_first = min(first, key=lambda row: row[-1])
    best_later = min(later, key=lambda row: row[-1])
    for i, label in enumerate(labels):
        print(f"| {label} | {best_first[i]:.2f} | {best_later[i]:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,5000")
    parser.add_argument("--methods", default="pca,tsne,umap")
    parser.add_argument("--sklearn", action="store_true", help="also time scikit-learn's t-SNE")
    parser.add_argument("--epoch-n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs")
    parser.add_argument("--skip-methods", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(
        f"# lightning-embviz projection benchmark\n\npython {platform.python_version()}, "
        f"torch {torch.__version__}, {os.cpu_count()} CPU(s), torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    if not args.skip_methods:
        bench_methods(
            [int(s) for s in args.sizes.split(",")],
            args.methods.split(","),
            args.sklearn,
            args.repeats,
        )
    bench_epoch_end(args.epoch_n, args.repeats)


if __name__ == "__main__":
    main()
