"""Audio clips in the callback: kept per row, the shown clips logged with their spectrograms.

What ``validation_step`` may return besides the embeddings (key names are arguments):

- ``"real_audio"`` / ``"fake_audio"``: floating waveforms (B, T) or (B, C, T), one per
  embedding row, at ``EmbeddingMonitor(sample_rate=...)`` (or the embedder's own
  ``sample_rate``). Each row keeps a short mono copy (:func:`lightning_embviz.audio.
  make_clips`: the first ``audio_keep_seconds`` at ``audio_keep_rate``, int16 with its
  peak), so **memory per kept row is** ``2 * round(audio_keep_rate * audio_keep_seconds) +
  12`` **bytes** (32 kB at 8 kHz for 2 s), held for at most ``2 * max_samples`` rows per set
  and rank, like the image thumbnails. Batches of one run may have different T: only the
  kept copies must match, and they always do (same rate and length).
- ``"groups"``: group ids of the rows, integers or strings: parsed, coded and merged across
  ranks by :mod:`lightning_embviz.callback.groups`. :func:`parse_audio` and
  :class:`RunAudio` handle them with the clips, so that one rule (the run's first batch
  decides which parts it has) keeps clips and groups consistent.

At the end of every measured run (:func:`finish_run`, every rank calls it):

- rank 0 picks the missed reals and the outlier fakes exactly as the image galleries do
  (:func:`lightning_embviz.samples.missed_real_order` / ``outlier_fake_order``, the first
  ``min(gallery_size, AUDIO_TILES)``), broadcasts their keys, and only those clips travel
  between ranks (:func:`gather_selected_clips`);
- rank 0 logs them as playable audio at the scalars' step (:func:`lightning_embviz.loggers.
  log_audio`, tags ``<prefix>missed_real_audio/NN`` and ``<prefix>outlier_fake_audio/NN``)
  and queues their spectrogram galleries (figures ``<prefix>missed_real_audio`` and
  ``<prefix>outlier_fake_audio``) on the figure worker;
- with groups, rank 0 logs the per-group table ``<prefix>groups`` and queues its worst
  groups as bars (figure ``<prefix>groups_worst``):
  :func:`lightning_embviz.callback.groups.log_group_table`.

Bad audio or group data after the sanity check never ends training: the batch's clips or
groups are left out, the run's clips (or groups) are dropped, and one warning says why.
No Lightning here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from lightning_embviz.audio import Clips, make_clips
from lightning_embviz.callback.config import _KEY_ARGUMENTS, _bad
from lightning_embviz.callback.groups import (
    RunGroups,
    decode_groups,
    log_group_table,
    parse_groups,
)

__all__ = [
    "AUDIO_TILES",
    "BatchAudio",
    "LocalAudio",
    "RunAudio",
    "audio_rate",
    "check_audio_arguments",
    "finish_run",
    "gather_selected_clips",
    "parse_audio",
]

AUDIO_TILES = 8
"""At most this many clips per kind (missed reals, outlier fakes) are logged per run."""

_AUDIO_KEYS = ("real_audio_key", "fake_audio_key", "groups_key")


def check_audio_arguments(a: dict[str, Any]) -> None:
    """Check (and normalise in place) the audio arguments of ``EmbeddingMonitor``.

    Args:
        a: The callback's arguments by name (``sample_rate``, ``real_audio_key``,
            ``fake_audio_key``, ``groups_key``, ``audio_keep_rate``, ``audio_keep_seconds``
            and the other key names are read).

    Raises:
        TypeError: A rate that is not an int, seconds that are not a number, a key that is
            not a string.
        ValueError: A rate or duration that is not positive, an empty key, or a key that
            another argument already names.
    """
    for arg in ("sample_rate", "audio_keep_rate"):
        value = a[arg]
        if value is None and arg == "sample_rate":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            _bad(arg, value, "a positive int number of Hz", TypeError)
        if int(value) < 1:
            _bad(arg, value, "a positive int number of Hz")
        a[arg] = int(value)
    seconds = a["audio_keep_seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float, np.number)):
        _bad("audio_keep_seconds", seconds, "a positive number of seconds", TypeError)
    if not math.isfinite(float(seconds)) or float(seconds) <= 0:
        _bad("audio_keep_seconds", seconds, "a positive number of seconds")
    a["audio_keep_seconds"] = float(seconds)
    others = {a[k] for k in _KEY_ARGUMENTS if k in a}
    for arg in _AUDIO_KEYS:
        value = a[arg]
        if not isinstance(value, str):
            _bad(arg, value, "a string naming a key of the validation outputs", TypeError)
        if not value:
            _bad(arg, value, "a non-empty string")
        if value in others:
            _bad(arg, value, "a key that no other `*_key` argument names")
        others.add(value)


def audio_rate(config: Any) -> Optional[int]:
    """The rate of the returned waveforms: ``sample_rate``, else the embedder's, else None."""
    if getattr(config, "sample_rate", None) is not None:
        return int(config.sample_rate)
    rate = getattr(getattr(config, "embedder", None), "sample_rate", None)
    return None if rate is None else int(rate)


