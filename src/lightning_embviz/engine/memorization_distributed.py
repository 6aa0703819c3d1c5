"""The memorization numbers with the training set shared by DDP ranks.

Every rank holds the same :class:`~lightning_embviz.memorization.TrainReference` (N training
rows) and the same gathered fakes (M rows) and held-out reals (H rows). Rank ``r`` of ``W``
searches only its contiguous share of the training rows (:func:`row_share`) for every query,
and one all-gather folds the shares (:func:`~lightning_embviz.engine.nearest_train.fold_nearest`:
the smallest squared distance, the lowest *global* training index on ties):

1. the fakes and the held-out reals against the rank's training rows: (M + H) x N / W pairs;
2. the training rows whose leave-one-out distance (to their nearest other training row) is
   not known yet, against the rank's training rows: the fakes' nearest rows (and, without
   held-out reals, the ``self_rows`` sample: once, the reference keeps them). Before this
   pass one tiny all-gather makes the rows to compute the union over the ranks, so ranks
   whose kept distances differ still take the same steps;
3. with held-out reals, the k-means cells: fitted on rank 0 (once; the reference keeps
   them) and sent to every rank (one all-gather of K x D values).

Every rank then computes the numbers with the single-process code and gets a result
bit-identical to ``reference.compare_details(fake, heldout)``: every squared distance is
computed in float64 from its pair's coordinates alone, whichever rank finds it, and the fold
keeps exactly the single-process rule (smallest exact value, lowest index on ties).

As in :mod:`lightning_embviz.engine.distributed`, a tiny all-gather first checks that the
ranks hold the same sets (shapes, dtypes, a hash of the bits; the training set by its
fingerprint), and before each collective where a rank can fail the ranks agree on failure:
every rank raises the same :class:`~lightning_embviz.engine.distributed.RankFailedError`
naming the failing rank, or, when every rank failed the same way (the inputs), that error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike
from lightning_embviz.engine.distributed import (
    _bits_hash,
    _Group,
    _on_every_rank,
    _set_signature,
    row_share,
)
from lightning_embviz.engine.memorization import MemorizationResult
from lightning_embviz.engine.memorization_reference import LocalSearch, TrainReference
from lightning_embviz.engine.nearest_train import fold_nearest, nearest_squared

__all__ = ["ShardedSearch", "compare_memorization_distributed"]

_T = TypeVar("_T")
_TASK = "the shared memorization computation"


class ShardedSearch(LocalSearch):
    """:class:`LocalSearch` with the training set shared by the ranks of a process group.

    Each :meth:`nearest` searches this rank's training rows (:func:`row_share`) and folds
    every rank's result; :meth:`union` and :meth:`centroids` make every rank take the same
    steps with the same values. Every rank must make the same calls in the same order.

    Args:
        comm: the process group (:class:`~lightning_embviz.engine.distributed._Group`).
    """

    def __init__(self, comm: _Group) -> None:
        self.comm = comm

    def step(self, stage: str, work: Callable[[], _T]) -> _T:
        """``work()``, then agree with the other ranks on failure."""
        return _on_every_rank(self.comm, stage, work, _TASK)

    def nearest(
        self, reference: TrainReference, work: Callable[[], tuple[Tensor, Tensor | None]]
    ) -> tuple[Tensor, Tensor]:
        """This rank's share of the search, then one all-gather and the fold."""
        span = row_share(reference.num_train, self.comm.rank, self.comm.world)

        def share() -> Tensor:
            queries, exclude = work()
            index, sq = nearest_squared(
                queries, reference.train, reference.frame, exclude, reference.chunk_size, span=span
            )
            # One int64 message: the indices and the bits of the squared distances.
            return torch.stack([index, sq.view(torch.int64)])

        packed = self.step("searching its share of the training set", share)
        parts = self.comm.all_gather(packed)
        index = torch.stack([p[0] for p in parts])
        sq = torch.stack([p[1].contiguous().view(torch.float64) for p in parts])
        return fold_nearest(index, sq)

    def union(self, work: Callable[[], tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
        """``work()``'s rows, missing where any rank misses them (one all-gather)."""
        rows, missing = self.step("listing the training rows to search", work)
        flags = self.comm.all_gather(missing.to(torch.uint8))
        return rows, torch.stack(flags).amax(dim=0).to(torch.bool).to(missing.device)

    def centroids(self, reference: TrainReference) -> Tensor:
        """Rank 0's k-means centroids (fitted there if needed), kept on every rank."""
        shape = (reference.n_cells, reference.width)

        def fit() -> Tensor:
            if self.comm.rank == 0:
                return reference.centroids().detach().to(torch.float64).contiguous()
            return torch.zeros(shape, dtype=torch.float64, device=reference.train.device)

        mine = self.step("fitting the k-means cells", fit)
        chosen = self.comm.all_gather(mine)[0].to(reference.train.device)
        reference._centroids = chosen
        return chosen


def _describe(reference: TrainReference, f: Tensor, h: Tensor | None) -> list[int]:
    """What must agree across ranks, as int64 values."""
    meta = [
        reference.num_train,
        reference.width,
        reference.n_cells,
        int(reference._sample_rows.numel()),
        _bits_hash(reference._sample_rows),
        int(reference.fingerprint[:15], 16),
    ]
    return meta + _set_signature(f) + _set_signature(h)


def _check_same_everywhere(comm: _Group, reference: TrainReference, f: Tensor, h: Any) -> None:
    """Raise the same ValueError on every rank unless all ranks hold the same sets."""
    meta = _on_every_rank(comm, "hashing its inputs", lambda: _describe(reference, f, h), _TASK)
    parts = [p.tolist() for p in comm.all_gather(torch.tensor(meta, dtype=torch.int64))]
    for name, lo, hi in (("reference", 0, 6), ("fake", 6, 10), ("heldout", 10, 14)):
        seen = [tuple(p[lo:hi]) for p in parts]
        if len(set(seen)) > 1:
            if name == "reference":
                shapes = ", ".join(f"rank {r}: {s[0]}x{s[1]}" for r, s in enumerate(seen))
                what = "the same TrainReference (training set, n_cells, self_rows, seed)"
            else:
                shapes = ", ".join(
                    f"rank {r}: {'None' if s[0] < 0 else f'{s[0]}x{s[1]}'}"
                    for r, s in enumerate(seen)
                )
                what = f"the same `{name}`"
            raise ValueError(
                f"The distributed memorization needs {what} on every rank, but the ranks "
                f"hold different ones ({shapes}; or the same shape with other values, dtype "
                "or row order). Gather the sets first (every rank must pass all rows, in the "
                "same order), or compute on one rank with `TrainReference.compare_details`."
            )


def compare_memorization_distributed(
    reference: TrainReference,
    fake: ArrayLike,
    heldout: ArrayLike | None = None,
    *,
    alpha: float = 0.05,
    min_cell_fakes: int = 20,
    group: Any = None,
) -> MemorizationResult:
    """:meth:`TrainReference.compare_details` with the training set shared by every rank.

    Every rank of ``group`` must call this with the same reference, fakes and held-out
    reals (under DDP, the gathered ones). Rank r searches its share of the training rows
    (:func:`~lightning_embviz.engine.distributed.row_share`) for every fake and held-out
    real, and for the training rows whose leave-one-out distance is needed; all-gathers
    fold the shares. Every rank gets a result bit-identical to
    ``reference.compare_details(fake, heldout, alpha=alpha, min_cell_fakes=min_cell_fakes)``,
    whatever the number of ranks, and keeps the same fitted parts. Without an initialised
    process group (or with one rank) it is that call.

    Work per rank: (M + H) x N / W distance pairs for the search, plus (new nearest rows)
    x N / W for their leave-one-out distances; memory as in one process (each rank holds
    the whole reference).

    Args:
        reference: the fitted training side, the same on every rank.
        fake: (M, D) generated embeddings, the same on every rank.
        heldout: (H, D) held-out reals, the same on every rank, or None.
        alpha: quantile level of the copy threshold, in (0, 1).
        min_cell_fakes: fakes a k-means cell needs to enter C_T.
        group: the ``torch.distributed`` process group (None: the default one).

    Returns:
        A :class:`~lightning_embviz.memorization.MemorizationResult`, on every rank.

    Raises:
        TypeError, ValueError: on the input errors of :meth:`TrainReference.compare_details`
            (on every rank), or when the ranks hold different sets.
        RankFailedError: on every rank, when a rank failed in its share of the work.
    """
    comm = _Group(group)
    if comm.world == 1:
        return reference.compare_details(fake, heldout, alpha=alpha, min_cell_fakes=min_cell_fakes)
    f, h, a, min_fakes = _on_every_rank(
        comm,
        "checking its inputs",
        lambda: reference.check_inputs(fake, heldout, alpha, min_cell_fakes),
        _TASK,
    )
    _check_same_everywhere(comm, reference, f, h)
    return reference.compare_with(ShardedSearch(comm), f, h, a, min_fakes)
