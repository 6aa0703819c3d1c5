"""``embviz reference TRAIN --train -o FILE``: a fitted training set for memorization.

The saved file loads as :class:`~lightning_embviz.memorization.TrainReference` equal to one
fitted in Python on the same rows; ``embviz report --train FILE`` writes the same
``metrics.json`` as ``--train TRAIN.npy`` (same cells), equal to ``compute_memorization``;
``EmbeddingMonitor(train=FILE)`` loads it; bad inputs end with exit status 2 and one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lightning_embviz import EmbeddingMonitor
from lightning_embviz.cli import main
from lightning_embviz.memorization import TrainReference, compute_memorization
from lightning_embviz.reference import RealReference

KEYS = ("authenticity", "ct_score", "copy_fraction")


def _files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(120, 4))
    real = rng.normal(size=(80, 4))
    fake = np.concatenate([train[:20] + 1e-3, rng.normal(size=(60, 4))])  # 20 near-copies
    paths = {}
    for name, value in {"train": train, "real": real, "fake": fake}.items():
        paths[name] = tmp_path / f"{name}.npy"
        np.save(paths[name], value)
    return paths


def _reference(*args: Any) -> int:
    return main(["reference", *map(str, args), "-q"])


def _report(tmp_path: Path, f: dict[str, Path], train: Path, name: str) -> dict[str, Any]:
    out = tmp_path / name
    argv = ["report", f["real"], f["fake"], "--train", train, "--projection", "pca"]
    assert main([*map(str, argv), "-o", str(out), "-q"]) == 0
    metrics: dict[str, Any] = json.loads((out / "metrics.json").read_text())
    return metrics


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_saved_file_round_trips_and_reports_as_the_raw_array(
    tmp_path: Path, suffix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _files(tmp_path)
    saved = tmp_path / f"train_ref{suffix}"
    assert _reference(f["train"], "--train", "--cells", 3, "-o", saved) == 0
    line = capsys.readouterr().out
    assert f"wrote {saved}: TrainReference of N=120 train, D=4 (float64), 3 cells" in line

    train = np.load(f["train"])
    loaded = TrainReference.load(saved)
    fitted = TrainReference(train, n_cells=3)
    assert loaded.fingerprint == fitted.fingerprint and loaded.n_cells == 3
    assert torch.equal(loaded.train, torch.from_numpy(train))  # bit for bit, float64 kept
    torch.testing.assert_close(loaded.centroids(), fitted.centroids(), rtol=0, atol=0)
    real, fake = np.load(f["real"]), np.load(f["fake"])
    assert loaded.compare(fake, real) == fitted.compare(fake, real)

    # The command reads it: identical to the raw training embeddings with the same cells.
    from_file = _report(tmp_path, f, saved, "out_file")
    expected = compute_memorization(train, fake, heldout=real, n_cells=3)
    assert np.isfinite(expected["ct_score"])
    for key in KEYS:
        assert from_file[key] == pytest.approx(expected[key], rel=1e-12, abs=1e-12), key
    assert from_file["copy_fraction"] >= 0.25  # the 20 near-copies of 80 fakes

    # The callback reads it at construction, as the same fitted reference.
    monitor = EmbeddingMonitor(train=str(saved), views=None)
    assert isinstance(monitor.train, TrainReference)
    assert monitor.train.fingerprint == fitted.fingerprint and monitor.train.n_cells == 3
    assert monitor.train.compare(fake, real) == fitted.compare(fake, real)


def test_default_cells_equal_the_raw_array_in_report(tmp_path: Path) -> None:
    """Default cells and seed: ``--train FILE`` and ``--train TRAIN.npy`` write the same."""
    f = _files(tmp_path)
    saved = tmp_path / "ref.npz"
    assert _reference(f["train"], "--train", "-o", saved) == 0
    assert TrainReference.load(saved).n_cells == 20
    from_file = _report(tmp_path, f, saved, "a")
    from_array = _report(tmp_path, f, f["train"], "b")
    for key in KEYS:
        assert from_file[key] == from_array[key] or (
            from_file[key] is None and from_array[key] is None
        ), key


def test_refit_from_a_saved_train_reference_replaces_it(tmp_path: Path) -> None:
    f = _files(tmp_path)
    saved = tmp_path / "ref.npz"
    assert _reference(f["train"], "--train", "--cells", 2, "-o", saved) == 0
    assert _reference(saved, "--train", "--cells", 4, "--seed", 1, "-o", saved) == 0
    refit = TrainReference.load(saved)
    assert refit.n_cells == 4
    assert refit.fingerprint == TrainReference(np.load(f["train"]), n_cells=4).fingerprint
    expected = TrainReference(np.load(f["train"]), n_cells=4, seed=1).centroids()
    torch.testing.assert_close(refit.centroids(), expected, rtol=0, atol=0)


class PixelNet(torch.nn.Module):
    """An image embedder (pickled whole with ``torch.save(module)``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3 * 16, 5)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1).float() / 255.0)


