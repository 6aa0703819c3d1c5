"""Memorization metrics: exact nearest-train search, authenticity, C_T, copy fraction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from lightning_embviz.engine.nearest_train import nearest_rows, train_frame
from lightning_embviz.memorization import (
    MEMORIZATION_KEYS,
    TrainReference,
    compute_memorization,
    compute_memorization_details,
    nearest_train,
)


def brutenearest_rows(
    queries: torch.Tensor, train: torch.Tensor, exclude: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """float64 cdist from coordinate differences, argmin (first index on ties)."""
    d = torch.cdist(queries.double(), train.double(), compute_mode="donot_use_mm_for_euclid_dist")
    if exclude is not None:
        d[torch.arange(len(queries)), exclude] = math.inf
    return d.argmin(dim=1), d.min(dim=1).values


def mixture(rng: np.random.Generator, means: np.ndarray, n: int, spread: float = 1.0):
    return means[rng.integers(0, len(means), n)] + spread * rng.standard_normal((n, means.shape[1]))


# --- nearest-train search -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [1, 7, None])
def test_nearest_train_equals_brute_force_on_random_data(dtype, chunk):
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(300, 8, generator=gen, dtype=dtype)
    fake = torch.randn(120, 8, generator=gen, dtype=dtype)
    index, distance = nearest_train(train, fake, chunk_size=chunk)
    want_index, want_distance = brutenearest_rows(fake, train)
    assert torch.equal(index, want_index)
    torch.testing.assert_close(distance, want_distance, rtol=1e-13, atol=0)


@pytest.mark.parametrize("max_held", [1, 50, 1 << 22])
def test_nearest_train_ties_go_to_the_lowest_index(max_held):
    # Integer grid with many duplicates: every fake has several training rows at the same
    # distance; small blocks and tiny hold limits drive the prune and settle paths.
    gen = torch.Generator().manual_seed(1)
    train = torch.randint(0, 3, (400, 5), generator=gen).float()
    fake = torch.randint(0, 3, (90, 5), generator=gen).float()
    index, distance = nearest_rows(fake, train, train_frame(train, 13), chunk=13, max_held=max_held)
    want_index, want_distance = brutenearest_rows(fake, train)
    assert torch.equal(index, want_index)
    assert torch.equal(distance, want_distance)


def test_nearest_train_far_from_the_origin_and_excluding_itself():
    gen = torch.Generator().manual_seed(2)
    train = 1e6 + 1e-3 * torch.randn(200, 6, generator=gen, dtype=torch.float64)
    fake = train[:50] + 1e-12 * torch.randn(50, 6, generator=gen, dtype=torch.float64)
    index, _ = nearest_train(train, fake, chunk_size=32)
    assert torch.equal(index, brutenearest_rows(fake, train)[0])
    rows = torch.arange(200)
    got = nearest_rows(train, train, train_frame(train, 32), exclude=rows, chunk=32)
    want = brutenearest_rows(train, train, exclude=rows)
    assert torch.equal(got[0], want[0])
    torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=0)


def test_results_do_not_depend_on_chunk_size_or_row_order():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(500, 6)).astype(np.float32)
    fake = np.concatenate([train[:40] + 1e-3, rng.normal(size=(160, 6)).astype(np.float32)])
    heldout = rng.normal(size=(300, 6)).astype(np.float32)
    base = compute_memorization_details(train, fake, heldout, n_cells=4)
    small = compute_memorization_details(train, fake, heldout, n_cells=4, chunk_size=5)
    order = rng.permutation(len(fake))
    shuffled = compute_memorization_details(train, fake[order], heldout, n_cells=4)
    assert base.as_dict() == small.as_dict() == shuffled.as_dict()
    assert torch.equal(base.nearest_train_index[order], shuffled.nearest_train_index)


# --- the three numbers against direct computations ----------------------------------------


def test_authenticity_and_copy_fraction_equal_their_definitions():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(400, 5))
    train[10] = train[11]  # a duplicate: its own nearest distance is 0
    fake = np.concatenate([train[:30] + 1e-4, rng.normal(size=(120, 5))])
    heldout = rng.normal(size=(200, 5))
    res = compute_memorization_details(train, fake, heldout, n_cells=3, alpha=0.1)
    t, f, h = (torch.from_numpy(x) for x in (train, fake, heldout))
    idx, dist = brutenearest_rows(f, t)
    own = brutenearest_rows(t, t, exclude=torch.arange(len(t)))[1]
    # dgm-eval's AuthPct: authentic when the train point's own NN distance < the fake's.
    assert res.authenticity == float((own[idx] < dist).double().mean())
    torch.testing.assert_close(res.train_self_distance, own[idx], rtol=1e-13, atol=0)
    threshold = np.quantile(brutenearest_rows(h, t)[1].numpy(), 0.1)
    assert res.copy_threshold == threshold
    assert res.copy_fraction == float((dist < threshold).double().mean())
    # Without held-out reals: the training rows' leave-one-out distances (all rows here).
    with pytest.warns(UserWarning, match="needs held-out real samples"):
        alone = compute_memorization_details(train, fake, alpha=0.1)
    assert math.isnan(alone.ct_score)
    assert alone.copy_threshold == np.quantile(own.numpy(), 0.1)
    assert alone.authenticity == res.authenticity


def test_ct_score_equals_meehan_formula():
    rng = np.random.default_rng(5)
    means = 3.0 * rng.standard_normal((4, 6))
    train = mixture(rng, means, 800)
    heldout = mixture(rng, means, 300)
    fake = np.concatenate([train[:60] + 1e-3, mixture(rng, means, 240)])
    ref = TrainReference(train, n_cells=4)
    res = ref.compare_details(fake, heldout, min_cell_fakes=20)
    t = torch.from_numpy(train)
    fd = brutenearest_rows(torch.from_numpy(fake), t)[1].numpy()
    hd = brutenearest_rows(torch.from_numpy(heldout), t)[1].numpy()
    fc = ref.cells(torch.from_numpy(fake)).numpy()
    hc = ref.cells(torch.from_numpy(heldout)).numpy()
    zs, ws = [], []
    for cell in range(4):
        a, b = fd[fc == cell], hd[hc == cell]
        if len(a) < 20 or len(b) == 0:
            continue
        u = mannwhitneyu(a, b, alternative="less").statistic
        m, n = len(a), len(b)
        zs.append((u - (m * n / 2 - 0.5)) / math.sqrt(m * n * (m + n + 1) / 12))
        ws.append(n / len(hd))
    assert zs, "the test needs usable cells"
    assert res.ct_score == pytest.approx(np.dot(ws, zs) / np.sum(ws), rel=1e-12)
    assert int(res.cell_used.sum()) == len(zs)


def test_simulation_honest_copying_and_overdispersed_generators():
    rng = np.random.default_rng(6)
    means = 2.0 * rng.standard_normal((6, 8))
    train = mixture(rng, means, 2000)
    heldout = mixture(rng, means, 600)
    ref = TrainReference(train, n_cells=6)
    honest = ref.compare(mixture(rng, means, 600), heldout)
    copies = np.concatenate([train[:180] + 0.02 * rng.standard_normal((180, 8))])
    copying = ref.compare(np.concatenate([copies, mixture(rng, means, 420)]), heldout)
    wide = ref.compare(mixture(rng, means, 600, spread=2.0), heldout)
    assert abs(honest["ct_score"]) < 3
    assert copying["ct_score"] < -3
    assert wide["ct_score"] > 3
    assert abs(honest["copy_fraction"] - 0.05) < 0.04
    assert copying["copy_fraction"] > honest["copy_fraction"] + 0.2
    assert copying["authenticity"] < honest["authenticity"] - 0.15


def test_compute_memorization_is_the_fitted_reference():
    rng = np.random.default_rng(7)
    train, fake, heldout = (rng.normal(size=(n, 4)) for n in (300, 100, 150))
    out = compute_memorization(train, fake, heldout, n_cells=3)
    assert list(out) == list(MEMORIZATION_KEYS)
    assert all(isinstance(v, float) for v in out.values())
    assert out == TrainReference(train, n_cells=3).compare(fake, heldout)


def test_no_usable_cell_warns_and_gives_nan():
    rng = np.random.default_rng(8)
    train, fake, heldout = (rng.normal(size=(n, 3)) for n in (200, 10, 50))
    with pytest.warns(UserWarning, match="no k-means cell holds at least min_cell_fakes=20"):
        out = compute_memorization(train, fake, heldout, n_cells=2)
    assert math.isnan(out["ct_score"])
    assert not math.isnan(out["authenticity"])


# --- saving and loading -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_save_and_load_give_the_same_results(tmp_path, suffix):
    rng = np.random.default_rng(9)
    train = rng.normal(size=(300, 5)).astype(np.float32)
    fake, heldout = rng.normal(size=(80, 5)), rng.normal(size=(120, 5))
    ref = TrainReference(train, n_cells=3, self_rows=50)
    path = tmp_path / f"train{suffix}"
    ref.save(path)
    loaded = TrainReference.load(path)
    assert loaded.fingerprint == ref.fingerprint and loaded.n_cells == 3
    assert torch.equal(loaded.centroids(), ref.centroids())
    assert loaded.compare(fake, heldout) == ref.compare(fake, heldout)
    with pytest.warns(UserWarning, match="needs held-out"):
        assert loaded.compare(fake) == ref.compare(fake)


def test_load_rejects_other_and_damaged_files(tmp_path):
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(ValueError, match="is not a saved TrainReference"):
        TrainReference.load(other)
    text = tmp_path / "text.npz"
    text.write_text("hello")
    with pytest.raises(ValueError, match="is not a saved TrainReference"):
        TrainReference.load(text)
    ref = TrainReference(np.arange(20.0).reshape(10, 2), n_cells=2)
    good = tmp_path / "good.npz"
    ref.save(good)
    with np.load(good) as data:
        fields = dict(data)
    fields["train"] = fields["train"] + 1.0
    bad = tmp_path / "bad.npz"
    np.savez(bad, **fields)
    with pytest.raises(ValueError, match="damaged"):
        TrainReference.load(bad)
    fields["format_version"] = np.asarray(99)
    np.savez(bad, **fields)
    with pytest.raises(ValueError, match="format version 99"):
        TrainReference.load(bad)


# --- errors -------------------------------------------------------------------------------


def test_bad_inputs_name_the_fix():
    train = np.zeros((10, 3))
    with pytest.raises(ValueError, match=r"`fake` has 4 features per row but the training"):
        compute_memorization(train, np.zeros((5, 4)))
    with pytest.raises(ValueError, match=r"`heldout` has 2 features"):
        compute_memorization(train, np.zeros((5, 3)), np.zeros((5, 2)))
    with pytest.raises(ValueError, match=r"`train` needs at least 2 rows"):
        compute_memorization(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"`fake` must be 2-D"):
        compute_memorization(train, np.zeros(3))
    with pytest.raises(ValueError, match=r"`train` has 1 row\(s\) with NaN"):
        compute_memorization(np.vstack([train, [[np.nan] * 3]]), np.zeros((5, 3)))
    with pytest.raises(TypeError, match=r"`fake` must be a torch.Tensor or a numpy.ndarray"):
        compute_memorization(train, [[0.0, 0.0, 0.0]])
    for alpha in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=r"`alpha` must lie strictly between 0 and 1"):
            compute_memorization(train, np.zeros((5, 3)), alpha=alpha)
    for alpha in (True, "0.05", None):
        with pytest.raises(TypeError, match=r"`alpha` must be a float in \(0, 1\)"):
            compute_memorization(train, np.zeros((5, 3)), alpha=alpha)
    with pytest.raises(ValueError, match=r"`n_cells` must be between 1 and 10"):
        TrainReference(train, n_cells=11)
    with pytest.raises(TypeError, match=r"`n_cells` must be an int"):
        TrainReference(train, n_cells=2.5)
    with pytest.raises(ValueError, match=r"`min_cell_fakes` must be >= 1"):
        TrainReference(train).compare(np.zeros((5, 3)), min_cell_fakes=0)
    with pytest.raises(ValueError, match=r"`chunk_size` must be >= 1"):
        nearest_train(train, np.zeros((5, 3)), chunk_size=0)
    with pytest.raises(ValueError, match=r"`self_rows` must be >= 1"):
        TrainReference(train, self_rows=0)
