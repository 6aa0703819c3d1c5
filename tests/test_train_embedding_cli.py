"""``embviz report REAL FAKE --embedder NAME:PATH --train-images T`` without ``--train``:
the training images are embedded with the same embedder (built once) and are the training
set; metrics.json equals ``compute_memorization`` on the embedder's own outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_embviz.cli import main
from lightning_embviz.memorization import compute_memorization

KEYS = ("authenticity", "ct_score", "copy_fraction")


class TinyNet(torch.nn.Module):
    """A user's embedder of uint8 images (pickled whole with ``torch.save(module)``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3 * 16, 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1).float() / 255.0)


def _files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (60, 3, 4, 4), dtype=np.uint8)
    fake = rng.integers(0, 256, (40, 3, 4, 4), dtype=np.uint8)
    fake[:10] = train[:10]  # exact copies
    arrays = {"train": train, "real": rng.integers(0, 256, (40, 3, 4, 4), dtype=np.uint8)}
    arrays["fake"] = fake
    paths = {}
    for name, value in arrays.items():
        paths[name] = tmp_path / f"{name}_images.npy"
        np.save(paths[name], value)
    torch.save(TinyNet(), tmp_path / "net.pt")
    paths["net"] = tmp_path / "net.pt"
    return paths


def _embed(net: torch.nn.Module, path: Path) -> np.ndarray:
    with torch.no_grad():
        return net.eval()(torch.from_numpy(np.load(path))).double().numpy()


def test_training_images_are_embedded_with_the_same_embedder(tmp_path: Path) -> None:
    f = _files(tmp_path)
    out = tmp_path / "out"
    argv = [
        *("report", f["real"], f["fake"], "--embedder", f"module:{f['net']}"),
        *("--train-images", f["train"], "--gallery-size", "5", "--projection", "pca"),
        *("-k", "3", "-o", out, "-q"),
    ]
    assert main([str(a) for a in argv]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    net = torch.load(f["net"], weights_only=False)
    expected = compute_memorization(
        _embed(net, f["train"]), _embed(net, f["fake"]), heldout=_embed(net, f["real"])
    )
    for key in KEYS:
        if expected[key] != expected[key]:  # NaN (too few fakes per cell): null in JSON
            assert metrics[key] is None, key
        else:
            assert metrics[key] == pytest.approx(expected[key], rel=1e-6, abs=1e-9), key
    assert metrics["copy_fraction"] >= 0.25  # the 10 copies of 40 fakes
    # FAKE's embedded images are the fakes' side of the gallery.
    assert (out / "closest_train.png").stat().st_size > 0


def test_train_as_images_is_refused_with_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = _files(tmp_path)
    argv = [
        *("report", f["real"], f["fake"], "--embedder", f"module:{f['net']}"),
        *("--train", f["train"], "--projection", "pca", "-k", "3", "-o", tmp_path / "out", "-q"),
    ]
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert re.search(r"--train .*--train takes embeddings.*as --train-images", err), err


def test_train_images_without_train_or_embedder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(1)
    for name in ("real", "fake"):
        np.save(tmp_path / f"{name}.npy", rng.normal(size=(30, 3)))
    np.save(tmp_path / "t.npy", rng.random((30, 4, 4)))
    argv = ["report", "real.npy", "fake.npy", "--train-images", "t.npy", "-o", "out", "-q"]
    argv = [str(tmp_path / a) if a.endswith(".npy") or a == "out" else a for a in argv]
    assert main(argv) == 2
    assert "--train-images needs --train (the training embeddings), or --embedder" in (
        capsys.readouterr().err
    )
