"""Memorization and data copying: how close the generated samples lie to the training set.

Precision, recall, density and coverage compare fakes with held-out reals; none of them can
tell a generator that reproduces its training samples from one that generalizes. The numbers
here compare the fakes with the *training* set, on the same exact nearest-neighbour engine:

- **nearest train neighbour** of every fake: index and Euclidean distance, exact (ties go to
  the lower training index), in memory bounded whatever the training set's size.
- ``authenticity`` (Alaa et al., ICML 2022, "AuthPct" as dgm-eval computes it, as a fraction
  instead of a percentage): the fraction of fakes f whose distance to their nearest training
  sample x* is larger than x*'s distance to its own nearest other training sample.
- ``ct_score`` (Meehan, Chaudhuri and Dasgupta, AISTATS 2020, the C_T data-copying test):
  k-means cells fitted on the training set; in each cell a Mann-Whitney U test of the fakes'
  nearest-train distances against the held-out reals' ones, Z-scored; the cells' Z averaged,
  weighted by their share of the held-out set. Cells with fewer than ``min_cell_fakes``
  fakes, or no held-out sample, are left out. About 0 for an honest generator, strongly
  negative when it copies, positive when it underfits. Needs held-out reals (NaN without).
- ``copy_fraction``: the fraction of fakes closer to the training set than the
  ``alpha``-quantile of the held-out reals' nearest-train distances (without a held-out set:
  of the training samples' leave-one-out nearest distances). About ``alpha`` when honest.

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
:class:`TrainReference` also keeps the float32 frame of the whole training set between
comparisons when it has at most 2^28 entries (1 GiB), saving the conversion of each block.

Distances are float64 values computed from coordinate differences, whatever the input
dtype (float32 inputs are not rounded back to float32 here, unlike the PRDC radii).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, check_int
from lightning_embviz.engine import exact_squared_distances, frame_scale, mean64, to_frame

__all__ = [
    "MEMORIZATION_KEYS",
    "MemorizationResult",
    "TrainReference",
    "compute_memorization",
    "compute_memorization_details",
    "nearest_train",
]

MEMORIZATION_KEYS: tuple[str, ...] = ("authenticity", "ct_score", "copy_fraction")
"""The keys of :func:`compute_memorization`'s dict, in this order."""

FORMAT_VERSION = 1
"""Version of the file format written by :meth:`TrainReference.save`."""

_FORMAT_NAME = "lightning_embviz.TrainReference"
_FILE_KEYS = (
    "format",
    "format_version",
    "dtype",
    "fingerprint",
    "train",
    "n_cells",
    "self_rows",
    "kmeans_rows",
    "seed",
    "sample_rows",
    "self_distance",
    "centroids",
)

_U32 = 2.0**-24  # unit round-off of float32
_BF16_U = 2.0**-8  # unit round-off of bfloat16
_TRAIN_ROWS = 2048  # training rows per block: 4 MiB of float32 at D = 512
_TILE_ELEMENTS = 8 << 20  # estimates per tile (32 MiB of float32)
_MAX_HELD = 1 << 22  # candidate pairs held before they are pruned or settled
_F32_MAX = float(torch.finfo(torch.float32).max)
_DEFAULT_CELLS = 20
_DEFAULT_SELF_ROWS = 10_000
_DEFAULT_KMEANS_ROWS = 100_000


# --- the exact nearest-train search -------------------------------------------------------


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
class _TrainFrame:
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


def _train_frame(train: Tensor, chunk: int, cache: bool = False) -> _TrainFrame:
    center = mean64(train, chunk)
    biggest, sq_max = _centred_extent(train, center, chunk)
    frame = _TrainFrame(center, frame_scale(biggest), sq_max)
    if cache and train.numel() <= _CACHE_ENTRIES:
        t32, t_sq = to_frame(train, center, frame.scale, chunk)
        frame.t32, frame.t_sq32 = t32, t_sq.to(torch.float32)
    return frame


