"""The Fréchet distance: one fit of the real side, FD and FD-infinity.

Exact up to float64 rounding on the full sets, chunked on the tensors' device; re-exported
by :mod:`lightning_embviz.suite` and :mod:`lightning_embviz.metrics`.

- :class:`FrechetReference`: the real side of the Fréchet distance fitted once (mean, trace,
  a factor F with S_r = F F^T); :meth:`FrechetReference.distance` then costs one GEMM for the
  fake covariance and one symmetric eigenvalue problem.
- :func:`frechet_distance`: the Fréchet distance between two sets.
- :func:`fd_infinity`: FD on nested random fake subsets of several sizes, a line in 1/n, its
  intercept (Chong & Forsyth, 2020).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, check_int
from lightning_embviz.engine.frames import mean64
from lightning_embviz.engine.inputs import (
    check_chunk,
    engine_device,
    need_rows,
    width_pair,
)

__all__ = ["FDInfinityResult", "FrechetReference", "fd_infinity", "frechet_distance"]

_ROWS = 2048  # rows converted to float64 at a time (bounded temporaries)


# --- Fréchet distance ----------------------------------------------------------------------


def _centred_sums(x: Tensor, shift: Tensor, chunk: int) -> tuple[Tensor, float]:
    """``(sum_i (x_i - shift), sum_i |x_i - shift|^2)`` in float64."""
    total = torch.zeros(x.shape[1], dtype=torch.float64, device=x.device)
    sq = 0.0
    for start in range(0, x.shape[0], chunk):
        block = x[start : start + chunk].to(torch.float64) - shift
        total += block.sum(dim=0)
        sq += float((block * block).sum())
    return total, sq


def _centred(x: Tensor, mean: Tensor) -> Tensor:
    return x.to(torch.float64) - mean


def _sqrt_eig_sum(mat: Tensor) -> float:
    """``sum sqrt(eigenvalues)`` of a symmetric PSD matrix (negatives from rounding -> 0)."""
    sym = (mat + mat.T) / 2
    return float(torch.linalg.eigvalsh(sym).clamp_min(0.0).sqrt().sum())


class FrechetReference:
    """The real side of the Fréchet distance, fitted once and reused for many fake sets.

    Holds the real mean ``mu_r`` (float64), ``tr(S_r)`` and a factor F with ``S_r = F F^T``
    (unbiased covariance, ``np.cov`` convention): the Cholesky factor when ``S_r`` is positive
    definite, the symmetric square root's non-null part (from ``eigh``) when it is not, or,
    when N <= D (``S_r`` has rank < D), the centred rows themselves, ``F = X_c^T / sqrt(N-1)``
    (D, N). Then, for a fake set with covariance ``S_f``::

        FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))
        tr((S_r S_f)^(1/2)) = sum_i sqrt(eig_i(F^T S_f F))

    since ``S_r S_f = F (F^T S_f F) F^{-1}``-similar products share their non-zero
    eigenvalues; ``F^T S_f F`` is symmetric PSD, so no complex square root of a non-symmetric
    matrix is needed (the ``scipy.linalg.sqrtm`` of pytorch-fid and torchmetrics). The fake
    covariance is one GEMM (``X_f,c^T X_f,c``); with fewer fake rows than the rank of F the
    (M, M) matrix ``Z Z^T`` of the whitened fakes ``Z = X_f,c F`` is used instead (same
    non-zero eigenvalues, no rank-deficient noise). All in float64.

    Args:
        real: (N, D) array or tensor, N >= 2. Kept on its device.
        chunk_size: rows converted to float64 at a time; None picks one.

    Raises:
        ValueError: on a shape other than (N, D), fewer than 2 rows, or NaN/Inf values.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(500, 8))
        >>> ref = FrechetReference(real)
        >>> fakes = [rng.normal(0.5, 1.0, size=(400, 8)) for _ in range(3)]
        >>> [round(ref.distance(f), 6) == round(frechet_distance(real, f), 6) for f in fakes]
        [True, True, True]
    """

    def __init__(self, real: ArrayLike, *, chunk_size: int | None = None) -> None:
        r = engine_device(as_features(real, "real"))
        need_rows(r, "real", 2, "for a covariance")
        self._fit(r, check_chunk(chunk_size) or _ROWS)

    def _fit(self, r: Tensor, chunk: int) -> None:
        n, width = r.shape
        self._n, self._width, self._chunk = n, width, chunk
        self.mean = mean64(r, chunk)
        _, sq = _centred_sums(r, self.mean, chunk)
        self.trace = sq / (n - 1)
        if n <= width:  # rank < D: the centred rows are the factor
            self.factor = (_centred(r, self.mean) / math.sqrt(n - 1)).T.contiguous()
            return
        cov = torch.zeros(width, width, dtype=torch.float64, device=r.device)
        for start in range(0, n, chunk):
            block = _centred(r[start : start + chunk], self.mean)
            cov.addmm_(block.T, block)
        cov = (cov + cov.T) / (2 * (n - 1))
        chol, info = torch.linalg.cholesky_ex(cov)
        if int(info) == 0:
            self.factor = chol
            return
        vals, vecs = torch.linalg.eigh(cov)
        keep = vals > width * torch.finfo(torch.float64).eps * vals.max().clamp_min(0.0)
        self.factor = (vecs[:, keep] * vals[keep].sqrt()).contiguous()

    @property
    def num_real(self) -> int:
        """N, the number of real rows fitted."""
        return self._n

    @property
    def width(self) -> int:
        """D, the embedding width."""
        return self._width

    @property
    def rank(self) -> int:
        """Columns of the factor F (D when ``S_r`` is positive definite)."""
        return int(self.factor.shape[1])

    def _check(self, fake: Any, name: str = "fake") -> Tensor:
        f = engine_device(as_features(fake, name))
        if f.shape[1] != self._width:
            raise ValueError(
                f"`real` and `{name}` must have the same width D, got {self._width} and "
                f"{f.shape[1]}."
            )
        need_rows(f, name, 2, "for a covariance")
        return f.to(self.mean.device)

    def _trace_sqrt(self, fake: Tensor, mean: Tensor) -> float:
        """``tr((S_r S_f)^(1/2))`` for the fake rows with their own mean."""
        m = fake.shape[0]
        if m <= self.rank or self.rank < self._width:
            # Whitened fakes Z = X_f,c F: (M, r); eigenvalues of Z^T Z or Z Z^T / (M - 1).
            z = torch.cat(
                [
                    _centred(fake[s : s + self._chunk], mean) @ self.factor
                    for s in range(0, m, self._chunk)
                ]
            )
            gram = z @ z.T if m <= self.rank else z.T @ z
            return _sqrt_eig_sum(gram) / math.sqrt(m - 1)
        cov = torch.zeros(self._width, self._width, dtype=torch.float64, device=fake.device)
        for start in range(0, m, self._chunk):
            block = _centred(fake[start : start + self._chunk], mean)
            cov.addmm_(block.T, block)
        mid = self.factor.T @ (cov / (m - 1)) @ self.factor
        return _sqrt_eig_sum(mid)

    def distance(self, fake: ArrayLike) -> float:
        """Fréchet distance from the fitted real set to a fake set (formula in the class doc).

        Args:
            fake: (M, D) array or tensor, M >= 2, same D.

        Returns:
            The Fréchet distance as a Python float (>= 0).

        Raises:
            ValueError: on another width, fewer than 2 rows, or NaN/Inf values.
        """
        f = self._check(fake)
        mean = mean64(f, self._chunk)
        _, sq = _centred_sums(f, mean, self._chunk)
        diff = mean - self.mean
        value = float(diff @ diff) + self.trace + sq / (f.shape[0] - 1)
        value -= 2.0 * self._trace_sqrt(f, mean)
        return max(value, 0.0)

    def __repr__(self) -> str:
        return f"FrechetReference(num_real={self._n}, width={self._width}, rank={self.rank})"


def frechet_distance(real: ArrayLike, fake: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (the FID formula).

    ``FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` with unbiased
    covariances (``np.cov`` convention), computed as :class:`FrechetReference` does: the
    trace term from the eigenvalues of the symmetric ``F^T S_f F`` (``S_r = F F^T``), in
    float64. To compare many fake sets with one real set, fit the real side once with
    :class:`FrechetReference`.

    Args:
        real: (N, D) array or tensor, N >= 2.
        fake: (M, D) array or tensor, M >= 2, same D.

    Returns:
        The Fréchet distance as a Python float (>= 0).

    Raises:
        ValueError: on shapes other than (N, D), different widths, fewer than 2 rows, or
            NaN/Inf values.
    """
    r, f = width_pair(real, fake, 2, "for a covariance")
    return FrechetReference(r).distance(f)


