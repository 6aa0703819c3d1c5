"""The metric names, defined once: every module that logs, prints or returns them imports them.

- :data:`PRDC_KEYS`: the four k-NN metrics, in the order of
  :func:`lightning_embviz.compute_prdc`'s dict.
- :data:`METRIC_KEYS`: every scalar metric of one evaluation, the PRDC keys and ``fd``; also
  the metrics :func:`lightning_embviz.intervals.prdc_intervals` gives an interval for.
"""

from __future__ import annotations

__all__ = ["METRIC_KEYS", "PRDC_KEYS"]

PRDC_KEYS: tuple[str, ...] = ("precision", "recall", "density", "coverage")
"""The keys of :func:`lightning_embviz.compute_prdc`'s dict, in this order."""

METRIC_KEYS: tuple[str, ...] = (*PRDC_KEYS, "fd")
"""Every scalar metric of one evaluation: the PRDC keys and the Fréchet distance ``fd``."""
