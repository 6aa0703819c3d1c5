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
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import stat
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

if TYPE_CHECKING:
    import numpy as np

__all__ = ["main"]

PROG = "embviz"
EXIT_USAGE = 2
DEFAULT_K = 5
_COMMANDS = ("report", "compare", "reference")
# The metrics that get an interval with --confidence, in table order (as
# lightning_embviz.intervals.INTERVAL_METRICS, kept here so that parsing stays light).
_METRICS = ("precision", "recall", "density", "coverage", "fd")

_MAIN_EPILOG = """\
examples:
  embviz report real.npy fake.npy -o out/
  embviz compare real.npy ckpt_epoch10.npy ckpt_epoch20.npy -o cmp/
  embviz reference real.npy -k 3,5,10 -o ref.npz

Run `embviz report -h`, `embviz compare -h` or `embviz reference -h` for each command's
options, input formats and output files.
"""

_REPORT_EXAMPLE = """\
examples:
  embviz report real.npy fake.npy -o out/
  embviz report real.pt fake.pt -k 3 --projection pca,tsne,umap --max-samples 3000 --seed 1
  embviz report real.npz fake.npz --labels real_labels.npy --fake-labels fake_labels.npy
  embviz report real.npy fake.npy --real-images real_images.npy --fake-images fake_images.npy
  embviz reference real.npy -k 3,5,10 -o ref.npz && embviz report ref.npz fake.npy -k 10
  embviz report real.npy fake.npy --confidence 0.95 --seed 0

Input files: .npy, .npz (one array, or one named 'embeddings'/'features'),
.pt/.pth (a tensor, a list of tensors or a dict holding 'embeddings'), .csv (one row
per sample). Shape (N, D); both files need the same D.

REAL may also be a saved real reference (`embviz reference`, or RealReference.save in
Python; recognised by its content, whatever its name): the real set's k-NN radii are
then read, not recomputed, and the real embeddings it holds are used for the views,
the Fréchet distance and the tables. -k picks any k it was fitted with (default: its
first); metrics.json is identical to the one from the real embeddings file.

CSV: line 1 is a header when it holds names (f0,f1,...), starts with a comma
(pandas' df.to_csv(path); the index column is then dropped) or is 0,1,...,D-1 above
values written with decimals (df.to_csv(path, index=False); pandas writes floats as
0.0, never 0). Other lines of numbers are data, except two ambiguous cases that are
refused: 0,1,...,D-1 in a file of whole numbers only, and distinct whole numbers
(3,7) above decimals. Also refused, naming the column: a non-numeric or empty value,
and a column named label, class, target, id or index.

Writes DIR/metrics.json with precision, recall, density, coverage (the compute_prdc
keys), fd (Fréchet distance), num_real, num_fake, nearest_k (and per_class with
--labels), and PNGs: DIR/<method>.png for each projection, DIR/pca_coverage.png (the
k-NN balls, in the PCA frame or else the first method's) and, with labels,
DIR/<method>_classes.png and DIR/class_metrics.png.

Always writes the per-sample tables DIR/samples_real.csv (index, label, radius,
nearest_fake_distance, nearest_fake_ratio, covered, recalled) and DIR/samples_fake.csv
(index, label, ball_count, nearest_ball_ratio, inside_real_manifold); index is the row
in the input file, label is there with --labels / --fake-labels; pandas.read_csv reads
them. With --real-images, DIR/missed_real.png shows the reals whose k-NN ball holds no
fake, most clearly missed first (caption: nearest fake distance / own radius); with
--fake-images, DIR/outlier_fake.png shows the fakes outside every real ball, farthest
first (caption: distance / nearest ball's radius), and a row of the fakes deepest in the
real manifold for contrast. At most --gallery-size tiles each. Image files: .npy
(memory-mapped: only the shown images are read), .npz, .pt/.pth, shape (N, C, H, W)
with C 1 or 3, (N, H, W), or (N, H, W, C); one image per embedding row, same order.
Display: values already in [0, 1] are shown as they are (uint8 is divided by 255),
otherwise min-max scaled over all tiles of a figure jointly.

--confidence C (in (0, 1), e.g. 0.95) adds a confidence interval to every metric:
metrics.json gains <metric>_low, <metric>_high and <metric>_se (standard error) for
precision, recall, density, coverage and fd, plus confidence and interval_seed, and the
printed table shows "coverage 0.7410 [0.7120, 0.7700]". The bounds are not
value +- 1.96 * <metric>_se (at 0.95): they are value +- t * se with t the Student-t
quantile on Satterthwaite's degrees of freedom (part of the variance is estimated from
a few random splits, so t is above the normal quantile, more so for small sets; fd uses
the normal quantile), then clipped to the metric's range (precision, recall, coverage
in [0, 1]; density, fd >= 0), so an interval can be asymmetric. It covers the
expected value of the metric over new draws of both sets of these sizes (another
validation set, another batch of samples). Method (lightning_embviz.intervals.
prdc_intervals): exact conditional variances plus random half splits without
replacement for the k-NN metrics (no bootstrap: duplicates would shrink the k-NN
radii), a second-order delta method for fd. Costs about 4 more full metric
computations. The splits are drawn with --seed, so results are reproducible. Each set
needs at least 2 (k + 1) samples; below 40 k per set a warning says the intervals are
unreliable. fd has no interval (NaN) unless both sets have more samples than features.
With a saved reference as REAL, the real embeddings it holds are used (results
identical to those from the real embeddings file).

-o DIR is created and checked (a writable directory, not a file) before any work.
Exit status: 0 on success, 2 on bad input or usage (one-line message on stderr).

Several processes: `torchrun --nproc-per-node N -m lightning_embviz report ...` (torchrun
is `python -m torch.distributed.run`; add --standalone on one machine) shares the distance
work over N processes with torch.distributed (gloo, on the CPU): each process computes the
k-NN radii and real-fake tests of its share of the rows, and the results are bit-identical
to one process. Every process reads the input files and checks them (a bad input ends all
of them with exit status 2); process 0 alone adds the Fréchet distance, the intervals
and the views, writes DIR and prints. torchrun gives each process one thread
(OMP_NUM_THREADS=1) unless OMP_NUM_THREADS is set: set it to about cores / N. One
process (plain `embviz`) is the default.
"""

