"""Memorization with the training set shared by gloo ranks: the single-process result, bit for bit.

Each rank searches its share of the training rows (``row_share``); the shares are folded
(smallest squared distance, lowest global index on ties). The ranks run without a Trainer
(``mp.spawn``, a file store), as in ``test_distributed.py``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_embviz.distributed import row_share
from lightning_embviz.engine.memorization_distributed import compare_memorization_distributed
from lightning_embviz.engine.nearest_train import fold_nearest, nearest_squared, train_frame
from lightning_embviz.memorization import MemorizationResult, TrainReference

# --- the cases ------------------------------------------------------------------------------


def _tied_train() -> np.ndarray:
    """61 rows on a 3-level grid (many exact ties), with duplicates across every share border.

    Shares: 0:31 | 31:61 on 2 ranks, 0:21 | 21:41 | 41:61 on 3.
    """
    rng = np.random.default_rng(11)
    train = rng.integers(0, 3, size=(61, 4)).astype(np.float32)
    train[[20, 21, 30, 31, 40, 41, 60]] = 7.0  # one point, in every share
    train[[29, 32]] = train[50]  # the lowest copy is not in the last share
    return train


def _cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(name, TrainReference options, compare arguments)."""
    rng = np.random.default_rng(0)
    out: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    train = rng.normal(size=(257, 16)).astype(np.float32)
    fake = np.concatenate([train[:30] + 1e-3, rng.normal(size=(70, 16)).astype(np.float32)])
    heldout = rng.normal(size=(80, 16)).astype(np.float32)
    out.append(("random", {"train": train, "n_cells": 3}, {"fake": fake, "heldout": heldout}))
    tied = _tied_train()
    grid_fake = np.concatenate(
        [np.full((5, 4), 7.0), tied[[50, 29, 32]], rng.integers(0, 3, size=(40, 4))]
    ).astype(np.float32)
    grid_held = rng.integers(0, 3, size=(30, 4)).astype(np.float32)
    out.append(
        (
            "ties, small blocks",
            {"train": tied, "n_cells": 2, "chunk_size": 7},
            {"fake": grid_fake, "heldout": grid_held, "min_cell_fakes": 3},
        )
    )
    out.append(
        (
            "ties, no heldout, sampled self rows",
            {"train": tied, "n_cells": 2, "self_rows": 25, "chunk_size": 5},
            {"fake": grid_fake},
        )
    )
    mixed = rng.normal(size=(120, 8))  # float64 train, float32 fakes, float64 held-out
    out.append(
        (
            "float64",
            {"train": mixed, "n_cells": 2, "self_rows": 50},
            {
                "fake": (mixed[:20] + 1e-9).astype(np.float32),
                "heldout": rng.normal(size=(40, 8)),
                "alpha": 0.2,
            },
        )
    )
    two = np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]])  # on 3 ranks one has no share
    out.append(
        (
            "two train rows",
            {"train": two, "n_cells": 1},
            {
                "fake": np.array([[0.5, 0, 0], [0.2, 0, 0], [3.0, 0, 0], [0.5, 0, 0]]),
                "heldout": np.array([[0.9, 0, 0], [0.4, 1, 0]]),
                "min_cell_fakes": 1,
            },
        )
    )
    return out


