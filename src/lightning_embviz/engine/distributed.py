"""Precision, recall, density and coverage with the distance work shared by every rank.

Every rank holds the same real set (N rows) and the same fake set (M rows): under DDP the
callback's gather gives every rank all rows. Rank ``r`` of ``W`` takes a contiguous share of
the rows of each set (:func:`row_share`) and does, for its rows only, every pass of the
single-process engine:

1. the real radii of its real rows (its rows against all N reals),
2. the fake radii of its fake rows (its rows against all M fakes),
3. one all-gather of those radii, since the real-fake tests of a real row need the radii of
   every fake (recall),
4. the real-fake tests of its real rows against all M fakes: per real row ``covered``,
   ``recalled`` and the nearest fake; per fake the number of this rank's balls holding it
   and the nearest of this rank's ball edges,
5. one all-gather of those results: the per-row parts are put end to end, the per-fake
   counts are summed and the per-fake minima folded (lowest index on ties).

Every rank then holds the whole :class:`~lightning_embviz.PRDCResult` and computes the four
numbers with the single-process code. The result is bit-identical to
:func:`lightning_embviz.compute_prdc_details` on any number of ranks: every decision of the
engine is exact, and every value it returns (radii, nearest distances, ratios) is the
reference-rounded exact distance of one pair, computed from that pair's coordinates alone,
whichever rank finds it. Before the work, a third and tiny all-gather checks that the ranks
hold the same sets (shapes, dtypes and a hash of the bits): otherwise every rank raises the
same error instead of returning garbage or hanging.

**A failing rank stops every rank.** Before each collective where a rank can fail (its input
checks, its share of the radii, its real-fake tests: out of memory, a kernel error), the
ranks agree on failure with one all-gather of a flag (8 bytes per rank). If any rank failed,
every rank raises the same :class:`RankFailedError` naming the failing rank and quoting its
error (that error is the cause on the failing rank); the same input error on every rank is
re-raised as it is. No rank is left waiting for the process group's timeout, and the group
stays usable.

Work per rank: the real-fake pass splits exactly (N·M / W pairs each). The radius passes
run each row block against every column block, N²/W pairs per rank, where one process uses
the symmetry and computes N²/2: two ranks do as many radius pairs each as one process, and
W ranks are W/2 times faster there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor

from lightning_embviz._arrays import ArrayLike, as_features
from lightning_embviz.engine.cross import CrossTests, cross_ball_tests
from lightning_embviz.engine.exact import pair_mode
from lightning_embviz.engine.frames import Frame
from lightning_embviz.engine.inputs import check_chunk, check_nearest_ks, check_pair, check_size
from lightning_embviz.engine.radii import neighbour_radii
from lightning_embviz.engine.reference import (
    CROSS_ROWS,
    RADIUS_BLOCK,
    RealReference,
    ReferenceCore,
)
from lightning_embviz.engine.results import PRDCResult, assemble_results

__all__ = [
    "RankFailedError",
    "compare_details_distributed",
    "compute_prdc_details_distributed",
    "fit_reference_distributed",
    "row_share",
    "sweep_details_distributed",
]

_INT64_MAX = torch.iinfo(torch.int64).max
_MESSAGE_BYTES = 2048  # of each failing rank's message, shared with the others
_T = TypeVar("_T")


class RankFailedError(RuntimeError):
    """One or more ranks failed in their share of the work; raised on every rank.

    Before each collective where a rank can fail (its input checks, its share of the
    radii, its real-fake tests), the ranks agree on failure, so that no rank waits in a
    collective that another never enters. The message is the same on every rank and
    quotes the first failing rank's error; on a failing rank that error is the cause.
    """


def _agree(
    comm: _Group,
    error: BaseException | None,
    stage: str,
    task: str = "the shared PRDC computation",
) -> None:
    """Every rank calls this with its error (or None); raise on every rank if any failed.

    One tiny all-gather of a flag per rank; only on failure a second one carries each
    failing rank's message. If every rank failed with the same error (identical inputs),
    each re-raises its own (a ``ValueError`` stays one); otherwise every rank raises the
    same :class:`RankFailedError` (``task`` names what stopped).
    """
    flags = comm.all_gather(torch.tensor([int(error is not None)], dtype=torch.int64))
    failed = [r for r, flag in enumerate(flags) if int(flag[0])]
    if not failed:
        return
    text = "" if error is None else f"{type(error).__name__}: {error}"
    data = torch.zeros(_MESSAGE_BYTES, dtype=torch.uint8)
    raw = text.encode("utf-8")[:_MESSAGE_BYTES]
    data[: len(raw)] = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else data[:0]
    texts = [
        bytes(part.tolist()).rstrip(b"\0").decode("utf-8", errors="replace")
        for part in comm.all_gather(data)
    ]
    if error is not None and len(failed) == comm.world and len(set(texts)) == 1:
        raise error  # the same error everywhere: the inputs' own error, on every rank
    others = [r for r in failed if r != failed[0]]
    also = f" (rank{'s' if len(others) > 1 else ''} {', '.join(map(str, others))} too)"
    message = (
        f"rank {failed[0]} of {comm.world} failed while {stage}"
        f"{also if others else ''}: {texts[failed[0]]}. Every rank stopped {task} here."
    )
    raise RankFailedError(message) from error


def _on_every_rank(
    comm: _Group,
    stage: str,
    work: Callable[[], _T],
    task: str = "the shared PRDC computation",
) -> _T:
    """Run this rank's ``work``; then agree with the other ranks (see :func:`_agree`)."""
    try:
        out = work()
    except Exception as err:
        _agree(comm, err, stage, task)
        raise  # not reached: `_agree` raises when this rank failed
    _agree(comm, None, stage, task)
    return out


