"""Logger dispatch: send figures and embedding tables to whatever loggers a Trainer has.

This is the only module that knows logger types. It never imports Lightning, MLflow or
W&B itself: a logger's kind is read from the names of its classes (``TensorBoardLogger``,
``CSVLogger``, ``MLFlowLogger``, ``WandbLogger``) defined in the ``lightning``,
``pytorch_lightning`` or ``lightning_fabric`` namespaces, so both ``import lightning.pytorch``
and ``import pytorch_lightning`` work, and so do user subclasses of those loggers.

Where each figure goes (``tag`` is the figure key, e.g. ``"embviz/pca"``):

=====================  ======================================================================
TensorBoard            an image ``tag`` at ``global_step=step`` (``experiment.add_image``)
CSV                    ``<log_dir>/<tag>/step_<step:06d>.png`` next to ``metrics.csv``
MLflow                 the run artifact ``<tag>/step_<step:06d>.png``
W&B                    an image ``tag`` logged with ``trainer/global_step = step`` (the same
                       convention as ``WandbLogger.log_metrics``, so images line up with scalars)
any other logger       one warning per logger class, then PNG files under the logger's
                       ``log_dir`` (or ``save_dir``, or ``fallback_dir``)
``DummyLogger``        nothing (``fast_dev_run`` replaces the loggers with it)
no logger              PNG files under ``fallback_dir`` (the callback passes
                       ``trainer.default_root_dir``)
=====================  ======================================================================

Where each per-sample table goes (:func:`log_tables`; ``name`` e.g. ``"embviz/samples_real"``):

=====================  ======================================================================
TensorBoard            the markdown summary as text ``embviz/samples`` at ``step``
                       (``experiment.add_text``; TensorBoard shows the tag as
                       ``embviz/samples/text_summary``), each further bold-titled section
                       as its own card (``embviz/samples_outlier_fakes``, so the outlier
                       table is not below the fold), and the CSV files under its ``log_dir``
CSV                    ``<log_dir>/<name>/step_<step:06d>.csv``, next to the figures' PNGs
MLflow                 the run artifact ``<name>/step_<step:06d>.csv``
W&B                    a ``wandb.Table`` ``name`` logged with ``trainer/global_step = step``
any other logger       CSV files under the logger's directory, like the figures
``DummyLogger``        nothing
no logger              CSV files under ``fallback_dir``
=====================  ======================================================================

Where each audio clip goes (:func:`log_audio`; ``tag`` e.g. ``"embviz/missed_real_audio"``,
clip names ``00``, ``01``, ...; WAV files are 16-bit PCM at the clips' true rate):

=====================  ======================================================================
TensorBoard            audio ``<tag>/<name>`` at ``global_step=step`` with the clips' sample
                       rate (``experiment.add_audio``; the AUDIO tab)
CSV                    ``<log_dir>/<tag>/step_<step:06d>/<name>.wav`` next to ``metrics.csv``
MLflow                 the run artifacts ``<tag>/step_<step:06d>/<name>.wav``
W&B                    ``wandb.Audio`` clips under ``<tag>/clips`` (``tag`` is left to the
                       clips' spectrogram figure: W&B keeps one media type per key) with
                       ``trainer/global_step = step`` (``WandbLogger.log_audio``), captioned;
                       the same WAV files as the others (W&B needs ``soundfile`` for audio:
                       without it, one warning and no W&B clips; the other loggers still
                       get theirs)
any other logger       WAV files under the logger's directory, like the figures
``DummyLogger``        nothing
no logger              WAV files under ``fallback_dir``
=====================  ======================================================================

Call these functions on global rank zero only (the callback does).
"""

from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from lightning_embviz.figures.rendering import RenderedFigure
from lightning_embviz.samples import _check_rows, write_csv

__all__ = [
    "log_audio",
    "log_embedding_projector",
    "log_figures",
    "log_tables",
    "logger_kind",
    "needs_png",
]

_LIGHTNING_NAMESPACES = frozenset({"lightning", "pytorch_lightning", "lightning_fabric"})
_KIND_BY_CLASS_NAME = {
    "TensorBoardLogger": "tensorboard",
    "CSVLogger": "csv",
    "MLFlowLogger": "mlflow",
    "WandbLogger": "wandb",
    "DummyLogger": "dummy",
}
_STEP_DIGITS = 6
# TensorBoard's projector refuses sprite sheets larger than this many pixels per side.
_MAX_SPRITE_SIDE = 8192
# Logger classes already warned about (one warning per class per process).
_WARNED_LOGGER_CLASSES: set[type] = set()
_WARNED_AUDIO: set[str] = set()  # one warning per missing audio backend


