from __future__ import annotations

import builtins
import importlib.util

import numpy as np
import pytest
import torch

import lightning_embviz.projection as public_projection
from lightning_embviz.figures import neighbour_maps
from lightning_embviz.figures.neighbour_maps import TSNEProjection, UMAPProjection
from lightning_embviz.figures.projections import (
    PCAProjection,
    fingerprint,
    make_projection,
    subsample_indices,
)


def blobs(n: int, width: int = 16, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, width)) * 4
    labels = np.arange(n) % 3
    return (centres[labels] + rng.normal(size=(n, width)) + shift).astype(np.float32)


# ---------------------------------------------------------------- subsampling and fingerprint


def test_subsample_is_deterministic_sorted_and_bounded():
    a = subsample_indices(1000, 100, seed=3)
    b = subsample_indices(1000, 100, seed=3)
    c = subsample_indices(1000, 100, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len(a) == 100 and len(np.unique(a)) == 100
    assert np.all(np.diff(a) > 0) and a.min() >= 0 and a.max() < 1000
    np.testing.assert_array_equal(subsample_indices(50, 100, seed=0), np.arange(50))
    np.testing.assert_array_equal(subsample_indices(50, None, seed=0), np.arange(50))


def test_fingerprint_changes_with_content_and_shape():
    x = blobs(50)
    assert fingerprint(x) == fingerprint(x.copy()) == fingerprint(torch.from_numpy(x))
    y = x.copy()
    y[7, 3] += 1e-3
    assert fingerprint(y) != fingerprint(x)
    assert fingerprint(x.reshape(25, -1)) != fingerprint(x)


# ---------------------------------------------------------------- PCA


def test_pca_matches_variance_directions_and_is_deterministic():
    rng = np.random.default_rng(0)
    # Anisotropic data: the first axis has by far the largest variance, then the second.
    x = rng.normal(size=(400, 5)) * np.array([10.0, 3.0, 1.0, 0.5, 0.1])
    pca = PCAProjection()
    emb = pca.fit_transform(x)
    assert emb.shape == (400, 2)
    assert abs(abs(pca.components_[0, 0]) - 1.0) < 1e-2
    assert abs(abs(pca.components_[1, 1]) - 1.0) < 1e-2
    np.testing.assert_allclose(emb.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(emb.var(axis=0, ddof=1), pca.explained_variance_, rtol=1e-9)
    np.testing.assert_array_equal(PCAProjection().fit_transform(x), emb)


def test_pca_signs_are_fixed_under_negation_and_row_order():
    x = blobs(300, width=24)
    pca = PCAProjection().fit(x)
    # The largest-magnitude loading of each component is positive.
    comps = pca.components_
    assert np.all(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)] > 0)
    # Negating or permuting the data does not flip the frame.
    perm = np.random.default_rng(1).permutation(len(x))
    for variant in (x[perm], x * 1.0):
        other = PCAProjection().fit(variant)
        np.testing.assert_allclose(other.components_, comps, atol=1e-8)
    flipped = PCAProjection().fit(-x)
    np.testing.assert_allclose(flipped.components_, comps, atol=1e-8)
    np.testing.assert_allclose(flipped.transform(-x), pca.transform(x) * -1, atol=1e-8)


def test_pca_transform_identical_points_identical_places_and_matches_fit():
    x = blobs(200)
    pca = PCAProjection().fit(x)
    np.testing.assert_allclose(pca.transform(x), pca.reference_embedding, atol=1e-10)
    y = np.concatenate([x[:5], x[:5]])
    out = pca.transform(y)
    np.testing.assert_array_equal(out[:5], out[5:])


