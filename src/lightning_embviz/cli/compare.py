"""``embviz compare REAL FAKE...``: several fake sets in one frame fitted on the real set.

Steps: read and check the inputs (every rank), the per-sample results of each fake set
against the real radii fitted once (the ranks share the distance work) and with
``--metrics vendi`` the Vendi scores (shared too,
:func:`~lightning_embviz.cli.report.shared_vendi`), then on rank 0 alone: one row of
metrics per set (with ``--confidence`` the intervals and the marks of
:mod:`~lightning_embviz.cli.stats`), one figure per projection, metrics.json and
metrics.csv, the printed table. With the audio and group options
(:func:`~lightning_embviz.cli.audio.read_compare_audio`) each set also gets report's audio
files (missed real clips, outlier fake clips, their spectrograms, ``groups.csv``) in its own
folder ``OUT/<name>/``.
"""

from __future__ import annotations

import csv
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from lightning_embviz.callback.extras import extra_keys
from lightning_embviz.cli.audio import AUDIO_TILES, AudioSide, audio_outputs, read_compare_audio
from lightning_embviz.cli.console import Progress, out
from lightning_embviz.cli.files import RealSide
from lightning_embviz.cli.measure import check_sizes, degenerate_notes, interval_keys, intervals
from lightning_embviz.cli.options import CompareOptions
from lightning_embviz.cli.ranks import Ranks, agreed
from lightning_embviz.cli.stats import METRICS, difference_rule, level, mark_differences
from lightning_embviz.cli.writers import write_json

if TYPE_CHECKING:
    import numpy as np

    from lightning_embviz.cli.report import VendiResult
    from lightning_embviz.projection import Projection

__all__ = ["compare_table", "run_compare"]

Best = Optional[dict[str, Optional[str]]]


@dataclass(frozen=True)
class _Inputs:
    """The checked inputs of one comparison: REAL, the fake sets and their names, k."""

    side: RealSide
    fakes: list[np.ndarray]
    names: list[str]
    nearest_k: int
    projections: dict[str, Projection]
    audio: Optional[list[Optional[AudioSide]]] = None  # one per fake set

    @property
    def real(self) -> np.ndarray:
        return self.side.embeddings


def run_compare(options: CompareOptions, progress: Progress, ranks: Ranks) -> int:
    """Run ``embviz compare``; ``options.out`` was created and checked before. Returns 0."""
    from lightning_embviz.engine.distributed import compare_details_distributed

    inputs = agreed(ranks, lambda: _read(options, progress))
    reference = inputs.side.fitted(progress)  # the real radii once, for every fake set
    all_details = []
    for name, fake in zip(inputs.names, inputs.fakes):
        progress(f"computing PRDC (k={inputs.nearest_k}) for {name}")
        all_details.append(compare_details_distributed(reference, fake, inputs.nearest_k))
    vendi = None
    if "vendi" in options.metrics:  # every rank: None in one process (computed in _rows)
        from lightning_embviz.cli.report import shared_vendi

        vendi = shared_vendi(ranks, inputs.real, inputs.fakes, progress)
    if not ranks.lead:
        return 0  # rank 0 adds the Fréchet distances, the intervals and the views, and writes
    rows = _rows(options, inputs, all_details, progress, vendi)
    best = mark_differences(rows, options.confidence) if options.confidence is not None else None
    written = _figures(options, inputs, all_details, rows, progress)
    written += _audio(options, inputs, all_details, progress)
    _write_tables(options, inputs, rows, best)
    _summary(options, inputs, rows, best, written)
    return 0


def _names(options: CompareOptions) -> list[str]:
    """One panel name per fake set: ``--names``, else the file stems (or paths, if not unique)."""
    if options.names:
        names = [n.strip() for n in options.names.split(",")]
        if len(names) != len(options.fakes):
            raise ValueError(
                f"--names has {len(names)} names for {len(options.fakes)} FAKE files; give one "
                "each."
            )
        return names
    names = [Path(f).stem for f in options.fakes]
    if len(set(names)) != len(names):
        names = [str(f) for f in options.fakes]
    return names


def _read(options: CompareOptions, progress: Progress) -> _Inputs:
    """Read and check every input; a missing optional projection backend fails here too."""
    from lightning_embviz._io import load_embeddings
    from lightning_embviz.projection import make_projection

    projections = {
        m: make_projection(m, seed=options.seed, tsne_backend=options.tsne_backend)
        for m in options.projection
    }
    names = _names(options)
    progress(f"reading {options.real} and {len(options.fakes)} fake set(s)")
    if options.embedder:  # the files hold samples: embed them first
        from lightning_embviz.cli.files import embed_paths

        files = [(options.real, "REAL")] + [(path, "FAKE") for path in options.fakes]
        embedded = embed_paths(options.embedder, files, progress)
        side = RealSide(options.real, options.nearest_k, progress, embedded[0].embeddings)
        fakes = [e.embeddings for e in embedded[1:]]
    else:
        side = RealSide(options.real, options.nearest_k, progress)
        fakes = [load_embeddings(path, side.width, side.source) for path in options.fakes]
    k, real = side.nearest_k, side.embeddings
    counts = {options.real: len(real), **{p: len(f) for p, f in zip(options.fakes, fakes)}}
    check_sizes(k, counts, options.confidence)
    audio = read_compare_audio(options, len(real), [len(f) for f in fakes])
    return _Inputs(side, fakes, names, k, projections, audio)