def row_share(rows: int, rank: int, world: int) -> tuple[int, int]:
    """The rows ``start:stop`` of a rank's share: contiguous, in rank order, sizes within one.

    Args:
        rows: number of rows to share.
        rank: this rank, ``0 <= rank < world``.
        world: number of ranks.

    Returns:
        ``(start, stop)``; the first ``rows % world`` ranks hold one row more.

    Example::

        >>> [row_share(10, r, 3) for r in range(3)]
        [(0, 4), (4, 7), (7, 10)]
    """
    if world < 1 or not 0 <= rank < world:
        raise ValueError(
            f"rank must lie in [0, world) with world >= 1, got rank={rank}, world={world}."
        )
    base, extra = divmod(rows, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class _Group:
    """Rank, world size and all-gather of one process group (the default one if None)."""

    def __init__(self, group: Any) -> None:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            self.rank, self.world, self.group = 0, 1, None
            return
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        backend = str(dist.get_backend(group)).lower()
        self.device = (
            torch.device("cuda", torch.cuda.current_device())
            if "nccl" in backend
            else torch.device("cpu")
        )

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's ``tensor`` (same shape and dtype everywhere), in rank order."""
        import torch.distributed as dist

        t = tensor.to(self.device).contiguous()
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t, group=self.group)
        return [part.to(tensor.device) for part in out]


def _bits_hash(x: Tensor) -> int:
    """A hash of the values' bits and their positions, the same on every machine.

    Integer sums wrap around and do not depend on the summation order, so the hash does not
    depend on the thread count, unlike a floating-point sum.
    """
    flat = x.detach().contiguous().reshape(-1)
    if flat.numel() == 0:
        return 0
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.int8}[flat.element_size()]
    bits = flat.view(ints).to(torch.int64)
    weights = torch.arange(flat.numel(), device=flat.device, dtype=torch.int64) % 1_000_003 + 1
    return int((bits * weights).sum())


