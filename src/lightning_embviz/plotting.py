"""Figure builders: take arrays, return :class:`matplotlib.figure.Figure`.

Figures are built with ``matplotlib.figure.Figure`` and drawn on the Agg canvas directly,
never through ``pyplot``: no global figure registry, nothing leaks, safe in a worker thread.
Colours come from the Okabe-Ito palette (colour-blind safe) and every highlighted group also
differs by marker shape, so the pictures read without colour too.

No Lightning import here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional, Union

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from torch import Tensor

from lightning_embviz._arrays import as_numpy

__all__ = [
    "CLASS_COLORS",
    "FAKE_COLOR",
    "FAKE_OUTSIDE_COLOR",
    "REAL_COLOR",
    "UNCOVERED_COLOR",
    "RenderedFigure",
    "class_metrics",
    "class_metrics_figure",
    "classes_figure",
    "comparison_figure",
    "coverage_figure",
    "encode_png",
    "figure_to_array",
    "figure_to_png",
    "format_ratio",
    "gallery_columns",
    "gallery_display_range",
    "gallery_figure",
    "k_sweep_figure",
    "metrics_title",
    "missed_real_figure",
    "outlier_fake_figure",
    "projection_figure",
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


def _np(x: ArrayLike | None, name: str) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, Tensor):
        t = x.detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return np.asarray(x)


def _points(x: ArrayLike, name: str) -> np.ndarray:
    arr = _np(x, name)
    assert arr is not None
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"`{name}` must have shape (N, 2), got {tuple(arr.shape)}.")
    return arr.astype(np.float64, copy=False)


def _mask(x: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    arr = _np(x, name)
    if arr is None:
        return None
    arr = arr.astype(bool).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must have {n} entries, got {arr.shape[0]}.")
    return arr


def _new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _marker_size(n: int) -> float:
    # Area in points^2: big for a few hundred points, small for tens of thousands.
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


def _set_title(fig: Figure, title: str | None, subtitle: str) -> None:
    head = title or ""
    text = f"{head}\n{subtitle}" if head and subtitle else (head or subtitle)
    if text:
        fig.suptitle(text, fontsize=10)


def _style_axes(ax: Any, method: str | None, shared: bool = False) -> None:
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


def _scatter_real_fake(
    ax: Any,
    real_2d: np.ndarray,
    fake_2d: np.ndarray,
    real_covered: np.ndarray | None,
    fake_inside: np.ndarray | None,
    real_label: str = "real",
    fake_label: str = "fake",
) -> list[Any]:
    size = _marker_size(len(real_2d) + len(fake_2d))
    handles: list[Any] = []
    ax.scatter(
        real_2d[:, 0], real_2d[:, 1], s=size, c=REAL_COLOR, alpha=0.6, linewidths=0,
        marker="o", rasterized=True,
    )  # fmt: skip
    handles.append(_legend_dot(REAL_COLOR, "o", f"{real_label} ({len(real_2d)})"))
    ax.scatter(
        fake_2d[:, 0], fake_2d[:, 1], s=size, c=FAKE_COLOR, alpha=0.6, linewidths=0,
        marker="o", rasterized=True,
    )  # fmt: skip
    handles.append(_legend_dot(FAKE_COLOR, "o", f"{fake_label} ({len(fake_2d)})"))
    if fake_inside is not None and (~fake_inside).any():
        out = fake_2d[~fake_inside]
        ax.scatter(
            out[:, 0], out[:, 1], s=size * 1.8 + 4, c=FAKE_OUTSIDE_COLOR, marker="x",
            linewidths=0.6, alpha=0.85, rasterized=True,
        )  # fmt: skip
        handles.append(
            _legend_dot(
                FAKE_OUTSIDE_COLOR, "x", f"{fake_label} outside every real ball ({len(out)})"
            )
        )
    if real_covered is not None and (~real_covered).any():
        miss = real_2d[~real_covered]
        ax.scatter(
            miss[:, 0], miss[:, 1], s=size * 1.8 + 4, facecolors="none",
            edgecolors=UNCOVERED_COLOR, marker="o", linewidths=0.5, alpha=0.85, rasterized=True,
        )  # fmt: skip
        handles.append(
            _legend_dot(
                UNCOVERED_COLOR, "o", f"missed: {real_label} not covered ({len(miss)})", True
            )
        )
    return handles


def _legend_dot(color: str, marker: str, label: str, hollow: bool = False) -> Line2D:
    return Line2D(
        [], [], linestyle="none", marker=marker, markersize=6, label=label,
        markerfacecolor="none" if hollow else color, markeredgecolor=color,
    )  # fmt: skip


def projection_figure(
    real_2d: ArrayLike,
    fake_2d: ArrayLike,
    *,
    real_covered: ArrayLike | None = None,
    fake_in_real_manifold: ArrayLike | None = None,
    metrics: Mapping[str, Any] | None = None,
    nearest_k: int | None = None,
    method: str | None = None,
    title: str | None = None,
) -> Figure:
    """Scatter of real and fake points in one 2-D frame, with missed modes and outliers marked.

    Real points are blue, fake points orange. Real points that no fake covers (coverage's
    misses: the modes the generator does not reach) get a black ring; fakes outside every
    real k-NN ball (precision's misses: the low-fidelity samples) get a vermillion cross.

    Args:
        real_2d: (N, 2) projected real points.
        fake_2d: (M, 2) projected fake points.
        real_covered: (N,) bool, the real point's ball holds a fake (``PRDCResult.real_covered``).
        fake_in_real_manifold: (M,) bool, the fake lies in some real ball.
        metrics: metric values for the title (``precision``, ``recall``, ``density``,
            ``coverage``, optionally ``fd``).
        nearest_k: k, shown in the title.
        method: projection name, for the axis labels (``"pca"``, ``"tsne"``, ``"umap"``).
        title: first title line (e.g. ``"epoch 3"``).

    Returns:
        A Figure (Agg canvas attached), 640x560 pixels.
    """
    real = _points(real_2d, "real_2d")
    fake = _points(fake_2d, "fake_2d")
    covered = _mask(real_covered, len(real), "real_covered")
    inside = _mask(fake_in_real_manifold, len(fake), "fake_in_real_manifold")
    fig = _new_figure()
    ax = fig.add_subplot()
    handles = _scatter_real_fake(ax, real, fake, covered, inside)
    _style_axes(ax, method)
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
    _set_title(fig, title, metrics_title(metrics, nearest_k))
    return fig


def _median_2d_knn(points: np.ndarray, k: int) -> float:
    from scipy.spatial import cKDTree

    k = int(min(max(k, 1), len(points) - 1))
    if k < 1:
        return 1.0
    dist, _ = cKDTree(points).query(points, k=k + 1)
    value = float(np.median(dist[:, k]))
    if value <= 0:
        span = float(np.ptp(points, axis=0).max()) if len(points) else 1.0
        value = span / 50.0 if span > 0 else 1.0
    return value


def coverage_figure(
    real_2d: ArrayLike,
    fake_2d: ArrayLike,
    real_radii: ArrayLike,
    *,
    real_covered: ArrayLike | None = None,
    metrics: Mapping[str, Any] | None = None,
    nearest_k: int | None = None,
    method: str | None = None,
    title: str | None = None,
) -> Figure:
    """Each real point's k-NN ball drawn as a circle, with the fakes on top.

    The radii live in the original D-dimensional space, where the projection's distances do
    not hold. They are therefore drawn *scaled*: a circle's radius is
    ``r_i / median(r) * s``, with ``s`` the median distance of a projected real point to its
    k-th projected neighbour, so relative sizes are true and the median ball matches the
    picture's own neighbourhood scale. A note in the figure says so. All circles are one
    :class:`~matplotlib.collections.EllipseCollection`. Covered balls are blue, balls holding
    no fake (missed modes) are black.

    Args:
        real_2d: (N, 2) projected real points.
        fake_2d: (M, 2) projected fake points.
        real_radii: (N,) k-NN radii in the original space (``PRDCResult.real_radii``).
        real_covered: (N,) bool, a fake lies in this ball.
        metrics: metric values for the title.
        nearest_k: k, shown in the title and used for the 2-D scale.
        method: projection name, for the axis labels.
        title: first title line.

    Returns:
        A Figure (Agg canvas attached).
    """
    real = _points(real_2d, "real_2d")
    fake = _points(fake_2d, "fake_2d")
    radii_arr = _np(real_radii, "real_radii")
    assert radii_arr is not None
    radii = radii_arr.astype(np.float64).reshape(-1)
    if radii.shape[0] != len(real):
        raise ValueError(f"`real_radii` must have {len(real)} entries, got {radii.shape[0]}.")
    covered = _mask(real_covered, len(real), "real_covered")
    fig = _new_figure()
    ax = fig.add_subplot()
    median_r = float(np.median(radii)) if len(radii) else 1.0
    median_r = (
        median_r
        if median_r > 0
        else (float(radii.max()) if radii.size and radii.max() > 0 else 1.0)
    )
    scale = _median_2d_knn(real, nearest_k or 5) if len(real) > 1 else 1.0
    diam = 2.0 * radii / median_r * scale
    if covered is None:
        edge = np.array([REAL_COLOR] * len(real), dtype=object)
    else:
        edge = np.where(covered, REAL_COLOR, UNCOVERED_COLOR).astype(object)
    circles = EllipseCollection(
        diam,
        diam,
        np.zeros_like(diam),
        units="xy",
        offsets=real,
        offset_transform=ax.transData,
        facecolors="none",
        edgecolors=list(edge),
        linewidths=0.5,
        alpha=0.55,
    )
    ax.add_collection(circles)
    size = _marker_size(len(real) + len(fake))
    ax.scatter(real[:, 0], real[:, 1], s=size * 0.6, c=REAL_COLOR, linewidths=0, rasterized=True)
    ax.scatter(
        fake[:, 0], fake[:, 1], s=size, c=FAKE_COLOR, linewidths=0, alpha=0.8, rasterized=True
    )
    # Make the limits include the circles.
    if len(real):
        pad = float(diam.max()) / 2.0 if len(diam) else 0.0
        lo = np.minimum(real.min(axis=0) - pad, fake.min(axis=0) if len(fake) else np.inf)
        hi = np.maximum(real.max(axis=0) + pad, fake.max(axis=0) if len(fake) else -np.inf)
        ax.update_datalim(np.array([lo, hi]))
        ax.autoscale_view()
    n_cov = int(covered.sum()) if covered is not None else len(real)
    handles = [_legend_dot(REAL_COLOR, "o", f"real k-NN ball, covered ({n_cov})", True)]
    if covered is not None:
        n_miss = int((~covered).sum())
        handles.append(
            _legend_dot(UNCOVERED_COLOR, "o", f"real k-NN ball, no fake inside ({n_miss})", True)
        )
    handles.append(_legend_dot(FAKE_COLOR, "o", f"fake ({len(fake)})"))
    _style_axes(ax, method)
    ax.legend(handles=handles, fontsize=7, loc="upper right", framealpha=0.8)
    ax.text(
        0.01,
        0.01,
        "Radii: k-NN distances in the original space, drawn scaled\n"
        f"(r / median r × {scale:.3g}, the median 2-D k-NN distance)",
        transform=ax.transAxes,
        fontsize=7,
        ha="left",
        va="bottom",
        color="#222222",
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 2},
    )
    _set_title(
        fig, title or "k-NN balls of the real set (coverage)", metrics_title(metrics, nearest_k)
    )
    return fig


def _class_colors(classes: Sequence[Any]) -> dict[Any, Any]:
    if len(classes) <= len(CLASS_COLORS):
        return {c: CLASS_COLORS[i] for i, c in enumerate(classes)}
    from matplotlib import colormaps

    cmap = colormaps["turbo"]
    return {c: cmap(i / max(len(classes) - 1, 1)) for i, c in enumerate(classes)}


def _labels(x: ArrayLike | None, n: int, name: str) -> np.ndarray | None:
    arr = _np(x, name)
    if arr is None:
        return None
    arr = arr.reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must have {n} entries (one per point), got {arr.shape[0]}.")
    return arr


def classes_figure(
    real_2d: ArrayLike,
    fake_2d: ArrayLike,
    real_labels: ArrayLike,
    fake_labels: ArrayLike | None = None,
    *,
    metrics: Mapping[str, Any] | None = None,
    nearest_k: int | None = None,
    method: str | None = None,
    title: str | None = None,
) -> Figure:
    """Real and fake points coloured by class, side by side in the same frame.

    Left panel: the real points coloured by ``real_labels``. Right panel: the fake points,
    coloured by ``fake_labels`` when given, else plain orange over the real points in grey.
    Both panels share the axes, so a class the generator misses shows as an empty region.

    Args:
        real_2d: (N, 2) projected real points.
        fake_2d: (M, 2) projected fake points.
        real_labels: (N,) class of each real point (ints or strings).
        fake_labels: (M,) class of each fake point (e.g. a conditional GAN's condition).
        metrics: metric values for the title.
        nearest_k: k, shown in the title.
        method: projection name, for the axis labels.
        title: first title line.

    Returns:
        A Figure (Agg canvas attached), 1000x520 pixels.
    """
    real = _points(real_2d, "real_2d")
    fake = _points(fake_2d, "fake_2d")
    rl = _labels(real_labels, len(real), "real_labels")
    fl = _labels(fake_labels, len(fake), "fake_labels")
    from lightning_embviz.metrics import _class_order

    classes = _class_order(rl, fl)
    colors = _class_colors(classes)
    fig = _new_figure((10.0, 5.2))
    ax_r, ax_f = fig.subplots(1, 2, sharex=True, sharey=True)
    size = _marker_size(len(real) + len(fake)) * 1.5
    assert rl is not None
    ax_r.scatter(
        real[:, 0], real[:, 1], s=size, c=[colors[c] for c in rl.tolist()], linewidths=0,
        alpha=0.75, rasterized=True,
    )  # fmt: skip
    ax_r.set_title(f"real ({len(real)})", fontsize=9)
    if fl is not None:
        ax_f.scatter(
            fake[:, 0], fake[:, 1], s=size, c=[colors[c] for c in fl.tolist()], linewidths=0,
            alpha=0.75, rasterized=True,
        )  # fmt: skip
        ax_f.set_title(f"fake ({len(fake)}), coloured by fake label", fontsize=9)
    else:
        ax_f.scatter(
            real[:, 0], real[:, 1], s=size * 0.6, c="#BBBBBB", linewidths=0, rasterized=True
        )
        ax_f.scatter(
            fake[:, 0], fake[:, 1], s=size, c=FAKE_COLOR, linewidths=0, alpha=0.7, rasterized=True
        )
        ax_f.set_title(f"fake ({len(fake)}) over real (grey)", fontsize=9)
    for ax in (ax_r, ax_f):
        _style_axes(ax, method, shared=True)
    shown = classes[:20]
    handles = [_legend_dot(colors[c], "o", str(c)) for c in shown]
    if len(classes) > len(shown):
        handles.append(
            Line2D([], [], linestyle="none", label=f"… {len(classes) - len(shown)} more")
        )
    fig.legend(
        handles=handles, loc="outside right upper", fontsize=7, title="class", title_fontsize=8,
    )  # fmt: skip
    _set_title(fig, title or "classes", metrics_title(metrics, nearest_k))
    return fig


def class_metrics(
    real_labels: ArrayLike,
    real_covered: ArrayLike,
    real_recalled: ArrayLike | None = None,
    fake_labels: ArrayLike | None = None,
    fake_ball_count: ArrayLike | None = None,
    nearest_k: int | None = None,
) -> dict[Any, dict[str, float]]:
    """Per-class metrics from per-sample arrays (:func:`~lightning_embviz.metrics.per_class_prdc`).

    For class c: coverage_c = mean of ``real_covered`` over the reals of class c, recall_c the
    same with ``real_recalled``; with fake labels, precision_c = fraction of fakes of class c in
    some real ball and density_c = mean ``fake_ball_count`` over fakes of class c, divided by k.
    Also the counts ``num_real`` and ``num_fake`` per class.

    Args:
        real_labels: (N,) class of each real point.
        real_covered: (N,) bool (``PRDCResult.real_covered``).
        real_recalled: (N,) bool (``PRDCResult.real_recalled``).
        fake_labels: (M,) class of each fake point.
        fake_ball_count: (M,) int (``PRDCResult.fake_ball_count``).
        nearest_k: k (needed for density).

    Returns:
        ``{class: {"num_real": ..., "coverage": ..., ...}}`` in sorted class order.
    """
    from lightning_embviz.metrics import _per_class

    rl = _np(real_labels, "real_labels")
    assert rl is not None
    rl = rl.reshape(-1)
    covered = _mask(real_covered, len(rl), "real_covered")
    assert covered is not None
    recalled = _mask(real_recalled, len(rl), "real_recalled")
    fl = _np(fake_labels, "fake_labels")
    counts = _np(fake_ball_count, "fake_ball_count")
    if fl is not None:
        fl = fl.reshape(-1)
        if counts is None or counts.reshape(-1).shape[0] != fl.shape[0]:
            raise ValueError("`fake_ball_count` must have one entry per fake label.")
        counts = counts.reshape(-1)
    return _per_class(rl, covered, recalled, fl, counts, nearest_k)


def class_metrics_figure(
    per_class: Mapping[Any, Mapping[str, float]],
    *,
    title: str | None = None,
) -> Figure:
    """Grouped bars of per-class coverage/recall (and precision/density with fake labels).

    A class with near-zero coverage is one the generator collapsed away from. Density has a
    dashed reference line at 1 (a fake set distributed like the real one).

    Args:
        per_class: output of :func:`class_metrics`.
        title: first title line.

    Returns:
        A Figure (Agg canvas attached).
    """
    classes = list(per_class)
    keys = [
        k
        for k in ("coverage", "recall", "precision", "density")
        if any(k in per_class[c] for c in classes)
    ]
    width = max(6.4, min(16.0, 1.5 + 0.45 * len(classes) * max(len(keys), 1) / 2))
    fig = _new_figure((width, 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(classes), dtype=np.float64)
    bar_w = 0.8 / max(len(keys), 1)
    for i, key in enumerate(keys):
        values = [float(per_class[c].get(key, np.nan)) for c in classes]
        ax.bar(
            x + (i - (len(keys) - 1) / 2) * bar_w,
            values,
            bar_w,
            label=key,
            color=METRIC_COLORS[key],
        )
    if "density" in keys:
        ax.axhline(1.0, color="#555555", linestyle="--", linewidth=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(
        [str(c) for c in classes], fontsize=8, rotation=45 if len(classes) > 12 else 0
    )
    ax.set_xlabel("class", fontsize=8)
    ax.set_ylabel("value", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, ncols=len(keys) or 1, loc="upper right")
    top = max(
        [1.05]
        + [
            float(per_class[c].get("density", 0.0)) * 1.1
            for c in classes
            if np.isfinite(per_class[c].get("density", 0.0))
        ]
    )
    ax.set_ylim(0, top + 0.15)
    _set_title(fig, title or "per-class metrics", "low coverage in a class = mode collapse there")
    return fig


def comparison_figure(
    real_2d: ArrayLike,
    fakes_2d: Sequence[ArrayLike],
    names: Sequence[str],
    *,
    real_covered: Sequence[ArrayLike | None] | None = None,
    fake_in_real_manifold: Sequence[ArrayLike | None] | None = None,
    metrics: Sequence[Mapping[str, Any] | None] | None = None,
    nearest_k: int | None = None,
    method: str | None = None,
    title: str | None = None,
) -> Figure:
    """Several fake sets side by side, each over the same real set, in one shared frame.

    Args:
        real_2d: (N, 2) projected real points.
        fakes_2d: one (M_i, 2) array per fake set.
        names: one name per fake set (panel titles).
        real_covered: per fake set, (N,) bool coverage mask (or None).
        fake_in_real_manifold: per fake set, (M_i,) bool (or None).
        metrics: per fake set, a metric mapping for the panel title.
        nearest_k: k.
        method: projection name, for the axis labels.
        title: figure title.

    Returns:
        A Figure with one panel per fake set, shared axes.
    """
    real = _points(real_2d, "real_2d")
    fakes = [_points(f, f"fakes_2d[{i}]") for i, f in enumerate(fakes_2d)]
    if len(names) != len(fakes) or not fakes:
        raise ValueError(
            f"need one name per fake set, got {len(names)} names for {len(fakes)} sets."
        )
    n = len(fakes)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = _new_figure((4.2 * cols + 0.4, 4.6 * rows + 0.9))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    handles: list[Any] = []
    for i, fake in enumerate(fakes):
        covered = _mask(real_covered[i], len(real), "real_covered") if real_covered else None
        inside = (
            _mask(fake_in_real_manifold[i], len(fake), "fake_in_real_manifold")
            if fake_in_real_manifold
            else None
        )
        h = _scatter_real_fake(axes[i], real, fake, covered, inside)
        if len(h) > len(handles):
            handles = h
        m = metrics[i] if metrics else None
        axes[i].set_title(f"{names[i]}\n{metrics_title(m)}", fontsize=8)
        _style_axes(axes[i], method, shared=True)
    for ax in axes[n:]:
        ax.set_visible(False)
    generic = [
        _legend_dot(REAL_COLOR, "o", "real"),
        _legend_dot(FAKE_COLOR, "o", "fake"),
        _legend_dot(FAKE_OUTSIDE_COLOR, "x", "fake outside every real ball"),
        _legend_dot(UNCOVERED_COLOR, "o", "real not covered (missed)", True),
    ]
    fig.legend(handles=generic, loc="outside lower center", ncols=4, fontsize=7)
    head = title or "fake sets in one frame fitted on the real set"
    fig.suptitle(f"{head} · k={nearest_k}" if nearest_k else head, fontsize=10)
    return fig


# --------------------------------------------------------------------------- galleries

# Galleries are sized for TensorBoard's image card (about 300 x 240 px in TensorBoard 2.x,
# which shrinks the whole image to fit): few columns, large tiles and large captions, so a
# caption stays about 8 px tall there and 15 px at the image's actual size.
GALLERY_TILE = 1.2  # inches per image tile
# TensorBoard 2.x's default image card: the area the image is shrunk into (pixels).
TENSORBOARD_CARD = (303, 240)
GALLERY_CAPTION_FONTSIZE = 11.0  # points (15 px at 100 dpi)
_GALLERY_TITLE_FONTSIZE = 13.0
_GALLERY_SUBTITLE_FONTSIZE = 11.0
_GALLERY_SUBTITLE_LINE = 0.19  # inches per subtitle line
_GALLERY_GAP = 0.08  # inches between tiles
_GALLERY_MARGIN = 0.15
_GALLERY_CAPTION = 0.45  # inches below a tile for two caption lines
_GALLERY_LINE = 0.24  # inches per title line
_MAX_CLASSES_NAMED = 12


def _gallery_images(images: ArrayLike, name: str) -> np.ndarray:
    """(B, C, H, W) with C in {1, 3}, or (B, H, W), as a float64 (B, H, W, C) array."""
    arr = as_numpy(images)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"`{name}` must hold numbers, got dtype {arr.dtype}.")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or min(arr.shape[2:], default=0) < 1:
        raise ValueError(
            f"`{name}` must have shape (B, C, H, W) with C in (1, 3), or (B, H, W), got "
            f"{tuple(arr.shape)}."
        )
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return np.moveaxis(arr.astype(np.float64) / scale, 1, -1)


def gallery_display_range(*blocks: np.ndarray) -> tuple[float, float]:
    """The value range mapped to black..white for a gallery's tiles, shared by all tiles.

    The rule (also used by the embedding projector's thumbnails): if every finite value lies
    in [0, 1] the images are shown as they are, (0, 1); otherwise the finite minimum and
    maximum over all tiles of the figure together (min-max jointly, so relative brightness
    between tiles is kept). A gallery of one constant value outside [0, 1] maps to mid-grey.

    Args:
        blocks: arrays of any shape holding the pixel values (uint8 already divided by 255).

    Returns:
        ``(low, high)`` with ``low <= high``.
    """
    finite = [b[np.isfinite(b)] for b in blocks]
    values = np.concatenate([f.reshape(-1) for f in finite]) if finite else np.zeros(0)
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, high


def _to_display(tiles: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values to [0, 1]: (x - low) / (high - low); NaN -> 0, +inf -> 1, -inf -> 0."""
    if high > low:
        out = (tiles - low) / (high - low)
    else:
        out = np.where(np.isfinite(tiles), 0.5, tiles)
    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0)


def _class_count_line(counts: Mapping[Any, int], label: str) -> str:
    items = sorted(
        ((c, int(v)) for c, v in counts.items()), key=lambda cv: -cv[1]
    )  # stable: keeps the caller's order among equal counts
    nonzero = [(c, v) for c, v in items if v > 0]
    shown = nonzero[:_MAX_CLASSES_NAMED]
    parts = [f"{c}: {v}" for c, v in shown]
    text = f"{label}: " + (" · ".join(parts) if parts else "none")
    hidden = len(nonzero) - len(shown)
    if hidden:
        text += f" · … {hidden} more"
    zero = len(items) - len(nonzero)
    if zero and nonzero:
        text += f" ({zero} class{'es' if zero != 1 else ''} with none)"
    return text


def _wrap(text: str, width_in: float, fontsize: float) -> list[str]:
    import textwrap

    chars = max(int(width_in * 144 / fontsize), 20)  # ~0.5 em per character
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, chars) or [""]
    return lines


def _board(fig: Figure) -> Any:
    """One invisible Axes over the whole figure, in inches from the bottom-left corner.

    Every tile, frame and caption of a gallery is drawn on it: one Axes instead of one per
    tile keeps building a 40-tile figure cheap.
    """
    if fig.axes:
        return fig.axes[0]
    width_in, height_in = fig.get_size_inches()
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0.0, width_in)
    ax.set_ylim(0.0, height_in)
    ax.set_autoscale_on(False)
    return ax


