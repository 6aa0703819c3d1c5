"""Precision, recall, density, coverage, the Fréchet distance and more, in pure torch.

The public face of the metric engine (:mod:`lightning_embviz.engine`): every name here is
defined there and re-exported, so ``from lightning_embviz.metrics import compute_prdc`` keeps
working. Vendi, kernel distance, FD-infinity, clipped density/coverage, realism and rarity
scores come from :mod:`lightning_embviz.suite`.

No Lightning import here: these functions are the engine behind the callback and the
``embviz`` command, and they are usable on their own.
"""

from __future__ import annotations

from lightning_embviz._keys import PRDC_KEYS
from lightning_embviz.engine.prdc import (
    compute_prdc,
    compute_prdc_details,
    per_class_prdc,
)
from lightning_embviz.engine.reference import RealReference
from lightning_embviz.engine.results import PRDCResult
from lightning_embviz.suite import (
    FDInfinityResult,
    FrechetReference,
    clipped_density_coverage,
    fd_infinity,
    frechet_distance,
    kernel_distance,
    rarity_score,
    realism_score,
    vendi_score,
)

__all__ = [
    "PRDC_KEYS",
    "FDInfinityResult",
    "FrechetReference",
    "PRDCResult",
    "RealReference",
    "clipped_density_coverage",
    "compute_prdc",
    "compute_prdc_details",
    "fd_infinity",
    "frechet_distance",
    "kernel_distance",
    "per_class_prdc",
    "rarity_score",
    "realism_score",
    "vendi_score",
]