def logger_kind(logger: Any) -> Optional[str]:
    """Return which kind of Lightning logger ``logger`` is, without importing Lightning.

    The class and its bases are matched by name within the ``lightning``,
    ``pytorch_lightning`` and ``lightning_fabric`` namespaces, so loggers from either
    import style and their subclasses are recognised.

    Args:
        logger: Any object, usually an element of ``trainer.loggers``.

    Returns:
        ``"tensorboard"``, ``"csv"``, ``"mlflow"``, ``"wandb"``, ``"dummy"`` (Lightning's
        ``DummyLogger``, which ``fast_dev_run`` installs), or ``None`` for anything else.
    """
    for cls in type(logger).__mro__:
        namespace = cls.__module__.split(".", 1)[0]
        if namespace in _LIGHTNING_NAMESPACES and cls.__name__ in _KIND_BY_CLASS_NAME:
            return _KIND_BY_CLASS_NAME[cls.__name__]
    return None


def needs_png(loggers: Sequence[Any]) -> bool:
    """Whether logging to ``loggers`` writes PNG files (any logger but TensorBoard and W&B).

    With no logger the figures are saved as files, so the answer is then ``True`` too.
    """
    active = [logger for logger in loggers if logger is not None]
    return not active or any(
        logger_kind(logger) not in ("tensorboard", "wandb", "dummy") for logger in active
    )


def log_figures(
    loggers: Sequence[Any],
    figures: Mapping[str, Figure | RenderedFigure | np.ndarray],
    step: int,
    *,
    fallback_dir: str | os.PathLike[str] | None,
) -> list[str]:
    """Log every figure to every logger at ``step``.

    Each figure is rendered at most once; the same pixels go to all loggers, and PNG bytes
    are encoded (once, from those pixels) only if a logger stores files. Nothing global is
    touched (no pyplot, no figure is closed). Drawing is most of the cost (about 0.1 s for a
    10 000-point scatter); the callback draws in its worker thread and passes
    :class:`~lightning_embviz.plotting.RenderedFigure` objects.

    Args:
        loggers: The Trainer's loggers (``trainer.loggers``); may be empty.
        figures: Figure per tag, the tag already prefixed, e.g. ``{"embviz/pca": fig}``.
            A tag's ``/`` become folders where figures are written as files. A value may
            also be a :class:`~lightning_embviz.plotting.RenderedFigure` or an (H, W, 3) or
            (H, W, 4) uint8 image array.
        step: The global step the figures belong to (the step of the matching scalars).
        fallback_dir: Where PNG files go when there is no logger, or when an unknown
            logger has neither ``log_dir`` nor ``save_dir``; the current directory if ``None``.

    Returns:
        One human-readable destination per figure and logger, e.g.
        ``"tensorboard:embviz/pca@3"``, ``"mlflow:<run_id>/embviz/pca/step_000003.png"``,
        ``"wandb:embviz/pca@3"`` or a file path.

    Raises:
        TypeError: If a figure is not a ``matplotlib.figure.Figure``, a ``RenderedFigure``
            or a uint8 image array, or a tag is not a string.
        ValueError: If ``step`` is negative or a tag is empty.
    """
    step = _check_step(step)
    rendered = {_check_tag(tag): _render(fig, tag) for tag, fig in figures.items()}
    if not rendered:
        return []
    active = [logger for logger in loggers if logger is not None]
    destinations: list[str] = []
    if not active:
        return _save_all(
            Path(fallback_dir) if fallback_dir is not None else Path.cwd(), rendered, step
        )

    for logger in active:
        kind = logger_kind(logger)
        if kind == "tensorboard":
            destinations += _log_tensorboard(logger, rendered, step)
        elif kind == "csv":
            base = Path(_logger_dir(logger) or fallback_dir or Path.cwd())
            destinations += _save_all(base, rendered, step)
        elif kind == "mlflow":
            destinations += _log_mlflow(logger, rendered, step)
        elif kind == "wandb":
            destinations += _log_wandb(logger, rendered, step)
        elif kind == "dummy":  # fast_dev_run: Lightning logs nothing, neither do we
            continue
        else:
            base = Path(_logger_dir(logger) or fallback_dir or Path.cwd())
            _warn_unknown_logger(logger, base)
            destinations += _save_all(base, rendered, step)
    return destinations


