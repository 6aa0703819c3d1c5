"""Image galleries: tiles with captions, sized for TensorBoard's image card.

:func:`gallery_figure` lays out any images (the sample galleries of
:mod:`lightning_embviz.figures.sample_galleries` are drawn by the same :func:`draw_gallery`).
Drawn on a ``Figure`` with the Agg canvas attached (no pyplot); the layout is fixed in inches,
so the rendered size is known in advance (:func:`gallery_columns`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightning_embviz._arrays import as_numpy
from lightning_embviz.figures.style import DPI, ArrayLike

__all__ = [
    "GALLERY_CAPTION_FONTSIZE",
    "GALLERY_TILE",
    "TENSORBOARD_CARD",
    "draw_gallery",
    "gallery_columns",
    "gallery_display_range",
    "gallery_figure",
    "gallery_images",
]


# Galleries are sized for TensorBoard's image card (about 300 x 240 px in TensorBoard 2.x,
# which shrinks the whole image to fit): few columns, large tiles and large captions, so a
# caption stays about 8 px tall there and 15 px at the image's actual size.
GALLERY_TILE = 1.2  # inches per image tile
# TensorBoard 2.x's default image card: the area the image is shrunk into (pixels).
TENSORBOARD_CARD = (303, 240)
GALLERY_CAPTION_FONTSIZE = 11.0  # points (15 px at 100 dpi)
_GALLERY_TITLE_FONTSIZE = 13.0
_GALLERY_SUBTITLE_FONTSIZE = 11.0
_GALLERY_SUBTITLE_LINE = 0.19  # inches per subtitle line
_GALLERY_GAP = 0.08  # inches between tiles
_GALLERY_MARGIN = 0.15
_GALLERY_CAPTION = 0.45  # inches below a tile for two caption lines
_GALLERY_LINE = 0.24  # inches per title line
_MAX_CLASSES_NAMED = 12


def gallery_images(images: ArrayLike, name: str) -> np.ndarray:
    """(B, C, H, W) with C in {1, 3}, or (B, H, W), as a float64 (B, H, W, C) array.

    uint8 values are divided by 255; every other dtype is kept as it is.

    Raises:
        TypeError: for values that are not numbers.
        ValueError: for any other shape.
    """
    arr = as_numpy(images)
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise TypeError(f"`{name}` must hold numbers, got dtype {arr.dtype}.")
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4 or arr.shape[1] not in (1, 3) or min(arr.shape[2:], default=0) < 1:
        raise ValueError(
            f"`{name}` must have shape (B, C, H, W) with C in (1, 3), or (B, H, W), got "
            f"{tuple(arr.shape)}."
        )
    scale = 255.0 if arr.dtype == np.uint8 else 1.0
    return np.moveaxis(arr.astype(np.float64) / scale, 1, -1)


def gallery_display_range(*blocks: np.ndarray) -> tuple[float, float]:
    """The value range mapped to black..white for a gallery's tiles, shared by all tiles.

    The rule (also used by the embedding projector's thumbnails): if every finite value lies
    in [0, 1] the images are shown as they are, (0, 1); otherwise the finite minimum and
    maximum over all tiles of the figure together (min-max jointly, so relative brightness
    between tiles is kept). A gallery of one constant value outside [0, 1] maps to mid-grey.

    Args:
        blocks: arrays of any shape holding the pixel values (uint8 already divided by 255).

    Returns:
        ``(low, high)`` with ``low <= high``.
    """
    finite = [b[np.isfinite(b)] for b in blocks]
    values = np.concatenate([f.reshape(-1) for f in finite]) if finite else np.zeros(0)
    if values.size == 0:
        return 0.0, 1.0
    low, high = float(values.min()), float(values.max())
    if low >= 0.0 and high <= 1.0:
        return 0.0, 1.0
    return low, high


def _to_display(tiles: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map values to [0, 1]: (x - low) / (high - low); NaN -> 0, +inf -> 1, -inf -> 0."""
    if high > low:
        out = (tiles - low) / (high - low)
    else:
        out = np.where(np.isfinite(tiles), 0.5, tiles)
    out = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(out, 0.0, 1.0)


def _class_count_line(counts: Mapping[Any, int], label: str) -> str:
    items = sorted(
        ((c, int(v)) for c, v in counts.items()), key=lambda cv: -cv[1]
    )  # stable: keeps the caller's order among equal counts
    nonzero = [(c, v) for c, v in items if v > 0]
    shown = nonzero[:_MAX_CLASSES_NAMED]
    parts = [f"{c}: {v}" for c, v in shown]
    text = f"{label}: " + (" · ".join(parts) if parts else "none")
    hidden = len(nonzero) - len(shown)
    if hidden:
        text += f" · … {hidden} more"
    zero = len(items) - len(nonzero)
    if zero and nonzero:
        text += f" ({zero} class{'es' if zero != 1 else ''} with none)"
    return text


def _wrap(text: str, width_in: float, fontsize: float) -> list[str]:
    import textwrap

    chars = max(int(width_in * 144 / fontsize), 20)  # ~0.5 em per character
    lines: list[str] = []
    for paragraph in text.split("\n"):
        lines += textwrap.wrap(paragraph, chars) or [""]
    return lines


def _board(fig: Figure) -> Any:
    """One invisible Axes over the whole figure, in inches from the bottom-left corner.

    Every tile, frame and caption of a gallery is drawn on it: one Axes instead of one per
    tile keeps building a 40-tile figure cheap.
    """
    if fig.axes:
        return fig.axes[0]
    width_in, height_in = fig.get_size_inches()
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(0.0, width_in)
    ax.set_ylim(0.0, height_in)
    ax.set_autoscale_on(False)
    return ax


def _gallery_block(
    fig: Figure,
    tiles: np.ndarray,
    captions: Sequence[str] | None,
    top: float,
    columns: int,
    low: float,
    high: float,
    color: str | None,
) -> float:
    """Draw tiles row by row from ``top`` (inches from the figure top); return the new top."""
    from matplotlib.patches import Rectangle

    ax = _board(fig)
    height_in = fig.get_size_inches()[1]
    shown = _to_display(tiles, low, high)
    for i, tile in enumerate(shown):
        row, col = divmod(i, columns)
        left = _GALLERY_MARGIN + col * (GALLERY_TILE + _GALLERY_GAP)
        tile_top = top + row * (GALLERY_TILE + _GALLERY_CAPTION + _GALLERY_GAP)
        bottom = height_in - tile_top - GALLERY_TILE
        # Fit the image in the square box, keeping its aspect ratio, centred.
        rows_px, cols_px = tile.shape[:2]
        scale = GALLERY_TILE / max(rows_px, cols_px)
        w, h = cols_px * scale, rows_px * scale
        x0 = left + (GALLERY_TILE - w) / 2
        y0 = bottom + (GALLERY_TILE - h) / 2
        upsampling = max(rows_px, cols_px) <= GALLERY_TILE * DPI
        options: dict[str, Any] = {
            "extent": (x0, x0 + w, y0, y0 + h),
            "interpolation": "nearest" if upsampling else "antialiased",
            "aspect": "auto",
        }
        if tile.shape[2] == 1:
            ax.imshow(tile[..., 0], cmap="gray", vmin=0.0, vmax=1.0, **options)
        else:
            ax.imshow(tile, **options)
        if color is not None:
            ax.add_patch(
                Rectangle((x0, y0), w, h, fill=False, edgecolor=color, linewidth=1.5, zorder=2)
            )
        if captions is not None:
            ax.text(
                left + GALLERY_TILE / 2, bottom - 0.03, captions[i], ha="center", va="top",
                fontsize=GALLERY_CAPTION_FONTSIZE, linespacing=1.1,
            )  # fmt: skip
    rows = -(-len(shown) // columns)
    return top + rows * (GALLERY_TILE + _GALLERY_CAPTION + _GALLERY_GAP)


def _gallery_extent(
    columns: int, main: int, contrast: int, head_lines: int, sub_lines: int
) -> tuple[float, float]:
    """(width, height) in inches of a gallery laid out ``columns`` tiles per row."""
    width = 2 * _GALLERY_MARGIN + columns * GALLERY_TILE + (columns - 1) * _GALLERY_GAP
    block_height = GALLERY_TILE + _GALLERY_CAPTION + _GALLERY_GAP
    title_height = 0.1 + _GALLERY_LINE * head_lines + _GALLERY_SUBTITLE_LINE * sub_lines + 0.1
    main_height = -(-main // columns) * block_height if main else 0.8
    contrast_height = 0.3 + -(-contrast // columns) * block_height if contrast else 0.0
    return width, title_height + main_height + contrast_height + _GALLERY_MARGIN


def gallery_columns(count: int, contrast: int = 0, title_lines: int = 4) -> int:
    """Tiles per row that show a gallery largest in TensorBoard's default image card.

    TensorBoard shrinks an image to fit its card (about 303 x 240 px in TensorBoard 2.x): a
    wide gallery is shrunk by its width, a tall one by its height. This picks the column
    count (2 to 8) whose layout is shrunk least, so captions stay as large as possible.

    Args:
        count: tiles in the main block.
        contrast: tiles in the contrast block.
        title_lines: title and subtitle lines above the tiles.

    Returns:
        The column count.
    """
    best, best_scale = 2, -1.0
    for columns in range(2, 9):
        width, height = _gallery_extent(columns, count, contrast, 1, max(title_lines - 1, 0))
        scale = min(TENSORBOARD_CARD[0] / (width * DPI), TENSORBOARD_CARD[1] / (height * DPI))
        if scale > best_scale + 1e-9:
            best, best_scale = columns, scale
    return best


def _check_captions(captions: Sequence[str] | None, count: int, name: str) -> list[str] | None:
    if captions is None:
        return None
    if isinstance(captions, str):
        raise TypeError(f"`{name}` must be a sequence of strings (one per image), got a str.")
    out = [str(c) for c in captions]
    if len(out) != count:
        raise ValueError(f"`{name}` must have one caption per image ({count}), got {len(out)}.")
    return out


def gallery_figure(
    images: ArrayLike,
    captions: Sequence[str] | None,
    title: str,
    *,
    columns: int | None = None,
    note_if_empty: str = "nothing to show",
    subtitle: str | None = None,
    class_counts: Mapping[Any, int] | None = None,
    class_counts_label: str = "per class",
    contrast_images: ArrayLike | None = None,
    contrast_captions: Sequence[str] | None = None,
    contrast_title: str | None = None,
    color: str | None = None,
    contrast_color: str | None = None,
) -> Figure:
    """A grid of image tiles with a caption under each, and an optional contrast block.

    Tiles are laid out ``columns`` per row (by default :func:`gallery_columns`: the layout
    that TensorBoard's image card shrinks least), in the given order (row by row),
    at a fixed size (1.2 inch, 120 pixels; small images are enlarged without smoothing, large
    ones shrunk with antialiasing), so the figure keeps its width from one epoch to the next.
    Captions are 11 pt (15 px, about 1/35 of the default width), so they stay readable when
    TensorBoard shrinks the image to its card. A second
    block (e.g. the fakes deepest in the real manifold) follows under its own heading.

    Display scaling, the same for every tile of the figure (both blocks): uint8 images are
    divided by 255; then if every finite value lies in [0, 1] the values are shown as they
    are, otherwise they are min-max scaled over all tiles jointly (the smallest finite value
    is black, the largest white), which keeps the relative brightness of the tiles. NaN is
    shown black, +inf white, -inf black. One-channel images are drawn in grey.

    With no images, the figure holds the title and ``note_if_empty`` instead of tiles (and
    the contrast block, if given).

    Args:
        images: (B, C, H, W) with C in {1, 3}, or (B, H, W); a tensor or array, any range.
            B may be 0.
        captions: one string per image (newlines allowed), or None.
        title: the first title line.
        columns: tiles per row (>= 1), or None for :func:`gallery_columns`'s choice.
        note_if_empty: the note drawn when there are no images.
        subtitle: a second title line, e.g. what the captions mean.
        class_counts: ``{class: count}``, e.g. missed samples per class
            (:func:`lightning_embviz.samples.missed_per_class`); the non-zero counts are named
            under the title, largest first (at most 12, then how many more).
        class_counts_label: how that line starts, e.g. ``"missed per class"``.
        contrast_images: a second block of tiles, same layouts as ``images``.
        contrast_captions: one string per contrast image, or None.
        contrast_title: the heading of the contrast block.
        color: a frame colour for the tiles (e.g. the colour that marks these samples in the
            scatter views), or None for no frame.
        contrast_color: the same for the contrast tiles.

    Returns:
        A Figure (Agg canvas attached), ``columns`` tiles wide.

    Raises:
        ValueError: on image shapes other than the above, a caption count other than the
            image count, or ``columns`` < 1.
        TypeError: on images that are not numbers, or ``captions`` given as one string.
    """
    main = gallery_images(images, "images")
    contrast = (
        gallery_images(contrast_images, "contrast_images") if contrast_images is not None else None
    )
    return draw_gallery(
        main,
        captions,
        title,
        columns=columns,
        note_if_empty=note_if_empty,
        subtitle=subtitle,
        class_counts=class_counts,
        class_counts_label=class_counts_label,
        contrast=contrast,
        contrast_captions=contrast_captions,
        contrast_title=contrast_title,
        color=color,
        contrast_color=contrast_color,
    )


def draw_gallery(
    main: np.ndarray,
    captions: Sequence[str] | None,
    title: str,
    *,
    columns: int | None,
    note_if_empty: str,
    subtitle: str | None,
    class_counts: Mapping[Any, int] | None,
    class_counts_label: str,
    contrast: np.ndarray | None,
    contrast_captions: Sequence[str] | None,
    contrast_title: str | None,
    color: str | None,
    contrast_color: str | None,
) -> Figure:
    """:func:`gallery_figure` on images already converted to (B, H, W, C) float64."""
    if columns is None:
        columns = gallery_columns(len(main), 0 if contrast is None else len(contrast))
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise ValueError(f"`columns` must be None or an int >= 1, got {columns!r}.")
    columns = int(columns)
    main_captions = _check_captions(captions, len(main), "captions")
    contrast_caps = (
        _check_captions(contrast_captions, len(contrast), "contrast_captions")
        if contrast is not None
        else None
    )
    if contrast is not None and len(contrast) == 0:
        contrast = None
    low, high = gallery_display_range(main, *([contrast] if contrast is not None else []))

    width = 2 * _GALLERY_MARGIN + columns * GALLERY_TILE + (columns - 1) * _GALLERY_GAP
    head = _wrap(title, width, _GALLERY_TITLE_FONTSIZE)
    sub = _wrap(subtitle, width, _GALLERY_SUBTITLE_FONTSIZE) if subtitle else []
    if class_counts:
        count_line = _class_count_line(class_counts, class_counts_label)
        sub += _wrap(count_line, width, _GALLERY_SUBTITLE_FONTSIZE)
    n_contrast = 0 if contrast is None else len(contrast)
    width, height = _gallery_extent(columns, len(main), n_contrast, len(head), len(sub))
    main_height = _gallery_extent(columns, len(main), 0, 0, 0)[1] - 0.2 - _GALLERY_MARGIN

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    fig.patch.set_facecolor("white")
    top = 0.1
    fig.text(
        0.5, 1 - top / height, "\n".join(head), ha="center", va="top",
        fontsize=_GALLERY_TITLE_FONTSIZE,
    )  # fmt: skip
    top += _GALLERY_LINE * len(head)
    if sub:
        fig.text(
            0.5, 1 - top / height, "\n".join(sub), ha="center", va="top",
            fontsize=_GALLERY_SUBTITLE_FONTSIZE, color="#333333",
        )  # fmt: skip
        top += _GALLERY_SUBTITLE_LINE * len(sub)
    top += 0.1
    if len(main):
        top = _gallery_block(fig, main, main_captions, top, columns, low, high, color)
    else:
        fig.text(
            0.5, 1 - (top + 0.4) / height, note_if_empty, ha="center", va="center",
            fontsize=_GALLERY_SUBTITLE_FONTSIZE, color="#555555", style="italic",
        )  # fmt: skip
        top += main_height
    if contrast is not None:
        fig.text(
            _GALLERY_MARGIN / width, 1 - (top + 0.05) / height, contrast_title or "",
            ha="left", va="top", fontsize=_GALLERY_SUBTITLE_FONTSIZE, color="#333333",
        )  # fmt: skip
        top += 0.3
        _gallery_block(fig, contrast, contrast_caps, top, columns, low, high, contrast_color)
    return fig
