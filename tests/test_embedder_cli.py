"""``embviz report --embedder NAME:PATH REAL FAKE``: image (or audio) files are embedded
first; metrics.json equals the reference ``prdc`` package on the embedder's own outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from prdc import compute_prdc

from lightning_embviz import embedders, frechet_distance
from lightning_embviz.cli import main

try:
    import transformers
except ModuleNotFoundError:
    transformers = None

K = 3


def _images(count: int, seed: int, side: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 3, side, side), dtype=np.uint8)


def _expected(embedder: torch.nn.Module, real: np.ndarray, fake: np.ndarray) -> dict[str, float]:
    embedder.eval()
    with torch.no_grad():
        r = embedder(torch.from_numpy(real)).reshape(len(real), -1).double().numpy()
        f = embedder(torch.from_numpy(fake)).reshape(len(fake), -1).double().numpy()
    values = dict(compute_prdc(r, f, nearest_k=K))
    values["fd"] = frechet_distance(r, f)
    return values


def _report(tmp_path: Path, spec: str, real: str, fake: str, *extra: str) -> dict[str, float]:
    out = tmp_path / "out"
    argv = ["report", real, fake, "--embedder", spec, "-k", str(K), "-o", str(out)]
    assert main([*argv, "--projection", "pca", "-q", *extra]) == 0
    return json.loads((out / "metrics.json").read_text())


def _check(metrics: dict[str, float], expected: dict[str, float]) -> None:
    for key in ("precision", "recall", "density", "coverage"):
        assert metrics[key] == pytest.approx(expected[key], abs=1e-6), key
    assert metrics["fd"] == pytest.approx(expected["fd"], rel=1e-4, abs=1e-6)


class PixelNet(torch.nn.Module):
    """A user's embedder of uint8 images (pickled whole with ``torch.save(module)``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(3 * 64, 6)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.flatten(1).float() / 255.0)


def test_module_file_embeds_uint8_images_and_draws_galleries(tmp_path: Path) -> None:
    net = PixelNet()
    torch.save(net, tmp_path / "net.pt")
    real, fake = _images(40, 0), _images(30, 1)
    np.save(tmp_path / "real_images.npy", real)
    np.save(tmp_path / "fake_images.npy", fake)
    spec = f"module:{tmp_path / 'net.pt'}"
    metrics = _report(
        tmp_path, spec, str(tmp_path / "real_images.npy"), str(tmp_path / "fake_images.npy")
    )
    _check(metrics, _expected(net, real, fake))
    assert metrics["embedder"] == spec and metrics["num_real"] == 40
    # the images embedded are the galleries' images too
    assert (tmp_path / "out" / "missed_real.png").is_file()


def test_compare_embeds_every_file_once(tmp_path: Path) -> None:
    net = PixelNet()
    torch.save(net, tmp_path / "net.pt")
    real = _images(30, 0)
    np.save(tmp_path / "real.npy", real)
    fakes = [_images(20, 1), _images(24, 2)]
    for i, fake in enumerate(fakes):
        np.save(tmp_path / f"fake{i}.npy", fake)
    spec = f"module:{tmp_path / 'net.pt'}"
    files = [str(tmp_path / n) for n in ("real.npy", "fake0.npy", "fake1.npy")]
    argv = ["compare", *files, "--embedder", spec, "-k", str(K), "--projection", "pca"]
    assert main([*argv, "-o", str(tmp_path / "out"), "-q"]) == 0
    table = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert table["embedder"] == spec
    for row, fake in zip(table["sets"], fakes):
        _check(row, _expected(net, real, fake))


@pytest.mark.skipif(transformers is None, reason="needs transformers (extra [hf])")
def test_dinov2_folder_embeds_grayscale_float_images(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = transformers.Dinov2Config(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=4,
        image_size=16,
    )
    folder = tmp_path / "dinov2"
    transformers.Dinov2Model(config).save_pretrained(folder)
    transformers.BitImageProcessor(
        size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}
    ).save_pretrained(folder)
    rng = np.random.default_rng(0)
    real = rng.random((20, 12, 12)).astype(np.float32)  # (N, H, W) in [0, 1]
    fake = rng.random((16, 12, 12)).astype(np.float32)
    torch.save(torch.from_numpy(real), tmp_path / "real.pt")
    torch.save({"images": torch.from_numpy(fake)}, tmp_path / "fake.pt")
    metrics = _report(
        tmp_path, f"dinov2:{folder}", str(tmp_path / "real.pt"), str(tmp_path / "fake.pt")
    )
    net = embedders.dinov2(folder, local_files_only=True)
    _check(metrics, _expected(net, real, fake))


def test_audio_module_embeds_waveform_files(tmp_path: Path) -> None:
    net = torch.nn.Sequential(torch.nn.Linear(50, 4))
    net.modality = "audio"  # an audio embedder reads (N, T) waveforms, not images
    torch.save(net, tmp_path / "audio.pt")
    rng = np.random.default_rng(0)
    real = rng.normal(size=(24, 50)).astype(np.float32)
    fake = rng.normal(size=(20, 50)).astype(np.float32) * 1.5
    np.save(tmp_path / "real.npy", real)
    np.save(tmp_path / "fake.npy", fake)
    spec = f"module:{tmp_path / 'audio.pt'}"
    metrics = _report(tmp_path, spec, str(tmp_path / "real.npy"), str(tmp_path / "fake.npy"))
    _check(metrics, _expected(net, real, fake))


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ("resnet:x.pt", "expected NAME:PATH with NAME one of inception,dinov2"),
        ("dinov2", "expected NAME:PATH"),
        ("module:", "expected NAME:PATH"),
    ],
)
def test_bad_spec_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], spec: str, match: str
) -> None:
    assert main(["report", "a.npy", "b.npy", "--embedder", spec]) == 2
    assert match in capsys.readouterr().err


def test_bad_files_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    torch.save({"not": "a module"}, tmp_path / "state.pt")
    np.save(tmp_path / "real.npy", _images(10, 0))
    np.save(tmp_path / "flat.npy", np.zeros((10, 5), dtype=np.float32))
    argv = ["report", str(tmp_path / "real.npy"), str(tmp_path / "real.npy"), "-q", "--embedder"]
    assert main([*argv, f"module:{tmp_path / 'state.pt'}", "-o", str(tmp_path / "o1")]) == 2
    assert "holds a dict, expected a whole nn.Module" in capsys.readouterr().err
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 6))
    torch.save(net, tmp_path / "net.pt")
    assert main([*argv, f"module:{tmp_path / 'net.pt'}", "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err  # the module's own error on uint8 pixels, one line
    assert "the embedder module:" in err and "failed: mat1 and mat2" in err
    assert err.count("\n") == 1
    argv[1] = str(tmp_path / "flat.npy")
    assert main([*argv, f"module:{tmp_path / 'net.pt'}", "-o", str(tmp_path / "o3")]) == 2
    assert "images need shape (N, C, H, W)" in capsys.readouterr().err


def test_from_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown embedder 'resnet'"):
        embedders.from_spec("resnet:x")
    with pytest.raises(ValueError, match=r"names no path; expected clip:PATH"):
        embedders.from_spec("clip:")
    with pytest.raises(FileNotFoundError, match="no such file"):
        embedders.from_spec(f"module:{tmp_path / 'missing.pt'}")
