from __future__ import annotations

import io
import math
import subprocess
import sys
import threading

import matplotlib.image
import numpy as np
import pytest
import torch
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure

from lightning_embviz.plotting import (
    CLASS_COLORS,
    FAKE_COLOR,
    FAKE_OUTSIDE_COLOR,
    GALLERY_TILE,
    REAL_COLOR,
    class_metrics,
    class_metrics_figure,
    classes_figure,
    comparison_figure,
    coverage_figure,
    figure_to_array,
    figure_to_png,
    format_ratio,
    gallery_figure,
    metrics_title,
    missed_real_figure,
    outlier_fake_figure,
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


# --------------------------------------------------------------------------- galleries


def texts(fig: Figure) -> list[str]:
    """Figure-level texts (title lines, notes), then the texts on its axes (captions)."""
    return [t.get_text() for t in fig.texts] + [t.get_text() for a in fig.axes for t in a.texts]


def tiles(fig: Figure) -> list:
    return [image for ax in fig.axes for image in ax.get_images()]


def mask_near(img: np.ndarray, color, tol: float = 3.0) -> np.ndarray:
    return np.abs(img.astype(float) - np.asarray(color, dtype=float)).max(axis=-1) <= tol


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows, cols = np.nonzero(mask)
    return int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())


def solid_tiles(colors, size: int = 8) -> np.ndarray:
    """(B, 3, size, size) tiles, each one solid colour (values in [0, 1])."""
    return np.stack(
        [np.broadcast_to(np.array(c, float)[:, None, None], (3, size, size)) for c in colors]
    )


TILE_PX = round(GALLERY_TILE * 100)


def test_gallery_tiles_are_drawn_in_order_row_by_row():
    red, blue, green, grey = (1, 0, 0), (0, 0, 1), (0, 1, 0), (0.5, 0.5, 0.5)
    images = solid_tiles([red, blue] + [grey] * 6 + [green])
    captions = [f"c{i}" for i in range(9)]
    fig = gallery_figure(images, captions, "title line", columns=8)
    img = figure_to_array(fig)
    r, b, g = (bbox(mask_near(img, np.array(c) * 255)) for c in (red, blue, green))
    for top, bottom, left, right in (r, b, g):
        assert abs((bottom - top + 1) - TILE_PX) <= 2 and abs((right - left + 1) - TILE_PX) <= 2
    assert r[0] == b[0] and r[3] < b[2]  # same row, red left of blue
    assert g[0] > r[1] and g[2] == r[2]  # the 9th tile starts the second row, first column
    assert mask_near(img, (255, 0, 0)).sum() == pytest.approx(TILE_PX**2, rel=0.05)
    assert texts(fig)[0] == "title line"
    assert texts(fig)[-9:] == captions
    assert len(tiles(fig)) == 9


def test_gallery_width_is_fixed_by_columns_and_height_grows_with_rows():
    one = figure_to_array(gallery_figure(solid_tiles([(1, 0, 0)]), None, "t", columns=8))
    many = figure_to_array(gallery_figure(solid_tiles([(1, 0, 0)] * 20), None, "t", columns=8))
    four = figure_to_array(gallery_figure(solid_tiles([(1, 0, 0)] * 20), None, "t", columns=4))
    assert one.shape[1] == many.shape[1] > four.shape[1]
    assert many.shape[0] > one.shape[0]
    assert four.shape[0] > many.shape[0]
    assert mask_near(many, (255, 0, 0)).sum() == pytest.approx(20 * TILE_PX**2, rel=0.05)


