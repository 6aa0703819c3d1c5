"""Which samples: the missed reals, the outlier fakes, and per-sample tables.

The metric engine decides every indicator (:class:`~lightning_embviz.metrics.PRDCResult`);
this module only selects and orders samples from it and lays its per-sample results out as
tables. No Lightning and no matplotlib here.

- :func:`missed_real_order`: the reals whose own k-NN ball holds no fake (exactly those
  that coverage counts as missed), most clearly missed first.
- :func:`outlier_fake_order`: the fakes outside every real ball (exactly those that
  precision counts as misses), farthest from the real manifold first.
- :func:`deepest_fake_order`: the fakes inside the most real balls (a contrast row).
- :func:`sample_tables`, :func:`write_csv`, :func:`markdown_summary`: one row per sample,
  as columns of NumPy arrays, a CSV file pandas reads back with the right dtypes, and a short
  markdown summary for TensorBoard's text plugin.

The orders are decided by the engine's own indicators (``real_covered``,
``fake_ball_count``), never by re-comparing ratios with 1, so a gallery shows exactly the
samples the metrics count. The ratios only sort them. Ties are broken the same way every
time, so a gallery does not change between runs on the same data.

Sorting rule for a ratio (descending): finite values largest first, then ``+inf`` (a
ball of radius 0: k exact duplicates, which no sample can be strictly inside), then NaN;
equal values keep the sample order (lower row first).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Union

import numpy as np
import torch
from torch import Tensor

from lightning_embviz._arrays import as_numpy

__all__ = [
    "FAKE_COLUMNS",
    "REAL_COLUMNS",
    "SampleDetails",
    "deepest_fake_order",
    "markdown_summary",
    "missed_per_class",
    "missed_real_order",
    "outlier_fake_order",
    "sample_tables",
    "write_csv",
]

Rows = dict[str, np.ndarray]
"""A table as columns: name -> 1-D array, all of one length."""

REAL_COLUMNS: tuple[str, ...] = (
    "index",
    "label",
    "radius",
    "nearest_fake_distance",
    "nearest_fake_ratio",
    "covered",
    "recalled",
)
"""Columns of the real table, in order (``label`` only when labels are given)."""

FAKE_COLUMNS: tuple[str, ...] = (
    "index",
    "label",
    "ball_count",
    "nearest_ball_ratio",
    "inside_real_manifold",
)
"""Columns of the fake table, in order (``label`` only when labels are given)."""

LabelsLike = Union[Tensor, np.ndarray, Sequence[Any]]


class SampleDetails(Protocol):
    """The per-sample results this module reads (:class:`~lightning_embviz.PRDCResult`).

    Shapes: N reals, M fakes. ``r_k(x)`` is the real point's k-NN radius.
    """

    nearest_k: int
    real_radii: Tensor  # (N,) r_k(x)
    real_covered: Tensor  # (N,) bool: min_f d(x, f) < r_k(x)
    real_recalled: Tensor  # (N,) bool
    fake_ball_count: Tensor  # (M,) int: #{x : d(f, x) < r_k(x)}
    real_nearest_fake_distance: Tensor  # (N,) min_f d(x, f)
    real_nearest_fake_ratio: Tensor  # (N,) min_f d(x, f) / r_k(x)
    fake_nearest_ball_ratio: Tensor  # (M,) min_x d(f, x) / r_k(x)


# --------------------------------------------------------------------------- orders


def _descending(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two ascending sort keys that order ``values`` descending by the module's rule.

    First key: 0 for finite values, 1 for +inf, 2 for NaN and -inf; second key: minus the
    finite value (0 otherwise). Equal values get equal keys, so later keys break the tie.
    """
    v = np.asarray(values).astype(np.float64, copy=False)
    finite = np.isfinite(v)
    group = np.where(finite, 0.0, np.where(v == np.inf, 1.0, 2.0))
    return group, np.where(finite, -v, 0.0)


