"""Per-group scores: which songs, prompts or identities the generator serves worst.

Many frames (rows) often come from one source: the windows of one song, the images of one
prompt or of one identity. :func:`per_group_scores` answers, per group, the questions the
four set-level numbers answer for the whole set:

- a **real group** (ids given for the real rows): ``count`` frames, ``coverage`` = fraction
  of them whose k-NN ball holds a fake, ``recall`` = fraction of them inside some fake ball.
  A song with coverage 0 is one the generator never comes near.
- a **fake group** (ids given for the fake rows, e.g. the prompt a clip was made from):
  ``count`` frames, ``precision`` = fraction of them inside some real ball, ``density`` =
  their mean real-ball count divided by k, and ``fd`` = the Fréchet distance of the group's
  frames to the *whole* real set (fadtk's per-song FAD, its ``--indiv``; NaN below 2 frames).

The balls are those of the whole sets: one :func:`~lightning_embviz.compute_prdc_details`
pass over all rows, then the per-sample results are restricted to each group. So a real
group's coverage is the mean of ``real_covered`` over its rows, and the row-weighted mean of
the group values over all groups is the set-level value.

No Lightning here; :func:`write_group_csv` writes the table with the ``csv`` module.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_numpy

__all__ = [
    "GROUP_COLUMNS",
    "GroupScore",
    "group_scores_from_details",
    "per_group_scores",
    "write_group_csv",
]

Side = Literal["real", "fake"]
GroupIds = Union[ArrayLike, Sequence[Any]]


@dataclass(frozen=True)
class GroupScore:
    """One row of the per-group table. Values that do not apply to the side are NaN.

    Attributes:
        group: the group id as given (int, str, ...).
        side: ``"real"`` (coverage and recall of its real frames) or ``"fake"``
            (precision, density and FD of its fake frames).
        count: the number of frames (rows) in the group.
        coverage: real groups: fraction of the frames whose k-NN ball holds a fake.
        recall: real groups: fraction of the frames inside at least one fake k-NN ball.
        precision: fake groups: fraction of the frames inside at least one real ball.
        density: fake groups: mean number of real balls holding a frame, divided by k.
        fd: fake groups: Fréchet distance of the frames to the whole real set (NaN when
            the group has fewer than 2 frames).
    """

    group: Any
    side: Side
    count: int
    coverage: float = math.nan
    recall: float = math.nan
    precision: float = math.nan
    density: float = math.nan
    fd: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        """The row as ``{column: value}`` in :data:`GROUP_COLUMNS` order."""
        return dict(zip(GROUP_COLUMNS, astuple(self)))


GROUP_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(GroupScore))
"""The columns of the per-group table, in order."""


def _group_ids(ids: GroupIds | None, rows: int, name: str) -> Optional[np.ndarray]:
    if ids is None:
        return None
    if isinstance(ids, (Tensor, np.ndarray)):
        arr = as_numpy(ids) if isinstance(ids, Tensor) else ids
    elif isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
        raise TypeError(
            f"`{name}` must be an array, tensor or sequence of group ids (one per row), "
            f"got {type(ids).__name__}."
        )
    else:
        arr = np.asarray(list(ids))
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must have shape ({rows},), got shape {tuple(arr.shape)}.")
    if arr.shape[0] != rows:
        raise ValueError(f"`{name}` must have one group id per row ({rows}), got {arr.shape[0]}.")
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        raise ValueError(f"`{name}` holds NaN or infinite group ids.")
    return arr


def _unique(ids: np.ndarray) -> list[Any]:
    values = np.unique(ids).tolist() if ids.dtype != object else list(dict.fromkeys(ids.tolist()))
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _worst_first(row: GroupScore) -> tuple[Any, ...]:
    # Real rows first (coverage, then recall, ascending); then fake rows (precision, then
    # density ascending, then FD descending). NaN sorts last within its side.
    def up(v: float) -> float:
        return math.inf if math.isnan(v) else v

    if row.side == "real":
        return (0, up(row.coverage), up(row.recall), str(row.group))
    fd_down = math.inf if math.isnan(row.fd) else -row.fd
    return (1, up(row.precision), up(row.density), fd_down, str(row.group))


def group_scores_from_details(
    details: Any,
    real_features: ArrayLike,
    fake_features: ArrayLike,
    real_groups: GroupIds | None = None,
    fake_groups: GroupIds | None = None,
) -> list[GroupScore]:
    """Per-group scores from an existing :func:`~lightning_embviz.compute_prdc_details` result.

    The callback already holds the details of a run; this restricts them to each group
    without a second PRDC pass. See :func:`per_group_scores` for the values and the order.

    Args:
        details: the :class:`~lightning_embviz.PRDCResult` of ``real_features`` and
            ``fake_features``.
        real_features: (N, D) real embeddings (for the shape checks).
        fake_features: (M, D) fake embeddings (for the per-group Fréchet distance).
        real_groups: (N,) group id of each real row, or None.
        fake_groups: (M,) group id of each fake row, or None.

    Returns:
        One :class:`GroupScore` per group and side, worst first.

    Raises:
        ValueError: if both group arguments are None, or counts do not match the rows.
        TypeError: if group ids are not an array, tensor or sequence.
    """
    if real_groups is None and fake_groups is None:
        raise ValueError(
            "per-group scores need `real_groups` or `fake_groups` (one id per row), got neither."
        )
    num_real = int(details.real_covered.shape[0])
    num_fake = int(details.fake_ball_count.shape[0])
    real_ids = _group_ids(real_groups, num_real, "real_groups")
    fake_ids = _group_ids(fake_groups, num_fake, "fake_groups")
    rows: list[GroupScore] = []
    if real_ids is not None:
        covered = as_numpy(details.real_covered).astype(bool)
        recalled = as_numpy(details.real_recalled).astype(bool)
        for group in _unique(real_ids):
            mask = real_ids == group
            rows.append(
                GroupScore(
                    group=group,
                    side="real",
                    count=int(mask.sum()),
                    coverage=float(covered[mask].mean()),
                    recall=float(recalled[mask].mean()),
                )
            )
    if fake_ids is not None:
        from lightning_embviz.engine.frechet import FrechetReference

        counts = as_numpy(details.fake_ball_count)
        fake_np = as_numpy(fake_features)
        if fake_np.shape[0] != num_fake:
            raise ValueError(
                f"`fake_features` has {fake_np.shape[0]} rows but the details have {num_fake}."
            )
        fit = FrechetReference(real_features) if as_numpy(real_features).shape[0] >= 2 else None
        k = float(details.nearest_k)
        for group in _unique(fake_ids):
            mask = fake_ids == group
            fd = math.nan
            if fit is not None and int(mask.sum()) >= 2:
                fd = fit.distance(fake_np[mask])
            rows.append(
                GroupScore(
                    group=group,
                    side="fake",
                    count=int(mask.sum()),
                    precision=float((counts[mask] > 0).mean()),
                    density=float((1.0 / k) * counts[mask].mean()),
                    fd=fd,
                )
            )
    rows.sort(key=_worst_first)
    return rows


def per_group_scores(
    real: ArrayLike,
    fake: ArrayLike,
    real_groups: GroupIds | None = None,
    fake_groups: GroupIds | None = None,
    nearest_k: int = 5,
) -> list[GroupScore]:
    """Coverage/recall per real group, precision/density/FD per fake group, worst first.

    One :func:`~lightning_embviz.compute_prdc_details` pass over the whole sets; each
    group's values are the per-sample results restricted to its rows:

    - real group G: ``coverage_G = mean_{x in G} 1[min_f d(x, f) < r_k(x)]``,
      ``recall_G = mean_{x in G} 1[exists f: d(x, f) < r_k(f)]``;
    - fake group H: ``precision_H = mean_{f in H} 1[exists x: d(f, x) < r_k(x)]``,
      ``density_H = (1/k) mean_{f in H} #{x: d(f, x) < r_k(x)}``,
      ``fd_H = FD(real set, frames of H)`` (NaN below 2 frames).

    Order: real groups first, lowest coverage (then recall) first; then fake groups, lowest
    precision (then density) first, ties by the larger FD. NaN sorts last.

    Args:
        real: (N, D) real embeddings.
        fake: (M, D) fake embeddings, same D.
        real_groups: (N,) group id of each real row (ints or strings: song, prompt,
            identity), or None.
        fake_groups: (M,) group id of each fake row, or None.
        nearest_k: k of the k-NN balls.

    Returns:
        A list of :class:`GroupScore`, one per group and side, worst first.

    Raises:
        ValueError: if both group arguments are None, on counts that do not match the
            rows, and on the input errors of :func:`~lightning_embviz.compute_prdc`.
        TypeError: if group ids are not an array, tensor or sequence.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz.engine.groups import per_group_scores
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(200, 8))
        >>> fake = rng.normal(size=(200, 8))
        >>> rows = per_group_scores(real, fake, real_groups=np.arange(200) % 4)
        >>> [row.count for row in rows]
        [50, 50, 50, 50]
    """
    from lightning_embviz import compute_prdc_details

    if real_groups is None and fake_groups is None:
        raise ValueError(
            "per-group scores need `real_groups` or `fake_groups` (one id per row), got neither."
        )
    details = compute_prdc_details(real, fake, nearest_k=nearest_k)
    return group_scores_from_details(details, real, fake, real_groups, fake_groups)


def write_group_csv(rows: Iterable[GroupScore], path: Union[str, Path]) -> Path:
    """Write the per-group table as CSV (header :data:`GROUP_COLUMNS`, one line per row).

    NaN is written as an empty field (pandas reads it back as NaN); floats with ``repr``
    precision, so they read back exactly.

    Args:
        rows: the rows of :func:`per_group_scores`.
        path: the file to write (its folder must exist).

    Returns:
        The path written.
    """
    out = Path(path)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(GROUP_COLUMNS)
        for row in rows:
            writer.writerow(
                "" if isinstance(v, float) and math.isnan(v) else _cell(v) for v in astuple(row)
            )
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, np.generic):
        return value.item()
    return value
