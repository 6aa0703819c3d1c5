"""Audio clips: the length rule, short kept copies per row, and WAV bytes.

Three jobs, no Lightning:

1. **Clips of different lengths.** A batch is one (B, T) or (B, C, T) tensor, so the clips
   of a batch share T (cut or pad them in ``validation_step``; :func:`stack_clips` does it
   with the rule below). Batches of one run may have different T: each batch is embedded at
   its own length (the embedders pool over time per clip), so the embeddings never depend on
   the other batches. The *kept copies* (for listening) follow one rule: keep the first
   ``max_seconds`` of each clip, zero-pad the rest of the row, and remember the true length,
   so a clip plays back at its own length (never longer than ``max_seconds``).
2. **Kept copies** (:class:`Clips`, :func:`make_clips`): mono (channels averaged), resampled
   to ``keep_rate`` (at most the source rate; polyphase filter with anti-aliasing), stored
   as int16 codes with a per-clip peak, so a clip louder than full scale is kept without
   clipping. Memory rule, like the image thumbnails' ``C * side**2`` bytes:
   **``2 * round(keep_rate * max_seconds) + 12`` bytes per row**
   (:func:`clip_bytes_per_row`): 8 kHz for 2 s is 32 kB a row, 32 MB per 1000 rows.
3. **WAV bytes** (:func:`encode_wav`, :func:`decode_wav`): 16-bit PCM through the standard
   library's ``wave`` module at the clip's true sample rate. Floats map to int16 as
   ``round(x * 32767)``; values outside [-1, 1] are clipped (as soundfile does for PCM_16)
   unless ``normalize=True`` scales a clip whose peak exceeds 1 down to peak 1.
"""

from __future__ import annotations

import io
import math
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Clips",
    "clip_bytes_per_row",
    "decode_wav",
    "encode_wav",
    "make_clips",
    "stack_clips",
]

_FULL_SCALE = 32767.0
_ROW_OVERHEAD = 12  # the float32 peak and the int64 length of each row


def _positive_rate(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) <= 0:
        raise ValueError(f"`{name}` must be a positive integer number of Hz, got {value!r}.")
    return int(value)


def _positive_seconds(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"`{name}` must be a number of seconds, got {type(value).__name__}.")
    out = float(value)
    if not math.isfinite(out) or out <= 0:
        raise ValueError(f"`{name}` must be a positive number of seconds, got {value!r}.")
    return out


def clip_bytes_per_row(keep_rate: int, max_seconds: float) -> int:
    """Bytes one kept clip takes: ``2 * round(keep_rate * max_seconds) + 12``.

    Args:
        keep_rate: the rate of the kept copies in Hz.
        max_seconds: the longest kept clip in seconds.

    Returns:
        Bytes per row (int16 samples plus the row's peak and length).
    """
    rate = _positive_rate(keep_rate, "keep_rate")
    seconds = _positive_seconds(max_seconds, "max_seconds")
    return 2 * max(1, round(rate * seconds)) + _ROW_OVERHEAD


@dataclass
class Clips:
    """Short kept copies of a batch's clips, one per row (see the module doc).

    Attributes:
        codes: (B, L) int16, each clip divided by its peak times 32767, zero after its length.
        peaks: (B,) float32, each clip's largest absolute value (0 for silence).
        lengths: (B,) int64, the valid samples of each row (<= L).
        sample_rate: the true rate of the kept copies in Hz.
    """

    codes: Tensor
    peaks: Tensor
    lengths: Tensor
    sample_rate: int

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    @property
    def nbytes(self) -> int:
        """Memory held by the three tensors."""
        return sum(t.element_size() * t.numel() for t in (self.codes, self.peaks, self.lengths))

    def select(self, index: Tensor) -> Clips:
        """The clips at ``index`` (a bool mask or positions)."""
        return Clips(self.codes[index], self.peaks[index], self.lengths[index], self.sample_rate)

    def values(self) -> Tensor:
        """All rows as float32 (B, L) in their original scale, zero after each length."""
        return self.codes.float() * (self.peaks.view(-1, 1) / _FULL_SCALE)

    def clip(self, row: int) -> np.ndarray:
        """One clip as float32 (length,), trimmed to its true length."""
        length = int(self.lengths[row])
        scale = float(self.peaks[row]) / _FULL_SCALE
        return self.codes[row, :length].numpy().astype(np.float32) * np.float32(scale)

    def wav(self, row: int, *, normalize: bool = True) -> bytes:
        """One clip as WAV bytes at :attr:`sample_rate` (see :func:`encode_wav`)."""
        return encode_wav(self.clip(row), self.sample_rate, normalize=normalize)

    @staticmethod
    def cat(parts: Sequence[Clips]) -> Clips:
        """Concatenate along the batch; all parts must share the rate and the row length."""
        if not parts:
            raise ValueError("`Clips.cat` needs at least one part.")
        rates = {p.sample_rate for p in parts}
        widths = {int(p.codes.shape[1]) for p in parts}
        if len(rates) != 1 or len(widths) != 1:
            raise ValueError(
                f"`Clips.cat` needs parts of one rate and row length, got rates {sorted(rates)} "
                f"and lengths {sorted(widths)}."
            )
        return Clips(
            torch.cat([p.codes for p in parts]),
            torch.cat([p.peaks for p in parts]),
            torch.cat([p.lengths for p in parts]),
            parts[0].sample_rate,
        )


