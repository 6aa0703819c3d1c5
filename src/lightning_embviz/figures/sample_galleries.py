"""The two sample galleries: the reals no fake reaches and the fakes outside every real ball.

One builder (:func:`_sample_gallery`) with their differences as parameters: the title, which
tiles are shown, what the caption's ratio means, the frame colour, the per-class line of the
missed reals and the contrast block (the deepest fakes) of the outliers. Captions carry the
sample's index, label and ratio (:func:`format_ratio`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch import Tensor

from lightning_embviz._arrays import as_numpy
from lightning_embviz.figures.galleries import draw_gallery, gallery_images
from lightning_embviz.figures.style import (
    FAKE_COLOR,
    FAKE_OUTSIDE_COLOR,
    UNCOVERED_COLOR,
    ArrayLike,
)

__all__ = ["format_ratio", "missed_real_figure", "outlier_fake_figure"]


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


def _ratio_tiles(
    images: ArrayLike,
    ratios: ArrayLike,
    indices: ArrayLike | None,
    labels: ArrayLike | Sequence[Any] | None,
) -> tuple[np.ndarray, list[str]]:
    """The tiles of a sample gallery and their captions (index, label, ratio)."""
    tiles = gallery_images(images, "images")
    values = _ratios(ratios, len(tiles), "ratios")
    captions = _sample_captions(len(tiles), [format_ratio(v) for v in values], indices, labels, "")
    return tiles, captions


def _sample_gallery(
    tiles: np.ndarray,
    captions: list[str],
    *,
    head: str,
    selected: int,
    shown_words: str,
    ratio_words: str,
    nearest_k: int | None,
    columns: int | None,
    note_if_empty: str,
    color: str,
    class_counts: Mapping[Any, int] | None = None,
    class_counts_label: str = "",
    contrast: np.ndarray | None = None,
    contrast_captions: Sequence[str] | None = None,
    contrast_title: str | None = None,
    contrast_color: str | None = None,
) -> Figure:
    """One sample gallery: ``head``, then which tiles are shown and what their ratio means.

    ``selected`` is how many samples qualify in all; with more than the tiles the subtitle
    says ``the B <shown_words>``, else ``all``.
    """
    k = f" · k={int(nearest_k)}" if nearest_k is not None else ""
    shown = f"the {len(tiles)} {shown_words}" if selected > len(tiles) else "all"
    sub = f"{shown}, largest caption first: {ratio_words}{k}" if len(tiles) else k.lstrip(" ·")
    return draw_gallery(
        tiles,
        captions,
        head,
        columns=columns,
        subtitle=sub,
        note_if_empty=note_if_empty,
        class_counts=class_counts,
        class_counts_label=class_counts_label,
        contrast=contrast,
        contrast_captions=contrast_captions,
        contrast_title=contrast_title,
        color=color,
        contrast_color=contrast_color,
    )


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
    tiles, captions = _ratio_tiles(images, ratios, indices, labels)
    head = (
        f"{title or 'missed real samples'}: {num_missed} of {num_real} reals have no fake in "
        "their k-NN ball"
    )
    return _sample_gallery(
        tiles,
        captions,
        head=head,
        selected=num_missed,
        shown_words="most clearly missed",
        ratio_words="nearest fake distance / own k-NN radius",
        nearest_k=nearest_k,
        columns=columns,
        note_if_empty="no missed real samples: every real has a fake inside its k-NN ball",
        color=UNCOVERED_COLOR,
        class_counts=class_counts,
        class_counts_label="missed per class",
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
    tiles, captions = _ratio_tiles(images, ratios, indices, labels)
    contrast = contrast_caps = None
    if deepest_images is not None and len(tiles):
        contrast = gallery_images(deepest_images, "deepest_images")
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
    return _sample_gallery(
        tiles,
        captions,
        head=head,
        selected=num_outliers,
        shown_words="farthest",
        ratio_words="min over reals of distance / that real's k-NN radius",
        nearest_k=nearest_k,
        columns=columns,
        note_if_empty="no outlier fakes: every fake lies inside some real k-NN ball",
        color=FAKE_OUTSIDE_COLOR,
        contrast=contrast,
        contrast_captions=contrast_caps,
        contrast_title="for contrast: the fakes deepest in the real manifold (most real balls)",
        contrast_color=FAKE_COLOR,
    )
