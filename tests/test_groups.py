"""Per-group scores against the reference ``prdc`` package's per-sample results."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
from prdc import prdc as prdc_ref

from lightning_embviz import compute_prdc, compute_prdc_details
from lightning_embviz.engine.groups import (
    GROUP_COLUMNS,
    GroupScore,
    group_scores_from_details,
    per_group_scores,
    write_group_csv,
)

K = 3


def _sets(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Real: 4 "songs" as 4 clusters; fake: the generator only makes songs 0 and 1, plus an
    # off-manifold prompt "z".
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(4, 6))
    real_groups = np.repeat(np.arange(4), 30)
    real = (centres[real_groups] + rng.normal(size=(120, 6))).astype(np.float32)
    fake_groups = np.array(["a"] * 40 + ["b"] * 40 + ["z"] * 20)
    fake_centres = np.concatenate([np.repeat(centres[:1], 40, 0), np.repeat(centres[1:2], 40, 0)])
    fake = np.concatenate([fake_centres, np.full((20, 6), 30.0)]) + rng.normal(size=(100, 6))
    return real, fake.astype(np.float32), real_groups, fake_groups


def _reference_per_sample(real: np.ndarray, fake: np.ndarray, k: int) -> dict[str, np.ndarray]:
    real_radii = prdc_ref.compute_nearest_neighbour_distances(real, k)
    fake_radii = prdc_ref.compute_nearest_neighbour_distances(fake, k)
    d = prdc_ref.compute_pairwise_distance(real, fake)
    return {
        "covered": d.min(axis=1) < real_radii,
        "recalled": (d < fake_radii[None, :]).any(axis=1),
        "ball_count": (d < real_radii[:, None]).sum(axis=0),
    }


def _reference_fd(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(ca @ cb).real
    diff = a.mean(0) - b.mean(0)
    return float(diff @ diff + np.trace(ca) + np.trace(cb) - 2 * np.trace(root))


def test_values_equal_reference_restricted_to_each_group() -> None:
    real, fake, real_groups, fake_groups = _sets()
    rows = per_group_scores(real, fake, real_groups, fake_groups, nearest_k=K)
    ref = _reference_per_sample(real, fake, K)
    by_key = {(r.side, r.group): r for r in rows}
    assert sorted(by_key) == [("fake", "a"), ("fake", "b"), ("fake", "z")] + [
        ("real", g) for g in range(4)
    ]
    for g in range(4):
        mask = real_groups == g
        row = by_key[("real", g)]
        assert row.count == 30
        assert row.coverage == float(ref["covered"][mask].mean())
        assert row.recall == float(ref["recalled"][mask].mean())
        assert math.isnan(row.precision) and math.isnan(row.density) and math.isnan(row.fd)
    for g in ("a", "b", "z"):
        mask = fake_groups == g
        row = by_key[("fake", g)]
        assert row.count == int(mask.sum())
        assert row.precision == float((ref["ball_count"][mask] > 0).mean())
        assert row.density == pytest.approx(ref["ball_count"][mask].mean() / K, rel=1e-12)
        assert row.fd == pytest.approx(_reference_fd(real, fake[mask]), rel=1e-6)
        assert math.isnan(row.coverage) and math.isnan(row.recall)
    # The generator skipped songs 2 and 3 and made an off-manifold prompt.
    assert by_key[("real", 2)].coverage == 0.0 and by_key[("real", 3)].coverage == 0.0
    assert by_key[("real", 0)].coverage > 0.5
    assert by_key[("fake", "z")].precision == 0.0


def test_group_means_weighted_by_count_give_the_set_values() -> None:
    real, fake, real_groups, fake_groups = _sets(1)
    rows = per_group_scores(real, fake, real_groups, fake_groups, nearest_k=K)
    whole = compute_prdc(real, fake, nearest_k=K)
    for side, key in (("real", "coverage"), ("real", "recall"), ("fake", "precision")):
        part = [r for r in rows if r.side == side]
        mean = sum(r.count * getattr(r, key) for r in part) / sum(r.count for r in part)
        assert mean == pytest.approx(whole[key], abs=1e-12)


def test_worst_first_order() -> None:
    real, fake, real_groups, fake_groups = _sets()
    rows = per_group_scores(real, fake, real_groups, fake_groups, nearest_k=K)
    sides = [r.side for r in rows]
    assert sides == ["real"] * 4 + ["fake"] * 3
    coverages = [r.coverage for r in rows[:4]]
    assert coverages == sorted(coverages)
    assert rows[4].group == "z"  # precision 0: the worst fake group
    precisions = [r.precision for r in rows[4:]]
    assert precisions == sorted(precisions)


def test_only_one_side_and_tensor_ids() -> None:
    real, fake, real_groups, _ = _sets()
    rows = per_group_scores(
        torch.from_numpy(real),
        torch.from_numpy(fake),
        real_groups=torch.from_numpy(real_groups),
        nearest_k=K,
    )
    assert {r.side for r in rows} == {"real"} and len(rows) == 4
    assert all(isinstance(r.group, int) for r in rows)


def test_from_details_equals_one_call() -> None:
    real, fake, real_groups, fake_groups = _sets(2)
    details = compute_prdc_details(real, fake, nearest_k=K)
    assert group_scores_from_details(
        details, real, fake, real_groups, fake_groups
    ) == per_group_scores(real, fake, real_groups, fake_groups, nearest_k=K)


def test_single_frame_group_has_nan_fd() -> None:
    real, fake, _, fake_groups = _sets()
    fake_groups = fake_groups.astype(object)
    fake_groups[0] = "solo"
    rows = per_group_scores(real, fake, fake_groups=fake_groups, nearest_k=K)
    solo = next(r for r in rows if r.group == "solo")
    assert solo.count == 1 and math.isnan(solo.fd) and not math.isnan(solo.precision)


def test_csv_reads_back_with_pandas(tmp_path) -> None:
    real, fake, real_groups, fake_groups = _sets()
    rows = per_group_scores(real, fake, real_groups, fake_groups, nearest_k=K)
    path = write_group_csv(rows, tmp_path / "groups.csv")
    table = pd.read_csv(path)
    assert tuple(table.columns) == GROUP_COLUMNS
    assert len(table) == len(rows)
    for (_, line), row in zip(table.iterrows(), rows):
        assert str(line["group"]) == str(row.group)
        assert line["side"] == row.side and line["count"] == row.count
        for key in ("coverage", "recall", "precision", "density", "fd"):
            want = getattr(row, key)
            assert (math.isnan(want) and math.isnan(line[key])) or line[key] == want
    assert row.as_dict()["side"] == row.side


def test_errors() -> None:
    real, fake, real_groups, _ = _sets()
    with pytest.raises(ValueError, match="got neither"):
        per_group_scores(real, fake)
    with pytest.raises(ValueError, match="one group id per row"):
        per_group_scores(real, fake, real_groups[:-1])
    with pytest.raises(ValueError, match=r"must have shape \(100,\)"):
        per_group_scores(real, fake, fake_groups=np.zeros((100, 2)))
    with pytest.raises(TypeError, match="sequence of group ids"):
        per_group_scores(real, fake, real_groups="abc")
    with pytest.raises(ValueError, match="NaN or infinite"):
        per_group_scores(real, fake, real_groups=np.full(120, np.nan))
    details = compute_prdc_details(real, fake, nearest_k=K)
    with pytest.raises(ValueError, match="got neither"):
        group_scores_from_details(details, real, fake)
    with pytest.raises(ValueError, match="rows but the details"):
        group_scores_from_details(details, real, fake[:50], fake_groups=np.zeros(100))
    assert isinstance(GroupScore("g", "real", 1), GroupScore)
