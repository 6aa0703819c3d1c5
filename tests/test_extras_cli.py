"""``embviz report/compare --metrics``: the extra metrics in metrics.json, .csv and the table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lightning_embviz.cli import main
from lightning_embviz.metrics import (
    clipped_density_coverage,
    fd_infinity,
    frechet_distance,
    kernel_distance,
    rarity_score,
    realism_score,
    vendi_score,
)

EXTRA = ("vendi", "vendi_real", "kd", "kd_se", "fd_inf", "clipped_density", "clipped_coverage")


def make_sets(n: int = 120, m: int = 100, width: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    real = rng.normal(size=(n, width)).astype(np.float32)
    fake = (rng.normal(size=(m, width)) * 1.2 + 0.3).astype(np.float32)
    return real, fake


def expected(real: np.ndarray, fake: np.ndarray, k: int = 5, seed: int = 0) -> dict[str, float]:
    out = {"vendi": vendi_score(fake), "vendi_real": vendi_score(real)}
    out.update(kernel_distance(real, fake))
    out["fd_inf"] = fd_infinity(real, fake, seed=seed).fd_inf
    out.update(clipped_density_coverage(real, fake, k))
    out["fd"] = frechet_distance(real, fake)
    return out


def test_report_metrics_json_has_the_extra_keys_with_the_function_values(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real, fake = make_sets()
    np.save(tmp_path / "r.npy", real)
    np.save(tmp_path / "f.npy", fake)
    out = tmp_path / "out"
    argv = ["report", str(tmp_path / "r.npy"), str(tmp_path / "f.npy"), "-o", str(out)]
    assert main([*argv, "--projection", "pca", "--metrics", "fd_inf,vendi,kd,clipped"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    want = expected(real, fake)
    for key in (*EXTRA, "fd"):
        assert metrics[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
    table = pd.read_csv(out / "samples_fake.csv")
    np.testing.assert_allclose(table["realism_score"], realism_score(real, fake, 5), rtol=1e-12)
    np.testing.assert_allclose(table["rarity_score"], rarity_score(real, fake, 5), rtol=1e-12)
    assert table["rarity_score"].isna().any() and table["rarity_score"].notna().any()
    printed = capsys.readouterr().out
    assert "  kd_se" in printed and "  clipped_coverage" in printed
    # without --metrics: none of the keys
    assert main([*argv, "--projection", "pca", "-q"]) == 0
    assert not set(EXTRA) & set(json.loads((out / "metrics.json").read_text()))
    assert "realism_score" not in pd.read_csv(out / "samples_fake.csv")


def test_compare_with_a_saved_reference_writes_extra_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real, fake = make_sets()
    other = make_sets(seed=1)[1] + 1.0
    np.save(tmp_path / "r.npy", real)
    np.save(tmp_path / "a.npy", fake)
    np.save(tmp_path / "b.npy", other)
    ref = tmp_path / "ref.npz"
    assert main(["reference", str(tmp_path / "r.npy"), "-k", "3,5", "-o", str(ref), "-q"]) == 0
    out = tmp_path / "cmp"
    fakes = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    argv = ["compare", str(ref), *fakes, "-k", "5", "-o", str(out), "--projection", "pca"]
    assert main([*argv, "--metrics", "kd,clipped", "--seed", "3"]) == 0
    sets = json.loads((out / "metrics.json").read_text())["sets"]
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    for data, row, table in zip((fake, other), sets, rows):
        want = expected(real, data, seed=3)
        for key in ("kd", "kd_se", "clipped_density", "clipped_coverage"):
            assert row[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
            assert float(table[key]) == pytest.approx(want[key], rel=1e-9, abs=1e-12), key
        assert "vendi" not in row and "fd_inf" not in row
    assert sets[1]["kd"] > sets[0]["kd"]  # the shifted set is farther
    header = next(line for line in capsys.readouterr().out.splitlines() if line[:4] == "name")
    assert header.split()[-4:] == ["kd", "kd_se", "clipped_density", "clipped_coverage"]


def test_unknown_metric_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["report", "r.npy", "f.npy", "-o", str(tmp_path), "--metrics", "vendi,fid"]
    assert main(argv) == 2
    assert "unknown metric 'fid'; the extra metrics are vendi, kd, fd_inf, clipped" in (
        capsys.readouterr().err
    )
    with pytest.raises(ValueError, match="unknown metric 'fid'; the extra metrics are vendi"):
        from lightning_embviz.callback.extras import parse_extra_metrics

        parse_extra_metrics(["fid"])


def test_compare_scores_the_reals_vendi_once(tmp_path: Path, monkeypatch) -> None:
    import lightning_embviz.engine.kernels as kernels

    real, fake = make_sets()
    other = make_sets(seed=1)[1] + 1.0
    for name, rows in (("r", real), ("a", fake), ("b", other)):
        np.save(tmp_path / f"{name}.npy", rows)
    scored: list[int] = []

    def counting(x, q=1.0):
        scored.append(len(x))
        return vendi_score(x, q)

    monkeypatch.setattr(kernels, "vendi_score", counting)
    files = [str(tmp_path / f"{name}.npy") for name in "rab"]
    argv = ["compare", *files, "-o", str(tmp_path / "cmp"), "--projection", "pca", "-q"]
    assert main([*argv, "--metrics", "vendi"]) == 0
    assert sorted(scored) == [100, 100, 120]  # each fake set, and the 120 reals once
    sets = json.loads((tmp_path / "cmp" / "metrics.json").read_text())["sets"]
    assert [row["vendi_real"] for row in sets] == [vendi_score(real)] * 2
    assert [row["vendi"] for row in sets] == [vendi_score(fake), vendi_score(other)]
