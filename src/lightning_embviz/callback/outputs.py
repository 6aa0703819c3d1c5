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

__all__ = [
    "BatchOutputs",
    "GalleryImages",
    "OutputKeys",
    "Thumbnails",
    "make_thumbnails",
    "parse_outputs",
]


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
    # Why images were left out of this batch (``strict_images=False`` only), or None.
    image_problem: Optional[str] = None


@dataclasses.dataclass
class Thumbnails:
    """Small copies of a batch's images for the galleries: uint8 pixels and each one's range.

    ``pixels`` (B, C, h, w) uint8 hold each image after an area downscale to at most
    ``max_side`` pixels per side; ``ranges`` (B, 2) float32 say what the codes mean:

    - ``low <= high``: code ``p`` is the value ``low + p * (high - low) / 255``. Images whose
      finite values all lie in [0, 1] (uint8 images are divided by 255 first, the README's
      rule) are stored with the range exactly (0, 1), so ``p / 255``: a uint8 image and the
      same image as float in [0, 1] give identical thumbnails. Other images are min-max
      scaled over their own finite values.
    - ``low > high`` (stored swapped): the image holds non-finite pixels. Codes 0..252 are the
      finite values ``high + p * (low - high) / 252``; 253 is NaN, 254 +inf, 255 -inf, so
      the gallery shows them as the README says (NaN black, +inf white) whatever the range.

    :meth:`values` restores the values (to 1/255 of the range), so a gallery scales all its
    tiles jointly. About ``C * max_side**2`` bytes per image.
    """

    pixels: Tensor
    ranges: Tensor

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def select(self, index: Tensor) -> Thumbnails:
        """The images at ``index`` (a bool mask or positions)."""
        return Thumbnails(self.pixels[index], self.ranges[index])

    def values(self) -> Tensor:
        """The images as float32 (B, C, h, w) in their original value range, NaN/inf kept."""
        first, second = self.ranges[:, 0], self.ranges[:, 1]
        special = (first > second).view(-1, 1, 1, 1)
        low = torch.minimum(first, second).view(-1, 1, 1, 1)
        span = (first - second).abs().view(-1, 1, 1, 1)
        codes = self.pixels.float()
        levels = torch.where(special, torch.tensor(_FINITE_CODES), torch.tensor(255.0))
        out = low + codes * (span / levels)
        for code, value in _SPECIAL_CODES.items():
            out = torch.where(special & (self.pixels == code), torch.tensor(value), out)
        return out

    @staticmethod
    def cat(parts: list[Thumbnails]) -> Thumbnails:
        """Concatenate along the batch."""
        return Thumbnails(
            torch.cat([p.pixels for p in parts]), torch.cat([p.ranges for p in parts])
        )

    @staticmethod
    def blank(count: int, shape: tuple[int, ...]) -> Thumbnails:
        """``count`` black thumbnails of ``shape`` (C, h, w): stand-ins for dropped images."""
        return Thumbnails(torch.zeros((count, *shape), dtype=torch.uint8), torch.zeros(count, 2))


# Codes of the non-finite pixels in a thumbnail with a swapped range (see Thumbnails).
_FINITE_CODES = 252.0
_SPECIAL_CODES = {253: math.nan, 254: math.inf, 255: -math.inf}


def _area_downscale(x: Tensor, max_side: int) -> Tensor:
    """Area-downscale (B, C, H, W) float32 to at most ``max_side`` per side, NaN/inf kept.

    Finite pixels are averaged over the finite part of each output pixel's area; an output
    pixel whose area is mostly non-finite takes the most frequent non-finite value.
    """
    height, width = x.shape[2:]
    if max(height, width) <= max_side:
        return x
    scale = max_side / max(height, width)
    size = (max(1, round(height * scale)), max(1, round(width * scale)))

    def area(t: Tensor) -> Tensor:
        return torch.nn.functional.interpolate(t, size=size, mode="area")

    finite = torch.isfinite(x)
    if bool(finite.all()):
        return area(x)
    weight = area(finite.float())
    mean = area(torch.where(finite, x, torch.zeros(()))) / weight.clamp_min(1e-12)
    kinds = torch.stack([area(m.float()) for m in (torch.isnan(x), x == math.inf, x == -math.inf)])
    fill = torch.tensor([math.nan, math.inf, -math.inf])[kinds.argmax(dim=0)]
    return torch.where(weight >= 0.5, mean, fill)