_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _set_signature(t: Tensor | None, values: bool = True) -> list[int]:
    """``[rows, width, dtype code, hash of the values]`` of a (N, D) set, to compare ranks.

    ``values=False`` puts 0 for the hash (only the shape and dtype must agree); a missing set
    (None) is ``[-1, -1, -1, 0]``.
    """
    if t is None:
        return [-1, -1, -1, 0]
    code = _DTYPES.index(t.dtype) if t.dtype in _DTYPES else len(_DTYPES)
    return [t.shape[0], t.shape[1], code, _bits_hash(t) if values else 0]


def _check_same_everywhere(comm: _Group, sets: Sequence[tuple[str, Tensor]]) -> None:
    """Raise the same ValueError on every rank unless all ranks hold bit-identical sets."""

    def describe() -> list[int]:
        return [v for _, t in sets for v in _set_signature(t)]

    meta = _on_every_rank(comm, "hashing its inputs", describe)
    parts = comm.all_gather(torch.tensor(meta, dtype=torch.int64))
    for index, (name, _) in enumerate(sets):
        seen = [tuple(p[4 * index : 4 * index + 4].tolist()) for p in parts]
        if len(set(seen)) > 1:
            shapes = ", ".join(f"rank {r}: {s[0]}x{s[1]}" for r, s in enumerate(seen))
            raise ValueError(
                f"The distributed PRDC needs the same `{name}` on every rank, but the ranks "
                f"hold different ones ({shapes}; or the same shape with other values, dtype "
                "or row order). Gather the sets first (every rank must pass all rows, in the "
                "same order), or compute on one rank with `compute_prdc_details`."
            )


def _pad_columns(x: Tensor, width: int) -> Tensor:
    out = x.new_zeros((x.shape[0], width))
    out[:, : x.shape[1]] = x
    return out


def _gather_rows(comm: _Group, local: Tensor, total: int) -> list[Tensor]:
    """Undo :func:`row_share`: each rank's (C, share) columns, padded for the gather."""
    longest = row_share(total, 0, comm.world)[1]
    parts = comm.all_gather(_pad_columns(local, longest))
    return [p[:, : b - a] for p, (a, b) in zip(parts, _shares(total, comm.world))]


def _shares(rows: int, world: int) -> list[tuple[int, int]]:
    return [row_share(rows, r, world) for r in range(world)]


def _empty_tests(n_k: int, m: int, device: torch.device) -> CrossTests:
    """What :func:`cross_ball_tests` gives for no real row (a rank without a share)."""
    none = torch.zeros(n_k, 0, dtype=torch.bool, device=device)
    return CrossTests(
        torch.zeros(n_k, m, dtype=torch.int64, device=device),
        none,
        none.clone(),
        torch.zeros(0, dtype=torch.float64, device=device),
        torch.zeros(0, dtype=torch.int64, device=device),
        torch.full((n_k, m), math.inf, dtype=torch.float64, device=device),
        torch.full((n_k, m), -1, dtype=torch.int64, device=device),
    )


def _local_real_radii(core: ReferenceCore, chunk: int | None, comm: _Group) -> Tensor:
    return core.radii_of_rows(chunk, row_share(int(core.real.shape[0]), comm.rank, comm.world))


