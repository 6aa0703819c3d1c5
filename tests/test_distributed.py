"""PRDC with the distance work shared by gloo ranks: the single-process result, bit for bit."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _prdc_cases import make_sets, reference
from lightning_embviz import RealReference, compute_prdc_details
from lightning_embviz.distributed import (
    compare_details_distributed,
    compute_prdc_details_distributed,
    fit_reference_distributed,
    row_share,
    sweep_details_distributed,
)
from lightning_embviz.engine import neighbour_radii
from lightning_embviz.engine.gemm import count_estimates
from lightning_embviz.metrics import PRDCResult


def _cases() -> list[tuple[str, np.ndarray, np.ndarray, int, int | None]]:
    """(name, real, fake, k, chunk_size): uneven sizes, hard numerics, degenerate sets."""
    out: list[tuple[str, np.ndarray, np.ndarray, int, int | None]] = []
    for kind, n, m, d, k in [
        ("normal", 257, 203, 16, 5),
        ("far", 211, 190, 8, 3),
        ("discrete", 230, 199, 8, 4),  # float64: exact ties at the radius
        ("duplicates", 240, 181, 8, 5),
        ("collapsed", 220, 160, 16, 5),
        ("near_copies", 200, 181, 32, 5),
    ]:
        real, fake = make_sets(kind, n, m, d, seed=n)
        if kind != "discrete":
            real, fake = real.astype(np.float32), fake.astype(np.float32)
        out.append((kind, real, fake, k, None))
    real, fake = make_sets("normal", 257, 203, 16, seed=1)
    out.append(("small blocks", real.astype(np.float32), fake.astype(np.float32), 5, 16))
    rng = np.random.default_rng(2)
    # 120 copies of one real row (more than a block keeps per row) and a fake set collapsed
    # onto one point that is also a real row: radii 0, nothing recalled, ties everywhere.
    real = np.concatenate([np.repeat(rng.normal(size=(1, 8)), 120, 0), rng.normal(size=(100, 8))])
    fake = np.repeat(real[:1], 150, 0)
    out.append(("one point", real.astype(np.float32), fake.astype(np.float32), 5, None))
    # k close to the smallest share: 23 fakes are 12 + 11 rows on 2 ranks, 8 + 8 + 7 on 3.
    real, fake = make_sets("quantized", 40, 23, 8, seed=3)
    real, fake = real.astype(np.float32), fake.astype(np.float32)
    out.append(("k = 7", real, fake, 7, None))
    out.append(("k = M - 1", real, fake, 22, None))
    # Fewer real rows than ranks (on 3 ranks one has no share), and half precision.
    real, fake = make_sets("normal", 2, 4, 8, seed=6)
    out.append(("two reals", real.astype(np.float32), fake.astype(np.float32), 1, None))
    real, fake = make_sets("normal", 150, 131, 8, seed=7)
    out.append(("float16", real.astype(np.float16), fake.astype(np.float16), 3, None))
    return out


_SWEEP_KS = (3, 5, 10)


def _sweep_sets() -> tuple[np.ndarray, np.ndarray]:
    real, fake = make_sets("duplicates", 233, 171, 12, seed=4)
    return real.astype(np.float32), fake.astype(np.float32)


def _as_dict(result: PRDCResult) -> dict[str, Any]:
    return {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}


def _worker(rank: int, world: int, store: str, out_dir: str) -> None:
    torch.set_num_threads(1)  # the ranks share the machine's cores
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        out: dict[str, Any] = {}
        for name, real, fake, k, chunk in _cases():
            with count_estimates() as count:  # pairs estimated by this rank's GEMMs
                result = compute_prdc_details_distributed(real, fake, k, chunk_size=chunk)
            out[name] = _as_dict(result)
            out[f"{name} pairs"] = count.pairs
        real, fake = _sweep_sets()
        ref = fit_reference_distributed(real, _SWEEP_KS)
        out["sweep radii"] = torch.stack([ref.real_radii(k) for k in _SWEEP_KS])
        sweep = sweep_details_distributed(ref, fake)
        out["sweep order"] = list(sweep)
        out["sweep"] = {k: _as_dict(r) for k, r in sweep.items()}
        out["compare"] = _as_dict(compare_details_distributed(ref, fake, 5, chunk_size=40))
        try:  # different sets on different ranks: the same error everywhere, no hang
            compute_prdc_details_distributed(real[rank:], fake, 3)
            out["error"] = ""
        except ValueError as err:
            out["error"] = str(err)
        torch.save(out, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _assert_identical(got: dict[str, Any], want: PRDCResult, what: str) -> None:
    for key, value in _as_dict(want).items():
        if isinstance(value, torch.Tensor):
            assert got[key].dtype == value.dtype, f"{what}: {key} dtype"
            assert torch.equal(got[key], value), f"{what}: {key} differs"
        else:
            assert got[key] == value and type(got[key]) is type(value), f"{what}: {key}"


@pytest.mark.slow
@pytest.mark.parametrize("world", [2, 3])
def test_shared_work_gives_the_single_process_results(tmp_path, world):
    mp.spawn(_worker, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for name, real, fake, k, chunk in _cases():
        want = compute_prdc_details(real, fake, k, chunk_size=chunk)
        for rank, got in enumerate(ranks):
            _assert_identical(got[name], want, f"{name}, rank {rank} of {world}")
        # The distance work is shared: each rank computes its rows against all columns.
        n, m = real.shape[0], fake.shape[0]
        done = [got[f"{name} pairs"] for got in ranks]
        assert sum(done) == n * n + m * m + n * m, name
        for rank, count in enumerate(done):
            (a, b), (c, d) = row_share(n, rank, world), row_share(m, rank, world)
            assert count == (b - a) * n + (d - c) * m + (b - a) * m, name
    real, fake = _sweep_sets()
    fitted = RealReference(real, _SWEEP_KS)
    want_sweep = fitted.sweep_details(fake)
    for got in ranks:
        assert torch.equal(
            got["sweep radii"], torch.stack([fitted.real_radii(k) for k in _SWEEP_KS])
        )
        assert got["sweep order"] == list(_SWEEP_KS)
        for k in _SWEEP_KS:
            _assert_identical(got["sweep"][k], want_sweep[k], f"sweep k={k}")
        _assert_identical(got["compare"], fitted.compare_details(fake, 5, chunk_size=40), "k=5")
        assert "same `real_features` on every rank" in got["error"]
        assert f"rank 1: {real.shape[0] - 1}x12" in got["error"]


def test_the_four_numbers_match_the_reference_package():
    # The single-process results the shared ones are compared with, against prdc itself.
    for name, real, fake, k, chunk in _cases():
        # far: the reference is not exact there (see the engine); k = M - 1 and two reals: the
        # reference needs more than k + 1 rows (its partition fails on k + 1).
        if name in ("far", "k = M - 1", "two reals"):
            continue
        got = compute_prdc_details(real, fake, k, chunk_size=chunk).as_dict()
        assert got == reference(real, fake, k), name


def test_row_share_is_contiguous_and_balanced():
    for rows in (0, 1, 5, 23, 257):
        for world in (1, 2, 3, 8):
            shares = [row_share(rows, r, world) for r in range(world)]
            assert shares[0][0] == 0 and shares[-1][1] == rows
            assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
            sizes = [b - a for a, b in shares]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match=r"rank must lie in \[0, world\).*rank=3, world=3"):
        row_share(10, 3, 3)


@pytest.mark.parametrize("kind", ["normal", "duplicates", "discrete"])
def test_radii_of_row_ranges_put_together_are_the_radii(kind):
    real, _ = make_sets(kind, 300, 10, 8, seed=5)
    x = torch.from_numpy(real.astype(np.float32) if kind != "discrete" else real)
    mode = "f32" if x.dtype == torch.float32 else "f64"
    want = neighbour_radii(x, (1, 4, 9), mode, 64)
    for cuts in ([0, 1, 2, 300], [0, 150, 299, 300], [0, 97, 193, 300], [0, 0, 300]):
        parts = [
            neighbour_radii(x, (1, 4, 9), mode, 32, row_range=(a, b))
            for a, b in zip(cuts, cuts[1:])
        ]
        assert torch.equal(torch.cat(parts, dim=1), want), cuts


def test_without_a_process_group_it_is_the_single_process_call():
    assert not dist.is_initialized()
    real, fake = _sweep_sets()
    _assert_identical(
        _as_dict(compute_prdc_details_distributed(real, fake, 4)),
        compute_prdc_details(real, fake, 4),
        "one process",
    )
    ref = fit_reference_distributed(real, (3, 5))
    assert torch.equal(ref.real_radii(5), RealReference(real, (3, 5)).real_radii(5))
    assert sweep_details_distributed(ref, fake)[5].as_dict() == ref.sweep(fake)[5]
    assert compare_details_distributed(ref, fake).as_dict() == ref.compare(fake)


# --------------------------------------------------------------------------- a failing rank

# Each stage where a rank can fail, and the function that rank 1 is made to fail in.
_FAILURES = {
    "real radii": ("_local_real_radii", "computing its share of the real radii"),
    "fake radii": ("neighbour_radii", "computing its share of the fake radii"),
    "real-fake tests": ("cross_ball_tests", "testing its real rows against the fakes"),
}


def _failing_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    import datetime

    import lightning_embviz.engine.distributed as shared

    torch.set_num_threads(1)
    # A short timeout: a rank left waiting fails the test within seconds instead of hanging.
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=30),
    )
    out: dict[str, Any] = {}
    try:
        real, fake = _sweep_sets()
        for stage, (name, _) in _FAILURES.items():
            original = getattr(shared, name)

            def broken(*args: Any, **kwargs: Any) -> Any:
                raise RuntimeError("CUDA out of memory (forced)")

            if rank == 1:
                setattr(shared, name, broken)
            try:
                ref = fit_reference_distributed(real, (3, 5))
                sweep_details_distributed(ref, fake)
                out[stage] = ("no error", "")
            except Exception as err:
                cause = type(err.__cause__).__name__ if err.__cause__ is not None else ""
                out[stage] = (f"{type(err).__name__}: {err}", cause)
            finally:
                setattr(shared, name, original)
        # The group is still usable: the next computation is the single-process one.
        out["after"] = _as_dict(compute_prdc_details_distributed(real, fake, 4))
    except Exception as err:  # recorded, so that the test reports it
        out["crash"] = f"{type(err).__name__}: {err}"
    finally:
        torch.save(out, Path(out_dir) / f"failing{rank}.pt")
        dist.destroy_process_group()


def _spawn_with_deadline(fn: Any, world: int, tmp_path: Path, seconds: float) -> None:
    context = mp.spawn(
        fn, args=(world, str(tmp_path / "store"), str(tmp_path)), nprocs=world, join=False
    )
    import time

    deadline = time.monotonic() + seconds
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the ranks did not finish within {seconds} s (a rank left waiting)")


@pytest.mark.slow
def test_a_rank_failing_in_the_shared_work_stops_every_rank_with_one_message(tmp_path):
    _spawn_with_deadline(_failing_worker, 2, tmp_path, 120)
    ranks = [torch.load(tmp_path / f"failing{r}.pt", weights_only=False) for r in range(2)]
    for rank, out in enumerate(ranks):
        assert "crash" not in out, (rank, out.get("crash"))
        for stage, (_, words) in _FAILURES.items():
            message, cause = out[stage]
            assert message.startswith(f"RankFailedError: rank 1 of 2 failed while {words}: "), (
                rank,
                stage,
                message,
            )
            assert "RuntimeError: CUDA out of memory (forced)" in message
            assert message == ranks[0][stage][0]  # the same message on every rank
            assert cause == ("RuntimeError" if rank == 1 else "")  # the failing rank's own error
        real, fake = _sweep_sets()
        _assert_identical(out["after"], compute_prdc_details(real, fake, 4), f"rank {rank}")


def test_the_same_input_error_on_every_rank_stays_that_error(monkeypatch):
    # Without a process group, _agree's logic on gathered flags, with a stand-in group.
    from lightning_embviz.engine import distributed as shared

    class Two:
        rank, world = 0, 2

        def __init__(self, texts: list[str]) -> None:
            self.texts = texts
            self.calls = 0

        def all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
            self.calls += 1
            if self.calls == 1:  # the flags
                return [torch.tensor([int(bool(t))]) for t in self.texts]
            out = []
            for text in self.texts:
                data = torch.zeros_like(tensor)
                raw = text.encode()
                data[: len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
                out.append(data)
            return out

    same = "ValueError: `nearest_k`=9 needs more than 9 rows"
    with pytest.raises(ValueError, match="needs more than 9 rows"):
        shared._agree(Two([same, same]), ValueError("`nearest_k`=9 needs more than 9 rows"), "x")
    with pytest.raises(shared.RankFailedError, match=r"rank 1 of 2 failed while x: Runtime"):
        shared._agree(Two(["", "RuntimeError: boom"]), None, "x")
    group = Two(["", ""])
    shared._agree(group, None, "x")
    assert group.calls == 1  # no failure: one tiny all-gather, nothing more
