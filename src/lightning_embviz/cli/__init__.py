"""The ``embviz`` command: embedding files in, metrics and 2-D views out.

``embviz report REAL FAKE`` writes ``metrics.json`` and one PNG per view;
``embviz compare REAL FAKE1 FAKE2 ...`` draws several fake sets in one frame fitted on the
real set and writes a metrics table; ``embviz reference REAL -k 3,5,10 -o ref.npz`` fits the
real set once (a :class:`~lightning_embviz.RealReference`) and saves it, and that file can
take the place of REAL in the other two commands. ``--confidence 0.95`` adds confidence
intervals (:func:`~lightning_embviz.intervals.prdc_intervals`) to report and compare, and
compare then marks the fake sets that differ from the best one. Bad input ends with a
one-line message and exit code 2.

``torchrun --nproc-per-node N -m lightning_embviz report ...`` (also compare, reference)
shares the distance work over N processes (:mod:`lightning_embviz.distributed`, gloo);
the files written are identical to those of one process, which stays the default.

Layout (one job per module; ``main`` is the only public name of the package):

- :mod:`~lightning_embviz.cli.entry`: ``main``: parse, join the processes, check ``-o``,
  run a command, map its errors to exit codes;
- :mod:`~lightning_embviz.cli.parser` (argparse and the argument types),
  :mod:`~lightning_embviz.cli.help` (the help text),
  :mod:`~lightning_embviz.cli.options` (a frozen options object per command);
- :mod:`~lightning_embviz.cli.report`, :mod:`~lightning_embviz.cli.compare`,
  :mod:`~lightning_embviz.cli.reference`: the command bodies, as named steps;
- :mod:`~lightning_embviz.cli.files` (REAL and the image files),
  :mod:`~lightning_embviz.cli.measure` (checks, intervals, the degenerate check),
  :mod:`~lightning_embviz.cli.stats` (the difference rule of ``compare --confidence``),
  :mod:`~lightning_embviz.cli.galleries` (the image galleries of ``report``),
  :mod:`~lightning_embviz.cli.writers` (PNG, JSON, CSV),
  :mod:`~lightning_embviz.cli.outdir` (``-o`` checked before any work),
  :mod:`~lightning_embviz.cli.ranks` (the torchrun processes),
  :mod:`~lightning_embviz.cli.console` (stdout and stderr).

Importing this package stays light (no matplotlib, no projections): the heavy modules load
when a command runs.
"""

from lightning_embviz.cli.entry import main

__all__ = ["main"]
