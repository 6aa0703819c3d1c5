"""The ``closest_train`` gallery: the fakes closest to the training set, each beside its match.

Every pair is two tiles side by side, the generated image (framed in the fakes' colour) and
its nearest training image, captioned with the fake's row, the training row and their
distance in embedding space, closest pair first. Drawn with the gallery helpers of
:mod:`lightning_embviz.figures.galleries` (same tile size, captions and display scaling).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from lightning_embviz._arrays import as_numpy
from lightning_embviz.figures.galleries import draw_gallery, gallery_images
from lightning_embviz.figures.style import FAKE_COLOR, ArrayLike

__all__ = ["closest_train_figure", "pair_tiles"]

_PAIRS_PER_ROW = 2  # four tiles per row: the layout TensorBoard's card shrinks little


def _resized(tiles: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """(B, h, w, c) tiles as (B, height, width, channels): nearest-pixel resize, grey to RGB."""
    rows = np.arange(height) * tiles.shape[1] // height
    cols = np.arange(width) * tiles.shape[2] // width
    out = tiles[:, rows][:, :, cols]
    if out.shape[3] != channels:
        out = np.repeat(out, channels, axis=3)
    return out


def pair_tiles(fake_images: ArrayLike, train_images: ArrayLike) -> np.ndarray:
    """Interleave fakes and their training images as one (2G, H, W, C) float64 tile array.

    Both sets are brought to the larger height and width (nearest pixel) and to three
    channels when one of them has three; values are kept (uint8 divided by 255).

    Args:
        fake_images: (G, C, H, W) with C in {1, 3}, or (G, H, W).
        train_images: (G, C', H', W') or (G, H', W'), one per fake, in the same order.

    Returns:
        ``[fake_0, train_0, fake_1, train_1, ...]`` as (2G, H, W, C).

    Raises:
        ValueError: on other shapes, or a different count of fakes and training images.
        TypeError: on images that do not hold numbers.
    """
    fake = gallery_images(fake_images, "fake_images")
    train = gallery_images(train_images, "train_images")
    if len(fake) != len(train):
        raise ValueError(
            f"`fake_images` and `train_images` must pair up one to one, got {len(fake)} fakes "
            f"and {len(train)} training images."
        )
    height = max(fake.shape[1], train.shape[1])
    width = max(fake.shape[2], train.shape[2])
    channels = max(fake.shape[3], train.shape[3])
    fake = _resized(fake, height, width, channels)
    train = _resized(train, height, width, channels)
    tiles = np.empty((2 * len(fake), height, width, channels), dtype=np.float64)
    tiles[0::2], tiles[1::2] = fake, train
    return tiles


def closest_train_figure(
    fake_images: ArrayLike,
    train_images: ArrayLike,
    distances: ArrayLike,
    *,
    fake_indices: ArrayLike | None = None,
    train_indices: ArrayLike | None = None,
    title: str | None = None,
    subtitle: str | None = None,
) -> Figure:
    """The fakes closest to the training set, each beside its nearest training image.

    Pairs are drawn in the given order (pass them closest first, e.g. from
    :func:`lightning_embviz.engine.memorization_seam.closest_to_train`), two pairs per row:
    the fake on the left (framed), its nearest training sample on the right. The fake's
    caption gives its row and the distance ``d`` between the two embeddings; the training
    tile's caption its training row. A very small ``d`` next to two near-identical images
    is a copy. Display scaling is that of
    :func:`~lightning_embviz.figures.galleries.gallery_figure`, joint over all tiles.

    Args:
        fake_images: (G, C, H, W) with C in {1, 3}, or (G, H, W); any value range.
        train_images: (G, C', H', W') or (G, H', W'): the nearest training image of each.
        distances: (G,) distance between each fake and its training sample.
        fake_indices: (G,) row (or dataset index) of each fake for the captions (-1: none
            shown); None: 0..G-1.
        train_indices: (G,) training row of each match; None: no training row in captions.
        title: first title line (e.g. the epoch and step); None: none.
        subtitle: replaces the default explanation line.

    Returns:
        A Figure (Agg canvas attached); with G = 0 a note says there is nothing to show.

    Raises:
        ValueError: on image shapes other than the above or lengths that differ from G.
        TypeError: on images that do not hold numbers.

    Example::

        >>> import numpy as np
        >>> fig = closest_train_figure(np.zeros((2, 8, 8)), np.ones((2, 1, 8, 8)), [0.1, 0.4])
        >>> len(fig.axes[0].images)
        4
    """
    tiles = pair_tiles(fake_images, train_images)
    count = len(tiles) // 2
    dist = as_numpy(distances).reshape(-1).astype(np.float64)
    fake_idx = np.arange(count) if fake_indices is None else as_numpy(fake_indices).reshape(-1)
    train_idx = None if train_indices is None else as_numpy(train_indices).reshape(-1)
    for name, values in (
        ("distances", dist),
        ("fake_indices", fake_idx),
        ("train_indices", train_idx),
    ):
        if values is not None and len(values) != count:
            raise ValueError(f"`{name}` must have one entry per pair ({count}), got {len(values)}.")
    captions: list[str] = []
    for i in range(count):
        name = "fake" if int(fake_idx[i]) < 0 else f"fake #{int(fake_idx[i])}"  # -1: no index
        captions.append(f"{name}\nd={dist[i]:.3g}")
        captions.append("nearest train" if train_idx is None else f"train #{int(train_idx[i])}")
    head = "closest to the training set" if not title else f"{title}\nclosest to the training set"
    sub = subtitle or (
        "each fake (framed) beside its nearest training sample, closest first; "
        "d: distance between their embeddings"
    )
    return _pairs_figure(tiles, captions, head, sub)


def _pairs_figure(tiles: np.ndarray, captions: Sequence[str], head: str, sub: str) -> Figure:
    """The gallery of the pairs, with a frame around each fake tile."""
    fig = draw_gallery(
        tiles,
        captions,
        head,
        columns=2 * _PAIRS_PER_ROW,
        note_if_empty="no fake with a known nearest training sample",
        subtitle=sub,
        class_counts=None,
        class_counts_label="",
        contrast=None,
        contrast_captions=None,
        contrast_title=None,
        color=None,
        contrast_color=None,
    )
    if len(tiles):
        _frame_fakes(fig, len(tiles) // 2)
    return fig


def _frame_fakes(fig: Figure, count: int) -> None:
    """A frame in the fakes' colour around every fake tile (the even tiles)."""
    from matplotlib.patches import Rectangle

    ax = fig.axes[0]
    for image in ax.images[0::2][:count]:
        x0, x1, y0, y1 = image.get_extent()
        ax.add_patch(
            Rectangle(
                (x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=FAKE_COLOR, lw=1.5, zorder=2
            )
        )
