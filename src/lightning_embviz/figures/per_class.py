"""Per-class metrics from per-sample arrays, and their grouped-bar figure.

The arithmetic is :func:`lightning_embviz.metrics.per_class_prdc`'s; this module only adapts
per-sample arrays (what a caller holds after subsampling or reading files) to it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import numpy as np
from matplotlib.figure import Figure

from lightning_embviz._arrays import as_numpy
from lightning_embviz.engine.prdc import per_class_prdc
from lightning_embviz.engine.results import PRDCResult
from lightning_embviz.figures.style import METRIC_COLORS, ArrayLike, mask_of, new_figure, set_title

__all__ = ["class_metrics", "class_metrics_figure"]


@dataclasses.dataclass(frozen=True)
class _PerSample:
    """The four fields of a :class:`PRDCResult` that :func:`per_class_prdc` reads."""

    real_covered: np.ndarray
    real_recalled: np.ndarray
    fake_ball_count: np.ndarray
    nearest_k: int | None


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
    rl = as_numpy(real_labels).reshape(-1)
    covered = mask_of(real_covered, len(rl), "real_covered")
    assert covered is not None  # real_covered is required
    recalled = mask_of(real_recalled, len(rl), "real_recalled")
    fl = None if fake_labels is None else as_numpy(fake_labels).reshape(-1)
    counts = np.zeros(0, dtype=np.int64)
    if fl is not None:
        given = None if fake_ball_count is None else as_numpy(fake_ball_count).reshape(-1)
        if given is None or given.shape[0] != fl.shape[0]:
            raise ValueError("`fake_ball_count` must have one entry per fake label.")
        counts = given
    # Without `real_recalled` the per-class recall is computed on a stand-in and dropped.
    samples = _PerSample(covered, covered if recalled is None else recalled, counts, nearest_k)
    per_class = per_class_prdc(cast(PRDCResult, samples), rl, fl)
    if recalled is None:
        for row in per_class.values():
            del row["recall"]
    return per_class


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
    fig = new_figure((width, 4.2))
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
    set_title(fig, title or "per-class metrics", "low coverage in a class = mode collapse there")
    return fig