def _as_dict(result: MemorizationResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def _assert_identical(got: dict[str, Any], want: MemorizationResult, what: str) -> None:
    for key, value in _as_dict(want).items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype, f"{what}: {key} dtype"
            torch.testing.assert_close(
                got[key], value, rtol=0, atol=0, equal_nan=True, msg=f"{what}: {key}"
            )
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(got[key]), f"{what}: {key}"
        else:
            assert got[key] == value and type(got[key]) is type(value), f"{what}: {key}"


def _kept(ref: TrainReference) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The reference's kept leave-one-out distances and centroids (None if not fitted)."""
    return ref._self_distance.clone(), ref._centroids


# --- the ranks ------------------------------------------------------------------------------


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    import lightning_embviz.engine.memorization_distributed as shared

    torch.set_num_threads(1)  # the ranks share the machine's cores
    warnings.simplefilter("ignore", UserWarning)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    out: dict[str, Any] = {}
    spans: list[tuple[int, int]] = []
    original = shared.nearest_squared

    def recording(*args: Any, span: Any = None, **kwargs: Any) -> Any:
        spans.append(span)
        return original(*args, span=span, **kwargs)

    import time

    start = time.perf_counter()
    try:
        shared.nearest_squared = recording
        for name, options, arguments in _cases():
            spans.clear()
            ref = TrainReference(**options)
            if rank == 1 and name == "random":
                # Rank 1 already knows some leave-one-out distances: the ranks must still
                # take the same steps (the rows to compute are the union).
                ref.self_distances(torch.arange(0, 257, 3))
            result = compare_memorization_distributed(ref, **arguments)
            out[name] = _as_dict(result)
            out[f"{name} kept"] = _kept(ref)
            out[f"{name} spans"] = sorted(set(spans))
            # A second comparison on the same reference reuses what it keeps.
            again = {**arguments, "fake": arguments["fake"][::-1].copy()}
            out[f"{name} again"] = _as_dict(compare_memorization_distributed(ref, **again))
            out[f"{name} seconds"] = time.perf_counter() - start
        shared.nearest_squared = original
        name, options, arguments = _cases()[0]
        ref = TrainReference(**options)
        try:  # different fakes on the ranks: the same error everywhere, no hang
            compare_memorization_distributed(ref, arguments["fake"][rank:], arguments["heldout"])
            out["different"] = ""
        except ValueError as err:
            out["different"] = str(err)
        try:  # the same input error on every rank stays that error
            compare_memorization_distributed(ref, arguments["fake"][:, :3])
            out["input"] = ""
        except ValueError as err:
            out["input"] = str(err)

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("out of memory (forced)")

        if rank == 1:
            shared.nearest_squared = broken
        try:
            compare_memorization_distributed(ref, arguments["fake"], arguments["heldout"])
            out["failed"] = ("no error", "")
        except Exception as err:
            cause = type(err.__cause__).__name__ if err.__cause__ is not None else ""
            out["failed"] = (f"{type(err).__name__}: {err}", cause)
        finally:
            shared.nearest_squared = original
        # The group is still usable.
        out["after"] = _as_dict(
            compare_memorization_distributed(ref, arguments["fake"], arguments["heldout"])
        )
    except Exception as err:  # recorded, so that the test reports it
        import traceback

        out["crash"] = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    finally:
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
        dist.destroy_process_group()


def _spawn(world: int, tmp_path: Path, seconds: float = 120) -> list[dict[str, Any]]:
    import time

    context = mp.spawn(
        _worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world, join=False
    )
    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {seconds} s (a rank left waiting)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_shared_training_set_gives_the_single_process_results(tmp_path, world):
    ranks = _spawn(world, tmp_path)
    warnings.simplefilter("ignore", UserWarning)
    for rank, got in enumerate(ranks):
        assert "crash" not in got, (rank, got.get("crash"))
    for name, options, arguments in _cases():
        ref = TrainReference(**options)
        want = ref.compare_details(**arguments)
        again = ref.compare_details(**{**arguments, "fake": arguments["fake"][::-1].copy()})
        kept = _kept(ref)
        n = ref.num_train
        for rank, got in enumerate(ranks):
            what = f"{name}, rank {rank} of {world}"
            _assert_identical(got[name], want, what)
            _assert_identical(got[f"{name} again"], again, what + ", again")
            # Every rank keeps what one process keeps (the union of the rows computed; rank
            # 1 of "random" also keeps the rows it computed alone before).
            have, centroids = got[f"{name} kept"]
            known = ~torch.isnan(kept[0])
            assert torch.equal(have[known], kept[0][known]), what
            assert torch.isnan(have).sum() <= torch.isnan(kept[0]).sum(), what
            if not (rank == 1 and name == "random"):
                assert torch.equal(torch.isnan(have), ~known), what
            assert (centroids is None) == (kept[1] is None), what
            assert centroids is None or torch.equal(centroids, kept[1]), what
            # Each rank searched its own share of the training rows, and only that.
            assert got[f"{name} spans"] == [row_share(n, rank, world)], what
    # The tie rules across share borders, stated directly (7.0 sits at 20, 21, 30, ...).
    for got in ranks:
        index = got["ties, small blocks"]["nearest_train_index"]
        assert index[:5].tolist() == [20] * 5
        assert index[5:8].tolist() == [29, 29, 29]
        assert got["ties, small blocks"]["train_self_distance"][:8].tolist() == [0.0] * 8
    name, options, arguments = _cases()[0]
    ref = TrainReference(**options)
    want = ref.compare_details(arguments["fake"], arguments["heldout"])
    for rank, got in enumerate(ranks):
        assert "needs the same `fake` on every rank" in got["different"], got["different"]
        assert f"rank 1: {len(arguments['fake']) - 1}x16" in got["different"]
        assert "has 3 features per row but the training set has 16" in got["input"]
        message, cause = got["failed"]
        assert message.startswith(
            f"RankFailedError: rank 1 of {world} failed while searching its share of the "
            "training set: RuntimeError: out of memory (forced). Every rank stopped the "
            "shared memorization computation here."
        ), message
        assert message == ranks[0]["failed"][0]
        assert cause == ("RuntimeError" if rank == 1 else "")
        _assert_identical(got["after"], want, f"after the failure, rank {rank}")


# --- without a process group ------------------------------------------------------------------


def test_without_a_process_group_it_is_the_single_process_call():
    assert not dist.is_initialized()
    name, options, arguments = _cases()[1]
    want = TrainReference(**options).compare_details(**arguments)
    got = compare_memorization_distributed(TrainReference(**options), **arguments)
    _assert_identical(_as_dict(got), want, name)


@pytest.mark.parametrize("chunk", [3, 2048])
def test_shares_folded_are_the_search_of_the_whole_set(chunk):
    # Shares of every size (empty ones too) against brute force on tied data, with and
    # without each query's own row excluded.
    train = torch.from_numpy(_tied_train())
    frame = train_frame(train, chunk)
    gen = torch.Generator().manual_seed(3)
    queries = torch.cat([train[[20, 50, 0]], torch.randint(0, 3, (30, 4), generator=gen)])
    whole = nearest_squared(queries.float(), train, frame, chunk=chunk)
    d = torch.cdist(queries.double(), train.double()).square()
    best = d.min(dim=1).values
    first = (d == best.unsqueeze(1)).to(torch.int64).argmax(dim=1)  # lowest index on ties
    assert torch.equal(whole[0], first) and torch.equal(whole[1], best)
    rows = torch.arange(61)
    self_whole = nearest_squared(train, train, frame, rows, chunk)
    for cuts in ([0, 30, 31, 61], [0, 0, 21, 41, 61], [0, 20, 61, 61], [0, 1, 2, 60, 61]):
        spans = list(zip(cuts, cuts[1:]))
        for q, exclude, want in ((queries, None, whole), (train, rows, self_whole)):
            parts = [nearest_squared(q, train, frame, exclude, chunk, span=s) for s in spans]
            folded = fold_nearest(
                torch.stack([p[0] for p in parts]), torch.stack([p[1] for p in parts])
            )
            assert torch.equal(folded[0], want[0]), cuts
            assert torch.equal(folded[1], want[1]), cuts


def test_an_empty_share_finds_nothing():
    train = torch.randn(10, 3)
    index, sq = nearest_squared(torch.randn(4, 3), train, train_frame(train, 4), span=(5, 5))
    assert index.tolist() == [-1] * 4 and sq.tolist() == [math.inf] * 4
    # A share holding only the query's own row finds nothing either.
    index, sq = nearest_squared(
        train[:1], train, train_frame(train, 4), torch.tensor([0]), span=(0, 1)
    )
    assert index.tolist() == [-1] and sq.tolist() == [math.inf]
    folded = fold_nearest(torch.tensor([[-1], [4], [2]]), torch.tensor([[math.inf], [1.0], [1.0]]))
    assert folded[0].tolist() == [2] and folded[1].tolist() == [1.0]
