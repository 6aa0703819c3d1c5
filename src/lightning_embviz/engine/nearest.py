"""Exact nearest searches that ride on the real-fake pass (``details=True``).

See :class:`NearestSearch`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_embviz.engine.exact import (
    KEY_ABS_MARGIN,
    KEY_MARGIN,
    PairMode,
    exact_squared_distances,
    round_down32,
    round_key,
    round_up32,
)
from lightning_embviz.engine.frames import Frame
from lightning_embviz.engine.gemm import Workspace
from lightning_embviz.engine.limits import LIMITS, Limits

__all__ = ["NearestSearch"]

_F32_MAX = float(torch.finfo(torch.float32).max)
_U64 = 2.0**-53  # unit round-off of float64
# Relative slack that covers the float32 rounding of the bounds computed in the dense passes
# of the nearest searches (a product and a sum: 2 u, taken twice).
_BOUND_SLACK = 2.0**-21
# Radii this small (squared, in frame units) make float32 ratio bounds overflow; their rows
# are handled exactly against every fake instead (they only arise from near-duplicates).
_TINY_THETA = 2.0**-100


class NearestSearch:
    """Exact nearest searches riding on the real-fake pass (for ``details=True``).

    - For each real i: ``min_j key(i, j)`` (its nearest fake) and that fake.
    - For each fake j and each k: ``min_i key(i, j) / r_k(i)`` (how far, relative to the
      ball's radius, the nearest real ball's edge is; < 1 exactly when the fake lies inside
      some ball) and that real.

    Both use the block's float32 estimates to keep only the pairs whose error band can
    reach the minimum (a row minimum is complete within a block; a column minimum is
    tightened block after block), and settle those pairs on exact keys.

    Args:
        real: (N, D) tensor.
        fake: (M, D) tensor.
        real_radii: (K, N) float64 radii of the real points.
        frame: both sets in one frame.
        tau: error bound of the pass's GEMM estimates, see
            :func:`~lightning_embviz.engine.gemm.gemm_tau`.
        mode: key rounding of real-fake pairs.
        b_max: largest squared norm of the fakes in the frame.
        limits: memory bounds.

    Attributes:
        nearest, nearest_index: (N,) each real's nearest key and that fake (-1: none yet).
        ratio, ratio_index: (K, M) each fake's smallest key / radius and that real.
        narrowings: candidate sets narrowed with float64 estimates (collapsed fakes).
        shrinks: times a row band's candidates were cut down before the band ended.
        tiny_rows: real rows decided exactly against every fake (tiny radii).
    """

    def __init__(
        self,
        real: Tensor,
        fake: Tensor,
        real_radii: Tensor,
        frame: Frame,
        tau: float,
        mode: PairMode,
        b_max: float,
        limits: Limits = LIMITS,
    ) -> None:
        self.real, self.fake, self.mode, self.limits = real, fake, mode, limits
        self.radii = real_radii  # (K, N)
        n, m = real.shape[0], fake.shape[0]
        n_k = real_radii.shape[0]
        device = real.device
        self.err = tau * (frame.a_sq + b_max)  # (N,) per-row GEMM error bound
        self.nearest = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        self.nearest_index = torch.full((n,), -1, dtype=torch.int64, device=device)
        self.ratio = torch.full((n_k, m), math.inf, dtype=torch.float64, device=device)
        self.ratio_index = torch.full((n_k, m), -1, dtype=torch.int64, device=device)
        # Ratio^2 of pair (i, j) lies in [c_i s - d_i, a_i s + b_i] (s: its estimate).
        margin = KEY_MARGIN[mode] + 2.0**-45  # key rounding, and the float64 of theta
        abs_margin = KEY_ABS_MARGIN[mode] * frame.scale**2
        theta = (real_radii * frame.scale) ** 2
        usable = theta >= _TINY_THETA
        inv = torch.where(usable, 1.0 / theta.clamp_min(_TINY_THETA), 0.0)
        up, down = 1.0 + _BOUND_SLACK, 1.0 - _BOUND_SLACK
        self.a = round_up32(inv * (1.0 + margin) * up)
        self.b = round_up32(
            torch.where(usable, (self.err * (1.0 + margin) + abs_margin) * inv * up, 0.0)
        )
        self.c = round_down32(inv * (1.0 - margin) * down)
        self.d = round_up32(
            torch.where(usable, (self.err * (1.0 - margin) + abs_margin) * inv * up, 0.0)
        )
        self.b[~usable] = math.inf  # never an upper bound ...
        self.d[~usable] = -math.inf  # ... nor a candidate (c s - d = +inf)
        self.upper = torch.full((n_k, m), _F32_MAX, dtype=torch.float32, device=device)
        # Rows with a tiny but non-zero radius: decided exactly against every fake.
        self.tiny = ((real_radii > 0) & ~usable).any(dim=0).nonzero(as_tuple=True)[0]
        self.row_low = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        self.band_pairs: list[tuple[Tensor, Tensor, Tensor]] = []  # the current rows' tiles
        self.band_held = 0
        self.row_pairs: list[tuple[Tensor, Tensor]] = []
        self.col_pairs: list[tuple[int, Tensor, Tensor, Tensor]] = []
        self.pending = 0
        self.narrowings = 0
        self.shrinks = 0
        self.tiny_rows = 0

    def update(self, s: Tensor, r0: int, c0: int, work: Workspace) -> None:
        """Take the candidates of one tile ``s`` (rows r0.., fakes c0..) of estimates."""
        r1, c1 = r0 + s.shape[0], c0 + s.shape[1]
        # Row minimum: the exact minimum lies within 2 err of the smallest estimate; every
        # pair whose key may equal the minimum's key (lowest index wins ties) is kept too.
        # The smallest estimate so far gives a limit that the row's later tiles tighten.
        row_min = work.get("row_min", 1, s.shape[0], torch.float32)[0]
        torch.amin(s, dim=1, out=row_min)
        low = torch.minimum(self.row_low[r0:r1], row_min.to(torch.float64))
        self.row_low[r0:r1] = low
        mask = work.compare("near", torch.le, s, self._row_limit(r0, r1).unsqueeze(1))
        rows, cols = mask.nonzero(as_tuple=True)
        self.band_pairs.append((rows + r0, cols + c0, s[rows, cols]))
        self.band_held += rows.numel()
        if self.band_held > self.limits.max_pending_pairs:  # only on degenerate data
            self._shrink_band(r0, r1)
        # Column minimum of the ratio, per k.
        w = work.get("ratio", s.shape[0], s.shape[1], torch.float32)
        column_min = work.get("column_min", 1, s.shape[1], torch.float32)[0]
        for t in range(self.a.shape[0]):
            a, b = self.a[t, r0:r1].unsqueeze(1), self.b[t, r0:r1].unsqueeze(1)
            c, d = self.c[t, r0:r1].unsqueeze(1), self.d[t, r0:r1].unsqueeze(1)
            upper = self.upper[t, c0:c1]
            torch.addcmul(b, s, a, out=w)
            torch.amin(w, dim=0, out=column_min)
            torch.minimum(upper, column_min, out=upper)
            torch.addcmul(-d, s, c, out=w)
            rows, cols = work.compare("near", torch.le, w, upper.unsqueeze(0)).nonzero(
                as_tuple=True
            )
            self.col_pairs.append((t, rows + r0, cols + c0, w[rows, cols]))
            self.pending += rows.numel()
        if self.pending > self.limits.max_pending_pairs:
            self.settle()

    def _row_limit(self, r0: int, r1: int) -> Tensor:
        """Largest estimate that may still hold the minimum key of rows r0:r1."""
        err = self.err[r0:r1]
        return round_up32((self.row_low[r0:r1] + err) * (1.0 + 2.0 * KEY_MARGIN[self.mode]) + err)

    def _band_candidates(self, r0: int, r1: int) -> tuple[Tensor, Tensor]:
        """The current rows' candidates under their limit so far, narrowed when dense."""
        rows = torch.cat([p[0] for p in self.band_pairs])
        cols = torch.cat([p[1] for p in self.band_pairs])
        values = torch.cat([p[2] for p in self.band_pairs])
        self.band_pairs.clear()
        keep = values <= self._row_limit(r0, r1)[rows - r0]
        rows, cols = rows[keep], cols[keep]
        if rows.numel() > self.limits.dense_candidates * (r1 - r0):
            # Many fakes within the float32 band of the nearest one (a collapsed generator):
            # narrow them down with float64 estimates before the exact re-checks. (Done on
            # the fakes seen so far, it keeps whatever can hold the minimum among them.)
            rows, cols = _narrow_row_minimum(self.real, self.fake, rows, cols, self.mode)
            self.narrowings += 1
        return rows, cols

    def _shrink_band(self, r0: int, r1: int) -> None:
        rows, cols = self._band_candidates(r0, r1)
        # kept whatever the final limit: -inf passes every later filter
        values = torch.full(rows.shape, -math.inf, dtype=torch.float32, device=rows.device)
        self.band_pairs.append((rows, cols, values))
        self.band_held = rows.numel()
        self.shrinks += 1

    def end_rows(self, r0: int, r1: int) -> None:
        """Rows r0:r1 have seen every fake: keep their candidates under the final limit."""
        rows, cols = self._band_candidates(r0, r1)
        self.band_held = 0
        self.row_pairs.append((rows, cols))
        self.pending += rows.numel()
        if self.pending > self.limits.max_pending_pairs:
            self.settle()

    def settle(self) -> None:
        """Decide the collected candidates exactly and free them."""
        if self.row_pairs:
            rows = torch.cat([r for r, _ in self.row_pairs])
            cols = torch.cat([c for _, c in self.row_pairs])
            self.row_pairs.clear()
            key = round_key(exact_squared_distances(self.real, self.fake, rows, cols), self.mode)
            _merge_min(self.nearest, self.nearest_index, rows, key, cols)
        for t in range(self.a.shape[0]):
            mine = [p for p in self.col_pairs if p[0] == t]
            if not mine:
                continue
            rows = torch.cat([p[1] for p in mine])
            cols = torch.cat([p[2] for p in mine])
            lower = torch.cat([p[3] for p in mine])
            keep = lower <= self.upper[t, cols]  # the bound has tightened since
            rows, cols = rows[keep], cols[keep]
            self._fold_ratios(t, rows, cols)
        self.col_pairs.clear()
        self.pending = 0

    def _fold_ratios(self, t: int, rows: Tensor, cols: Tensor) -> None:
        key = round_key(exact_squared_distances(self.real, self.fake, rows, cols), self.mode)
        radius = self.radii[t, rows]
        ratio = torch.where(radius > 0, key / radius, math.inf)
        _merge_min(self.ratio[t], self.ratio_index[t], cols, ratio, rows)
        # An achieved ratio bounds the minimum: later candidates must beat it.
        found = torch.isfinite(self.ratio[t])
        tighter = round_up32(self.ratio[t][found] ** 2 * (1.0 + _BOUND_SLACK))
        self.upper[t, found] = torch.minimum(self.upper[t, found], tighter)

    def finish(self) -> None:
        """Settle what is left and handle the rows with tiny radii."""
        self.settle()
        m = self.fake.shape[0]
        for i in self.tiny.tolist():
            rows = torch.full((m,), i, dtype=torch.int64, device=self.fake.device)
            cols = torch.arange(m, device=self.fake.device)
            for t in range(self.a.shape[0]):
                self._fold_ratios(t, rows, cols)
            self.tiny_rows += 1


