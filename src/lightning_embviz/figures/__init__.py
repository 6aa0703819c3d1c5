"""Figures drawn with matplotlib's Agg canvas directly (no pyplot), no Lightning.

- :mod:`~lightning_embviz.figures.projections`: 2-D projections fitted on the real set.
- :mod:`~lightning_embviz.figures.views`: one run's embeddings and results to figures
  (:class:`~lightning_embviz.figures.views.ViewBuilder`, ``SampleViews``).
- :mod:`~lightning_embviz.figures.style`: palette, canvas, titles, input checks.
- :mod:`~lightning_embviz.figures.plots`: scatter figures and the k sweep.
- :mod:`~lightning_embviz.figures.per_class`: per-class metrics and their bars.
- :mod:`~lightning_embviz.figures.galleries`: image tiles with captions (layout, scaling).
- :mod:`~lightning_embviz.figures.sample_galleries`: the missed-real and outlier-fake
  galleries.
- :mod:`~lightning_embviz.figures.rendering`: Agg canvas to RGB array or PNG.
- :mod:`lightning_embviz.figures.audio`: the spectrogram gallery of audio clips.
- :mod:`lightning_embviz.figures.groups`: the per-group table's worst groups as bars.
"""