def make_thumbnails(images: Tensor, max_side: int) -> Thumbnails:
    """Thumbnails of (B, C, H, W) images of any real dtype (see :class:`Thumbnails`).

    uint8 images are divided by 255 (as the galleries do with uint8 arrays); NaN, +inf and
    -inf pixels are kept as such, so the gallery draws them black, white and black.
    """
    src = images.detach()
    x = src.cpu().float()
    if src.dtype == torch.uint8:
        x = x / 255.0
    x = _area_downscale(x, max_side)
    count = x.shape[0]
    flat = x.reshape(count, -1)
    finite = torch.isfinite(flat)
    has_finite = finite.any(dim=1)
    low = high = torch.zeros(count)
    if flat.shape[1]:
        inf = torch.tensor(math.inf)
        low = torch.where(finite, flat, inf).min(dim=1).values
        high = torch.where(finite, flat, -inf).max(dim=1).values
        low = torch.where(has_finite, low, torch.zeros(()))
        high = torch.where(has_finite, high, torch.zeros(()))
    unit = (low >= 0.0) & (high <= 1.0)
    low = torch.where(unit, torch.zeros(()), low)
    high = torch.where(unit, torch.ones(()), high)
    special = ~finite.all(dim=1)
    # A swapped range must be strictly decreasing to be told apart: widen an empty one.
    high = torch.where(special & (high <= low), low + low.abs().clamp_min(1.0), high)
    levels = torch.where(special, torch.tensor(_FINITE_CODES), torch.tensor(255.0))
    span = (high - low).clamp_min(1e-30).view(-1, 1, 1, 1)
    scaled = (x - low.view(-1, 1, 1, 1)) / span * levels.view(-1, 1, 1, 1)
    codes = torch.nan_to_num(scaled, nan=0.0, posinf=0.0, neginf=0.0).round()
    codes = torch.minimum(codes.clamp_min(0.0), levels.view(-1, 1, 1, 1))
    for code, value in _SPECIAL_CODES.items():
        hit = torch.isnan(x) if math.isnan(value) else x == value
        codes = torch.where(hit, torch.tensor(float(code)), codes)
    ranges = torch.where(
        special.view(-1, 1), torch.stack([high, low], dim=1), torch.stack([low, high], dim=1)
    )
    return Thumbnails(codes.to(torch.uint8), ranges.float())


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
    strict_images: bool = True,
) -> BatchOutputs:
    """Check one batch's outputs against the contract and return them as tensors.

    Args:
        outputs: What ``validation_step`` (or ``embed``) returned.
        keys: The key names.
        source: ``"`validation_step`"`` or ``"`embed(pl_module, batch)`"``, for messages.
        where: ``"dataloader 0, batch 3"``, for messages.
        keep_on_device: Leave the features where they are (else they move to the CPU).
        thumbnail_side: Largest side of the image thumbnails kept for the galleries.
        strict_images: Raise on bad images (the contract check). If False, a batch's bad
            images are left out (None) and ``image_problem`` says why: images only feed the
            galleries, and bad data never ends a training run.

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
    images: list[Optional[Thumbnails]] = []
    problem = None
    for key, rows in ((keys.real_images, len(real)), (keys.fake_images, len(fake))):
        try:
            images.append(_images(outputs.get(key), key, rows, where, thumbnail_side))
        except (TypeError, ValueError) as err:
            if strict_images:
                raise
            images.append(None)
            problem = problem or str(err)
    return BatchOutputs(
        real, fake, real_labels, fake_labels, index_t, images[0], images[1], problem
    )


class GalleryImages:
    """Keeps one validation run's images consistent, so that bad images never end a run.

    The first collected batch decides whether each set (real, fake) comes with images and of
    which thumbnail shape. A later batch that breaks this (images missing, of another size,
    or unusable) does not raise: :meth:`admit` gives that batch blank stand-ins of the
    run's shape (so the buffer stays consistent), marks the run's galleries as dropped, and
    returns a message to warn once. The metrics are not touched. One instance per run and
    dataloader.
    """

    def __init__(self) -> None:
        self.shapes: Optional[tuple[Optional[tuple[int, ...]], Optional[tuple[int, ...]]]] = None
        self.dropped = False

    def admit(self, batch: BatchOutputs, keys: OutputKeys, where: str) -> Optional[str]:
        """Make ``batch``'s images fit the run (in place); a message when they did not.

        Args:
            batch: One parsed batch; its ``real_images``/``fake_images`` may be replaced.
            keys: The key names, for the message.
            where: ``"dataloader 0, batch 3"``, for the message.

        Returns:
            None if the images fit, else why this run's galleries are dropped.
        """
        got = tuple(
            None if t is None else tuple(int(n) for n in t.pixels.shape[1:])
            for t in (batch.real_images, batch.fake_images)
        )
        if self.shapes is None:
            self.shapes = (got[0], got[1])
            if batch.image_problem is None:
                return None
        problems = [] if batch.image_problem is None else [batch.image_problem]
        fixed: list[Optional[Thumbnails]] = []
        for key, want, have, thumbs, rows in (
            (keys.real_images, self.shapes[0], got[0], batch.real_images, len(batch.real)),
            (keys.fake_images, self.shapes[1], got[1], batch.fake_images, len(batch.fake)),
        ):
            if want == have:
                fixed.append(thumbs)
                continue
            if have is None:
                problems.append(f"{key!r} is missing ({where}) but earlier batches had it")
            elif want is None:
                problems.append(f"{key!r} is given ({where}) but earlier batches lacked it")
            else:
                problems.append(
                    f"{key!r} gives thumbnails of shape {have} ({where}), earlier batches {want}"
                )
            fixed.append(None if want is None else Thumbnails.blank(rows, want))
        batch.real_images, batch.fake_images = fixed
        if not problems:
            return None
        first = not self.dropped
        self.dropped = True
        if not first:
            return None
        return (
            "EmbeddingMonitor: inconsistent images in a validation run: "
            + "; ".join(problems)
            + ". The galleries of this run are dropped; the metrics are logged as usual. "
            "Return images of one size with every batch, or with none."
        )