@dataclasses.dataclass
class BatchAudio:
    """One batch's kept clips and group ids (each None when not given or left out).

    Integer ids are in ``real_groups`` / ``fake_groups`` ((B,) int64). String ids are in
    ``real_names`` / ``fake_names`` ((B,) object arrays of ``str``) until
    :meth:`RunAudio.admit` encodes them into ``*_groups`` codes.
    """

    real_audio: Optional[Clips] = None
    fake_audio: Optional[Clips] = None
    real_groups: Optional[Tensor] = None
    fake_groups: Optional[Tensor] = None
    real_names: Optional[np.ndarray] = None
    fake_names: Optional[np.ndarray] = None


def _clips(value: Any, key: str, rows: int, config: Any, where: str) -> Optional[Clips]:
    if value is None:
        return None
    rate = audio_rate(config)
    if rate is None:
        raise ValueError(
            f"EmbeddingMonitor: {key!r} holds waveforms but no sample rate is known ({where}); "
            "pass `EmbeddingMonitor(sample_rate=...)` (the rate of the returned waveforms)."
        )
    shape = tuple(getattr(value, "shape", ()))
    if shape and shape[0] != rows:
        raise ValueError(
            f"EmbeddingMonitor: {key!r} has {shape[0]} clips but there are {rows} embedding "
            f"rows ({where}); return one clip per row."
        )
    try:
        return make_clips(
            value, rate, keep_rate=config.audio_keep_rate, max_seconds=config.audio_keep_seconds
        )
    except (TypeError, ValueError) as err:
        raise type(err)(f"EmbeddingMonitor: {key!r}: {err} ({where})") from err


def parse_audio(
    outputs: Any, config: Any, real_rows: int, fake_rows: int, where: str
) -> BatchAudio:
    """Check and keep one batch's clips and group ids.

    Args:
        outputs: What ``validation_step`` (or ``embed``) returned (a mapping).
        config: The callback's :class:`~lightning_embviz.callback.config.MonitorConfig`.
        real_rows: B, the batch's real rows.
        fake_rows: B', its fake rows.
        where: ``"dataloader 0, batch 3"``, for messages.

    Returns:
        The kept clips (:class:`~lightning_embviz.audio.Clips`), and (B,) int64 group ids
        or (B,) string group names.

    Raises:
        TypeError: Waveforms that are not a floating tensor/array; group ids that are
            neither integers nor strings (floats, bools, a mix of both kinds).
        ValueError: Waveforms without a known sample rate, of another shape or count, group
            ids of another count.
    """
    if not isinstance(outputs, Mapping):
        return BatchAudio()
    out = BatchAudio(
        _clips(outputs.get(config.real_audio_key), config.real_audio_key, real_rows, config, where),
        _clips(outputs.get(config.fake_audio_key), config.fake_audio_key, fake_rows, config, where),
    )
    real, fake = parse_groups(
        outputs.get(config.groups_key), config.groups_key, real_rows, fake_rows, where
    )
    out.real_groups, out.real_names = real
    out.fake_groups, out.fake_names = fake
    return out


