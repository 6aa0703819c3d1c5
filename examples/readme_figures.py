"""Regenerate the README's per-epoch table and its figures in ``docs/`` from a finished run.

The README shows a run of ``gan_digits.py`` (seed 0, 30 epochs): a table of the metrics per
epoch and figures of the first and the last epoch. This script rebuilds all of them from
what that run wrote, so that the README always shows what the current code produces:

1. It reads the TensorBoard event files of ``RUN/tensorboard/train`` (every scalar and
   every image, nothing dropped) and maps each validation run's step to its epoch with the
   ``epoch`` scalar that Lightning logs next to every metric.
2. It prints the README's markdown table (``embviz/*`` and the model's ``gan/modes_hit``
   as "classes hit") for a selection of epochs, a sentence with the first and last values,
   and the wall time the event files span.
3. It writes ``docs/metrics_per_epoch.png`` (precision, recall, density and coverage per
   epoch, the Fréchet distance in a panel below) and the figures that ``EmbeddingMonitor``
   logged at the first and the last epoch (``docs/pca_epoch_first.png``, ...), decoded from
   the event files. Gallery figures (``embviz/missed_real``) are written when the run has
   them.
4. It copies the side-by-side comparison that ``compare_checkpoints.py`` drew
   (``RUN/compare/embviz/compare_tsne.png``) to ``docs/compare_checkpoints_tsne.png``.
5. It draws the ``embviz`` command's example figures (``docs/example_*.png``) by running
   ``embviz report`` and ``embviz compare`` on a small synthetic set of Gaussian clusters
   (made here, seeded), in a temporary folder.

``--memorization RUN`` does only this instead, for a ``gan_digits.py --memorize`` run: it
prints the markdown table of ``embviz/authenticity``, ``embviz/ct_score`` and
``embviz/copy_fraction`` per epoch and writes ``docs/images/memorization_per_epoch.png`` (the
three curves) and ``docs/images/closest_train.png`` (the ``embviz/closest_train`` gallery of
the last epoch: the fakes closest to the training digits, each beside its nearest training
digit).

Run::

    python examples/gan_digits.py --overwrite
    python examples/compare_checkpoints.py --run outputs/gan_digits
    python examples/readme_figures.py --run outputs/gan_digits --docs docs
    python examples/gan_digits.py --memorize --out outputs/gan_digits_memorize
    python examples/readme_figures.py --memorization outputs/gan_digits_memorize --docs docs

Flags: ``--run``, ``--docs``, ``--rows`` (the epochs of the table, e.g. ``0,1,2,5,10,20,last``
or ``all``), ``--title``, ``--no-examples`` (skip step 5), ``--full-color`` (keep the figures'
true colours instead of a 256-colour palette, which makes the files 2-3 times smaller),
``--memorization RUN``.
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

# The model's own scalar (gan_digits.py's MODES_KEY): digit classes that get at least half
# of their share of the fakes.
MODES_KEY = "gan/modes_hit"
METRICS = ("precision", "recall", "density", "coverage", "fd")
PREFIX = "embviz/"

# (logged tag, name in docs/, which epochs): the figures the README shows. Galleries are
# optional: a run logs them only when its validation_step returns images.
EPOCH_FIGURES: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("embviz/pca", "pca", ("first", "last"), True),
    ("embviz/tsne_classes", "tsne_classes", ("first", "last"), True),
    ("embviz/class_metrics", "class_metrics", ("first", "last"), True),
    ("embviz/pca_coverage", "pca_coverage", ("last",), True),
    ("embviz/missed_real", "missed_real", ("first", "last"), False),
)
COMPARE_FIGURE = ("compare/embviz/compare_tsne.png", "compare_checkpoints_tsne.png")
DEFAULT_ROWS = "0,1,2,5,10,20,last"
DEFAULT_TITLE = "gan_digits.py: held-out digits vs fakes, per epoch (k=5)"

# Colours of the curves (Okabe-Ito, as in the package's figures); coverage is drawn bold.
CURVE_STYLE: dict[str, dict[str, Any]] = {
    "precision": {"color": "#0072B2"},
    "recall": {"color": "#E69F00"},
    "density": {"color": "#009E73"},
    "coverage": {"color": "#D55E00", "linewidth": 2.5},
}


# ------------------------------------------------------------------------- reading


def load_events(log_dir: Path) -> Any:
    """Read every scalar and image of a TensorBoard run folder.

    Args:
        log_dir: the folder holding ``events.out.tfevents.*`` files (``RUN/tensorboard/train``).

    Returns:
        A loaded ``EventAccumulator``; nothing is subsampled (size guidance 0 for every kind).

    Raises:
        SystemExit: the folder does not exist or holds no event file.
    """
    from tensorboard.backend.event_processing.event_accumulator import (
        DEFAULT_SIZE_GUIDANCE,
        EventAccumulator,
    )

    if not log_dir.is_dir() or not any(log_dir.glob("events.out.tfevents.*")):
        raise SystemExit(
            f"no TensorBoard event files in {log_dir}; run `python examples/gan_digits.py` "
            "first (or pass the run's folder with --run)."
        )
    accumulator = EventAccumulator(
        str(log_dir), size_guidance={kind: 0 for kind in DEFAULT_SIZE_GUIDANCE}
    )
    accumulator.Reload()
    return accumulator


def scalar_series(events: Any, tag: str) -> dict[int, float]:
    """``{step: value}`` of one scalar tag (empty when the run never logged it)."""
    if tag not in events.Tags()["scalars"]:
        return {}
    return {int(e.step): float(e.value) for e in events.Scalars(tag)}


def validation_epochs(events: Any) -> dict[int, int]:
    """``{step: epoch}`` of every validation run that logged ``embviz/coverage``.

    Lightning logs the scalar ``epoch`` next to every metric, at the same step, so the epoch
    of a validation run is read at its step. A run without that scalar numbers its
    validation runs 0, 1, ... instead.

    Raises:
        SystemExit: the run has no ``embviz/coverage`` scalar.
    """
    steps = sorted(scalar_series(events, PREFIX + "coverage"))
    if not steps:
        raise SystemExit(
            f"the run logged no {PREFIX}coverage; was it trained with EmbeddingMonitor?"
        )
    epoch = scalar_series(events, "epoch")
    if all(step in epoch for step in steps):
        return {step: round(epoch[step]) for step in steps}
    return {step: i for i, step in enumerate(steps)}


def metric_rows(events: Any) -> list[dict[str, float]]:
    """One row per validation run: ``epoch``, ``step``, the five metrics and ``modes``.

    Values the run did not log (``gan/modes_hit`` in another project) are NaN.
    """
    series = {name: scalar_series(events, PREFIX + name) for name in METRICS}
    modes = scalar_series(events, MODES_KEY)
    rows = []
    for step, epoch in sorted(validation_epochs(events).items()):
        row = {"epoch": float(epoch), "step": float(step)}
        row.update({name: values.get(step, math.nan) for name, values in series.items()})
        row["modes"] = modes.get(step, math.nan)
        rows.append(row)
    return rows


def wall_time_s(events: Any) -> Optional[float]:
    """Seconds from the run's first event (the file's creation) to its last scalar or image."""
    try:
        first = float(events.FirstEventTimestamp())
    except ValueError:  # no event at all
        return None
    tags = events.Tags()
    times = [e.wall_time for tag in tags["scalars"] for e in events.Scalars(tag)]
    times += [e.wall_time for tag in tags["images"] for e in events.Images(tag)]
    return max(times) - first if times else None


# -------------------------------------------------------------------------- table


def parse_rows(text: str) -> Optional[list[str]]:
    """``"0,1,last"`` -> ``["0", "1", "last"]``; ``"all"`` -> None (every epoch).

    Raises:
        argparse.ArgumentTypeError: an entry is neither a non-negative integer nor ``last``.
    """
    if text.strip() == "all":
        return None
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t != "last" and not t.isdigit()]
    if not items or bad:
        raise argparse.ArgumentTypeError(
            f"--rows {text!r}: give epochs as non-negative integers and/or 'last', "
            f"comma-separated (e.g. {DEFAULT_ROWS}), or 'all'"
        )
    return items


def select_rows(
    rows: Sequence[dict[str, float]], wanted: Optional[Sequence[str]]
) -> list[dict[str, float]]:
    """The rows of the wanted epochs (``"last"``: the last one), in epoch order.

    Epochs the run did not validate are left out.
    """
    if wanted is None or not rows:
        return list(rows)
    last = int(rows[-1]["epoch"])
    epochs = {last if w == "last" else int(w) for w in wanted}
    return [row for row in rows if int(row["epoch"]) in epochs]


def _cell(value: float, digits: int) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def markdown_table(rows: Sequence[dict[str, float]]) -> str:
    """The README's table: epoch, precision, recall, density, coverage, fd, classes hit."""
    lines = [
        "| epoch | precision | recall | density | coverage | fd | classes hit |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        cells = [str(int(row["epoch"]))]
        cells += [_cell(row[name], 3) for name in METRICS[:4]]
        cells += [_cell(row["fd"], 1), _cell(row["modes"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_sentence(rows: Sequence[dict[str, float]]) -> str:
    """One line with the coverage and the classes hit of the first and the last epoch."""
    first, last = rows[0], rows[-1]
    text = (
        f"coverage goes from {first['coverage']:.2f} (epoch {int(first['epoch'])}) to "
        f"{last['coverage']:.2f} (epoch {int(last['epoch'])})"
    )
    if not (math.isnan(first["modes"]) or math.isnan(last["modes"])):
        text += f"; classes hit: {first['modes']:.0f} -> {last['modes']:.0f}"
    return text


# ------------------------------------------------------------------------ figures


def save_png(data: bytes, path: Path, *, palette: bool) -> Path:
    """Decode an encoded image and write it as PNG, with a 256-colour palette if asked.

    Raises:
        PIL.UnidentifiedImageError: ``data`` is not an image.
    """
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        rgb = image.convert("RGB")
    out = rgb.quantize(256) if palette else rgb
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path, format="PNG", optimize=True)
    return path


def write_epoch_figures(
    events: Any, epochs: dict[int, int], docs: Path, *, palette: bool
) -> tuple[list[Path], list[str]]:
    """Write the first/last-epoch figures of :data:`EPOCH_FIGURES` into ``docs``.

    Each figure is taken at the first and the last validation step that logged it.

    Returns:
        The files written, and one note per required figure the run did not log
        (optional ones, the galleries, are skipped silently).
    """
    written: list[Path] = []
    missing: list[str] = []
    logged = set(events.Tags()["images"])
    for tag, name, which, required in EPOCH_FIGURES:
        images = sorted(
            (e for e in events.Images(tag) if e.step in epochs) if tag in logged else [],
            key=lambda e: e.step,
        )
        if not images:
            if required:
                missing.append(f"{tag}: not in the run's images")
            continue
        for position in which:
            event = images[0] if position == "first" else images[-1]
            path = docs / f"{name}_epoch_{position}.png"
            written.append(save_png(event.encoded_image_string, path, palette=palette))
    return written, missing


def metrics_figure(rows: Sequence[dict[str, float]], title: str) -> Any:
    """Precision, recall, density and coverage per epoch; below, the Fréchet distance.

    Drawn with matplotlib's object API on an Agg canvas (no pyplot). The Fréchet distance
    gets its own panel, on a log scale: it falls by an order of magnitude while the other
    four stay in [0, 1] (density can exceed 1).

    Returns:
        A ``matplotlib.figure.Figure``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    epochs = [row["epoch"] for row in rows]
    fd = [row["fd"] for row in rows]
    show_fd = any(math.isfinite(v) and v > 0 for v in fd)
    fig = Figure(figsize=(6.4, 4.8 if show_fd else 3.4), dpi=100)
    FigureCanvasAgg(fig)
    if show_fd:
        ax, ax_fd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.6, 1]})
    else:
        ax, ax_fd = fig.add_subplot(1, 1, 1), None
    for name, style in CURVE_STYLE.items():
        values = [row[name] for row in rows]
        ax.plot(epochs, values, marker="o", markersize=3, label=name, **style)
    finite = [row[n] for row in rows for n in CURVE_STYLE if math.isfinite(row[n])]
    ax.set_ylim(0.0, 1.05 * max([1.0, *finite]))
    ax.set_ylabel("value")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", ncol=4, fontsize=8)
    ax.set_title(title, fontsize=10)
    if ax_fd is not None:
        ax_fd.plot(epochs, fd, color="0.35", marker="s", markersize=2.5, label="fd")
        ax_fd.set_yscale("log")
        # Plain numbers (10, 20, 50, ...) rather than powers of ten: the range is small.
        ax_fd.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax_fd.yaxis.set_major_formatter(ScalarFormatter())
        ax_fd.yaxis.set_minor_formatter(NullFormatter())
        ax_fd.set_ylabel("Fréchet dist.")
        ax_fd.grid(True, alpha=0.3, which="major")
    (ax_fd if ax_fd is not None else ax).set_xlabel("epoch")
    fig.tight_layout()
    return fig


def write_metrics_figure(
    rows: Sequence[dict[str, float]], path: Path, title: str, *, palette: bool
) -> Path:
    """Draw :func:`metrics_figure` and save it as ``path``."""
    fig = metrics_figure(rows, title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return save_png(buffer.getvalue(), path, palette=palette)


def copy_compare_figure(run: Path, docs: Path, *, palette: bool) -> Optional[Path]:
    """Copy ``compare_checkpoints.py``'s side-by-side t-SNE figure, if it exists."""
    source = run / COMPARE_FIGURE[0]
    if not source.is_file():
        return None
    return save_png(source.read_bytes(), docs / COMPARE_FIGURE[1], palette=palette)


# ------------------------------------------------------------- example figures


def synthetic_clusters(seed: int = 0) -> dict[str, np.ndarray]:
    """Six Gaussian clusters in 32 dimensions and generated sets that miss some of them.

    The arrays behind the ``embviz`` command's example figures:

    - ``real`` (1500, 32): 250 points per cluster, unit spread; ``real_labels`` (1500,).
    - ``fake`` (1500, 32): a generator that packs its samples tightly (spread 0.85, so
      density is high and recall low) around five of the six clusters, misses the last one,
      and sends 80 samples between the clusters; ``fake_labels`` (1500,) says which cluster
      each was meant for (the missed one included, for the strays).
    - ``epoch10``, ``epoch20``, ``epoch30`` (1500, 32): a generator learning, from three
      clusters, too wide and off-centre, to all six with the right spread.
    """
    rng = np.random.default_rng(seed)
    dim, per_class, n_classes = 32, 250, 6
    centres = rng.normal(0.0, 2.5, size=(n_classes, dim))
    real_labels = np.repeat(np.arange(n_classes), per_class)
    real = centres[real_labels] + rng.normal(size=(len(real_labels), dim))

    sizes = [330, 300, 300, 300, 190]  # cluster 5 is missed
    labels = np.repeat(np.arange(len(sizes)), sizes)
    fake = centres[labels] + 0.85 * rng.normal(size=(len(labels), dim))
    strays = 1500 - len(labels)
    stray_labels = rng.integers(0, n_classes, size=strays)
    stray = centres.mean(0) + 1.5 * rng.normal(size=(strays, dim))
    fake_labels = np.concatenate([labels, stray_labels])
    fake = np.concatenate([fake, stray])

    def learning(clusters: int, spread: float, shift: float) -> np.ndarray:
        which = rng.integers(0, clusters, size=1500)
        offset = shift * rng.normal(size=(clusters, dim)) / math.sqrt(dim)
        return centres[which] + offset[which] + spread * rng.normal(size=(1500, dim))

    out = {
        "real": real,
        "real_labels": real_labels,
        "fake": fake,
        "fake_labels": fake_labels,
        "epoch10": learning(3, 1.3, 2.0),
        "epoch20": learning(5, 1.1, 1.0),
        "epoch30": learning(6, 1.0, 0.3),
    }
    return {
        k: v.astype(np.int64) if k.endswith("labels") else v.astype(np.float32)
        for k, v in out.items()
    }


# `embviz report` / `embviz compare` output -> docs/ name.
EXAMPLE_FIGURES = {
    "report/tsne.png": "example_tsne.png",
    "report/pca_coverage.png": "example_pca_coverage.png",
    "report/tsne_classes.png": "example_tsne_classes.png",
    "report/class_metrics.png": "example_class_metrics.png",
    "compare/compare_tsne.png": "example_compare_tsne.png",
}


def write_example_figures(docs: Path, *, palette: bool, seed: int = 0) -> list[Path]:
    """Run ``embviz report`` and ``embviz compare`` on :func:`synthetic_clusters`.

    Raises:
        SystemExit: an ``embviz`` command failed (its message is on stderr).
    """
    from lightning_embviz.cli import main as embviz

    data = synthetic_clusters(seed)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, array in data.items():
            np.save(work / f"{name}.npy", array)
        commands = [
            [
                "report",
                str(work / "real.npy"),
                str(work / "fake.npy"),
                "--labels",
                str(work / "real_labels.npy"),
                "--fake-labels",
                str(work / "fake_labels.npy"),
                "--seed",
                str(seed),
                "-q",
                "-o",
                str(work / "report"),
            ],
            [
                "compare",
                str(work / "real.npy"),
                *(str(work / f"epoch{e}.npy") for e in (10, 20, 30)),
                "--names",
                "epoch 10,epoch 20,epoch 30",
                "--projection",
                "tsne",
                "--seed",
                str(seed),
                "-q",
                "-o",
                str(work / "compare"),
            ],
        ]
        for command in commands:
            print(f"running `embviz {command[0]}` on synthetic clusters", flush=True)
            status = embviz(command)
            if status != 0:
                raise SystemExit(f"`embviz {command[0]}` failed with exit status {status}")
        for source, target in EXAMPLE_FIGURES.items():
            png = (work / source).read_bytes()
            written.append(save_png(png, docs / target, palette=palette))
    return written


# ------------------------------------------------------------------ memorization

MEMORIZATION = ("authenticity", "ct_score", "copy_fraction")
CLOSEST_TRAIN = ("embviz/closest_train", "closest_train.png")


def memorization_rows(events: Any) -> list[dict[str, float]]:
    """One row per validation run: ``epoch``, ``step`` and the three memorization numbers.

    Raises:
        SystemExit: the run logged no ``embviz/authenticity`` (not trained with ``train=``).
    """
    series = {name: scalar_series(events, PREFIX + name) for name in MEMORIZATION}
    if not series["authenticity"]:
        raise SystemExit(
            f"the run logged no {PREFIX}authenticity; was it trained with "
            "`gan_digits.py --memorize` (EmbeddingMonitor(train=...))?"
        )
    rows = []
    for step, epoch in sorted(validation_epochs(events).items()):
        row = {"epoch": float(epoch), "step": float(step)}
        row.update({name: values.get(step, math.nan) for name, values in series.items()})
        rows.append(row)
    return rows


def memorization_table(rows: Sequence[dict[str, float]]) -> str:
    """The README's memorization table: epoch, authenticity, ct_score, copy_fraction."""
    lines = ["| epoch | authenticity | ct_score | copy_fraction |", "|---:|---:|---:|---:|"]
    for row in rows:
        cells = [str(int(row["epoch"]))] + [_cell(row[name], 3) for name in MEMORIZATION]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def memorization_figure(rows: Sequence[dict[str, float]], title: str) -> Any:
    """Authenticity and copy_fraction per epoch; below, ct_score (0: honest)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in rows]
    fig = Figure(figsize=(6.4, 4.4), dpi=100)
    FigureCanvasAgg(fig)
    ax, ax_ct = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1.6, 1]})
    ax.plot(
        epochs,
        [r["authenticity"] for r in rows],
        marker="o",
        markersize=3,
        color="#0072B2",
        label="authenticity",
    )
    ax.plot(
        epochs,
        [r["copy_fraction"] for r in rows],
        marker="o",
        markersize=3,
        color="#D55E00",
        linewidth=2.5,
        label="copy_fraction",
    )
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("fraction of fakes")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", fontsize=8)
    ax.set_title(title, fontsize=10)
    ax_ct.axhline(0.0, color="0.6", linewidth=1)
    ax_ct.plot(
        epochs,
        [r["ct_score"] for r in rows],
        marker="s",
        markersize=2.5,
        color="0.35",
        label="ct_score",
    )
    ax_ct.set_ylabel("ct_score")
    ax_ct.grid(True, alpha=0.3)
    ax_ct.set_xlabel("epoch")
    fig.tight_layout()
    return fig


def write_memorization_docs(
    run: Path, docs: Path, *, palette: bool
) -> tuple[list[Path], list[str]]:
    """Print the memorization table of ``run`` and write its two figures into ``docs``.

    Returns:
        The files written, and a note when the run logged no ``closest_train`` gallery.
    """
    log_dir = run / "tensorboard" / "train"
    events = load_events(log_dir)
    rows = memorization_rows(events)
    print(f"{len(rows)} validation runs in {log_dir}\n")
    print(memorization_table(rows))
    seconds = wall_time_s(events)
    if seconds is not None:
        print(f"\nwall time of the run (first to last TensorBoard event): {seconds:.0f} s")
    fig = memorization_figure(rows, "gan_digits.py --memorize: fakes vs the training digits")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    written = [save_png(buffer.getvalue(), docs / "memorization_per_epoch.png", palette=palette)]
    tag, name = CLOSEST_TRAIN
    epochs = validation_epochs(events)
    images = (
        [e for e in events.Images(tag) if e.step in epochs]
        if tag in events.Tags()["images"]
        else []
    )
    if not images:
        return written, [f"{tag}: not in the run's images (was it run with train_images=?)"]
    last = max(images, key=lambda e: e.step)
    written.append(save_png(last.encoded_image_string, docs / name, palette=palette))
    return written, []


# ---------------------------------------------------------------------------- main


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line flags."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--run",
        type=Path,
        default=Path("outputs/gan_digits"),
        help="output folder of gan_digits.py (holds tensorboard/train and compare/)",
    )
    parser.add_argument(
        "--docs", type=Path, default=Path("docs"), help="where the PNG figures are written"
    )
    parser.add_argument(
        "--rows",
        type=parse_rows,
        default=parse_rows(DEFAULT_ROWS),
        help=f"epochs of the markdown table, or 'all' (default: {DEFAULT_ROWS})",
    )
    parser.add_argument("--title", default=DEFAULT_TITLE, help="title of metrics_per_epoch.png")
    parser.add_argument(
        "--no-examples",
        action="store_true",
        help="do not redraw docs/example_*.png (the embviz command on synthetic clusters)",
    )
    parser.add_argument(
        "--memorization",
        type=Path,
        default=None,
        metavar="RUN",
        help="instead: the memorization table and figures of a `gan_digits.py --memorize` "
        "run folder (DOCS/images/memorization_per_epoch.png, DOCS/images/closest_train.png)",
    )
    parser.add_argument(
        "--full-color",
        action="store_true",
        help="keep the figures' true colours (default: a 256-colour palette, smaller files)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> list[Path]:
    """Print the README's table and write the figures into ``--docs``.

    Returns:
        The files written.

    Raises:
        SystemExit: the run is missing, or a figure the README shows could not be written
            (the others are written first; the message lists what is missing and why).
    """
    args = parse_args(argv)
    palette = not args.full_color
    if args.memorization is not None:
        images = args.docs / "images"
        written, missing = write_memorization_docs(args.memorization, images, palette=palette)
        print("\nwrote:\n" + "\n".join(f"    {path}" for path in written))
        if missing:
            raise SystemExit("not written:\n" + "\n".join(f"    {note}" for note in missing))
        return written
    events = load_events(args.run / "tensorboard" / "train")
    rows = metric_rows(events)
    epochs = validation_epochs(events)

    print(f"{len(rows)} validation runs in {args.run / 'tensorboard' / 'train'}\n")
    print(markdown_table(select_rows(rows, args.rows)))
    print("\n" + summary_sentence(rows))
    seconds = wall_time_s(events)
    if seconds is not None:
        print(
            f"wall time of the run (first to last TensorBoard event: sanity check, "
            f"training, validation and figures): {seconds:.0f} s"
        )

    written = [
        write_metrics_figure(rows, args.docs / "metrics_per_epoch.png", args.title, palette=palette)
    ]
    figures, missing = write_epoch_figures(events, epochs, args.docs, palette=palette)
    written += figures
    compare = copy_compare_figure(args.run, args.docs, palette=palette)
    if compare is not None:
        written.append(compare)
    else:
        missing.append(
            f"{args.run / COMPARE_FIGURE[0]}: run `python examples/compare_checkpoints.py "
            f"--run {args.run}` first"
        )
    if not args.no_examples:
        written += write_example_figures(args.docs, palette=palette)

    print("\nwrote:\n" + "\n".join(f"    {path}" for path in written))
    if missing:
        raise SystemExit("not written:\n" + "\n".join(f"    {note}" for note in missing))
    return written


if __name__ == "__main__":
    main()
