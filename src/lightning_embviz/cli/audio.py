"""``embviz report --real-audio R.npy --fake-audio F.npy --sample-rate SR [--groups g.npy]``.

The waveforms (one per REAL / FAKE row, (N, T) or (N, C, T) floats at ``--sample-rate``)
are read once; the report then writes the missed real clips and the outlier fake clips
(the galleries' selection, :func:`lightning_embviz.samples.missed_real_order` /
``outlier_fake_order``, the first ``min(--gallery-size, 8)``) as 16-bit WAV files at the true
rate, ``missed_real_audio/NN.wav`` and ``outlier_fake_audio/NN.wav``, and their spectrogram
galleries ``missed_real_audio.png`` / ``outlier_fake_audio.png``. ``--groups`` (one id per
REAL row) and ``--fake-groups`` (one per FAKE row) write ``groups.csv``: the per-group table
(:func:`lightning_embviz.engine.groups.group_scores_from_details`), worst first, and
``groups.png``, its worst groups as bars; group ids
may be integers or strings (a ``.npy`` of dtype ``str``, or a CSV/text column), and the
table shows them as given.
``embviz compare`` takes the same options, ``--fake-audio`` and ``--fake-groups`` as
comma-separated lists with one file per FAKE (:func:`read_compare_audio`), and writes each
set's files into its own folder ``OUT/<name>/``.
The clips are the callback's (:func:`lightning_embviz.audio.make_clips`): mono, here at the
full rate, cut to ``--audio-seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

__all__ = [
    "AUDIO_TILES",
    "AudioSide",
    "add_audio_arguments",
    "add_compare_audio_arguments",
    "audio_outputs",
    "read_audio",
    "read_compare_audio",
]

AUDIO_TILES = 8
"""The most clips written per kind."""


@dataclass(frozen=True)
class AudioSide:
    """The checked audio inputs of one report."""

    real_clips: Any  # lightning_embviz.audio.Clips or None
    fake_clips: Any
    real_groups: Optional[np.ndarray]
    fake_groups: Optional[np.ndarray]


def _waveforms(path: str, rows: int, flag: str, rows_of: str, rate: int, seconds: float) -> Any:
    from lightning_embviz.audio import make_clips

    data = np.load(path, allow_pickle=False, mmap_mode="r")
    if data.ndim not in (2, 3):
        raise ValueError(
            f"{flag} {path} must hold waveforms of shape (N, T) or (N, C, T), got shape "
            f"{data.shape}."
        )
    if data.shape[0] != rows:
        raise ValueError(
            f"{flag} {path} holds {data.shape[0]} clips but {rows_of} has {rows} rows; give one "
            "clip per row."
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"{flag} {path} must hold floating waveforms, got dtype {data.dtype}.")
    return make_clips(np.asarray(data), rate, keep_rate=rate, max_seconds=seconds)


def _any_audio_option(options: Any) -> bool:
    """Whether any audio or group option is given; waveforms need ``--sample-rate``."""
    given = [options.real_audio, options.fake_audio, options.groups, options.fake_groups]
    if (options.real_audio or options.fake_audio) and options.sample_rate is None:
        raise ValueError("--real-audio/--fake-audio need --sample-rate (the clips' rate in Hz).")
    return any(given)


def read_audio(options: Any, num_real: int, num_fake: int) -> Optional[AudioSide]:
    """Read ``--real-audio``, ``--fake-audio``, ``--groups``, ``--fake-groups`` (or None).

    Args:
        options: The report's options (``real_audio``, ``fake_audio``, ``sample_rate``,
            ``audio_seconds``, ``groups``, ``fake_groups``, ``real``, ``fake`` are read).
        num_real: N, the rows of REAL.
        num_fake: M, the rows of FAKE.

    Returns:
        The checked inputs, or None when none of the four options is given.

    Raises:
        ValueError: Waveforms without ``--sample-rate``, of another shape or count; group
            ids of another count.
        TypeError: Waveforms that are not floating.
    """
    from lightning_embviz._io import load_labels

    if not _any_audio_option(options):
        return None
    rate, seconds = options.sample_rate, options.audio_seconds
    real_clips = fake_clips = None
    if options.real_audio:
        real_clips = _waveforms(
            options.real_audio, num_real, "--real-audio", options.real, rate, seconds
        )
    if options.fake_audio:
        fake_clips = _waveforms(
            options.fake_audio, num_fake, "--fake-audio", options.fake, rate, seconds
        )
    real_groups = load_labels(options.groups, num_real) if options.groups else None
    fake_groups = load_labels(options.fake_groups, num_fake) if options.fake_groups else None
    return AudioSide(real_clips, fake_clips, real_groups, fake_groups)


def audio_outputs(
    side: AudioSide,
    details: Any,
    real: np.ndarray,
    fake: np.ndarray,
    out: Path,
    gallery_size: int,
    title: str,
) -> tuple[dict[str, Any], list[Path]]:
    """Write the WAV files and ``groups.csv``; return the spectrogram figures and the paths.

    Args:
        side: The checked audio inputs.
        details: The report's per-sample results (``compute_prdc_details``).
        real: (N, D) real embeddings.
        fake: (M, D) fake embeddings.
        out: The output folder.
        gallery_size: ``--gallery-size`` (at most :data:`AUDIO_TILES` clips are written).
        title: The galleries' title.

    Returns:
        ``(figures, written)``: ``{"missed_real_audio": Figure, ...}`` for the report's
        figure writer, and the files written here.
    """
    from lightning_embviz import samples
    from lightning_embviz.engine.groups import group_scores_from_details, write_group_csv
    from lightning_embviz.figures.audio import spectrogram_gallery
    from lightning_embviz.figures.groups import worst_groups_figure

    written: list[Path] = []
    figures: dict[str, Any] = {}
    size = min(gallery_size, AUDIO_TILES)
    parts = (
        ("missed_real_audio", side.real_clips, samples.missed_real_order(details)[:size],
         side.real_groups, details.real_nearest_fake_ratio, "missed reals"),
        ("outlier_fake_audio", side.fake_clips, samples.outlier_fake_order(details)[:size],
         side.fake_groups, details.fake_nearest_ball_ratio, "outlier fakes"),
    )  # fmt: skip
    for key, clips, rows, groups, ratios, name in parts:
        if clips is None or len(rows) == 0:
            continue
        shown = clips.select(rows)
        folder = out / key
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(len(shown)):
            path = folder / f"{i:02d}.wav"
            path.write_bytes(shown.wav(i))
            written.append(path)
        index = np.asarray(rows)
        figures[key] = spectrogram_gallery(
            [shown.clip(i) for i in range(len(shown))],
            shown.sample_rate,
            indices=index,
            groups=None if groups is None else np.asarray(groups)[index],
            ratios=np.asarray(ratios)[index],
            title=f"{title}\n{name} ({key}/NN.wav)",
        )
    if side.real_groups is not None or side.fake_groups is not None:
        table = group_scores_from_details(details, real, fake, side.real_groups, side.fake_groups)
        written.append(write_group_csv(table, out / "groups.csv"))
        figures["groups"] = worst_groups_figure(table, title=title)  # groups.png
    return figures, written


def _per_fake(text: Optional[str], fakes: tuple[str, ...], flag: str, shared: bool) -> list[Any]:
    """``"a.npy,,c.npy"`` -> one path (or None) per FAKE; with ``shared`` one path serves all."""
    if not text:
        return [None] * len(fakes)
    items = [item.strip() or None for item in text.split(",")]
    if shared and len(items) == 1:
        return items * len(fakes)
    if len(items) != len(fakes):
        one = " (or one file for every FAKE)" if shared else ""
        raise ValueError(
            f"{flag} has {len(items)} file(s) for {len(fakes)} FAKE files; give one per FAKE"
            f"{one}, comma-separated, in the order of the FAKE files (an empty item skips a set)."
        )
    return items


def read_compare_audio(
    options: Any, num_real: int, fake_counts: list[int]
) -> Optional[list[Optional[AudioSide]]]:
    """The audio inputs of ``embviz compare``: one :class:`AudioSide` per FAKE (or None).

    ``--real-audio`` and ``--groups`` (one per REAL row) serve every set; ``--fake-audio``
    lists one waveform file per FAKE and ``--fake-groups`` one id file per FAKE, or a single
    file for all (the same prompts for every checkpoint), comma-separated; an empty item
    leaves that set without.

    Args:
        options: The compare options (``real``, ``fakes``, ``real_audio``, ``fake_audio``,
            ``sample_rate``, ``audio_seconds``, ``groups``, ``fake_groups`` are read).
        num_real: N, the rows of REAL.
        fake_counts: The rows of each FAKE.

    Returns:
        One entry per FAKE (None for a set with no audio input), or None when none of the
        options is given.

    Raises:
        ValueError: Waveforms without ``--sample-rate``, of another shape or count; group
            ids of another count; a list with another number of files than FAKE files.
        TypeError: Waveforms that are not floating.
    """
    from lightning_embviz._io import load_labels

    if not _any_audio_option(options):
        return None
    rate, seconds = options.sample_rate, options.audio_seconds
    fakes = tuple(options.fakes)
    audio_files = _per_fake(options.fake_audio, fakes, "--fake-audio", shared=False)
    group_files = _per_fake(options.fake_groups, fakes, "--fake-groups", shared=True)
    real_clips = None
    if options.real_audio:
        real_clips = _waveforms(
            options.real_audio, num_real, "--real-audio", options.real, rate, seconds
        )
    real_groups = load_labels(options.groups, num_real) if options.groups else None
    sides: list[Optional[AudioSide]] = []
    for fake, rows, audio, groups in zip(fakes, fake_counts, audio_files, group_files):
        fake_clips = None
        if audio:
            fake_clips = _waveforms(audio, rows, "--fake-audio", fake, rate, seconds)
        fake_groups = load_labels(groups, rows) if groups else None
        side = AudioSide(real_clips, fake_clips, real_groups, fake_groups)
        has_any = any(v is not None for v in (real_clips, fake_clips, real_groups, fake_groups))
        sides.append(side if has_any else None)
    return sides


def _rate(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive int number of Hz, got {text!r}")
    return value


def _seconds(text: str) -> float:
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_compare_audio_arguments(compare: Any) -> None:
    """Add report's audio and group options to the ``compare`` parser, per FAKE where needed.

    ``--real-audio``, ``--fake-audio LIST``, ``--sample-rate``, ``--audio-seconds``,
    ``--groups`` and ``--fake-groups LIST`` (see :func:`read_compare_audio`).
    """
    compare.add_argument(
        "--real-audio",
        metavar="FILE",
        help="one waveform per REAL row, .npy (N, T) or (N, C, T) floats at --sample-rate: "
        "writes each set's missed real clips, NAME/missed_real_audio/NN.wav and "
        "NAME/missed_real_audio.png (spectrograms)",
    )
    compare.add_argument(
        "--fake-audio",
        metavar="LIST",
        help="comma-separated waveform files, one per FAKE in order (an empty item skips a "
        "set): writes NAME/outlier_fake_audio/NN.wav and its spectrograms",
    )
    compare.add_argument(
        "--sample-rate", type=_rate, metavar="HZ", help="the rate of the waveforms in Hz"
    )
    compare.add_argument(
        "--audio-seconds",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="the longest clip written, in seconds (default: 10)",
    )
    compare.add_argument(
        "--groups",
        metavar="FILE",
        help="a group id per REAL row (song, prompt, identity; integers or strings): writes "
        "NAME/groups.csv per set, the per-group coverage and recall, worst first",
    )
    compare.add_argument(
        "--fake-groups",
        metavar="LIST",
        help="group ids per FAKE row: one file for every FAKE, or comma-separated, one per "
        "FAKE in order; adds each group's precision, density and FD to NAME/groups.csv",
    )


def add_audio_arguments(report: Any) -> None:
    """Add the audio and group options to the ``report`` parser.

    ``--real-audio``, ``--fake-audio``, ``--sample-rate``, ``--audio-seconds``, ``--groups``
    and ``--fake-groups``.
    """
    report.add_argument(
        "--real-audio",
        metavar="FILE",
        help="one waveform per REAL row, .npy (N, T) or (N, C, T) floats at --sample-rate: "
        "writes missed_real_audio/NN.wav and missed_real_audio.png (spectrograms)",
    )
    report.add_argument(
        "--fake-audio",
        metavar="FILE",
        help="one waveform per FAKE row: writes outlier_fake_audio/NN.wav and its spectrograms",
    )
    report.add_argument(
        "--sample-rate", type=_rate, metavar="HZ", help="the rate of the waveforms in Hz"
    )
    report.add_argument(
        "--audio-seconds",
        type=_seconds,
        default=10.0,
        metavar="S",
        help="the longest clip written, in seconds (default: 10)",
    )
    report.add_argument(
        "--groups",
        metavar="FILE",
        help="a group id per REAL row (song, prompt, identity; integers or strings: .npy, or "
        "a CSV/text file with one per line): writes groups.csv, the per-group coverage and "
        "recall, worst first",
    )
    report.add_argument(
        "--fake-groups",
        metavar="FILE",
        help="a group id per FAKE row: adds each group's precision, density and FD to groups.csv",
    )
