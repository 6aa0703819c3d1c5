"""Confidence intervals for precision, recall, density, coverage and the Fréchet distance.

Why not the bootstrap
---------------------
A bootstrap resamples with replacement. A resampled set holds duplicates, and a duplicate
is a neighbour at distance 0: a point drawn twice has a smaller k-NN ball, one drawn k + 1
times a radius of 0. The balls behind all four k-NN metrics shrink, the resampled statistics
are centred elsewhere and do not vary the way the statistic varies across independent
validation sets (``tests/test_intervals.py`` shows percentile intervals missing the expected
value most of the time). The Fréchet distance has a subtler problem: when the two
distributions are equal its first-order term vanishes (the estimate is a sum of squares of
noise), and plug-in schemes (bootstrap, parametric bootstrap, delta method, delete-d
jackknife) work around the *estimated* distributions, which differ, and overstate the
variance by a factor of two or more.

What this module does
---------------------
Every statistic ``T(R, F)`` depends on two independent samples, the N reals and the M fakes.
Its variance is estimated in two parts.

**Exact conditional parts.** Given the real set, precision and density are means over the
fakes of per-fake values (``fake_in_real_manifold``, ``fake_ball_count / k``) that depend on
the real set only, so they are i.i.d. over the fakes and their conditional variance is the
sample variance of the per-fake values divided by M. Symmetrically, given the fake set,
recall is a mean of i.i.d. per-real indicators (``real_recalled``). These parts come from the
one full computation, with M - 1 (N - 1) degrees of freedom.

**Split parts.** The other side (the real set for precision and density, the fake set for
recall, both for coverage) is handled by random half splits, never by resampling with
replacement: both sets are cut into halves ``R1, R2`` and ``F1, F2`` (no point is repeated),
and the four cells ``T(Ra, Fb)`` are computed. The two real halves are independent samples of
size N/2 from the real distribution, so

- for precision, with ``pi_a`` the fraction of all fakes inside the balls of ``Ra``, the
  contrast ``rho = pi_1 - pi_2`` satisfies ``E[rho^2] = 2 Var(pi(R_{N/2})) + v/M``, where
  ``v/M`` (the fake noise in the contrast) is estimated from the per-fake differences; density
  likewise, recall with the roles of the sets exchanged;
- for coverage, with row and column contrasts ``rho = (t11 + t12 - t21 - t22)/2`` and
  ``kappa = (t11 + t21 - t12 - t22)/2`` of the 2 x 2 table, ``(rho^2 + kappa^2)/2`` is an
  unbiased estimate of ``Var(T)`` at size (N/2, M/2), for any statistic of two samples.

These are exact, unbiased variances at *half* size. Averaged over ``n_splits`` independent
random splits they are carried to full size with the scaling law ``Var(T_n) = 2^-a
Var(T_{n/2})``. For k-NN statistics with a fixed k, ``a = 1`` asymptotically (they are sums of
local, stabilizing scores), but in high dimensions, at the sizes used in practice, the split
parts decay more slowly. Measured by simulation (Gaussian data; mean half-size estimates
against the variance over 800 to 3000 independent draws; k = 3 to 10, N = 300 to 2000):
``a`` is about 1.0 at D = 16 and between 0.5 and 1.0 (median about 0.7) at D = 64 and 256.
This module uses ``a = 0.75``. At low intrinsic dimension that overstates the split part by
up to ``2^0.25`` (intervals up to about 10 % wider than needed); in very high dimension it
can understate it by a similar amount. Only the split part is extrapolated: the conditional
parts, 50 to 80 % of the variance of precision, recall and density, are exact at full size.

**Fréchet distance: a second-order delta method.** ``FD = |mu_r - mu_f|^2 + B(S_r, S_f)``
with ``B`` the Bures term. The first-order (influence-function) variance is the sample
variance of the per-sample influences ``2 d.(x - mu_r) + (x - mu_r)^T (I - T)(x - mu_r)``
(``T`` the optimal-transport map between the two fitted Gaussians; ``I - T^-1`` and ``-2 d``
for fakes). Evaluated at the estimated parameters it is biased upwards by twice the variance
``Q`` of the second-order (chi-square) part; the estimate is ``A_plug - Q``, bounded below by
``Q``. ``Q = 2 tr(W^2)`` for the mean term (``W = S_r/N + S_f/M``) and ``2 tr(H C H C)`` for
the Bures term, with ``H`` its Hessian (taken at ``K0 = T^1/2 S_r T^1/2``, exact when the two
covariances commute) and ``C`` the covariance of the per-sample second moments, estimated
from random pairs of samples, so fourth moments come from the data, not from a Gaussian
model. Cost: a few D x D eigen-decompositions, O((N + M) D^2).

Intervals are ``T +- t * se`` with Student's t on Satterthwaite's degrees of freedom (the
split part has about ``n_splits`` (coverage: ``2 n_splits``) degrees of freedom), clipped to
the range of each metric. They cover the *expected value of the statistic at these sample
sizes*: k-NN metrics and FD are biased estimators of their large-sample limits (FD upwards,
by about ``(D + D (D + 1) / 4) (1/N + 1/M)`` for Gaussians), and no interval computed from
one sample can remove that bias.

Where it is not valid
---------------------
- Small sets and k close to N: each half needs more than k points (enforced) and many more
  for the half-size statistics to behave like the full-size ones; below about ``20 k``
  points per half a warning is issued.
- Rare outcomes: when only a handful of reals are uncovered (coverage near 1) or of fakes
  are outside the real manifold, the normal approximation fails and the split estimates
  can be 0; the interval is then too narrow.
- FD needs more samples than features in both sets (N, M > D); otherwise its bounds are NaN.
  The second-order expansion is accurate for N, M >= 10 D; at N = 4 D the variance is
  overstated by about 40 % (intervals about 20 % wider), and closer to D the estimate loses
  meaning. Heavy-tailed features make it noisy (conservative on average); with a tiny D and
  equal distributions FD is a skewed chi-square-like variable and a symmetric interval is
  approximate.
- The exponent ``a`` was measured on Gaussian data (D = 16 to 256, k = 3 to 10); other
  data, much larger k, or very high intrinsic dimension can move it (see above).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_tensor
from lightning_embviz._keys import METRIC_KEYS, PRDC_KEYS
from lightning_embviz.engine.frechet import frechet_distance
from lightning_embviz.engine.prdc import compute_prdc_details

if TYPE_CHECKING:
    from lightning_embviz.engine.results import PRDCResult

__all__ = ["INTERVAL_METRICS", "interval_min_samples", "prdc_intervals", "splits_too_small"]

INTERVAL_METRICS = METRIC_KEYS
"""Metrics that :func:`prdc_intervals` returns an interval for, in order."""

# Exponent of the half-size to full-size variance law, Var(T_n) = 2^-a Var(T_{n/2}), for the
# split parts of the k-NN metrics. See the module docstring and benchmarks/bench_intervals.py.
_HALF_TO_FULL_EXPONENT = 0.75

# Random pairs of samples used for the fourth-moment term of the Fréchet distance variance.
_FD_PAIRS = 2000

# Below this many points per half (in units of k) the half-size statistics are far from the
# full-size ones; the intervals are still computed, with a warning.
_MIN_HALF_PER_K = 20


@dataclass(frozen=True)
class _Variance:
    """A variance estimate in two parts: exact at full size, and estimated at half size."""

    full: float  # computed at full size (conditional i.i.d. part, FD delta method)
    half: float  # unbiased estimate of the split part at half size (to be scaled)
    half_var: float  # estimated variance of `half` (for the degrees of freedom)


def splits_too_small(rows: int, nearest_k: int) -> bool:
    """Whether a set of ``rows`` rows is too small to split into halves of more than k points.

    The rule of every interval: each half of each set needs more than ``nearest_k`` points
    (its k-NN balls), so a set needs at least :func:`interval_min_samples` rows.
    """
    return rows // 2 <= nearest_k


def interval_min_samples(nearest_k: int) -> int:
    """The fewest rows a set needs for intervals at ``nearest_k``: ``2 (k + 1)``."""
    return 2 * (nearest_k + 1)


def _check_confidence(confidence: Any) -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float, np.floating)):
        raise TypeError(f"`confidence` must be a float in (0, 1), e.g. 0.95, got {confidence!r}.")
    value = float(confidence)
    if not 0.0 < value < 1.0:
        raise ValueError(
            f"`confidence` must be strictly between 0 and 1, e.g. 0.95, got {confidence!r}."
        )
    return value


def _check_n_splits(n_splits: Any) -> int:
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)):
        raise TypeError(f"`n_splits` must be an int >= 2, got {n_splits!r}.")
    if n_splits < 2:
        raise ValueError(
            f"`n_splits` must be >= 2 (each split adds about one degree of freedom to the "
            f"variance estimate), got {n_splits}."
        )
    return int(n_splits)


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be a non-negative int or None, got {seed!r}.")
    if seed < 0:
        raise ValueError(f"`seed` must be a non-negative int or None, got {seed}.")
    return int(seed)


def _sample_var(x: Tensor) -> float:
    # Per-sample vectors are small; float64 on the CPU also serves devices without float64.
    return float(x.detach().to("cpu", torch.float64).var(unbiased=True))


def _one_sided(per_split: list[tuple[Tensor, Tensor]], scale: float) -> tuple[float, float]:
    """Half-size variance of the side that was split, from (values_half1, values_half2) pairs.

    Each pair holds per-sample values of the *other* set computed against the first and the
    second half of the split set (e.g. per-fake indicators against R1 and against R2). With
    ``rho`` the difference of their means, ``(rho^2 - s^2_delta / n) / 2`` is unbiased for the
    variance of the other set's mean at half size of the split set.
    """
    estimates, second_moments = [], []
    for first, second in per_split:
        delta = (first.to("cpu", torch.float64) - second.to("cpu", torch.float64)) * scale
        rho = float(delta.mean())
        noise = _sample_var(delta) / delta.numel()
        estimates.append((rho * rho - noise) / 2.0)
        second_moments.append(rho * rho)
    half = float(np.mean(estimates))
    # rho is approximately normal, so Var(rho^2) = 2 E[rho^2]^2 and Var((rho^2 - u)/2) is a
    # quarter of that.
    mean_sq = float(np.mean(second_moments))
    half_var = 2.0 * mean_sq**2 / 4.0 / len(per_split)
    return half, half_var


def _two_sided(tables: list[tuple[float, float, float, float]]) -> tuple[float, float]:
    """Half-size variance of a statistic of two samples from 2 x 2 tables (t11, t12, t21, t22)."""
    rows, cols = [], []
    for t11, t12, t21, t22 in tables:
        rows.append(((t11 + t12 - t21 - t22) / 2.0) ** 2)
        cols.append(((t11 + t21 - t12 - t22) / 2.0) ** 2)
    half = (float(np.mean(rows)) + float(np.mean(cols))) / 2.0
    half_var = (float(np.mean(rows)) ** 2 + float(np.mean(cols)) ** 2) / 2.0 / len(tables)
    return half, half_var


def _split_variances(
    real: Tensor,
    fake: Tensor,
    k: int,
    n_splits: int,
    rng: np.random.Generator,
    chunk_size: int | None,
) -> dict[str, tuple[float, float]]:
    n_half, m_half = real.shape[0] // 2, fake.shape[0] // 2
    precision, density, recall = [], [], []
    coverage: list[tuple[float, float, float, float]] = []
    for _ in range(n_splits):
        real_perm = torch.from_numpy(rng.permutation(real.shape[0])).to(real.device)
        fake_perm = torch.from_numpy(rng.permutation(fake.shape[0])).to(fake.device)
        real_halves = (real[real_perm[:n_half]], real[real_perm[n_half : 2 * n_half]])
        fake_halves = (fake[fake_perm[:m_half]], fake[fake_perm[m_half : 2 * m_half]])
        cells: list[list[PRDCResult]] = [
            [compute_prdc_details(r, f, k, chunk_size=chunk_size) for f in fake_halves]
            for r in real_halves
        ]
        # Per-fake values of all fakes (F1 then F2) against each real half.
        inside = [torch.cat([c.fake_in_real_manifold for c in row]) for row in cells]
        counts = [torch.cat([c.fake_ball_count for c in row]) for row in cells]
        # Per-real indicators of all reals (R1 then R2) against each fake half.
        recalled = [torch.cat([cells[a][b].real_recalled for a in (0, 1)]) for b in (0, 1)]
        precision.append((inside[0], inside[1]))
        density.append((counts[0], counts[1]))
        recall.append((recalled[0], recalled[1]))
        coverage.append(
            (
                cells[0][0].coverage,
                cells[0][1].coverage,
                cells[1][0].coverage,
                cells[1][1].coverage,
            )
        )
    return {
        "precision": _one_sided(precision, 1.0),
        "density": _one_sided(density, 1.0 / k),
        "recall": _one_sided(recall, 1.0),
        "coverage": _two_sided(coverage),
    }


def _sym_apply(mat: Tensor, fn: Any) -> Tensor:
    vals, vecs = torch.linalg.eigh((mat + mat.T) / 2)
    return (vecs * fn(vals)) @ vecs.T


def _trace_square_unbiased(cov: Tensor, n: int) -> float:
    # tr(S^2) overestimates tr(Sigma^2) by about tr(Sigma)^2 / n; this is the usual correction
    # (exactly unbiased for Gaussian data).
    tr_sq = float((cov * cov).sum())
    tr = float(torch.trace(cov))
    return (n - 1) ** 2 / ((n - 2) * (n + 1)) * (tr_sq - tr * tr / (n - 1))


def _fd_variance_parts(real: Tensor, fake: Tensor, rng: np.random.Generator) -> tuple[float, float]:
    """Parts of the second-order delta-method variance of FD (see the module docstring).

    Returns:
        ``(first, second)``: the first-order variance at the estimated parameters (biased
        upwards by ``2 * second``) and the variance of the second-order term. The estimate is
        ``max(first - second, second)``.
    """
    if real.device.type == "mps":  # no float64 on MPS
        real, fake = real.cpu(), fake.cpu()
    r = real.to(torch.float64)
    f = fake.to(torch.float64)
    n, m, width = r.shape[0], f.shape[0], r.shape[1]
    mu_r, mu_f = r.mean(0), f.mean(0)
    xr, xf = r - mu_r, f - mu_f
    s_r = xr.T @ xr / (n - 1)
    s_f = xf.T @ xf / (m - 1)
    diff = mu_r - mu_f
    eye = torch.eye(width, dtype=torch.float64, device=r.device)

    # Optimal-transport map between N(., S_r) and N(., S_f): T S_r T = S_f.
    floor = torch.finfo(torch.float64).eps * width
    r_vals, r_vecs = torch.linalg.eigh((s_r + s_r.T) / 2)
    r_vals = r_vals.clamp_min(floor * float(r_vals.max()))
    root_r = (r_vecs * r_vals.sqrt()) @ r_vecs.T
    inv_root_r = (r_vecs * r_vals.rsqrt()) @ r_vecs.T
    mid_root = _sym_apply(root_r @ s_f @ root_r, lambda v: v.clamp_min(0).sqrt())
    transport = inv_root_r @ mid_root @ inv_root_r
    t_vals, t_vecs = torch.linalg.eigh((transport + transport.T) / 2)
    t_vals = t_vals.clamp_min(floor * float(t_vals.max()))
    transport = (t_vecs * t_vals) @ t_vecs.T
    transport_inv = (t_vecs / t_vals) @ t_vecs.T

    # First order, at the estimated parameters (biased upwards by 2 Q).
    infl_r = 2.0 * (xr @ diff) + ((xr @ (eye - transport)) * xr).sum(1)
    infl_f = -2.0 * (xf @ diff) + ((xf @ (eye - transport_inv)) * xf).sum(1)
    first = _sample_var(infl_r) / n + _sample_var(infl_f) / m

    # Second order of the mean term: Var(|e|^2) = 2 tr(W^2), W = S_r / N + S_f / M.
    q_mean = 2.0 * (
        _trace_square_unbiased(s_r, n) / n**2
        + _trace_square_unbiased(s_f, m) / m**2
        + 2.0 * float((s_r * s_f).sum()) / (n * m)
    )

    # Second order of the Bures term. Per-sample second moments are mapped so that both sets
    # are centred on K0 = T^1/2 S_r T^1/2 = T^-1/2 S_f T^-1/2; in K0's eigenbasis the Hessian is
    # H(Z)_ab = Z_ab / (2 (g_a + g_b)).
    t_root = (t_vecs * t_vals.sqrt()) @ t_vecs.T
    t_inv_root = (t_vecs * t_vals.rsqrt()) @ t_vecs.T
    k0 = t_root @ s_r @ t_root
    g, g_vecs = torch.linalg.eigh((k0 + k0.T) / 2)
    g = g.clamp_min(floor * float(g.max()))
    pr = xr @ (t_root @ g_vecs)
    pf = xf @ (t_inv_root @ g_vecs)
    kernel = 1.0 / (g[:, None] + g[None, :])
    g_sum = float(g.sum())

    def pair_moment(a: Tensor, b: Tensor, same: bool) -> float:
        # E[<Z1, H Z2>^2] over independent samples, Z = p p^T - diag(g).
        i = rng.integers(0, a.shape[0], _FD_PAIRS)
        if same:
            j = rng.integers(0, a.shape[0] - 1, _FD_PAIRS)
            j = j + (j >= i)
        else:
            j = rng.integers(0, b.shape[0], _FD_PAIRS)
        p = a[torch.from_numpy(i).to(a.device)]
        q = b[torch.from_numpy(j).to(b.device)]
        w = p * q
        inner = 0.5 * (
            ((w @ kernel) * w).sum(1) - ((p * p).sum(1) + (q * q).sum(1)) / 2.0 + g_sum / 2.0
        )
        return float((inner * inner).mean())

    q_bures = 2.0 * (
        pair_moment(pr, pr, True) / n**2
        + pair_moment(pf, pf, True) / m**2
        + 2.0 * pair_moment(pr, pf, False) / (n * m)
    )
    return first, q_mean + q_bures


def _quantile(confidence: float, dof: float) -> float:
    from scipy.special import ndtri, stdtrit  # SciPy comes with scikit-learn

    upper = 0.5 + confidence / 2.0
    if not math.isfinite(dof) or dof > 1e6:
        return float(ndtri(upper))
    return float(stdtrit(dof, upper))


def _interval(
    value: float, var: _Variance, confidence: float, lower: float, upper: float
) -> dict[str, float]:
    factor = 2.0**-_HALF_TO_FULL_EXPONENT
    split = max(var.half, 0.0) * factor
    total = var.full + split
    split_var = var.half_var * factor**2
    # Satterthwaite: the full-size part is treated as exact, the split part as a scaled
    # chi-square with 2 E^2 / Var degrees of freedom.
    dof = 2.0 * total**2 / split_var if split_var > 0 else math.inf
    se = math.sqrt(max(total, 0.0))
    half_width = _quantile(confidence, max(dof, 1.0)) * se
    return {
        "low": min(max(value - half_width, lower), value),
        "high": max(min(value + half_width, upper), value),
        "se": se,
    }


def prdc_intervals(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    confidence: float = 0.95,
    *,
    seed: int | None = 0,
    n_splits: int = 3,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """PRDC and the Fréchet distance, each with a confidence interval for its expected value.

    The interval answers "how much would this number move on another validation set and
    another batch of samples of the same sizes": it covers the expected value of the
    statistic over independent draws of both sets with probability ``confidence``. The
    method (exact conditional variances, random half splits without replacement, and a
    second-order delta method for FD) and where it is not valid are described in the module
    documentation of :mod:`lightning_embviz.intervals`.

    Cost: one full :func:`~lightning_embviz.compute_prdc_details`, plus ``4 * n_splits``
    computations on half-size sets (each about a quarter of a full one), plus a few D x D
    eigen-decompositions for FD: about 5 times one :func:`compute_prdc` with the default
    ``n_splits=3`` (4 times with 2, 7 times with 4; measured at N = M = 5000, D = 64).

    Args:
        real_features: (N, D) array or tensor of real embeddings.
        fake_features: (M, D) array or tensor of generated embeddings, same D.
        nearest_k: k of the k-NN balls; each half needs more than k points, so
            ``1 <= k < min(N, M) // 2``.
        confidence: confidence level of the two-sided intervals, in (0, 1).
        seed: seed of the random splits (the result is deterministic for a seed); None draws
            fresh randomness.
        n_splits: number of random half splits, >= 2; more splits give a less noisy variance
            estimate (narrower intervals on average) at the cost of one full computation each.
        chunk_size: passed to :func:`~lightning_embviz.compute_prdc_details`.

    Returns:
        A dict of floats. For each metric in ``precision, recall, density, coverage, fd``: the
        point estimate under the metric's name (identical to :func:`compute_prdc` and
        :func:`frechet_distance`), ``<metric>_low`` and ``<metric>_high`` (clipped to the
        metric's range, always containing the point estimate) and ``<metric>_se`` (the
        estimated standard error). ``fd_low``, ``fd_high`` and ``fd_se`` are NaN when a set has
        no more samples than features, and NaN with a warning when a set's covariance is
        singular (a collapsed fake set). The bounds are ``value -+ t * se`` with Student's t
        on Satterthwaite's degrees of freedom (not ``1.96 * se``), clipped to the range.

    Raises:
        TypeError: on inputs that are not arrays/tensors, or arguments of the wrong type.
        ValueError: on the input errors of :func:`compute_prdc`, ``confidence`` outside
            (0, 1), ``n_splits < 2``, a negative ``seed``, or sets too small to split into
            halves of more than k points.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz.intervals import prdc_intervals
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(600, 16)).astype(np.float32)
        >>> fake = rng.normal(size=(600, 16)).astype(np.float32)
        >>> result = prdc_intervals(real, fake, nearest_k=5, confidence=0.95)
        >>> result["coverage_low"] <= result["coverage"] <= result["coverage_high"]
        True
    """
    level = _check_confidence(confidence)
    splits = _check_n_splits(n_splits)
    seed_value = _check_seed(seed)
    details = compute_prdc_details(real_features, fake_features, nearest_k, chunk_size=chunk_size)
    k = details.nearest_k
    # Checked by compute_prdc_details: integers and booleans become float64, as there.
    real = as_tensor(real_features, "real_features")
    fake = as_tensor(fake_features, "fake_features")
    smallest = min(real.shape[0], fake.shape[0])
    if splits_too_small(smallest, k):
        raise ValueError(
            f"Confidence intervals split each set into halves of more than `nearest_k={k}` "
            f"points, so they need at least {interval_min_samples(k)} samples per set; got "
            f"{real.shape[0]} real and {fake.shape[0]} fake. Use more samples or a smaller "
            "`nearest_k`."
        )
    if smallest // 2 < _MIN_HALF_PER_K * k:
        warnings.warn(
            f"Confidence intervals with `nearest_k={k}` on {smallest} samples: halves of "
            f"{smallest // 2} points are fewer than {_MIN_HALF_PER_K} * k, where the scaling "
            "from half to full size is not reliable; the intervals may be too narrow or too "
            f"wide. Use at least {2 * _MIN_HALF_PER_K * k} samples per set for trustworthy "
            "intervals.",
            stacklevel=2,
        )
    rng = np.random.default_rng(seed_value)
    split = _split_variances(real, fake, k, splits, rng, chunk_size)

    n, m = real.shape[0], fake.shape[0]
    inside = details.fake_in_real_manifold.to(torch.float64)
    counts = details.fake_ball_count.to(torch.float64) / k
    recalled = details.real_recalled.to(torch.float64)
    variances = {
        "precision": _Variance(_sample_var(inside) / m, *split["precision"]),
        "density": _Variance(_sample_var(counts) / m, *split["density"]),
        "recall": _Variance(_sample_var(recalled) / n, *split["recall"]),
        "coverage": _Variance(0.0, *split["coverage"]),
    }
    values = details.as_dict()
    ranges = {"precision": 1.0, "recall": 1.0, "coverage": 1.0, "density": math.inf}

    out: dict[str, float] = {}
    for name in PRDC_KEYS:
        bounds = _interval(values[name], variances[name], level, 0.0, ranges[name])
        out[name] = values[name]
        out[f"{name}_low"] = bounds["low"]
        out[f"{name}_high"] = bounds["high"]
        out[f"{name}_se"] = bounds["se"]

    fd = frechet_distance(real, fake)
    out["fd"] = fd
    if smallest > real.shape[1]:
        first, second = _fd_variance_parts(real, fake, rng)
        fd_var = _Variance(max(first - second, second), 0.0, 0.0)
        if math.isfinite(fd_var.full):
            bounds = _interval(fd, fd_var, level, 0.0, math.inf)
            out["fd_low"], out["fd_high"] = bounds["low"], bounds["high"]
            out["fd_se"] = bounds["se"]
        else:
            # A singular covariance (e.g. a collapsed generator: every fake the same point)
            # makes the transport map between the two Gaussians infinite.
            out["fd_low"] = out["fd_high"] = out["fd_se"] = math.nan
            warnings.warn(
                "The Fréchet distance has no confidence interval (fd_low, fd_high, fd_se are "
                "NaN): the covariance of a set is singular, as for a collapsed generator whose "
                "fakes are all (nearly) identical. Look at recall and the fake set's spread.",
                stacklevel=2,
            )
    else:
        out["fd_low"] = out["fd_high"] = out["fd_se"] = math.nan
    return out