def _order(mask: np.ndarray, *keys: np.ndarray) -> np.ndarray:
    """Rows where ``mask`` holds, sorted by ``keys`` (primary first), ascending and stable.

    Each key is a float array; NaN sorts last. Equal keys keep the row order.
    """
    rows = np.flatnonzero(mask)
    if not keys or rows.size == 0:
        return rows
    # np.lexsort sorts by the last key first and is stable.
    columns = [np.arange(rows.size)]
    for key in reversed(keys):
        selected = key[rows].astype(np.float64, copy=False)
        columns.append(np.where(np.isnan(selected), np.inf, selected))
        columns.append(np.isnan(selected).astype(np.int8))
    return rows[np.lexsort(columns)]


def _vector(details: Any, name: str, length: int | None = None) -> np.ndarray:
    if not hasattr(details, name):
        raise TypeError(
            f"`details` has no `{name}` (got a {type(details).__name__}); pass the "
            "PRDCResult of `lightning_embviz.compute_prdc_details(real, fake, k)`."
        )
    arr = np.asarray(as_numpy(getattr(details, name))).reshape(-1)
    if length is not None and arr.shape[0] != length:
        raise ValueError(
            f"`details.{name}` has {arr.shape[0]} entries, expected {length} (one per sample)."
        )
    return arr


def _as_index(order: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64))


def missed_real_order(details: SampleDetails) -> Tensor:
    """Rows of the real samples that no fake covers, the most clearly missed first.

    A real x is missed when its own k-NN ball holds no fake (``details.real_covered`` is
    False: ``min_f d(x, f) < r_k(x)`` does not hold), exactly the reals that coverage counts
    as misses. They are ordered by ``real_nearest_fake_ratio = min_f d(x, f) / r_k(x)``,
    largest first (at least 1 for every missed real with r_k(x) > 0); ties by the nearest-fake
    distance, largest first, then by row. Reals with a radius-0 ball (ratio ``inf``) come
    after all finite ratios, NaN last.

    Args:
        details: a :class:`~lightning_embviz.PRDCResult` (from ``compute_prdc_details``).

    Returns:
        (n_missed,) int64 CPU tensor of row indices into the real set; empty when every real
        is covered.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz import compute_prdc_details
        >>> real = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
        >>> fake = np.array([[0.05], [0.15], [0.1]])
        >>> missed_real_order(compute_prdc_details(real, fake, nearest_k=1)).tolist()
        [5, 4, 3]
    """
    covered = _vector(details, "real_covered").astype(bool)
    n = covered.shape[0]
    ratio = _vector(details, "real_nearest_fake_ratio", n)
    distance = _vector(details, "real_nearest_fake_distance", n)
    return _as_index(_order(~covered, *_descending(ratio), -distance.astype(np.float64)))


def outlier_fake_order(details: SampleDetails) -> Tensor:
    """Rows of the fakes outside every real k-NN ball, farthest from the real manifold first.

    A fake f is an outlier when ``details.fake_ball_count`` is 0 (no real x with
    ``d(f, x) < r_k(x)``), exactly the fakes precision counts as misses. They are ordered by
    ``fake_nearest_ball_ratio = min_x d(f, x) / r_k(x)`` (how far outside the nearest ball,
    relative to that ball's radius), largest first; ties by row.

    Args:
        details: a :class:`~lightning_embviz.PRDCResult`.

    Returns:
        (n_outliers,) int64 CPU tensor of row indices into the fake set; empty when every
        fake lies inside some real ball.
    """
    count = _vector(details, "fake_ball_count")
    ratio = _vector(details, "fake_nearest_ball_ratio", count.shape[0])
    return _as_index(_order(count == 0, *_descending(ratio)))


