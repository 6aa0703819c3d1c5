"""Per-rank buffer, de-duplication of the distributed sampler's padding, uneven-size gather."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_embviz.callback.buffer import (
    EmbeddingBuffer,
    EmbeddingSet,
    finalize_set,
    gather_embeddings,
    key_hash,
)


def rows(n: int, width: int = 3, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, width)


def test_buffer_keeps_the_smallest_hashed_keys_up_to_the_cap():
    buffer = EmbeddingBuffer(max_samples=5)
    for b in range(6):
        x = rows(3, start=3 * b)
        keys = torch.arange(3 * b, 3 * b + 3)
        buffer.add(x, x + 100, real_keys=keys, fake_keys=keys, real_labels=keys % 2)
        assert buffer.real.held <= 10  # compacted whenever it holds more than twice the cap
    real, fake = buffer.local_sets()
    kept = sorted(torch.argsort(key_hash(torch.arange(18)))[:5].tolist())
    assert real.keys.tolist() == kept == real.features[:, 0].tolist() and real.seen == 18
    assert fake.features[:, 0].tolist() == [k + 100 for k in kept]
    assert real.labels is not None and real.labels.tolist() == [k % 2 for k in kept]
    assert fake.labels is None
    assert kept != [0, 1, 2, 3, 4]  # not the first rows


def test_key_hash_is_fixed_and_seeded():
    keys = torch.tensor([0, 1, 2, 2**40])
    assert torch.equal(key_hash(keys), key_hash(keys.clone()))
    assert (key_hash(keys) >= 0).all() and len(set(key_hash(keys).tolist())) == 4
    assert not torch.equal(key_hash(keys, seed=1), key_hash(keys))


def test_buffer_rejects_changing_width_and_partial_labels():
    buffer = EmbeddingBuffer(max_samples=None)
    keys = torch.arange(2)
    buffer.add(rows(2), rows(2), real_keys=keys, fake_keys=keys, real_labels=keys)
    with pytest.raises(ValueError, match=r"changed width.*\(B, 3\).*\(2, 4\)"):
        buffer.add(rows(2, 4), rows(2, 4), real_keys=keys, fake_keys=keys, real_labels=keys)
    with pytest.raises(ValueError, match="some validation batches and not for others"):
        buffer.add(rows(2), rows(2), real_keys=keys, fake_keys=keys)


def test_empty_buffer_gives_empty_sets():
    real, fake = EmbeddingBuffer(max_samples=4).local_sets()
    assert real.features.shape == (0, 0) and len(fake) == 0


def test_finalize_sorts_dedupes_and_caps():
    keys = torch.tensor([4, 1, 3, 1, 0, 2])
    rows_ = EmbeddingSet(rows(6), keys, keys * 10)
    out = finalize_set(rows_, dedupe=True, max_samples=None)
    assert out.keys.tolist() == [0, 1, 2, 3, 4]
    assert out.features[:, 0].tolist() == [4.0, 1.0, 5.0, 2.0, 0.0]  # first of the two 1s wins
    assert out.labels is not None and out.labels.tolist() == [0, 10, 20, 30, 40]
    assert finalize_set(rows_, dedupe=False, max_samples=None).keys.tolist() == [0, 1, 1, 2, 3, 4]
    capped = finalize_set(rows_, dedupe=True, max_samples=3)
    kept = sorted(torch.argsort(key_hash(torch.arange(5)))[:3].tolist())
    assert capped.keys.tolist() == kept and capped.seen == 6


def test_finalize_does_not_copy_sorted_unique_rows():
    rows_ = EmbeddingSet(rows(4), torch.arange(4))
    assert finalize_set(rows_, dedupe=True, max_samples=None) is rows_


# --------------------------------------------------------------------------- real gather


def _gather_worker(rank: int, world: int, store: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        if rank == 0:
            real = EmbeddingSet(rows(5), torch.arange(5) * 2, torch.arange(5))
            fake = EmbeddingSet(rows(3, start=50), torch.arange(3) * 2, None)
        else:  # no real rows at all; fake rows in float64
            real = EmbeddingSet(torch.empty(0, 0), torch.empty(0, dtype=torch.int64), None)
            fake = EmbeddingSet(rows(4, start=70).double(), torch.arange(4) * 2 + 1, None)
        got_real, got_fake = gather_embeddings(real, fake)
        result = {
            "real": got_real.features,
            "real_keys": got_real.keys,
            "real_labels": got_real.labels,
            "fake": got_fake.features,
            "fake_keys": got_fake.keys,
        }
        try:  # different widths: the same error on every rank, no hang
            width = 3 if rank == 0 else 4
            gather_embeddings(
                EmbeddingSet(rows(2, width), torch.arange(2)),
                EmbeddingSet(rows(2, width), torch.arange(2)),
            )
            result["error"] = ""
        except ValueError as err:
            result["error"] = str(err)
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_gather_uneven_sizes_across_two_processes(tmp_path):
    mp.spawn(_gather_worker, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert torch.equal(got["real"], rows(5)) and got["real"].dtype == torch.float32
        assert got["real_keys"].tolist() == [0, 2, 4, 6, 8]
        assert got["real_labels"].tolist() == [0, 1, 2, 3, 4]  # only rank 0 had rows
        assert got["fake"].dtype == torch.float64  # promoted because rank 1 sent float64
        assert got["fake"][:, 0].tolist() == [50, 51, 52, 70, 71, 72, 73]
        assert got["fake_keys"].tolist() == [0, 2, 4, 1, 3, 5, 7]
        assert "one width D on every rank" in got["error"] and "rank 1: real 2x4" in got["error"]
