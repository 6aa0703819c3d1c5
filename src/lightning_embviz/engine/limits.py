"""Memory bounds of the passes, in one frozen object.

The defaults suit every size from a few rows to hundreds of thousands; tests pass tiny
limits to drive the rare paths (capped rows, pruning, settling in small batches) on small
data, through the passes' ``limits`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LIMITS", "Limits"]


@dataclass(frozen=True)
class Limits:
    """Sizes that bound what the radius and real-fake passes hold at a time.

    Attributes:
        cap_per_k: the radius pass keeps at most ``cap_per_k * k + cap_extra`` candidates
            per row and block (far more than typical rows need; it bounds memory on
            degenerate data, where every pair would be a candidate; rows that hit the cap
            are verified and, if need be, settled by a dense exact fallback).
        cap_extra: see ``cap_per_k``.
        compact_per_row: the radius pass prunes its held candidates once they exceed
            ``compact_per_row * N * (k + 4)`` (and ``compact_min``): memory stays O(N k)
            whatever N / block.
        compact_min: see ``compact_per_row``.
        cross_tile_elements: elements (rows x columns) of one real-fake tile of float32
            estimates.
        max_pending_pairs: pairs collected for an exact re-check before they are settled.
        dense_candidates: average candidates per real row above which the nearest-fake
            search narrows them with float64 GEMM estimates first (cheaper than that many
            exact re-checks from gathered rows).
    """

    cap_per_k: int = 4
    cap_extra: int = 64
    compact_per_row: int = 4
    compact_min: int = 1 << 20
    cross_tile_elements: int = 8 << 20  # 32 MiB of float32 estimates
    max_pending_pairs: int = 1 << 22
    dense_candidates: int = 16


LIMITS = Limits()
"""The defaults."""
