"""2-D projections, kept here for their public import path.

The code lives in :mod:`lightning_embviz.figures.projections` (the interface, PCA,
:func:`make_projection`) and :mod:`lightning_embviz.figures.neighbour_maps` (t-SNE, UMAP).
"""

from lightning_embviz.figures.neighbour_maps import TSNEProjection, UMAPProjection
from lightning_embviz.figures.projections import (
    DEFAULT_MAX_SAMPLES,
    METHODS,
    TSNE_BACKENDS,
    PCAProjection,
    Projection,
    fingerprint,
    make_projection,
    subsample_indices,
)

__all__ = [
    "DEFAULT_MAX_SAMPLES",
    "METHODS",
    "TSNE_BACKENDS",
    "PCAProjection",
    "Projection",
    "TSNEProjection",
    "UMAPProjection",
    "fingerprint",
    "make_projection",
    "subsample_indices",
]
