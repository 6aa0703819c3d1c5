"""The exact nearest training sample of every query row, the training set read in blocks.

The pass behind the memorization numbers (:mod:`lightning_embviz.memorization`): for each
fake (or held-out real, or training row with itself excluded) the index of its nearest
training row and the Euclidean distance to it, exact (ties go to the lower training index),
in memory bounded whatever the training set's size.

How the nearest search stays exact and bounded
----------------------------------------------
The training set is read in blocks of rows; each block is brought into a float32 frame
(centred on the training mean, scaled by a power of two) and compared with every fake by a
GEMM. A fake keeps, per block, only the pairs whose estimate lies within the GEMM's proven
error band of its smallest estimate so far; those few pairs are recomputed in float64 from
coordinate differences and the smallest exact squared distance wins, the lower training index
on exact ties. Blocks are read in increasing index order, so a later pair must be strictly
closer to win. Memory: one block of the training set in float32, one tile of estimates, and
the candidate pairs (a handful per fake), whatever the number of training rows. A
:class:`~lightning_embviz.memorization.TrainReference` also keeps the float32 frame of the
whole training set between comparisons when it has at most 2^28 entries (1 GiB), saving the
conversion of each block (:func:`train_frame` with ``cache=True``).

Distances are float64 values computed from coordinate differences, whatever the input
dtype (float32 inputs are not rounded back to float32 here, unlike the PRDC radii).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, check_int
from lightning_embviz.engine.exact import exact_squared_distances
from lightning_embviz.engine.frames import frame_scale, mean64, to_frame

__all__ = [
    "TRAIN_ROWS",
    "NearestPass",
    "TrainFrame",
    "check_chunk",
    "check_width",
    "device_ok",
    "fold_nearest",
    "nearest_rows",
    "nearest_squared",
    "nearest_train",
    "train_frame",
]

_U32 = 2.0**-24  # unit round-off of float32
_BF16_U = 2.0**-8  # unit round-off of bfloat16
TRAIN_ROWS = 2048  # training rows per block: 4 MiB of float32 at D = 512
_TILE_ELEMENTS = 8 << 20  # estimates per tile (32 MiB of float32)
_MAX_HELD = 1 << 22  # candidate pairs held before they are pruned or settled
_F32_MAX = float(torch.finfo(torch.float32).max)


def _gemm_tau(width: int) -> float:
    """Bound on |estimate - exact| of ``|a|^2 + |b|^2 - 2 a.b``, per unit of ``|a|^2 + |b|^2``.

    The float32 GEMM bound of the PRDC engine ((D + 32) u32, taken twice), widened to the
    bfloat16 one when torch may run float32 GEMMs with reduced internal precision (TF32,
    ``torch.set_float32_matmul_precision`` other than "highest"); plus 2^-30 for the float64
    rounding of the exact values the estimates are compared with.
    """
    tau = 2.0 * (width + 32) * _U32 + 2.0**-30
    reduced = torch.get_float32_matmul_precision() != "highest" or (
        torch.cuda.is_available() and torch.backends.cuda.matmul.allow_tf32
    )
    return tau + 1.01 * 2.0 * _BF16_U if reduced else tau


def _up32(x: Tensor) -> Tensor:
    """Float64 thresholds rounded to float32 towards +inf (kept below float32's max)."""
    y = x.to(torch.float32)
    y = torch.where(y.to(torch.float64) < x, torch.nextafter(y, torch.full_like(y, math.inf)), y)
    return y.clamp(max=_F32_MAX)


def _centred_extent(x: Tensor, center: Tensor, chunk: int) -> tuple[float, float]:
    """Largest ``|x - center|`` entry and largest ``|x - center|^2`` row, in float64."""
    biggest, sq_max = 0.0, 0.0
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(torch.float64) - center
        if block.numel():
            biggest = max(biggest, float(block.abs().max()))
            sq_max = max(sq_max, float(block.square().sum(dim=1).max()))
    return biggest, sq_max


# Queries are converted with the training set's scale unless their centred entries would
# exceed this (in frame units); the error bound holds at any scale short of overflow.
_QUERY_EXTENT_LIMIT = 2.0**20
# The training set's float32 frame is kept between comparisons up to this many entries.
_CACHE_ENTRIES = 1 << 28


@dataclass
class TrainFrame:
    """The training set's float32 frame: centre, scale, extent and, if small, its blocks."""

    center: Tensor  # (D,) float64 mean
    scale: float  # power of two bringing the largest centred entry into [0.5, 1)
    sq_max: float  # largest |x - center|^2 row (unscaled)
    t32: Tensor | None = None  # (N, D) float32 frame, kept when N * D <= _CACHE_ENTRIES
    t_sq32: Tensor | None = None  # (N,) float32 squared norms in the frame

    def block(self, train: Tensor, c0: int, c1: int, scale: float) -> tuple[Tensor, Tensor]:
        """Rows c0:c1 in the frame at ``scale``: ((C, D) float32, (1, C) float32 norms)."""
        if self.t32 is not None and self.t_sq32 is not None and scale == self.scale:
            return self.t32[c0:c1], self.t_sq32[c0:c1].unsqueeze(0)
        t32, t_sq = to_frame(train[c0:c1], self.center, scale, c1 - c0)
        return t32, t_sq.to(torch.float32).unsqueeze(0)


def train_frame(train: Tensor, chunk: int, cache: bool = False) -> TrainFrame:
    """The frame of an (N, D) training set, read ``chunk`` rows at a time.

    Args:
        train: (N, D) training embeddings.
        chunk: rows per block while measuring the mean and extent.
        cache: also keep the whole (N, D) float32 frame when N * D <= 2^28.

    Returns:
        The :class:`TrainFrame` that :func:`nearest_rows` compares queries in.
    """
    center = mean64(train, chunk)
    biggest, sq_max = _centred_extent(train, center, chunk)
    frame = TrainFrame(center, frame_scale(biggest), sq_max)
    if cache and train.numel() <= _CACHE_ENTRIES:
        t32, t_sq = to_frame(train, center, frame.scale, chunk)
        frame.t32, frame.t_sq32 = t32, t_sq.to(torch.float32)
    return frame


class NearestPass:
    """Exact nearest training row of every query row, the training set read in blocks.

    Per tile of (queries x training rows) the float32 estimates keep only the pairs that may
    hold their query's minimum: those within twice the error bound of the smallest estimate
    so far, and below the exact minimum settled so far plus the bound. Only the rows whose
    tile minimum reaches that limit are searched for such pairs (after the first blocks, few
    are). Held pairs are pruned as the limits tighten, and settled exactly (float64 from
    coordinate differences) at the end or when too many are held (degenerate data with many
    near-equal distances).
    """

    def __init__(
        self,
        queries: Tensor,
        train: Tensor,
        frame: TrainFrame,
        exclude: Tensor | None,
        train_rows: int,
        max_held: int,
        span: tuple[int, int] | None = None,
    ) -> None:
        self.queries, self.train, self.exclude = queries, train, exclude
        self.span = (0, int(train.shape[0])) if span is None else span
        self.frame = frame
        self.train_rows = train_rows
        self.query_rows = max(1, min(queries.shape[0], _TILE_ELEMENTS // train_rows))
        self.max_held = max_held
        q_biggest, _ = _centred_extent(queries, frame.center, train_rows)
        self.scale = frame.scale
        if q_biggest * self.scale > _QUERY_EXTENT_LIMIT:
            self.scale = frame_scale(q_biggest)
        self.scale2 = self.scale * self.scale
        self.q32, q_sq = to_frame(queries, frame.center, self.scale, train_rows)
        self.q_sq32 = q_sq.to(torch.float32)
        t_max = frame.sq_max * self.scale2 * (1.0 + 2.0**-20)
        self.err = _gemm_tau(queries.shape[1]) * (q_sq + t_max)  # (M,) float64, scaled units
        m, device = queries.shape[0], queries.device
        self.low = torch.full((m,), math.inf, dtype=torch.float64, device=device)
        self.best = torch.full((m,), math.inf, dtype=torch.float64, device=device)
        self.best_index = torch.full((m,), -1, dtype=torch.int64, device=device)
        self.rows: list[Tensor] = []
        self.cols: list[Tensor] = []
        self.vals: list[Tensor] = []
        self.held = 0
        self._buffers: dict[str, Tensor] = {}

    def _buffer(self, name: str, rows: int, cols: int, dtype: torch.dtype) -> Tensor:
        # One buffer per kind, reused: fresh multi-MiB tensors per tile fragment glibc's heap.
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < rows * cols:
            buf = torch.empty(rows * cols, dtype=dtype, device=self.queries.device)
            self._buffers[name] = buf
        return buf[: rows * cols].view(rows, cols)

    def _limit(self, q0: int, q1: int) -> Tensor:
        """Largest estimate that may still be the minimum of queries q0:q1 (float32)."""
        err, low, best = self.err[q0:q1], self.low[q0:q1], self.best[q0:q1]
        by_estimate = low + 2.0 * err
        # A settled pair came from an earlier block (a lower index): only a strictly smaller
        # exact value beats it, and nothing beats an exact 0.
        by_exact = torch.where(best > 0, best * self.scale2 + err, -math.inf)
        limit = torch.minimum(by_estimate, by_exact)
        slack = torch.where(torch.isfinite(limit), limit.abs() * 2.0**-20, 0.0)
        return _up32(limit + slack)

    def run(self) -> tuple[Tensor, Tensor]:
        """Returns ``(index (M,) int64, squared distance (M,) float64)``.

        Only the training rows of :attr:`span` are searched (index -1, inf where none is).
        """
        (start, stop), m = self.span, self.queries.shape[0]
        for c0 in range(start, stop, self.train_rows):
            c1 = min(stop, c0 + self.train_rows)
            t32, t_sq32 = self.frame.block(self.train, c0, c1, self.scale)
            for q0 in range(0, m, self.query_rows):
                q1 = min(m, q0 + self.query_rows)
                self._tile(t32, t_sq32, q0, q1, c0)
        self._settle()
        return self.best_index, self.best

    def _tile(self, t32: Tensor, t_sq32: Tensor, q0: int, q1: int, c0: int) -> None:
        s = self._buffer("s", q1 - q0, t32.shape[0], torch.float32)
        torch.addmm(t_sq32, self.q32[q0:q1], t32.T, alpha=-2.0, out=s)
        s += self.q_sq32[q0:q1].unsqueeze(1)
        if self.exclude is not None:  # a training row is not its own neighbour
            local = self.exclude[q0:q1] - c0
            inside = ((local >= 0) & (local < t32.shape[0])).nonzero(as_tuple=True)[0]
            s[inside, local[inside]] = math.inf
        tile_min = self._buffer("min", 1, q1 - q0, torch.float32)[0]
        torch.amin(s, dim=1, out=tile_min)
        torch.minimum(self.low[q0:q1], tile_min.to(torch.float64), out=self.low[q0:q1])
        limit = self._limit(q0, q1)
        active = (tile_min <= limit).nonzero(as_tuple=True)[0]
        if not active.numel():
            return
        if 2 * active.numel() < q1 - q0:  # search only the rows the tile can improve
            part = s.index_select(0, active)
            rows, cols = (part <= limit[active].unsqueeze(1)).nonzero(as_tuple=True)
            vals = part[rows, cols]
            rows = active[rows]
        else:
            mask = self._buffer("mask", q1 - q0, t32.shape[0], torch.bool)
            torch.le(s, limit.unsqueeze(1), out=mask)
            rows, cols = mask.nonzero(as_tuple=True)
            vals = s[rows, cols]
        self.rows.append(rows + q0)
        self.cols.append(cols + c0)
        self.vals.append(vals)
        self.held += rows.numel()
        if self.held > self.max_held:
            self._prune()

    def _prune(self) -> None:
        """Drop held pairs the tightened limits rule out; settle if still too many."""
        limit = self._limit(0, self.queries.shape[0])
        for i in range(len(self.rows)):
            keep = self.vals[i] <= limit[self.rows[i]]
            self.rows[i], self.cols[i] = self.rows[i][keep], self.cols[i][keep]
            self.vals[i] = self.vals[i][keep]
        self.held = sum(r.numel() for r in self.rows)
        if self.held > self.max_held // 2:
            self._settle()

    def _settle(self) -> None:
        """Decide the held pairs on exact squared distances; lowest index on ties."""
        if not self.rows:
            return
        rows, cols = torch.cat(self.rows), torch.cat(self.cols)
        self.rows.clear()
        self.cols.clear()
        self.vals.clear()
        self.held = 0
        if not rows.numel():
            return
        sq = exact_squared_distances(self.queries, self.train, rows, cols)
        m = self.queries.shape[0]
        low = torch.full((m,), math.inf, dtype=torch.float64, device=sq.device)
        low.scatter_reduce_(0, rows, sq, reduce="amin")
        at_low = sq == low[rows]
        low_index = torch.full((m,), torch.iinfo(torch.int64).max, device=sq.device)
        low_index.scatter_reduce_(0, rows[at_low], cols[at_low], reduce="amin")
        better = low < self.best
        tie = (low == self.best) & torch.isfinite(low)
        self.best_index[tie] = torch.minimum(self.best_index[tie], low_index[tie])
        self.best[better] = low[better]
        self.best_index[better] = low_index[better]


def nearest_squared(
    queries: Tensor,
    train: Tensor,
    frame: TrainFrame,
    exclude: Tensor | None = None,
    chunk: int = TRAIN_ROWS,
    max_held: int = _MAX_HELD,
    span: tuple[int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact nearest training row and its float64 *squared* distance for each query row.

    With ``span = (start, stop)`` only the training rows ``start:stop`` are searched (one
    rank's share under DDP); indices stay those of the whole training set, so shares
    searched apart and folded with :func:`fold_nearest` give the search of the whole set,
    bit for bit (each squared distance is computed from its pair's coordinates alone).

    Args:
        queries: (M, D) rows to search for, on ``train``'s device.
        train: (N, D) training rows.
        frame: ``train``'s :class:`TrainFrame` (of the whole set, also with ``span``).
        exclude: (M,) int64 training row that each query may not match (itself), or None.
        chunk: training rows per block.
        max_held: candidate pairs held before they are pruned or settled.
        span: ``(start, stop)`` training rows to search, ``0 <= start <= stop <= N``; None:
            all.

    Returns:
        ``(index (M,) int64, squared distance (M,) float64)``; lowest index on exact ties;
        ``(-1, inf)`` for a query with no row to match (an empty span, or a span holding
        only its excluded row).
    """
    if queries.shape[0] == 0:
        empty = torch.empty(0, dtype=torch.float64, device=train.device)
        return empty.to(torch.int64), empty
    return NearestPass(queries, train, frame, exclude, chunk, max_held, span).run()


def nearest_rows(
    queries: Tensor,
    train: Tensor,
    frame: TrainFrame,
    exclude: Tensor | None = None,
    chunk: int = TRAIN_ROWS,
    max_held: int = _MAX_HELD,
) -> tuple[Tensor, Tensor]:
    """Exact nearest training row and its float64 distance for each query row.

    Args:
        queries: (M, D) rows to search for, on ``train``'s device.
        train: (N, D) training rows.
        frame: ``train``'s :class:`TrainFrame`.
        exclude: (M,) int64 training row that each query may not match (itself), or None.
        chunk: training rows per block.
        max_held: candidate pairs held before they are pruned or settled.

    Returns:
        ``(index (M,) int64, distance (M,) float64)``; lowest index on exact ties.
    """
    index, sq = nearest_squared(queries, train, frame, exclude, chunk, max_held)
    return index, torch.sqrt(sq)


def fold_nearest(index: Tensor, squared: Tensor) -> tuple[Tensor, Tensor]:
    """Fold the nearest rows found in several shares of the training set into one.

    Per query the smallest squared distance wins; among the shares that reach it, the
    lowest training index: the result of one search over the whole set (each share's own
    result already holds its lowest index on ties).

    Args:
        index: (S, M) int64, each share's nearest training row per query (-1 for none).
        squared: (S, M) float64, its squared distance (inf for none).

    Returns:
        ``(index (M,) int64, squared distance (M,) float64)``; ``(-1, inf)`` where no
        share has a row.

    Example::

        >>> import torch
        >>> index = torch.tensor([[3, 1, -1], [7, 0, 9]])
        >>> squared = torch.tensor([[2.0, 4.0, float("inf")], [2.0, 1.0, 5.0]])
        >>> [t.tolist() for t in fold_nearest(index, squared)]
        [[3, 0, 9], [2.0, 1.0, 5.0]]
    """
    best = squared.amin(dim=0)
    reached = (squared == best.unsqueeze(0)) & torch.isfinite(best).unsqueeze(0)
    big = torch.iinfo(torch.int64).max
    folded = torch.where(reached, index, torch.full_like(index, big)).amin(dim=0)
    folded[~torch.isfinite(best)] = -1
    return folded, best


def nearest_train(
    train: ArrayLike, fake: ArrayLike, *, chunk_size: int | None = None
) -> tuple[Tensor, Tensor]:
    """Nearest training sample of every fake, exactly, in bounded memory.

    Args:
        train: (N, D) training embeddings.
        fake: (M, D) generated embeddings.
        chunk_size: training rows per block (memory O(chunk_size * D + tile)); None: 2048.

    Returns:
        ``(index, distance)``: (M,) int64 row of the nearest training sample (the lowest one
        on exact ties) and (M,) float64 Euclidean distance to it, on ``train``'s device.

    Raises:
        TypeError, ValueError: on inputs that are not (N, D) arrays of finite numbers with
            the same D.

    Example::

        >>> import numpy as np
        >>> train = np.array([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
        >>> index, distance = nearest_train(train, np.array([[0.5, 0.0], [2.9, 0.0]]))
        >>> index.tolist(), distance.tolist()
        ([0, 2], [0.5, 0.10000000000000009])
    """
    t = device_ok(as_features(train, "train"))
    f = check_width(as_features(fake, "fake"), t, "fake")
    chunk = check_chunk(chunk_size)
    return nearest_rows(f, t, train_frame(t, chunk), chunk=chunk)


# --- checks -------------------------------------------------------------------------------


def device_ok(x: Tensor) -> Tensor:
    """``x`` on a device with float64: MPS tensors move to the CPU (the exact re-checks)."""
    return x.cpu() if x.device.type == "mps" else x


def check_width(x: Tensor, train: Tensor, name: str) -> Tensor:
    """``x`` (R, D) on ``train``'s device, contiguous; ValueError if D differs from train's."""
    if x.shape[1] != train.shape[1]:
        raise ValueError(
            f"`{name}` has {x.shape[1]} features per row but the training set has "
            f"{train.shape[1]}. Embed both with the same embedder (shape (M, "
            f"{train.shape[1]}))."
        )
    return x.to(train.device).contiguous()


def check_chunk(chunk_size: Any) -> int:
    """Training rows per block: ``chunk_size`` checked (an int >= 1), or 2048 for None."""
    if chunk_size is None:
        return TRAIN_ROWS
    return check_int(chunk_size, "chunk_size", minimum=1, hint="Or pass None to pick one.")
