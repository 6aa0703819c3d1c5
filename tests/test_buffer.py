"""Per-rank buffer, de-duplication of the distributed sampler's padding, uneven-size gather."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from lightning_embviz import EmbeddingMonitor
from lightning_embviz._buffer import (
    EmbeddingBuffer,
    EmbeddingSet,
    finalize_set,
    gather_embeddings,
)


def rows(n: int, width: int = 3, start: int = 0) -> torch.Tensor:
    return torch.arange(start, start + n, dtype=torch.float32)[:, None].repeat(1, width)


def test_buffer_keeps_the_first_rows_up_to_the_cap():
    buffer = EmbeddingBuffer(max_samples=5)
    for b in range(3):
        x = rows(3, start=3 * b)
        keys = torch.arange(3 * b, 3 * b + 3)
        buffer.add(x, x + 100, real_keys=keys, fake_keys=keys, real_labels=keys % 2)
    assert buffer.full and len(buffer) == 10
    real, fake = buffer.local_sets()
    assert real.keys.tolist() == [0, 1, 2, 3, 4] == real.features[:, 0].tolist()
    assert fake.features[:, 0].tolist() == [100, 101, 102, 103, 104]
    assert real.labels is not None and real.labels.tolist() == [0, 1, 0, 1, 0]
    assert fake.labels is None


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
    out = finalize_set(rows_, dedupe=True, max_samples=4)
    assert out.keys.tolist() == [0, 1, 2, 3]
    assert out.features[:, 0].tolist() == [4.0, 1.0, 5.0, 2.0]  # first of the two 1s wins
    assert out.labels is not None and out.labels.tolist() == [0, 10, 20, 30]
    assert finalize_set(rows_, dedupe=False, max_samples=None).keys.tolist() == [0, 1, 1, 2, 3, 4]


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("shuffle", [False, True])
def test_sampler_padding_is_dropped_for_any_size(world, shuffle):
    """Positions inferred from DistributedSampler: every sample kept exactly once."""
    for n in [1, 2, 5, 7, 10, 13]:
        for batch_size in [1, 3, 4]:
            ds = TensorDataset(torch.arange(n))
            kept_keys, kept_samples = [], []
            for rank in range(world):
                sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle)
                loader = DataLoader(ds, batch_size=batch_size, sampler=sampler)
                trainer = SimpleNamespace(
                    world_size=world, global_rank=rank, val_dataloaders=loader
                )
                monitor = EmbeddingMonitor(views=None)
                for batch_idx, (batch,) in enumerate(loader):
                    keys, keep, fake_keys, fake_keep = monitor._row_keys(
                        trainer, None, len(batch), len(batch), batch_idx, 0
                    )
                    assert torch.equal(keys, fake_keys)
                    assert (keep is None) == (fake_keep is None)
                    keep = torch.ones(len(batch), dtype=torch.bool) if keep is None else keep
                    kept_keys.append(keys[keep])
                    kept_samples.append(batch[keep])
            keys = torch.cat(kept_keys)
            samples = torch.cat(kept_samples)
            assert sorted(samples.tolist()) == list(range(n)), (n, batch_size)
            assert len(set(keys.tolist())) == n
            if not shuffle:  # the key is the dataset index: single-process order
                assert torch.equal(keys, samples)


def test_no_distributed_sampler_warns_once():
    monitor = EmbeddingMonitor(views=None)
    loader = DataLoader(TensorDataset(torch.arange(8)), batch_size=4)
    trainer = SimpleNamespace(world_size=2, global_rank=1, val_dataloaders=[loader])
    with pytest.warns(UserWarning, match="no DistributedSampler.*'index'") as record:
        for batch_idx in range(2):
            keys, keep, _, _ = monitor._row_keys(trainer, None, 4, 4, batch_idx, 0)
    assert len(record) == 1 and keep is None
    assert keys.tolist() == [9, 11, 13, 15]  # interleaved with rank 0, never colliding


def test_user_index_is_used_as_key():
    monitor = EmbeddingMonitor(views=None)
    trainer = SimpleNamespace(world_size=2, global_rank=0, val_dataloaders=None)
    keys, keep, fake_keys, _ = monitor._row_keys(trainer, torch.tensor([7, 3]), 2, 2, 0, 0)
    assert keys.tolist() == [7, 3] == fake_keys.tolist() and keep is None
    with pytest.raises(ValueError, match="'index' has 3 entries but there are 2 real rows"):
        monitor._row_keys(trainer, torch.tensor([1, 2, 3]), 2, 2, 1, 0)


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
