"""The real-fake pass: ball-membership tests for several k, decided exactly, in one pass.

See :class:`CrossPass`; :func:`cross_ball_tests` is its one-call face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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
from lightning_embviz.engine.frames import Frame, make_frame
from lightning_embviz.engine.gemm import (
    Workspace,
    blocks,
    cross_uses_bf16,
    estimate_squared,
    gemm_tau,
)
from lightning_embviz.engine.limits import LIMITS, Limits
from lightning_embviz.engine.nearest import NearestSearch

__all__ = ["CrossPass", "CrossTests", "cross_ball_tests"]


@dataclass
class CrossTests:
    """Results of :func:`cross_ball_tests`, one row per k."""

    fake_ball_count: Tensor  # (K, M) int64
    real_covered: Tensor  # (K, N) bool
    real_recalled: Tensor | None  # (K, N) bool; None when no fake radii were given
    # With details=True (else None):
    real_nearest: Tensor | None = None  # (N,) float64 key of each real's nearest fake
    real_nearest_index: Tensor | None = None  # (N,) int64 that fake (lowest index on ties)
    fake_ratio: Tensor | None = None  # (K, M) float64 min over reals of key / radius
    fake_ratio_index: Tensor | None = None  # (K, M) int64 that real (-1: every radius is 0)


def cross_ball_tests(
    real: Tensor,
    fake: Tensor,
    real_radii: Tensor,
    fake_radii: Tensor | None,
    mode: PairMode,
    chunk_size: int,
    frame: Frame | None = None,
    details: bool = False,
    limits: Limits = LIMITS,
) -> CrossTests:
    """Ball-membership tests between two sets for several k, decided exactly, in one pass.

    With ``key(i, j)`` the reference-rounded distance between ``real[i]`` and ``fake[j]``,
    for each k (row ``t`` of the radii):

    - ``fake_ball_count[t, j] = #{i : key(i, j) < real_radii[t, i]}``
    - ``real_covered[t, i]    = any_j key(i, j) < real_radii[t, i]``
    - ``real_recalled[t, i]   = any_j key(i, j) < fake_radii[t, j]``

    Every block of distances is computed once for all k: the pairs that can matter lie
    inside the largest ball, and only those few get per-k work; a pair whose estimate is too
    close to one of its thresholds is recomputed exactly once and decided for every k.

    Args:
        real: (N, D) tensor.
        fake: (M, D) tensor.
        real_radii: (K, N) float64 radii of the real points, non-decreasing along K.
        fake_radii: (K, M) float64 radii of the fake points, non-decreasing along K, or None
            to skip the recall tests (precision, density and coverage do not need them).
        mode: key rounding of real-fake pairs.
        chunk_size: real rows per tile; a tile spans ``limits.cross_tile_elements /
            chunk_size`` fakes, so memory is O(tile) whatever M.
        frame: both sets converted into one float32 frame (built here if None).
        details: also find each real's nearest fake and each fake's nearest ball edge
            relative to the ball's radius, exactly (a few more passes over each block).
        limits: memory bounds of the pass.

    Returns:
        A :class:`CrossTests`.
    """
    tests = CrossPass(real, fake, real_radii, fake_radii, mode, chunk_size, frame, details, limits)
    return tests.run()


def _count_into(counts: Tensor, index: Tensor) -> None:
    """``counts[i] += number of times i occurs in index``, without an (M,) temporary.

    (``bincount(minlength=M)`` per block allocates M-sized tensors between long-lived small
    ones; at 200 000 columns glibc's heap then fragments into gigabytes.)
    """
    if index.numel():
        counts.index_add_(0, index, torch.ones_like(index, dtype=counts.dtype))


class CrossPass:
    """One pass over tiles of real rows x fakes that answers every k's ball tests.

    A pair is inside a ball of squared radius theta (frame units) for certain when its
    float32 estimate is below ``lo``, and outside for certain when above ``hi``; in between
    it is collected and re-checked exactly (:meth:`settle`). The band covers the GEMM error
    and the rounding of the key. A ball of radius 0 (k duplicates of its centre) holds
    nothing: ``d < 0`` never holds; ruling it out here keeps degenerate sets (many identical
    rows) from turning every pair into a re-check.

    Args: those of :func:`cross_ball_tests`.

    Attributes:
        search: the :class:`NearestSearch` riding on the pass (``details=True``), else None.
    """

    def __init__(
        self,
        real: Tensor,
        fake: Tensor,
        real_radii: Tensor,
        fake_radii: Tensor | None,
        mode: PairMode,
        chunk_size: int,
        frame: Frame | None = None,
        details: bool = False,
        limits: Limits = LIMITS,
    ) -> None:
        device = real.device
        n, m = real.shape[0], fake.shape[0]
        self.n_k = n_k = real_radii.shape[0]
        self.real, self.fake, self.mode = real, fake, mode
        self.real_radii, self.fake_radii = real_radii, fake_radii
        self.chunk_size, self.limits = chunk_size, limits
        self.frame = frame = make_frame(real, fake, chunk_size) if frame is None else frame
        self.a_sq32, self.b_sq32 = frame.a_sq.to(torch.float32), frame.b_sq.to(torch.float32)
        theta_r = (real_radii * frame.scale) ** 2  # (K, N)
        theta_f = None if fake_radii is None else (fake_radii * frame.scale) ** 2
        self.use_bf16 = cross_uses_bf16(frame, theta_r, theta_f)
        tau = gemm_tau(real.shape[1], self.use_bf16)
        self._real_bands(theta_r, tau)
        if theta_f is not None:
            self._fake_bands(theta_f, tau)

        self.fake_count = torch.zeros(n_k, m, dtype=torch.int64, device=device)
        self.covered = torch.zeros(n_k, n, dtype=torch.bool, device=device)
        self.recalled = (
            None if theta_f is None else torch.zeros(n_k, n, dtype=torch.bool, device=device)
        )
        self.check_rows: list[Tensor] = []  # pairs to re-check exactly
        self.check_cols: list[Tensor] = []
        self.check_kind: list[Tensor] = []  # 1: real-ball tests, 2: fake-ball tests
        self.work = Workspace(device)
        b_max = float(frame.b_sq.max())
        self.search = (
            NearestSearch(real, fake, real_radii, frame, tau, mode, b_max, limits)
            if details
            else None
        )

    def _real_bands(self, theta_r: Tensor, tau: float) -> None:
        """``lo_r`` (K, N) float64 and ``hi_r`` (K, N) float32 around each real ball."""
        frame, mode = self.frame, self.mode
        abs_margin = KEY_ABS_MARGIN[mode] * frame.scale**2
        err_r = tau * (frame.a_sq + float(frame.b_sq.max()))
        self.lo_r = theta_r * (1.0 - KEY_MARGIN[mode]) - abs_margin - err_r
        self.hi_r = round_up32(theta_r * (1.0 + KEY_MARGIN[mode]) + abs_margin + err_r)
        self.lo_r[self.real_radii == 0] = -math.inf
        self.hi_r[self.real_radii == 0] = -math.inf
        self.hi_r_max = self.hi_r[-1]  # the largest ball of each real point

    def _fake_bands(self, theta_f: Tensor, tau: float) -> None:
        """``lo_f`` and ``hi_f`` (K, M) float32 around each fake ball."""
        frame, mode = self.frame, self.mode
        abs_margin = KEY_ABS_MARGIN[mode] * frame.scale**2
        err_f = tau * (float(frame.a_sq.max()) + frame.b_sq)
        self.lo_f = round_down32(theta_f * (1.0 - KEY_MARGIN[mode]) - abs_margin - err_f)
        self.hi_f = round_up32(theta_f * (1.0 + KEY_MARGIN[mode]) + abs_margin + err_f)
        assert self.fake_radii is not None
        self.lo_f[self.fake_radii == 0] = -math.inf
        self.hi_f[self.fake_radii == 0] = -math.inf
        self.lo_f_min = self.lo_f[0].unsqueeze(0)
        self.hi_f_max = self.hi_f[-1].unsqueeze(0)

    def run(self) -> CrossTests:
        """Run the tiles and settle every decision."""
        # Tiles of rows x columns: enough rows for the GEMM to run near its peak (thin blocks
        # of a few dozen rows against 100 000 columns run 30 % slower), bounded memory.
        n, m, chunk = self.real.shape[0], self.fake.shape[0], self.chunk_size
        col_size = max(1, min(m, self.limits.cross_tile_elements // max(chunk, 1)))
        col_blocks = blocks(m, col_size)
        search = self.search
        for r0, r1 in blocks(n, chunk):
            for c0, c1 in col_blocks:
                s = estimate_squared(
                    self.frame,
                    slice(r0, r1),
                    self.b_sq32,
                    slice(c0, c1),
                    self.a_sq32,
                    self.use_bf16,
                    self.work,
                )
                self._real_balls(s, r0, c0)
                if self.recalled is not None:
                    self._fake_balls(s, r0, c0, c1)
                if search is not None:
                    search.update(s, r0, c0, self.work)
                del s
            if search is not None:
                search.end_rows(r0, r1)
            # Keep the pairs awaiting a re-check bounded (they pile up only on degenerate
            # data).
            if sum(t.numel() for t in self.check_rows) > self.limits.max_pending_pairs:
                self.settle()
        self.settle()
        if search is None:
            return CrossTests(self.fake_count, self.covered, self.recalled)
        search.finish()
        return CrossTests(
            self.fake_count,
            self.covered,
            self.recalled,
            search.nearest,
            search.nearest_index,
            search.ratio,
            search.ratio_index,
        )

    def settle(self) -> None:
        """Decide the collected pairs exactly, for every k, and free them."""
        if not self.check_rows:
            return
        rows = torch.cat(self.check_rows)
        cols = torch.cat(self.check_cols)
        kind = torch.cat(self.check_kind)
        for pending in (self.check_rows, self.check_cols, self.check_kind):
            pending.clear()
        recalled = self.recalled
        if recalled is not None:  # rows recalled for every k since their pairs were taken
            keep = (kind == 1) | ~recalled[0, rows]
            rows, cols, kind = rows[keep], cols[keep], kind[keep]
        if not rows.numel():
            return
        key = round_key(exact_squared_distances(self.real, self.fake, rows, cols), self.mode)
        real_ball = kind == 1
        fake_ball = kind == 2
        for t in range(self.n_k):
            in_r = real_ball & (key < self.real_radii[t, rows])
            _count_into(self.fake_count[t], cols[in_r])
            self.covered[t, rows[in_r]] = True
            if recalled is not None and self.fake_radii is not None:
                recalled[t, rows[fake_ball & (key < self.fake_radii[t, cols])]] = True

    def _undecided(self, v: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        """Pairs whose estimate ``v`` lies in some band ``[lo[t], hi[t]]``; lo, hi (K, P)."""
        out = (v >= lo[0]) & (v <= hi[0])
        for t in range(1, self.n_k):
            out |= (v >= lo[t]) & (v <= hi[t])
        return out

    def _real_balls(self, s: Tensor, r0: int, c0: int) -> None:
        """Precision, density, coverage: only pairs inside the largest ball need work."""
        limit = self.hi_r_max[r0 : r0 + s.shape[0]].unsqueeze(1)
        rows, cols = self.work.compare("mask", torch.le, s, limit).nonzero(as_tuple=True)
        v = s[rows, cols].to(torch.float64)
        rows += r0
        cols += c0
        open_pairs = self._undecided(v, self.lo_r[:, rows], self.hi_r[:, rows])
        self.check_rows.append(rows[open_pairs])
        self.check_cols.append(cols[open_pairs])
        self.check_kind.append(torch.ones_like(self.check_cols[-1], dtype=torch.int8))
        sure_rows, sure_cols, v = rows[~open_pairs], cols[~open_pairs], v[~open_pairs]
        for t in range(self.n_k):  # outside every band: below lo[t] means inside ball t
            inside = v < self.lo_r[t, sure_rows]
            _count_into(self.fake_count[t], sure_cols[inside])
            self.covered[t, sure_rows[inside]] = True

    def _fake_balls(self, s: Tensor, r0: int, c0: int, c1: int) -> None:
        """Recall: rows inside a smallest ball for certain are recalled for every k.

        The other rows only need the pairs inside the largest balls.
        """
        recalled = self.recalled
        assert recalled is not None
        r1 = r0 + s.shape[0]
        rec = self.work.compare("mask", torch.lt, s, self.lo_f_min[:, c0:c1]).any(dim=1)
        recalled[:, r0:r1] |= rec.unsqueeze(0)
        done = recalled[0, r0:r1]  # recalled for the smallest k, in this or an earlier tile
        if bool(done.all()):
            return
        # The whole tile is compared into a reused buffer rather than copying the open rows
        # out: a fresh multi-MiB copy per tile fragments the heap (glibc then keeps
        # gigabytes at 200 000 rows).
        mask = self.work.compare("mask", torch.le, s, self.hi_f_max[:, c0:c1])
        mask[done] = False
        r2, c2 = mask.nonzero(as_tuple=True)
        c2 += c0
        if self.n_k > 1:
            v2 = s[r2, c2 - c0]
            for t in range(1, self.n_k):
                recalled[t, r2[v2 < self.lo_f[t, c2]] + r0] = True
            keep = self._undecided(v2, self.lo_f[:, c2], self.hi_f[:, c2])
            r2, c2 = r2[keep], c2[keep]
        self.check_rows.append(r2 + r0)
        self.check_cols.append(c2)
        self.check_kind.append(torch.full_like(c2, 2, dtype=torch.int8))
