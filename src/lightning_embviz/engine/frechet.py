"""The Fréchet distance: one fit of the real side, FD and FD-infinity.

Exact up to float64 rounding on the full sets, chunked on the tensors' device; re-exported
by :mod:`lightning_embviz.suite` and :mod:`lightning_embviz.metrics`.

- :class:`FrechetReference`: the real side of the Fréchet distance fitted once (mean, trace,
  a factor F with S_r = F F^T, the Cholesky factor when S_r is positive definite);
  :meth:`FrechetReference.distance` then costs one SYRK for the fake covariance, the
  triangular products F^T S_f F and one values-only symmetric eigenvalue problem.
- :func:`frechet_distance`: the Fréchet distance between two sets.
- :func:`fd_infinity`: FD on nested random fake subsets of several sizes, a line in 1/n, its
  intercept (Chong & Forsyth, 2020).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg.blas as _blas
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
_BLOCK = 256  # columns per block of the triangular products (half the flops of a full GEMM)


# --- Fréchet distance ----------------------------------------------------------------------


def _gram_lower(x: Tensor, out: Tensor) -> None:
    """``out += x^T x`` on the lower triangle (a SYRK: half the flops of a GEMM).

    On the CPU by BLAS ``dsyrk`` writing into ``out`` in place (measured 0.71 s for 10 000 x
    2048 where torch's GEMM takes 1.25 s); elsewhere by blocked GEMMs on the lower block
    triangle. Only the lower triangle of ``out`` is valid afterwards.

    Args:
        x: (R, K) float64 block of rows.
        out: (K, K) float64 contiguous accumulator.
    """
    if x.device.type == "cpu":
        _syrk_lower(x.detach().numpy(), out.numpy())
        return
    _gram_lower_blocked(x, out)


def _syrk_lower(a: np.ndarray, out: np.ndarray) -> None:
    """``out += a^T a`` on the lower triangle of the C-ordered float64 ``out``, in place.

    ``out``'s lower triangle is the upper one of its transpose, a Fortran-ordered view that
    BLAS updates without a copy; ``a`` is passed without a copy in either memory order.
    """
    if a.flags.c_contiguous:  # a^T is Fortran-ordered: C = A A^T with A = a^T
        done = _blas.dsyrk(1.0, a.T, beta=1.0, c=out.T, trans=0, lower=0, overwrite_c=1)
    else:
        a = np.asfortranarray(a)
        done = _blas.dsyrk(1.0, a, beta=1.0, c=out.T, trans=1, lower=0, overwrite_c=1)
    if not np.shares_memory(done, out):  # BLAS worked on a copy
        out[...] = done.T


def _gram_lower_blocked(x: Tensor, out: Tensor) -> None:
    """``out += x^T x`` on the lower block triangle by GEMMs (~0.56 of a full GEMM)."""
    k = x.shape[1]
    for j in range(0, k, _BLOCK):
        out[j:, j : j + _BLOCK].addmm_(x[:, j:].T, x[:, j : j + _BLOCK])


def _full_from_lower(lower: Tensor) -> Tensor:
    """The symmetric matrix whose lower triangle is ``lower``'s."""
    if lower.device.type == "cpu":  # by blocks: 2.5x np.tril(a) + np.tril(a, -1).T at 2048
        full = lower.numpy().copy()
        for j in range(0, full.shape[0], _BLOCK):
            k = j + _BLOCK
            full[j:k, k:] = full[k:, j:k].T
            diag = full[j:k, j:k]
            diag[...] = np.tril(diag) + np.tril(diag, -1).T
        return torch.from_numpy(full)
    return torch.tril(lower) + torch.tril(lower, -1).T


def _sandwich_lower(sym: Tensor, chol: Tensor) -> Tensor:
    """Lower triangle of ``L^T S L`` for a symmetric S and a lower-triangular L (D, D).

    Column block J of the result below the diagonal block needs only rows and columns >= j of
    S and L, so the two products cost ``4/3 D^3`` flops instead of ``4 D^3``. On the CPU
    through NumPy, so that the whole fake side stays in one BLAS (two BLAS libraries'
    threads spinning against each other slow both on a two-core machine).
    """
    d = sym.shape[0]
    if sym.device.type == "cpu":
        s, low = sym.numpy(), chol.numpy()
        out = np.zeros_like(s)
        for j in range(0, d, _BLOCK):
            out[j:, j : j + _BLOCK] = low[j:, j:].T @ (s[j:, j:] @ low[j:, j : j + _BLOCK])
        return torch.from_numpy(out)
    res = torch.zeros_like(sym)
    for j in range(0, d, _BLOCK):
        y = sym[j:, j:] @ chol[j:, j : j + _BLOCK]  # (S L)[j:, J]
        res[j:, j : j + _BLOCK] = chol[j:, j:].T @ y
    return res


@contextmanager
def _one_thread(device: torch.device) -> Iterator[None]:
    """Run the symmetric eigensolver on one CPU thread.

    Its tridiagonal reduction is memory-bound: on a CPU a second OpenMP thread adds CPU time
    without shortening the wall time, and on a loaded machine it can stall it (measured in
    ``benchmarks/bench_fd.py``). GEMMs keep all threads.
    """
    threads = torch.get_num_threads()
    if device.type != "cpu" or threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _sqrt_eig_sum(lower: Tensor) -> float:
    """``sum sqrt(eigenvalues)`` of a symmetric PSD matrix given by its lower triangle.

    Values only (LAPACK ``syevd`` without vectors); negatives from rounding count as 0.
    """
    with _one_thread(lower.device):
        vals = torch.linalg.eigvalsh(lower, UPLO="L")
    if vals.device.type == "cpu":
        return float(np.sqrt(np.clip(vals.numpy(), 0.0, None)).sum())
    return float(vals.clamp_min(0.0).sqrt().sum())


# On the CPU the small reductions and products below run in NumPy: its sums have one order
# and OpenBLAS splits a product's output (never its inner sums) between threads, so their bits
# do not depend on the thread count, where torch's threaded reductions and MKL's products do
# (``tests/test_suite.py::test_frechet_bits_do_not_depend_on_the_thread_count``).


def _sum_squares(x: Tensor) -> float:
    """``sum(x * x)`` of a float64 tensor, in one summation order on the CPU."""
    if x.device.type == "cpu":
        a = x.numpy().reshape(-1)
        return float(np.einsum("i,i->", a, a))
    return float((x * x).sum())


def _column_sums(x: Tensor) -> Tensor:
    """Column sums of a float64 (R, K) tensor, in one summation order on the CPU."""
    if x.device.type == "cpu":
        return torch.from_numpy(x.numpy().sum(axis=0))
    return x.sum(dim=0)


def _matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for float64 matrices; on the CPU by NumPy's BLAS (bits independent of threads)."""
    if a.device.type == "cpu":
        return torch.from_numpy(a.numpy() @ b.numpy())
    return a @ b


def _without_mean_direction(rows: Tensor) -> Tensor:
    """K - 1 rows Y with ``Y^T Y = X_c^T X_c`` for K >= 2 centred float64 rows ``X_c``.

    The Householder reflection H that maps ``1 / sqrt(K)`` to ``e_1`` turns the centred rows
    into ``H X_c``, whose first row is ``1^T X_c / sqrt(K) = 0``; the other K - 1 rows keep
    the whole Gram matrix. Eigenvalue problems built on Y then have no eigenvalue that is 0
    by construction, whose rounding noise ``~eps |A|`` would enter the sum of square roots
    as ``sqrt(eps |A|)``.
    """
    k = rows.shape[0]
    v = torch.full((k,), 1.0 / math.sqrt(k), dtype=rows.dtype, device=rows.device)
    v[0] -= 1.0
    v /= torch.linalg.vector_norm(v)
    vt = v[None, :]
    return (rows - 2.0 * v[:, None] * _matmul(vt, rows))[1:]


def _mean64(x: Tensor, chunk: int) -> Tensor:
    """Column means in float64; on the CPU by NumPy's float64 reduction (8x torch's here)."""
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(x.numpy().mean(axis=0, dtype=np.float64))
    return mean64(x, chunk)


def _rows64(x: Tensor, shift: Tensor, chunk: int) -> Iterator[Tensor]:
    """Blocks of ``x - shift`` in float64, ``chunk`` rows at a time.

    On the CPU (float32/float64 rows) each block is written into one reused buffer by NumPy
    (one pass, no temporaries); a block is valid until the next one is drawn.
    """
    if x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64):
        rows, centre = x.numpy(), shift.numpy()
        buf = np.empty((min(chunk, x.shape[0]), x.shape[1]))
        for start in range(0, x.shape[0], chunk):
            block = buf[: min(chunk, x.shape[0] - start)]
            np.subtract(rows[start : start + chunk], centre, out=block)
            yield torch.from_numpy(block)
        return
    for start in range(0, x.shape[0], chunk):
        yield x[start : start + chunk].to(torch.float64) - shift


