"""The Vendi score with the second moment shared by gloo ranks: the single-process bits.

``vendi_score_distributed`` (every rank holds the same set, the callback's case) must give
exactly ``vendi_score`` on 1, 2 and 3 ranks, with one all-reduce; with each rank's own rows,
the score of their union. Failures agree before every collective (no rank left waiting).
"""

from __future__ import annotations

import datetime
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _prdc_cases import make_sets
from lightning_embviz.distributed import RankFailedError, row_share
from lightning_embviz.engine import kernels
from lightning_embviz.metrics import vendi_score

ORDERS = (0.0, 0.5, 1.0, 2.0, math.inf)


def _cases() -> list[tuple[str, np.ndarray, int | None]]:
    """(name, x, chunk_size): many uneven blocks, ties, duplicates, n < D, few blocks."""
    out: list[tuple[str, np.ndarray, int | None]] = []
    x, _ = make_sets("normal", 1000, 2, 16, seed=1)
    out.append(("16 blocks", x.astype(np.float32), 64))  # shares of 6, 5, 5 blocks on 3 ranks
    x, _ = make_sets("discrete", 301, 2, 8, seed=2)
    out.append(("discrete", x[np.linalg.norm(x, axis=1) > 0], 32))
    x, _ = make_sets("duplicates", 250, 2, 12, seed=3)
    out.append(("duplicates", x, 20))
    x, _ = make_sets("normal", 3000, 2, 8, seed=4)
    out.append(("default blocks", x, None))  # 2 blocks of 2048: rank 2 of 3 has none
    x, _ = make_sets("normal", 9, 2, 40, seed=5)
    out.append(("n < D", x, 4))  # the (n, n) Gram route on every rank
    out.append(("one row", x[:1], None))
    return out


def _counting_all_reduce(calls: list[int]) -> Any:
    original = dist.all_reduce

    def counted(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        calls.append(tensor.numel())
        return original(tensor, *args, **kwargs)

    return counted


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=120),
    )
    out: dict[Any, Any] = {}
    original = dist.all_reduce
    try:
        out = _run(rank, world, None)
    except Exception as err:  # recorded, so that the test reports it
        out["crash"] = f"{type(err).__name__}: {err}"
    finally:
        dist.all_reduce = original
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
        dist.destroy_process_group()


def _run(rank: int, world: int, group: Any) -> dict[Any, Any]:
    """Every computation of the test on ``world`` ranks (this one is ``rank``)."""
    out: dict[Any, Any] = {}
    calls: list[int] = []
    dist.all_reduce = _counting_all_reduce(calls)
    for name, x, chunk in _cases():
        for q in ORDERS:
            calls.clear()
            out[(name, q)] = kernels.vendi_score_distributed(x, q, group=group, chunk_size=chunk)
            out[(name, q, "all-reduces")] = list(calls)
    # Two sets (the callback's fakes and reals): one all-reduce for both.
    fake, real = _cases()[0][1][:, :8], _cases()[2][1][:, :8]
    calls.clear()
    out["pair"] = kernels.vendi_scores_distributed([fake, real], group=group, chunk_size=50)
    out["pair all-reduces"] = list(calls)
    # Each rank's own rows: the union's score. Blocks b = rank, rank + world, ... of 64
    # rows (a multiple of the block size each), then uneven counts, then one rank empty.
    x = _cases()[0][1]
    aligned = np.concatenate([x[64 * b : 64 * (b + 1)] for b in range(rank, 15, world)])
    out["own aligned"] = kernels.vendi_score_distributed(
        aligned, group=group, chunk_size=64, same_rows=False
    )
    a, b = row_share(1000, rank, world)
    out["own uneven"] = kernels.vendi_score_distributed(x[a:b], group=group, same_rows=False)
    mine = x[:0] if rank == world - 1 and world > 1 else x[a:b]
    out["own one empty"] = kernels.vendi_score_distributed(mine, 2.0, group=group, same_rows=False)
    if world > 1:
        out["errors"] = _errors(rank, x, group)
    # The group is still usable after the failures.
    out["after"] = kernels.vendi_score_distributed(x, group=group, chunk_size=64)
    return out


def _errors(rank: int, x: np.ndarray, group: Any) -> dict[str, tuple[str, str]]:
    """Each failure mode: (``Type: message``, the cause's type) on this rank."""
    zero = x.copy()
    zero[3] = 0.0
    broken_moment = kernels._moment_limbs

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory (forced)")

    attempts: dict[str, Any] = {
        "different sets": lambda: kernels.vendi_score_distributed(x[rank:]),
        "zero row everywhere": lambda: kernels.vendi_score_distributed(zero),
        "None on rank 1": lambda: kernels.vendi_scores_distributed([x, None if rank == 1 else x]),
        "widths": lambda: kernels.vendi_score_distributed(x[:, : 16 - rank], same_rows=False),
        "moment fails on rank 1": lambda: kernels.vendi_score_distributed(x),
    }
    out = {}
    for name, attempt in attempts.items():
        if name == "moment fails on rank 1" and rank == 1:
            kernels._moment_limbs = broken
        try:
            attempt()
            out[name] = ("no error", "")
        except Exception as err:
            cause = "" if err.__cause__ is None else type(err.__cause__).__name__
            out[name] = (f"{type(err).__name__}: {err}", cause)
        finally:
            kernels._moment_limbs = broken_moment
    return out


