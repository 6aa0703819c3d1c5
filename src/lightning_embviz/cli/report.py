"""``embviz report REAL FAKE``: the metrics, views, galleries and tables of one fake set.

Steps: read and check the inputs (every rank), compute the per-sample results (the ranks
share the distance work) and with ``--metrics vendi`` the Vendi scores (the ranks share the
second moments, :func:`shared_vendi`), then on rank 0 alone: the other metrics (Fréchet
distance, the degenerate check, the other ``--metrics``, intervals, per-class rows), the
files, the printed summary.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lightning_embviz.callback.extras import extra_keys
from lightning_embviz.cli.audio import AudioSide, audio_outputs, read_audio
from lightning_embviz.cli.console import Progress, fmt, out
from lightning_embviz.cli.files import ImageFile, RealSide, embed_paths
from lightning_embviz.cli.galleries import galleries
from lightning_embviz.cli.measure import check_sizes, degenerate_notes, interval_keys, intervals
from lightning_embviz.cli.memorization import (
    TrainSide,
    closest_train_figures,
    memorization_metrics,
    read_train,
    sample_files,
)
from lightning_embviz.cli.options import ReportOptions, ViewOptions
from lightning_embviz.cli.ranks import Ranks, agreed
from lightning_embviz.cli.stats import METRICS, level
from lightning_embviz.cli.writers import json_key, write_figures, write_json, write_sample_tables

if TYPE_CHECKING:
    import numpy as np

    from lightning_embviz.views import ViewBuilder

__all__ = ["VendiResult", "extra_metrics", "run_report", "shared_vendi"]

VendiResult = tuple[dict[str, float], Optional[str]]
"""One fake set's ``vendi`` and ``vendi_real`` (NaN on failure) and the failure's message."""


@dataclass(frozen=True)
class _Inputs:
    """The checked inputs of one report: REAL, FAKE, the resolved k, labels, image files."""

    side: RealSide
    fake: np.ndarray
    nearest_k: int
    real_labels: Optional[np.ndarray]
    fake_labels: Optional[np.ndarray]
    real_images: Optional[ImageFile]
    fake_images: Optional[ImageFile]
    views: ViewBuilder
    train: Optional[TrainSide] = None
    audio: Optional[AudioSide] = None

    @property
    def real(self) -> np.ndarray:
        return self.side.embeddings


def run_report(options: ReportOptions, progress: Progress, ranks: Ranks) -> int:
    """Run ``embviz report``; ``options.out`` was created and checked before. Returns 0."""
    inputs = agreed(ranks, lambda: _read(options, progress))
    start = time.perf_counter()
    reference = inputs.side.fitted(progress)
    progress(
        f"computing PRDC (k={inputs.nearest_k}) on {len(inputs.real)} real x "
        f"{len(inputs.fake)} fake"
    )
    from lightning_embviz.engine.distributed import compare_details_distributed

    details = compare_details_distributed(reference, inputs.fake, inputs.nearest_k)
    vendi = None
    if "vendi" in options.metrics:  # every rank: None in one process (computed with the rest)
        vendi = shared_vendi(ranks, inputs.real, [inputs.fake], progress)
    if not ranks.lead:
        return 0  # rank 0 adds the Fréchet distance, the intervals and the views, and writes
    metrics, notes = _metrics(options, inputs, details, progress, start, vendi)
    per_fake = None
    if inputs.train is not None:
        progress(f"comparing {len(inputs.fake)} fake with {inputs.train.reference.num_train} train")
        values, per_fake, problems = memorization_metrics(inputs.train, inputs.fake, inputs.real)
        metrics.update(values)
        notes += problems  # the list in metrics["warnings"] too
    if "clipped" in options.metrics:  # the per-fake realism and rarity scores too
        from lightning_embviz.callback.extras import fake_scores
        from lightning_embviz.engine.reference import RealReference

        real_side = reference if isinstance(reference, RealReference) else inputs.real
        per_fake = {**(per_fake or {}), **fake_scores(real_side, inputs.fake, inputs.nearest_k)}
    written = _write(options, inputs, details, metrics, progress, per_fake)
    _summary(options, inputs, metrics, notes, written)
    return 0


def _read(options: ReportOptions, progress: Progress) -> _Inputs:
    """Read and check every input; a missing optional projection backend fails here too."""
    from lightning_embviz._io import load_embeddings, load_labels

    progress(f"reading {options.real} and {options.fake}")
    embedded = None
    if options.embedder:  # REAL and FAKE hold samples: embed them first
        # and --train-images without --train: the training set (cli/memorization.py)
        embedded = embed_paths(options.embedder, sample_files(options), progress)
        side = RealSide(options.real, options.nearest_k, progress, embedded[0].embeddings)
        fake = embedded[1].embeddings
    else:
        side = RealSide(options.real, options.nearest_k, progress)
        fake = load_embeddings(options.fake, side.width, side.source)
    k, real = side.nearest_k, side.embeddings
    counts = {options.real: len(real), options.fake: len(fake)}
    check_sizes(k, counts, options.confidence)
    real_labels = load_labels(options.labels, len(real)) if options.labels else None
    fake_labels = load_labels(options.fake_labels, len(fake)) if options.fake_labels else None
    if fake_labels is not None and real_labels is None:
        raise ValueError("--fake-labels needs --labels for the real set too.")
    real_images = (
        ImageFile(options.real_images, len(real), "--real-images", options.real)
        if options.real_images
        else None
    )
    fake_images = (
        ImageFile(options.fake_images, len(fake), "--fake-images", options.fake)
        if options.fake_images
        else None
    )
    if embedded is not None:  # the embedded images feed the galleries too
        real_images = real_images or embedded[0].images
        fake_images = fake_images or embedded[1].images
    from lightning_embviz.views import ViewBuilder

    # Before the slow work: a missing optional backend fails now.
    views = ViewBuilder(
        methods=options.projection,
        max_samples=options.max_samples,
        seed=options.seed,
        tsne_backend=options.tsne_backend,
    )
    train = read_train(
        options.train,
        options.train_images,
        side.width,
        options.fake_images or (options.fake if embedded is not None else None),
        embedded=(
            (embedded[2].embeddings, embedded[2].images)
            if embedded is not None and len(embedded) > 2
            else None
        ),
        embedder=options.embedder,
    )
    audio = read_audio(options, len(real), len(fake))
    return _Inputs(
        side, fake, k, real_labels, fake_labels, real_images, fake_images, views, train, audio
    )


def _metrics(
    options: ReportOptions,
    inputs: _Inputs,
    details: Any,
    progress: Progress,
    start: float,
    vendi: Optional[list[VendiResult]] = None,
) -> tuple[dict[str, Any], list[str]]:
    """metrics.json's content, and the warnings about the fake set (also in it).

    ``vendi``: the Vendi scores the ranks computed together (:func:`shared_vendi`), or None.
    """
    from lightning_embviz.metrics import FrechetReference

    real, fake, k = inputs.real, inputs.fake, inputs.nearest_k
    frechet = FrechetReference(real)  # the real side once, for fd and fd_inf
    fd = frechet.distance(fake)
    progress(f"metrics done in {time.perf_counter() - start:.1f} s")
    metrics: dict[str, Any] = dict(details.as_dict())
    metrics.update(fd=fd, num_real=len(real), num_fake=len(fake), nearest_k=k)
    if options.embedder:
        metrics["embedder"] = options.embedder
    notes = degenerate_notes(real, fake, metrics)
    metrics.update(degenerate=bool(notes), warnings=notes)
    if options.metrics:
        progress(f"computing {', '.join(options.metrics)}")
        shared = vendi[0] if vendi is not None else None
        notes += extra_metrics(options, inputs.side, fake, frechet, metrics, shared)
    if options.confidence is not None:
        confidence = level(options.confidence)
        progress(f"computing {confidence} confidence intervals (seed {options.seed})")
        start = time.perf_counter()
        # The raw real embeddings, also when REAL is a saved reference (it holds them).
        bounds = intervals(real, fake, k, options.confidence, options.seed, options.fake)
        progress(f"intervals done in {time.perf_counter() - start:.1f} s")
        metrics.update(confidence=options.confidence, interval_seed=options.seed)
        metrics.update(interval_keys(bounds))
        if math.isnan(bounds["fd_low"]) and min(len(real), len(fake)) > real.shape[1]:
            notes.append(
                "fd has no interval: a set's covariance is singular (all fakes (nearly) identical?)"
            )
    if inputs.real_labels is not None:
        from lightning_embviz.plotting import class_metrics

        per_class = class_metrics(
            inputs.real_labels,
            details.real_covered,
            details.real_recalled,
            inputs.fake_labels,
            details.fake_ball_count if inputs.fake_labels is not None else None,
            k,
        )
        metrics["per_class"] = {str(json_key(c)): row for c, row in per_class.items()}
    return metrics, notes


def extra_metrics(
    options: ViewOptions,
    side: RealSide,
    fake: np.ndarray,
    frechet: Any,
    into: dict[str, Any],
    vendi: Optional[VendiResult] = None,
    vendi_real: Optional[float] = None,
) -> list[str]:
    """Add the ``--metrics`` keys of one fake set to ``into``; return the warnings.

    The real radii of ``side`` (fitted before) and the fitted Fréchet real side are reused.
    ``vendi``: this set's Vendi scores computed by every rank (:func:`shared_vendi`), used
    instead of computing them here; None computes them here (one process).
    ``vendi_real``: the reals' Vendi score if an earlier fake set computed it, else None.
    """
    from lightning_embviz.callback.extras import extra_scalars
    from lightning_embviz.engine.reference import RealReference

    names = options.metrics
    problems: list[tuple[str, str]] = []
    if vendi is not None and "vendi" in names:  # the same keys, order and message as here
        names = tuple(name for name in names if name != "vendi")
        into.update(vendi[0])
        if vendi[1] is not None:
            problems.append(("vendi", vendi[1]))
    reference = side.reference if isinstance(side.reference, RealReference) else None
    values, failed = extra_scalars(
        side.embeddings,
        fake,
        names,
        nearest_k=side.nearest_k,
        seed=options.seed,
        reference=reference,
        frechet=frechet,
        vendi_real=vendi_real,
    )
    into.update(values)
    problems += failed
    return [f"{name} could not be computed ({message}); it is null" for name, message in problems]


def shared_vendi(
    ranks: Ranks, real: np.ndarray, fakes: Sequence[np.ndarray], progress: Progress
) -> Optional[list[VendiResult]]:
    """Under torchrun, ``--metrics vendi`` of each fake set, computed by every rank together.

    Every rank calls this with the same rows in the same order. Each score is one
    :func:`~lightning_embviz.engine.kernels.vendi_score_distributed` call: every rank
    accumulates its share of the row blocks of the (D, D) second moment, one int64
    all-reduce adds them, and every rank gets the very bits of ``vendi_score`` in one
    process, whatever threads each has (the moment is exact, the eigensolver runs on one
    thread). The fakes are scored first, in order,
    then the reals once (only if some fake set could be scored, as one process computes
    ``vendi_real`` only after ``vendi``).

    A score that fails is raised on every rank alike (the ranks agree before each
    collective: the data's own error where every rank failed the same way, else the same
    :class:`~lightning_embviz.engine.distributed.RankFailedError`), so every rank takes the
    same next step; it becomes NaN with the message one process writes. No rank waits.

    Args:
        ranks: this process among the torchrun processes.
        real: (N, D) real rows.
        fakes: (M_i, D) rows of each fake set.
        progress: where rank 0 says what it computes.

    Returns:
        In one process None (:func:`extra_metrics` computes the scores, as it always did);
        else per fake set ``({"vendi": ..., "vendi_real": ...}, message)``: both NaN with
        the first failure's ``"<Type>: <message>"`` when the fakes' or the reals' score
        failed, else None.
    """
    if ranks.world == 1:
        return None
    from lightning_embviz.engine.kernels import vendi_score_distributed

    def score(rows: np.ndarray) -> tuple[float, Optional[str]]:
        try:
            return vendi_score_distributed(rows), None
        except Exception as err:  # on every rank alike: NaN and the message, never raised
            return math.nan, f"{type(err).__name__}: {err}"

    progress(f"computing vendi with {ranks.world} processes")
    scored = [score(fake) for fake in fakes]
    real_score, real_problem = math.nan, None
    if any(problem is None for _, problem in scored):  # the same decision on every rank
        real_score, real_problem = score(real)
    results: list[VendiResult] = []
    for value, problem in scored:
        problem = problem or real_problem
        if problem is not None:
            value, real_value = math.nan, math.nan
        else:
            real_value = real_score
        results.append(({"vendi": value, "vendi_real": real_value}, problem))
    return results


def _write(
    options: ReportOptions,
    inputs: _Inputs,
    details: Any,
    metrics: dict[str, Any],
    progress: Progress,
    per_fake: Optional[dict[str, np.ndarray]] = None,
) -> list[Path]:
    """Draw and write the figures, the per-sample tables and metrics.json (written last)."""
    degenerate = " - DEGENERATE fake set, see metrics.json" if metrics["degenerate"] else ""
    figures = inputs.views.build(
        inputs.real,
        inputs.fake,
        details,
        real_labels=inputs.real_labels,
        fake_labels=inputs.fake_labels,
        title=f"{Path(options.fake).name} vs {Path(options.real).name}{degenerate}",
        progress=progress,
    )
    figures.update(
        galleries(
            details,
            inputs.real_images,
            inputs.fake_images,
            inputs.real_labels,
            inputs.fake_labels,
            options.gallery_size,
            inputs.nearest_k,
        )
    )
    progress(f"writing {len(figures)} figures to {options.out}")
    if inputs.train is not None and per_fake is not None:
        train_name = Path(options.train or options.train_images or "").name
        title = f"{Path(options.fake).name} vs {train_name}"
        figures.update(
            closest_train_figures(
                inputs.train, per_fake, inputs.fake_images, options.gallery_size, title
            )
        )
    audio_files: list[Path] = []
    if inputs.audio is not None:
        title = f"{Path(options.fake).name} vs {Path(options.real).name}"
        audio_figures, audio_files = audio_outputs(
            inputs.audio,
            details,
            inputs.real,
            inputs.fake,
            options.out,
            options.gallery_size,
            title,
        )
        figures.update(audio_figures)
    written = write_figures(figures, options.out) + audio_files
    written += write_sample_tables(
        details, inputs.real_labels, inputs.fake_labels, options.out, per_fake
    )
    write_json(metrics, options.out / "metrics.json")
    return written


def _summary(
    options: ReportOptions,
    inputs: _Inputs,
    metrics: dict[str, Any],
    notes: list[str],
    written: list[Path],
) -> None:
    """The printed report: one line per metric (with its interval), warnings, the files."""
    width = inputs.real.shape[1]
    out(
        f"{options.fake} vs {options.real}: {len(inputs.fake)} fake, {len(inputs.real)} real, "
        f"D={width}" + inputs.side.describe()
    )
    for key in METRICS:
        out(f"  {key:<10} {fmt(metrics[key])}{_bounds_text(metrics, key, width)}")
    for key in extra_keys(options.metrics):
        out(f"  {key:<10} {fmt(metrics[key])}")
    out(f"  {'nearest_k':<10} {inputs.nearest_k}")
    if inputs.train is not None:
        for key in ("authenticity", "ct_score", "copy_fraction"):
            out(f"  {key:<13} {fmt(metrics[key])}")
    for note in notes:
        out(f"  warning: {note}")
    if options.confidence is not None:
        out(
            f"  [low, high]: {level(options.confidence)} confidence intervals for the expected "
            f"value at these sample sizes (random half splits, --seed {options.seed})"
        )
    out(f"wrote {options.out / 'metrics.json'} and {', '.join(p.name for p in written)}")


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
    return f" [{fmt(low)}, {fmt(high)}]"
