"""The ``embviz`` argument parser and its argument types.

Each type turns one option's text into its value or raises
:class:`argparse.ArgumentTypeError` with the expected form, so a bad option ends with a
one-line message and exit status 2 before any file is read. What the options become is
:mod:`lightning_embviz.cli.options`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any, NoReturn

from lightning_embviz.cli.console import EXIT_USAGE, PROG
from lightning_embviz.cli.help import (
    COMPARE_EPILOG,
    MAIN_EPILOG,
    REFERENCE_EPILOG,
    REPORT_EPILOG,
)

__all__ = ["COMMANDS", "DEFAULT_K", "build_parser"]

DEFAULT_K = 5
COMMANDS = ("report", "compare", "reference")


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see `{self.prog} -h`)\n")


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


def _extra_metrics(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated extra metric names (``vendi,kd``), canonical order."""
    from lightning_embviz.callback.extras import parse_extra_metrics

    names = [m.strip().lower() for m in text.split(",") if m.strip()]
    try:
        return parse_extra_metrics(dict.fromkeys(names))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _embedder_spec(text: str) -> str:
    """An argparse type: ``NAME:PATH`` naming an embedder (loaded later, after the checks)."""
    from lightning_embviz.embedders.spec import SPEC_NAMES

    name, sep, path = text.partition(":")
    if not sep or name.strip().lower() not in SPEC_NAMES or not (path or name == "inception"):
        raise argparse.ArgumentTypeError(
            f"expected NAME:PATH with NAME one of {','.join(SPEC_NAMES)}, e.g. "
            f"dinov2:facebook/dinov2-base or module:net.pt, got {text!r}"
        )
    return text


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
    from lightning_embviz.projection import DEFAULT_MAX_SAMPLES, TSNE_BACKENDS

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
        "--metrics",
        type=_extra_metrics,
        default=(),
        metavar="LIST",
        help="more metrics, comma-separated from vendi,kd,fd_inf,clipped: vendi adds vendi and "
        "vendi_real, kd adds kd and kd_se, fd_inf adds fd_inf, clipped adds clipped_density "
        "and clipped_coverage (see below; --confidence gives them no interval; default: none)",
    )
    p.add_argument(
        "--tsne-backend",
        choices=TSNE_BACKENDS,
        default="auto",
        help="t-SNE implementation: openTSNE when installed (auto), or force one (default: auto)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages on stderr")


def _add_embedder(p: argparse.ArgumentParser, more: str) -> None:
    p.add_argument(
        "--embedder",
        type=_embedder_spec,
        default=None,
        metavar="NAME:PATH",
        help="the files hold images (or audio) to embed first with inception:WEIGHTS, "
        "dinov2:, clip:, clap:, wav2vec2:, hubert: (a hub id or a local folder; extra [hf]) "
        f"or module:FILE.pt (a whole nn.Module saved with torch.save; trusted files only); {more}",
    )


def _command(sub: Any, name: str, **texts: str) -> argparse.ArgumentParser:
    """A subcommand whose ``epilog`` (from :mod:`~lightning_embviz.cli.help`) is kept verbatim."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name, formatter_class=argparse.RawDescriptionHelpFormatter, **texts
    )
    return parser


_REAL_HELP = "real embeddings, shape (N, D), or a saved reference (embviz reference)"


def build_parser() -> argparse.ArgumentParser:
    """The ``embviz`` parser: ``report``, ``compare`` and ``reference`` with their options."""
    from lightning_embviz import __version__

    parser = _Parser(
        prog=PROG,
        description="Precision, recall, density, coverage, Fréchet distance and 2-D views "
        "(PCA, t-SNE, UMAP) of real vs generated embeddings.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    report = _command(
        sub,
        "report",
        help="metrics and figures for one real and one fake embedding file",
        description="Compute precision, recall, density, coverage (Naeem et al., 2020) and the "
        "Fréchet distance of FAKE against REAL, draw 2-D views, and print a summary.",
        epilog=REPORT_EPILOG,
    )
    report.add_argument("real", metavar="REAL", help=_REAL_HELP)
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
    _add_embedder(report, "the images also feed the galleries")
    report.add_argument(
        "--train",
        metavar="FILE",
        help="training embeddings (N_train, D), or a saved TrainReference: adds authenticity, "
        "ct_score and copy_fraction (REAL is the held-out set) and nearest-train columns",
    )
    report.add_argument(
        "--train-images",
        metavar="FILE",
        help="one image per --train row (with --fake-images): draws closest_train.png",
    )
    from lightning_embviz.cli.audio import add_audio_arguments

    add_audio_arguments(report)
    compare = _command(
        sub,
        "compare",
        help="several fake sets (e.g. checkpoints) in one frame, side by side",
        description="Compare several generated embedding sets against one real set: metrics for "
        "each, and one figure with a panel per set, all in a frame fitted on REAL.",
        epilog=COMPARE_EPILOG,
    )
    compare.add_argument("real", metavar="REAL", help=_REAL_HELP)
    compare.add_argument("fakes", metavar="FAKE", nargs="+", help="generated embedding files")
    _add_common(compare, "embviz_compare")
    compare.add_argument(
        "--names",
        metavar="LIST",
        help="comma-separated panel names, one per FAKE (default: the file names)",
    )
    _add_embedder(compare, "see `embviz report -h`")
    from lightning_embviz.cli.audio import add_compare_audio_arguments

    add_compare_audio_arguments(compare)
    reference = _command(
        sub,
        "reference",
        help="fit the real set once (k-NN radii for several k) and save it for report/compare",
        description="Fit a RealReference on REAL: the k-NN radii of the real set for every k "
        "of -k, and save it to one file that `embviz report` and `embviz compare` accept in "
        "place of REAL. With --train, fit a TrainReference of the generator's training set "
        "instead, for `embviz report --train FILE` and EmbeddingMonitor(train=FILE).",
        epilog=REFERENCE_EPILOG,
    )
    reference.add_argument(
        "real",
        metavar="REAL",
        help="real embeddings, shape (N, D), or a saved reference to refit with another -k; "
        "with --train: the training embeddings, or a saved TrainReference to refit",
    )
    reference.add_argument(
        "-k",
        "--nearest-k",
        type=_k_list,
        default=None,
        metavar="K[,K...]",
        help="the k to fit, comma-separated, e.g. 3,5,10; the first is the default of report "
        f"and compare (default: {DEFAULT_K})",
    )
    from lightning_embviz.cli.reference import add_train_arguments

    add_train_arguments(reference)
    _add_embedder(reference, "the embeddings are fitted")
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