def _sweep(
    core: ReferenceCore,
    fake: Tensor,
    ks: tuple[int, ...],
    chunk: int | None,
    comm: _Group,
    own_real_radii: Tensor | None,
) -> dict[int, PRDCResult]:
    """Shared fake radii and real-fake tests for fitted ``ks`` (increasing).

    With ``own_real_radii`` (this rank's share of the real radii for every fitted k, the
    reference not fitted yet), the real radii travel in the same all-gather as the fake
    radii.
    """
    n_k, n, m = len(ks), int(core.real.shape[0]), fake.shape[0]
    r0, r1 = row_share(n, comm.rank, comm.world)
    cross_block = chunk or CROSS_ROWS

    def fake_radii_share() -> tuple[Frame, Tensor]:
        cross, fake_frame = core.frames(fake, cross_block)
        own = neighbour_radii(
            fake,
            ks,
            pair_mode(fake.dtype, fake.dtype),
            chunk or RADIUS_BLOCK,
            fake_frame,
            row_share(m, comm.rank, comm.world),
        )
        return cross, own

    cross, own_fake_radii = _on_every_rank(
        comm, "computing its share of the fake radii", fake_radii_share
    )
    # Collective 1: the radii shares.
    if own_real_radii is None:
        fake_radii = torch.cat(_gather_rows(comm, own_fake_radii, m), dim=1)
    else:
        longest = row_share(n, 0, comm.world)[1]
        both = torch.cat([_pad_columns(own_real_radii, longest), own_fake_radii], dim=1)
        parts = comm.all_gather(_pad_columns(both, longest + row_share(m, 0, comm.world)[1]))
        reals, fakes = [], []
        for part, (a, b), (c, d) in zip(parts, _shares(n, comm.world), _shares(m, comm.world)):
            reals.append(part[:, : b - a])
            fakes.append(part[:, longest : longest + d - c])
        core.set_radii(torch.cat(reals, dim=1))
        fake_radii = torch.cat(fakes, dim=1)
    real_radii = core.radii_for(ks)

    def cross_tests_share() -> CrossTests:
        if r1 <= r0:
            return _empty_tests(n_k, m, fake.device)
        half = {"a": cross._half["a"][r0:r1]} if "a" in cross._half else {}
        share = Frame(cross.a32[r0:r1], cross.b32, cross.a_sq[r0:r1], cross.b_sq, cross.scale, half)
        return cross_ball_tests(
            core.real[r0:r1],
            fake,
            real_radii[:, r0:r1],
            fake_radii,
            pair_mode(core.real.dtype, fake.dtype),
            cross_block,
            share,
            details=True,
        )

    tests = _on_every_rank(comm, "testing its real rows against the fakes", cross_tests_share)
    assert tests.real_recalled is not None and tests.real_nearest is not None
    assert tests.real_nearest_index is not None
    assert tests.fake_ratio is not None and tests.fake_ratio_index is not None
    # Collective 2: per real row (covered, recalled, nearest fake and its index) and per fake
    # (ball count, nearest ball edge ratio and its real), in float64: counts and indices
    # stay below 2^53, so they travel exactly.
    f64 = torch.float64
    ratio_index = torch.where(tests.fake_ratio_index >= 0, tests.fake_ratio_index + r0, -1)
    per_row = torch.cat(
        [
            tests.real_covered.to(f64),
            tests.real_recalled.to(f64),
            tests.real_nearest.to(f64).unsqueeze(0),
            tests.real_nearest_index.to(f64).unsqueeze(0),
        ]
    )
    longest = row_share(n, 0, comm.world)[1]
    per_fake = torch.cat(
        [tests.fake_ball_count.to(f64), tests.fake_ratio.to(f64), ratio_index.to(f64)], dim=1
    )
    row_part = _pad_columns(per_row, longest)
    parts = comm.all_gather(torch.cat([row_part.reshape(-1), per_fake.reshape(-1)]))
    split = row_part.numel()
    rows = torch.cat(
        [
            p[:split].view(row_part.shape)[:, : b - a]
            for p, (a, b) in zip(parts, _shares(n, comm.world))
        ],
        dim=1,
    )
    gathered = torch.stack([p[split:].view(per_fake.shape) for p in parts])  # (W, K, 3 M)
    count = gathered[:, :, :m].to(torch.int64).sum(dim=0)
    ratios = gathered[:, :, m : 2 * m]
    ratio = ratios.amin(dim=0)
    # The lowest real index among the ranks that reach the minimum (-1 where none does).
    reached = (ratios == ratio.unsqueeze(0)) & torch.isfinite(ratio).unsqueeze(0)
    index = torch.where(reached, gathered[:, :, 2 * m :].to(torch.int64), _INT64_MAX).amin(dim=0)
    index[~torch.isfinite(ratio)] = -1
    combined = CrossTests(
        count,
        rows[:n_k].to(torch.bool),
        rows[n_k : 2 * n_k].to(torch.bool),
        rows[2 * n_k],
        rows[2 * n_k + 1].to(torch.int64),
        ratio,
        index,
    )
    return assemble_results(ks, real_radii, fake_radii, combined)