def grey_levels(img: np.ndarray) -> dict[int, int]:
    """Pixel counts per grey level among pure grey pixels (R == G == B)."""
    flat = img.reshape(-1, 3).astype(int)
    grey = flat[(flat[:, 0] == flat[:, 1]) & (flat[:, 1] == flat[:, 2]), 0]
    values, counts = np.unique(grey, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def tile_count(levels: dict[int, int], level: int, tol: int = 1) -> int:
    return sum(n for v, n in levels.items() if abs(v - level) <= tol)


def test_gallery_scaling_is_joint_min_max_outside_unit_range():
    # Values in [-2, 10]: a tile at 10 (white), at -2 (black), at 4 (mid-grey, not
    # stretched to white on its own) and at 1 (a quarter).
    images = np.stack([np.full((6, 6), v) for v in (10.0, -2.0, 4.0, 1.0)])
    levels = grey_levels(figure_to_array(gallery_figure(images, None, "t")))
    assert tile_count(levels, 128) == pytest.approx(TILE_PX**2, rel=0.05)
    assert tile_count(levels, 64) == pytest.approx(TILE_PX**2, rel=0.05)
    # Values within [0, 1] are shown as they are, not stretched.
    unit = np.stack([np.full((1, 6, 6), 0.25), np.full((1, 6, 6), 0.5)])
    levels = grey_levels(figure_to_array(gallery_figure(unit, None, "t")))
    assert tile_count(levels, 64) == pytest.approx(TILE_PX**2, rel=0.05)
    assert tile_count(levels, 128) == pytest.approx(TILE_PX**2, rel=0.05)
    # uint8 images are divided by 255.
    eight = np.stack([np.full((6, 6), 64, np.uint8), np.full((6, 6), 255, np.uint8)])
    levels = grey_levels(figure_to_array(gallery_figure(eight, None, "t")))
    assert tile_count(levels, 64) == pytest.approx(TILE_PX**2, rel=0.05)


def test_gallery_scaling_joint_over_both_blocks_and_tanh_range():
    main = np.full((1, 1, 6, 6), -1.0)  # black
    contrast = np.full((1, 1, 6, 6), 0.0)  # mid-grey: scaled with the main block's -1 and 1
    contrast = np.concatenate([contrast, np.full((1, 1, 6, 6), 1.0)])
    fig = gallery_figure(main, ["a"], "t", contrast_images=contrast, contrast_captions=["b", "c"])
    levels = grey_levels(figure_to_array(fig))
    assert tile_count(levels, 128) == pytest.approx(TILE_PX**2, rel=0.05)
    assert tile_count(levels, 0, tol=0) >= TILE_PX**2
    assert len(tiles(fig)) == 3


def test_gallery_is_nan_and_inf_safe():
    images = np.stack([np.full((6, 6), np.nan), np.full((6, 6), np.inf), np.full((6, 6), 0.5)])
    images[2, 0, 0] = -np.inf
    levels = grey_levels(figure_to_array(gallery_figure(images, None, "t")))
    # NaN black, +inf white; the finite values (all 0.5) are shown as they are.
    assert tile_count(levels, 0, tol=0) >= TILE_PX**2
    assert tile_count(levels, 128) == pytest.approx(TILE_PX**2, rel=0.05)
    only_nan = gallery_figure(np.full((2, 3, 4, 4), np.nan), None, "t")
    assert figure_to_array(only_nan).shape[0] > 0


def test_gallery_large_and_non_square_images():
    rng = np.random.default_rng(0)
    big = rng.random((3, 3, 300, 150))
    img = figure_to_array(gallery_figure(big, ["a", "b", "c"], "t"))
    small = figure_to_array(gallery_figure(big[:, :, :8, :4], ["a", "b", "c"], "t"))
    assert img.shape == small.shape  # the tile box, not the image, sets the size
    # A tall image keeps its aspect ratio inside the square box.
    tall = np.zeros((1, 3, 20, 10))
    tall[:, 0] = 1.0
    top, bottom, left, right = bbox(
        mask_near(figure_to_array(gallery_figure(tall, None, "t")), (255, 0, 0))
    )
    assert abs((bottom - top + 1) - TILE_PX) <= 2
    assert abs((right - left + 1) - TILE_PX / 2) <= 2


def test_gallery_empty_draws_a_note_not_an_error():
    fig = gallery_figure(
        np.zeros((0, 3, 8, 8)), [], "missed", note_if_empty="no missed real samples"
    )
    assert tiles(fig) == []
    assert "no missed real samples" in texts(fig)
    img = figure_to_array(fig)
    assert img.shape[0] < 250 and (img < 128).any()
    assert "no missed real samples" in texts(
        gallery_figure(torch.zeros(0, 8, 8), None, "x", note_if_empty="no missed real samples")
    )


def test_gallery_class_counts_in_the_title():
    counts = {c: 20 - c for c in range(15)}
    counts[99] = 0
    fig = gallery_figure(
        solid_tiles([(1, 0, 0)]),
        ["x"],
        "t",
        class_counts=counts,
        class_counts_label="missed per class",
    )
    line = " ".join(" ".join(texts(fig)).split())  # wrapped lines joined
    assert "missed per class: 0: 20 · 1: 19 · 2: 18" in line
    assert "11: 9 · … 3 more (1 class with none)" in line
    fig = gallery_figure(solid_tiles([(1, 0, 0)]), ["x"], "t", class_counts={"cat": 0})
    assert "per class: none" in " ".join(texts(fig))


def test_gallery_accepts_tensors_and_grey_layouts():
    fig = gallery_figure(torch.rand(3, 1, 5, 5), ["a", "b", "c"], "t")
    assert len(tiles(fig)) == 3
    fig = gallery_figure(torch.rand(2, 5, 5, dtype=torch.float64).to(torch.bfloat16), None, "t")
    assert len(tiles(fig)) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"images": np.zeros((2, 2, 4, 4))},
            ValueError,
            r"\(B, C, H, W\) with C in \(1, 3\).*\(2, 2, 4, 4\)",
        ),
        ({"images": np.zeros((2, 4))}, ValueError, r"got \(2, 4\)"),
        ({"images": np.array([["a"]])}, TypeError, r"must hold numbers"),
        ({"captions": ["a"]}, ValueError, r"one caption per image \(2\), got 1"),
        ({"captions": "ab"}, TypeError, r"sequence of strings"),
        ({"columns": 0}, ValueError, r"`columns` must be None or an int >= 1, got 0"),
        (
            {"contrast_images": np.zeros((1, 4, 4)), "contrast_captions": []},
            ValueError,
            r"`contrast_captions` must have one caption per image \(1\)",
        ),
    ],
)
def test_gallery_bad_arguments(kwargs, error, match):
    arguments = {"images": np.zeros((2, 4, 4)), "captions": None, "title": "t"}
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        gallery_figure(
            arguments.pop("images"), arguments.pop("captions"), arguments.pop("title"), **arguments
        )