def set_folders(names: list[str]) -> list[str]:
    """One folder name per set: its name with path-unsafe characters as ``_``, made unique."""
    folders: list[str] = []
    for name in names:
        base = re.sub(r"[^\w.+-]+", "_", name).strip("._") or "set"
        folder, n = base, 2
        while folder in folders:
            folder, n = f"{base}_{n}", n + 1
        folders.append(folder)
    return folders


def _audio(
    options: CompareOptions, inputs: _Inputs, all_details: list[Any], progress: Progress
) -> list[Path]:
    """Each set's report audio files in ``OUT/<name>/``: WAVs, spectrograms, groups.csv."""
    from lightning_embviz.cli.writers import write_figures

    if inputs.audio is None:
        return []
    written: list[Path] = []
    folders = set_folders(inputs.names)
    for side, folder, name, path, fake, details in zip(
        inputs.audio, folders, inputs.names, options.fakes, inputs.fakes, all_details
    ):
        if side is None:
            continue
        out = options.out / folder
        out.mkdir(parents=True, exist_ok=True)
        progress(f"writing the clips and group table of {name} to {out}")
        title = f"{name} ({Path(path).name}) vs {Path(options.real).name}"
        figures, files = audio_outputs(side, details, inputs.real, fake, out, AUDIO_TILES, title)
        written += write_figures(figures, out) + files
    return written


def _rows(
    options: CompareOptions,
    inputs: _Inputs,
    all_details: list[Any],
    progress: Progress,
    vendi: Optional[list[VendiResult]] = None,
) -> list[dict[str, Any]]:
    """One row of metrics per fake set (with ``--confidence`` also its intervals).

    ``vendi``: each set's Vendi scores computed by every rank together, or None.
    """
    from lightning_embviz.cli.report import extra_metrics
    from lightning_embviz.metrics import FrechetReference

    real, rows = inputs.real, []
    frechet = FrechetReference(real)  # the real side once, for every set's fd and fd_inf
    vendi_real: Optional[float] = None  # the reals' Vendi score once, for every set
    for i, (name, path, fake, details) in enumerate(
        zip(inputs.names, options.fakes, inputs.fakes, all_details)
    ):
        row: dict[str, Any] = {"name": name, "file": str(path), "num_fake": len(fake)}
        row.update(details.as_dict())
        row["fd"] = frechet.distance(fake)
        row["warnings"] = degenerate_notes(real, fake, row)
        row["degenerate"] = bool(row["warnings"])
        if options.metrics:
            progress(f"computing {', '.join(options.metrics)} for {name}")
            shared = vendi[i] if vendi is not None else None
            row["warnings"] += extra_metrics(
                options, inputs.side, fake, frechet, row, shared, vendi_real
            )
            if vendi_real is None and math.isfinite(row.get("vendi_real", math.nan)):
                vendi_real = row["vendi_real"]
        if options.confidence is not None:
            progress(
                f"computing {level(options.confidence)} confidence intervals for {name} "
                f"(seed {options.seed})"
            )
            # Same seed for every set: with equal sizes, the same real halves for all.
            bounds = intervals(real, fake, inputs.nearest_k, options.confidence, options.seed, name)
            row.update(interval_keys(bounds))
        rows.append(row)
    return rows


def _figures(
    options: CompareOptions,
    inputs: _Inputs,
    all_details: list[Any],
    rows: list[dict[str, Any]],
    progress: Progress,
) -> list[Path]:
    """``compare_<method>.png`` for each projection: one panel per fake set, one frame."""
    from lightning_embviz.plotting import comparison_figure, figure_to_png
    from lightning_embviz.projection import subsample_indices

    real, fakes = inputs.real, inputs.fakes
    # ViewBuilder.build's subsample rule (the reals with --seed, the fakes with --seed + 1),
    # so compare and report draw the same points; a copy until views names the rule.
    ri = subsample_indices(len(real), options.max_samples, options.seed)
    fis = [subsample_indices(len(f), options.max_samples, options.seed + 1) for f in fakes]
    labels = [f"{n} (DEGENERATE)" if r["degenerate"] else n for n, r in zip(inputs.names, rows)]
    written = []
    for method, proj in inputs.projections.items():
        progress(f"projecting with {method} ({len(ri)} real points, {len(fakes)} fake sets)")
        start = time.perf_counter()
        coords = proj.project(real[ri], *[f[i] for f, i in zip(fakes, fis)])
        progress(f"{method} done in {time.perf_counter() - start:.1f} s")
        fig = comparison_figure(
            coords[0],
            coords[1:],
            labels,
            real_covered=[d.real_covered.numpy()[ri] for d in all_details],
            fake_in_real_manifold=[
                d.fake_in_real_manifold.numpy()[i] for d, i in zip(all_details, fis)
            ],
            metrics=rows,
            nearest_k=inputs.nearest_k,
            method=method,
            title=f"{len(fakes)} fake sets in one {method} frame fitted on "
            f"{Path(options.real).name}",
        )
        path = options.out / f"compare_{method}.png"
        path.write_bytes(figure_to_png(fig))
        written.append(path)
    return written


