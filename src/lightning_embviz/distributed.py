"""PRDC (and the Vendi score, the memorization numbers) with the work shared by every rank.

The public face of :mod:`lightning_embviz.engine.distributed`,
:func:`lightning_embviz.engine.kernels.vendi_score_distributed` and
:func:`lightning_embviz.engine.memorization_distributed.compare_memorization_distributed`,
where the code lives (patch attributes there, not here).
"""

from lightning_embviz.engine.distributed import (
    RankFailedError,
    compare_details_distributed,
    compute_prdc_details_distributed,
    fit_reference_distributed,
    row_share,
    sweep_details_distributed,
)
from lightning_embviz.engine.kernels import vendi_score_distributed
from lightning_embviz.engine.memorization_distributed import compare_memorization_distributed

__all__ = [
    "RankFailedError",
    "compare_details_distributed",
    "compare_memorization_distributed",
    "compute_prdc_details_distributed",
    "fit_reference_distributed",
    "row_share",
    "sweep_details_distributed",
    "vendi_score_distributed",
]