class RunAudio:
    """Keeps one run's clips and groups consistent, so bad audio never ends a run.

    The first batch decides which of the four parts (real/fake clips, real/fake groups) the
    run has. A batch that breaks this (or whose audio could not be used) drops that part
    for the whole run, with one message. One instance per run and dataloader.
    """

    _PARTS = ("real_audio", "fake_audio", "real_groups", "fake_groups")

    def __init__(self) -> None:
        self.present: Optional[dict[str, bool]] = None
        self.dropped: set[str] = set()
        self.groups = RunGroups()  # each side's kind of ids and string names

    def string_names(self, side: str) -> Optional[list[str]]:
        """This rank's names of ``side`` ("real"/"fake") by code, or None (integer ids)."""
        if f"{side}_groups" in self.dropped:
            return None
        return self.groups.string_names(side)

    def admit(
        self, outputs: Any, config: Any, real_rows: int, fake_rows: int, where: str, strict: bool
    ) -> tuple[BatchAudio, Optional[str]]:
        """Parse a batch (:func:`parse_audio`) and fit it to the run.

        Args:
            outputs: The batch's outputs.
            config: The callback's configuration.
            real_rows: B.
            fake_rows: B'.
            where: For messages.
            strict: Raise on bad data (the contract check) instead of dropping it.

        Returns:
            ``(batch, message)``: the parts to keep, and why a part was dropped (or None).
        """
        problem: Optional[str] = None
        try:
            batch = parse_audio(outputs, config, real_rows, fake_rows, where)
        except (TypeError, ValueError) as err:
            if strict:
                raise
            batch, problem = BatchAudio(), str(err)
            # bad data: drop every part this batch named
            given = self._given(outputs, config)
            self.dropped |= {p for p, has in given.items() if has}
        for side in ("real", "fake"):
            kind_problem = self._encode(batch, side, where)
            problem = problem or kind_problem
        have = {part: getattr(batch, part) is not None for part in self._PARTS}
        if self.present is None:
            self.present = have
        for part in self._PARTS:
            if have[part] != self.present[part] and part not in self.dropped:
                self.dropped.add(part)
                problem = problem or (
                    f"{part} {'is missing' if self.present[part] else 'is given'} ({where}) "
                    "unlike the run's first batch"
                )
        for part in self.dropped:
            setattr(batch, part, None)
        if problem is None:
            return batch, None
        return batch, (
            f"EmbeddingMonitor: unusable audio or groups in a validation run: {problem}. The "
            "run's clips (or group table) are dropped; the metrics are logged as usual. "
            "Return them with every batch or with none."
        )

    def _encode(self, batch: BatchAudio, side: str, where: str) -> Optional[str]:
        """String names -> codes; a side whose kind of ids changes is dropped (a problem)."""
        ids, names = getattr(batch, f"{side}_groups"), getattr(batch, f"{side}_names")
        setattr(batch, f"{side}_names", None)
        codes, problem = self.groups.encode(side, ids, names, where)
        setattr(batch, f"{side}_groups", codes)
        if problem is None or f"{side}_groups" in self.dropped:
            return None
        self.dropped.add(f"{side}_groups")
        return problem

    @staticmethod
    def _given(outputs: Any, config: Any) -> dict[str, bool]:
        get = outputs.get if isinstance(outputs, Mapping) else (lambda _key: None)
        groups = get(config.groups_key)
        fake_groups = isinstance(groups, Mapping) and groups.get("fake") is not None
        real_groups = groups is not None and (
            not isinstance(groups, Mapping) or groups.get("real") is not None
        )
        return {
            "real_audio": get(config.real_audio_key) is not None,
            "fake_audio": get(config.fake_audio_key) is not None,
            "real_groups": real_groups,
            "fake_groups": fake_groups,
        }


@dataclasses.dataclass
class LocalAudio:
    """What the end of a run needs from this rank besides the gathered rows.

    Attributes:
        real_keys: (N,) keys of this rank's real rows (for :func:`gather_selected_clips`).
        real_clips: Their kept clips, or None.
        fake_keys: (M,) keys of this rank's fake rows.
        fake_clips: Their kept clips, or None.
        real_names: The run's real group names by code (the same list on every rank), or
            None when the real ids are integers (or absent).
        fake_names: The same for the fake rows.
        problem: Why a side's group ids were left out this run, or None.
    """

    real_keys: Tensor
    real_clips: Optional[Clips]
    fake_keys: Tensor
    fake_clips: Optional[Clips]
    real_names: Optional[list[str]] = None
    fake_names: Optional[list[str]] = None
    problem: Optional[str] = None


# --------------------------------------------------------------------------- gathering


