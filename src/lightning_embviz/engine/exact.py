"""Exact squared distances and the reference's rounding of them (the *keys*).

A pair's key is the distance value the reference ``prdc`` package would compute for it:
``sqrt32(fl32(s))`` for float32 pairs and ``sqrt64(s)`` otherwise, ``s`` the exact squared
distance (see the package essay in :mod:`lightning_embviz.engine`). Every decision of the
engine is finally taken on keys; this module computes them, and holds the margins that
cover the rounding of a key when a threshold is compared in squared units.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "KEY_ABS_MARGIN",
    "KEY_MARGIN",
    "PairMode",
    "exact_squared_distances",
    "pair_mode",
    "round_down32",
    "round_key",
    "round_up32",
]

PairMode = str  # "f32" or "f64": the precision the reference rounds a pair's distance to

# Keys are compared through squared thresholds; this relative margin covers the rounding of
# the key (fl32 of s, then a float32 sqrt) with room to spare. The f64 margin covers sqrt64.
KEY_MARGIN = {"f32": 2.0**-19, "f64": 2.0**-47}
# Absolute margin on squared distances (unscaled units) for the float32 subnormal range.
KEY_ABS_MARGIN = {"f32": 2.0**-140, "f64": 0.0}


def pair_mode(a_dtype: torch.dtype, b_dtype: torch.dtype) -> PairMode:
    """Precision the reference rounds distances between two sets to.

    scikit-learn keeps float32 only when both operands are float32 and works in float64
    otherwise, half precision included: a float16 array goes through its float64 path, so
    its distances are float64 values, not float32 ones. bfloat16 (which NumPy lacks) is
    treated the same way: the reference run on the float64 values of the same numbers.
    """
    return "f32" if a_dtype == torch.float32 and b_dtype == torch.float32 else "f64"


def round_key(sq: Tensor, mode: PairMode) -> Tensor:
    """Turn exact squared distances (float64) into the reference's distance values.

    Args:
        sq: exact squared distances, float64, any shape.
        mode: ``"f32"`` or ``"f64"``.

    Returns:
        Float64 tensor of distances rounded as the reference rounds them.
    """
    sq = sq.clamp_min(0.0)
    if mode == "f32":
        # fl32(s), then a correctly rounded float32 square root. torch's float32 sqrt on the
        # CPU is not correctly rounded (1 ulp off for ~15% of inputs); the float64 sqrt
        # rounded to float32 is (double rounding is innocuous for sqrt from binary64).
        rounded = sq.to(torch.float32).to(torch.float64)
        return torch.sqrt(rounded).to(torch.float32).to(torch.float64)
    return torch.sqrt(sq)


def exact_squared_distances(a: Tensor, b: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Squared distances of the pairs ``(a[rows[p]], b[cols[p]])`` from coordinate differences.

    Computed in float64 from the original values, in blocks so that memory stays bounded.

    Args:
        a: (N, D) tensor.
        b: (M, D) tensor.
        rows: (P,) int64 indices into ``a``.
        cols: (P,) int64 indices into ``b``.

    Returns:
        (P,) float64 tensor.
    """
    p = rows.numel()
    out = torch.empty(p, dtype=torch.float64, device=a.device)
    if p == 0:
        return out
    width = max(a.shape[1], 1)
    block = min(p, max(1, (1 << 19) // width))  # ~4 MiB of float64 per block
    # One set of buffers for all blocks: fresh multi-MiB tensors per block cost a page fault
    # per 4 KiB (twice as slow as the arithmetic).
    pick_a = torch.empty(block, a.shape[1], dtype=a.dtype, device=a.device)
    pick_b = torch.empty(block, b.shape[1], dtype=b.dtype, device=a.device)
    diff = torch.empty(block, a.shape[1], dtype=torch.float64, device=a.device)
    other = torch.empty_like(diff)
    for start in range(0, p, block):
        r = rows[start : start + block]
        c = cols[start : start + block]
        n = r.numel()
        torch.index_select(a, 0, r, out=pick_a[:n])
        torch.index_select(b, 0, c, out=pick_b[:n])
        diff[:n].copy_(pick_a[:n])
        other[:n].copy_(pick_b[:n])
        diff[:n].sub_(other[:n]).square_()
        if n == 1:
            # torch splits a one-row sum of >= 32768 values over its threads (the value then
            # depends on the thread count); two rows are summed one row per thread.
            out[start] = diff[:1].expand(2, -1).contiguous().sum(dim=1)[0]
        else:
            torch.sum(diff[:n], dim=1, out=out[start : start + n])
    return out


def round_down32(x: Tensor) -> Tensor:
    """Round float64 thresholds to float32 towards -inf (same shape)."""
    y = x.to(torch.float32)
    return torch.where(
        y.to(torch.float64) > x, torch.nextafter(y, torch.full_like(y, -math.inf)), y
    )


def round_up32(x: Tensor) -> Tensor:
    """Round float64 thresholds to float32 towards +inf (same shape)."""
    y = x.to(torch.float32)
    return torch.where(y.to(torch.float64) < x, torch.nextafter(y, torch.full_like(y, math.inf)), y)
