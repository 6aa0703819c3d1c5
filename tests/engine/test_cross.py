"""The real-fake pass and its nearest searches, driven through their limits."""

from __future__ import annotations

import numpy as np
import prdc.prdc as prdc_impl
import torch

from _prdc_cases import make_sets, reference
from lightning_embviz import RealReference, compute_prdc_details
from lightning_embviz.engine import Limits, cross_ball_tests, neighbour_radii, pair_mode
from lightning_embviz.engine.cross import CrossPass, CrossTests

FIELDS = (
    "fake_ball_count",
    "real_covered",
    "real_recalled",
    "real_nearest",
    "real_nearest_index",
    "fake_ratio",
    "fake_ratio_index",
)


def assert_same(got: CrossTests, want: CrossTests) -> None:
    for name in FIELDS:
        a, b = getattr(got, name), getattr(want, name)
        assert (a is None and b is None) or torch.equal(a, b), name


def engine_inputs(real: np.ndarray, fake: np.ndarray, ks: list[int]):
    x, y = torch.from_numpy(real), torch.from_numpy(fake)
    mode = pair_mode(x.dtype, y.dtype)
    return x, y, neighbour_radii(x, ks, mode, 2048), neighbour_radii(y, ks, mode, 2048), mode


def test_real_fake_tiles_over_columns_give_the_same_results():
    # Tiles of 7 x 11: row minima, recall and the ratio bounds run across tiles.
    for kind in ["normal", "discrete", "duplicates", "collapsed", "far"]:
        real, fake = (a.astype(np.float32) for a in make_sets(kind, 90, 130, 5, seed=17))
        ks = [1, 3, 6]
        x, y, real_radii, fake_radii, mode = engine_inputs(real, fake, ks)
        whole = cross_ball_tests(x, y, real_radii, fake_radii, mode, 512, details=True)
        tiled = cross_ball_tests(
            x, y, real_radii, fake_radii, mode, 7, details=True,
            limits=Limits(cross_tile_elements=7 * 11),
        )  # fmt: skip
        assert_same(tiled, whole)
        sweep = RealReference(real, nearest_k=ks).sweep_details(fake)
        for t, k in enumerate(ks):
            assert sweep[k].as_dict() == reference(real, fake, k), kind
            assert torch.equal(sweep[k].fake_ball_count, whole.fake_ball_count[t])


def test_pending_pairs_are_settled_and_shrunk_in_small_batches():
    # With a tiny pending limit, the re-checks are settled many times and a collapsed fake
    # set makes the nearest-fake candidates of a row band shrink before the band ends.
    real, fake = (a.astype(np.float32) for a in make_sets("collapsed", 120, 150, 6, seed=18))
    x, y, real_radii, fake_radii, mode = engine_inputs(real, fake, [3])
    whole = cross_ball_tests(x, y, real_radii, fake_radii, mode, 512, details=True)
    small = CrossPass(
        x, y, real_radii, fake_radii, mode, 16, details=True,
        limits=Limits(max_pending_pairs=40, cross_tile_elements=16 * 20),
    )  # fmt: skip
    assert_same(small.run(), whole)
    assert small.search is not None and small.search.shrinks  # the band shrank
    details = compute_prdc_details(real, fake, 3)
    assert details.as_dict() == reference(real, fake, 3)
    assert torch.equal(details.real_nearest_fake_distance, whole.real_nearest)


def test_collapsed_fakes_are_narrowed_with_float64():
    rng = np.random.default_rng(15)
    real = rng.normal(size=(300, 64)).astype(np.float32)
    fake = (rng.normal(size=(250, 64)) * 1e-4 + 30.0).astype(np.float32)
    x, y, real_radii, _, mode = engine_inputs(real, fake, [5])
    search = CrossPass(x, y, real_radii, None, mode, 512, details=True)
    tests = search.run()
    assert search.search is not None and search.search.narrowings  # the narrowing ran
    dist = prdc_impl.compute_pairwise_distance(real, fake).astype(np.float64)  # as prdc rounds
    assert tests.real_nearest is not None and tests.real_nearest_index is not None
    np.testing.assert_array_equal(tests.real_nearest.numpy(), dist.min(1))
    np.testing.assert_array_equal(tests.real_nearest_index.numpy(), dist.argmin(1))


def test_tiny_radii_are_decided_exactly():
    # Real pairs 1e-31 apart: squared radii below 2**-100 in the frame. Their ratio bounds
    # would overflow float32, so those rows are compared exactly with every fake.
    base = np.array([[0.0, 0.0], [5.0, 0.0], [-4.0, 0.0], [2.0, 0.0]])
    real = np.vstack([base, base + np.array([0.0, 1e-31])])
    fake = np.array([[1.0, 1.0], [4.0, 6.0], [0.0, 9.0]])
    x, y, real_radii, _, mode = engine_inputs(real, fake, [1])
    search = CrossPass(x, y, real_radii, None, mode, 512, details=True)
    tests = search.run()
    assert search.search is not None and search.search.tiny_rows == len(real)
    radii = real_radii[0].numpy()
    assert bool(((radii > 0) & (radii < 2e-31)).all())
    diff = real[:, None, :] - fake[None, :, :]
    dist = np.sqrt((diff * diff).sum(-1))
    assert tests.fake_ratio is not None and tests.real_nearest is not None
    np.testing.assert_array_equal(tests.fake_ratio[0].numpy(), (dist / radii[:, None]).min(0))
    np.testing.assert_array_equal(tests.real_nearest.numpy(), dist.min(1))
