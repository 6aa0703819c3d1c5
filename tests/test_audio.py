"""Audio clips: WAV bytes, kept copies and their memory rule, the length rule, the gallery."""

from __future__ import annotations

import io
import wave

import numpy as np
import pytest
import torch

from lightning_embviz.audio import (
    Clips,
    clip_bytes_per_row,
    decode_wav,
    encode_wav,
    make_clips,
    stack_clips,
)
from lightning_embviz.figures.audio import (
    figure_to_rgb,
    gallery_pixel_size,
    spectrogram,
    spectrogram_gallery,
)

HALF_STEP = 0.5 / 32767 + 1e-7


def _tone(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(clip: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(clip))
    return float(np.fft.rfftfreq(clip.shape[0], 1 / rate)[spectrum.argmax()])


# ------------------------------------------------------------------------------- WAV


def test_wav_decodes_with_wave_to_the_clip_within_int16_rounding() -> None:
    rng = np.random.default_rng(0)
    clip = rng.uniform(-1, 1, size=2205).astype(np.float32)
    data = encode_wav(clip, 22050)
    with wave.open(io.BytesIO(data), "rb") as src:
        assert src.getframerate() == 22050
        assert src.getnchannels() == 1 and src.getsampwidth() == 2
        assert src.getnframes() == 2205
        pcm = np.frombuffer(src.readframes(2205), dtype="<i2")
    np.testing.assert_allclose(pcm / 32767, clip, atol=HALF_STEP, rtol=0)
    samples, rate = decode_wav(data)
    assert rate == 22050
    np.testing.assert_allclose(samples, clip, atol=HALF_STEP, rtol=0)


def test_wav_stereo_torch_clipping_and_normalize() -> None:
    stereo = torch.tensor([[0.0, 0.5, -0.5, 1.0], [0.25, -0.25, 1.0, -1.0]])
    samples, rate = decode_wav(encode_wav(stereo, 16000))
    assert rate == 16000 and samples.shape == (2, 4)
    np.testing.assert_allclose(samples, stereo.numpy(), atol=HALF_STEP, rtol=0)
    loud = np.array([0.0, 2.0, -4.0, np.nan], dtype=np.float64)
    clipped, _ = decode_wav(encode_wav(loud, 8000))
    np.testing.assert_allclose(clipped, [0.0, 1.0, -1.0, 0.0], atol=HALF_STEP)
    scaled, _ = decode_wav(encode_wav(loud, 8000, normalize=True))
    np.testing.assert_allclose(scaled, [0.0, 0.5, -1.0, 0.0], atol=HALF_STEP)


def test_wav_errors() -> None:
    with pytest.raises(ValueError, match="positive integer number of Hz"):
        encode_wav(np.zeros(4), 0)
    with pytest.raises(ValueError, match="positive integer number of Hz"):
        encode_wav(np.zeros(4), 16000.5)
    with pytest.raises(TypeError, match="must be floating"):
        encode_wav(np.zeros(4, dtype=np.int16), 8000)
    with pytest.raises(ValueError, match=r"shape \(T,\) or \(C, T\)"):
        encode_wav(np.zeros((1, 2, 3)), 8000)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(8000)
        out.writeframes(b"\x80\x80")
    with pytest.raises(ValueError, match="expected 16-bit"):
        decode_wav(buffer.getvalue())


# ------------------------------------------------------------------------ kept copies


def test_kept_copies_true_rate_tone_and_memory_rule() -> None:
    batch = np.stack([_tone(440, 48000, 3.0), _tone(1000, 48000, 3.0, amp=2.0)])
    clips = make_clips(torch.from_numpy(batch), 48000, keep_rate=8000, max_seconds=2.0)
    assert clips.sample_rate == 8000
    assert clips.codes.dtype == torch.int16 and clips.codes.shape == (2, 16000)
    assert clips.lengths.tolist() == [16000, 16000]
    assert clips.nbytes == 2 * clip_bytes_per_row(8000, 2.0) == 2 * (2 * 16000 + 12)
    assert _peak_hz(clips.clip(0), 8000) == pytest.approx(440, abs=1)
    assert _peak_hz(clips.clip(1), 8000) == pytest.approx(1000, abs=1)
    # The loud clip keeps its level (peak stored), not clipped to full scale.
    assert float(clips.peaks[1]) == pytest.approx(2.0, rel=0.01)
    middle = clips.clip(1)[4000:12000]
    direct = _tone(1000, 8000, 2.0, amp=2.0)[4000:12000]
    np.testing.assert_allclose(middle, direct, atol=0.01)
    # A WAV of a kept clip: its true rate, normalized because the clip is louder than 1.
    samples, rate = decode_wav(clips.wav(1))
    assert rate == 8000 and samples.shape == (16000,)
    assert np.abs(samples).max() == pytest.approx(1.0, abs=1e-4)


def test_tone_above_the_kept_nyquist_is_filtered_out() -> None:
    clips = make_clips(_tone(6000, 48000, 1.0)[None], 48000, keep_rate=8000, max_seconds=1.0)
    # 6 kHz cannot be represented at 8 kHz; without anti-aliasing it would fold to 2 kHz
    # at full level (0.5). Only the filter's edge transients remain.
    assert np.abs(clips.clip(0)[100:-100]).max() < 1e-3


def test_lower_source_rate_is_kept_and_stereo_is_averaged() -> None:
    left, right = _tone(300, 4000, 0.5), np.zeros(2000, dtype=np.float32)
    clips = make_clips(np.stack([left, right])[None], 4000, keep_rate=8000, max_seconds=1.0)
    assert clips.sample_rate == 4000
    assert clips.codes.shape == (1, 4000) and int(clips.lengths[0]) == 2000
    np.testing.assert_allclose(clips.clip(0), left / 2, atol=0.25 / 32767 + 1e-6)
    assert clips.values()[0, 2000:].abs().max() == 0


def test_clips_of_different_lengths_rule() -> None:
    """Batches of other T concatenate; each clip plays at its own length, at most max_seconds."""
    short = make_clips(np.ones((2, 800)) * 0.1, 8000, max_seconds=0.5)
    long = make_clips(np.ones((1, 8000)) * 0.2, 8000, max_seconds=0.5)
    both = Clips.cat([short, long])
    assert both.codes.shape == (3, 4000)
    assert both.lengths.tolist() == [800, 800, 4000]
    assert [c.shape[0] for c in (both.clip(0), both.clip(2))] == [800, 4000]
    np.testing.assert_allclose(both.clip(2), 0.2, rtol=1e-6)
    picked = both.select(torch.tensor([2, 0]))
    assert picked.lengths.tolist() == [4000, 800]
    batch, lengths = stack_clips([np.full(300, 0.3), torch.full((500,), -0.3)])
    assert batch.shape == (2, 500) and lengths.tolist() == [300, 500]
    assert batch[0, 300:].abs().max() == 0
    kept = make_clips(batch, 8000, keep_rate=4000, lengths=lengths)
    assert kept.lengths.tolist() == [150, 250]
    assert kept.clip(0).shape == (150,) and kept.values()[0, 150:].abs().max() == 0
    cut, cut_lengths = stack_clips([np.ones(10), np.ones(3)], length=5)
    assert cut.shape == (2, 5) and cut_lengths.tolist() == [5, 3]


def test_silence_and_non_finite_samples() -> None:
    clips = make_clips(np.array([[0.0, 0.0, 0.0], [np.nan, 0.5, np.inf]]), 8000)
    assert clips.peaks.tolist() == [0.0, 0.5]
    np.testing.assert_array_equal(clips.clip(0), [0, 0, 0])
    np.testing.assert_allclose(clips.clip(1), [0.0, 0.5, 0.0])


def test_clip_errors() -> None:
    with pytest.raises(TypeError, match="tensor or NumPy array"):
        make_clips([[0.0]], 8000)
    with pytest.raises(TypeError, match="floating waveforms"):
        make_clips(np.zeros((1, 4), dtype=np.int16), 8000)
    with pytest.raises(ValueError, match=r"\(B, T\) or \(B, C, T\)"):
        make_clips(np.zeros(4), 8000)
    with pytest.raises(ValueError, match="positive number of seconds"):
        make_clips(np.zeros((1, 4)), 8000, max_seconds=0)
    with pytest.raises(TypeError, match="number of seconds"):
        clip_bytes_per_row(8000, "2")
    with pytest.raises(ValueError, match="`keep_rate` must be a positive"):
        make_clips(np.zeros((1, 4)), 8000, keep_rate=-1)
    with pytest.raises(ValueError, match="non-negative sample counts"):
        make_clips(np.zeros((2, 4)), 8000, lengths=[1])
    with pytest.raises(ValueError, match="one rate and row length"):
        Clips.cat([make_clips(np.zeros((1, 4)), 8000), make_clips(np.zeros((1, 4)), 4000)])
    with pytest.raises(ValueError, match="at least one part"):
        Clips.cat([])
    with pytest.raises(ValueError, match="at least one clip"):
        stack_clips([])
    with pytest.raises(ValueError, match=r"clip 0 must have shape \(T,\)"):
        stack_clips([np.zeros((2, 2))])
    with pytest.raises(ValueError, match="at least 1"):
        stack_clips([np.zeros(2)], length=0)


# ------------------------------------------------------------------------ the gallery


def test_gallery_renders_one_tile_per_clip_in_order() -> None:
    rate = 8000
    freqs = [300, 3000, 1200, 2200, 600]
    clips = [_tone(f, rate, 0.5 + 0.1 * i) for i, f in enumerate(freqs)]
    fig = spectrogram_gallery(
        clips,
        rate,
        indices=[10, 11, 12, 13, 14],
        groups=["a", "b", "c", "d", "e"],
        ratios=[1.5, 2.0, np.inf, 3.0, 4.0],
        columns=3,
        title="missed real clips",
    )
    pixels = figure_to_rgb(fig)
    height, width = gallery_pixel_size(5, columns=3)
    assert pixels.shape == (height, width, 3) and pixels.dtype == np.uint8
    assert (height, width) == (round(100 * (0.5 + 2 * 1.62)), 540)
    assert len(fig.axes) == 5
    for ax, clip in zip(fig.axes, clips):
        (image,) = ax.get_images()
        spec = spectrogram(clip, rate)
        assert image.get_array().shape == spec.shape
    # Locate each tile in the pixels: its brightest row sits at its tone's frequency.
    rows = []
    for ax in fig.axes:
        box = ax.get_window_extent()
        top, bottom = height - int(box.y1) + 2, height - int(box.y0) - 2
        tile = pixels[top:bottom, int(box.x0) + 2 : int(box.x1) - 2].astype(int).sum(axis=2)
        assert tile.std() > 0  # a drawn spectrogram, not background
        rows.append(1 - tile.mean(axis=1).argmax() / (bottom - top))
    assert np.argsort(rows).tolist() == np.argsort(freqs).tolist()
    for f, row in zip(freqs, rows):
        assert row == pytest.approx(f / (rate / 2), abs=0.06)
    texts = [t.get_text() for t in fig.texts]
    assert "missed real clips" in texts
    assert "#10 [a]\n1.50×" in texts and "#12 [c]\nr=0" in texts


def test_gallery_of_an_array_and_empty_gallery() -> None:
    batch = torch.from_numpy(np.stack([_tone(500, 8000, 0.25), _tone(900, 8000, 0.25)]))
    fig = spectrogram_gallery(batch, 8000)
    assert len(fig.axes) == 2
    assert figure_to_rgb(fig).shape == (*gallery_pixel_size(2), 3)
    empty = spectrogram_gallery([], 8000)
    assert len(empty.axes) == 0
    assert "no clips to show" in [t.get_text() for t in empty.texts]
    assert figure_to_rgb(empty).shape == (*gallery_pixel_size(0), 3)


def test_gallery_errors() -> None:
    with pytest.raises(ValueError, match="wrap a single clip"):
        spectrogram_gallery(np.zeros(100), 8000)
    with pytest.raises(ValueError, match=r"clip 1 must have shape \(T,\)"):
        spectrogram_gallery([np.zeros(100), np.zeros((2, 100))], 8000)
    with pytest.raises(ValueError, match=r"`groups` must have one entry per clip \(1\)"):
        spectrogram_gallery([np.zeros(100)], 8000, groups=[1, 2])
    with pytest.raises(ValueError, match="`top_db` must be positive"):
        spectrogram_gallery([np.zeros(100)], 8000, top_db=0)
    with pytest.raises(ValueError, match="`columns` must be a positive"):
        spectrogram_gallery([np.zeros(100)], 8000, columns=0)
    with pytest.raises(ValueError, match=r"`clip` must have shape \(T,\)"):
        spectrogram(np.zeros((2, 2)), 8000)
