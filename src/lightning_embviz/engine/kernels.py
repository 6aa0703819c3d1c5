"""Kernel metrics on the full sets: the Vendi score and the kernel distance (KID statistic).

Exact in the sense of their definitions (no subsets), chunked on the tensors' device, never
an (N, N) matrix; re-exported by :mod:`lightning_embviz.suite` and
:mod:`lightning_embviz.metrics`.

- :func:`vendi_score`: exp of the order-q entropy of the eigenvalues of K/n, K the cosine
  similarity matrix, through the (D, D) second moment of the normalised rows (the (n, n)
  Gram matrix when n < D); :func:`vendi_score_distributed`: the same bits under DDP, the
  moment's row blocks shared by the ranks and added up by one all-reduce.
- :func:`kernel_distance`: the KID statistic, unbiased MMD^2 with the cubic polynomial kernel
  on the full sets, with a delete-one jackknife standard error.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, as_tensor
from lightning_embviz.engine.frechet import _gram_lower, _one_thread
from lightning_embviz.engine.inputs import (
    check_chunk,
    engine_device,
    width_pair,
)
from lightning_embviz.engine.reference import RealReference

__all__ = [
    "kernel_distance",
    "vendi_score",
    "vendi_score_distributed",
    "vendi_scores_distributed",
]

_ROWS = 2048  # rows converted to float64 at a time (bounded temporaries)
_KERNEL_BLOCK = 1024  # rows per block of the kernel sums: 8 MiB float64 tiles


# --- Vendi score ---------------------------------------------------------------------------

_LIMB = 2.0**32  # the fixed-point limbs of the second moment: 2^-32 and 2^-64 units
_LOW_MASK = (1 << 32) - 1


def _check_order(q: Any) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float, np.integer, np.floating)):
        raise TypeError(f"`q` must be a number >= 0 or math.inf, got {q!r}.")
    q = float(q)
    if math.isnan(q) or q < 0:
        raise ValueError(f"`q` must be >= 0 (0, 1, 2, ... or math.inf), got {q!r}.")
    return q


def _entropy_exp(lam: Tensor, q: float) -> float:
    """The exponential of the order-q (Rényi) entropy of a probability vector (zeros allowed)."""
    p = lam[lam > 0]
    if q == 0.0:
        return float(p.numel())
    if math.isinf(q):
        return float(1.0 / p.max())
    if q == 1.0:
        return float(torch.exp(-(p * torch.log(p)).sum()))
    return float(torch.exp(torch.log((p**q).sum()) / (1.0 - q)))


def _vendi_rows(x: ArrayLike, name: str, chunk: int, *, allow_empty: bool = False) -> Tensor:
    """The checked (n, D) rows of one set: finite (``as_features``) and of non-zero norm.

    With ``allow_empty`` a (0, D) set passes (a rank without rows of its own).
    """
    if allow_empty:
        raw = as_tensor(x, name)
        if raw.ndim == 2 and raw.shape[0] == 0 and raw.shape[1] > 0:
            return engine_device(raw)
    t = engine_device(as_features(x, name))
    zero = 0
    for start in range(0, t.shape[0], chunk):
        norms = torch.linalg.vector_norm(t[start : start + chunk].to(torch.float64), dim=1)
        zero += int((norms == 0).sum())
    if zero:
        raise ValueError(
            f"`{name}` has {zero} row(s) of zero norm out of {t.shape[0]}; the cosine kernel "
            "needs non-zero rows. Drop them first."
        )
    return t


def _unit_rows(t: Tensor) -> Tensor:
    """The rows of ``t`` in float64, each divided by its norm."""
    block = t.to(torch.float64)
    return block / torch.linalg.vector_norm(block, dim=1, keepdim=True)


def _add_limbs(total: Tensor, moment: Tensor) -> None:
    """Add a float64 matrix, overwritten, to the (2, ...) int64 fixed-point sum ``total``.

    The limbs are ``floor(v 2^32)`` and the next 32 bits. Every step is exact in float64
    (|v| <= the block's row count, far below 2^21) except the last floor, which drops what
    lies below 2^-64: sums of these integers are exact and do not depend on their order, so
    any split of the blocks over ranks adds up to the same bits.
    """
    moment.mul_(_LIMB)
    upper = torch.floor(moment)
    moment.sub_(upper).mul_(_LIMB).floor_()
    total[0].add_(upper.to(torch.int64))
    total[1].add_(moment.to(torch.int64))


def _from_limbs(limbs: Tensor) -> Tensor:
    """The float64 matrix of a (2, ...) int64 sum of :func:`_add_limbs` (carries first)."""
    upper = limbs[0] + (limbs[1] >> 32)
    lower = limbs[1] & _LOW_MASK
    return (upper.to(torch.float64) + lower.to(torch.float64) / _LIMB) / _LIMB


def _moment_limbs(t: Tensor, chunk: int, blocks: range) -> Tensor:
    """Sum of ``X_b'^T X_b'`` over the row blocks ``blocks`` (``chunk`` rows each), as limbs.

    ``X_b'`` are the normalised rows of block b (rows ``b * chunk`` to ``(b + 1) * chunk``);
    each block's (D, D) product is one float64 SYRK on the CPU (half a GEMM's flops, its bits
    independent of the thread count; the upper triangle stays 0) or one GEMM elsewhere,
    converted by :func:`_add_limbs` and added up exactly in int64. Only the lower triangle of
    the sum is read (:func:`_vendi_of`).
    """
    width = t.shape[1]
    total = torch.zeros((2, width, width), dtype=torch.int64, device=t.device)
    for b in blocks:
        block = _unit_rows(t[b * chunk : (b + 1) * chunk])
        if block.device.type == "cpu":  # the lower triangle only: the eigensolver reads it
            lower = torch.zeros(width, width, dtype=torch.float64)
            _gram_lower(block, lower)
            _add_limbs(total, lower)
        else:
            _add_limbs(total, block.T @ block)
    return total


def _gram(t: Tensor, chunk: int) -> Tensor:
    """The (n, n) float64 Gram matrix of the normalised rows (the route for n < D)."""
    rows = torch.cat([_unit_rows(t[s : s + chunk]) for s in range(0, t.shape[0], chunk)])
    return rows @ rows.T


def _vendi_of(matrix: Tensor, n: int, width: int, q: float) -> float:
    """Vendi score from ``X'^T X'`` (D, D) or ``X' X'^T`` (n, n): same non-zero spectrum.

    The eigensolver runs on one CPU thread, as the Fréchet distance's does: LAPACK rounds
    differently with each thread count, and one thread makes the bits the same for one
    process and for DDP or torchrun ranks whatever threads each has.
    """
    with _one_thread(matrix.device):
        lam = torch.linalg.eigvalsh(matrix, UPLO="L").clamp_min(0.0)
    lam = lam / lam.sum()
    lam[lam <= max(n, width) * torch.finfo(torch.float64).eps * lam.max()] = 0.0
    return _entropy_exp(lam, q)


def _num_blocks(n: int, chunk: int) -> int:
    return -(-n // chunk)


def vendi_score(x: ArrayLike, q: float = 1.0, *, chunk_size: int | None = None) -> float:
    """Vendi score of a set with the cosine-similarity kernel (Friedman & Dieng, 2023).

    With the rows normalised, ``x_i' = x_i / |x_i|``, the kernel ``K_ij = x_i' . x_j'`` and
    ``lambda`` the eigenvalues of ``K / n``::

        VS_q = exp(H_q(lambda)),  H_1 = -sum_i lambda_i log lambda_i,
        H_q = log(sum_i lambda_i^q) / (1 - q),  VS_0 = #{lambda_i > 0},  VS_inf = 1 / max lambda

    The non-zero eigenvalues of ``K / n = X' X'^T / n`` are those of the (D, D) second moment
    ``X'^T X' / n``: for n >= D that moment is accumulated over blocks of rows (O(n D^2),
    never (n, n)), each block's float64 product added up exactly in 64-bit fixed point
    (units of 2^-64), so that the sum does not depend on how the blocks are split: under
    DDP, :func:`vendi_score_distributed` gives these very bits with one all-reduce. For
    n < D the (n, n) Gram matrix ``X' X'^T`` is used instead (O(n^2 D), same non-zero
    eigenvalues, never (D, D)). Identical rows give 1; n orthogonal rows give n; the score
    is the effective number of distinct directions. Eigenvalues at or below
    ``max(n, D) * eps * max(lambda)`` are rounding noise and count as 0 (this matters for
    q < 1 only).

    Args:
        x: (n, D) array or tensor, rows of non-zero norm.
        q: order of the entropy, >= 0; 1 (Shannon) by default, ``math.inf`` allowed.
        chunk_size: rows per block; None picks 2048 (the value depends on the blocks only
            through the float64 rounding of each block's product, ~1e-16 relative).

    Returns:
        The Vendi score, a float in [1, min(n, D)].

    Raises:
        TypeError: if ``q`` is not a number.
        ValueError: if ``q`` < 0 or NaN, on a shape other than (n, D), NaN/Inf values, or
            rows of zero norm (the cosine is undefined there).

    Example::

        >>> import numpy as np
        >>> round(vendi_score(np.eye(4)), 6), round(vendi_score(np.ones((5, 3))), 6)
        (4.0, 1.0)
    """
    order = _check_order(q)
    chunk = check_chunk(chunk_size) or _ROWS
    return _vendi_local(_vendi_rows(x, "x", chunk), order, chunk)


def _vendi_local(t: Tensor, q: float, chunk: int) -> float:
    """:func:`vendi_score` of checked rows in one process."""
    n, width = t.shape
    if n < width:
        return _vendi_of(_gram(t, chunk), n, width, q)
    moment = _from_limbs(_moment_limbs(t, chunk, range(_num_blocks(n, chunk))))
    return _vendi_of(moment, n, width, q)


def vendi_score_distributed(
    x: ArrayLike,
    q: float = 1.0,
    *,
    group: Any = None,
    chunk_size: int | None = None,
    same_rows: bool = True,
) -> float:
    """:func:`vendi_score` with the (D, D) second moment shared by the ranks: one all-reduce.

    Every rank of ``group`` calls this. With ``same_rows=True`` (the callback's case: every
    rank holds the same gathered set) rank r accumulates the row blocks of its share
    (:func:`~lightning_embviz.distributed.row_share` of the blocks) and one all-reduce adds
    the exact fixed-point sums: every rank gets a score **bit-identical** to
    ``vendi_score(x, q, chunk_size=chunk_size)``, on any number of ranks (given a
    deterministic GEMM for equal shapes, as MKL and cuBLAS are). For n < D every rank
    computes the (n, n) Gram route itself (no all-reduce).

    With ``same_rows=False`` each rank passes its own rows (any count, zero allowed): the
    score of their union, rank 0's rows first, from each rank's moment and row count in
    the same all-reduce; equal on every rank, and to ``vendi_score`` of the concatenation up
    to the rounding of the per-block products (bit-identical when every rank's count is a
    multiple of the block size). Always the (D, D) route.

    Before each collective the ranks agree on failure, as the distributed PRDC does: an
    input error on every rank is raised as it is on every rank, a failure on some ranks
    (out of memory, different sets) raises the same
    :class:`~lightning_embviz.distributed.RankFailedError` (or ``ValueError``) everywhere;
    no rank is left waiting. Without an initialised process group (or with one rank) it is
    ``vendi_score(x, q, chunk_size=chunk_size)``.

    Args:
        x: (n, D) array or tensor, rows of non-zero norm.
        q: order of the entropy (see :func:`vendi_score`).
        group: the ``torch.distributed`` process group (None: the default one).
        chunk_size: rows per block; None picks 2048.
        same_rows: every rank passes the same rows (True) or its own (False).

    Returns:
        The Vendi score, the same float on every rank.

    Raises:
        TypeError: if ``q`` is not a number.
        ValueError: on the input errors of :func:`vendi_score`, or (on every rank) when
            ``same_rows`` and the ranks hold different sets, or the widths differ.
        RankFailedError: when some ranks failed and others did not.
    """
    return vendi_scores_distributed(
        [x], q, group=group, chunk_size=chunk_size, same_rows=same_rows
    )[0]


def vendi_scores_distributed(
    sets: Sequence[ArrayLike | None],
    q: float = 1.0,
    *,
    group: Any = None,
    chunk_size: int | None = None,
    same_rows: bool = True,
) -> list[float]:
    """:func:`vendi_score_distributed` of several sets with one all-reduce for all of them.

    Every rank must pass the same number of sets (the callback: the fakes and the reals). A
    ``None`` set stands for "nothing to compute on this rank": it fails the input check
    (``ValueError`` everywhere if every rank passes None, else ``RankFailedError``), so
    ranks that disagree about computing still meet in the same collectives.

    Args:
        sets: (n_i, D_i) arrays or tensors (or None), in the same order on every rank.
        q: order of the entropy.
        group: the process group (None: the default one).
        chunk_size: rows per block; None picks 2048.
        same_rows: see :func:`vendi_score_distributed`.

    Returns:
        One Vendi score per set, the same on every rank.

    Raises:
        See :func:`vendi_score_distributed`.
    """
    from lightning_embviz.engine.distributed import _Group, _on_every_rank, row_share

    comm = _Group(group)
    task = "the shared Vendi score"

    def prepare() -> tuple[float, int, list[Tensor]]:
        order = _check_order(q)
        chunk = check_chunk(chunk_size) or _ROWS
        rows = []
        for i, x in enumerate(sets):
            name = "x" if len(sets) == 1 else f"sets[{i}]"
            if x is None:
                raise ValueError(f"`{name}` is None: no rows to compute the Vendi score of.")
            rows.append(_vendi_rows(x, name, chunk, allow_empty=not same_rows))
        return order, chunk, rows

    if not sets:
        raise ValueError("`sets` is empty; give at least one set of rows.")
    if comm.world == 1:
        order, chunk, rows = prepare()
        for i, t in enumerate(rows):
            if t.shape[0] == 0:
                name = "x" if len(sets) == 1 else f"sets[{i}]"
                raise ValueError(f"No rank holds a row of `{name}`; the Vendi score needs rows.")
        return [_vendi_local(t, order, chunk) for t in rows]
    order, chunk, rows = _on_every_rank(comm, "checking its inputs", prepare, task)
    counts = _agree_on_sets(comm, rows, same_rows, task)
    gram = [same_rows and n < int(t.shape[1]) for n, t in zip(counts, rows)]

    def moments_share() -> Tensor:
        parts = [torch.zeros(0, dtype=torch.int64, device=rows[0].device)]
        for t, by_gram in zip(rows, gram):
            if by_gram:
                continue
            blocks = _num_blocks(int(t.shape[0]), chunk)
            share = row_share(blocks, comm.rank, comm.world) if same_rows else (0, blocks)
            parts.append(_moment_limbs(t, chunk, range(*share)).reshape(-1))
        return torch.cat(parts)

    local = _on_every_rank(comm, "computing its share of the second moments", moments_share, task)
    if local.numel():
        import torch.distributed as dist

        shared = local.to(comm.device)
        dist.all_reduce(shared, group=comm.group)  # int64 sums: exact, in any order
        local = shared.to(local.device)
    out, offset = [], 0
    for t, n, by_gram in zip(rows, counts, gram):
        width = int(t.shape[1])
        if by_gram:
            out.append(_vendi_of(_gram(t, chunk), n, width, order))
            continue
        limbs = local[offset : offset + 2 * width * width].view(2, width, width)
        offset += 2 * width * width
        out.append(_vendi_of(_from_limbs(limbs), n, width, order))
    return out


def _agree_on_sets(comm: Any, rows: list[Tensor], same_rows: bool, task: str) -> list[int]:
    """One all-gather of each set's (rows, width, dtype, hash); the total row count per set.

    Raises the same ``ValueError`` on every rank when ``same_rows`` and the ranks hold
    different sets, or (own rows) when the widths differ or no rank holds a row.
    """
    from lightning_embviz.engine.distributed import _on_every_rank, _set_signature

    def describe() -> Tensor:
        meta = [v for t in rows for v in _set_signature(t, values=same_rows)]
        return torch.tensor(meta, dtype=torch.int64)

    parts = comm.all_gather(_on_every_rank(comm, "hashing its inputs", describe, task))
    counts = []
    for i in range(len(rows)):
        seen = [tuple(int(v) for v in p[4 * i : 4 * i + 4]) for p in parts]
        name = "x" if len(rows) == 1 else f"sets[{i}]"
        shapes = ", ".join(f"rank {r}: {s[0]}x{s[1]}" for r, s in enumerate(seen))
        if same_rows and len(set(seen)) > 1:
            raise ValueError(
                f"The shared Vendi score with same_rows=True needs the same `{name}` on every "
                f"rank, but the ranks hold different ones ({shapes}; or the same shape with "
                "other values, dtype or row order). Gather the rows first, or pass "
                "same_rows=False to score the union of each rank's own rows."
            )
        if len({s[1] for s in seen}) > 1:
            raise ValueError(
                f"The ranks' `{name}` have different widths ({shapes}); the Vendi score of "
                "their union needs one width D."
            )
        total = seen[0][0] if same_rows else sum(s[0] for s in seen)
        if total == 0:
            raise ValueError(f"No rank holds a row of `{name}`; the Vendi score needs rows.")
        counts.append(total)
    return counts


# --- Kernel distance (KID statistic) -------------------------------------------------------


def _cubic_block(left: Tensor, right: Tensor, width: int) -> Tensor:
    """``(left @ right.T / D + 1)^3`` for two float64 blocks of rows (the KID kernel)."""
    one = torch.ones((), dtype=torch.float64, device=left.device)
    return torch.addmm(one, left, right.T, alpha=1.0 / width).pow_(3)


def _kernel_sums(
    a: Tensor, b: Tensor | None, width: int, chunk: int
) -> tuple[Tensor, Tensor | None]:
    """Row sums of ``k(a_i, b_j) = (a_i . b_j / D + 1)^3`` in float64, block by block.

    With ``b`` None: the symmetric sums ``sum_{j != i} k(a_i, a_j)`` (blocks on and above the
    diagonal only) and None. Otherwise ``(row sums over b, column sums over a)``.
    """
    n = a.shape[0]
    rows = torch.zeros(n, dtype=torch.float64, device=a.device)
    if b is None:
        for i0 in range(0, n, chunk):
            left = a[i0 : i0 + chunk].to(torch.float64)
            for j0 in range(i0, n, chunk):
                right = left if j0 == i0 else a[j0 : j0 + chunk].to(torch.float64)
                k = _cubic_block(left, right, width)
                if j0 == i0:
                    k.fill_diagonal_(0.0)
                    rows[i0 : i0 + chunk] += k.sum(dim=1)
                else:
                    rows[i0 : i0 + chunk] += k.sum(dim=1)
                    rows[j0 : j0 + chunk] += k.sum(dim=0)
        return rows, None
    m = b.shape[0]
    cols = torch.zeros(m, dtype=torch.float64, device=a.device)
    for i0 in range(0, n, chunk):
        left = a[i0 : i0 + chunk].to(torch.float64)
        for j0 in range(0, m, chunk):
            right = b[j0 : j0 + chunk].to(torch.float64)
            k = _cubic_block(left, right, width)
            rows[i0 : i0 + chunk] += k.sum(dim=1)
            cols[j0 : j0 + chunk] += k.sum(dim=0)
    return rows, cols


def kernel_distance(
    real: ArrayLike, fake: ArrayLike, *, chunk_size: int | None = None
) -> dict[str, float]:
    """Kernel distance: the KID statistic on the full sets, with its standard error.

    The unbiased estimate of MMD^2 (Bińkowski et al., 2018) with the cubic polynomial kernel
    ``k(a, b) = (a . b / D + 1)^3`` that torch-fidelity and torchmetrics use for KID, on all
    pairs instead of averaged subsets; with real rows x_1..x_n and fake rows y_1..y_m::

        KD = 1/(n(n-1)) sum_{i != j} k(x_i, x_j) + 1/(m(m-1)) sum_{i != j} k(y_i, y_j)
             - 2/(n m) sum_{i, j} k(x_i, y_j)

    Kernel values and sums in float64, in blocks of rows (memory O(block^2), the symmetric
    sums over blocks on and above the diagonal). An unbiased estimator of a quantity that is
    0 for equal distributions is negative about half the time when they are equal: a small
    negative value is legitimate, not an error. The standard error is the delete-one
    jackknife over both sets (Arvesen, 1969), from the kernel row sums (no extra pass)::

        se^2 = (n-1)/n sum_i (KD_{-x_i} - mean)^2 + (m-1)/m sum_j (KD_{-y_j} - mean)^2

    which by the Efron-Stein inequality errs on the large side, also for equal distributions
    where the first-order (delta-method) variance vanishes.

    Args:
        real: (n, D) array or tensor, n >= 2 (3 for the standard error).
        fake: (m, D) array or tensor, m >= 2, same D.
        chunk_size: rows per block; None picks 1024.

    Returns:
        ``{"kd": float, "kd_se": float}`` (``kd_se`` is NaN with fewer than 3 rows in a set).

    Raises:
        ValueError: on shapes other than (N, D), different widths, fewer than 2 rows, or
            NaN/Inf values.
    """
    return kernel_distance_kept(real, fake, chunk_size=chunk_size)


def kernel_distance_kept(
    real: ArrayLike,
    fake: ArrayLike,
    *,
    chunk_size: int | None = None,
    reference: RealReference | None = None,
) -> dict[str, float]:
    """:func:`kernel_distance`, keeping the reals' own kernel sums with their fitted reference.

    Args:
        real: (n, D) real rows, n >= 2.
        fake: (m, D) fake rows, m >= 2, same D.
        chunk_size: rows per block; None picks 1024.
        reference: The fitted reference of exactly these real rows (the callback's), or None
            to keep nothing: the real-real sums are kept with it, once per block size.

    Returns:
        ``{"kd": float, "kd_se": float}``, equal to :func:`kernel_distance`.
    """
    x, y = width_pair(real, fake, 2, "for the unbiased kernel distance")
    chunk = check_chunk(chunk_size) or _KERNEL_BLOCK
    n, m, width = x.shape[0], y.shape[0], x.shape[1]
    if reference is None:
        r_xx, _ = _kernel_sums(x, None, width, chunk)
    else:
        key = ("kd_real_sums", chunk)
        r_xx = reference.kept(key, lambda: _kernel_sums(x, None, width, chunk)[0])
    r_yy, _ = _kernel_sums(y, None, width, chunk)
    r_xy, c_xy = _kernel_sums(x, y, width, chunk)
    assert c_xy is not None
    s_xx, s_yy, s_xy = float(r_xx.sum()), float(r_yy.sum()), float(r_xy.sum())
    kd = s_xx / (n * (n - 1)) + s_yy / (m * (m - 1)) - 2.0 * s_xy / (n * m)
    if n < 3 or m < 3:
        return {"kd": kd, "kd_se": math.nan}
    # KD with one real row left out: its row leaves the XX sum twice and the XY sum once.
    drop_x = (s_xx - 2.0 * r_xx) / ((n - 1) * (n - 2)) + s_yy / (m * (m - 1))
    drop_x = drop_x - 2.0 * (s_xy - r_xy) / ((n - 1) * m)
    drop_y = s_xx / (n * (n - 1)) + (s_yy - 2.0 * r_yy) / ((m - 1) * (m - 2))
    drop_y = drop_y - 2.0 * (s_xy - c_xy) / (n * (m - 1))
    var = (n - 1) / n * float(((drop_x - drop_x.mean()) ** 2).sum())
    var += (m - 1) / m * float(((drop_y - drop_y.mean()) ** 2).sum())
    return {"kd": kd, "kd_se": math.sqrt(var)}