def test_format_ratio():
    assert format_ratio(1.8449) == "1.84×"
    assert format_ratio(12.34) == "12.3×"
    assert format_ratio(184.4) == "184×"
    assert format_ratio(float("inf")) == "r=0"
    assert format_ratio(float("nan")) == "nan"


def test_missed_real_figure_captions_title_and_frames():
    images = solid_tiles([(0.5, 0.5, 0.5)] * 3)
    fig = missed_real_figure(
        images,
        np.array([3.0, 2.5, 1.0]),
        num_missed=40,
        num_real=1000,
        indices=np.array([7, 3, 11]),
        labels=np.array([1, 1, 4]),
        class_counts={1: 30, 4: 10},
        nearest_k=5,
    )
    words = texts(fig)
    head = " ".join(words[0].split())  # the title may wrap
    assert head == "missed real samples: 40 of 1000 reals have no fake in their k-NN ball"
    assert "the 3 most clearly missed" in words[1] and "k=5" in words[1]
    assert "missed per class: 1: 30 · 4: 10" in words[1]
    assert words[-3:] == ["#7 [1]\n3.00×", "#3 [1]\n2.50×", "#11 [4]\n1.00×"]
    empty = missed_real_figure(np.zeros((0, 8, 8)), [], num_missed=0, num_real=10)
    assert tiles(empty) == [] and any("no missed real samples" in t for t in texts(empty))
    with pytest.raises(ValueError, match=r"`ratios` must have one value per image \(3\), got 2"):
        missed_real_figure(images, [1.0, 2.0], num_missed=3, num_real=9)
    with pytest.raises(ValueError, match=r"`indices` must have one entry per image \(3\), got 1"):
        missed_real_figure(images, [1.0, 2.0, 3.0], num_missed=3, num_real=9, indices=[1])