def test_embedder_embeds_the_training_images_first(tmp_path: Path) -> None:
    net = PixelNet()
    torch.save(net, tmp_path / "net.pt")
    images = np.random.default_rng(3).integers(0, 256, (30, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "train_images.npy", images)
    saved = tmp_path / "ref.pt"
    spec = f"module:{tmp_path / 'net.pt'}"
    code = _reference(tmp_path / "train_images.npy", "--train", "--embedder", spec, "-o", saved)
    assert code == 0
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(images))
    loaded = TrainReference.load(saved)
    assert loaded.width == 5
    torch.testing.assert_close(loaded.train, expected.to(loaded.train.dtype), rtol=1e-5, atol=1e-6)


def test_embedder_fits_a_real_reference_too(tmp_path: Path) -> None:
    """Without --train, --embedder embeds REAL's images and fits the real radii."""
    net = PixelNet()
    torch.save(net, tmp_path / "net.pt")
    images = np.random.default_rng(4).integers(0, 256, (20, 3, 4, 4), dtype=np.uint8)
    np.save(tmp_path / "real_images.npy", images)
    spec = f"module:{tmp_path / 'net.pt'}"
    saved = tmp_path / "ref.npz"
    assert _reference(tmp_path / "real_images.npy", "--embedder", spec, "-k", "3", "-o", saved) == 0
    with torch.no_grad():
        expected = RealReference(net.eval()(torch.from_numpy(images)), 3)
    loaded = RealReference.load(saved)
    torch.testing.assert_close(loaded.real, expected.real)
    assert loaded.nearest_ks == (3,)


def _bad_files(tmp_path: Path) -> dict[str, Path]:
    f = _files(tmp_path)
    nan = np.load(f["train"])
    nan[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "one.npy", np.zeros((1, 4)))
    np.save(tmp_path / "flat.npy", np.zeros(10))
    RealReference(np.load(f["real"]), 3).save(tmp_path / "real_ref.npz")
    TrainReference(np.load(f["train"]), n_cells=2).save(tmp_path / "train_ref.npz")
    (tmp_path / "notes.npz").write_bytes(b"not a reference")
    return f


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["nan.npy", "--train"], r"nan\.npy.*NaN"),
        (["one.npy", "--train"], r"one\.npy: has shape \(1, 4\); need at least 2 rows"),
        (["flat.npy", "--train"], r"flat\.npy"),
        (["missing.npy", "--train"], r"missing\.npy"),
        (["real_ref.npz", "--train"], r"real_ref\.npz is a saved RealReference.*training"),
        (["train_ref.npz"], r"train_ref\.npz is a saved TrainReference.*--train"),
        (["train.npy", "--train", "-k", "3"], r"-k is for a real reference"),
        (["train.npy", "--cells", "3"], r"--cells is for a training set"),
        (["train.npy", "--train", "--cells", "500"], r"--cells 500: more k-means cells than"),
        (["train.npy", "--train", "--cells", "0"], r"--cells: .*positive integer"),
        (["train.npy", "--train", "-o", "out.txt"], r"-o out\.txt: a reference file ends in"),
        (["train.npy", "--train", "-o", "notes.npz"], r"-o notes\.npz: exists and is not a saved"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    match: str,
) -> None:
    _bad_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = args if "-o" in args else [*args, "-o", "new_ref.npz"]
    assert _reference(*argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.match(r"embviz( reference)?: error: ", err), err
    assert re.search(match, err), err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