def log_tables(
    loggers: Sequence[Any],
    tables: Mapping[str, Mapping[str, Any]],
    step: int,
    *,
    markdown: str | None = None,
    markdown_tag: str = "embviz/samples",
    fallback_dir: str | os.PathLike[str] | None,
) -> list[str]:
    """Log per-sample tables (e.g. :func:`lightning_embviz.samples.sample_tables`) at ``step``.

    Each table is a mapping column name -> 1-D array (all of one length); ``tables`` maps a
    name such as ``"embviz/samples_real"`` to a table. Files are written with
    :func:`lightning_embviz.samples.write_csv` (``pandas.read_csv`` reads them back with the
    right dtypes) at ``<dir>/<name>/step_<step:06d>.csv``, the layout of the figures' PNGs.
    See the module notes for each logger kind; TensorBoard gets ``markdown`` (when given) as
    a text summary under ``markdown_tag``, shown by its Text tab, and the CSV files.

    Args:
        loggers: The Trainer's loggers (``trainer.loggers``); ``None`` entries are skipped.
        tables: name -> table (column name -> 1-D array).
        step: The global step the tables belong to (the step of the matching scalars).
        markdown: A short summary for TensorBoard
            (:func:`lightning_embviz.samples.markdown_summary`), or None.
        markdown_tag: The TensorBoard text tag.
        fallback_dir: Where files go when there is no logger, or when an unknown logger has
            neither ``log_dir`` nor ``save_dir``; the current directory if ``None``.

    Returns:
        One destination per table (and text) and logger, e.g.
        ``"tensorboard:embviz/samples@3"``,
        ``"mlflow:<run_id>/embviz/samples_real/step_000003.csv"``,
        ``"wandb:embviz/samples_real@3"`` or a file path.

    Raises:
        TypeError: If a name is not a string, or ``markdown`` is neither a string nor None.
        ValueError: If ``step`` is negative, a name is empty, or a table is empty or has
            columns of unequal length.
    """
    step = _check_step(step)
    checked = {_check_tag(name): _check_rows(rows, name) for name, rows in tables.items()}
    if markdown is not None and not isinstance(markdown, str):
        raise TypeError(f"`markdown` must be a str or None, got {type(markdown).__name__}.")
    markdown_tag = _check_tag(markdown_tag)
    active = [logger for logger in loggers if logger is not None]
    if not active:
        base = Path(fallback_dir) if fallback_dir is not None else Path.cwd()
        return _save_tables(base, checked, step)
    destinations: list[str] = []
    for logger in active:
        kind = logger_kind(logger)
        if kind == "dummy":
            continue
        if kind == "mlflow":
            destinations += _log_mlflow_tables(logger, checked, step)
        elif kind == "wandb":
            destinations += _log_wandb_tables(logger, checked, step)
        else:
            base = Path(_logger_dir(logger) or fallback_dir or Path.cwd())
            if kind is None:
                _warn_unknown_logger(logger, base)
            if kind == "tensorboard" and markdown is not None:
                experiment = logger.experiment
                for tag, text in _markdown_cards(markdown, markdown_tag):
                    experiment.add_text(tag, text, global_step=step)
                    destinations.append(f"tensorboard:{tag}@{step}")
                _flush(experiment)
            destinations += _save_tables(base, checked, step)
    return destinations


AudioItem = tuple[str, np.ndarray, str]
"""One clip to log: ``(name, samples (T,) float, caption)``."""


