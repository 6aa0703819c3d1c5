"""The spectrogram gallery: one tile per audio clip, like the image galleries.

Each tile is the clip's log-magnitude spectrogram (Hann-windowed STFT, time left to right,
frequency bottom to top, 0 Hz to half the sample rate), with its caption underneath (index,
group and ratio for the missed-real and outlier-fake clips). All tiles share one dB scale,
from the loudest bin of the gallery down ``top_db`` decibels, so a quiet clip looks quiet.

Drawn on a ``Figure`` with the Agg canvas attached directly (no pyplot); the layout is fixed
in inches, so the rendered size is known in advance (:func:`gallery_pixel_size`).
No Lightning here, and nothing from the other plotting modules: this file stands alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "figure_to_rgb",
    "gallery_pixel_size",
    "spectrogram",
    "spectrogram_gallery",
]

TILE_WIDTH = 1.8  # inches per tile
TILE_HEIGHT = 1.2  # inches of spectrogram per tile
CAPTION_HEIGHT = 0.42  # inches of caption under each tile
TITLE_HEIGHT = 0.5  # inches above the tiles
DPI = 100
COLORMAP = "magma"


def spectrogram(
    clip: Union[np.ndarray, Sequence[float]], sample_rate: int, *, n_fft: Optional[int] = None
) -> np.ndarray:
    """Power spectrogram of one clip in decibels.

    Hann window of ``n_fft`` samples (default: the power of two nearest 32 ms, at least 16),
    hop ``n_fft // 4``, clips shorter than one window zero-padded to one window.
    ``10 * log10(|STFT|^2 + 1e-12)``; NaN/inf samples count as 0.

    Args:
        clip: (T,) samples.
        sample_rate: the clip's rate in Hz.
        n_fft: the window length in samples, or None.

    Returns:
        (n_fft // 2 + 1, frames) float64 dB, row 0 = 0 Hz.

    Raises:
        ValueError: for a clip that is not 1-D, or a rate or ``n_fft`` below 1.
    """
    x = np.asarray(clip, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"`clip` must have shape (T,), got shape {x.shape}.")
    if int(sample_rate) < 1:
        raise ValueError(f"`sample_rate` must be positive, got {sample_rate!r}.")
    if n_fft is None:
        n_fft = max(16, 2 ** round(math.log2(0.032 * int(sample_rate))))
    if int(n_fft) < 1:
        raise ValueError(f"`n_fft` must be positive, got {n_fft!r}.")
    n_fft = int(n_fft)
    x = np.where(np.isfinite(x), x, 0.0)
    if x.shape[0] < n_fft:
        x = np.pad(x, (0, n_fft - x.shape[0]))
    hop = max(1, n_fft // 4)
    frames = 1 + (x.shape[0] - n_fft) // hop
    starts = np.arange(frames) * hop
    windows = x[starts[:, None] + np.arange(n_fft)[None, :]] * np.hanning(n_fft)[None, :]
    power = np.abs(np.fft.rfft(windows, axis=1)) ** 2
    return 10.0 * np.log10(power.T + 1e-12)


def _as_clips(clips: Any) -> list[np.ndarray]:
    if hasattr(clips, "detach"):
        clips = clips.detach().cpu().numpy()
    if isinstance(clips, np.ndarray):
        if clips.ndim == 1:
            raise ValueError(
                "`clips` must be a sequence of (T,) clips or a (B, T) array, got shape "
                f"{clips.shape}; wrap a single clip in a list."
            )
        if clips.ndim != 2:
            raise ValueError(f"`clips` must be (B, T), got shape {clips.shape}.")
        return [np.asarray(c, dtype=np.float64) for c in clips]
    out = []
    for i, c in enumerate(clips):
        arr = np.asarray(c.detach().cpu().numpy() if hasattr(c, "detach") else c, np.float64)
        if arr.ndim != 1:
            raise ValueError(f"clip {i} must have shape (T,), got shape {arr.shape}.")
        out.append(arr)
    return out


def _column_values(values: Any, count: int, name: str) -> Optional[list[Any]]:
    if values is None:
        return None
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    out = [v.item() if isinstance(v, np.generic) else v for v in list(np.asarray(values))]
    if len(out) != count:
        raise ValueError(f"`{name}` must have one entry per clip ({count}), got {len(out)}.")
    return out


def _caption(
    i: int, indices: Optional[list[Any]], groups: Optional[list[Any]], ratios: Optional[list[Any]]
) -> str:
    head = []
    if indices is not None:
        head.append(f"#{indices[i]}")
    if groups is not None:
        head.append(f"[{groups[i]}]")
    lines = [" ".join(head)] if head else []
    if ratios is not None:
        value = float(ratios[i])
        lines.append("r=0" if math.isinf(value) else f"{value:.2f}×")
    return "\n".join(lines)


def gallery_pixel_size(
    count: int, columns: Optional[int] = None, dpi: int = DPI
) -> tuple[int, int]:
    """The (height, width) in pixels :func:`spectrogram_gallery` renders ``count`` tiles at.

    Args:
        count: number of clips (0 draws one empty row with a note).
        columns: tiles per row, or None (up to 6).
        dpi: dots per inch.

    Returns:
        ``(height, width)`` of :func:`figure_to_rgb`'s array.
    """
    cols, rows = _grid(count, columns)
    width = cols * TILE_WIDTH
    height = TITLE_HEIGHT + rows * (TILE_HEIGHT + CAPTION_HEIGHT)
    return round(height * dpi), round(width * dpi)


def _grid(count: int, columns: Optional[int]) -> tuple[int, int]:
    if columns is not None and (isinstance(columns, bool) or int(columns) < 1):
        raise ValueError(f"`columns` must be a positive integer or None, got {columns!r}.")
    cols = int(columns) if columns is not None else min(6, max(count, 3))
    cols = max(cols, 1)
    rows = max(1, math.ceil(count / cols))
    return cols, rows


def spectrogram_gallery(
    clips: Any,
    sample_rate: int,
    *,
    indices: Any = None,
    groups: Any = None,
    ratios: Any = None,
    title: str = "audio clips",
    columns: Optional[int] = None,
    top_db: float = 80.0,
    dpi: int = DPI,
) -> Figure:
    """A gallery of spectrograms, one tile per clip, captions underneath.

    Args:
        clips: B clips, each (T_i,) (lengths may differ), or a (B, T) array/tensor, at
            ``sample_rate``. B may be 0.
        sample_rate: the clips' rate in Hz (the frequency axis goes to half of it).
        indices: (B,) dataset indices for the captions (``#12``), or None.
        groups: (B,) group ids (song, prompt, class) for the captions (``[3]``), or None.
        ratios: (B,) nearest distance / k-NN radius for the captions (``1.84×``), or None.
        title: the line above the tiles.
        columns: tiles per row, or None (up to 6).
        top_db: dynamic range shown, in dB below the gallery's loudest bin.
        dpi: dots per inch.

    Returns:
        A Figure with an Agg canvas attached, of :func:`gallery_pixel_size` pixels; its
        axes ``fig.axes[i]`` hold tile ``i`` in reading order.

    Raises:
        ValueError: for clips that are not 1-D, caption lists of another length, a
            ``top_db`` that is not positive, or ``columns`` below 1.
    """
    tiles = _as_clips(clips)
    count = len(tiles)
    index_list = _column_values(indices, count, "indices")
    group_list = _column_values(groups, count, "groups")
    ratio_list = _column_values(ratios, count, "ratios")
    if not (float(top_db) > 0):
        raise ValueError(f"`top_db` must be positive, got {top_db!r}.")
    cols, _ = _grid(count, columns)
    height_px, width_px = gallery_pixel_size(count, columns, dpi)
    fig = Figure(figsize=(width_px / dpi, height_px / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    fig.text(
        0.5,
        1 - (TITLE_HEIGHT / 2) / (height_px / dpi),
        title,
        ha="center",
        va="center",
        fontsize=10,
    )
    if count == 0:
        fig.text(0.5, 0.4, "no clips to show", ha="center", va="center", fontsize=9)
        return fig
    specs = [spectrogram(c, sample_rate) for c in tiles]
    high = max(float(s.max()) for s in specs)
    low = high - float(top_db)
    nyquist = int(sample_rate) / 2.0
    fig_w, fig_h = width_px / dpi, height_px / dpi
    cell_h = TILE_HEIGHT + CAPTION_HEIGHT
    pad = 0.06  # inches between tiles
    for i, spec in enumerate(specs):
        row, col = divmod(i, cols)
        left = col * TILE_WIDTH + pad
        bottom = fig_h - TITLE_HEIGHT - row * cell_h - TILE_HEIGHT + pad
        ax = fig.add_axes(
            (
                left / fig_w,
                bottom / fig_h,
                (TILE_WIDTH - 2 * pad) / fig_w,
                (TILE_HEIGHT - 2 * pad) / fig_h,
            )
        )
        duration = max(len(tiles[i]), 1) / int(sample_rate)
        ax.imshow(
            np.clip(spec, low, high),
            origin="lower",
            aspect="auto",
            cmap=COLORMAP,
            vmin=low,
            vmax=high,
            extent=(0.0, duration, 0.0, nyquist),
            interpolation="nearest",
        )
        ax.set_xticks([])
        ax.set_yticks([])
        caption = _caption(i, index_list, group_list, ratio_list)
        if caption:
            fig.text(
                (col * TILE_WIDTH + TILE_WIDTH / 2) / fig_w,
                (bottom - pad - 0.02) / fig_h,
                caption,
                ha="center",
                va="top",
                fontsize=7,
            )
    return fig


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render a figure with its Agg canvas to an (H, W, 3) uint8 array.

    Args:
        fig: the figure (an Agg canvas is attached if it has another one).

    Returns:
        (H, W, 3) uint8 pixels.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.ascontiguousarray(np.asarray(canvas.buffer_rgba())[..., :3])
