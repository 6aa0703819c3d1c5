"""Embedders backed by Hugging Face ``transformers`` (extra ``[hf]``), loaded lazily.

Each function loads a checkpoint (a hub id, or a local folder written by
``save_pretrained``) together with the checkpoint's own preprocessing (image processor or
audio feature extractor), and returns a frozen :class:`~lightning_embviz.embedders.Embedder`
that runs both: the result equals ``model(**processor(inputs))`` done by hand.

``transformers`` is imported only when one of these functions is called; it needs no
torchvision (without it, image processors use their PIL backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch

from lightning_embviz.embedders.base import (
    Embedder,
    Modality,
    as_image_batch,
    as_waveform_batch,
    images_to_uint8,
)

__all__ = ["HFAudioEmbedder", "HFImageEmbedder", "clap", "clip", "dinov2", "hubert", "wav2vec2"]

_Pooling = Literal["pooler_output", "image_features", "audio_features", "mean_hidden_state"]


def _import_transformers(who: str) -> Any:
    try:
        import transformers
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            f"`embedders.{who}` requires transformers. "
            "Install it with `pip install lightning-embviz[hf]`."
        ) from err
    return transformers


def _features(output: Any) -> torch.Tensor:
    # transformers 4.x returns the projected features as a tensor from
    # get_image_features/get_audio_features; 5.x returns an output object whose
    # pooler_output holds them.
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output


class _Checkpoint:
    """Where a checkpoint lives and how to fetch it; loads its model, then its preprocessing.

    The model is loaded first so that a checkpoint of the wrong kind is reported as such
    before transformers complains about a missing processor.
    """

    def __init__(
        self,
        who: str,
        name_or_path: str | Path,
        revision: str | None,
        cache_dir: str | Path | None,
        local_files_only: bool,
    ) -> None:
        self.transformers = _import_transformers(who)
        self.who = who
        self.source = str(name_or_path)
        self.options: dict[str, Any] = {"local_files_only": local_files_only}
        if revision is not None:
            self.options["revision"] = revision
        if cache_dir is not None:
            self.options["cache_dir"] = str(cache_dir)

    def model(self) -> Any:
        return self.transformers.AutoModel.from_pretrained(self.source, **self.options)

    def image_processor(self) -> Any:
        return self.transformers.AutoImageProcessor.from_pretrained(self.source, **self.options)

    def feature_extractor(self) -> Any:
        return self.transformers.AutoFeatureExtractor.from_pretrained(self.source, **self.options)

    def wrong_kind(self, model: Any, what: str) -> ValueError:
        return ValueError(
            f"`{self.who.removesuffix('()')}({self.source!r})` loaded a {type(model).__name__}, "
            f"{what}"
        )


def _config_int(model: Any, *names: str) -> int:
    for name in names:
        value = getattr(model.config, name, None)
        if isinstance(value, int):
            return value
    raise ValueError(
        f"cannot tell the embedding size of a {type(model).__name__}: its config has none of "
        f"{names}."
    )


class _HFEmbedder(Embedder):
    """A transformers model with its preprocessing, frozen, mapping a batch to (B, D)."""

    def __init__(
        self,
        who: str,
        model: torch.nn.Module,
        processor: Any,
        pooling: _Pooling,
        dim: int,
        modality: Modality,
        sample_rate: int | None = None,
    ) -> None:
        super().__init__(dim=dim, modality=modality, sample_rate=sample_rate)
        self.who = who
        self.model = model
        self.processor = processor
        self.pooling = pooling
        self._freeze()

    def _run(self, inputs: Any) -> torch.Tensor:
        device, dtype = self.device, next(self.model.parameters()).dtype
        tensors = {
            key: value.to(device=device, dtype=dtype if value.is_floating_point() else None)
            for key, value in inputs.items()
            if isinstance(value, torch.Tensor)
        }
        model: Any = self.model
        features: torch.Tensor | None
        if self.pooling == "image_features":
            features = _features(model.get_image_features(**tensors))
        elif self.pooling == "audio_features":
            features = _features(model.get_audio_features(**tensors))
        elif self.pooling == "pooler_output":
            features = getattr(model(**tensors), "pooler_output", None)
            if features is None:
                raise ValueError(
                    f"`{self.who}`: a {type(model).__name__} returns no pooler_output; "
                    "pass a DINOv2 checkpoint."
                )
        else:
            # Every clip of a batch has the same length (B, T): no padding to mask out.
            features = model(**tensors).last_hidden_state.mean(dim=1)
        return torch.as_tensor(features).to(torch.float32)

    def extra_repr(self) -> str:
        """Show the backbone and the pooling next to the contract."""
        return f"{self.who}, pooling={self.pooling!r}, {super().extra_repr()}"


class HFImageEmbedder(_HFEmbedder):
    """An image backbone from transformers with the checkpoint's own image processor.

    Input: uint8 (B, C, H, W) in [0, 255] or floating in [0, 1], C in (1, 3); (B, H, W) is
    grayscale. Floating images are rounded to uint8 (``round(255 * x)``) first, because
    image processors resize 8-bit images (PIL); grayscale is repeated to RGB. The processor
    then resizes, crops and normalizes as the checkpoint was trained.

    Output: (B, dim) float32 on the module's device.
    """

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Embed a batch of images.

        Args:
            images: uint8 (B, C, H, W) or floating in [0, 1]; C in (1, 3).

        Returns:
            (B, dim) float32.

        Raises:
            TypeError: for another dtype.
            ValueError: for another layout, or floating values outside [0, 1].
        """
        pixels = images_to_uint8(as_image_batch(images, self.who)).detach().cpu().numpy()
        inputs = self.processor(
            images=list(pixels), return_tensors="pt", input_data_format="channels_first"
        )
        return self._run(inputs)


