"""``embviz report REAL FAKE --train TRAIN [--train-images FILE]``: memorization numbers.

metrics.json gains ``authenticity``, ``ct_score`` and ``copy_fraction``, equal to
:func:`lightning_embviz.memorization.compute_memorization` with REAL as the held-out set;
``samples_fake.csv`` gains the nearest-train columns; ``closest_train.png`` shows the pairs.
Bad inputs end with exit status 2 and a one-line message.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from lightning_embviz.cli import main
from lightning_embviz.memorization import (
    TrainReference,
    compute_memorization,
    compute_memorization_details,
)

KEYS = ("authenticity", "ct_score", "copy_fraction")


def _files(tmp_path: Path) -> dict[str, str]:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 4))
    real = rng.normal(size=(200, 4))
    fake = np.concatenate([train[:40] + 1e-3, rng.normal(size=(160, 4))])  # 40 near-copies
    arrays = {
        "train": train,
        "real": real,
        "fake": fake,
        "train_images": rng.random((300, 1, 6, 6)),
        "fake_images": rng.random((200, 6, 6)),
    }
    paths = {}
    for name, value in arrays.items():
        paths[name] = str(tmp_path / f"{name}.npy")
        np.save(paths[name], value)
    return paths


def test_report_adds_the_numbers_the_columns_and_the_gallery(tmp_path: Path) -> None:
    f = _files(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            *("report", f["real"], f["fake"], "--train", f["train"]),
            *("--train-images", f["train_images"], "--fake-images", f["fake_images"]),
            *("--projection", "pca", "--gallery-size", "6", "-o", str(out), "-q"),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    train, real, fake = (np.load(f[k]) for k in ("train", "real", "fake"))
    expected = compute_memorization(train, fake, heldout=real)
    for key in KEYS:
        assert metrics[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert metrics["copy_fraction"] >= 0.2  # the 40 near-copies of 200 fakes
    assert (out / "closest_train.png").stat().st_size > 0
    details = compute_memorization_details(train, fake, heldout=real)
    with open(out / "samples_fake.csv") as handle:
        rows = list(csv.DictReader(handle))
    index = [int(r["nearest_train_index"]) for r in rows]
    distance = [float(r["nearest_train_distance"]) for r in rows]
    assert index == details.nearest_train_index.tolist()
    np.testing.assert_allclose(distance, details.nearest_train_distance.numpy(), rtol=1e-6)
    assert index[:40] == list(range(40))


def test_report_reads_a_saved_train_reference(tmp_path: Path) -> None:
    f = _files(tmp_path)
    TrainReference(np.load(f["train"]), n_cells=3).save(tmp_path / "train_ref.pt")
    out = tmp_path / "out"
    args = ["report", f["real"], f["fake"], "--train", str(tmp_path / "train_ref.pt")]
    assert main([*args, "--projection", "pca", "-o", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    train, real, fake = (np.load(f[k]) for k in ("train", "real", "fake"))
    expected = compute_memorization(train, fake, heldout=real, n_cells=3)
    for key in KEYS:
        assert metrics[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
    assert not (out / "closest_train.png").exists()  # no --train-images


def test_report_without_train_has_no_memorization_keys(tmp_path: Path) -> None:
    f = _files(tmp_path)
    out = tmp_path / "out"
    assert main(["report", f["real"], f["fake"], "--projection", "pca", "-o", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert not set(KEYS) & set(metrics)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--train", "missing.npy"], r"--train missing\.npy: no such file"),
        (["--train-images", "{train_images}"], r"--train-images needs --train"),
        (["--train", "{train}", "--train-images", "{train_images}"], r"needs --fake-images"),
        (["--train", "{wide}"], r"has 5 features per row but REAL and FAKE have 4"),
        (
            [
                *("--train", "{train}", "--train-images", "{fake_images}"),
                *("--fake-images", "{fake_images}"),
            ],
            r"holds 200 images but .* has 300 embedding rows",
        ),
    ],
)
def test_report_train_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], match: str
) -> None:
    f = _files(tmp_path)
    np.save(tmp_path / "wide.npy", np.zeros((10, 5)))
    f["wide"] = str(tmp_path / "wide.npy")
    args = [a.format(**f) for a in extra]
    code = main(["report", f["real"], f["fake"], *args, "-o", str(tmp_path / "out"), "-q"])
    assert code == 2
    with pytest.raises(AssertionError, match=match):
        raise AssertionError(capsys.readouterr().err)
