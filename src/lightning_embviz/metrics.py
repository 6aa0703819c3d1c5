"""Precision, recall, density, coverage and the Fréchet distance, in pure torch.

No Lightning import here: these functions are the engine behind the callback and the
``embviz`` command, and they are usable on their own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import PRDC_KEYS, ArrayLike, as_features, as_numpy, check_int
from lightning_embviz.reference import (
    PRDCResult,
    RealReference,
    _check_chunk,
    _check_size,
)

__all__ = [
    "PRDC_KEYS",
    "PRDCResult",
    "RealReference",
    "compute_prdc",
    "compute_prdc_details",
    "frechet_distance",
    "per_class_prdc",
]


def _validate_pair(real: Any, fake: Any, nearest_k: Any) -> tuple[Tensor, Tensor, int]:
    k = check_int(nearest_k, "nearest_k", minimum=1)
    r = as_features(real, "real_features")
    f = as_features(fake, "fake_features")
    if r.device.type == "mps":  # no float64 on MPS: the exact re-checks run on the CPU
        r, f = r.cpu(), f.cpu()
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`real_features` and `fake_features` must have the same width D, got "
            f"{r.shape[1]} and {f.shape[1]} (shapes {tuple(r.shape)} and {tuple(f.shape)})."
        )
    if r.device != f.device:
        raise ValueError(
            f"`real_features` and `fake_features` must be on the same device, got {r.device} "
            f"and {f.device}."
        )
    for name, t in (("real_features", r), ("fake_features", f)):
        _check_size(k, t.shape[0], name)
    return r, f, k


def compute_prdc_details(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    *,
    chunk_size: int | None = None,
) -> PRDCResult:
    """Compute PRDC and keep the per-sample results behind the four numbers.

    Same arguments and same values as :func:`compute_prdc`; see there for the definitions.
    Per sample: the k-NN radii, which reals are covered and recalled, how many real balls
    hold each fake, each real's nearest fake (distance, index, and distance relative to the
    real's radius: below 1 exactly when covered) and each fake's nearest real ball edge
    (``min_x d(f, x) / r_k(x)``: below 1 exactly when the fake is in the real manifold).
    All are exact, rounded as the reference rounds distances; finding the nearest samples
    adds a few passes over each block of the real-fake distances.

    Returns:
        A :class:`PRDCResult`. Per-sample tensors live on the input's device.
    """
    real, fake, k = _validate_pair(real_features, fake_features, nearest_k)
    chunk = _check_chunk(chunk_size)
    reference = RealReference._from_checked(real, (k,), chunk)
    return reference._results(fake, (k,), chunk)[k]


def compute_prdc(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Precision, recall, density and coverage of a fake set against a real set.

    A drop-in replacement for ``prdc.compute_prdc`` (Naeem et al., ICML 2020): the same
    counts on every input, computed in chunks on the tensors' device, never holding an
    (N, N) matrix. With real set R (N points), fake set F (M points), Euclidean distance d
    and r_k(x) the distance from x to its k-th nearest neighbour in its own set (not counting
    itself; exact duplicates count as neighbours at distance 0):

    - precision = mean_{f in F} 1[ exists x in R : d(f, x) < r_k(x) ]
    - recall    = mean_{x in R} 1[ exists f in F : d(x, f) < r_k(f) ]
    - density   = (1/k) mean_{f in F} #{ x in R : d(f, x) < r_k(x) }
    - coverage  = mean_{x in R} 1[ min_f d(x, f) < r_k(x) ]

    Distances are rounded exactly as the reference rounds them (float32 when both inputs
    are float32, float64 otherwise, half precision included, as scikit-learn does) and
    every comparison near a threshold is re-checked in float64, so results do not depend on
    chunk size, thread count, device or row order.

    Args:
        real_features: (N, D) array or tensor of real embeddings, any float dtype.
        fake_features: (M, D) array or tensor of generated embeddings, same D.
        nearest_k: k of the k-NN balls, 1 <= k < min(N, M).
        chunk_size: rows per block (memory O((N + M) * chunk_size)); None picks one.

    Returns:
        ``{"precision": float, "recall": float, "density": float, "coverage": float}``.

    Raises:
        TypeError: if an input is not an array/tensor, or ``nearest_k`` is not an int.
        ValueError: on shapes other than (N, D), different widths, empty sets, NaN/Inf
            rows, or ``nearest_k`` outside ``[1, min(N, M) - 1]``.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz import compute_prdc
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(1000, 64)).astype(np.float32)
        >>> fake = rng.normal(size=(1000, 64)).astype(np.float32)
        >>> sorted(compute_prdc(real, fake, nearest_k=5))
        ['coverage', 'density', 'precision', 'recall']
    """
    real, fake, k = _validate_pair(real_features, fake_features, nearest_k)
    chunk = _check_chunk(chunk_size)
    return RealReference._from_checked(real, (k,), chunk)._metrics(fake, (k,), chunk)[k]


