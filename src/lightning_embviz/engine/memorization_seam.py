"""What the callback and the command call for the memorization numbers.

Three steps, each usable alone:

- :func:`resolve_train`: whatever the user passed as the training set (an array or tensor,
  an embeddings file, a saved :class:`TrainReference` file, or a fitted reference) becomes a
  fitted :class:`TrainReference`, once, with one clear error when it cannot.
- :func:`memorization_scalars`: one validation run's numbers (``authenticity``,
  ``ct_score``, ``copy_fraction``) and per-fake columns (``nearest_train_index``,
  ``nearest_train_distance``). It never raises on bad data: what cannot be computed is NaN
  (index -1) and the reason comes back as one warning string for the caller to warn with.
- :func:`closest_to_train`: the rows of the ``closest_train`` gallery, the fakes closest to
  the training set (closest first) and each one's nearest training row.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Union

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_tensor, check_int
from lightning_embviz.engine.memorization import MEMORIZATION_KEYS, check_alpha
from lightning_embviz.engine.memorization_reference import (
    DEFAULT_SELF_ROWS,
    TrainReference,
    is_train_reference_file,
)

__all__ = [
    "PER_FAKE_KEYS",
    "ClosestTrain",
    "MemorizationRun",
    "TrainSource",
    "closest_to_train",
    "memorization_scalars",
    "resolve_train",
]

TrainSource = Union[ArrayLike, str, os.PathLike[str], TrainReference]
"""What ``train=`` accepts: embeddings, an embeddings file, a saved or fitted reference."""

PER_FAKE_KEYS: tuple[str, ...] = ("nearest_train_index", "nearest_train_distance")
"""The per-fake columns of :func:`memorization_scalars`, in this order."""

_SAVE_HINT = "Save one with `TrainReference(train).save(path)`"


def resolve_train(
    train: TrainSource,
    *,
    n_cells: int | None = None,
    self_rows: int = DEFAULT_SELF_ROWS,
    seed: int = 0,
    chunk_size: int | None = None,
    device: torch.device | str | None = None,
) -> TrainReference:
    """The fitted training side of the memorization numbers, from what the user passed.

    Accepted:

    - a :class:`TrainReference`: returned as it is (the options are not applied);
    - an (N, D) ``numpy.ndarray`` or ``torch.Tensor``: fitted here (a private copy);
    - a path (``str`` or ``os.PathLike``) to a file written by :meth:`TrainReference.save`,
      recognised by its content whatever its name: loaded (nothing is refitted, so
      ``n_cells``, ``self_rows`` and ``seed`` are those saved);
    - a path to an embeddings file (.npy, .npz, .pt/.pth, .csv, read by
      :func:`lightning_embviz._io.load_embeddings`, the reader of the ``embviz`` command):
      read and fitted here.

    Args:
        train: one of the above.
        n_cells: k-means cells of the C_T test; None: ``min(20, N)``.
        self_rows: training rows sampled for the copy threshold without held-out reals.
        seed: seed of the samples and of k-means.
        chunk_size: training rows per block of the nearest search; None: 2048.
        device: where a training set read from a file is kept (default: the CPU); arrays
            and tensors stay where they are.

    Returns:
        A :class:`TrainReference` ready to :meth:`~TrainReference.compare`.

    Raises:
        TypeError: ``train`` of another type (a list, a number, None), or options of the
            wrong type.
        ValueError: a path that does not exist or cannot be read as embeddings (one-line
            :class:`~lightning_embviz._io.EmbeddingFileError`), a saved RealReference (the
            real side, not a training set), a saved TrainReference of another format
            version or damaged, or embeddings that are not (N, D) with N >= 2 and finite.

    Example::

        >>> import numpy as np
        >>> ref = resolve_train(np.random.default_rng(0).normal(size=(50, 3)), n_cells=2)
        >>> resolve_train(ref) is ref, ref.num_train
        (True, 50)
    """
    if isinstance(train, TrainReference):
        return train
    if isinstance(train, (str, os.PathLike)):
        train = _from_file(Path(train), device, chunk_size)
        if isinstance(train, TrainReference):
            return train
    if isinstance(train, (np.ndarray, Tensor)):
        return TrainReference(
            train, n_cells=n_cells, self_rows=self_rows, seed=seed, chunk_size=chunk_size
        )
    raise TypeError(
        f"`train` must be an (N, D) numpy array or torch tensor of training embeddings, the "
        f"path of an embeddings file (.npy, .npz, .pt, .csv) or of a saved TrainReference, "
        f"or a TrainReference; got {type(train).__name__}."
    )


def _from_file(
    path: Path, device: torch.device | str | None, chunk_size: int | None
) -> TrainReference | Tensor:
    """A saved reference, loaded; or the (N, D) embeddings of a file, on ``device``."""
    from lightning_embviz._io import is_reference_file, load_embeddings

    if not path.exists():
        raise ValueError(
            f"`train`: {path}: no such file. Pass training embeddings (.npy, .npz, .pt, "
            f".csv) or a saved TrainReference ({_SAVE_HINT})."
        )
    if is_train_reference_file(path):
        try:
            return TrainReference.load(path, device=device, chunk_size=chunk_size)
        except (ValueError, TypeError):  # its own messages: version, fingerprint, entries
            raise
        except Exception as err:  # damaged bytes (zip CRC, truncated member, bad pickle)
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise ValueError(
                f"`train`: {path}: a saved TrainReference that cannot be read ({reason}); "
                f"fit and save it again. {_SAVE_HINT}."
            ) from None
    if is_reference_file(path):
        raise ValueError(
            f"`train`: {path} is a saved RealReference (the real side, from `embviz "
            "reference` or RealReference.save), not a training set. Pass the training "
            f"embeddings or a saved TrainReference ({_SAVE_HINT})."
        )
    embeddings = torch.from_numpy(load_embeddings(path, width_source="the training set"))
    return embeddings if device is None else embeddings.to(device)


class MemorizationRun(NamedTuple):
    """One validation run's memorization numbers, ready to log.

    Attributes:
        scalars: ``{"authenticity", "ct_score", "copy_fraction"}`` as Python floats (NaN for
            what could not be computed).
        per_fake: ``{"nearest_train_index": (M,) int64 (-1 where unknown),
            "nearest_train_distance": (M,) float64 (NaN where unknown)}``, on the CPU, one
            entry per row of ``fake`` as passed (rows with NaN/Inf included).
        warning: why some value is NaN or some rows were left out, as one message for the
            caller to warn with (``rank_zero_warn``); None when all went well.
    """

    scalars: dict[str, float]
    per_fake: dict[str, Tensor]
    warning: str | None


def memorization_scalars(
    reference: TrainReference,
    fake: ArrayLike,
    heldout: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    min_cell_fakes: int = 20,
    distributed: bool = False,
) -> MemorizationRun:
    """The callback's memorization scalars and per-fake columns for one validation run.

    The values are those of ``reference.compare_details(fake, heldout, ...)`` (see
    :func:`~lightning_embviz.memorization.compute_memorization` for the formulas). Bad data
    never raises: fake rows holding NaN/Inf are left out (index -1, distance NaN in their
    rows), as are held-out rows holding NaN/Inf; fakes or held-out reals of another width
    than the training set, no usable fake (or held-out real, when ``heldout`` is given: the
    copy threshold does not silently switch to the training set's), or a failing
    computation give NaN everywhere. Each
    such case, and a NaN ``ct_score`` (no held-out reals, no usable cell), is explained in
    :attr:`MemorizationRun.warning`.

    Args:
        reference: the fitted training side (:func:`resolve_train`).
        fake: (M, D) generated embeddings of this run.
        heldout: (H, D) real embeddings never trained on (the validation reals), or None
            (then ``ct_score`` is NaN and the copy threshold comes from the training set).
        alpha: quantile level of the copy threshold, in (0, 1).
        min_cell_fakes: fakes a k-means cell needs to enter C_T.
        distributed: every rank of the default process group calls this with the same
            (gathered) rows and searches its share of the training set
            (:func:`~lightning_embviz.engine.memorization_distributed.compare_memorization_distributed`);
            every rank gets the single-process values. The row checks depend on the data
            alone, so the ranks take the same steps; a failing rank gives NaN on every rank.

    Returns:
        A :class:`MemorizationRun`: ``(scalars, per_fake, warning)``.

    Raises:
        TypeError, ValueError: only for ``alpha`` and ``min_cell_fakes`` (configuration, not
            data): checked before anything is computed.

    Example::

        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> ref = TrainReference(rng.normal(size=(400, 4)), n_cells=2)
        >>> fake = ref.train[:40].numpy() + 1e-6
        >>> fake[3] = np.nan
        >>> run = memorization_scalars(ref, fake, rng.normal(size=(200, 4)))
        >>> run.scalars["copy_fraction"], run.per_fake["nearest_train_index"][:5].tolist()
        (1.0, [0, 1, 2, -1, 4])
        >>> run.warning
        'memorization: 1 of 40 fakes hold NaN or Inf (first: row 3); they are left out.'
    """
    a = check_alpha(alpha)
    min_fakes = check_int(min_cell_fakes, "min_cell_fakes", minimum=1)
    notes: list[str] = []
    scalars = dict.fromkeys(MEMORIZATION_KEYS, math.nan)
    rows = 0
    index = distance = None
    compare = _compare_distributed if distributed else TrainReference.compare_details
    try:
        f = as_tensor(fake, "fake")
        rows = int(f.shape[0]) if f.ndim >= 1 else 0
        keep = _usable_rows(f, "fakes", reference.width, notes)
        h, h_keep = None, None
        if heldout is not None and keep is not None:
            h = as_tensor(heldout, "heldout")
            h_keep = _usable_rows(h, "held-out reals", reference.width, notes)
            keep = None if h_keep is None else keep
        if keep is not None:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = compare(
                    reference,
                    f[keep.to(f.device)],
                    None if h is None or h_keep is None else h[h_keep.to(h.device)],
                    alpha=a,
                    min_cell_fakes=min_fakes,
                )
            notes.extend(f"memorization: {w.message}" for w in caught)
            scalars = result.as_dict()
            index = torch.full((rows,), -1, dtype=torch.int64)
            distance = torch.full((rows,), math.nan, dtype=torch.float64)
            index[keep] = result.nearest_train_index.cpu()
            distance[keep] = result.nearest_train_distance.cpu()
    except Exception as err:  # bad data never ends a training run
        reason = " ".join(str(err).split())[:300] or type(err).__name__
        notes.append(f"memorization: every value is NaN ({type(err).__name__}: {reason}).")
        scalars = dict.fromkeys(MEMORIZATION_KEYS, math.nan)
        index = distance = None
    if index is None or distance is None:
        index = torch.full((rows,), -1, dtype=torch.int64)
        distance = torch.full((rows,), math.nan, dtype=torch.float64)
    per_fake = {"nearest_train_index": index, "nearest_train_distance": distance}
    return MemorizationRun(scalars, per_fake, " ".join(notes) or None)


def _compare_distributed(reference: TrainReference, *args: Any, **kwargs: Any) -> Any:
    from lightning_embviz.engine.memorization_distributed import (
        compare_memorization_distributed,
    )

    return compare_memorization_distributed(reference, *args, **kwargs)


def _usable_rows(t: Tensor, what: str, width: int, notes: list[str]) -> Tensor | None:
    """(R,) CPU mask of the finite rows of ``t``; None (with a note) when none can be used."""
    if t.ndim != 2 or t.shape[1] != width:
        notes.append(
            f"memorization: the {what} have shape {tuple(t.shape)} but the training set has "
            f"{width} features per row; every value is NaN."
        )
        return None
    keep = torch.isfinite(t).all(dim=1).cpu()
    bad = int((~keep).sum())
    if bad == t.shape[0]:
        notes.append(
            f"memorization: no usable {what} (all {bad} rows hold NaN or Inf, or there are "
            "none); every value is NaN."
        )
        return None
    if bad:
        first = int(torch.nonzero(~keep)[0, 0])
        notes.append(
            f"memorization: {bad} of {t.shape[0]} {what} hold NaN or Inf (first: row "
            f"{first}); they are left out."
        )
    return keep


class ClosestTrain(NamedTuple):
    """The rows of the ``closest_train`` gallery, closest to the training set first.

    Attributes:
        fake_index: (G,) int64 rows of the fakes shown.
        train_index: (G,) int64 nearest training row of each (the image beside it).
        distance: (G,) float64 distance between the two (for the captions).
    """

    fake_index: Tensor
    train_index: Tensor
    distance: Tensor


def closest_to_train(per_fake: dict[str, Tensor], count: int) -> ClosestTrain:
    """The ``count`` fakes closest to the training set, closest first, with their neighbour.

    Fakes whose nearest training row is unknown (index -1 or distance NaN, see
    :func:`memorization_scalars`) are never shown. Equal distances keep the lower fake row
    first.

    Args:
        per_fake: :attr:`MemorizationRun.per_fake` (``nearest_train_index`` (M,) int64,
            ``nearest_train_distance`` (M,) float64).
        count: the most fakes to show (the gallery size), >= 0.

    Returns:
        A :class:`ClosestTrain` of G = min(count, known fakes) rows, on the CPU.

    Raises:
        TypeError, ValueError: ``count`` not an int >= 0, or ``per_fake`` without the two
            columns or with columns of different lengths.

    Example::

        >>> import torch
        >>> per_fake = {
        ...     "nearest_train_index": torch.tensor([7, -1, 2, 5]),
        ...     "nearest_train_distance": torch.tensor([0.3, float("nan"), 0.1, 0.3]),
        ... }
        >>> closest_to_train(per_fake, 2).fake_index.tolist()
        [2, 0]
    """
    size = check_int(count, "count", minimum=0)
    missing = [key for key in PER_FAKE_KEYS if key not in per_fake]
    if missing:
        raise ValueError(
            f"`per_fake` lacks {', '.join(missing)}; pass MemorizationRun.per_fake "
            "(memorization_scalars)."
        )
    index = per_fake["nearest_train_index"].detach().cpu().to(torch.int64).reshape(-1)
    dist = per_fake["nearest_train_distance"].detach().cpu().to(torch.float64).reshape(-1)
    if index.shape != dist.shape:
        raise ValueError(
            f"`per_fake` columns differ in length: nearest_train_index has {index.numel()} "
            f"rows, nearest_train_distance {dist.numel()}."
        )
    known = torch.nonzero((index >= 0) & ~torch.isnan(dist)).reshape(-1)
    order = torch.sort(dist[known], stable=True).indices[:size]
    rows = known[order]
    return ClosestTrain(rows, index[rows], dist[rows])