def test_outlier_fake_figure_with_a_contrast_row():
    images = solid_tiles([(1, 1, 1)] * 2)  # white tiles: the frames are the only colour
    deepest = solid_tiles([(1, 1, 1)] * 3)
    fig = outlier_fake_figure(
        images,
        [4.0, 1.5],
        num_outliers=2,
        num_fake=100,
        indices=[10, 20],
        deepest_images=deepest,
        deepest_counts=[9, 4, 1],
        deepest_indices=[1, 2, 3],
    )
    words = texts(fig)
    head = " ".join(words[0].split())  # the title may wrap
    assert head == "outlier fakes: 2 of 100 fakes lie outside every real k-NN ball"
    assert words[1].startswith("all, largest caption first")
    captions = [w for w in words if w.startswith("#")]
    assert captions == [
        "#10\n4.00×",
        "#20\n1.50×",
        "#1\nin 9 balls",
        "#2\nin 4 balls",
        "#3\nin 1 ball",
    ]
    assert any(w.startswith("for contrast") for w in words)
    assert len(tiles(fig)) == 5
    img = figure_to_array(fig)
    assert count_near(img, rgb(FAKE_OUTSIDE_COLOR), 30) > 2 * 4 * TILE_PX * 0.8
    assert count_near(img, rgb(FAKE_COLOR), 30) > 3 * 4 * TILE_PX * 0.8
    # No outliers: a note only, no contrast row.
    none = outlier_fake_figure(
        np.zeros((0, 3, 4, 4)),
        [],
        num_outliers=0,
        num_fake=100,
        deepest_images=deepest,
        deepest_counts=[9, 4, 1],
    )
    assert tiles(none) == [] and any("no outlier fakes" in t for t in texts(none))
    with pytest.raises(ValueError, match="`deepest_counts` is needed"):
        outlier_fake_figure(images, [4.0, 1.5], num_outliers=2, num_fake=9, deepest_images=deepest)
    with pytest.raises(ValueError, match=r"one value per deepest image \(3\), got 2"):
        outlier_fake_figure(
            images,
            [4.0, 1.5],
            num_outliers=2,
            num_fake=9,
            deepest_images=deepest,
            deepest_counts=[1, 2],
        )


def test_gallery_from_real_details_end_to_end():
    """Orders from samples.py feed the figure: the most missed real is the first tile."""
    from lightning_embviz import compute_prdc_details
    from lightning_embviz.samples import missed_real_order

    rng = np.random.default_rng(3)
    real = rng.normal(size=(60, 4))
    fake = rng.normal(size=(60, 4)) * 0.3
    details = compute_prdc_details(real, fake, nearest_k=3)
    order = missed_real_order(details)
    assert len(order) > 8
    shown = order[:8]
    # Image i is solid with brightness = its row / 60, so the tile reveals which row it is.
    images = (np.arange(60, dtype=float) / 59)[:, None, None, None] * np.ones((60, 1, 4, 4))
    fig = missed_real_figure(
        images[shown.numpy()],
        details.real_nearest_fake_ratio[shown],
        num_missed=len(order),
        num_real=60,
        indices=shown,
    )
    ratio = details.real_nearest_fake_ratio[shown].tolist()
    assert texts(fig)[-8:] == [f"#{i}\n{format_ratio(r)}" for i, r in zip(shown.tolist(), ratio)]


