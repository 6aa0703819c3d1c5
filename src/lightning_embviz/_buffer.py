"""Per-rank bounded collection of embeddings, and the gather across ranks.

No Lightning import here: the callback feeds an :class:`EmbeddingBuffer` batch by batch and
calls :func:`gather_embeddings` at the end of the validation run, on every rank.

Each row carries an integer *key* that orders it and tells duplicates apart:

- the position of the sample in the (global) sampler stream, when the callback can work it out
  (single process, or Lightning's ``DistributedSampler``); rows the distributed sampler pads in
  are never added, so keys are unique;
- or the dataset index the user returned with the batch; then rows sharing a key are counted
  once (the first one in key order wins), which also removes the sampler's padding.

After the gather, the rows are sorted by key (stable), de-duplicated when asked, and cut to the
first ``max_samples`` rows: the same rows, in the same order, as a single process sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

__all__ = ["EmbeddingBuffer", "EmbeddingSet", "finalize_set", "gather_embeddings"]


@dataclass
class EmbeddingSet:
    """Rows of one set (real or fake): features (N, D), keys (N,) int64, labels (N,) or None."""

    features: Tensor
    keys: Tensor
    labels: Optional[Tensor] = None

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def select(self, index: Tensor) -> EmbeddingSet:
        """Rows at ``index`` (a bool mask or integer positions)."""
        return EmbeddingSet(
            self.features[index],
            self.keys[index],
            None if self.labels is None else self.labels[index],
        )


class _SetBuffer:
    """Bounded list of batches for one set; concatenated only when asked."""

    def __init__(self, name: str, max_samples: Optional[int]) -> None:
        self.name = name
        self.max_samples = max_samples
        self.features: list[Tensor] = []
        self.keys: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.has_labels: Optional[bool] = None
        self.width: Optional[int] = None
        self.count = 0

    def add(self, features: Tensor, keys: Tensor, labels: Optional[Tensor]) -> None:
        if self.width is not None and features.shape[1] != self.width:
            raise ValueError(
                f"`{self.name}` embeddings changed width between batches: earlier batches had "
                f"shape (B, {self.width}), this one has {tuple(features.shape)}."
            )
        has = labels is not None
        if self.has_labels is not None and has != self.has_labels:
            raise ValueError(
                f"Labels for `{self.name}` were given for some validation batches and not for "
                "others; return them with every batch or with none."
            )
        self.width = int(features.shape[1])
        self.has_labels = has
        if self.max_samples is not None:
            room = self.max_samples - self.count
            if room <= 0:
                return
            if features.shape[0] > room:
                features, keys = features[:room], keys[:room]
                labels = None if labels is None else labels[:room]
        self.features.append(features)
        self.keys.append(keys)
        if labels is not None:
            self.labels.append(labels)
        self.count += int(features.shape[0])

    def to_set(self, device: torch.device) -> EmbeddingSet:
        if not self.features:
            return EmbeddingSet(
                torch.empty(0, self.width or 0, device=device),
                torch.empty(0, dtype=torch.int64, device=device),
                torch.empty(0, dtype=torch.int64, device=device) if self.has_labels else None,
            )
        return EmbeddingSet(
            torch.cat(self.features),
            torch.cat(self.keys),
            torch.cat(self.labels) if self.has_labels else None,
        )


class EmbeddingBuffer:
    """Bounded collection of real and fake embeddings on one rank, for one dataloader.

    Batches are kept as a list of tensors and concatenated once, at compute time. At most
    ``max_samples`` rows per set are kept on each rank: the first ones in the order they
    arrive (dataloader order), so the cap is deterministic.

    Args:
        max_samples: Cap per set and per rank; ``None`` keeps everything.
    """

    def __init__(self, max_samples: Optional[int]) -> None:
        self.max_samples = max_samples
        self.real = _SetBuffer("real", max_samples)
        self.fake = _SetBuffer("fake", max_samples)

    def add(
        self,
        real: Tensor,
        fake: Tensor,
        *,
        real_keys: Tensor,
        fake_keys: Tensor,
        real_labels: Optional[Tensor] = None,
        fake_labels: Optional[Tensor] = None,
    ) -> None:
        """Append one batch: ``real`` (B, D) and ``fake`` (B', D) with their int64 keys."""
        self.real.add(real, real_keys, real_labels)
        self.fake.add(fake, fake_keys, fake_labels)

    @property
    def full(self) -> bool:
        """Both sets reached the cap; later batches are ignored."""
        return (
            self.max_samples is not None
            and self.real.count >= self.max_samples
            and self.fake.count >= self.max_samples
        )

    def __len__(self) -> int:
        return self.real.count + self.fake.count

    def local_sets(
        self, device: Optional[torch.device] = None
    ) -> tuple[EmbeddingSet, EmbeddingSet]:
        """This rank's rows, concatenated: (real, fake)."""
        dev = device or torch.device("cpu")
        return self.real.to_set(dev), self.fake.to_set(dev)


def finalize_set(rows: EmbeddingSet, *, dedupe: bool, max_samples: Optional[int]) -> EmbeddingSet:
    """Sort rows by key (stable), drop repeated keys if ``dedupe``, keep ``max_samples`` rows."""
    if len(rows) == 0:
        return rows
    order = torch.sort(rows.keys, stable=True).indices
    rows = rows.select(order)
    if dedupe and len(rows) > 1:
        first = torch.ones(len(rows), dtype=torch.bool, device=rows.keys.device)
        first[1:] = rows.keys[1:] != rows.keys[:-1]
        if not bool(first.all()):
            rows = rows.select(first)
    if max_samples is not None and len(rows) > max_samples:
        rows = rows.select(torch.arange(max_samples, device=rows.keys.device))
    return rows


# --------------------------------------------------------------------------- distributed

AllGather = Callable[[Tensor], list[Tensor]]


def _dist_all_gather(device: torch.device) -> AllGather:
    import torch.distributed as dist

    def gather(tensor: Tensor) -> list[Tensor]:
        t = tensor.to(device).contiguous()
        out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
        dist.all_gather(out, t)
        return out

    return gather


def collective_device(preferred: Optional[torch.device] = None) -> torch.device:
    """Device that the default process group can communicate on (CUDA for NCCL)."""
    import torch.distributed as dist

    backend = str(dist.get_backend()).lower()
    if "nccl" in backend:
        if preferred is not None and preferred.type == "cuda":
            return preferred
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _gather_padded(
    tensor: Tensor, sizes: list[int], all_gather: AllGather, out_device: torch.device
) -> Tensor:
    """All-gather tensors whose first dimension differs per rank: pad to the max, trim."""
    longest = max(sizes)
    if longest == 0:
        return tensor.new_empty((0, *tensor.shape[1:])).to(out_device)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    parts = all_gather(padded)
    return torch.cat([part[:size].to(out_device) for part, size in zip(parts, sizes)])


def gather_embeddings(
    real: EmbeddingSet,
    fake: EmbeddingSet,
    *,
    all_gather: Optional[AllGather] = None,
    out_device: Optional[torch.device] = None,
) -> tuple[EmbeddingSet, EmbeddingSet]:
    """Concatenate every rank's rows, in rank order, on every rank.

    Every rank must call this, even one without rows (sizes may differ per rank). The
    sizes go first (one small all-gather), then each tensor padded to the longest rank's
    length, then trimmed. Features travel as float32 (float64 only if a rank holds float64).

    Args:
        real: This rank's real rows.
        fake: This rank's fake rows.
        all_gather: ``tensor -> list of tensors, one per rank``; defaults to
            ``torch.distributed.all_gather`` on the default process group.
        out_device: Where the gathered rows go (default: the device of ``real``).

    Returns:
        (real, fake) with all ranks' rows, rank 0's first. Unsorted: see :func:`finalize_set`.

    Raises:
        ValueError: On every rank, if ranks hold embeddings of different widths.
    """
    out = out_device or real.features.device
    if all_gather is None:
        all_gather = _dist_all_gather(collective_device(real.features.device))
    meta = torch.tensor(
        [
            len(real),
            len(fake),
            real.features.shape[1] if len(real) else -1,
            fake.features.shape[1] if len(fake) else -1,
            int(real.labels is not None and len(real) > 0),
            int(fake.labels is not None and len(fake) > 0),
            int(real.features.dtype == torch.float64),
            int(fake.features.dtype == torch.float64),
        ],
        dtype=torch.int64,
    )
    metas = [m.cpu() for m in all_gather(meta)]
    n_real = [int(m[0]) for m in metas]
    n_fake = [int(m[1]) for m in metas]
    widths = {int(m[c]) for m in metas for c in (2, 3)} - {-1}
    if len(widths) > 1:
        seen = ", ".join(
            f"rank {r}: real {n_real[r]}x{int(m[2])}, fake {n_fake[r]}x{int(m[3])}"
            for r, m in enumerate(metas)
        )
        raise ValueError(
            "Real and fake embeddings must have one width D on every rank; got " + seen + "."
        )
    width = widths.pop() if widths else 0

    def labels_wanted(column: int, counts: list[int]) -> bool:
        # Labels travel only if every rank that has rows has labels.
        holders = [int(m[column]) for m, n in zip(metas, counts) if n > 0]
        return bool(holders) and all(holders)

    gathered = []
    for rows, counts, column in ((real, n_real, 4), (fake, n_fake, 5)):
        # float32 unless a rank holds float64 for this set
        dtype = torch.float64 if any(int(m[column + 2]) for m in metas) else torch.float32
        features = rows.features.to(dtype)
        if features.shape[0] == 0:
            features = features.new_zeros((0, width))
        feats = _gather_padded(features, counts, all_gather, out)
        keys = _gather_padded(rows.keys.to(torch.int64), counts, all_gather, out)
        labels = None
        if labels_wanted(column, counts):
            local = rows.labels
            if local is None:
                local = torch.zeros(0, dtype=torch.int64)
            labels = _gather_padded(local.to(torch.int64), counts, all_gather, out)
        gathered.append(EmbeddingSet(feats, keys, labels))
    return gathered[0], gathered[1]