def log_audio(
    loggers: Sequence[Any],
    clips: Mapping[str, Sequence[AudioItem]],
    sample_rate: int,
    step: int,
    *,
    fallback_dir: str | os.PathLike[str] | None,
) -> list[str]:
    """Log audio clips to every logger at ``step`` (see the module notes for each kind).

    Clips are mono float samples; values beyond [-1, 1] are scaled down to peak 1 (never
    clipped). Every clip is encoded once as 16-bit PCM WAV
    (:func:`lightning_embviz.audio.encode_wav`) and those bytes go to every file logger.

    Args:
        loggers: The Trainer's loggers (``trainer.loggers``); may be empty.
        clips: tag -> clips, each ``(name, samples (T,), caption)``; the tag already
            prefixed, e.g. ``{"embviz/missed_real_audio": [("00", x, "#12 [3]")]}``.
        sample_rate: The clips' true rate in Hz (written into every WAV header and event).
        step: The global step the clips belong to (the step of the matching scalars).
        fallback_dir: Where WAV files go when there is no logger, or when an unknown logger
            has neither ``log_dir`` nor ``save_dir``; the current directory if ``None``.

    Returns:
        One destination per clip and logger, e.g. ``"tensorboard:embviz/missed_real_audio/00@3"``,
        ``"mlflow:<run_id>/embviz/missed_real_audio/step_000003/00.wav"``,
        ``"wandb:embviz/missed_real_audio/clips@3"`` or a file path.

    Raises:
        TypeError: If a tag is not a string.
        ValueError: If ``step`` is negative, a tag or a clip name is empty, or the rate is
            not a positive int.
    """
    from lightning_embviz.audio import encode_wav

    step = _check_step(step)
    prepared: dict[str, list[tuple[str, np.ndarray, str, bytes]]] = {}
    for tag, items in clips.items():
        entries = []
        for name, samples, caption in items:
            if not isinstance(name, str) or not _UNSAFE_PATH_CHARS.sub("", name):
                raise ValueError(f"A clip name must be a non-empty string, got {name!r}.")
            x = np.asarray(samples, dtype=np.float32).reshape(-1)
            x = np.where(np.isfinite(x), x, np.float32(0.0))
            peak = float(np.abs(x).max()) if x.size else 0.0
            x = x / np.float32(peak) if peak > 1.0 else x
            entries.append((name, x, caption, encode_wav(x, sample_rate)))
        prepared[_check_tag(tag)] = entries
    if not prepared:
        return []
    active = [logger for logger in loggers if logger is not None]
    if not active:
        base = Path(fallback_dir) if fallback_dir is not None else Path.cwd()
        return _save_wavs(base, prepared, step)
    destinations: list[str] = []
    for logger in active:
        kind = logger_kind(logger)
        if kind == "dummy":
            continue
        if kind == "tensorboard":
            experiment = logger.experiment
            for tag, entries in prepared.items():
                for name, x, _caption, _wav in entries:
                    experiment.add_audio(
                        f"{tag}/{name}",
                        torch.from_numpy(x).view(1, -1),
                        global_step=step,
                        sample_rate=int(sample_rate),
                    )
                    destinations.append(f"tensorboard:{tag}/{name}@{step}")
            _flush(experiment)
        elif kind == "mlflow":
            destinations += _log_mlflow_wavs(logger, prepared, step)
        elif kind == "wandb":
            destinations += _log_wandb_audio(logger, prepared, int(sample_rate), step)
        else:
            base = Path(_logger_dir(logger) or fallback_dir or Path.cwd())
            if kind is None:
                _warn_unknown_logger(logger, base)
            destinations += _save_wavs(base, prepared, step)
    return destinations


def _log_wandb_audio(
    logger: Any, prepared: Mapping[str, Sequence[tuple[str, Any, str, bytes]]], rate: int, step: int
) -> list[str]:
    # wandb.Audio refuses to log (even files) without the soundfile package: warn once and
    # leave W&B without clips rather than fail the other loggers' clips.
    try:
        import soundfile  # noqa: F401
    except ImportError:
        if "wandb-soundfile" not in _WARNED_AUDIO:
            _WARNED_AUDIO.add("wandb-soundfile")
            warnings.warn(
                "lightning-embviz: W&B logs audio only with the `soundfile` package; the "
                "clips were not sent to W&B. Install it with `pip install "
                "lightning-embviz[wandb]` (or `pip install soundfile`).",
                UserWarning,
                stacklevel=4,
            )
        return []
    destinations: list[str] = []
    # The WAV files every other logger gets (16-bit PCM at the true rate); W&B copies each
    # file into the run's media folder while logging, so the folder can go afterwards.
    with tempfile.TemporaryDirectory(prefix="embviz-") as tmp:
        for tag, entries in prepared.items():
            paths = []
            for i, (_name, _x, _caption, wav) in enumerate(entries):
                path = Path(tmp) / f"{len(destinations)}_{i}.wav"
                path.write_bytes(wav)
                paths.append(str(path))
            logger.log_audio(
                key=f"{tag}/clips",
                audios=paths,
                step=step,
                sample_rate=[rate] * len(entries),
                caption=[caption for _name, _x, caption, _wav in entries],
            )
            destinations.append(f"wandb:{tag}/clips@{step}")
    return destinations


