"""Sample selection and per-sample tables, checked against the reference prdc package."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from prdc.prdc import compute_nearest_neighbour_distances, compute_pairwise_distance

from lightning_embviz import compute_prdc_details
from lightning_embviz.samples import (
    FAKE_COLUMNS,
    REAL_COLUMNS,
    deepest_fake_order,
    markdown_summary,
    missed_per_class,
    missed_real_order,
    outlier_fake_order,
    sample_tables,
    write_csv,
)

# --------------------------------------------------------------------------- helpers


def reference(real: np.ndarray, fake: np.ndarray, k: int) -> SimpleNamespace:
    """The reference package's own distances and indicators (N x M, fine at test sizes)."""
    radii = compute_nearest_neighbour_distances(real, k)
    dist = compute_pairwise_distance(real, fake)
    inside = dist < radii[:, None]
    nearest = dist.min(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = nearest / radii
        ball_ratio = (dist / radii[:, None]).min(axis=0)
    return SimpleNamespace(
        radii=radii,
        covered=nearest < radii,
        counts=inside.sum(axis=0),
        nearest=nearest,
        ratio=ratio,
        ball_ratio=ball_ratio,
    )


def desc_key(value: float) -> tuple[int, float]:
    """Independent statement of the documented rule: finite (largest first), +inf, NaN."""
    if math.isnan(value):
        return (2, 0.0)
    if math.isinf(value):
        return (1, 0.0)
    return (0, -value)


def hand_made(**fields) -> SimpleNamespace:
    """A PRDCResult-like object with only what samples.py reads."""
    out = {k: torch.as_tensor(v) for k, v in fields.items()}
    out.setdefault("nearest_k", 3)
    return SimpleNamespace(**out)


def tricky_sets():
    rng = np.random.default_rng(7)
    grid_real = rng.integers(0, 4, size=(60, 2)).astype(np.float32)  # exact ties, duplicates
    grid_fake = rng.integers(0, 5, size=(50, 2)).astype(np.float32)
    cont_real = rng.normal(size=(80, 6))
    cont_fake = np.concatenate([rng.normal(size=(40, 6)) + 2.5, cont_real[:30]])  # shared rows
    dup_real = np.repeat(rng.normal(size=(15, 3)), 3, axis=0)  # every row thrice: radius 0
    dup_fake = np.concatenate([dup_real[::3] + 0.01, rng.normal(size=(10, 3))])
    far = rng.normal(size=(70, 4)) + 1e4  # far from the origin
    far_fake = far[:35] + rng.normal(size=(35, 4)) * 0.5
    return [
        ("grid", grid_real, grid_fake, 3),
        ("shared_rows", cont_real, cont_fake, 5),
        ("duplicates", dup_real, dup_fake, 2),
        ("far", far, far_fake, 4),
    ]


TRICKY = tricky_sets()


def details_for(real, fake, k):
    return compute_prdc_details(real, fake, nearest_k=k)


# --------------------------------------------------------------------------- orders


@pytest.mark.parametrize(("name", "real", "fake", "k"), TRICKY, ids=[t[0] for t in TRICKY])
def test_missed_reals_are_exactly_the_references_uncovered(name, real, fake, k):
    ref = reference(real, fake, k)
    details = details_for(real, fake, k)
    order = missed_real_order(details)
    assert order.dtype == torch.int64
    assert sorted(order.tolist()) == np.flatnonzero(~ref.covered).tolist()
    ratio = details.real_nearest_fake_ratio.double().numpy()
    distance = details.real_nearest_fake_distance.double().numpy()
    expected = sorted(
        np.flatnonzero(~ref.covered).tolist(),
        key=lambda i: (*desc_key(ratio[i]), -distance[i], i),
    )
    assert order.tolist() == expected
    # Consistent with the indicator: a missed real is at least one radius from every fake.
    radii = ref.radii[order.numpy()]
    assert np.all((ratio[order.numpy()] >= 1) | (radii == 0))


@pytest.mark.parametrize(("name", "real", "fake", "k"), TRICKY, ids=[t[0] for t in TRICKY])
def test_outlier_and_deepest_fakes_agree_with_the_reference(name, real, fake, k):
    ref = reference(real, fake, k)
    details = details_for(real, fake, k)
    ratio = details.fake_nearest_ball_ratio.double().numpy()
    outliers = outlier_fake_order(details).tolist()
    expected_out = sorted(
        np.flatnonzero(ref.counts == 0).tolist(), key=lambda j: (*desc_key(ratio[j]), j)
    )
    assert outliers == expected_out
    deepest = deepest_fake_order(details).tolist()
    expected_deep = sorted(
        np.flatnonzero(ref.counts > 0).tolist(), key=lambda j: (-ref.counts[j], ratio[j], j)
    )
    assert deepest == expected_deep
    assert sorted(outliers + deepest) == list(range(len(fake)))


def test_the_tricky_inputs_are_tricky():
    """The cases above exercise what they claim: ties, radius-0 balls, both kinds of misses."""
    grid = reference(*TRICKY[0][1:])
    dup = reference(*TRICKY[2][1:])
    assert (~grid.covered).any() and (grid.counts == 0).any() and (grid.counts > 0).any()
    nearest_is_radius = np.isclose(grid.nearest, grid.radii) & ~grid.covered
    assert nearest_is_radius.any()  # a fake exactly on the ball's edge: not covered (strict)
    # Every real has two exact duplicates: balls of radius 0 (the reference's float64
    # arithmetic leaves a few at ~1e-8), which no fake at distance 0.01 can be inside.
    assert (dup.radii < 1e-6).all() and (dup.radii == 0).any() and (~dup.covered).all()
    engine = details_for(*TRICKY[2][1:])
    assert (engine.real_radii == 0).any()


def test_orders_break_ties_and_place_inf_and_nan_by_the_documented_rule():
    details = hand_made(
        real_radii=[1.0, 1.0, 0.0, 1.0, 1.0, 0.0, 2.0],
        real_covered=[False, False, False, True, False, False, False],
        real_recalled=[True] * 7,
        real_nearest_fake_distance=[2.0, 3.0, 1.0, 0.5, 2.0, 0.0, 6.0],
        real_nearest_fake_ratio=[2.0, 3.0, math.inf, 0.5, 2.0, math.nan, 3.0],
        fake_ball_count=[0, 2, 0, 5, 2, 0, 0],
        fake_nearest_ball_ratio=[1.5, 0.2, math.inf, 0.1, 0.1, 1.5, 7.0],
    )
    # Equal ratio 3.0: larger distance first (6 before 1); equal ratio and distance: row order.
    assert missed_real_order(details).tolist() == [6, 1, 0, 4, 2, 5]
    assert outlier_fake_order(details).tolist() == [6, 0, 5, 2]
    assert deepest_fake_order(details).tolist() == [3, 4, 1]


def test_selection_follows_the_indicators_not_the_ratios():
    """The engine's indicator decides membership; the ratio only sorts."""
    details = hand_made(
        real_radii=[1.0, 1.0],
        real_covered=[False, True],
        real_recalled=[False, False],
        real_nearest_fake_distance=[0.999, 5.0],
        real_nearest_fake_ratio=[0.999, 5.0],
        fake_ball_count=[1, 0],
        fake_nearest_ball_ratio=[3.0, 0.5],
    )
    assert missed_real_order(details).tolist() == [0]
    assert outlier_fake_order(details).tolist() == [1]
    assert deepest_fake_order(details).tolist() == [0]


def test_orders_are_empty_when_nothing_is_missed():
    real = np.random.default_rng(0).normal(size=(40, 3))
    details = details_for(real, real.copy(), 3)
    assert missed_real_order(details).tolist() == []
    assert outlier_fake_order(details).tolist() == []
    assert len(deepest_fake_order(details)) == 40


def test_orders_refuse_something_else_than_details():
    with pytest.raises(
        TypeError, match=r"`details` has no `real_covered` \(got a dict\).*compute_prdc_details"
    ):
        missed_real_order({"real_covered": [True]})
    bad = hand_made(
        real_covered=[True, False],
        real_nearest_fake_ratio=[1.0],
        real_nearest_fake_distance=[1.0, 2.0],
    )
    with pytest.raises(ValueError, match=r"`details.real_nearest_fake_ratio` has 1 entries"):
        missed_real_order(bad)


def test_missed_per_class_counts_uncovered_reals():
    real, fake, k = TRICKY[1][1:]
    details = details_for(real, fake, k)
    labels = np.arange(len(real)) % 4
    counts = missed_per_class(details, labels)
    covered = reference(real, fake, k).covered
    expected = {c: int((~covered[labels == c]).sum()) for c in range(4)}
    assert counts == expected
    assert list(counts.values()) == sorted(expected.values(), reverse=True)
    with pytest.raises(ValueError, match=r"`real_labels` must hold one label per sample"):
        missed_per_class(details, labels[:-1])


def test_missed_per_class_with_text_labels_keeps_zero_classes():
    details = hand_made(real_covered=[False, True, False, True, True])
    counts = missed_per_class(details, ["cat", "dog", "cat", "owl", "dog"])
    assert counts == {"cat": 2, "dog": 0, "owl": 0}
    assert list(counts) == ["cat", "dog", "owl"]


# --------------------------------------------------------------------------- tables


def test_sample_tables_columns_follow_the_engine():
    real, fake, k = TRICKY[0][1:]
    details = details_for(real, fake, k)
    ref = reference(real, fake, k)
    real_index = np.arange(len(real)) * 10 + 3
    real_rows, fake_rows = sample_tables(
        details, real_index, torch.arange(len(fake)), real_labels=np.arange(len(real)) % 3
    )
    assert tuple(real_rows) == REAL_COLUMNS
    assert tuple(fake_rows) == tuple(c for c in FAKE_COLUMNS if c != "label")
    np.testing.assert_array_equal(real_rows["index"], real_index)
    np.testing.assert_array_equal(real_rows["covered"], ref.covered)
    np.testing.assert_allclose(real_rows["radius"], ref.radii, rtol=1e-6)
    np.testing.assert_allclose(real_rows["nearest_fake_distance"], ref.nearest, rtol=1e-6)
    np.testing.assert_array_equal(real_rows["recalled"], details.real_recalled.numpy())
    np.testing.assert_array_equal(fake_rows["ball_count"], ref.counts)
    np.testing.assert_array_equal(fake_rows["inside_real_manifold"], ref.counts > 0)
    assert real_rows["index"].dtype == np.int64 and fake_rows["ball_count"].dtype == np.int64
    assert real_rows["covered"].dtype == bool


def test_sample_tables_without_indices_count_rows():
    details = hand_made(
        real_radii=[1.0, 2.0],
        real_covered=[True, False],
        real_recalled=[True, False],
        real_nearest_fake_distance=[0.5, 3.0],
        real_nearest_fake_ratio=[0.5, 1.5],
        fake_ball_count=[1, 0, 2],
        fake_nearest_ball_ratio=[0.3, 2.0, 0.1],
    )
    real_rows, fake_rows = sample_tables(details, fake_labels=["a", "b", "c"])
    assert real_rows["index"].tolist() == [0, 1]
    assert fake_rows["index"].tolist() == [0, 1, 2]
    assert fake_rows["label"].tolist() == ["a", "b", "c"]
    assert "label" not in real_rows
    # Whole-number float indices are accepted as ints.
    real_rows, _ = sample_tables(details, np.array([4.0, 9.0]))
    assert real_rows["index"].tolist() == [4, 9] and real_rows["index"].dtype == np.int64


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"real_index": np.arange(3)}, ValueError, r"`real_index` must hold one index per sample"),
        ({"fake_index": np.arange(2)}, ValueError, r"`fake_index` must hold one index per sample"),
        ({"real_index": np.array([0.5, 1.0])}, TypeError, r"integer sample indices"),
        ({"real_labels": [1]}, ValueError, r"`real_labels` must hold one label per sample"),
        ({"fake_labels": np.zeros((3, 2))}, ValueError, r"`fake_labels` must hold one label"),
    ],
)
def test_sample_tables_bad_arguments(kwargs, error, match):
    details = hand_made(
        real_radii=[1.0, 2.0],
        real_covered=[True, False],
        real_recalled=[True, False],
        real_nearest_fake_distance=[0.5, 3.0],
        real_nearest_fake_ratio=[0.5, 1.5],
        fake_ball_count=[1, 0, 2],
        fake_nearest_ball_ratio=[0.3, 2.0, 0.1],
    )
    with pytest.raises(error, match=match):
        sample_tables(details, **kwargs)


