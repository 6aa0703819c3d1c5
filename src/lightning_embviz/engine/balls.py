"""Clipped density and coverage, realism and rarity scores on exact k-NN balls.

:func:`clipped_density_coverage` (Salvy, Talbot & Thirion, 2025), :func:`realism_score`
(Kynkäänniemi et al., 2019) and :func:`rarity_score` (Han et al., 2022) on the engine's exact
k-NN radii and ball tests (the same decision procedure as the real-fake pass); re-exported by
:mod:`lightning_embviz.suite` and :mod:`lightning_embviz.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.special import gammaln
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features
from lightning_embviz.engine.cross import cross_ball_tests
from lightning_embviz.engine.exact import KEY_ABS_MARGIN as _KEY_ABS_MARGIN
from lightning_embviz.engine.exact import KEY_MARGIN as _KEY_MARGIN
from lightning_embviz.engine.exact import exact_squared_distances, pair_mode, round_key
from lightning_embviz.engine.exact import round_up32 as _up32
from lightning_embviz.engine.frames import frame_scale, max_abs_centered, mean64, to_frame
from lightning_embviz.engine.gemm import gemm_tau as _gemm_tau
from lightning_embviz.engine.inputs import (
    check_nearest_k,
    check_size,
    engine_device,
    same_width,
)
from lightning_embviz.engine.reference import RealReference, ReferenceCore

__all__ = ["clipped_density_coverage", "rarity_score", "realism_score"]

_ROWS = 2048  # rows converted to float32 at a time (bounded temporaries)
_TILE_ROWS = 512  # real rows per tile of the ball pass
_TILE_ELEMENTS = 8 << 20  # float32 estimates per tile of the ball pass (32 MiB)
_MAX_PENDING = 1 << 22  # pairs awaiting an exact re-check before they are settled


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
    k = check_nearest_k(nearest_k)
    if isinstance(real, RealReference):
        return real.real, real.real_radii(k), k  # raises if k was not fitted
    r = engine_device(as_features(real, "real_features"))
    check_size(k, r.shape[0], "real_features")
    return r, ReferenceCore.fit(r, (k,), chunk).radii[0], k


def _real_part(real: Tensor, radii: Tensor, k: int) -> tuple[Tensor, float]:
    """The clipped radii and ``mean_y min(1, c_R(y)/k)``: the real set's own part."""
    clipped = radii.clamp_max(float(np.median(radii.cpu().numpy())))
    real_stats = _ball_pass(real, real, clipped.unsqueeze(0), pair_mode(real.dtype, real.dtype))
    own = (clipped > 0).to(torch.int64)  # each real point lies in its own non-empty ball
    real_counts = real_stats.col_count[0] - own
    return clipped, float((real_counts.to(torch.float64) / k).clamp_max(1.0).mean())


def _fake_side(real: Tensor, fake: Any) -> Tensor:
    f = engine_device(as_features(fake, "fake_features"))
    same_width(real, f, ("real_features", "fake_features"))
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
    if isinstance(real_features, RealReference):  # kept with the reference, once per k
        part = real_features.kept(("clipped_real_part", k), lambda: _real_part(real, radii, k))
    else:
        part = _real_part(real, radii, k)
    clipped, real_part = part
    stats = _ball_pass(real, fake, torch.stack([clipped, radii]), pair_mode(real.dtype, fake.dtype))
    fake_part = float((stats.col_count[0].to(torch.float64) / k).clamp_max(1.0).mean())
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
