"""The radius pass, driven through its limits: capped rows, pruning, one rank's rows."""

from __future__ import annotations

import numpy as np
import prdc.prdc as prdc_impl
import pytest
import torch

from _prdc_cases import make_sets
from lightning_embviz.engine import Limits, neighbour_radii
from lightning_embviz.engine.radii import RadiusPass


def reference_radii(x: np.ndarray, k: int) -> np.ndarray:
    """The reference's k-NN radii, as float64."""
    return prdc_impl.compute_nearest_neighbour_distances(x, k).astype(np.float64)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_capped_rows_fall_back_to_an_exact_row(k):
    # With a tiny candidate cap, rows with many tied neighbours are capped; the check that
    # nothing left out could be smaller must send them through the dense exact fallback.
    rng = np.random.default_rng(k)
    real = (rng.integers(0, 2, size=(500, 6)) + rng.normal(size=(500, 6)) * 1e-3).astype(np.float32)
    x = torch.from_numpy(real)
    capped = RadiusPass(x, [k], "f32", 2048, limits=Limits(cap_per_k=1, cap_extra=1))
    radii = capped.run()
    assert capped.fallback_rows  # the fallback ran
    assert torch.equal(radii, neighbour_radii(x, [k], "f32", 2048))
    np.testing.assert_array_equal(radii[0].numpy(), reference_radii(real, k))


@pytest.mark.parametrize("kind", ["normal", "discrete", "duplicates", "near_copies"])
def test_radius_pass_prunes_its_candidates(kind):
    # The running per-row bound tightens block after block; with a tiny threshold the held
    # candidates are pruned many times, and the radii must not change.
    real, fake = (a.astype(np.float32) for a in make_sets(kind, 400, 350, 6, seed=31))
    for data in (real, fake):
        x = torch.from_numpy(data)
        pruned = RadiusPass(x, [4], "f32", 23, limits=Limits(compact_per_row=0, compact_min=50))
        radii = pruned.run()
        assert pruned.compactions > 1  # the pruning ran
        assert torch.equal(radii, neighbour_radii(x, [4], "f32", 2048))
        np.testing.assert_array_equal(radii[0].numpy(), reference_radii(data, 4))


@pytest.mark.parametrize("row_range", [None, (37, 171)])
def test_pruning_capped_blocks_keeps_rows_and_columns_together(row_range):
    # Identical rows: every block caps every row, and the held pairs are pruned after each
    # block. The pruning filters the rows, columns and values pieces pairwise, so a capped
    # block must add one piece to each (it once added two column pieces and crashed).
    x = torch.ones(200, 3)
    x[::2] += 1.0
    tight = Limits(cap_per_k=1, cap_extra=1, compact_per_row=0, compact_min=10)
    both = RadiusPass(x, [1, 3], "f32", 16, row_range=row_range, limits=tight)
    radii = both.run()
    assert both.compactions and both.fallback_rows  # pruned, and capped rows settled
    assert bool((radii == 0).all())  # every row has 99 duplicates
    assert torch.equal(radii, neighbour_radii(x, [1, 3], "f32", 16, row_range=row_range))


def test_a_range_of_rows_gets_the_radii_of_the_whole_set():
    real, _ = (a.astype(np.float32) for a in make_sets("far", 120, 10, 5, seed=4))
    x = torch.from_numpy(real)
    whole = neighbour_radii(x, [1, 4], "f32", 32)
    assert torch.equal(neighbour_radii(x, [1, 4], "f32", 32, row_range=(20, 75)), whole[:, 20:75])
    assert neighbour_radii(x, [1, 4], "f32", 32, row_range=(9, 9)).shape == (2, 0)


def test_misuse_is_refused():
    x = torch.zeros(10, 2)
    with pytest.raises(ValueError, match="ks must be increasing ints >= 1"):
        neighbour_radii(x, [3, 2], "f32", 4)
    with pytest.raises(ValueError, match=r"row_range must lie in \[0, 10\]"):
        neighbour_radii(x, [1], "f32", 4, row_range=(5, 11))
