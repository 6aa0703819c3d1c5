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

import lightning_embviz._knn as knn
from _prdc_cases import make_sets, reference
from lightning_embviz import RealReference, compute_prdc_details
from lightning_embviz._knn import neighbour_radii
from lightning_embviz.distributed import (
    compare_details_distributed,
    compute_prdc_details_distributed,
    fit_reference_distributed,
    row_share,
    sweep_details_distributed,
)
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
        pairs = [0]
        original = knn._distances

        def counting(a: Any, rows: slice, b_sq32: Any, cols: slice, *rest: Any) -> Any:
            s = original(a, rows, b_sq32, cols, *rest)
            pairs[0] += s.numel()
            return s

        knn._distances = counting  # type: ignore[assignment]
        for name, real, fake, k, chunk in _cases():
            pairs[0] = 0
            result = compute_prdc_details_distributed(real, fake, k, chunk_size=chunk)
            out[name] = _as_dict(result)
            out[f"{name} pairs"] = pairs[0]
        knn._distances = original  # type: ignore[assignment]
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
        # far: the reference is not exact there (see _knn); k = M - 1 and two reals: the
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