class _NearestPass:
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
        frame: _TrainFrame,
        exclude: Tensor | None,
        train_rows: int,
        max_held: int,
    ) -> None:
        self.queries, self.train, self.exclude = queries, train, exclude
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
        """Returns ``(index (M,) int64, squared distance (M,) float64)``."""
        n, m = self.train.shape[0], self.queries.shape[0]
        for c0 in range(0, n, self.train_rows):
            c1 = min(n, c0 + self.train_rows)
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


def _nearest(
    queries: Tensor,
    train: Tensor,
    frame: _TrainFrame,
    exclude: Tensor | None = None,
    chunk: int = _TRAIN_ROWS,
    max_held: int = _MAX_HELD,
) -> tuple[Tensor, Tensor]:
    """Exact nearest training row and its float64 distance for each query row."""
    if queries.shape[0] == 0:
        empty = torch.empty(0, dtype=torch.float64, device=train.device)
        return empty.to(torch.int64), empty
    index, sq = _NearestPass(queries, train, frame, exclude, chunk, max_held).run()
    return index, torch.sqrt(sq)


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
    t = _device_ok(as_features(train, "train"))
    f = _check_width(as_features(fake, "fake"), t, "fake")
    chunk = _check_chunk(chunk_size)
    return _nearest(f, t, _train_frame(t, chunk), chunk=chunk)


# --- checks -------------------------------------------------------------------------------


def _device_ok(x: Tensor) -> Tensor:
    # MPS has no float64: the exact re-checks run on the CPU.
    return x.cpu() if x.device.type == "mps" else x


def _check_width(x: Tensor, train: Tensor, name: str) -> Tensor:
    if x.shape[1] != train.shape[1]:
        raise ValueError(
            f"`{name}` has {x.shape[1]} features per row but the training set has "
            f"{train.shape[1]}. Embed both with the same embedder (shape (M, "
            f"{train.shape[1]}))."
        )
    return x.to(train.device).contiguous()


def _check_chunk(chunk_size: Any) -> int:
    if chunk_size is None:
        return _TRAIN_ROWS
    return check_int(chunk_size, "chunk_size", minimum=1, hint="Or pass None to pick one.")


def _check_alpha(alpha: Any) -> float:
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (int, float, np.floating)):
        raise TypeError(f"`alpha` must be a float in (0, 1), got {alpha!r}.")
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"`alpha` must lie strictly between 0 and 1, got {alpha!r}. It is the quantile of "
            "the held-out nearest-train distances below which a fake counts as a copy; "
            "0.05 is the default."
        )
    return value


# --- results ------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemorizationResult:
    """Authenticity, C_T and copy fraction, with the per-sample results behind them.

    Attributes:
        authenticity: fraction of fakes f with ``d(f, x*) > rho(x*)``, x* the nearest
            training sample of f and rho(x*) its distance to its nearest other one.
        ct_score: the C_T statistic (NaN without held-out reals or without a usable cell).
        copy_fraction: fraction of fakes with nearest-train distance below
            ``copy_threshold``.
        alpha: the quantile level of the copy threshold.
        copy_threshold: the ``alpha``-quantile of the held-out reals' nearest-train
            distances (or, without held-out reals, of the training samples' leave-one-out
            nearest distances).
        nearest_train_index: (M,) int64, each fake's nearest training row (lowest on ties).
        nearest_train_distance: (M,) float64, the distance to it.
        train_self_distance: (M,) float64, that training sample's distance to its own
            nearest other training sample.
        authentic: (M,) bool, ``nearest_train_distance > train_self_distance``.
        copied: (M,) bool, ``nearest_train_distance < copy_threshold``.
        fake_cell: (M,) int64, each fake's k-means cell (-1 without held-out reals).
        heldout_nearest_train_index: (H,) int64 or None.
        heldout_nearest_train_distance: (H,) float64 or None.
        cell_z: (K,) float64, each cell's Z-scored U statistic (NaN where left out).
        cell_fake_count: (K,) int64 fakes per cell.
        cell_heldout_count: (K,) int64 held-out reals per cell.
        cell_used: (K,) bool, the cell enters ``ct_score``.
    """

    authenticity: float
    ct_score: float
    copy_fraction: float
    alpha: float
    copy_threshold: float
    nearest_train_index: Tensor
    nearest_train_distance: Tensor
    train_self_distance: Tensor
    authentic: Tensor
    copied: Tensor
    fake_cell: Tensor
    heldout_nearest_train_index: Tensor | None
    heldout_nearest_train_distance: Tensor | None
    cell_z: Tensor
    cell_fake_count: Tensor
    cell_heldout_count: Tensor
    cell_used: Tensor

    def as_dict(self) -> dict[str, float]:
        """The three numbers as a plain dict (keys :data:`MEMORIZATION_KEYS`)."""
        return {key: getattr(self, key) for key in MEMORIZATION_KEYS}


