"""``EmbeddingMonitor(embedder=...)``: raw images or audio in the outputs, embeddings out.

With an embedder, ``validation_step`` (or ``embed``) returns the samples themselves --
``"real_images"``/``"fake_images"`` (B, C, H, W) or (B, H, W) for an image embedder (the
keys the galleries read), ``"real_audio"``/``"fake_audio"`` (B, T) or (B, C, T) for an
audio one (``embedder.modality == "audio"``) -- and :class:`BatchEmbedder` turns them into
the ``"real"``/``"fake"`` embeddings the rest of the callback reads.

The embedder belongs to the callback, never to the LightningModule: it is moved to the
module's device as a plain object (never assigned as a submodule), so it stays out of the
module's ``state_dict``, its checkpoint and its optimizer. Each call runs in eval mode under
``torch.no_grad()`` in chunks of ``batch_size`` rows, and puts the embedder's own
train/eval flag back afterwards; the user's model is not touched. No Lightning here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor, nn

from lightning_embviz.embedders.spec import embed_in_batches

__all__ = ["BatchEmbedder", "check_embedder", "embedder_modality"]

_MODALITIES = ("image", "audio")
AUDIO_KEYS = ("real_audio", "fake_audio")


def embedder_modality(embedder: nn.Module) -> str:
    """``embedder.modality`` (``"image"`` or ``"audio"``); ``"image"`` when it has none."""
    return str(getattr(embedder, "modality", "image"))


def check_embedder(embedder: Any, arg: str = "embedder") -> Optional[nn.Module]:
    """Check ``EmbeddingMonitor(embedder=...)``: None or an ``nn.Module`` of a known modality.

    Raises:
        TypeError: If ``embedder`` is not an ``nn.Module``.
        ValueError: If its ``modality`` attribute is neither ``"image"`` nor ``"audio"``.
    """
    if embedder is None:
        return None
    if not isinstance(embedder, nn.Module):
        raise TypeError(
            f"`EmbeddingMonitor({arg}={embedder!r})` is not valid. Expected a torch.nn.Module "
            "mapping a batch of images or waveforms to (B, D), e.g. "
            "`lightning_embviz.embedders.dinov2(path)`; wrap a plain function in an nn.Module, "
            "or pass it as `embed=` returning the embeddings yourself."
        )
    modality = embedder_modality(embedder)
    if modality not in _MODALITIES:
        raise ValueError(
            f"`EmbeddingMonitor({arg}=...)` has modality={modality!r}. Expected 'image' "
            "(inputs under 'real_images'/'fake_images') or 'audio' ('real_audio'/'fake_audio')."
        )
    return embedder


class BatchEmbedder:
    """Embeds the samples of one batch's outputs with the callback's embedder.

    Args:
        embedder: Any ``nn.Module`` mapping a batch of inputs to (B, D) (or (B, ...),
            flattened).
        batch_size: Most rows per forward pass.
        keys: The names ``(real, fake, real_images, fake_images)`` of the callback.
    """

    def __init__(self, embedder: nn.Module, batch_size: int, keys: tuple[str, ...]) -> None:
        self.embedder = embedder
        self.batch_size = int(batch_size)
        self.modality = embedder_modality(embedder)
        self.real_key, self.fake_key = keys[0], keys[1]
        self.inputs = keys[2:4] if self.modality == "image" else AUDIO_KEYS
        self.width: Optional[int] = None
        dim = getattr(embedder, "dim", None)
        if isinstance(dim, int) and dim > 0:
            self.width = dim

    def embed(
        self, outputs: Any, device: Any, *, source: str, where: str, strict: bool = True
    ) -> tuple[Any, Optional[str]]:
        """``outputs`` with ``real``/``fake`` set to the embeddings of its samples.

        Args:
            outputs: What ``validation_step`` (or ``embed``) returned; left as it is when it
                is no dict (the contract check then says what is wrong).
            device: Where to embed (the LightningModule's device).
            source: ``"`validation_step`"`` or ``"`embed(pl_module, batch)`"``, for messages.
            where: ``"dataloader 0, batch 3"``, for messages.
            strict: Raise when the embedder fails on the samples (the contract check). If
                False, a failing set becomes NaN rows (dropped downstream with a warning)
                and the message comes back, so bad data never ends a training run.

        Returns:
            ``(outputs, problem)``: a new dict (the input is not changed) and None, or the
            message of a failure that ``strict=False`` turned into NaN rows.

        Raises:
            ValueError: If the samples are missing, or ``outputs`` also holds embeddings
                under the real/fake keys (ambiguous: which set would be measured?).
            TypeError: If the samples are not tensors or arrays.
        """
        if not isinstance(outputs, Mapping):
            return outputs, None
        given = [k for k in (self.real_key, self.fake_key) if k in outputs]
        if given:
            raise ValueError(
                f"EmbeddingMonitor: {source} returned {given} as well as the samples ({where}), "
                f"but `EmbeddingMonitor(embedder=...)` computes {self.real_key!r} and "
                f"{self.fake_key!r} from {list(self.inputs)}. Return only the samples, or drop "
                "`embedder=` and return your own embeddings."
            )
        missing = [k for k in self.inputs if outputs.get(k) is None]
        if missing:
            kind = "images (B, C, H, W)" if self.modality == "image" else "waveforms (B, T)"
            raise ValueError(
                f"EmbeddingMonitor: {source} returned a dict with keys "
                f"{sorted(map(str, outputs))} ({where}); missing {missing}. With "
                f"`embedder=` (modality {self.modality!r}) return the {kind} under "
                f"{list(self.inputs)}; the callback embeds them."
            )
        result = dict(outputs)
        problem = None
        for name, out_key, in_key in (
            ("real", self.real_key, self.inputs[0]),
            ("fake", self.fake_key, self.inputs[1]),
        ):
            samples = _as_tensor(outputs[in_key], in_key, where)
            try:
                result[out_key] = self._forward(samples, device)
            except Exception as err:  # the embedder's own checks (layout, range, NaN)
                if strict or self.width is None:
                    raise
                problem = problem or (
                    f"EmbeddingMonitor: the embedder failed on {in_key!r} ({where}): "
                    f"{' '.join(str(err).split())[:300]}. These {name} rows are left out "
                    "(NaN); training goes on."
                )
                result[out_key] = torch.full((len(samples), self.width), float("nan"))
        return result, problem

    def _forward(self, samples: Tensor, device: Any) -> Tensor:
        """(B, D) embeddings of ``samples``, in chunks, eval mode, no gradients."""
        if len(samples) == 0 and self.width is not None:
            return torch.zeros((0, self.width))
        features = embed_in_batches(self.embedder, samples, self.batch_size, device)
        self.width = int(features.shape[1])
        return features


def _as_tensor(value: Any, key: str, where: str) -> Tensor:
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, Tensor):
        return value.detach()
    raise TypeError(
        f"EmbeddingMonitor: {key!r} must be a tensor (or NumPy array) of samples for the "
        f"embedder, got {type(value).__name__} ({where})."
    )
