from __future__ import annotations

import io
import subprocess
import sys
import threading
import time

import matplotlib.image
import numpy as np
import pytest
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure

from lightning_embviz.plotting import (
    CLASS_COLORS,
    FAKE_COLOR,
    FAKE_OUTSIDE_COLOR,
    REAL_COLOR,
    class_metrics,
    class_metrics_figure,
    classes_figure,
    comparison_figure,
    coverage_figure,
    figure_to_array,
    figure_to_png,
    metrics_title,
    projection_figure,
)

METRICS = {"precision": 0.81, "recall": 0.74, "density": 0.95, "coverage": 0.8}


def rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def count_near(img: np.ndarray, color: np.ndarray, tol: float = 12.0) -> int:
    return int((np.abs(img.astype(float) - color).max(axis=-1) <= tol).sum())


def blended(hex_color: str, alpha: float) -> np.ndarray:
    return alpha * rgb(hex_color) + (1 - alpha) * 255.0


def two_sets(n: int = 300, m: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + np.array([3.0, 0.0])


def suptitle(fig: Figure) -> str:
    return fig._suptitle.get_text() if fig._suptitle is not None else ""


def test_figure_to_png_and_array_agree_and_have_the_figure_size():
    real, fake = two_sets()
    fig = projection_figure(real, fake, metrics=METRICS, nearest_k=5, method="pca")
    png = figure_to_png(fig)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    decoded = matplotlib.image.imread(io.BytesIO(png), format="png")
    arr = figure_to_array(fig)
    assert arr.dtype == np.uint8 and arr.shape == (560, 640, 3)
    assert decoded.shape[:2] == arr.shape[:2]
    # Not blank: many distinct colours, and far from all white.
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 50
    assert (arr < 200).any(axis=-1).mean() > 0.02


def test_projection_figure_draws_real_and_fake_colours_and_title():
    real, fake = two_sets()
    fig = projection_figure(
        real, fake, metrics=METRICS, nearest_k=7, method="tsne", title="epoch 3"
    )
    img = figure_to_array(fig)
    assert count_near(img, blended(REAL_COLOR, 0.6)) > 200
    assert count_near(img, blended(FAKE_COLOR, 0.6)) > 200
    text = suptitle(fig)
    for part in ("epoch 3", "precision 0.81", "recall 0.74", "density 0.95", "coverage 0.80"):
        assert part in text
    assert "k=7" in text
    assert fig.axes[0].get_xlabel() == "t-SNE 1"


def test_projection_figure_highlights_outside_fakes_and_missed_reals():
    real, fake = two_sets()
    all_in = projection_figure(
        real, fake, real_covered=np.ones(300, bool), fake_in_real_manifold=np.ones(300, bool)
    )
    outside = np.zeros(300, bool)
    outside[:100] = True  # 200 fakes outside every real ball
    missed = np.ones(300, bool)
    missed[:150] = False  # 150 reals not covered
    marked = projection_figure(real, fake, real_covered=missed, fake_in_real_manifold=outside)
    img_all, img_marked = figure_to_array(all_in), figure_to_array(marked)
    vermillion = blended(FAKE_OUTSIDE_COLOR, 0.85)
    assert count_near(img_all, vermillion, 15) == 0
    assert count_near(img_marked, vermillion, 15) > 100
    dark_all = (img_all.max(axis=-1) < 60).sum()
    dark_marked = (img_marked.max(axis=-1) < 60).sum()
    assert dark_marked > dark_all + 300  # the black rings around missed reals
    labels = [t.get_text() for t in marked.axes[0].get_legend().get_texts()]
    assert "fake outside every real ball (200)" in labels
    assert "missed: real not covered (150)" in labels


def test_coverage_figure_one_collection_scaled_radii_and_note():
    real, fake = two_sets(200, 100)
    radii = np.linspace(1.0, 3.0, 200)
    covered = np.arange(200) % 4 != 0
    fig = coverage_figure(
        real, fake, radii, real_covered=covered, metrics=METRICS, nearest_k=5, method="pca"
    )
    ax = fig.axes[0]
    ellipses = [c for c in ax.collections if isinstance(c, EllipseCollection)]
    assert len(ellipses) == 1
    widths = ellipses[0]._widths
    assert len(widths) == 200
    # Drawn sizes keep the ratios of the original radii.
    np.testing.assert_allclose(widths / widths[0], radii / radii[0], rtol=1e-6)
    notes = " ".join(t.get_text() for t in ax.texts)
    assert "original space" in notes and "scaled" in notes
    img = figure_to_array(fig)
    assert count_near(img, rgb(FAKE_COLOR), 40) > 50
    assert "coverage 0.80" in suptitle(fig)


def test_classes_figure_colours_each_class():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 2))
    fake = rng.normal(size=(300, 2))
    labels = np.arange(300) % 3
    fig = classes_figure(real, fake, labels, labels[::-1].copy(), method="pca")
    img = figure_to_array(fig)
    for color in CLASS_COLORS[:3]:
        assert count_near(img, blended(color, 0.75), 12) > 50
    assert count_near(img, blended(CLASS_COLORS[3], 0.75), 6) == 0
    legend_text = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend_text == ["0", "1", "2"]
    # Without fake labels the fakes are orange over grey reals.
    plain = figure_to_array(classes_figure(real, fake, labels))
    assert count_near(plain, blended(FAKE_COLOR, 0.7), 12) > 50


