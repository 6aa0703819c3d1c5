"""Memorization metrics: exact nearest-train search, authenticity, C_T, copy fraction."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import mannwhitneyu

from lightning_embviz.engine.memorization_seam import (
    PER_FAKE_KEYS,
    closest_to_train,
    memorization_scalars,
    resolve_train,
)
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


# --- the seam of the callback and the command ---------------------------------------------


def _seam_data(seed: int = 11):
    rng = np.random.default_rng(seed)
    means = rng.normal(scale=4.0, size=(3, 4))
    train = mixture(rng, means, 300).astype(np.float32)
    fake = np.vstack([train[:20] + 1e-4, mixture(rng, means, 60)]).astype(np.float32)
    heldout = mixture(rng, means, 120).astype(np.float32)
    return train, fake, heldout


def test_resolve_train_from_arrays_tensors_and_references():
    train, fake, heldout = _seam_data()
    ref = resolve_train(train, n_cells=3, self_rows=50, seed=2)
    want = TrainReference(train, n_cells=3, self_rows=50, seed=2)
    assert ref.fingerprint == want.fingerprint and ref.n_cells == 3
    assert ref.compare(fake, heldout) == want.compare(fake, heldout)
    with pytest.warns(UserWarning, match="needs held-out"):
        np.testing.assert_equal(ref.compare(fake), want.compare(fake))  # same sample
    from_tensor = resolve_train(torch.from_numpy(train), n_cells=3)
    assert from_tensor.fingerprint == want.fingerprint
    assert resolve_train(ref, n_cells=7) is ref


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".pt", ".csv"])
def test_resolve_train_reads_embedding_files(tmp_path, suffix):
    train, fake, heldout = _seam_data()
    path = tmp_path / f"train{suffix}"
    if suffix == ".npy":
        np.save(path, train)
    elif suffix == ".npz":
        np.savez(path, embeddings=train)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(train), path)
    else:
        np.savetxt(path, train, delimiter=",", fmt="%.9g")
    for given in (path, str(path)):
        ref = resolve_train(given, n_cells=3)
        assert ref.train.dtype == torch.float32
        assert ref.fingerprint == TrainReference(train).fingerprint
        assert ref.compare(fake, heldout) == TrainReference(train, n_cells=3).compare(fake, heldout)


@pytest.mark.parametrize("name", ["train_ref.npz", "train_ref.pt", "no_suffix"])
def test_resolve_train_loads_a_saved_reference_by_its_content(tmp_path, name):
    train, fake, heldout = _seam_data()
    ref = TrainReference(train, n_cells=3, self_rows=40)
    ref.save(tmp_path / name)
    loaded = resolve_train(tmp_path / name, n_cells=5)  # the saved options win
    assert loaded.n_cells == 3 and loaded.fingerprint == ref.fingerprint
    assert loaded.compare(fake, heldout) == ref.compare(fake, heldout)
    with pytest.warns(UserWarning, match="needs held-out"):
        np.testing.assert_equal(loaded.compare(fake), ref.compare(fake))


def test_resolve_train_errors_say_what_to_pass(tmp_path):
    from lightning_embviz import RealReference
    from lightning_embviz._io import EmbeddingFileError

    train, _, _ = _seam_data()
    with pytest.raises(ValueError, match=r"no such file.*saved TrainReference"):
        resolve_train(tmp_path / "missing.npy")
    RealReference(train, 3).save(tmp_path / "real_ref.npz")
    with pytest.raises(ValueError, match=r"is a saved RealReference .* not a training set"):
        resolve_train(tmp_path / "real_ref.npz")
    np.save(tmp_path / "flat.npy", np.zeros(5))
    with pytest.raises(EmbeddingFileError, match="1-D"):
        resolve_train(tmp_path / "flat.npy")
    TrainReference(train, n_cells=2).save(tmp_path / "old.npz")
    with np.load(tmp_path / "old.npz") as data:
        fields = {key: data[key] for key in data.files}
    fields["format_version"] = np.asarray(99)
    np.savez(tmp_path / "old.npz", **fields)
    with pytest.raises(ValueError, match="format version 99"):
        resolve_train(tmp_path / "old.npz")
    for wrong in ([[0.0, 1.0], [1.0, 0.0]], 3, None):
        with pytest.raises(TypeError, match="must be an \\(N, D\\) numpy array"):
            resolve_train(wrong)
    with pytest.raises(ValueError, match="at least 2 rows"):
        resolve_train(train[:1])


def test_memorization_scalars_are_compare_details_with_columns():
    train, fake, heldout = _seam_data()
    ref = TrainReference(train, n_cells=3)
    run = memorization_scalars(ref, fake, heldout, alpha=0.1, min_cell_fakes=5)
    want = ref.compare_details(fake, heldout, alpha=0.1, min_cell_fakes=5)
    assert run.warning is None
    assert run.scalars == want.as_dict() and list(run.scalars) == list(MEMORIZATION_KEYS)
    assert list(run.per_fake) == list(PER_FAKE_KEYS)
    assert torch.equal(run.per_fake["nearest_train_index"], want.nearest_train_index)
    assert torch.equal(run.per_fake["nearest_train_distance"], want.nearest_train_distance)
    assert run.scalars["copy_fraction"] >= 20 / 80  # the 20 near-copies


def test_memorization_scalars_never_raise_on_bad_data():
    train, fake, heldout = _seam_data()
    ref = TrainReference(train, n_cells=3)
    bad = fake.copy()
    bad[[4, 9]] = np.nan
    bad[30, 1] = np.inf
    held = heldout.copy()
    held[0] = np.nan
    run = memorization_scalars(ref, bad, held, min_cell_fakes=5)
    keep = np.isfinite(bad).all(axis=1)
    want = ref.compare_details(bad[keep], held[1:], min_cell_fakes=5)
    assert run.scalars == want.as_dict()
    index = run.per_fake["nearest_train_index"]
    distance = run.per_fake["nearest_train_distance"]
    assert index.shape == distance.shape == (len(fake),)
    assert index[[4, 9, 30]].tolist() == [-1, -1, -1] and distance[[4, 9, 30]].isnan().all()
    assert torch.equal(index[torch.from_numpy(keep)], want.nearest_train_index)
    assert run.warning is not None
    assert "3 of 80 fakes hold NaN or Inf (first: row 4)" in run.warning
    assert "1 of 120 held-out reals hold NaN or Inf (first: row 0)" in run.warning

    def all_nan(run, rows, match):
        assert all(math.isnan(v) for v in run.scalars.values())
        assert run.per_fake["nearest_train_index"].tolist() == [-1] * rows
        assert run.per_fake["nearest_train_distance"].isnan().all()
        assert run.warning is not None and re.search(match, run.warning), run.warning

    all_nan(memorization_scalars(ref, fake[:, :3], heldout), 80, "fakes have shape \\(80, 3\\)")
    all_nan(memorization_scalars(ref, fake, heldout[:, :2]), 80, "held-out reals have shape")
    all_nan(memorization_scalars(ref, np.full((6, 4), np.nan)), 6, "no usable fakes")
    all_nan(memorization_scalars(ref, np.zeros((0, 4))), 0, "no usable fakes")
    all_nan(memorization_scalars(ref, fake, np.full((5, 4), np.inf)), 80, "no usable held-out")
    all_nan(memorization_scalars(ref, "fake.npy"), 0, "every value is NaN \\(TypeError")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # returned for the caller, never emitted
        no_heldout = memorization_scalars(ref, fake)
    with pytest.warns(UserWarning, match="needs held-out"):
        np.testing.assert_equal(no_heldout.scalars, ref.compare(fake))
    assert math.isnan(no_heldout.scalars["ct_score"])
    assert no_heldout.warning is not None and "needs held-out real samples" in no_heldout.warning
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        memorization_scalars(ref, fake, alpha=1.5)
    with pytest.raises(ValueError, match="min_cell_fakes"):
        memorization_scalars(ref, fake, min_cell_fakes=0)


def test_closest_to_train_orders_the_gallery_closest_first():
    train, fake, heldout = _seam_data()
    run = memorization_scalars(TrainReference(train, n_cells=3), fake, heldout)
    rows = closest_to_train(run.per_fake, 8)
    distance = run.per_fake["nearest_train_distance"]
    assert torch.equal(rows.fake_index, torch.argsort(distance, stable=True)[:8])
    assert torch.equal(rows.train_index, run.per_fake["nearest_train_index"][rows.fake_index])
    assert torch.equal(rows.distance, distance[rows.fake_index])
    assert set(rows.fake_index.tolist()) <= set(range(20))  # the near-copies come first
    per_fake = {
        "nearest_train_index": torch.tensor([7, -1, 2, 5, 3]),
        "nearest_train_distance": torch.tensor([0.3, math.nan, 0.1, 0.3, math.nan]),
    }
    got = closest_to_train(per_fake, 10)  # unknown rows never shown; ties: lower fake row
    assert got.fake_index.tolist() == [2, 0, 3] and got.train_index.tolist() == [2, 7, 5]
    assert closest_to_train(per_fake, 0).fake_index.numel() == 0
    with pytest.raises(ValueError, match="count"):
        closest_to_train(per_fake, -1)
    with pytest.raises(ValueError, match="lacks nearest_train_distance"):
        closest_to_train({"nearest_train_index": torch.tensor([1])}, 3)
    per_fake["nearest_train_index"] = torch.tensor([1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        closest_to_train(per_fake, 3)