@pytest.mark.parametrize(("tiles", "least_px"), [(8, 7.5), (16, 5.5), (32, 4.2)])
def test_gallery_captions_readable_in_tensorboards_card(tiles, least_px):
    """TensorBoard 2.x shrinks an image into its card (about 303 x 240 px): the captions
    must stay readable there, and large at the image's actual size (old: 7 pt captions on an
    846 px wide figure, 9.7 px tall at actual size, 3.5 px in the card)."""
    from lightning_embviz.plotting import TENSORBOARD_CARD, missed_real_figure

    g = np.random.default_rng(0)
    fig = missed_real_figure(
        g.random((tiles, 3, 32, 32)),
        np.linspace(3.0, 1.0, tiles),
        num_missed=100,
        num_real=500,
        indices=np.arange(tiles) * 37,
        labels=np.arange(tiles) % 10,
        nearest_k=5,
    )
    height, width = figure_to_array(fig).shape[:2]
    captions = fig.axes[0].texts
    assert len(captions) == tiles
    caption_px = captions[0].get_fontsize() * fig.dpi / 72
    assert caption_px >= 14  # at actual size
    assert caption_px / width >= 1 / 70  # when the card's width decides
    shrink = min(TENSORBOARD_CARD[0] / width, TENSORBOARD_CARD[1] / height)
    assert caption_px * shrink >= least_px
    # captions fit their tile (no overlap with the neighbour's)
    renderer = fig.canvas.get_renderer()
    tile_px = 1.2 * fig.dpi
    assert max(t.get_window_extent(renderer).width for t in captions) <= tile_px + 8


def test_gallery_columns_fit_tensorboards_card():
    from lightning_embviz.plotting import gallery_columns

    assert gallery_columns(4) == 4 and gallery_columns(8) == 4
    assert gallery_columns(32, 8) == 8
    assert all(2 <= gallery_columns(n, 8) <= 8 for n in range(0, 65))


# --------------------------------------------------------------------------- layout


def test_plotting_reexports_the_figures_modules():
    """`lightning_embviz.plotting` is the public path; the code lives in figures/."""
    import lightning_embviz.plotting as public
    from lightning_embviz.figures import (
        galleries,
        per_class,
        plots,
        rendering,
        sample_galleries,
        style,
    )

    homes = (galleries, per_class, plots, rendering, sample_galleries, style)
    for name in public.__all__:
        owners = [m for m in homes if name in m.__all__]
        assert len(owners) == 1, name
        assert getattr(public, name) is getattr(owners[0], name)


def test_class_metrics_goes_through_per_class_prdc(monkeypatch):
    """One place for the per-class arithmetic: class_metrics adapts arrays to per_class_prdc."""
    from lightning_embviz import compute_prdc_details
    from lightning_embviz.figures import per_class
    from lightning_embviz.metrics import per_class_prdc

    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(60, 4)), rng.normal(size=(50, 4)) + 0.5
    rl, fl = np.arange(60) % 3, np.arange(50) % 4
    d = compute_prdc_details(real, fake, nearest_k=3)
    calls = []

    def spy(*args, **kwargs):
        calls.append(args)
        return per_class_prdc(*args, **kwargs)

    monkeypatch.setattr(per_class, "per_class_prdc", spy)
    full = class_metrics(rl, d.real_covered, d.real_recalled, fl, d.fake_ball_count, 3)
    assert len(calls) == 1 and repr(full) == repr(per_class_prdc(d, rl, fl))
    assert list(full) == [0, 1, 2, 3] and math.isnan(full[3]["coverage"])
    # Without real_recalled there is no recall; without fake labels no precision/density.
    short = class_metrics(torch.as_tensor(rl), d.real_covered)
    assert short == {
        c: {"num_real": row["num_real"], "coverage": row["coverage"]}
        for c, row in per_class_prdc(d, rl).items()
    }
    no_k = class_metrics(rl, d.real_covered, None, fl, d.fake_ball_count)
    assert "density" not in no_k[0] and "recall" not in no_k[0] and "precision" in no_k[0]
    with pytest.raises(ValueError, match=r"`real_covered` must have 60 entries, got 59"):
        class_metrics(rl, d.real_covered[:59])
    with pytest.raises(ValueError, match="`fake_ball_count` must have one entry per fake label"):
        class_metrics(rl, d.real_covered, fake_labels=fl)
    with pytest.raises(ValueError, match="`fake_ball_count` must have one entry per fake label"):
        class_metrics(rl, d.real_covered, fake_labels=fl, fake_ball_count=d.fake_ball_count[:3])