_COMPARE_EXAMPLE = """\
example:
  embviz compare real.npy ckpt_epoch10.npy ckpt_epoch20.npy ckpt_epoch30.npy -o cmp/

Every fake set is placed into one frame fitted on the real set, so the panels are
directly comparable. Writes DIR/compare_<method>.png (one panel per fake set),
DIR/metrics.json and DIR/metrics.csv (one row per fake set: num_fake, precision,
recall, density, coverage, fd). The real set's k-NN radii are computed once for all
fake sets.

REAL may be a saved real reference (`embviz reference`): its radii are read, not
recomputed, and -k picks any k it was fitted with (default: its first). Results are
identical to those from the real embeddings file.

--confidence C (e.g. 0.95) computes intervals for every fake set (as `embviz report
--confidence`; the same --seed for every set) and writes <metric>_low, <metric>_high,
<metric>_se to metrics.json and metrics.csv. For each metric it then picks the best set
(precision, recall, coverage: highest; density: closest to 1, its value when the fake
and real distributions agree; fd: lowest) and marks with * in the printed table (and
<metric>_differs true in metrics.json, True in metrics.csv) every set that differs from
the best by a two-sample z test on the standard errors:

    z = (g_set - g_best) / sqrt(se_set^2 + se_best^2) > q

where g is the metric's distance from its ideal (-value; |density - 1|; fd) and q the
two-sided normal quantile of C (1.960 for 0.95); z is written as <metric>_z. This is
sharper than asking whether the intervals overlap (non-overlap needs a gap of about
(se_set + se_best) q, more than sqrt(se_set^2 + se_best^2) q). It is approximate: it
treats the two values as independent, but every set is compared against the same real
set. When a draw of the reals moves both sets' values the same way (the usual case for
similar generators), the true standard error of the difference is smaller and the test
is conservative (it marks fewer sets); it can be liberal if they move in opposite
directions. The best set is chosen from the same data and no correction is made for
testing several sets and metrics, so read a mark near the threshold as a hint, not as
proof.

Several processes: `torchrun --nproc-per-node N -m lightning_embviz compare ...` (torchrun
is `python -m torch.distributed.run`; add --standalone on one machine) shares the distance
work over N processes with torch.distributed (gloo, on the CPU): each process computes the
k-NN radii and real-fake tests of its share of the rows, and the results are bit-identical
to one process. Every process reads the input files and checks them (a bad input ends all
of them with exit status 2); process 0 alone adds the Fréchet distance, the intervals
and the views, writes DIR and prints. torchrun gives each process one thread
(OMP_NUM_THREADS=1) unless OMP_NUM_THREADS is set: set it to about cores / N. One
process (plain `embviz`) is the default.
"""

_REFERENCE_EXAMPLE = """\
examples:
  embviz reference real.npy -k 3,5,10 -o ref.npz
  embviz report ref.npz fake.npy -k 10 -o out/
  embviz compare ref.npz ckpt_epoch10.npy ckpt_epoch20.npy -o cmp/
  embviz reference ref.npz -k 3,5,10,20 -o ref.npz   # add a k: refit from the stored reals

Fits the real set once: its k-NN radii for every k of -k from one pass over the
real-real distances, the real embeddings themselves, a SHA-256 fingerprint of them, the
file format version (2) and a SHA-256 checksum over all of it: a file whose radii, k,
dtype or version were edited or damaged is refused (exit status 2), never used. Version
1 files (earlier releases) are read, with their radii recomputed. `embviz report`
and `embviz compare` accept the file in place of REAL and then skip the real-real pass
(about a third of the distance work of each comparison); their results are identical
to those from the real embeddings file.

REAL: an embeddings file (.npy, .npz, .pt/.pth, .csv; see `embviz report -h`) or a
saved reference (refit with the new -k from the real set it holds).
-o FILE: .npz (NumPy, numpy.load(allow_pickle=False) reads it) or .pt/.pth (torch,
torch.load(weights_only=True) reads it); missing parent directories are created. An
existing FILE is replaced only when it is a saved reference (never REAL's embeddings or
other data), and the new file is written under a temporary name first, then renamed, so
a failed run leaves the old one in place. In Python: RealReference.load(FILE).
Prints one line: the file, N, D, dtype, the fitted k, the file size and the fitting time.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


def _silence(stream: Any) -> None:
    """Point a stream whose reader has gone (``| head``) at the null device.

    A closed pipe is not an error of the command: the files are written all the same. The
    descriptor itself is replaced, so that the interpreter's final flush of the buffered
    text does not fail either ("Exception ignored ... BrokenPipeError").
    """
    try:
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, stream.fileno())
        os.close(null)
    except (OSError, ValueError, AttributeError):  # no real descriptor (a test's buffer)
        pass


def _write(stream: Any, text: str, flush: bool = False) -> None:
    """Write ``text`` to ``stream``; a reader that has closed the pipe is not an error."""
    try:
        stream.write(text)
        if flush:
            stream.flush()
    except BrokenPipeError:
        _silence(stream)


class _Progress:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            _write(sys.stderr, f"{PROG}: {message}\n", flush=True)


def _out(text: str) -> None:
    # The command's own report goes to stdout (library modules never print).
    _write(sys.stdout, text + "\n")


def _int_at_least(minimum: int, expected: str) -> Callable[[str], int]:
    """An argparse type: an int >= ``minimum``, with ``expected`` in the error message."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _sample_cap(text: str) -> int:
    value = _positive_int(text)
    if value < 10:
        raise argparse.ArgumentTypeError(f"expected an integer >= 10, got {text!r}")
    return value


def _confidence(text: str) -> float:
    """An argparse type: a confidence level strictly between 0 and 1 (``0.95``)."""
    expected = f"expected a confidence level strictly between 0 and 1, such as 0.95, got {text!r}"
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    if not 0.0 < value < 1.0:  # NaN fails this too
        if 1.0 < value < 100.0:
            expected += f" (for {value:g} % write {value / 100:g})"
        raise argparse.ArgumentTypeError(expected)
    return value


def _k_list(text: str) -> tuple[int, ...]:
    """An argparse type: comma-separated positive ints (``3,5,10``), duplicates dropped."""
    parts = [part.strip() for part in text.split(",")]
    try:
        ks = [int(part) for part in parts]
    except ValueError:
        ks = []
    if not ks or any(k < 1 for k in ks):
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas, such as 3,5,10, got {text!r}"
        )
    return tuple(dict.fromkeys(ks))


def _methods(text: str) -> tuple[str, ...]:
    from lightning_embviz.projection import METHODS

    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in METHODS]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"unknown projection {','.join(bad) or text!r}; choose from {','.join(METHODS)}"
        )
    return tuple(dict.fromkeys(names))


def _add_common(p: argparse.ArgumentParser, default_out: str) -> None:
    from lightning_embviz.projection import DEFAULT_MAX_SAMPLES

    p.add_argument(
        "-k",
        "--nearest-k",
        type=_positive_int,
        default=None,
        metavar="K",
        help=f"k of the k-NN balls (default: {DEFAULT_K}; with a saved reference as REAL, any k "
        "it was fitted with, default its first)",
    )
    p.add_argument(
        "-o",
        "--out",
        default=default_out,
        metavar="DIR",
        help="output directory, created if needed and checked to be writable before any "
        f"work (default: ./{default_out})",
    )
    p.add_argument(
        "--projection",
        type=_methods,
        default=("pca", "tsne"),
        metavar="LIST",
        help="comma-separated projections from pca,tsne,umap (default: pca,tsne)",
    )
    p.add_argument(
        "--max-samples",
        type=_sample_cap,
        default=DEFAULT_MAX_SAMPLES,
        metavar="N",
        help="points per set projected and drawn, a deterministic subsample; metrics always "
        f"use every point (default: {DEFAULT_MAX_SAMPLES})",
    )
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        metavar="S",
        help="seed for subsampling, t-SNE, UMAP and the random half splits of --confidence "
        "(default: 0)",
    )
    p.add_argument(
        "--confidence",
        type=_confidence,
        default=None,
        metavar="C",
        help="add a confidence interval at level C, in (0, 1), e.g. 0.95, to every metric: "
        "<metric>_low, <metric>_high, <metric>_se; the bounds use a Student-t quantile "
        "(Satterthwaite degrees of freedom), not 1.96 * se (see below; default: no intervals)",
    )
    p.add_argument(
        "--tsne-backend",
        choices=("auto", "opentsne", "sklearn"),
        default="auto",
        help="t-SNE implementation: openTSNE when installed (auto), or force one (default: auto)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")