def deepest_fake_order(details: SampleDetails) -> Tensor:
    """Rows of the fakes inside at least one real ball, deepest in the real manifold first.

    Ordered by ``fake_ball_count`` (the number of real balls holding the fake, density's
    count), largest first; ties by ``fake_nearest_ball_ratio``, smallest first (nearest a
    ball's centre), then by row. Shown next to the outliers for contrast.

    Args:
        details: a :class:`~lightning_embviz.PRDCResult`.

    Returns:
        (n_inside,) int64 CPU tensor of row indices into the fake set; empty when no fake
        lies inside a real ball.
    """
    count = _vector(details, "fake_ball_count")
    ratio = _vector(details, "fake_nearest_ball_ratio", count.shape[0])
    return _as_index(_order(count > 0, -count.astype(np.float64), ratio))


def missed_per_class(details: SampleDetails, real_labels: LabelsLike) -> dict[Any, int]:
    """How many reals of each class no fake covers.

    Args:
        details: a :class:`~lightning_embviz.PRDCResult`.
        real_labels: (N,) class of each real sample (ints or strings).

    Returns:
        ``{class: missed count}`` for every class present, most missed first (ties in sorted
        class order); classes with nothing missed are kept, with 0.

    Raises:
        ValueError: if there is not one label per real sample.
    """
    covered = _vector(details, "real_covered").astype(bool)
    labels = _labels(real_labels, covered.shape[0], "real_labels")
    classes, inverse = np.unique(labels, return_inverse=True)
    missed = np.bincount(inverse.reshape(-1), weights=~covered, minlength=len(classes))
    order = np.lexsort((np.arange(len(classes)), -missed))
    return {_scalar(classes[i]): int(missed[i]) for i in order}


# --------------------------------------------------------------------------- tables


def _scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _labels(labels: LabelsLike, length: int, name: str) -> np.ndarray:
    if isinstance(labels, Tensor):
        arr = as_numpy(labels)
    else:
        arr = np.asarray(labels)
    arr = arr.reshape(-1) if arr.ndim > 1 and max(arr.shape[1:], default=1) == 1 else arr
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"`{name}` must hold one label per sample, shape ({length},), got shape {arr.shape}."
        )
    return arr


def _indices(index: Any, length: int, name: str) -> np.ndarray:
    if index is None:
        return np.arange(length, dtype=np.int64)
    arr = np.asarray(as_numpy(index))
    arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ValueError(
            f"`{name}` must hold one index per sample, shape ({length},), got shape {arr.shape}."
        )
    if arr.dtype.kind not in "iu":
        whole = np.issubdtype(arr.dtype, np.floating) and bool(
            np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))
        )
        if not whole:
            raise TypeError(f"`{name}` must hold integer sample indices, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def sample_tables(
    details: SampleDetails,
    real_index: Any = None,
    fake_index: Any = None,
    real_labels: LabelsLike | None = None,
    fake_labels: LabelsLike | None = None,
) -> tuple[Rows, Rows]:
    """One row per real and per fake sample, as columns of NumPy arrays.

    Real table (N rows, in the order of the details' rows): ``index`` (int64, the sample's
    dataset index), ``label`` (only with ``real_labels``), ``radius`` (r_k(x)),
    ``nearest_fake_distance`` (min_f d(x, f)), ``nearest_fake_ratio`` (their quotient; the
    real is covered exactly when it is below 1 and the radius is positive), ``covered``
    (bool, coverage's indicator) and ``recalled`` (bool, recall's indicator).

    Fake table (M rows): ``index``, ``label`` (only with ``fake_labels``), ``ball_count``
    (int64, the number of real balls holding the fake, density's count),
    ``nearest_ball_ratio`` (min_x d(f, x) / r_k(x): below 1 inside the nearest ball, the
    distance to its centre in radii), ``inside_real_manifold`` (bool, precision's indicator).

    Float columns keep the engine's dtype; indicators are the engine's own, never recomputed.

    Args:
        details: a :class:`~lightning_embviz.PRDCResult`.
        real_index: (N,) dataset index of each real row; None gives 0..N-1.
        fake_index: (M,) dataset index of each fake row; None gives 0..M-1.
        real_labels: (N,) class of each real row, or None.
        fake_labels: (M,) class of each fake row, or None.

    Returns:
        ``(real_rows, fake_rows)``: dicts from column name (see :data:`REAL_COLUMNS`,
        :data:`FAKE_COLUMNS`) to 1-D arrays.

    Raises:
        ValueError: if an index or label array has another length than its set.
        TypeError: if an index array does not hold integers.
    """
    covered = _vector(details, "real_covered").astype(bool)
    n = covered.shape[0]
    count = _vector(details, "fake_ball_count").astype(np.int64)
    m = count.shape[0]
    real: Rows = {"index": _indices(real_index, n, "real_index")}
    if real_labels is not None:
        real["label"] = _labels(real_labels, n, "real_labels")
    real["radius"] = _vector(details, "real_radii", n)
    real["nearest_fake_distance"] = _vector(details, "real_nearest_fake_distance", n)
    real["nearest_fake_ratio"] = _vector(details, "real_nearest_fake_ratio", n)
    real["covered"] = covered
    real["recalled"] = _vector(details, "real_recalled", n).astype(bool)
    fake: Rows = {"index": _indices(fake_index, m, "fake_index")}
    if fake_labels is not None:
        fake["label"] = _labels(fake_labels, m, "fake_labels")
    fake["ball_count"] = count
    fake["nearest_ball_ratio"] = _vector(details, "fake_nearest_ball_ratio", m)
    fake["inside_real_manifold"] = count > 0
    return real, fake


