"""The embedder contract and the one input boundary for images and waveforms.

An embedder is any ``nn.Module`` that maps a batch of inputs to a (B, D) tensor. The
ready-made ones in this package derive from :class:`Embedder`, which adds the facts a caller
needs before it sends data: ``dim`` (D), ``modality`` (``"image"`` or ``"audio"``) and, for
audio, ``sample_rate``. Inputs are checked here, once, with messages that name the fix.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import nn

Modality = Literal["image", "audio"]

__all__ = [
    "Embedder",
    "as_image_batch",
    "as_waveform_batch",
    "images_to_float255",
    "images_to_uint8",
]


class Embedder(nn.Module):
    """Base class of the ready-made embedders: a frozen module mapping a batch to (B, D).

    Subclasses are built in eval mode with ``requires_grad`` off, and implement
    ``forward(batch) -> Tensor`` of shape (B, D), float32, on the module's device.

    Attributes:
        dim: D, the length of one embedding.
        modality: ``"image"`` (inputs (B, C, H, W)) or ``"audio"`` (inputs (B, T)).
        sample_rate: for audio, the rate in Hz the waveforms must have; ``None`` for images.
    """

    dim: int
    modality: Modality
    sample_rate: int | None

    def __init__(self, *, dim: int, modality: Modality, sample_rate: int | None = None) -> None:
        super().__init__()
        self.dim = int(dim)
        self.modality = modality
        self.sample_rate = None if sample_rate is None else int(sample_rate)

    def _freeze(self) -> None:
        """Put the module in eval mode and turn gradients off (feature extractors only)."""
        self.eval()
        self.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter or buffer (CPU when it has none)."""
        for parameter in self.parameters():
            return parameter.device
        for buffer in self.buffers():
            return buffer.device
        return torch.device("cpu")

    def extra_repr(self) -> str:
        """Show the contract in ``print(embedder)``."""
        rate = "" if self.sample_rate is None else f", sample_rate={self.sample_rate}"
        return f"dim={self.dim}, modality={self.modality!r}{rate}"


def _as_tensor(values: Any, who: str) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values
    if isinstance(values, np.ndarray):
        return torch.from_numpy(values)
    raise TypeError(
        f"`{who}` expects a torch.Tensor or a NumPy array, got {type(values).__name__}."
    )


def as_image_batch(images: Any, who: str) -> torch.Tensor:
    """Check a batch of images and return it as (B, 3, H, W), grayscale repeated to RGB.

    Args:
        images: uint8 values in [0, 255] or floating values in [0, 1], of shape
            (B, C, H, W) with C in (1, 3), or (B, H, W) (grayscale). A tensor or a NumPy array.
        who: the embedder's name, quoted in error messages.

    Returns:
        The same values, shape (B, 3, H, W), dtype unchanged (uint8 or floating); a single
        channel is repeated three times (a view, no copy).

    Raises:
        TypeError: for a dtype other than uint8 or floating.
        ValueError: for another layout (channels-last, RGBA, an empty batch) or floating
            values outside [0, 1] or not finite.
    """
    images = _as_tensor(images, who)
    if images.dtype != torch.uint8 and not images.is_floating_point():
        raise TypeError(
            f"`{who}` expects uint8 images in [0, 255] or floating images in [0, 1], "
            f"got dtype {images.dtype}."
        )
    if images.ndim == 3:
        images = images.unsqueeze(1)
    shape = tuple(images.shape)
    if images.ndim != 4 or shape[1] not in (1, 3):
        hint = ""
        if images.ndim == 4 and shape[-1] in (1, 3):
            hint = " It looks channels-last: pass images.permute(0, 3, 1, 2)."
        elif images.ndim == 4 and shape[1] == 4:
            hint = " Drop the alpha channel first: images[:, :3]."
        raise ValueError(
            f"`{who}` expects images of shape (B, C, H, W) with C in (1, 3), or (B, H, W); "
            f"got shape {shape}.{hint}"
        )
    if shape[0] == 0 or shape[2] == 0 or shape[3] == 0:
        raise ValueError(f"`{who}` got an empty batch of images, shape {shape}.")
    if images.is_floating_point():
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"`{who}` got images with NaN or infinite values.")
        low, high = float(images.min()), float(images.max())
        if low < 0.0 or high > 1.0:
            raise ValueError(
                f"`{who}` expects floating images in [0, 1], got values in [{low:.4g}, {high:.4g}]"
                ". Map [-1, 1] outputs with (x + 1) / 2, or pass uint8 images."
            )
    if shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def images_to_float255(images: torch.Tensor) -> torch.Tensor:
    """Return checked images as float32 values on the 0..255 scale, without rounding.

    Args:
        images: the output of :func:`as_image_batch`, (B, 3, H, W).

    Returns:
        (B, 3, H, W) float32: uint8 values as they are, floating values times 255.
    """
    if images.dtype == torch.uint8:
        return images.to(torch.float32)
    return images.to(torch.float32) * 255.0


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Return checked images as uint8, rounding floating values ``round(255 * x)``.

    Args:
        images: the output of :func:`as_image_batch`, (B, 3, H, W).

    Returns:
        (B, 3, H, W) uint8.
    """
    if images.dtype == torch.uint8:
        return images
    return (images.to(torch.float32) * 255.0).round_().clamp_(0, 255).to(torch.uint8)


def as_waveform_batch(
    waveforms: Any, who: str, expected_rate: int, sample_rate: int | None = None
) -> torch.Tensor:
    """Check a batch of waveforms and return it as mono float32 (B, T) on the CPU.

    Args:
        waveforms: floating (B, T), or (B, C, T) (channels are averaged to mono). A tensor or
            a NumPy array.
        who: the embedder's name, quoted in error messages.
        expected_rate: the rate in Hz the embedder works at.
        sample_rate: the rate of ``waveforms`` if the caller knows it; checked against
            ``expected_rate``.

    Returns:
        (B, T) float32, detached, on the CPU (the feature extractors work in NumPy).

    Raises:
        TypeError: for a non-floating dtype.
        ValueError: for a wrong rate, another layout, an empty batch or non-finite values.
    """
    if sample_rate is not None and int(sample_rate) != int(expected_rate):
        raise ValueError(
            f"`{who}` expects audio at {expected_rate} Hz, got {sample_rate} Hz. Resample the "
            f"waveforms to {expected_rate} Hz first (no resampling is done for you)."
        )
    waveforms = _as_tensor(waveforms, who)
    if not waveforms.is_floating_point():
        raise TypeError(
            f"`{who}` expects floating waveforms (B, T), got dtype {waveforms.dtype}. "
            "Convert integer PCM with x / 32768."
        )
    if waveforms.ndim == 3:
        waveforms = waveforms.mean(dim=1)
    if waveforms.ndim != 2:
        raise ValueError(
            f"`{who}` expects waveforms of shape (B, T) or (B, C, T), "
            f"got shape {tuple(waveforms.shape)}."
        )
    if waveforms.shape[0] == 0 or waveforms.shape[1] == 0:
        raise ValueError(
            f"`{who}` got an empty batch of waveforms, shape {tuple(waveforms.shape)}."
        )
    if not bool(torch.isfinite(waveforms).all()):
        raise ValueError(f"`{who}` got waveforms with NaN or infinite values.")
    return waveforms.detach().to(device="cpu", dtype=torch.float32)
