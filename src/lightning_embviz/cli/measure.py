"""The metric steps report and compare share: size checks, intervals, the degenerate check."""

from __future__ import annotations

import warnings
from typing import Any, Optional

from lightning_embviz.cli.console import warn
from lightning_embviz.cli.stats import METRICS
from lightning_embviz.engine.intervals import interval_min_samples, splits_too_small

__all__ = [
    "check_interval_sizes",
    "check_k",
    "check_sizes",
    "degenerate_notes",
    "interval_keys",
    "intervals",
]


def check_k(k: int, counts: dict[str, int]) -> None:
    """Every set (``{file: rows}``) has more than k rows, or a one-line ``ValueError``."""
    for path, n in counts.items():
        if k >= n:
            raise ValueError(
                f"-k {k} needs more than {k} samples, {path} has {n}; use -k {max(n - 1, 1)} "
                "or more samples."
            )


def check_sizes(k: int, counts: dict[str, int], confidence: Optional[float]) -> None:
    """Every set (``{file: rows}``) is large enough for ``-k`` and, if given, ``--confidence``.

    Raises:
        ValueError: one line naming the first set that is too small and what to do.
    """
    check_k(k, counts)
    if confidence is not None:
        check_interval_sizes(k, counts)


def check_interval_sizes(k: int, counts: dict[str, int]) -> None:
    """With ``--confidence``: every set splits into halves of more than k points."""
    for path, n in counts.items():
        if splits_too_small(n, k):
            raise ValueError(
                f"--confidence splits each set into two halves of more than k={k} points, so "
                f"each set needs at least {interval_min_samples(k)} samples; {path} has {n}. "
                "Use more samples, a smaller -k, or leave out --confidence."
            )


def intervals(
    real: Any, fake: Any, nearest_k: int, confidence: float, seed: int, name: str
) -> dict[str, float]:
    """:func:`~lightning_embviz.intervals.prdc_intervals` of one fake set, at ``--confidence``.

    The splits are drawn with ``--seed``. The library's warnings (sets too small for
    trustworthy intervals) become one ``embviz: warning:`` line each, naming the fake set.

    Args:
        real: (N, D) real embeddings (the raw ones, also when REAL is a saved reference).
        fake: (M, D) fake embeddings.
        nearest_k: k of the k-NN balls.
        confidence: the level, in (0, 1).
        seed: the seed of the random half splits.
        name: the fake set, for the warnings.

    Returns:
        ``prdc_intervals``' dict (``<metric>_low``, ``_high``, ``_se`` ...).
    """
    from lightning_embviz.intervals import prdc_intervals

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prdc_intervals(real, fake, nearest_k, confidence, seed=seed)
    seen = set()
    for item in caught:
        text = str(item.message)
        if not issubclass(item.category, UserWarning):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
        elif text not in seen:
            seen.add(text)
            warn(f"--confidence, {name}: {text}")
    return result


def interval_keys(bounds: dict[str, float]) -> dict[str, float]:
    """``<metric>_low``, ``<metric>_high``, ``<metric>_se`` for every metric, in table order."""
    return {
        f"{metric}_{part}": bounds[f"{metric}_{part}"]
        for metric in METRICS
        for part in ("low", "high", "se")
    }


def degenerate_notes(real: Any, fake: Any, metrics: dict[str, Any]) -> list[str]:
    """``[message]`` for a degenerate (collapsed) fake set, else ``[]``; also on stderr."""
    from lightning_embviz.degenerate import degenerate_message, degenerate_reasons

    reasons = degenerate_reasons(real, fake, metrics)
    if not reasons:
        return []
    message = degenerate_message(reasons)
    warn(message)
    return [message]