def _spawn(world: int, tmp_path: Path, seconds: float = 240) -> list[dict[Any, Any]]:
    context = mp.spawn(
        _worker,
        args=(world, str(tmp_path / "store"), str(tmp_path)),
        nprocs=world,
        join=False,
    )
    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {seconds} s (a rank left waiting)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.mark.slow
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shared_vendi_is_the_single_process_score_bit_for_bit(tmp_path, world):
    ranks = _spawn(world, tmp_path)
    x = _cases()[0][1]
    for rank, out in enumerate(ranks):
        assert "crash" not in out, (rank, out["crash"])
        _check_values(out, rank, world, x)
        assert out["own uneven"] == ranks[0]["own uneven"]  # every rank: the same value
        if world > 1:
            _check_errors(out["errors"], rank, world, x)


def _check_values(out: dict[Any, Any], rank: int, world: int, x: np.ndarray) -> None:
    for name, rows, chunk in _cases():
        for q in ORDERS:
            want = vendi_score(rows, q, chunk_size=chunk)
            assert out[(name, q)] == want, (name, q, rank, world)  # the same bits
            # One all-reduce of the (2, D, D) int64 limbs; none for the Gram route (n < D)
            # or on one rank.
            width = rows.shape[1]
            gram = rows.shape[0] < width
            reduced = [] if gram or world == 1 else [2 * width * width]
            assert out[(name, q, "all-reduces")] == reduced, (name, q, world)
    fake, real = x[:, :8], _cases()[2][1][:, :8]
    assert out["pair"] == [vendi_score(fake, chunk_size=50), vendi_score(real, chunk_size=50)]
    assert out["pair all-reduces"] == ([] if world == 1 else [2 * 2 * 8 * 8])
    order = [64 * b + i for r in range(world) for b in range(r, 15, world) for i in range(64)]
    assert out["own aligned"] == vendi_score(x[order], chunk_size=64)
    assert out["own uneven"] == pytest.approx(vendi_score(x), rel=1e-13)
    a, b = row_share(1000, world - 1, world)
    kept = x if world == 1 else np.concatenate([x[:a], x[b:]])
    assert out["own one empty"] == pytest.approx(vendi_score(kept, 2.0), rel=1e-13)
    assert out["after"] == vendi_score(x, chunk_size=64)


def _check_errors(errors: dict[str, tuple[str, str]], rank: int, world: int, x: Any) -> None:
    message, cause = errors["different sets"]
    assert message.startswith("ValueError: The shared Vendi score with same_rows=True needs")
    assert f"rank 1: {x.shape[0] - 1}x16" in message
    message, _ = errors["zero row everywhere"]
    assert message == (
        "ValueError: `x` has 1 row(s) of zero norm out of 1000; the cosine kernel needs "
        "non-zero rows. Drop them first."
    )
    message, cause = errors["None on rank 1"]
    assert message.startswith(f"RankFailedError: rank 1 of {world} failed while checking its")
    assert "`sets[1]` is None" in message and "the shared Vendi score" in message
    assert cause == ("ValueError" if rank == 1 else "")
    message, _ = errors["widths"]
    assert message.startswith("ValueError: The ranks' `x` have different widths (rank 0: ")
    message, cause = errors["moment fails on rank 1"]
    assert message.startswith(
        f"RankFailedError: rank 1 of {world} failed while computing its share of the second "
        "moments: RuntimeError: CUDA out of memory (forced)"
    )
    assert cause == ("RuntimeError" if rank == 1 else "")


def test_without_a_process_group_it_is_vendi_score():
    from lightning_embviz.distributed import vendi_score_distributed

    assert vendi_score_distributed is kernels.vendi_score_distributed  # the public face
    x, _ = make_sets("duplicates", 120, 2, 6, seed=8)
    assert kernels.vendi_score_distributed(x, 2.0) == vendi_score(x, 2.0)
    assert kernels.vendi_score_distributed(x, same_rows=False) == vendi_score(x)
    assert kernels.vendi_scores_distributed([x, x[:5]]) == [vendi_score(x), vendi_score(x[:5])]
    with pytest.raises(ValueError, match=r"`sets\[1\]` is None"):
        kernels.vendi_scores_distributed([x, None])
    with pytest.raises(ValueError, match="`q` must be >= 0"):
        kernels.vendi_score_distributed(x, -1.0)
    with pytest.raises(ValueError, match="No rank holds a row of `x`"):
        kernels.vendi_score_distributed(x[:0], same_rows=False)
    with pytest.raises(ValueError, match="`x` is empty"):
        kernels.vendi_score_distributed(x[:0])
    with pytest.raises(ValueError, match="`sets` is empty"):
        kernels.vendi_scores_distributed([])
    assert issubclass(RankFailedError, RuntimeError)
