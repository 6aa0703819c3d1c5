"""PRDC with the distance work shared by every rank.

The public face of :mod:`lightning_embviz.engine.distributed`, where the code lives (patch
attributes there, not here).
"""

from lightning_embviz.engine.distributed import (
    RankFailedError,
    compare_details_distributed,
    compute_prdc_details_distributed,
    fit_reference_distributed,
    row_share,
    sweep_details_distributed,
)

__all__ = [
    "RankFailedError",
    "compare_details_distributed",
    "compute_prdc_details_distributed",
    "fit_reference_distributed",
    "row_share",
    "sweep_details_distributed",
]