def _relative_wav_path(tag: str, step: int, name: str) -> Path:
    """``"embviz/a"``, 3, ``"00"`` -> ``embviz/a/step_000003/00.wav`` with safe parts."""
    folder = _relative_png_path(tag, step, "")
    return folder / f"{_UNSAFE_PATH_CHARS.sub('_', name)}.wav"


def _save_wavs(
    base: Path, prepared: Mapping[str, Sequence[tuple[str, Any, str, bytes]]], step: int
) -> list[str]:
    paths = []
    for tag, entries in prepared.items():
        for name, _x, _caption, wav in entries:
            path = base / _relative_wav_path(tag, step, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wav)
            paths.append(str(path))
    return paths


def _log_mlflow_wavs(
    logger: Any, prepared: Mapping[str, Sequence[tuple[str, Any, str, bytes]]], step: int
) -> list[str]:
    client = logger.experiment
    run_id = logger.run_id
    destinations = []
    with tempfile.TemporaryDirectory(prefix="embviz-") as tmp:
        for path in _save_wavs(Path(tmp), prepared, step):
            relative = Path(path).relative_to(tmp)
            client.log_artifact(run_id, path, artifact_path=relative.parent.as_posix() or None)
            destinations.append(f"mlflow:{run_id}/{relative.as_posix()}")
    return destinations


def _markdown_cards(markdown: str, tag: str) -> list[tuple[str, str]]:
    """Split a summary into one TensorBoard text card per bold-titled section.

    A section starts with a paragraph opening with ``**Title**``. The first section keeps
    ``tag``; each further one gets ``<tag>_<title>`` (``embviz/samples_outlier_fakes``), so
    that no table sits below the fold of another's card.
    """
    parts = re.split(r"\n\n(?=\*\*[^*\n]+\*\*)", markdown)
    cards = [(tag, parts[0] if len(parts) == 1 else parts[0] + "\n")]
    for part in parts[1:]:
        title = re.match(r"\*\*([^*\n]+)\*\*", part)
        slug = re.sub(r"[^0-9a-z]+", "_", title.group(1).lower()).strip("_") if title else ""
        cards.append((f"{tag}_{slug or len(cards)}", part))
    return cards


