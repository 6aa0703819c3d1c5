"""More metrics from the same embeddings, exact on the full sets.

Vendi, kernel distance, FD-infinity, a reusable Fréchet fit, clipped density and coverage,
realism and rarity scores.

Every function here is exact in the sense of its definition (no subsets, no approximation
beyond float64 rounding), runs in chunks on the tensors' device, and never holds an (N, N)
matrix. The formulas are written in each docstring; :mod:`lightning_embviz.metrics` re-exports
the public names.

- :func:`vendi_score`: exp of the order-q entropy of the eigenvalues of K/n, K the cosine
  similarity matrix, through the (D, D) second moment of the normalised rows.
- :func:`kernel_distance`: the KID statistic, unbiased MMD^2 with the cubic polynomial kernel
  on the full sets, with a delete-one jackknife standard error.
- :class:`FrechetReference`: the real side of the Fréchet distance fitted once (mean, trace,
  a factor F with S_r = F F^T); :meth:`FrechetReference.distance` then costs one GEMM for the
  fake covariance and one symmetric eigenvalue problem.
- :func:`fd_infinity`: FD on nested random fake subsets of several sizes, a line in 1/n, its
  intercept (Chong & Forsyth, 2020).
- :func:`clipped_density_coverage` (Salvy, Talbot & Thirion, 2025), :func:`realism_score`
  (Kynkäänniemi et al., 2019), :func:`rarity_score` (Han et al., 2022) on the engine's exact
  k-NN radii and ball tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import gammaln
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features, check_int
from lightning_embviz.engine import (
    cross_ball_tests,
    exact_squared_distances,
    frame_scale,
    max_abs_centered,
    mean64,
    pair_mode,
    round_key,
    to_frame,
)
from lightning_embviz.engine.exact import KEY_ABS_MARGIN as _KEY_ABS_MARGIN
from lightning_embviz.engine.exact import KEY_MARGIN as _KEY_MARGIN
from lightning_embviz.engine.exact import round_up32 as _up32
from lightning_embviz.engine.gemm import gemm_tau as _gemm_tau
from lightning_embviz.reference import RealReference, _check_chunk, _check_size

__all__ = [
    "FDInfinityResult",
    "FrechetReference",
    "clipped_density_coverage",
    "fd_infinity",
    "frechet_distance",
    "kernel_distance",
    "rarity_score",
    "realism_score",
    "vendi_score",
]

_ROWS = 2048  # rows converted to float64 at a time (bounded temporaries)
_KERNEL_BLOCK = 1024  # rows per block of the kernel sums: 8 MiB float64 tiles
_TILE_ROWS = 512  # real rows per tile of the ball pass
_TILE_ELEMENTS = 8 << 20  # float32 estimates per tile of the ball pass (32 MiB)
_MAX_PENDING = 1 << 22  # pairs awaiting an exact re-check before they are settled


def _cpu_if_mps(t: Tensor) -> Tensor:
    return t.cpu() if t.device.type == "mps" else t  # no float64 on MPS


def _pair(real: Any, fake: Any, names: tuple[str, str] = ("real", "fake")) -> tuple[Tensor, Tensor]:
    r = _cpu_if_mps(as_features(real, names[0]))
    f = _cpu_if_mps(as_features(fake, names[1]))
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`{names[0]}` and `{names[1]}` must have the same width D, got {r.shape[1]} and "
            f"{f.shape[1]}."
        )
    return r, f.to(r.device)


def _need_rows(t: Tensor, name: str, rows: int, why: str) -> None:
    if t.shape[0] < rows:
        raise ValueError(f"`{name}` needs at least {rows} rows {why}, got {t.shape[0]}.")


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
    t = _cpu_if_mps(as_features(x, "x"))
    chunk = _check_chunk(chunk_size) or _ROWS
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
                k = torch.addmm(
                    torch.ones((), dtype=torch.float64, device=a.device),
                    left,
                    right.T,
                    alpha=1.0 / width,
                ).pow_(3)
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
            k = torch.addmm(
                torch.ones((), dtype=torch.float64, device=a.device),
                left,
                right.T,
                alpha=1.0 / width,
            ).pow_(3)
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
    x, y = _pair(real, fake)
    for name, t in (("real", x), ("fake", y)):
        _need_rows(t, name, 2, "for the unbiased kernel distance")
    chunk = _check_chunk(chunk_size) or _KERNEL_BLOCK
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
        r = _cpu_if_mps(as_features(real, "real"))
        _need_rows(r, "real", 2, "for a covariance")
        self._fit(r, _check_chunk(chunk_size) or _ROWS)

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
        f = _cpu_if_mps(as_features(fake, name))
        if f.shape[1] != self._width:
            raise ValueError(
                f"`real` and `{name}` must have the same width D, got {self._width} and "
                f"{f.shape[1]}."
            )
        _need_rows(f, name, 2, "for a covariance")
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
    r, f = _pair(real, fake)
    for name, t in (("real", r), ("fake", f)):
        _need_rows(t, name, 2, "for a covariance")
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


# --- Clipped density and coverage, realism and rarity ----------------------------------------


@dataclass
class _BallStats:
    row_count: Tensor  # (K, N) int64: #{j : key(i, j) < r_t(i)}
    col_count: Tensor  # (K, M) int64: #{i : key(i, j) < r_t(i)}
    col_min_radius: Tensor  # (K, M) float64: min r_t(i) over those i (inf when none)


def _ball_pass(a: Tensor, b: Tensor, radii: Tensor, mode: str) -> _BallStats:
    """Exact ball membership ``key(a_i, b_j) < radii[t, i]``, counted by row and by column.

    The same decision procedure as the engine's real-fake pass: float32 GEMM estimates in a
    centred, power-of-two-scaled frame; a proven error band around every threshold; the few
    pairs inside a band recomputed from the original values in float64 and decided on the
    reference-rounded key. ``radii`` (K, N) must be non-decreasing along K.
    """
    device = a.device
    n, m, width = a.shape[0], b.shape[0], a.shape[1]
    n_k = radii.shape[0]
    center = mean64(a, _ROWS)
    scale = frame_scale(max(max_abs_centered(a, center, _ROWS), max_abs_centered(b, center, _ROWS)))
    a32, a_sq = to_frame(a, center, scale, _ROWS)
    b32, b_sq = (a32, a_sq) if b is a else to_frame(b, center, scale, _ROWS)
    a_sq32, b_sq32 = a_sq.to(torch.float32), b_sq.to(torch.float32)
    tau = _gemm_tau(width)
    key_margin, abs_margin = _KEY_MARGIN[mode], _KEY_ABS_MARGIN[mode] * scale**2
    theta = (radii * scale) ** 2
    err = tau * (a_sq + float(b_sq.max()))
    lo = theta * (1.0 - key_margin) - abs_margin - err
    hi = theta * (1.0 + key_margin) + abs_margin + err
    lo[radii == 0] = -math.inf  # `d < 0` never holds: an empty ball
    hi[radii == 0] = -math.inf
    hi_max32 = _up32(hi[-1])
    stats = _BallStats(
        torch.zeros(n_k, n, dtype=torch.int64, device=device),
        torch.zeros(n_k, m, dtype=torch.int64, device=device),
        torch.full((n_k, m), math.inf, dtype=torch.float64, device=device),
    )

    def record(t: int, rows: Tensor, cols: Tensor) -> None:
        if rows.numel():
            stats.row_count[t].index_add_(0, rows, torch.ones_like(rows))
            stats.col_count[t].index_add_(0, cols, torch.ones_like(cols))
            stats.col_min_radius[t].scatter_reduce_(0, cols, radii[t, rows], reduce="amin")

    pending: list[tuple[Tensor, Tensor]] = []

    def settle() -> None:
        if not pending:
            return
        rows = torch.cat([p[0] for p in pending])
        cols = torch.cat([p[1] for p in pending])
        pending.clear()
        key = round_key(exact_squared_distances(a, b, rows, cols), mode)
        for t in range(n_k):
            inside = key < radii[t, rows]
            record(t, rows[inside], cols[inside])

    col_size = max(1, min(m, _TILE_ELEMENTS // _TILE_ROWS))
    for r0 in range(0, n, _TILE_ROWS):
        r1 = min(r0 + _TILE_ROWS, n)
        for c0 in range(0, m, col_size):
            c1 = min(c0 + col_size, m)
            s = torch.addmm(b_sq32[c0:c1].unsqueeze(0), a32[r0:r1], b32[c0:c1].T, alpha=-2.0)
            s += a_sq32[r0:r1].unsqueeze(1)
            rows, cols = (s <= hi_max32[r0:r1].unsqueeze(1)).nonzero(as_tuple=True)
            v = s[rows, cols].to(torch.float64)
            rows += r0
            cols += c0
            band = torch.zeros_like(v, dtype=torch.bool)
            for t in range(n_k):
                band |= (v >= lo[t, rows]) & (v <= hi[t, rows])
            pending.append((rows[band], cols[band]))
            sure_rows, sure_cols, v = rows[~band], cols[~band], v[~band]
            for t in range(n_k):
                inside = v < lo[t, sure_rows]
                record(t, sure_rows[inside], sure_cols[inside])
        if sum(p[0].numel() for p in pending) > _MAX_PENDING:
            settle()
    settle()
    return stats


def _real_side(
    real: ArrayLike | RealReference, nearest_k: Any, chunk: int | None
) -> tuple[Tensor, Tensor, int]:
    """The real rows and their exact k-NN radii (from a fitted reference when given)."""
    k = check_int(nearest_k, "nearest_k", minimum=1)
    if isinstance(real, RealReference):
        return real.real, real.real_radii(k), k  # raises if k was not fitted
    r = _cpu_if_mps(as_features(real, "real_features"))
    _check_size(k, r.shape[0], "real_features")
    ref = RealReference._from_checked(r, (k,), chunk)
    return r, ref.real_radii(k), k


def _fake_side(real: Tensor, fake: Any) -> Tensor:
    f = _cpu_if_mps(as_features(fake, "fake_features"))
    if f.shape[1] != real.shape[1]:
        raise ValueError(
            f"`real_features` and `fake_features` must have the same width D, got "
            f"{real.shape[1]} and {f.shape[1]}."
        )
    return f.to(real.device)


def _coverage_curve(k: int, n: int, m: int) -> np.ndarray:
    """``f(j) = E[min(J, k)] / k`` for ``J ~ BetaBinomial(j, k, n - k)``, j = 0..m.

    J is the number of j fakes, drawn from the real distribution, that fall in a real
    point's k-NN ball (whose probability mass is Beta(k, n - k) distributed).
    """
    j = np.arange(m + 1, dtype=np.float64)[:, None]
    i = np.arange(k, dtype=np.float64)[None, :]  # counts 0..k-1 fall short of the cap
    log_p = (
        gammaln(j + 1)
        - gammaln(i + 1)
        - gammaln(np.maximum(j - i, 0) + 1)
        + gammaln(k + i)
        + gammaln(n - k + j - i)
        - gammaln(n + j)
        - (gammaln(k) + gammaln(n - k) - gammaln(n))
    )
    p = np.where(i <= j, np.exp(log_p), 0.0)
    return 1.0 - (p * (k - i)).sum(axis=1) / k


def clipped_density_coverage(
    real_features: ArrayLike | RealReference,
    fake_features: ArrayLike,
    nearest_k: int = 5,
) -> dict[str, float]:
    """Clipped density and clipped coverage (Salvy, Talbot & Thirion, 2025).

    Calibrated variants of density and coverage that outlier real balls and bad fakes cannot
    push around, and that read as an equivalent fraction of good samples (about 1 for
    identical distributions, falling linearly as good samples are replaced by bad ones).
    With r_k(x) the exact k-NN radius of a real point (as in :func:`compute_prdc`), its
    clipped radius ``r~(x) = min(r_k(x), median_x r_k(x))`` and strict comparisons::

        clipped_density  = min(1, mean_f min(1, c(f)/k) / mean_y min(1, c_R(y)/k))
          c(f)   = #{x in R : d(f, x) < r~(x)}            (real clipped balls holding f)
          c_R(y) = #{x in R, x != y : d(y, x) < r~(x)}   (the same count for a real point)
        clipped_coverage = g( mean_x min(k, #{f in F : d(x, f) < r_k(x)}) / k )

    where ``g`` inverts the expected raw coverage of j fakes drawn from the real distribution,
    ``f(j) = E[min(J, k)] / k`` with ``J ~ BetaBinomial(j, k, N - k)`` (the mass of a k-NN
    ball is Beta(k, N - k)): ``g(y) = #{j in 0..M : f(j) < y} / (M + 1)``, as in the authors'
    code (which sets ``f(j) = 0`` for ``j < k``; here ``f`` is exact for every j, which only
    matters for raw values below ``f(k)``). The authors' code compares with ``<=`` for the
    density counts; here every comparison is strict, as in PRDC (identical on continuous
    data). Distances are decided exactly, rounded as the reference ``prdc`` rounds them.

    Args:
        real_features: (N, D) array or tensor, or a fitted :class:`RealReference` (its radii
            are reused; ``nearest_k`` must be one of its k).
        fake_features: (M, D) array or tensor, same D.
        nearest_k: k of the k-NN balls, 1 <= k < N.

    Returns:
        ``{"clipped_density": float, "clipped_coverage": float}``, both in [0, 1]
        (``clipped_density`` is NaN when every real radius is 0).

    Raises:
        TypeError: if ``nearest_k`` is not an int.
        ValueError: on shapes other than (N, D), different widths, NaN/Inf rows, ``nearest_k``
            outside [1, N - 1], or not fitted by the given reference.
    """
    real, radii, k = _real_side(real_features, nearest_k, None)
    fake = _fake_side(real, fake_features)
    n, m = real.shape[0], fake.shape[0]
    clipped = radii.clamp_max(float(np.median(radii.cpu().numpy())))
    mode_rr = pair_mode(real.dtype, real.dtype)
    real_stats = _ball_pass(real, real, clipped.unsqueeze(0), mode_rr)
    own = (clipped > 0).to(torch.int64)  # each real point lies in its own non-empty ball
    real_counts = real_stats.col_count[0] - own
    stats = _ball_pass(real, fake, torch.stack([clipped, radii]), pair_mode(real.dtype, fake.dtype))
    fake_part = float((stats.col_count[0].to(torch.float64) / k).clamp_max(1.0).mean())
    real_part = float((real_counts.to(torch.float64) / k).clamp_max(1.0).mean())
    density = min(1.0, fake_part / real_part) if real_part > 0 else math.nan
    raw = float((stats.row_count[1].clamp_max(k).to(torch.float64) / k).mean())
    curve = _coverage_curve(k, n, m)
    coverage = float(np.searchsorted(curve, raw, side="left")) / (m + 1)
    return {"clipped_density": density, "clipped_coverage": coverage}


def realism_score(
    real_features: ArrayLike | RealReference,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    *,
    keep: float = 0.5,
) -> Tensor:
    """Per-fake realism score (Kynkäänniemi et al., 2019).

    ``R(f) = max over kept reals x of r_k(x) / d(f, x)``, where only the real balls with the
    smallest radii are kept (the fraction ``keep``, by default the half at or below the
    median radius, as in the paper: large outlier balls would make any fake look real).
    ``R(f) > 1`` exactly when f lies in a kept ball (on the ball's edge, ``R(f) = 1``, counts
    as outside, as in precision); inf when f coincides with a kept real point. The maximum is found
    exactly by the engine's nearest-ball-edge search on the reference-rounded distances.

    Args:
        real_features: (N, D) array or tensor, or a fitted :class:`RealReference`.
        fake_features: (M, D) array or tensor, same D.
        nearest_k: k of the k-NN balls, 1 <= k < N.
        keep: fraction of real balls kept, smallest radii first, in (0, 1].

    Returns:
        (M,) float64 tensor on the input's device (0 when every kept radius is 0).

    Raises:
        TypeError: if ``nearest_k`` is not an int or ``keep`` not a number.
        ValueError: on bad shapes or values, or ``keep`` outside (0, 1].
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)):
        raise TypeError(f"`keep` must be a fraction in (0, 1], got {keep!r}.")
    if not 0.0 < float(keep) <= 1.0:
        raise ValueError(f"`keep` must be a fraction in (0, 1], got {keep!r}.")
    real, radii, _ = _real_side(real_features, nearest_k, None)
    fake = _fake_side(real, fake_features)
    limit = float(np.quantile(radii.cpu().numpy(), float(keep)))  # 0.5: the median
    kept = torch.where(radii <= limit, radii, torch.zeros_like(radii))
    tests = cross_ball_tests(
        real,
        fake,
        kept.unsqueeze(0),
        None,
        pair_mode(real.dtype, fake.dtype),
        _TILE_ROWS,
        details=True,
    )
    assert tests.fake_ratio is not None
    ratio = tests.fake_ratio[0]  # min over kept balls of d(f, x) / r_k(x)
    return torch.where(ratio == 0, math.inf, 1.0 / ratio)


