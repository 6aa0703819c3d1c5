"""``embviz reference REAL -k K[,K...] -o FILE``: fit the real set once and save it.

Steps: read REAL (embeddings, or a saved reference to refit from the reals it holds) and
check it (every rank), fit the radii for every k (the ranks share the work), then on
rank 0 alone write FILE atomically and print one line.

With ``--train`` REAL is the generator's training set instead, and FILE a fitted
:class:`~lightning_embviz.memorization.TrainReference` (its leave-one-out nearest distances
and k-means cells, ``--cells``, ``--seed``) that ``embviz report --train FILE`` and
``EmbeddingMonitor(train=FILE)`` load. With ``--embedder NAME:PATH`` the input file holds
images (or audio), embedded first.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from lightning_embviz.cli.console import Progress, out
from lightning_embviz.cli.measure import check_k
from lightning_embviz.cli.options import ReferenceOptions
from lightning_embviz.cli.parser import DEFAULT_K, _non_negative_int, _positive_int
from lightning_embviz.cli.ranks import Ranks, agreed

__all__ = ["add_train_arguments", "run_reference"]


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """``--train``, ``--cells`` and ``--seed`` of ``embviz reference``."""
    parser.add_argument(
        "--train",
        action="store_true",
        help="REAL is the generator's training set: fit and save a TrainReference for the "
        "memorization numbers (embviz report --train FILE, EmbeddingMonitor(train=FILE)) "
        "instead of a real reference",
    )
    parser.add_argument(
        "--cells",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --train: k-means cells of the C_T test (ct_score); fewer cells need fewer "
        "fakes, 20 per cell (default: min(20, number of training rows))",
    )
    parser.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        metavar="S",
        help="with --train: seed of k-means and of the sampled training rows (default: 0)",
    )


def run_reference(options: ReferenceOptions, progress: Progress, ranks: Ranks) -> int:
    """Run ``embviz reference``; the directory of ``options.out`` was checked. Returns 0."""
    if options.train:
        return _run_train(options, progress, ranks)
    from lightning_embviz.engine.distributed import fit_reference_distributed

    if options.cells is not None or options.seed != 0:
        flag = "--cells" if options.cells is not None else "--seed"
        raise ValueError(
            f"{flag} is for a training set (embviz reference TRAIN --train {flag} ...); a real "
            "reference has k-NN radii only (-k)."
        )
    ks = options.nearest_k or (DEFAULT_K,)
    real = agreed(ranks, lambda: _read(options, ks, progress))
    listed = ", ".join(str(k) for k in ks)
    progress(f"fitting the k-NN radii (k = {listed}) of {len(real)} real x D={real.shape[1]}")
    start = time.perf_counter()
    # One process: RealReference(real, ks).
    reference = fit_reference_distributed(real, ks)
    seconds = time.perf_counter() - start
    if not ranks.lead:
        return 0
    _save(reference, options.out)
    out(
        f"wrote {options.out}: RealReference of N={reference.num_real} real, "
        f"D={reference.width} ({str(reference.dtype).removeprefix('torch.')}), k = {listed}; "
        f"{_file_size(options.out.stat().st_size)}, fitted in {seconds:.2f} s"
    )
    return 0


def _read(options: ReferenceOptions, ks: tuple[int, ...], progress: Progress) -> Any:
    """REAL's embeddings: from an embeddings file, or the stored reals of a saved reference."""
    from lightning_embviz._io import is_reference_file, load_embeddings, load_reference
    from lightning_embviz.engine.memorization_reference import is_train_reference_file

    progress(f"reading {options.real}")
    real: Any
    if options.embedder:
        real = _embedded(options, "REAL", progress)
    elif is_reference_file(options.real):
        real = load_reference(options.real).real  # refit: the stored real set, bit for bit
    elif is_train_reference_file(options.real):
        raise ValueError(
            f"{options.real} is a saved TrainReference (a training set); refit it with "
            f"`embviz reference {options.real} --train -o FILE`, or pass real embeddings."
        )
    else:
        real = load_embeddings(options.real)
    check_k(max(ks), {options.real: len(real)})
    return real