def fit_reference_distributed(
    real: ArrayLike,
    nearest_k: int | Sequence[int] = 5,
    *,
    group: Any = None,
    chunk_size: int | None = None,
) -> RealReference:
    """:class:`~lightning_embviz.RealReference` with the radius pass shared by the ranks.

    Every rank of ``group`` must call this with the same real set; each computes the radii
    of its share of the rows (:func:`row_share`) and one all-gather puts them together. The
    reference returned on every rank is identical to ``RealReference(real, nearest_k)``.
    Without an initialised process group (or with one rank) it is that call.

    Args:
        real: (N, D) array or tensor of real embeddings, the same on every rank.
        nearest_k: one k, or a sequence of k to fit; each 1 <= k < N.
        group: the ``torch.distributed`` process group (None: the default one).
        chunk_size: rows per block; None picks one.

    Returns:
        The fitted reference, on every rank.

    Raises:
        TypeError: if ``real`` is not an array or tensor of numbers, or a k is not an int.
        ValueError: on the input errors of :class:`~lightning_embviz.RealReference`, or
            (on every rank) when the ranks hold different real sets.
    """
    comm = _Group(group)
    if comm.world == 1:
        return RealReference(real, nearest_k, chunk_size=chunk_size)

    def prepare() -> tuple[ReferenceCore, int | None]:
        ks = check_nearest_ks(nearest_k)
        chunk = check_chunk(chunk_size)
        return ReferenceCore.prepare(_checked_real(real, ks), ks), chunk

    core, chunk = _on_every_rank(comm, "checking its inputs", prepare)
    _check_same_everywhere(comm, [("real", core.real)])
    own = _on_every_rank(
        comm,
        "computing its share of the real radii",
        lambda: _local_real_radii(core, chunk, comm),
    )
    core.set_radii(torch.cat(_gather_rows(comm, own, int(core.real.shape[0])), dim=1))
    return RealReference.from_core(core)


def _checked_real(real: ArrayLike, ks: tuple[int, ...]) -> Tensor:
    """The checks and the private copy of ``RealReference(real, ks)``."""
    t = as_features(real, "real")
    for k in ks:
        check_size(k, t.shape[0], "real")
    return t.clone()


def sweep_details_distributed(
    reference: RealReference,
    fake: ArrayLike,
    *,
    group: Any = None,
    chunk_size: int | None = None,
) -> dict[int, PRDCResult]:
    """:meth:`RealReference.sweep_details` with the fake-fake and real-fake work shared.

    Every rank of ``group`` must call this with the same reference and the same fake set.
    Each rank computes the fake radii of its share of the fake rows and the real-fake tests
    of its share of the real rows; one all-gather exchanges the fake radii, one more the
    per-row results. Every rank gets results bit-identical to
    ``reference.sweep_details(fake)``. Without an initialised process group (or with one
    rank) it is that call.

    Args:
        reference: the fitted real set, the same on every rank.
        fake: (M, D) array or tensor, the same on every rank; M > the largest fitted k.
        group: the ``torch.distributed`` process group (None: the default one).
        chunk_size: rows per block; None picks one.

    Returns:
        ``{k: PRDCResult}`` in the order of ``reference.nearest_ks``, on every rank.

    Raises:
        ValueError: on the input errors of :meth:`RealReference.sweep_details`, or (on
            every rank) when the ranks hold different sets.
    """
    comm = _Group(group)
    if comm.world == 1:
        return reference.sweep_details(fake, chunk_size=chunk_size)

    core = reference.core
    chunk, f = _on_every_rank(
        comm, "checking its inputs", lambda: core.check_sweep(fake, chunk_size)
    )
    _check_same_everywhere(comm, [("reference.real", reference.real), ("fake", f)])
    results = _sweep(core, f.contiguous(), core.sorted_ks, chunk, comm, None)
    return {k: results[k] for k in core.ks}


