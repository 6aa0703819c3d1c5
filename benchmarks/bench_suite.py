"""Simulation table for the extra metrics: do they measure what they claim?

1. Kernel distance under equal distributions: over ``--draws`` draws of two samples of
   N(0, I), the mean KD is 0 within its standard error, negative values are common, and the
   jackknife standard error matches the spread of the estimates.
2. FD-infinity on Gaussians with a known FD: N(0, I) real against N(mu 1, sigma^2 I) fakes,
   ``FD = d mu^2 + d (1 - sigma)^2``; FD on M fakes is biased upwards by about c / M,
   FD-infinity removes most of it.
3. Clipped density / coverage for identical distributions (about 1), next to density and
   coverage.
4. Mode dropping (TopP&R's setup): 7 Gaussian modes, the fakes drop them one at a time
   (same number of fakes, spread over the modes that are left); how each metric moves.
5. Cost of each metric against one ``compute_prdc`` on the same sets (one process).

Usage::

    python benchmarks/bench_suite.py            # a few minutes on 2 cores
    python benchmarks/bench_suite.py --quick    # smaller, for a smoke test
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from lightning_embviz import compute_prdc
from lightning_embviz.metrics import (
    FrechetReference,
    clipped_density_coverage,
    fd_infinity,
    frechet_distance,
    kernel_distance,
    rarity_score,
    realism_score,
    vendi_score,
)


def kd_null(draws: int, n: int, d: int) -> None:
    rng = np.random.default_rng(0)
    print(f"\n1. KD over {draws} draws of {n} + {n} x {d}: N(0, I) against N(shift, I)")
    print(
        "| shift | mean KD | SE of the mean | mean / SE | share < 0 | sd of KD | "
        "mean jackknife SE |"
    )
    print("|---|---|---|---|---|---|---|")
    for shift in (0.0, 0.1):
        values, ses = [], []
        for _ in range(draws):
            out = kernel_distance(rng.standard_normal((n, d)), rng.standard_normal((n, d)) + shift)
            values.append(out["kd"])
            ses.append(out["kd_se"])
        v = np.array(values)
        sem = v.std(ddof=1) / math.sqrt(draws)
        print(
            f"| {shift} | {v.mean():.2e} | {sem:.2e} | {v.mean() / sem:+.2f} | "
            f"{np.mean(v < 0):.2f} | {v.std(ddof=1):.2e} | {np.mean(ses):.2e} |"
        )


def fd_bias(draws: int, d: int, sizes: list[int], n_real: int) -> None:
    mu, sigma = 0.1, 1.2
    truth = d * mu**2 + d * (1 - sigma) ** 2
    rng = np.random.default_rng(1)
    real = rng.standard_normal((n_real, d))
    ref = FrechetReference(real)
    print(f"\n2. FD vs FD-infinity: N(0, I) ({n_real} real) vs N({mu}, {sigma}^2 I), d = {d}")
    print(f"   truth d mu^2 + d (1 - sigma)^2 = {truth:.3f}; mean over {draws} draws")
    print("| fakes M | FD | FD-inf | abs. error FD | abs. error FD-inf | R^2 |")
    print("|---|---|---|---|---|---|")
    for m in sizes:
        fds, infs, r2 = [], [], []
        for _ in range(draws):
            fake = rng.normal(mu, sigma, size=(m, d))
            fds.append(ref.distance(fake))
            out = fd_infinity(ref, fake, seed=int(rng.integers(1 << 30)))
            infs.append(out.fd_inf)
            r2.append(out.r_squared)
        fds_a, infs_a = np.array(fds), np.array(infs)
        print(
            f"| {m} | {fds_a.mean():.3f} | {infs_a.mean():.3f} | "
            f"{np.abs(fds_a - truth).mean():.3f} | {np.abs(infs_a - truth).mean():.3f} | "
            f"{np.mean(r2):.3f} |"
        )


def clipped_identical(draws: int, n: int, widths: list[int], k: int = 5) -> None:
    print(f"\n3. Identical distributions, {n} + {n} from N(0, I), k = {k}, mean of {draws} draws")
    print("| d | density | coverage | clipped density | clipped coverage |")
    print("|---|---|---|---|---|")
    rng = np.random.default_rng(2)
    for d in widths:
        rows = []
        for _ in range(draws):
            real = rng.standard_normal((n, d)).astype(np.float32)
            fake = rng.standard_normal((n, d)).astype(np.float32)
            p = compute_prdc(real, fake, k)
            c = clipped_density_coverage(real, fake, k)
            rows.append([p["density"], p["coverage"], c["clipped_density"], c["clipped_coverage"]])
        a = np.mean(rows, axis=0)
        print(f"| {d} | {a[0]:.3f} | {a[1]:.3f} | {a[2]:.3f} | {a[3]:.3f} |")


def modes(n_per_mode: int, d: int, k: int = 5) -> None:
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((7, d)) * 3.0
    real = np.concatenate([c + rng.standard_normal((n_per_mode, d)) for c in centres])
    real = real.astype(np.float32)
    ref = FrechetReference(real)
    total = 7 * n_per_mode
    vendi_real = vendi_score(real)
    print(
        f"\n4. Mode dropping: 7 Gaussian modes in d = {d}, {total} real and {total} fake, k = {k}"
    )
    print(f"   Vendi of the reals: {vendi_real:.2f}")
    print(
        "| modes kept | precision | recall | density | coverage | clipped density | "
        "clipped coverage | Vendi (fake) | KD | FD | FD-inf |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for kept in range(7, 0, -1):
        pick = rng.integers(0, kept, size=total)
        fake = (centres[pick] + rng.standard_normal((total, d))).astype(np.float32)
        p = compute_prdc(real, fake, k)
        c = clipped_density_coverage(real, fake, k)
        kd = kernel_distance(real, fake)
        print(
            f"| {kept} | {p['precision']:.3f} | {p['recall']:.3f} | {p['density']:.3f} | "
            f"{p['coverage']:.3f} | {c['clipped_density']:.3f} | {c['clipped_coverage']:.3f} | "
            f"{vendi_score(fake):.2f} | {kd['kd']:.3f} ± {kd['kd_se']:.3f} | "
            f"{ref.distance(fake):.1f} | {fd_infinity(ref, fake).fd_inf:.1f} |"
        )


def cost(n: int, d: int, k: int = 5) -> None:
    rng = np.random.default_rng(4)
    real = rng.standard_normal((n, d)).astype(np.float32)
    fake = (rng.standard_normal((n, d)) * 1.05).astype(np.float32)

    def clock(fn) -> float:  # type: ignore[no-untyped-def]
        start = time.process_time()
        fn()
        return time.process_time() - start

    base = clock(lambda: compute_prdc(real, fake, k))
    ref = FrechetReference(real)
    rows = [
        ("vendi_score(fake)", lambda: vendi_score(fake)),
        ("kernel_distance", lambda: kernel_distance(real, fake)),
        ("frechet_distance", lambda: frechet_distance(real, fake)),
        ("FrechetReference.distance", lambda: ref.distance(fake)),
        ("fd_infinity (fitted reference)", lambda: fd_infinity(ref, fake)),
        ("clipped_density_coverage", lambda: clipped_density_coverage(real, fake, k)),
        ("realism_score", lambda: realism_score(real, fake, k)),
        ("rarity_score", lambda: rarity_score(real, fake, k)),
    ]
    print(f"\n5. Cost against one compute_prdc ({base:.2f} s CPU), {n} + {n} x {d}, k = {k}")
    print("| metric | CPU s | x compute_prdc |")
    print("|---|---|---|")
    for name, fn in rows:
        t = clock(fn)
        print(f"| {name} | {t:.2f} | {t / base:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets and fewer draws")
    args = parser.parse_args()
    if args.quick:
        kd_null(draws=30, n=200, d=16)
        fd_bias(draws=3, d=16, sizes=[500, 2000], n_real=10000)
        clipped_identical(draws=1, n=1000, widths=[8, 64])
        modes(n_per_mode=150, d=32)
        cost(n=2000, d=64)
        return
    kd_null(draws=200, n=500, d=16)
    fd_bias(draws=10, d=32, sizes=[500, 1000, 2000, 5000], n_real=50000)
    clipped_identical(draws=3, n=2000, widths=[8, 64, 512])
    modes(n_per_mode=500, d=64)
    cost(n=5000, d=256)


if __name__ == "__main__":
    main()
