"""A real set fitted once (re-exported from :mod:`lightning_embviz.engine.reference`)."""

from lightning_embviz.engine.reference import FORMAT_VERSION, PRDCResult, RealReference

__all__ = ["FORMAT_VERSION", "PRDCResult", "RealReference"]
