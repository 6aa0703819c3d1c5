"""The memorization numbers: authenticity, C_T and copy fraction, from nearest-train distances.

Given each fake's nearest training sample and distance (:mod:`.nearest_train`), the
definitions here turn them into the three numbers of
:func:`lightning_embviz.memorization.compute_memorization`:

- ``authenticity`` (Alaa et al., ICML 2022, "AuthPct" as dgm-eval computes it, as a fraction
  instead of a percentage): the fraction of fakes f whose distance to their nearest training
  sample x* is larger than x*'s distance to its own nearest other training sample.
- ``ct_score`` (Meehan, Chaudhuri and Dasgupta, AISTATS 2020, the C_T data-copying test):
  k-means cells fitted on the training set; in each cell a Mann-Whitney U test of the fakes'
  nearest-train distances against the held-out reals' ones, Z-scored; the cells' Z averaged,
  weighted by their share of the held-out set. Cells with fewer than ``min_cell_fakes``
  fakes, or no held-out sample, are left out (:func:`ct_statistic`).
- ``copy_fraction``: the fraction of fakes closer to the training set than the
  ``alpha``-quantile of the held-out reals' nearest-train distances (without a held-out set:
  of the training samples' leave-one-out nearest distances) (:func:`copy_threshold`).

The fitted training side that supplies the distances and cells is
:class:`~lightning_embviz.engine.memorization_reference.TrainReference`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "MEMORIZATION_KEYS",
    "MemorizationResult",
    "check_alpha",
    "copy_threshold",
    "ct_statistic",
    "mann_whitney_z",
]

MEMORIZATION_KEYS: tuple[str, ...] = ("authenticity", "ct_score", "copy_fraction")
"""The keys of :func:`~lightning_embviz.memorization.compute_memorization`'s dict, in order."""


def check_alpha(alpha: Any) -> float:
    """``alpha`` as a float in (0, 1); TypeError for a non-number, ValueError out of range."""
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


def mann_whitney_z(fake_d: np.ndarray, held_d: np.ndarray) -> float:
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


def ct_statistic(
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
        z[cell] = mann_whitney_z(fd[fc == cell], hd[hc == cell])
    weights = held_count[used] / len(hd)
    if not used.any():
        warnings.warn(
            f"ct_score is NaN: no k-means cell holds at least min_cell_fakes={min_fakes} fakes "
            f"and a held-out sample ({len(fd)} fakes over {k} cells). Pass more fakes, fewer "
            "cells (`n_cells=`) or a smaller `min_cell_fakes`.",
            UserWarning,
            stacklevel=5,
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


def copy_threshold(pool: Tensor, alpha: float) -> float:
    """The copy threshold: the ``alpha``-quantile of nearest-train distances.

    Args:
        pool: (H,) float64 nearest-train distances of the held-out reals (or the training
            rows' leave-one-out ones).
        alpha: quantile level in (0, 1) (checked by :func:`check_alpha`).

    Returns:
        NumPy's linearly interpolated quantile, as a Python float.
    """
    return float(np.quantile(pool.cpu().numpy(), alpha))
