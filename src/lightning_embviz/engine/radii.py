"""The radius pass: each row's distance to its k-th nearest other row, for several k.

See :class:`RadiusPass`; :func:`neighbour_radii` is its one-call face.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from lightning_embviz.engine.exact import (
    PairMode,
    exact_squared_distances,
    round_key,
    round_up32,
)
from lightning_embviz.engine.frames import Frame, make_frame
from lightning_embviz.engine.gemm import Workspace, blocks, estimate_squared, gemm_tau
from lightning_embviz.engine.limits import LIMITS, Limits

__all__ = ["RadiusPass", "neighbour_radii"]


def neighbour_radii(
    x: Tensor,
    ks: Sequence[int],
    mode: PairMode,
    chunk_size: int,
    frame: Frame | None = None,
    row_range: tuple[int, int] | None = None,
    limits: Limits = LIMITS,
) -> Tensor:
    """Distance from each row of ``x`` to its k-th nearest other row for several k, one pass.

    The radii are rounded as the reference rounds them. The point itself is not counted;
    exact duplicates count as neighbours at distance 0 (the reference takes the (k+1)-th
    smallest value of a row that includes the zero self-distance). How: see
    :class:`RadiusPass`.

    Args:
        x: (N, D) tensor with N > max(ks).
        ks: neighbour ranks, increasing, 1 <= k < N.
        mode: key rounding, see :func:`~lightning_embviz.engine.exact.pair_mode`.
        chunk_size: rows per block; memory is O(chunk_size^2 + N k), the candidates held
            being pruned as the bounds tighten.
        frame: ``x`` already converted into a float32 frame (built here if None).
        row_range: ``(start, stop)``: only the radii of rows ``start:stop``, each row block
            against every column block (no symmetry: the work of one rank of a
            distributed run). The values are those of the whole run (every decision is
            exact). None: every row.
        limits: memory bounds of the pass.

    Returns:
        (K, N) float64 tensor: row j holds the radii for ``ks[j]``; (K, stop - start) with
        ``row_range``.
    """
    return RadiusPass(x, ks, mode, chunk_size, frame, row_range, limits).run()


class _Candidates:
    """The pairs each row holds as possibly among its k nearest, and the rows' bounds.

    Each row keeps its k smallest estimates so far (``best``) and a ``limit`` derived from
    them: a pair above the limit cannot be among the k nearest. The limit tightens after
    every block, so late blocks keep only the few pairs that can still matter and the
    candidate lists stay O(N k log(N / block)) instead of O(N k N / block); once they
    exceed a threshold, the held pairs are pruned against the tightened limits.
    """

    def __init__(self, n: int, k: int, err: Tensor, limits: Limits) -> None:
        device = err.device
        self.k = k
        self.err = err  # (N,) float64: each estimate is within err of the exact value
        # Candidates kept per row and block. Far more than typical rows need; it bounds
        # memory on degenerate data (many identical rows), where every pair would be a
        # candidate. Rows that hit the cap are verified when the radii are settled.
        self.cap = limits.cap_per_k * k + limits.cap_extra
        # Per row: the smallest estimate a capped block left out (inf: nothing left out).
        self.dropped = torch.full((n,), math.inf, dtype=torch.float64, device=device)
        self.best = torch.full((n, k), math.inf, dtype=torch.float32, device=device)
        self.limit = torch.full((n,), math.inf, dtype=torch.float32, device=device)
        self.rows: list[Tensor] = []
        self.cols: list[Tensor] = []
        self.vals: list[Tensor] = []
        self.held = 0
        self.compact_at = max(limits.compact_per_row * n * (k + 4), limits.compact_min)
        self.compactions = 0

    def collect(
        self,
        s: Tensor,
        mask: Tensor,
        r0: int,
        c0: int,
        transposed: bool = False,
        tighten_rows: bool = True,
    ) -> None:
        """Keep the pairs of ``mask`` (a block of ``s``), at most ``cap`` per row.

        With ``transposed``, the rows are the block's columns (``mask`` and ``s`` stay in
        their contiguous layout; only the indices are swapped). With ``tighten_rows``, the
        limits of the rows are then tightened with the kept values (each pair of a row must
        enter its k smallest once only).
        """
        if transposed:
            c, r = mask.nonzero(as_tuple=True)
            s, mask = s.T, mask.T
        else:
            r, c = mask.nonzero(as_tuple=True)
        counts = torch.bincount(r, minlength=s.shape[0])
        heavy = counts > self.cap
        new_rows, new_cols, new_vals = [], [], []
        if bool(heavy.any()):
            light = ~heavy[r]
            r, c = r[light], c[light]
            hv = heavy.nonzero(as_tuple=True)[0]
            masked = torch.where(mask[hv], s[hv], math.inf)
            vals, idx = torch.topk(masked, self.cap + 1, dim=1, largest=False, sorted=True)
            left_out = vals[:, self.cap].to(torch.float64)
            self.dropped[hv + r0] = torch.minimum(self.dropped[hv + r0], left_out)
            new_rows.append(hv.repeat_interleave(self.cap))
            new_cols.append(idx[:, : self.cap].reshape(-1))
            new_vals.append(vals[:, : self.cap].reshape(-1))
        new_rows.append(r)
        new_cols.append(c)
        new_vals.append(s[r, c])
        # One piece per block in each list: pruning filters the pieces pairwise.
        local = torch.cat(new_rows) if len(new_rows) > 1 else new_rows[0]
        cols = torch.cat(new_cols) if len(new_cols) > 1 else new_cols[0]
        values = torch.cat(new_vals) if len(new_vals) > 1 else new_vals[0]
        self.rows.append(local + r0)
        self.cols.append(cols + c0)
        self.vals.append(values)
        self.held += local.numel()
        if tighten_rows:
            self.tighten(local, values, r0, s.shape[0])

    def tighten(self, local: Tensor, values: Tensor, r0: int, n_rows: int) -> None:
        """Merge new candidate values into each row's k smallest; lower the row limits.

        Args:
            local: (P,) int64 rows of the values, counted from ``r0``.
            values: (P,) float32 estimates.
            r0: first row of the block.
            n_rows: rows in the block.
        """
        if not local.numel():
            return
        k = self.k
        values = values.clamp_min(0.0)
        order = torch.argsort((local << 31) | values.view(torch.int32).to(torch.int64))
        local, values = local[order], values[order]
        counts = torch.bincount(local, minlength=n_rows)
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(local.numel(), device=local.device) - starts[local]
        first = rank < k
        fresh = torch.full((n_rows, k), math.inf, dtype=torch.float32, device=local.device)
        fresh[local[first], rank[first]] = values[first]
        rows = slice(r0, r0 + n_rows)
        merged = torch.cat([self.best[rows], fresh], dim=1)
        self.best[rows] = torch.topk(merged, k, dim=1, largest=False, sorted=False).values
        # Keep whatever may be below the k-th estimate plus its band: bound + 2 err.
        bound = self.best[rows].amax(dim=1).to(torch.float64)
        torch.minimum(
            self.limit[rows], round_up32(bound + 2.0 * self.err[rows]), out=self.limit[rows]
        )

    def tighten_with_smallest(self, s: Tensor, r0: int) -> None:
        """Tighten rows ``r0..`` with the k smallest values of each row of the block ``s``.

        (topk is several times faster than kthvalue on the CPU.)
        """
        n_rows = s.shape[0]
        self.tighten(
            torch.arange(n_rows, device=s.device).repeat_interleave(self.k),
            torch.topk(s, self.k, dim=1, largest=False, sorted=False).values.reshape(-1),
            r0,
            n_rows,
        )

    def compact_if_full(self) -> None:
        """Drop the held pairs that the tightened limits have ruled out, once too many."""
        if self.held <= self.compact_at:
            return
        for i in range(len(self.rows)):
            keep = self.vals[i] <= self.limit[self.rows[i]]
            self.rows[i], self.cols[i] = self.rows[i][keep], self.cols[i][keep]
            self.vals[i] = self.vals[i][keep]
        self.held = sum(t.numel() for t in self.rows)
        self.compact_at = max(self.compact_at, 2 * self.held)
        self.compactions += 1

    def take(self) -> tuple[Tensor, Tensor, Tensor]:
        """All held pairs ``(rows, cols, float32 estimates)``; the pieces are freed."""
        rows, cols, vals = torch.cat(self.rows), torch.cat(self.cols), torch.cat(self.vals)
        for pieces in (self.rows, self.cols, self.vals):
            pieces.clear()
        self.held = 0
        return rows, cols, vals


class RadiusPass:
    """The k-th nearest-neighbour distances of one set, for several k, decided exactly.

    Two passes over the blocks of the symmetric distance matrix, each block computed once:
    the diagonal blocks give every row an upper bound on its k-th smallest estimate (the
    k-th smallest over a subset of the columns, for the largest k); the blocks above the
    diagonal then only keep the pairs under the bound of their row or of their column (one
    comparison, no sort), and each row's bound is tightened with what it kept, block after
    block. The candidates of each row hold its nearest neighbours for every k up to the
    largest, and are finally settled exactly for each k; pairs undecided for several k are
    recomputed once. With a ``row_range`` (one rank's share), each row block meets every
    column block instead.

    The estimates use float32 GEMMs throughout: the k-th value's own uncertainty doubles
    the band here, and with bfloat16 the re-checks would cost more than the GEMM saves
    (measured).

    Args: those of :func:`neighbour_radii`.

    Attributes:
        compactions: how often the held candidates were pruned (after :meth:`run`).
        fallback_rows: rows settled by the dense exact fallback because a capped block
            left out a pair that might be below their answer (after :meth:`run`).
    """

    def __init__(
        self,
        x: Tensor,
        ks: Sequence[int],
        mode: PairMode,
        chunk_size: int,
        frame: Frame | None = None,
        row_range: tuple[int, int] | None = None,
        limits: Limits = LIMITS,
    ) -> None:
        self.ks = [int(k) for k in ks]
        if not self.ks or self.ks != sorted(set(self.ks)) or self.ks[0] < 1:
            raise ValueError(f"ks must be increasing ints >= 1, got {self.ks}")  # internal misuse
        n = x.shape[0]
        self.first_row, self.stop_row = (0, n) if row_range is None else row_range
        if not 0 <= self.first_row <= self.stop_row <= n:
            raise ValueError(f"row_range must lie in [0, {n}], got {row_range}")  # internal misuse
        self.x, self.mode, self.chunk_size = x, mode, chunk_size
        self.frame, self.row_range, self.limits = frame, row_range, limits
        self.work = Workspace(x.device)
        self.sq32: Tensor | None = None  # float32 squared norms in the frame, once running
        self.compactions = 0
        self.fallback_rows: list[int] = []

    def run(self) -> Tensor:
        """The radii: (K, N) float64, or (K, stop - start) with a row range."""
        x = self.x
        if self.stop_row == self.first_row:
            return torch.empty(len(self.ks), 0, dtype=torch.float64, device=x.device)
        if self.frame is None:
            self.frame = make_frame(x, None, self.chunk_size)
        sq = self.frame.a_sq
        self.sq32 = sq.to(torch.float32)
        k = self.ks[-1]  # bounds and candidate lists are sized for the largest k
        n = x.shape[0]
        # Blocks of equal size, large enough that a diagonal block holds k other rows.
        size = min(n, max(self.chunk_size, 4 * (k + 1)))
        count = -(-n // size)
        size = -(-n // count)
        # Each estimate is within err of the exact squared distance (per row bound).
        err = gemm_tau(x.shape[1]) * (sq + float(sq.max()))
        held = _Candidates(n, k, err, self.limits)
        if self.row_range is None:
            self._diagonal_blocks(held, size)
            self._off_diagonal_blocks(held, size)
        else:
            self._row_range_blocks(held, size)
        self.compactions = held.compactions
        return self._settle(held)

    def _estimate(self, r0: int, r1: int, c0: int, c1: int) -> Tensor:
        assert self.frame is not None and self.sq32 is not None
        rows, cols = slice(r0, r1), slice(c0, c1)
        return estimate_squared(self.frame, rows, self.sq32, cols, self.sq32, False, self.work)

    def _below_limit(self, s: Tensor, limit: Tensor) -> Tensor:
        return self.work.compare("mask", torch.le, s, limit)

    def _row_range_blocks(self, held: _Candidates, size: int) -> None:
        """Each block of the range's rows against every column block (no symmetry)."""
        k, n = self.ks[-1], self.x.shape[0]
        for r0 in range(self.first_row, self.stop_row, size):
            r1 = min(r0 + size, self.stop_row)
            for c0, c1 in blocks(n, size):
                s = self._estimate(r0, r1, c0, c1)
                if max(r0, c0) < min(r1, c1):
                    both = torch.arange(max(r0, c0), min(r1, c1), device=s.device)
                    s[both - r0, both - c0] = math.inf  # not itself
                whole = c1 - c0 >= k
                if whole:  # the tile's k smallest tighten the bounds first
                    held.tighten_with_smallest(s, r0)
                mask = self._below_limit(s, held.limit[r0:r1].unsqueeze(1))
                held.collect(s, mask, r0, c0, tighten_rows=not whole)
                held.compact_if_full()

    def _diagonal_blocks(self, held: _Candidates, size: int) -> None:
        """Every row's first bound, from the block on the diagonal."""
        k = self.ks[-1]
        for r0, r1 in blocks(self.x.shape[0], size):
            s = self._estimate(r0, r1, r0, r1)
            s.fill_diagonal_(math.inf)  # not itself
            first = r1 - r0 - 1 >= k
            if first:
                # The k smallest of the diagonal block give a first bound without keeping all.
                held.tighten_with_smallest(s, r0)
            # (a tiny final block, only when N is small, keeps everything and bounds its
            # rows with what it kept)
            mask = self._below_limit(s, held.limit[r0:r1].unsqueeze(1))
            held.collect(s, mask, r0, r0, tighten_rows=not first)

    def _off_diagonal_blocks(self, held: _Candidates, size: int) -> None:
        """The blocks above the diagonal, each serving its rows and its columns."""
        row_blocks = blocks(self.x.shape[0], size)
        for bi, (r0, r1) in enumerate(row_blocks):
            for c0, c1 in row_blocks[bi + 1 :]:
                s = self._estimate(r0, r1, c0, c1)
                mask = self._below_limit(s, held.limit[r0:r1].unsqueeze(1))
                held.collect(s, mask, r0, c0)
                mask = self._below_limit(s, held.limit[c0:c1].unsqueeze(0))
                held.collect(s, mask, c0, r0, transposed=True)
                held.compact_if_full()

    def _settle(self, held: _Candidates) -> Tensor:
        """Decide each row's k-th value exactly for every k, from its candidates."""
        x, ks, first_row, stop_row = self.x, self.ks, self.first_row, self.stop_row
        assert self.frame is not None
        rows, cols, vals = held.take()
        if first_row:
            rows -= first_row  # from here on, rows count from the first row of the range
        # Estimates below 0 are raised to 0 (the exact values are >= 0, so they stay within
        # err); non-negative float32 values order like their bit patterns, so one int64 sort
        # by (row, value) does what two stable sorts would.
        vals = vals.clamp_min_(0.0)
        order = torch.argsort((rows << 31) | vals.view(torch.int32).to(torch.int64))
        rows, cols, vals = rows[order], cols[order], vals[order].to(torch.float64)
        del order
        err = held.err[first_row:stop_row]
        n = stop_row - first_row
        counts = torch.bincount(rows, minlength=n)
        offsets = torch.cumsum(counts, 0) - counts
        scale2 = self.frame.scale**2
        exact_rows = err > 0
        # For each k: the exact k-th value lies in [tk - err, tk + err] (tk the k-th smallest
        # estimate of the row); a pair is undecided when its own interval overlaps that one,
        # i.e. when |estimate - tk| <= 2 err. Pairs below the band are certainly among the k
        # nearest, so the answer is the (k - below)-th undecided one. Rows with err = 0 (all
        # their points sit on the frame's centre) have exact estimates.
        tks = [vals[offsets + (kk - 1)] for kk in ks]
        # Only pairs between the first k's band and the last k's band get per-k work.
        lo_first = (tks[0] - 2.0 * err)[rows]
        below_all = torch.bincount(rows[vals < lo_first], minlength=n)
        near = ((vals >= lo_first) & (vals <= (tks[-1] + 2.0 * err)[rows])).nonzero(as_tuple=True)[
            0
        ]
        del lo_first
        rows, cols, vals = rows[near], cols[near], vals[near]
        belows, undecided = [], []
        any_undecided = torch.zeros_like(rows, dtype=torch.bool)
        for tk in tks:
            lo = (tk - 2.0 * err)[rows]
            hi = (tk + 2.0 * err)[rows]
            belows.append(below_all + torch.bincount(rows[vals < lo], minlength=n))
            und = (vals >= lo) & (vals <= hi) & (err[rows] > 0)
            del lo, hi
            undecided.append(und)
            any_undecided |= und
        # Each undecided pair is recomputed once, whatever the number of k it matters for.
        exact_all = torch.full_like(vals, math.nan)
        which = any_undecided.nonzero(as_tuple=True)[0]
        exact_all[which] = exact_squared_distances(
            x[first_row:stop_row], x, rows[which], cols[which]
        )
        radii_sq = torch.empty(len(ks), n, dtype=torch.float64, device=x.device)
        for j, kk in enumerate(ks):
            und = undecided[j]
            u_rows, exact = rows[und], exact_all[und]
            order = _sort_by_row(u_rows, exact)
            u_counts = torch.bincount(u_rows, minlength=n)
            u_offsets = torch.cumsum(u_counts, 0) - u_counts
            radii_sq[j] = tks[j] / scale2  # exact where err = 0
            pick = (u_offsets + (kk - belows[j]) - 1)[exact_rows]
            radii_sq[j, exact_rows] = exact[order][pick]
        # A capped row is right when nothing left out can be below its answer (ties are
        # equal); the others are settled against every row.
        dropped = held.dropped[first_row:stop_row]
        capped = (dropped - err < radii_sq[-1] * scale2).nonzero(as_tuple=True)[0]
        self.fallback_rows = [i + first_row for i in capped.tolist()]
        for i in self.fallback_rows:
            radii_sq[:, i - first_row] = _exact_kth_of_row(x, i, ks)
        return round_key(radii_sq, self.mode)


def _sort_by_row(rows: Tensor, vals: Tensor) -> Tensor:
    """Permutation that sorts pairs by row, then by value within a row."""
    by_val = torch.argsort(vals, stable=True)
    return by_val[torch.argsort(rows[by_val], stable=True)]


def _exact_kth_of_row(x: Tensor, i: int, ks: Sequence[int]) -> Tensor:
    """k-th smallest exact squared distances from row i to the other rows (dense fallback).

    Returns:
        (len(ks),) float64 tensor.
    """
    rows = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
    sq = exact_squared_distances(x, x, rows, torch.arange(x.shape[0], device=x.device))
    sq[i] = math.inf
    ordered = torch.sort(sq).values
    return ordered[torch.tensor([k - 1 for k in ks], device=x.device)]
