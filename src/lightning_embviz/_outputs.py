"""The output contract: what ``validation_step`` (or ``embed``) must return, checked in one place.

The callback calls :func:`parse_outputs` on every collected batch, and also on the batches of
the sanity check and on the first batch of a validation run it does not measure, so that a
broken ``validation_step`` fails before the first training step instead of after an epoch.
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

__all__ = ["BatchOutputs", "OutputKeys", "Thumbnails", "make_thumbnails", "parse_outputs"]


@dataclasses.dataclass(frozen=True)
class OutputKeys:
    """Names of the keys in the validation outputs."""

    real: str = "real"
    fake: str = "fake"
    labels: str = "labels"
    index: str = "index"
    real_images: str = "real_images"
    fake_images: str = "fake_images"


@dataclasses.dataclass
class BatchOutputs:
    """One batch, checked: features (B, D) float32/float64, int64 labels and index or None."""

    real: Tensor
    fake: Tensor
    real_labels: Optional[Tensor]
    fake_labels: Optional[Tensor]
    index: Optional[Tensor]
    real_images: Optional[Thumbnails] = None
    fake_images: Optional[Thumbnails] = None


@dataclasses.dataclass
class Thumbnails:
    """Small copies of a batch's images for the galleries: uint8 pixels and each one's range.

    ``pixels`` (B, C, h, w) uint8 hold each image min-max scaled to 0..255 after an area
    downscale to at most ``max_side`` pixels per side; ``ranges`` (B, 2) float32 hold each
    image's (min, max), so :meth:`values` restores the values (to 1/255 of the range) and a
    gallery can scale all its tiles jointly. About ``C * max_side**2`` bytes per image.
    """

    pixels: Tensor
    ranges: Tensor

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def select(self, index: Tensor) -> Thumbnails:
        """The images at ``index`` (a bool mask or positions)."""
        return Thumbnails(self.pixels[index], self.ranges[index])

    def values(self) -> Tensor:
        """The images as float32 (B, C, h, w) in their original value range."""
        low, high = self.ranges[:, 0], self.ranges[:, 1]
        scale = ((high - low) / 255.0).view(-1, 1, 1, 1)
        return low.view(-1, 1, 1, 1) + self.pixels.float() * scale

    @staticmethod
    def cat(parts: list[Thumbnails]) -> Thumbnails:
        """Concatenate along the batch."""
        return Thumbnails(
            torch.cat([p.pixels for p in parts]), torch.cat([p.ranges for p in parts])
        )


def make_thumbnails(images: Tensor, max_side: int) -> Thumbnails:
    """Thumbnails of (B, C, H, W) float images (see :class:`Thumbnails`); NaN/Inf become 0."""
    x = torch.nan_to_num(images.detach().float(), nan=0.0, posinf=0.0, neginf=0.0).cpu()
    height, width = x.shape[2:]
    if max(height, width) > max_side:
        scale = max_side / max(height, width)
        size = (max(1, round(height * scale)), max(1, round(width * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="area")
    flat = x.reshape(x.shape[0], -1)
    low = flat.min(dim=1).values if flat.shape[1] else torch.zeros(x.shape[0])
    high = flat.max(dim=1).values if flat.shape[1] else torch.zeros(x.shape[0])
    span = (high - low).clamp_min(1e-12).view(-1, 1, 1, 1)
    pixels = ((x - low.view(-1, 1, 1, 1)) / span * 255.0).round().clamp(0, 255).to(torch.uint8)
    return Thumbnails(pixels, torch.stack([low, high], dim=1))


def _images(value: Any, key: str, rows: int, where: str, max_side: int) -> Optional[Thumbnails]:
    if value is None:
        return None
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(
            f"EmbeddingMonitor: {key!r} must be a tensor of images (B, C, H, W) or (B, H, W), "
            f"got {type(value).__name__} ({where})."
        )
    x = value.unsqueeze(1) if value.ndim == 3 else value
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.is_complex():
        raise ValueError(
            f"EmbeddingMonitor: {key!r} must hold images of shape (B, C, H, W) with C in (1, 3) "
            f"or (B, H, W), got shape {tuple(value.shape)} ({where})."
        )
    if x.shape[0] != rows:
        raise ValueError(
            f"EmbeddingMonitor: {key!r} has {x.shape[0]} images but there are {rows} embedding "
            f"rows ({where}); return one image per row."
        )
    return make_thumbnails(x, max_side)


def _features(value: Any, key: str, where: str, keep_on_device: bool) -> Tensor:
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    if not isinstance(value, Tensor):
        raise TypeError(
            f"EmbeddingMonitor: {key!r} must be a tensor of shape (B, D) or (B, ...), got "
            f"{type(value).__name__} ({where})."
        )
    if value.ndim < 2:
        raise ValueError(
            f"EmbeddingMonitor: {key!r} must have shape (B, D) or (B, ...), got shape "
            f"{tuple(value.shape)} ({where})."
        )
    if value.is_complex():
        raise TypeError(
            f"EmbeddingMonitor: {key!r} must hold real numbers, got dtype {value.dtype} ({where})."
        )
    x = value.detach().reshape(value.shape[0], math.prod(value.shape[1:]))
    # float32 stays float32. The reference computes every other input (integers, booleans,
    # float16, bfloat16) in float64, and so do we: those values are exact in float64.
    x = x if x.dtype == torch.float32 else x.to(torch.float64)
    if not keep_on_device:
        x = x.cpu()
    return x


def _labels(
    value: Any, keys: OutputKeys, real: Tensor, fake: Tensor, where: str
) -> tuple[Optional[Tensor], Optional[Tensor]]:
    if value is None:
        return None, None
    if isinstance(value, Mapping):
        parts = {"real": value.get("real"), "fake": value.get("fake")}
    else:
        parts = {"real": value, "fake": None}
    out: dict[str, Optional[Tensor]] = {}
    for name, rows in (("real", real), ("fake", fake)):
        labels = parts[name]
        if labels is None:
            out[name] = None
            continue
        t = torch.as_tensor(labels).detach().reshape(-1).to(device=rows.device)
        if t.shape[0] != rows.shape[0]:
            raise ValueError(
                f"EmbeddingMonitor: {keys.labels!r} for the {name} rows has "
                f"{t.shape[0]} entries but there are {rows.shape[0]} {name} rows ({where})."
            )
        out[name] = t.to(torch.int64)
    return out["real"], out["fake"]


def parse_outputs(
    outputs: Any,
    keys: OutputKeys,
    *,
    source: str,
    where: str,
    keep_on_device: bool = False,
    thumbnail_side: int = 32,
) -> BatchOutputs:
    """Check one batch's outputs against the contract and return them as tensors.

    Args:
        outputs: What ``validation_step`` (or ``embed``) returned.
        keys: The key names.
        source: ``"`validation_step`"`` or ``"`embed(pl_module, batch)`"``, for messages.
        where: ``"dataloader 0, batch 3"``, for messages.
        keep_on_device: Leave the features where they are (else they move to the CPU).
        thumbnail_side: Largest side of the image thumbnails kept for the galleries.

    Raises:
        TypeError: Outputs that are not a dict, or values of the wrong type.
        ValueError: Missing keys, bad shapes, real and fake of different widths, label or
            index counts that do not match the rows.
    """
    if outputs is None:
        raise ValueError(
            f"EmbeddingMonitor: {source} returned None ({where}). Expected a dict with keys "
            f"{keys.real!r} and {keys.fake!r} holding (B, D) tensors (optionally "
            f"{keys.labels!r}), or pass `EmbeddingMonitor(embed=...)`."
        )
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"EmbeddingMonitor: {source} returned a {type(outputs).__name__} ({where}). "
            f"Expected a dict with keys {keys.real!r} and {keys.fake!r}."
        )
    missing = [k for k in (keys.real, keys.fake) if k not in outputs]
    if missing:
        raise ValueError(
            f"EmbeddingMonitor: {source} returned a dict with keys {sorted(map(str, outputs))} "
            f"({where}); missing {missing}. Expected keys {keys.real!r} and "
            f"{keys.fake!r} (set `EmbeddingMonitor(real_key=..., fake_key=...)` to use "
            "other names)."
        )
    real = _features(outputs[keys.real], keys.real, where, keep_on_device)
    fake = _features(outputs[keys.fake], keys.fake, where, keep_on_device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(
            f"EmbeddingMonitor: {keys.real!r} and {keys.fake!r} must have the same "
            f"width D after flattening, got shapes {tuple(real.shape)} and "
            f"{tuple(fake.shape)} ({where})."
        )
    real_labels, fake_labels = _labels(outputs.get(keys.labels), keys, real, fake, where)
    index = outputs.get(keys.index)
    index_t: Optional[Tensor] = None
    if index is not None:
        index_t = torch.as_tensor(index).detach().reshape(-1)
        if index_t.is_floating_point() or index_t.is_complex():
            raise TypeError(
                f"EmbeddingMonitor: {keys.index!r} must hold integer dataset indices, got dtype "
                f"{index_t.dtype} ({where})."
            )
        if index_t.shape[0] != real.shape[0]:
            raise ValueError(
                f"EmbeddingMonitor: {keys.index!r} has {index_t.shape[0]} entries but there "
                f"are {real.shape[0]} real rows ({where})."
            )
        index_t = index_t.to(torch.int64).cpu()
    real_images = _images(
        outputs.get(keys.real_images), keys.real_images, len(real), where, thumbnail_side
    )
    fake_images = _images(
        outputs.get(keys.fake_images), keys.fake_images, len(fake), where, thumbnail_side
    )
    return BatchOutputs(real, fake, real_labels, fake_labels, index_t, real_images, fake_images)