def _parser() -> argparse.ArgumentParser:
    from lightning_embviz import __version__

    parser = _Parser(
        prog=PROG,
        description="Precision, recall, density, coverage, Fréchet distance and 2-D views "
        "(PCA, t-SNE, UMAP) of real vs generated embeddings.",
        epilog=_MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(_COMMANDS) + "}")
    report = sub.add_parser(
        "report",
        help="metrics and figures for one real and one fake embedding file",
        description="Compute precision, recall, density, coverage (Naeem et al., 2020) and the "
        "Fréchet distance of FAKE against REAL, draw 2-D views, and print a summary.",
        epilog=_REPORT_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    report.add_argument(
        "real",
        metavar="REAL",
        help="real embeddings, shape (N, D), or a saved reference (embviz reference)",
    )
    report.add_argument("fake", metavar="FAKE", help="generated embeddings, shape (M, D)")
    _add_common(report, "embviz_report")
    report.add_argument(
        "--labels", metavar="FILE", help="class label per real sample, shape (N,): class views"
    )
    report.add_argument(
        "--fake-labels",
        metavar="FILE",
        help="class label per fake sample, shape (M,) (e.g. a conditional GAN's conditions)",
    )
    report.add_argument(
        "--real-images",
        metavar="FILE",
        help="one image per REAL row, (N, C, H, W) or (N, H, W): draws missed_real.png",
    )
    report.add_argument(
        "--fake-images",
        metavar="FILE",
        help="one image per FAKE row, (M, C, H, W) or (M, H, W): draws outlier_fake.png",
    )
    report.add_argument(
        "--gallery-size",
        type=_positive_int,
        default=32,
        metavar="N",
        help="most tiles per gallery (default: 32)",
    )
    compare = sub.add_parser(
        "compare",
        help="several fake sets (e.g. checkpoints) in one frame, side by side",
        description="Compare several generated embedding sets against one real set: metrics for "
        "each, and one figure with a panel per set, all in a frame fitted on REAL.",
        epilog=_COMPARE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    compare.add_argument(
        "real",
        metavar="REAL",
        help="real embeddings, shape (N, D), or a saved reference (embviz reference)",
    )
    compare.add_argument("fakes", metavar="FAKE", nargs="+", help="generated embedding files")
    _add_common(compare, "embviz_compare")
    compare.add_argument(
        "--names",
        metavar="LIST",
        help="comma-separated panel names, one per FAKE (default: the file names)",
    )
    reference = sub.add_parser(
        "reference",
        help="fit the real set once (k-NN radii for several k) and save it for report/compare",
        description="Fit a RealReference on REAL: the k-NN radii of the real set for every k "
        "of -k, and save it to one file that `embviz report` and `embviz compare` accept in "
        "place of REAL.",
        epilog=_REFERENCE_EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    reference.add_argument(
        "real",
        metavar="REAL",
        help="real embeddings, shape (N, D), or a saved reference to refit with another -k",
    )
    reference.add_argument(
        "-k",
        "--nearest-k",
        type=_k_list,
        default=(DEFAULT_K,),
        metavar="K[,K...]",
        help="the k to fit, comma-separated, e.g. 3,5,10; the first is the default of report "
        f"and compare (default: {DEFAULT_K})",
    )
    reference.add_argument(
        "-o",
        "--out",
        default="embviz_reference.npz",
        metavar="FILE",
        help="the reference file, .npz or .pt/.pth (default: ./embviz_reference.npz)",
    )
    reference.add_argument(
        "-q", "--quiet", action="store_true", help="no progress messages on stderr"
    )
    return parser


def _check_k(k: int, counts: dict[str, int]) -> None:
    for path, n in counts.items():
        if k >= n:
            raise ValueError(
                f"-k {k} needs more than {k} samples, {path} has {n}; use -k {max(n - 1, 1)} "
                "or more samples."
            )


def _check_interval_sizes(k: int, counts: dict[str, int]) -> None:
    """With ``--confidence``: every set splits into halves of more than k points."""
    for path, n in counts.items():
        if n // 2 <= k:
            raise ValueError(
                f"--confidence splits each set into two halves of more than k={k} points, so "
                f"each set needs at least {2 * (k + 1)} samples; {path} has {n}. Use more "
                f"samples, a smaller -k, or leave out --confidence."
            )


def _warn(message: str) -> None:
    # Shown even with -q: a warning is about the result, not progress.
    _write(sys.stderr, f"{PROG}: warning: {' '.join(message.split())}\n", flush=True)


def _intervals(real: Any, fake: Any, args: argparse.Namespace, name: str) -> dict[str, float]:
    """:func:`~lightning_embviz.intervals.prdc_intervals` of one fake set, at ``--confidence``.

    The splits are drawn with ``--seed``. The library's warnings (sets too small for
    trustworthy intervals) become one ``embviz: warning:`` line each, naming the fake set.
    """
    from lightning_embviz.intervals import prdc_intervals

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prdc_intervals(real, fake, args.nearest_k, args.confidence, seed=args.seed)
    seen = set()
    for item in caught:
        text = str(item.message)
        if not issubclass(item.category, UserWarning):
            warnings.warn_explicit(item.message, item.category, item.filename, item.lineno)
        elif text not in seen:
            seen.add(text)
            _warn(f"--confidence, {name}: {text}")
    return result


def _interval_keys(bounds: dict[str, float]) -> dict[str, float]:
    """``<metric>_low``, ``<metric>_high``, ``<metric>_se`` for every metric, in table order."""
    return {
        f"{metric}_{part}": bounds[f"{metric}_{part}"]
        for metric in _METRICS
        for part in ("low", "high", "se")
    }


def _level(confidence: float) -> str:
    return f"{confidence * 100:g}%"


def _z_critical(confidence: float) -> float:
    """The two-sided standard normal quantile of ``confidence`` (1.96 for 0.95)."""
    from statistics import NormalDist

    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


_BEST_RULE = "precision, recall, coverage: highest; density: closest to 1; fd: lowest"


def _shortfall(metric: str, value: float) -> float:
    """How far ``value`` is from the metric's ideal; smaller is better (see ``_BEST_RULE``)."""
    if metric == "fd":
        return value
    if metric == "density":
        # Density is 1 in expectation when the fake and real distributions agree; above 1
        # the fakes crowd into dense real regions, below 1 they fall outside the real balls.
        return abs(value - 1.0)
    return -value


def _mark_differences(rows: list[dict[str, Any]], confidence: float) -> dict[str, Optional[str]]:
    """Mark, for each metric, the rows that differ from the best row beyond the intervals.

    Adds ``<metric>_z`` (the z statistic against the best row; 0 for the best row itself,
    NaN without a standard error) and ``<metric>_differs`` (``z`` above the two-sided normal
    quantile of ``confidence``) to every row. The rule and its caveats are in the help text
    of ``embviz compare``.

    Args:
        rows: one dict per fake set with ``name``, ``<metric>`` and ``<metric>_se``.
        confidence: the level of the intervals, in (0, 1).

    Returns:
        The name of the best row for each metric (the first one on ties). A row with
        ``degenerate`` true (a collapsed fake set) is never best; None for a metric when
        every row is degenerate (then every ``z`` is NaN and nothing is marked).
    """
    critical = _z_critical(confidence)
    best: dict[str, Optional[str]] = {}
    candidates = [i for i, row in enumerate(rows) if not row.get("degenerate")]
    for metric in _METRICS:
        if not candidates:
            best[metric] = None
            for row in rows:
                row[f"{metric}_z"] = math.nan
                row[f"{metric}_differs"] = False
            continue
        gaps = [_shortfall(metric, row[metric]) for row in rows]
        top = min(candidates, key=gaps.__getitem__)
        best[metric] = rows[top]["name"]
        top_se = rows[top][f"{metric}_se"]
        for i, row in enumerate(rows):
            gap = gaps[i] - gaps[top]
            scale = math.hypot(row[f"{metric}_se"], top_se)
            if i == top:
                z = 0.0
            elif math.isnan(scale):  # fd without an interval (no more samples than features)
                z = math.nan
            elif scale == 0.0:  # both standard errors estimated as 0
                z = math.inf if gap > 0 else 0.0
            else:
                z = gap / scale
            row[f"{metric}_z"] = z
            row[f"{metric}_differs"] = bool(z > critical)  # NaN: not marked
    return best


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if math.isfinite(value) else str(value)
    return str(value)


def _write_figures(figures: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    from lightning_embviz.plotting import figure_to_png

    written = []
    for key, fig in figures.items():
        path = out / f"{prefix}{key}.png"
        path.write_bytes(figure_to_png(fig))
        written.append(path)
    return written


def _json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities as ``null`` (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def _json_key(value: Any) -> str:
    return value.item() if hasattr(value, "item") else value


_IMAGE_FORMATS = (".npy", ".npz", ".pt", ".pth")
_IMAGE_KEYS = ("images", "image", "x", "arr_0")


def _numeric(data: Any) -> bool:
    """A real-valued number (or bool) array or tensor."""
    import numpy as np

    dtype = data.dtype
    if isinstance(dtype, np.dtype):
        return dtype.kind in "biuf"  # object, str, complex refused
    return not getattr(dtype, "is_complex", True)  # torch: every other dtype is a number


class _ImageFileError(ValueError):
    """An image file that cannot be used for a gallery (message is one line)."""


class _ImageFile:
    """An image array opened for the galleries: checked shape, rows read on demand.

    ``.npy`` files are memory-mapped and ``.pt`` files loaded with ``mmap=True`` where
    possible, so only the images a gallery shows are read from disk.
    """

    def __init__(self, path: str, rows: int, flag: str, source: str) -> None:
        self.path = Path(path)
        self.flag = flag
        where = f"{flag} {path}"
        if not self.path.is_file():
            raise _ImageFileError(f"{where}: no such file.")
        suffix = self.path.suffix.lower()
        if suffix not in _IMAGE_FORMATS:
            raise _ImageFileError(
                f"{where}: unknown format {suffix or '(no extension)'!r} for images; expected "
                f"{', '.join(_IMAGE_FORMATS)} holding an array of shape (N, C, H, W) or (N, H, W)."
            )
        try:
            self.data = self._open(suffix)
        except _ImageFileError:
            raise
        except Exception as err:  # any reader failure becomes a one-line message
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise _ImageFileError(f"{where}: cannot read as {suffix} ({reason}).") from None
        shape = tuple(int(n) for n in self.data.shape)
        if not _numeric(self.data):
            raise _ImageFileError(
                f"{where}: holds values of type {self.data.dtype}, expected numbers."
            )
        self.channels_last = False
        if len(shape) == 4 and shape[1] not in (1, 3) and shape[3] in (1, 3):
            self.channels_last = True
        elif len(shape) not in (3, 4) or (len(shape) == 4 and shape[1] not in (1, 3)):
            raise _ImageFileError(
                f"{where}: has shape {shape}; images need shape (N, C, H, W) with C 1 or 3, "
                "(N, H, W), or (N, H, W, C)."
            )
        if shape[0] != rows:
            raise _ImageFileError(
                f"{where}: holds {shape[0]} images but {source} has {rows} embedding rows; give "
                "one image per embedding row, in the same order."
            )

    def _open(self, suffix: str) -> Any:
        import numpy as np

        if suffix == ".npy":
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        if suffix == ".npz":
            with np.load(self.path, allow_pickle=False) as npz:
                return self._pick({k: npz[k] for k in npz.files})
        import torch

        try:
            obj = torch.load(self.path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(self.path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            obj = self._pick(obj)
        if not isinstance(obj, (torch.Tensor, np.ndarray)):
            raise _ImageFileError(
                f"{self.flag} {self.path}: holds a {type(obj).__name__}, expected a tensor or a "
                "dict holding 'images'."
            )
        return obj

    def _pick(self, container: dict[str, Any]) -> Any:
        if len(container) == 1:
            return next(iter(container.values()))
        for key in _IMAGE_KEYS:
            if key in container:
                return container[key]
        raise _ImageFileError(
            f"{self.flag} {self.path}: holds several arrays {sorted(container)}; name the one to "
            "use 'images'."
        )

    def take(self, rows: Any) -> np.ndarray:
        """The images of ``rows`` (int array) as (B, C, H, W) or (B, H, W)."""
        import numpy as np

        from lightning_embviz._arrays import as_numpy

        index = np.asarray(rows, dtype=np.int64)
        if isinstance(self.data, np.ndarray):
            out = np.asarray(self.data[index])
        else:  # a torch tensor
            import torch

            out = as_numpy(self.data[torch.from_numpy(index)])
        if self.channels_last:
            out = np.moveaxis(out, 3, 1)
        return out


class _OtherRankFailed(Exception):
    """Raised on a rank whose inputs were fine when another rank's were not (under torchrun).

    ``message`` is None where the failing rank (or rank 0) already reports the problem.
    """

    def __init__(self, message: Optional[str]) -> None:
        super().__init__(message or "")
        self.message = message


class _Ranks:
    """This process's place among the torchrun processes: rank, world size, one agreement.

    ``torchrun --nproc-per-node N -m lightning_embviz report ...`` starts N processes with
    ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. Every
    rank reads the files and runs the input checks, then :meth:`agree` (one all-reduce of a
    failure flag per rank) makes every rank stop with exit status 2 if any rank failed, so no
    rank waits in a collective that another never enters. The metrics share the distance
    work (:mod:`lightning_embviz.distributed`); rank 0 alone does everything else.
    """

    def __init__(self) -> None:
        self.rank, self.world = 0, 1
        self._owned = False
        self._agreed = False

    @classmethod
    def from_environment(cls) -> _Ranks:
        """Join the process group torchrun describes (``WORLD_SIZE`` > 1), or stay alone.

        An already initialised default group (``main`` called from a distributed program)
        is used as it is. The group is gloo even where CUDA is available: the command's
        tensors live on the CPU (it reads files into NumPy arrays), and gloo gathers them
        there, without one GPU per process or copies to a device.
        """
        ranks = cls()
        text = os.environ.get("WORLD_SIZE", "1")
        try:
            world = int(text)
        except ValueError:
            raise ValueError(
                f"WORLD_SIZE={text!r} is not an integer; unset it, or start the command "
                "with `torchrun --nproc-per-node N -m lightning_embviz ...`."
            ) from None
        import torch.distributed as dist

        if not dist.is_available() or (world <= 1 and not dist.is_initialized()):
            return ranks
        if not dist.is_initialized():
            dist.init_process_group("gloo")
            ranks._owned = True
        ranks.rank, ranks.world = dist.get_rank(), dist.get_world_size()
        return ranks

    @property
    def lead(self) -> bool:
        """Whether this process writes the files and prints (rank 0)."""
        return self.rank == 0

    def agree(self, error: Optional[BaseException]) -> None:
        """Every rank calls this once, before any metric collective; raise if any rank failed.

        Args:
            error: this rank's input error, or None.

        Raises:
            ``error`` itself; or, where this rank's inputs were fine but another rank's
            were not, :class:`_OtherRankFailed`.
        """
        if self.world == 1 or self._agreed:
            if error is not None:
                raise error
            return
        self._agreed = True
        import torch
        import torch.distributed as dist

        device = torch.device("cpu")
        if "nccl" in str(dist.get_backend()).lower():
            device = torch.device("cuda", torch.cuda.current_device())
        flags = torch.zeros(self.world, dtype=torch.int64, device=device)
        flags[self.rank] = int(error is not None)
        dist.all_reduce(flags)
        failed = [r for r, flag in enumerate(flags.tolist()) if flag]
        if not failed:
            return
        if error is not None:
            if self.lead or failed[0] != 0:
                raise error  # reported here: by rank 0, or by a rank when rank 0 was fine
            raise _OtherRankFailed(None)
        if self.lead:
            raise _OtherRankFailed(
                f"rank {failed[0]} of {self.world} could not read or check its inputs (its "
                "message is above); every process must see the same files."
            )
        raise _OtherRankFailed(None)

    def close(self) -> None:
        """Leave the process group this object joined (not one it found initialised)."""
        if self._owned:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owned = False


class _RealSide:
    """REAL of report/compare: an embeddings file, or a saved reference (radii already fitted).

    Resolves ``-k`` (default 5, or the reference's first fitted k; a k the reference was not
    fitted with is a one-line error) and fits the reference only when it is needed, once.
    """

    def __init__(self, path: str, nearest_k: Optional[int], progress: _Progress) -> None:
        from lightning_embviz._arrays import as_numpy
        from lightning_embviz._io import is_reference_file, load_embeddings, load_reference

        self.path = path
        self.reference: Any = None
        self.saved = is_reference_file(path)
        if self.saved:
            self.reference = load_reference(path)
            fitted = self.reference.nearest_ks
            progress(f"{path} is a saved reference (fitted k: {', '.join(map(str, fitted))})")
            if nearest_k is not None and nearest_k not in fitted:
                listed = ",".join(str(k) for k in fitted)
                raise ValueError(
                    f"-k {nearest_k} was not fitted in the reference {path}; it holds k = "
                    f"{listed.replace(',', ', ')}: pick one of them, or add it with `embviz "
                    f"reference {path} -k {listed},{nearest_k} -o {path}`."
                )
            self.nearest_k = self.reference.nearest_k if nearest_k is None else nearest_k
            self.embeddings = as_numpy(self.reference.real)
            self.source = f"the reference {path}"
        else:
            self.embeddings = load_embeddings(path)
            self.nearest_k = DEFAULT_K if nearest_k is None else nearest_k
            self.source = path

    def __len__(self) -> int:
        return len(self.embeddings)

    @property
    def width(self) -> int:
        return int(self.embeddings.shape[1])

    def fitted(self, progress: _Progress) -> Any:
        """The :class:`~lightning_embviz.RealReference` (fitted here on first use if read raw)."""
        if self.reference is None:
            from lightning_embviz.distributed import fit_reference_distributed

            progress(f"fitting the real set's k-NN radii (k={self.nearest_k}) on {len(self)} real")
            # One process: RealReference(embeddings, k); under torchrun each rank fits a share.
            self.reference = fit_reference_distributed(self.embeddings, self.nearest_k)
        return self.reference

    def describe(self) -> str:
        """How the real radii were obtained, for the printed summary."""
        if not self.saved:
            return ""
        fitted = ", ".join(str(k) for k in self.reference.nearest_ks)
        return f" (real radii from the saved reference, fitted k: {fitted})"


def _report(args: argparse.Namespace, progress: _Progress, ranks: _Ranks) -> int:
    from lightning_embviz._io import load_embeddings, load_labels
    from lightning_embviz.distributed import compare_details_distributed
    from lightning_embviz.metrics import frechet_distance

    try:  # every rank reads and checks, so input errors are the same on every rank
        progress(f"reading {args.real} and {args.fake}")
        side = _RealSide(args.real, args.nearest_k, progress)
        args.nearest_k = side.nearest_k
        real = side.embeddings
        fake = load_embeddings(args.fake, side.width, side.source)
        _check_k(args.nearest_k, {args.real: len(real), args.fake: len(fake)})
        if args.confidence is not None:
            _check_interval_sizes(args.nearest_k, {args.real: len(real), args.fake: len(fake)})
        real_labels = load_labels(args.labels, len(real)) if args.labels else None
        fake_labels = load_labels(args.fake_labels, len(fake)) if args.fake_labels else None
        if fake_labels is not None and real_labels is None:
            raise ValueError("--fake-labels needs --labels for the real set too.")
        real_images = (
            _ImageFile(args.real_images, len(real), "--real-images", args.real)
            if args.real_images
            else None
        )
        fake_images = (
            _ImageFile(args.fake_images, len(fake), "--fake-images", args.fake)
            if args.fake_images
            else None
        )

        from lightning_embviz.plotting import class_metrics
        from lightning_embviz.views import ViewBuilder

        # Before the slow work: a missing optional backend fails now.
        views = ViewBuilder(
            methods=args.projection,
            max_samples=args.max_samples,
            seed=args.seed,
            tsne_backend=args.tsne_backend,
        )
    except Exception as err:
        ranks.agree(err)
        raise
    ranks.agree(None)

    start = time.perf_counter()
    reference = side.fitted(progress)
    progress(f"computing PRDC (k={args.nearest_k}) on {len(real)} real x {len(fake)} fake")
    details = compare_details_distributed(reference, fake, args.nearest_k)
    if not ranks.lead:
        return 0  # rank 0 adds the Fréchet distance, the intervals and the views, and writes
    fd = frechet_distance(real, fake)
    progress(f"metrics done in {time.perf_counter() - start:.1f} s")
    metrics: dict[str, Any] = dict(details.as_dict())
    metrics.update(fd=fd, num_real=len(real), num_fake=len(fake), nearest_k=args.nearest_k)
    notes = _degenerate_notes(real, fake, metrics)
    metrics.update(degenerate=bool(notes), warnings=notes)
    if args.confidence is not None:
        progress(f"computing {_level(args.confidence)} confidence intervals (seed {args.seed})")
        start = time.perf_counter()
        # The raw real embeddings, also when REAL is a saved reference (it holds them).
        bounds = _intervals(real, fake, args, args.fake)
        progress(f"intervals done in {time.perf_counter() - start:.1f} s")
        metrics.update(confidence=args.confidence, interval_seed=args.seed)
        metrics.update(_interval_keys(bounds))
        if math.isnan(bounds["fd_low"]) and min(len(real), len(fake)) > real.shape[1]:
            notes.append(
                "fd has no interval: a set's covariance is singular (all fakes (nearly) identical?)"
            )
    if real_labels is not None:
        per_class = class_metrics(
            real_labels,
            details.real_covered,
            details.real_recalled,
            fake_labels,
            details.fake_ball_count if fake_labels is not None else None,
            args.nearest_k,
        )
        metrics["per_class"] = {str(_json_key(c)): row for c, row in per_class.items()}

    out = Path(args.out)  # created and checked by main() before any work
    figures = views.build(
        real,
        fake,
        details,
        real_labels=real_labels,
        fake_labels=fake_labels,
        title=f"{Path(args.fake).name} vs {Path(args.real).name}"
        + (" - DEGENERATE fake set, see metrics.json" if metrics["degenerate"] else ""),
        progress=progress,
    )
    figures.update(_galleries(details, real_images, fake_images, real_labels, fake_labels, args))
    progress(f"writing {len(figures)} figures to {out}")
    written = _write_figures(figures, out)
    written += _write_sample_tables(details, real_labels, fake_labels, out)
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(_json_safe(metrics), indent=2) + "\n", encoding="utf-8")

    width = real.shape[1]
    _out(
        f"{args.fake} vs {args.real}: {len(fake)} fake, {len(real)} real, D={width}"
        + side.describe()
    )
    for key in _METRICS:
        _out(f"  {key:<10} {_fmt(metrics[key])}{_bounds_text(metrics, key, width)}")
    _out(f"  {'nearest_k':<10} {args.nearest_k}")
    for note in notes:
        _out(f"  warning: {note}")
    if args.confidence is not None:
        _out(
            f"  [low, high]: {_level(args.confidence)} confidence intervals for the expected "
            f"value at these sample sizes (random half splits, --seed {args.seed})"
        )
    _out(f"wrote {metrics_path} and {', '.join(p.name for p in written)}")
    return 0


def _degenerate_notes(real: Any, fake: Any, metrics: dict[str, Any]) -> list[str]:
    """``[message]`` for a degenerate (collapsed) fake set, else ``[]``; also on stderr."""
    from lightning_embviz.degenerate import degenerate_message, degenerate_reasons

    reasons = degenerate_reasons(real, fake, metrics)
    if not reasons:
        return []
    message = degenerate_message(reasons)
    _warn(message)
    return [message]


def _bounds_text(metrics: dict[str, Any], key: str, width: int) -> str:
    """`` [low, high]`` after a metric of the report table, or nothing without intervals."""
    if f"{key}_low" not in metrics:
        return ""
    low, high = metrics[f"{key}_low"], metrics[f"{key}_high"]
    if math.isnan(low) or math.isnan(high):
        if min(metrics["num_real"], metrics["num_fake"]) > width:
            return " [no interval: a set's covariance is singular (a collapsed fake set?)]"
        return (
            f" [no interval: fd needs more samples than features in both sets, D={width}, "
            f"{metrics['num_real']} real, {metrics['num_fake']} fake]"
        )
    return f" [{_fmt(low)}, {_fmt(high)}]"


def _galleries(
    details: Any,
    real_images: Optional[_ImageFile],
    fake_images: Optional[_ImageFile],
    real_labels: Optional[np.ndarray],
    fake_labels: Optional[np.ndarray],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """``missed_real`` and ``outlier_fake`` figures for the image files that were given."""
    from lightning_embviz.plotting import missed_real_figure, outlier_fake_figure
    from lightning_embviz.samples import (
        deepest_fake_order,
        missed_per_class,
        missed_real_order,
        outlier_fake_order,
    )

    figures: dict[str, Any] = {}
    size = args.gallery_size
    if real_images is not None:
        order = missed_real_order(details).numpy()
        shown = order[:size]
        figures["missed_real"] = missed_real_figure(
            real_images.take(shown),
            details.real_nearest_fake_ratio.cpu().numpy()[shown],
            num_missed=len(order),
            num_real=len(details.real_covered),
            indices=shown,
            labels=real_labels[shown] if real_labels is not None else None,
            class_counts=missed_per_class(details, real_labels)
            if real_labels is not None
            else None,
            nearest_k=args.nearest_k,
        )
    if fake_images is not None:
        order = outlier_fake_order(details).numpy()
        shown = order[:size]
        deepest = deepest_fake_order(details).numpy()[: min(size, 8)]
        figures["outlier_fake"] = outlier_fake_figure(
            fake_images.take(shown),
            details.fake_nearest_ball_ratio.cpu().numpy()[shown],
            num_outliers=len(order),
            num_fake=len(details.fake_ball_count),
            indices=shown,
            labels=fake_labels[shown] if fake_labels is not None else None,
            deepest_images=fake_images.take(deepest),
            deepest_counts=details.fake_ball_count.cpu().numpy()[deepest],
            deepest_indices=deepest,
            deepest_labels=fake_labels[deepest] if fake_labels is not None else None,
            nearest_k=args.nearest_k,
        )
    return figures


def _write_sample_tables(
    details: Any, real_labels: Optional[np.ndarray], fake_labels: Optional[np.ndarray], out: Path
) -> list[Path]:
    from lightning_embviz.samples import sample_tables, write_csv

    real_rows, fake_rows = sample_tables(details, real_labels=real_labels, fake_labels=fake_labels)
    paths = [out / "samples_real.csv", out / "samples_fake.csv"]
    write_csv(real_rows, paths[0])
    write_csv(fake_rows, paths[1])
    return paths


def _names(args: argparse.Namespace) -> list[str]:
    if args.names:
        names = [n.strip() for n in args.names.split(",")]
        if len(names) != len(args.fakes):
            raise ValueError(
                f"--names has {len(names)} names for {len(args.fakes)} FAKE files; give one each."
            )
        return names
    names = [Path(f).stem for f in args.fakes]
    if len(set(names)) != len(names):
        names = [str(f) for f in args.fakes]
    return names


def _compare(args: argparse.Namespace, progress: _Progress, ranks: _Ranks) -> int:
    from lightning_embviz._io import load_embeddings
    from lightning_embviz.distributed import compare_details_distributed
    from lightning_embviz.metrics import frechet_distance
    from lightning_embviz.plotting import comparison_figure, figure_to_png
    from lightning_embviz.projection import make_projection, subsample_indices

    try:  # every rank reads and checks, so input errors are the same on every rank
        projections = {
            m: make_projection(m, seed=args.seed, tsne_backend=args.tsne_backend)
            for m in args.projection
        }
        names = _names(args)
        progress(f"reading {args.real} and {len(args.fakes)} fake set(s)")
        side = _RealSide(args.real, args.nearest_k, progress)
        args.nearest_k = side.nearest_k
        real = side.embeddings
        fakes = [load_embeddings(path, side.width, side.source) for path in args.fakes]
        counts = {args.real: len(real), **{p: len(f) for p, f in zip(args.fakes, fakes)}}
        _check_k(args.nearest_k, counts)
        if args.confidence is not None:
            _check_interval_sizes(args.nearest_k, counts)
    except Exception as err:
        ranks.agree(err)
        raise
    ranks.agree(None)
    reference = side.fitted(progress)  # the real radii once, for every fake set
    all_details = []
    for name, fake in zip(names, fakes):
        progress(f"computing PRDC (k={args.nearest_k}) for {name}")
        all_details.append(compare_details_distributed(reference, fake, args.nearest_k))
    if not ranks.lead:
        return 0  # rank 0 adds the Fréchet distances, the intervals and the views, and writes
    rows: list[dict[str, Any]] = []
    for name, path, fake, details in zip(names, args.fakes, fakes, all_details):
        row: dict[str, Any] = {"name": name, "file": str(path), "num_fake": len(fake)}
        row.update(details.as_dict())
        row["fd"] = frechet_distance(real, fake)
        row["warnings"] = _degenerate_notes(real, fake, row)
        row["degenerate"] = bool(row["warnings"])
        if args.confidence is not None:
            progress(
                f"computing {_level(args.confidence)} confidence intervals for {name} "
                f"(seed {args.seed})"
            )
            # Same seed for every set: with equal sizes, the same real halves for all.
            row.update(_interval_keys(_intervals(real, fake, args, name)))
        rows.append(row)
    best = _mark_differences(rows, args.confidence) if args.confidence is not None else None

    out = Path(args.out)  # created and checked by main() before any work
    ri = subsample_indices(len(real), args.max_samples, args.seed)
    fis = [subsample_indices(len(f), args.max_samples, args.seed + 1) for f in fakes]
    written = []
    for method, proj in projections.items():
        progress(f"projecting with {method} ({len(ri)} real points, {len(fakes)} fake sets)")
        start = time.perf_counter()
        coords = proj.project(real[ri], *[f[i] for f, i in zip(fakes, fis)])
        progress(f"{method} done in {time.perf_counter() - start:.1f} s")
        fig = comparison_figure(
            coords[0],
            coords[1:],
            [f"{n} (DEGENERATE)" if row["degenerate"] else n for n, row in zip(names, rows)],
            real_covered=[d.real_covered.numpy()[ri] for d in all_details],
            fake_in_real_manifold=[
                d.fake_in_real_manifold.numpy()[i] for d, i in zip(all_details, fis)
            ],
            metrics=rows,
            nearest_k=args.nearest_k,
            method=method,
            title=f"{len(fakes)} fake sets in one {method} frame fitted on {Path(args.real).name}",
        )
        path = out / f"compare_{method}.png"
        path.write_bytes(figure_to_png(fig))
        written.append(path)

    table: dict[str, Any] = {
        "nearest_k": args.nearest_k,
        "num_real": len(real),
        "real": str(args.real),
    }
    columns = ["name", "file", "num_fake", *_METRICS, "degenerate"]
    if best is not None:
        table.update(
            confidence=args.confidence,
            interval_seed=args.seed,
            best=best,
            difference_test=_difference_rule(args.confidence),
        )
        parts = ("", "_low", "_high", "_se", "_z", "_differs")
        columns = [
            "name",
            "file",
            "num_fake",
            *(m + part for m in _METRICS for part in parts),
            "degenerate",
        ]
    table["sets"] = rows
    (out / "metrics.json").write_text(
        json.dumps(_json_safe(table), indent=2) + "\n", encoding="utf-8"
    )
    with open(out / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})

    _out(
        f"{len(fakes)} fake set(s) vs {args.real} ({len(real)} real, k={args.nearest_k})"
        + side.describe()
    )
    for line in _compare_table(rows, best, args.confidence):
        _out(line)
    for row in rows:
        for note in row["warnings"]:
            _out(f"warning: {row['name']}: {note}")
    files = ", ".join(p.name for p in written)
    _out(f"wrote {out / 'metrics.json'}, {out / 'metrics.csv'}, {files}")
    return 0


def _difference_rule(confidence: float) -> str:
    return (
        f"* = differs from the best set: z = (g - g_best) / sqrt(se^2 + se_best^2) > "
        f"{_z_critical(confidence):.3f} (two-sided normal, {_level(confidence)}), g the distance "
        f"from the ideal ({_BEST_RULE}); approximate, the sets share one real set "
        "(see `embviz compare -h`)"
    )


def _compare_table(
    rows: list[dict[str, Any]],
    best: Optional[dict[str, Optional[str]]],
    confidence: Optional[float],
) -> list[str]:
    """The printed table of ``embviz compare``: values, and with intervals the marks."""
    width = max(len("name"), *(len(row["name"]) for row in rows))
    if best is None or confidence is None:
        header = f"{'name':<{width}}  " + "  ".join(f"{c:>9}" for c in _METRICS)
        lines = [header]
        for row in rows:
            values = "  ".join(f"{row[c]:>9.4f}" for c in _METRICS)
            mark = "  DEGENERATE" if row.get("degenerate") else ""
            lines.append(f"{row['name']:<{width}}  {values}{mark}")
        return lines

    def cell(row: dict[str, Any], metric: str) -> str:
        low, high = row[f"{metric}_low"], row[f"{metric}_high"]
        bounds = "[n/a]" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"
        return f"{row[metric]:.3f} {bounds}" + ("*" if row[f"{metric}_differs"] else " ")

    cells = [[cell(row, m) for m in _METRICS] for row in rows]
    widths = [max(len(m), *(len(r[j]) for r in cells)) for j, m in enumerate(_METRICS)]
    header = f"{'name':<{width}}  " + "  ".join(f"{m:<{w}}" for m, w in zip(_METRICS, widths))
    lines = [header.rstrip()]
    for row, row_cells in zip(rows, cells):
        text = "  ".join(f"{v:<{w}}" for v, w in zip(row_cells, widths))
        mark = "  DEGENERATE" if row.get("degenerate") else ""
        lines.append(f"{row['name']:<{width}}  {text}{mark}".rstrip())
    lines.append(
        f"[low, high]: {_level(confidence)} confidence intervals; best: "
        + ", ".join(f"{m} {best[m] or '-'}" for m in _METRICS)
        + ("; degenerate sets are never best" if any(r.get("degenerate") for r in rows) else "")
    )
    lines.append(_difference_rule(confidence))
    return lines


def _reference(args: argparse.Namespace, progress: _Progress, ranks: _Ranks) -> int:
    from lightning_embviz._io import is_reference_file, load_embeddings, load_reference
    from lightning_embviz.distributed import fit_reference_distributed

    out = Path(args.out)  # its directory was created and checked by main() before any work
    ks = args.nearest_k
    real: Any
    try:  # every rank reads and checks, so input errors are the same on every rank
        progress(f"reading {args.real}")
        if is_reference_file(args.real):
            real = load_reference(args.real).real  # refit: the stored real set, bit for bit
        else:
            real = load_embeddings(args.real)
        _check_k(max(ks), {args.real: len(real)})
    except Exception as err:
        ranks.agree(err)
        raise
    ranks.agree(None)
    listed = ", ".join(str(k) for k in ks)
    progress(f"fitting the k-NN radii (k = {listed}) of {len(real)} real x D={real.shape[1]}")
    start = time.perf_counter()
    reference = fit_reference_distributed(real, ks)  # one process: RealReference(real, ks)
    seconds = time.perf_counter() - start
    if not ranks.lead:
        return 0
    # Written under a temporary name in the same directory, then renamed: a failed or
    # interrupted run leaves any previous file (possibly REAL itself, when refitting) intact.
    temporary = out.with_name(f".{out.name}.{os.getpid()}.tmp{out.suffix}")
    try:
        reference.save(temporary)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    size = out.stat().st_size
    _out(
        f"wrote {out}: RealReference of N={reference.num_real} real, D={reference.width} "
        f"({str(reference.dtype).removeprefix('torch.')}), k = {listed}; "
        f"{_file_size(size)}, fitted in {seconds:.2f} s"
    )
    return 0


def _file_size(size: int) -> str:
    if size < 1 << 20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1 << 20):.1f} MiB"


_REFERENCE_SUFFIXES = (".npz", ".pt", ".pth")


def _prepare_out_file(out: Path) -> list[Path]:
    """Check ``-o FILE`` of ``embviz reference`` before any work; create its directory.

    Returns:
        The directories created, outermost first (see :func:`_prepare_out`).

    Raises:
        ValueError: one line naming ``-o``, the problem and what to do.
    """
    if out.is_dir():
        raise ValueError(f"-o {out}: is a directory; give a file name such as {out / 'ref.npz'}.")
    if out.suffix not in _REFERENCE_SUFFIXES:  # as RealReference.save tells them apart
        raise ValueError(
            f"-o {out}: a reference file ends in .npz (NumPy) or .pt/.pth (torch), got "
            f"{out.suffix or '(no extension)'!r}; e.g. -o {out.with_suffix('.npz').name}."
        )
    from lightning_embviz._io import is_reference_file

    if out.exists() and not is_reference_file(out):
        # Only a saved reference is replaced: never REAL itself or other data by mistake.
        raise ValueError(
            f"-o {out}: exists and is not a saved reference; it is not replaced. Remove it "
            "first or choose another FILE."
        )
    return _prepare_out(out.parent, shown=out)


def _prepare_out(out: Path, shown: Optional[Path] = None) -> list[Path]:
    """Create the ``-o`` directory (and missing parents) and prove it writable.

    Runs before any file is read or any metric computed, so a bad ``-o`` costs nothing.

    Args:
        out: the directory.
        shown: what ``-o`` was given as, for the messages (default: ``out``); the file
            whose directory ``out`` is, for ``embviz reference``.

    Returns:
        The directories created, outermost first, for :func:`_remove_empty` after a failure.

    Raises:
        ValueError: one line naming ``-o``, the problem and what to do.
    """
    flag = f"-o {shown if shown is not None else out}"
    what = "DIR" if shown is None else "FILE"
    missing: list[Path] = []
    existing = out
    mode = 0
    while True:
        try:
            mode = existing.stat().st_mode
            break
        except (FileNotFoundError, NotADirectoryError):  # walk up to what exists
            if existing.parent == existing:  # pragma: no cover - the root always exists
                break
            missing.append(existing)
            existing = existing.parent
        except OSError as err:
            raise ValueError(
                f"{flag}: cannot look at {existing} ({err.strerror or err}); choose another {what}."
            ) from None
    if not stat.S_ISDIR(mode):
        if existing == out and shown is None:
            raise ValueError(
                f"{flag}: is an existing file, not a directory; choose a directory path "
                "(it is created if needed)."
            )
        raise ValueError(
            f"{flag}: cannot create the directory, {existing} is a file; choose another {what}."
        )
    created: list[Path] = []
    for directory in reversed(missing):
        try:
            directory.mkdir()
        except FileExistsError:
            if not directory.is_dir():  # appeared meanwhile, as something else
                _remove_empty(created)
                raise ValueError(f"{flag}: {directory} is a file; choose another {what}.") from None
            continue
        except OSError as err:
            _remove_empty(created)
            raise ValueError(
                f"{flag}: cannot create {directory} ({err.strerror or err}); choose a writable "
                "location."
            ) from None
        created.append(directory)
    try:
        # A real write, not os.access: that also catches read-only file systems and ACLs.
        with tempfile.TemporaryFile(dir=out, prefix=".embviz-write-test-"):
            pass
    except OSError as err:
        _remove_empty(created)
        raise ValueError(
            f"{flag}: the directory is not writable ({err.strerror or err}); choose a writable "
            "location."
        ) from None
    return created


def _remove_empty(created: list[Path]) -> None:
    """Remove the directories a failed run created, innermost first, if still empty."""
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty (or gone): leave it and its parents


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``embviz`` command.

    Args:
        argv: the arguments without the program name; None reads ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success, 2 on bad input or usage (with a one-line message on
        stderr), 130 when interrupted.
    """
    parser = _parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exit_:
        return int(exit_.code) if isinstance(exit_.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_usage(sys.stderr)
        sys.stderr.write(
            f"{PROG}: error: choose a command: report, compare or reference (see --help)\n"
        )
        return EXIT_USAGE
    ranks = _Ranks()
    try:
        ranks = _Ranks.from_environment()
        # Under torchrun only rank 0 reports progress, prepares -o and writes.
        progress = _Progress(args.quiet or not ranks.lead)
        created: list[Path] = []
        if ranks.lead:
            try:
                if args.command == "reference":
                    created = _prepare_out_file(Path(args.out))
                else:
                    created = _prepare_out(Path(args.out))
            except Exception as err:
                ranks.agree(err)  # the other ranks learn of it before any metric collective
                raise
        try:
            if args.command == "report":
                status = _report(args, progress, ranks)
            elif args.command == "compare":
                status = _compare(args, progress, ranks)
            else:
                status = _reference(args, progress, ranks)
            _write(sys.stdout, "", flush=True)  # a closed stdout shows here at the latest
            return status
        except BaseException:
            _remove_empty(created)  # a failed run leaves no empty output directory behind
            raise
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except _OtherRankFailed as err:
        if err.message:
            sys.stderr.write(f"{PROG}: error: {err.message}\n")
        return EXIT_USAGE
    except (ValueError, TypeError, ModuleNotFoundError, OSError) as err:
        sys.stderr.write(f"{PROG}: error: {_one_line(err)}\n")
        return EXIT_USAGE
    except Exception as err:
        if os.environ.get("EMBVIZ_DEBUG"):
            raise
        from lightning_embviz.distributed import RankFailedError

        if isinstance(err, RankFailedError):  # under torchrun: the same line on every rank
            sys.stderr.write(f"{PROG}: error: {_one_line(err)}\n")
            return 1
        sys.stderr.write(
            f"{PROG}: unexpected error: {type(err).__name__}: {_one_line(err)} "
            "(set EMBVIZ_DEBUG=1 for the traceback)\n"
        )
        return 1
    finally:
        ranks.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
