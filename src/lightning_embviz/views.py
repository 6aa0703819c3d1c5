"""Views of one validation run, kept here for their public import path.

The code lives in :mod:`lightning_embviz.figures.views`.
"""

from lightning_embviz.figures.views import (
    DEFAULT_MAX_SAMPLES,
    SampleTables,
    SampleViews,
    ViewBuilder,
)

__all__ = ["DEFAULT_MAX_SAMPLES", "SampleTables", "SampleViews", "ViewBuilder"]