def _check_rows(rows: Mapping[str, Any], name: str = "rows") -> dict[str, np.ndarray]:
    if not isinstance(rows, Mapping) or not rows:
        raise ValueError(
            f"`{name}` must be a non-empty mapping of column name -> 1-D array, got "
            f"{type(rows).__name__}{' (empty)' if isinstance(rows, Mapping) else ''}."
        )
    columns: dict[str, np.ndarray] = {}
    length = None
    for column, values in rows.items():
        if not isinstance(column, str) or not column:
            raise TypeError(f"`{name}` column names must be non-empty strings, got {column!r}.")
        arr = np.asarray(as_numpy(values))
        if arr.ndim != 1:
            raise ValueError(
                f"`{name}[{column!r}]` must be 1-D (one value per sample), got shape {arr.shape}."
            )
        if length is None:
            length = arr.shape[0]
        elif arr.shape[0] != length:
            first = next(iter(rows))
            raise ValueError(
                f"`{name}` columns differ in length: {first!r} has {length} values, "
                f"{column!r} has {arr.shape[0]}."
            )
        columns[column] = arr
    return columns


def _cells(values: np.ndarray) -> list[str]:
    """Each value as CSV text: shortest round-trip form of its own dtype (float32 stays short)."""
    if values.dtype.kind == "f":
        # str() of a NumPy float is the shortest text that reads back to the same value in
        # that dtype; inf and nan become 'inf' / 'nan', which pandas reads as floats.
        return [str(v) for v in values]
    if values.dtype.kind == "b":
        return ["True" if v else "False" for v in values.tolist()]
    return [str(v) for v in values.tolist()]