def _mann_whitney_z(fake_d: np.ndarray, held_d: np.ndarray) -> float:
    """Z-scored Mann-Whitney U of fakes' against held-out distances, as Meehan et al. do.

    U counts the (fake, held-out) pairs where the fake is farther from the training set
    (ties 1/2), from scipy; it is standardized with the null mean ``m n / 2`` (less the
    authors' continuity correction of 0.5) and standard deviation
    ``sqrt(m n (m + n + 1) / 12)``. Below 0: fakes closer to the training set than
    held-out reals.
    """
    from scipy.stats import mannwhitneyu

    m, n = len(fake_d), len(held_d)
    u = float(mannwhitneyu(fake_d, held_d, alternative="less", method="asymptotic").statistic)
    return (u - (m * n / 2.0 - 0.5)) / math.sqrt(m * n * (m + n + 1) / 12.0)


# --- the fitted training side -------------------------------------------------------------


class TrainReference:
    """A training set fitted once, compared with many fake sets: memorization and copying.

    Holds what every comparison against a fixed training set needs: the training embeddings
    (a private copy; the exact re-checks need the original values), their mean and extent
    (the frame of the nearest search), the leave-one-out nearest distances of a seeded sample
    of ``self_rows`` training rows (the copy threshold without held-out reals), and k-means
    cells (the C_T test). The sample distances and the cells are computed when first needed
    and kept; :meth:`save` computes both. Each training row's own nearest distance is
    computed for the rows that are some fake's nearest neighbour and kept as well, so later
    comparisons get cheaper; none of this caching changes a result.

    Cost of a comparison: one pass of the fakes (and of the held-out reals) over the training
    set, plus one pass of the fakes' distinct nearest training rows not seen before. Each
    pass costs what a float32 GEMM of (M, D) by (D, N) costs.

    Args:
        train: (N, D) training embeddings, N >= 2, any float dtype. Kept on its device.
        n_cells: number of k-means cells for C_T; None: ``min(20, N)``. More cells detect
            local copying better but need more held-out reals and fakes per cell.
        self_rows: training rows whose leave-one-out nearest distance gives the copy
            threshold without held-out reals (all rows when N <= self_rows; else a seeded
            uniform sample).
        kmeans_rows: k-means is fitted on a seeded sample of this many training rows (all
            when N <= kmeans_rows).
        seed: seed of both samples and of k-means.
        chunk_size: training rows per block of the nearest search; None: 2048.

    Raises:
        TypeError: if ``train`` is not an array or tensor of numbers, or an option is not
            an int.
        ValueError: on a shape other than (N, D), N < 2, NaN/Inf rows, or an option out of
            range.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> train = rng.normal(size=(2000, 8))
        >>> ref = TrainReference(train, n_cells=5)
        >>> copies = train[:200] + 1e-3
        >>> honest = rng.normal(size=(200, 8))
        >>> heldout = rng.normal(size=(500, 8))
        >>> ref.compare(copies, heldout)["copy_fraction"]
        1.0
        >>> ref.compare(copies, heldout)["authenticity"]
        0.0
        >>> ref.compare(honest, heldout)["copy_fraction"] < 0.2
        True
    """

    def __init__(
        self,
        train: ArrayLike,
        *,
        n_cells: int | None = None,
        self_rows: int = _DEFAULT_SELF_ROWS,
        kmeans_rows: int = _DEFAULT_KMEANS_ROWS,
        seed: int = 0,
        chunk_size: int | None = None,
    ) -> None:
        t = _device_ok(as_features(train, "train"))
        if t.shape[0] < 2:
            raise ValueError(
                f"`train` needs at least 2 rows, got shape {tuple(t.shape)}: authenticity "
                "compares each fake with its nearest training sample's own nearest neighbour."
            )
        n = t.shape[0]
        if n_cells is None:
            cells = min(_DEFAULT_CELLS, n)
        else:
            cells = check_int(n_cells, "n_cells", minimum=1, maximum=n, hint="Or pass None.")
        self._setup(
            t.clone(),
            cells,
            check_int(self_rows, "self_rows", minimum=1),
            check_int(kmeans_rows, "kmeans_rows", minimum=cells, hint="(at least n_cells)"),
            check_int(seed, "seed"),
            _check_chunk(chunk_size),
        )

    def _setup(
        self, train: Tensor, n_cells: int, self_rows: int, kmeans_rows: int, seed: int, chunk: int
    ) -> None:
        self._train = train
        self._n_cells, self._self_rows = n_cells, self_rows
        self._kmeans_rows, self._seed, self._chunk = kmeans_rows, seed, chunk
        self._frame = _train_frame(train, chunk, cache=True)
        n = train.shape[0]
        self._sample_rows = self._sample(n, self_rows, seed)
        # Each row's distance to its nearest other training row; NaN until computed.
        self._self_distance = torch.full((n,), math.nan, dtype=torch.float64, device=train.device)
        self._centroids: Tensor | None = None
        self._fingerprint: str | None = None

    @staticmethod
    def _sample(n: int, size: int, seed: int) -> Tensor:
        if n <= size:
            return torch.arange(n)
        gen = torch.Generator().manual_seed(seed)
        return torch.randperm(n, generator=gen)[:size].sort().values

    # --- properties ------------------------------------------------------------------------

    @property
    def num_train(self) -> int:
        """Number of training rows N."""
        return int(self._train.shape[0])

    @property
    def width(self) -> int:
        """Number of features D."""
        return int(self._train.shape[1])

    @property
    def n_cells(self) -> int:
        """Number of k-means cells of the C_T test."""
        return self._n_cells

    @property
    def train(self) -> Tensor:
        """The (N, D) training embeddings (the reference's own copy; do not modify)."""
        return self._train

    @property
    def fingerprint(self) -> str:
        """SHA-256 (hex) of the training set's shape, dtype and bytes."""
        if self._fingerprint is None:
            cpu = self._train.detach().cpu().contiguous()
            raw = cpu.view(torch.int16) if cpu.dtype == torch.bfloat16 else cpu
            digest = hashlib.sha256(f"{tuple(cpu.shape)}|{cpu.dtype}|".encode())
            digest.update(np.ascontiguousarray(raw.numpy()).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"TrainReference(num_train={self.num_train}, width={self.width}, "
            f"n_cells={self._n_cells}, dtype={self._train.dtype})"
        )

    # --- fitted parts, computed when first needed ------------------------------------------

    def self_distances(self, rows: Tensor) -> Tensor:
        """Distance of each given training row to its nearest other training row.

        Exact duplicates count as neighbours at distance 0. Computed once per row and kept.

        Args:
            rows: (R,) int64 training row indices.

        Returns:
            (R,) float64 distances.
        """
        rows = rows.to(self._train.device)
        known = self._self_distance
        todo = torch.unique(rows[torch.isnan(known[rows])])
        if todo.numel():
            queries = self._train.index_select(0, todo)
            _, dist = _nearest(queries, self._train, self._frame, todo, self._chunk)
            known[todo] = dist
        return known[rows]

    def centroids(self) -> Tensor:
        """(K, D) float64 k-means centroids of the training set (fitted on first call)."""
        if self._centroids is None:
            from sklearn.cluster import KMeans

            rows = self._sample(self.num_train, self._kmeans_rows, self._seed)
            sample = self._train.index_select(0, rows.to(self._train.device))
            data = sample.detach().cpu().to(torch.float64).numpy()
            km = KMeans(n_clusters=self._n_cells, n_init=3, random_state=self._seed).fit(data)
            self._centroids = torch.from_numpy(km.cluster_centers_).to(self._train.device)
        return self._centroids

    def cells(self, x: Tensor) -> Tensor:
        """(R,) int64 cell (nearest centroid, float64, lowest index on ties) of each row."""
        centroids = self.centroids()
        out = torch.empty(x.shape[0], dtype=torch.int64, device=x.device)
        step = max(1, (1 << 21) // (centroids.numel() or 1))  # 16 MiB of differences
        for start in range(0, x.shape[0], step):
            block = x[start : start + step].to(torch.float64)
            d = (block.unsqueeze(1) - centroids.unsqueeze(0)).square().sum(dim=2)
            out[start : start + step] = d.argmin(dim=1)
        return out

    # --- comparisons -----------------------------------------------------------------------

    def compare(
        self,
        fake: ArrayLike,
        heldout: ArrayLike | None = None,
        *,
        alpha: float = 0.05,
        min_cell_fakes: int = 20,
    ) -> dict[str, float]:
        """Authenticity, C_T and copy fraction of a fake set; see :func:`compute_memorization`.

        Returns:
            ``{"authenticity", "ct_score", "copy_fraction"}`` as Python floats.
        """
        return self.compare_details(
            fake, heldout, alpha=alpha, min_cell_fakes=min_cell_fakes
        ).as_dict()

    def compare_details(
        self,
        fake: ArrayLike,
        heldout: ArrayLike | None = None,
        *,
        alpha: float = 0.05,
        min_cell_fakes: int = 20,
    ) -> MemorizationResult:
        """:meth:`compare` with the per-sample results behind the numbers.

        See :func:`compute_memorization_details`.
        """
        f = _check_width(as_features(fake, "fake"), self._train, "fake")
        h = None
        if heldout is not None:
            h = _check_width(as_features(heldout, "heldout"), self._train, "heldout")
        a = _check_alpha(alpha)
        min_fakes = check_int(min_cell_fakes, "min_cell_fakes", minimum=1)

        index, dist = _nearest(f, self._train, self._frame, chunk=self._chunk)
        own = self.self_distances(index)
        authentic = dist > own
        h_index = h_dist = None
        if h is not None:
            h_index, h_dist = _nearest(h, self._train, self._frame, chunk=self._chunk)
            pool = h_dist
        else:
            pool = self.self_distances(self._sample_rows)
        threshold = float(np.quantile(pool.cpu().numpy(), a))
        copied = dist < threshold
        k = self._n_cells
        zeros = torch.zeros(k, dtype=torch.int64)
        cell_z = torch.full((k,), math.nan, dtype=torch.float64)
        used = torch.zeros(k, dtype=torch.bool)
        if h is None or h_dist is None:
            warnings.warn(
                "ct_score is NaN: the C_T test needs held-out real samples (pass "
                "`heldout=`, e.g. validation reals never used in training).",
                UserWarning,
                stacklevel=3,
            )
            ct = math.nan
            fake_cell = torch.full_like(index, -1)
            fake_count, held_count = zeros, zeros.clone()
        else:
            fake_cell = self.cells(f)
            held_cell = self.cells(h)
            ct, cell_z, used, fake_count, held_count = _ct_statistic(
                dist, fake_cell, h_dist, held_cell, k, min_fakes
            )
        return MemorizationResult(
            authenticity=float(authentic.to(torch.float64).mean()),
            ct_score=ct,
            copy_fraction=float(copied.to(torch.float64).mean()),
            alpha=a,
            copy_threshold=threshold,
            nearest_train_index=index,
            nearest_train_distance=dist,
            train_self_distance=own,
            authentic=authentic,
            copied=copied,
            fake_cell=fake_cell,
            heldout_nearest_train_index=h_index,
            heldout_nearest_train_distance=h_dist,
            cell_z=cell_z,
            cell_fake_count=fake_count,
            cell_heldout_count=held_count,
            cell_used=used,
        )

    # --- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fitted reference: ``.pt``/``.pth`` as torch, anything else as npz.

        Fits what is not fitted yet first (the sample's leave-one-out distances and the
        k-means cells), so a loaded reference computes nothing but the comparisons. Torch
        files load with ``torch.load(weights_only=True)``; npz with ``allow_pickle=False``.

        Args:
            path: destination; written as given (no suffix is added).
        """
        self.self_distances(self._sample_rows)
        centroids = self.centroids().detach().cpu()
        train = self._train.detach().cpu()
        dtype = str(train.dtype).removeprefix("torch.")
        payload: dict[str, Any] = {
            "format": _FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "dtype": dtype,
            "fingerprint": self.fingerprint,
            "n_cells": self._n_cells,
            "self_rows": self._self_rows,
            "kmeans_rows": self._kmeans_rows,
            "seed": self._seed,
        }
        tensors = {
            "sample_rows": self._sample_rows.cpu(),
            "self_distance": self._self_distance.detach().cpu(),
            "centroids": centroids,
        }
        if str(path).endswith((".pt", ".pth")):
            torch.save({**payload, **tensors, "train": train}, path)
            return
        arrays = {key: np.asarray(value) for key, value in payload.items()}
        arrays.update({key: value.numpy() for key, value in tensors.items()})
        arrays["train"] = (train.view(torch.int16) if dtype == "bfloat16" else train).numpy()
        with open(path, "wb") as fh:
            np.savez(fh, allow_pickle=False, **arrays)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        *,
        device: torch.device | str | None = None,
        chunk_size: int | None = None,
    ) -> TrainReference:
        """Read a reference written by :meth:`save`.

        Args:
            path: an npz or torch file written by :meth:`save`.
            device: where to put the training set (default: the CPU).
            chunk_size: training rows per block of the nearest search; None: 2048.

        Returns:
            The reference, ready to :meth:`compare`.

        Raises:
            ValueError: if the file is not a saved TrainReference, was written in another
                format version, or its training set does not match its fingerprint.
        """
        name = os.fspath(path)
        fix = "Create one with `TrainReference(train).save(path)`."
        try:
            with zipfile.ZipFile(name) as archive:
                is_torch = any(entry.endswith("data.pkl") for entry in archive.namelist())
        except (zipfile.BadZipFile, FileNotFoundError, IsADirectoryError) as exc:
            raise ValueError(
                f"{name!r} is not a saved TrainReference ({type(exc).__name__}). {fix}"
            ) from None
        if is_torch:
            fields = dict(torch.load(name, map_location="cpu", weights_only=True))
        else:
            with np.load(name, allow_pickle=False) as data:
                fields = {key: data[key] for key in data.files}
        missing = [key for key in _FILE_KEYS if key not in fields]
        if missing or str(fields["format"]) != _FORMAT_NAME:
            raise ValueError(
                f"{name!r} is not a saved TrainReference (missing "
                f"{', '.join(missing) or 'its format tag'}). {fix}"
            )
        version = int(fields["format_version"])
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{name!r} was written in TrainReference format version {version}; this "
                f"version reads version {FORMAT_VERSION}. Fit and save it again."
            )

        def tensor(key: str) -> Tensor:
            value = fields[key]
            return (
                torch.from_numpy(np.ascontiguousarray(value))
                if isinstance(value, np.ndarray)
                else value
            )

        dtype = getattr(torch, str(fields["dtype"]))
        train = tensor("train")
        if dtype == torch.bfloat16 and train.dtype == torch.int16:
            train = train.view(torch.bfloat16)
        train = train.to(dtype).contiguous()
        obj = cls.__new__(cls)
        obj._fingerprint = None
        obj._train = train
        if obj.fingerprint != str(fields["fingerprint"]):
            raise ValueError(
                f"{name!r} is damaged: its training set does not match the fingerprint "
                "stored with it. Fit and save the reference again."
            )
        if device is not None:
            train = train.to(device)
        obj._setup(
            train,
            int(fields["n_cells"]),
            int(fields["self_rows"]),
            int(fields["kmeans_rows"]),
            int(fields["seed"]),
            _check_chunk(chunk_size),
        )
        obj._fingerprint = str(fields["fingerprint"])
        obj._sample_rows = tensor("sample_rows").to(torch.int64)
        obj._self_distance = tensor("self_distance").to(torch.float64).to(train.device)
        obj._centroids = tensor("centroids").to(torch.float64).to(train.device)
        return obj


def _ct_statistic(
    dist: Tensor, fake_cell: Tensor, h_dist: Tensor, held_cell: Tensor, k: int, min_fakes: int
) -> tuple[float, Tensor, Tensor, Tensor, Tensor]:
    """C_T from the nearest-train distances and cells of the fakes and the held-out reals.

    Returns:
        ``(ct, cell_z (K,), cell_used (K,), fake_count (K,), heldout_count (K,))``.
    """
    fc = fake_cell.cpu().numpy()
    hc = held_cell.cpu().numpy()
    fd = dist.cpu().numpy()
    hd = h_dist.cpu().numpy()
    fake_count = np.bincount(fc, minlength=k)
    held_count = np.bincount(hc, minlength=k)
    used = (fake_count >= min_fakes) & (held_count >= 1)
    z = np.full(k, math.nan)
    for cell in np.flatnonzero(used):
        z[cell] = _mann_whitney_z(fd[fc == cell], hd[hc == cell])
    weights = held_count[used] / len(hd)
    if not used.any():
        warnings.warn(
            f"ct_score is NaN: no k-means cell holds at least min_cell_fakes={min_fakes} fakes "
            f"and a held-out sample ({len(fd)} fakes over {k} cells). Pass more fakes, fewer "
            "cells (`n_cells=`) or a smaller `min_cell_fakes`.",
            UserWarning,
            stacklevel=4,
        )
        ct = math.nan
    else:
        ct = float(np.dot(weights, z[used]) / weights.sum())
    return (
        ct,
        torch.from_numpy(z),
        torch.from_numpy(used),
        torch.from_numpy(fake_count.astype(np.int64)),
        torch.from_numpy(held_count.astype(np.int64)),
    )


# --- functional faces ---------------------------------------------------------------------


def compute_memorization_details(
    train: ArrayLike,
    fake: ArrayLike,
    heldout: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    n_cells: int | None = None,
    min_cell_fakes: int = 20,
    self_rows: int = _DEFAULT_SELF_ROWS,
    seed: int = 0,
    chunk_size: int | None = None,
) -> MemorizationResult:
    """:func:`compute_memorization` with the per-sample results behind the numbers.

    Per fake: its nearest training row and distance, that row's own nearest-neighbour
    distance, whether the fake is authentic and whether it counts as a copy, and its cell;
    per held-out real: its nearest training row and distance; per cell: Z, counts, used.

    Returns:
        A :class:`MemorizationResult`; tensors on ``train``'s device (cell data on the CPU).
    """
    reference = TrainReference(
        train, n_cells=n_cells, self_rows=self_rows, seed=seed, chunk_size=chunk_size
    )
    return reference.compare_details(fake, heldout, alpha=alpha, min_cell_fakes=min_cell_fakes)


def compute_memorization(
    train: ArrayLike,
    fake: ArrayLike,
    heldout: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    n_cells: int | None = None,
    min_cell_fakes: int = 20,
    self_rows: int = _DEFAULT_SELF_ROWS,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Does the generator copy its training data? Authenticity, C_T and copy fraction.

    With training set T (N rows), fakes F (M rows), held-out reals H (never trained on),
    Euclidean distance d, ``x*(q)`` the nearest training sample of q (lowest index on ties)
    and ``rho(x) = min over x' in T, x' != x of d(x, x')`` (duplicates count, at 0):

    - ``authenticity = mean over f in F of 1[ d(f, x*(f)) > rho(x*(f)) ]`` (Alaa et al.,
      2022; dgm-eval's AuthPct / 100). 1: every fake is farther from the training set than
      its nearest training sample's own neighbour; low values mean near-copies.
    - ``ct_score``: C_T of Meehan et al. (2020). K cells by k-means on T. For each cell c
      holding at least ``min_cell_fakes`` fakes and one held-out real, the Mann-Whitney U
      of ``{d(f, T) : f in F_c}`` against ``{d(h, T) : h in H_c}``, Z-scored under the null
      (``(U - m n / 2 + 1/2) / sqrt(m n (m + n + 1) / 12)``); ``ct_score`` is the average of
      those Z weighted by each cell's share ``|H_c| / |H|``. About 0 (spread about
      ``1 / sqrt(K)``) for an honest generator, strongly negative for copying, positive for
      underfitting. NaN (with a warning) without ``heldout`` or without a usable cell.
      Distances are to the whole training set (the authors' code uses the cell's training
      samples only; the two agree away from cell borders).
    - ``copy_fraction = mean over f of 1[ d(f, T) < q_alpha ]``, q_alpha the ``alpha``-quantile
      (NumPy's linear interpolation) of ``{d(h, T) : h in H}``, or without ``heldout`` of
      ``{rho(x)}`` over ``self_rows`` sampled training rows. About ``alpha`` when honest.

    Args:
        train: (N, D) training embeddings, N >= 2.
        fake: (M, D) generated embeddings.
        heldout: (H, D) real embeddings never trained on (e.g. validation reals), or None.
        alpha: quantile level of the copy threshold, in (0, 1).
        n_cells: k-means cells; None: ``min(20, N)``.
        min_cell_fakes: fakes a cell needs to enter C_T (Meehan et al.'s tau = 20 / M).
        self_rows: training rows sampled for the threshold without ``heldout``.
        seed: seed of the samples and of k-means.
        chunk_size: training rows per block of the nearest search; None: 2048.

    Returns:
        ``{"authenticity", "ct_score", "copy_fraction"}`` as Python floats.

    Raises:
        TypeError: inputs that are not arrays/tensors of numbers; options of the wrong type.
        ValueError: shapes other than (N, D), different D, N < 2, NaN/Inf rows, ``alpha``
            outside (0, 1), options out of range.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> train = rng.normal(size=(3000, 4))
        >>> out = compute_memorization(train, train[:300] + 1e-4, rng.normal(size=(600, 4)))
        >>> out["authenticity"], out["copy_fraction"], out["ct_score"] < -5
        (0.0, 1.0, True)
    """
    return compute_memorization_details(
        train,
        fake,
        heldout,
        alpha=alpha,
        n_cells=n_cells,
        min_cell_fakes=min_cell_fakes,
        self_rows=self_rows,
        seed=seed,
        chunk_size=chunk_size,
    ).as_dict()