class HFAudioEmbedder(_HFEmbedder):
    """An audio backbone from transformers with the checkpoint's own feature extractor.

    Input: floating (B, T) mono waveforms at ``sample_rate`` (the feature extractor's
    rate); (B, C, T) is averaged to mono. No resampling is done: a ``sample_rate=`` that
    differs raises.

    Output: (B, dim) float32 on the module's device.
    """

    def forward(self, waveforms: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Embed a batch of waveforms.

        Args:
            waveforms: floating (B, T) or (B, C, T) at ``self.sample_rate``.
            sample_rate: the rate of ``waveforms`` in Hz, if known; checked.

        Returns:
            (B, dim) float32.

        Raises:
            TypeError: for a non-floating dtype.
            ValueError: for a wrong sample rate or layout.
        """
        rate = int(self.processor.sampling_rate)
        clips = as_waveform_batch(waveforms, self.who, rate, sample_rate).numpy()
        inputs = self.processor(list(clips), sampling_rate=rate, return_tensors="pt")
        return self._run(inputs)


def dinov2(
    name_or_path: str | Path = "facebook/dinov2-base",
    *,
    device: torch.device | str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> HFImageEmbedder:
    """DINOv2 image embeddings: the CLS token after the final layer norm (``pooler_output``).

    This is the representation dgm-eval (Stein et al., 2023) recommends for FD, precision,
    recall, density and coverage of images. Images are preprocessed by the checkpoint's own
    image processor (for the official checkpoints: resize the short side to 256, center
    crop 224, ImageNet normalization).

    Args:
        name_or_path: a hub id (``facebook/dinov2-small`` 384-d, ``-base`` 768-d,
            ``-large`` 1024-d, ``-giant`` 1536-d) or a local folder from ``save_pretrained``.
        device: where to put the model (default: the CPU).
        revision: a hub revision (branch, tag or commit).
        cache_dir: the hub cache folder (default: transformers' own).
        local_files_only: never download; load from the folder or the cache only.

    Returns:
        A frozen :class:`HFImageEmbedder`: images (B, C, H, W) in, (B, hidden_size) out.

    Raises:
        ModuleNotFoundError: without transformers (``pip install lightning-embviz[hf]``).
        ValueError: for a multimodal checkpoint (CLIP, CLAP); at call time, for a model
            without ``pooler_output``.
    """
    checkpoint = _Checkpoint("dinov2()", name_or_path, revision, cache_dir, local_files_only)
    model = checkpoint.model()
    if hasattr(model, "get_image_features") or hasattr(model, "get_audio_features"):
        raise checkpoint.wrong_kind(
            model, "a multimodal model; pass a DINOv2 checkpoint (or use `embedders.clip`)."
        )
    processor = checkpoint.image_processor()
    embedder = HFImageEmbedder(
        "dinov2()", model, processor, "pooler_output", _config_int(model, "hidden_size"), "image"
    )
    return embedder if device is None else embedder.to(device)


def clip(
    name_or_path: str | Path = "openai/clip-vit-base-patch32",
    *,
    device: torch.device | str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> HFImageEmbedder:
    """CLIP image embeddings: the projected image embedding (``get_image_features``).

    Not normalized (divide by the norm for cosine geometry). Any checkpoint whose model has
    ``get_image_features`` works the same way (SigLIP, for instance).

    Args:
        name_or_path: a hub id (``openai/clip-vit-base-patch32`` 512-d,
            ``openai/clip-vit-large-patch14`` 768-d, ...) or a local folder.
        device: where to put the model (default: the CPU).
        revision: a hub revision.
        cache_dir: the hub cache folder.
        local_files_only: never download.

    Returns:
        A frozen :class:`HFImageEmbedder`: images (B, C, H, W) in, (B, projection_dim) out.

    Raises:
        ModuleNotFoundError: without transformers (``pip install lightning-embviz[hf]``).
        ValueError: if the checkpoint's model has no ``get_image_features``.
    """
    checkpoint = _Checkpoint("clip()", name_or_path, revision, cache_dir, local_files_only)
    model = checkpoint.model()
    if not hasattr(model, "get_image_features"):
        raise checkpoint.wrong_kind(
            model, "which has no get_image_features; pass a CLIP checkpoint."
        )
    processor = checkpoint.image_processor()
    dim = _config_int(model, "projection_dim")
    embedder = HFImageEmbedder("clip()", model, processor, "image_features", dim, "image")
    return embedder if device is None else embedder.to(device)


def clap(
    name_or_path: str | Path = "laion/clap-htsat-unfused",
    *,
    device: torch.device | str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> HFAudioEmbedder:
    """CLAP audio embeddings: the projected, L2-normalized audio embedding.

    The embedding FAD-CLAP (fadtk, Gui et al., 2024) uses. Waveforms go through the
    checkpoint's feature extractor at its sampling rate (48 kHz for the LAION checkpoints).
    Clips longer than the extractor's ``max_length_s`` (10 s) are cropped at random
    positions by that extractor, as in CLAP itself: cut clips to at most 10 s for
    deterministic embeddings.

    Args:
        name_or_path: a hub id (``laion/clap-htsat-unfused``, ``laion/larger_clap_music``,
            ...) or a local folder.
        device: where to put the model (default: the CPU).
        revision: a hub revision.
        cache_dir: the hub cache folder.
        local_files_only: never download.

    Returns:
        A frozen :class:`HFAudioEmbedder`: waveforms (B, T) at ``sample_rate`` in,
        (B, projection_dim) out.

    Raises:
        ModuleNotFoundError: without transformers (``pip install lightning-embviz[hf]``).
        ValueError: if the checkpoint's model has no ``get_audio_features``.
    """
    checkpoint = _Checkpoint("clap()", name_or_path, revision, cache_dir, local_files_only)
    model = checkpoint.model()
    if not hasattr(model, "get_audio_features"):
        raise checkpoint.wrong_kind(
            model, "which has no get_audio_features; pass a CLAP checkpoint."
        )
    extractor = checkpoint.feature_extractor()
    embedder = HFAudioEmbedder(
        "clap()",
        model,
        extractor,
        "audio_features",
        _config_int(model, "projection_dim"),
        "audio",
        sample_rate=int(extractor.sampling_rate),
    )
    return embedder if device is None else embedder.to(device)


def _speech(
    who: str,
    name_or_path: str | Path,
    device: torch.device | str | None,
    revision: str | None,
    cache_dir: str | Path | None,
    local_files_only: bool,
) -> HFAudioEmbedder:
    checkpoint = _Checkpoint(who, name_or_path, revision, cache_dir, local_files_only)
    model = checkpoint.model()
    if hasattr(model, "get_audio_features") or hasattr(model, "get_image_features"):
        raise checkpoint.wrong_kind(
            model, "a multimodal model; pass a speech checkpoint (or use `embedders.clap`)."
        )
    extractor = checkpoint.feature_extractor()
    embedder = HFAudioEmbedder(
        who,
        model,
        extractor,
        "mean_hidden_state",
        _config_int(model, "hidden_size"),
        "audio",
        sample_rate=int(extractor.sampling_rate),
    )
    return embedder if device is None else embedder.to(device)


def wav2vec2(
    name_or_path: str | Path = "facebook/wav2vec2-base",
    *,
    device: torch.device | str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> HFAudioEmbedder:
    """Wav2Vec 2.0 audio embeddings: the last hidden state averaged over time.

    The checkpoint's feature extractor normalizes each clip (when its config says so) at
    its sampling rate (16 kHz for the official checkpoints). Speech models need at least
    400 samples (25 ms) per clip.

    Args:
        name_or_path: a hub id (``facebook/wav2vec2-base`` 768-d,
            ``facebook/wav2vec2-large-960h`` 1024-d, ...) or a local folder. HuBERT and
            WavLM checkpoints load too (see :func:`hubert`).
        device: where to put the model (default: the CPU).
        revision: a hub revision.
        cache_dir: the hub cache folder.
        local_files_only: never download.

    Returns:
        A frozen :class:`HFAudioEmbedder`: waveforms (B, T) at ``sample_rate`` in,
        (B, hidden_size) out.

    Raises:
        ModuleNotFoundError: without transformers (``pip install lightning-embviz[hf]``).
    """
    return _speech("wav2vec2()", name_or_path, device, revision, cache_dir, local_files_only)


def hubert(
    name_or_path: str | Path = "facebook/hubert-base-ls960",
    *,
    device: torch.device | str | None = None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> HFAudioEmbedder:
    """HuBERT audio embeddings: the last hidden state averaged over time.

    The same pipeline as :func:`wav2vec2` (HuBERT uses the Wav2Vec2 feature extractor).

    Args:
        name_or_path: a hub id (``facebook/hubert-base-ls960`` 768-d,
            ``facebook/hubert-large-ll60k`` 1024-d, ...) or a local folder.
        device: where to put the model (default: the CPU).
        revision: a hub revision.
        cache_dir: the hub cache folder.
        local_files_only: never download.

    Returns:
        A frozen :class:`HFAudioEmbedder`: waveforms (B, T) at ``sample_rate`` in,
        (B, hidden_size) out.

    Raises:
        ModuleNotFoundError: without transformers (``pip install lightning-embviz[hf]``).
    """
    return _speech("hubert()", name_or_path, device, revision, cache_dir, local_files_only)
