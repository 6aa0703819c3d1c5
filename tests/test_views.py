from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from lightning_embviz import compute_prdc_details
from lightning_embviz.plotting import figure_to_array
from lightning_embviz.projection import fingerprint
from lightning_embviz.views import DEFAULT_MAX_SAMPLES, ViewBuilder


def data(n: int = 240, m: int = 200, width: int = 12, seed: int = 0, shift: float = 0.4):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, width)) * 4
    labels = np.arange(n) % 3
    real = (centres[labels] + rng.normal(size=(n, width))).astype(np.float32)
    fake_labels = np.arange(m) % 3
    fake = (centres[fake_labels] + rng.normal(size=(m, width)) + shift).astype(np.float32)
    return real, fake, labels, fake_labels


def is_plain(value) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and is_plain(v) for k, v in value.items())
    return isinstance(value, (torch.Tensor, int, float, str, bool))


def test_keys_with_and_without_labels():
    real, fake, rl, fl = data()
    details = compute_prdc_details(real, fake, 5)
    views = ViewBuilder(methods=("pca",), seed=0)
    figures = views.build(real, fake, details)
    assert sorted(figures) == ["pca", "pca_coverage"]
    figures = views.build(torch.from_numpy(real), torch.from_numpy(fake), details, rl, fl)
    assert sorted(figures) == ["class_metrics", "pca", "pca_classes", "pca_coverage"]
    no_cov = ViewBuilder(methods=("pca",), coverage_view=False).build(real, fake, details)
    assert sorted(no_cov) == ["pca"]


def test_pca_frame_is_kept_across_calls_and_refitted_for_a_new_real_set():
    real, fake, _, _ = data()
    views = ViewBuilder(methods=("pca",))
    views.build(real, fake, compute_prdc_details(real, fake, 5))
    pca = views.projection("pca")
    comps = pca.components_.copy()
    fake2 = fake * 0.5 + 3
    views.build(real, fake2, compute_prdc_details(real, fake2, 5))
    np.testing.assert_array_equal(pca.components_, comps)
    assert pca.reference_fingerprint == fingerprint(real.astype(np.float64))
    other_real = data(seed=3)[0]
    views.build(other_real, fake, compute_prdc_details(other_real, fake, 5))
    assert pca.reference_fingerprint == fingerprint(other_real.astype(np.float64))


def test_subsample_caps_the_drawn_points():
    real, fake, _, _ = data(n=300, m=250)
    views = ViewBuilder(methods=("pca",), max_samples=50)
    fig = views.build(real, fake, compute_prdc_details(real, fake, 5))["pca"]
    sizes = [len(c.get_offsets()) for c in fig.axes[0].collections]
    assert sizes[0] == 50 and sizes[1] == 50
    assert DEFAULT_MAX_SAMPLES >= 1000


def test_same_inputs_same_pictures():
    real, fake, _, _ = data()
    details = compute_prdc_details(real, fake, 5)
    a = ViewBuilder(methods=("pca", "tsne"), seed=2).build(real, fake, details, title="t")
    b = ViewBuilder(methods=("pca", "tsne"), seed=2).build(real, fake, details, title="t")
    for key in a:
        np.testing.assert_array_equal(figure_to_array(a[key]), figure_to_array(b[key]))


def test_state_dict_plain_roundtrip_keeps_the_frame(tmp_path):
    real, fake, _, _ = data()
    details = compute_prdc_details(real, fake, 5)
    views = ViewBuilder(methods=("pca", "tsne"), seed=1)
    assert views.state_dict()  # never empty, even before any call
    before = views.build(real, fake, details)
    path = tmp_path / "views.pt"
    torch.save(views.state_dict(), path)
    state = torch.load(path, weights_only=True)
    assert is_plain(state)
    assert state["methods"] == "pca,tsne" and state["frames"]["pca"]["fitted"]
    restored = ViewBuilder(methods=("pca", "tsne"), seed=1)
    restored.load_state_dict(state)
    assert restored.projection("tsne").fitted
    after = restored.build(real, fake, details)
    np.testing.assert_array_equal(figure_to_array(after["pca"]), figure_to_array(before["pca"]))
    diff = np.abs(
        figure_to_array(after["tsne"]).astype(int) - figure_to_array(before["tsne"]).astype(int)
    )
    assert (diff > 0).mean() < 0.001
    # A state from another seed is not reused (its subsample differs).
    other = ViewBuilder(methods=("pca",), seed=5)
    other.load_state_dict(state)
    assert not other.projection("pca").fitted
    with pytest.raises(ValueError, match="not a ViewBuilder state"):
        restored.load_state_dict({"epoch": 1})


