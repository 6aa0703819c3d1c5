"""Pure arithmetic: which global sample each row of a rank's validation batch is.

Every collected row gets an int64 *key*: its position in the global sampler stream (so that
all ranks together number the validation set 0..n-1 exactly as a single process does), or
the dataset index the user returned. Rows with neither (fakes of a batch whose fake count
differs from its real count; reals whose positions cannot be worked out) get an *ordinal* key
at or above :data:`ORDINAL_BASE`, unique per rank, so that it never equals another row's key.
Keys order the rows, tell real duplicates apart (fakes are never merged), and drive the
uniform sample cap. No Lightning here: :class:`RowKeys` is fed the rank, the world size
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

__all__ = ["ORDINAL_BASE", "BatchKeys", "RowKeys", "SamplerInfo", "sampler_info", "shown_index"]

ORDINAL_BASE = 1 << 62
"""Keys from here up are ordinals (rows without a known identity), keys below are identities
(a dataset index or a position in the sampler stream); the two spaces never meet."""


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

    def _ordinal(self, start: int, n: int) -> Tensor:
        """Keys in the ordinal space: unique per rank and set, never equal to an identity."""
        return ORDINAL_BASE + self._strided(start, n)

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

        Real rows are keyed by the dataset index the user returned, else by their position
        in the sampler stream when it is known, else by an ordinal key. Fake rows share the
        real row's key when the batch pairs them (``n_fake == n_real``) and that key is an
        identity; otherwise they get ordinal keys, so that no fake key ever equals another
        fake's (fakes are never merged). Rows the ``DistributedSampler`` padded in are
        dropped by position (``*_keep``) whenever the positions are known.

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
        paired = n_fake == n_real
        problem: Optional[str] = None
        problem_id: Optional[str] = None

        # Positions in the global sampler stream (and which of them are padding), if known.
        positions: Optional[Tensor] = None
        keep: Optional[Tensor] = None
        if self.world <= 1:
            positions = self._strided(start_real, n_real)
        elif info is None:
            if index is None:
                problem = (
                    f"EmbeddingMonitor: validation dataloader {dataloader_idx} has no "
                    "DistributedSampler, so the callback cannot tell whether some samples were "
                    "repeated to even out the ranks; repeated samples would change the k-NN "
                    "radii and every metric. Return the dataset index of each sample under "
                    f"{index_name!r} to have duplicates removed."
                )
                problem_id = f"no-sampler-{dataloader_idx}"
        else:
            first = batch_idx * info.batch_size if info.batch_size else start_real
            expected = n_real
            if info.batch_size:
                expected = max(0, min(info.batch_size, info.num_samples - first))
            if n_real == expected:
                positions = (
                    info.rank
                    + (first + torch.arange(n_real, dtype=torch.int64)) * info.num_replicas
                )
                keep = positions < info.dataset_len if info.pads else None
                if keep is not None and bool(keep.all()):
                    keep = None
            elif info.pads and index is None:
                problem = (
                    f"EmbeddingMonitor: batch {batch_idx} of validation dataloader "
                    f"{dataloader_idx} gave {n_real} real rows, the sampler {expected}; the "
                    "callback cannot tell which rows the DistributedSampler repeated to even "
                    "out the ranks, so duplicates may be counted. Return the dataset index of "
                    f"each sample under {index_name!r} to have them removed."
                )
                problem_id = f"rows-{dataloader_idx}"

        if index is not None:
            real = index.detach().reshape(-1).to(torch.int64).cpu()
        elif positions is not None:
            real = positions
        else:
            real = self._ordinal(start_real, n_real)

        if self.world <= 1 and index is None:
            # One process: the fakes' own stream positions (unique; the reals use theirs).
            return BatchKeys(real, None, self._strided(start_fake, n_fake), None)
        if paired and (index is not None or positions is not None):
            return BatchKeys(real, keep, real.clone(), keep, problem, problem_id)
        if keep is not None and problem is None:
            problem = (
                f"EmbeddingMonitor: {fake_name!r} has a different number of rows than "
                f"{real_name!r} in dataloader {dataloader_idx}, so generated rows of the "
                "samples the DistributedSampler repeated cannot be dropped."
            )
            problem_id = f"fake-rows-{dataloader_idx}"
        return BatchKeys(real, keep, self._ordinal(start_fake, n_fake), None, problem, problem_id)


def shown_index(keys: Tensor) -> Tensor:
    """The dataset index shown for each key in tables and captions; -1 where there is none.

    Identity keys (a dataset index, a sampler position) are shown as they are; ordinal keys
    (rows without either, e.g. the fakes of a batch whose fake count differs from its real
    count) as -1, so that no shown index is ever that of another sample.
    """
    return torch.where(keys >= ORDINAL_BASE, torch.full_like(keys, -1), keys)