def test_write_csv_reads_back_in_pandas_with_dtypes(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = {
        "index": np.array([5, 7, 9], dtype=np.int64),
        "label": np.array(["cat", "a,b", 'say "hi"']),
        "radius": np.array([0.1, 1e-30, 3.5], dtype=np.float32),
        "nearest_fake_ratio": np.array([1.0 / 3.0, math.inf, math.nan]),
        "covered": np.array([True, False, True]),
    }
    path = tmp_path / "deep" / "samples.csv"
    write_csv(rows, path)
    assert path.read_text().splitlines()[0] == "index,label,radius,nearest_fake_ratio,covered"
    frame = pd.read_csv(path)
    assert list(frame.columns) == list(rows)
    assert frame["index"].dtype == np.int64
    assert frame["covered"].dtype == bool
    assert frame["radius"].dtype == np.float64
    assert frame["label"].tolist() == ["cat", "a,b", 'say "hi"']
    assert frame["index"].tolist() == [5, 7, 9]
    assert frame["covered"].tolist() == [True, False, True]
    # float32 values are written in their shortest form and read back to the same float32.
    np.testing.assert_array_equal(frame["radius"].to_numpy().astype(np.float32), rows["radius"])
    ratio = frame["nearest_fake_ratio"].to_numpy()
    assert ratio[0] == 1.0 / 3.0 and ratio[1] == math.inf and math.isnan(ratio[2])


def test_sample_tables_written_and_read_back(tmp_path):
    pd = pytest.importorskip("pandas")
    real, fake, k = TRICKY[1][1:]
    details = details_for(real, fake, k)
    real_rows, fake_rows = sample_tables(details, fake_labels=np.arange(len(fake)) % 2)
    write_csv(real_rows, tmp_path / "real.csv")
    write_csv(fake_rows, tmp_path / "fake.csv")
    real_frame = pd.read_csv(tmp_path / "real.csv")
    fake_frame = pd.read_csv(tmp_path / "fake.csv")
    assert list(real_frame.columns) == list(real_rows)
    assert list(fake_frame.columns) == list(fake_rows)
    for column, values in real_rows.items():
        np.testing.assert_array_equal(real_frame[column].to_numpy(), values)
    for column, values in fake_rows.items():
        np.testing.assert_array_equal(fake_frame[column].to_numpy(), values)
    assert fake_frame["label"].dtype == np.int64
    # A user's query: the missed reals are those not covered.
    missed = real_frame.loc[~real_frame["covered"], "index"].tolist()
    assert sorted(missed) == sorted(missed_real_order(details).tolist())


@pytest.mark.parametrize(
    ("rows", "match"),
    [
        ({}, r"non-empty mapping"),
        ({"a": np.zeros((2, 2))}, r"`rows\['a'\]` must be 1-D"),
        ({"a": np.zeros(2), "b": np.zeros(3)}, r"'a' has 2 values, 'b' has 3"),
    ],
)
def test_write_csv_bad_tables(tmp_path, rows, match):
    with pytest.raises(ValueError, match=match):
        write_csv(rows, tmp_path / "x.csv")
    assert not (tmp_path / "x.csv").exists()


# --------------------------------------------------------------------------- markdown


def test_markdown_summary_lists_the_most_missed_and_worst_in_order():
    real, fake, k = TRICKY[1][1:]
    details = details_for(real, fake, k)
    real_index = np.arange(len(real)) + 1000
    fake_index = np.arange(len(fake)) + 5000
    real_rows, fake_rows = sample_tables(details, real_index, fake_index)
    text = markdown_summary(real_rows, fake_rows, n=4)
    missed = missed_real_order(details).numpy()
    outliers = outlier_fake_order(details).numpy()
    assert len(missed) > 4 and len(outliers) > 4
    assert f"{len(missed)} of {len(real)}" in text
    assert f"{len(outliers)} of {len(fake)}" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| ")]
    first_cells = [line.split("|")[1].strip() for line in table_rows]
    expected = (
        ["index"]
        + [str(real_index[i]) for i in missed[:4]]
        + ["index"]
        + [str(fake_index[j]) for j in outliers[:4]]
    )
    assert first_cells == expected
    ratio = details.real_nearest_fake_ratio.double().numpy()[missed[0]]
    assert f"{ratio:.2f}×" in table_rows[1]


def test_markdown_summary_with_nothing_missed_and_labels():
    details = hand_made(
        real_radii=[1.0, 2.0],
        real_covered=[True, True],
        real_recalled=[True, False],
        real_nearest_fake_distance=[0.5, 1.0],
        real_nearest_fake_ratio=[0.5, 0.5],
        fake_ball_count=[0, 2],
        fake_nearest_ball_ratio=[math.inf, 0.1],
    )
    real_rows, fake_rows = sample_tables(details, fake_labels=["x|y", "z"])
    text = markdown_summary(real_rows, fake_rows)
    assert "0 of 2 have no fake" in text
    assert "| index | label | distance / nearest ball radius |" in text
    assert "| 0 | x\\|y | inf (radius 0) |" in text
    assert text.count("| index") == 1


@pytest.mark.parametrize("n", [0, -1, 2.5, True])
def test_markdown_summary_bad_n(n):
    with pytest.raises(ValueError, match=r"`n` must be an int >= 1"):
        markdown_summary({"index": [0]}, {"index": [0]}, n=n)


def test_markdown_summary_needs_the_table_columns():
    with pytest.raises(ValueError, match=r"`real_rows` lacks column\(s\) \['covered'"):
        markdown_summary({"index": np.arange(2)}, {"index": np.arange(2)})