def test_build_is_thread_safe():
    real, fake, _, _ = data()
    details = compute_prdc_details(real, fake, 5)
    expected = ViewBuilder(methods=("pca",)).build(real, fake, details)["pca"]
    views = ViewBuilder(methods=("pca",))
    results: list = []
    errors: list = []

    def worker() -> None:
        try:
            results.append(views.build(real, fake, details)["pca"])
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4 and views.calls == 4
    for fig in results:
        np.testing.assert_array_equal(figure_to_array(fig), figure_to_array(expected))


def test_constructor_errors():
    with pytest.raises(ValueError, match=r"unknown projection 'isomap'.*\['pca', 'tsne', 'umap'\]"):
        ViewBuilder(methods=("pca", "isomap"))
    with pytest.raises(ValueError, match="listed twice"):
        ViewBuilder(methods=("pca", "pca"))
    with pytest.raises(ValueError, match="at least one"):
        ViewBuilder(methods=())
    with pytest.raises(TypeError, match="sequence of names"):
        ViewBuilder(methods=(1, 2))
    with pytest.raises(ValueError, match=r"max_samples=5"):
        ViewBuilder(max_samples=5)
    with pytest.raises(TypeError, match=r"max_samples=2.5"):
        ViewBuilder(max_samples=2.5)
    with pytest.raises(ValueError, match=r"seed=-1"):
        ViewBuilder(seed=-1)
    with pytest.raises(TypeError, match="coverage_view"):
        ViewBuilder(coverage_view="yes")
    assert ViewBuilder(methods="pca, tsne").methods == ("pca", "tsne")


def test_build_errors():
    real, fake, rl, _ = data()
    details = compute_prdc_details(real, fake, 5)
    views = ViewBuilder(methods=("pca",))
    with pytest.raises(ValueError, match="computed on 240 real and 200 fake"):
        views.build(real[:100], fake, details)
    with pytest.raises(ValueError, match="same width"):
        views.build(real, fake[:, :5], details)
    with pytest.raises(ValueError, match="`real_labels` must have 240 entries"):
        views.build(real, fake, details, real_labels=rl[:10])
    with pytest.raises(TypeError, match=r"numpy\.ndarray"):
        views.build(real.tolist(), fake, details)


def test_sklearn_tsne_fallback_warns_and_still_draws():
    real, fake, _, _ = data(n=40, m=30, width=6)
    with pytest.warns(UserWarning, match=r"pip install lightning-embviz\[tsne\]"):
        views = ViewBuilder(methods=("tsne",), tsne_backend="sklearn")
    figures = views.build(real, fake, compute_prdc_details(real, fake, 5))
    assert sorted(figures) == ["tsne", "tsne_coverage"]
    assert len(figures["tsne"].axes[0].collections[0].get_offsets()) == 40


def test_half_and_bfloat16_tensors_are_accepted():
    real, fake, rl, _ = data(n=80, m=60)
    details = compute_prdc_details(real, fake, 5)
    expected = ViewBuilder(methods=("pca",)).build(real, fake, details)
    for dtype in (torch.bfloat16, torch.float16):
        r = torch.from_numpy(real).to(dtype)
        f = torch.from_numpy(fake).to(dtype)
        figures = ViewBuilder(methods=("pca",)).build(r, f, details, real_labels=torch.tensor(rl))
        assert sorted(figures) == ["class_metrics", "pca", "pca_classes", "pca_coverage"]
        offsets = figures["pca"].axes[0].collections[0].get_offsets()
        ref = expected["pca"].axes[0].collections[0].get_offsets()
        # Rounding to 8-11 bits moves the points a little, not the frame.
        assert np.abs(np.asarray(offsets) - np.asarray(ref)).max() < 0.2
