"""One dataloader's validation run, collected: rows numbered, filtered and buffered.

:class:`RunCollector` takes each checked batch (:func:`~lightning_embviz.callback.outputs.
parse_outputs`), numbers its rows with their global sample index
(:class:`~lightning_embviz.callback.sampler.RowKeys`; under DDP it reads the
``DistributedSampler`` so the rows it pads in are dropped), admits or drops its thumbnails
(:class:`~lightning_embviz.callback.outputs.GalleryImages`) and keeps the rows in an
:class:`~lightning_embviz.callback.buffer.EmbeddingBuffer`. At the end of the run
:meth:`RunCollector.sets` hands back the local rows, gathered from every rank under DDP.
Problems come back as ``(once_id, message)`` notes for the callback to warn about.
No Lightning here.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from lightning_embviz.callback.audio import BatchAudio, LocalAudio, RunAudio
from lightning_embviz.callback.buffer import EmbeddingBuffer, EmbeddingSet, gather_embeddings
from lightning_embviz.callback.config import MonitorConfig
from lightning_embviz.callback.groups import merge_group_names
from lightning_embviz.callback.outputs import BatchOutputs, GalleryImages
from lightning_embviz.callback.sampler import RowKeys, SamplerInfo, sampler_info

__all__ = ["RunCollector"]

Notes = list[tuple[Optional[str], str]]


class RunCollector:
    """The rows of one dataloader's validation run on this rank.

    Args:
        config: The callback's checked arguments.
        rank: This process's global rank.
        world: The number of processes.
        loader: The validation dataloader (its sampler is read under DDP), or None.
        dataloader_idx: Its index, for messages.
    """

    def __init__(
        self,
        config: MonitorConfig,
        rank: int = 0,
        world: int = 1,
        loader: Any = None,
        dataloader_idx: int = 0,
    ) -> None:
        self.config = config
        self.dataloader_idx = dataloader_idx
        self.row_keys = RowKeys(rank, world)
        self.images = GalleryImages()
        self.audio = RunAudio()
        # This rank's clips and the run's group names after `sets`.
        self.local_audio: Optional[LocalAudio] = None
        self.buffer = EmbeddingBuffer(config.max_samples, config.seed)
        self._loader = loader
        self._sampler: Optional[SamplerInfo] = None
        self._sampler_read = False

    def sampler(self) -> Optional[SamplerInfo]:
        """What the loader's ``DistributedSampler`` pads in (read once), or None."""
        if not self._sampler_read:
            self._sampler = sampler_info(self._loader)
            self._sampler_read = True
        return self._sampler

    def add(
        self,
        parsed: BatchOutputs,
        batch_idx: int,
        where: str,
        audio: Optional[BatchAudio] = None,
    ) -> Notes:
        """Number, filter and keep one checked batch (and its clips and groups); problems."""
        config = self.config
        notes: Notes = []
        # With an index too: the fakes of the rows the sampler pads in are dropped.
        info = self.sampler() if self.row_keys.world > 1 else None
        keys = self.row_keys.next_batch(
            len(parsed.real),
            len(parsed.fake),
            batch_idx,
            index=parsed.index,
            info=info,
            names=(config.real_key, config.fake_key, config.index_key),
            dataloader_idx=self.dataloader_idx,
        )
        if keys.problem is not None:
            notes.append((keys.problem_id, keys.problem))
        image_problem = self.images.admit(parsed, config.keys, where)
        if image_problem is not None:
            notes.append(("images", image_problem))
        real, real_labels, real_keys = parsed.real, parsed.real_labels, keys.real
        fake, fake_labels, fake_keys = parsed.fake, parsed.fake_labels, keys.fake
        real_images, fake_images = parsed.real_images, parsed.fake_images
        audio = audio or BatchAudio()
        real_audio, real_groups = audio.real_audio, audio.real_groups
        fake_audio, fake_groups = audio.fake_audio, audio.fake_groups
        # keys and masks live with the features (the accelerator with keep_on_device)
        real_keys, fake_keys = real_keys.to(real.device), fake_keys.to(fake.device)
        if keys.real_keep is not None:
            keep = keys.real_keep.to(real.device)
            real, real_keys = real[keep], real_keys[keep]
            real_labels = None if real_labels is None else real_labels[keep]
            real_images = None if real_images is None else real_images.select(keep.cpu())
            real_audio = None if real_audio is None else real_audio.select(keep.cpu())
            real_groups = None if real_groups is None else real_groups[keep.cpu()]
        if keys.fake_keep is not None:
            keep = keys.fake_keep.to(fake.device)
            fake, fake_keys = fake[keep], fake_keys[keep]
            fake_labels = None if fake_labels is None else fake_labels[keep]
            fake_images = None if fake_images is None else fake_images.select(keep.cpu())
            fake_audio = None if fake_audio is None else fake_audio.select(keep.cpu())
            fake_groups = None if fake_groups is None else fake_groups[keep.cpu()]
        self.buffer.add(
            real,
            fake,
            real_keys=real_keys,
            fake_keys=fake_keys,
            real_labels=real_labels,
            fake_labels=fake_labels,
            real_images=real_images,
            fake_images=fake_images,
            real_audio=real_audio,
            fake_audio=fake_audio,
            real_groups=real_groups,
            fake_groups=fake_groups,
        )
        return notes

    def sets(
        self, device: torch.device, distributed: bool
    ) -> tuple[EmbeddingSet, EmbeddingSet, tuple[Any, ...]]:
        """The run's real and fake rows (every rank's under ``distributed``, a collective).

        Returns:
            ``(real, fake, local_images)``: the rows on ``device``, and this rank's
            ``(real_keys, real_thumbnails, fake_keys, fake_thumbnails)`` for
            :func:`~lightning_embviz.callback.galleries.select_samples` (thumbnails never
            travel with the rows: the galleries fetch the few they show).
        """
        real, fake = self.buffer.local_sets(device)
        self.buffer = EmbeddingBuffer(self.config.max_samples, self.config.seed)
        local_images = (real.keys.cpu(), real.images, fake.keys.cpu(), fake.images)
        # string group ids: one vocabulary for every rank before the ids travel
        real, fake, names, problem = merge_group_names(
            real, fake, self.audio, distributed=distributed
        )
        self.local_audio = LocalAudio(
            real.keys.cpu(), real.audio, fake.keys.cpu(), fake.audio,
            names["real"], names["fake"], problem,
        )  # fmt: skip
        if distributed:
            real, fake = gather_embeddings(real, fake, out_device=device)
        return real, fake, local_images
