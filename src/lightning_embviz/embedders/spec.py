"""Embedders named by a ``"name:path"`` text (the command line), and batched embedding.

:func:`from_spec` builds the embedder that ``embviz report --embedder dinov2:PATH`` names;
:func:`embed_in_batches` runs any embedder the way the callback and the command do: in
chunks, in eval mode, under ``torch.no_grad()``, with the module's train/eval flag put back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

__all__ = ["SPEC_NAMES", "embed_in_batches", "from_spec", "module_device"]

SPEC_NAMES = ("inception", "dinov2", "clip", "clap", "wav2vec2", "hubert", "module")


def from_spec(spec: str) -> nn.Module:
    """The embedder that ``spec`` names: ``"<name>:<path or hub id>"``.

    Names: ``inception`` (a FID weights file; ``inception:`` alone downloads the standard
    file), ``dinov2``, ``clip``, ``clap``, ``wav2vec2``, ``hubert`` (a hub id or a local
    ``save_pretrained`` folder; needs the ``[hf]`` extra), and ``module`` (a file written
    with ``torch.save(module)``: a whole pickled ``nn.Module``, loaded with
    ``weights_only=False`` -- only load files you trust).

    Args:
        spec: e.g. ``"dinov2:facebook/dinov2-base"``, ``"inception:pt_inception.pth"``,
            ``"module:my_net.pt"``.

    Returns:
        The embedder, an ``nn.Module`` mapping a batch to (B, D).

    Raises:
        ValueError: For an unknown name or a missing path.
        TypeError: If a ``module:`` file holds no ``nn.Module``.
        FileNotFoundError: If a ``module:`` file does not exist.

    Example:
        >>> from_spec("resnet:x.pt")
        Traceback (most recent call last):
        ...
        ValueError: unknown embedder 'resnet' in 'resnet:x.pt'; expected NAME:PATH with NAME one of inception, dinov2, clip, clap, wav2vec2, hubert, module.
    """  # noqa: E501
    name, sep, path = str(spec).partition(":")
    name = name.strip().lower()
    if not sep or name not in SPEC_NAMES:
        shown = name if sep else spec
        raise ValueError(
            f"unknown embedder {shown!r} in {spec!r}; expected NAME:PATH with NAME one of "
            f"{', '.join(SPEC_NAMES)}."
        )
    if not path and name != "inception":
        raise ValueError(f"embedder {spec!r} names no path; expected {name}:PATH.")
    from lightning_embviz import embedders

    if name == "inception":
        return embedders.inception(path or None)
    if name == "module":
        return _load_module(path)
    factory = getattr(embedders, name)
    local = Path(path).exists()
    module: nn.Module = factory(path, local_files_only=local)
    return module


def _load_module(path: str) -> nn.Module:
    if not Path(path).is_file():
        raise FileNotFoundError(f"embedder module:{path}: no such file.")
    # A whole pickled module needs the pickle loader: the file is trusted by the user.
    module = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(module, nn.Module):
        raise TypeError(
            f"embedder module:{path} holds a {type(module).__name__}, expected a whole "
            "nn.Module saved with torch.save(module, path)."
        )
    return module


def module_device(module: nn.Module) -> Optional[torch.device]:
    """The device of the module's first parameter or buffer; None when it has neither."""
    for parameter in module.parameters():
        return parameter.device
    for buffer in module.buffers():
        return buffer.device
    return None


def embed_in_batches(
    embedder: nn.Module, samples: Any, batch_size: int = 64, device: Any = None
) -> Tensor:
    """Embed ``samples`` with ``embedder``, ``batch_size`` rows at a time, no gradients.

    The module runs in eval mode and gets its own train/eval flag back afterwards. With
    ``device``, the module is moved there (``module.to``) and each chunk too.

    Args:
        embedder: Any ``nn.Module`` mapping a batch (B, ...) to (B, D) or (B, ...); a
            transformers output object with ``pooler_output`` is read too.
        samples: A tensor (or anything sliceable along the first axis whose slices the
            embedder takes), N rows.
        batch_size: Most rows per forward pass, >= 1.
        device: Where to embed, or None for where the module is.

    Returns:
        (N, D) embeddings, detached, flattened per row, on the embedder's device.

    Raises:
        TypeError: If the embedder returns no tensor.
        ValueError: If it returns a row count other than its input's.
    """
    target = None if device is None else torch.device(device)
    if target is not None and module_device(embedder) not in (None, target):
        embedder.to(target)
    was_training = embedder.training
    embedder.eval()
    parts = []
    try:
        with torch.no_grad():
            for start in range(0, len(samples), batch_size):
                chunk = samples[start : start + batch_size]
                if target is not None and isinstance(chunk, Tensor):
                    chunk = chunk.to(target)
                parts.append(_rows(embedder(chunk), len(chunk)))
    finally:
        embedder.train(was_training)
    if not parts:
        raise ValueError("embed_in_batches got no samples (0 rows).")
    return torch.cat(parts)


def _rows(features: Any, rows: int) -> Tensor:
    features = getattr(features, "pooler_output", features)
    if not isinstance(features, Tensor):
        raise TypeError(
            f"the embedder returned {type(features).__name__}; expected a tensor of shape (B, D)."
        )
    if features.ndim < 1 or features.shape[0] != rows:
        raise ValueError(
            f"the embedder returned shape {tuple(features.shape)} for {rows} inputs; expected "
            f"(B, D) with B = {rows}."
        )
    return features.detach().reshape(rows, -1)