class FrechetReference:
    """The real side of the Fréchet distance, fitted once and reused for many fake sets.

    Holds the real mean ``mu_r`` (float64), ``tr(S_r)`` and a factor F with ``S_r = F F^T``
    (unbiased covariance, ``np.cov`` convention): the Cholesky factor when ``S_r`` is positive
    definite (every pivot above ``D eps max(diag S_r)``), the symmetric square root's
    non-null part (from ``eigh``, eigenvalues above ``D eps`` times the largest) when it is
    not, or,
    when N <= D (``S_r`` has rank < D), the centred rows themselves rotated to N - 1 rows
    without the mean direction, ``F = Y^T / sqrt(N-1)`` (D, N-1) with ``Y^T Y = X_c^T X_c``.
    Then, for a fake set with covariance ``S_f``::

        FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))
        tr((S_r S_f)^(1/2)) = sum_i sqrt(eig_i(F^T S_f F))

    since ``S_r S_f = F F^T S_f`` and ``F^T S_f F`` share their non-zero eigenvalues;
    ``F^T S_f F`` is symmetric PSD, so no complex square root of a non-symmetric matrix is
    needed (the ``scipy.linalg.sqrtm`` of pytorch-fid and torchmetrics), and its eigenvalues
    are computed without eigenvectors. Per fake set (M rows), the cheapest exact route:

    - M > D and F the Cholesky factor: ``S_f`` by one blocked SYRK over the centred fakes
      (``M D^2`` flops), then ``L^T S_f L`` by triangular blocked products (``4/3 D^3``);
    - M <= rank(F): the (M, M) matrix ``Z Z^T`` of the whitened fakes ``Z = X_f,c F`` (same
      non-zero eigenvalues, no rank-deficient noise);
    - otherwise (F with r < D columns) ``Z^T Z`` (r, r) or ``F^T S_f F``, whichever costs
      fewer flops.

    ``tr(S_f)`` is the trace of the fakes' Gram matrix (``|X_f,c|_F^2 / (M-1)``). All in
    float64 on the tensors' device; the eigensolver runs on one CPU thread (see
    ``benchmarks/bench_fd.py``).

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

    @classmethod
    def _from_checked(cls, real: Tensor) -> FrechetReference:
        """Fit a real set already checked (by :func:`width_pair`), without checking again."""
        ref = cls.__new__(cls)
        ref._fit(real, _ROWS)
        return ref

    def _fit(self, r: Tensor, chunk: int) -> None:
        n, width = r.shape
        self._n, self._width, self._chunk = n, width, chunk
        self.mean = _mean64(r, chunk)
        self._triangular = False
        if n <= width:  # rank < D: the centred rows are the factor
            rows = r.to(torch.float64) - self.mean
            self.trace = _sum_squares(rows) / (n - 1)
            self.factor = (_without_mean_direction(rows) / math.sqrt(n - 1)).T.contiguous()
            return
        gram = torch.zeros(width, width, dtype=torch.float64, device=r.device)
        for block in _rows64(r, self.mean, chunk):
            _gram_lower(block, gram)
        cov = _full_from_lower(gram) / (n - 1)
        self.trace = float(cov.diagonal().sum())
        # Cholesky unless a pivot is at rounding level (S_r singular up to rounding: whether
        # the factorisation then fails depends on the last bits, and a rounding-level pivot
        # would enter the eigenvalues as noise); eigh keeps the columns above that level.
        tiny = width * torch.finfo(torch.float64).eps
        with _one_thread(cov.device):  # threaded LAPACK rounds with the thread count
            chol, info = torch.linalg.cholesky_ex(cov)
        pivots = chol.diagonal().square()
        if int(info) == 0 and bool(pivots.min() > tiny * cov.diagonal().max()):
            self.factor, self._triangular = chol, True
            return
        with _one_thread(cov.device):
            vals, vecs = torch.linalg.eigh(cov)
        keep = vals > tiny * vals.max().clamp_min(0.0)
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

    def _whiten(self, x: Tensor) -> Tensor:
        """``x F`` for float64 rows x (R, D); half the flops when F is triangular."""
        if not self._triangular:
            return _matmul(x, self.factor)
        out = torch.empty_like(x)
        for j in range(0, self._width, _BLOCK):
            out[:, j : j + _BLOCK] = _matmul(x[:, j:], self.factor[j:, j : j + _BLOCK])
        return out

    def _whitens_fakes(self, m: int) -> bool:
        """Whether ``Z^T Z`` (Z = X_f,c F) costs fewer flops than ``F^T S_f F`` for M rows."""
        d, r = self._width, self.rank
        z_route = 2 * m * d * r + m * r * r
        cov_route = m * d * d + (4 * d**3 // 3 if self._triangular else 2 * d * r * (d + r))
        return z_route < cov_route

    def _middle(self, cov: Tensor) -> Tensor:
        """Lower triangle of ``F^T S F`` for a symmetric S (D, D)."""
        if self._triangular:
            return _sandwich_lower(cov, self.factor)
        return _matmul(self.factor.T, _matmul(cov, self.factor))

    def _trace_sqrt_small(self, rows: Tensor) -> float:
        """``tr((S_r S_f)^(1/2))`` from the (M, M) ``Z Z^T`` of M <= rank centred rows.

        The rows are first rotated to M - 1 rows without the mean direction, so ``Z Z^T``
        has no eigenvalue that is 0 by construction.
        """
        z = self._whiten(_without_mean_direction(rows))
        gram = torch.zeros(z.shape[0], z.shape[0], dtype=torch.float64, device=z.device)
        _gram_lower(z.T, gram)
        return _sqrt_eig_sum(gram) / math.sqrt(rows.shape[0] - 1)

    def _fake_side(self, fake: Tensor) -> tuple[Tensor, float, float]:
        """``(mu_f, tr(S_f), tr((S_r S_f)^(1/2)))`` of a checked fake set."""
        m = fake.shape[0]
        mean = _mean64(fake, self._chunk)
        if m <= self.rank:
            rows = fake.to(torch.float64) - mean
            return mean, _sum_squares(rows) / (m - 1), self._trace_sqrt_small(rows)
        whiten = self._whitens_fakes(m)
        size = self.rank if whiten else self._width
        gram = torch.zeros(size, size, dtype=torch.float64, device=fake.device)
        sq = 0.0
        for block in _rows64(fake, mean, self._chunk):
            if whiten:
                sq += _sum_squares(block)
                block = self._whiten(block)
            _gram_lower(block, gram)
        if not whiten:
            sq = float(gram.diagonal().sum())
            gram = self._middle(_full_from_lower(gram))
        return mean, sq / (m - 1), _sqrt_eig_sum(gram) / math.sqrt(m - 1)

    def distance(self, fake: ArrayLike) -> float:
        """Fréchet distance from the fitted real set to a fake set (formula in the class doc).

        Args:
            fake: (M, D) array or tensor, M >= 2, same D.

        Returns:
            The Fréchet distance as a Python float (>= 0).

        Raises:
            ValueError: on another width, fewer than 2 rows, or NaN/Inf values.
        """
        return _subset_fd(self, self._check(fake))

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
    return _subset_fd(FrechetReference._from_checked(r), f)


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
    fitted once (or passed as a :class:`FrechetReference`); the fakes' Gram matrix is
    accumulated once over the growing prefixes (one blocked SYRK over M rows), so each size
    costs the ``F^T S_f F`` products and one symmetric eigenvalue problem; sizes below the
    rank of F use the (n, n) Gram matrix of the whitened subset. Values are those of
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
    values = [_subset_fd(ref, f.index_select(0, order[:s])) for s in sizes if s <= ref.rank]
    large = [s for s in sizes if s > ref.rank]
    if large:
        values += _prefix_fds(ref, f, order, large)
    intercept, slope, r2 = _line_fit(sizes, values)
    return FDInfinityResult(intercept, r2, slope, tuple(sizes), tuple(values))


def _subset_fd(ref: FrechetReference, rows: Tensor) -> float:
    """FD of the fitted real side to ``rows`` (what :meth:`FrechetReference.distance` does)."""
    mean, trace, trace_sqrt = ref._fake_side(rows)
    diff = mean - ref.mean
    return max(_sum_squares(diff) + ref.trace + trace - 2.0 * trace_sqrt, 0.0)


def _prefix_fds(
    ref: FrechetReference, fake: Tensor, order: Tensor, sizes: Sequence[int]
) -> list[float]:
    """FD of the prefixes ``fake[order[:n]]`` for increasing sizes n > rank, in one pass.

    The Gram matrix of ``x - c`` (or of the whitened ``(x - c) F``) is accumulated over the
    growing prefix and centred per size by a rank-one correction; c is the mean of the first
    ``sizes[0]`` rows, so the sums stay well conditioned.
    """
    chunk, width = ref._chunk, ref.width
    whiten = ref._whitens_fakes(sizes[-1])
    side = ref.rank if whiten else width
    shift = _mean64(fake.index_select(0, order[: sizes[0]]), chunk)
    sum_x = torch.zeros(width, dtype=torch.float64, device=fake.device)
    sum_z = torch.zeros(ref.rank, dtype=torch.float64, device=fake.device)
    gram = torch.zeros(side, side, dtype=torch.float64, device=fake.device)
    sq, done, values = 0.0, 0, []
    for size in sizes:
        for start in range(done, size, chunk):
            rows = fake.index_select(0, order[start : min(start + chunk, size)])
            for x in _rows64(rows, shift, chunk):
                sum_x += _column_sums(x)
                sq += _sum_squares(x)
                if whiten:
                    x = ref._whiten(x)
                    sum_z += _column_sums(x)
                _gram_lower(x, gram)
        done = size
        delta = sum_x / size  # fake mean - shift
        trace = (sq - size * _sum_squares(delta)) / (size - 1)
        centre = sum_z / size if whiten else delta
        cov = (_full_from_lower(gram) - size * torch.outer(centre, centre)) / (size - 1)
        middle = cov if whiten else ref._middle(cov)
        diff = delta + shift - ref.mean
        fd = _sum_squares(diff) + ref.trace + trace - 2.0 * _sqrt_eig_sum(middle)
        values.append(max(fd, 0.0))
    return values