def log_embedding_projector(
    loggers: Sequence[Any],
    real: Tensor,
    fake: Tensor,
    step: int,
    *,
    tag: str,
    real_labels: Optional[Tensor] = None,
    fake_labels: Optional[Tensor] = None,
    real_images: Optional[Tensor] = None,
    fake_images: Optional[Tensor] = None,
) -> bool:
    """Write real and fake embeddings to TensorBoard's Embedding Projector.

    Rows are real first, then fake. The metadata has two columns, ``source`` (``real`` or
    ``fake``) and ``label`` (the class label, ``-`` where none was given), so the projector
    can colour points by either. Other logger kinds have no projector and are skipped.

    Args:
        loggers: The Trainer's loggers; only TensorBoard loggers are used.
        real: Real embeddings, shape (N, D) or (N, ...) (flattened).
        fake: Generated embeddings, shape (M, D) or (M, ...) (flattened).
        step: The global step (the projector keeps one entry per step and tag).
        tag: Name of the embedding in the projector, e.g. ``"embviz/embeddings"``.
        real_labels: Optional labels of the real rows, shape (N,).
        fake_labels: Optional labels of the fake rows, shape (M,).
        real_images: Optional thumbnails of the real rows, shape (N, C, H, W) with C in
            {1, 3}, or (N, H, W). Give both image sets or neither.
        fake_images: Optional thumbnails of the fake rows, same layout as ``real_images``.
            Images outside [0, 1] are min-max scaled jointly; large images are shrunk so
            the sprite sheet fits TensorBoard's 8192-pixel limit.

    Returns:
        ``True`` if at least one TensorBoard logger received the embeddings. An entry
        that already exists for this ``step`` and ``tag`` (e.g. validating the same
        checkpoint twice) is left as it is, with a warning.

    Raises:
        ValueError: On mismatched widths, label or image counts, image shapes, a negative
            step, or when only one of the two image sets is given.
    """
    step = _check_step(step)
    tag = _check_tag(tag)
    boards = [logger for logger in loggers if logger_kind(logger) == "tensorboard"]
    real_mat = _as_matrix(real, "real")
    fake_mat = _as_matrix(fake, "fake")
    if real_mat.shape[1] != fake_mat.shape[1]:
        raise ValueError(
            f"`real` and `fake` must have the same width, got {tuple(real_mat.shape)} and "
            f"{tuple(fake_mat.shape)}."
        )
    metadata = [["real", label] for label in _label_column(real_labels, len(real_mat), "real")]
    metadata += [["fake", label] for label in _label_column(fake_labels, len(fake_mat), "fake")]
    thumbnails = _thumbnails(real_images, fake_images, len(real_mat), len(fake_mat))
    if not boards:
        return False
    mat = torch.cat([real_mat, fake_mat])
    logged = False
    for logger in boards:
        experiment = logger.experiment
        existing = _projector_entry_dir(experiment, step, tag)
        if existing is not None and existing.exists():
            warnings.warn(
                f"The Embedding Projector already has {tag!r} at step {step} in "
                f"{str(existing)!r}; the embeddings of this run were not written again.",
                UserWarning,
                stacklevel=2,
            )
            continue
        experiment.add_embedding(
            mat,
            metadata=metadata,
            metadata_header=["source", "label"],
            label_img=thumbnails,
            global_step=step,
            tag=tag,
        )
        _flush(experiment)
        logged = True
    return logged


# --------------------------------------------------------------------------- helpers


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"`step` must be an int, got {step!r} of type {type(step).__name__}.")
    if step < 0:
        raise ValueError(f"`step` must be >= 0, got {step}.")
    return int(step)


def _check_tag(tag: Any) -> str:
    if not isinstance(tag, str):
        raise TypeError(f"A figure tag must be a str, got {tag!r} of type {type(tag).__name__}.")
    if not tag.strip("/ "):
        raise ValueError(f"A figure tag must name something, got {tag!r}.")
    return tag


def _render(fig: Any, tag: str) -> RenderedFigure:
    """The figure as a :class:`~lightning_embviz.plotting.RenderedFigure` (drawn at most once).

    An already rendered figure is taken as it is; an (H, W, 3) or (H, W, 4) uint8 array is
    wrapped (alpha dropped); a ``Figure`` is drawn here with the Agg canvas.
    """
    if isinstance(fig, RenderedFigure):
        return fig
    if isinstance(fig, Figure):
        return RenderedFigure.from_figure(fig)
    if (
        isinstance(fig, np.ndarray)
        and fig.dtype == np.uint8
        and fig.ndim == 3
        and fig.shape[2] in (3, 4)
        and fig.shape[0] > 0
        and fig.shape[1] > 0
    ):
        return RenderedFigure(np.ascontiguousarray(fig[..., :3]))
    described = type(fig).__name__
    if isinstance(fig, np.ndarray):
        described += f" of shape {fig.shape} and dtype {fig.dtype}"
    raise TypeError(
        f"Figure {tag!r} must be a matplotlib.figure.Figure, a RenderedFigure or an (H, W, 3) "
        f"or (H, W, 4) uint8 array, got {described}."
    )


_UNSAFE_PATH_CHARS = re.compile(r"[^A-Za-z0-9._=+-]")


def _relative_png_path(tag: str, step: int, suffix: str = ".png") -> Path:
    """``"embviz/pca"``, 3 -> ``embviz/pca/step_000003.png`` with file-system-safe parts."""
    parts = []
    for part in tag.split("/"):
        if not part:
            continue
        safe = _UNSAFE_PATH_CHARS.sub("_", part)
        parts.append("_" if set(safe) <= {"."} else safe)
    return Path(*parts, f"step_{step:0{_STEP_DIGITS}d}{suffix}")


