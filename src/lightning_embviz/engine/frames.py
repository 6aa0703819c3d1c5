"""Frames: float32 copies of the data, centred and scaled so the GEMMs see numbers near one.

A frame centres one or two sets on a float64 mean and scales them by a power of two (exact
in binary), so the fast pass's arithmetic is as good far from the origin, or at tiny and
huge scales, as it is for standard normal data. Distances in a frame are the original ones
times ``scale``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Frame", "frame_scale", "make_frame", "max_abs_centered", "mean64", "to_frame"]


@dataclass
class Frame:
    """Float32 copies of one or two sets in a shared, well-conditioned frame."""

    a32: Tensor  # (N, D) float32, (a - center) * scale
    b32: Tensor  # (M, D) float32, (b - center) * scale
    a_sq: Tensor  # (N,) float64 squared norms of a32
    b_sq: Tensor  # (M,) float64 squared norms of b32
    scale: float  # a power of two
    _half: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def a16(self) -> Tensor:
        """``a32`` in bfloat16, made once."""
        if "a" not in self._half:
            self._half["a"] = self.a32.to(torch.bfloat16)
        return self._half["a"]

    def b16(self) -> Tensor:
        """``b32`` in bfloat16, made once."""
        if self.b32 is self.a32:
            return self.a16()
        if "b" not in self._half:
            self._half["b"] = self.b32.to(torch.bfloat16)
        return self._half["b"]


def frame_scale(biggest: float) -> float:
    """The power of two that brings ``biggest`` (a largest centred magnitude) into [0.5, 1)."""
    if biggest > 0 and math.isfinite(biggest):
        return 2.0 ** (-math.frexp(biggest)[1])
    return 1.0


def to_frame(x: Tensor, center: Tensor, scale: float, chunk: int) -> tuple[Tensor, Tensor]:
    """``(x - center) * scale`` as float32, and the float64 squared norms of those rows.

    Args:
        x: (N, D) tensor.
        center: (D,) float64 tensor.
        scale: a power of two.
        chunk: rows converted at a time.

    Returns:
        ``(x32 (N, D) float32, sq (N,) float64)``.
    """
    out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = (x[start : start + chunk].to(torch.float64) - center) * scale
        out[start : start + chunk] = block.to(torch.float32)
    sq = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        block = out[start : start + chunk].to(torch.float64)
        sq[start : start + chunk] = (block * block).sum(dim=1)
    return out, sq


def max_abs_centered(x: Tensor, center: Tensor, chunk: int) -> float:
    """Largest ``|x - center|`` over all entries of ``x`` (N, D), computed in float64."""
    m = 0.0
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(torch.float64) - center
        if block.numel():
            m = max(m, float(block.abs().max()))
    return m


def mean64(x: Tensor, chunk: int) -> Tensor:
    """Column means of ``x`` (N, D) in float64, (D,)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    for start in range(0, x.shape[0], chunk):
        total += x[start : start + chunk].to(torch.float64).sum(dim=0)
    return total / max(x.shape[0], 1)


def make_frame(a: Tensor, b: Tensor | None, chunk: int) -> Frame:
    """Centre on the mean of ``a`` and scale by a power of two so values are of order one.

    Args:
        a: (N, D) tensor.
        b: (M, D) tensor sharing the frame, or None for a frame of ``a`` alone
            (then ``b32 is a32``).
        chunk: rows converted at a time.

    Returns:
        The :class:`Frame`.
    """
    center = mean64(a, chunk)
    biggest = max_abs_centered(a, center, chunk)
    if b is not None:
        biggest = max(biggest, max_abs_centered(b, center, chunk))
    scale = frame_scale(biggest)
    a32, a_sq = to_frame(a, center, scale, chunk)
    if b is None:
        return Frame(a32, a32, a_sq, a_sq, scale)
    b32, b_sq = to_frame(b, center, scale, chunk)
    return Frame(a32, b32, a_sq, b_sq, scale)
