"""Kernel metrics on the full sets: the Vendi score and the kernel distance (KID statistic).

Exact in the sense of their definitions (no subsets), chunked on the tensors' device, never
an (N, N) matrix; re-exported by :mod:`lightning_embviz.suite` and
:mod:`lightning_embviz.metrics`.

- :func:`vendi_score`: exp of the order-q entropy of the eigenvalues of K/n, K the cosine
  similarity matrix, through the (D, D) second moment of the normalised rows.
- :func:`kernel_distance`: the KID statistic, unbiased MMD^2 with the cubic polynomial kernel
  on the full sets, with a delete-one jackknife standard error.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features
from lightning_embviz.engine.inputs import (
    check_chunk,
    engine_device,
    width_pair,
)

__all__ = ["kernel_distance", "vendi_score"]

_ROWS = 2048  # rows converted to float64 at a time (bounded temporaries)
_KERNEL_BLOCK = 1024  # rows per block of the kernel sums: 8 MiB float64 tiles


# --- Vendi score ---------------------------------------------------------------------------


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


def vendi_score(x: ArrayLike, q: float = 1.0, *, chunk_size: int | None = None) -> float:
    """Vendi score of a set with the cosine-similarity kernel (Friedman & Dieng, 2023).

    With the rows normalised, ``x_i' = x_i / |x_i|``, the kernel ``K_ij = x_i' . x_j'`` and
    ``lambda`` the eigenvalues of ``K / n``::

        VS_q = exp(H_q(lambda)),  H_1 = -sum_i lambda_i log lambda_i,
        H_q = log(sum_i lambda_i^q) / (1 - q),  VS_0 = #{lambda_i > 0},  VS_inf = 1 / max lambda

    The non-zero eigenvalues of ``K / n = X' X'^T / n`` are those of the (D, D) second moment
    ``X'^T X' / n``, accumulated over row blocks in float64 (O(n D^2), never (n, n); the
    (n, n) Gram matrix is used instead when n < D). The sum over blocks is what one all-reduce
    adds up under DDP. Identical rows give 1; n orthogonal rows give n; the score is the
    effective number of distinct directions. Eigenvalues at or below
    ``max(n, D) * eps * max(lambda)`` are rounding noise and count as 0 (this matters for
    q < 1 only).

    Args:
        x: (n, D) array or tensor, rows of non-zero norm.
        q: order of the entropy, >= 0; 1 (Shannon) by default, ``math.inf`` allowed.
        chunk_size: rows per block; None picks one.

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
    t = engine_device(as_features(x, "x"))
    chunk = check_chunk(chunk_size) or _ROWS
    n, width = t.shape
    moment = torch.zeros(
        (n, n) if n < width else (width, width), dtype=torch.float64, device=t.device
    )
    blocks = []
    for start in range(0, n, chunk):
        block = t[start : start + chunk].to(torch.float64)
        norms = torch.linalg.vector_norm(block, dim=1)
        if bool((norms == 0).any()):
            bad = int((torch.linalg.vector_norm(t.to(torch.float64), dim=1) == 0).sum())
            raise ValueError(
                f"`x` has {bad} row(s) of zero norm out of {n}; the cosine kernel needs "
                "non-zero rows. Drop them first."
            )
        block = block / norms.unsqueeze(1)
        if n < width:
            blocks.append(block)
        else:
            moment += block.T @ block
    if n < width:
        rows = torch.cat(blocks)
        moment = rows @ rows.T
    lam = torch.linalg.eigvalsh((moment + moment.T) / 2).clamp_min(0.0)
    lam = lam / lam.sum()
    lam[lam <= max(n, width) * torch.finfo(torch.float64).eps * lam.max()] = 0.0
    return _entropy_exp(lam, order)


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
    x, y = width_pair(real, fake, 2, "for the unbiased kernel distance")
    chunk = check_chunk(chunk_size) or _KERNEL_BLOCK
    n, m, width = x.shape[0], y.shape[0], x.shape[1]
    r_xx, _ = _kernel_sums(x, None, width, chunk)
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
