"""Confidence intervals for PRDC and the Fréchet distance.

Re-exported from :mod:`lightning_embviz.engine.intervals`, where the method and where it is
not valid are described.
"""

from lightning_embviz.engine.intervals import INTERVAL_METRICS, prdc_intervals

__all__ = ["INTERVAL_METRICS", "prdc_intervals"]
