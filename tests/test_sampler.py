"""Row keys: a rank's rows -> global sample positions, without a monitor or a Trainer."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from lightning_embviz.callback.outputs import OutputKeys, parse_outputs
from lightning_embviz.callback.sampler import ORDINAL_BASE, RowKeys, sampler_info, shown_index


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
                info = sampler_info(loader)
                numbering = RowKeys(rank, world)
                for batch_idx, (batch,) in enumerate(loader):
                    keys = numbering.next_batch(len(batch), len(batch), batch_idx, info=info)
                    assert torch.equal(keys.real, keys.fake) and keys.problem is None
                    assert (keys.real_keep is None) == (keys.fake_keep is None)
                    keep = keys.real_keep
                    keep = torch.ones(len(batch), dtype=torch.bool) if keep is None else keep
                    kept_keys.append(keys.real[keep])
                    kept_samples.append(batch[keep])
            keys_ = torch.cat(kept_keys)
            samples = torch.cat(kept_samples)
            assert sorted(samples.tolist()) == list(range(n)), (n, batch_size)
            assert len(set(keys_.tolist())) == n
            if not shuffle:  # the key is the dataset index: single-process order
                assert torch.equal(keys_, samples)


def test_no_distributed_sampler_is_reported():
    loader = DataLoader(TensorDataset(torch.arange(8)), batch_size=4)
    assert sampler_info(loader) is None
    numbering = RowKeys(rank=1, world_size=2)
    keys = [numbering.next_batch(4, 4, b, info=None) for b in range(2)]
    # interleaved with rank 0, never colliding; ordinal keys (no known identity, shown as -1)
    assert (keys[1].real - ORDINAL_BASE).tolist() == [9, 11, 13, 15]
    assert shown_index(keys[1].real).tolist() == [-1] * 4
    assert keys[0].problem is not None and "no DistributedSampler" in keys[0].problem
    assert "'index'" in keys[0].problem and keys[0].problem_id == keys[1].problem_id


def test_single_process_numbers_rows_in_order():
    numbering = RowKeys(rank=0, world_size=1)
    assert numbering.next_batch(3, 2, 0).real.tolist() == [0, 1, 2]
    second = numbering.next_batch(2, 2, 1)
    assert second.real.tolist() == [3, 4] and second.fake.tolist() == [2, 3]


def test_user_index_is_used_as_key():
    numbering = RowKeys(rank=0, world_size=2)
    keys = numbering.next_batch(2, 2, 0, index=torch.tensor([7, 3]))
    assert keys.real.tolist() == [7, 3] == keys.fake.tolist() and keys.real_keep is None
    out = {"real": torch.zeros(2, 3), "fake": torch.zeros(2, 3), "index": torch.tensor([1, 2, 3])}
    with pytest.raises(ValueError, match="'index' has 3 entries but there are 2 real rows"):
        parse_outputs(out, OutputKeys(), source="`validation_step`", where="batch 1")
    out["index"] = torch.tensor([0.5, 1.5])
    with pytest.raises(TypeError, match="'index' must hold integer dataset indices"):
        parse_outputs(out, OutputKeys(), source="`validation_step`", where="batch 1")


def test_fakes_of_uneven_batches_never_share_a_key():
    """A fixed generator batch (8 fakes) against real batches of 8, 8 and 3, keyed by index."""
    numbering = RowKeys(rank=0, world_size=1)
    order = torch.randperm(19, generator=torch.Generator().manual_seed(0))
    fake_keys = []
    for b, start in enumerate(range(0, 19, 8)):
        index = order[start : start + 8]
        keys = numbering.next_batch(len(index), 8, b, index=index)
        assert keys.real.tolist() == index.tolist()
        fake_keys.append(keys.fake)
    fakes = torch.cat(fake_keys)
    assert len(set(fakes.tolist())) == 24  # the old keys collided with indices 16..18
    assert fakes[:16].tolist() == order[:16].tolist()  # paired fakes share the real's index
    assert shown_index(fakes[16:]).tolist() == [-1] * 8  # no dataset index: shown as -1


def test_fakes_of_padded_rows_are_dropped_by_position_with_an_index():
    """DDP with the sampler's padding and dataset indices: paired fakes of padded rows go."""
    ds = TensorDataset(torch.arange(5))
    kept_real, kept_fake = [], []
    for rank in range(2):
        loader = DataLoader(ds, batch_size=2, sampler=DistributedSampler(ds, 2, rank, False))
        info = sampler_info(loader)
        numbering = RowKeys(rank, 2)
        for b, (batch,) in enumerate(loader):
            keys = numbering.next_batch(len(batch), len(batch), b, index=batch, info=info)
            keep = (
                keys.fake_keep
                if keys.fake_keep is not None
                else torch.ones(len(batch), dtype=torch.bool)
            )
            kept_fake += keys.fake[keep].tolist()
            kept_real += keys.real.tolist()
    assert sorted(kept_fake) == [0, 1, 2, 3, 4]  # sample 0, padded onto rank 1, dropped
    assert sorted(kept_real) == [0, 0, 1, 2, 3, 4]  # real repeats are merged by index later
