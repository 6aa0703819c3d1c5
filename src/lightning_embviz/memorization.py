"""Memorization and data copying: how close the generated samples lie to the training set.

Precision, recall, density and coverage compare fakes with held-out reals; none of them can
tell a generator that reproduces its training samples from one that generalizes. The numbers
here compare the fakes with the *training* set, on the same exact nearest-neighbour engine:

- **nearest train neighbour** of every fake (:func:`nearest_train`): index and Euclidean
  distance, exact (ties go to the lower training index), in memory bounded whatever the
  training set's size.
- ``authenticity`` (Alaa et al., ICML 2022): the fraction of fakes farther from their
  nearest training sample than that sample is from its own nearest other one.
- ``ct_score`` (Meehan, Chaudhuri and Dasgupta, AISTATS 2020, the C_T data-copying test).
  About 0 for an honest generator, strongly negative when it copies, positive when it
  underfits. Needs held-out reals (NaN without).
- ``copy_fraction``: the fraction of fakes closer to the training set than the
  ``alpha``-quantile of the held-out reals' nearest-train distances. About ``alpha`` when
  honest.

The formulas are in :func:`compute_memorization`. This module is the public face; the work
is done in the engine: :mod:`~lightning_embviz.engine.nearest_train` (the exact search),
:mod:`~lightning_embviz.engine.memorization` (the definitions),
:mod:`~lightning_embviz.engine.memorization_reference` (:class:`TrainReference`, fitted
once, saved and loaded) and :mod:`~lightning_embviz.engine.memorization_seam` (what the
callback and the command call: training sets from files, one validation run's numbers).
"""

from __future__ import annotations

from lightning_embviz._arrays import ArrayLike
from lightning_embviz.engine.memorization import MEMORIZATION_KEYS, MemorizationResult
from lightning_embviz.engine.memorization_reference import (
    DEFAULT_SELF_ROWS,
    FORMAT_VERSION,
    TrainReference,
)
from lightning_embviz.engine.nearest_train import nearest_train

__all__ = [
    "FORMAT_VERSION",
    "MEMORIZATION_KEYS",
    "MemorizationResult",
    "TrainReference",
    "compute_memorization",
    "compute_memorization_details",
    "nearest_train",
]


def compute_memorization_details(
    train: ArrayLike,
    fake: ArrayLike,
    heldout: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    n_cells: int | None = None,
    min_cell_fakes: int = 20,
    self_rows: int = DEFAULT_SELF_ROWS,
    seed: int = 0,
    chunk_size: int | None = None,
) -> MemorizationResult:
    """:func:`compute_memorization` with the per-sample results behind the numbers.

    Per fake: its nearest training row and distance, that row's own nearest-neighbour
    distance, whether the fake is authentic and whether it counts as a copy, and its cell;
    per held-out real: its nearest training row and distance; per cell: Z, counts, used.

    Returns:
        A :class:`MemorizationResult`; tensors on ``train``'s device (cell data on the CPU).
    """
    reference = TrainReference(
        train, n_cells=n_cells, self_rows=self_rows, seed=seed, chunk_size=chunk_size
    )
    return reference.compare_details(fake, heldout, alpha=alpha, min_cell_fakes=min_cell_fakes)


def compute_memorization(
    train: ArrayLike,
    fake: ArrayLike,
    heldout: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    n_cells: int | None = None,
    min_cell_fakes: int = 20,
    self_rows: int = DEFAULT_SELF_ROWS,
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Does the generator copy its training data? Authenticity, C_T and copy fraction.

    With training set T (N rows), fakes F (M rows), held-out reals H (never trained on),
    Euclidean distance d, ``x*(q)`` the nearest training sample of q (lowest index on ties)
    and ``rho(x) = min over x' in T, x' != x of d(x, x')`` (duplicates count, at 0):

    - ``authenticity = mean over f in F of 1[ d(f, x*(f)) > rho(x*(f)) ]`` (Alaa et al.,
      2022; dgm-eval's AuthPct / 100). 1: every fake is farther from the training set than
      its nearest training sample's own neighbour; low values mean near-copies.
    - ``ct_score``: C_T of Meehan et al. (2020). K cells by k-means on T. For each cell c
      holding at least ``min_cell_fakes`` fakes and one held-out real, the Mann-Whitney U
      of ``{d(f, T) : f in F_c}`` against ``{d(h, T) : h in H_c}``, Z-scored under the null
      (``(U - m n / 2 + 1/2) / sqrt(m n (m + n + 1) / 12)``); ``ct_score`` is the average of
      those Z weighted by each cell's share ``|H_c| / |H|``. About 0 (spread about
      ``1 / sqrt(K)``) for an honest generator, strongly negative for copying, positive for
      underfitting. NaN (with a warning) without ``heldout`` or without a usable cell.
      Distances are to the whole training set (the authors' code uses the cell's training
      samples only; the two agree away from cell borders).
    - ``copy_fraction = mean over f of 1[ d(f, T) < q_alpha ]``, q_alpha the ``alpha``-quantile
      (NumPy's linear interpolation) of ``{d(h, T) : h in H}``, or without ``heldout`` of
      ``{rho(x)}`` over ``self_rows`` sampled training rows. About ``alpha`` when honest.

    Args:
        train: (N, D) training embeddings, N >= 2.
        fake: (M, D) generated embeddings.
        heldout: (H, D) real embeddings never trained on (e.g. validation reals), or None.
        alpha: quantile level of the copy threshold, in (0, 1).
        n_cells: k-means cells; None: ``min(20, N)``.
        min_cell_fakes: fakes a cell needs to enter C_T (Meehan et al.'s tau = 20 / M).
        self_rows: training rows sampled for the threshold without ``heldout``.
        seed: seed of the samples and of k-means.
        chunk_size: training rows per block of the nearest search; None: 2048.

    Returns:
        ``{"authenticity", "ct_score", "copy_fraction"}`` as Python floats.

    Raises:
        TypeError: inputs that are not arrays/tensors of numbers; options of the wrong type.
        ValueError: shapes other than (N, D), different D, N < 2, NaN/Inf rows, ``alpha``
            outside (0, 1), options out of range.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(1)
        >>> train = rng.normal(size=(3000, 4))
        >>> out = compute_memorization(train, train[:300] + 1e-4, rng.normal(size=(600, 4)))
        >>> out["authenticity"], out["copy_fraction"], out["ct_score"] < -5
        (0.0, 1.0, True)
    """
    return compute_memorization_details(
        train,
        fake,
        heldout,
        alpha=alpha,
        n_cells=n_cells,
        min_cell_fakes=min_cell_fakes,
        self_rows=self_rows,
        seed=seed,
        chunk_size=chunk_size,
    ).as_dict()
