"""Per-rank bounded collection of embeddings, and the gather across ranks.

No Lightning import here: the callback feeds an :class:`EmbeddingBuffer` batch by batch and
calls :func:`gather_embeddings` at the end of the validation run, on every rank.

Each row carries an integer *key* (see :mod:`lightning_embviz.callback.sampler`) that orders it and
tells duplicates apart:

- the position of the sample in the (global) sampler stream, when the callback can work it out
  (single process, or Lightning's ``DistributedSampler``); rows the distributed sampler pads in
  are never added, so keys are unique;
- or the dataset index the user returned with the batch; then *real* rows sharing a key are
  counted once (the first one in key order wins), which also removes the sampler's padding;
- or an ordinal key (:data:`~lightning_embviz.callback.sampler.ORDINAL_BASE` and up) for rows with
  neither, unique per rank.

Fakes are never merged by key: a fake paired with a real row shares its key (so paired rows
stay paired under the cap), the others get ordinal keys, and the fakes of padded rows are
dropped by position before they reach the buffer.

**The sample cap is a uniform subsample.** With ``max_samples=n`` the kept rows are the ``n``
whose *hashed* key is smallest (a fixed 64-bit mix of key and seed): a uniformly random subset
of the whole validation run, whatever the loader order (class-sorted sets included), the same
rows on one rank or many, and the same rows every epoch. Each rank keeps at most ``2 n`` rows
(compacted to its ``n`` smallest hashes whenever it holds more), and the global ``n`` smallest
hashes are always among the ranks' own ``n`` smallest, so memory is bounded by the cap and the
result equals a single process's. Real and fake rows with the same key share a hash, so
paired rows stay paired.

After the gather, :func:`finalize_set` de-duplicates the reals, applies the cap and sorts by key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

from lightning_embviz.audio import Clips
from lightning_embviz.callback.outputs import Thumbnails

__all__ = [
    "EmbeddingBuffer",
    "EmbeddingSet",
    "finalize_set",
    "gather_embeddings",
    "gather_selected_images",
    "key_hash",
]

_MASK63 = (1 << 63) - 1


def key_hash(keys: Tensor, seed: int = 0) -> Tensor:
    """A fixed pseudo-random 63-bit value per key (splitmix64 finaliser), as int64 on the CPU.

    Deterministic across processes, platforms and runs; used to pick a uniform subsample.
    """
    with np.errstate(over="ignore"):
        z = keys.detach().cpu().numpy().astype(np.uint64)
        z = z + np.uint64((0x9E3779B97F4A7C15 * (int(seed) + 1)) & ((1 << 64) - 1))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return torch.from_numpy((z & np.uint64(_MASK63)).astype(np.int64))


@dataclass
class EmbeddingSet:
    """Rows of one set (real or fake): features (N, D), keys (N,) int64, labels (N,) or None.

    ``seen`` counts the rows offered before the cap (>= ``len(self)``). ``images`` (CPU
    thumbnails, one per row, or None) never leave their rank: :func:`gather_selected_images`
    fetches the few a gallery shows. ``audio`` (kept clips, one per row, or None) likewise
    stays on its rank; ``groups`` (N,) int64 group ids or None travel with the rows.
    """

    features: Tensor
    keys: Tensor
    labels: Optional[Tensor] = None
    seen: int = -1
    images: Optional[Thumbnails] = None
    audio: Optional[Clips] = None
    groups: Optional[Tensor] = None

    def __post_init__(self) -> None:
        if self.seen < 0:
            self.seen = len(self)

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def select(self, index: Tensor) -> EmbeddingSet:
        """Rows at ``index`` (a bool mask or integer positions); ``seen`` is kept."""
        return EmbeddingSet(
            self.features[index],
            self.keys[index],
            None if self.labels is None else self.labels[index],
            self.seen,
            None if self.images is None else self.images.select(index.cpu()),
            None if self.audio is None else self.audio.select(index.cpu()),
            None if self.groups is None else self.groups[index.to(self.groups.device)],
        )

    def to(self, device: torch.device) -> EmbeddingSet:
        """The same rows on ``device``."""
        return EmbeddingSet(
            self.features.to(device),
            self.keys.to(device),
            None if self.labels is None else self.labels.to(device),
            self.seen,
            self.images,
            self.audio,
            self.groups,
        )


def _first_of_each_key(keys: Tensor) -> Tensor:
    """Positions of the first row of each distinct key, in key order (stable)."""
    order = torch.sort(keys, stable=True).indices
    sorted_keys = keys[order]
    first = torch.ones(len(order), dtype=torch.bool, device=keys.device)
    first[1:] = sorted_keys[1:] != sorted_keys[:-1]
    return order[first]


def _smallest_hashes(rows: EmbeddingSet, n: int, seed: int, dedupe: bool) -> EmbeddingSet:
    """Keep (first copies of) the ``n`` keys with the smallest hash, sorted by key."""
    pick = _first_of_each_key(rows.keys) if dedupe else torch.sort(rows.keys, stable=True).indices
    if len(pick) > n:
        hashed = key_hash(rows.keys[pick].cpu(), seed)
        # ties (equal hashes of different keys, ~never) are broken by key: `pick` is key-sorted
        best = torch.sort(hashed, stable=True).indices[:n]
        pick = pick[torch.sort(best.to(pick.device)).values]
    if len(pick) == len(rows) and bool((pick == torch.arange(len(rows), device=pick.device)).all()):
        return rows
    return rows.select(pick)


class _SetBuffer:
    """Bounded list of batches for one set; concatenated only when asked."""

    def __init__(self, name: str, max_samples: Optional[int], seed: int, dedupe: bool) -> None:
        self.name = name
        self.dedupe = dedupe
        self.max_samples = max_samples
        self.seed = seed
        self.features: list[Tensor] = []
        self.keys: list[Tensor] = []
        self.labels: list[Tensor] = []
        self.images: list[Thumbnails] = []
        self.audio: list[Clips] = []
        self.groups: list[Tensor] = []
        self.has_labels: Optional[bool] = None
        self.has_images: Optional[bool] = None
        self.width: Optional[int] = None
        self.held = 0
        self.seen = 0

    def add(
        self,
        features: Tensor,
        keys: Tensor,
        labels: Optional[Tensor],
        images: Optional[Thumbnails] = None,
        audio: Optional[Clips] = None,
        groups: Optional[Tensor] = None,
    ) -> None:
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
        with_images = images is not None
        if self.has_images is not None and with_images != self.has_images:
            raise ValueError(
                f"Images for `{self.name}` were given for some validation batches and not for "
                "others; return them with every batch or with none."
            )
        shape = None if images is None else tuple(images.pixels.shape[1:])
        if shape is not None and self.images and shape != tuple(self.images[0].pixels.shape[1:]):
            raise ValueError(
                f"`{self.name}` images changed shape between batches: earlier batches gave "
                f"thumbnails {tuple(self.images[0].pixels.shape[1:])}, this one {shape}; "
                "return images of one size."
            )
        self.width = int(features.shape[1])
        self.has_labels = has
        self.has_images = with_images
        self.features.append(features)
        self.keys.append(keys)
        if labels is not None:
            self.labels.append(labels)
        if images is not None:
            self.images.append(images)
        # Clips and groups follow the run's first batch (callback.audio keeps them consistent).
        if audio is not None and len(self.audio) == len(self.features) - 1:
            self.audio.append(audio)
        if groups is not None and len(self.groups) == len(self.features) - 1:
            self.groups.append(groups)
        self.held += int(features.shape[0])
        self.seen += int(features.shape[0])
        if self.max_samples is not None and self.held > 2 * self.max_samples:
            self._compact()

    def _concat(self) -> EmbeddingSet:
        return EmbeddingSet(
            torch.cat(self.features) if len(self.features) > 1 else self.features[0],
            torch.cat(self.keys) if len(self.keys) > 1 else self.keys[0],
            (torch.cat(self.labels) if len(self.labels) > 1 else self.labels[0])
            if self.has_labels
            else None,
            images=Thumbnails.cat(self.images) if self.has_images else None,
            audio=Clips.cat(self.audio) if self._complete(self.audio) else None,
            groups=torch.cat(self.groups) if self._complete(self.groups) else None,
        )

    def _complete(self, parts: list[Any]) -> bool:
        return bool(parts) and len(parts) == len(self.features)

    def _compact(self) -> None:
        assert self.max_samples is not None
        rows = _smallest_hashes(self._concat(), self.max_samples, self.seed, self.dedupe)
        self.features, self.keys = [rows.features], [rows.keys]
        self.labels = [rows.labels] if rows.labels is not None else []
        self.images = [rows.images] if rows.images is not None else []
        self.audio = [rows.audio] if rows.audio is not None else []
        self.groups = [rows.groups] if rows.groups is not None else []
        self.held = len(rows)

    def to_set(self, device: Optional[torch.device]) -> EmbeddingSet:
        if not self.features:
            dev = device or torch.device("cpu")
            return EmbeddingSet(
                torch.empty(0, self.width or 0, device=dev),
                torch.empty(0, dtype=torch.int64, device=dev),
                torch.empty(0, dtype=torch.int64, device=dev) if self.has_labels else None,
                0,
            )
        if self.max_samples is not None and self.held > self.max_samples:
            self._compact()
        rows = self._concat()
        rows.seen = self.seen
        return rows if device is None else rows.to(device)


class EmbeddingBuffer:
    """Bounded collection of real and fake embeddings on one rank, for one dataloader.

    Batches are kept as a list of tensors and concatenated at compute time. With a cap, at
    most ``2 * max_samples`` rows per set are held, and :meth:`local_sets` returns the rank's
    ``max_samples`` rows with the smallest hashed key (a uniform, deterministic subsample; see
    the module docstring).

    Args:
        max_samples: Cap per set; ``None`` keeps everything.
        seed: Seed of the subsample's hash.
    """

    def __init__(self, max_samples: Optional[int], seed: int = 0) -> None:
        self.max_samples = max_samples
        self.real = _SetBuffer("real", max_samples, seed, dedupe=True)
        self.fake = _SetBuffer("fake", max_samples, seed, dedupe=False)

    def add(
        self,
        real: Tensor,
        fake: Tensor,
        *,
        real_keys: Tensor,
        fake_keys: Tensor,
        real_labels: Optional[Tensor] = None,
        fake_labels: Optional[Tensor] = None,
        real_images: Optional[Thumbnails] = None,
        fake_images: Optional[Thumbnails] = None,
        real_audio: Optional[Clips] = None,
        fake_audio: Optional[Clips] = None,
        real_groups: Optional[Tensor] = None,
        fake_groups: Optional[Tensor] = None,
    ) -> None:
        """Append one batch: ``real`` (B, D) and ``fake`` (B', D) with their int64 keys."""
        self.real.add(real, real_keys, real_labels, real_images, real_audio, real_groups)
        self.fake.add(fake, fake_keys, fake_labels, fake_images, fake_audio, fake_groups)

    def __len__(self) -> int:
        return self.real.held + self.fake.held

    def local_sets(
        self, device: Optional[torch.device] = None
    ) -> tuple[EmbeddingSet, EmbeddingSet]:
        """This rank's rows (capped), concatenated: (real, fake), on ``device`` if given."""
        return self.real.to_set(device), self.fake.to_set(device)


def finalize_set(
    rows: EmbeddingSet, *, dedupe: bool, max_samples: Optional[int], seed: int = 0
) -> EmbeddingSet:
    """Drop repeated keys if ``dedupe`` (first in key order wins), apply the uniform cap, sort.

    ``dedupe`` is for real rows only: fakes are never merged with one another.

    Returns the rows sorted by key; with ``max_samples``, only the ``max_samples`` rows whose
    hashed key is smallest (see the module docstring). No copy when nothing changes.
    """
    if len(rows) == 0:
        return rows
    n = len(rows) if max_samples is None else max_samples
    return _smallest_hashes(rows, n, seed, dedupe)


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
            real.seen,
            fake.seen,
            int(real.groups is not None and len(real) > 0),
            int(fake.groups is not None and len(fake) > 0),
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
        total_seen = sum(int(m[column + 4]) for m in metas)
        groups = None
        if labels_wanted(column + 6, counts):  # group ids travel like labels
            local = rows.groups if rows.groups is not None else torch.zeros(0, dtype=torch.int64)
            groups = _gather_padded(local.to(torch.int64), counts, all_gather, out)
        gathered.append(EmbeddingSet(feats, keys, labels, total_seen, groups=groups))
    return gathered[0], gathered[1]


def locate_keys(local_keys: Optional[Tensor], wanted: Tensor) -> tuple[Tensor, Tensor]:
    """Which of the keys ``wanted`` this rank holds, and at which local row.

    Args:
        local_keys: (N,) keys of this rank's rows, or None when it holds no samples.
        wanted: (G,) int64 CPU keys to look up.

    Returns:
        ``(found, rows)``: (G,) bool and (G,) int64 on the CPU; ``rows[i]`` is meaningful
        only where ``found[i]``.
    """
    keys = None if local_keys is None else local_keys.to(torch.int64).cpu()
    if keys is None or not len(keys) or not len(wanted):
        return torch.zeros(len(wanted), dtype=torch.bool), torch.zeros(
            len(wanted), dtype=torch.int64
        )
    order = torch.sort(keys, stable=True)
    pos = torch.searchsorted(order.values, wanted).clamp(max=len(keys) - 1)
    return order.values[pos] == wanted, order.indices[pos]


def gather_selected_images(
    local: Optional[Thumbnails],
    local_keys: Tensor,
    wanted: Tensor,
    *,
    all_gather: Optional[AllGather] = None,
) -> Optional[Thumbnails]:
    """The thumbnails of the rows with keys ``wanted``, from whichever rank holds them.

    Every rank calls this with the same ``wanted`` (the few keys a gallery shows); each rank
    contributes the thumbnails it holds, one small all-gather moves them, and every rank gets
    them in the order of ``wanted``. Without ``all_gather`` and outside a process group, the
    local rows are used (one process). Returns None if no rank has images.

    Args:
        local: This rank's thumbnails (one per local row) or None.
        local_keys: (N,) keys of this rank's rows.
        wanted: (G,) keys to fetch; keys nobody holds give blank tiles.
        all_gather: As in :func:`gather_embeddings`.
    """
    wanted = wanted.to(torch.int64).cpu()
    distributed = all_gather is not None or (
        torch.distributed.is_available() and torch.distributed.is_initialized()
    )
    found, rows = locate_keys(local_keys if local is not None else None, wanted)
    shape = None if local is None else tuple(local.pixels.shape[1:])
    if not distributed:
        if local is None:
            return None
        out = local.select(rows)
        out.pixels[~found] = 0
        out.ranges[~found] = 0.0
        return out
    if all_gather is None:
        all_gather = _dist_all_gather(collective_device())
    meta = torch.tensor([-1, -1, -1] if shape is None else list(shape), dtype=torch.int64)
    shapes = {tuple(int(v) for v in m.cpu()) for m in all_gather(meta)} - {(-1, -1, -1)}
    if not shapes:
        return None
    if len(shapes) > 1:
        raise ValueError(f"Ranks hold thumbnails of different shapes: {sorted(shapes)}.")
    (c, h, w) = shapes.pop()
    pixels = torch.zeros(len(wanted), c, h, w, dtype=torch.uint8)
    ranges = torch.zeros(len(wanted), 2, dtype=torch.float32)
    if local is not None:
        pixels[found] = local.pixels[rows[found]]
        ranges[found] = local.ranges[rows[found]]
    flags = found.to(torch.int64)
    parts = zip(all_gather(flags), all_gather(pixels), all_gather(ranges))
    out_pixels = torch.zeros_like(pixels)
    out_ranges = torch.zeros_like(ranges)
    taken = torch.zeros(len(wanted), dtype=torch.bool)
    for flag, pix, rng in parts:  # rank order: the first rank holding a key wins
        use = flag.cpu().bool() & ~taken
        out_pixels[use] = pix.cpu()[use]
        out_ranges[use] = rng.cpu()[use]
        taken |= use
    return Thumbnails(out_pixels, out_ranges)