def compare_details_distributed(
    reference: RealReference,
    fake: ArrayLike,
    nearest_k: int | None = None,
    *,
    group: Any = None,
    chunk_size: int | None = None,
) -> PRDCResult:
    """:meth:`RealReference.compare_details` with the fake-fake and real-fake work shared.

    As :func:`sweep_details_distributed`, for one fitted k: every rank of ``group`` calls it
    with the same reference and fake set and gets a result bit-identical to
    ``reference.compare_details(fake, nearest_k)``.

    Args:
        reference: the fitted real set, the same on every rank.
        fake: (M, D) array or tensor, the same on every rank.
        nearest_k: a fitted k; None takes the first fitted one.
        group: the ``torch.distributed`` process group (None: the default one).
        chunk_size: rows per block; None picks one.

    Returns:
        A :class:`~lightning_embviz.PRDCResult`, on every rank.

    Raises:
        ValueError: on the input errors of :meth:`RealReference.compare_details`, or (on
            every rank) when the ranks hold different sets.
    """
    comm = _Group(group)
    if comm.world == 1:
        return reference.compare_details(fake, nearest_k, chunk_size=chunk_size)

    core = reference.core
    k, chunk, f = _on_every_rank(
        comm, "checking its inputs", lambda: core.check_compare(fake, nearest_k, chunk_size)
    )
    _check_same_everywhere(comm, [("reference.real", reference.real), ("fake", f)])
    return _sweep(core, f.contiguous(), (k,), chunk, comm, None)[k]


def compute_prdc_details_distributed(
    real_features: ArrayLike,
    fake_features: ArrayLike,
    nearest_k: int = 5,
    *,
    group: Any = None,
    chunk_size: int | None = None,
) -> PRDCResult:
    """:func:`~lightning_embviz.compute_prdc_details` with the work shared by every rank.

    Every rank of ``group`` must call this with the same two sets (under DDP, the gathered
    ones). Rank r computes, for its share of the rows (:func:`row_share`), the real radii,
    the fake radii and the real-fake tests; three all-gathers (a check that the ranks hold
    the same sets, the radii, the per-row results) put the shares together. Every rank
    gets a result bit-identical to the single-process one, whatever the number of ranks.
    Without an initialised process group (or with one rank) it is
    ``compute_prdc_details(real_features, fake_features, nearest_k)``.

    Args:
        real_features: (N, D) array or tensor of real embeddings, any float dtype.
        fake_features: (M, D) array or tensor of generated embeddings, same D.
        nearest_k: k of the k-NN balls, 1 <= k < min(N, M).
        group: the ``torch.distributed`` process group (None: the default one).
        chunk_size: rows per block; None picks one.

    Returns:
        A :class:`~lightning_embviz.PRDCResult`, on every rank.

    Raises:
        TypeError: if an input is not an array/tensor, or ``nearest_k`` is not an int.
        ValueError: on the input errors of :func:`~lightning_embviz.compute_prdc`, or (on
            every rank) when the ranks hold different sets.
    """
    comm = _Group(group)
    if comm.world == 1:
        real, fake, k = check_pair(real_features, fake_features, nearest_k)
        chunk = check_chunk(chunk_size)
        return ReferenceCore.fit(real, (k,), chunk).results(fake, (k,), chunk)[k]

    def prepare() -> tuple[Tensor, Tensor, int, int | None]:
        real, fake, k = check_pair(real_features, fake_features, nearest_k)
        return real, fake, k, check_chunk(chunk_size)

    real, fake, k, chunk = _on_every_rank(comm, "checking its inputs", prepare)
    _check_same_everywhere(comm, [("real_features", real), ("fake_features", fake)])
    core = ReferenceCore.prepare(real, (k,))
    own = _on_every_rank(
        comm,
        "computing its share of the real radii",
        lambda: _local_real_radii(core, chunk, comm),
    )
    return _sweep(core, fake.contiguous(), (k,), chunk, comm, own)[k]
