"""Ready embedders: raw images or audio in, standard embeddings (B, D) out.

No torchvision, torchaudio or timm is needed:

- :func:`inception` -- the FID Inception-v3 in plain torch (2048-d pool features) with the
  standard FID weights file.
- With the ``[hf]`` extra (``pip install lightning-embviz[hf]``, i.e. ``transformers``):
  :func:`dinov2`, :func:`clip` for images; :func:`clap`, :func:`wav2vec2`, :func:`hubert`
  for audio. Each loads a hub id or a local ``save_pretrained`` folder with the
  checkpoint's own image processor or feature extractor.

Every embedder is a frozen ``nn.Module`` in eval mode with ``.dim``, ``.modality``
(``"image"`` or ``"audio"``) and ``.sample_rate`` (audio). Images: uint8 (B, C, H, W) in
[0, 255] or floating in [0, 1], C in (1, 3) (grayscale is repeated to RGB). Waveforms:
floating (B, T) at ``.sample_rate`` ((B, C, T) is averaged to mono). Any other
``nn.Module`` that maps a batch to (B, D) works as an embedder too. :func:`from_spec` builds
one from ``"name:path"`` (``embviz report --embedder``); :func:`embed_in_batches` runs one
in chunks, in eval mode, without gradients.

Example::

    >>> from lightning_embviz import embedders
    >>> net = embedders.dinov2("facebook/dinov2-small")  # doctest: +SKIP
    >>> net(images).shape  # uint8 (8, 3, 64, 64)  # doctest: +SKIP
    torch.Size([8, 384])
"""

from __future__ import annotations

from lightning_embviz.embedders.base import Embedder
from lightning_embviz.embedders.hf import (
    HFAudioEmbedder,
    HFImageEmbedder,
    clap,
    clip,
    dinov2,
    hubert,
    wav2vec2,
)
from lightning_embviz.embedders.inception import FIDInceptionV3, inception
from lightning_embviz.embedders.spec import embed_in_batches, from_spec

__all__ = [
    "Embedder",
    "FIDInceptionV3",
    "HFAudioEmbedder",
    "HFImageEmbedder",
    "clap",
    "clip",
    "dinov2",
    "embed_in_batches",
    "from_spec",
    "hubert",
    "inception",
    "wav2vec2",
]
