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


def bench_methods(sizes: list[int], methods: list[str], sklearn: bool) -> None:
    print(f"\n## Projections, width {WIDTH}: fit on N real, place N fake (seconds)\n")
    print("| method | N | fit | place fakes | total |")
    print("|---|---:|---:|---:|---:|")
    # Warm-up: numba JIT (openTSNE, umap) and BLAS start-up are not part of the numbers.
    warm_real, warm_fake = mixture(200, 0), mixture(200, 1)
    for method in methods:
        make_projection(method).project(warm_real, warm_fake)
    for n in sizes:
        real, fake = mixture(n, 0), mixture(n, 1, shift=0.2)
        for method in methods:
            proj = make_projection(method)
            t_fit, _ = timed(lambda proj=proj, real=real: proj.fit(real))
            t_tr, _ = timed(lambda proj=proj, fake=fake: proj.transform(fake))
            name = f"{method} (openTSNE)" if method == "tsne" else method
            print(f"| {name} | {n} | {t_fit:.2f} | {t_tr:.2f} | {t_fit + t_tr:.2f} |", flush=True)
        if sklearn:
            proj = TSNEProjection(backend="sklearn")
            t_joint, _ = timed(lambda proj=proj, r=real, f=fake: proj.project(r, f))
            print(f"| tsne (scikit-learn, joint) | {n} | {t_joint:.2f} | - | {t_joint:.2f} |")


def bench_epoch_end(n: int, repeats: int) -> None:
    real, fake = mixture(n, 0), mixture(n, 1, shift=0.2)
    print(
        f"\n## Epoch end, {n} real + {n} fake, width {WIDTH}, defaults "
        f"(max_samples={DEFAULT_MAX_SAMPLES}, methods pca,tsne) (seconds)\n"
    )
    print("| step | first call (fits frames) | later call (frames kept) |")
    print("|---|---:|---:|")
    views = ViewBuilder()
    rows: dict[str, list[float]] = {"prdc": [], "fd": [], "views": [], "png": [], "total": []}
    for _ in range(1 + repeats):
        t_prdc, details = timed(lambda: compute_prdc_details(real, fake, 5))
        t_fd, _ = timed(lambda: frechet_distance(real, fake))
        t_views, figures = timed(lambda details=details: views.build(real, fake, details))
        t_png, _ = timed(lambda figures=figures: [figure_to_png(f) for f in figures.values()])
        for key, value in zip(rows, (t_prdc, t_fd, t_views, t_png)):
            rows[key].append(value)
        rows["total"].append(t_prdc + t_fd + t_views + t_png)
    labels = {
        "prdc": "compute_prdc_details (k=5)",
        "fd": "frechet_distance",
        "views": "ViewBuilder.build (project + draw)",
        "png": "render figures to PNG",
        "total": "**total**",
    }
    for key, values in rows.items():
        later = min(values[1:]) if len(values) > 1 else float("nan")
        print(f"| {labels[key]} | {values[0]:.2f} | {later:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,2000,5000")
    parser.add_argument("--methods", default="pca,tsne,umap")
    parser.add_argument("--sklearn", action="store_true", help="also time scikit-learn's t-SNE")
    parser.add_argument("--epoch-n", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=2, help="later calls in the epoch test")
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
            [int(s) for s in args.sizes.split(",")], args.methods.split(","), args.sklearn
        )
    bench_epoch_end(args.epoch_n, args.repeats)


if __name__ == "__main__":
    main()
