"""Scatter figures in a 2-D projection, and the metrics against k.

Real vs fake (:func:`projection_figure`), k-NN balls (:func:`coverage_figure`), classes
(:func:`classes_figure`), several fake sets (:func:`comparison_figure`), the k sweep
(:func:`k_sweep_figure`).

Each builder takes arrays and returns a :class:`matplotlib.figure.Figure` with the Agg canvas
attached (see :mod:`lightning_embviz.figures.style`). No Lightning import here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from lightning_embviz._arrays import as_numpy
from lightning_embviz.engine.prdc import class_order
from lightning_embviz.figures.style import (
    FAKE_COLOR,
    FAKE_OUTSIDE_COLOR,
    METRIC_COLORS,
    REAL_COLOR,
    UNCOVERED_COLOR,
    ArrayLike,
    class_colors,
    labels_of,
    legend_dot,
    marker_size,
    mask_of,
    metrics_title,
    new_figure,
    points_of,
    set_title,
    style_axes,
)

__all__ = [
    "classes_figure",
    "comparison_figure",
    "coverage_figure",
    "k_sweep_figure",
    "projection_figure",
]


def _scatter_real_fake(
    ax: Any,
    real_2d: np.ndarray,
    fake_2d: np.ndarray,
    real_covered: np.ndarray | None,
    fake_inside: np.ndarray | None,
    real_label: str = "real",
    fake_label: str = "fake",
) -> list[Any]:
    size = marker_size(len(real_2d) + len(fake_2d))
    handles: list[Any] = []
    ax.scatter(
        real_2d[:, 0], real_2d[:, 1], s=size, c=REAL_COLOR, alpha=0.6, linewidths=0,
        marker="o", rasterized=True,
    )  # fmt: skip
    handles.append(legend_dot(REAL_COLOR, "o", f"{real_label} ({len(real_2d)})"))
    ax.scatter(
        fake_2d[:, 0], fake_2d[:, 1], s=size, c=FAKE_COLOR, alpha=0.6, linewidths=0,
        marker="o", rasterized=True,
    )  # fmt: skip
    handles.append(legend_dot(FAKE_COLOR, "o", f"{fake_label} ({len(fake_2d)})"))
    if fake_inside is not None and (~fake_inside).any():
        out = fake_2d[~fake_inside]
        ax.scatter(
            out[:, 0], out[:, 1], s=size * 1.8 + 4, c=FAKE_OUTSIDE_COLOR, marker="x",
            linewidths=0.6, alpha=0.85, rasterized=True,
        )  # fmt: skip
        handles.append(
            legend_dot(
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
            legend_dot(
                UNCOVERED_COLOR, "o", f"missed: {real_label} not covered ({len(miss)})", True
            )
        )
    return handles


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
    real = points_of(real_2d, "real_2d")
    fake = points_of(fake_2d, "fake_2d")
    covered = mask_of(real_covered, len(real), "real_covered")
    inside = mask_of(fake_in_real_manifold, len(fake), "fake_in_real_manifold")
    fig = new_figure()
    ax = fig.add_subplot()
    handles = _scatter_real_fake(ax, real, fake, covered, inside)
    style_axes(ax, method)
    ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8)
    set_title(fig, title, metrics_title(metrics, nearest_k))
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
    real = points_of(real_2d, "real_2d")
    fake = points_of(fake_2d, "fake_2d")
    radii = as_numpy(real_radii).astype(np.float64).reshape(-1)
    if radii.shape[0] != len(real):
        raise ValueError(f"`real_radii` must have {len(real)} entries, got {radii.shape[0]}.")
    covered = mask_of(real_covered, len(real), "real_covered")
    fig = new_figure()
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
    size = marker_size(len(real) + len(fake))
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
    handles = [legend_dot(REAL_COLOR, "o", f"real k-NN ball, covered ({n_cov})", True)]
    if covered is not None:
        n_miss = int((~covered).sum())
        handles.append(
            legend_dot(UNCOVERED_COLOR, "o", f"real k-NN ball, no fake inside ({n_miss})", True)
        )
    handles.append(legend_dot(FAKE_COLOR, "o", f"fake ({len(fake)})"))
    style_axes(ax, method)
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
    set_title(
        fig, title or "k-NN balls of the real set (coverage)", metrics_title(metrics, nearest_k)
    )
    return fig


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
    real = points_of(real_2d, "real_2d")
    fake = points_of(fake_2d, "fake_2d")
    rl = labels_of(real_labels, len(real), "real_labels")
    fl = labels_of(fake_labels, len(fake), "fake_labels")
    classes = class_order(rl, fl)
    colors = class_colors(classes)
    fig = new_figure((10.0, 5.2))
    ax_r, ax_f = fig.subplots(1, 2, sharex=True, sharey=True)
    size = marker_size(len(real) + len(fake)) * 1.5
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
        style_axes(ax, method, shared=True)
    shown = classes[:20]
    handles = [legend_dot(colors[c], "o", str(c)) for c in shown]
    if len(classes) > len(shown):
        handles.append(
            Line2D([], [], linestyle="none", label=f"… {len(classes) - len(shown)} more")
        )
    fig.legend(
        handles=handles, loc="outside right upper", fontsize=7, title="class", title_fontsize=8,
    )  # fmt: skip
    set_title(fig, title or "classes", metrics_title(metrics, nearest_k))
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
    real = points_of(real_2d, "real_2d")
    fakes = [points_of(f, f"fakes_2d[{i}]") for i, f in enumerate(fakes_2d)]
    if len(names) != len(fakes) or not fakes:
        raise ValueError(
            f"need one name per fake set, got {len(names)} names for {len(fakes)} sets."
        )
    n = len(fakes)
    cols = min(n, 4)
    rows = int(np.ceil(n / cols))
    fig = new_figure((4.2 * cols + 0.4, 4.6 * rows + 0.9))
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    handles: list[Any] = []
    for i, fake in enumerate(fakes):
        covered = mask_of(real_covered[i], len(real), "real_covered") if real_covered else None
        inside = (
            mask_of(fake_in_real_manifold[i], len(fake), "fake_in_real_manifold")
            if fake_in_real_manifold
            else None
        )
        h = _scatter_real_fake(axes[i], real, fake, covered, inside)
        if len(h) > len(handles):
            handles = h
        m = metrics[i] if metrics else None
        axes[i].set_title(f"{names[i]}\n{metrics_title(m)}", fontsize=8)
        style_axes(axes[i], method, shared=True)
    for ax in axes[n:]:
        ax.set_visible(False)
    generic = [
        legend_dot(REAL_COLOR, "o", "real"),
        legend_dot(FAKE_COLOR, "o", "fake"),
        legend_dot(FAKE_OUTSIDE_COLOR, "x", "fake outside every real ball"),
        legend_dot(UNCOVERED_COLOR, "o", "real not covered (missed)", True),
    ]
    fig.legend(handles=generic, loc="outside lower center", ncols=4, fontsize=7)
    head = title or "fake sets in one frame fitted on the real set"
    fig.suptitle(f"{head} · k={nearest_k}" if nearest_k else head, fontsize=10)
    return fig


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
    fig = new_figure((6.4, 4.2))
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
    set_title(fig, title, "metrics against k")
    return fig