# --- FD-infinity ---------------------------------------------------------------------------


@dataclass(frozen=True)
class FDInfinityResult:
    """FD extrapolated to infinitely many fakes, and the fit behind it.

    Attributes:
        fd_inf: the intercept of the line ``FD(n) = fd_inf + slope / n``.
        r_squared: the fit's coefficient of determination (1 for a perfect line).
        slope: the slope against ``1 / n``.
        sizes: the subset sizes n, increasing (the last one is M).
        fd: the FD of each subset.
    """

    fd_inf: float
    r_squared: float
    slope: float
    sizes: tuple[int, ...]
    fd: tuple[float, ...]


def _line_fit(sizes: Sequence[int], values: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``values = a + b / sizes``: ``(a, b, R^2)``."""
    x = 1.0 / np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    slope = float((xc @ yc) / (xc @ xc))
    intercept = float(y.mean() - slope * x.mean())
    ss_res = float(((y - intercept - slope * x) ** 2).sum())
    ss_tot = float((yc**2).sum())
    r2 = 1.0 if ss_tot == 0.0 else 1.0 - ss_res / ss_tot
    return intercept, slope, r2


def fd_infinity(
    real: ArrayLike | FrechetReference,
    fake: ArrayLike,
    *,
    num_points: int = 5,
    min_size: int | None = None,
    seed: int = 0,
) -> FDInfinityResult:
    """FD extrapolated to infinitely many fakes (Chong & Forsyth, 2020, "FID_infinity").

    The FD of a finite fake set is biased upwards by about ``c / n``. Here FD is computed on
    fake subsets of ``num_points`` sizes ``n`` linearly spaced from ``min_size`` to M, drawn
    without replacement, and the line ``FD(n) = FD_inf + c / n`` is fitted by least squares;
    ``FD_inf`` is its intercept. The subsets are nested: the subset of size n is the first n
    rows of ``torch.randperm(M, generator=torch.Generator().manual_seed(seed))`` (each is a
    uniform subset without replacement; nesting only correlates them). Cost: the real side is
    fitted once (or passed as a :class:`FrechetReference`); the fakes are whitened by F and
    their (r, r) Gram matrix accumulated once over the prefixes (two GEMMs over M rows), so
    each extra size costs one symmetric eigenvalue problem. Values are those of
    ``frechet_distance(real, fake[subset])``.

    Args:
        real: (N, D) array or tensor, or a fitted :class:`FrechetReference`.
        fake: (M, D) array or tensor, same D.
        num_points: number of subset sizes, >= 2.
        min_size: smallest subset size, 2 <= min_size < M; None takes ``max(2, M // 5)``.
        seed: seed of the subset permutation.

    Returns:
        An :class:`FDInfinityResult`.

    Raises:
        TypeError: if ``num_points``, ``min_size`` or ``seed`` is not an int.
        ValueError: on another width, NaN/Inf values, ``num_points < 2``, or a ``min_size``
            that leaves fewer than 2 distinct sizes.
    """
    ref = real if isinstance(real, FrechetReference) else FrechetReference(real)
    f = ref._check(fake)
    m = f.shape[0]
    points = check_int(num_points, "num_points", minimum=2)
    low = max(2, m // 5) if min_size is None else check_int(min_size, "min_size", minimum=2)
    seed = check_int(seed, "seed")
    sizes = sorted({int(s) for s in np.linspace(low, m, points).round().astype(np.int64)})
    if len(sizes) < 2 or sizes[0] < 2 or sizes[-1] > m:
        raise ValueError(
            f"`min_size={low}` and `num_points={points}` give subset sizes {sizes} of M={m} "
            "fakes; FD-infinity needs at least 2 distinct sizes between 2 and M. Use more "
            "fakes or a smaller `min_size`."
        )
    order = torch.randperm(m, generator=torch.Generator().manual_seed(seed)).to(f.device)
    factor, rank, chunk = ref.factor, ref.rank, ref._chunk
    # Shift by the mean of the smallest subset: sums of (x - c) stay well conditioned.
    shift = mean64(f.index_select(0, order[: sizes[0]]), chunk)
    width = f.shape[1]
    sum_x = torch.zeros(width, dtype=torch.float64, device=f.device)
    sum_z = torch.zeros(rank, dtype=torch.float64, device=f.device)
    gram = torch.zeros(rank, rank, dtype=torch.float64, device=f.device)
    sq = 0.0
    small_rows: list[Tensor] = []  # whitened rows of the prefixes smaller than the rank
    values: list[float] = []
    done = 0
    for size in sizes:
        for start in range(done, size, chunk):
            stop = min(start + chunk, size)
            x = f.index_select(0, order[start:stop]).to(torch.float64) - shift
            z = x @ factor
            sum_x += x.sum(dim=0)
            sq += float((x * x).sum())
            sum_z += z.sum(dim=0)
            gram.addmm_(z.T, z)
            if start < rank:
                small_rows.append(z[: max(0, rank - start)])
        done = size
        delta = sum_x / size  # fake mean - shift
        diff = delta + shift - ref.mean
        tr_f = (sq - size * float(delta @ delta)) / (size - 1)
        zbar = sum_z / size
        if size <= rank:
            zc = torch.cat(small_rows)[:size] - zbar
            tr_sqrt = _sqrt_eig_sum(zc @ zc.T) / math.sqrt(size - 1)
        else:
            mid = (gram - size * torch.outer(zbar, zbar)) / (size - 1)
            tr_sqrt = _sqrt_eig_sum(mid)
        fd = float(diff @ diff) + ref.trace + tr_f - 2.0 * tr_sqrt
        values.append(max(fd, 0.0))
    intercept, slope, r2 = _line_fit(sizes, values)
    return FDInfinityResult(intercept, r2, slope, tuple(sizes), tuple(values))
