"""Where do our results and the reference's stop being bit-identical on float32 data?

Both compute ``d < r`` decisions on float32 distances. Ours are the exact distances,
correctly rounded to float32. The reference (``prdc`` through scikit-learn) computes
``|x|^2 + |y|^2 - 2 x.y`` in float64 on the upcast float32 values and then rounds to float32:
the float64 cancellation error grows with ``|x|^2``, that is with the data's distance from the
origin relative to its spread, while the distances themselves do not. Once that error reaches
the float32 rounding step of the distances, some of the reference's distances are off by a
float32 ulp or more, and a decision that lies that close to a radius can flip.

For Gaussian data (N = M, D) shifted by an offset (in units of the spread) and scaled, the
script measures:

- ``max err``: the largest ``|reference distance - exact distance|`` over all real-fake
  pairs, in units of the float32 ulp of that distance (0 means every distance is the
  correctly rounded exact one);
- ``off %``: the share of real-fake distances where the reference's float32 value differs
  from the correctly rounded exact one;
- ``radii``: how many of the 2N real and fake k-NN radii differ;
- ``same``: whether ``compute_prdc`` and ``prdc.compute_prdc`` return identical values, and
  which metrics differ otherwise (with the two values).

Usage::

    python benchmarks/exactness_boundary.py
    python benchmarks/exactness_boundary.py -n 2000 -d 64 --scales 1e-3,1,1e3 --seeds 3
"""

from __future__ import annotations

import argparse
import contextlib
import io

import numpy as np
import prdc
import prdc.prdc as prdc_impl
import torch

from lightning_embviz import compute_prdc
from lightning_embviz.engine import exact_squared_distances, round_key

OFFSETS = [0.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6]


def reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # the reference prints set sizes
        out = prdc.compute_prdc(real, fake, k)
    return {key: float(value) for key, value in out.items()}


def exact_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Correctly rounded float32 distances between all rows of a and b."""
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out = np.empty((len(a), len(b)), dtype=np.float32)
    block = 64
    for start in range(0, len(a), block):
        stop = min(start + block, len(a))
        rows = torch.arange(start, stop).repeat_interleave(len(b))
        cols = torch.arange(len(b)).repeat(stop - start)
        sq = exact_squared_distances(ta, tb, rows, cols)
        out[start:stop] = round_key(sq, "f32").numpy().astype(np.float32).reshape(-1, len(b))
    return out


def kth(dist: np.ndarray, k: int) -> np.ndarray:
    return np.sort(dist, axis=1)[:, k]


def one_case(n: int, d: int, k: int, offset: float, scale: float, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    real = ((rng.standard_normal((n, d)) + offset) * scale).astype(np.float32)
    fake = ((rng.standard_normal((n, d)) * 1.05 + 0.02 + offset) * scale).astype(np.float32)
    ref_rf = prdc_impl.compute_pairwise_distance(real, fake)
    exact_rf = exact_keys(real, fake)
    ulp = np.spacing(exact_rf)
    err = np.abs(ref_rf.astype(np.float64) - exact_rf.astype(np.float64)) / ulp
    radii_diff = 0
    for x in (real, fake):
        ref_r = prdc_impl.compute_nearest_neighbour_distances(x, k)
        exact_r = kth(exact_keys(x, x), k)  # the self-distance 0 is the first value
        radii_diff += int((ref_r != exact_r).sum())
    ours = compute_prdc(real, fake, k)
    theirs = reference(real, fake, k)
    diff = {key: (ours[key], theirs[key]) for key in ours if ours[key] != theirs[key]}
    return {
        "max_err": float(err.max()),
        "off": float((ref_rf != exact_rf).mean()),
        "radii": radii_diff,
        "same": not diff,
        "diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="rows per set (N = M)")
    parser.add_argument("-d", type=int, default=64, help="width D")
    parser.add_argument("-k", type=int, default=5)
    parser.add_argument("--scales", default="1e-3,1,1e3", help="comma-separated scales")
    parser.add_argument("--offsets", default=",".join(f"{o:g}" for o in OFFSETS))
    parser.add_argument("--seeds", type=int, default=1, help="data sets per cell")
    args = parser.parse_args()
    scales = [float(s) for s in args.scales.split(",")]
    offsets = [float(o) for o in args.offsets.split(",")]
    print(
        f"N = M = {args.n}, D = {args.d}, k = {args.k}, float32 Gaussian data, "
        f"x = (z + offset) * scale; {args.seeds} seed(s) per row"
    )
    header = f"{'scale':>7} {'offset':>7} | {'max err (ulp)':>13} {'off %':>8} {'radii':>6} | same"
    print(header)
    print("-" * len(header), flush=True)
    for scale in scales:
        for offset in offsets:
            rows = [
                one_case(args.n, args.d, args.k, offset, scale, seed) for seed in range(args.seeds)
            ]
            max_err = max(float(r["max_err"]) for r in rows)  # type: ignore[arg-type]
            off = float(np.mean([r["off"] for r in rows]))
            radii = sum(int(r["radii"]) for r in rows)  # type: ignore[call-overload]
            same = sum(bool(r["same"]) for r in rows)
            diffs = "; ".join(
                ", ".join(f"{key} {a:.6g} vs {b:.6g}" for key, (a, b) in r["diff"].items())  # type: ignore[attr-defined]
                for r in rows
                if r["diff"]
            )
            verdict = "yes" if same == len(rows) else f"{same}/{len(rows)} ({diffs})"
            print(
                f"{scale:>7g} {offset:>7g} | {max_err:>13.3g} {100 * off:>7.3f}% {radii:>6} | "
                f"{verdict}",
                flush=True,
            )


if __name__ == "__main__":
    main()