def _write_png(base: Path, tag: str, step: int, png: bytes) -> Path:
    path = base / _relative_png_path(tag, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def _save_all(base: Path, rendered: Mapping[str, RenderedFigure], step: int) -> list[str]:
    return [str(_write_png(base, tag, step, fig.png)) for tag, fig in rendered.items()]


def _save_tables(base: Path, tables: Mapping[str, Mapping[str, Any]], step: int) -> list[str]:
    paths = []
    for name, rows in tables.items():
        path = base / _relative_png_path(name, step, ".csv")
        write_csv(rows, path)
        paths.append(str(path))
    return paths


def _logger_dir(logger: Any) -> Optional[str]:
    """The logger's run directory: ``log_dir``, else ``save_dir``, else ``None``."""
    for name in ("log_dir", "save_dir"):
        try:
            value = getattr(logger, name, None)
        except Exception:  # a property that needs a Trainer or a live run
            value = None
        if isinstance(value, (str, os.PathLike)) and os.fspath(value):
            return os.fspath(value)
    return None


def _global_rank() -> Optional[int]:
    rank = None
    try:
        from lightning_utilities.core.rank_zero import rank_zero_only

        rank = getattr(rank_zero_only, "rank", None)
    except ImportError:  # pragma: no cover - lightning_utilities ships with Lightning
        pass
    if rank is not None:
        return int(rank)
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "JSM_NAMESPACE_RANK"):
        if variable in os.environ:
            return int(os.environ[variable])
    return None


def _warn_unknown_logger(logger: Any, base: Path) -> None:
    cls = type(logger)
    if cls in _WARNED_LOGGER_CLASSES:
        return
    _WARNED_LOGGER_CLASSES.add(cls)
    if _global_rank() not in (None, 0):
        return
    name = f"{cls.__module__}.{cls.__qualname__}"
    warnings.warn(
        f"lightning-embviz does not know how to log figures to `{name}`"
        " (supported: TensorBoardLogger, CSVLogger, MLFlowLogger, WandbLogger); "
        f"figures are saved as PNG files (and tables as CSV files) under {str(base)!r} "
        "instead.",
        UserWarning,
        stacklevel=3,
    )


def _flush(experiment: Any) -> None:
    flush = getattr(experiment, "flush", None)
    if callable(flush):
        flush()


def _log_tensorboard(logger: Any, rendered: Mapping[str, RenderedFigure], step: int) -> list[str]:
    experiment = logger.experiment
    for tag, fig in rendered.items():
        experiment.add_image(tag, fig.pixels, global_step=step, dataformats="HWC")
    _flush(experiment)
    return [f"tensorboard:{tag}@{step}" for tag in rendered]


def _log_mlflow(logger: Any, rendered: Mapping[str, RenderedFigure], step: int) -> list[str]:
    client = logger.experiment
    run_id = logger.run_id
    destinations = []
    with tempfile.TemporaryDirectory(prefix="embviz-") as tmp:
        for tag, fig in rendered.items():
            relative = _relative_png_path(tag, step)
            local = _write_png(Path(tmp), tag, step, fig.png)
            artifact_dir = relative.parent.as_posix()
            client.log_artifact(run_id, str(local), artifact_path=artifact_dir or None)
            destinations.append(f"mlflow:{run_id}/{relative.as_posix()}")
    return destinations


def _log_wandb(logger: Any, rendered: Mapping[str, RenderedFigure], step: int) -> list[str]:
    # WandbLogger.log_image goes through log_metrics, which logs ``trainer/global_step``
    # alongside the values (W&B's own step keeps increasing), applies the logger's prefix
    # and respects ``sync_tensorboard``: images line up with the scalars.
    for tag, fig in rendered.items():
        logger.log_image(key=tag, images=[fig.pixels], step=step, caption=[f"step {step}"])
    return [f"wandb:{tag}@{step}" for tag in rendered]


def _log_mlflow_tables(
    logger: Any, tables: Mapping[str, Mapping[str, Any]], step: int
) -> list[str]:
    client = logger.experiment
    run_id = logger.run_id
    destinations = []
    with tempfile.TemporaryDirectory(prefix="embviz-") as tmp:
        for name, rows in tables.items():
            relative = _relative_png_path(name, step, ".csv")
            local = Path(tmp) / relative
            write_csv(rows, local)
            artifact_dir = relative.parent.as_posix()
            client.log_artifact(run_id, str(local), artifact_path=artifact_dir or None)
            destinations.append(f"mlflow:{run_id}/{relative.as_posix()}")
    return destinations