def _embedded(options: ReferenceOptions, flag: str, progress: Progress) -> Any:
    """The embeddings of the sample file ``options.real`` (``--embedder``)."""
    from lightning_embviz.cli.files import embed_paths

    (embedded,) = embed_paths(str(options.embedder), [(options.real, flag)], progress)
    return embedded.embeddings


# ------------------------------------------------------------------------- --train


def _run_train(options: ReferenceOptions, progress: Progress, ranks: Ranks) -> int:
    """``embviz reference TRAIN --train``: fit a TrainReference on rank 0 and save it."""
    if options.nearest_k is not None:
        raise ValueError(
            "-k is for a real reference (its k-NN radii); a TrainReference has none: drop -k "
            "(--cells N sets the cells of the C_T test)."
        )
    train = agreed(ranks, lambda: _read_train(options, progress))
    if not ranks.lead:
        return 0  # one process fits: the nearest-train and k-means passes are not shared
    from lightning_embviz.engine.memorization_reference import TrainReference

    progress(
        f"fitting the training set of {len(train)} x D={train.shape[1]} (nearest other "
        "training row of the sampled rows, k-means cells)"
    )
    start = time.perf_counter()
    try:
        reference = TrainReference(train, n_cells=options.cells, seed=options.seed)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{options.real}: {_cli_text(err)}") from None
    # Fits the sample's leave-one-out distances and the cells (what a loaded file reuses).
    _save(reference, options.out)
    seconds = time.perf_counter() - start
    dtype = str(reference.train.dtype).removeprefix("torch.")
    out(
        f"wrote {options.out}: TrainReference of N={reference.num_train} train, "
        f"D={reference.width} ({dtype}), {reference.n_cells} cells, seed {options.seed}; "
        f"{_file_size(options.out.stat().st_size)}, fitted in {seconds:.2f} s"
    )
    return 0


def _read_train(options: ReferenceOptions, progress: Progress) -> Any:
    """The training embeddings: an embeddings file, a saved TrainReference, or embedded."""
    from lightning_embviz._io import is_reference_file, load_embeddings
    from lightning_embviz.engine.memorization_reference import (
        TrainReference,
        is_train_reference_file,
    )

    progress(f"reading {options.real}")
    if options.embedder:
        train = _embedded(options, "TRAIN", progress)
    elif is_train_reference_file(options.real):
        try:  # refit (other --cells or --seed) from the training set it holds, bit for bit
            train = TrainReference.load(options.real).train
        except ValueError as err:
            raise ValueError(_cli_text(err)) from None
        except Exception as err:  # damaged bytes
            reason = " ".join(str(err).split())[:200] or type(err).__name__
            raise ValueError(
                f"{options.real}: a saved TrainReference that cannot be read ({reason}); fit "
                "it again from the training embeddings."
            ) from None
    elif is_reference_file(options.real):
        raise ValueError(
            f"{options.real} is a saved RealReference (the held-out real side), not a training "
            "set; pass the generator's training embeddings with --train."
        )
    else:
        train = load_embeddings(options.real, width_source="the training set")
    if options.cells is not None and options.cells > len(train):
        raise ValueError(
            f"--cells {options.cells}: more k-means cells than the {len(train)} training rows "
            f"of {options.real}; choose --cells {min(len(train), 20)} or fewer."
        )
    return train


def _cli_text(err: BaseException) -> str:
    """An engine message on one line, argument names as the command's flags."""
    return " ".join(str(err).split()).replace("`train`", "TRAIN").replace("`n_cells`", "--cells")


# ---------------------------------------------------------------------------- files


def _save(reference: Any, out_file: Path) -> None:
    """Write ``reference`` to ``out_file`` under a temporary name first, then rename it.

    A failed or interrupted run leaves any previous file (possibly REAL itself, when
    refitting) intact.
    """
    temporary = out_file.with_name(f".{out_file.name}.{os.getpid()}.tmp{out_file.suffix}")
    try:
        reference.save(temporary)
        os.replace(temporary, out_file)
    finally:
        temporary.unlink(missing_ok=True)


def _file_size(size: int) -> str:
    if size < 1 << 20:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1 << 20):.1f} MiB"
