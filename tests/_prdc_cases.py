"""Hard inputs for the PRDC engine and the reference ``prdc`` package, shared by the tests."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import prdc

KEYS = ("precision", "recall", "density", "coverage")


def reference(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, float]:
    with contextlib.redirect_stdout(io.StringIO()):  # prdc prints the set sizes
        out = prdc.compute_prdc(real, fake, k)
    return {key: float(out[key]) for key in KEYS}


def make_sets(kind: str, n: int, m: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Data sets on which naive float32 distance arithmetic is known to go wrong."""
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.normal(size=(n, d)), rng.normal(0.2, 1.2, size=(m, d))
    if kind == "far":  # far from the origin: |x|^2 swamps the distances
        off = 10.0 ** rng.uniform(2, 5)
        return rng.normal(size=(n, d)) + off, rng.normal(size=(m, d)) + off
    if kind == "tiny":  # squares underflow float32
        sc = 10.0 ** rng.uniform(-30, -12)
        return rng.normal(size=(n, d)) * sc, rng.normal(size=(m, d)) * sc
    if kind == "huge":  # squares overflow float32
        sc = 10.0 ** rng.uniform(12, 18)
        return rng.normal(size=(n, d)) * sc, rng.normal(size=(m, d)) * sc
    if kind == "discrete":  # many exact ties at the radius
        return (
            rng.integers(0, 3, size=(n, d)).astype(float),
            rng.integers(0, 3, size=(m, d)).astype(float),
        )
    if kind == "discrete_far":  # ties far from the origin (e.g. 8-bit codes with an offset)
        return (
            rng.integers(0, 3, size=(n, d)).astype(float) + 3000.0,
            rng.integers(0, 3, size=(m, d)).astype(float) + 3000.0,
        )
    if kind == "quantized":
        return np.round(rng.normal(size=(n, d)) * 4) / 4, np.round(rng.normal(size=(m, d)) * 4) / 4
    if kind == "duplicates":  # exact duplicate rows inside and across the sets
        base = rng.integers(-3, 4, size=(max(n // 3, 2), d)).astype(float)
        real = base[rng.integers(0, len(base), n)]
        fake = np.concatenate(
            [base[rng.integers(0, len(base), m // 2)], rng.integers(-3, 4, size=(m - m // 2, d))]
        ).astype(float)
        return real, fake
    if kind == "collapsed":  # a generator stuck in a tight clump far from the data
        return rng.normal(size=(n, d)), rng.normal(size=(m, d)) * 1e-3 + 20.0
    if kind == "near_copies":  # a memorising generator
        real = rng.normal(size=(n, d))
        return real, real[rng.integers(0, n, m)] + rng.normal(size=(m, d)) * 1e-3
    raise AssertionError(kind)


KINDS = [
    "normal",
    "far",
    "tiny",
    "huge",
    "discrete",
    "discrete_far",
    "quantized",
    "duplicates",
    "near_copies",
    "collapsed",
]