def _write_tables(
    options: CompareOptions, inputs: _Inputs, rows: list[dict[str, Any]], best: Best
) -> None:
    """metrics.json (the run and every row) and metrics.csv (one line per fake set)."""
    table: dict[str, Any] = {
        "nearest_k": inputs.nearest_k,
        "num_real": len(inputs.real),
        "real": str(options.real),
    }
    if options.embedder:
        table["embedder"] = options.embedder
    parts: tuple[str, ...] = ("",)
    if best is not None and options.confidence is not None:
        table.update(
            confidence=options.confidence,
            interval_seed=options.seed,
            best=best,
            difference_test=difference_rule(options.confidence),
        )
        parts = ("", "_low", "_high", "_se", "_z", "_differs")
    extras = extra_keys(options.metrics)
    columns = ["name", "file", "num_fake", *(m + p for m in METRICS for p in parts), *extras]
    columns.append("degenerate")
    table["sets"] = rows
    write_json(table, options.out / "metrics.json")
    with open(options.out / "metrics.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})


def _summary(
    options: CompareOptions,
    inputs: _Inputs,
    rows: list[dict[str, Any]],
    best: Best,
    written: list[Path],
) -> None:
    """The printed comparison: the table, the warnings, the files."""
    out(
        f"{len(inputs.fakes)} fake set(s) vs {options.real} ({len(inputs.real)} real, "
        f"k={inputs.nearest_k})" + inputs.side.describe()
    )
    for line in compare_table(rows, best, options.confidence, extra_keys(options.metrics)):
        out(line)
    for row in rows:
        for note in row["warnings"]:
            out(f"warning: {row['name']}: {note}")
    files = ", ".join(p.relative_to(options.out).as_posix() for p in written)
    out(f"wrote {options.out / 'metrics.json'}, {options.out / 'metrics.csv'}, {files}")


def compare_table(
    rows: list[dict[str, Any]],
    best: Best,
    confidence: Optional[float],
    extras: tuple[str, ...] = (),
) -> list[str]:
    """The printed table of ``embviz compare``: values, and with intervals the marks.

    Args:
        rows: one dict per fake set (``name``, the metrics; with intervals also
            ``<metric>_low``, ``_high``, ``_differs`` from :func:`~.stats.mark_differences`).
        best: the best set per metric (``mark_differences``' result), or None.
        confidence: the level of the intervals, or None.
        extras: the ``--metrics`` keys, shown after the five (values only: no intervals).

    Returns:
        The lines of the table, without line ends.
    """
    width = max(len("name"), *(len(row["name"]) for row in rows))
    if best is None or confidence is None:
        shown = (*METRICS, *extras)
        header = f"{'name':<{width}}  " + "  ".join(f"{c:>9}" for c in shown)
        lines = [header]
        for row in rows:
            values = "  ".join(f"{row[c]:>9.4f}" for c in shown)
            mark = "  DEGENERATE" if row.get("degenerate") else ""
            lines.append(f"{row['name']:<{width}}  {values}{mark}")
        return lines

    def cell(row: dict[str, Any], metric: str) -> str:
        low, high = row[f"{metric}_low"], row[f"{metric}_high"]
        bounds = "[n/a]" if math.isnan(low) else f"[{low:.3f}, {high:.3f}]"
        return f"{row[metric]:.3f} {bounds}" + ("*" if row[f"{metric}_differs"] else " ")

    cells = [[cell(row, m) for m in METRICS] + [f"{row[m]:.4f}" for m in extras] for row in rows]
    shown = (*METRICS, *extras)
    widths = [max(len(m), *(len(r[j]) for r in cells)) for j, m in enumerate(shown)]
    header = f"{'name':<{width}}  " + "  ".join(f"{m:<{w}}" for m, w in zip(shown, widths))
    lines = [header.rstrip()]
    for row, row_cells in zip(rows, cells):
        text = "  ".join(f"{v:<{w}}" for v, w in zip(row_cells, widths))
        mark = "  DEGENERATE" if row.get("degenerate") else ""
        lines.append(f"{row['name']:<{width}}  {text}{mark}".rstrip())
    lines.append(
        f"[low, high]: {level(confidence)} confidence intervals; best: "
        + ", ".join(f"{m} {best[m] or '-'}" for m in METRICS)
        + ("; degenerate sets are never best" if any(r.get("degenerate") for r in rows) else "")
    )
    lines.append(difference_rule(confidence))
    return lines
