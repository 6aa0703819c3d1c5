"""What every figure shares: the palette, the canvas, titles, axes and input checks.

Colours come from the Okabe-Ito palette (colour-blind safe) and every highlighted group also
differs by marker shape, so the pictures read without colour too. Figures are built with
``matplotlib.figure.Figure`` and the Agg canvas attached directly, never through ``pyplot``:
no global figure registry, nothing leaks, safe in a worker thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from lightning_embviz._arrays import as_numpy

__all__ = [
    "CLASS_COLORS",
    "DPI",
    "FAKE_COLOR",
    "FAKE_OUTSIDE_COLOR",
    "FIGSIZE",
    "METRIC_COLORS",
    "REAL_COLOR",
    "UNCOVERED_COLOR",
    "ArrayLike",
    "class_colors",
    "labels_of",
    "legend_dot",
    "marker_size",
    "mask_of",
    "metrics_title",
    "new_figure",
    "optional_numpy",
    "points_of",
    "set_title",
    "style_axes",
]


ArrayLike = Union[Tensor, np.ndarray]

# Okabe-Ito palette.
REAL_COLOR = "#0072B2"  # blue
FAKE_COLOR = "#E69F00"  # orange
UNCOVERED_COLOR = "#000000"  # black rings: real modes no fake reaches
FAKE_OUTSIDE_COLOR = "#D55E00"  # vermillion crosses: fakes outside every real ball
CLASS_COLORS = (
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#F0E442",
    "#000000",
    "#999999",
    "#882255",
    "#44AA99",
    "#332288",
)
METRIC_COLORS = {
    "coverage": "#0072B2",
    "recall": "#56B4E9",
    "precision": "#E69F00",
    "density": "#D55E00",
}

FIGSIZE = (6.4, 5.6)
DPI = 100


def optional_numpy(x: ArrayLike | None) -> np.ndarray | None:
    """:func:`~lightning_embviz._arrays.as_numpy`, passing None through."""
    return None if x is None else as_numpy(x)


def points_of(x: ArrayLike, name: str) -> np.ndarray:
    """(N, 2) projected points as float64.

    Raises:
        ValueError: for any other shape.
    """
    arr = as_numpy(x)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape (N, 2), got {tuple(arr.shape)}.")
    return arr.astype(np.float64, copy=False)


def _per_point(x: ArrayLike | None, n: int, name: str, what: str) -> np.ndarray | None:
    """``x`` flattened to (n,), or None; ``what`` ends the count in the error message."""
    arr = optional_numpy(x)
    if arr is None:
        return None
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must have {n} {what}, got {arr.shape[0]}.")
    return arr


def mask_of(x: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    """An (n,) bool mask, or None.

    Raises:
        ValueError: for a count other than ``n``.
    """
    arr = _per_point(x, n, name, "entries")
    return None if arr is None else arr.astype(bool)


def labels_of(x: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    """(n,) labels, one per point, or None.

    Raises:
        ValueError: for a count other than ``n``.
    """
    return _per_point(x, n, name, "entries (one per point)")


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A constrained-layout Figure of ``figsize`` inches at :data:`DPI`, Agg canvas attached."""
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def marker_size(n: int) -> float:
    """Marker area in points^2 for ``n`` points: big for a few hundred, small for 10^4+."""
    return float(np.clip(15000.0 / max(n, 1), 3.0, 36.0))


def metrics_title(metrics: Mapping[str, Any] | None, nearest_k: int | None = None) -> str:
    """One line with the four metric values and k, e.g. ``P 0.81 · R 0.74 · D 0.95 · C 0.80 · k=5``.

    Args:
        metrics: mapping with some of ``precision``, ``recall``, ``density``, ``coverage``
            (and optionally ``fd``); missing ones are skipped.
        nearest_k: the k of the k-NN balls.

    Returns:
        The title text (empty if there is nothing to show).
    """
    parts: list[str] = []
    if metrics:
        for key, short in (
            ("precision", "precision"),
            ("recall", "recall"),
            ("density", "density"),
            ("coverage", "coverage"),
            ("fd", "FD"),
        ):
            if key in metrics and metrics[key] is not None:
                value = float(metrics[key])
                parts.append(f"{short} {value:.3g}" if key == "fd" else f"{short} {value:.2f}")
    if nearest_k is not None:
        parts.append(f"k={int(nearest_k)}")
    return " · ".join(parts)


def set_title(fig: Figure, title: str | None, subtitle: str) -> None:
    """The figure's suptitle: ``title`` over ``subtitle`` (either may be empty)."""
    head = title or ""
    text = f"{head}\n{subtitle}" if head and subtitle else (head or subtitle)
    if text:
        fig.suptitle(text, fontsize=10)


def style_axes(ax: Any, method: str | None, shared: bool = False) -> None:
    """Equal scales, small ticks and the projection's axis labels (``PCA 1``, ``t-SNE 2``)."""
    # Equal scales on both axes (distances in the picture mean the same in x and y).
    ax.set_aspect("equal", adjustable="box" if shared else "datalim")
    ax.tick_params(labelsize=7)
    if method:
        label = (
            method.upper()
            if method in ("pca", "umap")
            else ("t-SNE" if method == "tsne" else method)
        )
        ax.set_xlabel(f"{label} 1", fontsize=8)
        ax.set_ylabel(f"{label} 2", fontsize=8)


def legend_dot(color: str, marker: str, label: str, hollow: bool = False) -> Line2D:
    """A legend entry: one marker of ``color`` (hollow for rings)."""
    return Line2D(
        [], [], linestyle="none", marker=marker, markersize=6, label=label,
        markerfacecolor="none" if hollow else color, markeredgecolor=color,
    )  # fmt: skip


def class_colors(classes: Sequence[Any]) -> dict[Any, Any]:
    """One colour per class: the palette for up to 12 classes, else the turbo colormap."""
    if len(classes) <= len(CLASS_COLORS):
        return {c: CLASS_COLORS[i] for i, c in enumerate(classes)}
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    return {c: cmap(i / max(len(classes) - 1, 1)) for i, c in enumerate(classes)}