def _merge_min(
    best: Tensor, best_index: Tensor, groups: Tensor, values: Tensor, index: Tensor
) -> None:
    """Fold ``values`` (with their ``index``) into the per-group minimum and its index.

    Ties keep the lowest index, so the result does not depend on the order of the pairs.
    """
    if not groups.numel():
        return
    size = best.shape[0]
    low = torch.full((size,), math.inf, dtype=best.dtype, device=best.device)
    low.scatter_reduce_(0, groups, values, reduce="amin")
    at_low = values == low[groups]
    low_index = torch.full((size,), torch.iinfo(torch.int64).max, device=best.device)
    low_index.scatter_reduce_(0, groups[at_low], index[at_low], reduce="amin")
    better = low < best
    tie = (low == best) & torch.isfinite(low)
    best_index[tie] = torch.minimum(best_index[tie], low_index[tie])
    best[better] = low[better]
    best_index[better] = low_index[better]


def _present(index: Tensor, size: int) -> Tensor:
    """The distinct values of ``index`` (in [0, size)), increasing; O(P + size), no sort."""
    seen = torch.zeros(size, dtype=torch.bool, device=index.device)
    seen[index] = True
    return seen.nonzero(as_tuple=True)[0]


def _narrow_row_minimum(
    real: Tensor, fake: Tensor, rows: Tensor, cols: Tensor, mode: PairMode
) -> tuple[Tensor, Tensor]:
    """Keep the candidate pairs that float64 estimates cannot rule out of their row's minimum.

    The candidates' rows and columns are centred on the mean of the candidate fakes, so a
    tight clump of fakes becomes small numbers, and their squared distances are estimated
    with float64 GEMMs (error below ``2 (D + 32) u64 (|a|^2 + |b|^2)``, as for float32). A
    pair stays when its exact value may lie within the key rounding of its row's minimum
    (then its key may equal the minimum's: ties go to the lowest index).

    Args:
        real: (N, D) tensor.
        fake: (M, D) tensor.
        rows: (P,) row indices of the candidate pairs.
        cols: (P,) column indices; every row's minimum is among its candidates.
        mode: key rounding of the pairs.

    Returns:
        The remaining ``(rows, cols)``.
    """
    uniq_rows = _present(rows, real.shape[0])
    uniq_cols = _present(cols, fake.shape[0])
    b = fake.index_select(0, uniq_cols).to(torch.float64)
    center = b.mean(dim=0)
    b -= center
    b_sq = (b * b).sum(dim=1)
    b_max = float(b_sq.max())
    tau = 2.0 * (real.shape[1] + 32) * _U64
    # Rows are handled a few at a time so the float64 block stays near 32 MiB.
    step = max(1, (1 << 22) // max(uniq_cols.numel(), 1))
    kept_rows, kept_cols = [], []
    for start in range(0, uniq_rows.numel(), step):
        r = uniq_rows[start : start + step]
        a = real.index_select(0, r).to(torch.float64) - center
        a_sq = (a * a).sum(dim=1)
        est = torch.addmm(b_sq.unsqueeze(0), a, b.T, alpha=-2.0).add_(a_sq.unsqueeze(1))
        err = tau * (a_sq + b_max)
        limit = (est.amin(dim=1) + err) * (1.0 + 2.0 * KEY_MARGIN[mode]) + err
        rr, cc = (est <= limit.unsqueeze(1)).nonzero(as_tuple=True)
        kept_rows.append(r[rr])
        kept_cols.append(uniq_cols[cc])
    return torch.cat(kept_rows), torch.cat(kept_cols)