def _log_wandb_tables(logger: Any, tables: Mapping[str, Mapping[str, Any]], step: int) -> list[str]:
    # WandbLogger.log_table goes through log_metrics like log_image: the table carries
    # ``trainer/global_step = step`` and the logger's prefix.
    for name, rows in tables.items():
        columns = list(rows)
        values = [np.asarray(rows[c]).tolist() for c in columns]
        logger.log_table(key=name, columns=columns, data=[list(r) for r in zip(*values)], step=step)
    return [f"wandb:{name}@{step}" for name in tables]


def _projector_entry_dir(experiment: Any, step: int, tag: str) -> Optional[Path]:
    """Folder ``add_embedding`` writes to: ``<logdir>/<step:05d>/<tag, '/' and '%' escaped>``."""
    get_logdir = getattr(experiment, "get_logdir", None)
    if not callable(get_logdir):
        return None
    logdir = get_logdir()
    if not isinstance(logdir, (str, os.PathLike)):
        return None
    encoded = tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")
    return Path(logdir) / f"{step:05d}" / encoded


def _as_matrix(values: Any, name: str) -> Tensor:
    tensor = torch.as_tensor(values).detach().cpu()
    if tensor.ndim < 2 or tensor.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (N, D) with N >= 1, got {tuple(tensor.shape)}.")
    return tensor.reshape(tensor.shape[0], -1).to(torch.float32)


def _label_column(labels: Any, rows: int, name: str) -> list[str]:
    if labels is None:
        return ["-"] * rows
    flat = torch.as_tensor(labels).detach().cpu().reshape(-1)
    if flat.numel() != rows:
        raise ValueError(
            f"`{name}_labels` must have one label per `{name}` row ({rows}), got {flat.numel()}."
        )
    if flat.is_floating_point() and bool(torch.all(flat == flat.round())):
        flat = flat.to(torch.int64)
    return [str(value) for value in flat.tolist()]


def _as_nchw(images: Any, rows: int, name: str) -> Tensor:
    tensor = torch.as_tensor(images).detach().cpu().to(torch.float32)
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(1)
    if tensor.ndim != 4 or tensor.shape[1] not in (1, 3):
        raise ValueError(
            f"`{name}_images` must have shape (N, C, H, W) with C in (1, 3) or (N, H, W), "
            f"got {tuple(tensor.shape)}."
        )
    if tensor.shape[0] != rows:
        raise ValueError(
            f"`{name}_images` must have one image per `{name}` row ({rows}), got {tensor.shape[0]}."
        )
    return tensor


def _thumbnails(
    real_images: Any, fake_images: Any, real_rows: int, fake_rows: int
) -> Optional[Tensor]:
    if real_images is None and fake_images is None:
        return None
    if real_images is None or fake_images is None:
        missing = "real_images" if real_images is None else "fake_images"
        raise ValueError(
            f"Give both `real_images` and `fake_images` or neither; `{missing}` is missing."
        )
    real = _as_nchw(real_images, real_rows, "real")
    fake = _as_nchw(fake_images, fake_rows, "fake")
    if real.shape[2:] != fake.shape[2:]:
        raise ValueError(
            "`real_images` and `fake_images` must have the same height and width, got "
            f"{tuple(real.shape[2:])} and {tuple(fake.shape[2:])}."
        )
    if real.shape[1] != fake.shape[1]:  # one grey, one colour: show both in colour
        real, fake = real.expand(-1, 3, -1, -1), fake.expand(-1, 3, -1, -1)
    images = torch.cat([real, fake])
    images = torch.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
    low, high = float(images.min()), float(images.max())
    if low < 0.0 or high > 1.0:
        images = (images - low) / max(high - low, 1e-12)
    per_row = math.ceil(math.sqrt(images.shape[0]))
    side = _MAX_SPRITE_SIDE // per_row
    height, width = images.shape[2:]
    if max(height, width) > side:
        scale = side / max(height, width)
        size = (max(1, int(height * scale)), max(1, int(width * scale)))
        images = torch.nn.functional.interpolate(images, size=size, mode="area")
    return images.clamp(0.0, 1.0)