def test_pca_state_dict_is_plain_tensors_and_roundtrips(tmp_path):
    x, y = blobs(200), blobs(100, seed=1, shift=0.5)
    pca = PCAProjection().fit(x)
    path = tmp_path / "pca.pt"
    torch.save(pca.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert isinstance(state["components"], torch.Tensor) and state["components"].shape == (2, 16)
    restored = PCAProjection()
    restored.load_state_dict(state)
    np.testing.assert_array_equal(restored.transform(y), pca.transform(y))
    assert restored.reference_fingerprint == fingerprint(x)


def test_pca_small_width_pads_with_zero_components():
    x = np.random.default_rng(0).normal(size=(30, 1))
    emb = PCAProjection().fit_transform(x)
    assert emb.shape == (30, 2)
    np.testing.assert_array_equal(emb[:, 1], 0.0)


def test_project_refits_only_when_reference_changes():
    x, y = blobs(120), blobs(80, seed=1)
    pca = PCAProjection()
    _, a_fake = pca.project(x, y)
    comps = pca.components_.copy()
    # Same reference: same frame, even for a different other set.
    _, b_fake = pca.project(x, y + 1.0)
    np.testing.assert_array_equal(pca.components_, comps)
    assert not np.allclose(a_fake, b_fake)
    # Another reference: refitted.
    pca.project(blobs(120, seed=5), y)
    assert not np.allclose(pca.components_, comps)


def test_projection_errors():
    with pytest.raises(ValueError, match="n_components"):
        PCAProjection(0)
    with pytest.raises(RuntimeError, match="not fitted"):
        PCAProjection().transform(blobs(10))
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        PCAProjection().fit(np.zeros(5))
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        PCAProjection().fit([[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
        PCAProjection().fit(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="width"):
        PCAProjection().project(blobs(10), blobs(10, width=8))
    with pytest.raises(ValueError, match="Unknown projection 'isomap'"):
        make_projection("isomap")
    with pytest.raises(ValueError, match="backend='cuml'"):
        TSNEProjection(backend="cuml")
    with pytest.raises(ValueError, match="perplexity"):
        TSNEProjection(perplexity=0)
    with pytest.raises(ValueError, match="n_iter"):
        TSNEProjection(n_iter=0)
    with pytest.raises(ValueError, match="state is for projection 'tsne'"):
        PCAProjection().load_state_dict({"name": "tsne", "fitted": False})


# ---------------------------------------------------------------- t-SNE (openTSNE)

needs_opentsne = pytest.mark.skipif(
    importlib.util.find_spec("openTSNE") is None, reason="openTSNE not installed"
)


@needs_opentsne
def test_opentsne_fit_once_transform_is_deterministic_and_places_duplicates_together(tmp_path):
    x, y = blobs(240), blobs(150, seed=1, shift=0.3)
    tsne = TSNEProjection(seed=0, n_iter=100, early_exaggeration_iter=50, transform_iter=50)
    assert tsne.backend == "opentsne" and tsne.inductive
    ref, fake = tsne.project(x, y)
    assert ref.shape == (240, 2) and fake.shape == (150, 2)
    assert np.isfinite(ref).all() and np.isfinite(fake).all()
    # The map separates the three clusters: within-cluster spread << between-cluster spread.
    labels = np.arange(240) % 3
    centres = np.stack([ref[labels == c].mean(axis=0) for c in range(3)])
    spread = max(ref[labels == c].std(axis=0).max() for c in range(3))
    assert np.linalg.norm(centres[0] - centres[1]) > 2 * spread
    # Same inputs and seed: same picture.
    ref2, fake2 = TSNEProjection(
        seed=0, n_iter=100, early_exaggeration_iter=50, transform_iter=50
    ).project(x, y)
    np.testing.assert_array_equal(ref, ref2)
    np.testing.assert_array_equal(fake, fake2)
    # The map is kept: a second call with the same reference does not move the reference.
    ref3, _ = tsne.project(x, y[:20])
    np.testing.assert_array_equal(ref3, ref)
    # Identical points land on identical places.
    dup = tsne.transform(np.concatenate([y[:6], y[:6]]))
    np.testing.assert_allclose(dup[:6], dup[6:], atol=1e-9)
    # State: plain tensors, and the restored map places new points where the original does.
    path = tmp_path / "tsne.pt"
    torch.save(tsne.state_dict(), path)
    restored = TSNEProjection(seed=0, n_iter=100, early_exaggeration_iter=50, transform_iter=50)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert restored.fitted and restored.reference_fingerprint == fingerprint(x)
    np.testing.assert_allclose(restored.transform(y[:30]), tsne.transform(y[:30]), atol=1e-3)


@needs_opentsne
def test_tsne_pca_prestep_only_for_wide_data():
    tsne = TSNEProjection(n_iter=50, early_exaggeration_iter=25, pca_dims=8)
    tsne.fit(blobs(60, width=16))
    assert tsne._pca is not None and tsne._pca.n_components == 8
    narrow = TSNEProjection(n_iter=50, early_exaggeration_iter=25, pca_dims=8)
    narrow.fit(blobs(60, width=4))
    assert narrow._pca is None


def test_tsne_needs_enough_points():
    with pytest.raises(ValueError, match="at least 4 points"):
        TSNEProjection(backend="sklearn").fit(blobs(3))


# ---------------------------------------------------------------- t-SNE (scikit-learn fallback)


def test_sklearn_tsne_fits_jointly_and_is_deterministic():
    x, y = blobs(60, width=8), blobs(40, width=8, seed=1)
    tsne = TSNEProjection(backend="sklearn", n_iter=200, early_exaggeration_iter=50, seed=1)
    assert not tsne.inductive
    ref, fake = tsne.project(x, y)
    assert ref.shape == (60, 2) and fake.shape == (40, 2)
    ref2, fake2 = TSNEProjection(
        backend="sklearn", n_iter=200, early_exaggeration_iter=50, seed=1
    ).project(x, y)
    np.testing.assert_allclose(ref, ref2)
    np.testing.assert_allclose(fake, fake2)
    with pytest.raises(RuntimeError, match="cannot place new points"):
        tsne.transform(y)


def _hide_module(monkeypatch, name):
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(module_name, *args, **kwargs):
        if module_name == name or module_name.startswith(name + "."):
            return None
        return real_find_spec(module_name, *args, **kwargs)

    monkeypatch.setattr(neighbour_maps.importlib.util, "find_spec", fake_find_spec)
    real_import = builtins.__import__

    def fake_import(module_name, *args, **kwargs):
        if module_name == name or module_name.startswith(name + "."):
            raise ModuleNotFoundError(f"No module named {module_name!r}")
        return real_import(module_name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_missing_opentsne_falls_back_unless_asked_for(monkeypatch):
    _hide_module(monkeypatch, "openTSNE")
    assert TSNEProjection().backend == "sklearn"
    assert make_projection("tsne").backend == "sklearn"  # type: ignore[attr-defined]
    with pytest.raises(ModuleNotFoundError, match=r"pip install lightning-embviz\[tsne\]"):
        TSNEProjection(backend="opentsne")


def test_missing_umap_names_the_extra(monkeypatch):
    _hide_module(monkeypatch, "umap")
    with pytest.raises(ModuleNotFoundError, match=r"pip install lightning-embviz\[umap\]"):
        make_projection("umap")


# ---------------------------------------------------------------- UMAP

needs_umap = pytest.mark.skipif(importlib.util.find_spec("umap") is None, reason="no umap-learn")


@needs_umap
def test_umap_fit_transform_deterministic():
    x, y = blobs(150, width=8), blobs(60, width=8, seed=1)
    ref, fake = UMAPProjection(seed=0).project(x, y)
    ref2, fake2 = UMAPProjection(seed=0).project(x, y)
    assert ref.shape == (150, 2) and fake.shape == (60, 2)
    np.testing.assert_allclose(ref, ref2)
    np.testing.assert_allclose(fake, fake2)
    with pytest.raises(ValueError, match="n_neighbors"):
        UMAPProjection(n_neighbors=1)


def test_public_projection_module_reexports_the_figures_code():
    from lightning_embviz.figures import projections

    for name in public_projection.__all__:
        home = neighbour_maps if name in neighbour_maps.__all__ else projections
        assert getattr(public_projection, name) is getattr(home, name)