def test_class_metrics_values():
    real_labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    covered = np.array([1, 1, 0, 0, 0, 0, 1, 1], bool)
    recalled = np.array([1, 0, 0, 0, 1, 1, 1, 0], bool)
    fake_labels = np.array([0, 0, 1, 2, 2, 2])
    counts = np.array([2, 0, 0, 5, 1, 0])
    out = class_metrics(real_labels, covered, recalled, fake_labels, counts, 5)
    assert list(out) == [0, 1, 2]
    assert out[0]["coverage"] == 0.5 and out[1]["coverage"] == 0.0 and out[2]["coverage"] == 1.0
    assert out[0]["recall"] == 0.25 and out[1]["recall"] == 1.0 and out[2]["recall"] == 0.5
    assert out[0]["precision"] == 0.5 and out[1]["precision"] == 0.0
    assert out[2]["precision"] == pytest.approx(2 / 3)
    assert out[2]["density"] == pytest.approx(6 / 3 / 5)
    assert out[0]["num_real"] == 4 and out[2]["num_fake"] == 3
    only_real = class_metrics(real_labels, covered)
    assert set(only_real[0]) == {"num_real", "coverage"}


def test_class_metrics_figure_has_one_bar_per_class_and_metric():
    per_class = {
        c: {"coverage": 0.2 * c, "recall": 0.5, "precision": 0.9, "density": 1.2} for c in range(4)
    }
    fig = class_metrics_figure(per_class, title="epoch 1")
    ax = fig.axes[0]
    assert len(ax.patches) == 16
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights[0] == 0.0 and heights[-1] == pytest.approx(1.2)
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    assert "epoch 1" in suptitle(fig)


def test_comparison_figure_panels_share_axes_and_titles():
    real, fake = two_sets(200, 150)
    fig = comparison_figure(
        real,
        [fake, fake * 0.5, fake + 1],
        ["ep10", "ep20", "ep30"],
        metrics=[METRICS, METRICS, {"precision": 0.1}],
        nearest_k=5,
        method="pca",
    )
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 3
    assert visible[0].get_xlim() == visible[2].get_xlim()
    assert visible[2].get_title().startswith("ep30\nprecision 0.10")
    assert figure_to_array(fig).shape[1] > 1000
    with pytest.raises(ValueError, match="one name per fake set"):
        comparison_figure(real, [fake], ["a", "b"])


def test_metrics_title_format():
    assert metrics_title({**METRICS, "fd": 12.3456}, 3) == (
        "precision 0.81 · recall 0.74 · density 0.95 · coverage 0.80 · FD 12.3 · k=3"
    )
    assert metrics_title(None) == ""


def test_bad_shapes_raise():
    real, fake = two_sets(10, 10)
    with pytest.raises(ValueError, match=r"`real_2d` must have shape \(N, 2\)"):
        projection_figure(np.zeros((10, 3)), fake)
    with pytest.raises(ValueError, match="`real_covered` must have 10 entries"):
        projection_figure(real, fake, real_covered=np.ones(9, bool))
    with pytest.raises(ValueError, match="`real_radii` must have 10 entries"):
        coverage_figure(real, fake, np.ones(3))
    with pytest.raises(ValueError, match="`real_labels` must have 10 entries"):
        classes_figure(real, fake, np.zeros(4))


def test_20000_points_render_well_under_a_second():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(10_000, 2)), rng.normal(size=(10_000, 2)) + 1
    covered = rng.random(10_000) > 0.2
    inside = rng.random(10_000) > 0.2
    projection_figure(real[:10], fake[:10])  # warm caches (fonts)
    best = np.inf
    for _ in range(2):
        start = time.perf_counter()
        figure_to_png(
            projection_figure(
                real, fake, real_covered=covered, fake_in_real_manifold=inside, metrics=METRICS
            )
        )
        best = min(best, time.perf_counter() - start)
    assert best < 1.0, f"20 000 points took {best:.2f} s"


def test_figures_built_in_threads_equal_sequential_ones():
    real, fake = two_sets(400, 400)
    radii = np.linspace(0.5, 1.5, 400)

    def draw(i: int) -> bytes:
        return figure_to_png(coverage_figure(real + i, fake + i, radii, nearest_k=5))

    expected = [draw(i) for i in range(4)]
    results: dict[int, bytes] = {}

    def worker(i: int) -> None:
        results[i] = draw(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [results[i] for i in range(4)] == expected


def test_library_never_imports_pyplot():
    code = (
        "import sys, numpy as np\n"
        "import lightning_embviz.plotting as p, lightning_embviz.views, lightning_embviz.cli\n"
        "p.figure_to_png(p.projection_figure(np.zeros((3, 2)), np.ones((3, 2))))\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