def _covariance64(x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.to(torch.float64)
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, xc


def _sqrt_psd(mat: Tensor) -> Tensor:
    vals, vecs = torch.linalg.eigh(mat)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(real: ArrayLike, fake: ArrayLike) -> float:
    """Fréchet distance between Gaussians fitted to two sets of embeddings (the FID formula).

    ``FD = |mu_r - mu_f|^2 + tr(S_r) + tr(S_f) - 2 tr((S_r S_f)^(1/2))`` with unbiased
    covariances (``np.cov`` convention). The trace term is computed without a matrix square
    root of a non-symmetric product: as the nuclear norm of ``X_r X_f^T`` when the sets are
    smaller than the width (exact for singular covariances, N < D), otherwise through the
    eigenvalues of the symmetric ``L^T S_f L`` with ``S_r = L L^T`` (or of
    ``S_r^(1/2) S_f S_r^(1/2)`` when ``S_r`` is singular). Computed in float64.

    Args:
        real: (N, D) array or tensor, N >= 2.
        fake: (M, D) array or tensor, M >= 2, same D.

    Returns:
        The Fréchet distance as a Python float (>= 0).

    Raises:
        ValueError: on shapes other than (N, D), different widths, fewer than 2 rows, or
            NaN/Inf values.
    """
    r = as_features(real, "real")
    f = as_features(fake, "fake")
    if r.shape[1] != f.shape[1]:
        raise ValueError(
            f"`real` and `fake` must have the same width D, got {r.shape[1]} and {f.shape[1]}."
        )
    for name, t in (("real", r), ("fake", f)):
        if t.shape[0] < 2:
            raise ValueError(f"`{name}` needs at least 2 rows for a covariance, got {t.shape[0]}.")
    if r.device != f.device:
        f = f.to(r.device)
    mu_r, xr = _covariance64(r)
    mu_f, xf = _covariance64(f)
    nr, nf, width = r.shape[0] - 1, f.shape[0] - 1, r.shape[1]
    diff = mu_r - mu_f
    tr_r = float((xr * xr).sum()) / nr
    tr_f = float((xf * xf).sum()) / nf
    if min(r.shape[0], f.shape[0]) < width:
        # tr((S_r S_f)^1/2) = sum of singular values of X_r X_f^T / sqrt(nr nf).
        cross = (xr @ xf.T) / np.sqrt(nr * nf)
        tr_cov = float(torch.linalg.svdvals(cross).sum())
    else:
        s_r = (xr.T @ xr) / nr
        s_f = (xf.T @ xf) / nf
        # S_r S_f is similar to the symmetric L^T S_f L (S_r = L L^T, Cholesky), whose
        # eigenvalues alone are needed; a singular S_r falls back to S_r^1/2 S_f S_r^1/2.
        chol, info = torch.linalg.cholesky_ex(s_r)
        if int(info) == 0:
            mid = chol.T @ s_f @ chol
        else:
            root = _sqrt_psd(s_r)
            mid = root @ s_f @ root
        mid = (mid + mid.T) / 2
        tr_cov = float(torch.linalg.eigvalsh(mid).clamp_min(0).sqrt().sum())
    value = float(diff @ diff) + tr_r + tr_f - 2.0 * tr_cov
    return max(value, 0.0)


def _class_order(*label_arrays: np.ndarray | None) -> list[Any]:
    values: set[Any] = set()
    for arr in label_arrays:
        if arr is not None:
            values.update(np.unique(arr).tolist())
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def per_class_prdc(
    details: PRDCResult,
    real_labels: ArrayLike,
    fake_labels: ArrayLike | None = None,
) -> dict[Any, dict[str, float]]:
    """Per-class coverage and recall (real labels), precision and density (fake labels).

    For class c: ``coverage_c`` = fraction of the reals of class c whose k-NN ball holds a
    fake, ``recall_c`` the same with ``real_recalled``; with fake labels, ``precision_c`` =
    fraction of the fakes of class c inside some real ball, ``density_c`` = their mean ball
    count divided by k. Also ``num_real`` and ``num_fake`` per class. A class where coverage
    drops towards 0 is one the generator collapsed away from.

    Args:
        details: :func:`compute_prdc_details` of the two sets.
        real_labels: (N,) class of each real sample.
        fake_labels: (M,) class of each fake sample (e.g. a classifier's prediction), or None.

    Returns:
        ``{class: {"num_real": ..., "coverage": ..., "recall": ..., ...}}`` in sorted class
        order (NaN where a class has no sample of that set).

    Raises:
        ValueError: if the label counts do not match the sets.
    """
    return _per_class(
        _labels_np(real_labels, details.real_covered.shape[0], "real_labels"),
        as_numpy(details.real_covered).astype(bool),
        as_numpy(details.real_recalled).astype(bool),
        None
        if fake_labels is None
        else _labels_np(fake_labels, details.fake_ball_count.shape[0], "fake_labels"),
        as_numpy(details.fake_ball_count),
        details.nearest_k,
    )


def _labels_np(labels: ArrayLike, rows: int, name: str) -> np.ndarray:
    out = as_numpy(labels).reshape(-1)
    if out.shape[0] != rows:
        raise ValueError(f"`{name}` must have one label per sample ({rows}), got {out.shape[0]}.")
    return out


def _per_class(
    rl: np.ndarray,
    covered: np.ndarray,
    recalled: np.ndarray | None,
    fl: np.ndarray | None,
    counts: np.ndarray | None,
    nearest_k: int | None,
) -> dict[Any, dict[str, float]]:
    """The arithmetic of :func:`per_class_prdc` on NumPy arrays (also behind plotting)."""
    out: dict[Any, dict[str, float]] = {}
    for c in _class_order(rl, fl):
        row: dict[str, float] = {}
        in_r = rl == c
        row["num_real"] = float(in_r.sum())
        row["coverage"] = float(covered[in_r].mean()) if in_r.any() else float("nan")
        if recalled is not None:
            row["recall"] = float(recalled[in_r].mean()) if in_r.any() else float("nan")
        if fl is not None and counts is not None:
            in_f = fl == c
            row["num_fake"] = float(in_f.sum())
            row["precision"] = float((counts[in_f] > 0).mean()) if in_f.any() else float("nan")
            if nearest_k:
                row["density"] = (
                    float(counts[in_f].mean() / nearest_k) if in_f.any() else float("nan")
                )
        out[c] = row
    return out
