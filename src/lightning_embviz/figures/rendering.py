"""Rendering: a figure drawn once on the Agg canvas, to an RGB array or PNG bytes.

The Agg canvas is the one renderer (no pyplot): the pixels of :func:`figure_to_array` are what
every logger ships, and :func:`figure_to_png` encodes exactly those pixels.
"""

from __future__ import annotations

import io
from typing import Optional

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["RenderedFigure", "encode_png", "figure_to_array", "figure_to_png"]


def _canvas(fig: Figure) -> FigureCanvasAgg:
    canvas = fig.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(fig)
    return canvas


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an RGB image array with the Agg canvas (the one renderer).

    Args:
        fig: the figure.

    Returns:
        (H, W, 3) uint8 array.
    """
    canvas = _canvas(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3])


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode an (H, W, 3) uint8 image as PNG bytes (lossless: decodes to the same pixels)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes: the pixels of :func:`figure_to_array`, PNG-encoded.

    Args:
        fig: the figure.

    Returns:
        The PNG file content.
    """
    return encode_png(figure_to_array(fig))


class RenderedFigure:
    """A figure drawn once: its pixels, and PNG bytes encoded from them on first use.

    Loggers that take pixels (TensorBoard, W&B) never pay for the PNG; loggers that store files
    (CSV, MLflow, plain folders) all write the same bytes.

    Args:
        pixels: (H, W, 3) uint8 image.
    """

    __slots__ = ("_png", "pixels")

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels
        self._png: Optional[bytes] = None

    @classmethod
    def from_figure(cls, fig: Figure) -> RenderedFigure:
        """Draw ``fig`` with the Agg canvas."""
        return cls(figure_to_array(fig))

    @property
    def png(self) -> bytes:
        """The PNG encoding of :attr:`pixels` (computed once)."""
        if self._png is None:
            self._png = encode_png(self.pixels)
        return self._png
