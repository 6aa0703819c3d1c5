"""The metric names, defined once: every module that logs, prints or returns them imports them.

- :data:`PRDC_KEYS`: the four k-NN metrics, in the order of
  :func:`lightning_embviz.compute_prdc`'s dict.
- :data:`METRIC_KEYS`: every scalar metric of one evaluation, the PRDC keys and ``fd``; also
  the metrics :func:`lightning_embviz.intervals.prdc_intervals` gives an interval for.
- :data:`EXTRA_KEYS`: the keys each optional metric adds (``extra_metrics=`` of the callback,
  ``--metrics`` of the ``embviz`` command); no intervals cover them.
"""

from __future__ import annotations

__all__ = ["EXTRA_KEYS", "EXTRA_METRICS", "METRIC_KEYS", "PRDC_KEYS"]

PRDC_KEYS: tuple[str, ...] = ("precision", "recall", "density", "coverage")
"""The keys of :func:`lightning_embviz.compute_prdc`'s dict, in this order."""

METRIC_KEYS: tuple[str, ...] = (*PRDC_KEYS, "fd")
"""Every scalar metric of one evaluation: the PRDC keys and the Fréchet distance ``fd``."""

EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "vendi": ("vendi", "vendi_real"),
    "kd": ("kd", "kd_se"),
    "fd_inf": ("fd_inf",),
    "clipped": ("clipped_density", "clipped_coverage"),
}
"""The optional metrics by name, each with the keys it adds, in this order."""

EXTRA_METRICS: tuple[str, ...] = tuple(EXTRA_KEYS)
"""The names accepted by ``extra_metrics=`` and ``--metrics``, in their order."""
