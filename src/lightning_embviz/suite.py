"""More metrics from the same embeddings, exact on the full sets (re-exported from the engine).

Vendi, kernel distance (:mod:`lightning_embviz.engine.kernels`), a reusable Fréchet fit, FD
and FD-infinity (:mod:`lightning_embviz.engine.frechet`), clipped density and coverage,
realism and rarity scores (:mod:`lightning_embviz.engine.balls`).
:mod:`lightning_embviz.metrics` re-exports the same names.
"""

from lightning_embviz.engine.balls import clipped_density_coverage, rarity_score, realism_score
from lightning_embviz.engine.frechet import (
    FDInfinityResult,
    FrechetReference,
    fd_infinity,
    frechet_distance,
)
from lightning_embviz.engine.kernels import kernel_distance, vendi_score

__all__ = [
    "FDInfinityResult",
    "FrechetReference",
    "clipped_density_coverage",
    "fd_infinity",
    "frechet_distance",
    "kernel_distance",
    "rarity_score",
    "realism_score",
    "vendi_score",
]
