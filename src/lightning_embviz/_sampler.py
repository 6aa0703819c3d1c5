"""Pure arithmetic: which global sample each row of a rank's validation batch is.

Every collected row gets an int64 *key*: its position in the global sampler stream (so that
all ranks together number the validation set 0..n-1 exactly as a single process does), or
the dataset index the user returned. Keys order the rows, tell duplicates apart, and drive
the uniform sample cap. No Lightning here: :class:`RowKeys` is fed the rank, the world size
and, when the loader has one, a :class:`SamplerInfo` read from its ``DistributedSampler``.

``DistributedSampler`` (without shuffling, as Lightning sets it up for validation) gives rank
``r`` the positions ``r, r + W, r + 2W, ...`` of the index list, padded with repeats from its
start so every rank gets ``num_samples`` rows; positions ``>= len(dataset)`` are the repeats.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import torch
from torch import Tensor

__all__ = ["BatchKeys", "RowKeys", "SamplerInfo", "sampler_info"]


@dataclasses.dataclass(frozen=True)
class SamplerInfo:
    """How a rank's rows map to positions in the global sampler stream."""

    num_replicas: int
    rank: int
    dataset_len: int
    num_samples: int
    batch_size: Optional[int]
    pads: bool


def sampler_info(loader: Any) -> Optional[SamplerInfo]:
    """Read a loader's ``DistributedSampler`` (None when it has another sampler)."""
    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, torch.utils.data.distributed.DistributedSampler):
        return None
    dataset_len = len(sampler.dataset)  # type: ignore[arg-type]
    return SamplerInfo(
        num_replicas=int(sampler.num_replicas),
        rank=int(sampler.rank),
        dataset_len=dataset_len,
        num_samples=int(sampler.num_samples),
        batch_size=getattr(loader, "batch_size", None),
        pads=not sampler.drop_last and sampler.total_size > dataset_len,
    )


@dataclasses.dataclass
class BatchKeys:
    """Keys of one batch's rows, and which rows to keep (None: all)."""

    real: Tensor
    real_keep: Optional[Tensor]
    fake: Tensor
    fake_keep: Optional[Tensor]
    # A sentence for a one-time warning when duplicates cannot be ruled out, else None.
    problem: Optional[str] = None
    problem_id: Optional[str] = None


class RowKeys:
    """Numbers the rows of one validation run on one rank, batch after batch.

    Args:
        rank: This process's global rank.
        world_size: Number of processes.
    """

    def __init__(self, rank: int, world_size: int) -> None:
        self.rank = int(rank)
        self.world = max(int(world_size), 1)
        self.seen_real = 0
        self.seen_fake = 0

    def _strided(self, start: int, n: int) -> Tensor:
        return self.rank + (start + torch.arange(n, dtype=torch.int64)) * self.world

    def next_batch(
        self,
        n_real: int,
        n_fake: int,
        batch_idx: int,
        *,
        index: Optional[Tensor] = None,
        info: Optional[SamplerInfo] = None,
        names: tuple[str, str, str] = ("real", "fake", "index"),
        dataloader_idx: int = 0,
    ) -> BatchKeys:
        """Keys for the next batch of ``n_real`` real and ``n_fake`` fake rows.

        Args:
            n_real: Real rows in the batch.
            n_fake: Fake rows in the batch.
            batch_idx: The batch's index in this rank's loader.
            index: The dataset index of each real row, if the user returned one (N,) int.
            info: The loader's ``DistributedSampler`` (None: no such sampler).
            names: The real, fake and index keys, for messages.
            dataloader_idx: For messages.
        """
        start_real, start_fake = self.seen_real, self.seen_fake
        self.seen_real += n_real
        self.seen_fake += n_fake
        real_name, fake_name, index_name = names
        fallback_real = self._strided(start_real, n_real)
        fallback_fake = self._strided(start_fake, n_fake)

        if index is not None:
            keys = index.detach().reshape(-1).to(torch.int64).cpu()
            # Paired fakes share the real row's identity (dropped with it as duplicates).
            fake = keys.clone() if n_fake == n_real else fallback_fake
            return BatchKeys(keys, None, fake, None)

        if self.world <= 1:
            return BatchKeys(fallback_real, None, fallback_fake, None)

        if info is None:
            return BatchKeys(
                fallback_real,
                None,
                fallback_fake,
                None,
                problem=(
                    f"EmbeddingMonitor: validation dataloader {dataloader_idx} has no "
                    "DistributedSampler, so the callback cannot tell whether some samples were "
                    "repeated to even out the ranks; repeated samples would change the k-NN "
                    "radii and every metric. Return the dataset index of each sample under "
                    f"{index_name!r} to have duplicates removed."
                ),
                problem_id=f"no-sampler-{dataloader_idx}",
            )

        first = batch_idx * info.batch_size if info.batch_size else start_real
        expected = n_real
        if info.batch_size:
            expected = max(0, min(info.batch_size, info.num_samples - first))
        if n_real != expected:
            problem = None
            if info.pads:
                problem = (
                    f"EmbeddingMonitor: batch {batch_idx} of validation dataloader "
                    f"{dataloader_idx} gave {n_real} real rows, the sampler {expected}; the "
                    "callback cannot tell which rows the DistributedSampler repeated to even "
                    "out the ranks, so duplicates may be counted. Return the dataset index of "
                    f"each sample under {index_name!r} to have them removed."
                )
            return BatchKeys(
                fallback_real,
                None,
                fallback_fake,
                None,
                problem=problem,
                problem_id=f"rows-{dataloader_idx}",
            )
        positions = (
            info.rank + (first + torch.arange(n_real, dtype=torch.int64)) * info.num_replicas
        )
        keep = positions < info.dataset_len if info.pads else None
        if n_fake == n_real:
            return BatchKeys(positions, keep, positions.clone(), keep)
        problem = None
        if info.pads:
            problem = (
                f"EmbeddingMonitor: {fake_name!r} has a different number of rows than "
                f"{real_name!r} in dataloader {dataloader_idx}, so generated rows of the "
                "samples the DistributedSampler repeated cannot be dropped."
            )
        return BatchKeys(
            positions,
            keep,
            fallback_fake,
            None,
            problem=problem,
            problem_id=f"fake-rows-{dataloader_idx}",
        )