def _waveform_array(waveforms: Any, name: str, max_samples: int) -> np.ndarray:
    """(B, T) or (B, C, T) floats -> (B, <= max_samples) float64 mono, non-finite as 0.

    The clips are cut before any copy, so a long batch costs only what is kept.
    """
    if isinstance(waveforms, Tensor):
        arr = waveforms.detach().cpu().numpy()
    elif isinstance(waveforms, np.ndarray):
        arr = waveforms
    else:
        raise TypeError(
            f"`{name}` must be a tensor or NumPy array of waveforms (B, T) or (B, C, T), "
            f"got {type(waveforms).__name__}."
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(
            f"`{name}` must hold floating waveforms, got dtype {arr.dtype} (convert PCM with "
            "x / 32768)."
        )
    if arr.ndim == 3:
        arr = arr[:, :, :max_samples].astype(np.float64).mean(axis=1)
    if arr.ndim != 2:
        raise ValueError(
            f"`{name}` must have shape (B, T) or (B, C, T), got shape {tuple(arr.shape)}."
        )
    arr = arr[:, :max_samples].astype(np.float64)
    arr[~np.isfinite(arr)] = 0.0
    return arr


def make_clips(
    waveforms: Union[Tensor, np.ndarray],
    sample_rate: int,
    *,
    keep_rate: int = 8000,
    max_seconds: float = 2.0,
    lengths: Optional[Union[Tensor, np.ndarray]] = None,
) -> Clips:
    """Short mono copies of a batch of clips, for listening later (see the module doc).

    Each clip is cut to its first ``max_seconds``, averaged to mono, resampled to
    ``min(keep_rate, sample_rate)`` with a polyphase anti-aliasing filter, and stored as
    int16 with its peak. NaN and infinite samples become 0. Memory:
    :func:`clip_bytes_per_row` per clip.

    Args:
        waveforms: (B, T) or (B, C, T) floating waveforms at ``sample_rate``.
        sample_rate: their rate in Hz.
        keep_rate: the rate of the kept copies in Hz (never above ``sample_rate``).
        max_seconds: the longest kept clip in seconds; longer clips are cut.
        lengths: (B,) true lengths in samples at ``sample_rate`` when the rows are padded
            (:func:`stack_clips`'s second output), or None (every row is a whole clip).

    Returns:
        :class:`Clips` of B rows of ``round(rate * max_seconds)`` samples each (the same
        for every batch of a run, so batches concatenate), zero after each clip's length.

    Raises:
        TypeError: for an input that is not a floating tensor/array, or non-number seconds.
        ValueError: for another shape, a rate or a duration that is not positive, or
            ``lengths`` of another count.
    """
    from scipy.signal import resample_poly

    source_rate = _positive_rate(sample_rate, "sample_rate")
    rate = min(_positive_rate(keep_rate, "keep_rate"), source_rate)
    seconds = _positive_seconds(max_seconds, "max_seconds")
    mono = _waveform_array(waveforms, "waveforms", max(1, math.ceil(seconds * source_rate)))
    count, total = mono.shape
    if rate != source_rate:
        step = math.gcd(rate, source_rate)
        mono = resample_poly(mono, rate // step, source_rate // step, axis=1) if total else mono
    limit = max(1, round(rate * seconds))
    kept = np.zeros((count, limit))
    width = min(limit, mono.shape[1])
    kept[:, :width] = mono[:, :width]
    valid = np.full(count, width, dtype=np.int64)
    if lengths is not None:
        given = torch.as_tensor(lengths).reshape(-1).cpu().numpy().astype(np.int64)
        if given.shape[0] != count or (given < 0).any():
            raise ValueError(
                f"`lengths` must hold {count} non-negative sample counts, got {given.tolist()}."
            )
        valid = np.minimum(valid, -(-given * rate // source_rate))
        kept[np.arange(limit)[None, :] >= valid[:, None]] = 0.0
    peaks = np.abs(kept).max(axis=1)
    safe = np.where(peaks > 0, peaks, 1.0)
    codes = np.rint(kept / safe[:, None] * _FULL_SCALE).clip(-_FULL_SCALE, _FULL_SCALE)
    return Clips(
        torch.from_numpy(codes.astype(np.int16)),
        torch.from_numpy(peaks.astype(np.float32)),
        torch.from_numpy(valid),
        rate,
    )


def stack_clips(
    clips: Sequence[Union[Tensor, np.ndarray]], length: Optional[int] = None
) -> tuple[Tensor, Tensor]:
    """Stack 1-D clips of different lengths into one (B, T) batch: cut or zero-pad the end.

    The rule for clips of different lengths within a batch: every clip keeps its start; a
    clip longer than ``length`` is cut, a shorter one is padded with zeros at the end.

    Args:
        clips: B clips, each (T_i,) floating samples.
        length: T of the batch; None uses the longest clip.

    Returns:
        ``(batch, lengths)``: (B, T) float32 and (B,) int64 true lengths (at most T).

    Raises:
        ValueError: for an empty list, a clip that is not 1-D, or a ``length`` below 1.
    """
    if len(clips) == 0:
        raise ValueError("`stack_clips` needs at least one clip.")
    arrays = [torch.as_tensor(c).detach().cpu().to(torch.float32) for c in clips]
    for i, a in enumerate(arrays):
        if a.ndim != 1:
            raise ValueError(f"clip {i} must have shape (T,), got shape {tuple(a.shape)}.")
    width = max(int(a.shape[0]) for a in arrays) if length is None else int(length)
    if width < 1:
        raise ValueError(f"`length` must be at least 1, got {length!r}.")
    out = torch.zeros(len(arrays), width)
    lengths = torch.empty(len(arrays), dtype=torch.int64)
    for i, a in enumerate(arrays):
        n = min(width, int(a.shape[0]))
        out[i, :n] = a[:n]
        lengths[i] = n
    return out, lengths


def encode_wav(
    samples: Union[Tensor, np.ndarray], sample_rate: int, *, normalize: bool = False
) -> bytes:
    """Encode a clip as 16-bit PCM WAV bytes with the standard library's ``wave`` module.

    ``int16 = round(clip(x, -1, 1) * 32767)``: within half a step (1 / 65534) of the input
    for values in [-1, 1]. NaN and infinite samples become 0.

    Args:
        samples: (T,) mono or (C, T) floating samples.
        sample_rate: the clip's true rate in Hz (written into the header).
        normalize: scale a clip whose peak exceeds 1 down to peak 1 instead of clipping it.

    Returns:
        The content of a ``.wav`` file.

    Raises:
        TypeError: for non-floating samples.
        ValueError: for another shape, or a rate that is not a positive integer.
    """
    rate = _positive_rate(sample_rate, "sample_rate")
    x = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"`samples` must be floating, got dtype {x.dtype}.")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"`samples` must have shape (T,) or (C, T), got shape {x.shape}.")
    x = np.where(np.isfinite(x), x.astype(np.float64), 0.0)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if normalize and peak > 1.0:
        x = x / peak
    pcm = np.rint(np.clip(x, -1.0, 1.0) * _FULL_SCALE).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(x.shape[0])
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.ascontiguousarray(pcm.T).tobytes())
    return buffer.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode 16-bit PCM WAV bytes (the inverse of :func:`encode_wav`).

    Args:
        data: the content of a ``.wav`` file with 16-bit samples.

    Returns:
        ``(samples, sample_rate)``: float32 (T,) for mono or (C, T), as ``int16 / 32767``.

    Raises:
        ValueError: for a sample width other than 16 bits.
    """
    with wave.open(io.BytesIO(data), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit WAV data, got {8 * src.getsampwidth()}-bit.")
        channels, rate = src.getnchannels(), src.getframerate()
        pcm = np.frombuffer(src.readframes(src.getnframes()), dtype="<i2")
    out = pcm.reshape(-1, channels).T.astype(np.float32) / np.float32(_FULL_SCALE)
    return (out[0] if channels == 1 else out), rate
