"""Degenerate fake sets: where precision, density and coverage stop meaning what they say.

A generator that has collapsed (every fake at, or very near, one point in the middle of the
real data) gets precision 1, density far above 1 and a high coverage: in high dimension the
k-NN ball of almost every real point is large enough to reach the centre of the data, so a
lump of fakes there lies inside nearly every ball (the reference ``prdc`` package gives the
same numbers; they are correct for the definitions, and misleading). Only recall, which
looks from the fakes' side with the fakes' own (tiny) balls, drops to about 0.

:func:`degenerate_reasons` flags such a set from two signs, each enough on its own:

- recall below :data:`RECALL_MAX` together with density above :data:`DENSITY_MIN` (fakes
  piled into the real set's balls but reaching no real point with their own);
- a spread (root mean squared distance to the set's own mean) below
  :data:`SPREAD_RATIO_MAX` times the real set's.

Flagged sets need not be a single point. Measured on Gaussian data (N = M = 1000, D = 64,
k = 5): fakes shrunk to 0.7 of the real scale give precision 1.0, recall 0.007, density 31
and coverage 1.0, and are flagged (in 64 dimensions such a set lies well inside the real
shell); shrunk to 0.2: recall 0.0, density 200, coverage 1.0, spread ratio 0.2, flagged. A
set of the right scale moved off the real one (shift 0.3 per feature: precision 0.58,
recall 0.57, density 0.52, coverage 0.76) and a matching set (recall 0.74, density 0.96) are
not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "DENSITY_MIN",
    "RECALL_MAX",
    "SPREAD_RATIO_MAX",
    "degenerate_message",
    "degenerate_reasons",
    "spread",
]

RECALL_MAX = 0.02
"""Recall below this, with density above :data:`DENSITY_MIN`, marks a collapsed set."""
DENSITY_MIN = 4.0
"""Density above this, with recall below :data:`RECALL_MAX`, marks a collapsed set."""
SPREAD_RATIO_MAX = 0.1
"""A fake spread below this fraction of the real spread marks a collapsed set."""

_ROWS = 4096  # rows per block of the spread computation (bounded float64 memory)


def spread(x: Any) -> float:
    """Root mean squared distance of the rows of ``x`` to their mean, in float64.

    ``sqrt(trace(cov))`` with the 1/N normalisation: the size of the set's cloud.

    Args:
        x: (N, D) NumPy array or torch tensor of numbers.

    Returns:
        The spread as a Python float (0.0 when all rows are equal).
    """
    t = x.detach().cpu() if isinstance(x, torch.Tensor) else torch.from_numpy(np.asarray(x))
    if t.device.type == "mps":  # pragma: no cover - no float64 on MPS
        t = t.cpu()
    rows = t.shape[0]
    mean = torch.zeros(t.shape[1], dtype=torch.float64)
    for start in range(0, rows, _ROWS):
        mean += t[start : start + _ROWS].to(torch.float64).sum(0)
    mean /= rows
    total = 0.0
    for start in range(0, rows, _ROWS):
        centred = t[start : start + _ROWS].to(torch.float64) - mean
        total += float((centred * centred).sum())
    return math.sqrt(total / rows)


def degenerate_reasons(real: Any, fake: Any, metrics: Mapping[str, float]) -> list[str]:
    """Why the fake set is degenerate (collapsed), or an empty list when it is not.

    Args:
        real: (N, D) real embeddings (array or tensor).
        fake: (M, D) fake embeddings, same D.
        metrics: at least ``recall`` and ``density`` of the fake set against ``real``
            (:func:`lightning_embviz.compute_prdc`).

    Returns:
        One sentence per sign found (see the module documentation); empty for a healthy set.

    Example::

        >>> import numpy as np
        >>> from lightning_embviz import compute_prdc
        >>> rng = np.random.default_rng(0)
        >>> real = rng.normal(size=(400, 32)).astype(np.float32)
        >>> fake = 0.05 * rng.normal(size=(400, 32)).astype(np.float32)
        >>> metrics = compute_prdc(real, fake, nearest_k=5)
        >>> metrics["precision"], metrics["recall"]
        (1.0, 0.0)
        >>> len(degenerate_reasons(real, fake, metrics))
        2
    """
    reasons = []
    recall, density = float(metrics["recall"]), float(metrics["density"])
    if recall < RECALL_MAX and density > DENSITY_MIN:
        reasons.append(
            f"recall {recall:.3f} with density {density:.1f}: the fakes crowd into the real "
            "k-NN balls but their own balls reach almost no real point"
        )
    real_spread, fake_spread = spread(real), spread(fake)
    ratio = fake_spread / real_spread if real_spread > 0 else math.inf
    if ratio < SPREAD_RATIO_MAX:
        reasons.append(
            f"the fake set's spread is {ratio:.3f} of the real set's (RMS distance to the "
            f"mean {fake_spread:.4g} vs {real_spread:.4g})"
        )
    return reasons


def degenerate_message(reasons: list[str]) -> str:
    """One line for a degenerate set: its reasons and what not to read from its metrics."""
    return (
        "degenerate (collapsed) fake set: "
        + "; ".join(reasons)
        + ". Precision, density and coverage are high for such a set because in high "
        "dimension nearly every real k-NN ball reaches the centre of the data; do not read "
        "them as quality (never ranked best)."
    )