def write_csv(rows: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """Write a table (from :func:`sample_tables`) as a CSV file with a header line.

    ``pandas.read_csv(path)`` reads it back with the same columns and dtypes: int64 for
    indices and counts, float64 for distances and ratios (``inf``/``nan`` included), bool for
    the indicators, int64 or text for labels. Parent folders are created.

    Args:
        rows: column name -> 1-D array, all of one length.
        path: the file to write (overwritten).

    Raises:
        ValueError: on an empty mapping, a column that is not 1-D, or columns of unequal
            length.
    """
    columns = _check_rows(rows)
    cells = [_cells(values) for values in columns.values()]
    target = os.fspath(path)
    parent = os.path.dirname(target)
    if parent:
        os.makedirs(parent, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(columns))
        writer.writerows(zip(*cells))


def _ratio_text(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf (radius 0)"
    return f"{value:.2f}×"


def _markdown_block(
    rows: Mapping[str, np.ndarray],
    order: np.ndarray,
    n: int,
    ratio_column: str,
    ratio_header: str,
    extra: tuple[tuple[str, str], ...],
) -> list[str]:
    has_label = "label" in rows
    header = ["index", *(["label"] if has_label else []), ratio_header, *(h for _, h in extra)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i in order[:n].tolist():
        cells = [str(_scalar(rows["index"][i]))]
        if has_label:
            cells.append(str(_scalar(rows["label"][i])).replace("|", "\\|"))
        cells.append(_ratio_text(float(rows[ratio_column][i])))
        for column, _ in extra:
            value = _scalar(rows[column][i])
            cells.append(f"{value:#.4g}" if isinstance(value, float) else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown_summary(
    real_rows: Mapping[str, Any], fake_rows: Mapping[str, Any], n: int = 10
) -> str:
    """A short markdown summary: the ``n`` most missed reals and the ``n`` worst fakes.

    Written for TensorBoard's text plugin (``embviz/samples``). The reals are those not
    covered, ordered like :func:`missed_real_order`; the fakes those outside every real
    ball, ordered like :func:`outlier_fake_order`; each with its dataset index (and label),
    its ratio and distance.

    Args:
        real_rows: the real table of :func:`sample_tables`.
        fake_rows: the fake table of :func:`sample_tables`.
        n: rows listed per table (at least 1).

    Returns:
        Markdown text: two headed tables, or a sentence where a set has nothing to list.

    Raises:
        ValueError: if ``n`` < 1 or a table lacks a column it needs.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an int >= 1, got {n!r}.")
    real = _check_rows(real_rows, "real_rows")
    fake = _check_rows(fake_rows, "fake_rows")
    for name, table, needed in (
        ("real_rows", real, ("index", "covered", "nearest_fake_ratio", "nearest_fake_distance")),
        ("fake_rows", fake, ("index", "ball_count", "nearest_ball_ratio")),
    ):
        missing = [c for c in needed if c not in table]
        if missing:
            raise ValueError(
                f"`{name}` lacks column(s) {missing}; pass the tables of `sample_tables`."
            )
    covered = real["covered"].astype(bool)
    missed = _order(
        ~covered,
        *_descending(real["nearest_fake_ratio"]),
        -real["nearest_fake_distance"].astype(np.float64),
    )
    count = fake["ball_count"]
    outliers = _order(count == 0, *_descending(fake["nearest_ball_ratio"]))
    n_real, n_fake = covered.shape[0], count.shape[0]
    lines = [
        f"**Missed real samples**: {missed.size} of {n_real} have no fake inside their k-NN "
        "ball (coverage's misses). Ratio: nearest fake distance / ball radius."
    ]
    if missed.size:
        lines += ["", f"The {min(n, missed.size)} most clearly missed:", ""]
        lines += _markdown_block(
            real,
            missed,
            n,
            "nearest_fake_ratio",
            "nearest fake / radius",
            (("nearest_fake_distance", "nearest fake distance"), ("radius", "radius"))
            if "radius" in real
            else (("nearest_fake_distance", "nearest fake distance"),),
        )
    lines += [
        "",
        f"**Outlier fakes**: {outliers.size} of {n_fake} lie outside every real k-NN ball "
        "(precision's misses). Ratio: distance to the nearest real / that real's radius.",
    ]
    if outliers.size:
        lines += ["", f"The {min(n, outliers.size)} farthest:", ""]
        lines += _markdown_block(
            fake, outliers, n, "nearest_ball_ratio", "distance / nearest ball radius", ()
        )
    return "\n".join(lines) + "\n"
