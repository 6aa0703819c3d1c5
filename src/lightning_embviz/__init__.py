"""lightning-embviz: watch a generative model learn.

Precision, recall, density and coverage (Naeem et al., 2020), the Fréchet distance, and
2-D views of real and generated embeddings, logged from a PyTorch Lightning callback or
computed on their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning_embviz.metrics import (
    PRDCResult,
    RealReference,
    compute_prdc,
    compute_prdc_details,
    frechet_distance,
)

if TYPE_CHECKING:
    from lightning_embviz.callback import EmbeddingMonitor

__version__ = "0.1.0"

__all__ = [
    "EmbeddingMonitor",
    "PRDCResult",
    "RealReference",
    "__version__",
    "compute_prdc",
    "compute_prdc_details",
    "frechet_distance",
]


def __getattr__(name: str) -> Any:
    # The callback imports Lightning; load it only when asked for, so that the metric
    # engine and the `embviz` command start fast.
    if name == "EmbeddingMonitor":
        from lightning_embviz.callback import EmbeddingMonitor

        return EmbeddingMonitor
    raise AttributeError(f"module 'lightning_embviz' has no attribute {name!r}")