def rarity_score(
    real_features: ArrayLike | RealReference,
    fake_features: ArrayLike,
    nearest_k: int = 5,
) -> Tensor:
    """Per-fake rarity score (Han et al., 2022).

    ``rarity(f) = min { r_k(x) : x in R, d(f, x) < r_k(x) }``: the radius of the smallest
    real k-NN ball that holds the fake. A fake in a sparse region of the real data is only
    inside wide balls, so its score is high (rare but realistic); a fake in a dense region
    scores low. Fakes outside every real ball have no rarity: NaN (they are unrealistic
    rather than rare). Decided exactly, with the distances rounded as ``prdc`` rounds them.

    Args:
        real_features: (N, D) array or tensor, or a fitted :class:`RealReference`.
        fake_features: (M, D) array or tensor, same D.
        nearest_k: k of the k-NN balls, 1 <= k < N.

    Returns:
        (M,) float64 tensor on the input's device.

    Raises:
        TypeError: if ``nearest_k`` is not an int.
        ValueError: on bad shapes or values, ``nearest_k`` outside [1, N - 1].
    """
    real, radii, _ = _real_side(real_features, nearest_k, None)
    fake = _fake_side(real, fake_features)
    stats = _ball_pass(real, fake, radii.unsqueeze(0), pair_mode(real.dtype, fake.dtype))
    low = stats.col_min_radius[0]
    return torch.where(torch.isinf(low), math.nan, low)
