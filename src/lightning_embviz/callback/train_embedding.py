"""``EmbeddingMonitor(embedder=..., train_images=...)`` without ``train=``: embed them once.

With an embedder the callback measures images, so the training set may be given as images
too: ``train_images=`` alone. Before the first measured validation run, the callback embeds every
training image once with the same embedder (on the LightningModule's device, eval mode, no
gradients, ``embed_batch_size`` rows per forward pass; the embedder's own train/eval flag is
put back), fits the :class:`~lightning_embviz.memorization.TrainReference` from the
embeddings and reuses it for every later run. The same images feed the ``closest_train``
gallery. Under DDP every rank embeds them (each searches its share of the training set).
``train=`` always holds embeddings (or a fitted or saved reference); given with
``embedder=`` it is used as it is and the images are not embedded.

- :func:`embeds_train`: whether a configuration takes this path (and a clear error for
  ``train=`` given as images).
- :func:`check_images_to_embed`: the ``train_images=`` of this path, checked at construction.
- :class:`EmbeddedTrainPass`: the run's memorization pass, whose training side is fitted
  by :meth:`EmbeddedTrainPass.prepare` (a failure warns and leaves the numbers NaN; it
  never ends training).

No Lightning here.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import torch
from torch import Tensor

from lightning_embviz.callback.buffer import collective_device
from lightning_embviz.callback.embedding import embedder_modality
from lightning_embviz.callback.memorization import MemorizationPass

if TYPE_CHECKING:
    from lightning_embviz.callback.evaluation import Evaluation
    from lightning_embviz.engine.memorization_reference import TrainReference

__all__ = ["EmbeddedTrainPass", "check_images_to_embed", "embedded_train_pass", "embeds_train"]


def embeds_train(train: Any, train_images: Any, embedder: Any) -> bool:
    """Whether the callback embeds ``train_images`` itself: an embedder, images, no ``train``.

    Raises:
        ValueError: ``train=`` holds images (an array or tensor of 3 or more dimensions)
            while ``embedder=`` is given: ``train=`` takes embeddings, the images go to
            ``train_images=``.
    """
    if embedder is None:
        return False
    if isinstance(train, (np.ndarray, Tensor)) and train.ndim >= 3:
        raise ValueError(
            f"`EmbeddingMonitor(train=...)` got an array of shape {tuple(train.shape)}: "
            "`train=` takes training embeddings (N, D). To have `embedder=` embed the "
            "training images, pass them as `train_images=` and leave `train=` unset."
        )
    return train is None and train_images is not None


def check_images_to_embed(images: Any, embedder: Any) -> Any:
    """``train_images=`` that the callback embeds: at least 2 images, an image embedder.

    An array or tensor must be (N, C, H, W) or (N, H, W) (the layout ``validation_step``
    returns under ``real_images``); any other object must support ``len()`` and ``[i]``
    (a dataset: each item an image or a tuple whose first element is one).

    Raises:
        ValueError: an audio embedder, an array of another shape, or fewer than 2 images.
        TypeError: an object that cannot be indexed.
    """
    if embedder_modality(embedder) != "image":
        raise ValueError(
            "`EmbeddingMonitor(train_images=...)` without `train=` is embedded by `embedder=`, "
            f"but the embedder has modality {embedder_modality(embedder)!r}; pass the training "
            "embeddings as `train=` (the training images are only for image embedders)."
        )
    if isinstance(images, (np.ndarray, Tensor)):
        if images.ndim not in (3, 4):
            raise ValueError(
                f"`EmbeddingMonitor(train_images=...)` has shape {tuple(images.shape)}. "
                "Expected (N, C, H, W) or (N, H, W) images, as validation_step returns them."
            )
    elif not (hasattr(images, "__getitem__") and hasattr(images, "__len__")):
        raise TypeError(
            f"`EmbeddingMonitor(train_images={type(images).__name__})` is not valid. Expected "
            "an (N, C, H, W) or (N, H, W) array or tensor, or an indexable dataset with len()."
        )
    if len(images) < 2:
        raise ValueError(
            f"`EmbeddingMonitor(train_images=...)` has {len(images)} image(s); the training "
            "set needs at least 2 (each fake's nearest training image is compared with that "
            "image's own nearest training neighbour)."
        )
    return images


class _Chunks:
    """The training images as tensors, read ``[start:stop]`` at a time (embed_in_batches)."""

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, rows: slice) -> Tensor:
        images = self.images
        if isinstance(images, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(images[rows]))
        if isinstance(images, Tensor):
            return images[rows].detach()
        items = []
        for i in range(*rows.indices(len(images))):
            item = images[i]
            if isinstance(item, (tuple, list)):
                item = item[0]
            items.append(item if isinstance(item, Tensor) else torch.as_tensor(np.asarray(item)))
        return torch.stack(items)


class EmbeddedTrainPass(MemorizationPass):
    """The memorization pass of ``embedder=`` with ``train_images=``: fitted before a run.

    Until :meth:`prepare` has fitted the training side, :meth:`add` gives NaN; after a
    failed :meth:`prepare`, every run gives NaN (the failure was warned once).

    Args:
        images: The checked ``train_images`` (:func:`check_images_to_embed`).
        embedder: The callback's embedder.
        batch_size: Most rows per forward pass (``embed_batch_size``).
        alpha: Quantile level of ``copy_fraction``'s threshold.
        keep_on_device: Keep the training embeddings on the module's device (as the
            callback keeps the validation embeddings there); else on the CPU.
    """

    def __init__(
        self, images: Any, embedder: Any, batch_size: int, alpha: float, keep_on_device: bool
    ) -> None:
        self.images = images
        self.embedder = embedder
        self.batch_size = int(batch_size)
        self.alpha = alpha
        self.keep_on_device = keep_on_device
        self.fitted: Optional[TrainReference] = None
        self.failed: Optional[str] = None
        self.seconds = 0.0

    def prepare(self, device: Any) -> Optional[str]:
        """Embed the training images and fit the training side, once (every rank).

        Args:
            device: Where to embed (the LightningModule's device).

        Returns:
            None, or the message of a failure (to warn once); the numbers are then NaN.
        """
        if self.fitted is not None or self.failed is not None:
            return None
        from lightning_embviz.embedders.spec import embed_in_batches
        from lightning_embviz.engine.memorization_reference import TrainReference

        start = time.perf_counter()
        try:
            features = embed_in_batches(
                self.embedder, _Chunks(self.images), self.batch_size, device
            )
            if not self.keep_on_device:
                features = features.cpu()
            self.fitted = TrainReference(features)
        except Exception as err:  # bad training images never end a training run
            reason = " ".join(str(err).split())[:300] or type(err).__name__
            self.failed = (
                f"EmbeddingMonitor: embedding the {len(self.images)} training images "
                f"(train_images=) with the embedder failed: {type(err).__name__}: {reason}. "
                "authenticity, ct_score and copy_fraction are NaN; training goes on."
            )
            return self.failed
        self.seconds = time.perf_counter() - start
        return None

    def add(self, result: Evaluation, where: str = "", distributed: bool = False) -> None:
        """Add the three scalars (NaN before a successful :meth:`prepare`) to ``result``.

        With ``distributed`` (every rank calls this) the ranks first agree that each one
        has fitted the training side (a collective), so a rank whose embedding failed
        makes every rank log NaN instead of leaving the others waiting.
        """
        ready = self.fitted is not None
        if distributed:
            flag = torch.tensor([int(ready)], device=collective_device(torch.device("cpu")))
            torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
            ready = bool(flag.item())
        if not ready or self.fitted is None:
            result.metrics.update(dict.fromkeys(self.keys, float("nan")))
            return
        self.reference = self.fitted
        super().add(result, where, distributed=distributed)


def embedded_train_pass(config: Any) -> Optional[EmbeddedTrainPass]:
    """The pass of a configuration whose ``train_images`` the embedder embeds, or None."""
    images = getattr(config, "train_images", None)
    embedder = getattr(config, "embedder", None)
    if getattr(config, "train", None) is not None or images is None or embedder is None:
        return None
    return EmbeddedTrainPass(
        images,
        embedder,
        config.embed_batch_size,
        config.memorization_alpha,
        config.keep_on_device,
    )