def _gallery_block(
    fig: Figure,
    tiles: np.ndarray,
    captions: Sequence[str] | None,
    top: float,
    columns: int,
    low: float,
    high: float,
    color: str | None,
) -> float:
    """Draw tiles row by row from ``top`` (inches from the figure top); return the new top."""
    from matplotlib.patches import Rectangle

    ax = _board(fig)
    height_in = fig.get_size_inches()[1]
    shown = _to_display(tiles, low, high)
    for i, tile in enumerate(shown):
        row, col = divmod(i, columns)
        left = _GALLERY_MARGIN + col * (GALLERY_TILE + _GALLERY_GAP)
        tile_top = top + row * (GALLERY_TILE + _GALLERY_CAPTION + _GALLERY_GAP)
        bottom = height_in - tile_top - GALLERY_TILE
        # Fit the image in the square box, keeping its aspect ratio, centred.
        rows_px, cols_px = tile.shape[:2]
        scale = GALLERY_TILE / max(rows_px, cols_px)
        w, h = cols_px * scale, rows_px * scale
        x0 = left + (GALLERY_TILE - w) / 2
        y0 = bottom + (GALLERY_TILE - h) / 2
        upsampling = max(rows_px, cols_px) <= GALLERY_TILE * DPI
        options: dict[str, Any] = {
            "extent": (x0, x0 + w, y0, y0 + h),
            "interpolation": "nearest" if upsampling else "antialiased",
            "aspect": "auto",
        }
        if tile.shape[2] == 1:
            ax.imshow(tile[..., 0], cmap="gray", vmin=0.0, vmax=1.0, **options)
        else:
            ax.imshow(tile, **options)
        if color is not None:
            ax.add_patch(
                Rectangle((x0, y0), w, h, fill=False, edgecolor=color, linewidth=1.5, zorder=2)
            )
        if captions is not None:
            ax.text(
                left + GALLERY_TILE / 2, bottom - 0.03, captions[i], ha="center", va="top",
                fontsize=GALLERY_CAPTION_FONTSIZE, linespacing=1.1,
            )  # fmt: skip
    rows = -(-len(shown) // columns)
    return top + rows * (GALLERY_TILE + _GALLERY_CAPTION + _GALLERY_GAP)


def _gallery_extent(
    columns: int, main: int, contrast: int, head_lines: int, sub_lines: int
) -> tuple[float, float]:
    """(width, height) in inches of a gallery laid out ``columns`` tiles per row."""
    width = 2 * _GALLERY_MARGIN + columns * GALLERY_TILE + (columns - 1) * _GALLERY_GAP
    block_height = GALLERY_TILE + _GALLERY_CAPTION + _GALLERY_GAP
    title_height = 0.1 + _GALLERY_LINE * head_lines + _GALLERY_SUBTITLE_LINE * sub_lines + 0.1
    main_height = -(-main // columns) * block_height if main else 0.8
    contrast_height = 0.3 + -(-contrast // columns) * block_height if contrast else 0.0
    return width, title_height + main_height + contrast_height + _GALLERY_MARGIN


def gallery_columns(count: int, contrast: int = 0, title_lines: int = 4) -> int:
    """Tiles per row that show a gallery largest in TensorBoard's default image card.

    TensorBoard shrinks an image to fit its card (about 303 x 240 px in TensorBoard 2.x): a
    wide gallery is shrunk by its width, a tall one by its height. This picks the column
    count (2 to 8) whose layout is shrunk least, so captions stay as large as possible.

    Args:
        count: tiles in the main block.
        contrast: tiles in the contrast block.
        title_lines: title and subtitle lines above the tiles.

    Returns:
        The column count.
    """
    best, best_scale = 2, -1.0
    for columns in range(2, 9):
        width, height = _gallery_extent(columns, count, contrast, 1, max(title_lines - 1, 0))
        scale = min(TENSORBOARD_CARD[0] / (width * DPI), TENSORBOARD_CARD[1] / (height * DPI))
        if scale > best_scale + 1e-9:
            best, best_scale = columns, scale
    return best


def _check_captions(captions: Sequence[str] | None, count: int, name: str) -> list[str] | None:
    if captions is None:
        return None
    if isinstance(captions, str):
        raise TypeError(f"`{name}` must be a sequence of strings (one per image), got a str.")
    out = [str(c) for c in captions]
    if len(out) != count:
        raise ValueError(f"`{name}` must have one caption per image ({count}), got {len(out)}.")
    return out


def gallery_figure(
    images: ArrayLike,
    captions: Sequence[str] | None,
    title: str,
    *,
    columns: int | None = None,
    note_if_empty: str = "nothing to show",
    subtitle: str | None = None,
    class_counts: Mapping[Any, int] | None = None,
    class_counts_label: str = "per class",
    contrast_images: ArrayLike | None = None,
    contrast_captions: Sequence[str] | None = None,
    contrast_title: str | None = None,
    color: str | None = None,
    contrast_color: str | None = None,
) -> Figure:
    """A grid of image tiles with a caption under each, and an optional contrast block.

    Tiles are laid out ``columns`` per row (by default :func:`gallery_columns`: the layout
    that TensorBoard's image card shrinks least), in the given order (row by row),
    at a fixed size (1.2 inch, 120 pixels; small images are enlarged without smoothing, large
    ones shrunk with antialiasing), so the figure keeps its width from one epoch to the next.
    Captions are 11 pt (15 px, about 1/35 of the default width), so they stay readable when
    TensorBoard shrinks the image to its card. A second
    block (e.g. the fakes deepest in the real manifold) follows under its own heading.

    Display scaling, the same for every tile of the figure (both blocks): uint8 images are
    divided by 255; then if every finite value lies in [0, 1] the values are shown as they
    are, otherwise they are min-max scaled over all tiles jointly (the smallest finite value
    is black, the largest white), which keeps the relative brightness of the tiles. NaN is
    shown black, +inf white, -inf black. One-channel images are drawn in grey.

    With no images, the figure holds the title and ``note_if_empty`` instead of tiles (and
    the contrast block, if given).

    Args:
        images: (B, C, H, W) with C in {1, 3}, or (B, H, W); a tensor or array, any range.
            B may be 0.
        captions: one string per image (newlines allowed), or None.
        title: the first title line.
        columns: tiles per row (>= 1), or None for :func:`gallery_columns`'s choice.
        note_if_empty: the note drawn when there are no images.
        subtitle: a second title line, e.g. what the captions mean.
        class_counts: ``{class: count}``, e.g. missed samples per class
            (:func:`lightning_embviz.samples.missed_per_class`); the non-zero counts are named
            under the title, largest first (at most 12, then how many more).
        class_counts_label: how that line starts, e.g. ``"missed per class"``.
        contrast_images: a second block of tiles, same layouts as ``images``.
        contrast_captions: one string per contrast image, or None.
        contrast_title: the heading of the contrast block.
        color: a frame colour for the tiles (e.g. the colour that marks these samples in the
            scatter views), or None for no frame.
        contrast_color: the same for the contrast tiles.

    Returns:
        A Figure (Agg canvas attached), ``columns`` tiles wide.

    Raises:
        ValueError: on image shapes other than the above, a caption count other than the
            image count, or ``columns`` < 1.
        TypeError: on images that are not numbers, or ``captions`` given as one string.
    """
    main = _gallery_images(images, "images")
    contrast = (
        _gallery_images(contrast_images, "contrast_images") if contrast_images is not None else None
    )
    return _draw_gallery(
        main,
        captions,
        title,
        columns=columns,
        note_if_empty=note_if_empty,
        subtitle=subtitle,
        class_counts=class_counts,
        class_counts_label=class_counts_label,
        contrast=contrast,
        contrast_captions=contrast_captions,
        contrast_title=contrast_title,
        color=color,
        contrast_color=contrast_color,
    )


def _draw_gallery(
    main: np.ndarray,
    captions: Sequence[str] | None,
    title: str,
    *,
    columns: int,
    note_if_empty: str,
    subtitle: str | None,
    class_counts: Mapping[Any, int] | None,
    class_counts_label: str,
    contrast: np.ndarray | None,
    contrast_captions: Sequence[str] | None,
    contrast_title: str | None,
    color: str | None,
    contrast_color: str | None,
) -> Figure:
    """:func:`gallery_figure` on images already converted to (B, H, W, C) float64."""
    if columns is None:
        columns = gallery_columns(len(main), 0 if contrast is None else len(contrast))
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"`columns` must be None or an int >= 1, got {columns!r}.")
    columns = int(columns)
    main_captions = _check_captions(captions, len(main), "captions")
    contrast_caps = (
        _check_captions(contrast_captions, len(contrast), "contrast_captions")
        if contrast is not None
        else None
    )
    if contrast is not None and len(contrast) == 0:
        contrast = None
    low, high = gallery_display_range(main, *([contrast] if contrast is not None else []))

    width = 2 * _GALLERY_MARGIN + columns * GALLERY_TILE + (columns - 1) * _GALLERY_GAP
    head = _wrap(title, width, _GALLERY_TITLE_FONTSIZE)
    sub = _wrap(subtitle, width, _GALLERY_SUBTITLE_FONTSIZE) if subtitle else []
    if class_counts:
        count_line = _class_count_line(class_counts, class_counts_label)
        sub += _wrap(count_line, width, _GALLERY_SUBTITLE_FONTSIZE)
    n_contrast = 0 if contrast is None else len(contrast)
    width, height = _gallery_extent(columns, len(main), n_contrast, len(head), len(sub))
    main_height = _gallery_extent(columns, len(main), 0, 0, 0)[1] - 0.2 - _GALLERY_MARGIN

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    top = 0.1
    fig.text(
        0.5, 1 - top / height, "\n".join(head), ha="center", va="top",
        fontsize=_GALLERY_TITLE_FONTSIZE,
    )  # fmt: skip
    top += _GALLERY_LINE * len(head)
    if sub:
        fig.text(
            0.5, 1 - top / height, "\n".join(sub), ha="center", va="top",
            fontsize=_GALLERY_SUBTITLE_FONTSIZE, color="#333333",
        )  # fmt: skip
        top += _GALLERY_SUBTITLE_LINE * len(sub)
    top += 0.1
    if len(main):
        top = _gallery_block(fig, main, main_captions, top, columns, low, high, color)
    else:
        fig.text(
            0.5, 1 - (top + 0.4) / height, note_if_empty, ha="center", va="center",
            fontsize=_GALLERY_SUBTITLE_FONTSIZE, color="#555555", style="italic",
        )  # fmt: skip
        top += main_height
    if contrast is not None:
        fig.text(
            _GALLERY_MARGIN / width, 1 - (top + 0.05) / height, contrast_title or "",
            ha="left", va="top", fontsize=_GALLERY_SUBTITLE_FONTSIZE, color="#333333",
        )  # fmt: skip
        top += 0.3
        _gallery_block(fig, contrast, contrast_caps, top, columns, low, high, contrast_color)
    return fig


def format_ratio(value: float) -> str:
    """A ratio for a caption: ``"1.84×"``, ``"12.3×"``, ``"184×"``; ``"r=0"`` for inf.

    Args:
        value: a distance divided by a k-NN radius.

    Returns:
        Short text.
    """
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "r=0" if value > 0 else "-inf"
    if abs(value) >= 100:
        return f"{value:.0f}×"
    if abs(value) >= 10:
        return f"{value:.1f}×"
    return f"{value:.2f}×"


def _sample_captions(
    count: int,
    lines: Sequence[str],
    indices: ArrayLike | None,
    labels: ArrayLike | Sequence[Any] | None,
    name: str,
) -> list[str]:
    idx = as_numpy(indices).reshape(-1) if indices is not None else None
    lab = (
        np.asarray(as_numpy(labels) if isinstance(labels, Tensor) else labels).reshape(-1)
        if labels is not None
        else None
    )
    for what, arr in (("indices", idx), ("labels", lab)):
        if arr is not None and arr.shape[0] != count:
            raise ValueError(
                f"`{name}{what}` must have one entry per image ({count}), got {arr.shape[0]}."
            )
    out = []
    for i in range(count):
        head = []
        if idx is not None:
            head.append(f"#{idx[i]}")
        if lab is not None:
            value = lab[i]
            head.append(f"[{value.item() if isinstance(value, np.generic) else value}]")
        out.append(" ".join(head) + "\n" + lines[i] if head else lines[i])
    return out


def _ratios(ratios: ArrayLike, count: int, name: str) -> np.ndarray:
    arr = as_numpy(ratios).astype(np.float64).reshape(-1)
    if arr.shape[0] != count:
        raise ValueError(f"`{name}` must have one value per image ({count}), got {arr.shape[0]}.")
    return arr


def missed_real_figure(
    images: ArrayLike,
    ratios: ArrayLike,
    *,
    num_missed: int,
    num_real: int,
    indices: ArrayLike | None = None,
    labels: ArrayLike | Sequence[Any] | None = None,
    class_counts: Mapping[Any, int] | None = None,
    nearest_k: int | None = None,
    title: str | None = None,
    columns: int | None = None,
) -> Figure:
    """The missed-real gallery: real samples whose k-NN ball holds no fake, most missed first.

    Give the images in :func:`lightning_embviz.samples.missed_real_order`'s order (usually
    its first ``gallery_size`` rows). Each caption shows the sample's index (and label) and
    its ratio, nearest fake distance / own k-NN radius (>= 1 for a missed sample: how many
    radii away the nearest fake is). Display scaling: see :func:`gallery_figure`.

    Args:
        images: (B, C, H, W) or (B, H, W) images of the shown samples, B may be 0.
        ratios: (B,) ``real_nearest_fake_ratio`` of the shown samples.
        num_missed: how many reals are missed in all (the title says how many are shown).
        num_real: the size of the real set.
        indices: (B,) dataset indices for the captions, or None.
        labels: (B,) class labels for the captions, or None.
        class_counts: ``{class: missed count}``
            (:func:`~lightning_embviz.samples.missed_per_class`).
        nearest_k: k, for the title.
        title: replaces the first words of the title (default ``"missed real samples"``).
        columns: tiles per row, or None (:func:`gallery_columns`).

    Returns:
        A Figure (Agg canvas attached); with no images a note says nothing was missed.
    """
    tiles = _gallery_images(images, "images")
    values = _ratios(ratios, len(tiles), "ratios")
    captions = _sample_captions(len(tiles), [format_ratio(v) for v in values], indices, labels, "")
    head = (
        f"{title or 'missed real samples'}: {num_missed} of {num_real} reals have no fake in "
        "their k-NN ball"
    )
    k = f" · k={int(nearest_k)}" if nearest_k is not None else ""
    shown = f"the {len(tiles)} most clearly missed" if num_missed > len(tiles) else "all"
    sub = (
        f"{shown}, largest caption first: nearest fake distance / own k-NN radius{k}"
        if len(tiles)
        else k.lstrip(" ·")
    )
    return _draw_gallery(
        tiles,
        captions,
        head,
        columns=columns,
        subtitle=sub,
        note_if_empty="no missed real samples: every real has a fake inside its k-NN ball",
        class_counts=class_counts,
        class_counts_label="missed per class",
        contrast=None,
        contrast_captions=None,
        contrast_title=None,
        color=UNCOVERED_COLOR,
        contrast_color=None,
    )


def outlier_fake_figure(
    images: ArrayLike,
    ratios: ArrayLike,
    *,
    num_outliers: int,
    num_fake: int,
    indices: ArrayLike | None = None,
    labels: ArrayLike | Sequence[Any] | None = None,
    deepest_images: ArrayLike | None = None,
    deepest_counts: ArrayLike | None = None,
    deepest_indices: ArrayLike | None = None,
    deepest_labels: ArrayLike | Sequence[Any] | None = None,
    nearest_k: int | None = None,
    title: str | None = None,
    columns: int | None = None,
) -> Figure:
    """The outlier-fake gallery: fakes outside every real k-NN ball, farthest first.

    Give the images in :func:`lightning_embviz.samples.outlier_fake_order`'s order. Each
    caption shows the index (and label) and the ratio min over reals of d(f, x) / r_k(x): how
    far the fake lies from the real manifold, in radii of the nearest ball (>= 1 for an
    outlier). With ``deepest_images`` (in
    :func:`~lightning_embviz.samples.deepest_fake_order`'s order, typically one row) a
    contrast block shows the fakes inside the most real balls, captioned with their ball
    count. With no outliers the figure is a note only (no contrast block). Display scaling:
    see :func:`gallery_figure` (one rule for both blocks).

    Args:
        images: (B, C, H, W) or (B, H, W) images of the shown outliers, B may be 0.
        ratios: (B,) ``fake_nearest_ball_ratio`` of the shown outliers.
        num_outliers: how many fakes are outside every real ball in all.
        num_fake: the size of the fake set.
        indices: (B,) dataset indices for the captions, or None.
        labels: (B,) labels (e.g. a conditional GAN's classes), or None.
        deepest_images: (B2, C, H, W) or (B2, H, W) images of the deepest fakes, or None.
        deepest_counts: (B2,) their ``fake_ball_count``.
        deepest_indices: (B2,) their dataset indices, or None.
        deepest_labels: (B2,) their labels, or None.
        nearest_k: k, for the title.
        title: replaces the first words of the title (default ``"outlier fakes"``).
        columns: tiles per row, or None (:func:`gallery_columns`).

    Returns:
        A Figure (Agg canvas attached).

    Raises:
        ValueError: if ``deepest_images`` is given without ``deepest_counts`` or counts differ.
    """
    tiles = _gallery_images(images, "images")
    values = _ratios(ratios, len(tiles), "ratios")
    captions = _sample_captions(len(tiles), [format_ratio(v) for v in values], indices, labels, "")
    contrast = contrast_caps = None
    if deepest_images is not None and len(tiles):
        contrast = _gallery_images(deepest_images, "deepest_images")
        if deepest_counts is None:
            raise ValueError("`deepest_counts` is needed with `deepest_images` (the captions).")
        counts = as_numpy(deepest_counts).reshape(-1)
        if counts.shape[0] != len(contrast):
            raise ValueError(
                f"`deepest_counts` must have one value per deepest image ({len(contrast)}), "
                f"got {counts.shape[0]}."
            )
        contrast_caps = _sample_captions(
            len(contrast),
            [f"in {int(c)} ball{'s' if int(c) != 1 else ''}" for c in counts],
            deepest_indices,
            deepest_labels,
            "deepest_",
        )
    head = (
        f"{title or 'outlier fakes'}: {num_outliers} of {num_fake} fakes lie outside every "
        "real k-NN ball"
    )
    k = f" · k={int(nearest_k)}" if nearest_k is not None else ""
    shown = f"the {len(tiles)} farthest" if num_outliers > len(tiles) else "all"
    sub = (
        f"{shown}, largest caption first: min over reals of distance / that real's k-NN radius{k}"
        if len(tiles)
        else k.lstrip(" ·")
    )
    return _draw_gallery(
        tiles,
        captions,
        head,
        columns=columns,
        subtitle=sub,
        note_if_empty="no outlier fakes: every fake lies inside some real k-NN ball",
        class_counts=None,
        class_counts_label="",
        contrast=contrast,
        contrast_captions=contrast_caps,
        contrast_title="for contrast: the fakes deepest in the real manifold (most real balls)",
        color=FAKE_OUTSIDE_COLOR,
        contrast_color=FAKE_COLOR,
    )


def _canvas(fig: Figure) -> FigureCanvasAgg:
    canvas = fig.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(fig)
    return canvas


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB image array with the Agg canvas (the one renderer).

    Args:
        fig: the figure.

    Returns:
        (H, W, 3) uint8 array.
    """
    canvas = _canvas(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG bytes (lossless: decodes to the same pixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes: the pixels of :func:`figure_to_array`, PNG-encoded.

    Args:
        fig: the figure.

    Returns:
        The PNG file content.
    """
    return encode_png(figure_to_array(fig))


class RenderedFigure:
    """A figure drawn once: its pixels, and PNG bytes encoded from them on first use.

    Loggers that take pixels (TensorBoard, W&B) never pay for the PNG; loggers that store files
    (CSV, MLflow, plain folders) all write the same bytes.

    Args:
        pixels: (H, W, 3) uint8 image.
    """

    __slots__ = ("_png", "pixels")

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self._png: Optional[bytes] = None

    @classmethod
    def from_figure(cls, fig: Figure) -> RenderedFigure:
        """Draw ``fig`` with the Agg canvas."""
        return cls(figure_to_array(fig))

    @property
    def png(self) -> bytes:
        """The PNG encoding of :attr:`pixels` (computed once)."""
        if self._png is None:
            self._png = encode_png(self.pixels)
        return self._png


def k_sweep_figure(sweep: Mapping[int, Mapping[str, float]], *, title: str | None = None) -> Figure:
    """Precision, recall, density and coverage against k, for one run (``embviz/k_sweep``).

    Larger k gives larger balls: every metric but density grows with k, and how fast tells
    how close fakes and reals are at each scale (Naeem et al. recommend k = 5).

    Args:
        sweep: ``{k: {"precision": p, "recall": r, "density": d, "coverage": c}}`` (e.g.
            :meth:`lightning_embviz.RealReference.sweep`), at least one k.
        title: first title line (e.g. ``"epoch 3, step 1200"``).

    Returns:
        The figure.

    Raises:
        ValueError: an empty sweep or a missing metric.
    """
    if not sweep:
        raise ValueError("`sweep` must hold at least one k.")
    ks = sorted(int(k) for k in sweep)
    fig = _new_figure((6.4, 4.2))
    ax = fig.add_subplot()
    for name, color in METRIC_COLORS.items():
        try:
            values = [float(sweep[k][name]) for k in ks]
        except KeyError as err:
            raise ValueError(f"`sweep[k]` must hold {name!r} for every k.") from err
        ax.plot(ks, values, marker="o", color=color, label=name)
    ax.set_xlabel("k (nearest neighbours)")
    ax.set_xticks(ks)
    ax.set_ylabel("value")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _set_title(fig, title, "metrics against k")
    return fig
