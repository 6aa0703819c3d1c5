"""Precision, recall, density and coverage of two sets, and per class.

:func:`compute_prdc` and :func:`compute_prdc_details` check their inputs
(:func:`~lightning_embviz.engine.inputs.check_pair`) and run the path of
``RealReference(real, k).compare(fake)`` through
:class:`~lightning_embviz.engine.reference.ReferenceCore`: one code path, identical results.
:func:`per_class_prdc` splits the per-sample results by class. The public face is
:mod:`lightning_embviz.metrics`, which re-exports them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lightning_embviz._arrays import ArrayLike, as_numpy
from lightning_embviz.engine.inputs import check_chunk, check_pair
from lightning_embviz.engine.reference import ReferenceCore
from lightning_embviz.engine.results import PRDCResult

__all__ = ["class_order", "compute_prdc", "compute_prdc_details", "per_class_prdc"]


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
    real, fake, k = check_pair(real_features, fake_features, nearest_k)
    chunk = check_chunk(chunk_size)
    return ReferenceCore.fit(real, (k,), chunk).results(fake, (k,), chunk)[k]


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
    real, fake, k = check_pair(real_features, fake_features, nearest_k)
    chunk = check_chunk(chunk_size)
    return ReferenceCore.fit(real, (k,), chunk).metrics(fake, (k,), chunk)[k]


def class_order(*label_arrays: np.ndarray | None) -> list[Any]:
    """The classes of one or more label arrays, sorted (by ``str`` where they do not compare)."""
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
    for c in class_order(rl, fl):
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