def gather_selected_clips(
    local: Optional[Clips],
    local_keys: Tensor,
    wanted: Tensor,
    *,
    all_gather: Any = None,
) -> Optional[Clips]:
    """The kept clips of the rows with keys ``wanted``, from whichever rank holds them.

    Every rank calls this with the same ``wanted`` (the few keys shown); one small
    all-gather per tensor moves only those clips, in the order of ``wanted`` (the image
    thumbnails' rule, :func:`~lightning_embviz.callback.buffer.gather_selected_images`).
    Keys nobody holds give silent clips. Returns None if no rank has clips.

    Args:
        local: This rank's kept clips (one per local row) or None.
        local_keys: (N,) keys of this rank's rows.
        wanted: (G,) keys to fetch.
        all_gather: ``tensor -> list of tensors, one per rank``; defaults to
            ``torch.distributed.all_gather`` inside a process group, else the local rows.
    """
    from lightning_embviz.callback.buffer import _dist_all_gather, collective_device, locate_keys

    wanted = wanted.to(torch.int64).cpu()
    found, rows = locate_keys(local_keys if local is not None else None, wanted)
    distributed = all_gather is not None or (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
    if not distributed:
        if local is None:
            return None
        out = local.select(rows)
        out.codes[~found] = 0
        out.peaks[~found] = 0.0
        out.lengths[~found] = 0
        return out
    if all_gather is None:
        all_gather = _dist_all_gather(collective_device())
    shape = [-1, -1] if local is None else [int(local.codes.shape[1]), local.sample_rate]
    metas = {tuple(int(v) for v in m.cpu()) for m in all_gather(torch.tensor(shape))}
    metas -= {(-1, -1)}
    if not metas:
        return None
    if len(metas) > 1:
        raise ValueError(f"Ranks hold kept clips of different lengths or rates: {sorted(metas)}.")
    width, rate = metas.pop()
    codes = torch.zeros(len(wanted), width, dtype=torch.int32)  # int16 is not on every backend
    peaks = torch.zeros(len(wanted), dtype=torch.float32)
    lengths = torch.zeros(len(wanted), dtype=torch.int64)
    if local is not None:
        codes[found] = local.codes[rows[found]].to(torch.int32)
        peaks[found] = local.peaks[rows[found]]
        lengths[found] = local.lengths[rows[found]]
    parts = zip(
        all_gather(found.to(torch.int64)),
        all_gather(codes),
        all_gather(peaks),
        all_gather(lengths),
    )
    out_codes, out_peaks = torch.zeros_like(codes), torch.zeros_like(peaks)
    out_lengths = torch.zeros_like(lengths)
    taken = torch.zeros(len(wanted), dtype=torch.bool)
    for flag, code, peak, length in parts:  # rank order: the first rank holding a key wins
        use = flag.cpu().bool() & ~taken
        out_codes[use] = code.cpu()[use]
        out_peaks[use] = peak.cpu()[use]
        out_lengths[use] = length.cpu()[use]
        taken |= use
    return Clips(out_codes.to(torch.int16), out_peaks, out_lengths, rate)


# --------------------------------------------------------------------------- the run's end


@dataclasses.dataclass
class _Shown:
    """One kind of shown clips on rank 0: the clips and their captions."""

    clips: Clips
    indices: np.ndarray
    groups: Optional[np.ndarray]
    ratios: np.ndarray


@dataclasses.dataclass
class _Spectrograms:
    """Draws one kind's spectrogram gallery in the figure worker (a function of the title)."""

    key: str
    part: _Shown

    def __call__(self, title: str) -> Any:
        from lightning_embviz.figures.audio import spectrogram_gallery

        names = {"missed_real_audio": "missed reals", "outlier_fake_audio": "outlier fakes"}
        clips = self.part.clips
        return spectrogram_gallery(
            [clips.clip(i) for i in range(len(clips))],
            clips.sample_rate,
            indices=self.part.indices,
            groups=self.part.groups,
            ratios=self.part.ratios,
            title=f"{title}\n{names[self.key]} (listen: audio {self.key}/NN)",
        )


def finish_run(
    result: Any,
    local: Optional[LocalAudio],
    config: Any,
    *,
    distributed: bool,
    loggers: Any,
    step: int,
    suffix: str,
    root: Optional[str],
) -> Optional[str]:
    """Log one computed run's shown clips, spectrograms and group table (every rank calls).

    Args:
        result: Rank 0's :class:`~lightning_embviz.callback.evaluation.Evaluation` (status
            ``"ok"``); None on the other ranks.
        local: This rank's clips and the run's group names (:class:`LocalAudio`).
        config: The callback's configuration.
        distributed: Whether the ranks take part (collectives).
        loggers: The Trainer's loggers (used on rank 0).
        step: The scalars' step.
        suffix: ``"/dataloader_idx_1"`` or ``""``.
        root: Where files go without a logger.

    The spectrogram galleries go into ``result.figures`` (drawn by the figure worker with
    the run's other figures), so call this before the run's figures are submitted.

    Returns:
        A problem to warn about, or None. Never raises for data.
    """
    from lightning_embviz import samples
    from lightning_embviz.callback.evaluation import details_on_cpu
    from lightning_embviz.callback.sampler import shown_index
    from lightning_embviz.loggers import log_audio

    problems: list[str] = []
    prefix = config.prefix
    names = (None, None) if local is None else (local.real_names, local.fake_names)
    if local is not None and local.problem is not None:
        problems.append(local.problem)
    if result is not None:
        table_problem = log_group_table(
            result, *names, prefix=prefix, suffix=suffix, loggers=loggers, step=step, root=root
        )
        if table_problem is not None:
            problems.append(table_problem)
    size = min(config.gallery_size, AUDIO_TILES)
    if audio_rate(config) is None or size == 0:
        return _message(problems)
    wanted = torch.full((2 * size,), -1, dtype=torch.int64)
    picked: Optional[tuple[Any, Tensor, Tensor]] = None
    if result is not None and result.details is not None:
        try:
            d = details_on_cpu(result.details)
            missed = samples.missed_real_order(d)[:size]
            outliers = samples.outlier_fake_order(d)[:size]
            wanted[: len(missed)] = result.real.keys.cpu()[missed]
            wanted[size : size + len(outliers)] = result.fake.keys.cpu()[outliers]
            picked = (d, missed, outliers)
        except Exception as err:
            wanted.fill_(-1)
            problems.append(f"selecting the clips failed ({type(err).__name__}: {err})")
    if distributed:
        from lightning_embviz.callback.buffer import collective_device

        shared = wanted.to(collective_device(torch.device("cpu")))
        torch.distributed.broadcast(shared, src=0)
        wanted = shared.cpu()
    if local is None:
        local = LocalAudio(
            torch.zeros(0, dtype=torch.int64), None, torch.zeros(0, dtype=torch.int64), None
        )
    real_keys, real_clips = local.real_keys, local.real_clips
    fake_keys, fake_clips = local.fake_keys, local.fake_clips
    try:
        real_shown = gather_selected_clips(real_clips, real_keys, wanted[:size][wanted[:size] >= 0])
        fake_shown = gather_selected_clips(fake_clips, fake_keys, wanted[size:][wanted[size:] >= 0])
    except ValueError as err:  # every rank raises here, before the clips move
        problems.append(str(err))
        real_shown = fake_shown = None
    if result is None or picked is None:
        return _message(problems)
    try:
        d, missed, outliers = picked
        shown: dict[str, _Shown] = {}
        for key, clips, rows, rowset, ratio, side_names in (
            ("missed_real_audio", real_shown, missed, result.real, d.real_nearest_fake_ratio,
             names[0]),
            ("outlier_fake_audio", fake_shown, outliers, result.fake, d.fake_nearest_ball_ratio,
             names[1]),
        ):  # fmt: skip
            if clips is None or len(rows) == 0:
                continue
            groups = decode_groups(rowset.groups, side_names)
            groups = None if groups is None else groups[np.asarray(rows)]
            shown[key] = _Shown(
                clips,
                shown_index(rowset.keys.cpu())[rows].numpy(),
                groups,
                torch.as_tensor(ratio).cpu()[rows].numpy(),
            )
        if shown:
            items = {
                f"{prefix}{key}{suffix}": [
                    (f"{i:02d}", part.clips.clip(i), _caption(part, i))
                    for i in range(len(part.clips))
                ]
                for key, part in shown.items()
            }
            rate = next(iter(shown.values())).clips.sample_rate
            log_audio(loggers, items, rate, step, fallback_dir=root)
            for key, part in shown.items():
                result.figures[key] = _Spectrograms(key, part)
    except Exception as err:  # listening is a bonus: never end training for it
        problems.append(f"logging the clips failed ({type(err).__name__}: {err})")
    return _message(problems)


def _caption(part: _Shown, i: int) -> str:
    text = f"#{int(part.indices[i])}"
    if part.groups is not None:
        text += f" [{part.groups[i]}]"
    ratio = float(part.ratios[i])
    return text + (f" {ratio:.3g}x" if math.isfinite(ratio) else "")


def _message(problems: list[str]) -> Optional[str]:
    if not problems:
        return None
    return (
        "EmbeddingMonitor: "
        + "; ".join(problems)
        + ". The metrics were logged; the clips or group table of this run are missing."
    )
