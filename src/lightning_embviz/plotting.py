"""Figure builders, kept here for their public import path.

The code lives in :mod:`lightning_embviz.figures`: scatter figures in
:mod:`~lightning_embviz.figures.plots`, per-class metrics in
:mod:`~lightning_embviz.figures.per_class`, galleries in
:mod:`~lightning_embviz.figures.galleries` and
:mod:`~lightning_embviz.figures.sample_galleries`, rendering in
:mod:`~lightning_embviz.figures.rendering`, the palette in
:mod:`~lightning_embviz.figures.style`.
"""

from lightning_embviz.figures.galleries import (
    GALLERY_CAPTION_FONTSIZE,
    GALLERY_TILE,
    TENSORBOARD_CARD,
    gallery_columns,
    gallery_display_range,
    gallery_figure,
)
from lightning_embviz.figures.per_class import class_metrics, class_metrics_figure
from lightning_embviz.figures.plots import (
    classes_figure,
    comparison_figure,
    coverage_figure,
    k_sweep_figure,
    projection_figure,
)
from lightning_embviz.figures.rendering import (
    RenderedFigure,
    encode_png,
    figure_to_array,
    figure_to_png,
)
from lightning_embviz.figures.sample_galleries import (
    format_ratio,
    missed_real_figure,
    outlier_fake_figure,
)
from lightning_embviz.figures.style import (
    CLASS_COLORS,
    DPI,
    FAKE_COLOR,
    FAKE_OUTSIDE_COLOR,
    FIGSIZE,
    METRIC_COLORS,
    REAL_COLOR,
    UNCOVERED_COLOR,
    metrics_title,
)

__all__ = [
    "CLASS_COLORS",
    "DPI",
    "FAKE_COLOR",
    "FAKE_OUTSIDE_COLOR",
    "FIGSIZE",
    "GALLERY_CAPTION_FONTSIZE",
    "GALLERY_TILE",
    "METRIC_COLORS",
    "REAL_COLOR",
    "TENSORBOARD_CARD",
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
